"""Subscribe and unsubscribe on a live /ws while both topics are being published to.

The connection must deliver exactly the events its acks promise: a topic's
events after the ``subscribed`` ack's ``last_event_id`` and up to the
``unsubscribed`` ack's, each once, ids strictly increasing throughout.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
import psycopg
from websockets.asyncio.client import ClientConnection

import pgpulse

from ..support import TIMEOUT, ServerHandle, mint, publish_for_id, recv, until_ready


class Publisher:
    """Publishes to random topics until stopped, remembering each event's topic."""

    def __init__(self, url: str, tenant: str, topics: str) -> None:
        self.url = url
        self.tenant = tenant
        self.topics = topics
        self.published: dict[int, str] = {}
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        rng = random.Random(15)
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as c:
            while not self._stop.is_set():
                topic = rng.choice(self.topics)
                event_id = await publish_for_id(
                    c, tenant_id=self.tenant, topic=topic, type="e", data={}
                )
                self.published[event_id] = topic
                await asyncio.sleep(rng.uniform(0, 0.004))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def until(self, count: int) -> None:
        async with asyncio.timeout(TIMEOUT):
            while len(self.published) < count:
                await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


class Reader:
    """Every frame of a socket, in order, read in the background."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self._new = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.frames.append(await recv(self.ws, 60))
            self._new.set()

    async def until(self, check: Any) -> dict[str, Any]:
        async with asyncio.timeout(TIMEOUT):
            while True:
                for frame in self.frames:
                    if check(frame):
                        return frame
                self._new.clear()
                await self._new.wait()

    async def request(self, body: dict[str, Any]) -> dict[str, Any]:
        """Send a request with a ref and wait for its answer."""
        await self.ws.send(orjson.dumps(body).decode())
        return await self.until(lambda f: "op" in f and f.get("ref") == body["ref"])

    def stop(self) -> None:
        self._task.cancel()


async def test_subscribe_and_unsubscribe_while_both_topics_flow(
    server: ServerHandle, tenant: str
) -> None:
    publisher = Publisher(server.runtime.database_url, tenant, "ab")
    async with server.connect(mint(tenant), topics="a") as ws:
        [ready] = await until_ready(ws)
        start = ready["last_event_id"]
        reader = Reader(ws)
        publisher.start()
        try:
            await publisher.until(40)
            # A resume point a little in the past: catch-up from max(position, it).
            resume = max(publisher.published) - 5
            sub_b = await reader.request(
                {"op": "subscribe", "topics": ["b"], "last_event_id": resume, "ref": 1}
            )
            assert sub_b["op"] == "subscribed" and sub_b["last_event_id"] >= resume
            await publisher.until(120)
            unsub_a = await reader.request({"op": "unsubscribe", "topics": ["a"], "ref": 2})
            assert unsub_a["op"] == "unsubscribed"
            await publisher.until(200)
            # Again, from a resume point ahead of what the socket has seen.
            ahead = max(publisher.published) + 3
            sub_a = await reader.request(
                {"op": "subscribe", "topics": ["a"], "last_event_id": ahead, "ref": 3}
            )
            assert sub_a["last_event_id"] == ahead
            await publisher.until(280)
        finally:
            await publisher.stop()
        last = max(publisher.published)
        await reader.until(lambda f: f.get("id") == last)
        await asyncio.sleep(0.2)  # a duplicate or a stray event would show up by now
        reader.stop()

    got = [f["id"] for f in reader.frames if "id" in f]
    assert got == sorted(set(got)), "ids must strictly increase"
    topic_of = publisher.published

    def wanted(event_id: int) -> bool:
        if topic_of[event_id] == "a":
            return start < event_id <= unsub_a["last_event_id"] or event_id > sub_a["last_event_id"]
        return event_id > sub_b["last_event_id"]

    assert got == [i for i in sorted(topic_of) if wanted(i)]
    # The answers sit in the stream at their place: nothing of b before it was subscribed...
    position = {id(f): n for n, f in enumerate(reader.frames)}
    before_b = reader.frames[: position[id(sub_b)]]
    assert all(topic_of[f["id"]] == "a" for f in before_b if "id" in f)
    # ... and nothing of a between the unsubscribe and the new subscribe.
    between = reader.frames[position[id(unsub_a)] : position[id(sub_a)]]
    assert all(topic_of[f["id"]] == "b" for f in between if "id" in f)


async def test_a_forbidden_topic_is_refused_in_band(server: ServerHandle, tenant: str) -> None:
    token = mint(tenant, topics=["a", "b"])
    async with server.connect(token, topics="a") as ws:
        await until_ready(ws)
        await ws.send(orjson.dumps({"op": "subscribe", "topics": ["b", "c"], "ref": "x"}).decode())
        refused = await recv(ws)
        assert refused == {
            "op": "error",
            "message": "token does not allow topic(s): c",
            "ref": "x",
        }
        # Still open, and unchanged: b was not added.
        await ws.send('{"op": "ping"}')
        assert await recv(ws) == {"op": "pong"}
        async with await psycopg.AsyncConnection.connect(
            server.runtime.database_url, autocommit=True
        ) as c:
            await pgpulse.publish(c, tenant_id=tenant, topic="b", type="e", data={})
            marker = await publish_for_id(c, tenant_id=tenant, topic="a", type="e", data={})
        assert (await recv(ws))["id"] == marker
        await ws.send(orjson.dumps({"op": "subscribe", "topics": ["b"], "ref": "y"}).decode())
        accepted = await recv(ws)
        assert accepted == {
            "op": "subscribed",
            "topics": ["b"],
            "last_event_id": marker,
            "ref": "y",
        }
