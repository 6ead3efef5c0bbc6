"""Baselines shared by pipeline.py and capacity.py: the C clients at our publisher's window, and the floor.

The floor is the rate the pipeline would carry if the simulator and the bridge cost nothing: what
Mosquitto spends per message passing the C clients' traffic, plus what InfluxDB spends per point
storing the same messages' line protocol in large gzip batches, both measured in the same run:

    floor_msgs_per_s = cores / (broker µs per message + InfluxDB µs per point)

CPU comes from /proc/PID/stat (utime + stime) before and after each pass.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from simulator import stack
from simulator.influx import InfluxClient
from simulator.ingest.lineprotocol import to_line
from simulator.scenario import MqttSettings
from simulator.transport.mqtt import MqttPublisher

DEFAULT_WINDOW = 20  # mosquitto_pub's in-flight window without -M
FLOOR_BATCH = 5_000  # points per POST for InfluxDB's floor: large enough that per-request costs vanish
FLOOR_DATABASE = "floor"  # its own databases (floor1, floor2 ...), so the end-to-end counts never see these points
FLOOR_PASSES = 3  # InfluxDB's CPU per point varies from pass to pass on a shared machine: the median counts
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Floor:
    cores: int
    broker_us_per_msg: float
    influxd_us_per_point: float  # the median pass's
    influxd_points_per_s: float  # from one client, the median pass's, for the record
    influxd_us_per_point_passes: tuple[float, ...]

    @property
    def msgs_per_s(self) -> float:
        return self.cores * 1e6 / (self.broker_us_per_msg + self.influxd_us_per_point)

    def as_json(self) -> dict[str, float]:
        return {**asdict(self), "floor_msgs_per_s": self.msgs_per_s}


def cores() -> int:
    """CPUs this process may run on (its affinity), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces; it ends at the last ')'
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of stat(5), counted from 1


def publisher_window(settings: MqttSettings) -> int:
    """Our publisher's in-flight window for these settings (built, never connected)."""
    return MqttPublisher.from_settings(settings, "bench-window").window


def mosquitto_pub(port: int, qos: int, topic: str, window: int | None) -> list[str]:
    """`mosquitto_pub -l` reading payloads from stdin; `window` None = its default (DEFAULT_WINDOW)."""
    command = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", str(qos), "-t", topic, "-l"]
    return command if window is None else [*command, "-M", str(window)]


def window_label(window: int | None) -> str:
    return f"mosquitto_pub default window ({DEFAULT_WINDOW})" if window is None else f"mosquitto_pub -M {window} (our publisher's window)"


def influxd_floor(influx: stack.Service, lines: list[str], database: str) -> tuple[float, float]:
    """`lines` POSTed straight to InfluxDB's fresh `database` in FLOOR_BATCH-point gzip batches:
    (influxd CPU seconds, wall seconds)."""
    client = InfluxClient(influx.url, database)
    try:
        client.create_database()
        before, started = cpu_seconds(influx.pid), time.perf_counter()
        for start in range(0, len(lines), FLOOR_BATCH):
            refused = client.write(lines[start : start + FLOOR_BATCH])
            assert not refused, refused[:1]
        elapsed, cpu = time.perf_counter() - started, cpu_seconds(influx.pid) - before
        stored = client.query('SELECT count("seq") FROM /.*/')
    finally:
        client.close()
    assert sum(s["values"][0][1] for s in stored) == len(lines), "InfluxDB did not store every floor point"
    return cpu, elapsed


def measure_floor(broker_cpu_s: float, broker_msgs: int, influx: stack.Service, topics_and_payloads: Iterator[tuple[str, bytes]]) -> Floor:
    """The floor from the broker's CPU over the C clients' best-window pass(es) and InfluxDB's over
    FLOOR_PASSES direct writes of the bridge's points for these messages (the median pass)."""
    lines = [to_line(topic, payload)[0] for topic, payload in topics_and_payloads]
    passes = [influxd_floor(influx, lines, f"{FLOOR_DATABASE}{index}") for index in range(1, FLOOR_PASSES + 1)]
    cpu_s, wall_s = sorted(passes)[len(passes) // 2]
    return Floor(cores(), 1e6 * broker_cpu_s / broker_msgs, 1e6 * cpu_s / len(lines), len(lines) / wall_s, tuple(1e6 * c / len(lines) for c, _ in passes))


def run_c_pass(command: list[str], payload_file: Path) -> None:
    with open(payload_file, "rb") as lines:
        subprocess.run(command, stdin=lines, check=True, timeout=600)
