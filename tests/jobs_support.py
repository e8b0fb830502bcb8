"""Helpers for job tests: a worker running in the test's event loop, and job rows."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg

from pgpulse import Worker

from .support import TIMEOUT, PgpulseProcess


@contextlib.asynccontextmanager
async def running(worker: Worker, url: str) -> AsyncIterator[Worker]:
    """``worker`` working on ``url`` until the block ends, then stopped as SIGTERM stops it."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(url, stop))
    try:
        yield worker
    finally:
        stop.set()
        async with asyncio.timeout(TIMEOUT + worker.grace):
            await task


async def job_row(url: str, job_id: str) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(url) as c:
        cur = await c.execute(
            "SELECT status, progress, result, error, attempts, worker FROM pgpulse.jobs "
            "WHERE id = %s",
            [job_id],
        )
        row = await cur.fetchone()
    assert row is not None, f"no job {job_id}"
    keys = ("status", "progress", "result", "error", "attempts", "worker")
    return dict(zip(keys, row, strict=True))


async def until_status(url: str, job_id: str, status: str, timeout: float = TIMEOUT) -> None:
    """Wait (bounded) until the job's row has ``status``; polls, as nothing else tells."""
    async with asyncio.timeout(timeout):
        while (await job_row(url, job_id))["status"] != status:
            await asyncio.sleep(0.02)


def worker_process(args: list[str], env: dict[str, str]) -> PgpulseProcess:
    """``pgpulse worker`` as a child process."""
    return PgpulseProcess(["worker", *args], env)
