"""S7: the application's own transactions publish, as a web app's requests do.

Each of ``s7_connections`` psycopg connections runs transactions in a loop,
spread over ``s7_tenants`` tenants: insert a row into the application's own
table, publish one event, hold ``s7_hold_ms`` of other work (a payment API,
a slow query), then commit; ``s7_rollback`` of them roll back instead. The
naive baseline does the same with ``INSERT`` + ``pg_notify`` and takes no
lock; pgpulse calls ``pgpulse.publish``. A few WebSocket clients per tenant,
in this process, record each event's arrival.

It reports transactions per second, events delivered, lost and duplicated,
latency from the moment COMMIT is sent to the frame's arrival, deadlocks,
and lock waits (a monitor samples ``pg_locks`` for ungranted locks, and the
time each publish call took shows any wait directly).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import psycopg
import websockets

from .servers import HOST
from .stats import Histogram

if TYPE_CHECKING:
    from .scenarios import Context

MONITOR_EVERY = 0.05  # seconds between pg_locks samples
CONNECT_TIMEOUT = 10  # seconds
DRAIN_QUIET = 2.0  # seconds without a new frame that end the drain

APP_TABLE = """
CREATE TABLE IF NOT EXISTS s7_orders (
    id        bigserial PRIMARY KEY,
    tenant_id text NOT NULL,
    total     int  NOT NULL
)
"""


@dataclass
class Tally:
    committed: dict[str, list[int]] = field(default_factory=dict)
    """Sequence numbers of committed events, per tenant."""
    commit_sent_ns: dict[int, int] = field(default_factory=dict)
    rolled_back: int = 0
    deadlocks: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    publish_call_us: Histogram = field(default_factory=Histogram)


@dataclass
class Arrivals:
    seqs: dict[int, list[int]] = field(default_factory=dict)
    """Per socket: sequence numbers received, in order."""
    at_ns: dict[int, int] = field(default_factory=dict)
    """First arrival of each sequence number, on any socket."""
    out_of_order: int = 0


async def _transactions(
    ctx: Context, index: int, tenants: list[str], until: float, tally: Tally, seqs: Iterator[int]
) -> None:
    z = ctx.sizes
    pgpulse = ctx.target.name == "pgpulse"
    # One stream per connection: with one seed for all, every connection would
    # pick the same tenants and roll back in step.
    rng = random.Random(index)
    async with await psycopg.AsyncConnection.connect(
        ctx.target.database_url, connect_timeout=CONNECT_TIMEOUT
    ) as conn:
        while time.monotonic() < until:
            tenant = tenants[rng.randrange(len(tenants))]
            seq = next(seqs)
            data = orjson.dumps({"seq": seq}).decode()
            try:
                await conn.execute(
                    "INSERT INTO s7_orders (tenant_id, total) VALUES (%s, %s)",
                    [tenant, seq % 100],
                )
                began = time.perf_counter()
                if pgpulse:
                    await conn.execute(
                        "SELECT pgpulse.publish(%s, 'orders', 'order.created', %s::jsonb)",
                        [tenant, data],
                    )
                else:
                    await conn.execute(
                        "WITH e AS (INSERT INTO baseline_events (tenant_id, type, data)"
                        " VALUES (%s, 'order.created', %s::jsonb) RETURNING id, created_at)"
                        " SELECT pg_notify('events', json_build_object('id', e.id,"
                        " 'tenant_id', %s::text, 'type', 'order.created',"
                        " 'data', %s::jsonb, 'ts', e.created_at)::text) FROM e",
                        [tenant, data, tenant, data],
                    )
                tally.publish_call_us.add((time.perf_counter() - began) * 1e6)
                await asyncio.sleep(z.s7_hold_ms / 1000.0)
                if rng.random() < z.s7_rollback:
                    await conn.rollback()
                    tally.rolled_back += 1
                    continue
                tally.commit_sent_ns[seq] = time.time_ns()
                await conn.commit()
                tally.committed.setdefault(tenant, []).append(seq)
            except psycopg.errors.DeadlockDetected:
                tally.deadlocks += 1
                tally.commit_sent_ns.pop(seq, None)
                await conn.rollback()
            except psycopg.Error as exc:
                name = type(exc).__name__
                tally.errors[name] = tally.errors.get(name, 0) + 1
                tally.commit_sent_ns.pop(seq, None)
                if conn.closed:
                    return
                await conn.rollback()


async def _monitor(url: str, stop: asyncio.Event) -> dict[str, int]:
    samples = waiting = most = 0
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            cur = await conn.execute(
                "SELECT count(*) FROM pg_locks WHERE NOT granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            row = await cur.fetchone()
            n = int(row[0]) if row else 0
            samples += 1
            waiting += n > 0
            most = max(most, n)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), MONITOR_EVERY)
    return {"samples": samples, "samples_with_waits": waiting, "most_waiting": most}


async def _receive(ws: Any, index: int, arrivals: Arrivals) -> None:
    seqs = arrivals.seqs.setdefault(index, [])
    last_id = 0
    with contextlib.suppress(websockets.ConnectionClosed):
        async for message in ws:
            now = time.time_ns()
            body = orjson.loads(message)
            data = body.get("data")
            if not isinstance(data, dict) or "seq" not in data:
                continue
            seq = int(data["seq"])
            seqs.append(seq)
            arrivals.at_ns.setdefault(seq, now)
            event_id = body.get("id")
            if isinstance(event_id, int):
                if event_id <= last_id:
                    arrivals.out_of_order += 1
                last_id = event_id


async def _open(ctx: Context, tenant: str) -> Any:
    ws = await websockets.connect(
        f"ws://{HOST}:{ctx.port}{ctx.target.ws_target(tenant)}",
        open_timeout=CONNECT_TIMEOUT,
        compression=None,
        max_size=None,
    )
    if ctx.target.wait_ready:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            while orjson.loads(await ws.recv()).get("op") != "ready":
                pass
    return ws


async def run(ctx: Context) -> dict[str, Any]:
    """S7 against a server ``scenarios.running`` has started."""
    z = ctx.sizes
    tenants = [f"s7-t{i}" for i in range(z.s7_tenants)]
    async with await psycopg.AsyncConnection.connect(
        ctx.target.database_url, autocommit=True
    ) as setup:
        await setup.execute(APP_TABLE)
    sockets = [
        (tenant, await _open(ctx, tenant)) for tenant in tenants for _ in range(z.s7_sockets)
    ]
    arrivals = Arrivals()
    readers = [asyncio.create_task(_receive(ws, i, arrivals)) for i, (_, ws) in enumerate(sockets)]
    tally = Tally()
    stop = asyncio.Event()
    monitor = asyncio.create_task(_monitor(ctx.target.database_url, stop))
    seqs = itertools.count(1)
    start = time.monotonic()
    until = start + z.s7_seconds
    try:
        await asyncio.gather(
            *(_transactions(ctx, i, tenants, until, tally, seqs) for i in range(z.s7_connections))
        )
        elapsed = time.monotonic() - start
        stop.set()
        locks = await monitor
        expected = sum(len(v) for v in tally.committed.values()) * z.s7_sockets
        last, quiet_since = -1, time.monotonic()
        deadline = time.monotonic() + z.drain
        while time.monotonic() < deadline:
            received = sum(len(v) for v in arrivals.seqs.values())
            if received >= expected:
                break
            if received != last:
                last, quiet_since = received, time.monotonic()
            elif time.monotonic() - quiet_since > DRAIN_QUIET:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        for _, ws in sockets:
            await ws.close()
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        if not monitor.done():
            monitor.cancel()
    lost = duplicates = unexpected = 0
    for i, (tenant, _) in enumerate(sockets):
        got = arrivals.seqs.get(i, [])
        want = set(tally.committed.get(tenant, []))
        lost += len(want - set(got))
        duplicates += len(got) - len(set(got))
        unexpected += len(set(got) - want)
    latency = Histogram()
    for seq, sent in tally.commit_sent_ns.items():
        at = arrivals.at_ns.get(seq)
        if at is not None:
            latency.add((at - sent) / 1000.0)
    committed = sum(len(v) for v in tally.committed.values())
    return {
        "sizes": {"connections": z.s7_connections, "tenants": z.s7_tenants,
                  "hold_ms": z.s7_hold_ms, "rollback": z.s7_rollback,
                  "seconds": z.s7_seconds, "sockets_per_tenant": z.s7_sockets},
        "transactions_per_s": round((committed + tally.rolled_back) / elapsed, 1),
        "committed": committed,
        "rolled_back": tally.rolled_back,
        "deadlocks": tally.deadlocks,
        "errors": tally.errors,
        "locks": locks,
        "publish_call": tally.publish_call_us.summary(),
        "delivery": {
            "expected": committed * z.s7_sockets,
            "received": sum(len(v) for v in arrivals.seqs.values()),
            "lost": lost,
            "duplicates": duplicates,
            "unexpected": unexpected,
            "out_of_order": arrivals.out_of_order,
            "latency": latency.summary(),
        },
    }  # fmt: skip
