"""Publishing in the caller's transaction: the event exists iff the transaction commits."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

import pgpulse
from pgpulse.errors import InvalidEvent


async def rows(url: str, tenant: str) -> list[tuple[int, str]]:
    async with await psycopg.AsyncConnection.connect(url) as c:
        cur = await c.execute(
            "SELECT id, type FROM pgpulse.events WHERE tenant_id = %s ORDER BY id", [tenant]
        )
        return [(r[0], r[1]) for r in await cur.fetchall()]


async def keyed(url: str, tenant: str) -> list[tuple[int, int]]:
    async with await psycopg.AsyncConnection.connect(url) as c:
        cur = await c.execute(
            "SELECT id, key FROM pgpulse.events WHERE tenant_id = %s ORDER BY id", [tenant]
        )
        return [(r[0], r[1]) for r in await cur.fetchall()]


async def test_commit_stores_and_rollback_leaves_no_trace(
    conn: psycopg.AsyncConnection[object], database_url: str, tenant: str
) -> None:
    await pgpulse.publish(conn, tenant_id=tenant, type="gone", data={"n": 1})
    await conn.rollback()
    kept = await pgpulse.publish(conn, tenant_id=tenant, type="kept", data={"n": 2})
    await conn.commit()
    # Ids are taken at commit: the rolled-back event never had one, so no gap.
    assert await rows(database_url, tenant) == [(1, "kept")]
    assert await keyed(database_url, tenant) == [(1, kept)]
    async with await psycopg.AsyncConnection.connect(database_url) as c:
        cur = await c.execute("SELECT count(*) FROM pgpulse.pending")
        assert await cur.fetchone() == (0,)  # nothing stays staged after commit or rollback


async def test_ids_are_per_tenant_and_gap_free(
    conn: psycopg.AsyncConnection[object], database_url: str, tenant: str
) -> None:
    other = tenant + "-other"
    keys = [await pgpulse.publish(conn, tenant_id=tenant, type="a", data={}) for _ in range(3)]
    keys_other = [await pgpulse.publish(conn, tenant_id=other, type="a", data={}) for _ in range(2)]
    await conn.commit()
    # Keys are unique and increase in publish order; ids follow them per tenant.
    assert len(set(keys + keys_other)) == 5 and keys == sorted(keys)
    assert await keyed(database_url, tenant) == list(zip([1, 2, 3], keys, strict=True))
    assert await keyed(database_url, other) == list(zip([1, 2], keys_other, strict=True))


async def test_autocommit_publish_commits_at_once(database_url: str, tenant: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        key = await pgpulse.publish(c, tenant_id=tenant, type="a", data=None)
        cur = await c.execute(
            "SELECT id, key, data FROM pgpulse.events WHERE tenant_id = %s", [tenant]
        )
        assert await cur.fetchall() == [(1, key, None)]  # JSON null is stored as null


async def test_sql_function_validates_names(conn: psycopg.AsyncConnection[object]) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="tenant_id must be 1 to 200"):
        await conn.execute("SELECT pgpulse.publish('', 't', 'x', '{}')")
    await conn.rollback()
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="data must not be NULL"):
        await conn.execute("SELECT pgpulse.publish('a', 't', 'x', NULL)")
    await conn.rollback()


async def test_python_validates_before_sql(conn: psycopg.AsyncConnection[object]) -> None:
    with pytest.raises(InvalidEvent, match="tenant_id must be a string of 1 to 200"):
        await pgpulse.publish(conn, tenant_id="x" * 201, type="a", data={})
    with pytest.raises(InvalidEvent, match="not JSON-serialisable"):
        await pgpulse.publish(conn, tenant_id="a", type="a", data={"s": {1, 2}})


async def test_sqlalchemy_session_joins_the_transaction(database_url: str, tenant: str) -> None:
    engine = create_async_engine(
        "postgresql+psycopg://",
        async_creator=lambda: psycopg.AsyncConnection.connect(database_url),
    )
    try:
        async with AsyncSession(engine) as session:
            async with session.begin():
                await pgpulse.publish(session, tenant_id=tenant, type="kept", data={"x": 1})
            async with session.begin():
                await pgpulse.publish(session, tenant_id=tenant, type="gone", data={})
                await session.rollback()
        async with engine.connect() as connection:
            key = await pgpulse.publish(
                connection, tenant_id=tenant, type="conn", data={}, topic="other"
            )
            await connection.commit()
        assert await rows(database_url, tenant) == [(1, "kept"), (2, "conn")]
        assert (await keyed(database_url, tenant))[1] == (2, key)
    finally:
        await engine.dispose()


async def test_publish_refuses_other_objects() -> None:
    with pytest.raises(TypeError, match="psycopg AsyncConnection"):
        await pgpulse.publish(object(), tenant_id="a", type="a", data={})
