"""The job worker: ``pgpulse worker`` claims jobs, runs their handlers, reports.

A worker process holds one LISTEN connection (channel ``pgpulse_jobs``,
woken at every submit's commit) and a small pool. Its loop claims as many
queued jobs of its kinds as it has free slots, runs each handler as a task,
and ends each job with ``pgpulse.finish_job``. The SQL functions publish
every job event, so a worker never publishes by itself.

Leases keep a job from being lost or run twice at once: the worker renews
the leases of its running jobs every third of :attr:`Worker.lease`; a job
whose lease ran out is taken back by ``pgpulse.recover_jobs`` (any worker
calls it) and its late worker learns so at its next renewal or report, and
abandons it: the handler is cancelled (or gets :class:`JobLost` from
``progress``), and nothing it returns is recorded. On SIGTERM the worker
stops claiming, lets its jobs finish for a grace period, and gives back the
rest, queued again at once.

Handlers are ``async def handler(job: Job) -> result``; ``result`` is any
JSON-serialisable value. A :class:`pgpulse.JobFailed` fails the job with its
message, which the tenant sees; any other exception fails it with
"internal error" only, because exception texts carry what a tenant must not
see (connection strings, other tenants' data, stack details): they go to the
worker's log, with the job's id.

A handler that produces text as it goes (an AI model's tokens) calls
``await job.stream(text)``. Browsers see it as it comes, but the event log
does not get a row per token: chunks are folded, like progress, into one
write (and one ``ai_job.output`` event) per :data:`STREAM_INTERVAL`, the
job row keeps the text so far, and the rest is written with the job's end.
A handler that streamed and returns ``None`` has ``{"text": <all of it>}``
as its result, so the whole stream is in the final event too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import random
import re
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from . import db
from .backoff import Backoff
from .errors import InvalidJob, JobFailed
from .events import MAX_NAME_LENGTH, is_name
from .listen import Listen
from .migrate import migrate
from .nodes import HEARTBEAT_INTERVAL, Heartbeat
from .publish import encode_json
from .sql import QUERIES

log = logging.getLogger("pgpulse.worker")

CHANNEL = "pgpulse_jobs"
PROGRESS_INTERVAL = 0.1  # seconds: at most ten progress events a second per job
STREAM_INTERVAL = 0.075  # seconds: streamed text is written, as one event, at most this often
MAX_OUTPUT_CHARS = 1_000_000  # characters a job may stream in one attempt (checked in SQL too)
MAX_ERROR_LENGTH = 2000  # characters of a failure's message kept in the job
INTERNAL_ERROR = "internal error"  # what a tenant sees of an unexpected exception
MIN_BACKOFF = 0.05  # seconds
MAX_BACKOFF = 2.0  # seconds between attempts while the database is away

Handler = Callable[["Job"], Awaitable[Any]]


class JobLost(Exception):
    """This worker no longer holds the job: its lease ran out and it was taken back."""


class _Folder:
    """Writes at most once per ``interval``: calls in between fold into the next write.

    ``write`` takes whatever is pending when it runs, so one write carries
    every call made before it. A job has one for progress and one for text.
    """

    def __init__(self, interval: float, write: Callable[[], Awaitable[None]]) -> None:
        self.interval = interval
        self._write_pending = write
        self._last = 0.0
        self._task: asyncio.Task[None] | None = None
        self._sleeping = False
        self._lock = asyncio.Lock()

    async def request(self) -> None:
        """Write now if the interval is up, else make sure a write follows once it is."""
        if self._task is not None and not self._task.done():
            return  # the write to come carries this call's value
        wait = self._last + self.interval - time.monotonic()
        if wait > 0:
            self._task = asyncio.get_running_loop().create_task(self._write_after(wait))
            return
        await self._write()

    async def _write_after(self, delay: float) -> None:
        self._sleeping = True
        try:
            await asyncio.sleep(delay)
        finally:
            self._sleeping = False
        await self._write()

    async def _write(self) -> None:
        async with self._lock:
            self._last = time.monotonic()
            await self._write_pending()

    def cancel(self) -> None:
        """Drop a write still waiting (or under way)."""
        if self._task is not None:
            self._task.cancel()

    async def settle(self) -> None:
        """Drop a write still waiting, and let one under way end: the caller writes the rest."""
        task = self._task
        if task is None or task.done():
            return
        if self._sleeping:
            task.cancel()
        await asyncio.wait([task])


class Job:
    """One claimed job, as its handler sees it."""

    def __init__(
        self,
        worker: Worker,
        pool: AsyncConnectionPool,
        row: tuple[Any, ...],
    ) -> None:
        self.id = str(row[0])
        self.tenant_id: str = row[1]
        self.user_id: str | None = row[2]
        self.kind: str = row[3]
        self.input: Any = orjson.loads(row[4])
        self.attempt = int(row[5])
        self._worker = worker
        self._pool = pool
        self._pending: tuple[float, str | None] | None = None
        self._progress = _Folder(PROGRESS_INTERVAL, self._write_progress)
        self._output = _Folder(STREAM_INTERVAL, self._write_output_soon)
        self._chunks: list[str] = []  # all the text this run has streamed
        self._length = 0  # its characters
        self._unwritten: list[str] = []  # the chunks not in the job row yet
        self._written = 0  # characters of this run's text in the job row
        self.lost = False

    async def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress, from 0 to 1, as an ``ai_job.progress`` event.

        Calls closer together than :data:`PROGRESS_INTERVAL` are folded: the
        latest value is published when the interval is up, so a handler may
        report as often as it likes. Raises :class:`JobLost` when the job was
        taken back from this worker.
        """
        if not (isinstance(fraction, int | float) and math.isfinite(fraction)):
            raise ValueError(f"progress must be a number from 0 to 1, got {fraction!r}")
        if not 0 <= fraction <= 1:
            raise ValueError(f"progress must be from 0 to 1, got {fraction}")
        if self.lost:
            raise JobLost(self.id)
        self._pending = (float(fraction), message)
        await self._progress.request()
        if self.lost:
            raise JobLost(self.id)

    async def stream(self, text: str) -> None:
        """Stream ``text`` (e.g. a model's next tokens) to the job's watchers.

        Calls closer together than :data:`STREAM_INTERVAL` are folded into one
        ``ai_job.output`` event, so a handler may call it per token. Raises
        :class:`JobLost` when the job was taken back from this worker, and
        ``ValueError`` past :data:`MAX_OUTPUT_CHARS` or for text PostgreSQL
        cannot store (NUL, unpaired surrogates).
        """
        if not isinstance(text, str):
            raise TypeError(f"stream takes a str, got {type(text).__name__}")
        if "\x00" in text:
            raise ValueError("streamed text cannot contain NUL characters")
        text.encode()  # unpaired surrogates raise UnicodeEncodeError, a ValueError
        if self.lost:
            raise JobLost(self.id)
        if not text:
            return
        if self._length + len(text) > MAX_OUTPUT_CHARS:
            raise ValueError(f"a job streams at most {MAX_OUTPUT_CHARS} characters")
        self._chunks.append(text)
        self._length += len(text)
        self._unwritten.append(text)
        await self._output.request()
        if self.lost:
            raise JobLost(self.id)

    @property
    def text(self) -> str:
        """Everything this run has streamed so far."""
        return "".join(self._chunks)

    @property
    def streamed(self) -> bool:
        return self._length > 0

    async def _write_progress(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None or self.lost:
            return
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    QUERIES["job_progress"],
                    {
                        "job_id": self.id,
                        "worker": self._worker.name,
                        "progress": pending[0],
                        "message": pending[1],
                    },
                )
                row = await cur.fetchone()
        except (psycopg.OperationalError, PoolTimeout) as exc:
            # Progress is advisory: the job goes on, and its end is retried.
            log.warning("job %s: progress not recorded: %s", self.id, exc)
            return
        if row is None or not row[0]:
            self._worker.lose(self)

    async def _write_output_soon(self) -> None:
        if not self._unwritten or self.lost:
            return
        try:
            async with self._pool.connection() as conn:
                await self.write_output(conn)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            # The text stays pending: the next write, or the job's end, carries it.
            log.warning("job %s: streamed text not recorded yet: %s", self.id, exc)

    async def write_output(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """Write the streamed text not in the job row yet; False if the job was lost.

        The chunks leave :attr:`_unwritten` only once written, so a write
        that fails is carried by the next; one whose commit went
        unacknowledged is sent again at the same offset, which the database
        recognises (``pgpulse.job_output``).
        """
        if not self._unwritten:
            return not self.lost
        taken = len(self._unwritten)
        chunk = "".join(self._unwritten[:taken])
        cur = await conn.execute(
            QUERIES["job_output"],
            {"job_id": self.id, "worker": self._worker.name, "at": self._written, "chunk": chunk},
        )
        row = await cur.fetchone()
        if row is None or not row[0]:
            self._worker.lose(self)
            return False
        del self._unwritten[:taken]
        self._written += len(chunk)
        return True

    def stop_reporting(self) -> None:
        """Drop a progress write still waiting: the job's end supersedes it."""
        self._progress.cancel()

    def stop_streaming(self) -> None:
        """Drop a text write still waiting: the job is no longer this run's."""
        self._output.cancel()

    async def settle_output(self) -> None:
        """Let a text write under way end; the job's end writes the rest."""
        await self._output.settle()


class Worker:
    """Runs handlers for jobs of their kinds, ``concurrency`` at a time.

    ``handlers`` maps a job kind to its handler; :meth:`handler` adds one as
    a decorator. ``lease`` is how long a job stays this worker's without a
    renewal, so a crashed worker's jobs run again after at most that long.
    """

    def __init__(
        self,
        handlers: Mapping[str, Handler] | None = None,
        *,
        concurrency: int = 4,
        lease: float = 30.0,
        timeout: float = 3600.0,
        poll_interval: float = 5.0,
        grace: float = 10.0,
        name: str | None = None,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if lease <= 0 or timeout <= 0 or poll_interval <= 0 or grace < 0:
            raise ValueError("lease, timeout and poll_interval must be positive")
        self.handlers: dict[str, Handler] = {}
        for kind, fn in (handlers or {}).items():
            self.handler(kind)(fn)
        self.concurrency = concurrency
        self.lease = lease
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.grace = grace
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{random.randrange(16**4):04x}"
        self._running: dict[str, tuple[Job, asyncio.Task[None]]] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self.jobs_done = 0
        self.heartbeat_interval = heartbeat_interval
        self._listen: Listen | None = None  # shown by the console: connected, reconnects

    def handler(self, kind: str) -> Callable[[Handler], Handler]:
        """Register the decorated coroutine function as the handler of ``kind``."""

        if not is_name(kind):
            raise ValueError(f"a job kind is a string of 1 to {MAX_NAME_LENGTH} characters")

        def register(fn: Handler) -> Handler:
            if not callable(fn):
                raise TypeError(f"the handler of {kind!r} is not callable")
            self.handlers[kind] = fn
            return fn

        return register

    @property
    def kinds(self) -> list[str]:
        return sorted(self.handlers)

    def lose(self, job: Job) -> None:
        """Abandon ``job``: another worker has it now (called when a report finds so)."""
        if job.lost:
            return
        job.lost = True
        log.warning("job %s: lease lost; abandoning it", job.id)
        entry = self._running.get(job.id)
        # A handler that learns it in its own progress() call gets JobLost instead.
        if entry is not None and entry[1] is not asyncio.current_task():
            entry[1].cancel()

    async def run(self, url: str, stop: asyncio.Event | None = None) -> None:
        """Work until ``stop`` is set; then finish or give back the jobs in hand."""
        if not self.handlers:
            raise InvalidJob("the worker has no handlers")
        stop = stop or asyncio.Event()
        self._stopping = False
        self._wake = asyncio.Event()  # an Event belongs to the loop that first waits on it
        await migrate(url)
        pool = await db.open_pool(url, 1, self.concurrency + 2)
        loop = asyncio.get_running_loop()
        listen = self._listen = Listen(
            url,
            CHANNEL,
            on_notify=lambda _payload: self._wake.set(),
            on_connect=self._wake.set,  # jobs queued while nobody listened
            quiet_after=self.poll_interval,
            log=log,
            backoff=Backoff(MIN_BACKOFF, MAX_BACKOFF),
        )
        helpers = [
            loop.create_task(listen.run(), name="pgpulse-worker-listen"),
            loop.create_task(self._renew_forever(pool), name="pgpulse-worker-leases"),
            loop.create_task(self._stop_on(stop), name="pgpulse-worker-stop"),
        ]
        # Registered under its name, which is also what its jobs' rows call it.
        heartbeat = Heartbeat(pool, "worker", self._stats, self.heartbeat_interval, self.name)
        heartbeat.start()
        kinds = ", ".join(self.kinds)
        log.info("worker %s: kinds %s, concurrency %d", self.name, kinds, self.concurrency)
        try:
            await self._claim_forever(pool)
            await self._drain(pool)
        finally:
            for task in helpers:
                task.cancel()
            for task in helpers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await heartbeat.stop()
            await pool.close()

    async def _stop_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping = True
        self._wake.set()

    async def _claim_forever(self, pool: AsyncConnectionPool) -> None:
        backoff = Backoff(MIN_BACKOFF, MAX_BACKOFF)
        while not self._stopping:
            self._wake.clear()
            free = self.concurrency - len(self._running)
            claimed = 0
            if free > 0:
                try:
                    claimed = await self._claim(pool, free)
                    backoff.reset()
                except (psycopg.OperationalError, PoolTimeout) as exc:
                    log.warning("worker %s: cannot claim jobs: %s", self.name, exc)
                    await backoff.sleep()
                    continue
            if claimed and claimed == free:
                continue  # more may be queued; claim again once a slot frees
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    async def _claim(self, pool: AsyncConnectionPool, n: int) -> int:
        async with pool.connection() as conn:
            cur = await conn.execute(
                QUERIES["claim_jobs"],
                {"worker": self.name, "kinds": self.kinds, "n": n, "lease": self.lease},
            )
            rows = await cur.fetchall()
        for row in rows:
            job = Job(self, pool, row)
            task = asyncio.get_running_loop().create_task(
                self._run(pool, job), name=f"job-{job.id}"
            )
            self._running[job.id] = (job, task)
            task.add_done_callback(functools.partial(self._finished, job.id))
        return len(rows)

    def _finished(self, job_id: str, _task: asyncio.Task[None]) -> None:
        self._running.pop(job_id, None)
        self._wake.set()  # a slot is free

    async def _run(self, pool: AsyncConnectionPool, job: Job) -> None:
        log.info("job %s (%s, attempt %d) started", job.id, job.kind, job.attempt)
        result_json: str | None = None
        error: str | None = None
        timer = asyncio.timeout(self.timeout)
        try:
            async with timer:
                result = await self.handlers[job.kind](job)
            if result is None and job.streamed:
                result = {"text": job.text}  # the whole stream, in the final event
            result_json = encode_json("result", result, InvalidJob)
        except JobLost:
            job.stop_streaming()
            return
        except asyncio.CancelledError:
            job.stop_streaming()  # the job is not ours to write to any more
            if job.lost:
                return  # taken back; another worker runs it
            raise  # shutting down: the job is given back
        except (InvalidJob, JobFailed) as exc:  # the result would not encode; or on purpose
            error = str(exc)[:MAX_ERROR_LENGTH]
        except Exception as exc:
            if isinstance(exc, TimeoutError) and timer.expired():
                error = f"timed out after {self.timeout:g} s"
            else:
                log.exception("job %s (%s) failed", job.id, job.kind)
                error = INTERNAL_ERROR
        finally:
            job.stop_reporting()
        await job.settle_output()
        await self._finish(pool, job, result_json, error)

    async def _finish(
        self, pool: AsyncConnectionPool, job: Job, result_json: str | None, error: str | None
    ) -> None:
        """Record the job's end, retrying while the database is away and the lease may hold."""
        deadline = time.monotonic() + self.lease
        backoff = Backoff(MIN_BACKOFF, MAX_BACKOFF)
        while True:
            try:
                async with pool.connection() as conn:
                    # The streamed text's tail first: its event comes before the end's.
                    if not await job.write_output(conn):
                        log.warning("job %s: taken back before it ended", job.id)
                        return
                    cur = await conn.execute(
                        QUERIES["finish_job"],
                        {
                            "job_id": job.id,
                            "worker": self.name,
                            "result": result_json,
                            "error": error,
                        },
                    )
                    row = await cur.fetchone()
                break
            except (psycopg.OperationalError, PoolTimeout) as exc:
                delay = backoff.next()
                if time.monotonic() + delay > deadline:
                    log.error("job %s: end not recorded, it will run again: %s", job.id, exc)
                    return
                await asyncio.sleep(delay)
        if row is None or not row[0]:
            log.warning("job %s: taken back before it ended; its result is dropped", job.id)
            return
        self.jobs_done += 1
        log.info("job %s (%s) %s", job.id, job.kind, "failed" if error else "succeeded")

    async def _drain(self, pool: AsyncConnectionPool) -> None:
        """Let running jobs end within the grace period, then give the rest back."""
        if not self._running:
            return
        tasks = [task for _, task in self._running.values()]
        log.info("worker %s: stopping; %d jobs running", self.name, len(tasks))
        await asyncio.wait(tasks, timeout=self.grace)
        unfinished = [job_id for job_id, (_, task) in self._running.items() if not task.done()]
        for job_id in unfinished:
            self._running[job_id][1].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if unfinished:
            try:
                async with pool.connection() as conn:
                    await conn.execute(
                        QUERIES["release_jobs"], {"worker": self.name, "job_ids": unfinished}
                    )
                log.info("worker %s: gave back %d jobs", self.name, len(unfinished))
            except (psycopg.OperationalError, PoolTimeout) as exc:
                log.warning("worker %s: jobs not given back, their leases will: %s", self.name, exc)

    async def _renew_forever(self, pool: AsyncConnectionPool) -> None:
        """Renew the leases of running jobs and take back other workers' expired ones."""
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                async with pool.connection() as conn:
                    held_ids = list(self._running)
                    if held_ids:
                        cur = await conn.execute(
                            QUERIES["extend_leases"],
                            {"worker": self.name, "job_ids": held_ids, "lease": self.lease},
                        )
                        held = {str(row[0]) for row in await cur.fetchall()}
                        for job_id in held_ids:
                            entry = self._running.get(job_id)
                            if job_id not in held and entry is not None:
                                self.lose(entry[0])
                    await conn.execute(QUERIES["recover_jobs"])
            except (psycopg.OperationalError, PoolTimeout) as exc:
                log.warning("worker %s: cannot renew leases: %s", self.name, exc)

    async def _stats(self, conn: psycopg.AsyncConnection[Any]) -> dict[str, Any]:
        """What the node registry shows of this worker."""
        return {
            "kinds": self.kinds,
            "concurrency": self.concurrency,
            "running": len(self._running),
            "jobs_done": self.jobs_done,
            "listener": {
                "connected": self._listen is not None and self._listen.connected,
                "reconnects": self._listen.reconnects if self._listen is not None else 0,
            },
        }


async def echo(job: Job) -> Any:
    """Built-in kind ``echo``: the result is the input."""
    return job.input


async def sleep(job: Job) -> Any:
    """Built-in kind ``sleep``: ``{"seconds": s, "steps": n}``, reporting each step."""
    spec = job.input if isinstance(job.input, dict) else {}
    try:
        seconds = float(spec.get("seconds", 1.0))
        steps = max(1, int(spec.get("steps", 10)))
    except (TypeError, ValueError):
        raise JobFailed("seconds and steps must be numbers") from None
    if not 0 <= seconds <= 3600:
        raise JobFailed("seconds must be from 0 to 3600")
    for step in range(1, steps + 1):
        await asyncio.sleep(seconds / steps)
        await job.progress(step / steps, f"step {step} of {steps}")
    return {"slept": seconds, "steps": steps}


SAMPLE_ANSWER = (
    "PostgreSQL already knows when your transaction commits, so it can tell your users too: "
    "pgpulse writes each event in the same transaction as your data, wakes its servers with "
    "NOTIFY, and streams the event log to every browser, in order, resuming exactly."
)
MAX_STREAM_INPUT = 100_000  # characters of text the built-in stream kind takes


async def stream(job: Job) -> Any:
    """Built-in kind ``stream``: ``{"text": t, "delay": s}`` streams ``t`` (default: a
    sample answer) a word at a time, ``s`` seconds apart (default 0.05), as a model would."""
    spec = job.input if isinstance(job.input, dict) else {}
    text = spec.get("text", SAMPLE_ANSWER)
    delay = float(spec.get("delay", 0.05))
    if not isinstance(text, str) or len(text) > MAX_STREAM_INPUT:
        raise ValueError(f"text must be a string of at most {MAX_STREAM_INPUT} characters")
    if not 0 <= delay <= 10:
        raise ValueError("delay must be from 0 to 10 seconds")
    # Words with the spaces after them: joined back, they are the text exactly.
    words = [word for word in re.split(r"(?<=\s)(?=\S)", text) if word]
    for i, word in enumerate(words, 1):
        await asyncio.sleep(delay)
        await job.stream(word)
        await job.progress(i / len(words))
    return None  # the result is the whole text (see the module docstring)


BUILTIN_HANDLERS: dict[str, Handler] = {"echo": echo, "sleep": sleep, "stream": stream}
"""What ``pgpulse worker`` runs without ``--app``: kinds to try the pipeline with."""
