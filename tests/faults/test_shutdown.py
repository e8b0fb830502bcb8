"""SIGTERM: every WebSocket gets 1012 at once, and the process is gone within 10 s."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import websockets

from pgpulse.events import WS_1012_SERVICE_RESTART

from ..support import TIMEOUT, ServerProcess, free_port, mint, serve_env, until_ready

EXIT_WITHIN = 10.0  # seconds from SIGTERM to the process's exit
CLOSE_WITHIN = 2.0  # seconds from SIGTERM to a WebSocket's 1012
STREAMS_END_WITHIN = 4.0  # seconds: less than the default shutdown timeout of 5 s


@pytest.mark.slow
@pytest.mark.parametrize("with_sse", [False, True], ids=["ws", "ws+sse"])
async def test_sigterm_closes_sockets_with_1012_and_exits(
    database_url: str, tmp_path: Path, tenant: str, with_sse: bool
) -> None:
    env = serve_env(database_url, tmp_path)
    server = ServerProcess(["--log-level", "warning"], env, free_port())
    try:
        await asyncio.to_thread(server.wait_ready)
        ws_url = server.ws_url(mint(tenant))
        sockets = [await websockets.connect(ws_url, open_timeout=TIMEOUT) for _ in range(2)]
        for ws in sockets:
            await until_ready(ws)
        async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
            sse = None
            if with_sse:
                sse = await http.send(
                    http.build_request("GET", "/sse", params={"token": mint(tenant)}), stream=True
                )
                assert sse.status_code == 200
                lines = sse.aiter_lines()
                while "ready" not in await anext(lines):
                    pass

            sent = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            for ws in sockets:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), TIMEOUT)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == WS_1012_SERVICE_RESTART
            assert time.monotonic() - sent <= CLOSE_WITHIN

            exit_code = await asyncio.to_thread(server.proc.wait, EXIT_WITHIN * 2)
            took = time.monotonic() - sent
            if sse is not None:
                await sse.aclose()
        assert exit_code == 0, server.output()
        assert took <= EXIT_WITHIN, f"exit took {took:.1f} s"
        # Streams end at the signal, not after the graceful timeout (5 s) runs out.
        assert took < STREAMS_END_WITHIN, f"exit took {took:.1f} s: a stream held shutdown"
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):  # it is killed then
            server.stop(timeout=TIMEOUT)
