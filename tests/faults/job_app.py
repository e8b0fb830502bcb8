"""Handlers for ``pgpulse worker --app tests.faults.job_app:worker`` in the fault tests."""

from __future__ import annotations

import asyncio
from typing import Any

from pgpulse import Job, Worker

worker = Worker(lease=1.0, poll_interval=0.5)


@worker.handler("crawl")
async def crawl(job: Job) -> Any:
    """Slow on purpose: long enough to be killed in the middle."""
    for step in range(1, 301):
        await asyncio.sleep(0.1)
        await job.progress(step / 300)
    return "crawled"
