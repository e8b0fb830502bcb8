"""Latency histograms that merge across processes, and their percentiles.

Receivers see millions of frames; shipping every latency back to the runner
would cost more than measuring it. Each receiver fills a log-scale histogram
(buckets 2 % wide, from 10 µs to over an hour), the runner adds them up, and
percentiles are read off with at most 2 % error. The maximum is kept exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

BASE_US = 10.0  # the first bucket's upper bound, microseconds
GROWTH = 1.02  # each bucket is 2 % wider than the one before
BUCKETS = 1000  # 10 µs x 1.02**1000 ≈ 4 x 10^9 µs: over an hour
_LOG_GROWTH = math.log(GROWTH)


def bucket(latency_us: float) -> int:
    if latency_us <= BASE_US:
        return 0
    return min(BUCKETS - 1, int(math.log(latency_us / BASE_US) / _LOG_GROWTH) + 1)


def bucket_upper_us(index: int) -> float:
    return BASE_US * GROWTH**index


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    count: int = 0
    max_us: float = 0.0

    def add(self, latency_us: float) -> None:
        self.counts[bucket(latency_us)] += 1
        self.count += 1
        if latency_us > self.max_us:
            self.max_us = latency_us

    def merge(self, other: Histogram) -> None:
        for i, n in enumerate(other.counts):
            if n:
                self.counts[i] += n
        self.count += other.count
        self.max_us = max(self.max_us, other.max_us)

    def percentile_ms(self, p: float) -> float | None:
        """The latency below which ``p`` percent of frames arrived, in ms (``None`` if empty)."""
        if self.count == 0:
            return None
        rank = math.ceil(self.count * p / 100.0)
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return min(bucket_upper_us(i), self.max_us) / 1000.0
        return self.max_us / 1000.0

    def summary(self) -> dict[str, float | None]:
        return {
            "p50_ms": _round(self.percentile_ms(50)),
            "p90_ms": _round(self.percentile_ms(90)),
            "p99_ms": _round(self.percentile_ms(99)),
            "max_ms": _round(self.max_us / 1000.0 if self.count else None),
        }

    def to_wire(self) -> tuple[dict[int, int], int, float]:
        return ({i: n for i, n in enumerate(self.counts) if n}, self.count, self.max_us)

    @classmethod
    def from_wire(cls, wire: tuple[dict[int, int], int, float]) -> Histogram:
        sparse, count, max_us = wire
        h = cls(count=count, max_us=max_us)
        for i, n in sparse.items():
            h.counts[i] = n
        return h


def _round(value: float | None) -> float | None:
    if value is None:
        return None
    return round(value, 3) if value < 10 else round(value, 1)
