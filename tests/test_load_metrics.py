"""HDR latency histograms and sequence tracking, checked against direct computation."""

from __future__ import annotations

import random

import numpy as np

from simulator.ingest.lineprotocol import to_line
from simulator.load.metrics import LatencyRecorder, SeqTracker, decode, new_histogram, point_identity, summarize_ms

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
