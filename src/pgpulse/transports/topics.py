"""Topics added to and dropped from a live connection, with exact catch-up.

A client on ``/ws`` sends ``{"op": "subscribe", "topics": [...],
"last_event_id"?: R}`` or ``{"op": "unsubscribe", "topics": [...]}`` (either
may carry a ``"ref"``, echoed in the answer). The connection keeps its one
promise: the ids it sends strictly increase, never repeat, and no event it
should send is skipped.

How a subscribe is merged into the stream
-----------------------------------------
The writer task acts on a request between batches (never in the middle of
one), and begins, with no ``await`` in between, by reading:

* ``P``, the connection's position: the newest id it has sent (or skipped);
* ``C``, the room's cursor: the newest id the hub has dispatched. Every
  event this connection wants that is at or below ``C`` is either sent
  (``<= P``) or waiting in its queue; every event above ``C`` is still to
  be dispatched;

and then, still synchronously, it takes the queued events (old topics, in
``(P, C]``), adds the new topics to the connection's filter, and stops the
hub from writing straight to the socket until it is done. From here every
dispatched event (``> C``) is filtered with the new topics and queued.

The new topics start after ``F``:

* without ``last_event_id``, ``F = C``: from now;
* with ``last_event_id = R``, ``F = max(P, R)``. Ids up to ``P`` have been
  sent already, so an older event of a new topic cannot follow them without
  breaking the order: the connection starts the topic after ``P``, and a
  client that wants the new topic's events in ``(R, P]`` reads them with
  ``GET /api/events?topic=T&after=R&before=P+1``.

The writer answers ``{"op": "subscribed", "topics": [...],
"last_event_id": F}``, then sends the merge, by id, of the taken queue and the
new topics' retained events in ``(F, C]`` read from the table; its position
is then ``max(P, C)``, and the live stream goes on from the queue, whose
events are all above ``C``. Every id sent is above ``P`` and the merge is in
id order, so ids keep strictly increasing; each event at or below ``C`` came
from exactly one of the queue (old topics) and the table (new topics), and
each above ``C`` from the queue, so there is no gap and no duplicate.

When ``F > C`` (a resume point the hub has not reached yet, e.g. read from
``GET /api/position``), nothing is replayed, and the new topics get a floor:
their events at or below ``F`` are not wanted (:attr:`Subscription.floors`),
so the ones still to be dispatched in ``(C, F]`` are skipped.

An unsubscribe drops the topics from the filter and their events from the
queue, and answers ``{"op": "unsubscribed", "topics": [...],
"last_event_id": P}``: events of those topics up to ``P`` may have been
delivered, none after it.

A topic the token does not allow is refused with an ``error`` frame and
nothing changes; the socket stays open. A connection that reads every topic
(no ``topics`` asked for, and a token that allows all) already has any topic
a subscribe names, and cannot drop one: ask for ``topics`` when connecting
to change them later.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..events import Event, control, is_name
from ..hub import Subscription

if TYPE_CHECKING:
    from .subscription import Stream

MAX_TOPICS = 256  # topics one connection reads at most


class RequestError(ValueError):
    """A client's request that cannot be done; its message goes back in an ``error`` frame."""


@dataclass(frozen=True, slots=True)
class TopicChange:
    """A subscribe (``add``) or an unsubscribe, as the client asked for it."""

    add: bool
    topics: frozenset[str]
    after: int | None = None
    ref: str | int | None = None


def parse_topic_change(
    frame: dict[str, Any], allowed: frozenset[str] | None, reads_all: bool
) -> TopicChange:
    """The request in ``frame``, checked against the token's topics (``allowed``).

    Raises :class:`RequestError` for a request that cannot be done.
    """
    add = frame["op"] == "subscribe"
    topics = frame.get("topics")
    if not isinstance(topics, list) or not topics:
        raise RequestError('"topics" must be a non-empty list of topic names')
    if len(topics) > MAX_TOPICS:
        raise RequestError(f'"topics" names {len(topics)} topics; at most {MAX_TOPICS}')
    if not all(is_name(topic) for topic in topics):
        raise RequestError("each topic must be a string of 1 to 200 characters")
    wanted = frozenset(topics)
    if allowed is not None and not wanted <= allowed:
        denied = ", ".join(sorted(wanted - allowed))
        raise RequestError(f"token does not allow topic(s): {denied}")
    after = frame.get("last_event_id")
    if not add and after is not None:
        raise RequestError('"last_event_id" goes with subscribe only')
    if after is not None and (type(after) is not int or after < 0):
        raise RequestError('"last_event_id" must be a non-negative integer')
    if not add and reads_all:
        raise RequestError(
            "this connection reads every topic; connect with ?topics= to choose topics"
        )
    return TopicChange(add, wanted, after, frame.get("ref"))


async def apply_topic_change(
    change: TopicChange, stream: Stream, subscription: Subscription
) -> AsyncIterator[Event | str]:
    """Change the connection's topics as the module docstring says; yields what to send.

    For the writer only, between batches, with the hub kept from writing
    straight to the socket (``subscription.busy``) until it asks for more.
    """
    ref = {} if change.ref is None else {"ref": change.ref}
    tenant = subscription.tenant_id
    position = subscription.position
    cursor = max(position, stream.hub.positions([tenant]).get(tenant, position))
    current = subscription.topics
    if subscription.floors:
        # Floors at or below the cursor no longer hold anything back.
        subscription.floors = {t: f for t, f in subscription.floors.items() if f > cursor} or None
    if not change.add:
        assert current is not None  # parse_topic_change refuses it otherwise
        held = subscription.take_queued()
        subscription.topics = current - change.topics
        if subscription.floors:
            subscription.floors = {
                t: f for t, f in subscription.floors.items() if t not in change.topics
            } or None
        yield control("unsubscribed", topics=sorted(change.topics), last_event_id=position, **ref)
        for event in held:
            if subscription.wants(event):
                yield event
        subscription.position = cursor
        return

    if current is None:  # reads every topic already
        yield control("subscribed", topics=sorted(change.topics), last_event_id=position, **ref)
        return
    new = change.topics - current
    if len(current) + len(new) > MAX_TOPICS:
        yield control(
            "error",
            message=f"a connection reads at most {MAX_TOPICS} topics; "
            f"this one reads {len(current)} and asked for {len(new)} more",
            **ref,
        )
        return
    start = cursor if change.after is None else max(position, change.after)
    held = subscription.take_queued()
    subscription.topics = current | new
    if new and start > cursor:
        subscription.floors = {**(subscription.floors or {}), **dict.fromkeys(new, start)}
    yield control("subscribed", topics=sorted(change.topics), last_event_id=start, **ref)
    if new and start < cursor:
        replayed = stream.history.replay(tenant, start, cursor, new, subscription.user_id)
        async for event in _merge(held, replayed):
            yield event
    else:
        for event in held:
            yield event
    subscription.position = cursor


async def _merge(held: list[Event], replayed: AsyncIterator[Event]) -> AsyncIterator[Event]:
    """Two id-ordered streams as one; they share no id (different topics)."""
    i = 0
    async for event in replayed:
        while i < len(held) and held[i].id < event.id:
            yield held[i]
            i += 1
        yield event
    for event in held[i:]:
        yield event
