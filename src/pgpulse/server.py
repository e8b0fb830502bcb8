"""Running pgpulse under uvicorn: its configuration, the listening socket, the workers' environment.

``pgpulse serve`` and the tests start servers the same way through here.
An app that embeds pgpulse runs its own server and needs none of it; it
may still pass :data:`~pgpulse.transports.uvicorn_ws.PROTOCOL_PATH` as
uvicorn's ``ws`` for the pre-framed write path.
"""

from __future__ import annotations

import socket
from typing import Any

import uvicorn

from .settings import Settings
from .transports.uvicorn_ws import WebSocketProtocol

SEND_BUFFER_BYTES = 256 * 1024
"""Kernel send buffer of each client socket (Linux doubles it). Left to itself,
Linux grows it to ``tcp_wmem``'s maximum (often 4 MB), where the backlog of a
client that stopped reading hides from the connection's queue limit, and so
from the 1013 that should close it."""
WS_MAX_SIZE = 64 * 1024  # bytes: the largest client frame (contract §2); larger closes 1009


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """uvicorn's configuration for ``app`` (an app, or an import string) under ``settings``.

    The WebSocket protocol is pgpulse's (pre-framed writes); pings, frame
    size, compression and the graceful shutdown come from ``settings``.
    ``overrides`` are further ``uvicorn.Config`` arguments.
    """
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "loop": "uvloop",
        "http": "httptools",
        "ws": WebSocketProtocol,
        "ws_max_size": WS_MAX_SIZE,
        "ws_ping_interval": settings.ws_ping_interval,
        "ws_ping_timeout": settings.ws_ping_timeout,
        "ws_per_message_deflate": settings.ws_compression,
        "timeout_graceful_shutdown": int(settings.shutdown_timeout),
        "lifespan": "on",
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


def tune_socket(sock: socket.socket, config: uvicorn.Config) -> None:
    """Give a listening socket the options its client sockets inherit.

    Two: a bounded kernel send buffer (:data:`SEND_BUFFER_BYTES`) and a TCP
    user timeout, so that neither a slow nor a dead peer hides in the kernel.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
    if hasattr(socket, "TCP_USER_TIMEOUT") and config.ws_ping_interval and config.ws_ping_timeout:
        # A peer that accepts no data for a whole ping cycle has missed its
        # pong too. uvicorn then closes the socket, but a close waits for the
        # send buffer to drain, which for a peer that stopped reading is never:
        # the kernel drops such a socket after this long instead (Linux).
        cycle = config.ws_ping_interval + config.ws_ping_timeout
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(cycle * 1000))


def worker_environment(settings: Settings, database_url: str) -> dict[str, str]:
    """What serving processes need in their environment: they read their settings from it.

    ``database_url`` is the resolved one (the embedded server's, when that
    runs), so workers join it rather than each starting one.
    """
    env = {"PGPULSE_DATABASE_URL": database_url, "PGPULSE_DATA_DIR": str(settings.data_dir)}
    if settings.insecure_dev:
        env["PGPULSE_INSECURE_DEV"] = "1"
    return env


def run(config: uvicorn.Config) -> bool:
    """``uvicorn.run`` on a listening socket of our own; returns whether it started."""
    from uvicorn.supervisors import Multiprocess

    sock = config.bind_socket()
    tune_socket(sock, config)
    server = uvicorn.Server(config)
    try:
        if config.workers > 1:
            Multiprocess(config, sockets=[sock]).run()
            return True
        server.run(sockets=[sock])
        return server.started
    finally:
        sock.close()
