"""A connection's client requests beyond ``ping``: topics added and dropped live
(:mod:`.topics`), and presence (:mod:`.presence_ops`).

The reader task (:mod:`pgpulse.transports.ws`) hands each client frame whose
``op`` is listed in :data:`OPS` to :meth:`ClientOps.handle`, which checks it
at once (a bad request gets its ``error`` frame straight back, and changes
nothing) and queues it for the writer. The writer acts on queued requests
between batches (:class:`pgpulse.transports.subscription.Requests`), so what
they send keeps its place in the stream. Presence changes of other members
arrive from the node's listener into a bounded outbox, which the writer
sends the same way; a connection that lets it overflow is a slow consumer.

A request may carry a ``"ref"`` (a string of up to 64 characters, or an
integer); the answer to it, or the error, carries the same ``ref``, so a
client can match answers to requests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..events import Event, control
from ..hub import Subscription
from ..presence import Presence
from .presence_ops import PRESENCE_OPS, ConnectionPresence, PresenceRequest, parse_presence_request
from .topics import RequestError, TopicChange, apply_topic_change, parse_topic_change

if TYPE_CHECKING:
    from .subscription import Stream

OPS = frozenset({"subscribe", "unsubscribe"}) | PRESENCE_OPS
MAX_PENDING = 32  # requests waiting for the writer; a client past it gets an error
MAX_REF_LENGTH = 64  # characters of a string "ref"
MAX_OUTBOX = 1000  # presence changes waiting for the writer before the connection is slow


class ClientOps:
    """One connection's requests; the writer's :class:`Requests`.

    ``allowed`` is the token's topics (``None``: all): a request for a topic
    outside it is refused. Whoever replaces the connection's token replaces it.
    Without ``presence`` (a server that has none), presence requests are refused.

    Every connection has one, and most never send a request: it holds plain
    lists, made on first use (a deque is a 64-slot block, about 0.6 KiB), and
    its presence only once it asks for presence.
    """

    __slots__ = (
        "_may_read",
        "_node_presence",
        "_outbox",
        "_queue",
        "allowed",
        "max_info_bytes",
        "presence",
        "subscription",
    )

    def __init__(
        self,
        subscription: Subscription,
        allowed: frozenset[str] | None,
        presence: Presence | None = None,
        max_info_bytes: int = 1024,
        may_read: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.subscription = subscription
        self._may_read = may_read
        """The app's ``authorize_topic``, for each topic a request adds (library mode)."""
        self.allowed = allowed
        self.max_info_bytes = max_info_bytes
        self._node_presence = presence
        self._queue: list[TopicChange | PresenceRequest] = []
        self._outbox: list[str] | None = None
        self.presence: ConnectionPresence | None = None

    def replace_allowed(self, allowed: frozenset[str] | None) -> None:
        """The connection's token was replaced (``refresh``).

        Requests already queued were checked against the old token: each is
        checked again when the writer takes it (:meth:`_refusal`). Presence in
        a topic the new token does not allow is left at once, through the
        writer, so the client reads ``presence.left`` in its place in the
        stream.
        """
        self.allowed = allowed
        if allowed is None or self.presence is None:
            return
        dropped = [topic for topic in self.presence.topics if topic not in allowed]
        for topic in dropped:
            self._queue.append(PresenceRequest("leave", topic))
        if dropped:
            self.subscription.interrupt()

    def handle(self, frame: dict[str, Any]) -> str | None:
        """Check and queue one request; returns an ``error`` frame to send at once, or None."""
        ref = frame.get("ref")
        if ref is not None and not _valid_ref(ref):
            return control(
                "error",
                message=f'"ref" must be an integer or a string of at most {MAX_REF_LENGTH} chars',
            )
        answer_ref = {} if ref is None else {"ref": ref}
        if len(self._queue) >= MAX_PENDING:
            return control(
                "error",
                message=f"{MAX_PENDING} requests are waiting already; send more once answered",
                **answer_ref,
            )
        request: TopicChange | PresenceRequest
        try:
            if frame["op"] in PRESENCE_OPS:
                if self._node_presence is None:
                    raise RequestError("this server has no presence")
                request = parse_presence_request(frame, self.allowed, self.max_info_bytes)
                if self.presence is None:
                    self.presence = ConnectionPresence(
                        self._node_presence,
                        self.subscription.tenant_id,
                        self.subscription.user_id,
                        self._queue_frame,
                    )
            else:
                request = parse_topic_change(
                    frame, self.allowed, reads_all=self.subscription.topics is None
                )
        except RequestError as exc:
            return control("error", message=str(exc), **answer_ref)
        self._queue.append(request)
        self.subscription.interrupt()
        return None

    def _queue_frame(self, frame: str) -> None:
        """A frame from elsewhere (a presence change) for the writer to send; never blocks."""
        if self._outbox is None:
            self._outbox = []
        if len(self._outbox) >= MAX_OUTBOX:
            self._outbox.clear()
            self.subscription.overflowed = True  # the writer closes it with 1013
        else:
            self._outbox.append(frame)
        self.subscription.interrupt()

    @property
    def pending(self) -> bool:
        return bool(self._queue or self._outbox)

    async def apply(self, stream: Stream, subscription: Subscription) -> AsyncIterator[Event | str]:
        # Until the writer asks for its next batch, the hub queues instead of
        # writing to the socket, so nothing overtakes what is sent here.
        subscription.busy = True
        while self._queue or self._outbox:
            if self._outbox:
                frames, self._outbox = self._outbox, []
                for frame in frames:
                    yield frame
                continue
            request = self._queue.pop(0)
            refusal = await self._refusal(request)
            if refusal is not None:
                yield refusal
            elif isinstance(request, TopicChange):
                async for item in apply_topic_change(request, stream, subscription):
                    yield item
            elif self.presence is not None:
                async for frame in self.presence.apply(request):
                    yield frame

    async def _refusal(self, request: TopicChange | PresenceRequest) -> str | None:
        """The ``error`` frame for a topic this connection may no longer read.

        The token may have been refreshed to fewer topics since the request
        was queued; and in library mode the app's ``authorize_topic`` decides.
        """
        if isinstance(request, TopicChange):
            topics = sorted(request.topics) if request.add else []
        else:
            topics = [request.topic] if request.action != "leave" else []
        ref = {} if request.ref is None else {"ref": request.ref}
        if self._may_read is not None:
            for topic in topics:
                if not await self._may_read(topic):
                    return control("error", message=f"topic {topic!r} is not allowed", **ref)
        # Last, with no await before the request is applied: a refresh cannot slip between.
        allowed = self.allowed
        if allowed is not None and (denied := [t for t in topics if t not in allowed]):
            return control(
                "error", message=f"token does not allow topic(s): {', '.join(denied)}", **ref
            )
        return None

    async def close(self) -> None:
        """The connection is gone: leave its presence (bounded)."""
        if self.presence is not None:
            await self.presence.close()


def _valid_ref(ref: object) -> bool:
    if isinstance(ref, bool):
        return False
    if isinstance(ref, int):
        return abs(ref) < 2**53  # what a browser's number holds exactly
    return isinstance(ref, str) and len(ref) <= MAX_REF_LENGTH
