"""A dedicated LISTEN connection that comes back by itself.

The server's listener (channel ``pgpulse``) and the job worker (channel
``pgpulse_jobs``) both need the same thing: one connection outside any pool
that does nothing but ``LISTEN``, and that is re-established, with
:class:`~pgpulse.backoff.Backoff`, whenever it is lost. A notification is
only a wake-up: the tables hold the truth, so each user re-reads them when
the connection comes up (``on_connect``: anything committed while nobody
listened is there) and after ``quiet_after`` seconds of silence
(``on_quiet``), which is also when the connection proves itself alive with
a ``SELECT 1``. TCP keepalives find a peer that vanished without closing.

Losing the connection is how a PostgreSQL restart or failover shows first,
so it also makes the query pool probe its connections before their next use
(:func:`pgpulse.db.distrust_idle_connections`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import psycopg

from . import db
from .backoff import Backoff

PROBE_TIMEOUT = 5.0  # seconds for the liveness probe of a quiet connection
MIN_BACKOFF = 0.05  # seconds
MAX_BACKOFF = 1.0  # seconds: wake-ups are back within about a second of the database
LOG_EVERY = 30  # failed attempts in a row: an outage should not flood the log


class Listen:
    """``LISTEN channel`` on its own connection, for as long as :meth:`run` runs."""

    def __init__(
        self,
        url: str,
        channel: str,
        *,
        on_notify: Callable[[str], None],
        on_connect: Callable[[], None],
        on_quiet: Callable[[], None] | None = None,
        quiet_after: float = 5.0,
        log: logging.Logger | None = None,
        backoff: Backoff | None = None,
        others: Mapping[str, Callable[[str], None]] | None = None,
    ) -> None:
        for name in (channel, *(others or {})):
            if not name.isidentifier():
                raise ValueError(f"a LISTEN channel is an identifier, got {name!r}")
        self._url = url
        self._channel = channel
        self._on_notify = on_notify
        self._others = dict(others or {})
        """More channels on the same connection, each with its own handler."""
        self._on_connect = on_connect
        self._on_quiet = on_quiet
        self._quiet_after = quiet_after
        self._log = log or logging.getLogger("pgpulse.listen")
        self._backoff = backoff or Backoff(MIN_BACKOFF, MAX_BACKOFF)
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.connected = False
        self.reconnects = 0
        """Times the connection was re-established after the first."""

    @property
    def backend_pid(self) -> int | None:
        """The connection's server pid (what ``pg_terminate_backend`` takes)."""
        conn = self._conn
        if conn is None or conn.closed:
            return None
        return conn.info.backend_pid

    async def run(self) -> NoReturn:
        """Listen until cancelled, reconnecting after every failure."""
        attempts = 0  # failed connects since the connection was last up
        listened = False
        try:
            while True:
                try:
                    self._conn = await db.connect(self._url, db.LISTENER_APP_NAME)
                    for name in (self._channel, *self._others):
                        await self._conn.execute(f"LISTEN {name}")
                    self.connected = True
                    if listened:
                        self.reconnects += 1
                    listened = True
                    self._backoff.reset()
                    self._log.info(
                        "listening on %s (backend pid %s)%s",
                        self._channel,
                        self._conn.info.backend_pid,
                        f" after {attempts} failed attempts" if attempts else "",
                    )
                    attempts = 0
                    self._on_connect()
                    await self._receive(self._conn)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # any failure means: reconnect
                    db.distrust_idle_connections()
                    if self.connected:
                        self._log.warning("LISTEN connection lost: %s", first_line(exc))
                    else:
                        attempts += 1
                        level = logging.WARNING if attempts % LOG_EVERY == 1 else logging.DEBUG
                        self._log.log(
                            level, "cannot LISTEN (attempt %d): %s", attempts, first_line(exc)
                        )
                await self._drop()
                await self._backoff.sleep()
        finally:
            await self._drop()

    async def _receive(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            async for notify in conn.notifies(timeout=self._quiet_after):
                other = self._others.get(notify.channel)
                (other or self._on_notify)(notify.payload)
            # Quiet for a while: prove the connection alive, and let the user
            # re-read in case a wake-up was missed in a way nothing else catches.
            await asyncio.wait_for(conn.execute("SELECT 1"), PROBE_TIMEOUT)
            if self._on_quiet is not None:
                self._on_quiet()

    async def _drop(self) -> None:
        self.connected = False
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


def first_line(exc: BaseException) -> str:
    """An exception as one line for a log (driver errors span several)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
