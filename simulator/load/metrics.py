"""What a load experiment measures: HDR latency histograms, sequence numbers, CPU and memory.

Latencies are recorded in microseconds in HDR histograms (3 significant digits, up to one hour), one
per reporting interval; intervals travel between processes as HDR's compressed base64 encoding and
add up to the whole run's histogram. Loss and duplicates come from the per-device `seq` of every
point the bridge wrote: a bitmap per device.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import psutil
from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour
SIGNIFICANT_DIGITS = 3
PERCENTILES: dict[str, float] = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


class LatencyRecorder:
    """A thread-safe interval histogram: record from any thread, `take()` the interval's encoding."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.interval = new_histogram()

    def record_us(self, value_us: int) -> None:
        with self.lock:
            self.interval.record_value(min(max(value_us, LOWEST_US), HIGHEST_US))

    def record_many_us(self, values_us: list[int]) -> None:
        with self.lock:
            record = self.interval.record_value
            for value in values_us:
                record(min(max(value, LOWEST_US), HIGHEST_US))

    def take(self) -> str:
        """The interval's histogram, encoded, and a fresh interval."""
        with self.lock:
            interval, self.interval = self.interval, new_histogram()
        return interval.encode().decode() if interval.get_total_count() else ""


def decode(encoded: str) -> HdrHistogram:
    return HdrHistogram.decode(encoded.encode()) if encoded else new_histogram()


def summarize_ms(histogram: HdrHistogram) -> dict[str, float]:
    """p50/p90/p99/p999/max/mean in milliseconds; NaN when nothing was recorded."""
    if histogram.get_total_count() == 0:
        return {name: math.nan for name in (*PERCENTILES, "max", "mean")}
    figures = {name: histogram.get_value_at_percentile(p) / 1000.0 for name, p in PERCENTILES.items()}
    figures["max"] = histogram.get_max_value() / 1000.0
    figures["mean"] = histogram.get_mean_value() / 1000.0
    return figures


def point_identity(line: str) -> tuple[str, int, int]:
    """(device_id, seq, ts_ms) of a line-protocol point written by the bridge (seq is its last field)."""
    head, _, ts = line.rpartition(" ")
    seq_at = head.rindex("seq=")
    device_at = head.index("device_id=") + 10
    device_end = device_at
    while device_end < len(head) and (head[device_end] not in ", " or head[device_end - 1] == "\\"):
        device_end += 1
    return head[device_at:device_end], int(head[seq_at + 4 : -1]), int(ts)


class SeqTracker:
    """Which sequence numbers of each device were written: counts distinct, duplicates and gaps."""

    def __init__(self) -> None:
        self.seen: dict[str, bytearray] = {}
        self.highest: dict[str, int] = {}
        self.distinct = 0
        self.duplicates = 0

    def add(self, device_id: str, seq: int) -> None:
        bits = self.seen.get(device_id)
        if bits is None:
            bits = self.seen[device_id] = bytearray()
            self.highest[device_id] = -1
        byte, bit = divmod(seq, 8)
        if byte >= len(bits):
            bits.extend(bytes(byte - len(bits) + 1 + len(bits) // 2))
        if bits[byte] >> bit & 1:
            self.duplicates += 1
            return
        bits[byte] |= 1 << bit
        self.distinct += 1
        if seq > self.highest[device_id]:
            self.highest[device_id] = seq

    def gaps(self) -> int:
        """Sequence numbers missing below each device's highest written one."""
        return sum(self.highest[device] + 1 for device in self.seen) - self.distinct


@dataclass
class Usage:
    cpu_percent: float  # of one core; 200 = two cores busy
    rss_mb: float


class ResourceSampler:
    """CPU and resident memory of a set of processes (the workers, or the bridge), between samples."""

    def __init__(self, pids: list[int]) -> None:
        self.processes = []
        for pid in pids:
            try:
                process = psutil.Process(pid)
                process.cpu_percent(None)  # starts the measurement interval
                self.processes.append(process)
            except psutil.Error:
                pass

    def sample(self) -> Usage:
        """The interval's CPU and the current memory; NaN once every process has exited."""
        cpu = rss = 0.0
        alive = 0
        for process in self.processes:
            try:
                with process.oneshot():
                    cpu += process.cpu_percent(None)
                    rss += process.memory_info().rss / 1e6
                alive += 1
            except psutil.Error:
                continue  # it has exited
        return Usage(cpu, rss) if alive else Usage(math.nan, math.nan)
