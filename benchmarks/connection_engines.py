"""Which MQTT client library holds the device connections (issue 15, "Engine"): measured side by side.

Engines:
- `paho`: `DeviceSessions` itself (simulator/transport/sessions.py), paho-mqtt clients on one
  `selectors.EpollSelector` loop through paho's external-loop API;
- `gmqtt`, `aiomqtt`: each library's plain asyncio code on uvloop, one task per device.

For each size and engine, a fresh Mosquitto (free loopback port, temporary directory, stopped by PID)
and a fresh child process (so heaps do not mix). Every device connects with client id = its device id,
keepalive 60 s, a retained QoS 1 last will on its status topic, and publishes its birth there (retained,
QoS 1) as DeviceSessions does; at most 64 handshakes wait at once in every engine (Mosquitto listens
with a backlog of 100). Then `--idle` minutes with no messages (the loop and keepalive cost of holding
connections), then `--minutes` of every device publishing the same small QoS 1 message every
`--cadence` s at its own phase. A mosquitto_sub with a persistent session counts what arrived.
Figures per engine and size: connect time and connects/s, RSS per connection (after all connected less
before the clients were built, / devices), CPU per connection-minute idle, CPU per message while
publishing (keepalive and loop cost included), messages published, received and lost.

    .venv/bin/python benchmarks/connection_engines.py [--sizes 1000,5000] [--engines paho,gmqtt,aiomqtt] [--runs 1] [--cadence 60] [--minutes 1] [--idle 1] [--json FILE]

gmqtt, aiomqtt and uvloop are the `bench` extra (pip install -e '.[bench]'); an engine whose library is
missing is one line and exit 2. One process holds at most ~19,900 sockets here (20,000 open files):
a size above 19,000 is refused in one line. SIGTERM or Ctrl-C stops the broker, subscriber and child it
started (one line, exit 130).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import heapq
import importlib.util
import json
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import common  # benchmarks/common.py, beside this script: the flag checks and the way out on signals
import connections  # benchmarks/connections.py, beside this script: its subscriber, broker settings and payload
import orjson
import psutil
from rich.console import Console
from rich.table import Table

from simulator import stack
from simulator.randomness import Stream, stream_key
from simulator.transport.sessions import FILES_MARGIN, KEEPALIVE_S, MAX_CONNECTING, DeviceSessions, SessionSettings, raise_open_files, status_payload, wall_ms

console = Console(width=170)
PREFIX = connections.PREFIX
ENGINES = ("paho", "gmqtt", "aiomqtt")
LIBRARIES = {"paho": ("paho",), "gmqtt": ("gmqtt", "uvloop"), "aiomqtt": ("aiomqtt", "uvloop")}
MOST_DEVICES = 19_000  # one process holds at most ~19,900 sockets here (20,000 open files, hard limit)
CHILD_TIMEOUT_S = 900
DRAIN_S = 30.0  # the longest an engine waits for its last PUBACKs


@dataclass
class Figures:
    engine: str
    devices: int
    run: int
    connected: int
    connect_s: float
    connects_per_s: float
    bytes_per_connection: int
    idle_cpu_us_per_connection_minute: float
    cpu_us_per_message: float
    published: int
    received: int
    lost: int


@dataclass(frozen=True)
class Work:
    engine: str
    ids: list[str]
    port: int
    cadence: float
    idle_s: float
    publish_s: float


def phase(device: str, cadence: float) -> float:
    """The device's offset within a cadence: its own stream, the same for every engine. A device sends
    a message at each phase + k × cadence before the publishing phase's end."""
    return Stream(stream_key(1, f"{device}/phase")).uniform(0, cadence)


def status_topic(device: str) -> str:
    return f"{PREFIX}/status/{device}"


def data_topic(device: str) -> str:
    return f"{PREFIX}/data/{device}"


def cpu_s(me: psutil.Process) -> float:
    return sum(me.cpu_times()[:2])


class Meter:
    """A child's figures: RSS from before its clients are built, CPU per phase."""

    def __init__(self) -> None:
        self.me = psutil.Process()
        gc.collect()
        self.rss_before = self.me.memory_info().rss
        self.marks: dict[str, float] = {}

    def mark(self, name: str) -> None:
        self.marks[name] = cpu_s(self.me)

    def rss_added(self) -> int:
        gc.collect()
        return self.me.memory_info().rss - self.rss_before


