"""Enough of socket.io's wire protocol for a receiver on the bench's own WebSocket client.

socket.io clients speak Engine.IO v4 over a plain WebSocket
(``/socket.io/?EIO=4&transport=websocket``), one packet per message, its
type the first character: ``0`` open (with the session's settings), ``2``
ping (answered with ``3`` pong, or the server drops the client after its
ping timeout), ``1`` close, ``4`` a socket.io packet. A socket.io packet's
type is the next character: ``0`` connect (the client sends ``40`` to join
the main namespace; the server answers ``40{"sid": ...}``), ``1``
disconnect, ``2`` an event ``["name", args...]``, ``4`` a connect error.

A receiver only needs the main namespace, events without acknowledgements
and text packets, so that is all this decodes; the full client would cost
more CPU per frame than the server it measures. :func:`receive` turns each
packet into what the receivers already read from pgpulse and the baseline:
an event's first argument (the published JSON), or ``{"op": name}`` for
everything else that they count as control frames.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

PATH = "/socket.io/?EIO=4&transport=websocket"
"""The Engine.IO v4 handshake, straight onto the WebSocket transport."""

_OPEN, _CLOSE, _PING, _MESSAGE = ord("0"), ord("1"), ord("2"), ord("4")
_CONNECT, _DISCONNECT, _EVENT, _CONNECT_ERROR = ord("0"), ord("1"), ord("2"), ord("4")
_CONTROLS = {_CONNECT: "connect", _DISCONNECT: "disconnect", _CONNECT_ERROR: "connect_error"}


class Sender(Protocol):
    def send_text(self, text: str) -> None: ...


def receive(client: Sender, payload: bytes) -> dict[str, Any] | None:
    """One Engine.IO packet in; the body it carries, or ``None`` when there is none.

    Answers what needs an answer on ``client``: the open packet with a
    connect to the main namespace, a ping with a pong. The event ``ready``
    becomes ``{"op": "ready"}``; any other event becomes its first argument
    when that is a JSON object.
    """
    if not payload:
        return None
    kind = payload[0]
    if kind == _PING:
        client.send_text("3" + payload[1:].decode())
        return None
    if kind == _OPEN:
        client.send_text("40")
        return {"op": "open"}
    if kind == _CLOSE:
        return {"op": "close"}
    if kind != _MESSAGE or len(payload) < 2:
        return None
    packet = payload[1]
    if packet != _EVENT:
        return {"op": _CONTROLS.get(packet, "other")}
    event = orjson.loads(payload[2:])
    if not isinstance(event, list) or not event or not isinstance(event[0], str):
        return {"op": "other"}
    if event[0] == "ready":
        return {"op": "ready"}
    body = event[1] if len(event) > 1 else None
    return body if isinstance(body, dict) else {"op": event[0]}
