"""Recovery after each pipeline fault: what was lost, what was doubled, how long catching up took.

For every fault kind, a fresh broker and InfluxDB (real processes, temporary directories) and a
bridge (with --pid-file, so the fault injector can kill it) take a paced run of air-quality
stations with that one fault in its `faults:` section. Figures per fault:

- generated / stored / missing / duplicates, from per-device seq numbers in InfluxDB;
- outage: wall seconds between the fault's start and end events;
- recovery: wall seconds from the fault's end event until every reading generated before it is
  stored in InfluxDB (the pipeline has caught up);
- for a broker outage, the publisher's own view: messages held in its outbox and time to reconnect.

SIGTERM, Ctrl-C or an error stops the Mosquitto, InfluxDB and bridge it started (and those the fault
injector restarted); an interrupt is one line, exit 130.

    .venv/bin/python benchmarks/recovery.py [--stations 300] [--minutes 10] [--speed 30] [--outage 2m]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import common  # benchmarks/common.py, beside this script: the way out on signals
import orjson
from pipeline import count_points, query  # benchmarks/pipeline.py, beside this script
from rich.console import Console
from rich.table import Table

from simulator import stack
from simulator.engine import run_scenario
from simulator.errors import DatabaseError
from simulator.scenario import Scenario
from simulator.transport.mqtt import MqttPublisher
from simulator.units import parse_duration

IOTSIM = [sys.executable, "-m", "simulator.cli"]
DATABASE = "recovery"
console = Console(width=170)


@dataclass
class FaultMark:
    """A fault's end event as the publisher saw it, and when the pipeline had caught up with it."""

    started: float | None = None
    ended: float | None = None
    readings_before_end: int = 0
    caught_up: float | None = None


@dataclass
class FaultClock:
    """Sits in front of the publisher: counts readings and notes the fault's start and end events."""

    publisher: MqttPublisher
    readings: int = 0
    mark: FaultMark = field(default_factory=FaultMark)

    def __call__(self, topic: str, payload: bytes) -> None:
        if "/events/fault_" in topic:
            phase = orjson.loads(payload)["tags"]["phase"]
            if phase == "start":
                self.mark.started = time.monotonic()
            elif phase == "end":
                self.mark.ended, self.mark.readings_before_end = time.monotonic(), self.readings
        elif "/events/" not in topic:
            self.readings += 1
        self.publisher(topic, payload)


def fault_section(kind: str, at: float, outage: float) -> dict[str, object]:
    if kind == "bridge_crash":
        return {"kind": kind, "at": at, "restart_after": outage}
    if kind == "partition":
        return {"kind": kind, "at": at, "duration": outage, "fleet": "aq", "buffer_in_memory": 1000}
    return {"kind": kind, "at": at, "duration": outage}


def measure(kind: str, args: argparse.Namespace, work: Path) -> dict[str, object]:
    state = work / kind
    # What runs now, each kept as it starts: the way out (an error, SIGTERM, Ctrl-C) stops exactly these.
    servers: list[stack.Service] = []
    bridge: subprocess.Popen[bytes] | None = None
    publisher: MqttPublisher | None = None
    watching = threading.Event()
    try:
        servers.append(broker := stack.start_mosquitto(state, stack.free_port()))
        servers.append(influx := stack.start_influxdb(state, stack.free_port(), database=DATABASE))
        outage = parse_duration(args.outage)
        spec = Scenario.model_validate(
            {
                "name": f"recovery-{kind}",
                "duration": args.minutes * 60,
                "speed": args.speed,
                "mqtt": {"url": broker.url, "topic_prefix": "rec", "qos": 1},
                "influx": {"url": influx.url, "database": DATABASE},
                "fleets": [{"type": "air_quality", "count": args.stations, "cadence": "10s"}],
                "faults": [fault_section(kind, args.minutes * 60 / 3, outage)],
            }
        )
        bridge = start_bridge(state, broker, influx)
        publisher = MqttPublisher.from_settings(spec.mqtt, f"recovery-{kind}")
        clock = FaultClock(publisher)
        watcher = threading.Thread(target=watch_catch_up, args=(influx, clock.mark, watching), daemon=True)
        publisher.start()
        watcher.start()
        run_scenario(spec, clock, stack_control=stack.StackControl(state), wait=publisher.idle)
        publisher.drain(300)
        generated = clock.readings
        stored = wait_for_points(influx, generated, timeout=300)
        watching.set()
        watcher.join()
        stop_bridge(state, bridge)  # it writes its last `pipeline` point, with `spooled`, as it stops
        missing, duplicates, gappy = seq_check(influx)
        mark = clock.mark
        held = sum(o.held for o in publisher.outages)
        reconnect = max((o.reconnect_s or 0.0 for o in publisher.outages), default=0.0)
        return {
            "fault": kind,
            "outage_s": (mark.ended - mark.started) if mark.started and mark.ended else None,
            "generated": generated,
            "stored": stored,
            "missing": missing,
            "duplicates": duplicates,
            "devices_with_gaps": gappy,
            "recovery_s": (mark.caught_up - mark.ended) if mark.caught_up and mark.ended else None,
            "publisher_held": held,
            "publisher_reconnect_s": reconnect,
            "bridge_spooled": spooled_ever(influx),
        }
    finally:
        if publisher is not None:
            publisher.stop()
        watching.set()
        if bridge is not None:
            stop_bridge(state, bridge)  # again, harmlessly, if the run failed before it was stopped
        for name in ("mosquitto", "influxdb"):  # the fault injector may have restarted them: stop what the PID files name
            record = stack.recorded(state, name)
            if record is not None and record.running:
                stack.stop_pid(record.pid)
        for server in servers:
            server.stop()


