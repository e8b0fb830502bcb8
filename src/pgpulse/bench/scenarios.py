"""The scenarios (S1-S7). Each starts a fresh server, measures, and stops it.

S1 and S3 publish through ``POST /api/events``; S1N and S3N are the same
runs through the seed's ``POST /api/notifications``. S7 (in :mod:`.apptx`)
publishes from the application's own transactions.

Sizes come from :class:`Sizes` (flags of ``pgpulse bench``). Every wait is
bounded: publishing by its count and each request's timeout, draining by
``drain`` seconds (and by ``QUIET`` seconds without a new frame), opening
sockets by the receivers' handshake timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from . import apptx
from .database import Cluster
from .publishers import Publisher, PublishStats
from .receivers import ReceiverPool
from .servers import HOST, Server, Target
from .usage import Meter, tree_cpu, tree_rss

QUIET = 3.0  # seconds without a new frame that end a drain early
SETTLE = 0.5  # seconds after opening sockets, before publishing
STALL_CHECK = 5.0  # seconds S6 reads its stalled socket again, waiting for a close


@dataclass
class Sizes:
    s1_tenants: int = 100
    s1_sockets: int = 10
    s1_rate: float = 500.0
    s1_seconds: float = 15.0
    s2_sockets: int = 2000
    s2_steps: tuple[float, ...] = (5, 20, 50, 100, 200)
    s2_seconds: float = 10.0
    s2_max_p99_ms: float = 2000.0
    s3_publishers: int = 64
    s3_seconds: float = 10.0
    s3_tenants: int = 10
    s3_sockets: int = 5
    s4_rate: float = 200.0
    s4_seconds: float = 10.0
    s4_tenants: int = 10
    s4_sockets: int = 5
    s5_conns: int = 5000
    s5_tenants: int = 500
    s6_tenants: int = 10
    s6_sockets: int = 10
    s6_rate: float = 200.0
    s6_seconds: float = 10.0
    s6_pad: int = 6000
    s6_queue_max_events: int = 20
    s7_connections: int = 32
    s7_tenants: int = 4
    s7_sockets: int = 2
    s7_hold_ms: float = 20.0
    s7_rollback: float = 0.1
    s7_seconds: float = 10.0
    pad: int = 64
    drain: float = 10.0

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            s1_tenants=20, s1_sockets=5, s1_rate=200, s1_seconds=4,
            s2_sockets=200, s2_steps=(5, 20, 50), s2_seconds=2,
            s3_publishers=16, s3_seconds=3,
            s4_rate=100, s4_seconds=4,
            s5_conns=500, s5_tenants=50, s7_seconds=3, drain=5,
        )  # fmt: skip


@dataclass
class Context:
    target: Target
    cluster: Cluster
    port: int
    receiver_processes: int
    sizes: Sizes
    client_deflate: bool = True
    """Receivers offer per-message deflate, as browsers do."""
    via_notifications: bool = False
    """Publish through ``POST /api/notifications`` instead of ``POST /api/events``."""


@dataclass
class Run:
    server: Server
    receivers: ReceiverPool
    meter: Meter
    publisher: Publisher

    def server_rss_mb(self) -> float:
        return round(tree_rss(self.server.pid) / 2**20, 1)


@contextlib.asynccontextmanager
async def running(ctx: Context, extra_env: dict[str, str] | None = None) -> AsyncIterator[Run]:
    server = ctx.target.start(ctx.port, extra_env)
    receivers: ReceiverPool | None = None
    publisher: Publisher | None = None
    try:
        receivers = ReceiverPool(ctx.receiver_processes, ctx.client_deflate)
        pool = receivers
        meter = Meter(
            server=lambda: tree_cpu([server.pid]),
            postgres=ctx.cluster.cpu_seconds,
            loadgen=lambda: {
                **tree_cpu([os.getpid()], descendants=False),
                **tree_cpu(pool.pids),
            },
        )
        request = (
            ctx.target.notification_request if ctx.via_notifications else ctx.target.publish_request
        )
        publisher = Publisher(HOST, ctx.port, request, pad=ctx.sizes.pad)
        yield Run(server, receivers, meter, publisher)
    finally:
        if publisher is not None:
            publisher.close()
        if receivers is not None:
            await receivers.close()
        server.stop()


def _specs(
    target: Target, tenants: list[str], per: int, resume: bool = False
) -> list[tuple[str, str, bool]]:
    return [(target.ws_target(t), t, resume) for t in tenants for _ in range(per)]


async def _open(ctx: Context, run: Run, specs: list[tuple[str, str, bool]]) -> dict[str, Any]:
    opened = await run.receivers.open(
        HOST, ctx.port, specs, ctx.target.wait_ready, wire=ctx.target.wire
    )
    if opened["failed"]:
        raise RuntimeError(f"{opened['failed']} of {len(specs)} sockets did not open")
    await asyncio.sleep(SETTLE)
    return opened


async def _drain(run: Run, expected: int, limit: float) -> float:
    """Wait until ``expected`` frames arrived, nothing new came for QUIET s, or ``limit`` s."""
    start = time.monotonic()
    last, last_change = -1, start
    while True:
        frames = await run.receivers.frames()
        now = time.monotonic()
        if frames >= expected or now - start > limit:
            return now - start
        if frames != last:
            last, last_change = frames, now
        elif now - last_change > QUIET:
            return now - start
        await asyncio.sleep(0.1)


def _expected_frames(stats: PublishStats, per_tenant: int) -> int:
    return sum(len(seqs) for seqs in stats.accepted_by_tenant.values()) * per_tenant


async def _deliver(
    ctx: Context,
    run: Run,
    stats: PublishStats,
    per_tenant: int,
    window: tuple[int, int] | None = None,
) -> dict[str, Any]:
    drain = await _drain(run, _expected_frames(stats, per_tenant), ctx.sizes.drain)
    got = await run.receivers.collect(stats.accepted_by_tenant, window)
    got["drain_s"] = round(drain, 2)
    got["expected"] = _expected_frames(stats, per_tenant)
    return got


async def s1_many_tenants(ctx: Context) -> dict[str, Any]:
    z = ctx.sizes
    tenants = [f"s1-t{i}" for i in range(z.s1_tenants)]
    async with running(ctx) as run:
        await _open(ctx, run, _specs(ctx.target, tenants, z.s1_sockets))
        run.meter.start()
        stats = await run.publisher.open_loop(tenants, z.s1_rate, z.s1_seconds)
        got = await _deliver(ctx, run, stats, z.s1_sockets)
        usage = run.meter.stop()
        rss_mb = run.server_rss_mb()
    return {
        "sizes": {"tenants": z.s1_tenants, "sockets_per_tenant": z.s1_sockets,
                  "rate": z.s1_rate, "seconds": z.s1_seconds},
        "publish": stats.as_dict(),
        "delivery": got,
        "usage": {**usage, "server_rss_mb": rss_mb},
    }  # fmt: skip


async def s2_broadcast(ctx: Context) -> dict[str, Any]:
    z = ctx.sizes
    tenants = ["s2-broadcast"]
    steps: list[dict[str, Any]] = []
    held: float = 0
    async with running(ctx) as run:
        opened = await _open(ctx, run, _specs(ctx.target, tenants, z.s2_sockets))
        for rate in z.s2_steps:
            await run.receivers.ask_all("reset")
            run.publisher.reset()
            run.meter.start()
            stats = await run.publisher.open_loop(tenants, rate, z.s2_seconds)
            got = await _deliver(ctx, run, stats, z.s2_sockets)
            usage = run.meter.stop()
            p99 = got["latency"]["p99_ms"]
            ok = (
                got["lost"] == 0
                and stats.failed == 0
                and p99 is not None
                and p99 <= z.s2_max_p99_ms
            )
            steps.append({"rate": rate, "held": ok, "publish": stats.as_dict(),
                          "delivery": got, "usage": usage})  # fmt: skip
            if not ok:
                break
            held = rate
        rss_mb = run.server_rss_mb()
    return {
        "sizes": {"sockets": z.s2_sockets, "steps": list(z.s2_steps), "seconds": z.s2_seconds},
        "open_s": round(opened["seconds"], 2),
        "highest_step_held": held,
        "steps": steps,
        "usage": {"server_rss_mb": rss_mb},
    }


async def s3_throughput(ctx: Context) -> dict[str, Any]:
    z = ctx.sizes
    tenants = [f"s3-t{i}" for i in range(z.s3_tenants)]
    async with running(ctx) as run:
        await _open(ctx, run, _specs(ctx.target, tenants, z.s3_sockets))
        run.meter.start()
        start = time.monotonic()
        stats = await run.publisher.closed_loop(tenants, z.s3_publishers, z.s3_seconds)
        got = await _deliver(ctx, run, stats, z.s3_sockets)
        elapsed = time.monotonic() - start
        usage = run.meter.stop()
        rss_mb = run.server_rss_mb()
    return {
        "sizes": {"publishers": z.s3_publishers, "seconds": z.s3_seconds,
                  "tenants": z.s3_tenants, "sockets_per_tenant": z.s3_sockets},
        "publish": stats.as_dict(),
        "delivery": got,
        "deliveries_per_s": round(got["received"] / elapsed, 1),
        "cpu_us_per_publish": _cpu_per_publish(usage, stats.accepted),
        "usage": {**usage, "server_rss_mb": rss_mb},
    }  # fmt: skip


def _cpu_per_publish(usage: dict[str, float], accepted: int) -> float | None:
    """Server and PostgreSQL CPU µs per accepted publish, its deliveries included.

    On a machine shared with other work a server gets less of the cores in
    one run than in the next, and its publishes/s moves with that; the work
    each publish costs moves far less, so it compares designs more steadily.
    """
    if not accepted:
        return None
    return round((usage["server_cpu_s"] + usage["postgres_cpu_s"]) / accepted * 1e6, 1)


async def s4_fault(ctx: Context) -> dict[str, Any]:
    z = ctx.sizes
    tenants = [f"s4-t{i}" for i in range(z.s4_tenants)]
    killed: list[tuple[int, int]] = []

    async def kill_listener() -> None:
        await asyncio.sleep(z.s4_seconds * 0.4)
        at = time.time_ns()
        n = await asyncio.to_thread(
            ctx.cluster.terminate, ctx.target.dbname, ctx.target.listener_app_name
        )
        killed.append((at, n))

    async with running(ctx) as run:
        await _open(ctx, run, _specs(ctx.target, tenants, z.s4_sockets, resume=True))
        run.meter.start()
        killer = asyncio.create_task(kill_listener())
        stats = await run.publisher.open_loop(tenants, z.s4_rate, z.s4_seconds)
        await killer
        at, terminated = killed[0]
        # Recovery: the worst delay of any event published from 1 s before the
        # kill to 1 s after it, which is how long the outage held events back.
        window = (at - 1_000_000_000, at + 1_000_000_000)
        got = await _deliver(ctx, run, stats, z.s4_sockets, window)
        usage = run.meter.stop()
    recovered = got["lost"] == 0 and got["window_max_ms"] is not None
    return {
        "sizes": {"rate": z.s4_rate, "seconds": z.s4_seconds,
                  "tenants": z.s4_tenants, "sockets_per_tenant": z.s4_sockets},
        "terminated_backends": terminated,
        "publish": stats.as_dict(),
        "delivery": got,
        "recovery_s": round(got["window_max_ms"] / 1000.0, 3) if recovered else None,
        "usage": usage,
    }  # fmt: skip


async def s5_idle(ctx: Context) -> dict[str, Any]:
    z = ctx.sizes
    tenants = [f"s5-t{i}" for i in range(z.s5_tenants)]
    per = max(1, z.s5_conns // z.s5_tenants)
    specs = _specs(ctx.target, tenants, per)
    async with running(ctx) as run:
        await asyncio.sleep(1.0)
        before = tree_rss(run.server.pid)
        opened = await run.receivers.open(
            HOST, ctx.port, specs, ctx.target.wait_ready, 60.0, ctx.target.wire
        )
        await asyncio.sleep(2.0)
        after = tree_rss(run.server.pid)
        # Prove the sockets are live: one event to every tenant must reach all.
        run.meter.start()
        stats = await run.publisher.open_loop(tenants, max(50.0, len(tenants) / 2.0), 2.0)
        got = await _deliver(ctx, run, stats, per)
        usage = run.meter.stop()
    n = opened["opened"]
    return {
        "sizes": {"conns": len(specs), "tenants": z.s5_tenants},
        "opened": n,
        "failed": opened["failed"],
        "open_s": round(opened["seconds"], 2),
        "rss_before_mb": round(before / 2**20, 1),
        "rss_after_mb": round(after / 2**20, 1),
        "rss_per_conn_kib": round((after - before) / n / 1024, 2) if n else None,
        "check_delivery": {k: got[k] for k in ("expected", "received", "lost", "duplicates")},
        "usage": usage,
    }


async def s6_slow_consumer(ctx: Context) -> dict[str, Any]:
    """One socket of tenant 0 stops reading for the whole run; what do the others see?

    The naive design awaits each send in turn, so once the stalled socket's
    buffers are full its LISTEN loop waits on it, and every tenant waits too.
    pgpulse queues per connection and closes one past its limit with 1013.
    """
    z = ctx.sizes
    tenants = [f"s6-t{i}" for i in range(z.s6_tenants)]
    env = ctx.target.queue_env(z.s6_queue_max_events)
    async with running(ctx, env) as run:
        run.publisher.pad = run.publisher.make_pad(z.s6_pad)
        await _open(ctx, run, _specs(ctx.target, tenants, z.s6_sockets))
        stall = await run.receivers.ask_one(
            0, "stall", HOST, ctx.port, ctx.target.ws_target(tenants[0]), ctx.target.wait_ready,
            30.0, ctx.target.wire,
        )  # fmt: skip
        if not stall["opened"]:
            raise RuntimeError("the stalled socket did not open")
        run.meter.start()
        t0 = time.time_ns()
        stats = await run.publisher.open_loop(tenants, z.s6_rate, z.s6_seconds)
        got = await _deliver(ctx, run, stats, z.s6_sockets)
        usage = run.meter.stop()
        rss_mb = run.server_rss_mb()
        # Only now read the stalled socket again: a close frame waits behind its backlog.
        end = await run.receivers.ask_one(0, "unstall", STALL_CHECK)
    code = end["close_code"]
    last = got["last_sent_ns"]
    return {
        "sizes": {"tenants": z.s6_tenants, "sockets_per_tenant": z.s6_sockets,
                  "rate": z.s6_rate, "seconds": z.s6_seconds, "pad": z.s6_pad,
                  "queue_max_events": z.s6_queue_max_events if env else None},
        "publish": stats.as_dict(),
        "delivery": got,
        "other_sockets": z.s6_tenants * z.s6_sockets,
        # When the last event any other socket received was published, from the start.
        "delivered_until_s": round((last - t0) / 1e9, 2) if last is not None else None,
        "stalled": {
            "close_code": code,
            "closed": f"yes ({code})" if code is not None else "no",
            "frames_after_resume": end["frames"],
        },
        "usage": {**usage, "server_rss_mb": rss_mb},
    }  # fmt: skip


async def s1_through_notifications(ctx: Context) -> dict[str, Any]:
    return await s1_many_tenants(dataclasses.replace(ctx, via_notifications=True))


async def s3_through_notifications(ctx: Context) -> dict[str, Any]:
    return await s3_throughput(dataclasses.replace(ctx, via_notifications=True))


async def s7_app_transactions(ctx: Context) -> dict[str, Any]:
    async with running(ctx) as run:
        run.meter.start()
        result = await apptx.run(ctx)
        result["usage"] = {**run.meter.stop(), "server_rss_mb": run.server_rss_mb()}
    return result


SCENARIOS = {
    "s1": s1_many_tenants,
    "s1n": s1_through_notifications,
    "s2": s2_broadcast,
    "s3": s3_throughput,
    "s3n": s3_through_notifications,
    "s4": s4_fault,
    "s5": s5_idle,
    "s6": s6_slow_consumer,
    "s7": s7_app_transactions,
}
