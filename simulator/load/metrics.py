"""What a load experiment measures: HDR latency histograms, sequence numbers, CPU and memory.

Latencies are recorded in microseconds in HDR histograms (3 significant digits, up to one hour), one
per reporting interval; intervals travel between processes as HDR's compressed base64 encoding and
add up to the whole run's histogram. Loss and duplicates come from the per-device `seq` of every
point the bridge wrote: a bitmap per device. CPU and memory come from psutil: of the processes the
runner started, of the broker and the database when they run on this machine (found by the port
they listen on), and of the whole machine.
"""

from __future__ import annotations

import ipaddress
import math
import re
import threading
from dataclasses import dataclass
from typing import Any

import psutil
from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour
SIGNIFICANT_DIGITS = 3
TAG_VALUE = re.compile(r"(?:[^\\, ]|\\.)*")  # a line-protocol tag value: up to the first unescaped comma or space
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


def take_all(*recorders: LatencyRecorder) -> str:
    """The recorders' intervals added up, encoded ('' if none), each with a fresh interval."""
    histogram = new_histogram()
    for recorder in recorders:
        histogram.add(decode(recorder.take()))
    return histogram.encode().decode() if histogram.get_total_count() else ""


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
    device = TAG_VALUE.match(head, head.index(",device_id=") + len(",device_id="))
    assert device is not None  # the pattern matches the empty string too
    return device.group(), int(head[seq_at + 4 : -1]), int(ts)


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


class MachineSampler:
    """CPU of the whole machine (every process on it) between samples, in % of one core like `Usage`."""

    def __init__(self) -> None:
        self.cores = psutil.cpu_count() or 1
        psutil.cpu_percent(None)  # starts the measurement interval

    def sample(self) -> float:
        return round(psutil.cpu_percent(None) * self.cores, 1)


# Processes that hold a published port for a server in a container: their CPU is not the server's.
PORT_FORWARDERS = frozenset({"docker-proxy", "rootlessport", "rootlesskit", "slirp4netns"})


@dataclass(frozen=True)
class Server:
    """A server's process on this machine, found by the TCP port it listens on; pid None: not sampled."""

    port: int
    pid: int | None = None
    process: str | None = None  # its name, e.g. "mosquitto"
    note: str | None = None  # why it is not sampled

    def pids(self) -> list[int]:
        return [] if self.pid is None else [self.pid]

    def describe(self) -> str:
        return self.note or f"{self.process} (PID {self.pid}, port {self.port})"


def find_server(host: str, port: int) -> Server:
    """The process listening on `host`:`port`, best effort: only a loopback host is looked up here."""
    if not is_loopback(host):
        return Server(port, note=f"not sampled ({host} is not a loopback address, so its process is not on this machine)")
    try:
        listening = listening_pids(port)
    except psutil.Error as error:
        return Server(port, note=f"not sampled (cannot list this machine's sockets: {type(error).__name__})")
    if not listening:
        return Server(port, note=f"not sampled (no local process listens on {port})")
    hidden = Server(port, note=f"not sampled (the process listening on {port} is not visible here: another user's, or a container's)")
    visible = sorted({pid for pid in listening if pid})
    if not visible:
        return hidden
    try:
        name = psutil.Process(visible[0]).name()
    except psutil.Error:
        return hidden
    if name in PORT_FORWARDERS:
        return Server(port, note=f"not sampled (port {port} is forwarded by {name}; the server runs in a container)")
    return Server(port, visible[0], name)


def listening_pids(port: int) -> list[int | None]:
    """PIDs of the sockets listening on TCP `port` for loopback clients; None where the process is hidden."""
    try:
        return [c.pid for c in psutil.net_connections(kind="tcp") if listens_on(c, port)]
    except psutil.AccessDenied:
        pass  # macOS lists every socket only to root; this user's own processes are still visible
    pids: list[int | None] = []
    for process in psutil.process_iter():
        try:
            if any(listens_on(c, port) for c in process.net_connections(kind="tcp")):
                pids.append(process.pid)
        except psutil.Error:
            continue
    return pids


def listens_on(connection: Any, port: int) -> bool:
    """A listening socket on `port` that a client of 127.0.0.1 or ::1 would reach."""
    if connection.status != psutil.CONN_LISTEN or not connection.laddr or connection.laddr.port != port:
        return False
    address = connection.laddr.ip
    return address in ("0.0.0.0", "::") or is_loopback(address)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
