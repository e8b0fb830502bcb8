"""Request dependencies: the running server and the verified caller."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.requests import HTTPConnection

from ..auth import Principal
from ..errors import AuthError
from ..events import is_name
from ..runtime import Runtime

log = logging.getLogger("pgpulse")


def get_runtime(conn: HTTPConnection) -> Runtime:
    runtime: Runtime = conn.app.state.runtime
    return runtime


def authenticate(conn: HTTPConnection, query_token: bool = False) -> Principal:
    """The caller, from ``Authorization: Bearer`` (or dev mode's ``?tenant_id=``).

    ``query_token`` also accepts ``?token=``: only the streams pass it (``/ws``,
    ``/sse``), because a browser cannot set headers on a WebSocket or an
    EventSource. Anywhere else a token in a URL would end up in logs and
    browser history for nothing.
    """
    runtime = get_runtime(conn)
    header = conn.headers.get("authorization")
    token: str | None = None
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthError("Authorization header must be 'Bearer <token>'")
        token = value.strip()
    elif query_token:
        token = conn.query_params.get("token")
    if token:
        return runtime.verifier.verify(token)
    if runtime.settings.insecure_dev:
        tenant = conn.query_params.get("tenant_id")
        if is_name(tenant):
            return Principal(
                tenant_id=tenant,
                user_id=user if is_name(user := conn.query_params.get("user_id")) else None,
                scopes=frozenset({"publish", "jobs"}),
            )
    if not query_token and "token" in conn.query_params:
        raise AuthError(
            "send the token in 'Authorization: Bearer <token>'; ?token= is for /ws and /sse"
        )
    raise AuthError(
        "missing token: send 'Authorization: Bearer <token>'"
        + (" or '?token='" if query_token else "")
    )


# Dependencies are ``async def`` on purpose: FastAPI runs a plain ``def``
# dependency in a worker thread: two thread hand-offs per request, which
# profiling showed cost a third of ``POST /api/events`` throughput.


async def _runtime(request: Request) -> Runtime:
    return get_runtime(request)


async def _principal(request: Request) -> Principal:
    try:
        return authenticate(request)
    except AuthError as exc:
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None


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
