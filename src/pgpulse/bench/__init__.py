"""``pgpulse bench``: the load generator (see ``docs/performance.md``).

It starts the server under test on 127.0.0.1 (against an embedded PostgreSQL,
or ``--database-url``), opens WebSocket receivers in separate processes,
publishes over HTTP, and reports deliveries, loss, duplicates, ids out of
order, latency percentiles, publishes/s, CPU seconds and server RSS, as a
table and as JSON. ``--compare baseline,broadcaster,socketio`` runs, with the
same sizes, the naive app in ``benchmarks/baseline``, encode/broadcaster and
socket.io on PostgreSQL (``benchmarks/broadcaster``, ``benchmarks/socketio``),
and prints pgpulse's ratio to each.
"""

from __future__ import annotations

from .runner import main

__all__ = ["main"]
