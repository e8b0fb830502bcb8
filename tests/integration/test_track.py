"""``pgpulse.track``: the trigger's events in the table, refusals, and identifier quoting."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgpulse.errors import TrackError
from pgpulse.track import track, untrack

Conn = psycopg.AsyncConnection[Any]


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Conn]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        yield c


@pytest.fixture
async def schema(db: Conn) -> AsyncIterator[str]:
    """A schema of this test's own, dropped at the end."""
    name = f"track_{uuid.uuid4().hex[:10]}"
    await db.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        await db.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


async def tenant_events(db: Conn, tenant: str) -> list[tuple[int, str, str, Any]]:
    cur = await db.execute(
        "SELECT id, topic, type, data FROM pgpulse.events WHERE tenant_id = %s ORDER BY id",
        [tenant],
    )
    return [(int(r[0]), str(r[1]), str(r[2]), r[3]) for r in await cur.fetchall()]


async def test_writes_publish_in_the_writers_transaction(
    db: Conn, schema: str, tenant: str
) -> None:
    a, b = tenant + "-a", tenant + "-b"
    await db.execute(f"CREATE TABLE {schema}.orders (id int PRIMARY KEY, org text, total int)")
    assert await track(db, f"{schema}.orders", "org") == f"{schema}.orders"

    await db.execute(f"INSERT INTO {schema}.orders VALUES (1, %s, 10), (2, %s, 20)", [a, b])
    await db.execute(f"UPDATE {schema}.orders SET total = 11 WHERE id = 1")
    await db.execute(f"DELETE FROM {schema}.orders WHERE id = 2")
    async with db.transaction(force_rollback=True):
        await db.execute(f"INSERT INTO {schema}.orders VALUES (3, %s, 30)", [a])
    await db.execute(f"INSERT INTO {schema}.orders VALUES (4, NULL, 40), (5, '', 50)")

    row1 = {"id": 1, "org": a, "total": 10}
    assert await tenant_events(db, a) == [
        (
            1,
            "orders",
            "orders.insert",
            {"table": "orders", "schema": schema, "op": "insert", "new": row1, "old": None},
        ),
        (
            2,
            "orders",
            "orders.update",
            {
                "table": "orders",
                "schema": schema,
                "op": "update",
                "new": {**row1, "total": 11},
                "old": row1,
            },
        ),
    ]
    row2 = {"id": 2, "org": b, "total": 20}
    assert [(e[2], e[3]["new"], e[3]["old"]) for e in await tenant_events(db, b)] == [
        ("orders.insert", row2, None),
        ("orders.delete", None, row2),
    ]


async def test_a_row_moving_between_tenants_shows_each_only_its_side(
    db: Conn, schema: str, tenant: str
) -> None:
    a, b = tenant + "-a", tenant + "-b"
    await db.execute(f"CREATE TABLE {schema}.docs (id int PRIMARY KEY, owner text, body text)")
    await track(db, f"{schema}.docs", "owner", topic="docs")
    await db.execute(f"INSERT INTO {schema}.docs VALUES (1, %s, 'secret of a')", [a])
    await db.execute(f"UPDATE {schema}.docs SET owner = %s, body = 'now b''s' WHERE id = 1", [b])
    await db.execute(f"UPDATE {schema}.docs SET owner = %s WHERE id = 1", [a])  # back, reversed

    got_a = await tenant_events(db, a)
    assert [e[2] for e in got_a] == ["docs.insert", "docs.delete", "docs.insert"]
    assert got_a[1][3]["old"]["body"] == "secret of a" and got_a[1][3]["new"] is None
    got_b = await tenant_events(db, b)
    assert [e[2] for e in got_b] == ["docs.insert", "docs.delete"]
    assert got_b[0][3]["old"] is None and got_b[0][3]["new"]["body"] == "now b's"
    assert "secret of a" not in str(got_b)


async def test_untrack_stops_publishing(db: Conn, schema: str, tenant: str) -> None:
    await db.execute(f"CREATE TABLE {schema}.t (tenant text)")
    await track(db, f"{schema}.t", "tenant")
    await db.execute(f"INSERT INTO {schema}.t VALUES (%s)", [tenant])
    assert await untrack(db, f"{schema}.t") == f"{schema}.t"
    await db.execute(f"INSERT INTO {schema}.t VALUES (%s)", [tenant])
    assert len(await tenant_events(db, tenant)) == 1
    await untrack(db, f"{schema}.t")  # untracking twice is fine
    # Tracking again replaces the trigger (new topic), never stacks a second one.
    await track(db, f"{schema}.t", "tenant", topic="first")
    await track(db, f"{schema}.t", "tenant", topic="second")
    await db.execute(f"INSERT INTO {schema}.t VALUES (%s)", [tenant])
    assert [e[1] for e in await tenant_events(db, tenant)] == ["t", "second"]


