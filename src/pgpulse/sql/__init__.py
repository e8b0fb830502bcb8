"""The SQL of pgpulse, kept in ``.sql`` files beside this module.

Named queries live in every ``*.sql`` file of this folder (``queries.sql``
for the event path, one file per further concept), read once at import. They
come from files shipped in the package, never from input, so they are cast to
``LiteralString`` (psycopg's marker for trusted SQL) here, once.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import LiteralString, cast

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def _load_queries() -> dict[str, LiteralString]:
    queries: dict[str, LiteralString] = {}
    files = sorted(resources.files(__package__).iterdir(), key=lambda entry: entry.name)
    for entry in files:
        if not entry.name.endswith(".sql"):
            continue
        parts = _HEADER.split(entry.read_text("utf-8"))
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in queries:
                raise RuntimeError(f"query {name!r} is defined twice (again in {entry.name})")
            queries[name] = cast(LiteralString, body.strip())
    return queries


QUERIES = _load_queries()


def migrations() -> list[tuple[int, str, LiteralString]]:
    """Every migration as (version, name, sql), in version order."""
    found = []
    for entry in resources.files(__package__).joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            text: LiteralString = entry.read_text("utf-8")
            found.append((version, entry.name, text))
    return sorted(found)
