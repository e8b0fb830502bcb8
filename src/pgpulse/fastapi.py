"""Library mode: pgpulse inside the app's own FastAPI server.

An app adds real-time events in a few lines::

    from fastapi import FastAPI
    from pgpulse.fastapi import Pgpulse, Principal

    async def current_principal(request: HTTPConnection) -> Principal | None:
        user = await user_from_session_cookie(request)  # the app's own login
        return Principal(tenant_id=user.org_id, user_id=user.id) if user else None

    pulse = Pgpulse(principal=current_principal)
    app = FastAPI(lifespan=pulse.lifespan)  # or, in the app's lifespan: async with pulse: yield
    app.include_router(pulse.router, prefix="/realtime")

and publishes inside its own transactions with ``pgpulse.publish(session, ...)``.

:class:`Pgpulse` is two things. Its :attr:`~Pgpulse.router` holds the
WebSocket (``/ws``) and SSE (``/sse``) endpoints and the HTTP API
(``/api/notifications``, ``/api/events``, ``/api/jobs``); its context (an
``async with`` or :meth:`~Pgpulse.lifespan`) runs the pieces behind them
(:func:`pgpulse.runtime.running`): one per serving process, so it works
under ``uvicorn --workers N`` and gunicorn's uvicorn workers alike.
Constructing it opens nothing, so an app module may be imported before a
fork (gunicorn ``--preload``).

The caller comes from the app. ``principal`` is any FastAPI dependency (it
may take the request, cookies, or other dependencies) that returns a
:class:`Principal`, or ``None`` (or raises ``HTTPException``) to refuse.
Without one, pgpulse's own JWT provider reads ``Authorization: Bearer`` or
``?token=``. ``pgpulse serve`` is this same class with that provider.

A WebSocket opened by a page of another origin is refused (close 1008)
before any frame: browsers send cookies with any site's WebSocket, and no
CORS rule applies to WebSockets.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, WebSocket
from fastapi.exceptions import WebSocketException
from fastapi.responses import StreamingResponse
from psycopg import OperationalError
from psycopg_pool import PoolTimeout
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from .api import events, health, history, jobs, notifications
from .api.deps import PRINCIPAL_KEY, RUNTIME_KEY
from .auth import Principal, Verifier
from .errors import (
    AuthError,
    ConfigError,
    DatabaseUnavailable,
    ForbiddenTopic,
    NotRunning,
    PgpulseError,
)
from .events import WS_1011_INTERNAL_ERROR, WS_1013_TRY_AGAIN_LATER, is_name
from .runtime import MigrateMode, Runtime, check_migrate_mode, running
from .settings import Settings
from .transports import sse, ws
from .transports.admission import Admission, Policy, Refused, TopicCheck, admit

__all__ = ["Pgpulse", "Principal"]

log = logging.getLogger("pgpulse")

INSECURE_DEV_WARNING = (
    "INSECURE DEV MODE: ?tenant_id= is accepted without a token; "
    "anyone can read any tenant. Never run this in production."
)
NOT_RUNNING_REASON = "pgpulse is not running: enter it in the app's lifespan (pulse.lifespan)"
"""The close reason of a WebSocket that came before the context (a reason holds 123 bytes)."""

PrincipalProvider = Callable[..., Any]
"""A FastAPI dependency returning a :class:`Principal` or ``None``."""


class Pgpulse:
    """pgpulse in an app: a router to include, and a context to enter in the app's lifespan.

    ``database_url``: PostgreSQL URL (an SQLAlchemy URL such as
    ``postgresql+asyncpg://`` is fine); ``None`` takes ``PGPULSE_DATABASE_URL``
    or ``DATABASE_URL``, else runs the embedded PostgreSQL.
    ``principal``: the app's dependency for the caller; ``None`` uses
    pgpulse's JWTs. ``authorize_topic(principal, topic)``: sync or async,
    checked for each topic a stream asks for (with it, streams must name
    their topics). ``allowed_origins``: the page origins allowed to open a
    WebSocket; ``None`` takes ``PGPULSE_ALLOWED_ORIGINS``, else only the
    app's own origin; ``"*"`` allows any. ``migrate``: ``"auto"`` applies
    pending migrations at start, ``"check"`` refuses to start on an outdated
    schema, ``"off"`` trusts it. ``settings``: everything else (queues,
    limits, retention); by default read from ``PGPULSE_*`` variables.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        principal: PrincipalProvider | None = None,
        authorize_topic: TopicCheck | None = None,
        allowed_origins: str | Iterable[str] | None = None,
        migrate: MigrateMode = "auto",
        settings: Settings | None = None,
    ) -> None:
        check_migrate_mode(migrate)  # now, not at start
        settings = settings or Settings()
        if database_url is not None:
            settings = settings.model_copy(update={"database_url": database_url})
        self.settings = settings
        self.token_auth: TokenAuth | None = None
        """pgpulse's JWT provider, when it is the principal."""
        if principal is None:
            principal = self.token_auth = TokenAuth(settings)
        self._principal = _refusals_as_values(principal)
        # Only the streams take pgpulse's token from the URL (see TokenAuth).
        self._stream_principal = (
            _refusals_as_values(self.token_auth.stream)
            if self.token_auth is not None
            else self._principal
        )
        if allowed_origins is None and settings.allowed_origins:
            allowed_origins = settings.allowed_origins
        self._policy = Policy.build(allowed_origins, authorize_topic)
        self._migrate: MigrateMode = migrate
        self._runtime: Runtime | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self.router = self._build_router()
        """``/ws``, ``/ws/notifications``, ``/sse``, ``/api/notifications``,
        ``/api/events`` and ``/api/jobs``, for ``app.include_router(pulse.router, prefix=...)``."""
        self.health_router = self._build_health_router()
        """``/healthz``, ``/readyz`` and ``/metrics``, for apps that want pgpulse's own."""

    # -- the context ------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._runtime is not None

    @property
    def runtime(self) -> Runtime:
        """The running pieces; raises :class:`NotRunning` outside the context."""
        if self._runtime is None:
            raise NotRunning()
        return self._runtime

    async def __aenter__(self) -> Pgpulse:
        if self._stack is not None:
            raise PgpulseError("this Pgpulse is running already: enter it once per process")
        async with contextlib.AsyncExitStack() as stack:
            if self.token_auth is not None:
                # Now, not at the first request: a bad key fails the start, and
                # a generated secret is created once.
                _ = self.token_auth.verifier
                if self.settings.insecure_dev:
                    log.warning(INSECURE_DEV_WARNING)
            self._runtime = await stack.enter_async_context(running(self.settings, self._migrate))
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        stack, self._stack = self._stack, None
        self._runtime = None
        if stack is not None:
            await stack.aclose()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """For ``FastAPI(lifespan=pulse.lifespan)``: the context, for the app's lifetime."""
        async with self:
            yield

    # -- the routes -------------------------------------------------------------

    def _running_or_refuse(self) -> Runtime:
        if self._runtime is None:
            raise Refused(str(NotRunning()), 503, WS_1011_INTERNAL_ERROR, reason=NOT_RUNNING_REASON)
        return self._runtime

    async def _token_principal(
        self, conn: HTTPConnection, query_token: bool = False
    ) -> Principal | Refused:
        """The caller by pgpulse's JWT provider, for routes served ahead of FastAPI."""
        if self.token_auth is None:
            raise ConfigError("only pgpulse's JWT provider can serve routes ahead of FastAPI")
        try:
            return await self.token_auth.principal(conn, query_token=query_token)
        except AuthError as exc:
            return _token_refused(exc)

    @property
    def _verifier(self) -> Verifier | None:
        """What checks a token a live connection sends in band (``refresh``)."""
        return self.token_auth.verifier if self.token_auth is not None else None

    async def _serve_websocket(self, websocket: WebSocket, principal: Principal | Refused) -> None:
        try:
            runtime = self._running_or_refuse()
            admission = await admit(
                websocket,
                principal,
                self._policy,
                websocket.query_params.get("last_event_id"),
                check_origin=True,
            )
            _check_caps(runtime, admission)
        except Refused as refused:
            await ws.refuse(websocket, refused)
            return
        await ws.stream(websocket, runtime, admission, self._verifier)

    async def _serve_sse(
        self, request: Request, principal: Principal | Refused
    ) -> StreamingResponse:
        try:
            runtime = self._running_or_refuse()
            admission = await admit(
                request, principal, self._policy, sse.last_event_id(request), check_origin=False
            )
            _check_caps(runtime, admission)
        except Refused as refused:
            raise refused.as_http() from None
        return sse.stream(runtime, admission)

    def _build_router(self) -> APIRouter:
        caller = Depends(self._principal)
        streamer = Depends(self._stream_principal)

        async def websocket(websocket: WebSocket, principal: Any = streamer) -> None:
            await self._serve_websocket(websocket, principal)

        async def server_sent_events(
            request: Request, principal: Any = streamer
        ) -> StreamingResponse:
            return await self._serve_sse(request, principal)

        async def bind(conn: HTTPConnection, principal: Any = caller) -> AsyncIterator[None]:
            """Put the running pgpulse and the caller where the API's handlers find them."""
            try:
                conn.scope[RUNTIME_KEY] = self._running_or_refuse()
                if isinstance(principal, Refused):
                    raise principal
            except Refused as refused:
                raise refused.as_http() from None
            conn.scope[PRINCIPAL_KEY] = principal
            async with _database_errors_as_503(conn):
                yield

        router = APIRouter()
        router.add_api_websocket_route("/ws", websocket, name="pgpulse_ws")
        router.add_api_websocket_route("/ws/notifications", websocket, name="pgpulse_ws_alias")
        router.add_api_route(
            "/sse",
            server_sent_events,
            methods=["GET"],
            name="pgpulse_sse",
            response_class=StreamingResponse,
        )
        api = [Depends(bind)]
        router.include_router(notifications.router, dependencies=api)
        router.include_router(events.router, dependencies=api)
        router.include_router(jobs.router, dependencies=api)
        router.include_router(history.router, dependencies=api)
        return router

    async def bind_runtime(self, conn: HTTPConnection) -> None:
        """A dependency that puts the running pgpulse where API handlers find it
        (for routes that authenticate by themselves, such as health and admin)."""
        try:
            conn.scope[RUNTIME_KEY] = self._running_or_refuse()
        except Refused as refused:
            raise refused.as_http() from None

    def _build_health_router(self) -> APIRouter:
        router = APIRouter()
        router.include_router(health.router, dependencies=[Depends(self.bind_runtime)])
        return router