async def test_refusals_say_what_is_wrong(db: Conn, schema: str) -> None:
    await db.execute(f"CREATE TABLE {schema}.items (id int, org_id text)")
    with pytest.raises(TrackError) as info:
        await track(db, f"{schema}.items", "tenant_id")
    message = str(info.value)
    assert "no column 'tenant_id'" in message and f"{schema}.items" in message
    assert "'org_id'" in message  # names the columns it does have
    with pytest.raises(TrackError, match="no column 'ORG_ID'"):
        await track(db, f"{schema}.items", "ORG_ID")  # the column name is exact
    with pytest.raises(TrackError, match="does not exist"):
        await track(db, f"{schema}.nope", "org_id")
    await db.execute(f'CREATE TABLE {schema}."Widgets" (org_id text)')
    with pytest.raises(TrackError, match="fold to lower case"):
        await track(db, f"{schema}.Widgets", "org_id")
    assert await track(db, f'{schema}."Widgets"', "org_id") == f'{schema}."Widgets"'

    with pytest.raises(TrackError, match="not a valid table name"):
        await track(db, 'a.b.c.d"', "org_id")
    with pytest.raises(TrackError, match="belongs to pgpulse"):
        await track(db, "pgpulse.events", "tenant_id")
    with pytest.raises(TrackError, match="topic must be"):
        await track(db, f"{schema}.items", "org_id", topic="x" * 201)
    await db.execute(f"CREATE VIEW {schema}.v AS SELECT * FROM {schema}.items")
    with pytest.raises(TrackError, match="does not exist"):
        await track(db, f"{schema}.v", "org_id")
    cur = await db.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgname = 'pgpulse_track' AND tgrelid = %s::regclass",
        [f"{schema}.items"],
    )
    assert await cur.fetchone() == (0,)


async def test_hostile_identifiers_are_quoted(db: Conn, tenant: str) -> None:
    schema = f'evil "{uuid.uuid4().hex[:6]}"; DROP SCHEMA public; --'
    table = 'weird "name"; drop'
    column = "tenant 'col'; --\"x"
    topic = "topic'); DROP TABLE pgpulse.events; --"
    q_schema, q_table, q_column = (sql.Identifier(n) for n in (schema, table, column))
    await db.execute(sql.SQL("CREATE SCHEMA {}").format(q_schema))
    try:
        await db.execute(
            sql.SQL("CREATE TABLE {}.{} (id int, {} text)").format(q_schema, q_table, q_column)
        )
        qualified = sql.Identifier(schema, table).as_string(db)
        shown = await track(db, qualified, column, topic=topic)
        assert shown == qualified
        await db.execute(
            sql.SQL("INSERT INTO {}.{} VALUES (1, %s)").format(q_schema, q_table), [tenant]
        )
        [(event_id, got_topic, got_type, data)] = await tenant_events(db, tenant)
        assert (event_id, got_topic, got_type) == (1, topic, f"{table}.insert")
        assert data["schema"] == schema and data["table"] == table
        assert data["new"] == {"id": 1, column: tenant}
        await untrack(db, qualified)
        cur = await db.execute(
            "SELECT to_regclass('pgpulse.events') IS NOT NULL,"
            " EXISTS (SELECT FROM pg_namespace WHERE nspname = 'public')"
        )
        assert await cur.fetchone() == (True, True)
    finally:
        await db.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(q_schema))


async def test_a_database_without_pgpulse_is_told_to_migrate(fresh_database: str) -> None:
    async with await psycopg.AsyncConnection.connect(fresh_database, autocommit=True) as c:
        await c.execute("CREATE TABLE t (tenant text)")
        with pytest.raises(TrackError, match="pgpulse migrate"):
            await track(c, "t", "tenant")


