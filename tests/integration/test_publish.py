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


async def test_commit_stores_and_rollback_leaves_no_trace(
    conn: psycopg.AsyncConnection[object], database_url: str, tenant: str
) -> None:
    first = await pgpulse.publish(conn, tenant_id=tenant, type="gone", data={"n": 1})
    assert first == 1
    await conn.rollback()
    kept = await pgpulse.publish(conn, tenant_id=tenant, type="kept", data={"n": 2})
    await conn.commit()
    # The rolled-back id is handed out again: aborted transactions leave no gap.
    assert kept == 1
    assert await rows(database_url, tenant) == [(1, "kept")]


async def test_ids_are_per_tenant_and_gap_free(
    conn: psycopg.AsyncConnection[object], database_url: str, tenant: str
) -> None:
    other = tenant + "-other"
    ids = [await pgpulse.publish(conn, tenant_id=tenant, type="a", data={}) for _ in range(3)]
    ids_other = [await pgpulse.publish(conn, tenant_id=other, type="a", data={}) for _ in range(2)]
    await conn.commit()
    assert ids == [1, 2, 3]
    assert ids_other == [1, 2]


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
            event_id = await pgpulse.publish(
                connection, tenant_id=tenant, type="conn", data={}, topic="other"
            )
            await connection.commit()
        assert event_id == 2
        assert await rows(database_url, tenant) == [(1, "kept"), (2, "conn")]
    finally:
        await engine.dispose()


async def test_publish_refuses_other_objects() -> None:
    with pytest.raises(TypeError, match="psycopg AsyncConnection"):
        await pgpulse.publish(object(), tenant_id="a", type="a", data={})
