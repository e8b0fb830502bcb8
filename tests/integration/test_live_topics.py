"""Topics added and dropped on a live stream, step by step, with the hub fed by hand.

No listener runs here: each test decides exactly which events the hub has
dispatched (its cursor) and when the writer pulls, so the cases of
:mod:`pgpulse.transports.topics` (events queued but not sent, a new topic's
events only in the table, a resume point ahead of the cursor) are each
reached on purpose, with the real table and the real replay.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import psycopg
import pytest

from pgpulse import db
from pgpulse.auth import Verifier
from pgpulse.events import Event
from pgpulse.history import History
from pgpulse.hub import Hub, Subscription
from pgpulse.transports.lifetime import Lifetime
from pgpulse.transports.ops import ClientOps
from pgpulse.transports.subscription import Stream

from ..support import SECRET, mint, publish_for_id

Item = Event | str


@pytest.fixture
async def stream(database_url: str) -> AsyncIterator[Stream]:
    pool = await db.open_pool(database_url, 1, 4)
    try:
        yield Stream(Hub(), History(pool))
    finally:
        await pool.close()


async def publish(url: str, tenant: str, topics: str) -> list[int]:
    """One event per letter of ``topics`` (``"abab"``: a, b, a, b), in order."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
        return [
            await publish_for_id(c, tenant_id=tenant, topic=t, type="e", data={}) for t in topics
        ]


async def dispatch(stream: Stream, tenant: str, up_to: int) -> None:
    """What the listener does: hand the hub the tenant's events after its cursor."""
    cursor = stream.hub.positions([tenant]).get(tenant, 0)
    got = [e async for e in stream.history.replay(tenant, cursor, up_to, None, None)]
    stream.hub.deliver(got)


def ids(items: list[Item]) -> list[int]:
    return [item.id for item in items if isinstance(item, Event)]


def frames(items: list[Item]) -> list[Any]:
    return [item.id if isinstance(item, Event) else orjson.loads(item) for item in items]


class Writer:
    """Pulls the stream one item at a time, as the WebSocket writer does."""

    def __init__(self, stream: Stream, subscription: Subscription, ops: ClientOps) -> None:
        self.gen = stream.frames(subscription, None, requests=ops)

    async def pull(self, n: int) -> list[Item]:
        return [await anext(self.gen) for _ in range(n)]

    async def close(self) -> None:
        await self.gen.aclose()


async def test_subscribe_merges_queued_events_with_the_new_topics_history(
    stream: Stream, database_url: str, tenant: str
) -> None:
    sub = Subscription(tenant, topics=frozenset({"a"}))
    ops = ClientOps(sub, None)
    writer = Writer(stream, sub, ops)
    try:
        assert frames(await writer.pull(1)) == [{"op": "ready", "last_event_id": 0}]
        await publish(database_url, tenant, "abababababababab")  # ids 1..16
        await dispatch(stream, tenant, 4)
        assert ids(await writer.pull(1)) == [1]  # the writer holds the batch [1, 3]
        await dispatch(stream, tenant, 8)  # 5 and 7 wait in the queue
        assert ops.handle({"op": "subscribe", "topics": ["b"], "last_event_id": 2}) is None
        await dispatch(stream, tenant, 10)  # 9 queued; 10 is b's, not wanted yet
        got = await writer.pull(9)
        # P = 3 once [1, 3] is out, C = 10: b starts after max(P, 2) = 3.
        assert frames(got) == [
            3,
            {"op": "subscribed", "topics": ["b"], "last_event_id": 3},
            4,
            5,
            6,
            7,
            8,
            9,
            10,
        ]
        await dispatch(stream, tenant, 12)
        assert ids(await writer.pull(2)) == [11, 12]
        assert sub.position == 12

        # Unsubscribe a while 13 and 14 wait: 13 (a's) is dropped, 14 still comes.
        await dispatch(stream, tenant, 14)
        assert ops.handle({"op": "unsubscribe", "topics": ["a"], "ref": "u1"}) is None
        got = await writer.pull(2)
        assert frames(got) == [
            {"op": "unsubscribed", "topics": ["a"], "last_event_id": 12, "ref": "u1"},
            14,
        ]
        await dispatch(stream, tenant, 16)
        assert ids(await writer.pull(1)) == [16]
        assert sub.topics == frozenset({"b"})
    finally:
        await writer.close()


async def test_without_a_resume_point_a_topic_starts_now(
    stream: Stream, database_url: str, tenant: str
) -> None:
    sub = Subscription(tenant, topics=frozenset({"a"}))
    ops = ClientOps(sub, None)
    writer = Writer(stream, sub, ops)
    try:
        await writer.pull(1)
        await publish(database_url, tenant, "ababab")
        await dispatch(stream, tenant, 6)
        assert ids(await writer.pull(1)) == [1]  # holds [1, 3, 5]
        ops.handle({"op": "subscribe", "topics": ["b"], "ref": 7})
        got = await writer.pull(3)
        assert frames(got) == [
            3,
            5,
            {"op": "subscribed", "topics": ["b"], "last_event_id": 6, "ref": 7},
        ]
        await publish(database_url, tenant, "ba")
        await dispatch(stream, tenant, 8)
        assert ids(await writer.pull(2)) == [7, 8]
    finally:
        await writer.close()


