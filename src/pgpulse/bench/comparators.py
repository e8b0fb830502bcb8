"""What ``pgpulse bench --compare`` can run beside pgpulse, and getting each ready to run.

* ``baseline``: the naive LISTEN/NOTIFY app of most tutorials (``benchmarks/baseline``);
  it needs only pgpulse's own dependencies.
* ``broadcaster``: encode/broadcaster on PostgreSQL (``benchmarks/broadcaster``); it needs
  broadcaster and asyncpg in this Python, which the ``bench-compare`` extra installs.
* ``socketio``: socket.io with ``@socket.io/postgres-adapter`` (``benchmarks/socketio``); it
  needs node and npm, and installs its packages itself, once, from that folder's
  ``package-lock.json`` into a cache folder (``npm ci``), never into the source tree.

Everything here runs when a run asks for a comparator, before any server starts,
so that a missing tool is one line of error at once rather than a failed scenario.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .servers import BaselineTarget, BroadcasterTarget, SocketioTarget, Target

COMPARATORS = ("baseline", "broadcaster", "socketio")
ENTRY = {"baseline": "app.py", "broadcaster": "app.py", "socketio": "server.js"}
NPM_TIMEOUT = 600.0  # seconds for one npm ci
PYTHON_NEEDS = {"broadcaster": ("broadcaster", "asyncpg")}


class Unavailable(Exception):
    """A comparator cannot run here; the message says why in one line."""


@dataclass(frozen=True)
class Comparator:
    name: str
    folder: Path
    node_path: Path | None = None
    """The ``node_modules`` the Node server resolves its packages from."""

    def target(self, database_url: str, dbname: str, workdir: Path) -> Target:
        if self.name == "baseline":
            return BaselineTarget(database_url, dbname, workdir, self.folder)
        if self.name == "broadcaster":
            return BroadcasterTarget(database_url, dbname, workdir, self.folder)
        assert self.node_path is not None
        return SocketioTarget(database_url, dbname, workdir, self.folder, self.node_path)


def parse(names: str) -> list[str]:
    """``baseline,socketio`` → the names in run order; :class:`Unavailable` for an unknown one."""
    wanted = [n.strip().lower() for n in names.split(",") if n.strip()]
    for name in wanted:
        if name not in COMPARATORS:
            raise Unavailable(f"unknown comparator {name!r}; known: {', '.join(COMPARATORS)}")
    return [n for n in COMPARATORS if n in wanted]


def find(name: str, explicit: Path | None = None) -> Path | None:
    """``benchmarks/<name>`` beside the working directory or this source checkout."""
    candidates = [explicit] if explicit else []
    candidates += [Path.cwd() / "benchmarks" / name]
    candidates += [p / "benchmarks" / name for p in Path(__file__).resolve().parents]
    for path in candidates:
        if path is not None and (path / ENTRY[name]).is_file():
            return path
    return None


def prepare(name: str, explicit: Path | None = None, cache: Path | None = None) -> Comparator:
    """Find ``name``'s folder and check (or install) what it needs to run."""
    folder = find(name, explicit)
    if folder is None:
        raise Unavailable(
            f"cannot find benchmarks/{name}/{ENTRY[name]}; run from the repository"
            + (" or give --baseline-dir" if name == "baseline" else "")
        )
    missing = [m for m in PYTHON_NEEDS.get(name, ()) if importlib.util.find_spec(m) is None]
    if missing:
        raise Unavailable(
            f"--compare {name} needs {' and '.join(missing)} in this Python: "
            "pip install 'pgpulse[bench-compare]'"
        )
    if name != "socketio":
        return Comparator(name, folder)
    return Comparator(name, folder, node_modules(folder, cache or cache_dir()))


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pgpulse" / "bench"


def node_modules(folder: Path, cache: Path) -> Path:
    """``npm ci`` of ``folder``'s lock file into ``cache``, once per lock file; its node_modules.

    The install goes to a folder named after the lock file's hash, and counts as
    done only once npm has finished there, so an interrupted install is redone
    and a changed lock file gets a folder of its own.
    """
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise Unavailable(f"--compare socketio needs {tool} (Node.js 18 or later) on PATH")
    lock = folder / "package-lock.json"
    if not lock.is_file():
        raise Unavailable(f"{lock} is missing")
    digest = hashlib.sha256(lock.read_bytes() + (folder / "package.json").read_bytes())
    home = cache / f"socketio-{digest.hexdigest()[:16]}"
    done = home / ".installed"
    if done.is_file():
        return home / "node_modules"
    print(f"socketio: installing its Node packages into {home} (once) …", file=sys.stderr)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    shutil.copy(folder / "package.json", home)
    shutil.copy(lock, home)
    log = home / "npm-ci.log"
    with log.open("wb") as out:
        try:
            result = subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund", "--omit=dev"],
                cwd=home,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=NPM_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise Unavailable(f"npm ci took over {NPM_TIMEOUT:.0f} s; see {log}") from None
    if result.returncode != 0:
        raise Unavailable(f"npm ci failed with {result.returncode}; see {log}")
    done.write_text("ok\n")
    return home / "node_modules"
