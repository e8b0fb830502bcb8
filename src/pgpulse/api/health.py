"""``/healthz`` (the process is up), ``/readyz`` (it can deliver), ``/metrics``."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..cors import origin_report
from ..sql import QUERIES
from .deps import RuntimeDep

router = APIRouter()
log = logging.getLogger("pgpulse")

READY_TIMEOUT = 2.0  # seconds for the database probe


@router.get("/healthz")
async def healthz(request: Request, runtime: RuntimeDep) -> Response:
    """Readable from any page (nothing here is private); says whether the page's origin
    may call the HTTP API, which a browser cannot learn from a refused call."""
    body: dict[str, object] = {"status": "ok", "insecure_dev": runtime.settings.insecure_dev}
    origin = request.headers.get("origin")
    if origin is not None:
        body["origin"] = origin_report(origin, runtime.settings.allowed_origins)
    return JSONResponse(body, headers={"Access-Control-Allow-Origin": "*"})


@router.get("/readyz")
async def readyz(runtime: RuntimeDep) -> Response:
    database = False
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            async with runtime.pool.connection() as conn:
                await conn.execute("SELECT 1")
        database = True
    except Exception:
        database = False
    listener = runtime.listener.connected
    ready = database and listener
    return JSONResponse(
        {"ready": ready, "database": database, "listener": listener},
        status_code=200 if ready else 503,
    )


@router.get("/metrics")
async def metrics(runtime: RuntimeDep) -> Response:
    m = runtime.metrics
    m.listener_up.set(1 if runtime.listener.connected else 0)
    m.listener_reconnects.set(runtime.listener.reconnects)
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            async with runtime.pool.connection() as conn:
                cur = await conn.execute(QUERIES["job_backlog"])
                row = await cur.fetchone()
    except Exception as exc:  # the process's own metrics still matter when the database is away
        log.debug("job backlog not read for /metrics: %s", exc)
    else:
        assert row is not None
        m.jobs.labels("queued").set(row[0])
        m.jobs.labels("running").set(row[1])
        m.jobs_oldest_queued_seconds.set(row[2])
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
