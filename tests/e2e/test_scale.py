"""Scale-out: many processes over one PostgreSQL cooperate with no configuration.

One ``pgpulse serve --workers 2`` (two processes on one port) and two
single-process nodes on their own ports share one database. Clients spread
over all of them each receive every event of their tenant exactly once and in
order, whichever node's HTTP API, or plain SQL, published it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from pathlib import Path

import httpx
import psycopg
import websockets
from websockets.asyncio.client import ClientConnection

from ..support import (
    ServerProcess,
    events,
    free_port,
    mint,
    no_more_events,
    serve_env,
    until_ready,
)

CLIENTS = 40
EVENTS = 100
MAX_WORKER_CONNECTS = 60  # bound on clients opened while waiting for both workers to get some
STARTUP = 45.0  # seconds: three servers booting at once on a loaded machine


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (uvicorn's workers of a supervisor)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry))
    return found


def is_worker(pid: int) -> bool:
    """A uvicorn worker, not multiprocessing's resource tracker."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return b"resource_tracker" not in f.read()


def accepted_by_process(pids: list[int], port: int) -> Counter[int]:
    """Established TCP connections on local ``port`` that each process holds."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if fields[3] == "01" and local_port == port:  # 01: ESTABLISHED
                    inodes.add(fields[9])
    held: Counter[int] = Counter()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        held[pid] += 1
    return held


async def listeners(database_url: str) -> int:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        cur = await c.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'pgpulse-listener'"
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def test_workers_and_nodes_deliver_every_event_exactly_once(
    database_url: str, tmp_path: Path, tenant: str
) -> None:
    env = serve_env(database_url, tmp_path, listener_poll_interval=1)
    quiet = ["--log-level", "warning"]  # the output is read only on failure
    workers = ServerProcess(["--workers", "2", *quiet], env, free_port())
    nodes = [ServerProcess(quiet, env, free_port()) for _ in range(2)]
    servers = [workers, *nodes]
    other = tenant + "-other"
    try:
        for s in servers:
            await asyncio.to_thread(s.wait_ready, STARTUP)
        # Every serving process (2 workers + 2 nodes) has its own LISTEN connection.
        async with asyncio.timeout(STARTUP):
            while await listeners(database_url) < 4:
                await asyncio.sleep(0.05)
        assert await listeners(database_url) == 4

        async with contextlib.AsyncExitStack() as stack:

            async def connect(server: ServerProcess, token: str) -> ClientConnection:
                conn = await stack.enter_async_context(
                    websockets.connect(server.ws_url(token), open_timeout=STARTUP)
                )
                await until_ready(conn)
                return conn

            # A quarter of the clients on each node, opened together, and half on
            # the two-worker port, one by one: the kernel hands each new connection
            # to whichever worker accepts first, so keep going (bounded) until both
            # workers hold some. A worker that never accepts fails the test.
            clients = list(
                await asyncio.gather(
                    *(connect(node, mint(tenant)) for node in nodes * (CLIENTS // 4))
                )
            )
            on_workers = CLIENTS // 2
            worker_pids = [pid for pid in children(workers.proc.pid) if is_worker(pid)]
            assert len(worker_pids) == 2, worker_pids
            for attempt in range(MAX_WORKER_CONNECTS):
                clients.append(await connect(workers, mint(tenant)))
                held = accepted_by_process(worker_pids, workers.port)
                if attempt + 1 >= on_workers and len(held) == 2:
                    break
            else:
                raise AssertionError(f"one worker accepted nothing: {held}")
            bystanders = await asyncio.gather(*(connect(s, mint(other)) for s in servers))
            held = accepted_by_process(worker_pids, workers.port)
            on_workers = sum(held.values()) - 1  # one bystander
            assert len(clients) == on_workers + CLIENTS // 2 >= CLIENTS
            assert min(held.values()) >= 1, held

            # Publish through every node's HTTP API and through SQL, concurrently.
            token = mint(tenant, scopes=["publish"])
            https = [
                await stack.enter_async_context(httpx.AsyncClient(base_url=s.url, timeout=STARTUP))
                for s in servers
            ]
            sql_conn = await stack.enter_async_context(
                await psycopg.AsyncConnection.connect(database_url, autocommit=True)
            )
            sql_lock = asyncio.Lock()

            async def publish(i: int) -> tuple[str, int]:
                """("key", k) from SQL's publish; ("id", n) from the HTTP API."""
                if i % 4 == 3:
                    async with sql_lock:
                        cur = await sql_conn.execute(
                            "SELECT pgpulse.publish(%s, 'scale', 'sql', %s::jsonb)",
                            [tenant, f'{{"i": {i}}}'],
                        )
                        row = await cur.fetchone()
                    assert row is not None
                    return ("key", int(row[0]))
                r = await https[i % 3].post(
                    "/api/events",
                    json={"topic": "scale", "type": f"http-{i % 3}", "data": {"i": i}},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert r.status_code == 201, r.text
                return ("id", int(r.json()["event_id"]))

            returned = await asyncio.gather(*(publish(i) for i in range(EVENTS)))
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
                await c.execute("SELECT pgpulse.publish(%s, 'scale', 'other', '{}')", [other])

            received = await asyncio.gather(*(events(ws, EVENTS, timeout=30) for ws in clients))
            expected_ids = list(range(1, EVENTS + 1))
            for n, got in enumerate(received):
                assert [e["id"] for e in got] == expected_ids, f"client {n}"
                assert sorted(e["data"]["i"] for e in got) == list(range(EVENTS)), f"client {n}"
                assert {e["tenant_id"] for e in got} == {tenant}
                # What each publish returned names its event: HTTP's id, SQL's key.
                assert sorted(returned) == sorted(
                    ("key", e["key"]) if e["type"] == "sql" else ("id", e["id"]) for e in got
                )
            for ws in bystanders:
                [only] = await events(ws, 1)
                assert only["tenant_id"] == other and only["type"] == "other"
            await asyncio.gather(*(no_more_events(ws, 0.3) for ws in [*clients, *bystanders]))

            # Each node counted what it queued, one per local connection: its own
            # clients and bystander, nobody else's.
            for node in nodes:
                assert await delivered(node) == (CLIENTS // 4) * EVENTS + 1
    except BaseException:
        for s in servers:
            if s.proc.poll() is not None:
                print(f"server on {s.port} exited {s.proc.returncode}:\n{s.output()}")
        raise
    finally:
        for s in servers:
            s.stop()
            s.close()


async def delivered(server: ServerProcess) -> int:
    """The server's ``pgpulse_events_delivered_total``."""
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"{server.url}/metrics")).text
    for line in text.splitlines():
        if line.startswith("pgpulse_events_delivered_total "):
            return int(float(line.split()[1]))
    raise AssertionError(f"no pgpulse_events_delivered_total in:\n{text}")
