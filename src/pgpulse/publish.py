"""Publishing: an event exists if and only if its transaction commits.

Two ways in:

* :func:`publish` joins the caller's transaction (psycopg ``AsyncConnection``
  or SQLAlchemy ``AsyncSession``/``AsyncConnection``) by calling the SQL
  function ``pgpulse.publish``; the event is delivered when, and only when,
  the caller commits.
* :class:`BatchPublisher` is the server's own path for HTTP publishes that
  have no caller transaction (``POST /api/events`` and the seed's
  ``POST /api/notifications``). Requests that arrive while a batch is being
  written are grouped into the next one: one transaction, one counter update
  and one NOTIFY per tenant. NOTIFY takes a cluster-wide lock at commit, so
  fewer, larger commits are what lets publishing scale. Everything the
  database would refuse is checked before an item joins a batch; if a batch
  fails anyway, its items are written one by one, so that only the guilty
  ones fail.

``publish`` returns the event's *key*; the event's *id* (its position in the
tenant's stream) is taken when the transaction commits, which is what lets
publishers of one tenant never wait for each other's open transactions (see
``sql/migrations/0004_commit_order.sql``). The batch path is a transaction of
its own, so it knows and returns the id as well.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import psycopg

from .errors import InvalidEvent, PgpulseError
from .events import MAX_NAME_LENGTH, is_name
from .sql import QUERIES

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

_SQLALCHEMY_PUBLISH = (
    "SELECT pgpulse.publish(:tenant_id, :topic, :type, CAST(:data AS jsonb), :user_id)"
)


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to publish: ``data_json`` is already-encoded JSON."""

    tenant_id: str
    topic: str
    type: str
    data_json: str
    user_id: str | None = None

    @classmethod
    def build(
        cls,
        tenant_id: str,
        type: str,
        data: Any,
        topic: str = "notifications",
        user_id: str | None = None,
    ) -> NewEvent:
        """Check names and encode ``data``, with errors that say which field is wrong."""
        check_name("tenant_id", tenant_id)
        check_name("topic", topic)
        check_name("type", type)
        if user_id is not None:
            check_name("user_id", user_id)
        return cls(tenant_id, topic, type, encode_json("data", data), user_id)

    def params(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "topic": self.topic,
            "type": self.type,
            "data": self.data_json,
            "user_id": self.user_id,
        }

    def batch_item(self) -> dict[str, Any]:
        """The item as ``pgpulse.publish_batch`` reads it."""
        return {
            "tenant_id": self.tenant_id,
            "topic": self.topic,
            "type": self.type,
            "data": orjson.Fragment(self.data_json),
            "user_id": self.user_id,
        }


MAX_MESSAGE_LENGTH = 100_000
"""Longest notification message, in characters."""


@dataclass(frozen=True, slots=True)
class NewNotification:
    """The seed's notification: a stored message and its event, written together.

    Its event is ``topic "notifications", type "notification", data
    {"message", "notification_id"}``, built in SQL once the row has its id.
    """

    tenant_id: str
    message: str

    @classmethod
    def build(cls, tenant_id: str, message: object) -> NewNotification:
        check_name("tenant_id", tenant_id)
        if not isinstance(message, str) or not 1 <= len(message) <= MAX_MESSAGE_LENGTH:
            raise InvalidEvent(f"message must be a string of 1 to {MAX_MESSAGE_LENGTH} characters")
        if "\x00" in message:
            raise InvalidEvent("message must not contain NUL characters")
        return cls(tenant_id, message)

    def batch_item(self) -> dict[str, Any]:
        return {"tenant_id": self.tenant_id, "message": self.message}


@dataclass(frozen=True, slots=True)
class Published:
    """What the batch path wrote: the event's id and key, and its notification's id."""

    event_id: int
    key: int
    notification_id: int | None = None


def check_name(field: str, value: object, error: type[PgpulseError] = InvalidEvent) -> None:
    """Refuse a name that pgpulse.events (or jobs) would refuse, saying which field."""
    if is_name(value):
        return
    if isinstance(value, str) and "\x00" in value:
        raise error(f"{field} must not contain NUL characters")
    shown = f"{len(value)} characters" if isinstance(value, str) else type(value).__name__
    raise error(f"{field} must be a string of 1 to {MAX_NAME_LENGTH} characters, got {shown}")


