"""A resume point older than what is retained gets a reset, then the live stream."""

from __future__ import annotations

from pathlib import Path

import psycopg

import pgpulse
from pgpulse.retention import prune

from ..support import events, mint, no_more_events, start_server, until_ready

KEEP = 5  # events retained per tenant (retention_max_events)


async def test_resume_past_retention_gets_reset_then_ready(
    database_url: str, tmp_path: Path, tenant: str
) -> None:
    async with (
        start_server(database_url, tmp_path, retention_max_events=KEEP) as server,
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c,
    ):
        for n in range(20):
            await pgpulse.publish(c, tenant_id=tenant, type="old", data={"n": n})
        # One pruning round, as the server's pruner runs it (other tenants' old
        # rows go too: this is the run's own database).
        settings = server.runtime.settings
        pruned = await prune(
            server.runtime.pool, settings.retention_seconds, settings.retention_max_events
        )
        assert pruned >= 20 - KEEP

        # 15 is still whole (16..20 are retained): replay, then ready.
        async with server.connect(mint(tenant), last_event_id="15") as ws:
            frames = await until_ready(ws)
            assert [f.get("id") for f in frames[:-1]] == [16, 17, 18, 19, 20]
            assert frames[-1] == {"op": "ready", "last_event_id": 20}

        # 14 and 3 lost their next events: reset first, then ready at the head, then live.
        head = 20
        for resume_from in ("14", "3"):
            async with server.connect(mint(tenant), last_event_id=resume_from) as ws:
                frames = await until_ready(ws)
                assert frames == [
                    {"op": "reset", "reason": "history_expired"},
                    {"op": "ready", "last_event_id": head},
                ]
                key = await pgpulse.publish(c, tenant_id=tenant, type="new", data={})
                [got] = await events(ws, 1)
                assert got["id"] == head + 1 and got["key"] == key and got["type"] == "new"
                await no_more_events(ws, 0.2)
                head = got["id"]
