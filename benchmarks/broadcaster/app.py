"""encode/broadcaster on PostgreSQL, for ``pgpulse bench --compare broadcaster``.

The chat example of broadcaster's README, reshaped to the bench's endpoints:
``Broadcast("postgres://...")``, one channel per tenant, and each WebSocket
forwarding the messages of its tenant's channel as they come. Nothing is
stored and nothing is numbered: a message is one ``pg_notify``, delivered to
whoever listens at that moment, and the bench counts loss and duplicates by
the ``seq`` its publisher puts in each message.

Two things are added, both for the bench's sake and said where they are:

* every use of broadcaster's one PostgreSQL connection is serialised by a
  lock, because that asyncpg connection refuses a second operation while one
  is in flight ("another operation is in progress", broadcaster issue #22),
  so concurrent publishes and subscribes fail without it;
* a socket gets ``{"op": "ready"}`` once its channel is LISTENed to, so that
  the bench starts publishing only when a message can reach it (a publish
  before that is not delivered, by design).

Run it with ``DATABASE_URL=postgresql://... uvicorn app:app --app-dir
benchmarks/broadcaster``; it needs the ``bench-compare`` extra of pgpulse
(broadcaster with asyncpg). Do not use it for anything but comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import anyio
from broadcaster import Broadcast
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

broadcast = Broadcast(DATABASE_URL)
connection = asyncio.Lock()  # broadcaster's one asyncpg connection: one operation at a time


@contextlib.asynccontextmanager
async def subscription(channel: str) -> AsyncIterator[Any]:
    """``broadcast.subscribe(channel)``, its LISTEN and UNLISTEN taken under the lock."""
    stack = contextlib.AsyncExitStack()
    async with connection:
        subscriber = await stack.enter_async_context(broadcast.subscribe(channel))
    try:
        yield subscriber
    finally:
        async with connection:
            await stack.aclose()


async def publish(request: Request) -> Response:
    tenant = request.query_params.get("tenant_id")
    body = await request.body()
    try:
        json.loads(body)
    except ValueError:
        return JSONResponse({"detail": "the body is not JSON"}, status_code=400)
    if not tenant:
        return JSONResponse({"detail": "tenant_id is required"}, status_code=400)
    async with connection:
        await broadcast.publish(channel=tenant, message=body.decode())
    return JSONResponse({"ok": True})


async def events(websocket: WebSocket) -> None:
    tenant = websocket.query_params.get("tenant_id")
    if not tenant:
        await websocket.close(code=1008)
        return
    await websocket.accept()
    async with subscription(tenant) as subscriber, anyio.create_task_group() as group:
        await websocket.send_text('{"op":"ready"}')

        async def receive() -> None:
            # The client says nothing; this notices it leave.
            with contextlib.suppress(WebSocketDisconnect):
                async for _ in websocket.iter_text():
                    pass
            group.cancel_scope.cancel()

        async def forward() -> None:
            with contextlib.suppress(WebSocketDisconnect, OSError):
                async for event in subscriber:
                    await websocket.send_text(event.message)
            group.cancel_scope.cancel()

        group.start_soon(receive)
        group.start_soon(forward)


async def healthz(_request: Request) -> Response:
    return JSONResponse({"ok": True})


@contextlib.asynccontextmanager
async def lifespan(_app: Starlette) -> AsyncIterator[None]:
    async with broadcast:
        yield


app = Starlette(
    routes=[
        Route("/publish", publish, methods=["POST"]),
        Route("/healthz", healthz),
        WebSocketRoute("/ws", events),
    ],
    lifespan=lifespan,
)
