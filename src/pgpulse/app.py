"""``pgpulse serve``'s app: library mode with pgpulse's JWTs, and what a server of its own needs.

:func:`create_app` is one user of :class:`pgpulse.fastapi.Pgpulse`: the
same router and the same running context an app would include, with the
JWT provider as the principal. What it adds is what only a server of its
own needs: the hot routes served ahead of FastAPI
(:class:`pgpulse.routes.DirectRoutes`), CORS for pages on other origins,
health and metrics, the console and its admin API, ``/docs`` served from
the wheel, one-line error bodies, and tokens kept out of logs.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg import OperationalError
from psycopg_pool import PoolTimeout

from .api import admin, console, docs
from .api.deps import database_unavailable, describe_errors
from .cors import CORS
from .errors import DatabaseUnavailable
from .fastapi import Pgpulse
from .limits import BodyLimit
from .routes import DirectRoutes
from .settings import Settings


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


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    _redact_server_logs()
    # Any page may open a WebSocket: its token is in the URL, not in a cookie
    # that the browser would send for another site's page.
    pulse = Pgpulse(settings=settings, allowed_origins="*")
    # /docs and /redoc come from the wheel (api/docs.py), not from a CDN.
    app = FastAPI(title="pgpulse", lifespan=pulse.lifespan, docs_url=None, redoc_url=None)
    app.state.pgpulse = pulse
    # Added first, so that CORS (added next) wraps it: the routes it serves
    # ahead of the app get the same cross-origin answers as the app's own.
    app.add_middleware(DirectRoutes, pulse=pulse)  # /ws, /ws/notifications, POST /api/events
    # Every request body is bounded before routing and auth; inside CORS, so
    # that a browser can read a 413 too.
    app.add_middleware(BodyLimit, limit=settings.max_payload_bytes)
    app.add_middleware(CORS, allowed_origins=settings.allowed_origins)
    app.include_router(pulse.router)
    app.include_router(pulse.health_router)
    app.include_router(admin.router, dependencies=[Depends(pulse.bind_runtime)])
    app.include_router(console.router)
    app.include_router(docs.router)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": describe_errors(exc.errors())}, status_code=422)

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeout)
    @app.exception_handler(DatabaseUnavailable)
    async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        return database_unavailable(request.method, request.url.path, exc)

    return app
