"""The job queue in SQL: transactional submit, exclusive claims, leases, one event per step."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

import pgpulse
from pgpulse.sql import QUERIES


async def job_events(url: str, tenant: str) -> list[tuple[str, dict[str, Any], str | None]]:
    async with await psycopg.AsyncConnection.connect(url) as c:
        cur = await c.execute(
            "SELECT type, data::text, user_id FROM pgpulse.events "
            "WHERE tenant_id = %s AND topic = 'ai_jobs' ORDER BY id",
            [tenant],
        )
        return [(r[0], orjson.loads(r[1]), r[2]) for r in await cur.fetchall()]


async def call(url: str, query: str, **params: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
        cur = await c.execute(QUERIES[query], params)
        return await cur.fetchall()


async def claim(
    url: str, worker: str, kinds: list[str], n: int = 10, lease: float = 30
) -> list[str]:
    rows = await call(url, "claim_jobs", worker=worker, kinds=kinds, n=n, lease=lease)
    return [str(r[0]) for r in rows]


async def test_a_job_exists_only_if_its_transaction_commits(
    conn: psycopg.AsyncConnection[object], database_url: str, tenant: str
) -> None:
    await pgpulse.submit_job(conn, tenant_id=tenant, kind="k-rolled-back", input={"n": 1})
    await conn.rollback()
    kept = await pgpulse.submit_job(conn, tenant_id=tenant, kind="k-" + tenant, input={"n": 2})
    await conn.commit()
    assert await claim(database_url, "w", ["k-rolled-back"]) == []
    assert await claim(database_url, "w", ["k-" + tenant]) == [kept]


async def test_sqlalchemy_session_joins_the_transaction(database_url: str, tenant: str) -> None:
    engine = create_async_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        async with AsyncSession(engine) as session:
            job_id = await pgpulse.submit_job(session, tenant_id=tenant, kind="k-" + tenant)
            await session.rollback()
            assert await claim(database_url, "w", ["k-" + tenant]) == []
            job_id = await pgpulse.submit_job(session, tenant_id=tenant, kind="k-" + tenant)
            await session.commit()
        assert await claim(database_url, "w", ["k-" + tenant]) == [job_id]
    finally:
        await engine.dispose()


async def test_concurrent_claims_never_share_a_job(database_url: str, tenant: str) -> None:
    kind = "k-" + tenant
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        submitted = {
            await pgpulse.submit_job(c, tenant_id=tenant, kind=kind, input={"i": i})
            for i in range(40)
        }
    claims = await asyncio.gather(*(claim(database_url, f"w{i}", [kind], n=7) for i in range(8)))
    taken = [job_id for batch in claims for job_id in batch]
    assert len(taken) == len(set(taken)) == 40
    assert set(taken) == submitted
    started = [e for e in await job_events(database_url, tenant) if e[0] == "ai_job.started"]
    assert sorted(e[1]["job_id"] for e in started) == sorted(submitted)


async def test_each_step_publishes_its_event_to_the_jobs_user(
    database_url: str, tenant: str
) -> None:
    kind = "k-" + tenant
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        job_id = await pgpulse.submit_job(c, tenant_id=tenant, kind=kind, user_id="ann")
    assert await claim(database_url, "w1", [kind]) == [job_id]
    [[ok]] = await call(
        database_url, "job_progress", job_id=job_id, worker="w1", progress=0.5, message="half"
    )
    assert ok is True
    [[ok]] = await call(
        database_url, "job_progress", job_id=job_id, worker="w2", progress=0.6, message=None
    )
    assert ok is False  # not w2's job
    [[ok]] = await call(
        database_url, "finish_job", job_id=job_id, worker="w1", result='{"answer": 42}', error=None
    )
    assert ok is True
    [[ok]] = await call(
        database_url, "finish_job", job_id=job_id, worker="w1", result=None, error="again"
    )
    assert ok is False  # ended once, never twice
    assert await job_events(database_url, tenant) == [
        ("ai_job.started", {"job_id": job_id, "kind": kind, "attempt": 1}, "ann"),
        ("ai_job.progress", {"job_id": job_id, "progress": 0.5, "message": "half"}, "ann"),
        ("ai_job_complete", {"job_id": job_id, "result": {"answer": 42}}, "ann"),
    ]


async def test_a_failure_keeps_its_error_and_progress(database_url: str, tenant: str) -> None:
    kind = "k-" + tenant
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        job_id = await pgpulse.submit_job(c, tenant_id=tenant, kind=kind)
    await claim(database_url, "w1", [kind])
    await call(
        database_url, "job_progress", job_id=job_id, worker="w1", progress=0.25, message=None
    )
    await call(database_url, "finish_job", job_id=job_id, worker="w1", result=None, error="boom")
    async with await psycopg.AsyncConnection.connect(database_url) as c:
        cur = await c.execute(
            "SELECT status, progress, result, error FROM pgpulse.jobs WHERE id = %s", [job_id]
        )
        assert await cur.fetchone() == ("failed", 0.25, None, "boom")
    assert (await job_events(database_url, tenant))[-1] == (
        "ai_job.failed",
        {"job_id": job_id, "error": "boom"},
        None,
    )


async def test_an_expired_lease_is_taken_back_then_failed_after_max_attempts(
    database_url: str, tenant: str
) -> None:
    kind = "k-" + tenant
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        job_id = await pgpulse.submit_job(c, tenant_id=tenant, kind=kind)
        for attempt in (1, 2, 3):
            assert await claim(database_url, f"dead{attempt}", [kind], lease=0.001) == [job_id]
            await c.execute("SELECT pg_sleep(0.01)")
            await c.execute(QUERIES["recover_jobs"])
        cur = await c.execute(
            "SELECT status, attempts, error FROM pgpulse.jobs WHERE id = %s", [job_id]
        )
        assert await cur.fetchone() == ("failed", 3, "its worker stopped answering, 3 times")
    # The late worker's report is refused: the job is no longer its.
    [[ok]] = await call(
        database_url, "finish_job", job_id=job_id, worker="dead3", result="1", error=None
    )
    assert ok is False
    types = [e[0] for e in await job_events(database_url, tenant)]
    assert types == ["ai_job.started"] * 3 + ["ai_job.failed"]


async def test_released_jobs_are_queued_again_without_spending_an_attempt(
    database_url: str, tenant: str
) -> None:
    kind = "k-" + tenant
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        job_id = await pgpulse.submit_job(c, tenant_id=tenant, kind=kind)
    await claim(database_url, "w1", [kind])
    [[released]] = await call(database_url, "release_jobs", worker="w1", job_ids=[job_id])
    assert released == 1
    assert await claim(database_url, "w2", [kind]) == [job_id]
    async with await psycopg.AsyncConnection.connect(database_url) as c:
        cur = await c.execute("SELECT attempts, worker FROM pgpulse.jobs WHERE id = %s", [job_id])
        assert await cur.fetchone() == (1, "w2")


async def test_bad_jobs_are_refused_with_the_field_named(
    conn: psycopg.AsyncConnection[object],
) -> None:
    with pytest.raises(pgpulse.InvalidJob, match="kind must be a string of 1 to 200"):
        await pgpulse.submit_job(conn, tenant_id="a", kind="")
    with pytest.raises(pgpulse.InvalidJob, match="input is not JSON-serialisable"):
        await pgpulse.submit_job(conn, tenant_id="a", kind="k", input={1, 2})
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="kind must be 1 to 200"):
        await conn.execute("SELECT pgpulse.submit_job('a', '')")
    await conn.rollback()


async def test_retention_prunes_ended_jobs_only(database_url: str, tenant: str) -> None:
    kind = "k-" + tenant
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        ended, running = [await pgpulse.submit_job(c, tenant_id=tenant, kind=kind) for _ in "ab"]
        await claim(database_url, "w1", [kind])
        await call(database_url, "finish_job", job_id=ended, worker="w1", result="1", error=None)
        await c.execute(
            "UPDATE pgpulse.jobs SET finished_at = now() - interval '2 hours', "
            "started_at = now() - interval '2 hours' WHERE tenant_id = %s",
            [tenant],
        )
        await c.execute(QUERIES["prune_jobs"], {"seconds": 3600, "batch": 100})
        cur = await c.execute("SELECT id::text FROM pgpulse.jobs WHERE tenant_id = %s", [tenant])
        assert [r[0] for r in await cur.fetchall()] == [running]
