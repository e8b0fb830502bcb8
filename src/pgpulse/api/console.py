"""``/console``: the operators' page, and ``/`` pointing to it.

The page is three static files in ``pgpulse/console`` (HTML, CSS and one
JavaScript module), written without a build step so that the wheel holds
exactly what the browser runs: no Node at install or run time, nothing from
a CDN. It logs in with an admin token and then reads ``/api/admin``; the
files themselves hold no secret and need no token.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import RedirectResponse, Response

router = APIRouter(include_in_schema=False)

ASSETS = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
}
"""The files the page loads, by name: nothing else under ``/console/`` is served."""

SECURITY_HEADERS = {
    # Only this origin's files run; the page talks to this origin's API and sockets.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Served again on every load, so an upgrade of pgpulse shows its own page.
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return resources.files("pgpulse").joinpath("console", name).read_bytes()


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("console", status_code=307)


@router.get("/console")
async def console_page() -> Response:
    return Response(_read("index.html"), media_type="text/html", headers=SECURITY_HEADERS)


@router.get("/console/")
async def console_slash() -> RedirectResponse:
    # The page's relative links resolve from /console, not /console/.
    return RedirectResponse("../console", status_code=307)


@router.get("/console/{name}")
async def console_asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404, "not found")
    return Response(_read(name), media_type=media_type, headers=SECURITY_HEADERS)
