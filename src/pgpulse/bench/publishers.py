"""Publishing load over HTTP/1.1 keep-alive: open loop at a rate, or closed loop.

A bare HTTP/1.1 client on asyncio streams, because the load generator shares
two cores with the server it measures: httpx spends about ten times more CPU
per request. Each publish carries ``{"t": <send time, ns>, "seq": n, "pad"}``
in its data; ``t`` is taken just before the request is written, so latency
is "publish request sent → frame received". Only publishes the server
acknowledged (2xx) are expected at the receivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

REQUEST_TIMEOUT = 10.0  # seconds for one publish, connect included
MAX_CONNECTIONS = 256  # open-loop publishes in flight at most

RequestFactory = Callable[[str, bytes], tuple[str, bytes, bytes]]
"""(tenant, data JSON) → (path, extra header lines, body) for one publish."""


IDLE_REUSE = 2.0  # seconds: an idle connection older than this is not reused
"""uvicorn closes keep-alive connections idle for 5 s; reusing one then fails the publish."""


class HttpConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.used = time.monotonic()

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConnection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def post(self, host: str, path: str, headers: bytes, body: bytes) -> int:
        self.writer.write(
            b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n%s\r\n%s"
            % (path.encode(), host.encode(), len(body), headers, body)
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await self.reader.readexactly(length)
        self.used = time.monotonic()
        return status

    def close(self) -> None:
        self.writer.close()


@dataclass
class PublishStats:
    attempted: int = 0
    accepted: int = 0
    failed: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    accepted_by_tenant: dict[str, list[int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "attempted": self.attempted,
            "accepted": self.accepted,
            "failed": self.failed,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "per_second": round(self.accepted / self.seconds, 1) if self.seconds else 0.0,
        }


class Publisher:
    PAD_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

    def __init__(
        self, host: str, port: int, request: RequestFactory, pad: int = 64, seed: int = 1
    ) -> None:
        self.host = host
        self.port = port
        self.request = request
        self.random = random.Random(seed)
        self.pad = self.make_pad(pad)
        self.seq = 0
        self.stats = PublishStats()
        self._idle: list[HttpConnection] = []
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    def make_pad(self, size: int) -> str:
        """Random letters, which compress about as little as ids and tokens do.

        A run of one letter would shrink to a few bytes under per-message
        deflate and make a compressing server's frames nearly free to send.
        """
        return "".join(self.random.choices(self.PAD_ALPHABET, k=size))

    def reset(self) -> PublishStats:
        done, self.stats = self.stats, PublishStats()
        return done

    async def publish(
        self, tenant: str, conn: HttpConnection | None = None
    ) -> HttpConnection | None:
        """One publish; returns the connection when it can be reused."""
        self.seq += 1
        seq = self.seq
        self.stats.attempted += 1
        status = 0
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                if conn is None:
                    conn = await HttpConnection.open(self.host, self.port)
                data = orjson.dumps({"t": time.time_ns(), "seq": seq, "pad": self.pad})
                path, headers, body = self.request(tenant, data)
                status = await conn.post(self.host, path, headers, body)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            name = type(exc).__name__
            self.stats.errors[name] = self.stats.errors.get(name, 0) + 1
            if conn is not None:
                conn.close()
            conn = None
        self.stats.statuses[status] = self.stats.statuses.get(status, 0) + 1
        if 200 <= status < 300:
            self.stats.accepted += 1
            self.stats.accepted_by_tenant.setdefault(tenant, []).append(seq)
        else:
            self.stats.failed += 1
        return conn

    async def _pooled(self, tenant: str) -> None:
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            while conn is not None and time.monotonic() - conn.used > IDLE_REUSE:
                conn.close()
                conn = self._idle.pop() if self._idle else None
            conn = await self.publish(tenant, conn)
            if conn is not None:
                self._idle.append(conn)

    async def open_loop(self, tenants: list[str], rate: float, duration: float) -> PublishStats:
        """``rate`` publishes a second to random tenants for ``duration`` seconds."""
        count = max(1, round(rate * duration))
        start = time.monotonic()
        tasks: list[asyncio.Task[None]] = []
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tenant = tenants[self.random.randrange(len(tenants))]
            tasks.append(asyncio.create_task(self._pooled(tenant)))
        # Each publish has its own timeout, so this wait is bounded.
        await asyncio.gather(*tasks)
        self.stats.seconds = time.monotonic() - start
        return self.stats

    async def closed_loop(self, tenants: list[str], workers: int, duration: float) -> PublishStats:
        """``workers`` publishers, each sending its next publish when the last is answered."""
        start = time.monotonic()
        end = start + duration

        async def worker() -> None:
            conn: HttpConnection | None = None
            while time.monotonic() < end:
                tenant = tenants[self.random.randrange(len(tenants))]
                conn = await self.publish(tenant, conn)
            if conn is not None:
                conn.close()

        await asyncio.gather(*(worker() for _ in range(workers)))
        self.stats.seconds = time.monotonic() - start
        return self.stats

    def close(self) -> None:
        for conn in self._idle:
            with contextlib.suppress(Exception):
                conn.close()
        self._idle.clear()
