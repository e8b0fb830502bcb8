"""``pgpulse.job_output``: streamed text appended once at its offset, a retry not twice."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

import pgpulse

from .test_jobs import call, claim, job_events


async def output(url: str, job_id: str, worker: str, at: int, chunk: str) -> bool:
    [(ok,)] = await call(url, "job_output", job_id=job_id, worker=worker, at=at, chunk=chunk)
    return bool(ok)


async def stored(url: str, job_id: str) -> Any:
    async with await psycopg.AsyncConnection.connect(url) as c:
        cur = await c.execute("SELECT output FROM pgpulse.jobs WHERE id = %s", [job_id])
        row = await cur.fetchone()
    assert row is not None
    return row[0]


async def test_chunks_append_once_and_a_new_run_starts_over(
    conn: psycopg.AsyncConnection[object], database_url: str, tenant: str
) -> None:
    kind = "talk-" + tenant
    job_id = await pgpulse.submit_job(conn, tenant_id=tenant, kind=kind)
    await conn.commit()
    assert await claim(database_url, "w1", [kind]) == [job_id]

    assert await output(database_url, job_id, "w1", 0, "héllo ")
    assert await output(database_url, job_id, "w1", 6, "wörld")
    assert await output(database_url, job_id, "w1", 6, "wörld")  # a retry: no second append
    assert await stored(database_url, job_id) == "héllo wörld"
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="does not follow its 11"):
        await output(database_url, job_id, "w1", 13, "!")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="non-empty chunk"):
        await output(database_url, job_id, "w1", 11, "")
    with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="1000000"):
        await output(database_url, job_id, "w1", 0, "x" * 1_000_001)
    assert not await output(database_url, job_id, "w2", 11, "!")  # not this worker's job
    assert await stored(database_url, job_id) == "héllo wörld"

    # A run's first write (offset 0) replaces what an earlier attempt left.
    assert await output(database_url, job_id, "w1", 0, "again")
    assert await stored(database_url, job_id) == "again"
    outputs = [
        data
        for type_, data, _ in await job_events(database_url, tenant)
        if type_ == "ai_job.output"
    ]
    assert outputs == [
        {"job_id": job_id, "offset": 0, "text": "héllo "},
        {"job_id": job_id, "offset": 6, "text": "wörld"},
        {"job_id": job_id, "offset": 0, "text": "again"},
    ]
