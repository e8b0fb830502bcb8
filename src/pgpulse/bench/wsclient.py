"""A minimal WebSocket client on ``asyncio.Protocol``, for receiving many sockets cheaply.

A benchmark's receivers must be cheaper than the server they measure:
thousands of sockets in two processes, hundreds of thousands of frames a
second. The ``websockets`` client spends tens of microseconds and several
kilobytes per frame and per connection, so this one does only what a
receiver needs: the handshake, unmasked server frames parsed straight from
the read buffer, per-message deflate when the server accepts it, pongs, and
close.

By default it offers per-message deflate exactly as Chromium and Firefox do
(``permessage-deflate; client_max_window_bits``), because the clients a
server meets in production are browsers: a server that accepts the offer
compresses every message for every socket, and the benchmark should see
that cost where users would.
It is a load-generator tool, not a general client (:mod:`pgpulse.client` is).
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import zlib
from collections.abc import Callable
from typing import cast

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
MAX_HEAD = 16 * 1024  # bytes of handshake response before we give up on it
RSV1 = 0x40  # set on a message's first frame when it is compressed (RFC 7692)
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"  # what browsers send
DEFLATE_TAIL = b"\x00\x00\xff\xff"  # removed by the sender, restored to inflate


def _client_frame(opcode: int, payload: bytes) -> bytes:
    # Client frames must be masked (RFC 6455 §5.3); a zero key leaves the payload as is.
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + b"\x00\x00\x00\x00" + payload


class WsClient(asyncio.Protocol):
    """One connection. ``on_message(client, payload)`` gets each text or binary message."""

    def __init__(
        self,
        host: str,
        port: int,
        target: str,
        on_message: Callable[[WsClient, bytes], None],
        deflate: bool = True,
    ) -> None:
        offer = f"Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n" if deflate else ""
        self._request = (
            f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: "
            f"{base64.b64encode(os.urandom(16)).decode()}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{offer}\r\n"
        ).encode()
        self._inflate: zlib._Decompress | None = None
        self._inflate_reset = False  # the server does not keep its window between messages
        self._compressed = False  # the message being reassembled is compressed
        self.deflate = False  # the server accepted per-message deflate
        self._on_message = on_message
        self._buf = bytearray()
        self._fragments: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.upgraded = False

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_result(False)
        if not self.closed.done():
            self.closed.set_result(1006)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self.abort()
                return
            status, *headers = bytes(buf[:end]).split(b"\r\n")
            del buf[: end + 4]
            if b" 101 " not in status + b" ":
                self.abort()
                return
            for line in headers:
                name, _, value = line.partition(b":")
                header = name.strip().lower()
                if header == b"sec-websocket-extensions" and b"permessage-deflate" in value:
                    self.deflate = True
                    self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
                    self._inflate_reset = b"server_no_context_takeover" in value
            self.upgraded = True
            self.opened.set_result(True)
        self._parse()

    # -- frames ------------------------------------------------------------------

    def _parse(self) -> None:
        buf = self._buf
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            b0 = buf[pos]
            n = buf[pos + 1] & 0x7F
            start = pos + 2
            if n == 126:
                if size - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = struct.unpack_from("!Q", buf, pos + 2)[0]
                start = pos + 10
            end = start + n
            if end > size:
                break
            payload = bytes(buf[start:end])
            pos = end
            opcode = b0 & 0x0F
            if opcode in (OP_TEXT, OP_BINARY, OP_CONT):
                if opcode != OP_CONT:
                    self._compressed = bool(b0 & RSV1)
                if b0 & 0x80:
                    if self._fragments:
                        payload = b"".join([*self._fragments, payload])
                        self._fragments.clear()
                    if self._compressed:
                        payload = self._inflated(payload)
                    self._on_message(self, payload)
                else:
                    self._fragments.append(payload)
            elif opcode == OP_PING:
                self._write(_client_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else 1005
                if not self.closed.done():
                    self.closed.set_result(code)
                self._write(_client_frame(OP_CLOSE, payload[:2]))
                if self._transport is not None:
                    self._transport.close()
                break
        del buf[:pos]

    def _inflated(self, payload: bytes) -> bytes:
        if self._inflate is None:
            raise ValueError("compressed frame without per-message deflate")
        data = self._inflate.decompress(payload + DEFLATE_TAIL)
        if self._inflate_reset:
            self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        return data

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    # -- use -----------------------------------------------------------------------

    def pause_reading(self) -> None:
        """Stop reading the socket: the kernel's buffers fill and the server's writes back up."""
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def send_text(self, text: str) -> None:
        self._write(_client_frame(OP_TEXT, text.encode()))

    def close(self) -> None:
        """Start a clean close (1000); the transport ends when the server answers."""
        self._write(_client_frame(OP_CLOSE, struct.pack("!H", 1000)))
        if self._transport is not None:
            loop = asyncio.get_running_loop()
            loop.call_later(2.0, self.abort)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


async def connect(
    host: str,
    port: int,
    target: str,
    on_message: Callable[[WsClient, bytes], None],
    handshake_s: float,
    local_host: str | None = None,
    rcvbuf: int | None = None,
    mss: int | None = None,
    deflate: bool = True,
) -> WsClient | None:
    """Open one connection, handshake done within ``handshake_s`` s; ``None`` if it fails.

    ``rcvbuf`` and ``mss`` set ``SO_RCVBUF`` and ``TCP_MAXSEG`` before connecting: a
    small window and segment size keep the server's kernel send buffer small too
    (it is sized from the segment size), so a socket that stops reading backs the
    server up within kilobytes instead of megabytes. ``deflate`` offers
    per-message deflate as browsers do.
    """
    loop = asyncio.get_running_loop()
    client: WsClient | None = None
    sock: socket.socket | None = None
    try:
        async with asyncio.timeout(handshake_s):
            if rcvbuf is None and mss is None:
                _, client = await loop.create_connection(
                    lambda: WsClient(host, port, target, on_message, deflate),
                    host,
                    port,
                    local_addr=(local_host, 0) if local_host else None,
                )
            else:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                if rcvbuf is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                if mss is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
                if local_host:
                    sock.bind((local_host, 0))
                await loop.sock_connect(sock, (host, port))
                _, client = await loop.create_connection(
                    lambda: WsClient(host, port, target, on_message, deflate), sock=sock
                )
                sock = None  # the transport owns it now
            if await client.opened:
                return client
            client.abort()
            return None
    except (OSError, TimeoutError):
        if client is not None:
            client.abort()
        if sock is not None:
            sock.close()
        return None
