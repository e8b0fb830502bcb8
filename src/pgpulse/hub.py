"""The hub: which connection gets which event, through a bounded queue each.

The listener hands the hub batches of committed events, in id order per
tenant. The hub keeps one *room* per tenant with local connections; a room's
``cursor`` is the newest id it has dispatched, and it is also where the
listener resumes reading for that tenant. Dispatch is synchronous and never
waits on a socket. A live connection that has nothing queued and a socket
ready to take data gets its share of the batch written at once: the events'
pre-framed bytes, joined, in one buffered write. Otherwise the events go to
the connection's own queue, drained in order by its writer task. A queue that
passes its limit marks the connection slow; its writer closes it with 1013
and the client resumes from its last id. No other connection waits for it.

Under load, batches grow by themselves: wake-ups that arrive while the
listener reads or dispatches are served by its next read, in one batch, so a
broadcast costs one write per socket per batch rather than per event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence

from .events import Event


class SlowConsumer(Exception):
    """The connection's outbound queue passed its limit."""


class Subscription:
    """One connection's filter, position and outbound queue.

    ``position`` is the newest id this connection has been sent or has
    skipped; events at or below it are never sent again, which is what joins
    a replay to the live stream without a duplicate.
    """

    __slots__ = (
        "_waiter",
        "busy",
        "closed",
        "direct",
        "ended",
        "floors",
        "interrupted",
        "max_bytes",
        "max_events",
        "overflowed",
        "position",
        "queue",
        "queued_bytes",
        "restarting",
        "tenant_id",
        "topics",
        "transport",
        "user_id",
    )

    def __init__(
        self,
        tenant_id: str,
        user_id: str | None = None,
        topics: frozenset[str] | None = None,
        max_events: int = 1000,
        max_bytes: int = 4 * 1024 * 1024,
        transport: str = "ws",
    ) -> None:
        self.tenant_id = tenant_id
        self.transport = transport  # "ws" or "sse": how the console counts connections
        self.user_id = user_id
        self.topics = topics
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.position = 0
        # A list and a bare future rather than a deque and an asyncio.Event:
        # each of those allocates a 64-slot block, about 1.5 KiB per connection.
        self.queue: list[Event] = []
        self.queued_bytes = 0
        self.overflowed = False
        self.closed = False
        self.restarting = False
        self.ended: tuple[int, str] | None = None
        """Why the server ended this connection (a close code and reason), if it did:
        its token expired, or an operator disconnected it."""
        self.direct: Callable[[bytes], bool] | None = None
        """Set by a live transport that can write pre-framed events
        (:attr:`Event.ws_bytes`, joined) at once without waiting; returns
        False when it cannot, e.g. the socket is backed up."""
        self.busy = False  # the writer holds a batch it has not finished sending
        self.interrupted = False  # the client asked for something; see interrupt()
        self.floors: dict[str, int] | None = None
        """Per topic, an id at or below which that topic's events are not wanted:
        set when a topic is added with a resume point ahead of the room's cursor
        (see :mod:`pgpulse.transports.topics`)."""
        self._waiter: asyncio.Future[None] | None = None

    def wants(self, event: Event) -> bool:
        if event.user_id is not None and event.user_id != self.user_id:
            return False
        if self.topics is not None and event.topic not in self.topics:
            return False
        floors = self.floors
        return floors is None or event.id > floors.get(event.topic, 0)

    def offer(self, events: Sequence[Event], frames: bytes | None = None) -> None:
        """Queue events in id order; never blocks. Past the limit the queue is dropped
        and marked slow.

        Fast path: with nothing queued or being sent, the events go straight to
        the socket as ``frames`` (their joined :attr:`Event.ws_bytes`, built
        here if not given) in one buffered write, which keeps order.
        """
        if self.overflowed or self.closed or not events:
            return
        direct = self.direct
        if direct is not None and not self.queue and not self.busy and events[0].id > self.position:
            if frames is None:
                frames = b"".join([event.ws_bytes for event in events])
            if direct(frames):
                self.position = events[-1].id
                return
        self.queue.extend(events)
        self.queued_bytes += sum(event.size for event in events)
        if len(self.queue) > self.max_events or self.queued_bytes > self.max_bytes:
            self.overflowed = True
            self.queue.clear()
            self.queued_bytes = 0
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def interrupt(self) -> None:
        """Make the writer's :meth:`next_batch` return ``[]`` at once, even with
        nothing queued, so that it acts on a client's request between batches."""
        self.interrupted = True
        self._wake()

    def take_queued(self) -> list[Event]:
        """Take the queued events not sent yet, in id order, without waiting.

        For the writer only, between batches; raises :class:`SlowConsumer`
        after an overflow, as :meth:`next_batch` does.
        """
        if self.overflowed:
            raise SlowConsumer
        events = [event for event in self.queue if event.id > self.position]
        self.queue.clear()
        self.queued_bytes = 0
        return events

    def close(self, restarting: bool = False, ended: tuple[int, str] | None = None) -> None:
        """End the stream; ``restarting`` means the server is going away (1012), ``ended``
        says why the server ends it otherwise (see :attr:`ended`)."""
        self.restarting = self.restarting or restarting
        if ended is not None and self.ended is None and not self.closed:
            self.ended = ended
        self.closed = True
        self._wake()

    async def next_batch(self, idle: float | None = None) -> list[Event]:
        """Wait for queued events newer than ``position`` and take them all.

        Returns ``[]`` after ``idle`` seconds without any (a heartbeat
        moment), once closed, or when interrupted; raises
        :class:`SlowConsumer` after an overflow.
        """
        self.busy = False
        while True:
            while not self.queue:
                if self.overflowed:
                    raise SlowConsumer
                if self.closed:
                    return []
                if self.interrupted:
                    self.interrupted = False
                    return []
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await asyncio.wait_for(self._waiter, idle)
                except TimeoutError:
                    return []
                finally:
                    self._waiter = None
            if self.overflowed:
                raise SlowConsumer
            batch = [event for event in self.queue if event.id > self.position]
            self.queue.clear()
            self.queued_bytes = 0
            # Only events a replay already sent: not a heartbeat moment, wait on.
            if batch:
                self.position = batch[-1].id
                self.busy = True
                return batch


