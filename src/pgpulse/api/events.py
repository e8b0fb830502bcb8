"""``POST /api/events``: publish from any service that speaks HTTP."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from psycopg import OperationalError
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import Receive, Scope, Send

from ..auth import Principal
from ..errors import AuthError, InvalidEvent
from ..events import MAX_NAME_LENGTH
from ..publish import NewEvent
from ..runtime import Runtime
from .deps import (
    PrincipalDep,
    RuntimeDep,
    authenticate,
    database_unavailable,
    get_runtime,
    json_body_docs,
    read_model,
)

JSON = "application/json"

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
    openapi_extra=json_body_docs(EventIn),
)
async def publish_event(request: Request, runtime: RuntimeDep, principal: PrincipalDep) -> Response:
    """The route as the app declares it, for its OpenAPI description.

    :func:`pgpulse.app.create_app` puts :class:`pgpulse.routes.DirectRoutes`
    in front, which serves every ``POST /api/events`` itself; this handler
    shares its implementation so that the app alone would answer the same.
    """
    event_id = await publish_request(request, runtime, principal)
    # A ready Response skips response_model's validate-and-encode (EventOut is for the docs).
    return Response(orjson.dumps({"event_id": event_id}), 201, media_type=JSON)


async def publish_request(request: Request, runtime: Runtime, principal: Principal) -> int:
    """Publish the event in ``request``'s body for ``principal``; returns its id.

    Raises :class:`HTTPException` (403, 413, 422) for what the caller must fix.
    Shared by the route above and by :func:`publish_event_asgi`.
    """
    if "publish" not in principal.scopes:
        raise HTTPException(403, "token lacks scope 'publish'")
    event_in = await read_model(request, EventIn, runtime.settings.max_payload_bytes)
    if event_in.data is None:  # as pgpulse.publish refuses NULL; in a batch it failed them all
        raise HTTPException(422, "data: must not be null (send {} for no data)")
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
    response: Response
    try:
        event_id = await publish_request(request, get_runtime(request), authenticate(request))
        response = Response(orjson.dumps({"event_id": event_id}), 201, media_type=JSON)
    except AuthError as exc:
        response = JSONResponse({"detail": str(exc)}, 401, {"WWW-Authenticate": "Bearer"})
    except HTTPException as exc:
        response = JSONResponse({"detail": exc.detail}, exc.status_code, exc.headers)
    except (OperationalError, PoolTimeout) as exc:
        response = database_unavailable("POST", scope["path"], exc)
    await response(scope, receive, send)
