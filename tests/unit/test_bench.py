"""The load generator's own arithmetic: histogram percentiles, frame parsing, the table."""

from __future__ import annotations

import asyncio
import socket
import struct
import zlib
from pathlib import Path

import orjson
import pytest

from pgpulse.bench import comparators, engineio, report, runner, scenarios, servers, wsclient
from pgpulse.bench.stats import Histogram


def test_histogram_percentiles_within_two_percent() -> None:
    h = Histogram()
    for ms in range(1, 1001):
        h.add(ms * 1000.0)
    for p, want in ((50, 500), (90, 900), (99, 990)):
        got = h.percentile_ms(p)
        assert got is not None and abs(got - want) / want <= 0.02
    assert h.summary()["max_ms"] == 1000.0


def test_histograms_merge_across_processes() -> None:
    a, b = Histogram(), Histogram()
    a.add(1000.0)
    b.add(3000.0)
    merged = Histogram.from_wire(a.to_wire())
    merged.merge(Histogram.from_wire(b.to_wire()))
    assert merged.count == 2 and merged.max_us == 3000.0


def _server_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x80 | opcode, n) + payload
    return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload


async def test_client_parses_frames_split_anywhere() -> None:
    got: list[bytes] = []
    client = wsclient.WsClient("127.0.0.1", 1, "/ws", lambda _c, p: got.append(p))
    small = orjson.dumps({"id": 1, "data": {"t": 1, "seq": 1}})
    big = b"x" * 300
    stream = b"HTTP/1.1 101 Switching Protocols\r\n\r\n" + _server_frame(1, small)
    stream += _server_frame(1, big)
    for i in range(0, len(stream), 7):
        client.data_received(stream[i : i + 7])
    assert got == [small, big]
    assert client.opened.done() and client.opened.result() is True
    await asyncio.sleep(0)


def test_table_reports_ratios_and_targets() -> None:
    results = {
        "pgpulse": {"s4": {"delivery": {"lost": 0, "duplicates": 0}, "recovery_s": 0.2}},
        "baseline": {"s4": {"delivery": {"lost": 10, "duplicates": 0}, "recovery_s": None}},
    }
    rows = report.comparison(results)
    lost = next(r for r in rows if r["scenario"] == "s4" and r["metric"] == "lost")
    assert lost["met"] is True and lost["baseline"] == 10
    assert "S4" in report.table(rows, ["baseline"])


def test_s6_rows_show_the_stalled_socket_without_a_ratio() -> None:
    results = {
        "pgpulse": {"s6": {"delivery": {"lost": 0}, "stalled": {"closed": "yes (1013)"}}},
        "baseline": {"s6": {"delivery": {"lost": 900}, "stalled": {"closed": "no"}}},
    }
    rows = report.comparison(results)
    closed = next(r for r in rows if r["metric"] == "stalled socket closed by server")
    assert closed["pgpulse"] == "yes (1013)" and closed["ratio"] is None
    text = report.table(rows, ["baseline"])
    assert "yes (1013)" in text and "S6" in text


def test_s2_target_is_not_judged_when_the_steps_stop_short() -> None:
    def s2_met(steps: list[int], ours: int, theirs: int) -> bool | None:
        results = {
            "pgpulse": {"s2": {"sizes": {"steps": steps}, "highest_step_held": ours}},
            "baseline": {"s2": {"sizes": {"steps": steps}, "highest_step_held": theirs}},
        }
        [row] = [r for r in report.comparison(results) if r["scenario"] == "s2"]
        met: bool | None = row["met"]
        return met

    assert s2_met([5, 20, 50], 50, 5) is None  # --quick: every step held
    assert s2_met([5, 20, 50, 100, 200], 50, 5) is False
    assert s2_met([5, 20, 50, 100, 200], 200, 20) is False  # 10x only
    assert s2_met([5, 20, 50, 100, 200], 200, 5) is True


