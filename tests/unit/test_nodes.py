"""The node registry's arithmetic: samples line up across nodes and add up right."""

from __future__ import annotations

from pgpulse.nodes import merge_series, p99, tick


def test_heartbeats_fall_on_the_same_instants_across_nodes() -> None:
    assert tick(1000.9, 2.0) == 1000.0
    assert tick(1001.1, 2.0) == 1002.0
    assert tick(1001.1, 0.5) == 1001.0


def test_p99_is_a_sample_and_none_without_samples() -> None:
    assert p99([]) is None
    assert p99([5.0]) == 5.0
    assert p99([float(i) for i in range(1, 101)]) == 99.0
    assert p99([float(i) for i in range(1, 1001)]) == 990.0


def test_series_add_deliveries_and_keep_the_largest_event_rate_and_latency() -> None:
    a = {"series": [[1000.0, 10.0, 30.0, 5.0], [1002.0, 20.0, 60.0, None]]}
    b = {"series": [[1000.1, 9.0, 12.0, 8.0], [1004.0, None, 1.0, 2.0]]}
    assert merge_series([a, b], 2.0) == [
        {"t": 1000.0, "events_per_s": 10.0, "deliveries_per_s": 42.0, "p99_ms": 8.0},
        {"t": 1002.0, "events_per_s": 20.0, "deliveries_per_s": 60.0, "p99_ms": None},
        {"t": 1004.0, "events_per_s": None, "deliveries_per_s": 1.0, "p99_ms": 2.0},
    ]


def test_malformed_samples_are_skipped() -> None:
    rows = [{"series": [[1.0, 2.0], "x", [None, 1.0, 1.0, 1.0]]}, {"series": None}, {}]
    assert merge_series(rows, 2.0) == []
