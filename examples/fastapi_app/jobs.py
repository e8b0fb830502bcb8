"""The app's job handlers, run by a :class:`pgpulse.Worker` inside the app.

A job is queued by ``POST /realtime/api/jobs`` (pgpulse's route, for the
signed-in user); the worker claims it, and each ``job.progress`` reaches the
user's page as an ``ai_job.progress`` event, then ``ai_job_complete``. In
production run the worker as its own process (``pgpulse worker --app
examples.fastapi_app.jobs:worker``) so that long jobs never share the web
server's event loop; running it inside the app keeps the example to one
command.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pgpulse

MAX_SECONDS = 60.0  # the longest sleep the example accepts

worker = pgpulse.Worker(concurrency=4)


@worker.handler("sleep")
async def sleep(job: pgpulse.Job) -> dict[str, Any]:
    """Sleep ``seconds`` in ``steps`` steps, reporting each: a stand-in for real work."""
    spec = job.input if isinstance(job.input, dict) else {}
    seconds = float(spec.get("seconds", 3))
    steps = int(spec.get("steps", 6))
    if not 0 <= seconds <= MAX_SECONDS:
        raise ValueError(f"seconds must be from 0 to {MAX_SECONDS:g}, got {seconds:g}")
    if not 1 <= steps <= 100:
        raise ValueError(f"steps must be from 1 to 100, got {steps}")
    for step in range(1, steps + 1):
        await asyncio.sleep(seconds / steps)
        await job.progress(step / steps, f"step {step} of {steps}")
    return {"slept": seconds, "steps": steps}
