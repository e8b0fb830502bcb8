"""``pgpulse track``: a trigger that turns a table's writes into events.

Any application, in any language, then feeds pgpulse by writing its own
tables; the trigger publishes in the writer's transaction, so a rolled-back
write emits nothing. Names are resolved by PostgreSQL (``to_regclass``) and
quoted as identifiers; the tenant column and topic reach the trigger as
literal arguments, never as SQL.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from .errors import TrackError

TRIGGER_NAME = "pgpulse_track"


async def _resolve(conn: psycopg.AsyncConnection[Any], table: str) -> tuple[str, str]:
    try:
        cur = await conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.oid = to_regclass(%s) AND c.relkind IN ('r', 'p')",
            [table],
        )
    except psycopg.errors.Error as exc:
        raise TrackError(
            f"{table!r} is not a valid table name: {exc.diag.message_primary}"
        ) from None
    row = await cur.fetchone()
    if row is None:
        raise TrackError(f"table {table!r} does not exist")
    return str(row[0]), str(row[1])


async def track(
    conn: psycopg.AsyncConnection[Any], table: str, tenant_column: str, topic: str | None = None
) -> str:
    """Install (or replace) the trigger; returns the table's qualified name."""
    schema, name = await _resolve(conn, table)
    cur = await conn.execute(
        "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s"
        " AND attnum > 0 AND NOT attisdropped",
        [_qualified(schema, name), tenant_column],
    )
    if await cur.fetchone() is None:
        raise TrackError(f"table {schema}.{name} has no column {tenant_column!r}")
    target = sql.Identifier(schema, name)
    async with conn.transaction():
        await conn.execute(
            sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(TRIGGER_NAME), target)
        )
        await conn.execute(
            sql.SQL(
                "CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {}"
                " FOR EACH ROW EXECUTE FUNCTION pgpulse.track_trigger({}, {})"
            ).format(
                sql.Identifier(TRIGGER_NAME),
                target,
                sql.Literal(tenant_column),
                sql.Literal(topic or name),
            )
        )
    return f"{schema}.{name}"


async def untrack(conn: psycopg.AsyncConnection[Any], table: str) -> str:
    schema, name = await _resolve(conn, table)
    await conn.execute(
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
            sql.Identifier(TRIGGER_NAME), sql.Identifier(schema, name)
        )
    )
    return f"{schema}.{name}"


def _qualified(schema: str, name: str) -> str:
    """A ``to_regclass`` argument naming exactly this table, quotes doubled."""
    return '"' + schema.replace('"', '""') + '"."' + name.replace('"', '""') + '"'
