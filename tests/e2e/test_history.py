"""``GET /api/events`` and ``GET /api/position``: pages both ways, under topic and user rules,
and "load a page, then stream from exactly there"."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

import pgpulse
from pgpulse.client import Client

from ..support import (
    TIMEOUT,
    ServerHandle,
    events,
    mint,
    no_more_events,
    publish_for_id,
    until_ready,
)

# (topic, user) of each event published, in order: ids 1..len(PLAN)
PLAN: list[tuple[str, str | None]] = [
    ("a", None),
    ("b", None),
    ("a", "alice"),
    ("b", "bob"),
    ("a", None),
    ("c", None),
    ("a", "bob"),
    ("b", "alice"),
    ("a", None),
    ("b", None),
    ("a", "alice"),
    ("c", "alice"),
] * 3


async def publish_plan(url: str, tenant: str) -> list[int]:
    ids = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
        for i, (topic, user) in enumerate(PLAN):
            ids.append(
                await publish_for_id(
                    c, tenant_id=tenant, topic=topic, type="e", data={"i": i}, user_id=user
                )
            )
    return ids


def visible(ids: list[int], topics: set[str] | None, user: str | None) -> list[int]:
    return [
        event_id
        for event_id, (topic, owner) in zip(ids, PLAN, strict=True)
        if (topics is None or topic in topics) and (owner is None or owner == user)
    ]


async def get(server: ServerHandle, token: str, path: str, **params: Any) -> Any:
    async with server.http() as http:
        r = await http.get(path, params=params, headers={"Authorization": f"Bearer {token}"})
    return r


async def page_back(server: ServerHandle, token: str, limit: int, **params: Any) -> list[int]:
    """Every visible id, read newest page first, then put back in order."""
    pages: list[list[int]] = []
    before: int | None = None
    while True:
        query = {**params, "limit": limit, **({} if before is None else {"before": before})}
        r = await get(server, token, "/api/events", **query)
        assert r.status_code == 200, r.text
        body = r.json()
        ids = [frame["id"] for frame in body["events"]]
        assert ids == sorted(ids) and len(ids) <= limit
        pages.append(ids)
        if not body["more"]:
            break
        assert len(ids) == limit
        before = ids[0]
    return [i for page in reversed(pages) for i in page]


async def page_forward(server: ServerHandle, token: str, limit: int, **params: Any) -> list[int]:
    got: list[int] = []
    after = 0
    while True:
        r = await get(server, token, "/api/events", after=after, limit=limit, **params)
        assert r.status_code == 200, r.text
        body = r.json()
        ids = [frame["id"] for frame in body["events"]]
        assert ids == sorted(ids) and len(ids) <= limit and all(i > after for i in ids)
        got += ids
        if not body["more"]:
            break
        after = ids[-1]
    return got


@pytest.mark.parametrize(
    ("user", "token_topics", "requested"),
    [
        (None, None, None),
        ("alice", None, None),
        ("bob", None, "a"),
        ("alice", ["a", "c"], None),
        (None, ["a", "b"], "b"),
        ("alice", None, "a,c"),
    ],
)
async def test_pages_both_ways_under_topic_and_user_rules(
    server: ServerHandle,
    tenant: str,
    user: str | None,
    token_topics: list[str] | None,
    requested: str | None,
) -> None:
    ids = await publish_plan(server.runtime.database_url, tenant)
    token = mint(tenant, user, topics=token_topics)
    topics = set(requested.split(",")) if requested else token_topics
    expected = visible(ids, set(topics) if topics else None, user)
    params = {} if requested is None else {"topic": requested}
    assert expected  # every case sees something, and less than everything
    for limit in (1, 4, 1000):
        assert await page_back(server, token, limit, **params) == expected
        assert await page_forward(server, token, limit, **params) == expected
    # A window between two ids, both ways.
    low, high = ids[5], ids[25]
    inside = [i for i in expected if low < i < high]
    r = await get(server, token, "/api/events", after=low, before=high, limit=1000, **params)
    assert [f["id"] for f in r.json()["events"]] == inside
    r = await get(server, token, "/api/events", before=high, limit=3, **params)
    assert [f["id"] for f in r.json()["events"]] == [i for i in expected if i < high][-3:]


async def test_frames_are_those_of_the_socket(server: ServerHandle, tenant: str) -> None:
    token = mint(tenant, "alice")
    async with server.connect(token) as ws:
        await until_ready(ws)
        ids = await publish_plan(server.runtime.database_url, tenant)
        live = await events(ws, len(visible(ids, None, "alice")))
    r = await get(server, token, "/api/events", limit=1000)
    body = r.json()
    assert body["events"] == live
    assert body["last_event_id"] == ids[-1] and body["more"] is False


async def test_refusals_are_clear_and_change_nothing(server: ServerHandle, tenant: str) -> None:
    token = mint(tenant, topics=["a"])
    r = await get(server, token, "/api/events", topic="a,b")
    assert r.status_code == 403 and "b" in r.json()["detail"]
    r = await get(server, mint(tenant), "/api/events", after=5, before=5)
    assert r.status_code == 422 and "after (5) must be below before (5)" in r.text
    for bad in ({"limit": 0}, {"limit": 1001}, {"before": 0}, {"after": -1}, {"after": "x"}):
        r = await get(server, mint(tenant), "/api/events", **bad)
        assert r.status_code == 422, bad
    async with server.http() as http:
        assert (await http.get("/api/events")).status_code == 401
        assert (await http.get("/api/position")).status_code == 401


async def test_a_tenant_reads_only_its_own(server: ServerHandle, tenant: str) -> None:
    await publish_plan(server.runtime.database_url, tenant)
    other = tenant + "-other"
    r = await get(server, mint(other), "/api/events")
    assert r.json() == {"events": [], "last_event_id": 0, "more": False}
    r = await get(server, mint(other), "/api/position")
    assert r.json() == {"last_event_id": 0}


async def test_load_a_page_then_stream_from_exactly_there(
    server: ServerHandle, tenant: str
) -> None:
    """Publishing never stops: the page and the stream still meet without a gap or a repeat."""
    url = server.runtime.database_url
    token = mint(tenant, "alice")
    stop = asyncio.Event()
    published: list[int] = []

    async def publish_forever() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
            i = 0
            while not stop.is_set():
                topic, user = PLAN[i % len(PLAN)]
                published.append(
                    await publish_for_id(
                        c, tenant_id=tenant, topic=topic, type="e", data={}, user_id=user
                    )
                )
                i += 1
                await asyncio.sleep(0.002)

    task = asyncio.create_task(publish_forever())
    try:
        async with asyncio.timeout(TIMEOUT):
            while len(published) < 20:
                await asyncio.sleep(0.01)
        r = await get(server, token, "/api/events", limit=1000)
        page = r.json()
        async with server.connect(token, last_event_id=str(page["last_event_id"])) as ws:
            replayed = [f["id"] for f in await until_ready(ws) if "id" in f]
            async with asyncio.timeout(TIMEOUT):
                while len(published) < 60:
                    await asyncio.sleep(0.01)
            stop.set()
            await task
            mine = [
                event_id
                for k, event_id in enumerate(published)
                if PLAN[k % len(PLAN)][1] in (None, "alice")
            ]
            shown = [f["id"] for f in page["events"]]
            rest = [i for i in mine if i > shown[-1]]
            streamed = replayed + [f["id"] for f in await events(ws, len(rest) - len(replayed))]
            await no_more_events(ws, 0.3)
        assert shown + streamed == mine
    finally:
        stop.set()
        await task


async def test_python_client_history_and_position(server: ServerHandle, tenant: str) -> None:
    ids = await publish_plan(server.runtime.database_url, tenant)
    client = Client(server.url, mint(tenant, "bob"), topics=["a", "b"])
    expected = visible(ids, {"a", "b"}, "bob")
    page = await client.history(limit=5)
    assert [e.id for e in page.events] == expected[-5:] and page.more
    assert page.last_event_id == ids[-1] == await client.position()
    older = await client.history(before=page.events[0].id, limit=1000)
    assert [e.id for e in older.events] == expected[:-5] and not older.more
    forward = await client.history(after=expected[2], limit=2, topics=["a"])
    later = [i for i in visible(ids, {"a"}, "bob") if i > expected[2]]
    assert [e.id for e in forward.events] == later[:2]
    with pytest.raises(pgpulse.AuthError):
        await Client(server.url, mint(tenant, topics=["a"]), topics=["b"]).history()
