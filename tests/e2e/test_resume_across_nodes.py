"""A client dropped by one node resumes on another: same ids, no gap, no duplicate."""

from __future__ import annotations

from pathlib import Path

import psycopg

import pgpulse

from ..support import events, mint, no_more_events, start_server, until_ready


async def test_resume_on_another_node(database_url: str, tmp_path: Path, tenant: str) -> None:
    async def publish(n: int, start: int) -> None:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
            for i in range(start, start + n):
                await pgpulse.publish(c, tenant_id=tenant, type="e", data={"i": i})

    token = mint(tenant)
    async with (
        start_server(database_url, tmp_path / "a") as node_a,
        start_server(database_url, tmp_path / "b") as node_b,
    ):
        async with node_a.connect(token) as ws:
            await until_ready(ws)
            await publish(5, 0)
            seen = [e["id"] for e in await events(ws, 5)]
        assert seen == [1, 2, 3, 4, 5]
        await publish(7, 5)  # while the client is away
        async with node_b.connect(token, last_event_id=str(seen[-1])) as ws:
            frames = await until_ready(ws)
            assert [f["id"] for f in frames if "id" in f] == list(range(6, 13))
            assert frames[-1] == {"op": "ready", "last_event_id": 12}
            await publish(1, 12)
            [live] = await events(ws, 1)
            assert live["id"] == 13 and live["data"] == {"i": 12}
            await no_more_events(ws, 0.3)
