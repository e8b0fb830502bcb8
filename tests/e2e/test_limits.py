"""Bounded input: bodies, tokens, topic lists and close reasons, before auth and parsing."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from pgpulse.limits import MAX_TOKEN_BYTES

from ..support import (
    ServerHandle,
    ServerProcess,
    free_port,
    mint,
    recv,
    serve_env,
    until_ready,
)

MB = 1024 * 1024
HOSTILE_BODY = 300 * MB
RSS_GROWTH_LIMIT = 10 * MB


@pytest.fixture
def server_process(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess([], serve_env(database_url, tmp_path), free_port())
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()
        proc.close()


def send_hostile_body(port: int, head: bytes, chunk: bytes, total: int) -> tuple[bytes, int]:
    """Send ``head`` then up to ``total`` bytes of ``chunk``s, stopping at the first answer.

    Returns the start of the answer and how many body bytes went out before it.
    """
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        while sent < total:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        sock.settimeout(10)
        answer = sock.recv(4096)
    return answer, sent


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_300_mb_unauthenticated_body_is_refused_early(
    server_process: ServerProcess, framing: str
) -> None:
    server = psutil.Process(server_process.proc.pid)
    before = server.memory_info().rss
    piece = b"x" * MB
    if framing == "content-length":
        head = (
            b"POST /api/notifications HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: " + str(HOSTILE_BODY).encode() + b"\r\n\r\n"
        )
        chunk = piece
    else:
        head = (
            b"POST /api/notifications HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    answer, sent = send_hostile_body(server_process.port, head, chunk, HOSTILE_BODY)
    status = int(answer.split(b" ", 2)[1])
    assert status == (413 if framing == "content-length" else 401), answer[:200]
    assert sent < HOSTILE_BODY // 2, f"the server answered only after {sent} bytes"
    growth = server.memory_info().rss - before
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth / MB:.1f} MB"


async def test_every_route_bounds_its_body(server: ServerHandle, tenant: str) -> None:
    limit = server.runtime.settings.max_payload_bytes
    big = b'{"message": "' + b"x" * limit + b'"}'
    auth = {"Authorization": f"Bearer {mint(tenant, scopes=['publish', 'jobs'])}"}

    async def chunked() -> object:
        yield big  # no Content-Length: counted as it is read

    async with server.http() as http:
        for path in ("/api/notifications", "/api/jobs", "/api/events", "/healthz"):
            r = await http.post(path, content=big)  # no token: the size is checked first
            assert r.status_code == 413, (path, r.status_code)
            r = await http.post(path, content=chunked(), headers=auth)
            assert r.status_code in (413, 405), (path, r.status_code)
        r = await http.get("/api/notifications", headers=auth)
        assert r.status_code == 200 and r.json() == []


async def test_oversized_token_is_refused_before_decoding(
    server: ServerHandle, tenant: str
) -> None:
    huge = mint(tenant) + "A" * MAX_TOKEN_BYTES
    async with server.http() as http:
        r = await http.get("/api/notifications", headers={"Authorization": f"Bearer {huge}"})
        assert r.status_code == 401 and "limit" in r.json()["detail"]
    # On /ws the request line itself is over 8 KiB: the handshake is answered
    # at once (it used to be left hanging), before any token is looked at.
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(f"{server.ws_url}/ws?token={huge}", open_timeout=5):
            pass
    assert refused.value.response.status_code == 414
    async with server.connect(mint(tenant)) as ws:  # the server is unharmed
        assert (await until_ready(ws))[-1]["op"] == "ready"


async def test_topic_lists_are_bounded_and_validated(server: ServerHandle, tenant: str) -> None:
    token = mint(tenant)
    hostile = {
        "NUL": "a%00b",
        "too long": "x" * 201,
        "too many": ",".join(f"t{i}" for i in range(101)),
    }
    async with server.http() as http:
        for name, topics in hostile.items():
            r = await http.get(f"/sse?token={token}&topics={topics}")
            assert r.status_code == 422, name
    for name, topics in hostile.items():
        async with websockets.connect(f"{server.ws_url}/ws?token={token}&topics={topics}") as ws:
            with pytest.raises(ConnectionClosed) as info:
                await recv(ws)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1008, name


async def test_close_reasons_are_cut_by_bytes(server: ServerHandle, tenant: str) -> None:
    token = mint(tenant, topics=["a"])
    topic = "é" * 150  # 300 bytes: a cut by characters would overflow the frame
    async with websockets.connect(f"{server.ws_url}/ws?token={token}&topics={topic}") as ws:
        with pytest.raises(ConnectionClosed) as info:
            await recv(ws)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1008
    reason = info.value.rcvd.reason
    assert "topic" in reason and 100 < len(reason.encode()) <= 123