# --- paho: DeviceSessions itself ---


def run_paho(work: Work, meter: Meter) -> dict[str, Any]:
    settings = SessionSettings(port=work.port, prefix=PREFIX, keepalive=KEEPALIVE_S, seed=1)
    sessions = DeviceSessions(work.ids, settings)
    started = time.monotonic()
    sessions.start()
    sessions.run_until(sessions.all_connected, timeout=600)
    connect_s = time.monotonic() - started
    rss = meter.rss_added()
    meter.mark("idle")
    sessions.run_until(lambda: False, timeout=work.idle_s)
    meter.mark("publish")
    end = time.monotonic() + work.publish_s
    seq = dict.fromkeys(work.ids, 0)
    start = end - work.publish_s
    due = [(start + phase(device, work.cadence), device) for device in work.ids if phase(device, work.cadence) < work.publish_s]
    heapq.heapify(due)
    while due:
        now = time.monotonic()
        while due and due[0][0] <= now:
            at, device = heapq.heappop(due)
            sessions.publish(device, data_topic(device), connections.message(device, seq[device]))
            seq[device] += 1
            if at + work.cadence < end:
                heapq.heappush(due, (at + work.cadence, device))  # on its schedule, however late this one was: a fixed count
        if due:
            sessions.turn(min(0.05, max(0.0, due[0][0] - time.monotonic())))
    sessions.run_until(lambda: time.monotonic() >= end, timeout=work.publish_s)
    sessions.run_until(sessions.drained, timeout=DRAIN_S)
    meter.mark("end")
    connected = sessions.stats.connected
    sessions.close()
    return {"connected": connected, "connect_s": connect_s, "rss": rss, "seq": seq}


# --- asyncio engines on uvloop: one task per device ---


