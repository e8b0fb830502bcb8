"""End to end: publish by every path, receive over /ws, exactly once, in order."""

from __future__ import annotations

import asyncio

import psycopg

import pgpulse

from ..support import ServerHandle, events, mint, no_more_events, until_ready


async def test_each_publish_path_reaches_its_tenant_only(
    server: ServerHandle, database_url: str, tenant: str
) -> None:
    other = tenant + "-other"
    async with server.connect(mint(tenant)) as ws, server.connect(mint(other)) as ws_other:
        await until_ready(ws)
        await until_ready(ws_other)
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
            await c.execute(
                "SELECT pgpulse.publish(%s, 'notifications', 'from_sql', '{\"n\": 1}')", [tenant]
            )
            await pgpulse.publish(c, tenant_id=tenant, type="from_python", data={"n": 2})
        async with server.http() as http:
            r = await http.post(
                "/api/notifications",
                json={"message": "hello"},
                headers={"Authorization": f"Bearer {mint(tenant, scopes=['publish'])}"},
            )
            assert r.status_code == 201, r.text
            created = r.json()
            r = await http.post(
                "/api/events",
                json={"topic": "jobs", "type": "from_http", "data": {"n": 4}},
                headers={"Authorization": f"Bearer {mint(tenant, scopes=['publish'])}"},
            )
            assert r.status_code == 201, r.text
            assert r.json() == {"event_id": 4}
        got = await events(ws, 4)
        assert [e["type"] for e in got] == ["from_sql", "from_python", "notification", "from_http"]
        assert [e["id"] for e in got] == [1, 2, 3, 4]
        assert {e["tenant_id"] for e in got} == {tenant}
        assert got[2]["data"] == {"message": "hello", "notification_id": created["id"]}
        assert created["event_id"] == 3 and created["ok"] is True
        await no_more_events(ws_other)


async def test_rolled_back_transaction_delivers_nothing(
    server: ServerHandle, database_url: str, tenant: str
) -> None:
    async with server.connect(mint(tenant)) as ws:
        await until_ready(ws)
        async with await psycopg.AsyncConnection.connect(database_url) as c:
            await pgpulse.publish(c, tenant_id=tenant, type="rolled_back", data={})
            await c.rollback()
            await pgpulse.publish(c, tenant_id=tenant, type="committed", data={})
            await c.commit()
        [first] = await events(ws, 1)
        assert first["type"] == "committed" and first["id"] == 1
        await no_more_events(ws)


async def test_payload_far_beyond_notify_limit_arrives_whole(
    server: ServerHandle, database_url: str, tenant: str
) -> None:
    blob = "x" * 100_000 + "é€𝄞"
    async with server.connect(mint(tenant)) as ws:
        await until_ready(ws)
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
            await pgpulse.publish(c, tenant_id=tenant, type="big", data={"blob": blob, "n": [1, 2]})
        [got] = await events(ws, 1)
        assert got["data"] == {"blob": blob, "n": [1, 2]}


async def test_burst_of_100_arrives_once_each_in_order(
    server: ServerHandle, database_url: str, tenant: str
) -> None:
    async with server.connect(mint(tenant)) as ws, server.http() as http:
        await until_ready(ws)
        token = mint(tenant, scopes=["publish"])

        async def post(i: int) -> int:
            r = await http.post(
                "/api/events",
                json={"type": "burst", "data": {"i": i}},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 201, r.text
            return int(r.json()["event_id"])

        ids = await asyncio.gather(*(post(i) for i in range(100)))
        assert sorted(ids) == list(range(1, 101))
        got = await events(ws, 100)
        assert [e["id"] for e in got] == list(range(1, 101))
        assert sorted(e["data"]["i"] for e in got) == list(range(100))
        await no_more_events(ws)


async def test_alias_route_and_sse_share_the_stream(server: ServerHandle, tenant: str) -> None:
    async with server.connect(mint(tenant), path="/ws/notifications") as ws, server.http() as http:
        await until_ready(ws)
        r = await http.post(
            "/api/notifications",
            json={"message": "m"},
            headers={"Authorization": f"Bearer {mint(tenant, scopes=['publish'])}"},
        )
        assert r.status_code == 201
        [got] = await events(ws, 1)
        assert got["type"] == "notification"
