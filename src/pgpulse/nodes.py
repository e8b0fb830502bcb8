"""The node registry: every serving process and job worker, as rows the console reads.

One page must show the whole deployment, and the only thing every process
shares is PostgreSQL. So each process (each ``pgpulse serve`` worker, each
``pgpulse worker``) keeps a row of ``pgpulse.nodes`` (migration 0006): a
:class:`Heartbeat` writes it every ``interval`` seconds with a jsonb of the
process's own stats, and deletes it when the process stops cleanly. A
process that dies leaves its row behind: readers show it as down once it is
:data:`STALE_INTERVALS` heartbeats old, and every live heartbeat deletes
rows older than :data:`REMOVE_AFTER`.

Heartbeats fall on multiples of the interval in wall-clock time, so the
samples of different nodes line up and :func:`merge_series` can add them.

A serving node's stats (:class:`ServerNode`): connections by transport and by
tenant (the :data:`TENANTS_MAX` busiest), deliveries per second, the p99
from an event's creation to its dispatch to local sockets, slow-consumer
closes, the listener's state and reconnects, and the cluster's committed
events per second, which each serving node samples from the events table
(every node sees every commit; deliveries are each node's own). Each keeps
the last :data:`SERIES_SECONDS` of samples, so a console opened now draws
the last minutes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import secrets
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool

from .events import Event
from .hub import Hub
from .metrics import Metrics
from .sql import QUERIES

log = logging.getLogger("pgpulse.nodes")

HEARTBEAT_INTERVAL = 2.0  # seconds between heartbeats (PGPULSE_NODE_HEARTBEAT_INTERVAL)
STALE_INTERVALS = 5  # heartbeats missed before a node is shown as down
REMOVE_AFTER = 600.0  # seconds of silence after which a node's row is deleted
SERIES_SECONDS = 300.0  # seconds of samples each node keeps for the console's charts
TENANTS_MAX = 1000  # tenants per node whose connection counts are reported (the busiest)
LATENCY_SAMPLES_MAX = 10_000  # dispatch latencies kept per heartbeat for the p99
COMMIT_LAG = 1.0  # seconds: an event is counted once its creation is this old
STOP_TIMEOUT = 2.0  # seconds a clean stop waits to delete its row


def new_node_id() -> str:
    """``host:pid:xxxx``: readable, and unique even when a pid is reused."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


Sample = tuple[float, float | None, float | None, float | None]
Stats = Callable[[psycopg.AsyncConnection[Any]], Awaitable[dict[str, Any]]]


class Heartbeat:
    """Keeps one node's row alive with its stats, and removes it on :meth:`stop`."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        kind: str,
        stats: Stats,
        interval: float = HEARTBEAT_INTERVAL,
        node_id: str | None = None,
    ) -> None:
        self.pool = pool
        self.kind = kind
        self.stats = stats
        self.interval = interval
        self.id = node_id or new_node_id()
        self.started_at = datetime.now(UTC)
        self.beats = 0
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._beat_forever(), name=f"pgpulse-heartbeat-{self.kind}"
        )

    async def stop(self) -> None:
        """Stop beating and delete the row: a clean stop is not a failure to show."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            async with asyncio.timeout(STOP_TIMEOUT), self.pool.connection() as conn:
                await conn.execute(QUERIES["node_leave"], {"id": self.id})
        except Exception as exc:  # the row then goes stale and is removed later
            log.debug("node %s: row not removed: %s", self.id, exc)

    async def beat(self) -> None:
        """Write the row once (also what the loop does every interval)."""
        async with self.pool.connection() as conn:
            stats = await self.stats(conn)
            await conn.execute(
                QUERIES["node_beat"],
                {
                    "id": self.id,
                    "kind": self.kind,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "started_at": self.started_at,
                    "interval": self.interval,
                    "stats": orjson.dumps(stats).decode(),
                },
            )
            await conn.execute(QUERIES["node_forget_dead"], {"seconds": REMOVE_AFTER})
        self.beats += 1

    async def _beat_forever(self) -> None:
        while True:
            try:
                await self.beat()
                if self._failing:
                    log.info("node %s: heartbeat back", self.id)
                self._failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: the next beat tries again
                if not self._failing:
                    log.warning("node %s: heartbeat not written: %s", self.id, exc)
                self._failing = True
            await asyncio.sleep(self.interval - time.time() % self.interval)


def tick(now: float, interval: float) -> float:
    """The wall-clock instant of the heartbeat ``now`` belongs to."""
    return round(now / interval) * interval


def p99(samples: Sequence[float]) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


