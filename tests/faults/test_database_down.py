"""While PostgreSQL is down: clear answers, nothing hangs, and all comes back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from ..support import mint, recv, start_library_app, start_server, until_ready
from .conftest import PrivatePostgres


async def test_requests_during_an_outage_get_retryable_answers(
    private_pg: PrivatePostgres, private_database: str, tmp_path: Path, tenant: str
) -> None:
    token = mint(tenant, scopes=["publish"])
    async with start_server(private_database, tmp_path) as srv, srv.http() as http:
        private_pg.stop()
        try:
            r = await http.post(
                "/api/events",
                json={"type": "x", "data": {}},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert "database unavailable" in r.json()["detail"]
            assert (await http.get("/readyz")).status_code == 503
            async with srv.connect(token) as ws:
                with pytest.raises(ConnectionClosed) as info:
                    await recv(ws, 15)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1013
            assert "database unavailable" in info.value.rcvd.reason
        finally:
            private_pg.start()
        async with srv.connect(token) as ws:
            await until_ready(ws)
            r = await http.post(
                "/api/events",
                json={"type": "back", "data": {}},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 201, r.text
            frame = await recv(ws)
            assert frame["type"] == "back"


LONG_OUTAGE = 17.0  # seconds: past the fourth of a doubling backoff from 1 s (1+2+4+8 = 15)


async def test_the_first_request_after_a_long_outage_succeeds(
    private_pg: PrivatePostgres, private_database: str, tmp_path: Path, tenant: str
) -> None:
    """The pool is back as soon as PostgreSQL is, however long it was away.

    A pool that spaced its reconnection attempts ever further apart would sit
    out its next delay (16 s here) with the database long back, answering
    503 to everyone. Requests keep coming during the outage, as in production.
    """
    token = mint(tenant, scopes=["publish"])
    headers = {"Authorization": f"Bearer {token}"}
    loop = asyncio.get_running_loop()
    async with start_server(private_database, tmp_path) as srv, srv.http() as http:
        private_pg.stop()
        try:
            back_at = loop.time() + LONG_OUTAGE
            refused = 0
            while loop.time() < back_at:
                r = await http.post("/api/events", json={"type": "x", "data": {}}, headers=headers)
                assert r.status_code == 503, r.text
                refused += 1
            assert refused >= 3
        finally:
            private_pg.start()
        r = await http.post("/api/events", json={"type": "back", "data": {}}, headers=headers)
        assert r.status_code == 201, r.text
        async with srv.connect(token) as ws:
            await until_ready(ws)


async def test_library_mode_answers_an_outage_as_serve_does(
    private_pg: PrivatePostgres, private_database: str, tmp_path: Path, tenant: str
) -> None:
    """In an app's own server there is no app-wide handler of pgpulse's: still 503, not 500."""
    caller = {"X-Tenant": tenant}
    async with start_library_app(private_database, tmp_path) as app, app.http() as http:
        private_pg.stop()
        try:
            for method, path in (("POST", "notifications"), ("GET", "notifications")):
                body = {"message": "hi"} if method == "POST" else None
                r = await http.request(method, f"/realtime/api/{path}", json=body, headers=caller)
                assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
                assert "database unavailable" in r.json()["detail"]
            url = f"{app.ws_url}/realtime/ws"
            async with websockets.connect(url, additional_headers=caller) as ws:
                with pytest.raises(ConnectionClosed) as info:
                    await recv(ws, 15)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1013
        finally:
            private_pg.start()
        async with websockets.connect(f"{app.ws_url}/realtime/ws", additional_headers=caller) as ws:
            await until_ready(ws)
            r = await http.post(
                "/realtime/api/notifications", json={"message": "back"}, headers=caller
            )
            assert r.status_code == 201, r.text
            assert (await recv(ws))["data"]["message"] == "back"
