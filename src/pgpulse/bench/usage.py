"""CPU seconds and memory of the processes in a run: server, PostgreSQL, load generator."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import psutil


def tree_cpu(pids: list[int], descendants: bool = True) -> dict[int, float]:
    """CPU seconds so far of ``pids`` (and their descendants), by process.

    The runner is the parent of the server and of an embedded PostgreSQL,
    so the load generator's own figure counts the runner alone.
    """
    out: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            for p in [proc, *(proc.children(recursive=True) if descendants else [])]:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    out[p.pid] = t.user + t.system
    return out


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants."""
    total = 0
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
    return total


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two readings (processes that started in between count whole)."""
    return sum(max(0.0, v - before.get(pid, 0.0)) for pid, v in after.items())


@dataclass
class Meter:
    """Reads CPU of three groups at ``start()`` and ``stop()``."""

    server: Callable[[], dict[int, float]]
    postgres: Callable[[], dict[int, float]]
    loadgen: Callable[[], dict[int, float]]

    def start(self) -> None:
        self._before = (self.server(), self.postgres(), self.loadgen())

    def stop(self) -> dict[str, float]:
        after = (self.server(), self.postgres(), self.loadgen())
        s, p, lg = (cpu_delta(b, a) for b, a in zip(self._before, after, strict=True))
        return {
            "server_cpu_s": round(s, 2),
            "postgres_cpu_s": round(p, 2),
            "loadgen_cpu_s": round(lg, 2),
        }
