"""``pgpulse.client``: a Python client that never misses an event.

``Client`` is an async iterator of :class:`~pgpulse.events.Event`. It
reconnects with backoff after any drop (server restart 1012, slow consumer
1013, network loss) and resumes from the last id it yielded, so the stream
it gives has no gap and no duplicate. A refused token (1008, or HTTP 401/403)
is not retried: it raises :class:`~pgpulse.errors.AuthError`; any other 4xx
answer raises :class:`~pgpulse.errors.PgpulseError` (a wrong URL does not get
better by retrying).

``token`` may be a function (plain or async) that returns a current token:
the client then calls it before every connection, and refreshes in band
(``{"op": "refresh"}``) ahead of each token's expiry, so a long-lived
stream never reconnects for a token.

The position it resumes from is the newest id the server said this
connection was sent *or skipped* (the ``ready`` frame), not only the last
event it yielded: a client filtered to a rare topic would otherwise resume
from far back, and be told its history expired when it missed nothing.

:meth:`Client.history` and :meth:`Client.position` read ``GET /api/events``
and ``GET /api/position``: load state from a page, set
:attr:`Client.last_event_id` to the page's ``last_event_id``, then iterate,
and the stream starts exactly where the page ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
import orjson
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .backoff import Backoff
from .errors import AuthError, PgpulseError
from .events import WS_1008_POLICY_VIOLATION, Event, parse_event

log = logging.getLogger("pgpulse.client")

MAX_BACKOFF = 5.0  # seconds
MIN_BACKOFF = 0.1  # seconds
OPEN_TIMEOUT = 10.0  # seconds for the WebSocket handshake
RETRYABLE_4XX = frozenset({408, 429})
REFRESH_AHEAD = 60.0  # seconds before exp that a token is refreshed (at most a quarter of its life)
TOKEN_EXPIRED = "token expired"  # the reason of the server's 1008 at exp
HTTP_TIMEOUT = 30.0  # seconds for a history or position request

TokenProvider = Callable[[], str | Awaitable[str]]


def token_expiry(token: str) -> float | None:
    """The ``exp`` a token carries (read without verifying: only the server can)."""
    import jwt

    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.PyJWTError:
        return None
    return float(exp) if isinstance(exp, int | float) else None


def refresh_at(token: str) -> float | None:
    """When to refresh ``token`` (Unix time): :data:`REFRESH_AHEAD` before its exp, or a
    quarter of its remaining life before it for short-lived tokens."""
    exp = token_expiry(token)
    if exp is None:
        return None
    return exp - min(REFRESH_AHEAD, max(0.0, exp - time.time()) / 4)


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """A page of ``GET /api/events``: events in id order, and where the stream goes on."""

    events: list[Event]
    last_event_id: int
    """The tenant's newest id when the page was read: resume from it to go on live."""
    more: bool
    """Whether the next page in the same direction has events."""


