"""Jobs: long work (an AI call, a report) whose progress and end are events.

A job is a row of ``pgpulse.jobs`` (schema in ``sql/migrations/0003_jobs.sql``).
:func:`submit_job` queues one inside the caller's transaction, like
:func:`pgpulse.publish`; ``POST /api/jobs`` does the same over HTTP. Workers
(:mod:`pgpulse.worker`, ``pgpulse worker``) claim jobs, run them, and report
through the SQL functions of that migration, each of which publishes the
job's event on topic ``ai_jobs`` in the same transaction:

* ``ai_job.started`` ``{"job_id", "kind", "attempt"}``
* ``ai_job.progress`` ``{"job_id", "progress", "message"?}``, progress from 0 to 1
* ``ai_job.output`` ``{"job_id", "offset", "text"}``, streamed text (``Job.stream``):
  ``text`` starts at ``offset`` characters into the attempt's whole text
* ``ai_job_complete`` ``{"job_id", "result"}``
* ``ai_job.failed`` ``{"job_id", "error"}``

A job submitted for a user (``user_id``) is that user's: its events reach
only that user's connections, and only that user may read it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import orjson
import psycopg
from pydantic import BaseModel, Field

from .errors import InvalidJob
from .publish import check_name, encode_json, scalar_in_transaction
from .sql import QUERIES

_SQLALCHEMY_SUBMIT = "SELECT pgpulse.submit_job(:tenant_id, :kind, CAST(:input AS jsonb), :user_id)"


async def submit_job(
    conn: Any,
    *,
    tenant_id: str,
    kind: str,
    input: Any = None,
    user_id: str | None = None,
) -> str:
    """Queue a job in ``conn``'s current transaction and return its id.

    ``conn`` is a psycopg ``AsyncConnection`` or an SQLAlchemy
    ``AsyncSession``/``AsyncConnection``. The job exists, and a worker runs
    it, only if that transaction commits.
    """
    check_name("tenant_id", tenant_id, InvalidJob)
    check_name("kind", kind, InvalidJob)
    if user_id is not None:
        check_name("user_id", user_id, InvalidJob)
    params = {
        "tenant_id": tenant_id,
        "kind": kind,
        "input": encode_json("input", {} if input is None else input, InvalidJob),
        "user_id": user_id,
    }
    return str(await scalar_in_transaction(conn, "submit_job", _SQLALCHEMY_SUBMIT, params))


class JobState(BaseModel):
    """A job as ``GET /api/jobs/{job_id}`` shows it."""

    job_id: str
    kind: str
    status: str = Field(description="queued, running, succeeded or failed")
    progress: float = Field(description="from 0 to 1")
    input: Any
    result: Any
    error: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    text: str = Field(
        description="the text the job has streamed so far (its latest attempt's), '' if none"
    )


def parse_job_id(value: str) -> uuid.UUID | None:
    """The job id in ``value``, or None: a malformed id is as unknown as another tenant's."""
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


async def get_job(
    conn: psycopg.AsyncConnection[Any], job_id: uuid.UUID, tenant_id: str, user_id: str | None
) -> JobState | None:
    """The job if this tenant (and user) may see it, else None."""
    cur = await conn.execute(
        QUERIES["get_job"], {"job_id": job_id, "tenant_id": tenant_id, "user_id": user_id}
    )
    row = await cur.fetchone()
    return None if row is None else _job_state(row)


async def list_jobs(
    conn: psycopg.AsyncConnection[Any],
    tenant_id: str,
    user_id: str | None,
    before: uuid.UUID | None,
    limit: int,
) -> tuple[list[JobState], bool]:
    """Up to ``limit`` jobs this tenant (and user) may see, newest first, created
    before the job ``before``; and whether there are more."""
    cur = await conn.execute(
        QUERIES["list_jobs"],
        {"tenant_id": tenant_id, "user_id": user_id, "before": before, "limit": limit + 1},
    )
    rows = await cur.fetchall()
    return [_job_state(row) for row in rows[:limit]], len(rows) > limit


def _job_state(row: tuple[Any, ...]) -> JobState:
    """A row of ``get_job`` or ``list_jobs`` (sql/queries.sql), which select the same columns."""
    return JobState(
        job_id=str(row[0]),
        kind=row[1],
        status=row[2],
        progress=float(row[3]),
        input=orjson.loads(row[4]),
        result=None if row[5] is None else orjson.loads(row[5]),
        error=row[6],
        attempts=int(row[7]),
        created_at=row[8],
        started_at=row[9],
        finished_at=row[10],
        text=row[11],
    )