class TokenAuth:
    """pgpulse's own principal provider: a JWT in ``Authorization: Bearer`` or ``?token=``.

    The principal of ``pgpulse serve``, and of :class:`pgpulse.fastapi.Pgpulse`
    when the app gives none. Calling it with a connection returns the
    :class:`Principal` or raises :class:`AuthError`; it is also a FastAPI
    dependency. In insecure dev mode it accepts ``?tenant_id=`` without a token.
    """

    def __init__(self, settings: Settings, verifier: Verifier | None = None) -> None:
        self.settings = settings
        self._verifier = verifier

    @property
    def verifier(self) -> Verifier:
        """Built at first use: with no key configured, that creates the secret file."""
        if self._verifier is None:
            self._verifier = Verifier.from_settings(self.settings)
        return self._verifier

    async def principal(self, conn: HTTPConnection, query_token: bool = False) -> Principal:
        """The caller from ``Authorization: Bearer`` (or dev mode's ``?tenant_id=``).

        ``query_token`` also accepts ``?token=``: only the streams pass it (``/ws``,
        ``/sse``), because a browser cannot set headers on a WebSocket or an
        EventSource. Anywhere else a token in a URL would end up in logs and
        browser history for nothing.
        """
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
            return await self.verifier.verify_async(token)
        if self.settings.insecure_dev:
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

    async def __call__(self, conn: HTTPConnection) -> Principal:
        # async on purpose: FastAPI runs a plain ``def`` dependency in a worker thread.
        return await self.principal(conn)

    async def stream(self, conn: HTTPConnection) -> Principal:
        """The caller of a stream (``/ws``, ``/sse``): ``?token=`` is accepted too."""
        return await self.principal(conn, query_token=True)


