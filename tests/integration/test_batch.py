"""The group commit: a batch never fails for another item's input."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from pgpulse import db
from pgpulse.errors import InvalidEvent
from pgpulse.publish import BatchPublisher, NewEvent, NewNotification, Published


async def test_an_item_the_database_refuses_fails_alone(database_url: str, tenant: str) -> None:
    """An item that slipped past the checks fails with its own error; the rest commit."""
    pool = await db.open_pool(database_url, 1, 2)
    try:
        publisher = BatchPublisher(pool)
        valid = [NewEvent.build(tenant, "ok", {"i": i}) for i in range(60)]
        # Built by hand, around NewEvent.build's checks: the database refuses an empty topic.
        guilty = NewEvent(tenant, "", "bad", "{}")
        items: list[NewEvent] = [*valid[:30], guilty, *valid[30:]]
        results = await asyncio.gather(
            *(publisher.publish(item) for item in items), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        assert len(failed) == 1 and isinstance(failed[0], InvalidEvent)
        assert results[30] is failed[0]
        ids = sorted(r.event_id for r in results if isinstance(r, Published))
        assert ids == list(range(1, 61))
    finally:
        await pool.close()


async def test_notifications_and_events_share_a_batch(database_url: str, tenant: str) -> None:
    pool = await db.open_pool(database_url, 1, 2)
    try:
        publisher = BatchPublisher(pool)
        items = [
            NewNotification.build(tenant, "hello"),
            NewEvent.build(tenant, "plain", None),
            NewNotification.build(tenant, "again"),
        ]
        first, plain, second = await asyncio.gather(*(publisher.publish(i) for i in items))
        assert plain.notification_id is None
        assert first.notification_id is not None and second.notification_id is not None
        async with await psycopg.AsyncConnection.connect(database_url) as c:
            cur = await c.execute(
                "SELECT id, key, type, data FROM pgpulse.events WHERE tenant_id = %s ORDER BY id",
                [tenant],
            )
            rows = await cur.fetchall()
            cur = await c.execute(
                "SELECT id, message FROM pgpulse.notifications WHERE tenant_id = %s ORDER BY id",
                [tenant],
            )
            notes = await cur.fetchall()
        by_id = {row[0]: row for row in rows}
        assert sorted(by_id) == [1, 2, 3]
        assert by_id[first.event_id][1:] == (
            first.key,
            "notification",
            {"message": "hello", "notification_id": first.notification_id},
        )
        assert by_id[plain.event_id][2:] == ("plain", None)
        assert notes == [(first.notification_id, "hello"), (second.notification_id, "again")]
    finally:
        await pool.close()


def test_notification_messages_are_checked() -> None:
    with pytest.raises(InvalidEvent, match="NUL"):
        NewNotification.build("t", "a\x00b")
    with pytest.raises(InvalidEvent, match="1 to 100000"):
        NewNotification.build("t", "")
