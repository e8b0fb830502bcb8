"""Presence: who is connected to a topic of a tenant, across every node.

The table is the truth (``sql/migrations/0007_live.sql``): a member is a row
written by the node that holds its connection. Each node, once it has a
member, runs three tasks:

* LISTEN ``pgpulse_presence``: each change to any topic's members arrives
  with the topic's version; the node hands it to its local watchers of that
  topic (the connections that joined it), each of which forwards only
  versions above the snapshot it sent, so a snapshot and the changes after
  it fit together with nothing missed or doubled;
* renew its members every third of :attr:`Presence.ttl`; a member whose row
  was swept meanwhile (the node lost the database for a while) joins again;
* sweep every sixth of the TTL: remove every member, of any node, whose row
  expired, one short transaction each, each sending its ``leave``.

So a node that dies takes its members away within the TTL plus one sweep,
and a node that only stops listening for a while (its LISTEN connection
lost) sends its watchers a fresh snapshot once it listens again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import psycopg
from psycopg_pool import PoolTimeout

from .errors import DatabaseUnavailable, PgpulseError
from .listen import Listen
from .sql import QUERIES

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

log = logging.getLogger("pgpulse.presence")

CHANNEL = "pgpulse_presence"
SWEEP_BATCH = 100  # expired members removed per sweep query
LEAVE_TIMEOUT = 5.0  # seconds a stopping node spends removing its members
LISTEN_TIMEOUT = 10.0  # seconds a first join waits for the node to be listening


class PresenceError(PgpulseError):
    """presence failed."""


class PresenceFull(PresenceError):
    """the topic's presence holds as many members as it may."""


class Watcher(Protocol):
    """A local connection that joined a topic: it gets the topic's changes."""

    def presence_changed(self, topic: str, version: int, kind: str, member: dict[str, Any]) -> None:
        """A member joined (``kind`` ``join``) or left (``leave``); never blocks."""
        ...

    def presence_reset(self, topic: str, version: int, members: list[dict[str, Any]]) -> None:
        """Changes may have been missed: here is the topic's whole state."""
        ...


Key = tuple[str, str, str]  # tenant, topic, member id


