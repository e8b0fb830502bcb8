"""The PostgreSQL under the servers under test: the embedded one, or one given by URL.

Each target gets a database of its own, created fresh for the run and dropped
after it, so a run on a shared PostgreSQL touches nothing else. PostgreSQL's
CPU time is the whole embedded cluster's (the postmaster, its live children
and the children it has reaped); on a shared server it is the backends of
the bench's own databases that were alive at both ends of a measurement.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import psutil
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from ..db import EmbeddedPostgres

log = logging.getLogger("pgpulse.bench")


class Cluster:
    def __init__(self, url: str | None, workdir: Path) -> None:
        self._embedded: EmbeddedPostgres | None = None
        if url is None:
            self._embedded = EmbeddedPostgres(workdir / "postgres")
            url = self._embedded.start()
        self.url = url
        self._postmaster: psutil.Process | None = None
        if self._embedded is not None:
            pid = int((workdir / "postgres" / "postmaster.pid").read_text().split()[0])
            self._postmaster = psutil.Process(pid)
        self.databases: list[str] = []

    @property
    def embedded(self) -> bool:
        return self._embedded is not None

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=10)

    def create_database(self, name: str) -> str:
        """A fresh, empty database called ``name``; returns its connection string."""
        with self._admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.databases.append(name)
        return make_conninfo(self.url, dbname=name)

    def drop_database(self, name: str) -> None:
        with contextlib.suppress(psycopg.Error), self._admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        if name in self.databases:
            self.databases.remove(name)

    def terminate(self, dbname: str, application_name: str) -> int:
        """``pg_terminate_backend`` every connection of ``dbname`` named ``application_name``."""
        with self._admin() as conn:
            cur = conn.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND application_name = %s",
                (dbname, application_name),
            )
            row = cur.fetchone()
        return int(str(row[0])) if row else 0

    def cpu_seconds(self) -> dict[int, float]:
        """CPU seconds so far, by process; compare two of these with :func:`cpu_delta`."""
        if self._postmaster is not None:
            out: dict[int, float] = {}
            with contextlib.suppress(psutil.Error):
                t = self._postmaster.cpu_times()
                out[self._postmaster.pid] = t.user + t.system + t.children_user + t.children_system
                for child in self._postmaster.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        c = child.cpu_times()
                        out[child.pid] = c.user + c.system
            return out
        with self._admin() as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = ANY(%s)", (self.databases,)
            ).fetchall()
        result: dict[int, float] = {}
        for row in rows:
            pid = int(str(row[0]))
            with contextlib.suppress(psutil.Error):
                c = psutil.Process(pid).cpu_times()
                result[pid] = c.user + c.system
        return result

    def stop(self) -> None:
        for name in list(self.databases):
            self.drop_database(name)
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None
