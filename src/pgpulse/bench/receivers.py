"""Receiver processes: many WebSocket clients each, counting what arrives.

The runner starts a few processes (one per core is plenty) and talks to each
over a pipe with small commands: ``open`` sockets, ``reset`` the counters,
``count`` frames, ``collect`` the figures, ``close``; and ``stall`` / ``unstall``
one extra socket that stops reading (the slow consumer of S6), kept apart
from the counted ones. Sockets speak the server's wire: ``json`` (pgpulse,
the baseline, broadcaster: one JSON body per message) or ``socketio``
(Engine.IO packets, unwrapped by :mod:`.engineio` into the same bodies).
Every frame's latency is
its receive time minus the publisher's send time carried in its data (one
machine, one clock). Loss and duplicates are counted against the list of
publishes the server accepted, which the runner sends with ``collect``;
ids must strictly increase on each connection, or the frame counts as out
of order.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import random
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import orjson

from . import engineio, wsclient
from .stats import Histogram

OPEN_CONCURRENCY = 64  # handshakes in flight per receiver process
LOCAL_HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")
"""Source addresses, so that 20,000 sockets do not exhaust one address's ports."""
RESUME_ATTEMPTS = 50  # reconnects per connection during one run
COMMAND_TIMEOUT = 180.0  # seconds the runner waits for any reply
STALL_RCVBUF = 4096  # bytes: SO_RCVBUF of the socket that stops reading
STALL_MSS = 536  # bytes: its TCP_MAXSEG, which keeps the server's send buffer small


@dataclass(eq=False)
class _Conn:
    tenant: str
    target: str
    resume: bool
    wire: str = "json"
    client: wsclient.WsClient | None = None
    last_id: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    seqs: array[int] = field(default_factory=lambda: array("q"))
    reconnects: int = 0


