"""``pgpulse.client``: a Python client that never misses an event.

``Client`` is an async iterator of :class:`~pgpulse.events.Event`. It
reconnects with backoff after any drop (server restart 1012, slow consumer
1013, network loss) and resumes from the last id it yielded, so the stream
it gives has no gap and no duplicate. A refused token (1008) is not retried:
it raises :class:`~pgpulse.errors.AuthError`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import orjson
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .errors import AuthError
from .events import WS_1008_POLICY_VIOLATION, Event, parse_event

log = logging.getLogger("pgpulse.client")

MAX_BACKOFF = 5.0  # seconds


class Client:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        topics: list[str] | None = None,
        last_event_id: int | None = None,
        on_control: Callable[[dict[str, Any]], None] | None = None,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self.url = url
        self.token = token
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

    async def __aiter__(self) -> AsyncIterator[Event]:
        backoff = 0.1
        while True:
            try:
                async with websockets.connect(self.ws_url(), max_size=None, open_timeout=10) as ws:
                    self.connects += 1
                    backoff = 0.1
                    async for message in ws:
                        body = orjson.loads(message)
                        if "op" in body:
                            if body["op"] == "reset":
                                self.last_event_id = None
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
                if exc.rcvd is not None and exc.rcvd.code == WS_1008_POLICY_VIOLATION:
                    raise AuthError(f"refused: {exc.rcvd.reason}") from None
                log.info("connection closed (%s); resuming after %s", exc, self.last_event_id)
            except InvalidStatus as exc:
                if exc.response.status_code in (401, 403):
                    raise AuthError(f"refused with HTTP {exc.response.status_code}") from None
                log.info("server answered HTTP %s; retrying", exc.response.status_code)
            except (OSError, TimeoutError) as exc:
                log.info("cannot connect (%s); retrying", exc)
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, self.max_backoff)