class _Room:
    __slots__ = ("cursor", "sse", "subscriptions")

    def __init__(self, cursor: int) -> None:
        self.cursor = cursor
        self.subscriptions: set[Subscription] = set()
        self.sse = 0  # of which SSE streams; the rest are WebSockets


class Hub:
    """Tenant rooms of local connections; the listener's event sink."""

    def __init__(self) -> None:
        self._rooms: dict[str, _Room] = {}
        self.on_new_room: Callable[[str], None] | None = None
        """Called with a tenant id when its first local connection joins; the
        app points it at the listener, which then reads that tenant's events
        committed since the room's starting cursor."""

    @property
    def connections(self) -> int:
        return sum(len(room.subscriptions) for room in self._rooms.values())

    def join(self, subscription: Subscription, head: int) -> int:
        """Add a connection; ``head`` is its tenant's newest committed id, read just before.

        Returns the room's cursor: every event after it reaches the
        connection's queue, so the connection must replay up to it from the
        table (it may be ahead of ``head`` when the room already existed).
        """
        room = self._rooms.get(subscription.tenant_id)
        if room is None:
            room = self._rooms[subscription.tenant_id] = _Room(head)
            if self.on_new_room is not None:
                self.on_new_room(subscription.tenant_id)
        if subscription not in room.subscriptions:
            room.subscriptions.add(subscription)
            room.sse += subscription.transport == "sse"
        return room.cursor

    def leave(self, subscription: Subscription) -> None:
        subscription.close()
        room = self._rooms.get(subscription.tenant_id)
        if room is not None and subscription in room.subscriptions:
            room.subscriptions.remove(subscription)
            room.sse -= subscription.transport == "sse"
            if not room.subscriptions:
                del self._rooms[subscription.tenant_id]

    def tenant_connections(self) -> dict[str, tuple[int, int]]:
        """Each tenant's local connections as (WebSockets, SSE streams), counted as they
        join and leave so that reading them costs one pass over the rooms."""
        return {
            tenant: (len(room.subscriptions) - room.sse, room.sse)
            for tenant, room in self._rooms.items()
        }

    def positions(self, tenants: Iterable[str] | None = None) -> dict[str, int]:
        """Each room's cursor, for ``tenants`` (those with a room) or for all rooms."""
        if tenants is None:
            return {tenant: room.cursor for tenant, room in self._rooms.items()}
        return {t: room.cursor for t in tenants if (room := self._rooms.get(t)) is not None}

    def deliver(self, events: Sequence[Event]) -> int:
        """Dispatch committed events, in id order per tenant; returns how many were queued.

        An event at or below its room's cursor was dispatched already (a
        catch-up read can overlap a wake-up read) and is skipped. Each room's
        new events go to each connection together; connections that want all
        of them (no topic filter, nothing addressed to one user) share one
        joined frame.
        """
        batches: dict[str, list[Event]] = {}
        for event in events:
            room = self._rooms.get(event.tenant_id)
            if room is None or event.id <= room.cursor:
                continue
            room.cursor = event.id
            batch = batches.get(event.tenant_id)
            if batch is None:
                batches[event.tenant_id] = [event]
            else:
                batch.append(event)
        queued = 0
        for tenant_id, batch in batches.items():
            everyone = all(event.user_id is None for event in batch)
            shared: bytes | None = None
            for subscription in self._rooms[tenant_id].subscriptions:
                if everyone and subscription.topics is None:
                    if shared is None:
                        shared = b"".join([event.ws_bytes for event in batch])
                    subscription.offer(batch, shared)
                    queued += len(batch)
                else:
                    wanted = [event for event in batch if subscription.wants(event)]
                    subscription.offer(wanted)
                    queued += len(wanted)
        return queued

    def disconnect(self, tenant_id: str, user_id: str | None, ended: tuple[int, str]) -> int:
        """End the local connections of a tenant (of one user, if given); returns how many."""
        room = self._rooms.get(tenant_id)
        if room is None:
            return 0
        chosen = [s for s in room.subscriptions if user_id is None or s.user_id == user_id]
        for subscription in chosen:
            subscription.close(ended=ended)
        return len(chosen)

    def close_all(self) -> None:
        """End every stream because the server is going away (clients reconnect elsewhere)."""
        for room in self._rooms.values():
            for subscription in room.subscriptions:
                subscription.close(restarting=True)