class Fleet:
    """What the asyncio engines' device tasks share: the phases' start signals and the counts."""

    def __init__(self, work: Work, meter: Meter) -> None:
        self.work = work
        self.meter = meter
        self.slots = asyncio.Semaphore(MAX_CONNECTING)  # at most 64 handshakes at once, as DeviceSessions
        self.connected = 0
        self.all_connected = asyncio.Event()
        self.publish_from = 0.0  # the loop time publishing starts (set once everyone is connected and idle)
        self.go = asyncio.Event()
        self.done = asyncio.Event()
        self.seq = dict.fromkeys(work.ids, 0)

    def on_connected(self) -> None:
        self.connected += 1
        if self.connected == len(self.work.ids):
            self.all_connected.set()

    async def publishing(self, device: str, publish: Callable[[str, bytes], Any]) -> None:
        """The device's messages, every cadence at its phase, until the end of the publishing phase."""
        await self.go.wait()
        loop = asyncio.get_running_loop()
        end = self.publish_from + self.work.publish_s
        due = self.publish_from + phase(device, self.work.cadence)
        while due < end:
            await asyncio.sleep(max(0.0, due - loop.time()))
            result = publish(data_topic(device), connections.message(device, self.seq[device]))
            self.seq[device] += 1
            if asyncio.iscoroutine(result):
                await result
            due += self.work.cadence  # on its schedule, however late this one was: every engine sends the same count
        await self.done.wait()

    async def conduct(self, tasks: list[asyncio.Task[None]]) -> dict[str, Any]:
        """Connect, stay idle, publish, then let every task say goodbye; the figures."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(self.all_connected.wait(), timeout=600)
        connect_s = loop.time() - started
        rss = self.meter.rss_added()
        self.meter.mark("idle")
        await asyncio.sleep(self.work.idle_s)
        self.meter.mark("publish")
        self.publish_from = loop.time()
        self.go.set()
        await asyncio.sleep(self.work.publish_s)
        await self.drain()
        self.meter.mark("end")
        connected = self.connected
        self.done.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
        return {"connected": connected, "connect_s": connect_s, "rss": rss, "seq": self.seq}

    async def drain(self) -> None:
        await asyncio.sleep(0.5)  # the last messages' PUBACKs (loopback: ms); each library waits for its own at disconnect


async def gmqtt_fleet(work: Work, meter: Meter) -> dict[str, Any]:
    import gmqtt

    fleet = Fleet(work, meter)

    async def device(device_id: str) -> None:
        will = gmqtt.Message(status_topic(device_id), status_payload(device_id, False, wall_ms()), qos=1, retain=True)
        client = gmqtt.Client(device_id, will_message=will)
        async with fleet.slots:
            await client.connect("127.0.0.1", work.port, keepalive=KEEPALIVE_S, version=gmqtt.constants.MQTTv311)
        client.publish(status_topic(device_id), status_payload(device_id, True, wall_ms()), qos=1, retain=True)
        fleet.on_connected()
        await fleet.publishing(device_id, lambda topic, payload: client.publish(topic, payload, qos=1))
        await client.disconnect()

    tasks = [asyncio.create_task(device(device_id)) for device_id in work.ids]
    return await fleet.conduct(tasks)


async def aiomqtt_fleet(work: Work, meter: Meter) -> dict[str, Any]:
    import aiomqtt

    fleet = Fleet(work, meter)

    async def device(device_id: str) -> None:
        will = aiomqtt.Will(status_topic(device_id), status_payload(device_id, False, wall_ms()), qos=1, retain=True)
        client = aiomqtt.Client("127.0.0.1", work.port, identifier=device_id, keepalive=KEEPALIVE_S, will=will, timeout=60)
        async with contextlib.AsyncExitStack() as held:
            async with fleet.slots:
                await held.enter_async_context(client)
            await client.publish(status_topic(device_id), status_payload(device_id, True, wall_ms()), qos=1, retain=True)
            fleet.on_connected()
            await fleet.publishing(device_id, lambda topic, payload: client.publish(topic, payload, qos=1))

    tasks = [asyncio.create_task(device(device_id)) for device_id in work.ids]
    return await fleet.conduct(tasks)


def child(work: Work, pipe: Connection) -> None:
    """One engine's devices in a process of its own; answers with its figures."""
    common.leave_ctrl_c_to_the_parent()
    raise_open_files(len(work.ids))
    if work.engine != "paho":
        import uvloop  # imported before the meter starts: the library's own code is not a connection's cost

        __import__(work.engine)
    meter = Meter()
    if work.engine == "paho":
        result = run_paho(work, meter)
    else:
        fleet = gmqtt_fleet if work.engine == "gmqtt" else aiomqtt_fleet
        result = uvloop.run(fleet(work, meter))
    marks = meter.marks
    result["idle_cpu"] = marks["publish"] - marks["idle"]
    result["publish_cpu"] = marks["end"] - marks["publish"]
    pipe.send(result)


