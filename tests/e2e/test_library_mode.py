"""Library mode: pgpulse inside an app's own FastAPI server, run by ``uvicorn --workers 2``.

The app (``tests/e2e/library_app.py``) has its own login (a session cookie),
its own SQLAlchemy transaction that publishes, and ``authorize_topic``.
Each test opens fresh connections, so with two workers they land on either
process, and a resume may land on the other one.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
import websockets
from websockets.asyncio.client import ClientConnection

from pgpulse.events import (
    WS_1008_POLICY_VIOLATION,
    WS_1011_INTERNAL_ERROR,
    WS_1012_SERVICE_RESTART,
)
from pgpulse.fastapi import Pgpulse, Principal

from ..support import TIMEOUT, PgpulseProcess, events, free_port, free_socket, recv, until_ready

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.e2e.library_app:app"
WORKERS = 2
START_TIMEOUT = 60.0  # seconds for both workers to be up and listening
ORDERS_TABLE = "library_orders"  # the app's own table (library_app.Order)
ORDERS_DDL = f"""
CREATE TABLE IF NOT EXISTS {ORDERS_TABLE} (
    id        serial PRIMARY KEY,
    tenant_id text NOT NULL,
    total     integer NOT NULL
)
"""


class LibraryApp:
    """The app under ``uvicorn --workers 2`` on a free loopback port."""

    def __init__(self, database_url: str, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.origin = self.url
        sqlalchemy_url = database_url.replace("postgresql://", "postgresql+psycopg://", 1)
        env = {
            "DATABASE_URL": sqlalchemy_url,  # pgpulse takes it too, without the driver
            "APP_SECRET": uuid.uuid4().hex,
            "PGPULSE_DATA_DIR": str(data_dir),
            "PGPULSE_LISTENER_POLL_INTERVAL": "1",
        }
        args = [APP, "--app-dir", str(ROOT), "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--workers", str(WORKERS), "--log-level", "warning"]
        self.process = PgpulseProcess(args, env, module="uvicorn")

    def wait_ready(self) -> None:
        """Until both workers have answered, each with its pgpulse listening."""
        ready: set[int] = set()
        deadline = time.monotonic() + START_TIMEOUT
        while len(ready) < WORKERS:
            if self.process.proc.poll() is not None:
                raise AssertionError(f"app exited:\n{self.process.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"workers ready: {ready}\n{self.process.output()}")
            with contextlib.suppress(httpx.HTTPError):
                # A new connection each time, so that either worker may answer.
                body = httpx.get(f"{self.url}/whoami", timeout=1).json()
                if body["ready"]:
                    ready.add(body["pid"])
            time.sleep(0.02)

    async def login(self, tenant: str, user: str) -> str:
        """The session cookie the app's own login sets."""
        async with httpx.AsyncClient(base_url=self.url, timeout=TIMEOUT) as http:
            response = await http.post("/login", json={"tenant": tenant, "user": user})
            assert response.status_code == 200, response.text
            return response.cookies["session"]

    async def order(self, cookie: str, total: int, **extra: Any) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.url, timeout=TIMEOUT) as http:
            return await http.post(
                "/orders", json={"total": total, **extra}, headers={"Cookie": f"session={cookie}"}
            )

    def connect(
        self,
        cookie: str | None,
        topics: str | None = "orders",
        origin: str | None = "same",
        **params: Any,
    ) -> Any:
        query = {**({"topics": topics} if topics else {}), **params}
        url = f"ws://127.0.0.1:{self.port}/realtime/ws"
        if query:
            url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
        headers = {"Cookie": f"session={cookie}"} if cookie else {}
        return websockets.connect(
            url,
            open_timeout=TIMEOUT,
            additional_headers=headers,
            origin=self.origin if origin == "same" else origin,  # type: ignore[arg-type]
        )


@contextlib.contextmanager
def running_app(database_url: str, data_dir: Path) -> Iterator[LibraryApp]:
    app = LibraryApp(database_url, data_dir)
    try:
        app.wait_ready()
        yield app
    finally:
        with contextlib.suppress(Exception):
            app.process.stop(timeout=TIMEOUT)
        app.process.close()


