"""Device connections held on one Mosquitto: every device its own MQTT session (issue 15).

For each size in `--sizes`, a fresh broker (a real process, a temporary directory, persistence on)
and `DeviceSessions` (simulator/transport/sessions.py) with that many devices, first connects spread
over `--window` s. Every device then publishes a small QoS 1 message every `--cadence` s (each at its
own phase) for `--minutes`; midway the broker is restarted (SIGTERM, started again on the same port),
and the devices reconnect by exponential backoff with full jitter (`--min` to `--max` s) while their
outboxes keep what they publish meanwhile. A subscriber in its own process (mosquitto_sub, persistent
session) receives everything. Figures per size:

- connected: devices connected at once (the broker's own count, `$SYS/broker/clients/connected`,
  less the subscriber), connect time and rate, CONNECT→CONNACK p50 / p99;
- memory: our RSS and Mosquitto's per connection (RSS after all connected less before, / devices);
- the storm: seconds from the restarted broker accepting connections until every device was back,
  and its connects/s;
- loss: messages published, received, missing and duplicated (per device and seq).

    .venv/bin/python benchmarks/connections.py [--sizes 1000,5000,19000] [--cadence 60] [--minutes 2] [--window 0] [--json FILE]

One process holds at most ~19,900 sockets here (20,000 open files, hard limit), Mosquitto too: 19,000
is the most one broker takes on this machine.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
import psutil
from rich.console import Console
from rich.table import Table

from simulator import stack
from simulator.fleet import ReconnectPolicy
from simulator.randomness import Stream, stream_key
from simulator.transport.sessions import DeviceSessions, SessionSettings, raise_open_files

console = Console(width=170)
PREFIX = "bench"


@dataclass
class Figures:
    devices: int
    connected: int
    broker_counted: int | None
    connect_s: float
    connects_per_s: float
    connect_p50_ms: int
    connect_p99_ms: int
    our_bytes_per_connection: int
    broker_bytes_per_connection: int
    storm_s: float | None
    storm_connects_per_s: float | None
    published: int
    received: int
    missing: int
    duplicates: int
    overflowed: int
    cpu_s: float


class Subscriber:
    """mosquitto_sub in its own process, persistent session: every message it gets, as (topic, payload)."""

    def __init__(self, port: int) -> None:
        command = ["mosquitto_sub", "-p", str(port), "-q", "1", "-i", "bench-sub", "-c", "-F", "%t %p", "-t", f"{PREFIX}/data/#", "-t", "$SYS/broker/clients/connected"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.lines: list[bytes] = []
        self.connected: int | None = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(b"$SYS/"):
                self.connected = int(line.split(b" ", 1)[1])
            else:
                self.lines.append(line)

    def stop(self) -> None:
        stack.stop_pid(self.process.pid)
        self.process.wait(timeout=10)
        self.reader.join(timeout=10)


def start_broker(state: Path, port: int, conf_dir: Path) -> stack.Service:
    return stack.start_mosquitto(state, port, conf_dir=conf_dir)


def measure(devices: int, args: argparse.Namespace, work: Path) -> Figures:
    conf_dir = work / "conf.d"
    conf_dir.mkdir(parents=True)
    for conf in (stack.BROKERS_DIR / "conf.d").glob("*.conf"):
        shutil.copy(conf, conf_dir / conf.name)
    (conf_dir / "90-bench.conf").write_text("sys_interval 1\nconnection_messages false\n")
    broker = start_broker(work / "state", stack.free_port(), conf_dir)
    subscriber = Subscriber(broker.port)
    me, broker_process = psutil.Process(), psutil.Process(broker.pid)
    try:
        time.sleep(1.0)  # the subscriber's session in place before any device publishes
        gc.collect()
        our_before, broker_before = me.memory_info().rss, broker_process.memory_info().rss
        cpu_before = sum(me.cpu_times()[:2])
        ids = [f"em-{n:05d}" for n in range(devices)]
        policy = ReconnectPolicy(min=args.min, max=args.max)
        settings = SessionSettings(port=broker.port, prefix=PREFIX, connect_window=args.window, seed=1, reconnect=policy)
        sessions = DeviceSessions(ids, settings)
        started = time.monotonic()
        sessions.start()
        if not sessions.run_until(sessions.all_connected, timeout=args.window + 120):
            console.print(f"{devices}: only {sessions.stats.connected} connected")
        connect_s = time.monotonic() - started
        gc.collect()
        our_bytes = (me.memory_info().rss - our_before) // devices
        broker_bytes = (broker_process.memory_info().rss - broker_before) // devices
        counted = wait_for_count(subscriber, sessions, devices + 1, timeout=5)

        # Publishing: each device every cadence s at its own phase; the broker restarted midway.
        seq = dict.fromkeys(ids, 0)
        due = [(time.monotonic() + Stream(stream_key(1, f"{device}/phase")).uniform(0, args.cadence), device) for device in ids]
        heapq.heapify(due)
        end = time.monotonic() + args.minutes * 60
        restart_at = time.monotonic() + args.minutes * 30
        storm_s: float | None = None
        while time.monotonic() < end:
            now = time.monotonic()
            while due and due[0][0] <= now:
                _, device = heapq.heappop(due)
                sessions.publish(device, f"{PREFIX}/data/{device}", orjson.dumps({"device_id": device, "seq": seq[device], "ts": time.time_ns() // 1_000_000}))
                seq[device] += 1
                heapq.heappush(due, (now + args.cadence, device))
            if storm_s is None and now >= restart_at:
                storm_s, broker, broker_process = restart(broker, work, conf_dir, sessions, seq)
            sessions.turn(min(0.05, max(0.0, due[0][0] - time.monotonic())) if due else 0.05)
        sessions.run_until(sessions.drained, timeout=60)
        time.sleep(2.0)  # the subscriber's last messages
        cpu_s = sum(me.cpu_times()[:2]) - cpu_before
        received = Counter()
        for line in subscriber.lines:
            payload = orjson.loads(line.split(b" ", 1)[1])
            received[(payload["device_id"], payload["seq"])] += 1
        expected = {(device, n) for device in ids for n in range(seq[device])}
        latency = sessions.stats.latency_ms
        figures = Figures(
            devices=devices,
            connected=sessions.stats.connected,
            broker_counted=counted,
            connect_s=round(connect_s, 2),
            connects_per_s=round(devices / connect_s, 1),
            connect_p50_ms=latency.get_value_at_percentile(50),
            connect_p99_ms=latency.get_value_at_percentile(99),
            our_bytes_per_connection=our_bytes,
            broker_bytes_per_connection=broker_bytes,
            storm_s=round(storm_s, 2) if storm_s is not None else None,
            storm_connects_per_s=round(devices / storm_s, 1) if storm_s else None,
            published=sum(seq.values()),
            received=sum(received.values()),
            missing=len(expected - set(received)),
            duplicates=sum(count - 1 for count in received.values() if count > 1),
            overflowed=sessions.stats.overflowed,
            cpu_s=round(cpu_s, 1),
        )
        sessions.close()
        return figures
    finally:
        subscriber.stop()
        broker.stop()


def wait_for_count(subscriber: Subscriber, sessions: DeviceSessions, expected: int, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while subscriber.connected != expected and time.monotonic() < deadline:
        sessions.turn(0.05)
    return subscriber.connected - 1 if subscriber.connected is not None else None  # less the subscriber


def restart(broker: stack.Service, work: Path, conf_dir: Path, sessions: DeviceSessions, seq: dict[str, int]) -> tuple[float, stack.Service, psutil.Process]:
    """Stop the broker (SIGTERM: it saves the subscriber's session), start it again on its port; seconds until every device is back."""
    port = broker.port
    broker.stop()
    sessions.run_until(lambda: sessions.stats.connected == 0, timeout=30)
    for device in seq:  # one message each while the broker is away: into the devices' outboxes
        sessions.publish(device, f"{PREFIX}/data/{device}", orjson.dumps({"device_id": device, "seq": seq[device], "ts": time.time_ns() // 1_000_000}))
        seq[device] += 1
    broker = start_broker(work / "state", port, conf_dir)
    restarted = time.monotonic()
    sessions.run_until(sessions.all_connected, timeout=300)
    return time.monotonic() - restarted, broker, psutil.Process(broker.pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000,19000", help="device counts, comma-separated")
    parser.add_argument("--cadence", type=float, default=60.0, help="seconds between one device's messages")
    parser.add_argument("--minutes", type=float, default=2.0, help="minutes of publishing per size (the broker restarts midway)")
    parser.add_argument("--window", type=float, default=0.0, help="seconds the first connects are spread over (0: all at once, the connect rate)")
    parser.add_argument("--min", type=float, default=1.0, help="reconnect backoff: first wait, s")
    parser.add_argument("--max", type=float, default=30.0, help="reconnect backoff: longest wait, s")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    raise_open_files(max(sizes))  # Mosquitto inherits the raised limit
    results = []
    for devices in sizes:
        with tempfile.TemporaryDirectory(prefix="iotsim-connections-") as tmp:
            results.append(measure(devices, args, Path(tmp)))
        console.print(results[-1])
    table = Table(title=f"device connections on one Mosquitto, QoS 1 every {args.cadence:g} s, broker restarted midway")
    for column in ("devices", "connected ($SYS)", "connects/s", "p50/p99 ms", "our B/conn", "broker B/conn", "storm s", "storm conn/s", "published", "missing", "dup", "CPU s"):
        table.add_column(column, justify="right")
    for f in results:
        table.add_row(
            f"{f.devices:,}", f"{f.connected:,} ({f.broker_counted})", f"{f.connects_per_s:,.0f}", f"{f.connect_p50_ms}/{f.connect_p99_ms}",
            f"{f.our_bytes_per_connection:,}", f"{f.broker_bytes_per_connection:,}", f"{f.storm_s}", f"{f.storm_connects_per_s}",
            f"{f.published:,}", f"{f.missing}", f"{f.duplicates}", f"{f.cpu_s}",
        )  # fmt: skip
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps([asdict(f) for f in results], indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
