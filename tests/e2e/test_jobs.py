"""Jobs end to end: POST /api/jobs, a worker, the ai_jobs events on a socket, GET the state."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgpulse
from pgpulse import Job, JobLost, Worker

from ..jobs_support import job_row, running, until_status
from ..support import TIMEOUT, ServerHandle, events, mint, no_more_events, start_server, until_ready

JOBS = ["jobs"]  # the scope POST /api/jobs needs


async def submit(server: ServerHandle, token: str, body: object) -> str:
    async with server.http() as http:
        r = await http.post("/api/jobs", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 202, r.text
    job_id: str = r.json()["job_id"]
    assert r.headers["location"] == f"/api/jobs/{job_id}"
    return job_id


async def read(server: ServerHandle, token: str, job_id: str) -> tuple[int, Any]:
    async with server.http() as http:
        r = await http.get(f"/api/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"})
    return r.status_code, r.json()


async def test_a_job_reports_start_progress_and_result_in_order(
    server: ServerHandle, tenant: str
) -> None:
    kind = "summarise-" + tenant
    worker = Worker(concurrency=2, poll_interval=1.0)

    @worker.handler(kind)
    async def summarise(job: Job) -> Any:
        for step in (1, 2, 3, 4):
            await job.progress(step / 4, f"chunk {step}")
        return {"summary": job.input["text"].upper()}

    token = mint(tenant, scopes=JOBS)
    async with (
        server.connect(token, topics="ai_jobs") as ws,
        running(worker, server.runtime.database_url),
    ):
        await until_ready(ws)
        job_id = await submit(server, token, {"kind": kind, "input": {"text": "hello"}})
        first = (await events(ws, 1))[0]
        assert (first["type"], first["data"]) == (
            "ai_job.started",
            {"job_id": job_id, "kind": kind, "attempt": 1},
        )
        frames = [first]
        while frames[-1]["type"] != "ai_job_complete":
            frames += await events(ws, 1)
        assert frames[-1]["data"] == {"job_id": job_id, "result": {"summary": "HELLO"}}
        progress = [f["data"]["progress"] for f in frames if f["type"] == "ai_job.progress"]
        # Reports closer than the throttle fold into fewer events, never out of order.
        assert progress and progress == sorted(progress) and progress[-1] <= 1
        assert all(f["topic"] == "ai_jobs" for f in frames)
        await no_more_events(ws, 0.2)

    status, body = await read(server, token, job_id)
    assert status == 200
    assert body["status"] == "succeeded" and body["progress"] == 1
    assert body["result"] == {"summary": "HELLO"} and body["error"] is None
    assert body["input"] == {"text": "hello"} and body["attempts"] == 1
    assert body["created_at"] <= body["started_at"] <= body["finished_at"]


async def test_a_failing_handler_fails_the_job_with_its_message(
    server: ServerHandle, tenant: str
) -> None:
    kind = "flaky-" + tenant
    worker = Worker(poll_interval=1.0)

    @worker.handler(kind)
    async def flaky(job: Job) -> Any:
        await job.progress(0.3)
        raise pgpulse.JobFailed("model unavailable")

    token = mint(tenant, scopes=JOBS)
    async with (
        server.connect(token, topics="ai_jobs") as ws,
        running(worker, server.runtime.database_url),
    ):
        await until_ready(ws)
        job_id = await submit(server, token, {"kind": kind})
        frames = await events(ws, 3)
        assert [f["type"] for f in frames] == ["ai_job.started", "ai_job.progress", "ai_job.failed"]
        assert frames[2]["data"] == {"job_id": job_id, "error": "model unavailable"}
    status, body = await read(server, token, job_id)
    assert (status, body["status"], body["progress"]) == (200, "failed", 0.3)
    assert body["error"] == "model unavailable" and body["result"] is None


async def test_an_unexpected_exception_never_reaches_the_tenant(
    server: ServerHandle, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "postgresql://app:hunter2@db.internal/prod"
    kind = "leaky-" + tenant
    worker = Worker(poll_interval=1.0)

    @worker.handler(kind)
    async def leaky(job: Job) -> Any:
        raise RuntimeError(f"cannot reach {secret}")

    token = mint(tenant, scopes=JOBS)
    with caplog.at_level(logging.ERROR, logger="pgpulse.worker"):
        async with (
            server.connect(token, topics="ai_jobs") as ws,
            running(worker, server.runtime.database_url),
        ):
            await until_ready(ws)
            job_id = await submit(server, token, {"kind": kind})
            frames = await events(ws, 2)
    assert frames[-1]["type"] == "ai_job.failed"
    assert frames[-1]["data"] == {"job_id": job_id, "error": "internal error"}
    status, body = await read(server, token, job_id)
    assert (status, body["error"]) == (200, "internal error")
    async with await psycopg.AsyncConnection.connect(server.runtime.database_url) as c:
        cur = await c.execute(
            "SELECT count(*) FROM pgpulse.events WHERE tenant_id = %s AND data::text LIKE %s",
            [tenant, "%hunter2%"],
        )
        row = await cur.fetchone()
        cur = await c.execute("SELECT error FROM pgpulse.jobs WHERE id = %s", [job_id])
        stored = await cur.fetchone()
    assert row is not None and row[0] == 0 and stored == ("internal error",)
    # The operator still learns what happened, with the job's id.
    logged = "\n".join(r.getMessage() + str(r.exc_info) for r in caplog.records)
    assert job_id in logged and "hunter2" in logged


async def test_results_that_are_not_json_and_timeouts_fail_the_job(
    server: ServerHandle, tenant: str
) -> None:
    worker = Worker(timeout=0.2, poll_interval=1.0)

    @worker.handler("set-" + tenant)
    async def returns_a_set(job: Job) -> Any:
        return {1, 2}

    @worker.handler("slow-" + tenant)
    async def too_slow(job: Job) -> Any:
        await asyncio.Event().wait()

    token = mint(tenant, scopes=JOBS)
    async with (
        server.connect(token, topics="ai_jobs") as ws,
        running(worker, server.runtime.database_url),
    ):
        await until_ready(ws)
        bad = await submit(server, token, {"kind": "set-" + tenant})
        slow = await submit(server, token, {"kind": "slow-" + tenant})
        failed = {}
        async with asyncio.timeout(TIMEOUT):
            while len(failed) < 2:
                for f in await events(ws, 1):
                    if f["type"] == "ai_job.failed":
                        failed[f["data"]["job_id"]] = f["data"]["error"]
    assert failed[bad].startswith("result is not JSON-serialisable")
    assert failed[slow] == "timed out after 0.2 s"


async def test_jobs_are_private_to_their_tenant_and_user(server: ServerHandle, tenant: str) -> None:
    kind = "private-" + tenant
    worker = Worker({kind: _done}, poll_interval=1.0)
    ann, bob = mint(tenant, user="ann", scopes=JOBS), mint(tenant, user="bob", scopes=JOBS)
    other_tenant = mint(tenant + "-other", user="ann", scopes=JOBS)
    async with (
        server.connect(ann, topics="ai_jobs") as ws_ann,
        server.connect(bob, topics="ai_jobs") as ws_bob,
        server.connect(other_tenant) as ws_other,
        running(worker, server.runtime.database_url),
    ):
        for ws in (ws_ann, ws_bob, ws_other):
            await until_ready(ws)
        job_id = await submit(server, ann, {"kind": kind, "input": {}})
        frames = await events(ws_ann, 2)
        assert [f["user_id"] for f in frames] == ["ann", "ann"]
        assert frames[-1]["type"] == "ai_job_complete"
        await no_more_events(ws_bob, 0.3)
        await no_more_events(ws_other, 0.1)
    assert (await read(server, ann, job_id))[0] == 200
    for token in (bob, other_tenant):
        assert await read(server, token, job_id) == (404, {"detail": "job not found"})
    for malformed in ("not-a-uuid", "0", job_id.upper() + "0"):
        assert (await read(server, ann, malformed))[0] == 404


async def _done(job: Job) -> Any:
    return "done"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"input": {}}, "kind: Field required"),
        ({"kind": ""}, "kind: String should have at least 1 character"),
        ({"kind": "k", "tenant_id": "x"}, "tenant_id: Extra inputs are not permitted"),
        ({"kind": "a\u0000b"}, "kind must not contain NUL"),
        ({"kind": "k", "input": {"s": "a\u0000"}}, "input must not contain NUL"),
        ([], "body: Input should be a valid dictionary"),
    ],
)
async def test_bad_jobs_get_422_naming_the_field(
    server: ServerHandle, tenant: str, body: object, detail: str
) -> None:
    async with server.http() as http:
        r = await http.post(
            "/api/jobs", json=body, headers={"Authorization": f"Bearer {mint(tenant, scopes=JOBS)}"}
        )
    assert r.status_code == 422, r.text
    assert detail in r.json()["detail"]


async def test_unauthenticated_and_oversized_requests_are_refused(
    database_url: str, tmp_path: Path, tenant: str
) -> None:
    async with start_server(database_url, tmp_path, max_payload_bytes=2048, job_kinds="a,b") as srv:
        auth = {"Authorization": f"Bearer {mint(tenant, scopes=JOBS)}"}
        async with srv.http() as http:
            assert (await http.post("/api/jobs", json={"kind": "a"})).status_code == 401
            assert (await http.get("/api/jobs/0")).status_code == 401
            r = await http.post("/api/jobs", json={"kind": "a", "input": "x" * 3000}, headers=auth)
            assert r.status_code == 413
            r = await http.post("/api/jobs", json={"kind": "c"}, headers=auth)
            assert r.status_code == 422
            assert r.json()["detail"] == "kind: unknown job kind 'c'; this server runs a, b"
            assert (
                await http.post("/api/jobs", json={"kind": "b"}, headers=auth)
            ).status_code == 202


async def test_a_stopping_worker_gives_its_jobs_back_to_the_next(
    server: ServerHandle, tenant: str
) -> None:
    kind = "long-" + tenant
    started = asyncio.Event()
    first = Worker(grace=0.1, poll_interval=1.0)

    @first.handler(kind)
    async def never_ends(job: Job) -> Any:
        started.set()
        await asyncio.Event().wait()

    token = mint(tenant, scopes=JOBS)
    url = server.runtime.database_url
    async with running(first, url):
        job_id = await submit(server, token, {"kind": kind})
        await asyncio.wait_for(started.wait(), TIMEOUT)
    row = await job_row(url, job_id)
    assert (row["status"], row["attempts"], row["worker"]) == ("queued", 0, None)

    second = Worker({kind: _done}, poll_interval=1.0)
    async with server.connect(token, topics="ai_jobs", last_event_id=0) as ws, running(second, url):
        frames = await events(ws, 3)
    assert [f["type"] for f in frames] == ["ai_job.started", "ai_job.started", "ai_job_complete"]
    assert [f["data"].get("attempt") for f in frames[:2]] == [1, 1]
    assert (await job_row(url, job_id))["status"] == "succeeded"


async def test_a_worker_that_lost_its_job_stops_it_and_records_nothing(
    database_url: str, tenant: str
) -> None:
    kind = "taken-" + tenant
    told = asyncio.Event()
    worker = Worker(poll_interval=1.0)

    @worker.handler(kind)
    async def reports_until_told(job: Job) -> Any:
        try:
            while True:
                await job.progress(0.5)
                await asyncio.sleep(0.05)
        except (JobLost, asyncio.CancelledError):  # as progress() or a pending await learns
            told.set()
            raise

    async with (
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c,
        running(worker, database_url),
    ):
        job_id = await pgpulse.submit_job(c, tenant_id=tenant, kind=kind)
        await until_status(database_url, job_id, "running")
        # As recover_jobs and another worker's claim would leave it:
        await c.execute("UPDATE pgpulse.jobs SET worker = 'other' WHERE id = %s", [job_id])
        await asyncio.wait_for(told.wait(), TIMEOUT)
    row = await job_row(database_url, job_id)
    assert (row["status"], row["worker"], row["error"]) == ("running", "other", None)
    assert worker.jobs_done == 0


async def test_metrics_show_the_backlog_and_its_age(server: ServerHandle, tenant: str) -> None:
    def gauge(text: str, name: str) -> float:
        [line] = [line for line in text.splitlines() if line.startswith(name + " ")]
        return float(line.split()[-1])

    queued = 'pgpulse_jobs{status="queued"}'
    async with server.http() as http:
        before = (await http.get("/metrics")).text
        for _ in range(2):  # a kind no worker runs: they wait
            await submit(server, mint(tenant, scopes=JOBS), {"kind": "unserved-" + tenant})
        after = (await http.get("/metrics")).text
    assert gauge(after, queued) == gauge(before, queued) + 2
    assert gauge(after, "pgpulse_jobs_oldest_queued_seconds") > 0
    assert (
        gauge(after, "pgpulse_jobs_submitted_total")
        == gauge(before, "pgpulse_jobs_submitted_total") + 2
    )
    assert 'pgpulse_jobs{status="running"}' in after
