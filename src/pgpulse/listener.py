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
from its cursor. The connection itself, its liveness probe and its
reconnects are :class:`pgpulse.listen.Listen`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from .backoff import Backoff
from .events import Event
from .listen import MAX_BACKOFF, MIN_BACKOFF, Listen, first_line
from .sql import QUERIES

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

log = logging.getLogger("pgpulse.listener")

CHANNEL = "pgpulse"
CONTROL_CHANNEL = "pgpulse_control"
"""Operators' requests to every node (``pgpulse.disconnect``), on the same LISTEN
connection as the wake-ups; their payload is JSON, never a tenant id."""
FETCH_LIMIT = 1000  # rows per tenant per read; a longer backlog takes more reads


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
        self._pool = pool
        self._sink = sink
        self._on_events = on_events
        self._woken: set[str] = set()
        self._catch_up_all = True
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._listen = Listen(
            url,
            CHANNEL,
            on_notify=self.kick,
            on_connect=self.catch_up,  # anything committed while nobody listened is in the table
            on_quiet=self.catch_up,  # in case a wake-up was missed in a way nothing else catches
            quiet_after=poll_interval,
            log=log,
            others={CONTROL_CHANNEL: on_control} if on_control is not None else None,
        )

    # -- wiring -----------------------------------------------------------

    def kick(self, tenant_id: str) -> None:
        """Read ``tenant_id`` now (it was notified, or a room was just created for it)."""
        self._woken.add(tenant_id)
        self._wake.set()

    def catch_up(self) -> None:
        """Read every room from its cursor at the next chance."""
        self._catch_up_all = True
        self._wake.set()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._listen.run(), name="pgpulse-listen"),
            loop.create_task(self._read_forever(), name="pgpulse-read"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    @property
    def connected(self) -> bool:
        return self._listen.connected

    @property
    def reconnects(self) -> int:
        return self._listen.reconnects

    @property
    def backend_pid(self) -> int | None:
        """The LISTEN connection's server pid (what ``pg_terminate_backend`` takes)."""
        return self._listen.backend_pid

    # -- the reader -----------------------------------------------------------

    async def _read_forever(self) -> None:
        backoff = Backoff(MIN_BACKOFF, MAX_BACKOFF)
        while True:
            await self._wake.wait()
            self._wake.clear()
            everyone = self._catch_up_all
            woken, self._woken = self._woken, set()
            self._catch_up_all = False
            try:
                await self._read(None if everyone else woken)
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Keep the work: the next attempt reads every room from its cursor.
                log.warning("reading events failed: %s", first_line(exc))
                await backoff.sleep()
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
