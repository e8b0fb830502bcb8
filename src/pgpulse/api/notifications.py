"""The seed's notification endpoints: a stored message and its event, in one transaction."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field, field_validator

from ..limits import MAX_ID
from ..publish import publish
from ..sql import QUERIES
from .deps import PrincipalDep, RuntimeDep, json_body_docs, read_model

router = APIRouter()


class NotificationIn(BaseModel):
    message: str = Field(min_length=1, max_length=100_000)

    @field_validator("message")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\x00" in value:  # PostgreSQL text cannot hold it
            raise ValueError("must not contain NUL characters")
        return value


class NotificationCreated(BaseModel):
    ok: bool = True
    id: int
    event_id: int


class Notification(BaseModel):
    id: int
    message: str
    created_at: datetime


@router.post(
    "/api/notifications",
    status_code=201,
    response_model=NotificationCreated,
    openapi_extra=json_body_docs(NotificationIn),
)
async def create_notification(
    request: Request, runtime: RuntimeDep, principal: PrincipalDep
) -> NotificationCreated:
    # The token is checked (by the dependency) before a byte of the body is read.
    if "publish" not in principal.scopes:  # the event goes to the whole tenant
        raise HTTPException(403, "token lacks scope 'publish'")
    body = await read_model(request, NotificationIn, runtime.settings.max_payload_bytes)
    async with runtime.pool.connection() as conn, conn.transaction():
        cur = await conn.execute(
            QUERIES["insert_notification"],
            {"tenant_id": principal.tenant_id, "message": body.message},
        )
        row = await cur.fetchone()
        assert row is not None
        notification_id = int(row[0])
        event_id = await publish(
            conn,
            tenant_id=principal.tenant_id,
            topic="notifications",
            type="notification",
            data={"message": body.message, "notification_id": notification_id},
        )
    runtime.metrics.events_published.labels("notifications").inc()
    return NotificationCreated(id=notification_id, event_id=event_id)


@router.get("/api/notifications", response_model=list[Notification])
async def list_notifications(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    before: int | None = Query(default=None, ge=1, le=MAX_ID),
    limit: int = Query(default=50, ge=1, le=500),
) -> list[Notification]:
    if principal.topics is not None and "notifications" not in principal.topics:
        raise HTTPException(403, "token does not allow topic(s): notifications")
    async with runtime.pool.connection() as conn:
        cur = await conn.execute(
            QUERIES["list_notifications"],
            {"tenant_id": principal.tenant_id, "before": before, "limit": limit},
        )
        rows = await cur.fetchall()
    return [Notification(id=r[0], message=r[1], created_at=r[2]) for r in rows]
