"""Streamed job output: ``job.stream()`` folded into few events, joined mid-stream exactly."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import psycopg

from pgpulse import Job, Worker
from pgpulse.worker import STREAM_INTERVAL

from ..jobs_support import running
from ..support import TIMEOUT, ServerHandle, events, mint, until_ready

TOKENS = [f"tok{i} " for i in range(240)]
WHOLE = "".join(TOKENS)


def fold(text: str, offset: int, chunk: str) -> str:
    """What a client does with an ``ai_job.output`` event: keep what lies past its text."""
    assert offset <= len(text), f"a gap: text has {len(text)} characters, chunk starts at {offset}"
    return text + chunk[len(text) - offset :]


async def submit(server: ServerHandle, token: str, kind: str) -> str:
    async with server.http() as http:
        r = await http.post(
            "/api/jobs", json={"kind": kind}, headers={"Authorization": f"Bearer {token}"}
        )
    assert r.status_code == 202, r.text
    job_id: str = r.json()["job_id"]
    return job_id


async def read_job(server: ServerHandle, token: str, job_id: str) -> dict[str, Any]:
    async with server.http() as http:
        r = await http.get(f"/api/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def output_events(url: str, tenant: str, job_id: str) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(url) as c:
        cur = await c.execute(
            "SELECT data FROM pgpulse.events WHERE tenant_id = %s AND type = 'ai_job.output' "
            "AND data->>'job_id' = %s ORDER BY id",
            [tenant, job_id],
        )
        return [row[0] for row in await cur.fetchall()]


async def test_a_client_joining_halfway_ends_with_exactly_the_whole_text(
    server: ServerHandle, tenant: str
) -> None:
    kind = "answer-" + tenant
    halfway = asyncio.Event()
    worker = Worker(poll_interval=1.0)

    @worker.handler(kind)
    async def answer(job: Job) -> Any:
        for i, token in enumerate(TOKENS):
            await job.stream(token)
            if i == len(TOKENS) // 2:
                halfway.set()
            await asyncio.sleep(0.008)
        return None

    token = mint(tenant, "alice", scopes=["jobs"])
    url = server.runtime.database_url
    async with server.connect(token, topics="ai_jobs") as early, running(worker, url):
        await until_ready(early)
        job_id = await submit(server, token, kind)
        async with asyncio.timeout(TIMEOUT):
            await halfway.wait()

        # Joining now: subscribe first, then read the text so far, then fold the rest in.
        async with server.connect(token, topics="ai_jobs") as late:
            await until_ready(late)
            snapshot = await read_job(server, token, job_id)
            assert snapshot["status"] == "running"
            assert 0 < len(snapshot["text"]) < len(WHOLE)
            assert WHOLE.startswith(snapshot["text"])
            text = snapshot["text"]
            while True:
                [frame] = await events(late, 1)
                if frame["type"] == "ai_job.output":
                    text = fold(text, frame["data"]["offset"], frame["data"]["text"])
                elif frame["type"] == "ai_job_complete":
                    break
        assert text == WHOLE
        assert frame["data"]["result"] == {"text": WHOLE}

        # The client that watched from the start got every chunk, back to back.
        seen = ""
        while True:
            [frame] = await events(early, 1)
            if frame["type"] == "ai_job.output":
                assert frame["data"]["offset"] == len(seen)
                seen += frame["data"]["text"]
            elif frame["type"] == "ai_job_complete":
                break
        assert seen == WHOLE

    final = await read_job(server, token, job_id)
    assert final["status"] == "succeeded" and final["text"] == WHOLE
    chunks = await output_events(url, tenant, job_id)
    # Folded: at most one event per interval while it streamed, plus the tail at the end.
    seconds = (_ts(final["finished_at"]) - _ts(final["started_at"])).total_seconds()
    assert len(chunks) <= seconds / STREAM_INTERVAL + 2, (len(chunks), seconds)
    assert len(chunks) <= seconds / 0.05 + 2  # the contract's bound: 50 ms at the most often
    assert len(chunks) < len(TOKENS) / 4
    assert "".join(c["text"] for c in chunks) == WHOLE


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_stream_checks_its_text(server: ServerHandle, tenant: str) -> None:
    kind = "bad-" + tenant
    worker = Worker(poll_interval=1.0)
    problems: list[str] = []

    @worker.handler(kind)
    async def bad(job: Job) -> Any:
        for value in (b"bytes", "nul\x00", "\ud800"):
            try:
                await job.stream(value)  # type: ignore[arg-type]
            except (TypeError, ValueError) as exc:
                problems.append(type(exc).__name__)
        await job.stream("")  # nothing to say is fine
        return {"streamed": job.streamed}

    token = mint(tenant, scopes=["jobs"])
    async with running(worker, server.runtime.database_url):
        job_id = await submit(server, token, kind)
        async with asyncio.timeout(TIMEOUT):
            while (await read_job(server, token, job_id))["status"] != "succeeded":
                await asyncio.sleep(0.02)
    assert problems == ["TypeError", "ValueError", "UnicodeEncodeError"]
    body = await read_job(server, token, job_id)
    assert body["result"] == {"streamed": False} and body["text"] == ""
