"""``/readyz`` says 503 while the listener is down, and 200 once it is back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from pgpulse.db import LISTENER_APP_NAME

from ..support import TIMEOUT, start_server
from .streams import terminate

RECOVERY = 5.0  # seconds


async def test_readyz_follows_the_listener(database_url: str, tmp_path: Path) -> None:
    async with start_server(database_url, tmp_path) as server, server.http() as http:
        r = await http.get("/readyz")
        assert r.status_code == 200 and r.json() == {
            "ready": True,
            "database": True,
            "listener": True,
        }

        # Terminate the LISTEN connection as fast as it comes back: it is down
        # most of the time, and readiness must say so while it is.
        stop = asyncio.Event()
        killed: list[int] = []

        async def keep_terminating() -> None:
            while not stop.is_set():
                killed.extend(await terminate(database_url, [LISTENER_APP_NAME]))
                await asyncio.sleep(0.01)

        killer = asyncio.create_task(keep_terminating())
        try:
            async with asyncio.timeout(TIMEOUT):
                while (r := await http.get("/readyz")).status_code != 503:
                    assert r.status_code == 200
        finally:
            stop.set()
            await killer
        assert killed
        assert r.json() == {"ready": False, "database": True, "listener": False}

        stopped = time.monotonic()
        async with asyncio.timeout(RECOVERY):
            while (r := await http.get("/readyz")).status_code != 200:
                assert r.status_code == 503
                await asyncio.sleep(0.05)
        assert r.json() == {"ready": True, "database": True, "listener": True}
        assert time.monotonic() - stopped <= RECOVERY
