"""The running context: migrations auto, check or off; one context per Pgpulse."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from pgpulse.errors import ConfigError, PgpulseError
from pgpulse.fastapi import Pgpulse
from pgpulse.runtime import running

from ..support import settings_for


async def schema_exists(url: str) -> bool:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT to_regclass('pgpulse.events') IS NOT NULL")
        row = await cur.fetchone()
        return bool(row and row[0])


async def test_check_refuses_an_unmigrated_schema_and_auto_migrates(
    fresh_database: str, tmp_path: Path
) -> None:
    settings = settings_for(fresh_database, tmp_path)
    with pytest.raises(ConfigError, match="run `pgpulse migrate`"):
        async with running(settings, "check"):
            pass
    assert not await schema_exists(fresh_database)
    async with running(settings, "off") as runtime:  # trusted as it is: nothing applied
        assert runtime.database_url == fresh_database
    assert not await schema_exists(fresh_database)
    async with running(settings, "auto"):
        pass
    assert await schema_exists(fresh_database)
    async with running(settings, "check") as runtime:
        assert runtime.listener is not None


async def test_one_context_at_a_time(database_url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="migrate must be one of auto, check, off"):
        Pgpulse(database_url, migrate="sometimes")  # type: ignore[arg-type]
    # An SQLAlchemy URL names its driver; pgpulse connects with libpq to the same database.
    url = database_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    pulse = Pgpulse(url, settings=settings_for(database_url, tmp_path))
    async with pulse:
        assert pulse.running and pulse.runtime.database_url == database_url
        with pytest.raises(PgpulseError, match="running already"):
            async with pulse:
                pass
    assert not pulse.running
    async with pulse:  # and again, after the first one ended
        assert pulse.running
