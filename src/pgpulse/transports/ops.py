"""A connection's client requests beyond ``ping``: topics added and dropped live.

The reader task (:mod:`pgpulse.transports.ws`) hands each client frame whose
``op`` is listed in :data:`OPS` to :meth:`ClientOps.handle`, which checks it
at once (a bad request gets its ``error`` frame straight back, and changes
nothing) and queues it for the writer. The writer acts on queued requests
between batches (:class:`pgpulse.transports.subscription.Requests`), so what
they send keeps its place in the stream.

A request may carry a ``"ref"`` (a string of up to 64 characters, or an
integer); the answer to it, or the error, carries the same ``ref``, so a
client can match answers to requests.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ..events import Event, control
from ..hub import Subscription
from .topics import RequestError, TopicChange, apply_topic_change, parse_topic_change

if TYPE_CHECKING:
    from .subscription import Stream

OPS = frozenset({"subscribe", "unsubscribe"})
MAX_PENDING = 32  # requests waiting for the writer; a client past it gets an error
MAX_REF_LENGTH = 64  # characters of a string "ref"


class ClientOps:
    """One connection's requests; the writer's :class:`Requests`.

    ``allowed`` is the token's topics (``None``: all): a request for a topic
    outside it is refused. Whoever replaces the connection's token replaces it.
    """

    def __init__(self, subscription: Subscription, allowed: frozenset[str] | None) -> None:
        self.subscription = subscription
        self.allowed = allowed
        self._queue: collections.deque[TopicChange] = collections.deque()

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
        try:
            change = parse_topic_change(
                frame, self.allowed, reads_all=self.subscription.topics is None
            )
        except RequestError as exc:
            return control("error", message=str(exc), **answer_ref)
        self._queue.append(change)
        self.subscription.interrupt()
        return None

    @property
    def pending(self) -> bool:
        return bool(self._queue)

    async def apply(self, stream: Stream, subscription: Subscription) -> AsyncIterator[Event | str]:
        # Until the writer asks for its next batch, the hub queues instead of
        # writing to the socket, so nothing overtakes what is sent here.
        subscription.busy = True
        while self._queue:
            change = self._queue.popleft()
            async for item in apply_topic_change(change, stream, subscription):
                yield item


def _valid_ref(ref: object) -> bool:
    if isinstance(ref, bool):
        return False
    if isinstance(ref, int):
        return abs(ref) < 2**53  # what a browser's number holds exactly
    return isinstance(ref, str) and len(ref) <= MAX_REF_LENGTH