class Client:
    def __init__(
        self,
        url: str,
        token: str | TokenProvider,
        *,
        topics: list[str] | None = None,
        last_event_id: int | None = None,
        on_control: Callable[[dict[str, Any]], None] | None = None,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self.url = url
        self._provider = token if callable(token) else None
        self.token = token if isinstance(token, str) else ""
        self.refreshes = 0
        self.topics = topics
        self.last_event_id = last_event_id
        self.on_control = on_control
        self.max_backoff = max_backoff
        self.connects = 0

    def ws_url(self) -> str:
        parts = urlsplit(self.url)
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
        query: dict[str, str] = {"token": self.token}
        if self.topics:
            query["topics"] = ",".join(self.topics)
        if self.last_event_id is not None:
            query["last_event_id"] = str(self.last_event_id)
        path = parts.path.rstrip("/") + "/ws"
        return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))

    async def _fresh_token(self) -> str:
        assert self._provider is not None
        value = self._provider()
        token = await value if inspect.isawaitable(value) else value
        if not isinstance(token, str) or not token:
            raise AuthError("the token provider returned no token")
        return token

    async def _refresh_ahead(self, ws: Any) -> None:
        """Send a fresh token before the current one expires, for as long as ``ws`` is open."""
        while True:
            at = refresh_at(self.token)
            if at is None:
                return
            await asyncio.sleep(max(0.0, at - time.time()))
            try:
                token = await self._fresh_token()
            except Exception as exc:  # the server closes at exp; the reconnect asks again
                log.warning("token provider failed: %s", exc)
                return
            self.token = token
            await ws.send(orjson.dumps({"op": "refresh", "token": token}).decode())
            self.refreshes += 1

    async def history(
        self,
        *,
        before: int | None = None,
        after: int | None = None,
        limit: int | None = None,
        topics: list[str] | None = None,
    ) -> HistoryPage:
        """A page of retained events: the newest below ``before``, or with
        ``after`` the oldest above it; ``topics`` defaults to the client's."""
        params: dict[str, str] = {}
        chosen = topics if topics is not None else self.topics
        if chosen:
            params["topic"] = ",".join(chosen)
        for name, value in (("before", before), ("after", after), ("limit", limit)):
            if value is not None:
                params[name] = str(value)
        body = await self._get("/api/events", params)
        events = [parse_event(orjson.dumps(frame)) for frame in body["events"]]
        return HistoryPage(
            [event for event in events if event is not None],
            int(body["last_event_id"]),
            bool(body["more"]),
        )

    async def position(self) -> int:
        """The tenant's newest id now."""
        body = await self._get("/api/position", {})
        return int(body["last_event_id"])

    async def _get(self, path: str, params: dict[str, str]) -> Any:
        token = await self._fresh_token() if self._provider is not None else self.token
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            response = await http.get(
                self.url.rstrip("/") + path,
                params=params,
                headers={"Authorization": f"Bearer {token}"},
            )
        if response.status_code in (401, 403):
            raise AuthError(f"GET {path} refused with HTTP {response.status_code}: {response.text}")
        if response.status_code != 200:
            raise PgpulseError(f"GET {path} answered HTTP {response.status_code}: {response.text}")
        return response.json()

    def _narrow(self, allowed: object) -> None:
        """A refresh narrowed the connection's topics: reconnect with those, not with
        topics the new token would refuse."""
        if self.topics and isinstance(allowed, list):
            kept = [topic for topic in self.topics if topic in allowed]
            if kept:
                self.topics = kept

    async def __aiter__(self) -> AsyncIterator[Event]:
        backoff = Backoff(min(MIN_BACKOFF, self.max_backoff), self.max_backoff)
        while True:
            refresher: asyncio.Task[None] | None = None
            try:
                if self._provider is not None:
                    self.token = await self._fresh_token()
                async with websockets.connect(
                    self.ws_url(), max_size=None, open_timeout=OPEN_TIMEOUT
                ) as ws:
                    self.connects += 1
                    backoff.reset()
                    if self._provider is not None:
                        refresher = asyncio.get_running_loop().create_task(self._refresh_ahead(ws))
                    async for message in ws:
                        body = orjson.loads(message)
                        if "op" in body:
                            if body["op"] == "reset":
                                self.last_event_id = None
                            elif body["op"] == "ready" and isinstance(
                                body.get("last_event_id"), int
                            ):
                                self.last_event_id = max(
                                    self.last_event_id or 0, body["last_event_id"]
                                )
                            elif body["op"] == "refreshed":
                                self._narrow(body.get("topics"))
                            if self.on_control is not None:
                                self.on_control(body)
                            continue
                        event = parse_event(message)
                        if event is None:
                            continue
                        if self.last_event_id is not None and event.id <= self.last_event_id:
                            continue  # a resume never repeats; this guards a misbehaving server
                        self.last_event_id = event.id
                        yield event
            except ConnectionClosed as exc:
                expired = exc.rcvd is not None and exc.rcvd.reason == TOKEN_EXPIRED
                if (
                    exc.rcvd is not None
                    and exc.rcvd.code == WS_1008_POLICY_VIOLATION
                    and not (expired and self._provider is not None)
                ):
                    raise AuthError(f"refused: {exc.rcvd.reason}") from None
                log.info("connection closed (%s); resuming after %s", exc, self.last_event_id)
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    raise AuthError(f"refused with HTTP {status}") from None
                if 400 <= status < 500 and status not in RETRYABLE_4XX:
                    raise PgpulseError(
                        f"{self.url} answered HTTP {status} to a WebSocket at /ws"
                    ) from None
                log.info("server answered HTTP %s; retrying", status)
            except InvalidHandshake as exc:  # e.g. a server going down mid-handshake
                log.info("handshake failed (%s); retrying", exc)
            except (OSError, TimeoutError) as exc:
                log.info("cannot connect (%s); retrying", exc)
            finally:
                if refresher is not None:
                    refresher.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await refresher
            await backoff.sleep()
