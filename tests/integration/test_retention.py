"""Retention beyond events: notifications, stale queued jobs; and replay pages bounded by bytes."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pgpulse import history as history_module
from pgpulse.db import open_pool
from pgpulse.history import History
from pgpulse.retention import prune


async def test_old_notifications_and_stale_queued_jobs_go(database_url: str, tenant: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        await c.execute(
            "INSERT INTO pgpulse.notifications (tenant_id, message, created_at)"
            " VALUES (%s, 'old', now() - interval '2 hours'), (%s, 'new', now())",
            [tenant, tenant],
        )
        cur = await c.execute(
            "SELECT pgpulse.submit_job(%s, 'nobody-runs-this', '{}'), "
            "pgpulse.submit_job(%s, 'nobody-runs-this', '{}')",
            [tenant, tenant],
        )
        row = await cur.fetchone()
        assert row is not None
        stale, fresh = str(row[0]), str(row[1])
        await c.execute(
            "UPDATE pgpulse.jobs SET created_at = now() - interval '2 hours' WHERE id = %s",
            [stale],
        )
        pool = await open_pool(database_url, 1, 2)
        try:
            await prune(pool, max_age=3600, keep=1000)
        finally:
            await pool.close()
        cur = await c.execute(
            "SELECT message FROM pgpulse.notifications WHERE tenant_id = %s", [tenant]
        )
        assert [r[0] for r in await cur.fetchall()] == ["new"]
        cur = await c.execute(
            "SELECT id::text, status, error FROM pgpulse.jobs WHERE tenant_id = %s ORDER BY 2",
            [tenant],
        )
        jobs = {r[0]: (r[1], r[2]) for r in await cur.fetchall()}
        assert jobs[fresh] == ("queued", None)
        assert jobs[stale][0] == "failed" and "no worker" in jobs[stale][1]
        cur = await c.execute(
            "SELECT data->>'job_id' FROM pgpulse.events"
            " WHERE tenant_id = %s AND type = 'ai_job.failed'",
            [tenant],
        )
        assert [r[0] for r in await cur.fetchall()] == [stale]  # the submitter is told


async def test_replay_pages_are_bounded_by_bytes(
    database_url: str, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history_module, "REPLAY_PAGE_BYTES", 250_000)
    big = "x" * 100_000
    monkeypatch.setattr(history_module, "REPLAY_FIRST_PAGE", 4)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        for i in range(12):
            await c.execute(
                "SELECT pgpulse.publish(%s, 't', 'big', %s::jsonb)",
                [tenant, f'{{"i": {i}, "pad": "{big}"}}'],
            )
    pool = await open_pool(database_url, 1, 2)
    try:
        history = History(pool)
        pages: list[int] = []
        read = history._rows

        async def recorded(*args: Any) -> Any:
            rows = await read(*args)
            pages.append(len(rows))
            return rows

        monkeypatch.setattr(history, "_rows", recorded)
        ids = [event.id async for event in history.replay(tenant, 0, 12, None, None)]
    finally:
        await pool.close()
    assert ids == list(range(1, 13))
    # The first page is taken before sizes are known; then about 250 kB each.
    assert pages[0] == 4 and max(pages[1:]) <= 3 and sum(pages) == 12, pages
