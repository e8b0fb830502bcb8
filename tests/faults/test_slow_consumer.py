"""A client that stops reading is closed with 1013 and delays nobody else.

The server runs as its own process, as in production (and so that its CPU is
not the test clients'), with its default queue limits. 50 clients read 2,000
events of 2 KB (random, so compression cannot shrink them) while one more
client, with a tiny receive buffer, reads nothing: its backlog fills the
kernel buffers, then its queue in the server, which marks it slow.

Isolation is checked in lockstep, not in milliseconds: each batch is
published only once every healthy client has received the previous one. A
server whose dispatch waited on the stalled socket would stop delivering
once that socket's buffers were full, and the next step would never come
(each is bounded). Delivery is checked by order and count: every healthy
client gets every id once, in order, while the stalled one is closed with
1013 part-way and then resumes with exactly the rest. A machine's speed
changes how long this takes, never whether it passes.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
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
SLOW_RCVBUF = 4096  # bytes: the slow client's kernel receive buffer


class Progress:
    """The newest id each healthy client has received, and a way to await a mark."""

    def __init__(self, clients: int) -> None:
        self.last = [0] * clients
        self._changed = asyncio.Condition()

    async def record(self, client: int, event_id: int) -> None:
        async with self._changed:
            self.last[client] = event_id
            self._changed.notify_all()

    async def all_reached(self, event_id: int) -> None:
        async with asyncio.timeout(TIMEOUT), self._changed:
            await self._changed.wait_for(lambda: min(self.last) >= event_id)


async def publish_in_lockstep(url: str, tenant: str, progress: Progress) -> None:
    """Publish batch after batch, each once every healthy client has the one before."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for published in range(0, EVENTS, BATCH):
            pads = [
                base64.b64encode(os.urandom(EVENT_BYTES * 3 // 4)).decode() for _ in range(BATCH)
            ]
            await conn.execute(
                "SELECT pgpulse.publish(%s, 'load', 'tick', jsonb_build_object('pad', p))"
                " FROM unnest(%s::text[]) AS p",
                [tenant, pads],
            )
            await progress.all_reached(published + BATCH)


async def read_all(ws: ClientConnection, client: int, progress: Progress) -> list[int]:
    ids: list[int] = []
    while len(ids) < EVENTS:
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        if "id" in frame:
            ids.append(frame["id"])
            await progress.record(client, frame["id"])
    return ids


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

        progress = Progress(CLIENTS)
        readers = [asyncio.create_task(read_all(ws, n, progress)) for n, ws in enumerate(healthy)]
        await publish_in_lockstep(database_url, tenant, progress)
        everything = list(range(1, EVENTS + 1))
        assert await asyncio.gather(*readers) == [everything] * CLIENTS

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
