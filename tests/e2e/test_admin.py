"""The admin API: admin tokens only, and the node registry seen through it.

Every node in these tests is real: in-process servers, a ``pgpulse serve``
child process (killed to make it go silent) and a job worker, all writing
their rows of ``pgpulse.nodes`` in the test database.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest

from pgpulse import Worker
from pgpulse.nodes import STALE_INTERVALS

from ..jobs_support import running
from ..support import (
    SECRET,
    TIMEOUT,
    ServerHandle,
    ServerProcess,
    closed_with,
    events,
    free_port,
    mint,
    serve_env,
    start_server,
    until_ready,
)

BEAT = 0.2  # seconds: heartbeats this fast make "down" a matter of a second
ADMIN_PATHS = [
    ("GET", "/api/admin/overview", None),
    ("GET", "/api/admin/tenants", None),
    ("GET", "/api/admin/history?tenant=acme", None),
    ("POST", "/api/admin/tokens", {"tenant_id": "acme"}),
    ("POST", "/api/admin/disconnect", {"tenant_id": "acme"}),
]


@pytest.fixture
async def node(database_url: str, tmp_path: Path) -> AsyncIterator[ServerHandle]:
    async with start_server(database_url, tmp_path, node_heartbeat_interval=BEAT) as handle:
        yield handle


def admin_token() -> str:
    return mint("*", scopes=["admin"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def admin_get(server: ServerHandle, path: str, **params: Any) -> Any:
    async with server.http() as http:
        r = await http.get(path, params=params, headers=bearer(admin_token()))
    assert r.status_code == 200, r.text
    return r.json()


async def until(
    server: ServerHandle,
    check: Callable[[Any], bool],
    path: str = "/api/admin/overview",
    **params: Any,
) -> Any:
    """The first answer of ``path`` that passes ``check``; nodes report on their own beat."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            body = await admin_get(server, path, **params)
            if check(body):
                return body
            await asyncio.sleep(BEAT / 2)


def nodes_of(overview: Any, pid: int, kind: str = "server") -> list[dict[str, Any]]:
    return [n for n in overview["nodes"] if n["pid"] == pid and n["kind"] == kind]


async def test_the_admin_api_needs_an_admin_token_in_the_header(
    node: ServerHandle, tenant: str
) -> None:
    refused = {
        "no token": ({}, 401),
        "malformed": (bearer("not-a-jwt"), 401),
        "wrong secret": (
            bearer(
                jwt.encode(
                    {"tenant_id": "*", "scope": "admin", "exp": 2**31},
                    "another-secret-0123456789abcdef-0123456789",
                    algorithm="HS256",
                )
            ),
            401,
        ),
        "a tenant's token": (bearer(mint(tenant, scopes=["publish"])), 403),
        "a tenant's user": (bearer(mint(tenant, "alice")), 403),
    }
    async with node.http() as http:
        for method, path, body in ADMIN_PATHS:
            for name, (headers, status) in refused.items():
                r = await http.request(method, path, json=body, headers=headers)
                assert r.status_code == status, (path, name, r.text)
                assert r.json()["detail"], (path, name)
            # In the query string an admin token would land in access logs: not accepted there.
            sep = "&" if "?" in path else "?"
            r = await http.request(method, f"{path}{sep}token={admin_token()}", json=body)
            assert r.status_code == 401, (path, r.text)
            r = await http.request(method, path, json=body, headers=bearer(admin_token()))
            assert r.status_code in (200, 201, 202), (path, r.text)
        r = await http.get("/api/admin/overview", headers=bearer(mint(tenant, scopes=["publish"])))
        assert "admin scope" in r.json()["detail"]


