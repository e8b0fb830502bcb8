"""Routes served ahead of FastAPI's stack: the long-lived and the hot ones.

``/ws`` and ``/ws/notifications`` live for hours, and every layer of
routing, dependency and exception handling a connection passes through keeps
a coroutine frame alive for all that time: about 5 KiB per connection in
FastAPI's stack, none of which these endpoints use.

``POST /api/events`` and ``POST /api/notifications`` are the hot paths of
publishing; FastAPI's layers cost them about as much CPU as the publish
itself. The routes the app declares for them share their implementation
and give the OpenAPI description. CORS, when configured,
wraps this middleware, so cross-origin callers get the same answers here.

Everything else, including the OpenAPI description of these routes, is the
app's.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from .api.events import publish_event_asgi
from .api.notifications import create_notification_asgi
from .transports.ws import websocket_endpoint

WS_PATHS = frozenset({"/ws", "/ws/notifications"})
POST_ROUTES = {"/api/events": publish_event_asgi, "/api/notifications": create_notification_asgi}


class DirectRoutes:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket" and _path(scope) in WS_PATHS:
            await websocket_endpoint(WebSocket(scope, receive, send))
        elif (
            kind == "http"
            and scope["method"] == "POST"
            and (route := POST_ROUTES.get(_path(scope)))
        ):
            await route(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _path(scope: Scope) -> str:
    """The request path within the app (without a mount's ``root_path``)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
