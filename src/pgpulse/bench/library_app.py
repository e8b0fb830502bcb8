"""pgpulse in library mode for ``pgpulse bench --library``: an app of its own under uvicorn.

``python -m pgpulse.bench.library_app --port P --ws uvicorn|uvicorn-sansio|preframed``
serves :class:`pgpulse.fastapi.Pgpulse`'s router (pgpulse's JWTs, settings
from ``PGPULSE_*``) with uvicorn's own WebSocket protocol, as an app's
``uvicorn app:app`` would, or with pgpulse's pre-framed one: the difference
is what the fast write path is worth.
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI

from ..fastapi import Pgpulse
from ..server import WS_MAX_SIZE
from ..transports.uvicorn_ws import PROTOCOL_PATH

PROTOCOLS = {"uvicorn": "auto", "uvicorn-sansio": "websockets-sansio", "preframed": PROTOCOL_PATH}
"""uvicorn's default; uvicorn's sans-I/O protocol (the one pgpulse's extends); pgpulse's."""

pulse = Pgpulse()
app = FastAPI(lifespan=pulse.lifespan)
app.include_router(pulse.router)
app.include_router(pulse.health_router)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m pgpulse.bench.library_app")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ws", choices=sorted(PROTOCOLS), default="uvicorn")
    args = p.parse_args()
    uvicorn.run(
        "pgpulse.bench.library_app:app",
        host=args.host,
        port=args.port,
        ws=PROTOCOLS[args.ws],
        ws_max_size=WS_MAX_SIZE,
        ws_per_message_deflate=False,  # as pgpulse serve: the comparison is of the write path
        log_level="warning",
    )


if __name__ == "__main__":
    main()