async def test_overview_shows_this_node_its_connections_and_rates(
    node: ServerHandle, tenant: str
) -> None:
    other = tenant + "-b"
    token = mint(tenant, scopes=["publish"])
    async with (
        node.connect(token) as ws1,
        node.connect(token) as ws2,
        node.http() as http,
        http.stream("GET", "/sse", params={"token": mint(other)}) as sse,
    ):
        assert sse.status_code == 200
        await until_ready(ws1)
        await until_ready(ws2)

        def counted(body: Any) -> bool:
            top = {t["tenant_id"]: (t["ws"], t["sse"]) for t in body["top_tenants"]}
            return top.get(tenant) == (2, 0) and top.get(other) == (0, 1)

        body = await until(node, counted)
        [me] = nodes_of(body, os.getpid())
        assert me["up"] and me["ready"]
        assert me["stats"]["listener"] == {"connected": True, "reconnects": 0}
        assert me["stats"]["connections"]["ws"] >= 2 and me["stats"]["connections"]["sse"] >= 1
        assert body["totals"]["servers_up"] >= 1

        for i in range(20):
            r = await http.post(
                "/api/events", json={"type": "load", "data": {"i": i}}, headers=bearer(token)
            )
            assert r.status_code == 201, r.text
        for ws in (ws1, ws2):  # read: a client that stops reading holds up its own close
            assert [e["data"]["i"] for e in await events(ws, 20)] == list(range(20))

        # Within a few beats the series holds the load: 20 events, 40 deliveries.
        # Rates times the time between samples add up to counts (beats may slip).
        def total(series: list[dict[str, Any]], key: str) -> float:
            return sum((b[key] or 0) * (b["t"] - a["t"]) for a, b in itertools.pairwise(series))

        def loaded(body: Any) -> bool:
            series = body["series"]
            return total(series, "events_per_s") >= 18 and total(series, "deliveries_per_s") >= 36

        body = await until(node, loaded)
        [me] = nodes_of(body, os.getpid())
        assert me["stats"]["p99_ms"] is not None or any(
            s["p99_ms"] is not None for s in body["series"]
        )
        assert body["totals"]["slow_consumer_closes"] >= 0


async def test_a_killed_server_goes_down_and_its_row_is_removed_later(
    node: ServerHandle, database_url: str, tmp_path: Path
) -> None:
    env = serve_env(database_url, tmp_path / "child", node_heartbeat_interval=BEAT)
    child = ServerProcess([], env, free_port())
    try:
        await asyncio.to_thread(child.wait_ready, 30)
        pid = child.proc.pid
        # Up at its first beat, ready once its listener is connected too.
        body = await until(node, lambda b: any(n["ready"] for n in nodes_of(b, pid)))
        [row] = nodes_of(body, pid)
        assert row["up"] and row["stats"]["listener"]["connected"]
        os.killpg(pid, signal.SIGKILL)  # no clean stop: its row stays, and goes silent
        await asyncio.to_thread(child.proc.wait, TIMEOUT)
        body = await until(node, lambda b: [n["up"] for n in nodes_of(b, pid)] == [False])
        [row] = nodes_of(body, pid)
        assert not row["ready"] and row["heartbeat_age_s"] >= BEAT * STALE_INTERVALS - 0.1
        assert body["totals"]["nodes_down"] >= 1
        # Ten minutes later (moved back in time here), a live node's heartbeat removes it.
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
            await c.execute(
                "UPDATE pgpulse.nodes SET heartbeat_at = now() - interval '11 minutes' "
                "WHERE id = %s",
                [row["id"]],
            )
        await until(node, lambda b: nodes_of(b, pid) == [])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.proc.pid, signal.SIGKILL)
        child.proc.wait(TIMEOUT)
        child.close()


async def test_a_clean_stop_removes_the_nodes_row(database_url: str, tmp_path: Path) -> None:
    async with start_server(database_url, tmp_path, node_heartbeat_interval=BEAT) as server:
        body = await until(server, lambda b: bool(nodes_of(b, os.getpid())))
        ids = {n["id"] for n in nodes_of(body, os.getpid())}
    async with await psycopg.AsyncConnection.connect(database_url) as c:
        cur = await c.execute("SELECT count(*) FROM pgpulse.nodes WHERE id = ANY(%s)", [list(ids)])
        assert await cur.fetchone() == (0,)


