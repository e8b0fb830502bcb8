"""One connection's stream, shared by WebSocket and SSE: replay → ready → live.

The order of steps is what makes a resume exact:

1. read the tenant's head and check the resume point (reset if it is gone);
2. join the hub: from here on every new event lands in the connection's queue;
3. replay from the table up to the room's cursor at the moment of joining;
4. send ``ready``, then drain the queue, skipping ids already replayed.

Between 2 and 3 nothing can fall through: an event is either at or below
the cursor (so in the table, and replayed) or above it (so queued).

Once live, a transport that reads client requests (``/ws``) hands them over
as :class:`Requests`; the writer acts on them between batches, never in the
middle of one, so what they send keeps its place in the stream (see
:mod:`pgpulse.transports.topics` for topics added and dropped on the way).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from ..events import Event, control
from ..history import History
from ..hub import Hub, Subscription

HEARTBEAT = ""
"""Yielded after ``idle`` seconds without events, for transports that send keep-alives."""


class Requests(Protocol):
    """A connection's client requests that the writer acts on between batches."""

    @property
    def pending(self) -> bool:
        """Whether a request waits; it calls :meth:`Subscription.interrupt` when one arrives."""
        ...

    def apply(self, stream: Stream, subscription: Subscription) -> AsyncIterator[Event | str]:
        """Act on the waiting requests; what it yields is sent in order."""
        ...


@dataclass(slots=True)
class Stream:
    hub: Hub
    history: History

    async def frames(
        self,
        subscription: Subscription,
        resume_from: int | None,
        idle: float | None = None,
        direct: Callable[[bytes], bool] | None = None,
        requests: Requests | None = None,
    ) -> AsyncGenerator[Event | str, None]:
        """Events and control frames for one connection, until it is closed.

        ``direct``, when given, lets the hub write live events straight to the
        socket once ``ready`` is out (see :meth:`Subscription.offer`).
        ``requests``, when given, are acted on once live, between batches.
        Raises :class:`pgpulse.hub.SlowConsumer` when the connection falls behind.
        """
        start = await self.history.start(subscription.tenant_id, resume_from)
        if start.reset is not None:
            yield control("reset", reason=start.reset)
        subscription.position = start.position
        cursor = self.hub.join(subscription, start.head)
        try:
            until = max(start.head, cursor)
            async for event in self.history.replay(
                subscription.tenant_id,
                subscription.position,
                until,
                subscription.topics,
                subscription.user_id,
            ):
                yield event
            subscription.position = max(subscription.position, until)
            yield control("ready", last_event_id=subscription.position)
            subscription.direct = direct
            while not subscription.closed:
                if requests is not None and requests.pending:
                    async for item in requests.apply(self, subscription):
                        # A refresh may narrow the topics while a catch-up runs.
                        if isinstance(item, str) or subscription.wants(item):
                            yield item
                    continue
                batch = await subscription.next_batch(idle)
                if not batch:
                    if not subscription.closed and idle is not None:  # else: interrupted
                        yield HEARTBEAT
                    continue
                for event in batch:
                    yield event
        finally:
            self.hub.leave(subscription)
