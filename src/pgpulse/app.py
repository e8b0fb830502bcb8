"""The server: :func:`create_app` wires every part, and nothing else does.

At start the lifespan opens the pool, applies migrations, and starts the
listener, whose sink is the hub (``hub.on_new_room`` points back at
``listener.kick``, so neither module imports the other). The path of one
event: ``publish`` → ``pgpulse.events`` + NOTIFY → ``listener`` → ``hub`` →
``transports``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import signal
import threading
from collections.abc import AsyncIterator, Callable
from types import FrameType
from typing import Any
from urllib.parse import unquote_plus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from psycopg import OperationalError
from psycopg_pool import PoolTimeout

from . import db
from .admission import Admission
from .api import events, health, jobs, notifications
from .api.deps import database_unavailable, describe_errors
from .auth import Verifier
from .history import History
from .hub import Hub
from .limits import BodyLimit
from .listener import Listener
from .metrics import Metrics
from .migrate import migrate
from .publish import BatchPublisher
from .retention import prune_forever
from .routes import DirectRoutes
from .runtime import Runtime
from .settings import Settings
from .transports.lifetime import apply_control
from .transports.sse import sse_endpoint
from .transports.subscription import Stream

log = logging.getLogger("pgpulse")

INSECURE_DEV_WARNING = (
    "INSECURE DEV MODE: ?tenant_id= is accepted without a token; "
    "anyone can read any tenant. Never run this in production."
)


class RedactTokens(logging.Filter):
    """Keep tokens out of logs: uvicorn logs request paths with their query.

    A query parameter is redacted when its name, percent-decoded (twice, for
    double encoding), is ``token``, whatever its value looks like; anything
    shaped like a JWT is redacted wherever it appears.
    """

    _PAIR = re.compile(r"(^|[?&;\s])([^=&;\s\"'#?]*)=([^&;\s\"'#]*)")
    _JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")

    @classmethod
    def redact(cls, text: str) -> str:
        def pair(match: re.Match[str]) -> str:
            name = unquote_plus(unquote_plus(match.group(2))).strip().lower()
            if name in ("token", "access_token"):
                return f"{match.group(1)}{match.group(2)}=***"
            return match.group(0)

        return cls._JWT.sub("***", cls._PAIR.sub(pair, text))

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        return True


def _redact_server_logs() -> None:
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())


def _end_streams_on_signal(hub: Hub) -> None:
    """Make the server's exit signal end every stream at once.

    On SIGTERM uvicorn closes WebSockets with 1012 itself, but it waits for
    open HTTP responses, and an SSE stream never ends on its own: shutdown
    would stall for the whole graceful timeout. uvicorn has no hook for that
    moment, so the handler it installed is wrapped here (it restores its
    predecessor, dropping this wrapper, when it exits).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(
            signum: int, frame: FrameType | None, previous: Callable[..., Any] = previous
        ) -> None:
            hub.close_all()
            previous(signum, frame)

        signal.signal(sig, handler)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    _redact_server_logs()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        embedded: db.EmbeddedPostgres | None = None
        url = settings.database_url
        if not url:
            embedded = db.EmbeddedPostgres(settings.pgdata)
            url = embedded.start()
        if settings.insecure_dev:
            log.warning(INSECURE_DEV_WARNING)
        verifier = Verifier.from_settings(settings)
        await migrate(url)
        pool = await db.open_pool(url, settings.pool_min_size, settings.pool_max_size)
        metrics = Metrics()
        hub = Hub()
        listener = Listener(
            url,
            pool,
            hub,
            poll_interval=settings.listener_poll_interval,
            on_events=metrics.events_delivered.inc,
            on_control=functools.partial(apply_control, hub),
        )
        hub.on_new_room = listener.kick
        _end_streams_on_signal(hub)
        history = History(pool)  # leaves a share of the pool to publishing
        app.state.runtime = Runtime(
            settings=settings,
            database_url=url,
            pool=pool,
            hub=hub,
            listener=listener,
            history=history,
            stream=Stream(hub, history),
            publisher=BatchPublisher(pool),
            verifier=verifier,
            metrics=metrics,
            admission=Admission.from_settings(settings),
        )
        listener.start()
        pruner = asyncio.create_task(
            prune_forever(
                pool,
                settings.retention_seconds,
                settings.retention_max_events,
                settings.prune_interval,
            )
        )
        try:
            yield
        finally:
            hub.close_all()
            pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruner
            await listener.stop()
            await pool.close()
            if embedded is not None:
                embedded.stop()

    app = FastAPI(title="pgpulse", lifespan=lifespan)
    # Added first, so that CORS (added next) wraps it: the routes it serves
    # ahead of the app get the same cross-origin answers as the app's own.
    app.add_middleware(DirectRoutes)  # /ws, /ws/notifications, POST /api/events
    # Every request body is bounded before routing and auth; inside CORS, so
    # that a browser can read a 413 too.
    app.add_middleware(BodyLimit, limit=settings.max_payload_bytes)
    if settings.allowed_origins:
        # Browsers on other origins may call the HTTP API; tokens travel in the
        # Authorization header, never in cookies, so credentials stay off.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
        )
    app.include_router(notifications.router)
    app.include_router(events.router)
    app.include_router(jobs.router)
    app.include_router(health.router)
    app.add_api_route("/sse", sse_endpoint, methods=["GET"])

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": describe_errors(exc.errors())}, status_code=422)

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeout)
    async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        return database_unavailable(request.method, request.url.path, exc)

    return app
