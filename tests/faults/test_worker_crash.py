"""A worker killed mid-job: its lease runs out, another worker runs the job to the end."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import psycopg

import pgpulse
from pgpulse import Job, Worker

from ..jobs_support import job_row, running, worker_process
from ..support import TIMEOUT, ServerHandle, events, mint

ROOT = Path(__file__).resolve().parents[2]


async def finish_at_once(job: Job) -> Any:
    return "finished by the second worker"


async def test_a_killed_workers_job_is_run_again_by_another(
    server: ServerHandle, tenant: str
) -> None:
    url = server.runtime.database_url
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
        job_id = await pgpulse.submit_job(c, tenant_id=tenant, kind="crawl")
    crashed = worker_process(
        ["--app", "tests.faults.job_app:worker"],
        {"PGPULSE_DATABASE_URL": url, "PYTHONPATH": str(ROOT)},
    )
    token = mint(tenant)
    try:
        async with server.connect(token, topics="ai_jobs", last_event_id=0) as ws:
            frames = await events(ws, 2, timeout=30)  # started, then a progress report
            assert [f["type"] for f in frames] == ["ai_job.started", "ai_job.progress"], (
                crashed.output()
            )
            assert crashed.stop(signal.SIGKILL) == -signal.SIGKILL
            row = await job_row(url, job_id)
            assert row["status"] == "running" and row["attempts"] == 1

            second = Worker({"crawl": finish_at_once}, lease=1.0, poll_interval=0.5)
            async with running(second, url):
                async with asyncio.timeout(TIMEOUT):
                    while frames[-1]["type"] != "ai_job_complete":
                        frames += await events(ws, 1)
    finally:
        crashed.stop(signal.SIGKILL)
    restarted = [f["data"]["attempt"] for f in frames if f["type"] == "ai_job.started"]
    assert restarted == [1, 2]
    assert frames[-1]["data"] == {"job_id": job_id, "result": "finished by the second worker"}
    row = await job_row(url, job_id)
    assert (row["status"], row["attempts"]) == ("succeeded", 2)
