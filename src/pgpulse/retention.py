"""Retention: prune old events, notifications and ended jobs in small batches,
without blocking publishers.

A job that ended before the horizon goes too, as its events did, and a job
still queued past it (a kind no worker claims) fails with an event, then
goes the same way. Pruning
deletes rows only; it never touches the tenant counter rows that publishers
lock, so it never waits for a publisher or makes one wait. One server
prunes at a time (a try-lock); the others skip the round."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .sql import QUERIES

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

log = logging.getLogger("pgpulse.retention")

PRUNE_LOCK_KEY = 0x7067_7075_7072  # "pgpupr"
PRUNE_BATCH = 5000  # rows per DELETE, so each statement stays short
EXPIRE_BATCH = 500  # stale queued jobs failed per statement (each publishes an event)


async def prune(pool: AsyncConnectionPool, max_age: float, keep: int) -> int:
    """Delete events older than ``max_age`` seconds or past a tenant's newest ``keep``,
    notifications older than ``max_age``, and jobs that ended more than ``max_age``
    seconds ago; fail jobs queued for longer than that."""
    deleted = 0
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", [PRUNE_LOCK_KEY])
        row = await cur.fetchone()
        if not row or not row[0]:
            return 0
        try:
            for name, params in (
                ("prune_by_age", {"seconds": max_age, "batch": PRUNE_BATCH}),
                ("prune_by_count", {"keep": keep, "batch": PRUNE_BATCH}),
                ("prune_notifications", {"seconds": max_age, "batch": PRUNE_BATCH}),
                ("expire_queued_jobs", {"seconds": max_age, "batch": EXPIRE_BATCH}),
                ("prune_jobs", {"seconds": max_age, "batch": PRUNE_BATCH}),
            ):
                while True:
                    cur = await conn.execute(QUERIES[name], params)
                    row = await cur.fetchone() if cur.description else None
                    count = int(row[0]) if row is not None else cur.rowcount
                    deleted += count
                    if count < params["batch"]:
                        break
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", [PRUNE_LOCK_KEY])
    if deleted:
        log.info("pruned %d events and jobs", deleted)
    return deleted


async def prune_forever(
    pool: AsyncConnectionPool, max_age: float, keep: int, interval: float
) -> None:
    while True:
        try:
            await prune(pool, max_age, keep)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("pruning failed, will retry: %s", exc)
        await asyncio.sleep(interval)
