"""Losing PostgreSQL connections while events stream: nothing lost, nothing twice.

Events are published at about 100/s by the test's own publisher, which retries
through outages and records an id only when its commit succeeded. One client
stays connected throughout; another disconnects before each fault and resumes
with ``last_event_id`` after it. Both must end with exactly the committed
events, in order, once each, and delivery must be back within
:data:`RECOVERY` seconds of the database's return.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from pgpulse.db import APP_NAME, LISTENER_APP_NAME

from ..support import ServerHandle, start_server
from .conftest import PrivatePostgres
from .streams import Publisher, Recorder, committed, terminate, until

RECOVERY = 5.0  # seconds from the database's return to the first event delivered again
STREAM_BETWEEN_FAULTS = 100  # events published between faults (about a second)

Fault = Callable[[Callable[[], None]], Awaitable[float]]
"""Does its damage, calls ``resume`` (reconnect the resuming client) when it likes,
and returns the monotonic time the database is usable again."""


async def stream_through(server: ServerHandle, publisher: Publisher, faults: list[Fault]) -> None:
    url, tenant = publisher.url, publisher.tenant
    stayer, resumer = Recorder(server, tenant), Recorder(server, tenant)
    await stayer.connect()
    await resumer.connect()
    async with publisher.running():
        await until(lambda: len(publisher.acked) >= STREAM_BETWEEN_FAULTS, what="publishing")
        for fault in faults:
            await resumer.disconnect()
            reconnects: list[asyncio.Task[None]] = []

            def resume(into: list[asyncio.Task[None]] = reconnects) -> None:
                into.append(asyncio.create_task(resumer.connect(resume=True)))

            name = getattr(fault, "__name__", repr(fault))
            back = await fault(resume)
            if not reconnects:
                resume()
            first = await until_acked_after(publisher, back)
            arrived = await stayer.wait_for(first, timeout=RECOVERY * 2)
            assert arrived - back <= RECOVERY, f"delivery back {arrived - back:.2f} s after {name}"
            await reconnects[0]
            assert time.monotonic() - back <= RECOVERY, f"resume took too long after {name}"
            mark = len(publisher.acked)
            await until(
                lambda m=mark: len(publisher.acked) >= m + STREAM_BETWEEN_FAULTS,  # type: ignore[misc]
                what="publishing after the fault",
            )

    stored = await committed(url, tenant)
    truth = [event_id for event_id, _ in stored]
    acked = [key for key, _ in publisher.acked]
    # Gap-free ids, and every acknowledged publish is among them, in the order
    # it was acknowledged (a publish cut mid-statement is unknown to the
    # publisher, but the table knows).
    assert truth == list(range(1, len(truth) + 1))
    assert [key for _, key in stored if key in set(acked)] == acked
    for client in (stayer, resumer):
        await client.wait_for(stored[-1][1])
    assert stayer.connected, f"the connected client was closed: {stayer.closes}"
    assert stayer.ids == truth
    assert resumer.ids == truth
    await stayer.disconnect()
    await resumer.disconnect()


async def until_acked_after(publisher: Publisher, moment: float) -> int:
    """The key of the first publish acknowledged after ``moment``."""
    await until(lambda: publisher.first_acked_after(moment) is not None, what="a publish")
    key = publisher.first_acked_after(moment)
    assert key is not None
    return key


def terminate_listener(server: ServerHandle, url: str) -> Fault:
    async def terminate_listener(resume: Callable[[], None]) -> float:
        listener = server.runtime.listener
        before, reconnects = listener.backend_pid, listener.reconnects
        assert before is not None
        assert await terminate(url, [LISTENER_APP_NAME]) == [before]
        back = time.monotonic()
        await until(lambda: listener.reconnects > reconnects, what="listener reconnect")
        await until(lambda: listener.connected, what="listener connected")
        assert listener.backend_pid not in (None, before)
        return back

    return terminate_listener


def terminate_all(server: ServerHandle, url: str) -> Fault:
    async def terminate_all(resume: Callable[[], None]) -> float:
        listener_pid = server.runtime.listener.backend_pid
        killed = await terminate(url, [APP_NAME, LISTENER_APP_NAME])
        assert listener_pid in killed and len(killed) >= 2, killed  # the listener and the pool
        return time.monotonic()

    return terminate_all


def restart_postgres(server: ServerHandle, pg: PrivatePostgres, publisher: Publisher) -> Fault:
    async def restart_postgres(resume: Callable[[], None]) -> float:
        await asyncio.to_thread(pg.stop)
        failures = publisher.failures
        resume()  # a client resuming while the database is away waits for it
        async with server.http() as http:
            r = await http.get("/readyz")
        assert r.status_code == 503, r.text
        assert r.json() == {"ready": False, "database": False, "listener": False}
        # Stay down while the publisher fails a few times (a real outage).
        await until(lambda: publisher.failures >= failures + 5, what="publishes failing")
        await asyncio.to_thread(pg.start)
        return time.monotonic()

    return restart_postgres


@pytest.mark.slow
async def test_listener_and_pool_terminated_mid_stream(
    database_url: str, tmp_path: Path, tenant: str
) -> None:
    async with start_server(database_url, tmp_path) as server:
        faults = [terminate_listener(server, database_url), terminate_all(server, database_url)]
        await stream_through(server, Publisher(database_url, tenant), faults)


@pytest.mark.slow
async def test_postgres_restart_mid_stream(
    private_pg: PrivatePostgres, private_database: str, tmp_path: Path, tenant: str
) -> None:
    url = private_database
    publisher = Publisher(url, tenant)
    async with start_server(url, tmp_path) as server:
        faults = [
            terminate_listener(server, url),
            terminate_all(server, url),
            restart_postgres(server, private_pg, publisher),
        ]
        await stream_through(server, publisher, faults)
        async with server.http() as http:
            r = await http.get("/readyz")
        assert r.status_code == 200, r.text
