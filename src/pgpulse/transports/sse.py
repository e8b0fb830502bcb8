"""``GET /sse``: the Server-Sent Events transport.

Same auth, query and guarantees as ``/ws``, through the same
:class:`~pgpulse.transports.subscription.Stream`. Events carry ``id:`` so the
browser's ``EventSource`` resumes with ``Last-Event-ID`` by itself; control
frames come as ``event: control`` without an id, and comment lines keep idle
connections (and the proxies between) alive. Who may connect is decided
before :func:`stream` is called (:mod:`pgpulse.transports.admission`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import StreamingResponse

from ..errors import DatabaseUnavailable
from ..events import Event
from ..hub import SlowConsumer, Subscription
from ..runtime import Runtime
from .admission import Admission
from .lifetime import Lifetime
from .subscription import HEARTBEAT

RETRY_MS = 1000  # how soon EventSource reconnects


def last_event_id(request: Request) -> str | None:
    """The resume point: ``Last-Event-ID`` (EventSource's own) or ``?last_event_id=``."""
    return request.headers.get("last-event-id") or request.query_params.get("last_event_id")


def stream(runtime: Runtime, admission: Admission) -> StreamingResponse:
    """The event stream of an admitted request."""
    principal = admission.principal
    subscription = Subscription(
        principal.tenant_id,
        principal.user_id,
        admission.topics,
        max_events=runtime.settings.queue_max_events,
        max_bytes=runtime.settings.queue_max_bytes,
        transport="sse",
    )
    lifetime = Lifetime(principal, subscription, None)  # SSE has no way to refresh in band
    return StreamingResponse(
        _body(runtime, subscription, admission.resume_from, lifetime),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _body(
    runtime: Runtime, subscription: Subscription, resume_from: int | None, lifetime: Lifetime
) -> AsyncIterator[bytes]:
    # Counted here, not when the request came: a body that never starts never ends.
    caps = runtime.caps
    if not caps.admit(subscription.tenant_id, subscription.user_id):
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
        caps.release(subscription.tenant_id, subscription.user_id)
        gauge.dec()
        runtime.hub.leave(subscription)
