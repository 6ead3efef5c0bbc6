"""Device connections held on Mosquitto: every device its own MQTT session (issue 15).

For each size in `--sizes`, `--brokers` fresh brokers (real processes, temporary directories,
persistence on) and `--processes` worker processes, each with its own `DeviceSessions`
(simulator/transport/sessions.py) for its share of the devices, connected to broker (worker number
mod brokers); first connects spread over `--window` s. Every device then publishes a small QoS 1
message every `--cadence` s (each at its own phase) for `--minutes`; midway every broker is
restarted (SIGTERM, started again on its port), and the devices reconnect by exponential backoff with
full jitter (`--min` to `--max` s) while their outboxes keep what they publish meanwhile. A subscriber
per broker in its own process (mosquitto_sub, persistent session) receives everything. Figures per size:

- connected: devices connected at once (the brokers' own counts, `$SYS/broker/clients/connected`,
  less the subscribers), connect time and rate, CONNECT→CONNACK p50 / p99;
- memory: our RSS and Mosquitto's per connection (RSS after all connected less before, summed over
  the processes, / devices);
- the storm: seconds from the restarted brokers accepting connections until every device was back,
  and its connects/s;
- loss: messages published, received, missing and duplicated (per device and seq).

`--tls`: the devices connect to each broker's TLS listener (a test CA and certificate from
brokers/secure/make-test-certs.sh, one SSLContext for all devices; the subscriber stays on plain MQTT).

    .venv/bin/python benchmarks/connections.py [--sizes 1000,5000,19000] [--brokers 1] [--processes 1] [--cadence 60] [--minutes 2] [--window 0] [--tls] [--json FILE]
    .venv/bin/python benchmarks/connections.py --sizes 50000 --brokers 3 --processes 3

A process holds at most ~19,900 sockets here (20,000 open files, hard limit), each Mosquitto too: 19,000
is the most one broker (or one worker) takes on this machine, and a size that would put more on one is
refused in one line. SIGTERM or Ctrl-C stops every broker, subscriber and worker it started (one line,
exit 130).
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import math
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import common  # benchmarks/common.py, beside this script: the flag checks and the way out on signals
import orjson
import psutil
from hdrh.histogram import HdrHistogram
from rich.console import Console
from rich.table import Table

from simulator import stack
from simulator.fleet import ReconnectPolicy
from simulator.randomness import Stream, stream_key
from simulator.transport.sessions import FILES_MARGIN, LATENCY_MAX_MS, PORTS_PER_ADDRESS, DeviceSessions, SessionSettings, raise_open_files

console = Console(width=170)
PREFIX = "bench"
WORKER_TIMEOUT_S = 600  # the longest the parent waits for a worker's answer (building and connecting 19,000 takes ~30 s)
LAST_MESSAGES_S = 30.0  # the longest the parent waits for the subscribers to receive what the devices published


@dataclass
class Figures:
    tls: bool
    devices: int
    brokers: int
    processes: int
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


@dataclass(frozen=True)
class Work:
    """What one worker process runs: its devices, its broker, its loopback source addresses."""

    number: int
    ids: list[str]
    port: int
    ca_file: str | None  # a TLS port: its CA; None: plain MQTT
    addresses: tuple[str, ...]
    cadence: float
    window: float
    min: float
    max: float


class Subscriber:
    """mosquitto_sub in its own process, persistent session: every message it gets, as (topic, payload)."""

    def __init__(self, port: int, number: int) -> None:
        command = ["mosquitto_sub", "-p", str(port), "-q", "1", "-i", f"bench-sub-{number}", "-c", "-F", "%t %p", "-t", f"{PREFIX}/data/#", "-t", "$SYS/broker/clients/connected"]
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

    def wait_subscribed(self, timeout: float = 30.0) -> None:
        """Until the broker's retained client count arrives: it comes after the SUBACK, so the session is in place."""
        deadline = time.monotonic() + timeout
        while self.connected is None:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"mosquitto_sub bench-sub: not subscribed after {timeout:.0f} s")
            time.sleep(0.02)

    def stop(self) -> None:
        stack.stop_pid(self.process.pid)
        self.process.wait(timeout=10)
        self.reader.join(timeout=10)


