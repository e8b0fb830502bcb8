"""The running pieces of pgpulse, as one async context.

:func:`running` starts, in order: the embedded PostgreSQL (when no database
URL is configured), the schema (migrated, checked or left alone), the query
pool, the hub, the listener (whose sink is the hub; ``hub.on_new_room``
points back at ``listener.kick``, so neither module imports the other), the
history, the stream, the HTTP publisher and the pruner; and it stops them in
reverse order. It is what ``pgpulse serve``'s lifespan enters, and what an
app's own lifespan enters through :class:`pgpulse.fastapi.Pgpulse`: one
context per serving process, whatever runs the processes (``uvicorn
--workers N``, gunicorn with uvicorn workers, several nodes).

The path of one event: ``publish`` → ``pgpulse.events`` + NOTIFY →
``listener`` → ``hub`` → ``transports``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any, Literal

from psycopg_pool import AsyncConnectionPool

from . import db, migrate
from .caps import ConnectionCaps
from .errors import ConfigError
from .history import History
from .hub import Hub
from .listener import Listener
from .metrics import Metrics
from .nodes import ServerNode
from .presence import Presence
from .publish import BatchPublisher
from .retention import prune_forever
from .settings import Settings
from .transports.lifetime import apply_control
from .transports.subscription import Stream

log = logging.getLogger("pgpulse")

MigrateMode = Literal["auto", "check", "off"]
MIGRATE_MODES: tuple[MigrateMode, ...] = ("auto", "check", "off")


def check_migrate_mode(mode: str) -> None:
    if mode not in MIGRATE_MODES:
        raise ConfigError(f"migrate must be one of {', '.join(MIGRATE_MODES)}; got {mode!r}")


@dataclass(slots=True)
class Runtime:
    """What a running pgpulse holds, from :func:`running`."""

    settings: Settings
    database_url: str
    pool: AsyncConnectionPool
    hub: Hub
    listener: Listener
    history: History
    stream: Stream
    publisher: BatchPublisher
    metrics: Metrics
    node: ServerNode
    presence: Presence
    """Who is connected to which topic, across nodes."""
    caps: ConnectionCaps
    """Caps and connect rate of this process's streams."""


@contextlib.asynccontextmanager
async def running(settings: Settings, migrate_mode: MigrateMode = "auto") -> AsyncIterator[Runtime]:
    """Start every running piece for ``settings``; stop them all on the way out.

    ``migrate_mode``: ``"auto"`` applies pending migrations (under an advisory
    lock, so workers starting together agree), ``"check"`` refuses to start
    on an outdated schema, ``"off"`` trusts the database as it is.
    """
    check_migrate_mode(migrate_mode)
    async with contextlib.AsyncExitStack() as stack:
        url = settings.database_url
        if not url:
            embedded = db.EmbeddedPostgres(settings.pgdata)
            url = await asyncio.to_thread(embedded.start)
            stack.callback(embedded.stop)
        url = db.libpq_url(url)
        if migrate_mode == "auto":
            await migrate.migrate(url)
        elif migrate_mode == "check":
            await migrate.check(url)
        pool = await db.open_pool(url, settings.pool_min_size, settings.pool_max_size)
        stack.push_async_callback(pool.close)
        metrics = Metrics()
        hub = Hub()
        # Between listener and hub, it times each event; its heartbeat
        # registers this process in pgpulse.nodes, for the console.
        node = ServerNode(hub, metrics, settings.node_heartbeat_interval)
        listener = Listener(
            url,
            pool,
            node,
            poll_interval=settings.listener_poll_interval,
            on_events=metrics.events_delivered.inc,
            # pgpulse.disconnect(): every node ends the named connections.
            on_control=functools.partial(apply_control, hub),
        )
        hub.on_new_room = listener.kick
        history = History(pool)  # leaves a share of the pool to publishing
        presence = Presence(
            url, pool, ttl=settings.presence_ttl, max_members=settings.presence_max_members
        )
        # Stopped after the streams end: this node's members leave now, not at expiry.
        stack.push_async_callback(presence.stop)
        runtime = Runtime(
            settings=settings,
            database_url=url,
            pool=pool,
            hub=hub,
            listener=listener,
            history=history,
            stream=Stream(hub, history),
            publisher=BatchPublisher(pool),
            metrics=metrics,
            node=node,
            presence=presence,
            caps=ConnectionCaps.from_settings(settings),
        )
        listener.start()
        stack.push_async_callback(listener.stop)
        node.listener_connected = lambda: listener.connected
        node.listener_reconnects = lambda: listener.reconnects
        heartbeat = node.heartbeat(pool)
        heartbeat.start()
        stack.push_async_callback(heartbeat.stop)
        pruner = asyncio.create_task(
            prune_forever(
                pool,
                settings.retention_seconds,
                settings.retention_max_events,
                settings.prune_interval,
            ),
            name="pgpulse-prune",
        )
        stack.push_async_callback(_cancel, pruner)
        stack.callback(hub.close_all)  # streams end first: 1012 for every socket
        stack.enter_context(_end_streams_on_signal(hub))
        yield runtime


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.contextmanager
def _end_streams_on_signal(hub: Hub) -> Iterator[None]:
    """Make the server's exit signal end every stream at once.

    On SIGTERM uvicorn closes WebSockets with 1012 itself, but it waits for
    open HTTP responses, and an SSE stream never ends on its own: shutdown
    would stall for the whole graceful timeout. uvicorn has no hook for that
    moment, so the handler it installed is wrapped here; the wrapper is
    removed on the way out if it is still in place (uvicorn restores its own
    predecessor when it exits, which drops the wrapper too). Under any server,
    the signal also closes every WebSocket with 1012 through the hub.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    installed: dict[int, tuple[Callable[..., Any], Callable[..., Any]]] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(
            signum: int, frame: FrameType | None, previous: Callable[..., Any] = previous
        ) -> None:
            hub.close_all()
            previous(signum, frame)

        signal.signal(sig, handler)
        installed[sig] = (handler, previous)
    try:
        yield
    finally:
        for signum, (handler, previous) in installed.items():
            if signal.getsignal(signum) is handler:
                signal.signal(signum, previous)
