"""``POST /api/events``: payloads whole up to the limit, 413 past it, precise 422s."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import psycopg
import websockets

from ..support import TIMEOUT, ServerHandle, events, mint, no_more_events, start_server, until_ready

MiB = 1024 * 1024


async def stored(url: str, tenant: str) -> int:
    async with await psycopg.AsyncConnection.connect(url) as c:
        cur = await c.execute("SELECT count(*) FROM pgpulse.events WHERE tenant_id = %s", [tenant])
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def test_payload_just_under_the_default_limit_arrives_whole(
    server: ServerHandle, tenant: str
) -> None:
    auth = {"Authorization": f"Bearer {mint(tenant, scopes=['publish'])}"}
    blob = "é" * 200_000 + "x" * (MiB - 200_000 * 2 - 1000)  # about 1 MiB - 1000 bytes of UTF-8
    body = orjson.dumps({"type": "big", "data": {"blob": blob}})
    assert MiB - 1100 < len(body) <= MiB
    url = f"{server.ws_url}/ws?token={mint(tenant)}"
    async with websockets.connect(url, max_size=None, open_timeout=TIMEOUT) as ws:
        await until_ready(ws)
        async with server.http() as http:
            r = await http.post("/api/events", content=body, headers=auth)
            assert r.status_code == 201, r.text
            too_big = orjson.dumps({"type": "big", "data": {"blob": blob + "y" * 2000}})
            r = await http.post("/api/events", content=too_big, headers=auth)
            assert r.status_code == 413
            assert f"limit is {MiB} bytes" in r.json()["detail"]

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length to trust
                for i in range(0, len(too_big), 64 * 1024):
                    yield too_big[i : i + 64 * 1024]

            r = await http.post("/api/events", content=chunks(), headers=auth)
            assert r.status_code == 413 and str(MiB) in r.json()["detail"]
        [got] = await events(ws, 1)
        assert got["data"]["blob"] == blob
        await no_more_events(ws, 0.2)
    assert await stored(server.runtime.database_url, tenant) == 1


async def test_the_limit_is_configurable(database_url: str, tmp_path: Path, tenant: str) -> None:
    auth = {"Authorization": f"Bearer {mint(tenant, scopes=['publish'])}"}
    async with (
        start_server(database_url, tmp_path, max_payload_bytes=4096) as srv,
        srv.http() as http,
    ):
        r = await http.post("/api/events", json={"type": "t", "data": "x" * 4000}, headers=auth)
        assert r.status_code == 201, r.text
        r = await http.post("/api/events", json={"type": "t", "data": "x" * 4100}, headers=auth)
        assert r.status_code == 413 and "4096" in r.json()["detail"]


async def test_bad_shapes_get_422_naming_the_field(server: ServerHandle, tenant: str) -> None:
    auth = {"Authorization": f"Bearer {mint(tenant, scopes=['publish'])}"}
    cases: list[tuple[object, str]] = [
        ({"data": {}}, "type: Field required"),
        ({"type": 5, "data": {}}, "type: Input should be a valid string"),
        ({"type": "", "data": {}}, "type: String should have at least 1 character"),
        ({"type": "t" * 201, "data": {}}, "type: String should have at most 200 characters"),
        ({"type": "t", "data": {}, "topic": None}, "topic: Input should be a valid string"),
        ({"type": "t", "data": {}, "user_id": ""}, "user_id: String should have at least 1"),
        ({"type": "t", "data": {}, "tenant_id": "other"}, "tenant_id: Extra inputs"),
        ({"type": "t"}, "data: Field required"),
        ([{"type": "t", "data": {}}], "body: Input should be a valid dictionary"),
        ("just a string", "body: Input should be a valid dictionary"),
        ({"type": "a\u0000b", "data": {}}, "type must not contain NUL"),
        ({"type": "t", "data": {"k": "a\u0000b"}}, "data must not contain NUL"),
        ({"type": "t", "data": {}, "topic": "x\u0000"}, "topic must not contain NUL"),
    ]
    async with server.http() as http:
        for body, expected in cases:
            r = await http.post("/api/events", json=body, headers=auth)
            assert r.status_code == 422, (body, r.text)
            assert expected in r.json()["detail"], (body, r.json())
        # Several problems are all named at once.
        r = await http.post("/api/events", json={"type": 1, "data": {}, "x": 1}, headers=auth)
        assert r.status_code == 422
        assert "type: " in r.json()["detail"] and "x: Extra inputs" in r.json()["detail"]
        r = await http.post("/api/events", content=b"", headers=auth)
        assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
        r = await http.post("/api/events", content=b'{"type": "t", "data": }', headers=auth)
        assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
    assert await stored(server.runtime.database_url, tenant) == 0


async def test_browser_and_service_publishes_get_the_same_answers(
    database_url: str, tmp_path: Path, tenant: str
) -> None:
    """The direct route sits inside the CORS layer: a browser's cross-origin request
    gets the same answers as a service's, plus the CORS headers, case by case."""
    origin = "https://app.example"
    publisher = {"Authorization": f"Bearer {mint(tenant, scopes=['publish'])}"}
    reader = {"Authorization": f"Bearer {mint(tenant)}"}
    cases: list[tuple[dict[str, str], bytes]] = [
        (publisher, b'{"type": "t", "data": {"n": 1}}'),
        ({}, b'{"type": "t", "data": {}}'),
        ({"Authorization": "Basic abc"}, b'{"type": "t", "data": {}}'),
        ({"Authorization": "Bearer not-a-jwt"}, b'{"type": "t", "data": {}}'),
        (reader, b'{"type": "t", "data": {}}'),
        (publisher, b'{"type": "t", "data": '),
        (publisher, b'{"data": {}, "extra": 1}'),
        (publisher, b'{"type": "t", "data": "' + b"x" * 5000 + b'"}'),
    ]
    async with (
        start_server(
            database_url, tmp_path, allowed_origins=[origin], max_payload_bytes=4096
        ) as srv,
        srv.http() as http,
    ):
        answers = []
        for headers, body in cases:
            pair = []
            for extra in ({}, {"Origin": origin}):
                r = await http.post("/api/events", content=body, headers={**headers, **extra})
                pair.append((r.status_code, r.json(), r.headers.get("www-authenticate")))
                assert ("access-control-allow-origin" in r.headers) == bool(extra)
            service, browser = pair
            if service[0] == 201:  # each stored its own event
                assert browser[1]["event_id"] == service[1]["event_id"] + 1
                browser = (browser[0], service[1], browser[2])
            assert service == browser, (headers, body[:40])
            answers.append(service[0])
        assert answers == [201, 401, 401, 401, 403, 422, 422, 413]
    assert await stored(srv.runtime.database_url, tenant) == 2


