"""Routing: which connection gets which event (topics, users, tenants), over /ws.

Every "gets nothing" below is proven without sleeping: a marker event that
the connection is allowed to see is published last, and the next frame must
be that marker. An event routed wrongly would have arrived before it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from ..support import TIMEOUT, ServerHandle, events, mint, no_more_events, recv, until_ready


@contextlib.asynccontextmanager
async def ws(server: ServerHandle, token: str, **params: str) -> AsyncIterator[ClientConnection]:
    """A /ws connection with every query parameter URL-encoded (names here are hostile)."""
    url = f"{server.ws_url}/ws?{urlencode({'token': token, **params})}"
    async with websockets.connect(url, open_timeout=TIMEOUT, max_size=None) as conn:
        yield conn


async def publish(
    url: str, tenant: str, topic: str, type_: str, data: Any = None, user: str | None = None
) -> int:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
        cur = await c.execute(
            "SELECT pgpulse.publish(%s, %s, %s, %s::jsonb, %s)",
            [tenant, topic, type_, psycopg.types.json.Jsonb(data or {}), user],
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def next_types(conn: ClientConnection, count: int) -> list[str]:
    return [f["type"] for f in await events(conn, count)]


async def test_topic_filters_live_and_on_replay(server: ServerHandle, tenant: str) -> None:
    url = server.runtime.database_url
    token = mint(tenant)
    async with (
        ws(server, token, topics="a") as only_a,
        ws(server, token, topics="a, b") as a_and_b,
        ws(server, token) as everything,
        ws(server, token, topics=",") as no_names,  # names nothing: the default, all topics
    ):
        for conn in (only_a, a_and_b, everything, no_names):
            await until_ready(conn)
        for topic in ("a", "b", "c", "A", "a "):
            await publish(url, tenant, topic, f"on-{topic}")
        await publish(url, tenant, "a", "marker")
        assert await next_types(only_a, 2) == ["on-a", "marker"]
        assert await next_types(a_and_b, 3) == ["on-a", "on-b", "marker"]
        expected_all = ["on-a", "on-b", "on-c", "on-A", "on-a ", "marker"]
        assert await next_types(everything, 6) == expected_all
        assert await next_types(no_names, 6) == expected_all

    # The replay of a resume is filtered the same way, and ready says where it stands.
    async with ws(server, token, topics="b,c", last_event_id="0") as replayed:
        frames = await until_ready(replayed)
    assert [f["type"] for f in frames if "id" in f] == ["on-b", "on-c"]
    assert frames[-1] == {"op": "ready", "last_event_id": 6}


async def test_token_topics_claim_bounds_what_a_connection_may_read(
    server: ServerHandle, tenant: str
) -> None:
    url = server.runtime.database_url
    token = mint(tenant, topics=["a", "b"])
    await publish(url, tenant, "secret", "leak")  # retained, so a refused replay would show it

    for requested in ("secret", "a,secret", "A", "a,b,c"):
        async with ws(server, token, topics=requested, last_event_id="0") as refused:
            with pytest.raises(ConnectionClosed) as info:
                frame = await recv(refused)
                raise AssertionError(f"refused socket got a frame: {frame}")
        assert info.value.rcvd is not None and info.value.rcvd.code == 1008, requested
        assert "topic" in info.value.rcvd.reason
    async with server.http() as http:
        r = await http.get("/sse", params={"token": token, "topics": "a,secret"})
        assert r.status_code == 403 and "secret" in r.json()["detail"]

    async with ws(server, token) as claimed, ws(server, token, topics="b") as only_b:
        frames = await until_ready(claimed)
        assert [f for f in frames if "id" in f] == []  # no replay from "now"
        await until_ready(only_b)
        for topic in ("secret", "a", "b", "c"):
            await publish(url, tenant, topic, f"on-{topic}")
        await publish(url, tenant, "b", "marker")
        assert await next_types(claimed, 3) == ["on-a", "on-b", "marker"]
        assert await next_types(only_b, 2) == ["on-b", "marker"]


async def test_user_events_reach_only_that_user(server: ServerHandle, tenant: str) -> None:
    url = server.runtime.database_url
    other_tenant = tenant + "-x"
    async with (
        ws(server, mint(tenant, user="alice")) as alice,
        ws(server, mint(tenant, user="alice")) as alice2,
        ws(server, mint(tenant, user="bob")) as bob,
        ws(server, mint(tenant)) as anonymous,
        ws(server, mint(other_tenant, user="alice")) as alice_elsewhere,
    ):
        for conn in (alice, alice2, bob, anonymous, alice_elsewhere):
            await until_ready(conn)
        await publish(url, tenant, "t", "for-alice", user="alice")
        await publish(url, tenant, "t", "for-bob", user="bob")
        await publish(url, tenant, "t", "for-Alice", user="Alice")
        await publish(url, tenant, "t", "for-everyone")
        async with server.http() as http:
            r = await http.post(
                "/api/events",
                json={"topic": "t", "type": "http-for-bob", "data": {}, "user_id": "bob"},
                headers={"Authorization": f"Bearer {mint(tenant, scopes=['publish'])}"},
            )
            assert r.status_code == 201, r.text
        await publish(url, tenant, "t", "marker")
        await publish(url, other_tenant, "t", "marker")

        alice_got = await events(alice, 3)
        assert [f["type"] for f in alice_got] == ["for-alice", "for-everyone", "marker"]
        assert alice_got[0]["user_id"] == "alice" and "user_id" not in alice_got[1]
        assert await next_types(alice2, 3) == ["for-alice", "for-everyone", "marker"]
        assert await next_types(bob, 4) == ["for-bob", "for-everyone", "http-for-bob", "marker"]
        assert await next_types(anonymous, 2) == ["for-everyone", "marker"]
        assert await next_types(alice_elsewhere, 1) == ["marker"]

    # Replay after a resume applies the same rule.
    async with ws(server, mint(tenant, user="bob"), last_event_id="0") as bob_again:
        frames = await until_ready(bob_again)
    assert [f["type"] for f in frames if "id" in f] == [
        "for-bob",
        "for-everyone",
        "http-for-bob",
        "marker",
    ]
    async with ws(server, mint(tenant), last_event_id="0") as anonymous_again:
        frames = await until_ready(anonymous_again)
    assert [f["type"] for f in frames if "id" in f] == ["for-everyone", "marker"]


HOSTILE_NAMES = [
    "x' OR '1'='1",
    "'; DROP TABLE pgpulse.events; --",
    '"; DROP SCHEMA pgpulse CASCADE; --',
    "Robert'); DELETE FROM pgpulse.tenants;--",
    "%",
    "_",
    "*",
    "a,b",
    "$1",
    "\\x00",
    "租户🚀",
    "caf\u00e9",  # composed é
    "cafe\u0301",  # e + combining accent: another string, so another tenant
    "line\nbreak",
    "acme",
    "ACME",
    "acme ",
    "ñ" * 200,  # the longest allowed, 400 bytes in UTF-8
]


async def test_hostile_tenant_and_topic_names_are_taken_literally(
    server: ServerHandle, tenant: str
) -> None:
    url = server.runtime.database_url
    # Each name is a tenant (prefixed with this test's tenant, to stay apart from
    # other tests) and, unprefixed, a topic of that tenant.
    tenants = [f"{tenant}{name}"[:200] for name in HOSTILE_NAMES]
    assert len(set(tenants)) == len(tenants)
    async with contextlib.AsyncExitStack() as stack:
        conns = []
        filtered = []
        for t, name in zip(tenants, HOSTILE_NAMES, strict=True):
            conns.append(await stack.enter_async_context(ws(server, mint(t))))
            if "," not in name and name == name.strip():  # the query splits and strips
                filtered.append(await stack.enter_async_context(ws(server, mint(t), topics=name)))
            else:
                filtered.append(await stack.enter_async_context(ws(server, mint(t, topics=[name]))))
        for conn in conns + filtered:
            await until_ready(conn)

        publish_token = {t: mint(t, scopes=["publish"]) for t in tenants}
        async with server.http() as http:
            for t, name in zip(tenants, HOSTILE_NAMES, strict=True):
                await publish(url, t, "other", "sql-other", {"tenant": t})
                await publish(url, t, name, "sql-named", {"tenant": t})
                r = await http.post(
                    "/api/events",
                    json={"topic": name, "type": name, "data": {"tenant": t}},
                    headers={"Authorization": f"Bearer {publish_token[t]}"},
                )
                assert r.status_code == 201, r.text
                assert r.json() == {"event_id": 3}

        for t, name, conn, only_named in zip(tenants, HOSTILE_NAMES, conns, filtered, strict=True):
            got = await events(conn, 3)
            assert [(f["id"], f["tenant_id"], f["topic"], f["type"]) for f in got] == [
                (1, t, "other", "sql-other"),
                (2, t, name, "sql-named"),
                (3, t, name, name),
            ], repr(name)
            assert all(f["data"] == {"tenant": t} for f in got)
            got = await events(only_named, 2)
            assert [(f["tenant_id"], f["topic"]) for f in got] == [(t, name), (t, name)]
        for conn in conns + filtered:
            await no_more_events(conn, 0.05)

    async with await psycopg.AsyncConnection.connect(url) as c:
        cur = await c.execute(
            "SELECT count(*), count(DISTINCT tenant_id) FROM pgpulse.events"
            " WHERE tenant_id = ANY(%s)",
            [tenants],
        )
        assert await cur.fetchone() == (3 * len(tenants), len(tenants))
