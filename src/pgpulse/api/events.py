"""``POST /api/events``: publish from any service that speaks HTTP."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from ..auth import Principal
from ..errors import InvalidEvent
from ..events import MAX_NAME_LENGTH
from ..publish import NewEvent
from ..runtime import Runtime
from .deps import PrincipalDep, RuntimeDep, direct_route, json_body_docs, read_model

JSON = "application/json"

router = APIRouter()


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic: str = Field(default="notifications", min_length=1, max_length=MAX_NAME_LENGTH)
    type: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    data: Any
    """Any JSON value; ``null`` is stored and delivered as ``null``."""
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
    # A ready Response skips response_model's validate-and-encode (EventOut is for the docs).
    return Response(
        orjson.dumps(await publish_request(request, runtime, principal)), 201, media_type=JSON
    )


async def publish_request(
    request: Request, runtime: Runtime, principal: Principal
) -> dict[str, Any]:
    """Publish the event in ``request``'s body for ``principal``; returns the 201 body.

    Raises :class:`HTTPException` (403, 413, 422) for what the caller must fix.
    Shared by the route above and by :data:`publish_event_asgi`.
    """
    if "publish" not in principal.scopes:
        raise HTTPException(403, "token lacks scope 'publish'")
    event_in = await read_model(request, EventIn, runtime.settings.max_payload_bytes)
    try:
        event = NewEvent.build(
            principal.tenant_id, event_in.type, event_in.data, event_in.topic, event_in.user_id
        )
        with runtime.metrics.publish_seconds.time():
            published = await runtime.publisher.publish(event)
    except InvalidEvent as exc:
        raise HTTPException(422, str(exc)) from None
    runtime.metrics.events_published.labels("http").inc()
    return {"event_id": published.event_id}


publish_event_asgi = direct_route(publish_request, 201)
"""``POST /api/events`` as a bare ASGI app, for :class:`pgpulse.routes.DirectRoutes`."""
