"""A fuzz pass over the HTTP API (the OpenAPI schema, driven by schemathesis) and
hostile WebSocket and SSE inputs (hypothesis), against a real server process.

Each input must get an answer below 500, the server must log no unhandled
exception, and a refused request (4xx) must change nothing in the database.
Every part is bounded in examples and time: the whole module takes well under
a minute.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
import websockets.sync.client as ws_client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from ..support import ServerProcess, free_port, mint, serve_env

TENANT = "fuzz-tenant"
EXAMPLES = 100  # per operation and generation mode, at most
BUDGET = 50.0  # seconds for the whole module: examples past it are skipped
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
# Refused frames and handshakes are answered with these (1008 policy, 1009 too big).
REFUSAL_CODES = {1000, 1008, 1009}
UNHANDLED = ("Traceback", "Exception in ASGI application", "Unhandled exception")


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = serve_env(
        database_url,
        tmp_path_factory.mktemp("fuzz"),
        max_payload_bytes=64 * 1024,
        connect_rate_per_tenant=100_000,
    )
    proc = ServerProcess([], env, free_port())
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()
        log = proc.output()
        proc.close()
    found = [marker for marker in UNHANDLED if marker in log]
    assert not found, f"unhandled exception in the server log:\n{log[-4000:]}"


@pytest.fixture(scope="module")
def started() -> float:
    return time.monotonic()


def state(database_url: str) -> tuple[int, ...]:
    """What a refused request must leave as it was: the tenant's rows."""
    with psycopg.connect(database_url) as c:
        row = c.execute(
            "SELECT (SELECT count(*) FROM pgpulse.events WHERE tenant_id = %(t)s),"
            " (SELECT count(*) FROM pgpulse.notifications WHERE tenant_id = %(t)s),"
            " (SELECT count(*) FROM pgpulse.jobs WHERE tenant_id = %(t)s)",
            {"t": TENANT},
        ).fetchone()
    assert row is not None
    return tuple(int(n) for n in row)


AUTH = st.sampled_from(
    [
        None,
        "Bearer " + mint(TENANT, scopes=["publish", "jobs"]),
        "Bearer " + mint(TENANT),
        "Bearer " + mint(TENANT, ttl=-60),
        "Bearer not.a.jwt",
        "Basic Zm9vOmJhcg==",
    ]
)


def test_http_api_from_its_openapi_schema(
    server: ServerProcess, database_url: str, started: float
) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [
        result.ok()
        for result in schema.get_all_operations()
        if result.ok().path != "/sse"  # a stream: fuzzed below, with its own bounds
    ]
    assert {op.path for op in operations} >= {"/api/events", "/api/notifications", "/api/jobs"}
    session = httpx.Client(base_url=server.url, timeout=10)
    try:
        _fuzz_operations(operations, session, database_url, started)
    finally:
        session.close()


def _fuzz_operations(
    operations: list[Any], session: httpx.Client, database_url: str, started: float
) -> None:

    for operation in operations:
        for mode in schemathesis.GenerationMode:

            @FUZZ
            @given(case=operation.as_strategy(generation_mode=mode), auth=AUTH)
            def run(case: schemathesis.Case, auth: str | None) -> None:
                if time.monotonic() - started > BUDGET:
                    return
                headers = {k: str(v) for k, v in (case.headers or {}).items()}
                headers.pop("authorization", None)
                if auth is not None:
                    headers["Authorization"] = auth
                before = state(database_url)
                kwargs: dict[str, Any] = {}
                if case.body is not schemathesis.core.NOT_SET:
                    if isinstance(case.body, bytes):
                        kwargs["content"] = case.body
                    else:
                        try:
                            kwargs["content"] = json.dumps(case.body).encode()
                        except (TypeError, ValueError):
                            return  # not JSON at all: nothing a client sends as JSON
                    headers.setdefault("content-type", case.media_type or "application/json")
                try:
                    response = session.request(
                        case.method,
                        case.formatted_path,
                        params=case.query,
                        headers=headers,
                        **kwargs,
                    )
                except (httpx.InvalidURL, UnicodeEncodeError, ValueError):
                    return  # an input no HTTP client can send
                assert response.status_code < 500, (case.method, case.formatted_path, response.text)
                if response.status_code >= 400:
                    assert state(database_url) == before, (case.method, case.path, response.text)

            try:
                run()
            except Unsatisfiable:
                # No invalid input exists for it (an operation without parameters).
                assert mode is schemathesis.GenerationMode.NEGATIVE, operation.path


