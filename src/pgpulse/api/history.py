"""``GET /api/events`` and ``GET /api/position``: history, and where to stream from.

Together they give the pattern "load state, then stream from exactly there":
read a page (or only the position), build the view from it, and connect
with ``last_event_id`` set to the page's ``last_event_id``. The page never
holds an event after that id and the stream starts right after it, so
nothing is missed and nothing shows twice.

Pages obey the same rules as a connection: the token's topics (a requested
topic outside them is 403) and its user (another user's events are never
listed). ``POST /api/events`` is served ahead of the app by
:class:`pgpulse.routes.DirectRoutes`; GET falls through to this router.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel, Field

from ..errors import ForbiddenTopic
from .deps import PrincipalDep, RuntimeDep

router = APIRouter()

MAX_PAGE = 1000  # events per page at most
DEFAULT_PAGE = 100


class EventsPage(BaseModel):
    """The shape of ``GET /api/events`` (built by hand; this is for the docs)."""

    events: list[dict[str, object]] = Field(
        description="event frames, as on /ws, in id order (oldest first)"
    )
    last_event_id: int = Field(
        description="the tenant's newest id when the page was read: connect with it to go on live"
    )
    more: bool = Field(description="whether the next page in the same direction has events")


class Position(BaseModel):
    last_event_id: int = Field(description="the tenant's newest event id now")


@router.get("/api/events", response_model=EventsPage)
async def list_events(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    topic: str | None = Query(
        default=None, description="comma-separated topics; default: all the token allows"
    ),
    before: int | None = Query(default=None, ge=1, description="only ids below this one"),
    after: int | None = Query(
        default=None, ge=0, description="only ids above this one; pages forward (oldest first)"
    ),
    limit: int = Query(default=DEFAULT_PAGE, ge=1, le=MAX_PAGE),
) -> Response:
    """A page of the tenant's retained events: the newest below ``before``, or,
    with ``after``, the oldest above it. Events are always in id order."""
    try:
        topics = principal.allowed_topics(topic)
    except ForbiddenTopic as exc:
        raise HTTPException(403, str(exc)) from None
    except ValueError as exc:  # a malformed list (pgpulse.limits.parse_topics)
        raise HTTPException(422, f"topic: {exc}") from None
    if after is not None and before is not None and after >= before:
        raise HTTPException(422, f"after ({after}) must be below before ({before})")
    page = await runtime.history.page(
        principal.tenant_id,
        topics,
        principal.user_id,
        after=after,
        before=before,
        limit=limit,
    )
    body = {
        # Each frame is the one /ws sends, encoded once and embedded as is.
        "events": [orjson.Fragment(event.frame) for event in page.events],
        "last_event_id": page.head,
        "more": page.more,
    }
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/api/position", response_model=Position)
async def position(runtime: RuntimeDep, principal: PrincipalDep) -> Position:
    """The tenant's newest id: load state, then connect with ``last_event_id`` set to it."""
    return Position(last_event_id=await runtime.history.head(principal.tenant_id))
