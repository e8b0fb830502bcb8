"""``pgpulse track``: a trigger that turns a table's writes into events.

Any application, in any language, then feeds pgpulse by writing its own
tables; the trigger publishes in the writer's transaction, so a rolled-back
write emits nothing. Names are resolved by PostgreSQL (``to_regclass``) and
quoted as identifiers; the tenant column and topic reach the trigger as
literal arguments, never as SQL.

``TABLE`` is written as in SQL (``schema.table``; double quotes keep case and
odd characters), while the tenant column is its exact name. A row whose
tenant column is NULL or empty publishes nothing; a row that moves between
tenants is a delete for the old tenant and an insert for the new one (see
``sql/migrations/0002_track.sql``).

Without options every column of every row reaches every connection of the
row's tenant. The options narrow that (``sql/migrations/0005_hardening.sql``):
``columns`` (an allow-list: nothing else leaves the database), ``exclude``,
``user_column`` (a row reaches only its user) and ``when`` (a condition on
the row's columns, in SQL).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson
import psycopg
from psycopg import sql

from .errors import NOT_MIGRATED, TrackError
from .events import MAX_NAME_LENGTH, is_name

TRIGGER_NAME = "pgpulse_track"
_PLAIN = re.compile(r"[a-z_][a-z0-9_]*")  # identifiers that need no quotes in messages


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
        hint = ""
        if '"' not in table and table != table.lower():
            hint = f" (unquoted names fold to lower case, as in SQL; quote it: '\"{table}\"')"
        raise TrackError(f"table {table!r} does not exist{hint}")
    return str(row[0]), str(row[1])


async def track(
    conn: psycopg.AsyncConnection[Any],
    table: str,
    tenant_column: str,
    topic: str | None = None,
    *,
    columns: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    user_column: str | None = None,
    when: str | None = None,
) -> str:
    """Install (or replace) the trigger; returns the table's qualified name."""
    if topic is not None and not is_name(topic):
        raise TrackError(
            f"topic must be 1 to {MAX_NAME_LENGTH} characters without NUL, got {len(topic)}"
        )
    schema, name = await _resolve(conn, table)
    if schema == "pgpulse":
        # Its own tables publish by inserting into pgpulse.events: a trigger there recurses.
        raise TrackError(f"table {_shown(schema, name)} belongs to pgpulse and cannot be tracked")
    cur = await conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s)"
        " AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        [_qualified(schema, name)],
    )
    table_columns = [str(row[0]) for row in await cur.fetchall()]
    named = [("tenant column", [tenant_column])]
    if user_column is not None:
        named.append(("--user-column", [user_column]))
    named += [("--columns", list(columns or [])), ("--exclude", list(exclude or []))]
    for option, names in named:
        unknown = [c for c in names if c not in table_columns]
        if unknown:
            what = "column" if option == "tenant column" else f"{option} column"
            raise TrackError(
                f"table {_shown(schema, name)} has no {what} {unknown[0]!r}"
                f" (its columns: {', '.join(repr(c) for c in table_columns) or 'none'})"
            )
    if columns is not None and not columns:
        raise TrackError("--columns names no column")
    options: dict[str, Any] = {}
    if columns is not None:
        options["columns"] = list(columns)
    if exclude:
        options["exclude"] = list(exclude)
    if user_column is not None:
        options["user_column"] = user_column
    if when is not None:
        await _check_condition(conn, schema, name, when)
        options["when"] = when
    target = sql.Identifier(schema, name)
    try:
        async with conn.transaction():
            await conn.execute(
                sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                    sql.Identifier(TRIGGER_NAME), target
                )
            )
            await conn.execute(
                sql.SQL(
                    "CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {}"
                    " FOR EACH ROW EXECUTE FUNCTION pgpulse.track_trigger({})"
                ).format(
                    sql.Identifier(TRIGGER_NAME),
                    target,
                    sql.SQL(", ").join(
                        [
                            sql.Literal(tenant_column),
                            sql.Literal(topic if topic is not None else name),
                            *([sql.Literal(orjson.dumps(options).decode())] if options else []),
                        ]
                    ),
                )
            )
    except (psycopg.errors.UndefinedFunction, psycopg.errors.InvalidSchemaName):
        raise TrackError(NOT_MIGRATED) from None
    except psycopg.errors.Error as exc:
        raise TrackError(
            f"cannot track {_shown(schema, name)}: {exc.diag.message_primary}"
        ) from None
    return _shown(schema, name)


async def _check_condition(
    conn: psycopg.AsyncConnection[Any], schema: str, name: str, when: str
) -> None:
    """Refuse a ``--when`` that is not a boolean expression over the table's columns."""
    if "\x00" in when or not when.strip():
        raise TrackError("--when must be a non-empty SQL condition")
    probe = sql.SQL("SELECT CASE WHEN ({}) THEN 1 END FROM (SELECT (NULL::{}).*) AS row LIMIT 0")
    try:
        async with conn.transaction():
            await conn.execute(probe.format(sql.SQL(when), sql.Identifier(schema, name)))
    except psycopg.errors.Error as exc:
        raise TrackError(f"--when {when!r} does not work: {exc.diag.message_primary}") from None


async def untrack(conn: psycopg.AsyncConnection[Any], table: str) -> str:
    """Remove the trigger (nothing to do when there is none); returns the qualified name."""
    schema, name = await _resolve(conn, table)
    try:
        await conn.execute(
            sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                sql.Identifier(TRIGGER_NAME), sql.Identifier(schema, name)
            )
        )
    except psycopg.errors.Error as exc:
        raise TrackError(
            f"cannot untrack {_shown(schema, name)}: {exc.diag.message_primary}"
        ) from None
    return _shown(schema, name)


def _shown(schema: str, name: str) -> str:
    """The table's name for messages, quoted where SQL would need it."""
    return ".".join(
        part if _PLAIN.fullmatch(part) else '"' + part.replace('"', '""') + '"'
        for part in (schema, name)
    )


def _qualified(schema: str, name: str) -> str:
    """A ``to_regclass`` argument naming exactly this table, quotes doubled."""
    return '"' + schema.replace('"', '""') + '"."' + name.replace('"', '""') + '"'
