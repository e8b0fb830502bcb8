"""A share of the pool stays free for publishing while many clients resume at once.

The test holds history reads up at will: each one first takes a shared
advisory lock, which the test holds exclusively while a thousand clients
connect and resume from 0. Every history read then waits in PostgreSQL,
holding its pooled connection, as a slow read of a big events table would;
publishes must still go through in that time, and once the lock is let go
every client must get its history. The clients run in a process of their
own, so that the server's event loop is the server's.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import psycopg
import pytest

from pgpulse.sql import QUERIES

from ..support import mint, start_server

CLIENTS = 1000
HISTORY = 5  # events each client replays from 0
HOLD_KEY = 0x7067_7465_7374  # the advisory lock history reads wait on
HELD_READS = 3  # history reads seen waiting before publishing starts: a pool's worth
PUBLISHES = 10  # made while history reads wait
PUBLISH_LATENCY_LIMIT = 1.0  # seconds, the slowest of them
DEADLINE = 90.0  # seconds for the whole test

CLIENTS_SCRIPT = """
import asyncio, sys, orjson, websockets

async def main(url, clients, history):
    gate = asyncio.Semaphore(250)
    sockets = []

    async def resume():
        async with gate:
            ws = await websockets.connect(url, open_timeout=60)
            sockets.append(ws)
        ids = []
        while orjson.loads(message := await ws.recv()).get("op") != "ready":
            ids.append(orjson.loads(message)["id"])
        assert ids[:history] == list(range(1, history + 1)), ids

    await asyncio.gather(*(resume() for _ in range(clients)))
    print("ready", len(sockets), flush=True)
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


async def waiting_reads(conn: psycopg.AsyncConnection[object]) -> int:
    cur = await conn.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE application_name = 'pgpulse' AND wait_event_type = 'Lock'"
        " AND wait_event = 'advisory' AND datname = current_database()"
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def test_publishing_is_served_while_1000_clients_resume(
    database_url: str, tmp_path: Path, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = QUERIES["position"].rstrip(";")
    wait = f"SELECT pg_advisory_xact_lock_shared({HOLD_KEY})"
    held = f"SELECT q.* FROM ({wait}) AS h, LATERAL ({original}) AS q"
    monkeypatch.setitem(QUERIES, "position", held)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        for i in range(HISTORY):
            await c.execute("SELECT pgpulse.publish(%s, 't', 'old', %s)", [tenant, f"[{i}]"])
    lock = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    await lock.execute("SELECT pg_advisory_lock(%s)", [HOLD_KEY])
    clients = None
    try:
        async with (
            start_server(
                database_url, tmp_path, pool_max_size=4, connect_rate_per_tenant=100_000
            ) as server,
            asyncio.timeout(DEADLINE),
        ):
            ws_url = f"{server.ws_url}/ws?token={mint(tenant)}&last_event_id=0"
            clients = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                CLIENTS_SCRIPT,
                ws_url,
                str(CLIENTS),
                str(HISTORY),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            while await waiting_reads(lock) < HELD_READS:
                await asyncio.sleep(0.05)
            latencies: list[float] = []
            token = mint(tenant, scopes=["publish"])
            async with server.http() as http:
                for _ in range(PUBLISHES):
                    started = time.monotonic()
                    r = await http.post(
                        "/api/events",
                        json={"type": "live", "data": {}},
                        headers={"Authorization": f"Bearer {token}"},
                        timeout=PUBLISH_LATENCY_LIMIT * 3,
                    )
                    latencies.append(time.monotonic() - started)
                    assert r.status_code == 201, r.text
            assert await waiting_reads(lock) >= HELD_READS  # still held up throughout
            await lock.execute("SELECT pg_advisory_unlock(%s)", [HOLD_KEY])
            out, err = await clients.communicate()
    finally:
        if clients is not None and clients.returncode is None:
            clients.kill()
            await clients.wait()
        await lock.close()
    assert clients.returncode == 0 and out.split() == [b"ready", str(CLIENTS).encode()], err[-2000:]
    assert max(latencies) < PUBLISH_LATENCY_LIMIT, sorted(latencies)
