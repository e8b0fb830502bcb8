"""The naive design most tutorials show, as the baseline for ``pgpulse bench --compare baseline``.

On purpose, and exactly as those tutorials do it:

* one LISTEN loop per process, on one connection that is never re-established;
* a dict of tenant -> set of sockets, in memory;
* NOTIFY carries the whole event as its payload (so at most 8000 bytes);
* each event is sent to the tenant's sockets one at a time, each send awaited;
* the tenant comes from a query parameter (``?tenant_id=``), with no token.

It shares no code with pgpulse. Run it with
``DATABASE_URL=postgresql://... uvicorn app:app --app-dir benchmarks/baseline``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from psycopg_pool import AsyncConnectionPool

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

SCHEMA = """
CREATE TABLE IF NOT EXISTS baseline_events (
    id         bigserial PRIMARY KEY,
    tenant_id  text NOT NULL,
    type       text NOT NULL,
    data       jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)
"""

clients: dict[str, set[WebSocket]] = defaultdict(set)
pool = AsyncConnectionPool(DATABASE_URL, open=False, kwargs={"autocommit": False})


async def listen() -> None:
    conn = await psycopg.AsyncConnection.connect(
        DATABASE_URL, autocommit=True, application_name="baseline-listener"
    )
    await conn.execute("LISTEN events")
    async for notify in conn.notifies():
        event = json.loads(notify.payload)
        for websocket in list(clients[event["tenant_id"]]):
            try:
                await websocket.send_text(notify.payload)
            except Exception:
                clients[event["tenant_id"]].discard(websocket)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await pool.open()
    async with pool.connection() as conn:
        await conn.execute(SCHEMA)
    task = asyncio.create_task(listen())
    yield
    task.cancel()
    await pool.close()


app = FastAPI(lifespan=lifespan)


@app.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket, tenant_id: str) -> None:
    await websocket.accept()
    clients[tenant_id].add(websocket)
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        clients[tenant_id].discard(websocket)


@app.post("/publish")
async def publish(tenant_id: str, body: dict[str, Any]) -> dict[str, Any]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO baseline_events (tenant_id, type, data) VALUES (%s, %s, %s) "
            "RETURNING id, created_at",
            (tenant_id, body.get("type", "message"), json.dumps(body.get("data"))),
        )
        row = await cur.fetchone()
        assert row is not None
        event = {
            "id": row[0],
            "tenant_id": tenant_id,
            "type": body.get("type", "message"),
            "data": body.get("data"),
            "ts": row[1].isoformat(),
        }
        await conn.execute("SELECT pg_notify('events', %s)", (json.dumps(event),))
    return {"ok": True, "id": row[0]}