@pytest.fixture(scope="module")
def orders_table(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(ORDERS_DDL)
    return database_url


@pytest.fixture(scope="module")
def app(orders_table: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LibraryApp]:
    with running_app(orders_table, tmp_path_factory.mktemp("library")) as running:
        yield running


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def refused(ws_context: Any) -> websockets.ConnectionClosed:
    """The close that refused a connection, asserting no frame came before it."""
    async with ws_context as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            frame = await asyncio.wait_for(ws.recv(), TIMEOUT)
            raise AssertionError(f"a frame before the refusal: {frame!r}")
    return closed.value


async def test_no_cookie_is_refused_before_any_frame(app: LibraryApp) -> None:
    for cookie in (None, "acme:ann:forged"):
        closed = await refused(app.connect(cookie))
        assert closed.rcvd is not None
        assert closed.rcvd.code == WS_1008_POLICY_VIOLATION
    async with httpx.AsyncClient(base_url=app.url, timeout=TIMEOUT) as http:
        response = await http.get("/realtime/sse", params={"topics": "orders"})
        assert response.status_code == 401
        assert response.json() == {"detail": "not authenticated"}


async def test_each_tenant_and_user_sees_only_its_own(app: LibraryApp) -> None:
    acme, globex = fresh("acme"), fresh("globex")
    ann, carol = await app.login(acme, "ann"), await app.login(acme, "carol")
    bob = await app.login(globex, "bob")
    async with (
        app.connect(ann) as ann_ws,
        app.connect(carol) as carol_ws,
        app.connect(bob) as bob_ws,
    ):
        for ws in (ann_ws, carol_ws, bob_ws):
            await until_ready(ws)
        first = (await app.order(ann, 1)).json()["order_id"]
        just_carol = (await app.order(ann, 2, for_user="carol")).json()["order_id"]
        theirs = (await app.order(bob, 3)).json()["order_id"]

        got = await events(ann_ws, 1)
        assert [e["data"]["order_id"] for e in got] == [first]
        assert got[0]["tenant_id"] == acme and got[0]["topic"] == "orders"
        got = await events(carol_ws, 2)
        assert [e["data"]["order_id"] for e in got] == [first, just_carol]
        assert got[1]["user_id"] == "carol"
        # bob's first event is his own: acme's two were never his.
        got = await events(bob_ws, 1)
        assert [(e["tenant_id"], e["data"]["order_id"]) for e in got] == [(globex, theirs)]
        # ann's next is her tenant's next, not carol's own event.
        last = (await app.order(carol, 4)).json()["order_id"]
        got = await events(ann_ws, 1)
        assert [e["data"]["order_id"] for e in got] == [last]


async def test_authorize_topic_refuses_a_topic(app: LibraryApp) -> None:
    ann = await app.login(fresh("acme"), "ann")
    for topics in ("audit", "orders,audit", None):
        closed = await refused(app.connect(ann, topics=topics))
        assert closed.rcvd is not None
        assert closed.rcvd.code == WS_1008_POLICY_VIOLATION
        assert ("audit" in closed.rcvd.reason) == (topics is not None)
    boss = await app.login(fresh("acme"), "boss")
    async with app.connect(boss, topics="orders,audit") as ws:
        assert (await until_ready(ws))[-1]["op"] == "ready"
    async with httpx.AsyncClient(base_url=app.url, timeout=TIMEOUT) as http:
        response = await http.get(
            "/realtime/sse", params={"topics": "audit"}, headers={"Cookie": f"session={ann}"}
        )
        assert response.status_code == 403
        assert "audit" in response.json()["detail"]


async def test_authorize_topic_holds_for_topics_added_on_a_live_socket(app: LibraryApp) -> None:
    """A subscribe, or a presence join, to a topic the app refuses gets an error frame."""
    ann = await app.login(fresh("acme"), "ann")
    async with app.connect(ann, topics="orders") as ws:
        await until_ready(ws)
        await ws.send('{"op": "subscribe", "topics": ["audit"], "ref": 1}')
        assert await recv(ws) == {
            "op": "error",
            "message": "topic 'audit' is not allowed",
            "ref": 1,
        }
        await ws.send('{"op": "presence.join", "topic": "audit", "ref": 2}')
        refusal = await recv(ws)
        assert refusal["op"] == "error" and refusal["ref"] == 2, refusal
        # The socket stays open, and a topic the app allows is added.
        await ws.send('{"op": "subscribe", "topics": ["notifications"], "ref": 3}')
        answer = await recv(ws)
        assert answer["op"] == "subscribed" and answer["ref"] == 3, answer


async def test_a_cross_site_page_cannot_open_a_websocket(app: LibraryApp) -> None:
    ann = await app.login(fresh("acme"), "ann")
    for origin in ("http://evil.example", f"http://127.0.0.1:{app.port + 1}", "null"):
        closed = await refused(app.connect(ann, origin=origin))
        assert closed.rcvd is not None
        assert closed.rcvd.code == WS_1008_POLICY_VIOLATION
        assert "origin" in closed.rcvd.reason
    # The app's own pages, and clients that are not browsers (no Origin), may.
    for origin in ("same", None):
        async with app.connect(ann, origin=origin) as ws:
            assert (await until_ready(ws))[-1]["op"] == "ready"


async def test_resume_after_a_forced_drop_is_exact(app: LibraryApp) -> None:
    ann = await app.login(fresh("acme"), "ann")
    published: list[int] = []

    async def publish(n: int) -> None:
        for i in range(n):
            response = await app.order(ann, i)
            assert response.status_code == 201, response.text
            published.append(response.json()["order_id"])

    async with app.connect(ann) as ws:
        await until_ready(ws)
        await publish(3)
        before = await events(ws, 3)
        # Drop the TCP connection without a close: as a network loss does.
        assert ws.transport is not None
        ws.transport.abort()
    last_id = before[-1]["id"]

    await publish(5)  # while disconnected
    writer = asyncio.create_task(publish(20))  # and during the replay
    try:
        async with app.connect(ann, last_event_id=last_id) as ws:
            after = await events(ws, 25, timeout=TIMEOUT * 2)
            await writer
            await no_more(ws)
    finally:
        writer.cancel()
    ids = [e["id"] for e in before + after]
    assert ids == sorted(set(ids)), "ids must strictly increase: no duplicate, in order"
    assert [e["data"]["order_id"] for e in before + after] == published


async def no_more(ws: ClientConnection, wait: float = 0.5) -> None:
    with contextlib.suppress(TimeoutError):
        frame = await recv(ws, wait)
        raise AssertionError(f"unexpected frame: {frame!r}")


async def test_only_committed_transactions_of_the_app_publish(
    app: LibraryApp, database_url: str
) -> None:
    tenant = fresh("acme")
    ann = await app.login(tenant, "ann")
    async with app.connect(ann) as ws:
        await until_ready(ws)
        failed = await app.order(ann, 666, fail=True)
        assert failed.status_code == 409, failed.text
        kept = (await app.order(ann, 7)).json()["order_id"]
        got = await events(ws, 1)
        assert [(e["type"], e["data"]) for e in got] == [
            ("order.created", {"order_id": kept, "total": 7})
        ]
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(f"SELECT total FROM {ORDERS_TABLE} WHERE tenant_id = %s", [tenant])
        assert await cur.fetchall() == [(7,)]
        cur = await conn.execute(
            "SELECT count(*) FROM pgpulse.events WHERE tenant_id = %s", [tenant]
        )
        assert await cur.fetchone() == (1,)


@pytest.mark.slow
async def test_sigterm_closes_every_socket_with_1012(orders_table: str, tmp_path: Path) -> None:
    with running_app(orders_table, tmp_path) as app:
        ann = await app.login(fresh("acme"), "ann")
        async with contextlib.AsyncExitStack() as stack:
            sockets = [await stack.enter_async_context(app.connect(ann)) for _ in range(4)]
            for ws in sockets:
                await until_ready(ws)
            app.process.proc.send_signal(signal.SIGTERM)
            for ws in sockets:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), TIMEOUT)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == WS_1012_SERVICE_RESTART
        await asyncio.to_thread(app.process.proc.wait, TIMEOUT)


