"""``GET /api/jobs``: a token's recent jobs, newest first, paged, under tenant and user rules."""

from __future__ import annotations

from typing import Any

import psycopg

from pgpulse import Job, Worker, submit_job

from ..jobs_support import running, until_status
from ..support import ServerHandle, mint


async def submit_many(url: str, tenant: str, owners: list[str | None]) -> list[str]:
    ids = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
        for i, owner in enumerate(owners):
            ids.append(
                await submit_job(
                    c, tenant_id=tenant, kind="idle-" + tenant, input={"i": i}, user_id=owner
                )
            )
    return ids


async def get(server: ServerHandle, token: str, **params: Any) -> Any:
    async with server.http() as http:
        return await http.get(
            "/api/jobs", params=params, headers={"Authorization": f"Bearer {token}"}
        )


async def all_pages(server: ServerHandle, token: str, limit: int) -> list[str]:
    seen: list[str] = []
    before: str | None = None
    while True:
        r = await get(server, token, limit=limit, **({} if before is None else {"before": before}))
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["jobs"]) <= limit
        seen += [job["job_id"] for job in body["jobs"]]
        if not body["more"]:
            return seen
        before = seen[-1]


async def test_pages_newest_first_under_tenant_and_user_rules(
    server: ServerHandle, tenant: str
) -> None:
    owners: list[str | None] = [None, "alice", "bob", None, "alice", None, "bob", "alice"] * 2
    ids = await submit_many(server.runtime.database_url, tenant, owners)
    newest_first = list(reversed(list(zip(ids, owners, strict=True))))
    for user in (None, "alice", "bob"):
        expected = [i for i, owner in newest_first if owner is None or owner == user]
        for limit in (1, 3, 100):
            assert await all_pages(server, mint(tenant, user), limit) == expected
    r = await get(server, mint(tenant, "alice"), limit=2)
    first = r.json()["jobs"][0]
    assert first["job_id"] == ids[-1] and first["status"] == "queued"
    assert first["input"] == {"i": len(ids) - 1} and first["kind"] == "idle-" + tenant
    assert (await get(server, mint(tenant + "-other"))).json() == {"jobs": [], "more": False}


async def test_a_finished_job_reads_as_it_ended(server: ServerHandle, tenant: str) -> None:
    kind = "double-" + tenant
    worker = Worker(poll_interval=1.0)

    @worker.handler(kind)
    async def double(job: Job) -> Any:
        return {"twice": job.input["n"] * 2}

    url = server.runtime.database_url
    async with (
        running(worker, url),
        await psycopg.AsyncConnection.connect(url, autocommit=True) as c,
    ):
        job_id = await submit_job(c, tenant_id=tenant, kind=kind, input={"n": 21})
        await until_status(url, job_id, "succeeded")
    [job] = (await get(server, mint(tenant))).json()["jobs"]
    assert job["job_id"] == job_id and job["status"] == "succeeded"
    assert job["result"] == {"twice": 42} and job["progress"] == 1


async def test_bad_queries_are_422(server: ServerHandle, tenant: str) -> None:
    for bad in ({"before": "not-a-uuid"}, {"limit": 0}, {"limit": 101}):
        r = await get(server, mint(tenant), **bad)
        assert r.status_code == 422, bad
        assert "detail" in r.json()
    async with server.http() as http:
        assert (await http.get("/api/jobs")).status_code == 401