async def test_a_resume_point_ahead_of_the_hub_skips_what_it_covers(
    stream: Stream, database_url: str, tenant: str
) -> None:
    sub = Subscription(tenant, topics=frozenset({"a"}))
    ops = ClientOps(sub, None)
    writer = Writer(stream, sub, ops)
    try:
        await writer.pull(1)
        await publish(database_url, tenant, "abababab")  # ids 1..8
        await dispatch(stream, tenant, 2)
        assert ids(await writer.pull(1)) == [1]
        # The client read b's history up to 6 (e.g. GET /api/events) before the hub got there.
        ops.handle({"op": "subscribe", "topics": ["b"], "last_event_id": 6})
        [ack] = await writer.pull(1)
        assert frames([ack]) == [{"op": "subscribed", "topics": ["b"], "last_event_id": 6}]
        await dispatch(stream, tenant, 8)
        assert ids(await writer.pull(4)) == [3, 5, 7, 8]  # b's 4 and 6 were covered
        assert sub.floors is not None
        # Once the cursor is past the floor, the next request forgets it.
        ops.handle({"op": "subscribe", "topics": ["b"]})
        await writer.pull(1)
        assert sub.floors is None
    finally:
        await writer.close()


async def test_refused_requests_change_nothing(
    stream: Stream, database_url: str, tenant: str
) -> None:
    sub = Subscription(tenant, topics=frozenset({"a"}))
    ops = ClientOps(sub, frozenset({"a", "b"}))
    refusals = {
        "token does not allow topic(s): c": {"op": "subscribe", "topics": ["b", "c"], "ref": 1},
        '"topics" must be a non-empty list': {"op": "subscribe", "topics": []},
        "each topic must be a string": {"op": "subscribe", "topics": [""]},
        '"last_event_id" must be a non-negative integer': {
            "op": "subscribe",
            "topics": ["b"],
            "last_event_id": -1,
        },
        '"last_event_id" goes with subscribe only': {
            "op": "unsubscribe",
            "topics": ["a"],
            "last_event_id": 3,
        },
        '"ref" must be an integer or a string': {"op": "subscribe", "topics": ["b"], "ref": {}},
    }
    for message, request in refusals.items():
        answer = ops.handle(request)
        assert answer is not None
        body = orjson.loads(answer)
        assert body["op"] == "error" and message in body["message"], (message, body)
        assert body.get("ref") == (request.get("ref") if message.startswith("token") else None)
    assert not ops.pending and sub.topics == frozenset({"a"})

    everything = ClientOps(Subscription(tenant), None)
    answer = everything.handle({"op": "unsubscribe", "topics": ["a"]})
    assert answer is not None and "reads every topic" in orjson.loads(answer)["message"]


async def test_a_refresh_to_fewer_topics_overrules_what_is_queued_or_in_flight(
    stream: Stream, database_url: str, tenant: str
) -> None:
    """A subscribe checked against the old token, or half way through its catch-up,
    yields to a refresh that drops the topic: nothing of it reaches the client."""
    verifier = Verifier(SECRET, ["HS256"])
    narrower = mint(tenant, topics=["a"])

    def connection() -> tuple[Subscription, ClientOps, Lifetime]:
        sub = Subscription(tenant, topics=frozenset({"a"}))
        principal = verifier.verify(mint(tenant, topics=["a", "b"]))
        ops = ClientOps(sub, principal.topics)
        return sub, ops, Lifetime(principal, sub, verifier, on_refresh=ops.replace_allowed)

    # Queued under the old token, taken by the writer after the refresh.
    sub, ops, lifetime = connection()
    writer = Writer(stream, sub, ops)
    try:
        assert frames(await writer.pull(1))[0]["op"] == "ready"
        assert (
            ops.handle({"op": "subscribe", "topics": ["b"], "last_event_id": 0, "ref": 1}) is None
        )
        assert orjson.loads(await lifetime.refresh(narrower))["op"] == "refreshed"
        (answer,) = frames(await writer.pull(1))
        assert answer["op"] == "error" and answer["ref"] == 1 and "b" in answer["message"]
        assert sub.topics == frozenset({"a"})
    finally:
        await writer.close()

    # Refreshed after the first event of the catch-up went out.
    sub, ops, lifetime = connection()
    writer = Writer(stream, sub, ops)
    try:
        assert frames(await writer.pull(1))[0]["op"] == "ready"
        b_ids = await publish(database_url, tenant, "bbb")  # dispatched, not yet pulled
        await dispatch(stream, tenant, b_ids[-1])
        assert ops.handle({"op": "subscribe", "topics": ["b"], "last_event_id": 0}) is None
        subscribed, first = frames(await writer.pull(2))
        assert subscribed["op"] == "subscribed" and first == b_ids[0]
        assert orjson.loads(await lifetime.refresh(narrower))["op"] == "refreshed"
        (a_id,) = await publish(database_url, tenant, "a")
        await dispatch(stream, tenant, a_id)
        assert ids(await writer.pull(1)) == [a_id]  # not the rest of b's catch-up
    finally:
        await writer.close()
