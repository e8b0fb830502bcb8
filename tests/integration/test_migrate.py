"""Migrations: versioned, idempotent, and safe when several servers start together."""

from __future__ import annotations

import asyncio

import psycopg

from pgpulse.migrate import migrate
from pgpulse.sql import migrations


async def test_concurrent_migrations_apply_once(fresh_database: str) -> None:
    latest = migrations()[-1][0]
    versions = await asyncio.gather(*(migrate(fresh_database) for _ in range(4)))
    assert versions == [latest] * 4
    async with await psycopg.AsyncConnection.connect(fresh_database) as conn:
        cur = await conn.execute("SELECT version FROM pgpulse.schema_version ORDER BY version")
        assert [r[0] for r in await cur.fetchall()] == [v for v, _, _ in migrations()]
    assert await migrate(fresh_database) == latest
