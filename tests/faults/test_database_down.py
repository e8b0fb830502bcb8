"""While PostgreSQL is down: clear answers, nothing hangs, and all comes back."""

from __future__ import annotations

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