def message(device: str, seq: int) -> bytes:
    return orjson.dumps({"device_id": device, "seq": seq, "ts": time.time_ns() // 1_000_000})


def worker(work: Work, pipe: Connection) -> None:
    """One process's devices: connect when told, publish until the end it is told, answer with its figures."""
    common.leave_ctrl_c_to_the_parent()
    raise_open_files(len(work.ids))
    me = psutil.Process()
    gc.collect()
    rss_before, cpu_before = me.memory_info().rss, sum(me.cpu_times()[:2])
    settings = SessionSettings(
        port=work.port, prefix=PREFIX, connect_window=work.window, seed=1, reconnect=ReconnectPolicy(min=work.min, max=work.max), source_addresses=work.addresses,
        tls=work.ca_file is not None, ca_file=work.ca_file,
    )  # fmt: skip
    sessions = DeviceSessions(work.ids, settings)
    pipe.send("built")
    pipe.recv()  # go
    started = time.monotonic()
    sessions.start()
    sessions.run_until(sessions.all_connected, timeout=work.window + 300)
    connected_at = time.monotonic()
    gc.collect()
    pipe.send({"started": started, "connected_at": connected_at, "connected": sessions.stats.connected, "rss": me.memory_info().rss - rss_before})
    end = pipe.recv()  # the monotonic time publishing ends (CLOCK_MONOTONIC is one clock for all processes)
    seq = dict.fromkeys(work.ids, 0)
    due = [(time.monotonic() + Stream(stream_key(1, f"{device}/phase")).uniform(0, work.cadence), device) for device in work.ids]
    heapq.heapify(due)
    back_at: float | None = None
    while time.monotonic() < end:
        now = time.monotonic()
        while due and due[0][0] <= now:
            _, device = heapq.heappop(due)
            sessions.publish(device, f"{PREFIX}/data/{device}", message(device, seq[device]))
            seq[device] += 1
            heapq.heappush(due, (now + work.cadence, device))
        if back_at is None and sessions.stats.disconnects and sessions.all_connected():
            back_at = time.monotonic()  # every device back after the brokers' restart
        sessions.turn(min(0.05, max(0.0, due[0][0] - time.monotonic())) if due else 0.05)
    drained = sessions.run_until(sessions.drained, timeout=60)
    stats = sessions.stats
    pipe.send(
        {
            "seq": seq, "back_at": back_at, "drained": drained, "overflowed": stats.overflowed, "latency": stats.latency_ms.encode(),
            "cpu": sum(me.cpu_times()[:2]) - cpu_before, "connected": stats.connected,
        }
    )  # fmt: skip
    sessions.close()
    pipe.send("closed")


def plan(devices: int, brokers: int, processes: int) -> list[tuple[list[str], int]]:
    """Each worker's device ids (contiguous shares) and its broker's number; exit 2 in one line if a
    worker or a broker would hold more sockets than the open-files hard limit lets it."""
    hard = common.open_files_hard_limit()
    ids = [f"em-{n:05d}" for n in range(devices)]
    shares = [ids[devices * w // processes : devices * (w + 1) // processes] for w in range(processes)]
    per_broker = Counter()
    for number, share in enumerate(shares):
        per_broker[number % brokers] += len(share)
    most_worker, most_broker = max(len(share) for share in shares), max(per_broker.values())
    if max(most_worker, most_broker + 1) + FILES_MARGIN > hard:
        common.usage_error(f"--sizes {devices}: {most_worker:,} connections a worker and {most_broker:,} a broker, but a process may open {hard:,} files: give more --processes and --brokers")
    return [(share, number % brokers) for number, share in enumerate(shares)]


def source_addresses(shares: list[int]) -> list[tuple[str, ...]]:
    """Each worker's own loopback source addresses, PORTS_PER_ADDRESS connections each: 127.0.0.1, .2, ..."""
    addresses, next_host = [], 1
    for count in shares:
        needed = max(1, math.ceil(count / PORTS_PER_ADDRESS))
        if next_host + needed > 255:
            common.usage_error(f"--processes: {len(shares)} workers need more than 254 source addresses in 127.0.0.x")
        addresses.append(tuple(f"127.0.0.{host}" for host in range(next_host, next_host + needed)))
        next_host += needed
    return addresses


def bench_conf(work: Path) -> Path:
    conf_dir = work / "conf.d"
    conf_dir.mkdir(parents=True)
    for conf in (stack.BROKERS_DIR / "conf.d").glob("*.conf"):
        shutil.copy(conf, conf_dir / conf.name)
    (conf_dir / "90-bench.conf").write_text("sys_interval 1\nconnection_messages false\n")
    return conf_dir


def make_certificates(work: Path) -> Path:
    """The test CA and broker certificate (brokers/secure/make-test-certs.sh) in `work`/certs."""
    certs = work / "certs"
    done = subprocess.run(["sh", str(stack.SECURE_DIR / "make-test-certs.sh"), str(certs)], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise SystemExit(f"--tls: make-test-certs.sh failed: {done.stderr.strip()}")
    return certs


def start_broker(state_dir: Path, port: int, tls_port: int | None, conf_dir: Path, certs: Path | None) -> stack.Service:
    """Mosquitto with the shared settings on `port`, and with `certs` a TLS listener on `tls_port` (anonymous, as the dev profile)."""
    if certs is None or tls_port is None:
        return stack.start_mosquitto(state_dir, port, conf_dir=conf_dir)
    listeners = (
        f"listener {port} 127.0.0.1\nlistener {tls_port} 127.0.0.1\n"
        f"cafile {certs / 'ca.crt'}\ncertfile {certs / 'server.crt'}\nkeyfile {certs / 'server.key'}\ntls_version tlsv1.2\n"
    )
    return stack.run_mosquitto(state_dir, (port, tls_port), conf_dir, 15.0, ": benchmarks/connections.py --tls.", listeners)


def measure(devices: int, args: argparse.Namespace, work: Path) -> Figures:
    conf_dir = bench_conf(work)
    layout = plan(devices, args.brokers, args.processes)
    context = multiprocessing.get_context("spawn")
    # What runs now, each added as it starts: the way out (an error, SIGTERM, Ctrl-C) stops exactly these.
    brokers: list[stack.Service] = []
    subscribers: list[Subscriber] = []
    pipes: list[Connection] = []
    workers: list[Any] = []
    certs: Path | None = None
    tls_ports: list[int | None] = []
    try:
        certs = make_certificates(work) if args.tls else None
        tls_ports = [stack.free_port() if certs else None for _ in range(args.brokers)]
        for n in range(args.brokers):
            brokers.append(start_broker(work / f"state-{n}", stack.free_port(), tls_ports[n], conf_dir, certs))
        for n, broker in enumerate(brokers):
            subscribers.append(Subscriber(broker.port, n))
        for subscriber in subscribers:
            subscriber.wait_subscribed()  # the subscribers' sessions in place before any device publishes
        broker_before = sum(psutil.Process(broker.pid).memory_info().rss for broker in brokers)
        addresses = source_addresses([len(share) for share, _ in layout])
        for number, ((share, broker), own) in enumerate(zip(layout, addresses, strict=True)):
            parent, child = context.Pipe()
            port = tls_ports[broker] or brokers[broker].port
            work_item = Work(number, share, port, str(certs / "ca.crt") if certs else None, own, args.cadence, args.window, args.min, args.max)
            process = context.Process(target=worker, args=(work_item, child), daemon=True)
            process.start()
            pipes.append(parent)
            workers.append(process)
        answers = [receive(pipe) for pipe in pipes]  # every worker built its clients
        for pipe in pipes:
            pipe.send("go")
        connected = [receive(pipe) for pipe in pipes]
        connect_s = max(answer["connected_at"] for answer in connected) - min(answer["started"] for answer in connected)
        if sum(answer["connected"] for answer in connected) < devices:
            console.print(f"{devices}: only {sum(answer['connected'] for answer in connected)} connected")
        counted = wait_for_counts(subscribers, [sum(len(share) for share, b in layout if b == n) + 1 for n in range(args.brokers)], timeout=5)
        broker_bytes = (sum(psutil.Process(broker.pid).memory_info().rss for broker in brokers) - broker_before) // devices
        our_bytes = sum(answer["rss"] for answer in connected) // devices

        # Publishing for --minutes; midway every broker is restarted.
        start = time.monotonic()
        end = start + args.minutes * 60
        for pipe in pipes:
            pipe.send(end)
        time.sleep(max(0.0, start + args.minutes * 30 - time.monotonic()))
        ports = [broker.port for broker in brokers]
        while brokers:  # each stays listed until it has stopped: the way out stops what an interrupt left
            brokers[-1].stop()
            brokers.pop()
        for n, port in enumerate(ports):
            brokers.append(start_broker(work / f"state-{n}", port, tls_ports[n], conf_dir, certs))
        restarted = time.monotonic()
        results = [receive(pipe) for pipe in pipes]
        wait_for_messages(subscribers, sum(count for result in results for count in result["seq"].values()))  # the last ones
        received = Counter()
        for subscriber in subscribers:
            for line in subscriber.lines:
                payload = orjson.loads(line.split(b" ", 1)[1])
                received[(payload["device_id"], payload["seq"])] += 1
        seq = {device: count for result in results for device, count in result["seq"].items()}
        expected = {(device, n) for device, count in seq.items() for n in range(count)}
        latency = HdrHistogram(1, LATENCY_MAX_MS, 3)
        for result in results:
            latency.add(HdrHistogram.decode(result["latency"]))
        backs = [result["back_at"] for result in results]
        storm_s = max(backs) - restarted if all(back is not None for back in backs) else None
        figures = Figures(
            tls=args.tls,
            devices=devices,
            brokers=args.brokers,
            processes=args.processes,
            connected=sum(answer["connected"] for answer in connected),
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
            overflowed=sum(result["overflowed"] for result in results),
            cpu_s=round(sum(result["cpu"] for result in results), 1),
        )
        for pipe in pipes:
            receive(pipe, timeout=60)  # closed
        for process in workers:
            process.join(timeout=30)
        del answers
        return figures
    finally:
        with common.signals_deferred():  # a signal now would leave the rest running
            for process in workers:
                common.kill_if_alive(process)
            for subscriber in subscribers:
                subscriber.stop()
            for broker in brokers:
                broker.stop()


def receive(pipe: Connection, timeout: float = WORKER_TIMEOUT_S) -> Any:
    if not pipe.poll(timeout):
        raise SystemExit(f"a worker gave no answer in {timeout:.0f} s")
    return pipe.recv()


def wait_for_messages(subscribers: list[Subscriber], count: int, timeout: float = LAST_MESSAGES_S) -> None:
    """Until the subscribers hold `count` distinct messages or `timeout` passed (what is missing then is reported
    lost), and a moment more for copies sent again close behind (reported as duplicates)."""
    deadline = time.monotonic() + timeout

    def short() -> bool:  # the lines' count first: distinct ones (a set of every line) only once there are enough
        return sum(len(s.lines) for s in subscribers) < count or sum(len(set(s.lines)) for s in subscribers) < count

    while short() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)


def wait_for_counts(subscribers: list[Subscriber], expected: list[int], timeout: float) -> int | None:
    """The devices the brokers count connected (less the subscribers), once every count is as expected or `timeout` passed."""
    deadline = time.monotonic() + timeout
    while [s.connected for s in subscribers] != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    counts = [s.connected for s in subscribers]
    return sum(count - 1 for count in counts if count is not None) if all(count is not None for count in counts) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000,19000", help="device counts, comma-separated")
    parser.add_argument("--brokers", type=int, default=1, help="Mosquitto processes; worker n connects to broker n mod this")
    parser.add_argument("--processes", type=int, default=1, help="worker processes, each its own DeviceSessions for an equal share of the devices")
    parser.add_argument("--cadence", type=float, default=60.0, help="seconds between one device's messages")
    parser.add_argument("--minutes", type=float, default=2.0, help="minutes of publishing per size (the brokers restart midway)")
    parser.add_argument("--window", type=float, default=0.0, help="seconds the first connects are spread over (0: all at once, the connect rate)")
    parser.add_argument("--min", type=float, default=1.0, help="reconnect backoff: first wait, s")
    parser.add_argument("--max", type=float, default=30.0, help="reconnect backoff: longest wait, s")
    parser.add_argument("--tls", action="store_true", help="the devices connect over TLS (a test CA; the subscribers stay on plain MQTT)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.brokers < 1 or args.processes < args.brokers:
        common.usage_error("--brokers must be at least 1 and --processes at least --brokers (each worker connects to one broker)")
    if not common.seconds_ok((args.cadence, args.minutes, args.min, args.max), (args.window,)) or args.min > args.max:
        common.usage_error("--cadence and --minutes above 0, --window 0 or more, 0 < --min <= --max (finite seconds)")
    sizes = common.device_counts(args.sizes)
    raise_open_files(0)  # the hard limit for us and the brokers, which inherit it
    for devices in sizes:
        plan(devices, args.brokers, args.processes)  # a size too big for the limit: one line before anything runs
    results = []
    for devices in sizes:
        with tempfile.TemporaryDirectory(prefix="iotsim-connections-") as tmp:
            results.append(measure(devices, args, Path(tmp)))
        console.print(results[-1])
    table = Table(title=f"device connections{' over TLS' if args.tls else ''}, QoS 1 every {args.cadence:g} s, brokers restarted midway")
    for column in ("devices", "brokers", "processes", "connected ($SYS)", "connects/s", "p50/p99 ms", "our B/conn", "broker B/conn", "storm s", "storm conn/s", "published", "missing", "dup", "CPU s"):
        table.add_column(column, justify="right")
    for f in results:
        table.add_row(
            f"{f.devices:,}", f"{f.brokers}", f"{f.processes}", f"{f.connected:,} ({f.broker_counted})", f"{f.connects_per_s:,.0f}", f"{f.connect_p50_ms}/{f.connect_p99_ms}",
            f"{f.our_bytes_per_connection:,}", f"{f.broker_bytes_per_connection:,}", f"{f.storm_s}", f"{f.storm_connects_per_s}",
            f"{f.published:,}", f"{f.missing}", f"{f.duplicates}", f"{f.cpu_s}",
        )  # fmt: skip
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps([asdict(f) for f in results], indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(common.run(main))
