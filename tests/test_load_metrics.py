"""HDR latency histograms and sequence tracking, checked against direct computation; finding the
servers' processes by their port; the report of a server that was not sampled."""

from __future__ import annotations

import json
import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from simulator.ingest.lineprotocol import to_line
from simulator.load import metrics
from simulator.load.bridge import WriteRecorder
from simulator.load.cli import cpu_line
from simulator.load.metrics import LatencyRecorder, SeqTracker, decode, find_server, new_histogram, point_identity, summarize_ms
from simulator.load.results import write_results

# 3 significant digits: HDR's sub-buckets are 2048 wide, so a value is reported at most 1/1024 of
# itself above the true one (the bucket's highest equivalent value), never below.
RESOLUTION = 1 / 1024


def hdr_rank_value(sorted_values: np.ndarray, percentile: float) -> float:
    """The value HDR's definition picks: the k-th smallest, k = max(round-half-up(p/100 * n), 1)."""
    rank = max(int(percentile / 100 * len(sorted_values) + 0.5), 1)
    return float(sorted_values[rank - 1])


def test_hdr_percentiles_agree_with_direct_computation_on_raw_latencies() -> None:
    rng = random.Random(42)
    # A realistic latency mix in µs: lognormal body around 40 ms plus a 1% tail of slow batches.
    raw = [int(rng.lognormvariate(10.6, 0.5)) if rng.random() > 0.01 else int(rng.uniform(0.5e6, 3e6)) for _ in range(200_000)]
    recorder = LatencyRecorder()
    merged = new_histogram()
    for start in range(0, len(raw), 7_919):  # many intervals, encoded and decoded as between processes
        recorder.record_many_us(raw[start : start + 7_919])
        merged.add(decode(recorder.take()))
    assert merged.get_total_count() == len(raw)

    figures = summarize_ms(merged)
    values = np.sort(np.array(raw, dtype=np.int64))
    for name, percentile in (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9)):
        exact_ms = hdr_rank_value(values, percentile) / 1000
        assert exact_ms <= figures[name] <= exact_ms * (1 + RESOLUTION), (name, figures[name], exact_ms)
        # and the same within one rank of numpy's own definition
        assert abs(figures[name] - np.percentile(values, percentile, method="inverted_cdf") / 1000) <= exact_ms * 2 * RESOLUTION + 0.001
    assert values[-1] / 1000 <= figures["max"] <= values[-1] / 1000 * (1 + RESOLUTION)
    assert abs(figures["mean"] - values.mean() / 1000) <= values.mean() / 1000 * RESOLUTION


def test_an_empty_interval_has_no_percentiles() -> None:
    recorder = LatencyRecorder()
    assert recorder.take() == ""
    assert all(value != value for value in summarize_ms(decode("")).values())  # NaN: "not measured"


def test_sequence_tracker_counts_distinct_duplicates_and_gaps() -> None:
    tracker = SeqTracker()
    for device, seq in [("a", 0), ("a", 1), ("a", 1), ("a", 3), ("b", 0), ("b", 0), ("b", 0), ("a", 2), ("c", 9)]:
        tracker.add(device, seq)
    assert tracker.distinct == 6  # a: 0 1 2 3, b: 0, c: 9
    assert tracker.duplicates == 3
    assert tracker.gaps() == 9  # c is missing 0..8


def test_point_identity_reads_what_the_bridge_writes() -> None:
    payload = b'{"device_id": "lp-0042", "type": "load_probe", "ts": 1768320000123, "seq": 77, "tags": {"group": "g 1,x"}, "readings": {"s00": 1.5, "pad0": "seq=9 x"}}'
    line, device_id, seq, ts = to_line("yq/load/load_probe/lp-0042", payload)
    assert point_identity(line) == (device_id, seq, ts) == ("lp-0042", 77, 1768320000123)


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again, and never listened on


def test_the_process_listening_on_a_loopback_port_is_found_by_it(listening_port: int) -> None:
    for host in ("127.0.0.1", "localhost"):
        server = find_server(host, listening_port)
        assert (server.pid, server.process, server.note) == (os.getpid(), psutil.Process().name(), None)


