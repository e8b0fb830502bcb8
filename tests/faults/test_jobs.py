"""Jobs under faults: a worker killed mid-job, PostgreSQL restarting under a worker,
and under a job streaming its text."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgpulse
from pgpulse import Job, Worker

from ..jobs_support import job_row, running, until_status, worker_process
from ..support import TIMEOUT, ServerHandle, events, mint
from .conftest import PrivatePostgres

JOBS = ["jobs"]  # the scope POST /api/jobs needs

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
    token = mint(tenant, scopes=JOBS)
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


async def test_a_job_that_ends_during_an_outage_is_recorded_when_postgres_is_back(
    private_pg: PrivatePostgres, private_database: str, tenant: str
) -> None:
    url = private_database
    started, release, ended = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def waits_for_the_test(job: Job) -> Any:
        started.set()
        await release.wait()
        ended.set()  # nothing awaits between here and the worker's first attempt to record it
        return job.input

    worker = Worker({"wait": waits_for_the_test, "echo": echo}, poll_interval=0.5)
    async with running(worker, url):
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
            during = await pgpulse.submit_job(c, tenant_id=tenant, kind="wait", input="first")
        await asyncio.wait_for(started.wait(), TIMEOUT)
        private_pg.stop()
        try:
            release.set()  # the handler ends while the database is down
            await asyncio.wait_for(ended.wait(), TIMEOUT)
        finally:
            private_pg.start()
        await until_status(url, during, "succeeded", timeout=30)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
            after = await pgpulse.submit_job(c, tenant_id=tenant, kind="echo", input="second")
        await until_status(url, after, "succeeded", timeout=30)
    assert (await job_row(url, during))["result"] == "first"
    assert (await job_row(url, after))["result"] == "second"
    assert worker.jobs_done == 2


async def echo(job: Job) -> Any:
    return job.input


async def test_streamed_text_is_whole_and_written_once_across_a_postgres_restart(
    private_pg: PrivatePostgres,
    private_database: str,
    tenant: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = private_database
    words = [f"w{i} " for i in range(120)]
    halfway = asyncio.Event()

    async def talks(job: Job) -> Any:
        for i, word in enumerate(words):
            await job.stream(word)  # during the outage too: the text waits for the database
            if i == len(words) // 2:
                halfway.set()
            await asyncio.sleep(0.01)
        return None

    worker = Worker({"talk": talks}, poll_interval=0.5)
    async with running(worker, url):
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
            job_id = await pgpulse.submit_job(c, tenant_id=tenant, kind="talk")
        await asyncio.wait_for(halfway.wait(), TIMEOUT)
        private_pg.stop()
        try:
            await asyncio.sleep(0.5)
        finally:
            private_pg.start()
        await until_status(url, job_id, "succeeded", timeout=30)
    whole = "".join(words)
    row = await job_row(url, job_id)
    assert row["result"] == {"text": whole}
    async with await psycopg.AsyncConnection.connect(url) as c:
        cur = await c.execute("SELECT output FROM pgpulse.jobs WHERE id = %s", [job_id])
        assert (await cur.fetchone()) == (whole,)
        cur = await c.execute(
            "SELECT data FROM pgpulse.events WHERE tenant_id = %s AND type = 'ai_job.output' "
            "ORDER BY id",
            [tenant],
        )
        chunks = [r[0] for r in await cur.fetchall()]
    # Back to back: no chunk written twice, none missing, whatever the outage cut.
    offset = 0
    for chunk in chunks:
        assert chunk["offset"] == offset, chunks
        offset += len(chunk["text"])
    assert "".join(c["text"] for c in chunks) == whole
    # And the outage did cut a write: the text waited, and was written once, later.
    assert any("streamed text not recorded yet" in r.getMessage() for r in caplog.records)
