"""One connection's stream, shared by WebSocket and SSE: replay → ready → live.

The order of steps is what makes a resume exact:

1. read the tenant's head and check the resume point (reset if it is gone);
2. join the hub: from here on every new event lands in the connection's queue;
3. replay from the table up to the room's cursor at the moment of joining;
4. send ``ready``, then drain the queue, skipping ids already replayed.

Between 2 and 3 nothing can fall through: an event is either at or below
the cursor (so in the table, and replayed) or above it (so queued).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from ..events import Event, control
from ..history import History
from ..hub import Hub, Subscription

HEARTBEAT = ""
"""Yielded after ``idle`` seconds without events, for transports that send keep-alives."""


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
    ) -> AsyncGenerator[Event | str, None]:
        """Events and control frames for one connection, until it is closed.

        ``direct``, when given, lets the hub write live events straight to the
        socket once ``ready`` is out (see :meth:`Subscription.offer`).
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
                batch = await subscription.next_batch(idle)
                if not batch:
                    if not subscription.closed:
                        yield HEARTBEAT
                    continue
                for event in batch:
                    yield event
        finally:
            self.hub.leave(subscription)
