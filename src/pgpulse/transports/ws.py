"""``/ws`` and ``/ws/notifications``: the WebSocket transport.

Each connection has two tasks: the writer (this handler) drains the
connection's stream and sends; the reader answers client frames. A lock keeps
their sends whole. Protocol pings and the 64 KiB frame limit are uvicorn's
(``ws_ping_interval``, ``ws_max_size``); floods are counted here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..api.deps import authenticate, get_runtime
from ..errors import AuthError, DatabaseUnavailable
from ..events import (
    WS_1008_POLICY_VIOLATION,
    WS_1012_SERVICE_RESTART,
    WS_1013_TRY_AGAIN_LATER,
    Event,
    control,
)
from ..hub import SlowConsumer, Subscription
from ..limits import close_reason
from ..runtime import Runtime
from .lifetime import Lifetime
from .uvicorn_ws import EXTENSION

Ops = Callable[[dict[str, Any]], str | None]
"""Answers the client ops a module handles (e.g. ``refresh``), or None for others."""

CLOSE_TIMEOUT = 5.0  # seconds to get a close frame out to a peer that does not read


def parse_last_event_id(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 18:
        raise ValueError(f"last_event_id must be a non-negative integer, got {value[:40]!r}")
    return int(value)


async def websocket_endpoint(websocket: WebSocket) -> None:
    runtime = get_runtime(websocket)
    try:
        principal = authenticate(websocket, query_token=True)
        topics = principal.allowed_topics(websocket.query_params.get("topics"))
        resume_from = parse_last_event_id(websocket.query_params.get("last_event_id"))
    except (AuthError, ValueError) as exc:
        # Accept, then close with a reason: a browser cannot read a refused
        # handshake's status, but it can read a close code and reason.
        await websocket.accept()
        await websocket.close(WS_1008_POLICY_VIOLATION, reason=close_reason(str(exc)))
        return

    admission = runtime.admission
    refusal = admission and admission.refusal(principal.tenant_id, principal.user_id)
    if refusal:
        await websocket.accept()
        await websocket.close(WS_1013_TRY_AGAIN_LATER, reason=close_reason(refusal))
        return

    await websocket.accept()
    settings = runtime.settings
    subscription = Subscription(
        principal.tenant_id,
        principal.user_id,
        topics,
        max_events=settings.queue_max_events,
        max_bytes=settings.queue_max_bytes,
    )
    if admission is not None and not admission.admit(principal.tenant_id, principal.user_id):
        await _close(websocket, WS_1013_TRY_AGAIN_LATER, "too many connections; retry later")
        return
    lock = asyncio.Lock()
    gauge = runtime.metrics.connections.labels("ws")
    gauge.inc()
    lifetime = Lifetime(principal, subscription, runtime.verifier)
    lifetime.start()
    reader = asyncio.create_task(
        _read_client(websocket, subscription, lock, runtime, lifetime.answer)
    )
    try:
        frames = runtime.stream.frames(subscription, resume_from, direct=_direct_writer(websocket))
        async with contextlib.aclosing(frames) as items:
            async for item in items:
                text = item.frame if isinstance(item, Event) else item
                async with lock:
                    await websocket.send_text(text)
        if subscription.ended is not None:  # token expired, or an operator's disconnect
            await _close(websocket, *subscription.ended)
        elif subscription.restarting:
            await _close(websocket, WS_1012_SERVICE_RESTART, "server restarting")
    except SlowConsumer:
        runtime.metrics.slow_consumers.inc()
        await _close(websocket, WS_1013_TRY_AGAIN_LATER, "slow consumer: resume from your last id")
    except DatabaseUnavailable:
        await _close(websocket, WS_1013_TRY_AGAIN_LATER, "database unavailable: resume shortly")
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the peer went away mid-send
    finally:
        lifetime.stop()
        if admission is not None:
            admission.release(principal.tenant_id, principal.user_id)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        gauge.dec()
        runtime.hub.leave(subscription)
        abuse = None
        if reader.done() and not reader.cancelled() and reader.exception() is None:
            abuse = reader.result()
        if abuse is not None:
            await _close(websocket, *abuse)


def _direct_writer(websocket: WebSocket) -> Callable[[bytes], bool] | None:
    """Write pre-framed events at once, where the server allows it."""
    extension = websocket.scope.get("extensions", {}).get(EXTENSION)
    if extension is None:
        return None
    write_frame: Callable[[bytes], bool] = extension["write"]
    return write_frame


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    if websocket.application_state != WebSocketState.CONNECTED:
        return
    with contextlib.suppress(Exception):
        await asyncio.wait_for(websocket.close(code, close_reason(reason)), CLOSE_TIMEOUT)


async def _read_client(
    websocket: WebSocket,
    subscription: Subscription,
    lock: asyncio.Lock,
    runtime: Runtime,
    ops: Ops | None = None,
) -> tuple[int, str] | None:
    """Answer client frames until the peer leaves; returns a close code for abuse."""
    rate = runtime.settings.client_frames_per_second
    allowance = burst = rate * 2
    last = time.monotonic()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return None
            now = time.monotonic()
            allowance = min(burst, allowance + (now - last) * rate)
            last = now
            allowance -= 1
            if allowance < 0:
                subscription.close()
                return (WS_1008_POLICY_VIOLATION, "too many client frames")
            reply = _answer(message.get("text"), message.get("bytes"), ops)
            async with lock:
                await websocket.send_text(reply)
    except (WebSocketDisconnect, RuntimeError, OSError):
        return None
    finally:
        subscription.close()


def _answer(text: str | None, data: bytes | None, ops: Ops | None = None) -> str:
    if text is None:
        return control("error", message="binary frames are not supported; send JSON text")
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return control("error", message=f"frame is not valid JSON: {exc}")
    if not isinstance(frame, dict) or not isinstance(frame.get("op"), str):
        return control(
            "error", message='frame must be a JSON object with an "op", e.g. {"op": "ping"}'
        )
    if frame["op"] == "ping":
        return control("pong")
    if ops is not None and (reply := ops(frame)) is not None:
        return reply
    return control("error", message=f"unknown op {frame['op'][:40]!r}; known: ping, refresh")
