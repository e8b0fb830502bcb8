"""A connection lives no longer than its token, unless the client refreshes it in band.

:class:`Lifetime` holds one connection's principal while the connection is
open. At the token's ``exp`` it ends the connection's subscription with
1008 "token expired" (a WebSocket is closed with it; an SSE stream ends).
On ``/ws`` the client may send ``{"op": "refresh", "token": "..."}`` first:
the new token must name the same tenant and user, and the connection's
topics may narrow to what it allows, never widen. Operators end
connections on every node with the SQL function ``pgpulse.disconnect``
(:func:`apply_control`, called by the listener).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from ..auth import Principal, Verifier
from ..errors import AuthError
from ..events import WS_1008_POLICY_VIOLATION, control, is_name
from ..hub import Hub, Subscription

log = logging.getLogger("pgpulse.lifetime")

TOKEN_EXPIRED = (WS_1008_POLICY_VIOLATION, "token expired")
DISCONNECTED = (WS_1008_POLICY_VIOLATION, "disconnected by the operator")


class Lifetime:
    """One connection's principal, its expiry, and in-band refresh."""

    def __init__(
        self,
        principal: Principal,
        subscription: Subscription,
        verifier: Verifier | None,
        on_refresh: Callable[[frozenset[str] | None], None] | None = None,
    ) -> None:
        self.principal = principal
        self._subscription = subscription
        self._verifier = verifier
        self._on_refresh = on_refresh
        """Told the new token's topics, which bound what the connection may add later."""
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """End the connection at its token's ``exp`` (tokens without one never expire:
        insecure dev mode, or an app's own principal)."""
        self.stop()
        expires_at = self.principal.expires_at
        if expires_at is None:
            return
        delay = max(0.0, expires_at - time.time())
        self._timer = asyncio.get_running_loop().call_later(delay, self._expire)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        self._subscription.close(ended=TOKEN_EXPIRED)

    async def answer(self, frame: dict[str, Any]) -> str | None:
        """The reply to a client frame this module handles (``refresh``), else None."""
        if frame.get("op") != "refresh":
            return None
        return await self.refresh(frame.get("token"))

    async def refresh(self, token: object) -> str:
        """Take a new token for this connection; the reply frame says whether it was."""
        if not isinstance(token, str) or not token:
            return _refused('"token" must be a non-empty string')
        if self._verifier is None:
            return _refused("this server does not verify tokens")
        try:
            new = await self._verifier.verify_async(token)
        except AuthError as exc:
            return _refused(str(exc))
        old = self.principal
        if new.tenant_id != old.tenant_id or new.user_id != old.user_id:
            return _refused("the new token must name the same tenant and user")
        topics = _narrowed(self._subscription.topics, new.topics)
        if topics is not None and not topics:
            return _refused("the new token allows none of this connection's topics")
        self._narrow(topics)
        self.principal = new
        if self._on_refresh is not None:
            self._on_refresh(new.topics)
        self.start()
        # The topics it reads now, so that a client reconnects with what the token allows.
        shown = {} if topics is None else {"topics": sorted(topics)}
        return control("refreshed", exp=new.expires_at and int(new.expires_at), **shown)

    def _narrow(self, topics: frozenset[str] | None) -> None:
        subscription = self._subscription
        if topics == subscription.topics:
            return
        subscription.topics = topics
        # Events queued under the old topics must not go out under the new ones.
        kept = [event for event in subscription.queue if subscription.wants(event)]
        subscription.queue[:] = kept
        subscription.queued_bytes = sum(event.size for event in kept)


def _narrowed(
    current: frozenset[str] | None, allowed: frozenset[str] | None
) -> frozenset[str] | None:
    """The connection's topics under a new token: never more than before, never more than
    the token allows."""
    if allowed is None:
        return current
    if current is None:
        return allowed
    return current & allowed


def _refused(reason: str) -> str:
    return control("error", message=f"refresh refused: {reason}")


def apply_control(hub: Hub, payload: str) -> None:
    """Carry out an operator's request that reached this node (``pgpulse.disconnect``)."""
    try:
        request = orjson.loads(payload)
    except orjson.JSONDecodeError:
        log.warning("ignored a control request that is not JSON: %.80r", payload)
        return
    if not isinstance(request, dict) or request.get("op") != "disconnect":
        log.warning("ignored an unknown control request: %.80r", payload)
        return
    tenant, user = request.get("tenant_id"), request.get("user_id")
    if not is_name(tenant) or not (user is None or is_name(user)):
        log.warning("ignored a malformed disconnect request: %.80r", payload)
        return
    ended = hub.disconnect(tenant, user, DISCONNECTED)
    if ended:
        who = f"user {user!r} of tenant {tenant!r}" if user else f"tenant {tenant!r}"
        log.info("disconnected %d connection(s) of %s", ended, who)
