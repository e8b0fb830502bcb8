"""``pgpulse bench``: the load generator (see ``docs/performance.md``).

It starts the server under test on 127.0.0.1 (against an embedded PostgreSQL,
or ``--database-url``), opens WebSocket receivers in separate processes,
publishes over HTTP, and reports deliveries, loss, duplicates, ids out of
order, latency percentiles, publishes/s, CPU seconds and server RSS, as a
table and as JSON. ``--compare baseline`` runs the naive app in
``benchmarks/baseline`` with the same sizes and prints ratios.
"""

from __future__ import annotations

from .runner import main

__all__ = ["main"]
