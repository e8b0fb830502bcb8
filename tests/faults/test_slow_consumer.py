"""A client that stops reading is closed with 1013 and delays nobody else.

The server runs as its own process, as in production (and so that its CPU is
not the test clients'), with its default queue limits. 50 clients read 2,000
events of 2 KB (random, so compression cannot shrink them) while one more
client, with a tiny receive buffer, reads nothing: its backlog fills the
kernel buffers, then its queue in the server, which marks it slow. Latency is
measured per event from just before its commit to its arrival.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import psycopg
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from pgpulse.events import WS_1013_TRY_AGAIN_LATER

from ..support import TIMEOUT, ServerProcess, free_port, mint, serve_env, until_ready

CLIENTS = 50
EVENTS = 2000
EVENT_BYTES = 2048
BATCH = 10  # events per publishing transaction
BATCH_EVERY = 0.02  # seconds: 500 events/s
P99_LIMIT = 0.250  # seconds
SLOW_RCVBUF = 4096  # bytes: the slow client's kernel receive buffer


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def publish_all(url: str, tenant: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for _ in range(0, EVENTS, BATCH):
            began = time.monotonic()
            pads = [
                base64.b64encode(os.urandom(EVENT_BYTES * 3 // 4)).decode() for _ in range(BATCH)
            ]
            await conn.execute(
                "SELECT pgpulse.publish(%s, 'load', 'tick',"
                " jsonb_build_object('t', %s::float8, 'pad', p)) FROM unnest(%s::text[]) AS p",
                [tenant, time.time(), pads],
            )
            await asyncio.sleep(max(0.0, BATCH_EVERY - (time.monotonic() - began)))


async def read_all(ws: ClientConnection, latencies: list[float]) -> int:
    last = 0
    while last < EVENTS:
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        if "id" in frame:
            latencies.append(time.time() - frame["data"]["t"])
            assert frame["id"] == last + 1
            last = frame["id"]
    return last


async def connect_slow(url: str) -> ClientConnection:
    """A client on a socket with a tiny receive buffer and no compression: its
    backlog is real bytes, and it shows in the server soon."""
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    return await websockets.connect(
        url, sock=sock, open_timeout=TIMEOUT, max_queue=4, compression=None
    )


async def frames_until_closed(ws: ClientConnection) -> tuple[list[int], int | None]:
    ids = []
    try:
        while True:
            frame = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            if "id" in frame:
                ids.append(frame["id"])
    except websockets.ConnectionClosed as closed:
        return ids, closed.rcvd.code if closed.rcvd is not None else None
    except TimeoutError:
        return ids, None  # still open, and nothing more to read


@pytest.mark.slow
async def test_slow_consumer_is_closed_with_1013_and_delays_nobody(
    database_url: str, tmp_path: Path, tenant: str
) -> None:
    env = serve_env(database_url, tmp_path)
    server = ServerProcess(["--log-level", "warning"], env, free_port())
    try:
        await asyncio.to_thread(server.wait_ready)
        ws_url = server.ws_url(mint(tenant))
        # No compression: per-connection deflate of random data is a CPU cost of
        # its own (it alone takes p99 past a second here); this test is about
        # isolation from a slow consumer.
        healthy = [
            await websockets.connect(ws_url, open_timeout=TIMEOUT, compression=None)
            for _ in range(CLIENTS)
        ]
        slow = await connect_slow(ws_url)
        for ws in [*healthy, slow]:
            await until_ready(ws)

        latencies: list[float] = []
        readers = [asyncio.create_task(read_all(ws, latencies)) for ws in healthy]
        await publish_all(database_url, tenant)
        assert await asyncio.gather(*readers) == [EVENTS] * CLIENTS
        assert len(latencies) == CLIENTS * EVENTS
        p99 = percentile(latencies, 0.99)
        assert p99 <= P99_LIMIT, f"p99 {p99 * 1000:.0f} ms beside a slow consumer"

        # The slow client reads at last: events in order up to where it fell
        # behind, then the close, 1013.
        got, code = await frames_until_closed(slow)
        assert code == WS_1013_TRY_AGAIN_LATER, f"closed with {code} after {len(got)} events"
        assert got == list(range(1, len(got) + 1)) and len(got) < EVENTS

        # It resumes from its last id and gets the rest, once each.
        async with websockets.connect(
            f"{ws_url}&last_event_id={len(got)}", open_timeout=TIMEOUT, compression=None
        ) as ws:
            rest: list[int] = []
            while len(rest) < EVENTS - len(got):
                frame = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
                if "id" in frame:
                    rest.append(frame["id"])
            assert rest == list(range(len(got) + 1, EVENTS + 1))
        for ws in healthy:
            await ws.close()
    finally:
        server.stop(timeout=TIMEOUT)
