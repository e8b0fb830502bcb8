"""Cross-origin calls to ``pgpulse serve``: CORS, with answers a developer can act on.

A page on another origin may call the HTTP API when ``PGPULSE_ALLOWED_ORIGINS``
lists its origin. When it does not, the browser fails the call and hides
why from the page: a refused preflight's status and body are not readable.
So that the cause is never a mystery:

* a preflight from an origin not listed gets 403 with a body that says what
  to set (the browser's network panel shows it), never 405 from a route;
* ``GET /healthz`` is readable from any origin (it holds nothing private)
  and reports whether the calling page's origin is allowed, with the setting
  to change: a browser client reads it when a call fails, and says so.

WebSockets are not subject to CORS. In ``pgpulse serve`` they carry their
token in the URL, so any origin may open one; in library mode, where a
cookie may be the credential, :mod:`pgpulse.transports.admission` checks the
Origin itself. An app that serves its pages itself needs no CORS at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp

SETTING = "PGPULSE_ALLOWED_ORIGINS"


def origin_not_allowed(origin: str, allowed: Sequence[str]) -> str:
    """What to tell the developer of a page whose origin is refused."""
    return f"this origin is not allowed: set {SETTING}={','.join([*allowed, origin])}"


def origin_report(origin: str, allowed: Sequence[str]) -> dict[str, Any]:
    """Whether ``origin`` may call the HTTP API, for ``/healthz``."""
    ok = "*" in allowed or origin in allowed
    report: dict[str, Any] = {"value": origin, "allowed": ok}
    if not ok:
        report["message"] = origin_not_allowed(origin, allowed)
    return report


class CORS(CORSMiddleware):
    """Starlette's CORS for the HTTP API, refusing unlisted origins' preflights with a reason.

    Tokens travel in the ``Authorization`` header, never in cookies, so
    credentials stay off.
    """

    def __init__(self, app: ASGIApp, allowed_origins: Sequence[str]) -> None:
        super().__init__(
            app,
            allow_origins=list(allowed_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
        )
        self._allowed = list(allowed_origins)

    def preflight_response(self, request_headers: Headers) -> Response:
        origin = request_headers["origin"]
        if not self.is_allowed_origin(origin):
            return PlainTextResponse(
                origin_not_allowed(origin, self._allowed), 403, headers={"Vary": "Origin"}
            )
        return super().preflight_response(request_headers)
