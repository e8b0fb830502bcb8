"""Liveness: the server pings, and a peer that stops answering is dropped."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import struct
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
import websockets

import pgpulse

from ..support import (
    TIMEOUT,
    ServerProcess,
    events,
    free_port,
    mint,
    serve_env,
    start_server,
    until_ready,
)
from .streams import until

PING_INTERVAL = 0.5  # seconds
PING_TIMEOUT = 0.5  # seconds
SLACK = 0.5  # seconds of scheduling noise allowed on top
OP_CLOSE, OP_PING = 0x8, 0x9
BACKLOG_EVENTS = 1000  # of 2 KB: 2 MB, well past the kernel's and the server's buffers


async def open_raw_websocket(
    url: str, token: str, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A peer that completes the handshake and then never answers anything."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /ws?token={token} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each unmasked frame a server sent."""
    frames = []
    while data:
        opcode, length = data[0] & 0x0F, data[1] & 0x7F
        offset = 2
        if length == 126:
            (length,) = struct.unpack("!H", data[2:4])
            offset = 4
        elif length == 127:
            (length,) = struct.unpack("!Q", data[2:10])
            offset = 10
        frames.append((opcode, data[offset : offset + length]))
        data = data[offset + length :]
    return frames


async def test_peer_that_stops_answering_pings_is_dropped(
    database_url: str, tmp_path: Path, tenant: str
) -> None:
    async with start_server(
        database_url, tmp_path, ws_ping_interval=PING_INTERVAL, ws_ping_timeout=PING_TIMEOUT
    ) as server:
        hub = server.runtime.hub
        async with server.connect(mint(tenant)) as healthy:
            await until_ready(healthy)
            reader, writer = await open_raw_websocket(server.url, mint(tenant))
            try:
                opened = await until(lambda: hub.connections == 2, what="the silent peer joining")
                dropped = await until(lambda: hub.connections == 1, what="the silent peer dropped")
                assert PING_INTERVAL <= dropped - opened <= PING_INTERVAL + PING_TIMEOUT + SLACK
                # What the silent peer was sent: ready, a ping, then a close (1011), then EOF.
                data = await asyncio.wait_for(reader.read(), TIMEOUT)
            finally:
                writer.close()
            frames = server_frames(data)
            opcodes = [opcode for opcode, _ in frames]
            assert OP_PING in opcodes and opcodes[-1] == OP_CLOSE, opcodes
            (code,) = struct.unpack("!H", frames[-1][1][:2])
            assert code == 1011  # uvicorn's "keepalive ping timeout"

            # The peer that answers pings was pinged too (uvicorn timed its pong),
            # and stays, and still gets events.
            [protocol] = server.server.server_state.connections
            await until(lambda: protocol.last_ping_rtt > 0, what="a pong")  # type: ignore[attr-defined]
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
                key = await pgpulse.publish(c, tenant_id=tenant, type="alive", data={})
            [got] = await events(healthy, 1)
            assert got["key"] == key


async def ws_connections(server: ServerProcess) -> int:
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        text = (await http.get(f"{server.url}/metrics")).text
    match = re.search(r'^pgpulse_connections\{transport="ws"\} (\S+)$', text, re.MULTILINE)
    return int(float(match.group(1))) if match else 0


@pytest.mark.slow
async def test_peer_that_stops_reading_mid_stream_is_dropped(
    database_url: str, tmp_path: Path, tenant: str
) -> None:
    """The hard case: the silent peer's buffers are full, so uvicorn's close
    after the missed pong cannot flush; `pgpulse serve` must still drop it."""
    env = serve_env(
        database_url, tmp_path, ws_ping_interval=PING_INTERVAL, ws_ping_timeout=PING_TIMEOUT
    )
    server = ServerProcess(["--log-level", "warning"], env, free_port())
    try:
        await asyncio.to_thread(server.wait_ready)
        ws_url = server.ws_url(mint(tenant))
        async with websockets.connect(ws_url, open_timeout=TIMEOUT, compression=None) as healthy:
            await until_ready(healthy)
            _, writer = await open_raw_websocket(server.url, mint(tenant), rcvbuf=4096)
            writer.transport.pause_reading()  # from here on it reads nothing, pongs nothing
            try:
                async with asyncio.timeout(TIMEOUT):
                    while await ws_connections(server) != 2:
                        await asyncio.sleep(0.02)
                # Far more than the kernel and the server will buffer for it.
                async with await psycopg.AsyncConnection.connect(
                    database_url, autocommit=True
                ) as c:
                    for _ in range(BACKLOG_EVENTS // 10):
                        pads = [base64.b64encode(os.urandom(1536)).decode() for _ in range(10)]
                        await c.execute(
                            "SELECT pgpulse.publish(%s, 'load', 'tick', jsonb_build_object('p', p))"
                            " FROM unnest(%s::text[]) AS p",
                            [tenant, pads],
                        )
                # The reading peer gets everything, and stays.
                got = await events(healthy, BACKLOG_EVENTS)
                assert [e["id"] for e in got] == list(range(1, BACKLOG_EVENTS + 1))
                async with asyncio.timeout(TIMEOUT):
                    while await ws_connections(server) != 1:
                        await asyncio.sleep(0.05)
            finally:
                writer.close()
            key = await publish_one(database_url, tenant)
            [got_one] = await events(healthy, 1)
            assert got_one["key"] == key
    finally:
        server.stop(timeout=TIMEOUT)


async def publish_one(url: str, tenant: str) -> int:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
        return await pgpulse.publish(c, tenant_id=tenant, type="alive", data={})
