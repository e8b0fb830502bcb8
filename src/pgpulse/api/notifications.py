"""The seed's notification endpoints: a stored message and its event, in one transaction.

``POST /api/notifications`` takes the same path as ``POST /api/events``: it
is served ahead of FastAPI's layers (:class:`pgpulse.routes.DirectRoutes`)
and joins the group commit, where many requests share one transaction and
one NOTIFY per tenant; the row and its event are written by one statement.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field, field_validator

from ..auth import Principal
from ..errors import InvalidEvent
from ..limits import MAX_ID
from ..publish import MAX_MESSAGE_LENGTH, NewNotification
from ..runtime import Runtime
from ..sql import QUERIES
from .deps import PrincipalDep, RuntimeDep, direct_route, json_body_docs, read_model

router = APIRouter()


class NotificationIn(BaseModel):
    message: str = Field(min_length=1, max_length=MAX_MESSAGE_LENGTH)

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
) -> Response:
    """The route as the app declares it (DirectRoutes serves it ahead of the app)."""
    body = await notify_request(request, runtime, principal)
    return Response(orjson.dumps(body), 201, media_type="application/json")


async def notify_request(
    request: Request, runtime: Runtime, principal: Principal
) -> dict[str, Any]:
    """Store the body's message and publish its event for ``principal``; the 201 body."""
    # The token is checked (by the caller) before a byte of the body is read.
    if "publish" not in principal.scopes:  # the event goes to the whole tenant
        raise HTTPException(403, "token lacks scope 'publish'")
    body = await read_model(request, NotificationIn, runtime.settings.max_payload_bytes)
    try:
        item = NewNotification.build(principal.tenant_id, body.message)
        with runtime.metrics.publish_seconds.time():
            published = await runtime.publisher.publish(item)
    except InvalidEvent as exc:
        raise HTTPException(422, str(exc)) from None
    runtime.metrics.events_published.labels("notifications").inc()
    return {"ok": True, "id": published.notification_id, "event_id": published.event_id}


create_notification_asgi = direct_route(notify_request, 201)
"""``POST /api/notifications`` as a bare ASGI app, for :class:`pgpulse.routes.DirectRoutes`."""


@router.get("/api/notifications", response_model=list[Notification])
async def list_notifications(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    before: int | None = Query(default=None, ge=1, le=MAX_ID),
    limit: int = Query(default=50, ge=1, le=500),
) -> Response:
    if principal.topics is not None and "notifications" not in principal.topics:
        raise HTTPException(403, "token does not allow topic(s): notifications")
    async with runtime.pool.connection() as conn:
        cur = await conn.execute(
            QUERIES["list_notifications"],
            {"tenant_id": principal.tenant_id, "before": before, "limit": limit},
        )
        rows = await cur.fetchall()
    # Encoded at once: validating a model per row, then encoding it, cost more
    # than the query (``Notification`` is what the OpenAPI description shows).
    body = [{"id": r[0], "message": r[1], "created_at": r[2]} for r in rows]
    return Response(orjson.dumps(body), media_type="application/json")