def test_a_port_nobody_listens_on_is_not_sampled_and_says_so() -> None:
    port = free_port()
    server = find_server("127.0.0.1", port)
    assert server.pid is None and server.pids() == []
    assert server.note == f"not sampled (no local process listens on {port})"


def test_a_server_on_another_host_is_not_looked_up_here(listening_port: int) -> None:
    server = find_server("192.0.2.7", listening_port)  # TEST-NET-1: never this machine
    assert server.pid is None and server.note is not None and "192.0.2.7 is not a loopback address" in server.note


def test_without_the_right_to_list_every_socket_our_own_processes_are_still_found(listening_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(kind: str) -> None:
        raise psutil.AccessDenied()  # what macOS answers a user who is not root

    monkeypatch.setattr(psutil, "net_connections", denied)
    assert find_server("127.0.0.1", listening_port).pid == os.getpid()


def test_a_container_port_forwarder_is_not_taken_for_the_server(listening_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "PORT_FORWARDERS", frozenset({psutil.Process().name()}))  # we play docker-proxy
    server = find_server("127.0.0.1", listening_port)
    assert server.pid is None and server.note is not None and "is forwarded by" in server.note


def test_a_database_that_was_not_sampled_is_null_and_the_report_says_why(tmp_path: Path) -> None:
    note = "not sampled (no local process listens on 8086)"
    usage = {"simulator_cpu_percent": 80.0, "simulator_rss_mb": 60.0, "bridge_cpu_percent": 40.0, "bridge_rss_mb": 70.0,
             "broker_cpu_percent": 10.0, "broker_rss_mb": 8.0, "database_cpu_percent": None, "database_rss_mb": None, "machine_cpu_percent": 150.0}  # fmt: skip
    rows = [{"second": k, "offered": 10, "published": 10, "acknowledged": 10, "received": 10, "written": 10, "backlog": 0, "duplicates": 0,
             "latency_p50_ms": 5.0, "latency_p90_ms": 6.0, "latency_p99_ms": 7.0, "latency_max_ms": 8.0, "publish_p99_ms": 1.0, **usage} for k in (1, 2, 3)]  # fmt: skip
    summary = {
        "run": "r1", "scenario": "s", "started": "2026-01-01T00:00:00+00:00", "inputs": {}, "environment": {"cpus": 2},
        "servers": {"broker": {"port": 1883, "pid": 42, "process": "mosquitto", "note": None}, "database": {"port": 8086, "pid": None, "process": None, "note": note}},
        "figures": {"loss": 0, **usage}, "thresholds": [], "passed": True,
    }  # fmt: skip
    write_results(tmp_path, summary, rows)

    report = (tmp_path / "report.html").read_text()
    assert f"<td>database_cpu_percent</td><td>{note}</td>" in report and f"<td>database_rss_mb</td><td>{note}</td>" in report
    assert "<li>broker: mosquitto (PID 42, port 1883)</li>" in report and f"<li>database: {note}</li>" in report
    assert json.loads((tmp_path / "summary.json").read_text())["figures"]["database_cpu_percent"] is None
    assert (tmp_path / "timeseries.csv").read_text().splitlines()[1].endswith("10.0,8.0,,,150.0")  # empty, not 0
    assert cpu_line(summary) == (
        "CPU, % of one core, mean while loaded: simulator 80%, bridge 40%, broker (mosquitto) 10%, "
        f"database {note}; whole machine 150% of 200%"
    )


def test_the_load_bridges_recorder_counts_readings_and_passes_over_device_statuses() -> None:
    recorder = WriteRecorder()
    lines = ["device_status,device_id=em-0001 online=false 1768341600000", "load_probe,device_id=p-0001 value=1,seq=0i 1768341600000"]
    recorder.observe(lines, [])
    assert (recorder.sequences.distinct, recorder.sequences.duplicates, recorder.stale) == (1, 0, 0)
