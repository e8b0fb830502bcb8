"""``GET /sse``: the same stream as ``/ws`` in Server-Sent Events form (contract §3)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
from psycopg.types.json import Jsonb

from ..support import TIMEOUT, ServerHandle, mint, start_server


@dataclass
class Message:
    """One SSE message: its fields, or the comment lines seen before the next one."""

    id: str | None = None
    event: str | None = None
    data: list[str] = field(default_factory=list)
    retry: str | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def body(self) -> Any:
        return orjson.loads("\n".join(self.data))


class SSEReader:
    """A minimal EventSource parser over an httpx streaming response; every read is bounded."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def message(self, timeout: float = TIMEOUT) -> Message:
        """The next dispatched message; comments seen on the way are attached to it."""
        current = Message()
        async with asyncio.timeout(timeout):
            while True:
                line = await anext(self._lines)
                if line == "":
                    if current.data or current.retry is not None or current.comments:
                        return current
                    continue
                if line.startswith(":"):
                    current.comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    current.data.append(value)
                elif name in ("id", "event", "retry"):
                    setattr(current, name, value)

    async def until_ready(self) -> list[Message]:
        """Messages up to and including the ``ready`` control message."""
        got = []
        while True:
            message = await self.message()
            got.append(message)
            if message.event == "control" and message.body.get("op") == "ready":
                return got

    async def events(self, count: int) -> list[Message]:
        """The next ``count`` event messages (control messages and comments skipped)."""
        got: list[Message] = []
        async with asyncio.timeout(TIMEOUT):
            while len(got) < count:
                message = await self.message()
                if message.id is not None:
                    got.append(message)
        return got


@contextlib.asynccontextmanager
async def sse(
    server: ServerHandle, token: str, headers: dict[str, str] | None = None, **params: str
) -> AsyncIterator[SSEReader]:
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http,
        http.stream("GET", "/sse", params={"token": token, **params}, headers=headers) as r,
    ):
        assert r.status_code == 200, (await r.aread()).decode()
        assert r.headers["content-type"].startswith("text/event-stream")
        yield SSEReader(r)


async def publish(url: str, tenant: str, type_: str, data: Any, **kw: Any) -> int:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
        cur = await c.execute(
            "SELECT pgpulse.publish(%s, %s, %s, %s, %s)",
            [tenant, kw.get("topic", "notifications"), type_, Jsonb(data), kw.get("user")],
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def test_live_events_carry_id_type_and_the_ws_frame(
    server: ServerHandle, tenant: str
) -> None:
    url = server.runtime.database_url
    async with sse(server, mint(tenant)) as stream:
        first = await stream.message()
        assert first.retry is not None and int(first.retry) > 0
        ready = await stream.until_ready()
        assert ready[-1].id is None and ready[-1].body == {"op": "ready", "last_event_id": 0}
        await publish(url, tenant, "hello", {"n": 1, "text": "line\nbreak é"})
        # A type with a line break cannot break the framing: the event line is
        # cleaned, the JSON keeps the type whole.
        await publish(url, tenant, "evil\ntype\r\ndata: {}", {"n": 2})
        got = await stream.events(2)
    assert [m.id for m in got] == ["1", "2"]
    assert got[0].event == "hello"
    assert got[0].body["data"] == {"n": 1, "text": "line\nbreak é"}
    assert got[0].body["tenant_id"] == tenant and got[0].body["id"] == 1
    assert set(got[0].body) == {"id", "key", "tenant_id", "topic", "type", "data", "ts"}
    assert "\n" not in (got[1].event or "") and got[1].body["type"] == "evil\ntype\r\ndata: {}"
    assert got[1].body["data"] == {"n": 2}


async def test_resume_with_last_event_id(server: ServerHandle, tenant: str) -> None:
    url = server.runtime.database_url
    for i in range(1, 6):
        await publish(url, tenant, f"e{i}", {"i": i})

    async with sse(server, mint(tenant), headers={"Last-Event-ID": "2"}) as stream:
        frames = await stream.until_ready()
        assert [m.id for m in frames if m.id] == ["3", "4", "5"]
        assert frames[-1].body == {"op": "ready", "last_event_id": 5}
        await publish(url, tenant, "e6", {"i": 6})
        [live] = await stream.events(1)
        assert live.id == "6"

    # The query parameter works too (EventSource cannot set headers on the first connect)...
    async with sse(server, mint(tenant), last_event_id="4") as stream:
        frames = await stream.until_ready()
        assert [m.id for m in frames if m.id] == ["5", "6"]

    # ...and the header wins over it, as EventSource sends it on reconnect.
    async with sse(server, mint(tenant), headers={"Last-Event-ID": "5"}, last_event_id="1") as s:
        frames = await s.until_ready()
        assert [m.id for m in frames if m.id] == ["6"]

    # A position this database never handed out: a reset, then the stream from now.
    async with sse(server, mint(tenant), headers={"Last-Event-ID": "999"}) as stream:
        frames = await stream.until_ready()
        assert frames[-2].event == "control" and frames[-2].body["op"] == "reset"
        assert frames[-1].body == {"op": "ready", "last_event_id": 6}

    async with server.http() as http:
        r = await http.get("/sse", params={"token": mint(tenant)}, headers={"Last-Event-ID": "-1"})
        assert r.status_code == 422 and "last_event_id" in r.json()["detail"]


async def test_heartbeat_comments_on_an_idle_stream(
    database_url: str, tmp_path: Path, tenant: str
) -> None:
    async with (
        start_server(database_url, tmp_path, sse_heartbeat=0.2) as server,
        sse(server, mint(tenant)) as stream,
    ):
        await stream.until_ready()
        beat = await stream.message(timeout=5)
        assert beat.comments and beat.data == [] and beat.id is None
        # The stream is still live after heartbeats.
        await publish(server.runtime.database_url, tenant, "after-beat", {})
        [got] = await stream.events(1)
        assert got.event == "after-beat"


async def test_same_isolation_as_ws(server: ServerHandle, tenant: str) -> None:
    url = server.runtime.database_url
    other = tenant + "'; DROP TABLE pgpulse.events; --"
    async with (
        sse(server, mint(tenant, user="alice")) as alice,
        sse(server, mint(tenant, user="bob"), topics="a,b") as bob_ab,
        sse(server, mint(other, user="alice")) as other_alice,
    ):
        for stream in (alice, bob_ab, other_alice):
            await stream.until_ready()
        await publish(url, tenant, "for-alice", {}, topic="a", user="alice")
        await publish(url, tenant, "for-bob-c", {}, topic="c", user="bob")
        await publish(url, tenant, "for-bob-b", {}, topic="b", user="bob")
        await publish(url, other, "other-tenant", {}, topic="a", user="alice")
        await publish(url, tenant, "wide-a", {}, topic="a")
        await publish(url, other, "marker", {}, topic="a")

        assert [m.event for m in await alice.events(2)] == ["for-alice", "wide-a"]
        assert [m.event for m in await bob_ab.events(2)] == ["for-bob-b", "wide-a"]
        got = await other_alice.events(2)
        assert [m.event for m in got] == ["other-tenant", "marker"]
        assert {m.body["tenant_id"] for m in got} == {other}

    # Closed streams leave the hub (a leak here would grow rooms forever).
    async with asyncio.timeout(TIMEOUT):
        while server.runtime.hub.connections:
            await asyncio.sleep(0.01)

    async with server.http() as http:
        r = await http.get("/sse", params={"token": mint(tenant, topics=["a"]), "topics": "c"})
        assert r.status_code == 403
        r = await http.get("/sse", params={"tenant_id": tenant})
        assert r.status_code == 401
