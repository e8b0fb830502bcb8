"""Bad input gets a clear error and changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import psycopg

from ..support import ServerHandle, mint, recv, until_ready


async def count_events(url: str, tenant: str) -> int:
    async with await psycopg.AsyncConnection.connect(url) as c:
        cur = await c.execute("SELECT count(*) FROM pgpulse.events WHERE tenant_id = %s", [tenant])
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def test_http_errors(server: ServerHandle, tenant: str) -> None:
    auth = {"Authorization": f"Bearer {mint(tenant, scopes=['publish'])}"}
    async with server.http() as http:
        r = await http.post("/api/events", content=b"{not json", headers=auth)
        assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
        r = await http.post("/api/events", json={"type": "", "data": {}}, headers=auth)
        assert r.status_code == 422 and "type" in r.json()["detail"]
        r = await http.post("/api/events", json={"type": "x"}, headers=auth)
        assert r.status_code == 422 and "data" in r.json()["detail"]
        r = await http.post("/api/events", json={"type": "x", "data": 1, "extra": 1}, headers=auth)
        assert r.status_code == 422 and "extra" in r.json()["detail"]
        r = await http.post("/api/events", json=[1, 2], headers=auth)
        assert r.status_code == 422
        big = {"type": "x", "data": "y" * (1024 * 1024)}
        r = await http.post("/api/events", content=orjson.dumps(big), headers=auth)
        assert r.status_code == 413
        r = await http.post(
            "/api/notifications",
            content=b"{oops",
            headers={**auth, "content-type": "application/json"},
        )
        assert r.status_code == 422
        r = await http.post("/api/notifications", json={"msg": "x"}, headers=auth)
        assert r.status_code == 422 and "message" in r.json()["detail"]
        r = await http.get("/api/notifications", params={"limit": "lots"}, headers=auth)
        assert r.status_code == 422
        r = await http.get("/no/such/route")
        assert r.status_code == 404
    assert await count_events(server.runtime.database_url, tenant) == 0


async def test_garbage_websocket_frames_get_errors_and_socket_stays(
    server: ServerHandle, tenant: str
) -> None:
    async with server.connect(mint(tenant)) as ws:
        await until_ready(ws)
        for garbage in ["{nope", "[1,2]", '{"op": 3}', '{"op": "dance"}']:
            await ws.send(garbage)
            frame = await recv(ws)
            assert frame["op"] == "error" and frame["message"], garbage
        await ws.send(b"\x00\x01")
        assert (await recv(ws))["op"] == "error"
        await ws.send('{"op": "ping"}')
        assert await recv(ws) == {"op": "pong"}


async def test_bad_last_event_id_is_refused(server: ServerHandle, tenant: str) -> None:
    import pytest
    from websockets.exceptions import ConnectionClosed

    async with server.connect(mint(tenant), last_event_id="-5") as ws:
        with pytest.raises(ConnectionClosed) as info:
            await recv(ws)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1008
    assert "last_event_id" in info.value.rcvd.reason


def test_database_down_at_start_names_the_url_without_password(tmp_path: object) -> None:
    env = {
        **os.environ,
        "PGPULSE_DATABASE_URL": "postgresql://alice:s3cr3t-pw@127.0.0.1:9/nowhere",
        "PGPULSE_DATA_DIR": str(tmp_path),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "pgpulse", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "127.0.0.1:9/nowhere" in proc.stderr
    assert "s3cr3t-pw" not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def test_cli_bad_json_exits_nonzero_with_one_line(tmp_path: object) -> None:
    env = {**os.environ, "PGPULSE_DATABASE_URL": "postgresql://x@127.0.0.1:9/x"}
    proc = subprocess.run(
        [sys.executable, "-m", "pgpulse", "publish", "acme", "t", "{bad"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "JSON does not parse" in proc.stderr


async def test_cors_only_for_configured_origins(database_url: str, tmp_path: object) -> None:
    from pathlib import Path

    from ..support import start_server

    assert isinstance(tmp_path, Path)
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    async with (
        start_server(database_url, tmp_path, allowed_origins=["https://app.example"]) as srv,
        srv.http() as http,
    ):
        r = await http.options("/api/events", headers=preflight)
        assert r.headers.get("access-control-allow-origin") == "https://app.example"
        r = await http.options(
            "/api/events", headers={**preflight, "Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in r.headers


async def test_abuse_closes_with_1009_or_1008(server: ServerHandle, tenant: str) -> None:
    import pytest
    from websockets.exceptions import ConnectionClosed

    async with server.connect(mint(tenant)) as ws:
        await until_ready(ws)
        await ws.send("x" * (65 * 1024))
        with pytest.raises(ConnectionClosed) as big:
            while True:
                await recv(ws)
    assert big.value.rcvd is not None and big.value.rcvd.code == 1009

    async with server.connect(mint(tenant)) as ws:
        await until_ready(ws)
        for _ in range(500):  # far past the burst allowance of 2 s worth of frames
            await ws.send('{"op": "ping"}')
        pongs = 0
        with pytest.raises(ConnectionClosed) as flood:
            while True:
                assert await recv(ws) == {"op": "pong"}
                pongs += 1
    assert flood.value.rcvd is not None and flood.value.rcvd.code == 1008
    assert "too many" in flood.value.rcvd.reason and pongs < 500


async def test_inputs_the_fuzz_pass_found_get_422(server: ServerHandle, tenant: str) -> None:
    """Each of these once answered 500."""
    auth = {"Authorization": f"Bearer {mint(tenant, scopes=['publish'])}"}
    async with server.http() as http:
        r = await http.get("/api/notifications", params={"before": 2**64}, headers=auth)
        assert r.status_code == 422  # past bigint
        r = await http.post("/api/notifications", json={"message": "a\x00b"}, headers=auth)
        assert r.status_code == 422 and "NUL" in r.json()["detail"]
        # JSON null is a value like any other (it once failed a whole batch): stored as null.
        r = await http.post("/api/events", json={"type": "t", "data": None}, headers=auth)
        assert r.status_code == 201
        r = await http.get("/api/events", params={"topic": "\x00"}, headers=auth)
        assert r.status_code == 422 and "topic" in r.json()["detail"]
    assert await count_events(server.runtime.database_url, tenant) == 1
