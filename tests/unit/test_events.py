"""Frames: encoded once, shaped as the contract says."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from pgpulse.events import Event, control, parse_event


def test_frame_shape_and_roundtrip() -> None:
    e = Event(
        7,
        901,
        "acme",
        "notifications",
        "notification",
        '{"message": "hi"}',
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "u1",
    )
    body = orjson.loads(e.frame)
    assert body == {
        "id": 7,
        "key": 901,
        "tenant_id": "acme",
        "topic": "notifications",
        "type": "notification",
        "data": {"message": "hi"},
        "ts": "2026-01-02T03:04:05Z",
        "user_id": "u1",
    }
    assert e.frame is e.frame  # built once
    back = parse_event(e.frame)
    assert back is not None and back.id == 7 and back.data == {"message": "hi"}


def test_sse_message_and_control() -> None:
    e = Event(1, 1, "a", "t", "evil\ntype", "{}", datetime.now(UTC))
    text = e.sse.decode()
    assert text.startswith("id: 1\nevent: evil type\ndata: {")
    assert text.endswith("\n\n") and text.count("\n") == 4
    assert orjson.loads(control("ready", last_event_id=3)) == {"op": "ready", "last_event_id": 3}
    assert parse_event(control("pong")) is None


def test_ws_bytes_is_one_unmasked_text_frame() -> None:
    from websockets.frames import Frame, Opcode

    for size in (10, 35, 200, 70_000):
        e = Event(1, 1, "a", "t", "x", orjson.dumps("y" * size).decode(), datetime.now(UTC))
        data = e.ws_bytes
        # websockets' own parser, reading as a client reads (server frames are unmasked).
        offset = 0

        def read_exact(n: int, data: bytes = data) -> Any:
            nonlocal offset
            chunk = data[offset : offset + n]
            offset += n
            yield from ()
            return chunk

        parser = Frame.parse(read_exact, mask=False)
        try:
            next(parser)
            raise AssertionError("parser wanted more data")
        except StopIteration as done:
            frame = done.value
        assert offset == len(data)
        assert frame.opcode is Opcode.TEXT and frame.fin
        assert frame.data.decode() == e.frame