async def test_a_job_worker_registers_with_its_name(node: ServerHandle, database_url: str) -> None:
    worker = Worker({"noop-admin-test": _noop}, heartbeat_interval=BEAT)
    async with running(worker, database_url):
        body = await until(node, lambda b: any(n["id"] == worker.name for n in b["nodes"]))
        [row] = [n for n in body["nodes"] if n["id"] == worker.name]
        assert row["kind"] == "worker" and row["up"]
        await until(
            node,
            lambda b: any(n["id"] == worker.name and n["ready"] for n in b["nodes"]),
        )
        assert row["stats"]["kinds"] == ["noop-admin-test"]
        assert body["totals"]["workers_up"] >= 1
    body = await admin_get(node, "/api/admin/overview")
    assert all(n["id"] != worker.name for n in body["nodes"])


async def _noop(job: Any) -> None:
    return None


async def test_tenants_are_searched_paged_and_sorted(
    node: ServerHandle, database_url: str, tenant: str
) -> None:
    names = sorted(f"{tenant}-{i:02d}" for i in range(30))
    async with await psycopg.AsyncConnection.connect(database_url) as c, c.transaction():
        for name in names:  # in tenant order, as the guarantees ask of multi-tenant publishers
            await c.execute("SELECT pgpulse.publish(%s, 'n', 'seed', '{}')", [name])

    by_name = await admin_get(
        node, "/api/admin/tenants", search=tenant.upper(), per_page=10, page=2, sort="name"
    )
    assert by_name["total"] == 30
    assert [t["tenant_id"] for t in by_name["tenants"]] == names[10:20]
    assert all(t["last_event_id"] == 1 and t["ws"] == 0 for t in by_name["tenants"])
    past_the_end = await admin_get(node, "/api/admin/tenants", search=tenant, per_page=10, page=4)
    assert past_the_end["total"] == 30 and past_the_end["tenants"] == []

    # The busiest come first: one socket puts the last tenant on top.
    async with node.connect(mint(names[-1])) as ws:
        await until_ready(ws)
        body = await until(
            node,
            lambda b: b["tenants"][0]["tenant_id"] == names[-1],
            "/api/admin/tenants",
            search=tenant,
            per_page=5,
        )
        assert body["tenants"][0]["ws"] == 1

    async with node.http() as http:
        for params in ({"per_page": 0}, {"page": 0}, {"sort": "size"}, {"search": "x" * 201}):
            r = await http.get("/api/admin/tenants", params=params, headers=bearer(admin_token()))
            assert r.status_code == 422, (params, r.text)


async def test_history_pages_a_tenants_events_newest_first(
    node: ServerHandle, database_url: str, tenant: str
) -> None:
    async with await psycopg.AsyncConnection.connect(database_url) as c, c.transaction():
        for i, (topic, user) in enumerate(
            [("a", None), ("a", "alice"), ("b", None), ("a", "bob"), ("a", None)], 1
        ):
            await c.execute(
                "SELECT pgpulse.publish(%s, %s, 'h', %s::jsonb, %s)",
                [tenant, topic, f'{{"i": {i}}}', user],
            )

    async def page(**params: Any) -> tuple[list[int], int | None]:
        body = await admin_get(node, "/api/admin/history", tenant=tenant, **params)
        return [e["id"] for e in body["events"]], body["next_before"]

    assert await page(limit=2) == ([5, 4], 4)
    assert await page(limit=2, before=4) == ([3, 2], 2)
    assert await page(limit=2, before=2) == ([1], None)
    assert await page(topic="b") == ([3], None)
    assert await page(user="alice") == ([5, 3, 2, 1], None)  # as alice's sockets see them
    body = await admin_get(node, "/api/admin/history", tenant=tenant, limit=1)
    [frame] = body["events"]
    assert frame["tenant_id"] == tenant and frame["data"] == {"i": 5} and frame["ts"]
    async with node.http() as http:
        for params in (
            {},
            {"tenant": ""},
            {"tenant": tenant, "limit": 0},
            {"tenant": tenant, "before": "x"},
        ):
            r = await http.get("/api/admin/history", params=params, headers=bearer(admin_token()))
            assert r.status_code == 422, (params, r.text)