def start_bridge(state: Path, broker: stack.Service, influx: stack.Service) -> subprocess.Popen[bytes]:
    command = [*IOTSIM, "bridge", "--mqtt", broker.url, "--influx", influx.url, "--db", DATABASE, "--prefix", "rec",
               "--client-id", "recovery-bridge", "--batch-interval", "0.2", "--max-pending", "1000",
               "--spool-dir", str(state / "spool"), "--dead-letters", str(state / "dead-letters.jsonl"),
               "--pid-file", str(state / "bridge.pid"), "--ready-file", str(state / "bridge.ready")]  # fmt: skip
    with open(state / "bridge.log", "ab") as log:
        bridge = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 30
    try:
        while not (state / "bridge.ready").exists():
            if bridge.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the bridge did not start; see {state / 'bridge.log'}")
            time.sleep(0.05)
    except BaseException:  # it did not start, or an interrupt: the caller never gets the bridge to stop
        common.kill_child_if_running(bridge)
        raise
    return bridge


def stop_bridge(state: Path, first: subprocess.Popen[bytes]) -> None:
    """Stop the bridge running now: the first one, or the one the fault injector started after a crash."""
    try:
        pid = json.loads((state / "bridge.pid").read_text())["pid"]
    except (OSError, ValueError):
        pid = first.pid
    if stack.alive(pid):
        stack.stop_pid(pid)
    if first.poll() is None:
        first.terminate()
    first.wait(timeout=30)


def watch_catch_up(influx: stack.Service, mark: FaultMark, done: threading.Event) -> None:
    """Note when InfluxDB first holds every reading generated before the fault ended."""
    while not done.wait(0.1):
        if mark.ended is not None and mark.caught_up is None:
            try:
                if count_points(influx, DATABASE) >= mark.readings_before_end:
                    mark.caught_up = time.monotonic()
            except DatabaseError:
                pass  # InfluxDB itself may be the fault


def wait_for_points(influx: stack.Service, expected: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    stored = count_points(influx, DATABASE)
    while stored < expected and time.monotonic() < deadline:
        time.sleep(0.1)
        stored = count_points(influx, DATABASE)
    time.sleep(1.0)  # late duplicates, if any, would land now
    return count_points(influx, DATABASE)


def seq_check(influx: stack.Service) -> tuple[int, int, int]:
    """(missing, duplicates, devices with gaps) from each device's count and highest seq."""
    series = query(influx, DATABASE, 'SELECT count("seq"), max("seq") FROM "air_quality" GROUP BY "device_id"')
    missing = duplicates = gappy = 0
    for s in series:
        count, high = s["values"][0][1:]
        expected = high + 1  # seq counts from 0
        missing += max(expected - count, 0)
        duplicates += max(count - expected, 0)
        gappy += count != expected
    return missing, duplicates, gappy


def spooled_ever(influx: stack.Service) -> int:
    """Points the bridge put in its disk spool, from its last `pipeline` point (written at exit)."""
    series = query(influx, DATABASE, 'SELECT last("spooled") FROM "pipeline" WHERE "component" = \'bridge\'')
    return series[0]["values"][0][1] if series else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stations", type=int, default=300, help="air-quality stations, one message each 10 s simulated (default 300)")
    parser.add_argument("--minutes", type=float, default=10, help="simulated minutes per fault (default 10)")
    parser.add_argument("--speed", type=float, default=30, help="times real time (default 30)")
    parser.add_argument("--outage", default="2m", help="simulated length of each outage (default 2m)")
    parser.add_argument("--faults", default="broker_outage,influx_outage,bridge_crash,partition", help="comma-separated fault kinds")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="iotsim-recovery-") as tmp:
        for kind in args.faults.split(","):
            console.print(f"[bold]{kind}[/] …")
            rows.append(measure(kind, args, Path(tmp)))

    table = Table(title=f"recovery: {args.stations} stations, {args.minutes:g} min at {args.speed:g}x, outage {args.outage} simulated")
    columns = ("fault", "outage_s", "generated", "stored", "missing", "duplicates", "devices_with_gaps", "recovery_s", "publisher_held", "publisher_reconnect_s", "bridge_spooled")
    for column in columns:
        table.add_column(column.replace("_", " "), justify="left" if column == "fault" else "right")
    for row in rows:
        table.add_row(*(f"{row[c]:.2f}" if isinstance(row[c], float) else f"{row[c]}" for c in columns))
    console.print(table)
    console.print_json(data=rows)
    if any(row["missing"] or row["duplicates"] or row["stored"] != row["generated"] for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    sys.exit(common.run(main))
