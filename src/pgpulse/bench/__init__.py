"""``pgpulse bench``: the load generator (see ``docs/performance.md``)."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    print("pgpulse bench: not built yet")
    return 1