async def test_only_allowed_columns_leave_the_database(db: Conn, schema: str, tenant: str) -> None:
    await db.execute(
        f"CREATE TABLE {schema}.users (id int PRIMARY KEY, org text, name text,"
        " password_hash text, ssn text)"
    )
    await track(db, f"{schema}.users", "org", columns=["id", "name"])
    await db.execute(
        f"INSERT INTO {schema}.users VALUES (1, %s, 'ann', 'bcrypt$secret-hash', '123-45-6789')",
        [tenant],
    )
    await db.execute(f"UPDATE {schema}.users SET password_hash = 'bcrypt$other' WHERE id = 1")
    cur = await db.execute(
        "SELECT data::text FROM pgpulse.events WHERE tenant_id = %s ORDER BY id", [tenant]
    )
    texts = [r[0] for r in await cur.fetchall()]
    assert len(texts) == 2
    for text in texts:
        assert "secret-hash" not in text and "bcrypt" not in text and "6789" not in text
        assert '"name": "ann"' in text

    await track(db, f"{schema}.users", "org", exclude=["password_hash", "ssn"])
    await db.execute(f"UPDATE {schema}.users SET name = 'anne' WHERE id = 1")
    events = await tenant_events(db, tenant)
    assert set(events[-1][3]["new"]) == {"id", "org", "name"}


async def test_user_column_and_condition(db: Conn, schema: str, tenant: str) -> None:
    await db.execute(
        f"CREATE TABLE {schema}.docs (id int PRIMARY KEY, org text, owner text, draft bool)"
    )
    await track(db, f"{schema}.docs", "org", user_column="owner", when="NOT draft")
    await db.execute(
        f"INSERT INTO {schema}.docs VALUES (1, %s, 'ann', true), (2, %s, 'bob', false),"
        " (3, %s, NULL, false)",
        [tenant] * 3,
    )
    await db.execute(f"UPDATE {schema}.docs SET draft = false WHERE id = 1")  # joins: insert
    await db.execute(f"UPDATE {schema}.docs SET owner = 'cid' WHERE id = 2")  # moves user
    await db.execute(f"UPDATE {schema}.docs SET draft = true WHERE id = 1")  # leaves: delete
    cur = await db.execute(
        "SELECT type, user_id, (data->'new'->>'id')::int, (data->'old'->>'id')::int"
        " FROM pgpulse.events WHERE tenant_id = %s ORDER BY id",
        [tenant],
    )
    assert await cur.fetchall() == [
        ("docs.insert", "bob", 2, None),
        ("docs.insert", "ann", 1, None),
        ("docs.delete", "bob", None, 2),
        ("docs.insert", "cid", 2, None),
        ("docs.delete", "ann", None, 1),
    ]
    with pytest.raises(TrackError, match="--when"):
        await track(db, f"{schema}.docs", "org", when="no_such_column > 1")
    with pytest.raises(TrackError, match="--when"):
        await track(db, f"{schema}.docs", "org", when="id")  # not a condition
    with pytest.raises(TrackError, match="--columns column 'nope'"):
        await track(db, f"{schema}.docs", "org", columns=["id", "nope"])
    with pytest.raises(TrackError, match="--user-column"):
        await track(db, f"{schema}.docs", "org", user_column="nobody")


async def test_huge_rows_publish_a_compact_marker(db: Conn, schema: str, tenant: str) -> None:
    await db.execute(f"CREATE TABLE {schema}.blobs (id int PRIMARY KEY, org text, body text)")
    await track(db, f"{schema}.blobs", "org")
    async with db.transaction():
        await db.execute("SET LOCAL pgpulse.max_payload_bytes = 100000")
        await db.execute(
            f"INSERT INTO {schema}.blobs VALUES (7, %s, %s)", [tenant, "x" * 5_000_000]
        )
    ((_, _, type_, data),) = await tenant_events(db, tenant)
    assert type_ == "blobs.insert"
    assert data["too_large"] is True and data["key"] == {"id": 7} and data["size"] > 100_000
    assert "body" not in data and "new" not in data


async def test_sql_publish_enforces_the_payload_limit(db: Conn, tenant: str) -> None:
    async with db.transaction():
        await db.execute("SET LOCAL pgpulse.max_payload_bytes = 1000")
        with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="limit is 1000 bytes"):
            await db.execute(
                "SELECT pgpulse.publish(%s, 't', 'big', %s::jsonb)", [tenant, f'"{"y" * 2000}"']
            )
    with pytest.raises(psycopg.errors.ProgramLimitExceeded):
        await db.execute(
            "SELECT pgpulse.publish(%s, 't', 'big', to_jsonb(repeat('z', 9000000)))", [tenant]
        )
    assert await tenant_events(db, tenant) == []
