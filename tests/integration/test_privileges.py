"""The database side: what a publishing role may do, and a schema pgpulse does not own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgpulse.errors import ConfigError
from pgpulse.migrate import migrate

Conn = psycopg.AsyncConnection[Any]


@pytest.fixture
async def roles(database_url: str) -> AsyncIterator[tuple[str, str]]:
    """A member of pgpulse_publisher and a role that is not, dropped at the end."""
    app, other = f"app_{uuid.uuid4().hex[:8]}", f"other_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        for role in (app, other):
            await c.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        await c.execute(sql.SQL("GRANT pgpulse_publisher TO {}").format(sql.Identifier(app)))
        try:
            yield app, other
        finally:
            for role in (app, other):
                await c.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                await c.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


async def as_role(c: Conn, role: str) -> None:
    await c.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))


async def test_the_publisher_role_may_publish_and_nothing_more(
    database_url: str, roles: tuple[str, str], tenant: str
) -> None:
    app, other = roles
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        table = f"public.orders_{uuid.uuid4().hex[:8]}"
        await c.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, org text)")
        await c.execute(
            sql.SQL("GRANT INSERT ON {} TO {}").format(sql.SQL(table), sql.Identifier(app))
        )
        await c.execute(
            f"CREATE TRIGGER t AFTER INSERT ON {table} FOR EACH ROW"
            " EXECUTE FUNCTION pgpulse.track_trigger('org', 'orders')"
        )
        try:
            await as_role(c, app)
            cur = await c.execute("SELECT pgpulse.publish(%s, 't', 'x', '{}')", [tenant])
            assert await cur.fetchone() is not None
            await c.execute(f"INSERT INTO {table} VALUES (1, %s)", [tenant])  # tracked write
            await c.execute("SELECT pgpulse.submit_job(%s, 'echo', '{}')", [tenant])
            for forbidden in (
                "SELECT count(*) FROM pgpulse.events",
                "INSERT INTO pgpulse.tenants VALUES ('x', 1)",
                "SELECT pgpulse.disconnect('x')",
                "SELECT pgpulse.finish_job(gen_random_uuid(), 'w', 'null')",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    await c.execute(forbidden)
            await c.execute("RESET ROLE")
            await as_role(c, other)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await c.execute("SELECT pgpulse.publish(%s, 't', 'x', '{}')", [tenant])
        finally:
            await c.execute("RESET ROLE")
            await c.execute(f"DROP TABLE {table}")
        cur = await c.execute(
            "SELECT type FROM pgpulse.events WHERE tenant_id = %s ORDER BY id", [tenant]
        )
        assert [r[0] for r in await cur.fetchall()] == ["x", f"{table.split('.')[1]}.insert"]


async def test_publish_runs_with_a_fixed_search_path(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url) as c:
        cur = await c.execute(
            "SELECT p.proname, p.prosecdef, p.proconfig FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = 'pgpulse' AND p.proname IN ('publish', 'submit_job')"
        )
        for name, definer, config in await cur.fetchall():
            assert definer, name
            assert config == ["search_path=pg_catalog, pg_temp"], name


async def test_a_schema_owned_by_another_role_is_not_adopted(fresh_database: str) -> None:
    squatter = f"squatter_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(fresh_database, autocommit=True) as c:
        await c.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(squatter)))
        await c.execute(
            sql.SQL("CREATE SCHEMA pgpulse AUTHORIZATION {}").format(sql.Identifier(squatter))
        )
        try:
            with pytest.raises(ConfigError, match=f"belongs to role '{squatter}'"):
                await migrate(fresh_database)
            cur = await c.execute("SELECT to_regclass('pgpulse.events')")
            assert await cur.fetchone() == (None,)  # nothing was created in it
        finally:
            await c.execute("DROP SCHEMA pgpulse CASCADE")
            await c.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(squatter)))
