"""Who may open a stream: Origin, topics and resume point (no server, no database)."""

from __future__ import annotations

import pytest
from starlette.requests import HTTPConnection

from pgpulse.auth import Principal
from pgpulse.transports.admission import Policy, Refused, admit, parse_last_event_id


def conn(host: str | None, origin: str | None, query: str = "") -> HTTPConnection:
    headers = [(b"host", host.encode())] if host else []
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return HTTPConnection({"type": "websocket", "headers": headers, "query_string": query.encode()})


@pytest.mark.parametrize(
    ("host", "origin", "allowed"),
    [
        ("app.example", "https://app.example", True),
        ("app.example:443", "https://app.example", True),
        ("APP.example", "https://app.EXAMPLE/", True),
        ("127.0.0.1:8000", "http://127.0.0.1:8000", True),
        ("127.0.0.1:8000", "http://127.0.0.1:8001", False),
        ("app.example", "https://evil.example", False),
        ("app.example", "https://app.example.evil.example", False),
        ("app.example", "null", False),
        (None, "https://app.example", False),
        ("app.example", None, True),  # not a browser's request
    ],
)
def test_same_origin_by_default(host: str | None, origin: str | None, allowed: bool) -> None:
    assert Policy().origin_allowed(conn(host, origin)) is allowed


def test_listed_origins_and_any() -> None:
    listed = Policy.build("https://app.example, http://localhost:5173")
    assert listed.origin_allowed(conn("api.example", "http://localhost:5173"))
    assert not listed.origin_allowed(conn("api.example", "https://api.example"))
    assert Policy.build("*").origin_allowed(conn("api.example", "https://anything.example"))
    assert Policy.build(["https://app.example"]).origin_allowed(conn("x", "https://app.example"))


async def test_each_topic_is_authorized_and_all_must_be_named() -> None:
    async def only_mine(principal: Principal, topic: str) -> bool:
        return topic.startswith(principal.user_id or "")

    policy = Policy(authorize_topic=only_mine)
    ann = Principal(tenant_id="acme", user_id="ann")
    assert await policy.topics(ann, "ann.a,ann.b") == frozenset({"ann.a", "ann.b"})
    with pytest.raises(Refused, match=r"'bob\.a' is not allowed") as refused:
        await policy.topics(ann, "ann.a,bob.a")
    assert refused.value.status == 403 and refused.value.code == 1008
    with pytest.raises(Refused, match="name the topics"):
        await policy.topics(ann, None)
    # A sync callable does as well; the principal's own topics are checked first.
    sync = Policy(authorize_topic=lambda p, t: t != "audit")
    narrow = Principal(tenant_id="acme", topics=frozenset({"a", "audit"}))
    assert await sync.topics(narrow, "a") == frozenset({"a"})
    with pytest.raises(Refused, match="does not allow"):
        await sync.topics(narrow, "b")
    with pytest.raises(Refused, match="'audit'"):
        await sync.topics(narrow, None)  # the principal's topics, each authorized


async def test_admission_order_origin_then_principal_then_resume() -> None:
    ann = Principal(tenant_id="acme")
    evil = conn("app.example", "https://evil.example", "last_event_id=x")
    with pytest.raises(Refused, match="origin"):
        await admit(evil, Refused("not authenticated"), Policy(), "x", check_origin=True)
    with pytest.raises(Refused, match="not authenticated"):
        await admit(evil, Refused("not authenticated"), Policy(), "x", check_origin=False)
    with pytest.raises(Refused, match="last_event_id") as bad:
        await admit(evil, ann, Policy(), "x", check_origin=False)
    assert bad.value.status == 422
    admitted = await admit(conn("h", None, "topics=a"), ann, Policy(), "7", check_origin=True)
    assert (admitted.topics, admitted.resume_from) == (frozenset({"a"}), 7)


def test_last_event_id() -> None:
    assert parse_last_event_id(None) is None and parse_last_event_id("") is None
    assert parse_last_event_id("0") == 0
    for bad in ("-1", "1.5", "9" * 19, "x"):
        with pytest.raises(ValueError, match="non-negative integer"):
            parse_last_event_id(bad)