class ServerNode:
    """A serving process's view of itself, for its heartbeat.

    It stands between the listener and the hub (it is the listener's sink),
    so that it sees each event once as it is dispatched, and times it.
    """

    def __init__(self, hub: Hub, metrics: Metrics, interval: float = HEARTBEAT_INTERVAL) -> None:
        self.hub = hub
        self.metrics = metrics
        self.interval = interval
        self.listener_connected: Callable[[], bool] = lambda: False
        self.listener_reconnects: Callable[[], int] = lambda: 0
        self._latencies: list[float] = []
        self._seen = 0  # latencies offered since the last heartbeat (kept: a sample of them)
        # Not secrets: this runs per delivered event, and a sample needs no unpredictability.
        self._sampler = random.Random()
        self._delivered = 0.0
        self._events_after: datetime | None = None
        self._last: float | None = None
        self.series: deque[Sample] = deque()
        """(heartbeat instant, events/s, deliveries/s, p99 ms), oldest first."""

    # -- the listener's sink ----------------------------------------------

    def positions(self, tenants: Iterable[str] | None = None) -> dict[str, int]:
        return self.hub.positions(tenants)

    def deliver(self, events: Sequence[Event]) -> int:
        queued = self.hub.deliver(events)
        if events:
            now = time.time()
            for event in events:
                self._seen += 1
                latency = now - event.ts.timestamp()
                if len(self._latencies) < LATENCY_SAMPLES_MAX:
                    self._latencies.append(latency)
                else:  # reservoir sampling keeps an even sample of a busy interval
                    slot = self._sampler.randrange(self._seen)
                    if slot < LATENCY_SAMPLES_MAX:
                        self._latencies[slot] = latency
        return queued

    # -- the heartbeat's stats --------------------------------------------

    def heartbeat(self, pool: AsyncConnectionPool) -> Heartbeat:
        return Heartbeat(pool, "server", self.collect, self.interval)

    async def collect(self, conn: psycopg.AsyncConnection[Any]) -> dict[str, Any]:
        now = time.time()
        elapsed = None if self._last is None else max(now - self._last, 1e-3)
        self._last = now

        registry = self.metrics.registry
        delivered = registry.get_sample_value("pgpulse_events_delivered_total") or 0.0
        deliveries_per_s = None if elapsed is None else (delivered - self._delivered) / elapsed
        self._delivered = delivered

        cur = await conn.execute(
            QUERIES["events_committed"],
            {"after": self._events_after, "window": elapsed or 0.0, "lag": COMMIT_LAG},
        )
        row = await cur.fetchone()
        events_per_s = None
        if row is not None:
            if self._events_after is not None and elapsed is not None:
                span = (row[0] - self._events_after).total_seconds()
                events_per_s = row[1] / span if span > 0 else 0.0
            self._events_after = row[0]

        latency = p99(self._latencies)
        self._latencies = []
        self._seen = 0

        rooms = self.hub.tenant_connections()
        busiest = sorted(rooms.items(), key=lambda item: (-(item[1][0] + item[1][1]), item[0]))
        p99_ms = None if latency is None else round(latency * 1000, 1)
        if elapsed is not None:
            self.series.append((tick(now, self.interval), events_per_s, deliveries_per_s, p99_ms))
            while self.series and now - self.series[0][0] > SERIES_SECONDS:
                self.series.popleft()
        return {
            "connections": {
                "ws": sum(ws for ws, _ in rooms.values()),
                "sse": sum(sse for _, sse in rooms.values()),
            },
            "tenants": {tenant: list(counts) for tenant, counts in busiest[:TENANTS_MAX]},
            "tenants_connected": len(rooms),
            "events_per_s": events_per_s,
            "deliveries_per_s": deliveries_per_s,
            "p99_ms": p99_ms,
            "slow_consumer_closes": int(
                registry.get_sample_value("pgpulse_slow_consumers_total") or 0
            ),
            "listener": {
                "connected": self.listener_connected(),
                "reconnects": self.listener_reconnects(),
            },
            "series": list(self.series),
        }


def merge_series(
    nodes: Iterable[Mapping[str, Any]], interval: float = HEARTBEAT_INTERVAL
) -> list[dict[str, float | None]]:
    """The cluster's samples from its nodes' series, one per heartbeat instant.

    Deliveries add up (each node's are its own); events per second are the
    cluster's, sampled by every node, so the largest sample stands; the p99
    is the worst node's.
    """
    merged: dict[float, dict[str, float | None]] = {}
    for stats in nodes:
        for sample in stats.get("series") or []:
            if not isinstance(sample, list) or len(sample) != 4:
                continue
            t, events, deliveries, latency = sample
            if not isinstance(t, int | float):
                continue
            key = tick(float(t), interval)
            slot = merged.setdefault(
                key, {"t": key, "events_per_s": None, "deliveries_per_s": None, "p99_ms": None}
            )
            slot["events_per_s"] = _largest(slot["events_per_s"], events)
            slot["p99_ms"] = _largest(slot["p99_ms"], latency)
            if isinstance(deliveries, int | float):
                slot["deliveries_per_s"] = (slot["deliveries_per_s"] or 0.0) + deliveries
    return [merged[key] for key in sorted(merged)]


def _largest(a: float | None, b: object) -> float | None:
    if not isinstance(b, int | float):
        return a
    return float(b) if a is None else max(a, float(b))