async def test_minted_tokens_belong_to_one_tenant_and_never_carry_admin(
    node: ServerHandle, tenant: str
) -> None:
    async with node.http() as http:
        r = await http.post(
            "/api/admin/tokens",
            json={"tenant_id": tenant, "user_id": "alice", "topics": ["a", "ai_jobs"], "ttl": 60},
            headers=bearer(admin_token()),
        )
        assert r.status_code == 201, r.text
        minted = r.json()
        claims = jwt.decode(minted["token"], SECRET, algorithms=["HS256"])
        assert claims["tenant_id"] == tenant and claims["sub"] == "alice"
        assert claims["scope"] == "publish jobs" and claims["topics"] == ["a", "ai_jobs"]
        assert 55 <= claims["exp"] - claims["iat"] <= 60 and minted["expires_in"] == 60

        r = await http.get("/api/admin/overview", headers=bearer(minted["token"]))
        assert r.status_code == 403
        async with node.connect(minted["token"], topics="a") as ws:
            await until_ready(ws)
            r = await http.post(
                "/api/events",
                json={"topic": "a", "type": "t", "data": {}, "user_id": "alice"},
                headers=bearer(minted["token"]),
            )
            assert r.status_code == 201, r.text
            [frame] = await events(ws, 1)
            assert frame["user_id"] == "alice" and frame["tenant_id"] == tenant

        for body in (
            {},
            {"tenant_id": ""},
            {"tenant_id": tenant, "ttl": 86400},
            {"tenant_id": tenant, "scope": "admin"},
            {"tenant_id": tenant, "topics": [""]},
        ):
            r = await http.post("/api/admin/tokens", json=body, headers=bearer(admin_token()))
            assert r.status_code == 422, (body, r.text)
        r = await http.post("/api/admin/tokens", content=b"{", headers=bearer(admin_token()))
        assert r.status_code == 422


