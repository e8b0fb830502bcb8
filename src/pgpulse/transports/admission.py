"""Who may open a stream, on which topics, from where: the checks WebSocket and SSE share.

A transport is handed the caller's principal, already resolved by whoever
mounted it (pgpulse's JWT provider in ``pgpulse serve``, the app's own
dependency in library mode), or the reason it was refused. :func:`admit`
adds what the transport itself must check, in this order, before any event
is sent:

1. the Origin of a WebSocket (cross-site WebSocket hijacking: a browser
   sends the user's cookies with a WebSocket opened by any site, and no CORS
   rule stops it, so the server must refuse other origins itself);
2. the principal;
3. the topics asked for, each allowed by the principal and by the app's
   ``authorize_topic``;
4. the resume point.

Every refusal is a :class:`Refused`, which carries both answers: an HTTP
status for SSE and a close code for a WebSocket.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import HTTPException
from starlette.requests import HTTPConnection

from ..auth import Principal
from ..errors import ForbiddenTopic
from ..events import WS_1008_POLICY_VIOLATION

ANY_ORIGIN = "*"
MAX_RESUME_DIGITS = 18  # fits a bigint

TopicCheck = Callable[[Principal, str], bool | Awaitable[bool]]
"""``authorize_topic(principal, topic)``: whether the principal may read the topic."""


class Refused(Exception):
    """A stream refused before any event: ``status`` for HTTP, ``code`` for a WebSocket."""

    def __init__(
        self,
        message: str,
        status: int = 401,
        code: int = WS_1008_POLICY_VIOLATION,
        headers: Mapping[str, str] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.headers = dict(headers) if headers else None
        """Headers of the HTTP answer (``WWW-Authenticate`` for a refused token)."""
        self.reason = reason or message
        """The WebSocket close reason, when ``message`` is too long for one (123 bytes)."""

    def as_http(self) -> HTTPException:
        """The HTTP answer to the refusal (FastAPI turns it into ``{"detail": ...}``)."""
        return HTTPException(self.status, self.message, headers=self.headers)


@dataclass(frozen=True, slots=True)
class Admission:
    """An admitted stream: whose it is, what it reads, where it resumes."""

    principal: Principal
    topics: frozenset[str] | None
    resume_from: int | None
    policy: Policy | None = None
    """What admitted it: topics a live connection adds later pass the same checks."""

    async def may_read(self, topic: str) -> bool:
        """Whether the app's ``authorize_topic`` lets this principal read ``topic``
        (the token's own topics are checked where requests are parsed)."""
        check = self.policy.authorize_topic if self.policy is not None else None
        if check is None:
            return True
        allowed = check(self.principal, topic)
        if inspect.isawaitable(allowed):
            allowed = await allowed
        return bool(allowed)


@dataclass(frozen=True, slots=True)
class Policy:
    """What the app allows beyond its principal.

    ``origins``: the origins whose pages may open a WebSocket; ``None`` means
    the page's own origin only (the request's ``Host``), ``"*"`` in it means any.
    """

    origins: frozenset[str] | None = None
    authorize_topic: TopicCheck | None = None

    @classmethod
    def build(
        cls, origins: str | Iterable[str] | None, authorize_topic: TopicCheck | None = None
    ) -> Policy:
        if origins is None:
            return cls(None, authorize_topic)
        if isinstance(origins, str):
            origins = [o for o in origins.split(",") if o.strip()]
        return cls(frozenset(_origin(o) for o in origins), authorize_topic)

    def origin_allowed(self, conn: HTTPConnection) -> bool:
        """Whether the connection's page may use it; a request with no Origin is no page's."""
        origin = conn.headers.get("origin")
        if origin is None:
            return True  # not a browser's cross-site request: browsers always send Origin
        if self.origins is not None:
            return ANY_ORIGIN in self.origins or _origin(origin) in self.origins
        host = conn.headers.get("host")
        return host is not None and _authority(urlsplit(_origin(origin)).netloc) == _authority(host)

    async def topics(self, principal: Principal, requested: str | None) -> frozenset[str] | None:
        """The topics a stream reads; raises :class:`Refused` for one it may not."""
        try:
            topics = principal.allowed_topics(requested)
        except ForbiddenTopic as exc:
            raise Refused(str(exc), 403) from None
        except ValueError as exc:  # a malformed list (pgpulse.limits.parse_topics)
            raise Refused(str(exc), 422) from None
        check = self.authorize_topic
        if check is None:
            return topics
        if topics is None:
            raise Refused(
                "name the topics to read (?topics=a,b): this server authorizes each topic", 403
            )
        for topic in sorted(topics):
            allowed = check(principal, topic)
            if inspect.isawaitable(allowed):
                allowed = await allowed
            if not allowed:
                raise Refused(f"topic {topic!r} is not allowed", 403)
        return topics


async def admit(
    conn: HTTPConnection,
    principal: Principal | Refused,
    policy: Policy,
    last_event_id: str | None,
    *,
    check_origin: bool,
) -> Admission:
    """Admit a stream or raise :class:`Refused` saying why."""
    if check_origin and not policy.origin_allowed(conn):
        origin = conn.headers.get("origin", "")
        raise Refused(f"origin {origin[:100]} is not allowed to open this WebSocket", 403)
    if isinstance(principal, Refused):
        raise principal
    topics = await policy.topics(principal, conn.query_params.get("topics"))
    try:
        resume_from = parse_last_event_id(last_event_id)
    except ValueError as exc:
        raise Refused(str(exc), 422) from None
    return Admission(principal, topics, resume_from, policy)


def parse_last_event_id(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > MAX_RESUME_DIGITS:
        raise ValueError(f"last_event_id must be a non-negative integer, got {value[:40]!r}")
    return int(value)


def _origin(value: str) -> str:
    """An origin as browsers send it: lower-case, no trailing slash."""
    return value.strip().rstrip("/").lower()


def _authority(value: str) -> str:
    """``host[:port]`` without a default port, which some clients write and others omit."""
    value = value.strip().lower()
    for default in (":80", ":443"):
        if value.endswith(default):
            return value[: -len(default)]
    return value
