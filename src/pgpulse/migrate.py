"""Versioned migrations of schema ``pgpulse``, safe when many servers start at once.

Each file in ``sql/migrations`` is applied once, in version order, in its own
transaction, and recorded in ``pgpulse.schema_version``. A session advisory
lock serialises servers that start together: the first applies, the others
wait and then find nothing left to do.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from . import db
from .errors import ConfigError
from .sql import migrations

log = logging.getLogger("pgpulse.migrate")

MIGRATION_LOCK_KEY = 0x7067_7075_6C73  # "pgpuls": one key for every pgpulse server

_BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS pgpulse;
CREATE TABLE IF NOT EXISTS pgpulse.schema_version (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


async def _refuse_foreign_schema(conn: psycopg.AsyncConnection[Any]) -> None:
    """Refuse to adopt a ``pgpulse`` schema that another role owns.

    Its owner could replace pgpulse's functions (which every server and
    publisher calls, some as their owner) with its own.
    """
    cur = await conn.execute(
        "SELECT pg_get_userbyid(nspowner), current_user FROM pg_namespace WHERE nspname = 'pgpulse'"
    )
    row = await cur.fetchone()
    if row is not None and row[0] != row[1]:
        raise ConfigError(
            f"schema pgpulse belongs to role {row[0]!r}, not to {row[1]!r} that migrates it: "
            f"its owner could change pgpulse's functions; migrate as {row[0]!r}, or drop the schema"
        )


async def current_version(conn: psycopg.AsyncConnection[Any]) -> int:
    cur = await conn.execute("SELECT to_regclass('pgpulse.schema_version') IS NOT NULL")
    row = await cur.fetchone()
    if not row or not row[0]:
        return 0
    cur = await conn.execute("SELECT coalesce(max(version), 0) FROM pgpulse.schema_version")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def migrate(url: str) -> int:
    """Bring the schema up to date; returns the version now applied."""
    known = migrations()
    latest = known[-1][0] if known else 0
    conn = await db.connect(url)
    async with conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK_KEY])
        try:
            await _refuse_foreign_schema(conn)
            await conn.execute(_BOOTSTRAP)
            version = await current_version(conn)
            if version > latest:
                raise ConfigError(
                    f"database schema is at version {version}, newer than this pgpulse "
                    f"knows ({latest}): upgrade pgpulse"
                )
            for number, name, sql in known:
                if number <= version:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO pgpulse.schema_version (version, name) VALUES (%s, %s)",
                        [number, name],
                    )
                log.info("applied migration %s", name)
                version = number
            return version
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK_KEY])


async def check(url: str) -> int:
    """Refuse to start on a schema older (or newer) than this pgpulse; returns its version.

    For teams that apply migrations themselves (``pgpulse migrate`` in a deploy
    step, or the SQL files through Alembic): nothing is changed here.
    """
    known = migrations()
    latest = known[-1][0] if known else 0
    conn = await db.connect(url)
    async with conn:
        version = await current_version(conn)
    if version < latest:
        raise ConfigError(
            f"database schema pgpulse is at version {version}, this pgpulse needs {latest}: "
            f"run `pgpulse migrate` (or start with migrate='auto')"
        )
    if version > latest:
        raise ConfigError(
            f"database schema is at version {version}, newer than this pgpulse "
            f"knows ({latest}): upgrade pgpulse"
        )
    return version
