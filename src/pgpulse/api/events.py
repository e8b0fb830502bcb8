"""``POST /api/events``: publish from any service that speaks HTTP."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request, Response
from psycopg import OperationalError
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import Receive, Scope, Send

from ..auth import Principal
from ..errors import AuthError, InvalidEvent
from ..events import MAX_NAME_LENGTH
from ..publish import NewEvent
from ..runtime import Runtime
from .deps import (
    DATABASE_UNAVAILABLE,
    PrincipalDep,
    RuntimeDep,
    authenticate,
    describe_errors,
    get_runtime,
    read_json,
)

log = logging.getLogger("pgpulse")

router = APIRouter()


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic: str = Field(default="notifications", min_length=1, max_length=MAX_NAME_LENGTH)
    type: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    data: Any
    user_id: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_LENGTH)


class EventOut(BaseModel):
    event_id: int


@router.post(
    "/api/events",
    status_code=201,
    response_model=EventOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": EventIn.model_json_schema()}},
        }
    },
)
async def publish_event(request: Request, runtime: RuntimeDep, principal: PrincipalDep) -> Response:
    event_id = await publish_request(request, runtime, principal)
    # A ready Response skips response_model's validate-and-encode (EventOut is for the docs).
    return Response(orjson.dumps({"event_id": event_id}), 201, media_type="application/json")


async def publish_request(request: Request, runtime: Runtime, principal: Principal) -> int:
    """Publish the event in ``request``'s body for ``principal``; returns its id.

    Raises :class:`HTTPException` (403, 413, 422) for what the caller must fix.
    Shared by the route above and by :func:`publish_event_asgi`.
    """
    if "publish" not in principal.scopes:
        raise HTTPException(403, "token lacks scope 'publish'")
    # Read the body by hand so that the size limit holds before parsing.
    body = await read_json(request, runtime.settings.max_payload_bytes)
    try:
        event_in = EventIn.model_validate(body)
    except ValidationError as exc:
        raise HTTPException(422, describe_errors(exc.errors())) from None
    try:
        event = NewEvent.build(
            principal.tenant_id, event_in.type, event_in.data, event_in.topic, event_in.user_id
        )
    except InvalidEvent as exc:
        raise HTTPException(422, str(exc)) from None
    with runtime.metrics.publish_seconds.time():
        event_id = await runtime.publisher.publish(event)
    runtime.metrics.events_published.labels("http").inc()
    return event_id


async def publish_event_asgi(scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /api/events`` as a bare ASGI app, for :class:`pgpulse.routes.DirectRoutes`.

    The same checks, statuses and JSON bodies as the route above, without
    the framework's routing, dependency and exception layers, which cost
    about as much CPU as the publish itself at thousands of requests a second.
    """
    request = Request(scope, receive)
    runtime = get_runtime(request)
    headers: dict[str, str] = {}
    content: dict[str, Any]
    try:
        principal = authenticate(request)
        status, content = 201, {"event_id": await publish_request(request, runtime, principal)}
    except AuthError as exc:
        status, content = 401, {"detail": str(exc)}
        headers["WWW-Authenticate"] = "Bearer"
    except HTTPException as exc:
        status, content = exc.status_code, {"detail": exc.detail}
        headers.update(exc.headers or {})
    except (OperationalError, PoolTimeout) as exc:
        log.warning("database unavailable for POST %s: %s", scope["path"], exc)
        status, content = 503, {"detail": DATABASE_UNAVAILABLE}
        headers["Retry-After"] = "1"
    response = Response(orjson.dumps(content), status, headers, "application/json")
    await response(scope, receive, send)