def measure(engine: str, devices: int, run: int, args: argparse.Namespace, work_dir: Path) -> Figures:
    """One engine and size: a fresh broker, subscriber and child process."""
    conf_dir = connections.bench_conf(work_dir)
    context = multiprocessing.get_context("spawn")
    parent, end = context.Pipe()
    ids = [f"em-{n:05d}" for n in range(devices)]
    # The way out (an error, SIGTERM, Ctrl-C) stops each of these once it has started, the last started first.
    with contextlib.ExitStack() as started:
        broker = stack.start_mosquitto(work_dir / "state", stack.free_port(), conf_dir=conf_dir)
        started.callback(broker.stop)
        subscriber = connections.Subscriber(broker.port, 0)
        started.callback(subscriber.stop)
        process = context.Process(target=child, args=(Work(engine, ids, broker.port, args.cadence, args.idle * 60, args.minutes * 60), end), daemon=True)
        started.callback(common.kill_if_alive, process)
        subscriber.wait_subscribed()  # the subscriber's session in place before any device publishes
        process.start()
        if not parent.poll(CHILD_TIMEOUT_S):
            raise SystemExit(f"{engine} {devices}: no answer in {CHILD_TIMEOUT_S} s")
        result = parent.recv()
        connections.wait_for_messages([subscriber], sum(result["seq"].values()))  # the last ones
        process.join(timeout=60)
    received = set()
    for line in subscriber.lines:
        payload = orjson.loads(line.split(b" ", 1)[1])
        received.add((payload["device_id"], payload["seq"]))
    expected = {(device, n) for device, count in result["seq"].items() for n in range(count)}
    published = len(expected)
    connect_s = result["connect_s"]
    return Figures(
        engine=engine,
        devices=devices,
        run=run,
        connected=result["connected"],
        connect_s=round(connect_s, 2),
        connects_per_s=round(devices / connect_s, 1),
        bytes_per_connection=result["rss"] // devices,
        idle_cpu_us_per_connection_minute=round(result["idle_cpu"] * 1e6 / (devices * args.idle), 1) if args.idle > 0 else 0.0,
        cpu_us_per_message=round(result["publish_cpu"] * 1e6 / published, 1) if published else 0.0,
        published=published,
        received=len(received & expected),
        lost=len(expected - received),
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000", help="device counts, comma-separated (at most 19,000: one process's sockets)")
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"engines to measure, comma-separated: {', '.join(ENGINES)}")
    parser.add_argument("--runs", type=int, default=1, help="runs per engine and size (engines alternate within a run)")
    parser.add_argument("--cadence", type=float, default=60.0, help="seconds between one device's messages")
    parser.add_argument("--minutes", type=float, default=1.0, help="minutes of publishing per engine and size")
    parser.add_argument("--idle", type=float, default=1.0, help="minutes connected without messages before publishing (the idle CPU)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    args.sizes = common.device_counts(args.sizes, MOST_DEVICES, "one process holds at most ~19,900 sockets here")
    args.engines = args.engines.split(",")
    unknown = [engine for engine in args.engines if engine not in ENGINES]
    if unknown:
        common.usage_error(f"--engines: unknown {', '.join(unknown)} (known: {', '.join(ENGINES)})")
    if args.runs < 1 or not common.seconds_ok((args.cadence, args.minutes), (args.idle,)):
        common.usage_error("--runs must be at least 1, --cadence and --minutes above 0, --idle 0 or more (finite numbers)")
    for engine in args.engines:  # after the flags: a bad flag is its own line wherever the bench extra is missing
        missing = [module for module in LIBRARIES[engine] if importlib.util.find_spec(module) is None]
        if missing:
            common.usage_error(f"--engines {engine}: {', '.join(missing)} not installed (pip install -e '.[bench]')")
    hard = common.open_files_hard_limit()
    if max(args.sizes) + FILES_MARGIN > hard:
        common.usage_error(f"--sizes {max(args.sizes)}: needs {max(args.sizes) + FILES_MARGIN} open files, but a process may open {hard} (ulimit -Hn)")
    return args


def main() -> None:
    args = parse_args()
    raise_open_files(0)  # the hard limit for us, the broker and the children, which inherit it
    results: list[Figures] = []
    for devices in args.sizes:
        for run in range(args.runs):
            order = args.engines[run % len(args.engines) :] + args.engines[: run % len(args.engines)]  # alternate who goes first
            for engine in order:
                with tempfile.TemporaryDirectory(prefix="iotsim-engines-") as tmp:
                    results.append(measure(engine, devices, run + 1, args, Path(tmp)))
                console.print(results[-1])
    table = Table(title=f"connection engines: keepalive {KEEPALIVE_S} s, QoS 1 every {args.cadence:g} s for {args.minutes:g} min, {args.idle:g} min idle before")
    for column in ("engine", "devices", "run", "connected", "connect s", "connects/s", "RSS B/conn", "idle CPU µs/conn-min", "CPU µs/msg", "published", "received", "lost"):
        table.add_column(column, justify="right")
    for f in results:
        table.add_row(
            f.engine, f"{f.devices:,}", f"{f.run}", f"{f.connected:,}", f"{f.connect_s}", f"{f.connects_per_s:,.0f}", f"{f.bytes_per_connection:,}",
            f"{f.idle_cpu_us_per_connection_minute:,.1f}", f"{f.cpu_us_per_message:,.1f}", f"{f.published:,}", f"{f.received:,}", f"{f.lost}",
        )  # fmt: skip
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps([asdict(f) for f in results], indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(common.run(main))
