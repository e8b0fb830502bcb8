"""``/api/admin``: the console's view of the whole deployment, for admin tokens only.

Everything here is read from PostgreSQL, never from this process alone: a
load balancer sends each console request to any node, and each answer must
show every node. The node registry (:mod:`pgpulse.nodes`) holds what each
process knows of itself; jobs and events are read from their tables.

An operator disconnects a tenant, or one user of it, with
``POST /api/admin/disconnect``: the request goes to every node through
PostgreSQL (``pgpulse.disconnect``), so it does not matter which node the
load balancer picked.

An admin token (scope ``admin``) is taken from the ``Authorization`` header
only, never from the query string, so it never lands in an access log. The
console watches a tenant with a token minted here for that tenant
(``POST /api/admin/tokens``): short-lived and without the admin scope, so
the admin token itself never travels on a tenant's socket.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from ..auth import ADMIN_SCOPE, Principal, Verifier
from ..errors import AuthError, ConfigError
from ..events import MAX_NAME_LENGTH, Event, is_name
from ..nodes import STALE_INTERVALS, merge_series
from ..sql import QUERIES
from .deps import RuntimeDep, json_body_docs, read_model

TOP_TENANTS = 10  # tenants the overview lists, busiest first
RUNNING_JOBS = 50  # running jobs the overview lists, oldest first
RECENT_JOBS = 20  # ended jobs the overview lists, newest first
RECENT_JOBS_SECONDS = 600.0  # how far back "recent" goes
TOKEN_TTL = 900  # seconds: the default life of a tenant token minted for the console
TOKEN_TTL_MAX = 3600  # seconds
TOKEN_BODY_MAX = 16 * 1024  # bytes
DISCONNECT_BODY_MAX = 8 * 1024  # bytes: two names, even written as \uXXXX escapes


def _verifier(request: Request) -> Verifier:
    """The server's JWT verifier: the admin API is ``pgpulse serve``'s, under its tokens."""
    token_auth = getattr(request.app.state, "pgpulse", None)
    token_auth = getattr(token_auth, "token_auth", None)
    if token_auth is None:
        raise HTTPException(404, "the admin API is served by pgpulse serve only")
    verifier: Verifier = token_auth.verifier
    return verifier


async def _admin(request: Request) -> Principal:
    header = request.headers.get("authorization") or ""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise HTTPException(
            401,
            "the admin API needs 'Authorization: Bearer <token>' with an admin token "
            "(pgpulse token --scope admin)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        principal = await _verifier(request).verify_async(value.strip())
    except AuthError as exc:
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
    if ADMIN_SCOPE not in principal.scopes:
        raise HTTPException(
            403, "this token lacks the admin scope (mint one: pgpulse token --scope admin)"
        )
    return principal


router = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[Depends(_admin)])


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _node(row: tuple[Any, ...]) -> dict[str, Any]:
    node_id, kind, host, pid, started_at, heartbeat_at, stats_json, age, up = row
    stats: dict[str, Any] = orjson.loads(stats_json)
    listener = stats.get("listener") or {}

    return {
        "id": node_id,
        "kind": kind,
        "host": host,
        "pid": pid,
        "started_at": _iso(started_at),
        "heartbeat_at": _iso(heartbeat_at),
        "heartbeat_age_s": round(age, 1),
        "up": bool(up),
        "ready": bool(up) and bool(listener.get("connected")),
        "stats": stats,
    }


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


@router.get("/overview")
async def overview(runtime: RuntimeDep) -> dict[str, Any]:
    """Every node and worker, connections, rates, the p99 and the job backlog, cluster-wide."""
    async with runtime.pool.connection() as conn:
        cur = await conn.execute(QUERIES["admin_nodes"], {"stale_intervals": STALE_INTERVALS})
        nodes = [_node(row) for row in await cur.fetchall()]
        cur = await conn.execute(QUERIES["job_backlog"])
        backlog = await cur.fetchone()
        cur = await conn.execute(QUERIES["admin_jobs_running"], {"limit": RUNNING_JOBS})
        running = await cur.fetchall()
        cur = await conn.execute(
            QUERIES["admin_jobs_recent"], {"seconds": RECENT_JOBS_SECONDS, "limit": RECENT_JOBS}
        )
        recent = await cur.fetchall()
    interval = runtime.settings.node_heartbeat_interval
    servers = [n for n in nodes if n["kind"] == "server" and n["up"]]
    series = merge_series((n["stats"] for n in servers), interval)
    for node in nodes:
        # Merged into the cluster's here; per node they are bulk the console does not show.
        node["stats"].pop("series", None)
        if node not in servers:
            node["stats"].pop("tenants", None)
    ws = sse = 0
    tenants: dict[str, list[int]] = {}
    for node in servers:
        stats = node["stats"]
        connections = stats.get("connections") or {}
        ws += int(connections.get("ws") or 0)
        sse += int(connections.get("sse") or 0)
        for tenant, counts in (stats.pop("tenants", None) or {}).items():
            total = tenants.setdefault(tenant, [0, 0])
            total[0] += int(counts[0])
            total[1] += int(counts[1])
    top = sorted(tenants.items(), key=lambda item: (-(item[1][0] + item[1][1]), item[0]))
    events = [_number(n["stats"].get("events_per_s")) for n in servers]
    deliveries = [_number(n["stats"].get("deliveries_per_s")) for n in servers]
    latencies = [_number(n["stats"].get("p99_ms")) for n in servers]
    assert backlog is not None
    return {
        "now": _iso(datetime.now(UTC)),
        "heartbeat_interval": interval,
        "nodes": nodes,
        "totals": {
            "servers_up": len(servers),
            "workers_up": sum(1 for n in nodes if n["kind"] == "worker" and n["up"]),
            "nodes_down": sum(1 for n in nodes if not n["up"]),
            "connections": {"ws": ws, "sse": sse},
            "tenants_connected": len(tenants),
            # Every serving node samples the cluster's commits: the largest is the freshest.
            "events_per_s": max((v for v in events if v is not None), default=None),
            "deliveries_per_s": sum(d for d in deliveries if d is not None),
            "p99_ms": max((v for v in latencies if v is not None), default=None),
            "slow_consumer_closes": sum(
                int(n["stats"].get("slow_consumer_closes") or 0) for n in servers
            ),
        },
        "top_tenants": [
            {"tenant_id": tenant, "ws": counts[0], "sse": counts[1]}
            for tenant, counts in top[:TOP_TENANTS]
        ],
        "series": series,
        "jobs": {
            "queued": backlog[0],
            "running": backlog[1],
            "oldest_queued_s": round(backlog[2], 1),
            "running_jobs": [
                {
                    "job_id": str(r[0]),
                    "tenant_id": r[1],
                    "user_id": r[2],
                    "kind": r[3],
                    "progress": r[4],
                    "worker": r[5],
                    "attempts": r[6],
                    "started_at": _iso(r[7]),
                }
                for r in running
            ],
            "recent": [
                {
                    "job_id": str(r[0]),
                    "tenant_id": r[1],
                    "user_id": r[2],
                    "kind": r[3],
                    "status": r[4],
                    "progress": r[5],
                    "error": r[6],
                    "finished_at": _iso(r[7]),
                }
                for r in recent
            ],
        },
    }


@router.get("/tenants")
async def tenants(
    runtime: RuntimeDep,
    search: Annotated[str, Query(max_length=MAX_NAME_LENGTH)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=100)] = 25,
    sort: Annotated[str, Query(pattern="^(connections|name)$")] = "connections",
) -> dict[str, Any]:
    """A page of tenants matching ``search`` (a substring, any case), busiest or by name.

    Tenants are those with events and those with open connections; counts are
    summed over the live serving nodes.
    """
    async with runtime.pool.connection() as conn:
        cur = await conn.execute(
            QUERIES["admin_tenants"],
            {
                "stale_intervals": STALE_INTERVALS,
                "search": search,
                "by_name": sort == "name",
                "limit": per_page,
                "offset": (page - 1) * per_page,
            },
        )
        row = await cur.fetchone()
    assert row is not None
    return {
        "total": row[0],
        "page": page,
        "per_page": per_page,
        "sort": sort,
        "tenants": [
            {"tenant_id": t, "ws": ws, "sse": sse, "last_event_id": last}
            for t, ws, sse, last in orjson.loads(row[1])
        ],
    }


@router.get("/history")
async def history(
    runtime: RuntimeDep,
    tenant: Annotated[str, Query(min_length=1, max_length=MAX_NAME_LENGTH)],
    topic: Annotated[str | None, Query(min_length=1, max_length=MAX_NAME_LENGTH)] = None,
    user: Annotated[str | None, Query(min_length=1, max_length=MAX_NAME_LENGTH)] = None,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    """A page of a tenant's retained events, newest first, as event frames.

    With ``user``, the events that user's connections see; ``next_before``
    pages on to older events (null at the oldest).
    """
    async with runtime.pool.connection() as conn:
        cur = await conn.execute(
            QUERIES["admin_history"],
            {
                "tenant_id": tenant,
                "topic": topic,
                "user_id": user,
                "before": before,
                "limit": limit + 1,
            },
        )
        rows = await cur.fetchall()
    page = [Event.from_row(row) for row in rows[:limit]]
    body = {
        "tenant_id": tenant,
        "events": [orjson.Fragment(event.frame) for event in page],
        "next_before": page[-1].id if len(rows) > limit else None,
    }
    return Response(orjson.dumps(body), media_type="application/json")


def _check_names(*names: str | None) -> None:
    """422 unless every name given (None: not given) is one pgpulse accepts."""
    if not all(is_name(name) for name in names if name is not None):
        raise HTTPException(422, f"names must be 1 to {MAX_NAME_LENGTH} characters, without NUL")


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant_id: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    user_id: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_LENGTH)
    topics: list[str] | None = Field(default=None, max_length=100)
    publish: bool = Field(default=True, description="grant the publish scope")
    jobs: bool = Field(default=True, description="grant the jobs scope (POST /api/jobs)")
    ttl: int = Field(default=TOKEN_TTL, ge=10, le=TOKEN_TTL_MAX, description="seconds")


class TokenOut(BaseModel):
    token: str
    tenant_id: str
    user_id: str | None
    expires_in: int


@router.post(
    "/tokens", status_code=201, response_model=TokenOut, openapi_extra=json_body_docs(TokenIn)
)
async def mint_token(request: Request, runtime: RuntimeDep) -> TokenOut:
    """A short-lived token of one tenant (never with the admin scope), for its sockets."""
    body = await read_model(request, TokenIn, TOKEN_BODY_MAX)
    _check_names(body.tenant_id, body.user_id, *(body.topics or []))
    try:
        token = _verifier(request).mint(
            body.tenant_id,
            body.user_id,
            [scope for scope, wanted in (("publish", body.publish), ("jobs", body.jobs)) if wanted]
            or None,
            body.topics,
            body.ttl,
        )
    except ConfigError as exc:
        raise HTTPException(409, str(exc)) from None
    return TokenOut(
        token=token, tenant_id=body.tenant_id, user_id=body.user_id, expires_in=body.ttl
    )


class DisconnectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant_id: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    user_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_NAME_LENGTH,
        description="only this user's connections; absent or null: the whole tenant's",
    )


class DisconnectOut(BaseModel):
    tenant_id: str
    user_id: str | None


@router.post(
    "/disconnect",
    status_code=202,
    response_model=DisconnectOut,
    openapi_extra=json_body_docs(DisconnectIn),
)
async def disconnect(request: Request, runtime: RuntimeDep) -> DisconnectOut:
    """Close a tenant's open WebSockets and SSE streams (one user's, with ``user_id``).

    The request reaches every node whose LISTEN connection is up, and each
    closes its own (WebSocket close 1008 "disconnected by the operator"): 202,
    because they act on their own, as it reaches them. A client holding a
    valid token can connect again: pair this with short token lifetimes.
    """
    body = await read_model(request, DisconnectIn, DISCONNECT_BODY_MAX)
    _check_names(body.tenant_id, body.user_id)
    async with runtime.pool.connection() as conn:
        await conn.execute(
            QUERIES["admin_disconnect"], {"tenant_id": body.tenant_id, "user_id": body.user_id}
        )
    return DisconnectOut(tenant_id=body.tenant_id, user_id=body.user_id)