def encode_json(field: str, value: Any, error: type[PgpulseError] = InvalidEvent) -> str:
    """``value`` as JSON text that jsonb accepts, or ``error`` saying why not."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError as exc:
        raise error(f"{field} is not JSON-serialisable: {exc}") from None
    if "\\u0000" in text:
        raise error(f"{field} must not contain NUL characters (jsonb refuses them)")
    return text


async def publish(
    conn: Any,
    *,
    tenant_id: str,
    type: str,
    data: Any,
    topic: str = "notifications",
    user_id: str | None = None,
) -> int:
    """Publish an event in ``conn``'s current transaction and return its key.

    The event is stored, and delivered, only if that transaction commits; its
    id is assigned then, and every frame of the event carries the key. On a
    connection in autocommit mode the event commits at once. Publishing never
    waits for another open transaction, and never takes a part in a deadlock.
    """
    event = NewEvent.build(tenant_id, type, data, topic=topic, user_id=user_id)
    return int(await scalar_in_transaction(conn, "publish", _SQLALCHEMY_PUBLISH, event.params()))


async def scalar_in_transaction(
    conn: Any, query: str, sqlalchemy_sql: str, params: Mapping[str, Any]
) -> Any:
    """Run one of pgpulse's functions in ``conn``'s transaction and return its value.

    ``query`` names the psycopg form in ``queries.sql``; ``sqlalchemy_sql`` is
    the same call with SQLAlchemy's ``:name`` parameters. This is how every
    public function that joins the caller's transaction reaches the database.
    """
    if isinstance(conn, psycopg.AsyncConnection):
        cur = await conn.execute(QUERIES[query], params)
        row = await cur.fetchone()
        assert row is not None
        return row[0]
    try:
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
    except ImportError:
        raise TypeError(
            f"pgpulse takes a psycopg AsyncConnection or, with the 'sqlalchemy' extra, "
            f"an SQLAlchemy AsyncSession/AsyncConnection; got {type(conn).__name__}"
        ) from None
    if not isinstance(conn, AsyncSession | AsyncConnection):
        raise TypeError(
            f"pgpulse takes a psycopg AsyncConnection or an SQLAlchemy "
            f"AsyncSession/AsyncConnection; got {type(conn).__name__}"
        )
    result = await conn.execute(text(sqlalchemy_sql), params)
    return result.scalar_one()


BatchItem = NewEvent | NewNotification


class BatchPublisher:
    """Groups concurrent publishes into one transaction per batch (group commit).

    No timer: a batch is written as soon as a writer is free, so a lone
    publish goes out at once, and under load each commit carries everything
    that arrived while the previous one was in flight.
    """

    def __init__(self, pool: AsyncConnectionPool, max_batch: int = 500, writers: int = 2) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._writers = writers
        self._active = 0
        self._pending: list[tuple[BatchItem, asyncio.Future[Published]]] = []

    async def publish(self, item: BatchItem) -> Published:
        future: asyncio.Future[Published] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._active < self._writers:
            self._active += 1
            asyncio.get_running_loop().create_task(self._drain())
        # shield: a caller that goes away does not cancel a write others share
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                try:
                    results = await self._write([item for item, _ in batch])
                except psycopg.OperationalError as exc:  # the database, not the input
                    _fail(batch, exc)
                    continue
                except psycopg.Error:
                    # Input the checks let through: write each item alone, so
                    # only the guilty ones fail, and with their own error.
                    await self._write_one_by_one(batch)
                    continue
                except Exception as exc:  # every waiter learns why its publish failed
                    _fail(batch, exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._active -= 1

    async def _write_one_by_one(
        self, batch: list[tuple[BatchItem, asyncio.Future[Published]]]
    ) -> None:
        for item, future in batch:
            try:
                [result] = await self._write([item])
            except psycopg.OperationalError as exc:
                _fail([(item, future)], exc)
            except psycopg.Error as exc:
                _fail([(item, future)], InvalidEvent(f"the database refused the event: {exc}"))
            except Exception as exc:
                _fail([(item, future)], exc)
            else:
                if not future.done():
                    future.set_result(result)

    async def _write(self, items: list[BatchItem]) -> list[Published]:
        params: Mapping[str, Any] = {
            "batch": orjson.dumps([item.batch_item() for item in items]).decode()
        }
        async with self._pool.connection() as conn:
            cur = await conn.execute(QUERIES["publish_batch"], params)
            rows = await cur.fetchall()
        return [Published(int(r[0]), int(r[1]), r[2]) for r in rows]


def _fail(batch: list[tuple[BatchItem, asyncio.Future[Published]]], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