TEXT = st.text(max_size=300)
QUERY_VALUE = st.one_of(
    TEXT,
    st.sampled_from(["", "%00", "a\x00b", "0", "-1", "99999999999999999999", "a," * 200]),
)


def test_hostile_websocket_handshakes_and_frames(
    server: ServerProcess, database_url: str, started: float
) -> None:
    good = mint(TENANT)
    base = server.url.replace("http://", "ws://") + "/ws"
    before = state(database_url)

    @FUZZ
    @given(
        token=st.one_of(st.just(good), TEXT),
        topics=st.one_of(st.none(), QUERY_VALUE),
        last=st.one_of(st.none(), QUERY_VALUE),
        frames=st.lists(
            st.one_of(
                TEXT,
                st.binary(max_size=200),
                st.sampled_from(
                    [
                        '{"op": "refresh", "token": "x"}',
                        '{"op": "refresh", "token": null}',
                        '{"op": ' + '"x' * 50 + '"}',
                        '{"op": "ping"}' * 3,
                        "[" * 5000,
                        '{"op": "subscribe", "topics": ["\\u0000"]}',
                    ]
                ),
            ),
            max_size=5,
        ),
    )
    def run(token: str, topics: str | None, last: str | None, frames: list[str | bytes]) -> None:
        if time.monotonic() - started > BUDGET:
            return
        params = {"token": token, "topics": topics, "last_event_id": last}
        query = httpx.QueryParams({k: v for k, v in params.items() if v is not None})
        # The socket is the test's own, so that it is closed whatever the handshake does.
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        try:
            with ws_client.connect(
                f"{base}?{query}", sock=sock, open_timeout=5, close_timeout=2
            ) as ws:
                for frame in frames:
                    ws.send(frame)
                while True:  # drain until quiet or closed
                    ws.recv(timeout=0.2)
        except TimeoutError:
            return  # still open and quiet: it took what it was sent
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            assert code in REFUSAL_CODES, (code, exc)
        except InvalidHandshake as exc:
            response = getattr(exc, "response", None)
            assert response is None or response.status_code < 500, exc
        finally:
            sock.close()

    run()
    assert state(database_url) == before


def test_hostile_sse_requests(server: ServerProcess, database_url: str, started: float) -> None:
    good = mint(TENANT)
    before = state(database_url)

    @FUZZ
    @given(
        token=st.one_of(st.none(), st.just(good), TEXT),
        topics=st.one_of(st.none(), QUERY_VALUE),
        last=st.one_of(st.none(), QUERY_VALUE),
        header=st.one_of(st.none(), QUERY_VALUE),
    )
    def run(token: str | None, topics: str | None, last: str | None, header: str | None) -> None:
        if time.monotonic() - started > BUDGET:
            return
        params = {"token": token, "topics": topics, "last_event_id": last}
        headers = {}
        if header is not None and header.isascii() and header.isprintable():
            headers["Last-Event-ID"] = header
        with (
            httpx.Client(base_url=server.url, timeout=5) as http,
            http.stream(
                "GET",
                "/sse",
                params={k: v for k, v in params.items() if v is not None},
                headers=headers,
            ) as response,
        ):
            assert response.status_code < 500
            if response.status_code == 200:
                next(response.iter_bytes())  # the stream opens; then the client leaves

    run()
    assert state(database_url) == before
