"""Bounds on what a client may send, checked before authentication and parsing.

Everything a caller controls has a size: request bodies (:class:`BodyLimit`,
on every HTTP route, ahead of the app), tokens (:data:`MAX_TOKEN_BYTES`,
before any base64 or JSON is decoded), topic lists (:func:`parse_topics`)
and WebSocket close reasons (:func:`close_reason`, which RFC 6455 caps at
123 bytes). What the HTTP layer itself cannot bound (header sizes and the
time a client takes to send them) is a reverse proxy's job; see
``docs/security.md``.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .events import MAX_NAME_LENGTH, is_name

MAX_TOKEN_BYTES = 8 * 1024
"""Longest token accepted; longer ones are refused before they are decoded."""
MAX_TOPICS = 100
"""Most topics one connection may name in ``topics=`` (or one refresh)."""
MAX_ID = 2**63 - 1
"""The largest id a query may name (PostgreSQL's bigint); past it a query would fail."""
MAX_CLOSE_REASON_BYTES = 123
"""A WebSocket close frame's reason, in UTF-8 bytes (RFC 6455 §5.5: 125 minus the code)."""


def parse_topics(requested: str | None) -> frozenset[str] | None:
    """The topics named in a comma-separated ``topics=`` value; None when it names none.

    Raises :class:`ValueError` for more than :data:`MAX_TOPICS` topics or for
    a name pgpulse.events would refuse (too long, or holding a NUL), so that
    such a value never reaches SQL.
    """
    if requested is None:
        return None
    if len(requested) > MAX_TOPICS * (MAX_NAME_LENGTH + 1):
        raise ValueError(f"topics is {len(requested)} characters; too long")
    names = [t.strip() for t in requested.split(",") if t.strip()]
    if not names:  # "topics=," names nothing: the default, not "no topic at all"
        return None
    return check_topics(names)


def check_topics(names: list[str] | tuple[str, ...]) -> frozenset[str]:
    """``names`` as a set of topics, each valid, at most :data:`MAX_TOPICS` of them."""
    if len(names) > MAX_TOPICS:
        raise ValueError(f"{len(names)} topics named; at most {MAX_TOPICS} are allowed")
    for name in names:
        if not is_name(name):
            shown = repr(name[:40]) if isinstance(name, str) else type(name).__name__
            raise ValueError(
                f"topic {shown} is not valid: 1 to {MAX_NAME_LENGTH} characters, no NUL"
            )
    return frozenset(names)


def close_reason(text: str) -> str:
    """``text`` cut to what a close frame can carry, never in the middle of a character."""
    raw = text.encode()
    if len(raw) <= MAX_CLOSE_REASON_BYTES:
        return text
    return raw[:MAX_CLOSE_REASON_BYTES].decode("utf-8", errors="ignore")


class BodyTooLarge(Exception):
    """Raised from ``receive`` once a body passes its limit (the app never sees more)."""


class BodyLimit:
    """ASGI middleware: every HTTP request body is bounded, before routing and auth.

    A declared ``Content-Length`` over the limit is answered with 413 before
    a byte of the body is read. A body without one (chunked) is counted as
    the app reads it; past the limit the read fails and the answer is 413.
    Nothing is buffered here, so memory stays bounded by the limit whatever
    a client sends. The connection is kept: uvicorn reads and drops the rest
    of the body, so the client (still sending) reads the answer rather than a
    reset.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await _too_large(send, f"body is {declared} bytes; the limit is {self.limit} bytes")
            return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if not started:
                await _too_large(send, f"body is over the limit of {self.limit} bytes")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def _too_large(send: Send, detail: str) -> None:
    body = b'{"detail":"' + detail.encode() + b'"}'
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
