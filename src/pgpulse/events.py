"""Events and the frames that carry them.

An :class:`Event` is one committed row of ``pgpulse.events``. Its ``data`` is
kept as the JSON text PostgreSQL returned, and each wire form (a WebSocket
text frame, an SSE message) is encoded once, on first use, and then shared by
every connection that receives the event: a broadcast to 2,000 sockets costs
one serialisation, not 2,000.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeGuard

import orjson

# WebSocket close codes pgpulse uses (RFC 6455 §7.4.1 and the IANA registry).
WS_1008_POLICY_VIOLATION = 1008
WS_1009_MESSAGE_TOO_BIG = 1009
WS_1011_INTERNAL_ERROR = 1011
WS_1012_SERVICE_RESTART = 1012
WS_1013_TRY_AGAIN_LATER = 1013

MAX_NAME_LENGTH = 200
"""Longest tenant id, topic, type or user id, in characters (checked in SQL too)."""


def is_name(value: object) -> TypeGuard[str]:
    """Whether ``value`` can be a tenant id, topic, type or user id: the one rule for all."""
    return isinstance(value, str) and 1 <= len(value) <= MAX_NAME_LENGTH and "\x00" not in value


@dataclass(slots=True, eq=False)
class Event:
    """One event as clients see it.

    ``id`` is its position in its tenant's stream, taken when its transaction
    committed; ``key`` is what ``publish`` returned for it (unique in the
    database), so a publisher can recognise its own event.
    """

    id: int
    key: int
    tenant_id: str
    topic: str
    type: str
    data_json: str
    ts: datetime
    user_id: str | None = None
    _frame: str | None = field(default=None, repr=False)
    _ws_bytes: bytes | None = field(default=None, repr=False)
    _sse: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Event:
        """An event from a row of ``fetch_after`` or ``replay`` (sql/queries.sql), which
        select the same columns: tenant_id, id, key, topic, type, data::text, user_id,
        created_at."""
        tenant_id, event_id, key, topic, type_, data_json, user_id, created_at = row
        return cls(event_id, key, tenant_id, topic, type_, data_json, created_at, user_id)

    @property
    def data(self) -> Any:
        return orjson.loads(self.data_json)

    @property
    def frame(self) -> str:
        """The WebSocket text frame, built once."""
        if self._frame is None:
            body: dict[str, Any] = {
                "id": self.id,
                "key": self.key,
                "tenant_id": self.tenant_id,
                "topic": self.topic,
                "type": self.type,
                "data": orjson.Fragment(self.data_json),
                "ts": self.ts.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            }
            if self.user_id is not None:
                body["user_id"] = self.user_id
            self._frame = orjson.dumps(body).decode()
        return self._frame

    @property
    def ws_bytes(self) -> bytes:
        """The whole WebSocket message on the wire (an unmasked text frame, RFC 6455 §5.2).

        Built once, so that writing it to a socket is one ``transport.write``.
        """
        if self._ws_bytes is None:
            payload = self.frame.encode()
            n = len(payload)
            if n < 126:
                header = bytes((0x81, n))
            elif n < 1 << 16:
                header = bytes((0x81, 126)) + n.to_bytes(2, "big")
            else:
                header = bytes((0x81, 127)) + n.to_bytes(8, "big")
            self._ws_bytes = header + payload
        return self._ws_bytes

    @property
    def sse(self) -> bytes:
        """The Server-Sent Events message, built once.

        The type goes on the ``event:`` line; SSE field values end at a line
        break, so line breaks in it are replaced (the JSON frame keeps it whole).
        """
        if self._sse is None:
            event_name = self.type.replace("\r", " ").replace("\n", " ")
            self._sse = f"id: {self.id}\nevent: {event_name}\ndata: {self.frame}\n\n".encode()
        return self._sse

    @property
    def size(self) -> int:
        """Approximate bytes on the wire, for outbound queue limits."""
        return len(self.data_json) + 160


def control(op: str, **fields: Any) -> str:
    """A control frame: it carries ``op`` and never an ``id``."""
    return orjson.dumps({"op": op, **fields}).decode()


def parse_event(frame: str | bytes) -> Event | None:
    """Read an event frame as a client; control frames give ``None``."""
    body = orjson.loads(frame)
    if not isinstance(body, dict) or "id" not in body:
        return None
    return Event(
        id=int(body["id"]),
        key=int(body["key"] if "key" in body else body["id"]),
        tenant_id=str(body["tenant_id"]),
        topic=str(body["topic"]),
        type=str(body["type"]),
        data_json=orjson.dumps(body.get("data")).decode(),
        ts=datetime.fromisoformat(str(body["ts"]).replace("Z", "+00:00")),
        user_id=body.get("user_id"),
    )
