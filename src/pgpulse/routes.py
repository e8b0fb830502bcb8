"""Routes served ahead of FastAPI's stack: the long-lived and the hot ones.

``/ws`` and ``/ws/notifications`` live for hours, and every layer of
routing, dependency and exception handling a connection passes through keeps
a coroutine frame alive for all that time: about 5 KiB per connection in
FastAPI's stack, none of which these endpoints use.

``POST /api/events`` is the hot path of publishing from other services;
FastAPI's layers cost it about as much CPU as the publish itself. It is
served here unless a browser calls it cross-origin (an ``Origin`` header
while CORS is configured): those requests go through the app, whose CORS
middleware answers them. Both paths share one implementation
(:func:`pgpulse.api.events.publish_request`) and return the same responses.

Everything else, including the OpenAPI description of these routes, is the
app's.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from .api.events import publish_event_asgi
from .transports.ws import websocket_endpoint

WS_PATHS = frozenset({"/ws", "/ws/notifications"})
PUBLISH_PATH = "/api/events"


class DirectRoutes:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket" or kind == "http":
            path: str = scope["path"]
            root: str = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            if kind == "websocket":
                if path in WS_PATHS:
                    await websocket_endpoint(WebSocket(scope, receive, send))
                    return
            elif path == PUBLISH_PATH and scope["method"] == "POST" and _same_origin(scope):
                await publish_event_asgi(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _same_origin(scope: Scope) -> bool:
    """Whether CORS has nothing to add: no CORS configured, or no ``Origin`` header."""
    if not scope["app"].state.runtime.settings.allowed_origins:
        return True
    return not any(name == b"origin" for name, _ in scope["headers"])
