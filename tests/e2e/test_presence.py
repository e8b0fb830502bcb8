"""Presence across nodes: joins and leaves everywhere, snapshots on request, limits,
and a node killed outright, whose members leave within the bound."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from ..support import (
    TIMEOUT,
    ServerHandle,
    ServerProcess,
    free_port,
    mint,
    recv,
    serve_env,
    start_server,
    until_ready,
)

TTL = 2.0  # seconds: short, so that a dead node's members leave soon


class Member:
    """A socket that folds the presence frames of one topic into a member set."""

    def __init__(self, ws: ClientConnection, topic: str = "room") -> None:
        self.ws = ws
        self.topic = topic
        self.members: dict[str, dict[str, Any]] = {}
        self.me: str | None = None
        self.frames: list[dict[str, Any]] = []
        self._ref = 0

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        self._ref += 1
        ref = self._ref
        await self.ws.send(
            orjson.dumps({"op": op, "topic": self.topic, "ref": ref, **fields}).decode()
        )
        return await self.until(lambda f: f.get("ref") == ref)

    async def join(self, **fields: Any) -> dict[str, Any]:
        answer = await self.request("presence.join", **fields)
        assert answer["op"] == "presence", answer
        self.me = answer["self"]
        return answer

    def _fold(self, frame: dict[str, Any]) -> None:
        self.frames.append(frame)
        if frame.get("topic") != self.topic:
            return
        if frame["op"] == "presence" and "self" in frame:
            self.members = {m["id"]: m for m in frame["members"]}
        elif frame["op"] == "presence.joined":
            self.members[frame["member"]["id"]] = frame["member"]
        elif frame["op"] == "presence.left" and "ref" not in frame:
            self.members.pop(frame["member"]["id"], None)

    async def until(self, check: Any, timeout: float = TIMEOUT) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                frame = await recv(self.ws, timeout)
                self._fold(frame)
                if check(frame):
                    return frame

    def infos(self) -> list[Any]:
        return sorted(orjson.dumps(m["info"]).decode() for m in self.members.values())


@contextlib.asynccontextmanager
async def member(url: str, token: str, topic: str = "room") -> AsyncIterator[Member]:
    async with websockets.connect(url, open_timeout=TIMEOUT) as ws:
        await until_ready(ws)
        yield Member(ws, topic)


def ws_url(server: ServerHandle, token: str) -> str:
    return f"{server.ws_url}/ws?token={token}"


async def test_presence_across_nodes_and_a_killed_node(
    database_url: str, tmp_path: Path, tenant: str
) -> None:
    env = serve_env(database_url, tmp_path / "a", presence_ttl=TTL)
    node_a = ServerProcess(["--log-level", "warning"], env, free_port())
    try:
        await asyncio.to_thread(node_a.wait_ready)
        async with (
            start_server(database_url, tmp_path / "b", presence_ttl=TTL) as node_b,
            member(node_a.ws_url(mint(tenant, "alice")), "") as a1,
            member(ws_url(node_b, mint(tenant, "bob")), "") as b1,
            member(node_a.ws_url(mint(tenant, "carol")), "") as a2,
            member(ws_url(node_b, mint(tenant)), "") as watcher,
        ):
            first = await a1.join(info={"name": "Alice"})
            assert [m["user_id"] for m in first["members"]] == ["alice"]
            state = await b1.join(info={"name": "Bob"})
            assert [m["info"] for m in state["members"]] == [{"name": "Alice"}, {"name": "Bob"}]
            joined = await a1.until(lambda f: f["op"] == "presence.joined")
            assert joined["member"]["user_id"] == "bob" and joined["member"]["id"] == b1.me
            await a2.join()
            await b1.until(lambda f: f["op"] == "presence.joined")
            assert {m["user_id"] for m in b1.members.values()} == {"alice", "bob", "carol"}

            # A snapshot on request, for a connection that is not a member.
            snapshot = await watcher.request("presence.get")
            assert {m["id"] for m in snapshot["members"]} == {a1.me, b1.me, a2.me}
            assert "self" not in snapshot

            # Node A dies without a word: its members leave within the TTL and a sweep.
            node_a.stop(signal.SIGKILL)
            killed = time.monotonic()
            await b1.until(lambda f: f["op"] == "presence.left" and f["member"]["id"] == a1.me)
            if a2.me in b1.members:
                await b1.until(lambda f: f["op"] == "presence.left" and f["member"]["id"] == a2.me)
            elapsed = time.monotonic() - killed
            bound = TTL + TTL / 6 + 1.0  # and a second for the machine
            assert elapsed <= bound, f"members left {elapsed:.1f} s after their node died"
            assert list(b1.members) == [b1.me]
            after = await watcher.request("presence.get")
            assert [m["id"] for m in after["members"]] == [b1.me]
    finally:
        node_a.stop(signal.SIGKILL)
        node_a.close()


async def test_leaving_and_closing_are_seen_at_once(
    database_url: str, tmp_path: Path, tenant: str
) -> None:
    # A long TTL: nothing here may wait for an expiry.
    async with (
        start_server(database_url, tmp_path / "a", presence_ttl=60) as node_a,
        start_server(database_url, tmp_path / "b", presence_ttl=60) as node_b,
        member(ws_url(node_a, mint(tenant, "alice")), "") as alice,
    ):
        await alice.join()
        async with member(ws_url(node_b, mint(tenant, "bob")), "") as bob:
            await bob.join(info={"status": "typing"})
            await alice.until(lambda f: f["op"] == "presence.joined")
            assert alice.infos() == ["null", '{"status":"typing"}']
            # Joining again updates the info: the others see it as a join.
            await bob.join(info={"status": "idle"})
            await alice.until(lambda f: f["op"] == "presence.joined")
            assert alice.infos() == ["null", '{"status":"idle"}']
            left = await bob.request("presence.leave")
            assert left == {
                "op": "presence.left",
                "topic": "room",
                "member": {"id": bob.me},
                "ref": 3,
            }
            await alice.until(lambda f: f["op"] == "presence.left")
            assert list(alice.members) == [alice.me]
            await bob.join()
            await alice.until(lambda f: f["op"] == "presence.joined")
        # Bob's socket closed: he leaves now, not in a minute.
        started = time.monotonic()
        await alice.until(lambda f: f["op"] == "presence.left", timeout=5)
        assert time.monotonic() - started < 5
        assert list(alice.members) == [alice.me]


async def test_a_state_and_the_changes_after_it_fit_exactly(
    database_url: str, tmp_path: Path, tenant: str
) -> None:
    """Members come and go on one node while a member of the other joins: what it
    folds (its state, then the changes) ends equal to the truth."""
    async with (
        start_server(database_url, tmp_path / "a", presence_ttl=60) as node_a,
        start_server(database_url, tmp_path / "b", presence_ttl=60) as node_b,
    ):
        stop = asyncio.Event()

        async def churn(n: int) -> None:
            rng = random.Random(n)
            while not stop.is_set():
                async with member(ws_url(node_a, mint(tenant, f"u{n}")), "") as m:
                    await m.join(info={"n": n})
                    await asyncio.sleep(rng.uniform(0, 0.05))
                    if rng.random() < 0.5:
                        await m.request("presence.leave")
                    await asyncio.sleep(rng.uniform(0, 0.02))

        tasks = [asyncio.create_task(churn(n)) for n in range(6)]
        try:
            await asyncio.sleep(0.3)
            async with member(ws_url(node_b, mint(tenant, "obs")), "") as observer:
                await observer.join()
                await asyncio.sleep(1.0)
                stop.set()
                await asyncio.gather(*tasks)
                # Every churning socket is closed. Once the servers have seen each go
                # (the table says the observer is alone; polled, nothing else tells),
                # the observer's fold must come to the same, and stay there.
                async with asyncio.timeout(TIMEOUT):
                    while True:
                        truth = await observer.request("presence.get")
                        if [m["id"] for m in truth["members"]] == [observer.me]:
                            break
                        await asyncio.sleep(0.05)
                if list(observer.members) != [observer.me]:
                    await observer.until(lambda f: list(observer.members) == [observer.me])
                with contextlib.suppress(TimeoutError):
                    await observer.until(lambda f: False, timeout=0.3)
                assert list(observer.members) == [observer.me]
                changes = [
                    f for f in observer.frames if f["op"] in ("presence.joined", "presence.left")
                ]
                assert len(changes) > 10  # it did see churn
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_bounds_and_refusals(database_url: str, tmp_path: Path, tenant: str) -> None:
    async with (
        start_server(
            database_url, tmp_path, presence_max_members=2, presence_max_info_bytes=64
        ) as node,
        member(ws_url(node, mint(tenant, "a", topics=["room", "lobby"])), "") as a,
        member(ws_url(node, mint(tenant, "b")), "") as b,
        member(ws_url(node, mint(tenant, "c")), "") as c,
    ):
        refused = await a.request("presence.join", topic="secret")
        assert refused["op"] == "error" and "does not allow topic(s): secret" in refused["message"]
        big = await a.request("presence.join", info={"x": "y" * 100})
        assert big["op"] == "error" and "at most 64" in big["message"]
        await a.join(info={"x": 1})
        await b.join()
        full = await c.request("presence.join")
        assert full == {
            "op": "error",
            "message": "presence of topic 'room' is full (2 members)",
            "ref": 1,
        }
        # The refused member is not there; the socket is still open.
        state = await c.request("presence.get")
        assert {m["id"] for m in state["members"]} == {a.me, b.me}
        await c.ws.send('{"op": "ping"}')
        assert await recv(c.ws) == {"op": "pong"}
        bad = await c.request("presence.get", info={})
        assert bad["op"] == "error" and "presence.join only" in bad["message"]
        # A connection is a member of at most 16 topics.
        answers = [await c.request("presence.join", topic=f"t{i}") for i in range(17)]
        assert [x["op"] for x in answers] == ["presence"] * 16 + ["error"]
        assert "at most 16 topics" in answers[-1]["message"]


async def test_a_refresh_to_fewer_topics_leaves_their_presence(
    server: ServerHandle, tenant: str
) -> None:
    """Presence is reading too: a token that drops a topic takes the member out of it."""
    token = mint(tenant, user="ann", topics=["room", "lobby"])
    async with (
        member(ws_url(server, token), token, "room") as ann,
        member(ws_url(server, mint(tenant, user="bob")), "", "room") as bob,
    ):
        await ann.join()
        ann.topic = "lobby"
        await ann.join()
        await bob.join()
        await ann.until(lambda f: f["op"] == "presence.joined")  # bob, in room
        narrower = mint(tenant, user="ann", topics=["lobby"])
        await ann.ws.send(orjson.dumps({"op": "refresh", "token": narrower}).decode())
        await ann.until(lambda f: f["op"] == "refreshed")
        left = await ann.until(lambda f: f["op"] == "presence.left")
        assert left["topic"] == "room" and left["member"]["id"] == ann.me
        # The others see it leave, and so does a fresh look at the topic.
        gone = await bob.until(lambda f: f["op"] == "presence.left" and "ref" not in f)
        assert gone["member"]["id"] == ann.me
        state = await bob.request("presence.get")
        assert [m["user_id"] for m in state["members"]] == ["bob"]
        # Still present where the new token allows it.
        bob.topic = "lobby"
        state = await bob.request("presence.get")
        assert [m["user_id"] for m in state["members"]] == ["ann"]
        # And a join of the dropped topic is refused now.
        ann.topic = "room"
        answer = await ann.request("presence.join")
        assert answer["op"] == "error" and "room" in answer["message"]
