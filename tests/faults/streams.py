"""Helpers for fault tests: a steady publisher that survives outages, clients that record.

The publisher is the ground truth of what was committed: it records an event's
key (what ``publish`` returns) only when PostgreSQL returned it, i.e. when
the commit succeeded. A publish whose
connection died mid-statement is unknown (it may or may not have committed),
so tests compare clients against the events table as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
import websockets
from websockets.asyncio.client import ClientConnection

import pgpulse
from pgpulse.events import WS_1013_TRY_AGAIN_LATER

from ..support import TIMEOUT, ServerHandle, mint, until_ready

PUBLISHER_APP_NAME = "pgpulse-fault-publisher"  # not "pgpulse": the test's own, never terminated
RETRY_PAUSE = 0.05  # seconds between attempts while the database is away


@dataclass
class Publisher:
    """Publishes one event every ``1 / rate`` seconds on its own connection, retrying."""

    url: str
    tenant: str
    rate: float = 100.0
    acked: list[tuple[int, float]] = field(default_factory=list)
    """(key, monotonic time the commit was acknowledged)"""
    failures: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        conn: psycopg.AsyncConnection[Any] | None = None
        seq = 0
        try:
            while not self._stop.is_set():
                try:
                    if conn is None:
                        conn = await psycopg.AsyncConnection.connect(
                            self.url,
                            autocommit=True,
                            application_name=PUBLISHER_APP_NAME,
                            connect_timeout=2,
                        )
                    seq += 1
                    key = await pgpulse.publish(
                        conn, tenant_id=self.tenant, type="tick", data={"seq": seq}, topic="faults"
                    )
                    self.acked.append((key, time.monotonic()))
                    pause = 1 / self.rate
                except psycopg.Error:
                    self.failures += 1
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            await conn.close()
                    conn = None
                    pause = RETRY_PAUSE
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), pause)
        finally:
            if conn is not None:
                await conn.close()

    def stop(self) -> None:
        self._stop.set()

    def first_acked_after(self, moment: float) -> int | None:
        return next((i for i, t in self.acked if t > moment), None)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Publisher]:
        task = asyncio.create_task(self.run())
        try:
            yield self
        finally:
            self.stop()
            async with asyncio.timeout(TIMEOUT):
                await task


@dataclass
class Recorder:
    """A WebSocket client that records every event it receives (id, key), with the time."""

    server: ServerHandle
    tenant: str
    received: list[tuple[int, int, float]] = field(default_factory=list)
    closes: list[int | None] = field(default_factory=list)
    _ws: ClientConnection | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def ids(self) -> list[int]:
        return [i for i, _, _ in self.received]

    @property
    def last_id(self) -> int:
        return self.received[-1][0] if self.received else 0

    async def connect(self, resume: bool = False) -> None:
        """Connect (or resume from the last id), retrying as a client must on 1013."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            params = {"last_event_id": str(self.last_id)} if resume else {}
            self._ws = await self.server.connect(mint(self.tenant), **params)
            try:
                frames = await until_ready(self._ws)
                break
            except websockets.ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd is not None else None
                self.closes.append(code)
                if code != WS_1013_TRY_AGAIN_LATER or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(RETRY_PAUSE)  # a client's backoff before it retries
        self._record(frames)
        self._task = asyncio.create_task(self._read(self._ws))

    def _record(self, frames: list[dict[str, Any]]) -> None:
        now = time.monotonic()
        self.received.extend((f["id"], f["key"], now) for f in frames if "id" in f)

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                self._record([orjson.loads(message)])
        except websockets.ConnectionClosed:
            pass
        self.closes.append(ws.close_code)

    async def disconnect(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            await self._task
        self._ws = self._task = None

    @property
    def connected(self) -> bool:
        return self._task is not None and not self._task.done()

    async def wait_for(self, key: int, timeout: float = TIMEOUT) -> float:
        """Wait until the event with ``key`` arrived; returns when (monotonic)."""
        async with asyncio.timeout(timeout):
            while True:
                for _, k, t in reversed(self.received):
                    if k == key:
                        return t
                if self._task is not None and self._task.done():
                    raise AssertionError(f"connection closed ({self.closes}) before key {key}")
                await asyncio.sleep(0.01)


async def committed(url: str, tenant: str) -> list[tuple[int, int]]:
    """The tenant's stored events as (id, key), in id order."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "SELECT id, key FROM pgpulse.events WHERE tenant_id = %s ORDER BY id", [tenant]
        )
        return [(int(row[0]), int(row[1])) for row in await cur.fetchall()]


async def terminate(url: str, application_names: list[str]) -> list[int]:
    """``pg_terminate_backend`` every connection of this database with one of these names."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            """
            SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE datname = current_database() AND application_name = ANY(%s)
              AND pid <> pg_backend_pid()
            """,
            [application_names],
        )
        return [int(row[0]) for row in await cur.fetchall() if row[1]]


async def until(condition: Any, timeout: float = TIMEOUT, what: str = "condition") -> float:
    """Poll ``condition()`` until true, bounded; returns the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.01)
    return time.monotonic()
