"""How many streams a tenant may hold open: per-tenant and per-user caps, and a connect rate.

Each server process counts its own open streams (``/ws`` and ``/sse``) by
tenant and by user, and refuses one past :attr:`ConnectionCaps.per_tenant` or
:attr:`ConnectionCaps.per_user`; it also refuses new streams of a tenant faster
than :attr:`ConnectionCaps.rate` a second (a token bucket holding five seconds'
worth), so one tenant's reconnect storm or a leaked token cannot take every
socket and pool connection of a node. Refusals say why and are temporary:
WebSocket close 1013, SSE 429, and clients retry with back-off. Limits are
per process: a node with N workers and M nodes admit up to N x M times as
many.
"""

from __future__ import annotations

import time
from typing import TypeVar

from .settings import Settings

K = TypeVar("K")

BURST_SECONDS = 5.0  # a tenant may open this many seconds' worth of streams at once
MAX_BUCKETS = 10_000  # rate buckets kept before idle ones are dropped


class ConnectionCaps:
    def __init__(self, per_tenant: int, per_user: int, rate: float) -> None:
        self.per_tenant = per_tenant
        self.per_user = per_user
        self.rate = rate
        self._tenants: dict[str, int] = {}
        self._users: dict[tuple[str, str], int] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (allowance, when)

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionCaps:
        return cls(
            settings.max_connections_per_tenant,
            settings.max_connections_per_user,
            settings.connect_rate_per_tenant,
        )

    def refusal(self, tenant_id: str, user_id: str | None) -> str | None:
        """Why a new stream of this tenant (and user) is refused now, or None.

        Counts against the connect rate whether or not it is refused; does not
        count the stream (:meth:`admit` does, once it is about to run).
        """
        if not self._take(tenant_id):
            return f"too many new connections for this tenant (over {self.rate:g}/s); retry"
        if self._tenants.get(tenant_id, 0) >= self.per_tenant:
            return f"too many connections for this tenant ({self.per_tenant}); retry later"
        if user_id is not None and self._users.get((tenant_id, user_id), 0) >= self.per_user:
            return f"too many connections for this user ({self.per_user}); retry later"
        return None

    def admit(self, tenant_id: str, user_id: str | None) -> bool:
        """Count an open stream if the caps allow it (checked again: :meth:`refusal` came
        before an await, during which others may have been admitted). Every admitted
        stream is paired with one :meth:`release`."""
        if self._tenants.get(tenant_id, 0) >= self.per_tenant:
            return False
        if user_id is not None and self._users.get((tenant_id, user_id), 0) >= self.per_user:
            return False
        self._tenants[tenant_id] = self._tenants.get(tenant_id, 0) + 1
        if user_id is not None:
            key = (tenant_id, user_id)
            self._users[key] = self._users.get(key, 0) + 1
        return True

    def release(self, tenant_id: str, user_id: str | None) -> None:
        _decrement(self._tenants, tenant_id)
        if user_id is not None:
            _decrement(self._users, (tenant_id, user_id))

    def _take(self, tenant_id: str) -> bool:
        now = time.monotonic()
        burst = self.rate * BURST_SECONDS
        allowance, last = self._buckets.get(tenant_id, (burst, now))
        allowance = min(burst, allowance + (now - last) * self.rate)
        if len(self._buckets) >= MAX_BUCKETS and tenant_id not in self._buckets:
            self._forget_idle(now, burst)
        if allowance < 1:
            self._buckets[tenant_id] = (allowance, now)
            return False
        self._buckets[tenant_id] = (allowance - 1, now)
        return True

    def _forget_idle(self, now: float, burst: float) -> None:
        """Drop buckets that have refilled: forgetting them changes nothing."""
        full_after = burst / self.rate
        self._buckets = {
            tenant: (allowance, last)
            for tenant, (allowance, last) in self._buckets.items()
            if now - last < full_after
        }


def _decrement(counts: dict[K, int], key: K) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
