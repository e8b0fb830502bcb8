"""Helpers for tests: servers in-process and as subprocesses, and WebSocket clients."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from pgpulse import server as servers
from pgpulse.app import create_app
from pgpulse.auth import Verifier
from pgpulse.fastapi import Pgpulse
from pgpulse.runtime import Runtime
from pgpulse.settings import Settings

SECRET = "test-secret-0123456789abcdef-0123456789"
TIMEOUT = 10.0  # seconds: the bound on every wait in the tests


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def bound_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


def free_port() -> int:
    with contextlib.closing(free_socket()) as sock:
        return int(sock.getsockname()[1])


def mint(
    tenant: str,
    user: str | None = None,
    scopes: list[str] | None = None,
    topics: list[str] | None = None,
    ttl: float = 3600,
) -> str:
    return Verifier(SECRET, ["HS256"], signing_key=SECRET).mint(tenant, user, scopes, topics, ttl)


@dataclass
class ServerHandle:
    url: str
    app: Any
    server: uvicorn.Server
    runtime: Runtime
    """The server's running pieces (kept after it stops, for a last look at the database)."""

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://")

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=TIMEOUT)

    def connect(self, token: str, path: str = "/ws", **params: Any) -> Any:
        query = "&".join(f"{k}={v}" for k, v in {"token": token, **params}.items())
        return websockets.connect(f"{self.ws_url}{path}?{query}", open_timeout=TIMEOUT)


def settings_for(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": data_dir,
        "jwt_secret": SECRET,
        "listener_poll_interval": 1.0,
        "prune_interval": 3600.0,
    }
    return Settings(**{**values, **overrides})


@contextlib.asynccontextmanager
async def start_server(
    database_url: str, data_dir: Path, bind_port: int | None = None, **overrides: Any
) -> AsyncIterator[ServerHandle]:
    """A server in this event loop; ``bind_port`` reuses a port (to restart "the same" server)."""
    settings = settings_for(database_url, data_dir, **overrides)
    app = create_app(settings)
    async with serve(app, app.state.pgpulse, settings, bind_port) as handle:
        yield handle


@contextlib.asynccontextmanager
async def start_library_app(
    database_url: str, data_dir: Path, **overrides: Any
) -> AsyncIterator[ServerHandle]:
    """An app of its own with pgpulse's router under ``/realtime``, in this event loop.

    Its principal is the tenant named by the ``X-Tenant`` header (a stand-in
    for the app's own login); settings as :func:`start_server`'s.
    """
    from fastapi import FastAPI, Header

    from pgpulse.fastapi import Pgpulse, Principal

    async def principal(x_tenant: str | None = Header(None)) -> Principal | None:
        return Principal(tenant_id=x_tenant, scopes={"publish"}) if x_tenant else None

    settings = settings_for(database_url, data_dir, **overrides)
    pulse = Pgpulse(principal=principal, settings=settings)
    app = FastAPI(lifespan=pulse.lifespan)
    app.include_router(pulse.router, prefix="/realtime")
    app.include_router(pulse.health_router, prefix="/realtime")
    async with serve(app, pulse, settings) as handle:
        yield handle


@contextlib.asynccontextmanager
async def serve(
    app: Any, pulse: Pgpulse, settings: Settings, bind_port: int | None = None
) -> AsyncIterator[ServerHandle]:
    """``app`` under uvicorn as `pgpulse serve` configures it, in this test's event loop,
    until ``pulse`` listens."""
    sock = free_socket() if bind_port is None else bound_socket(bind_port)
    config = servers.uvicorn_config(
        app, settings, loop="asyncio", log_level="warning", timeout_graceful_shutdown=2
    )
    servers.tune_socket(sock, config)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(TIMEOUT):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
            while not (pulse.running and pulse.runtime.listener.connected):
                await asyncio.sleep(0.01)
        host, port = sock.getsockname()
        yield ServerHandle(f"http://{host}:{port}", app, server, pulse.runtime)
    finally:
        # However the test ended, the server stops and its sockets and
        # transports are closed: a busy machine must not turn a slow close
        # into a leak (pytest reports those as unraisable warnings).
        server.should_exit = True
        try:
            async with asyncio.timeout(TIMEOUT):
                await asyncio.shield(task)
        except TimeoutError:
            server.force_exit = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            sock.close()


async def recv(ws: ClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.recv(), timeout)
    body: dict[str, Any] = orjson.loads(message)
    return body


async def until_ready(ws: ClientConnection) -> list[dict[str, Any]]:
    """Frames up to and including ``ready``."""
    frames = []
    while True:
        frame = await recv(ws)
        frames.append(frame)
        if frame.get("op") == "ready":
            return frames


async def events(
    ws: ClientConnection, count: int, timeout: float = TIMEOUT
) -> list[dict[str, Any]]:
    """The next ``count`` event frames (control frames are skipped)."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            frame = await recv(ws, timeout)
            if "id" in frame:
                got.append(frame)
    return got


async def closed_with(ws: ClientConnection, timeout: float = TIMEOUT) -> tuple[int, str, float]:
    """Read until the server closes; the close code, its reason and when it came."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        assert exc.rcvd is not None, "closed without a close frame from the server"
        return exc.rcvd.code, exc.rcvd.reason, time.time()


async def no_more_events(ws: ClientConnection, wait: float = 0.5) -> None:
    """Assert nothing else arrives within ``wait`` seconds (after a known last event)."""
    with contextlib.suppress(TimeoutError):
        frame = await asyncio.wait_for(ws.recv(), wait)
        raise AssertionError(f"unexpected frame: {frame!r}")


def serve_env(database_url: str, data_dir: Path, **settings: object) -> dict[str, str]:
    """Environment for ``pgpulse serve`` on the test database with the tests' secret;
    further settings by field name (``ws_ping_interval=0.5``)."""
    env = {
        "PGPULSE_DATABASE_URL": database_url,
        "PGPULSE_JWT_SECRET": SECRET,
        "PGPULSE_DATA_DIR": str(data_dir),
    }
    env.update({f"PGPULSE_{name.upper()}": str(value) for name, value in settings.items()})
    return env


class PgpulseProcess:
    """A ``pgpulse`` command (or ``module``'s) as a child process, stopped by its pid.

    Its output goes to a file, not a pipe: a chatty process must never block
    on a pipe nobody reads.
    """

    def __init__(self, args: list[str], env: dict[str, str], module: str = "pgpulse") -> None:
        self._log = tempfile.TemporaryFile()
        weakref.finalize(self, self._log.close)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
            raise

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def close(self) -> None:
        self._log.close()


class ServerProcess(PgpulseProcess):
    """``pgpulse serve`` on a given loopback port."""

    def __init__(self, args: list[str], env: dict[str, str], port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        super().__init__(["serve", "--port", str(port), *args], env)

    def ws_url(self, token: str) -> str:
        return self.url.replace("http://", "ws://") + f"/ws?token={token}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server on {self.port} not ready after {timeout} s")


async def publish_for_id(conn: Any, **kwargs: Any) -> int:
    """``pgpulse.publish`` on an autocommit connection, returning the event's id.

    ``publish`` returns the event's key; its id is taken at commit, so a test
    that needs the id (to page or resume by it) reads it back by the key.
    """
    import pgpulse

    key = await pgpulse.publish(conn, **kwargs)
    cur = await conn.execute(
        "SELECT id FROM pgpulse.events WHERE tenant_id = %s AND key = %s",
        [kwargs["tenant_id"], key],
    )
    row = await cur.fetchone()
    assert row is not None, "publish_for_id needs an autocommit connection"
    return int(row[0])
