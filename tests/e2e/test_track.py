"""Table tracking end to end: a plain SQL write reaches the row's tenant over /ws, and only it.

"Nothing was emitted" is proven with a marker: a publish after the write
that must not emit, whose event must be the next one to arrive.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgpulse
from pgpulse.track import track, untrack

from ..support import ServerHandle, events, mint, no_more_events, until_ready


@pytest.fixture
async def table(database_url: str) -> AsyncIterator[str]:
    """``schema.orders`` in a schema of this test's own."""
    schema = f"track_{uuid.uuid4().hex[:10]}"
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        await c.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        await c.execute(f"CREATE TABLE {schema}.orders (id int PRIMARY KEY, org text, item text)")
    try:
        yield f"{schema}.orders"
    finally:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
            await c.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


async def marker(c: psycopg.AsyncConnection[Any], tenant: str) -> None:
    await pgpulse.publish(c, tenant_id=tenant, topic="orders", type="marker", data={})


async def test_writes_reach_only_their_tenant_and_rollbacks_nothing(
    server: ServerHandle, database_url: str, table: str, tenant: str
) -> None:
    a, b = tenant + "-a", tenant + "-b"
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        await track(c, table, "org")
        async with server.connect(mint(a)) as ws_a, server.connect(mint(b)) as ws_b:
            await until_ready(ws_a)
            await until_ready(ws_b)
            await c.execute(f"INSERT INTO {table} VALUES (1, %s, 'apple'), (2, %s, 'pear')", [a, b])
            await c.execute(f"UPDATE {table} SET item = 'green apple' WHERE id = 1")
            await c.execute(f"DELETE FROM {table} WHERE id = 2")
            async with c.transaction(force_rollback=True):
                await c.execute(f"INSERT INTO {table} VALUES (3, %s, 'ghost')", [a])
                await c.execute(f"DELETE FROM {table} WHERE id = 1")
            await marker(c, a)
            await marker(c, b)

            got_a = await events(ws_a, 3)
            assert [(e["id"], e["topic"], e["type"]) for e in got_a] == [
                (1, "orders", "orders.insert"),
                (2, "orders", "orders.update"),
                (3, "orders", "marker"),
            ]
            apple = {"id": 1, "org": a, "item": "apple"}
            assert got_a[0]["data"]["new"] == apple and got_a[0]["data"]["old"] is None
            assert got_a[1]["data"]["old"] == apple
            assert got_a[1]["data"]["new"] == {**apple, "item": "green apple"}

            got_b = await events(ws_b, 3)
            assert [e["type"] for e in got_b] == ["orders.insert", "orders.delete", "marker"]
            pear = {"id": 2, "org": b, "item": "pear"}
            assert got_b[1]["data"]["old"] == pear and got_b[1]["data"]["new"] is None
            assert {e["tenant_id"] for e in got_b} == {b}

            await untrack(c, table)
            await c.execute(f"INSERT INTO {table} VALUES (4, %s, 'untracked')", [a])
            await marker(c, a)
            [after] = await events(ws_a, 1)
            assert after["type"] == "marker" and after["id"] == 4
            await no_more_events(ws_b, 0.1)


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgpulse",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_track_and_untrack(
    server: ServerHandle, database_url: str, table: str, tenant: str, tmp_path: object
) -> None:
    env = {"PGPULSE_DATABASE_URL": database_url, "PGPULSE_DATA_DIR": str(tmp_path)}
    code, out, err = await run_cli("track", table, "--tenant-column", "nope", env=env)
    assert code == 1 and out == ""
    assert "no column 'nope'" in err and "'org'" in err
    assert err.strip().count("\n") == 0 and "Traceback" not in err

    code, out, err = await run_cli(
        "track", table, "--tenant-column", "org", "--topic", "shop", env=env
    )
    assert code == 0, err
    assert out.strip() == f"tracking {table}"

    async with (
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c,
        server.connect(mint(tenant)) as ws,
    ):
        await until_ready(ws)
        await c.execute(f"INSERT INTO {table} VALUES (1, %s, '[bold]x[/]')", [tenant])
        [got] = await events(ws, 1)
        assert (got["topic"], got["type"]) == ("shop", "orders.insert")
        assert got["data"]["new"]["item"] == "[bold]x[/]"

        code, out, err = await run_cli("untrack", table, env=env)
        assert code == 0, err
        assert out.strip() == f"no longer tracking {table}"
        await c.execute(f"INSERT INTO {table} VALUES (2, %s, 'y')", [tenant])
        await marker(c, tenant)
        [after] = await events(ws, 1)
        assert after["type"] == "marker" and after["id"] == 2

    # Messages keep names literally, brackets included (no console markup).
    code, out, err = await run_cli("track", "public.[b]x[/b]", "--tenant-column", "c", env=env)
    assert code == 1 and "'public.[b]x[/b]' does not exist" in err


async def test_a_column_outside_the_allow_list_never_leaves_the_database(
    server: ServerHandle, database_url: str, table: str, tenant: str, tmp_path: object
) -> None:
    env = {"PGPULSE_DATABASE_URL": database_url, "PGPULSE_DATA_DIR": str(tmp_path)}
    code, _, err = await run_cli("track", table, "--tenant-column", "org", env=env)
    assert code == 0 and "whole tenant" in err  # the warning without options
    code, _, err = await run_cli(
        "track", table, "--tenant-column", "org", "--columns", "id,org", env=env
    )
    assert code == 0 and "whole tenant" not in err, err
    async with (
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c,
        server.connect(mint(tenant)) as ws,
    ):
        await until_ready(ws)
        await c.execute(f"INSERT INTO {table} VALUES (1, %s, 'secret-card-4111')", [tenant])
        [got] = await events(ws, 1)
        assert got["data"]["new"] == {"id": 1, "org": tenant}
        cur = await c.execute("SELECT count(*) FROM pgpulse.events WHERE data::text LIKE '%4111%'")
        assert await cur.fetchone() == (0,)
