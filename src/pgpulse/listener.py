"""The listener: LISTEN wakes it, the events table tells it what happened.

One dedicated connection per server process runs ``LISTEN pgpulse`` and does
nothing else, so a wake-up is never stuck behind a query. Each notification
carries only a tenant id. A second task, the reader, turns the set of tenants
woken since its last read into one query (``fetch_after``) on the pool, for
the tenants that have local connections, and hands the rows to the sink (the
hub) in id order. However many notifications arrive while it reads, the next
read is again one query.

Nothing is lost when the LISTEN connection is: after every (re)connect, and
every ``poll_interval`` seconds of silence, the reader catches up every room
from its cursor. That poll is also the liveness probe of the connection; TCP
keepalives find a peer that vanished without closing. Reconnects back off
exponentially with jitter, capped at :data:`MAX_BACKOFF`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import psycopg

from . import db
from .events import Event
from .sql import QUERIES

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

log = logging.getLogger("pgpulse.listener")

CHANNEL = "pgpulse"
CONTROL_CHANNEL = "pgpulse_control"
"""Operators' requests to every node (``pgpulse.disconnect``), on the same LISTEN
connection as the wake-ups; their payload is JSON, never a tenant id."""
FETCH_LIMIT = 1000  # rows per tenant per read; a longer backlog takes more reads
MIN_BACKOFF = 0.05  # seconds
MAX_BACKOFF = 1.0  # seconds: delivery is back within about a second of the database
PROBE_TIMEOUT = 5.0  # seconds


class EventSink(Protocol):
    """Where the listener delivers; :class:`pgpulse.hub.Hub` is one."""

    def positions(self, tenants: Iterable[str] | None = None) -> dict[str, int]: ...

    def deliver(self, events: Sequence[Event]) -> int: ...


class Listener:
    def __init__(
        self,
        url: str,
        pool: AsyncConnectionPool,
        sink: EventSink,
        poll_interval: float = 5.0,
        on_events: Callable[[int], None] | None = None,
        on_control: Callable[[str], None] | None = None,
    ) -> None:
        self._url = url
        self._pool = pool
        self._sink = sink
        self._poll_interval = poll_interval
        self._on_events = on_events
        self._on_control = on_control
        self._woken: set[str] = set()
        self._catch_up_all = True
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.connected = False
        self.reconnects = 0

    # -- wiring -----------------------------------------------------------

    def kick(self, tenant_id: str) -> None:
        """Read ``tenant_id`` now (a room was just created for it)."""
        self._woken.add(tenant_id)
        self._wake.set()

    def catch_up(self) -> None:
        """Read every room from its cursor at the next chance."""
        self._catch_up_all = True
        self._wake.set()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._listen_forever(), name="pgpulse-listen"),
            loop.create_task(self._read_forever(), name="pgpulse-read"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._conn is not None:
            await self._conn.close()
        self.connected = False

    @property
    def backend_pid(self) -> int | None:
        """The LISTEN connection's server pid (what ``pg_terminate_backend`` takes)."""
        conn = self._conn
        if conn is None or conn.closed:
            return None
        return conn.info.backend_pid

    # -- the LISTEN connection ----------------------------------------------

    async def _listen_forever(self) -> None:
        backoff = MIN_BACKOFF
        attempts = 0  # failed connects since the connection was last up
        listened = False
        while True:
            try:
                self._conn = await db.connect(self._url, db.LISTENER_APP_NAME)
                await self._conn.execute(f"LISTEN {CHANNEL}")
                if self._on_control is not None:
                    await self._conn.execute(f"LISTEN {CONTROL_CHANNEL}")
                self.connected = True
                if listened:
                    self.reconnects += 1
                listened = True
                backoff = MIN_BACKOFF
                log.info(
                    "listening (backend pid %s)%s",
                    self._conn.info.backend_pid,
                    f" after {attempts} failed attempts" if attempts else "",
                )
                attempts = 0
                # Anything committed while nobody listened is in the table.
                self.catch_up()
                await self._receive(self._conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure means: reconnect
                db.distrust_idle_connections()
                if self.connected:
                    log.warning("LISTEN connection lost: %s", _first_line(exc))
                else:
                    attempts += 1
                    # Once, then every 30th: an outage should not flood the log.
                    level = logging.WARNING if attempts % 30 == 1 else logging.DEBUG
                    log.log(level, "cannot LISTEN (attempt %d): %s", attempts, _first_line(exc))
            self.connected = False
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await self._conn.close()
                self._conn = None
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _receive(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            async for notify in conn.notifies(timeout=self._poll_interval):
                if notify.channel == CONTROL_CHANNEL:
                    if self._on_control is not None:
                        self._on_control(notify.payload)
                    continue
                self._woken.add(notify.payload)
                self._wake.set()
            # Quiet for poll_interval: prove the connection alive, and poll the
            # table in case a wake-up was missed in a way nothing else catches.
            await asyncio.wait_for(conn.execute("SELECT 1"), PROBE_TIMEOUT)
            self.catch_up()

    # -- the reader -----------------------------------------------------------

    async def _read_forever(self) -> None:
        backoff = MIN_BACKOFF
        while True:
            await self._wake.wait()
            self._wake.clear()
            everyone = self._catch_up_all
            woken, self._woken = self._woken, set()
            self._catch_up_all = False
            try:
                await self._read(None if everyone else woken)
                backoff = MIN_BACKOFF
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Keep the work: the next attempt reads every room from its cursor.
                log.warning("reading events failed: %s", _first_line(exc))
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, MAX_BACKOFF)
                self.catch_up()

    async def _read(self, tenants: Iterable[str] | None) -> None:
        positions = self._sink.positions(tenants)
        while positions:
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    QUERIES["fetch_after"],
                    {
                        "tenants": list(positions),
                        "after": list(positions.values()),
                        "limit": FETCH_LIMIT,
                    },
                )
                rows = await cur.fetchall()
            events = [Event.from_row(row) for row in rows]
            queued = self._sink.deliver(events)
            if self._on_events is not None:
                self._on_events(queued)
            # A tenant that filled its page has more: read it again from its new cursor.
            counts: dict[str, int] = {}
            for event in events:
                counts[event.tenant_id] = counts.get(event.tenant_id, 0) + 1
            full = [t for t, n in counts.items() if n >= FETCH_LIMIT]
            positions = self._sink.positions(full) if full else {}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
