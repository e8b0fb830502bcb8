"""A connection's presence: the topics it joined, and the changes it is sent.

Requests (answered by the writer, in the stream's order):

* ``{"op": "presence.join", "topic", "info"?}``: be a member of the topic's
  presence, with ``info`` (any JSON, up to ``PGPULSE_PRESENCE_MAX_INFO_BYTES``
  encoded) beside the token's user; joining again updates ``info``. Answered
  with the topic's state, ``{"op": "presence", "topic", "members", "self"}``
  (``self`` is this connection's member id), then the other members'
  changes: ``{"op": "presence.joined", "topic", "member"}`` and
  ``{"op": "presence.left", "topic", "member"}``.
* ``{"op": "presence.leave", "topic"}``: answered ``presence.left`` with
  this member.
* ``{"op": "presence.get", "topic"}``: the state once, member or not.

A member is ``{"id", "user_id", "info", "joined_at"}``: ``user_id`` is the
token's ``sub`` (verified), ``info`` what the client said (not verified).

Each topic's changes carry a version in commit order (see
:mod:`pgpulse.presence`); a connection forwards only versions above the
state it sent last, so the state and the changes after it fit exactly.
Leaving the socket leaves every topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import DatabaseUnavailable
from ..events import control, is_name
from ..presence import LEAVE_TIMEOUT, Presence, PresenceError
from .topics import RequestError

MAX_PRESENCE_TOPICS = 16  # topics one connection is a member of at most
PRESENCE_OPS = frozenset({"presence.join", "presence.leave", "presence.get"})


@dataclass(frozen=True, slots=True)
class PresenceRequest:
    action: str  # join, leave or get
    topic: str
    info_json: str | None = None
    ref: str | int | None = None


def parse_presence_request(
    frame: dict[str, Any], allowed: frozenset[str] | None, max_info_bytes: int
) -> PresenceRequest:
    """The request in ``frame``, checked; raises :class:`RequestError`."""
    action = frame["op"].removeprefix("presence.")
    topic = frame.get("topic")
    if not is_name(topic):
        raise RequestError('"topic" must be a string of 1 to 200 characters')
    if allowed is not None and topic not in allowed:
        raise RequestError(f"token does not allow topic(s): {topic}")
    info_json = None
    if "info" in frame:
        if action != "join":
            raise RequestError('"info" goes with presence.join only')
        info_json = orjson.dumps(frame["info"]).decode()
        if len(info_json.encode()) > max_info_bytes:
            raise RequestError(
                f'"info" is {len(info_json.encode())} bytes of JSON; at most {max_info_bytes}'
            )
    return PresenceRequest(action, topic, info_json, frame.get("ref"))


class ConnectionPresence:
    """One connection's memberships; the :class:`pgpulse.presence.Watcher` of its topics.

    ``send`` queues a frame for the writer (and never blocks).
    """

    def __init__(
        self,
        presence: Presence,
        tenant_id: str,
        user_id: str | None,
        send: Callable[[str], None],
    ) -> None:
        self.presence = presence
        self.tenant_id = tenant_id
        self.user_id = user_id
        self.member_id = secrets.token_hex(8)
        self._send = send
        # topic -> the version of the last state or change sent; None while joining
        self._versions: dict[str, int | None] = {}
        self._held: dict[str, list[tuple[int, str, dict[str, Any]]]] = {}

    @property
    def topics(self) -> list[str]:
        """The topics this connection is a member of, or joining."""
        return list(self._versions)

    # -- Watcher ------------------------------------------------------------

    def presence_changed(self, topic: str, version: int, kind: str, member: dict[str, Any]) -> None:
        if topic not in self._versions:
            return
        known = self._versions[topic]
        if known is None:
            self._held.setdefault(topic, []).append((version, kind, member))
            return
        if version <= known:
            return  # already in the state sent
        self._versions[topic] = version
        op = "presence.joined" if kind == "join" else "presence.left"
        self._send(control(op, topic=topic, member=member))

    def presence_reset(self, topic: str, version: int, members: list[dict[str, Any]]) -> None:
        known = self._versions.get(topic)
        if known is None or version <= known:
            return
        self._versions[topic] = version
        self._send(control("presence", topic=topic, members=members, self=self.member_id))

    # -- requests -----------------------------------------------------------

    async def apply(self, request: PresenceRequest) -> AsyncIterator[str]:
        ref = {} if request.ref is None else {"ref": request.ref}
        topic = request.topic
        if request.action == "get":
            try:
                _, members = await self.presence.state(self.tenant_id, topic)
            except PresenceError as exc:
                yield control("error", message=str(exc), **ref)
                return
            yield control("presence", topic=topic, members=members, **ref)
            return
        if request.action == "leave":
            if topic in self._versions:
                del self._versions[topic]
                self._held.pop(topic, None)
                with contextlib.suppress(PresenceError):  # its row expires instead
                    await self.presence.leave(self.tenant_id, topic, self.member_id)
            yield control("presence.left", topic=topic, member={"id": self.member_id}, **ref)
            return
        if topic not in self._versions and len(self._versions) >= MAX_PRESENCE_TOPICS:
            yield control(
                "error",
                message=f"a connection is present in at most {MAX_PRESENCE_TOPICS} topics",
                **ref,
            )
            return
        previous = self._versions.get(topic)
        self._versions[topic] = None  # changes wait for the state
        try:
            version, members = await self.presence.join(
                self.tenant_id, topic, self.member_id, self.user_id, request.info_json, self
            )
        except PresenceError as exc:  # full, or a failure the client can do nothing about
            self._held.pop(topic, None)
            if previous is None:
                del self._versions[topic]
            else:
                self._versions[topic] = previous
            yield control("error", message=str(exc), **ref)
            return
        self._versions[topic] = version
        yield control("presence", topic=topic, members=members, self=self.member_id, **ref)
        for held in sorted(self._held.pop(topic, []), key=lambda change: change[0]):
            self.presence_changed(topic, *held)

    async def close(self) -> None:
        """Leave every topic (bounded: a dead database lets the rows expire instead)."""
        topics = sorted(self._versions)
        self._versions.clear()
        with contextlib.suppress(TimeoutError, DatabaseUnavailable, PresenceError):
            async with asyncio.timeout(LEAVE_TIMEOUT):
                for topic in topics:
                    await self.presence.leave(self.tenant_id, topic, self.member_id)
