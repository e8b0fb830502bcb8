"""uvicorn's WebSocket protocol, able to write a pre-framed message in one call.

ASGI sends a message as a dict that the server frames anew for every socket.
For a broadcast that is the main cost, so ``pgpulse serve`` runs uvicorn with
this subclass (an app's own uvicorn can too: ``ws=PROTOCOL_PATH``), which adds
the ASGI scope extension ``pgpulse.write_frame``: a function that writes an
already framed message (:attr:`pgpulse.events.Event.ws_bytes`) straight to
the transport, or returns ``False`` when it cannot do so at once (not open,
closing, or the socket is backed up), leaving the caller to queue it and use
the ordinary ASGI path. Under any other ASGI server the extension
is absent and pgpulse uses the ordinary path only.

A frame written this way is an uncompressed text message, which RFC 7692
allows even when per-message deflate was negotiated.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

EXTENSION = "pgpulse.write_frame"
PROTOCOL_PATH = "pgpulse.transports.uvicorn_ws:WebSocketProtocol"
"""What ``uvicorn.run(..., ws=...)`` takes to use this protocol in an app's own server."""


class WebSocketProtocol(WebSocketsSansIOProtocol):
    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        # The app's task is scheduled but has not run: its scope can still grow.
        scope = getattr(self, "scope", None)
        if scope is not None and not self.close_sent:
            scope["extensions"][EXTENSION] = {"write": self.write_frame}

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept" and self.handshake_complete:
            # The handshake's request and response are not read again; an idle
            # connection should not carry them for hours.
            self.request = self.response = None  # type: ignore[assignment]

    def write_frame(self, frame: bytes) -> bool:
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or not self.writable.is_set()
            or self.transport.is_closing()
        ):
            return False
        self.transport.write(frame)
        return True
