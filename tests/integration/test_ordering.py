"""Commit order: concurrent, interleaved, partly aborted transactions.

Whatever order transactions take ids, commit and abort in, a live client sees
exactly the committed events, once each, with ids strictly increasing and
gap-free per tenant, and resuming from any id it saw gives exactly the rest.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pgpulse

from ..support import ServerHandle, events, mint, no_more_events, until_ready


@dataclass(frozen=True)
class Tx:
    tenants: tuple[int, ...]  # which tenants it publishes to, in this order
    abort: bool
    delay_ms: int  # how long it holds its locks before ending


async def run_transactions(url: str, tenants: list[str], txs: list[Tx]) -> dict[str, list[int]]:
    """Run every transaction at once; returns the committed ids per tenant."""
    committed: dict[str, list[int]] = {t: [] for t in tenants}

    async def one(tx: Tx) -> None:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            ids: list[tuple[str, int]] = []
            # Sorted order per transaction, as an application should lock: no deadlocks.
            for index in sorted(tx.tenants):
                tenant = tenants[index]
                event_id = await pgpulse.publish(
                    conn, tenant_id=tenant, type="tx", data={"delay": tx.delay_ms}
                )
                ids.append((tenant, event_id))
            await asyncio.sleep(tx.delay_ms / 1000)
            if tx.abort:
                await conn.rollback()
            else:
                await conn.commit()
                for tenant, event_id in ids:
                    committed[tenant].append(event_id)

    await asyncio.gather(*(one(tx) for tx in txs))
    return committed


async def check(server: ServerHandle, url: str, txs: list[Tx], n_tenants: int) -> None:
    base = f"o-{uuid.uuid4().hex[:12]}"
    tenants = [f"{base}-{i}" for i in range(n_tenants)]
    sockets = [server.connect(mint(t)) for t in tenants]
    clients = [await s.__aenter__() for s in sockets]
    try:
        for ws in clients:
            await until_ready(ws)
        committed = await run_transactions(url, tenants, txs)
        for tenant, ws in zip(tenants, clients, strict=True):
            expected = sorted(committed[tenant])
            # Gap-free: aborted transactions leave no hole in the sequence.
            assert expected == list(range(1, len(expected) + 1))
            got = [e["id"] for e in await events(ws, len(expected))]
            assert got == expected
            await no_more_events(ws, 0.2)
            if expected:
                k = random.choice([0, *expected])
                async with server.connect(mint(tenant), last_event_id=str(k)) as resumed:
                    frames = await until_ready(resumed)
                    assert [f["id"] for f in frames if "id" in f] == expected[k:]
                    assert frames[-1] == {"op": "ready", "last_event_id": expected[-1]}
    finally:
        for s in sockets:
            await s.__aexit__(None, None, None)


async def test_twenty_concurrent_transactions_random_commit_order(
    server: ServerHandle, database_url: str
) -> None:
    rng = random.Random(20)
    txs = [
        Tx(
            tenants=tuple(rng.sample(range(3), rng.randint(1, 3))),
            abort=rng.random() < 0.3,
            delay_ms=rng.randint(0, 30),
        )
        for _ in range(20)
    ]
    assert any(t.abort for t in txs) and not all(t.abort for t in txs)
    await check(server, database_url, txs, 3)


tx_strategy = st.builds(
    Tx,
    tenants=st.lists(st.integers(0, 2), min_size=1, max_size=3, unique=True).map(tuple),
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
    await check(server, database_url, txs, 3)


async def test_long_transaction_of_one_tenant_does_not_stall_another(
    server: ServerHandle, database_url: str, tenant: str
) -> None:
    other = tenant + "-b"
    async with server.connect(mint(other)) as ws:
        await until_ready(ws)
        async with await psycopg.AsyncConnection.connect(database_url) as slow:
            await pgpulse.publish(slow, tenant_id=tenant, type="slow", data={})
            # The slow transaction holds its tenant's counter; the other tenant flows.
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
                await asyncio.wait_for(pgpulse.publish(c, tenant_id=other, type="fast", data={}), 5)
            [got] = await events(ws, 1)
            assert got["type"] == "fast"
            await slow.rollback()