BAD_EVENTS = [
    {"type": "x\u0000y", "data": {}},  # NUL: PostgreSQL's text refuses it
    {"type": "x", "data": {"s": "a\u0000b"}},  # NUL inside jsonb
    {"type": "x", "topic": "t" * 201, "data": {}},
    {"type": "", "data": {}},
    {"data": {}},
]


async def test_a_bad_event_never_fails_the_valid_ones_beside_it(
    server: ServerHandle, tenant: str
) -> None:
    """Round after round, one bad event is posted concurrently with 60 valid ones."""
    rounds, valid = 10, 60
    auth = {"Authorization": f"Bearer {mint(tenant, scopes=['publish'])}"}
    async with server.connect(mint(tenant)) as ws, server.http() as http:
        await until_ready(ws)
        for n in range(rounds):
            bad = BAD_EVENTS[n % len(BAD_EVENTS)]
            bodies = [{"type": "ok", "data": {"round": n, "i": i}} for i in range(valid)]
            bodies.insert(n * 7 % valid, bad)
            answers = await asyncio.gather(
                *(http.post("/api/events", json=body, headers=auth) for body in bodies)
            )
            statuses = [r.status_code for r in answers]
            assert statuses.count(201) == valid, statuses
            assert statuses.count(422) == 1, statuses
        got = await events(ws, rounds * valid, timeout=30)
        assert [e["id"] for e in got] == list(range(1, rounds * valid + 1))
        assert {(e["data"]["round"], e["data"]["i"]) for e in got} == {
            (n, i) for n in range(rounds) for i in range(valid)
        }
        await no_more_events(ws, 0.2)


async def test_json_null_data_is_stored_and_delivered(server: ServerHandle, tenant: str) -> None:
    auth = {"Authorization": f"Bearer {mint(tenant, scopes=['publish'])}"}
    async with server.connect(mint(tenant)) as ws, server.http() as http:
        await until_ready(ws)
        r = await http.post("/api/events", json={"type": "x", "data": None}, headers=auth)
        assert r.status_code == 201, r.text
        [got] = await events(ws, 1)
        assert got["id"] == r.json()["event_id"] and got["data"] is None