# -- before the context is entered ------------------------------------------------------


@contextlib.asynccontextmanager
async def app_without_lifespan() -> AsyncIterator[str]:
    """An app that includes the router but never enters pgpulse: a mistake, made on purpose."""
    from fastapi import FastAPI

    async def anyone() -> Principal:
        return Principal(tenant_id="acme")

    pulse = Pgpulse("postgresql://nobody@127.0.0.1:1/none", principal=anyone)
    app = FastAPI()
    app.include_router(pulse.router, prefix="/realtime")
    sock = free_socket()
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(TIMEOUT):
            while not server.started:
                await asyncio.sleep(0.01)
        host, port = sock.getsockname()
        yield f"{host}:{port}"
    finally:
        server.should_exit = True
        async with asyncio.timeout(TIMEOUT):
            await task
        sock.close()


async def test_routes_before_the_context_say_what_to_do() -> None:
    async with app_without_lifespan() as address:
        async with httpx.AsyncClient(base_url=f"http://{address}", timeout=TIMEOUT) as http:
            for path in ("/realtime/api/notifications", "/realtime/sse"):
                response = await http.get(path)
                assert response.status_code == 503
                assert "lifespan" in response.json()["detail"], response.text
        closed = await refused(websockets.connect(f"ws://{address}/realtime/ws"))
        assert closed.rcvd is not None
        assert closed.rcvd.code == WS_1011_INTERNAL_ERROR
        assert "pulse.lifespan" in closed.rcvd.reason


def test_a_principal_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="tenant_id"):
        Principal(tenant_id="")
    with pytest.raises(ValueError, match="collection"):
        Principal(tenant_id="acme", topics="a,b")  # type: ignore[arg-type]
    assert Principal(tenant_id="acme", topics=["a", "b"]).topics == frozenset({"a", "b"})  # type: ignore[arg-type]
