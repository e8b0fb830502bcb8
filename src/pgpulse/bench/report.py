"""The readable table, and the targets of docs/performance.md, from a run's JSON results."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Result = dict[str, Any]


def _get(result: Result | None, *path: str | int) -> Any:
    value: Any = result
    for key in path:
        if value is None:
            return None
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            return None
    return value


@dataclass(frozen=True)
class Row:
    scenario: str
    label: str
    path: tuple[str | int, ...]
    target: str = ""
    check: Callable[[Any, Any], bool | None] | None = None
    """(pgpulse value, baseline value) → met, or None when it cannot be judged."""
    versus: str | None = None
    """Judge against pgpulse's own result in this scenario instead of the baseline's."""


def _ratio_at_most(limit: float) -> Callable[[Any, Any], bool | None]:
    def check(ours: Any, theirs: Any) -> bool | None:
        if ours is None or not theirs:
            return None
        return bool(ours / theirs <= limit)

    return check


def _zero(ours: Any, _theirs: Any) -> bool | None:
    return None if ours is None else ours == 0


def _s2(ours: Any, theirs: Any) -> bool | None:
    if ours is None:
        return None
    if ours < 100:
        return False
    if not theirs:
        return None if theirs is None else True
    return bool(ours / theirs >= 20)


def _ratio_at_least(limit: float) -> Callable[[Any, Any], bool | None]:
    def check(ours: Any, theirs: Any) -> bool | None:
        if ours is None or not theirs:
            return None
        return bool(ours / theirs >= limit)

    return check


def _s3(ours: Any, theirs: Any) -> bool | None:
    if ours is None or not theirs:
        return None
    return bool(ours / theirs >= 5)


def _steps_below_target(result: Result, held: Any) -> bool:
    steps = _get(result, "sizes", "steps") or []
    return bool(steps) and held == max(steps) and max(steps) < 100


def _within_1s(ours: Any, _theirs: Any) -> bool | None:
    return None if ours is None else ours <= 1.0


ROWS = [
    Row("s1", "p50 latency ms", ("delivery", "latency", "p50_ms")),
    Row("s1", "p90 latency ms", ("delivery", "latency", "p90_ms")),
    Row(
        "s1",
        "p99 latency ms",
        ("delivery", "latency", "p99_ms"),
        "≤ 1/50 of baseline",
        _ratio_at_most(1 / 50),
    ),
    Row("s1", "max latency ms", ("delivery", "latency", "max_ms")),
    Row("s1", "publishes/s", ("publish", "per_second")),
    Row("s1", "deliveries", ("delivery", "received")),
    Row("s1", "lost", ("delivery", "lost"), "0", _zero),
    Row("s1", "duplicates", ("delivery", "duplicates")),
    Row("s1", "ids out of order", ("delivery", "out_of_order"), "0", _zero),
    Row("s1", "server CPU s", ("usage", "server_cpu_s")),
    Row("s1", "PostgreSQL CPU s", ("usage", "postgres_cpu_s")),
    Row("s1", "load generator CPU s", ("usage", "loadgen_cpu_s")),
    Row("s1", "server RSS MB", ("usage", "server_rss_mb")),
    Row("s1n", "p50 latency ms", ("delivery", "latency", "p50_ms")),
    Row(
        "s1n",
        "p99 latency ms",
        ("delivery", "latency", "p99_ms"),
        "≤ 1.2x S1 (POST /api/events)",
        _ratio_at_most(1.2),
        versus="s1",
    ),
    Row("s1n", "publishes/s", ("publish", "per_second")),
    Row("s1n", "lost", ("delivery", "lost"), "0", _zero),
    Row("s1n", "ids out of order", ("delivery", "out_of_order"), "0", _zero),
    Row("s2", "highest step held /s", ("highest_step_held",), "≥ 100 and ≥ 20x baseline", _s2),
    Row("s3", "accepted publishes/s", ("publish", "per_second"), "≥ 5x baseline", _s3),
    Row("s3", "deliveries/s", ("deliveries_per_s",)),
    Row("s3", "server + PostgreSQL CPU µs per publish", ("cpu_us_per_publish",)),
    Row("s3", "lost after drain", ("delivery", "lost"), "0", _zero),
    Row("s3", "server CPU s", ("usage", "server_cpu_s")),
    Row("s3", "PostgreSQL CPU s", ("usage", "postgres_cpu_s")),
    Row(
        "s3n",
        "accepted publishes/s",
        ("publish", "per_second"),
        "≥ 0.8x S3 (POST /api/events)",
        _ratio_at_least(0.8),
        versus="s3",
    ),
    Row("s3n", "server + PostgreSQL CPU µs per publish", ("cpu_us_per_publish",)),
    Row("s3n", "lost after drain", ("delivery", "lost"), "0", _zero),
    Row("s3n", "server CPU s", ("usage", "server_cpu_s")),
    Row("s4", "lost", ("delivery", "lost"), "0", _zero),
    Row("s4", "duplicates", ("delivery", "duplicates"), "0", _zero),
    Row("s4", "recovery s", ("recovery_s",), "≤ 1 s", _within_1s),
    Row("s4", "client reconnects", ("delivery", "reconnects")),
    Row("s5", "sockets opened", ("opened",)),
    Row("s5", "time to open s", ("open_s",)),
    Row("s5", "RSS per socket KiB", ("rss_per_conn_kib",), "≤ 0.5x baseline", _ratio_at_most(0.5)),
    Row("s5", "server RSS MB", ("rss_after_mb",)),
    Row("s5", "lost (liveness check)", ("check_delivery", "lost")),
    Row("s6", "p50 latency ms (other sockets)", ("delivery", "latency", "p50_ms")),
    Row("s6", "p99 latency ms (other sockets)", ("delivery", "latency", "p99_ms")),
    Row("s6", "max latency ms (other sockets)", ("delivery", "latency", "max_ms")),
    Row("s6", "deliveries (other sockets)", ("delivery", "received")),
    Row("s6", "lost after drain (other sockets)", ("delivery", "lost")),
    Row("s6", "last delivered event published at s", ("delivered_until_s",)),
    Row("s6", "other sockets", ("other_sockets",)),
    Row("s6", "other sockets that got any frame", ("delivery", "sockets_with_frames")),
    Row("s6", "stalled socket closed by server", ("stalled", "closed")),
    Row(
        "s7",
        "app transactions/s",
        ("transactions_per_s",),
        "≥ 0.8x baseline",
        _ratio_at_least(0.8),
    ),
    Row("s7", "events delivered", ("delivery", "received")),
    Row("s7", "lost", ("delivery", "lost"), "0", _zero),
    Row("s7", "duplicates", ("delivery", "duplicates"), "0", _zero),
    Row("s7", "deadlocks", ("deadlocks",), "0", _zero),
    Row("s7", "p50 commit → frame ms", ("delivery", "latency", "p50_ms")),
    Row("s7", "p99 commit → frame ms", ("delivery", "latency", "p99_ms")),
    Row("s7", "p99 publish call ms", ("publish_call", "p99_ms")),
    Row("s7", "lock-wait samples", ("locks", "samples_with_waits")),
    Row("s7", "lock samples", ("locks", "samples")),
]


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _ratio(ours: Any, theirs: Any) -> str:
    r = _ratio_value(ours, theirs)
    return "—" if r is None else f"{r:.3g}x"


def _ratio_value(ours: Any, theirs: Any) -> float | None:
    if not isinstance(ours, int | float) or not isinstance(theirs, int | float) or not theirs:
        return None
    return float(ours / theirs)


SKIPPED = "n/a"


def _value(result: Result | None, path: tuple[str | int, ...]) -> Any:
    """A figure of one run, or ``n/a`` for a scenario the server could not run."""
    if result is not None and "skipped" in result:
        return SKIPPED
    return _get(result, *path)


def comparison(results: dict[str, dict[str, Result]]) -> list[dict[str, Any]]:
    """One entry per row: pgpulse's value, each comparator's and pgpulse ÷ it, target and met.

    Targets are judged against the baseline (``ratio`` is pgpulse ÷ baseline, as
    before); every comparator's value and ratio is under its name and in ``ratios``.
    """
    ours = results.get("pgpulse", {})
    peers = [name for name in results if name != "pgpulse"]
    rows = []
    for row in ROWS:
        if row.scenario not in ours:
            continue
        a = _get(ours[row.scenario], *row.path)
        values = {name: _value(results[name].get(row.scenario), row.path) for name in peers}
        b = values.get("baseline")
        b = None if b == SKIPPED else b
        judge = _get(ours.get(row.versus), *row.path) if row.versus else b
        met = row.check(a, judge) if row.check else None
        if row.scenario == "s2" and met is False and _steps_below_target(ours["s2"], a):
            met = None  # every step was held, but the steps stop short (--quick)
        ratios = {name: _ratio_value(a, v) for name, v in values.items()}
        rows.append({
            "scenario": row.scenario, "metric": row.label, "pgpulse": a, **values,
            "baseline": b, "ratio": _rounded(ratios.get("baseline")),
            "ratios": {name: _rounded(r) for name, r in ratios.items()},
            "target": row.target, "met": met,
        })  # fmt: skip
    return rows


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def table(rows: list[dict[str, Any]], peers: Sequence[str] = ()) -> str:
    """The rows as text: pgpulse, then each comparator and pgpulse ÷ it, then the target."""
    head = ["scenario", "metric", "pgpulse"]
    for name in peers:
        head += [name, f"pgpulse÷{name}"]
    head += ["target", "met"]
    lines = [head]
    for r in rows:
        line = [r["scenario"].upper(), r["metric"], _fmt(r["pgpulse"])]
        for name in peers:
            line += [_fmt(r.get(name)), _ratio(r["pgpulse"], r.get(name))]
        met = {True: "yes", False: "NO", None: ""}[r["met"]] if r["target"] else ""
        if r["target"] and r["met"] is None:
            met = "n/a"
        line += [r["target"], met]
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for n, line in enumerate(lines):
        cells = [c.ljust(w) if i < 2 or i >= len(head) - 2 else c.rjust(w)
                 for i, (c, w) in enumerate(zip(line, widths, strict=True))]  # fmt: skip
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def skipped(results: dict[str, dict[str, Result]]) -> str:
    """One line per scenario a server did not run: ``n/a`` in the table, and why."""
    lines = []
    for name, runs in results.items():
        for scenario, result in runs.items():
            if "skipped" in result:
                lines.append(f"n/a: {name} {scenario.upper()}: {result['skipped']}")
    return "\n".join(lines)
