"""The hub without a database: routing, dedup by cursor, bounded queues."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from pgpulse.events import Event
from pgpulse.hub import Hub, SlowConsumer, Subscription


def ev(tenant: str, id: int, topic: str = "t", user: str | None = None, size: int = 2) -> Event:
    return Event(id, id, tenant, topic, "x", "0" * size, datetime.now(UTC), user)


async def test_routes_by_tenant_topic_and_user() -> None:
    hub = Hub()
    woken: list[str] = []
    hub.on_new_room = woken.append
    a_all = Subscription("a")
    a_u1 = Subscription("a", user_id="u1", topics=frozenset({"t"}))
    b = Subscription("b")
    for s in (a_all, a_u1, b):
        hub.join(s, 0)
    assert woken == ["a", "b"]
    hub.deliver([ev("a", 1), ev("a", 2, topic="other"), ev("a", 3, user="u1"), ev("b", 1)])
    assert [e.id for e in await a_all.next_batch(0.1)] == [1, 2]
    assert [e.id for e in await a_u1.next_batch(0.1)] == [1, 3]
    assert [e.id for e in await b.next_batch(0.1)] == [1]


async def test_cursor_skips_events_already_dispatched() -> None:
    hub = Hub()
    s = Subscription("a")
    assert hub.join(s, 5) == 5
    hub.deliver([ev("a", 4), ev("a", 5), ev("a", 6)])
    hub.deliver([ev("a", 6), ev("a", 7)])
    assert [e.id for e in await s.next_batch(0.1)] == [6, 7]
    assert hub.positions() == {"a": 7}
    hub.leave(s)
    assert hub.positions() == {}


async def test_position_drops_replayed_duplicates() -> None:
    s = Subscription("a")
    s.offer([ev("a", 3)])
    s.offer([ev("a", 4)])
    s.position = 3
    assert [e.id for e in await s.next_batch(0.1)] == [4]


async def test_overflow_marks_slow_and_frees_the_queue() -> None:
    s = Subscription("a", max_events=10)
    for i in range(1, 12):
        s.offer([ev("a", i)])
    assert s.overflowed and not s.queue
    with pytest.raises(SlowConsumer):
        await s.next_batch(0.1)


async def test_byte_limit() -> None:
    s = Subscription("a", max_bytes=64 * 1024)
    s.offer([ev("a", 1, size=70 * 1024)])
    assert s.overflowed


async def test_idle_returns_empty_and_close_ends() -> None:
    s = Subscription("a")
    assert await s.next_batch(0.01) == []
    s.close()
    assert await s.next_batch(None) == []


async def test_direct_path_keeps_order_behind_queue_and_batch() -> None:
    written: list[bytes] = []
    writable = True

    def direct(frames: bytes) -> bool:
        if writable:
            written.append(frames)
        return writable

    e = {i: ev("a", i) for i in range(1, 6)}
    s = Subscription("a")
    s.direct = direct
    s.offer([e[1]])
    assert written == [e[1].ws_bytes] and s.position == 1 and not s.queue
    writable = False
    s.offer([e[2]])  # backed up: queued
    writable = True
    s.offer([e[3]])  # something is queued: must queue behind it
    assert len(written) == 1 and [x.id for x in s.queue] == [2, 3]
    batch = await s.next_batch(0.1)
    assert [x.id for x in batch] == [2, 3]
    s.offer([e[4]])  # the writer is still sending 2 and 3: queue
    assert len(written) == 1 and [x.id for x in s.queue] == [4]
    assert [x.id for x in await s.next_batch(0.1)] == [4]
    assert await s.next_batch(0.01) == []  # the writer finished: direct again
    s.offer([e[5]])
    assert written == [e[1].ws_bytes, e[5].ws_bytes] and s.position == 5


async def test_a_batch_is_one_write_per_connection_and_one_join_per_room() -> None:
    hub = Hub()
    writes: dict[str, list[bytes]] = {"x": [], "y": [], "topic": [], "u1": []}
    subs = {
        "x": Subscription("a"),
        "y": Subscription("a"),
        "topic": Subscription("a", topics=frozenset({"other"})),
        "u1": Subscription("a", user_id="u1"),
    }

    def recorder(out: list[bytes]) -> Callable[[bytes], bool]:
        def write(frames: bytes) -> bool:
            out.append(frames)
            return True

        return write

    for name, sub in subs.items():
        hub.join(sub, 0)
        sub.direct = recorder(writes[name])
    batch = [ev("a", 1), ev("a", 2, topic="other"), ev("a", 3)]
    assert hub.deliver(batch) == 3 + 3 + 1 + 3
    everything = b"".join(x.ws_bytes for x in batch)
    assert writes["x"] == [everything] and writes["y"] == [everything]
    assert writes["x"][0] is writes["y"][0]  # joined once, shared
    assert writes["topic"] == [batch[1].ws_bytes]
    assert writes["u1"] == [everything]
    # An event for one user: the others' share leaves it out, in the same single write.
    batch = [ev("a", 4), ev("a", 5, user="u1"), ev("a", 6)]
    hub.deliver(batch)
    assert writes["x"][1] == batch[0].ws_bytes + batch[2].ws_bytes
    assert writes["u1"][1] == b"".join(x.ws_bytes for x in batch)
    assert all(sub.position == 6 for name, sub in subs.items() if name != "topic")
