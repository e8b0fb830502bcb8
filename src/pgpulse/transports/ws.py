"""``/ws`` and ``/ws/notifications``: the WebSocket transport.

Each connection has two tasks: the writer (this handler) drains the
connection's stream and sends; the reader answers client frames. A lock keeps
their sends whole. Protocol pings and the 64 KiB frame limit are uvicorn's
(``ws_ping_interval``, ``ws_max_size``); floods are counted here.

Who may connect is decided before :func:`stream` is called
(:mod:`pgpulse.transports.admission`); a refusal goes through :func:`refuse`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..auth import Verifier
from ..errors import DatabaseUnavailable
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
from .admission import Admission, Refused
from .lifetime import Lifetime
from .ops import OPS, ClientOps
from .uvicorn_ws import EXTENSION, PROTOCOL_PATH

log = logging.getLogger("pgpulse.ws")

Ops = Callable[[dict[str, Any]], Awaitable[str | None]]
"""Answers the client ops a module handles (e.g. ``refresh``), or None for others."""

CLOSE_TIMEOUT = 5.0  # seconds to get a close frame out to a peer that does not read

_said_no_direct_writes = False


async def refuse(websocket: WebSocket, refused: Refused) -> None:
    """Close a WebSocket that was refused, before any frame, saying why.

    Accept, then close with a reason: a browser cannot read a refused
    handshake's status, but it can read a close code and reason.
    """
    await websocket.accept()
    await websocket.close(refused.code, reason=close_reason(refused.reason))


async def stream(
    websocket: WebSocket, runtime: Runtime, admission: Admission, verifier: Verifier | None = None
) -> None:
    """Serve an admitted WebSocket until either side ends it.

    The connection ends at its principal's ``expires_at`` unless the client
    sends ``{"op": "refresh", "token": ...}`` first, which ``verifier`` checks
    (without one, as under an app's own principal, refresh is refused).
    """
    await websocket.accept()
    settings = runtime.settings
    principal = admission.principal
    subscription = Subscription(
        principal.tenant_id,
        principal.user_id,
        admission.topics,
        max_events=settings.queue_max_events,
        max_bytes=settings.queue_max_bytes,
    )
    caps = runtime.caps
    if not caps.admit(principal.tenant_id, principal.user_id):
        # Over a cap after all: others were admitted since the refusal check.
        await _close(websocket, WS_1013_TRY_AGAIN_LATER, "too many connections; retry later")
        return
    lock = asyncio.Lock()
    ops = ClientOps(
        subscription,
        principal.topics,
        runtime.presence,
        settings.presence_max_info_bytes,
        may_read=admission.may_read if admission.policy is not None else None,
    )
    gauge = runtime.metrics.connections.labels("ws")
    gauge.inc()
    lifetime = Lifetime(principal, subscription, verifier, on_refresh=ops.replace_allowed)
    lifetime.start()
    reader = asyncio.create_task(
        _read_client(websocket, subscription, lock, runtime, ops, lifetime.answer)
    )
    try:
        frames = runtime.stream.frames(
            subscription,
            admission.resume_from,
            direct=_direct_writer(websocket),
            requests=ops,
        )
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
        caps.release(principal.tenant_id, principal.user_id)
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
        await ops.close()  # its presence: others see it leave


def _direct_writer(websocket: WebSocket) -> Callable[[bytes], bool] | None:
    """Write pre-framed events at once, where the server allows it."""
    extension = websocket.scope.get("extensions", {}).get(EXTENSION)
    if extension is None:
        global _said_no_direct_writes
        if not _said_no_direct_writes:
            _said_no_direct_writes = True
            log.info(
                "this server has no pre-framed WebSocket writes (uvicorn's ws=%s adds them); "
                "events are sent through ASGI, which costs more CPU per socket",
                PROTOCOL_PATH,
            )
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
    ops: ClientOps,
    refresh: Ops | None = None,
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
            reply = await _answer(message.get("text"), message.get("bytes"), ops, refresh)
            if reply is not None:  # else the writer answers, in its place in the stream
                async with lock:
                    await websocket.send_text(reply)
    except (WebSocketDisconnect, RuntimeError, OSError):
        return None
    finally:
        subscription.close()


async def _answer(
    text: str | None, data: bytes | None, ops: ClientOps, refresh: Ops | None = None
) -> str | None:
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
    if frame["op"] in OPS:
        return ops.handle(frame)
    if refresh is not None and (reply := await refresh(frame)) is not None:
        return reply
    known = ", ".join(sorted(["ping", "refresh", *OPS]))
    return control("error", message=f"unknown op {frame['op'][:40]!r}; known: {known}")
