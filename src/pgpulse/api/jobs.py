"""``POST /api/jobs``, ``GET /api/jobs`` and ``GET /api/jobs/{job_id}``: submit
long work, follow it.

The job's events (topic ``ai_jobs``) reach the submitter's connections as
the worker reports; the GET endpoints are for a client that (re)loads its
view. A job submitted with a token that names a user (``sub``) is that
user's; a token reads its tenant's shared jobs and its own user's.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from ..auth import Principal
from ..errors import InvalidJob
from ..events import MAX_NAME_LENGTH
from ..jobs import JobState, get_job, list_jobs, parse_job_id, submit_job
from ..runtime import Runtime
from .deps import PrincipalDep, RuntimeDep, direct_route, json_body_docs, read_model

router = APIRouter()

JOBS_SCOPE = "jobs"
"""What a token needs to submit a job: running work is a power of its own, apart from
``publish`` (broadcasting to the whole tenant), so a browser's token can have one
without the other."""


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    input: Any = Field(default_factory=dict)


class JobAccepted(BaseModel):
    job_id: str


class JobsPage(BaseModel):
    jobs: list[JobState] = Field(description="newest first")
    more: bool = Field(description="whether older jobs follow: pass the last job_id as before")


MAX_JOBS_PAGE = 100


@router.post(
    "/api/jobs",
    status_code=202,
    response_model=JobAccepted,
    openapi_extra=json_body_docs(JobIn),
)
async def create_job(request: Request, runtime: RuntimeDep, principal: PrincipalDep) -> Response:
    """The route as the app declares it (DirectRoutes serves it ahead of the app)."""
    body = await submit_request(request, runtime, principal)
    return Response(orjson.dumps(body), 202, {"Location": _location(body)}, "application/json")


async def submit_request(
    request: Request, runtime: Runtime, principal: Principal
) -> dict[str, Any]:
    """Queue the body's job for ``principal``; the 202 body."""
    if JOBS_SCOPE not in principal.scopes:
        raise HTTPException(403, f"token lacks scope {JOBS_SCOPE!r}")
    job_in = await read_model(request, JobIn, runtime.settings.max_payload_bytes)
    allowed = runtime.settings.job_kinds
    if allowed and job_in.kind not in allowed:
        raise HTTPException(
            422, f"kind: unknown job kind {job_in.kind!r}; this server runs {', '.join(allowed)}"
        )
    try:
        async with runtime.pool.connection() as conn:
            job_id = await submit_job(
                conn,
                tenant_id=principal.tenant_id,
                kind=job_in.kind,
                input=job_in.input,
                user_id=principal.user_id,
            )
    except InvalidJob as exc:
        raise HTTPException(422, str(exc)) from None
    runtime.metrics.jobs_submitted.inc()
    return {"job_id": job_id}


def _location(body: dict[str, Any]) -> str:
    return f"/api/jobs/{body['job_id']}"


create_job_asgi = direct_route(submit_request, 202, _location)
"""``POST /api/jobs`` as a bare ASGI app, for :class:`pgpulse.routes.DirectRoutes`."""


@router.get("/api/jobs", response_model=JobsPage)
async def read_jobs(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    before: str | None = Query(default=None, description="a job_id: only jobs created before it"),
    limit: int = Query(default=20, ge=1, le=MAX_JOBS_PAGE),
) -> JobsPage:
    """The recent jobs this token may read: its tenant's shared ones and, with a
    ``sub``, its user's; newest first."""
    cursor = None
    if before is not None:
        cursor = parse_job_id(before)
        if cursor is None:
            raise HTTPException(422, f"before: not a job id: {before[:40]!r}")
    async with runtime.pool.connection() as conn:
        jobs, more = await list_jobs(conn, principal.tenant_id, principal.user_id, cursor, limit)
    return JobsPage(jobs=jobs, more=more)


@router.get("/api/jobs/{job_id}", response_model=JobState)
async def read_job(job_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> JobState:
    parsed = parse_job_id(job_id)
    job = None
    if parsed is not None:
        async with runtime.pool.connection() as conn:
            job = await get_job(conn, parsed, principal.tenant_id, principal.user_id)
    if job is None:
        raise HTTPException(404, "job not found")
    return job
