"""The command line as a new user meets it: zero-config serve, token, publish, migrate."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest
import websockets

import pgpulse as pgpulse_api

from ..jobs_support import job_row, until_status, worker_process
from ..support import (
    TIMEOUT,
    ServerHandle,
    ServerProcess,
    closed_with,
    free_port,
    mint,
    recv,
    until_ready,
)


def pgpulse(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgpulse", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def clean_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGPULSE_")}
    env.pop("DATABASE_URL", None)
    env["PGPULSE_DATA_DIR"] = str(data_dir)
    return env


def postmaster_running(pgdata: Path) -> bool:
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().splitlines()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A folder others may list, as the embedded PostgreSQL wants its parents when run as
    root (pytest's own temporary folders are private: it would refuse them)."""
    path = Path(tempfile.mkdtemp(prefix="pgpulse-cli-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def test_zero_config_serve_token_publish(open_tmp: Path) -> None:
    data_dir = open_tmp / "data"
    env = clean_env(data_dir)
    port = free_port()
    server = ServerProcess([], env, port)
    try:
        await asyncio.to_thread(server.wait_ready, 60)
        secret = data_dir / "secrets" / "jwt_secret"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert stat.S_IMODE(secret.parent.stat().st_mode) == 0o700
        token = pgpulse("token", "--tenant", "acme", env=env)
        assert token.returncode == 0, token.stderr
        # The generated secret is the server's own: it hands over a console link, once.
        links = re.findall(r"(http://127\.0\.0\.1:\d+/console)#token=(\S+)", server.output())
        assert len(links) == 1, server.output()
        [(console, admin)] = links
        assert console == f"http://127.0.0.1:{port}/console"
        minted = pgpulse("token", "--scope", "admin", env=env)
        assert minted.returncode == 0, minted.stderr
        async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
            for admin_token in (admin, minted.stdout.strip()):
                overview = await http.get(
                    "/api/admin/overview", headers={"Authorization": f"Bearer {admin_token}"}
                )
                assert overview.status_code == 200, overview.text
        url = f"ws://127.0.0.1:{port}/ws?token={token.stdout.strip()}"
        async with websockets.connect(url, open_timeout=TIMEOUT) as ws:
            await until_ready(ws)
            published = await asyncio.to_thread(
                pgpulse, "publish", "acme", "greeting", '{"hello": "cli"}', env=env
            )
            assert published.returncode == 0, published.stderr
            key = orjson.loads(published.stdout)["key"]
            frame = await recv(ws)
            assert frame["key"] == key and frame["id"] == 1 and frame["data"] == {"hello": "cli"}
            # psql's way in: the socket in the data directory.
            sql_url = f"postgresql://postgres@/postgres?host={data_dir / 'postgres'}"
            async with await psycopg.AsyncConnection.connect(sql_url, autocommit=True) as c:
                await c.execute("SELECT pgpulse.publish('acme', 'n', 'from_sql', '{}')")
            assert (await recv(ws))["type"] == "from_sql"
        # The embedded database is found as publish finds it: a user's socket is closed.
        ann = pgpulse("token", "--tenant", "acme", "--user", "ann", env=env).stdout.strip()
        url = f"ws://127.0.0.1:{port}/ws?token={ann}"
        async with websockets.connect(url, open_timeout=TIMEOUT) as ws:
            await until_ready(ws)
            sent = await asyncio.to_thread(
                pgpulse, "disconnect", "--tenant", "acme", "--user", "ann", env=env
            )
            assert sent.returncode == 0, sent.stderr
            code, reason, _ = await closed_with(ws)
            assert (code, reason) == (1008, "disconnected by the operator")
    finally:
        code = await asyncio.to_thread(server.stop)
    assert code == 0, server.output()
    # The access log names the WebSocket path; the token in it is redacted.
    assert "/ws?token=***" in server.output()
    assert token.stdout.strip() not in server.output()
    assert server.output().count(admin) == 1  # printed once, never logged
    # The server that started the embedded PostgreSQL stopped it.
    assert not postmaster_running(data_dir / "postgres"), server.output()


def test_migrate_token_and_bad_arguments(database_url: str, tmp_path: Path) -> None:
    env = {**clean_env(tmp_path), "PGPULSE_DATABASE_URL": database_url}
    migrated = pgpulse("migrate", env=env)
    assert migrated.returncode == 0 and "version" in migrated.stdout
    for args in (
        ["token", "--tenant", "a", "--ttl", "soon"],
        ["token"],
        ["token", "--scope", "publish"],
        ["publish", "acme", "t", "not json"],
        ["tail"],
    ):
        result = pgpulse(*args, env=env)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr and result.stderr.strip(), args


async def test_disconnect_closes_a_users_sockets_only(
    server: ServerHandle, database_url: str, tenant: str, tmp_path: Path
) -> None:
    env = {**clean_env(tmp_path), "PGPULSE_DATABASE_URL": database_url}
    async with (
        server.connect(mint(tenant, "ann")) as ann,
        server.connect(mint(tenant, "bob")) as bob,
    ):
        await until_ready(ann)
        await until_ready(bob)
        sent = await asyncio.to_thread(
            pgpulse, "disconnect", "--tenant", tenant, "--user", "ann", env=env
        )
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout == f"disconnect sent to user ann of tenant {tenant}\n"
        code, reason, _ = await closed_with(ann)
        assert (code, reason) == (1008, "disconnected by the operator")
        await bob.send('{"op": "ping"}')  # another user of the tenant stays connected
        assert await recv(bob) == {"op": "pong"}
        sent = await asyncio.to_thread(pgpulse, "disconnect", "--tenant", tenant, env=env)
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout == f"disconnect sent to all of tenant {tenant}\n"
        code, reason, _ = await closed_with(bob)
        assert (code, reason) == (1008, "disconnected by the operator")


def test_disconnect_refuses_bad_input_in_one_line(
    database_url: str, fresh_database: str, tmp_path: Path
) -> None:
    env = {**clean_env(tmp_path), "PGPULSE_DATABASE_URL": database_url}
    for args, message in [
        (["--tenant", ""], "--tenant must be 1 to 200 characters"),
        (["--tenant", "x" * 201], "--tenant must be 1 to 200 characters"),
        (["--tenant", "acme", "--user", ""], "--user must be 1 to 200 characters"),
        (["--tenant", "acme", "--user", "a" * 201], "--user must be 1 to 200 characters"),
    ]:
        result = pgpulse("disconnect", *args, env=env)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr
        assert result.stdout == "", args
    missing = pgpulse("disconnect", "--user", "ann", env=env)
    assert missing.returncode == 2 and "--tenant" in missing.stderr, missing.stderr
    assert "Traceback" not in missing.stderr
    # A database without pgpulse's schema, or none at all: one line, exit 1.
    for url, message in [
        (fresh_database, "not installed in this database: run `pgpulse migrate` first"),
        ("postgresql://postgres@127.0.0.1:1/none", "cannot connect to PostgreSQL"),
    ]:
        result = pgpulse("disconnect", "--tenant", "acme", env={**env, "PGPULSE_DATABASE_URL": url})
        assert result.returncode == 1, (url, result.stderr)
        assert message in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr
    # Every command that works on the database says it the same way.
    result = pgpulse(
        "publish", "acme", "x", "{}", env={**env, "PGPULSE_DATABASE_URL": fresh_database}
    )
    assert result.returncode == 1 and "not installed in this database" in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr


async def test_worker_runs_the_builtin_kinds_and_stops_on_sigterm(
    database_url: str, tenant: str
) -> None:
    worker = worker_process([], {"PGPULSE_DATABASE_URL": database_url})
    try:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
            echo = await pgpulse_api.submit_job(c, tenant_id=tenant, kind="echo", input=[1, "a"])
            nap = await pgpulse_api.submit_job(
                c, tenant_id=tenant, kind="sleep", input={"seconds": 0.2, "steps": 2}
            )
            said = await pgpulse_api.submit_job(
                c, tenant_id=tenant, kind="stream", input={"text": "a b  c", "delay": 0}
            )
        await until_status(database_url, echo, "succeeded", timeout=30)
        await until_status(database_url, nap, "succeeded", timeout=30)
        await until_status(database_url, said, "succeeded", timeout=30)
        assert (await job_row(database_url, echo))["result"] == [1, "a"]
        assert (await job_row(database_url, nap))["result"] == {"slept": 0.2, "steps": 2}
        assert (await job_row(database_url, said))["result"] == {"text": "a b  c"}
        assert await asyncio.to_thread(worker.stop, signal.SIGTERM) == 0, worker.output()
        assert "kinds echo, sleep, stream" in worker.output()
    finally:
        worker.stop(signal.SIGKILL)


def test_worker_refuses_a_bad_app_in_one_line(database_url: str) -> None:
    env = {"PGPULSE_DATABASE_URL": database_url}
    for app, message in [
        ("nocolon", "--app must look like module:attribute"),
        ("no_such_module_x:w", "cannot import no_such_module_x"),
        ("pgpulse:no_such", "pgpulse has no attribute 'no_such'"),
        ("pgpulse:__version__", "--app pgpulse:__version__: "),
    ]:
        result = pgpulse("worker", "--app", app, env=env)
        assert result.returncode == 2, (app, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the wheel opens folders only when run as root")
def test_embedded_as_root_refuses_unsafe_data_directories(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    too_long = Path("/tmp") / ("d" * 100)
    for data_dir, expected in ((private / "data", "would open"), (too_long, "too long")):
        proc = pgpulse("serve", "--port", "0", env=clean_env(data_dir))
        assert proc.returncode != 0, proc.stderr
        assert expected in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert stat.S_IMODE(private.stat().st_mode) == 0o700  # left as it was
    assert not too_long.exists()


def test_dev_mode_refuses_a_public_address_and_names_itself(
    database_url: str, tmp_path: Path
) -> None:
    env = {**clean_env(tmp_path), "PGPULSE_DATABASE_URL": database_url}
    proc = pgpulse("serve", "--insecure-dev", "--host", "0.0.0.0", env=env)
    assert proc.returncode == 2 and "loopback" in proc.stderr, proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    server = ServerProcess(["--insecure-dev"], env, free_port())
    try:
        server.wait_ready()
        assert "INSECURE DEV MODE" in server.output()
    finally:
        server.stop()
        server.close()