async def publish(database_url: str, *tenants: str) -> None:
    """One tenant-wide event to each tenant, from SQL."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        for tenant in tenants:
            await c.execute("SELECT pgpulse.publish(%s, 'notifications', 'after', '{}')", [tenant])


async def disconnect(server: ServerHandle, body: Any) -> Any:
    async with server.http() as http:
        r = await http.post("/api/admin/disconnect", json=body, headers=bearer(admin_token()))
    assert r.status_code == 202, r.text
    return r.json()


DISCONNECTED = (1008, "disconnected by the operator")


async def test_disconnect_closes_one_users_sockets_and_no_one_elses(
    node: ServerHandle, database_url: str, tenant: str
) -> None:
    other = tenant + "-b"
    async with (
        node.connect(mint(tenant, "ann")) as ann,
        node.connect(mint(tenant, "ann", topics=["x"])) as ann_again,
        node.connect(mint(tenant, "bob")) as bob,
        node.connect(mint(tenant)) as tenant_wide,
        node.connect(mint(other, "ann")) as ann_elsewhere,  # the same user id, another tenant
    ):
        for ws in (ann, ann_again, bob, tenant_wide, ann_elsewhere):
            await until_ready(ws)
        answer = await disconnect(node, {"tenant_id": tenant, "user_id": "ann"})
        assert answer == {"tenant_id": tenant, "user_id": "ann"}
        for ws in (ann, ann_again):
            code, reason, _ = await closed_with(ws)
            assert (code, reason) == DISCONNECTED
        # This node has acted: the others are still open, and still delivered to.
        await publish(database_url, tenant, other)
        for ws, owner in ((bob, tenant), (tenant_wide, tenant), (ann_elsewhere, other)):
            [frame] = await events(ws, 1)
            assert frame["tenant_id"] == owner and frame["type"] == "after"


async def test_disconnect_without_a_user_closes_the_whole_tenant(
    node: ServerHandle, database_url: str, tenant: str
) -> None:
    other = tenant + "-b"
    async with (
        node.connect(mint(tenant, "ann")) as ann,
        node.connect(mint(tenant)) as tenant_wide,
        node.connect(mint(other)) as elsewhere,
        node.http() as http,
        http.stream("GET", "/sse", params={"token": mint(tenant, "bob")}) as sse,
    ):
        assert sse.status_code == 200
        lines = sse.aiter_lines()
        async with asyncio.timeout(TIMEOUT):
            async for line in lines:
                if '"op":"ready"' in line.replace(" ", ""):
                    break
        for ws in (ann, tenant_wide, elsewhere):
            await until_ready(ws)
        answer = await disconnect(node, {"tenant_id": tenant, "user_id": None})
        assert answer == {"tenant_id": tenant, "user_id": None}
        for ws in (ann, tenant_wide):
            code, reason, _ = await closed_with(ws)
            assert (code, reason) == DISCONNECTED
        async with asyncio.timeout(TIMEOUT):
            async for _ in lines:
                pass  # the stream ends
        await publish(database_url, other)
        [frame] = await events(elsewhere, 1)
        assert frame["tenant_id"] == other


async def test_disconnect_refuses_bad_names_and_disconnects_no_one(
    node: ServerHandle, database_url: str, tenant: str
) -> None:
    async with node.connect(mint(tenant, "ann")) as ws, node.http() as http:
        await until_ready(ws)
        for body in (
            {},
            {"user_id": "ann"},
            {"tenant_id": ""},
            {"tenant_id": "x" * 201},
            {"tenant_id": "a\x00b"},
            {"tenant_id": tenant, "user_id": ""},
            {"tenant_id": tenant, "user_id": "ann\x00"},
            {"tenant_id": tenant, "user_id": 7},
            {"tenant_id": tenant, "users": ["ann"]},
            [tenant],
        ):
            r = await http.post("/api/admin/disconnect", json=body, headers=bearer(admin_token()))
            assert r.status_code == 422, (body, r.text)
            detail = r.json()["detail"]
            assert isinstance(detail, str) and detail and "\n" not in detail, (body, detail)
        r = await http.post("/api/admin/disconnect", content=b"{", headers=bearer(admin_token()))
        assert r.status_code == 422
        r = await http.post(
            "/api/admin/disconnect",
            content=b'{"tenant_id": "' + b"x" * 10_000 + b'"}',
            headers=bearer(admin_token()),
        )
        assert r.status_code == 413
        for headers, status in ((bearer(mint(tenant, "ann")), 403), ({}, 401)):
            r = await http.post(
                "/api/admin/disconnect", json={"tenant_id": tenant}, headers=headers
            )
            assert r.status_code == status, r.text
        await publish(database_url, tenant)  # still open
        [frame] = await events(ws, 1)
        assert frame["type"] == "after"


async def test_admin_paths_are_in_the_openapi_description(node: ServerHandle) -> None:
    async with node.http() as http:
        spec = (await http.get("/openapi.json")).json()
    assert {
        "/api/admin/overview",
        "/api/admin/tenants",
        "/api/admin/history",
        "/api/admin/tokens",
        "/api/admin/disconnect",
    } <= set(spec["paths"])
    post = spec["paths"]["/api/admin/disconnect"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["tenant_id"] and set(schema["properties"]) == {
        "tenant_id",
        "user_id",
    }
    assert "202" in post["responses"]
