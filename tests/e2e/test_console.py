"""The console's files and the API pages are served from the wheel, with nothing from a CDN."""

from __future__ import annotations

import re

from ..support import ServerHandle

LINK = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
ABSOLUTE_URL = re.compile(r"""["'(]\s*(?:https?:)?//[^"')\s]+""")


async def test_root_points_to_the_console_and_its_files_are_served(server: ServerHandle) -> None:
    async with server.http() as http:
        r = await http.get("/")
        assert r.status_code == 307 and r.headers["location"] == "console"
        r = await http.get("/console/")
        assert r.status_code == 307 and r.headers["location"] == "../console"

        page = await http.get("/console")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        links = [link for link in LINK.findall(page.text) if not link.startswith("data:")]
        assert sorted(links) == ["#main", "console/console.css", "console/console.js", "docs"]

        bodies = [page.text]
        for name, kind in (("console.js", "text/javascript"), ("console.css", "text/css")):
            r = await http.get(f"/console/{name}")
            assert r.status_code == 200 and r.headers["content-type"].startswith(kind), name
            bodies.append(r.text)
        # Nothing is loaded from another origin: the only absolute URL is SVG's namespace.
        for body in bodies:
            found = {u.lstrip("\"'( ") for u in ABSOLUTE_URL.findall(body)}
            assert found <= {"http://www.w3.org/2000/svg"}, found

        for path in ("/console/index.html", "/console/..%2Fapp.py", "/console/nodes.py"):
            assert (await http.get(path)).status_code == 404, path


async def test_docs_and_redoc_load_their_assets_from_this_server(server: ServerHandle) -> None:
    async with server.http() as http:
        for path in ("/docs", "/redoc"):
            page = await http.get(path)
            assert page.status_code == 200, path
            assets = LINK.findall(page.text)
            assert assets and all(a.startswith("/docs/assets/") for a in assets), assets
            assert "fonts.googleapis" not in page.text and "cdn." not in page.text
            for asset in assets:
                r = await http.get(asset)
                assert r.status_code == 200 and len(r.content) > 1000, asset
        assert (await http.get("/docs/assets/../../app.py")).status_code == 404
        assert (await http.get("/docs/oauth2-redirect")).status_code == 200
        spec = (await http.get("/openapi.json")).json()
        assert spec["openapi"].startswith("3.1")
