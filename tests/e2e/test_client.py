"""The Python client (``pgpulse.client.Client``) and ``pgpulse tail``, against real servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import psycopg
import pytest

import pgpulse
from pgpulse.client import Client
from pgpulse.errors import AuthError, PgpulseError
from pgpulse.events import Event

from ..support import TIMEOUT, ServerHandle, free_port, mint, start_server


class Reader:
    """Runs a client in a task; ``take`` waits (bounded) for the next events it yields."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.ready = asyncio.Event()
        self.controls: list[dict[str, Any]] = []
        client.on_control = self._control
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.task = asyncio.create_task(self._run())

    def _control(self, frame: dict[str, Any]) -> None:
        self.controls.append(frame)
        if frame.get("op") == "ready":
            self.ready.set()

    async def _run(self) -> None:
        async for event in self.client:
            self.queue.put_nowait(event)

    async def wait_ready(self) -> None:
        """Until the next ``ready`` (the client is live on a server)."""
        await self._bounded(self.ready.wait())
        self.ready.clear()

    async def take(self, count: int) -> list[Event]:
        return [await self._bounded(self.queue.get()) for _ in range(count)]

    async def _bounded(self, awaitable: Any) -> Any:
        waiter = asyncio.ensure_future(awaitable)
        done, _ = await asyncio.wait(
            {waiter, self.task}, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter in done:
            return waiter.result()
        waiter.cancel()
        if self.task in done:
            self.task.result()  # the client's own error, if it raised
            raise AssertionError("client stopped")
        raise AssertionError(f"nothing within {TIMEOUT} s")

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@contextlib.asynccontextmanager
async def reading(client: Client) -> AsyncIterator[Reader]:
    reader = Reader(client)
    try:
        yield reader
    finally:
        await reader.close()


async def publish(url: str, tenant: str, type_: str, **kw: Any) -> int:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
        return await pgpulse.publish(c, tenant_id=tenant, type=type_, data={"k": type_}, **kw)


async def test_client_yields_events(server: ServerHandle, tenant: str) -> None:
    url = server.runtime.database_url
    async with reading(Client(server.url, mint(tenant, user="u"), topics=["a", "b"])) as r:
        await r.wait_ready()
        await publish(url, tenant, "one", topic="a")
        await publish(url, tenant, "skipped", topic="c")
        await publish(url, tenant, "two", topic="b", user_id="u")
        await publish(url, tenant, "not-mine", topic="b", user_id="v")
        await publish(url, tenant, "three", topic="a")
        got = await r.take(3)
    assert [(e.id, e.type, e.topic) for e in got] == [
        (1, "one", "a"),
        (3, "two", "b"),
        (5, "three", "a"),
    ]
    assert got[0].data == {"k": "one"} and got[1].user_id == "u" and got[0].tenant_id == tenant
    assert r.client.connects == 1


async def test_client_resumes_after_the_server_restarts(
    database_url: str, tmp_path: Path, tenant: str
) -> None:
    port = free_port()
    quiet = tenant + "-quiet"  # its client has seen no event before the restart
    await publish(database_url, quiet, "before-connect")
    async with start_server(database_url, tmp_path, bind_port=port) as first:
        client = Client(first.url, mint(tenant), max_backoff=0.2)
        quiet_client = Client(first.url, mint(quiet), max_backoff=0.2)
        reader, quiet_reader = Reader(client), Reader(quiet_client)
        try:
            await reader.wait_ready()
            await quiet_reader.wait_ready()
            for i in (1, 2):
                await publish(database_url, tenant, f"e{i}")
            assert [e.id for e in await reader.take(2)] == [1, 2]
        except BaseException:
            await reader.close()
            await quiet_reader.close()
            raise
    try:
        # The server is gone; what is published meanwhile waits in the table.
        for i in (3, 4, 5):
            await publish(database_url, tenant, f"e{i}")
        await publish(database_url, quiet, "while-down")
        async with start_server(database_url, tmp_path, bind_port=port):
            await reader.wait_ready()
            await publish(database_url, tenant, "e6")
            got = await reader.take(4)
            assert [(e.id, e.type) for e in got] == [(3, "e3"), (4, "e4"), (5, "e5"), (6, "e6")]
            assert client.connects == 2 and client.last_event_id == 6
            assert reader.queue.empty()
            # A client that had yielded nothing still resumes from where it stood
            # (its first ready), not from "now": the event of the outage arrives.
            [missed] = await quiet_reader.take(1)
            assert (missed.id, missed.type) == (2, "while-down")
            assert quiet_client.connects == 2
    finally:
        await reader.close()
        await quiet_reader.close()


async def test_client_resumes_from_what_ready_says_it_skipped(
    server: ServerHandle, tenant: str
) -> None:
    url = server.runtime.database_url
    client = Client(server.url, mint(tenant), topics=["rare"])
    async with reading(client) as r:
        await r.wait_ready()
        await publish(url, tenant, "rare-1", topic="rare")
        for i in range(3):
            await publish(url, tenant, f"common-{i}", topic="common")
        assert [e.id for e in await r.take(1)] == [1]
    assert client.last_event_id == 1
    # Reconnecting: ready reports the skipped ids, and the client keeps that position.
    async with reading(client) as r:
        await r.wait_ready()
    assert client.last_event_id == 4
    assert r.controls[-1] == {"op": "ready", "last_event_id": 4}


async def test_refused_token_raises_auth_error(server: ServerHandle, tenant: str) -> None:
    expired = mint(tenant, ttl=-60)
    for client in (
        Client(server.url, "not-a-token"),
        Client(server.url, expired),
        Client(server.url, mint(tenant, topics=["a"]), topics=["b"]),
    ):
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(AuthError, match="refused"):
                async for event in client:
                    raise AssertionError(f"refused client got {event}")
        assert client.connects == 1


async def test_a_url_without_pgpulse_fails_instead_of_retrying_forever(tenant: str) -> None:
    async def not_found(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    port = free_port()
    async with await asyncio.start_server(not_found, "127.0.0.1", port):
        client = Client(f"http://127.0.0.1:{port}", mint(tenant))
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(PgpulseError, match="HTTP 404"):
                async for _ in client:
                    pass


async def read_line(stream: asyncio.StreamReader) -> bytes:
    line = await asyncio.wait_for(stream.readline(), TIMEOUT)
    assert line, "tail ended"
    return line


async def test_tail_prints_event_json_lines(server: ServerHandle, tenant: str) -> None:
    url = server.runtime.database_url
    for i in (1, 2):
        await publish(url, tenant, f"before-{i}")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgpulse",
        "tail",
        "--token",
        mint(tenant),
        "--url",
        server.url,
        "--last-event-id",
        "0",
        env={**os.environ, "PGPULSE_DATABASE_URL": "postgresql://unused@127.0.0.1:9/unused"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        replayed = [orjson.loads(await read_line(proc.stdout)) for _ in range(2)]
        assert [(e["id"], e["type"]) for e in replayed] == [(1, "before-1"), (2, "before-2")]
        # Control frames go to stderr, so stdout stays pure JSON lines.
        ready = orjson.loads(await read_line(proc.stderr))
        assert ready == {"op": "ready", "last_event_id": 2}
        await publish(url, tenant, "live")
        live = orjson.loads(await read_line(proc.stdout))
        assert live["id"] == 3 and live["type"] == "live" and live["tenant_id"] == tenant
        assert live["data"] == {"k": "live"}
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), TIMEOUT)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    stderr = (await proc.stderr.read()).decode() if proc.stderr else ""
    assert "Traceback" not in stderr


async def test_client_refreshes_its_token_in_band_before_exp(
    server: ServerHandle, tenant: str
) -> None:
    from pgpulse.client import Client, token_expiry

    minted: list[str] = []

    async def provider() -> str:
        minted.append(mint(tenant, ttl=3))
        return minted[-1]

    client = Client(server.url, provider)
    got: list[int] = []

    async def consume() -> None:
        async for event in client:
            got.append(event.id)
            if len(got) == 2:
                return

    consumer = asyncio.create_task(consume())
    async with asyncio.timeout(10):
        while client.last_event_id is None:  # set by the first ready
            await asyncio.sleep(0.02)
        await publish(server.runtime.database_url, tenant, "before")
        first_exp = token_expiry(minted[0])
        assert first_exp is not None
        await asyncio.sleep(max(0.0, first_exp - time.time()) + 1.0)  # past the first exp
        await publish(server.runtime.database_url, tenant, "after")
        await consumer
    assert client.connects == 1 and client.refreshes >= 1 and len(got) == 2


async def test_client_narrows_its_topics_with_a_refreshed_token(
    server: ServerHandle, tenant: str
) -> None:
    """After a refresh to fewer topics it reconnects with those, not with topics the
    new token would refuse."""
    minted = 0

    async def provider() -> str:
        nonlocal minted
        minted += 1
        if minted == 1:
            return mint(tenant, topics=["a", "b"], ttl=3)
        return mint(tenant, topics=["a"])

    refreshed = asyncio.Event()

    def on_control(frame: dict[str, Any]) -> None:
        if frame["op"] == "refreshed":
            refreshed.set()

    client = Client(server.url, provider, topics=["a", "b"], on_control=on_control)

    async def consume() -> None:
        async for _ in client:
            pass

    consumer = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(refreshed.wait(), 15)
        assert client.topics == ["a"]
        assert parse_qs(urlsplit(client.ws_url()).query)["topics"] == ["a"]
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
