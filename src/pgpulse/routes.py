"""Routes served ahead of FastAPI's stack, for ``pgpulse serve``: the long-lived and the hot ones.

``/ws`` and ``/ws/notifications`` live for hours, and every layer of
routing, dependency and exception handling a connection passes through keeps
a coroutine frame alive for all that time: about 5 KiB per connection in
FastAPI's stack, none of which these endpoints use.

``POST /api/events``, ``POST /api/notifications`` and ``POST /api/jobs``
are the hot paths of publishing; FastAPI's layers cost them about as much
CPU as the publish itself. The routes the app declares for them share their implementation
and give the OpenAPI description. CORS wraps this middleware, so
cross-origin callers get the same answers here.

Both take the caller from pgpulse's JWT provider directly (no dependency to
resolve), which is why only ``pgpulse serve`` uses this middleware; in an
app's own server the same endpoints are :attr:`pgpulse.fastapi.Pgpulse.router`'s.
Everything else, including the OpenAPI description of these routes, is the
app's.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from .api.deps import PRINCIPAL_KEY, RUNTIME_KEY
from .api.events import publish_event_asgi
from .api.jobs import create_job_asgi
from .api.notifications import create_notification_asgi
from .errors import NotRunning
from .fastapi import Pgpulse
from .transports.admission import Refused

WS_PATHS = frozenset({"/ws", "/ws/notifications"})
POST_ROUTES = {
    "/api/events": publish_event_asgi,
    "/api/notifications": create_notification_asgi,
    "/api/jobs": create_job_asgi,
}


class DirectRoutes:
    def __init__(self, app: ASGIApp, pulse: Pgpulse) -> None:
        self.app = app
        self.pulse = pulse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket" and _path(scope) in WS_PATHS:
            websocket = WebSocket(scope, receive, send)
            principal = await self.pulse._token_principal(websocket, query_token=True)
            await self.pulse._serve_websocket(websocket, principal)
        elif (
            kind == "http"
            and scope["method"] == "POST"
            and (route := POST_ROUTES.get(_path(scope)))
        ):
            if not self.pulse.running:
                await JSONResponse({"detail": str(NotRunning())}, 503)(scope, receive, send)
                return
            scope[RUNTIME_KEY] = self.pulse.runtime
            principal = await self.pulse._token_principal(HTTPConnection(scope))
            # The handler raises a refusal it finds here, as the router's binding does.
            refusal = principal.as_http() if isinstance(principal, Refused) else principal
            scope[PRINCIPAL_KEY] = refusal
            await route(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _path(scope: Scope) -> str:
    """The request path within the app (without a mount's ``root_path``)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
