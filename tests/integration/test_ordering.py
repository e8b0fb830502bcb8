"""Commit order: concurrent, overlapping, partly aborted transactions.

Whatever order transactions publish, commit and abort in, and whatever
tenants they publish to in whatever order:

* no publisher waits for another's open transaction, and nothing deadlocks;
* a live client sees exactly the committed events, once each, with ids
  strictly increasing and gap-free per tenant;
* every frame carries the key ``publish`` returned;
* resuming from any id it saw gives exactly the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pgpulse

from ..support import TIMEOUT, ServerHandle, events, mint, no_more_events, until_ready


@dataclass(frozen=True)
class Tx:
    tenants: tuple[int, ...]  # which tenants it publishes to, in this order (any order)
    abort: bool
    delay_ms: int  # how long it stays open after publishing


async def run_transactions(url: str, tenants: list[str], txs: list[Tx]) -> dict[str, list[int]]:
    """Run every transaction at once: all publish, then all end in random order.

    Returns the keys of the committed events per tenant. Every transaction
    must publish while all the others are open (a barrier), which is what a
    publisher that waited for another's open transaction could never do.
    """
    committed: dict[str, list[int]] = {t: [] for t in tenants}
    published = asyncio.Barrier(len(txs))

    async def one(tx: Tx) -> None:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            keys: list[tuple[str, int]] = []
            for index in tx.tenants:
                tenant = tenants[index]
                key = await pgpulse.publish(
                    conn, tenant_id=tenant, type="tx", data={"delay": tx.delay_ms}
                )
                keys.append((tenant, key))
            await published.wait()
            await asyncio.sleep(tx.delay_ms / 1000)
            if tx.abort:
                await conn.rollback()
            else:
                await conn.commit()
                for tenant, key in keys:
                    committed[tenant].append(key)

    await asyncio.wait_for(asyncio.gather(*(one(tx) for tx in txs)), TIMEOUT)
    return committed


def new_tenants(n: int) -> list[str]:
    base = f"o-{uuid.uuid4().hex[:12]}"
    return [f"{base}-{i}" for i in range(n)]


async def check(server: ServerHandle, url: str, txs: list[Tx], tenants: list[str]) -> None:
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(server.connect(mint(t))) for t in tenants]
        for ws in clients:
            await until_ready(ws)
        committed = await run_transactions(url, tenants, txs)
        for tenant, ws in zip(tenants, clients, strict=True):
            expected = committed[tenant]
            got = await events(ws, len(expected))
            ids = [e["id"] for e in got]
            # Gap-free and strictly increasing: aborted transactions leave no hole.
            assert ids == list(range(1, len(expected) + 1))
            # Exactly the committed events, once each.
            assert sorted(e["key"] for e in got) == sorted(expected)
            await no_more_events(ws, 0.2)
            if expected:
                k = random.choice([0, *ids])
                async with server.connect(mint(tenant), last_event_id=str(k)) as resumed:
                    frames = await until_ready(resumed)
                    assert [f for f in frames if "id" in f] == got[k:]
                    assert frames[-1] == {"op": "ready", "last_event_id": ids[-1]}


async def test_twenty_overlapping_transactions_of_one_tenant(
    server: ServerHandle, database_url: str
) -> None:
    """20 transactions of one tenant all publish, then end concurrently in random order."""
    rng = random.Random(20)
    txs = [Tx((0,), abort=rng.random() < 0.25, delay_ms=rng.randint(0, 30)) for _ in range(20)]
    assert any(t.abort for t in txs) and not all(t.abort for t in txs)
    await check(server, database_url, txs, new_tenants(1))


async def test_twenty_transactions_over_three_tenants_in_any_order(
    server: ServerHandle, database_url: str
) -> None:
    rng = random.Random(21)
    txs = [
        Tx(
            tenants=tuple(rng.sample(range(3), rng.randint(1, 3))),
            abort=rng.random() < 0.25,
            delay_ms=rng.randint(0, 30),
        )
        for _ in range(20)
    ]
    await check(server, database_url, txs, new_tenants(3))


tx_strategy = st.builds(
    Tx,
    tenants=st.lists(st.integers(0, 2), min_size=1, max_size=4).map(tuple),
    abort=st.booleans(),
    delay_ms=st.integers(0, 15),
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(txs=st.lists(tx_strategy, min_size=1, max_size=12))
async def test_any_interleaving_delivers_exactly_the_committed(
    server: ServerHandle, database_url: str, txs: list[Tx]
) -> None:
    await check(server, database_url, txs, new_tenants(3))


async def test_open_transaction_holds_back_neither_publishers_nor_delivery(
    server: ServerHandle, database_url: str, tenant: str
) -> None:
    """A publishes for T and stays open; B publishes for T, commits, and is delivered first."""
    async with server.connect(mint(tenant)) as ws:
        await until_ready(ws)
        async with (
            await psycopg.AsyncConnection.connect(database_url) as a,
            await psycopg.AsyncConnection.connect(database_url) as b,
        ):
            key_a = await pgpulse.publish(a, tenant_id=tenant, type="a", data={})
            key_b = await asyncio.wait_for(
                pgpulse.publish(b, tenant_id=tenant, type="b", data={}), TIMEOUT
            )
            await asyncio.wait_for(b.commit(), TIMEOUT)
            [first] = await events(ws, 1)
            assert (first["type"], first["key"], first["id"]) == ("b", key_b, 1)
            assert a.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
            await a.commit()
            [second] = await events(ws, 1)
            assert (second["type"], second["key"], second["id"]) == ("a", key_a, 2)


async def test_opposite_tenant_orders_never_deadlock(
    server: ServerHandle, database_url: str
) -> None:
    """200 rounds of two transactions publishing to (x, y) and (y, x), then committing."""
    x, y = new_tenants(2)
    rounds = 200
    async with (
        server.connect(mint(x)) as ws_x,
        server.connect(mint(y)) as ws_y,
        await psycopg.AsyncConnection.connect(database_url) as one,
        await psycopg.AsyncConnection.connect(database_url) as two,
    ):
        await until_ready(ws_x)
        await until_ready(ws_y)

        async def tx(conn: psycopg.AsyncConnection[Any], first: str, second: str) -> None:
            await pgpulse.publish(conn, tenant_id=first, type="r", data={})
            await pgpulse.publish(conn, tenant_id=second, type="r", data={})
            await conn.commit()

        for _ in range(rounds):
            await asyncio.wait_for(asyncio.gather(tx(one, x, y), tx(two, y, x)), TIMEOUT)
        for ws in (ws_x, ws_y):
            got = await events(ws, 2 * rounds)
            assert [e["id"] for e in got] == list(range(1, 2 * rounds + 1))
            assert len({e["key"] for e in got}) == 2 * rounds
            await no_more_events(ws, 0.2)


async def test_publish_then_lock_rows_in_any_order_never_deadlocks(
    database_url: str, tenant: str
) -> None:
    """Two transactions publish, then lock the application's rows in opposite orders.

    Their row locks never cross pgpulse's: one waits for the other's commit,
    as it would without pgpulse, and both commit.
    """
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as setup:
        table = f"rows_{uuid.uuid4().hex[:8]}"
        await setup.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, n int)")
        await setup.execute(f"INSERT INTO {table} VALUES (1, 0), (2, 0)")
    try:
        for _ in range(20):
            async with (
                await psycopg.AsyncConnection.connect(database_url) as a,
                await psycopg.AsyncConnection.connect(database_url) as b,
            ):
                # Before version 4 this interleaving deadlocked: a held the
                # tenant's counter, b waited for it while holding row 2, and a
                # then waited for row 2.
                await pgpulse.publish(a, tenant_id=tenant, type="a", data={})
                await b.execute(f"UPDATE {table} SET n = n + 1 WHERE id = 2")
                await asyncio.wait_for(
                    pgpulse.publish(b, tenant_id=tenant, type="b", data={}), TIMEOUT
                )
                update_a = asyncio.create_task(
                    a.execute(f"UPDATE {table} SET n = n + 1 WHERE id = 2")
                )
                await asyncio.wait_for(b.commit(), TIMEOUT)
                await asyncio.wait_for(update_a, TIMEOUT)
                await a.commit()
    finally:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
            await c.execute(f"DROP TABLE {table}")


async def test_long_transaction_of_one_tenant_does_not_stall_another(
    server: ServerHandle, database_url: str, tenant: str
) -> None:
    other = tenant + "-b"
    async with server.connect(mint(other)) as ws:
        await until_ready(ws)
        async with await psycopg.AsyncConnection.connect(database_url) as slow:
            await pgpulse.publish(slow, tenant_id=tenant, type="slow", data={})
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
                await asyncio.wait_for(pgpulse.publish(c, tenant_id=other, type="fast", data={}), 5)
            [got] = await events(ws, 1)
            assert got["type"] == "fast"
            await slow.rollback()


async def test_savepoint_rollback_of_the_first_publish_keeps_the_rest(
    server: ServerHandle, database_url: str, tenant: str
) -> None:
    """The row that queues the commit-time numbering can be rolled back alone."""
    async with (
        server.connect(mint(tenant)) as ws,
        await psycopg.AsyncConnection.connect(database_url) as conn,
    ):
        await until_ready(ws)
        async with conn.transaction():
            try:
                async with conn.transaction():  # a savepoint
                    await pgpulse.publish(conn, tenant_id=tenant, type="gone", data={})
                    raise RuntimeError("roll the savepoint back")
            except RuntimeError:
                pass
            key = await pgpulse.publish(conn, tenant_id=tenant, type="kept", data={})
        [got] = await events(ws, 1)
        assert (got["type"], got["key"], got["id"]) == ("kept", key, 1)
        await no_more_events(ws, 0.2)
