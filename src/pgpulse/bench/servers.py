"""The servers under test: pgpulse, and the comparators beside it.

Each is a subprocess on 127.0.0.1 with its own port and its own database,
started fresh for every scenario and stopped by its pid. A :class:`Target`
knows how to start its server, what a receiver's WebSocket request looks
like and which wire it speaks, how to publish, how its LISTEN connection is
named (the fault scenario terminates it), and which scenarios it cannot run.
The comparators are the naive baseline, encode/broadcaster on PostgreSQL and
socket.io with its PostgreSQL adapter (see :mod:`.comparators`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import quote, urlencode

import jwt
import orjson
from psycopg.conninfo import conninfo_to_dict

from ..db import LISTENER_APP_NAME
from . import engineio

HOST = "127.0.0.1"
START_TIMEOUT = 60.0  # seconds for a server to answer its health check
STOP_TIMEOUT = 15.0  # seconds between SIGTERM and SIGKILL
BASELINE_LISTENER = "baseline-listener"


@dataclass
class Server:
    """A running server process; ``stop()`` ends it (and only it) by pid."""

    proc: subprocess.Popen[bytes]
    port: int
    log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self.log.close()


@dataclass
class Target:
    name: str
    database_url: str
    dbname: str
    workdir: Path
    listener_app_name: str
    wait_ready: bool
    """Whether a socket is live only after a ``ready`` control frame (pgpulse)."""
    _tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    wire = "json"
    """What the receivers read: one JSON body per message, or ``socketio`` packets."""
    skips: dict[str, str] = field(default_factory=dict)
    """Scenarios this server cannot run, each with the reason the report shows."""

    def command(self, port: int) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        raise NotImplementedError

    health_path = "/healthz"

    def ws_target(self, tenant: str) -> str:
        raise NotImplementedError

    def publish_request(self, tenant: str, data: bytes) -> tuple[str, bytes, bytes]:
        raise NotImplementedError

    def notification_request(self, tenant: str, data: bytes) -> tuple[str, bytes, bytes]:
        """The seed's notification endpoint; the baseline has one publish path only."""
        return self.publish_request(tenant, data)

    def queue_env(self, max_events: int) -> dict[str, str]:
        """Settings that bound each connection's outbound queue (none in the baseline)."""
        return {}

    def start(self, port: int, extra_env: dict[str, str] | None = None) -> Server:
        log = (self.workdir / f"{self.name}-{port}.log").open("ab")
        proc = subprocess.Popen(
            self.command(port),
            env={**os.environ, **self.env(), **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        server = Server(proc, port, log)
        deadline = time.monotonic() + START_TIMEOUT
        url = f"http://{HOST}:{port}{self.health_path}"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                server.stop()
                raise RuntimeError(
                    f"{self.name} exited with {proc.returncode} at start; see {log.name}"
                )
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(url, timeout=2) as response,
            ):
                if response.status == 200:
                    return server
            time.sleep(0.2)
        server.stop()
        raise RuntimeError(f"{self.name} did not answer {url} in {START_TIMEOUT:.0f} s")


class PgpulseTarget(Target):
    secret = "pgpulse-bench-secret-" + "0123456789abcdef" * 2

    def __init__(self, database_url: str, dbname: str, workdir: Path, workers: int = 1) -> None:
        super().__init__("pgpulse", database_url, dbname, workdir, LISTENER_APP_NAME, True)
        self.workers = workers

    health_path = "/readyz"

    def command(self, port: int) -> list[str]:
        return [
            sys.executable, "-m", "pgpulse", "serve", "--host", HOST, "--port", str(port),
            "--workers", str(self.workers), "--log-level", "warning",
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        return {
            "PGPULSE_DATABASE_URL": self.database_url,
            "PGPULSE_JWT_SECRET": self.secret,
            "PGPULSE_DATA_DIR": str(self.workdir / "pgpulse-data"),
            "PGPULSE_INSECURE_DEV": "0",
        }

    def token(self, tenant: str, scope: str = "") -> str:
        key = (tenant, scope)
        if key not in self._tokens:
            claims: dict[str, object] = {"tenant_id": tenant, "exp": int(time.time()) + 86400}
            if scope:
                claims["scope"] = scope
            self._tokens[key] = jwt.encode(claims, self.secret, algorithm="HS256")
        return self._tokens[key]

    def ws_target(self, tenant: str) -> str:
        return f"/ws?token={self.token(tenant)}"

    def queue_env(self, max_events: int) -> dict[str, str]:
        return {"PGPULSE_QUEUE_MAX_EVENTS": str(max_events)}

    def publish_request(self, tenant: str, data: bytes) -> tuple[str, bytes, bytes]:
        body = b'{"topic":"bench","type":"bench","data":%s}' % data
        return (
            "/api/events",
            b"Authorization: Bearer %s\r\n" % self.token(tenant, "publish").encode(),
            body,
        )

    def notification_request(self, tenant: str, data: bytes) -> tuple[str, bytes, bytes]:
        # The receivers read the measurement back out of the message text.
        body = orjson.dumps({"message": data.decode()})
        return (
            "/api/notifications",
            b"Authorization: Bearer %s\r\n" % self.token(tenant, "publish").encode(),
            body,
        )


class LibraryTarget(PgpulseTarget):
    """pgpulse inside an app of its own (``pgpulse.bench.library_app``) under uvicorn."""

    def __init__(self, database_url: str, dbname: str, workdir: Path, protocol: str) -> None:
        super().__init__(database_url, dbname, workdir)
        self.protocol = protocol

    def command(self, port: int) -> list[str]:
        return [
            sys.executable, "-m", "pgpulse.bench.library_app", "--host", HOST,
            "--port", str(port), "--ws", self.protocol,
        ]  # fmt: skip


class AppTarget(Target):
    """An ``app.py`` under uvicorn: ``POST /publish?tenant_id=`` and ``/ws?tenant_id=``."""

    def __init__(
        self, name: str, database_url: str, dbname: str, workdir: Path, app_dir: Path
    ) -> None:
        super().__init__(name, database_url, dbname, workdir, "", False)
        self.app_dir = app_dir

    def command(self, port: int) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn", "app:app", "--app-dir", str(self.app_dir),
            "--host", HOST, "--port", str(port), "--log-level", "warning",
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        return {"DATABASE_URL": self.database_url}

    def ws_target(self, tenant: str) -> str:
        return f"/ws?tenant_id={quote(tenant)}"

    def publish_request(self, tenant: str, data: bytes) -> tuple[str, bytes, bytes]:
        return f"/publish?tenant_id={quote(tenant)}", b"", b'{"type":"bench","data":%s}' % data


class BaselineTarget(AppTarget):
    def __init__(self, database_url: str, dbname: str, workdir: Path, app_dir: Path) -> None:
        super().__init__("baseline", database_url, dbname, workdir, app_dir)
        self.listener_app_name = BASELINE_LISTENER

    health_path = "/openapi.json"


NOT_NAMED = (
    "S4 kills the server's LISTEN connection, found by its application_name; {what}, "
    "and it has no ids to resume a socket from"
)
NO_SQL_PUBLISH = "S7 publishes from the application's SQL transactions; {what} publishes in-process"


class BroadcasterTarget(AppTarget):
    """encode/broadcaster on PostgreSQL (``benchmarks/broadcaster``)."""

    def __init__(self, database_url: str, dbname: str, workdir: Path, app_dir: Path) -> None:
        super().__init__("broadcaster", as_url(database_url), dbname, workdir, app_dir)
        self.wait_ready = True
        self.skips = {
            "s4": NOT_NAMED.format(what="broadcaster's one asyncpg connection has none"),
            "s7": NO_SQL_PUBLISH.format(what="broadcaster"),
        }

    health_path = "/healthz"


class SocketioTarget(Target):
    """socket.io with @socket.io/postgres-adapter (``benchmarks/socketio``), on Node."""

    wire = "socketio"
    health_path = "/healthz"

    def __init__(
        self, database_url: str, dbname: str, workdir: Path, app_dir: Path, node_path: Path
    ) -> None:
        super().__init__("socketio", as_url(database_url), dbname, workdir, "", True)
        self.app_dir = app_dir
        self.node_path = node_path
        self.skips = {
            "s4": NOT_NAMED.format(what="the adapter's pg pool has none"),
            "s7": NO_SQL_PUBLISH.format(what="socket.io"),
        }

    def command(self, port: int) -> list[str]:
        return ["node", str(self.app_dir / "server.js"), "--host", HOST, "--port", str(port)]

    def env(self) -> dict[str, str]:
        return {"DATABASE_URL": self.database_url, "NODE_PATH": str(self.node_path)}

    def ws_target(self, tenant: str) -> str:
        return f"{engineio.PATH}&tenant_id={quote(tenant)}"

    def publish_request(self, tenant: str, data: bytes) -> tuple[str, bytes, bytes]:
        return f"/publish?tenant_id={quote(tenant)}", b"", b'{"type":"bench","data":%s}' % data


def as_url(conninfo: str) -> str:
    """A ``postgresql://`` URL for any connection string: asyncpg and node-postgres take only URLs.

    A socket directory (the embedded PostgreSQL's) goes in the query with its port,
    where both read them (asyncpg takes a port without a host for a TCP one).
    """
    params = conninfo_to_dict(conninfo)
    user = quote(str(params.pop("user", "") or ""), safe="")
    password = quote(str(params.pop("password", "") or ""), safe="")
    host = str(params.pop("host", "") or "")
    port = str(params.pop("port", "") or "")
    dbname = quote(str(params.pop("dbname", "") or ""), safe="")
    query: dict[str, str] = {k: str(v) for k, v in params.items() if v is not None}
    if host.startswith("/"):
        query["host"], host = host, ""
        if port:
            query["port"], port = port, ""
    auth = f"{user}:{password}@" if password else f"{user}@" if user else ""
    netloc = f"{auth}{host}{':' + port if port else ''}"
    return f"postgresql://{netloc}/{dbname}" + (f"?{urlencode(query)}" if query else "")