@contextlib.asynccontextmanager
async def _database_errors_as_503(conn: HTTPConnection) -> AsyncIterator[None]:
    """A request that found PostgreSQL unreachable gets 503 and ``Retry-After``, not 500."""
    try:
        yield
    except (OperationalError, PoolTimeout, DatabaseUnavailable) as exc:
        log.warning("database unavailable for %s: %s", conn.url.path, exc)
        raise HTTPException(
            503, "database unavailable; retry later", headers={"Retry-After": "1"}
        ) from None


def _refusals_as_values(provider: PrincipalProvider) -> Callable[..., Awaitable[Any]]:
    """``provider`` as a dependency that returns a :class:`Principal` or a :class:`Refused`.

    A refusal must reach the endpoint as a value: a WebSocket is refused by
    closing it with a reason a browser can read, which an exception raised
    while FastAPI resolves dependencies would not allow. The wrapper keeps
    the provider's signature, so FastAPI still resolves what the provider
    asks for (the request, cookies, the app's own dependencies).
    """
    if inspect.isasyncgenfunction(provider) or inspect.isgeneratorfunction(provider):
        raise ConfigError("principal must return a Principal (or None), not yield one")
    call = getattr(provider, "__call__", None)  # noqa: B004  # a callable object's method
    is_async = inspect.iscoroutinefunction(provider) or inspect.iscoroutinefunction(call)

    async def principal(*args: Any, **kwargs: Any) -> Principal | Refused:
        try:
            if is_async:
                found = await provider(*args, **kwargs)
            else:
                found = await run_in_threadpool(provider, *args, **kwargs)
        except HTTPException as exc:
            return Refused(str(exc.detail), exc.status_code, headers=exc.headers)
        except WebSocketException as exc:
            return Refused(exc.reason or "refused", 403, exc.code)
        except AuthError as exc:  # pgpulse's own provider
            return _token_refused(exc)
        if found is None:
            return Refused("not authenticated", 401)
        if not isinstance(found, Principal):
            raise TypeError(
                f"the principal dependency {_name(provider)} returned a {type(found).__name__}; "
                f"it must return pgpulse.fastapi.Principal or None"
            )
        return found

    try:
        signature = inspect.signature(provider, eval_str=True)
    except NameError:  # annotations only defined under TYPE_CHECKING
        signature = inspect.signature(provider)
    principal.__signature__ = signature.replace(  # type: ignore[attr-defined]
        return_annotation=inspect.Signature.empty
    )
    principal.__wrapped__ = provider  # type: ignore[attr-defined]  # its globals resolve the rest
    principal.__name__ = f"pgpulse_principal_{_name(provider)}"
    return principal


def _check_caps(runtime: Runtime, admission: Admission) -> None:
    """Refuse a stream over its tenant's or user's caps or connect rate, for a while."""
    principal = admission.principal
    refusal = runtime.caps.refusal(principal.tenant_id, principal.user_id)
    if refusal is not None:
        raise Refused(refusal, 429, WS_1013_TRY_AGAIN_LATER, headers={"Retry-After": "1"})


def _token_refused(exc: AuthError) -> Refused:
    status = 403 if isinstance(exc, ForbiddenTopic) else 401
    return Refused(str(exc), status, headers={"WWW-Authenticate": "Bearer"})


def _name(provider: object) -> str:
    return getattr(provider, "__name__", type(provider).__name__)
