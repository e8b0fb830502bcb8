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
    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.handshake_exc is not None and not self.handshake_complete:
            self._refuse_handshake()

    def _refuse_handshake(self) -> None:
        """Send the refusal the parser wrote (414, 431, or nothing for garbage) and hang up.

        uvicorn only writes the handshake's answer once a whole request was
        parsed: a request line over 8 KiB (a huge token) or too many headers
        otherwise left the socket open and unanswered until the client gave
        up, and made the server's shutdown fail on it.
        """
        if self.close_sent:
            return
        output = self.conn.data_to_send()
        self.transport.write(b"".join(chunk for chunk in output if chunk))
        self.close_sent = True  # shutdown() then only closes the transport
        self.transport.close()

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