class _Receiver:
    def __init__(self, index: int, deflate: bool) -> None:
        self.index = index
        self.deflate = deflate
        self.conns: list[_Conn] = []
        self.closing = False
        self.stalled: wsclient.WsClient | None = None
        self.stalled_frames = 0
        self.reset()

    def reset(self) -> dict[str, Any]:
        self.hist = Histogram()
        self.frames = 0
        self.out_of_order = 0
        self.controls: dict[str, int] = {}
        self.times = array("q")  # publish time (ns) of each frame, when kept
        self.lat_us = array("d")
        for conn in self.conns:
            conn.seqs = array("q")
        return {"ok": True}

    # -- frames ----------------------------------------------------------------

    def on_message(self, conn: _Conn, client: wsclient.WsClient, payload: bytes) -> None:
        now = time.time_ns()
        body = _body(conn.wire, client, payload)
        if body is None:
            return
        op = body.get("op")
        if op is not None:
            self.controls[op] = self.controls.get(op, 0) + 1
            if op == "ready":
                conn.ready.set()
            return
        data = body.get("data")
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            data = orjson.loads(data["message"])  # published through /api/notifications
        if not isinstance(data, dict) or "t" not in data:
            return
        t = data["t"]
        lat = (now - t) / 1000.0
        self.hist.add(lat)
        self.frames += 1
        conn.seqs.append(data["seq"])
        event_id = body.get("id")
        if isinstance(event_id, int):
            if event_id <= conn.last_id:
                self.out_of_order += 1
            else:
                conn.last_id = event_id
        self.times.append(t)
        self.lat_us.append(lat)

    def _handler(self, conn: _Conn) -> Callable[[wsclient.WsClient, bytes], None]:
        return lambda client, payload: self.on_message(conn, client, payload)

    # -- commands ----------------------------------------------------------------

    async def open(
        self,
        host: str,
        port: int,
        specs: list[tuple[str, str, bool]],
        wait_ready: bool,
        handshake_s: float,
        wire: str = "json",
    ) -> dict[str, Any]:
        started = time.monotonic()
        gate = asyncio.Semaphore(OPEN_CONCURRENCY)
        new = [_Conn(tenant, target, resume, wire) for target, tenant, resume in specs]

        async def one(i: int, conn: _Conn) -> bool:
            async with gate:
                conn.client = await wsclient.connect(
                    host,
                    port,
                    conn.target,
                    self._handler(conn),
                    handshake_s,
                    LOCAL_HOSTS[i % len(LOCAL_HOSTS)],
                    deflate=self.deflate,
                )
            if conn.client is None:
                return False
            if conn.resume:
                asyncio.get_running_loop().create_task(self._keep(conn, host, port, handshake_s))
            if wait_ready:
                try:
                    await asyncio.wait_for(conn.ready.wait(), handshake_s)
                except TimeoutError:
                    return False
            return True

        results = await asyncio.gather(*(one(i, c) for i, c in enumerate(new)))
        self.conns.extend(c for c, ok in zip(new, results, strict=True) if c.client is not None)
        return {
            "opened": sum(results),
            "failed": len(results) - sum(results),
            "seconds": time.monotonic() - started,
        }

    async def stall(
        self,
        host: str,
        port: int,
        target: str,
        wait_ready: bool,
        handshake_s: float,
        wire: str = "json",
    ) -> dict[str, Any]:
        """Open one socket, then stop reading it for good (until ``unstall``)."""
        ready = asyncio.Event()

        def on_message(client: wsclient.WsClient, payload: bytes) -> None:
            self.stalled_frames += 1
            if not ready.is_set() and (_body(wire, client, payload) or {}).get("op") == "ready":
                ready.set()

        client = await wsclient.connect(
            host,
            port,
            target,
            on_message,
            handshake_s,
            rcvbuf=STALL_RCVBUF,
            mss=STALL_MSS,
            deflate=self.deflate,
        )
        if client is None:
            return {"opened": False}
        if wait_ready:
            try:
                await asyncio.wait_for(ready.wait(), handshake_s)
            except TimeoutError:
                client.abort()
                return {"opened": False}
        client.pause_reading()
        self.stalled = client
        self.stalled_frames = 0
        return {"opened": True}

    async def unstall(self, wait_s: float) -> dict[str, Any]:
        """Read the stalled socket again: did the server close it (and with which code)?

        While paused nothing is read, so a close frame the server sent waits
        behind the data it had buffered; reading it all shows whether one came.
        Ends after a close, or after ``wait_s`` seconds of an open socket.
        """
        client, self.stalled = self.stalled, None
        if client is None:
            return {"close_code": None, "frames": 0}
        client.resume_reading()
        code: int | None
        try:
            code = await asyncio.wait_for(asyncio.shield(client.closed), wait_s)
        except TimeoutError:
            code = None
        client.abort()
        return {"close_code": code, "frames": self.stalled_frames}

    async def _keep(self, conn: _Conn, host: str, port: int, handshake_s: float) -> None:
        """Reconnect a dropped connection, resuming after the last id it received."""
        while conn.reconnects < RESUME_ATTEMPTS:
            assert conn.client is not None
            await conn.client.closed
            if self.closing:
                return
            await asyncio.sleep(0.05 + random.random() * 0.1)
            conn.reconnects += 1
            sep = "&" if "?" in conn.target else "?"
            target = f"{conn.target}{sep}last_event_id={conn.last_id}"
            client = None
            while client is None and conn.reconnects < RESUME_ATTEMPTS:
                client = await wsclient.connect(
                    host, port, target, self._handler(conn), handshake_s, deflate=self.deflate
                )
                if client is None:
                    conn.reconnects += 1
                    await asyncio.sleep(0.2)
            if client is None:
                return
            conn.client = client

    def collect(
        self, expected: dict[str, list[int]], window: tuple[int, int] | None
    ) -> dict[str, Any]:
        want = {tenant: set(seqs) for tenant, seqs in expected.items()}
        lost = duplicates = unexpected = received = 0
        for conn in self.conns:
            got = set(conn.seqs)
            exp = want.get(conn.tenant, set())
            received += len(conn.seqs)
            lost += len(exp - got)
            unexpected += len(got - exp)
            duplicates += len(conn.seqs) - len(got)
        window_max_ms = None
        if window is not None:
            t0, t1 = window
            worst = [lat for t, lat in zip(self.times, self.lat_us, strict=True) if t0 <= t <= t1]
            window_max_ms = max(worst) / 1000.0 if worst else None
        return {
            "received": received,
            "lost": lost,
            "duplicates": duplicates,
            "unexpected": unexpected,
            "out_of_order": self.out_of_order,
            "hist": self.hist.to_wire(),
            "controls": self.controls,
            "reconnects": sum(c.reconnects for c in self.conns),
            "window_max_ms": window_max_ms,
            "connections": len(self.conns),
            "sockets_with_frames": sum(1 for c in self.conns if c.seqs),
            "last_sent_ns": max(self.times) if self.times else None,
        }

    async def close(self) -> dict[str, Any]:
        self.closing = True
        if self.stalled is not None:
            self.stalled.abort()
            self.stalled = None
        for conn in self.conns:
            if conn.client is not None:
                conn.client.abort()
        self.conns = []
        await asyncio.sleep(0)
        return {"ok": True}

    async def handle(self, command: tuple[Any, ...]) -> dict[str, Any]:
        name, *args = command
        if name == "open":
            return await self.open(*args)
        if name == "reset":
            return self.reset()
        if name == "count":
            return {"frames": self.frames}
        if name == "collect":
            return self.collect(*args)
        if name == "close":
            return await self.close()
        if name == "stall":
            return await self.stall(*args)
        if name == "unstall":
            return await self.unstall(*args)
        raise ValueError(f"unknown receiver command {name!r}")


