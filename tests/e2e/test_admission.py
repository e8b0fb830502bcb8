"""Scopes on writes, the topics claim on reads, caps and a connect rate on streams."""

from __future__ import annotations

from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from ..support import ServerHandle, mint, recv, start_server, until_ready


async def test_writes_need_their_scope(server: ServerHandle, tenant: str) -> None:
    reader = {"Authorization": f"Bearer {mint(tenant)}"}
    publisher = {"Authorization": f"Bearer {mint(tenant, scopes=['publish'])}"}
    jobs = {"Authorization": f"Bearer {mint(tenant, scopes=['jobs'])}"}
    async with server.http() as http:
        r = await http.post("/api/notifications", json={"message": "hi"}, headers=reader)
        assert r.status_code == 403 and "publish" in r.json()["detail"]
        r = await http.post("/api/notifications", json={"message": "hi"}, headers=jobs)
        assert r.status_code == 403
        r = await http.post("/api/jobs", json={"kind": "echo"}, headers=publisher)
        assert r.status_code == 403 and "jobs" in r.json()["detail"]
        r = await http.post("/api/jobs", json={"kind": "echo"}, headers=reader)
        assert r.status_code == 403
        r = await http.get("/api/notifications", headers=reader)
        assert r.json() == []  # nothing was stored by the refused writes
        r = await http.post("/api/notifications", json={"message": "hi"}, headers=publisher)
        assert r.status_code == 201
        r = await http.post("/api/jobs", json={"kind": "echo"}, headers=jobs)
        assert r.status_code == 202


async def test_listing_notifications_honours_the_topics_claim(
    server: ServerHandle, tenant: str
) -> None:
    async with server.http() as http:
        for topics, status in ((["orders"], 403), (["orders", "notifications"], 200), (None, 200)):
            token = mint(tenant, topics=topics)
            r = await http.get("/api/notifications", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == status, topics


async def refused(server: ServerHandle, token: str) -> tuple[int, str]:
    async with server.connect(token) as ws:
        with pytest.raises(ConnectionClosed) as info:
            await recv(ws)
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


async def test_connection_caps_per_user_and_per_tenant(
    database_url: str, tmp_path: Path, tenant: str
) -> None:
    async with start_server(
        database_url, tmp_path, max_connections_per_user=2, max_connections_per_tenant=3
    ) as srv:
        ann = [await srv.connect(mint(tenant, user="ann")).__aenter__() for _ in range(2)]
        for ws in ann:
            await until_ready(ws)
        code, reason = await refused(srv, mint(tenant, user="ann"))
        assert code == 1013 and "user" in reason
        async with srv.http() as http:
            r = await http.get("/sse", params={"token": mint(tenant, user="ann")})
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
        async with srv.connect(mint(tenant, user="bob")) as bob:
            await until_ready(bob)
            code, reason = await refused(srv, mint(tenant, user="cid"))
            assert code == 1013 and "tenant" in reason
            async with srv.connect(mint(tenant + "-other", user="ann")) as elsewhere:
                await until_ready(elsewhere)  # caps are per tenant
        await ann[0].close()
        async with srv.connect(mint(tenant, user="ann")) as again:  # a slot was freed
            assert (await until_ready(again))[-1]["op"] == "ready"
        await ann[1].close()


async def test_a_connect_rate_per_tenant(database_url: str, tmp_path: Path, tenant: str) -> None:
    async with start_server(database_url, tmp_path, connect_rate_per_tenant=1) as srv:
        outcomes = []
        for _ in range(10):  # far faster than 1/s, past the burst of 5
            async with srv.connect(mint(tenant)) as ws:
                try:
                    outcomes.append((await recv(ws))["op"])
                except ConnectionClosed as exc:
                    assert exc.rcvd is not None and exc.rcvd.code == 1013
                    assert "new connections" in exc.rcvd.reason
                    outcomes.append("refused")
        assert 5 <= outcomes.count("ready") <= 6 and outcomes[-1] == "refused", outcomes
        async with srv.connect(mint(tenant + "-b")) as ws:  # another tenant is not held up
            assert (await until_ready(ws))[-1]["op"] == "ready"
