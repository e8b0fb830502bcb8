"""``POST /api/events``: publish from any service that speaks HTTP."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import InvalidEvent
from ..events import MAX_NAME_LENGTH
from ..publish import NewEvent
from .deps import PrincipalDep, RuntimeDep, describe_errors, read_json

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
    # A ready Response skips response_model's validate-and-encode (EventOut is for the docs).
    return Response(orjson.dumps({"event_id": event_id}), 201, media_type="application/json")

