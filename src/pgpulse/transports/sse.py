"""``GET /sse``: the Server-Sent Events transport.

Same auth, query and guarantees as ``/ws``, through the same
:class:`~pgpulse.transports.subscription.Stream`. Events carry ``id:`` so the
browser's ``EventSource`` resumes with ``Last-Event-ID`` by itself; control
frames come as ``event: control`` without an id, and comment lines keep idle
connections (and the proxies between) alive.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import HTTPException, Request
from fastapi.responses import StreamingResponse

from ..api.deps import authenticate, get_runtime
from ..errors import AuthError, DatabaseUnavailable, ForbiddenTopic
from ..events import Event
from ..hub import SlowConsumer, Subscription
from ..runtime import Runtime
from .lifetime import Lifetime
from .subscription import HEARTBEAT
from .ws import parse_last_event_id

RETRY_MS = 1000  # how soon EventSource reconnects


async def sse_endpoint(request: Request) -> StreamingResponse:
    runtime = get_runtime(request)
    try:
        principal = authenticate(request, query_token=True)
        topics = principal.allowed_topics(request.query_params.get("topics"))
    except ForbiddenTopic as exc:
        raise HTTPException(403, str(exc)) from None
    except AuthError as exc:
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
    except ValueError as exc:  # a malformed topic list
        raise HTTPException(422, str(exc)) from None
    admission = runtime.admission
    refusal = admission and admission.refusal(principal.tenant_id, principal.user_id)
    if refusal:
        raise HTTPException(429, refusal, headers={"Retry-After": "1"})
    try:
        resume_from = parse_last_event_id(
            request.headers.get("last-event-id") or request.query_params.get("last_event_id")
        )
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    subscription = Subscription(
        principal.tenant_id,
        principal.user_id,
        topics,
        max_events=runtime.settings.queue_max_events,
        max_bytes=runtime.settings.queue_max_bytes,
    )
    lifetime = Lifetime(principal, subscription, None)  # SSE has no way to refresh in band
    return StreamingResponse(
        _body(runtime, subscription, resume_from, lifetime),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _body(
    runtime: Runtime, subscription: Subscription, resume_from: int | None, lifetime: Lifetime
) -> AsyncIterator[bytes]:
    # Counted here, not when the request came: a body that never starts never ends.
    admission = runtime.admission
    if admission is not None and not admission.admit(subscription.tenant_id, subscription.user_id):
        return  # over a cap after all (others came first): EventSource retries later
    gauge = runtime.metrics.connections.labels("sse")
    gauge.inc()
    lifetime.start()  # the stream ends at the token's exp
    try:
        yield f"retry: {RETRY_MS}\n\n".encode()
        frames = runtime.stream.frames(
            subscription, resume_from, idle=runtime.settings.sse_heartbeat
        )
        async with contextlib.aclosing(frames) as items:
            async for item in items:
                if isinstance(item, Event):
                    yield item.sse
                elif item == HEARTBEAT:
                    yield b": heartbeat\n\n"
                else:
                    yield f"event: control\ndata: {item}\n\n".encode()
    except SlowConsumer:
        runtime.metrics.slow_consumers.inc()  # ending the response makes EventSource resume
    except DatabaseUnavailable:
        pass  # likewise: EventSource comes back after `retry` and resumes
    finally:
        lifetime.stop()
        if admission is not None:
            admission.release(subscription.tenant_id, subscription.user_id)
        gauge.dec()
        runtime.hub.leave(subscription)
