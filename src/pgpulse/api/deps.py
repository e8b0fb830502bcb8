"""Request dependencies: the running server and the verified caller."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from psycopg import OperationalError
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, ValidationError
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..auth import Principal
from ..runtime import Runtime

log = logging.getLogger("pgpulse")


RUNTIME_KEY = "pgpulse.runtime"
PRINCIPAL_KEY = "pgpulse.principal"
"""Scope keys: the routes' wiring (:mod:`pgpulse.fastapi`, :mod:`pgpulse.routes`)
puts the running pgpulse and the caller there before a handler runs, so the
handlers here serve any app that includes them, under any principal."""


def get_runtime(conn: HTTPConnection) -> Runtime:
    runtime: Runtime | None = conn.scope.get(RUNTIME_KEY)
    if runtime is None:
        raise RuntimeError("pgpulse's API routes must be included through Pgpulse.router")
    return runtime


def authenticate(conn: HTTPConnection) -> Principal:
    """The caller, as the principal provider found it; raises the refusal otherwise."""
    found = conn.scope.get(PRINCIPAL_KEY)
    if isinstance(found, Principal):
        return found
    if isinstance(found, HTTPException):
        raise found
    raise RuntimeError("pgpulse's API routes must be included through Pgpulse.router")


# Dependencies are ``async def`` on purpose: FastAPI runs a plain ``def``
# dependency in a worker thread: two thread hand-offs per request, which
# profiling showed cost a third of ``POST /api/events`` throughput.


async def _runtime(request: Request) -> Runtime:
    return get_runtime(request)


async def _principal(request: Request) -> Principal:
    return authenticate(request)


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
PrincipalDep = Annotated[Principal, Depends(_principal)]


def database_unavailable(method: str, path: str, exc: Exception) -> JSONResponse:
    """503 with ``Retry-After`` for a request that found PostgreSQL unreachable."""
    log.warning("database unavailable for %s %s: %s", method, path, exc)
    return JSONResponse(
        {"detail": "database unavailable; retry later"},
        status_code=503,
        headers={"Retry-After": "1"},
    )


def describe_errors(errors: Iterable[Mapping[str, Any]]) -> str:
    """Pydantic's validation errors as one line: ``field: problem; field: problem``."""
    return "; ".join(
        f"{'.'.join(str(p) for p in error.get('loc', ())) or 'body'}: {error.get('msg')}"
        for error in errors
    )


ModelT = TypeVar("ModelT", bound=BaseModel)


async def read_model(request: Request, model: type[ModelT], limit: int) -> ModelT:
    """The request body as ``model``: 413 past ``limit`` bytes, 422 saying what is wrong.

    The body is read by hand, not by FastAPI, so that the size limit holds
    before anything is parsed.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body is {declared} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    try:
        body = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise HTTPException(422, f"body is not valid JSON: {exc}") from None
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise HTTPException(422, describe_errors(exc.errors())) from None


def json_body_docs(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` describing a body read with :func:`read_model` (FastAPI cannot see it)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


DirectHandler = Callable[[Request, Runtime, Principal], Awaitable[dict[str, Any]]]


def direct_route(
    handler: DirectHandler,
    status: int,
    location: Callable[[dict[str, Any]], str] | None = None,
) -> ASGIApp:
    """``handler`` as a bare ASGI app, for :class:`pgpulse.routes.DirectRoutes`.

    The same checks, statuses and JSON bodies as the route the app declares
    for it, without the framework's routing, dependency and exception layers,
    which cost about as much CPU as a publish itself at thousands of requests
    a second. ``location`` gives a ``Location`` header from the body.
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response: Response
        try:
            body = await handler(request, get_runtime(request), authenticate(request))
            headers = {"Location": location(body)} if location is not None else None
            response = Response(orjson.dumps(body), status, headers, "application/json")
        except HTTPException as exc:  # the principal provider's refusal among them
            response = JSONResponse({"detail": exc.detail}, exc.status_code, exc.headers)
        except (OperationalError, PoolTimeout) as exc:
            response = database_unavailable(scope["method"], scope["path"], exc)
        await response(scope, receive, send)

    return app
