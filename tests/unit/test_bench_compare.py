"""``pgpulse bench --compare`` runs each established system beside pgpulse, and counts it right.

The smallest S1 there is (four tenants, one second of publishes) through the
real command, one comparator at a time, on the tests' PostgreSQL: every
publish must reach every socket of its tenant once. It checks that the
comparator's server starts, that the receivers speak its wire (socket.io's
Engine.IO packets too) and that loss and duplicates are counted for it, not
how fast anything is. A comparator whose tools are missing here is skipped,
saying which.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..support import free_port

RUN_TIMEOUT = 100.0  # seconds for the whole command, a first npm ci included


def _missing(name: str) -> str | None:
    if name == "broadcaster":
        for module in ("broadcaster", "asyncpg"):
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed (pip install 'pgpulse[bench-compare]')"
    if name == "socketio":
        for tool in ("node", "npm"):
            if shutil.which(tool) is None:
                return f"{tool} is not on PATH"
    return None


@pytest.mark.parametrize("name", ["broadcaster", "socketio"])
def test_quick_s1_beside_pgpulse_loses_and_repeats_nothing(
    name: str, admin_url: str, tmp_path: Path
) -> None:
    missing = _missing(name)
    if missing:
        pytest.skip(f"--compare {name}: {missing}")
    out = tmp_path / "results.json"
    command = [
        sys.executable, "-m", "pgpulse", "bench", "--quick", "--compare", name,
        "--scenarios", "s1", "--database-url", admin_url, "--port", str(free_port() - 1),
        "--receivers", "1", "--s1-tenants", "4", "--s1-sockets", "2", "--s1-rate", "40",
        "--s1-seconds", "1", "--drain", "5", "--scenario-timeout", "60", "--json", str(out),
    ]  # fmt: skip
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    results = json.loads(out.read_text())["results"]
    for server in ("pgpulse", name):
        s1 = results[server]["s1"]
        delivery = s1["delivery"]
        assert s1["publish"]["failed"] == 0, (server, s1["publish"])
        assert delivery["expected"] == s1["publish"]["accepted"] * 2 > 0, (server, delivery)
        assert delivery["received"] == delivery["expected"], (server, delivery)
        assert (delivery["lost"], delivery["duplicates"], delivery["unexpected"]) == (0, 0, 0)
    assert f"pgpulse÷{name}" in proc.stdout