class Presence:
    """One node's presence: its local members, and the tasks that keep them true."""

    def __init__(
        self,
        url: str,
        pool: AsyncConnectionPool,
        *,
        ttl: float = 12.0,
        max_members: int = 1000,
    ) -> None:
        self.node_id = uuid.uuid4().hex
        self.ttl = ttl
        self.max_members = max_members
        self._url = url
        self._pool = pool
        # (tenant, topic) -> member id -> (watcher, user id, info JSON)
        self._local: dict[tuple[str, str], dict[str, tuple[Watcher, str | None, str | None]]] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._listening = asyncio.Event()
        self._resyncs: set[asyncio.Task[None]] = set()
        self._listen = Listen(
            url, CHANNEL, on_notify=self._deliver, on_connect=self._connected, log=log
        )

    # -- what connections call --------------------------------------------

    async def join(
        self,
        tenant_id: str,
        topic: str,
        member_id: str,
        user_id: str | None,
        info_json: str | None,
        watcher: Watcher,
    ) -> tuple[int, list[dict[str, Any]]]:
        """Join (or update one's info); returns the topic's version and members.

        The node listens, and the watcher is registered, before the row is
        written, so no change after the returned version can pass it by.
        Raises :class:`PresenceFull` or :class:`DatabaseUnavailable`.
        """
        self._start()
        try:
            async with asyncio.timeout(LISTEN_TIMEOUT):
                await self._listening.wait()
        except TimeoutError:
            raise DatabaseUnavailable("presence is not listening: database unavailable") from None
        self._local.setdefault((tenant_id, topic), {})[member_id] = (watcher, user_id, info_json)
        try:
            return await self._write_join(tenant_id, topic, member_id, user_id, info_json)
        except BaseException:
            self._forget(tenant_id, topic, member_id)
            raise

    @property
    def listening(self) -> bool:
        return self._listen.connected

    async def leave(self, tenant_id: str, topic: str, member_id: str) -> None:
        self._forget(tenant_id, topic, member_id)
        await self._call(
            "presence_leave",
            tenant_id=tenant_id,
            topic=topic,
            member_id=member_id,
            only_expired=False,
        )

    async def state(self, tenant_id: str, topic: str) -> tuple[int, list[dict[str, Any]]]:
        """The topic's version and live members now."""
        rows = await self._call("presence_state", tenant_id=tenant_id, topic=topic)
        version, members = rows[0]
        return int(version), orjson.loads(members)

    async def stop(self) -> None:
        """Stop the tasks and remove this node's members (their leaves go out now)."""
        tasks = [*self._tasks, *self._resyncs]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        keys = [(t, p, m) for (t, p), members in self._local.items() for m in members]
        self._local.clear()
        with contextlib.suppress(TimeoutError, DatabaseUnavailable, PresenceError):
            async with asyncio.timeout(LEAVE_TIMEOUT):
                for tenant_id, topic, member_id in sorted(keys):
                    await self._call(
                        "presence_leave",
                        tenant_id=tenant_id,
                        topic=topic,
                        member_id=member_id,
                        only_expired=False,
                    )

    # -- inside -----------------------------------------------------------

    def _forget(self, tenant_id: str, topic: str, member_id: str) -> None:
        members = self._local.get((tenant_id, topic))
        if members is not None:
            members.pop(member_id, None)
            if not members:
                del self._local[(tenant_id, topic)]

    async def _write_join(
        self, tenant_id: str, topic: str, member_id: str, user_id: str | None, info: str | None
    ) -> tuple[int, list[dict[str, Any]]]:
        try:
            rows = await self._call(
                "presence_join",
                tenant_id=tenant_id,
                topic=topic,
                member_id=member_id,
                node_id=self.node_id,
                user_id=user_id,
                info=info,
                ttl=self.ttl,
                max_members=self.max_members,
            )
        except psycopg.errors.ProgramLimitExceeded:
            raise PresenceFull(
                f"presence of topic {topic!r} is full ({self.max_members} members)"
            ) from None
        version, members = rows[0]
        return int(version), orjson.loads(members)

    async def _call(self, query: str, **params: Any) -> list[tuple[Any, ...]]:
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(QUERIES[query], params)
                return await cur.fetchall() if cur.description is not None else []
        except psycopg.errors.ProgramLimitExceeded:
            raise  # a full topic (an OperationalError by its SQLSTATE class), not an outage
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise DatabaseUnavailable(f"database unavailable: {exc}") from None
        except psycopg.Error as exc:
            log.error("presence: %s failed: %s", query, exc)
            raise PresenceError(f"presence failed: {str(exc).splitlines()[0]}") from None

    def _start(self) -> None:
        """Start the node's tasks with its first member (a node without any pays nothing)."""
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._listen.run(), name="pgpulse-presence-listen"),
            loop.create_task(self._renew_forever(), name="pgpulse-presence-renew"),
            loop.create_task(self._sweep_forever(), name="pgpulse-presence-sweep"),
        ]

    def _deliver(self, payload: str) -> None:
        try:
            change = orjson.loads(payload)
            key = (str(change["tenant_id"]), str(change["topic"]))
            version, kind, member = int(change["version"]), str(change["kind"]), change["member"]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("presence: unreadable notification ignored: %.200s", payload)
            return
        for member_id, (watcher, _, _) in list(self._local.get(key, {}).items()):
            if member_id != member.get("id"):  # a member's own change is in its answer
                watcher.presence_changed(key[1], version, kind, member)

    async def _resync(self) -> None:
        """After a gap in listening: every watched topic's whole state, to its watchers."""
        for (tenant_id, topic), members in list(self._local.items()):
            try:
                version, state = await self.state(tenant_id, topic)
            except (DatabaseUnavailable, PresenceError):
                return  # the next reconnect tries again
            for watcher, _, _ in list(members.values()):
                watcher.presence_reset(topic, version, state)

    def _connected(self) -> None:
        """The LISTEN connection is (back) up: changes while nobody listened are
        lost, so every watched topic's whole state goes to its watchers."""
        self._listening.set()
        self._resyncs.add(task := asyncio.get_running_loop().create_task(self._resync()))
        task.add_done_callback(self._resyncs.discard)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                rows = await self._call("presence_renew", node_id=self.node_id, ttl=self.ttl)
                await self._rejoin_missing({(r[0], r[1], r[2]) for r in rows})
            except (DatabaseUnavailable, PresenceError) as exc:
                log.warning("presence: members not renewed: %s", exc)

    async def _rejoin_missing(self, renewed: set[Key]) -> None:
        """Members swept while this node could not renew them join again."""
        for (tenant_id, topic), members in list(self._local.items()):
            for member_id, (_, user_id, info) in list(members.items()):
                if (tenant_id, topic, member_id) in renewed:
                    continue
                with contextlib.suppress(PresenceError):
                    await self._write_join(tenant_id, topic, member_id, user_id, info)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 6)
            try:
                await self.sweep()
            except (DatabaseUnavailable, PresenceError) as exc:
                log.warning("presence: sweep failed: %s", exc)

    async def sweep(self) -> int:
        """Remove every expired member (any node's); returns how many left."""
        removed = 0
        while True:
            rows = await self._call("presence_expired", limit=SWEEP_BATCH)
            for tenant_id, topic, member_id in rows:
                [(gone,)] = await self._call(
                    "presence_leave",
                    tenant_id=tenant_id,
                    topic=topic,
                    member_id=member_id,
                    only_expired=True,
                )
                removed += bool(gone)
            if len(rows) < SWEEP_BATCH:
                return removed