def _body(wire: str, client: wsclient.WsClient, payload: bytes) -> dict[str, Any] | None:
    """A message's JSON body, or ``None`` for a socket.io packet that carries none."""
    if wire == "socketio":
        return engineio.receive(client, payload)
    body: dict[str, Any] = orjson.loads(payload)
    return body


def _main(pipe: Connection, index: int, deflate: bool) -> None:
    import threading

    import uvloop

    async def serve() -> None:
        receiver = _Receiver(index, deflate)
        loop = asyncio.get_running_loop()
        commands: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

        # A thread reads the pipe: the loop's add_reader would make the pipe
        # non-blocking, and a large command would then arrive in pieces.
        def read() -> None:
            while True:
                try:
                    command = pipe.recv()
                except (EOFError, OSError):
                    command = ("close",)
                loop.call_soon_threadsafe(commands.put_nowait, command)
                if command[0] == "close":
                    return

        threading.Thread(target=read, daemon=True).start()
        while True:
            command = await commands.get()
            try:
                reply = await receiver.handle(command)
            except Exception as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            with contextlib.suppress(OSError):
                pipe.send(reply)
            if command[0] == "close":
                return

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve())


class ReceiverPool:
    """The runner's handle on the receiver processes."""

    def __init__(self, processes: int, deflate: bool = True) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._pipes: list[Connection] = []
        self.processes: list[Any] = []
        for i in range(processes):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=_main, args=(theirs, i, deflate), daemon=True, name=f"receiver-{i}"
            )
            proc.start()
            theirs.close()
            self._pipes.append(ours)
            self.processes.append(proc)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    async def _ask(self, pipe: Connection, command: tuple[Any, ...]) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        proc = self.processes[self._pipes.index(pipe)]
        await loop.run_in_executor(None, pipe.send, command)
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while not await loop.run_in_executor(None, pipe.poll, 0.5):
            if not proc.is_alive():
                raise RuntimeError(f"receiver {proc.name} died (exit code {proc.exitcode})")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"receiver did not answer {command[0]!r} in {COMMAND_TIMEOUT:.0f} s"
                )
        reply: dict[str, Any] = pipe.recv()
        if "error" in reply:
            raise RuntimeError(f"receiver failed on {command[0]!r}: {reply['error']}")
        return reply

    async def ask_one(self, index: int, *command: Any) -> dict[str, Any]:
        return await self._ask(self._pipes[index], command)

    async def ask_all(self, *command: Any) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self._ask(p, command) for p in self._pipes)))

    async def open(
        self,
        host: str,
        port: int,
        specs: list[tuple[str, str, bool]],
        wait_ready: bool,
        handshake_s: float = 30.0,
        wire: str = "json",
    ) -> dict[str, Any]:
        """Open sockets spread over the processes: ``specs`` is (target, tenant, resume)."""
        n = len(self._pipes)
        shares = [specs[i::n] for i in range(n)]
        replies = await asyncio.gather(
            *(
                self._ask(p, ("open", host, port, share, wait_ready, handshake_s, wire))
                for p, share in zip(self._pipes, shares, strict=True)
            )
        )
        return {
            "opened": sum(r["opened"] for r in replies),
            "failed": sum(r["failed"] for r in replies),
            "seconds": max(r["seconds"] for r in replies),
        }

    async def frames(self) -> int:
        return sum(r["frames"] for r in await self.ask_all("count"))

    async def collect(
        self, expected: dict[str, list[int]], window: tuple[int, int] | None = None
    ) -> dict[str, Any]:
        replies = await self.ask_all("collect", expected, window)
        hist = Histogram()
        for r in replies:
            hist.merge(Histogram.from_wire(r["hist"]))
        windows = [r["window_max_ms"] for r in replies if r["window_max_ms"] is not None]
        lasts = [r["last_sent_ns"] for r in replies if r["last_sent_ns"] is not None]
        total: dict[str, Any] = {
            key: sum(r[key] for r in replies)
            for key in (
                "received",
                "lost",
                "duplicates",
                "unexpected",
                "out_of_order",
                "reconnects",
                "connections",
                "sockets_with_frames",
            )
        }
        total["latency"] = hist.summary()
        total["window_max_ms"] = max(windows) if windows else None
        total["last_sent_ns"] = max(lasts) if lasts else None
        return total

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ask_all("close"), 30)
        for proc in self.processes:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for pipe in self._pipes:
            pipe.close()
