"""Reading a tenant's retained events: where a stream stands, replay after a point,
and pages of history for ``GET /api/events``.

Ids are gap-free per tenant (see ``sql/migrations/0001_events.sql``), so a
resume point ``N`` is still whole exactly when the first retained id after it
is ``N + 1``, or when nothing after it was ever published. Anything else means
events after ``N`` were pruned: the client gets a reset.

Two bounds keep resuming clients from hurting anyone else. A replay page
holds at most :data:`REPLAY_PAGE` events and about :data:`REPLAY_PAGE_BYTES`
of data: the first page is small (:data:`REPLAY_FIRST_PAGE` events) and
each next one is sized from the rows of the last, so a replay of big events
reads a few at a time, and one of small events reads hundreds per query.
And history reads take at most ``max_connections`` of the pool at once,
leaving the rest to publishing: a thousand clients resuming from 0 queue
here, not in the pool in front of every publish.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, LiteralString

import psycopg
from psycopg_pool import PoolTimeout

from .errors import DatabaseUnavailable
from .events import Event
from .sql import QUERIES

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool


REPLAY_PAGE = 500  # events per query while replaying, at most
REPLAY_PAGE_BYTES = 4 * 1024 * 1024  # data per page, about (pages are sized from the last one)
REPLAY_FIRST_PAGE = 10  # events of the first page, before their size is known
RESERVED_SHARE = 0.25  # of the pool that history reads leave to publishing (at least one)


def history_connections(pool_size: int) -> int:
    """How many pooled connections history reads may hold at once."""
    return max(1, pool_size - max(1, int(pool_size * RESERVED_SHARE)))


@dataclass(frozen=True, slots=True)
class Start:
    """Where a new connection starts: after ``position``, or with a reset first."""

    head: int
    position: int
    reset: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """A page of history, in id order, and the tenant's head when it was read.

    ``head`` bounds the page: no event after it is in it, so a client that
    shows the page and then connects with ``last_event_id=head`` gets exactly
    what follows, with no gap and no duplicate. ``more`` says whether the
    next page in the same direction has events.
    """

    events: list[Event]
    head: int
    more: bool


@contextlib.contextmanager
def _database_errors() -> Iterator[None]:
    """Driver errors become :class:`DatabaseUnavailable`, which transports answer with 1013."""
    try:
        yield
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise DatabaseUnavailable(f"database unavailable: {exc}") from None


class History:
    def __init__(self, pool: AsyncConnectionPool, max_connections: int | None = None) -> None:
        self._pool = pool
        limit = (
            max_connections if max_connections is not None else history_connections(pool.max_size)
        )
        self._slots = asyncio.Semaphore(limit)

    async def start(self, tenant_id: str, resume_from: int | None) -> Start:
        """Decide where a connection starts; ``resume_from=None`` means "from now"."""
        after = 0 if resume_from is None else resume_from
        with _database_errors():
            async with self._slots, self._pool.connection() as conn:
                cur = await conn.execute(
                    QUERIES["position"], {"tenant_id": tenant_id, "after": after}
                )
                row = await cur.fetchone()
        assert row is not None
        head, first_after = int(row[0]), row[1]
        if resume_from is None:
            return Start(head, head)
        if resume_from > head:
            # A position this database never handed out (it was reset or replaced).
            return Start(head, head, reset="unknown_position")
        if resume_from < head and (first_after is None or first_after > resume_from + 1):
            return Start(head, head, reset="history_expired")
        return Start(head, resume_from)

    async def head(self, tenant_id: str) -> int:
        """The tenant's newest id now: the position a client can resume from."""
        start = await self.start(tenant_id, None)
        return start.head

    async def page(
        self,
        tenant_id: str,
        topics: frozenset[str] | None,
        user_id: str | None,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> Page:
        """Up to ``limit`` retained events this reader may see, below ``before``.

        With ``after``, the oldest ones above it (paging forward); without,
        the newest ones (paging back). The head is read first and bounds
        the page: ids are handed out in commit order, so every event at or
        below a head that was read is already committed and visible.
        """
        head = await self.head(tenant_id)
        until = head if before is None else min(head, before - 1)
        forward = after is not None
        start = after or 0
        rows: list[tuple[Any, ...]] = []
        if not forward or start < until:
            query = QUERIES["replay"] if forward else QUERIES["history_before"]
            # One more row than asked says whether there is a next page.
            rows = await self._rows(query, tenant_id, start, until, topics, user_id, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        if not forward:
            rows.reverse()
        return Page([Event.from_row(row) for row in rows], head, more)

    async def replay(
        self,
        tenant_id: str,
        after: int,
        until: int,
        topics: frozenset[str] | None,
        user_id: str | None,
    ) -> AsyncIterator[Event]:
        """The retained events in ``(after, until]`` this connection may see, in id order."""
        limit = REPLAY_FIRST_PAGE
        while after < until:
            rows = await self._rows(
                QUERIES["replay"], tenant_id, after, until, topics, user_id, limit
            )
            for row in rows:
                yield Event.from_row(row)
            if len(rows) < limit:  # the last page
                return
            after = int(rows[-1][1])
            # The next page holds about REPLAY_PAGE_BYTES of rows the size of these.
            average = max(1, sum(len(row[5]) for row in rows) // len(rows))
            limit = max(1, min(REPLAY_PAGE, REPLAY_PAGE_BYTES // average))

    async def _rows(
        self,
        query: LiteralString,
        tenant_id: str,
        after: int,
        until: int,
        topics: frozenset[str] | None,
        user_id: str | None,
        limit: int,
    ) -> list[tuple[Any, ...]]:
        """At most ``limit`` rows of ``query`` in ``(after, until]`` that this reader may see,
        in one of the history slots (so that resuming clients cannot take the whole pool)."""
        params = {
            "tenant_id": tenant_id,
            "after": after,
            "until": until,
            "topics": sorted(topics) if topics is not None else None,
            "user_id": user_id,
            "limit": limit,
        }
        with _database_errors():
            async with self._slots, self._pool.connection() as conn:
                cur = await conn.execute(query, params)
                return await cur.fetchall()
