"""A connection lives no longer than its token: expiry, in-band refresh, operator disconnect."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import websockets

from ..support import (
    ServerHandle,
    ServerProcess,
    closed_with,
    events,
    free_port,
    mint,
    no_more_events,
    recv,
    serve_env,
    until_ready,
)

TTL = 2  # seconds: tokens that expire during the test


async def publish(url: str, tenant: str, topic: str = "notifications", n: int = 1) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
        for i in range(n):
            await c.execute(
                "SELECT pgpulse.publish(%s, %s, 'x', %s)", [tenant, topic, f'{{"i": {i}}}']
            )


def exp_of(token: str) -> float:
    import jwt

    return float(jwt.decode(token, options={"verify_signature": False})["exp"])


async def test_a_socket_is_closed_at_its_tokens_exp(server: ServerHandle, tenant: str) -> None:
    token = mint(tenant, ttl=TTL)
    async with server.connect(token) as ws:
        await until_ready(ws)
        code, reason, at = await closed_with(ws, TTL + 5)
    assert (code, reason) == (1008, "token expired")
    assert exp_of(token) - 0.1 <= at <= exp_of(token) + 1.5


async def test_an_sse_stream_ends_at_its_tokens_exp(server: ServerHandle, tenant: str) -> None:
    token = mint(tenant, ttl=TTL)
    async with server.http() as http, http.stream("GET", "/sse", params={"token": token}) as r:
        assert r.status_code == 200
        async with asyncio.timeout(TTL + 5):
            async for _ in r.aiter_bytes():
                pass  # the stream ends by itself
    assert exp_of(token) - 0.1 <= time.time() <= exp_of(token) + 1.5


async def test_refresh_keeps_the_socket_past_the_first_exp(
    server: ServerHandle, tenant: str
) -> None:
    url = server.runtime.database_url
    first = mint(tenant, user="ann", ttl=TTL)
    async with server.connect(first) as ws:
        await until_ready(ws)
        await ws.send(f'{{"op": "refresh", "token": "{mint(tenant, user="ann", ttl=60)}"}}')
        reply = await recv(ws)
        assert reply["op"] == "refreshed" and reply["exp"] > exp_of(first)
        await asyncio.sleep(max(0.0, exp_of(first) - time.time()) + 1.0)
        await publish(url, tenant)
        assert len(await events(ws, 1)) == 1  # still open, still delivering


async def test_refresh_to_another_tenant_or_user_is_refused(
    server: ServerHandle, tenant: str
) -> None:
    first = mint(tenant, user="ann", ttl=TTL)
    refused = {
        "another tenant": mint(tenant + "-other", user="ann", ttl=60),
        "another user": mint(tenant, user="bob", ttl=60),
        "no user": mint(tenant, ttl=60),
        "garbage": "not-a-jwt",
        "expired": mint(tenant, user="ann", ttl=-60),
    }
    async with server.connect(first) as ws:
        await until_ready(ws)
        for name, token in refused.items():
            await ws.send(f'{{"op": "refresh", "token": "{token}"}}')
            reply = await recv(ws)
            assert reply["op"] == "error" and "refresh refused" in reply["message"], name
        await ws.send('{"op": "refresh"}')
        assert (await recv(ws))["op"] == "error"
        # The first token still rules: the socket closes at its exp.
        code, reason, _ = await closed_with(ws, TTL + 5)
    assert (code, reason) == (1008, "token expired")


async def test_refresh_may_narrow_topics_never_widen(server: ServerHandle, tenant: str) -> None:
    url = server.runtime.database_url
    async with server.connect(mint(tenant, topics=["a", "b"])) as ws:
        await until_ready(ws)
        await ws.send(f'{{"op": "refresh", "token": "{mint(tenant, topics=["a"])}"}}')
        reply = await recv(ws)
        assert reply["op"] == "refreshed" and reply["topics"] == ["a"], reply
        await publish(url, tenant, "b")
        await publish(url, tenant, "a")
        got = await events(ws, 1)
        assert got[0]["topic"] == "a"
        # A wider token does not bring "b" back.
        await ws.send(f'{{"op": "refresh", "token": "{mint(tenant)}"}}')
        reply = await recv(ws)
        assert reply["op"] == "refreshed" and reply["topics"] == ["a"], reply
        await publish(url, tenant, "b")
        await no_more_events(ws)
        # A token allowing none of the connection's topics is refused.
        await ws.send(f'{{"op": "refresh", "token": "{mint(tenant, topics=["z"])}"}}')
        assert (await recv(ws))["op"] == "error"


@pytest.fixture
def two_nodes(database_url: str, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    nodes = [
        ServerProcess([], serve_env(database_url, tmp_path / f"n{i}"), free_port())
        for i in range(2)
    ]
    try:
        for node in nodes:
            node.wait_ready()
        yield nodes
    finally:
        for node in nodes:
            node.stop()
            node.close()


async def test_disconnect_closes_a_users_sockets_on_every_node(
    two_nodes: list[ServerProcess], database_url: str, tenant: str
) -> None:
    async def ready(node: ServerProcess, user: str) -> websockets.ClientConnection:
        ws = await websockets.connect(node.ws_url(mint(tenant, user=user)), open_timeout=10)
        await until_ready(ws)
        return ws

    ann = [await ready(node, "ann") for node in two_nodes]
    bob = [await ready(node, "bob") for node in two_nodes]
    try:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
            await c.execute("SELECT pgpulse.disconnect(%s, %s)", [tenant, "ann"])
            for ws in ann:
                code, reason, _ = await closed_with(ws, 10)
                assert (code, reason) == (1008, "disconnected by the operator")
            for ws in bob:  # another user of the tenant is untouched
                await ws.send('{"op": "ping"}')
                assert await recv(ws) == {"op": "pong"}
            await c.execute("SELECT pgpulse.disconnect(%s)", [tenant])  # the whole tenant
            for ws in bob:
                code, _, _ = await closed_with(ws, 10)
                assert code == 1008
            with pytest.raises(psycopg.errors.InvalidParameterValue):
                await c.execute("SELECT pgpulse.disconnect('')")
    finally:
        for ws in ann + bob:
            await ws.close()