async def test_client_offers_deflate_and_inflates_compressed_messages() -> None:
    got: list[bytes] = []
    client = wsclient.WsClient("127.0.0.1", 1, "/ws", lambda _c, p: got.append(p))
    assert b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits" in (
        client._request
    )
    messages = [orjson.dumps({"id": i, "data": {"pad": "abc" * 50}}) for i in (1, 2)]
    deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)  # one window kept across messages
    stream = (
        b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
    )
    for message in messages:
        body = deflate.compress(message) + deflate.flush(zlib.Z_SYNC_FLUSH)
        assert body.endswith(wsclient.DEFLATE_TAIL)
        frame = _server_frame(1, body[: -len(wsclient.DEFLATE_TAIL)])
        stream += bytes([frame[0] | wsclient.RSV1]) + frame[1:]
    stream += _server_frame(1, b'{"plain": true}')  # uncompressed is allowed too
    for i in range(0, len(stream), 5):
        client.data_received(stream[i : i + 5])
    assert client.deflate and got == [*messages, b'{"plain": true}']
    await asyncio.sleep(0)


class _Sent:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def send_text(self, text: str) -> None:
        self.texts.append(text)


def test_engineio_joins_answers_pings_and_unwraps_events() -> None:
    client = _Sent()
    opened = engineio.receive(client, b'0{"sid":"a","pingInterval":25000,"pingTimeout":20000}')
    assert opened == {"op": "open"} and client.texts == ["40"]
    assert engineio.receive(client, b'40{"sid":"b"}') == {"op": "connect"}
    assert engineio.receive(client, b"2") is None and client.texts[-1] == "3"
    assert engineio.receive(client, b'42["ready"]') == {"op": "ready"}
    body = {"type": "bench", "data": {"t": 1, "seq": 7}}
    assert engineio.receive(client, b'42["event",' + orjson.dumps(body) + b"]") == body
    assert engineio.receive(client, b"41") == {"op": "disconnect"}
    assert engineio.receive(client, b"1") == {"op": "close"}


def test_table_shows_each_comparator_and_why_a_scenario_is_not_applicable() -> None:
    results = {
        "pgpulse": {"s3": {"publish": {"per_second": 6000.0}}, "s4": {"recovery_s": 0.1}},
        "broadcaster": {"s3": {"publish": {"per_second": 3000.0}}, "s4": {"skipped": "unnamed"}},
        "socketio": {"s3": {"publish": {"per_second": 4000.0}}, "s4": {"skipped": "unnamed"}},
    }
    rows = report.comparison(results)
    s3 = next(r for r in rows if r["scenario"] == "s3" and r["metric"] == "accepted publishes/s")
    assert s3["ratios"] == {"broadcaster": 2.0, "socketio": 1.5}
    assert s3["baseline"] is None and s3["met"] is None
    s4 = next(r for r in rows if r["scenario"] == "s4" and r["metric"] == "recovery s")
    assert s4["broadcaster"] == "n/a" and s4["ratios"]["broadcaster"] is None
    text = report.table(rows, ["broadcaster", "socketio"])
    assert "pgpulse÷broadcaster" in text and "2x" in text and "1.5x" in text
    assert "n/a: socketio S4: unnamed" in report.skipped(results)


def test_compare_takes_a_list_and_names_an_unknown_comparator() -> None:
    assert comparators.parse("socketio, baseline") == ["baseline", "socketio"]
    with pytest.raises(comparators.Unavailable, match="'redis'"):
        comparators.parse("baseline,redis")


def test_comparators_get_a_url_even_for_a_socket_directory() -> None:
    assert servers.as_url("host=/tmp/pg port=5433 user=postgres dbname=bench_x") == (
        "postgresql://postgres@/bench_x?host=%2Ftmp%2Fpg&port=5433"
    )
    assert servers.as_url("postgresql://u:p%40ss@127.0.0.1:5432/db") == (
        "postgresql://u:p%40ss@127.0.0.1:5432/db"
    )


def test_cpu_per_publish_counts_server_and_postgres() -> None:
    usage = {"server_cpu_s": 1.0, "postgres_cpu_s": 0.5, "loadgen_cpu_s": 9.0}
    assert scenarios._cpu_per_publish(usage, 1000) == 1500.0
    assert scenarios._cpu_per_publish(usage, 0) is None


def test_socketio_without_node_is_one_line_of_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(comparators.shutil, "which", lambda _tool: None)
    with pytest.raises(comparators.Unavailable, match=r"needs node \(Node.js 18 or later\)"):
        comparators.prepare("socketio", cache=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing installed, nothing half-done


def test_a_port_something_listens_on_is_passed_over() -> None:
    """Another server on the port would answer the health check for the one under test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((servers.HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        chosen = runner._free_port(port)
        assert chosen > port
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((servers.HOST, chosen))  # free indeed
