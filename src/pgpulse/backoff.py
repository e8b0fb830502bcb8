"""Exponential backoff with jitter: the one retry pacing of pgpulse.

The listener, the job worker and the Python client all retry something that
failed because the other side went away (PostgreSQL, a server). Each delay
doubles up to a cap, and is spread by jitter (from half to one and a half
times the nominal delay) so that many processes that lost the same server
at the same moment do not all come back in the same instant.
"""

from __future__ import annotations

import asyncio
import random


class Backoff:
    """Delays of ``first``, then twice as long each time, never over ``cap`` (seconds)."""

    __slots__ = ("_nominal", "cap", "first")

    def __init__(self, first: float, cap: float) -> None:
        if not 0 < first <= cap:
            raise ValueError(f"backoff needs 0 < first <= cap, got first={first} cap={cap}")
        self.first = first
        self.cap = cap
        self._nominal = first

    def next(self) -> float:
        """The next delay in seconds, jittered; the one after it is twice as long."""
        delay = self._nominal * (0.5 + random.random())
        self._nominal = min(self._nominal * 2, self.cap)
        return delay

    def reset(self) -> None:
        """Start again from ``first``: the last attempt succeeded."""
        self._nominal = self.first

    async def sleep(self) -> None:
        await asyncio.sleep(self.next())
