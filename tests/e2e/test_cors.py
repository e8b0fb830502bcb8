"""A page on an origin not allowed learns why, and what to set (``pgpulse serve``)."""

from __future__ import annotations

from pathlib import Path

from ..support import start_server

PAGE = "https://app.example"
PREFLIGHT = {
    "Origin": PAGE,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


async def test_an_origin_not_allowed_is_told_what_to_set(database_url: str, tmp_path: Path) -> None:
    async with start_server(database_url, tmp_path) as srv, srv.http() as http:
        # A preflight gets 403 with the setting to change, never 405 from a route.
        for path in ("/api/events", "/api/notifications", "/api/jobs"):
            r = await http.options(path, headers=PREFLIGHT)
            assert r.status_code == 403, (path, r.status_code)
            assert r.text == f"this origin is not allowed: set PGPULSE_ALLOWED_ORIGINS={PAGE}"
            assert "access-control-allow-origin" not in r.headers
        # What the page can read: /healthz, from any origin, says so too.
        r = await http.get("/healthz", headers={"Origin": PAGE})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "*"
        assert r.json()["origin"] == {
            "value": PAGE,
            "allowed": False,
            "message": f"this origin is not allowed: set PGPULSE_ALLOWED_ORIGINS={PAGE}",
        }
        # Without an Origin (not a browser's cross-origin call) there is nothing to report.
        assert "origin" not in (await http.get("/healthz")).json()


async def test_an_allowed_origin_passes_and_others_are_named(
    database_url: str, tmp_path: Path
) -> None:
    other = "http://localhost:5173"
    async with (
        start_server(database_url, tmp_path, allowed_origins=[PAGE]) as srv,
        srv.http() as http,
    ):
        r = await http.options("/api/events", headers=PREFLIGHT)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == PAGE
        r = await http.get("/healthz", headers={"Origin": PAGE})
        assert r.json()["origin"] == {"value": PAGE, "allowed": True}
        assert r.headers["access-control-allow-origin"] == PAGE
        # The fix keeps the origins already allowed.
        r = await http.options("/api/events", headers={**PREFLIGHT, "Origin": other})
        assert r.status_code == 403
        assert r.text.endswith(f"PGPULSE_ALLOWED_ORIGINS={PAGE},{other}")
