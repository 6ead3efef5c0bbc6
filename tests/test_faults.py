"""Faults from a scenario's `faults:` section, injected into a real run: everything generated is
stored exactly once, garbage goes to dead letters, and each fault is an event."""

from __future__ import annotations

import json
import time
from pathlib import Path

import orjson

from conftest import Pipeline, RUN_IDLE, iotsim
from simulator import stack

STATIONS, SKEWED, MINUTES = 40, 10, 40
FAULTS = f"""
name: faults
seed: 11
duration: {MINUTES}m
speed: 300
fleets:
  - type: air_quality
    count: {STATIONS}
    cadence: 1m
  - type: air_quality
    id_prefix: aqs
    count: {SKEWED}
    cadence: 1m
faults:
  - {{kind: partition, fleet: aq, at: 5m, duration: 8m, buffer_in_memory: 50}}
  - {{kind: duplicates, rate: 0.05}}
  - {{kind: malformed, rate: 0.03}}
  - {{kind: clock_skew, fleet: aqs, offset: -30s}}
  - {{kind: broker_outage, at: 15m, duration: 3m}}
  - {{kind: influx_outage, at: 22m, duration: 3m}}
  - {{kind: bridge_crash, at: 30m, restart_after: 1m}}
"""
DEVICES = STATIONS + SKEWED
EXPECTED = DEVICES * MINUTES


def injected(summary: str, name: str) -> int:
    line = next(line for line in summary.splitlines() if f" {name} " in line)
    return int(line.split("│")[2].strip())


def test_every_fault_survived_with_nothing_lost_or_doubled(pipeline: Pipeline, tmp_path: Path) -> None:
    state = tmp_path / "stack"
    broker = stack.start_mosquitto(state, stack.free_port())
    influx = stack.start_influxdb(state, stack.free_port(), database=pipeline.database)
    pipeline.broker, pipeline.influxdb = broker, influx  # this test's own servers: they get stopped
    scenario = pipeline.scenario_file(FAULTS)
    try:
        bridge = pipeline.start_bridge("--exit-when-idle", RUN_IDLE, "--pid-file", str(state / "bridge.pid"))
        run = iotsim("run", str(scenario), "--state-dir", str(state), timeout=240)
        assert run.returncode == 0, run.stderr
        malformed, duplicates = injected(run.stdout, "malformed"), injected(run.stdout, "duplicates")
        assert malformed > 0 and duplicates > 0
        events = 2 + 3 + 2 + 2 + 2  # partition, 3 whole-run faults, broker, influx, bridge
        generated, published = EXPECTED + events, EXPECTED + events + malformed + duplicates
        assert f"generated {generated}, published {published}, acknowledged {published}" in run.stdout

        assert bridge.wait(30) == -9  # the fault injector killed it
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (state / "bridge.pid").exists():
            time.sleep(0.1)  # the restarted bridge exits when idle and removes its PID file
        assert not (state / "bridge.pid").exists()

        assert pipeline.count("air_quality") == EXPECTED
        series = pipeline.query('SELECT count("seq"), min("seq"), max("seq") FROM "air_quality" GROUP BY "device_id"')
        assert len(series) == DEVICES
        assert all(s["values"][0][1:] == [MINUTES, 0, MINUTES - 1] for s in series)
        kinds = pipeline.query('SELECT count("seq") FROM "events" GROUP BY "kind", "phase"')
        assert {(s["tags"]["kind"], s["tags"]["phase"]): s["values"][0][1] for s in kinds} == {
            ("fault_partition", "start"): 1, ("fault_partition", "end"): 1,
            ("fault_duplicates", "start"): 1, ("fault_malformed", "start"): 1, ("fault_clock_skew", "start"): 1,
            ("fault_broker_outage", "start"): 1, ("fault_broker_outage", "end"): 1,
            ("fault_influx_outage", "start"): 1, ("fault_influx_outage", "end"): 1,
            ("fault_bridge_crash", "start"): 1, ("fault_bridge_crash", "end"): 1,
        }  # fmt: skip
        letters = (pipeline.tmp / "dead-letters.jsonl").read_bytes().splitlines()
        # Garbage sent before the crash may be dead-lettered twice: unacknowledged, then redelivered.
        assert len({orjson.loads(letter)["payload_base64"] + orjson.loads(letter)["topic"] for letter in letters}) <= malformed
        assert len(letters) >= malformed * 0.5
    finally:
        if (state / "bridge.pid").exists():
            stack.stop_pid(json.loads((state / "bridge.pid").read_text())["pid"])
        # The injector restarted both servers: stop them by the PID files it left, not the first PIDs.
        stack.stack_down(state)
        broker.stop()
        influx.stop()


def test_clock_skew_shifts_only_that_fleet_and_partition_keeps_order(tmp_path: Path) -> None:
    plain, faulty = tmp_path / "plain.yaml", tmp_path / "faulty.yaml"
    base = FAULTS.split("faults:\n")[0].replace("speed: 300", "speed: afap")
    plain.write_text(base)
    faulty.write_text(base + "faults:\n  - {kind: clock_skew, fleet: aqs, offset: -30s}\n  - {kind: partition, fleet: aq, at: 5m, duration: 8m, buffer_in_memory: 7}\n")
    streams = {}
    for path in (plain, faulty):
        out = tmp_path / f"{path.stem}.jsonl"
        assert iotsim("run", str(path), "--dry-run", "--out", str(out)).returncode == 0
        streams[path.stem] = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    before = {(m["payload"]["device_id"], m["payload"]["seq"]): m["payload"]["ts"] for m in streams["plain"]}
    after = {(m["payload"]["device_id"], m["payload"]["seq"]): m["payload"]["ts"] for m in streams["faulty"] if m["payload"]["type"] != "events"}
    assert before.keys() == after.keys()
    assert all(after[key] - before[key] == (-30_000 if key[0].startswith("aqs-") else 0) for key in before)
    # Held messages come out in their original order, after the partition, per device.
    for device in {key[0] for key in before}:
        seqs = [m["payload"]["seq"] for m in streams["faulty"] if m["payload"]["device_id"] == device]
        assert seqs == sorted(seqs)


def test_process_faults_need_a_numeric_speed(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(FAULTS.replace("speed: 300", "speed: afap"))
    result = iotsim("validate", str(path))
    assert result.returncode == 2
    assert f"{path}:19: faults.4.kind: a broker_outage takes wall-clock time" in result.stderr
