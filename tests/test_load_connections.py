"""`iotsim load` over device connections (issue 15): `unit: connections` ramps the load_probe devices'
own connections, the broker counts them, every message arrives once, and a broker outage gives the
time until every device is connected again. Each test runs its own Mosquitto (the outage stops it;
the connection count is of this broker's clients only) with `sys_interval 1`, so `$SYS` reports changes within seconds."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import requests
from conftest import IOTSIM, Pipeline, child_env, iotsim, iotsim_interrupted_in_fault
from paho.mqtt.enums import CallbackAPIVersion

from simulator import stack
from simulator.load.metrics import decode

START_MS = 1_768_320_000_000  # the scenarios' default start, 2026-01-14 00:00 Yangquan time
CONNECTIONS = """
name: load-test-connections
seed: 11
duration: 1m
fleets:
  - {type: load_probe, count: 300, connection: device}
load:
  unit: connections
  device_rate: 0.2
  profile: {kind: ramp, start: 0, target: 300, duration: 6s, hold: 14s}
  qos: 1
  workers: 2
  drain: 20s
  thresholds:
    - connected >= 300
    - loss == 0
    - connect_p99_ms > 0
    - connected >= 301
"""

OUTAGE = """
name: load-test-outage
seed: 12
duration: 1m
speed: 1
fleets:
  - type: load_probe
    count: 100
    connection: device
    reconnect: {policy: exponential, min: 0.5s, max: 2s, jitter: full}
faults:
  - {kind: broker_outage, at: 6s, duration: 3s}
load:
  unit: connections
  device_rate: 1
  profile: {kind: ramp, start: 0, target: 100, duration: 3s, hold: 15s}
  qos: 1
  workers: 2
  drain: 20s
  thresholds: [connected >= 100, loss == 0, reconnect_all_s < 30]
"""


@pytest.fixture
def own_broker(pipeline: Pipeline, tmp_path: Path) -> Iterator[tuple[Path, stack.Service]]:
    """This test's Mosquitto, recorded in a stack state dir (so a broker_outage can stop and start it),
    reporting `$SYS` (what changed) every second."""
    conf = tmp_path / "conf.d"
    shutil.copytree(stack.BROKERS_DIR / "conf.d", conf)
    (conf / "zz-sys.conf").write_text("sys_interval 1\n")
    state = tmp_path / "stack"
    broker = stack.start_mosquitto(state, stack.free_port(), conf_dir=conf)
    pipeline.broker = broker
    try:
        yield state, broker
    finally:
        stack.stack_down(state)  # the outage started it again: stopped by the PID file it left
        broker.stop()


class ClientCount:
    """`$SYS/broker/clients/connected` as the broker reports it, every value with its arrival time."""

    def __init__(self, port: int) -> None:
        self.values: list[tuple[float, int]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sys-watch-{port}")
        self.client.on_connect = lambda client, *_: client.subscribe("$SYS/broker/clients/connected")
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.values.append((time.monotonic(), int(message.payload)))

    def stop(self) -> list[tuple[float, int]]:
        self.client.loop_stop()
        self.client.disconnect()
        return self.values


def test_a_ramp_of_connections_holds_its_peak_the_broker_counts_them_and_every_message_arrives_once(pipeline: Pipeline, own_broker: tuple[Path, stack.Service]) -> None:
    state, broker = own_broker
    out = pipeline.tmp / "results"
    watch = ClientCount(broker.port)
    try:
        run = iotsim("load", str(pipeline.scenario_file(CONNECTIONS)), "--out", str(out), "--state-dir", str(state), timeout=150)
    finally:
        counts = watch.stop()
    assert run.returncode == 1, run.stdout + run.stderr  # connected >= 301 cannot hold: 300 devices at most
    assert "FAILED 1 of 4 thresholds: connected >= 301" in run.stdout
    assert any(line.startswith("FAIL connected >= 301  (measured 300, limit 301)") for line in run.stdout.splitlines()), run.stdout
    assert "Traceback" not in run.stderr

    summary = json.loads((out / "summary.json").read_text())
    figures = summary["figures"]
    assert figures["connected"] == 300  # the profile's peak exactly, summed over the 2 workers
    assert figures["connects"] == 300 and figures["reconnects"] == 0 and figures["connect_failures"] == 0
    assert figures["connect_p99_ms"] > 0 and figures["connect_p50_ms"] <= figures["connect_p99_ms"] <= figures["connect_max_ms"]
    assert figures["reconnect_all_s"] is None  # no outage: not measured
    verdicts = {verdict["threshold"]: verdict["passed"] for verdict in summary["thresholds"]}
    assert verdicts == {"connected >= 300": True, "loss == 0": True, "connect_p99_ms > 0": True, "connected >= 301": False}
    assert decode(summary["connect_histogram"]).get_total_count() == 300

    # Every message through the devices' own connections, stored once: exact counts in InfluxDB.
    stored = pipeline.count("load_probe")
    assert figures["generated"] == figures["published"] == figures["acknowledged"] == stored > 300
    assert figures["loss"] == 0
    # Each message's publish latency (queued at its device → PUBACK), merged over workers and seconds: every one once.
    assert decode(summary["publish_histogram"]).get_total_count() == figures["acknowledged"]
    assert 0 < figures["publish_p50_ms"] <= figures["publish_p99_ms"] <= figures["publish_max_ms"]
    series = pipeline.query('SELECT "seq" FROM "load_probe" GROUP BY "device_id"')
    assert len(series) == 300
    assert all(sorted(row[1] for row in s["values"]) == list(range(len(s["values"]))) for s in series)
    # Births when the devices connected and deaths when they left, on their status topics.
    statuses = pipeline.query('SELECT count("online") FROM "device_status" GROUP BY "device_id"')
    assert len(statuses) == 300

    # While the peak was held, the broker counted the 300 devices, the 2 workers' own connections,
    # the bridge and this test's watcher; never more.
    assert counts, "no $SYS/broker/clients/connected received"
    assert max(value for _, value in counts) == 300 + 2 + 1 + 1, counts
    # Mosquitto publishes the count when it changes: it stayed at 304 for at least half the 14 s hold (a ramp
    # that ends late on a loaded machine shortens it).
    peak = next(index for index, (_, value) in enumerate(counts) if value == 304)
    assert peak + 1 < len(counts) and counts[peak + 1][0] - counts[peak][0] >= 7, counts


def test_a_broker_outage_in_a_load_experiment_gives_the_time_until_every_device_is_back_and_loses_nothing(
    pipeline: Pipeline, own_broker: tuple[Path, stack.Service]
) -> None:
    state, broker = own_broker
    out = pipeline.tmp / "results"
    run = iotsim("load", str(pipeline.scenario_file(OUTAGE)), "--out", str(out), "--state-dir", str(state), timeout=150)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "passed 3 thresholds" in run.stdout

    summary = json.loads((out / "summary.json").read_text())
    figures = summary["figures"]
    assert 0 < figures["reconnect_all_s"] < 30
    assert figures["connected"] == 100
    assert figures["connects"] == 200 and figures["reconnects"] == 100  # each device: its first connect, and one after the outage
    assert figures["connect_failures"] > 0  # tried while the broker was away
    stored = pipeline.count("load_probe")
    events = 2  # the outage's start and end, through the worker's shared connection
    assert figures["loss"] == 0 and figures["generated"] == figures["acknowledged"] == stored + events
    # The messages held through the outage waited for it in their publish latency (queued → PUBACK): above 1 s.
    assert decode(summary["publish_histogram"]).get_total_count() == figures["acknowledged"] and figures["publish_max_ms"] > 1000
    series = pipeline.query('SELECT count("seq"), max("seq") FROM "load_probe" GROUP BY "device_id"')
    assert len(series) == 100 and all(s["values"][0][1] == s["values"][0][2] + 1 for s in series)  # no gaps
    outage = pipeline.query('SELECT count("seq") FROM "events" WHERE "kind" = \'fault_broker_outage\' GROUP BY "phase"')
    assert {s["tags"]["phase"]: s["values"][0][1] for s in outage} == {"start": 1, "end": 1}
    assert f"all reconnected after the broker outage in {figures['reconnect_all_s']:,.3f} s" in run.stdout


def test_unit_connections_on_a_shared_fleet_and_an_unknown_metric_are_one_line_and_exit_2(tmp_path: Path) -> None:
    shared = tmp_path / "shared.yaml"
    shared.write_text(CONNECTIONS.replace(", connection: device", ""))
    run = iotsim("load", str(shared), "--out", str(tmp_path / "out"))
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.strip().splitlines() == [
        f"{shared}:8: load.unit: connections ramps the load_probe devices' own connections, but fleets.0 has connection: shared; give it connection: device"
    ]
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(CONNECTIONS.replace("connected >= 301", "connections >= 301"))
    run = iotsim("load", str(unknown), "--out", str(tmp_path / "out"))
    assert run.returncode == 2, run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{unknown}:18: load.thresholds.3: unknown metric 'connections'; known: "), lines
    assert "connect_p99_ms" in lines[0] and "reconnect_all_s" in lines[0]


def test_connections_sharded_over_workers_give_the_single_process_stream(tmp_path: Path) -> None:
    scenario = tmp_path / "connections.yaml"
    scenario.write_text(CONNECTIONS)
    streams = []
    for workers in (1, 3):
        folder = tmp_path / f"w{workers}"
        run = iotsim("load", str(scenario), "--dry-run", "--workers", str(workers), "--out", str(folder))
        assert run.returncode == 0, run.stderr
        streams.append(sorted(line for index in range(workers) for line in (folder / f"messages-w{index}.jsonl").read_bytes().splitlines()))
    assert streams[0] == streams[1]
    # Device d (lp-{d+1}) sends only while connected: from when the ramp passes d (at d / 50 s), every 5 s to the end (20 s).
    sent: dict[int, list[int]] = {}
    for line in streams[0]:
        message = json.loads(line)["payload"]
        sent.setdefault(int(message["device_id"].removeprefix("lp-")) - 1, []).append(message["ts"] - START_MS)
    assert sorted(sent) == list(range(300))
    for index, stamps in sent.items():
        assert index * 20 <= stamps[0] < index * 20 + 5000 and stamps[-1] < 20_000 and len(stamps) == len(range(stamps[0], 20_000, 5000)), (index, stamps)


SHARDED = """
name: load-test-connection-shards
seed: 13
duration: 1m
fleets:
  - {type: load_probe, count: 60, connection: device}
load:
  unit: connections
  device_rate: 1
  profile: {kind: ramp, start: 0, target: 60, duration: 2s, hold: 8s}
  qos: 1
  drain: 20s
  thresholds: [connected >= 60, loss == 0, connect_p99_ms > 0]
"""


def test_connections_across_shards_merge_in_the_report(pipeline: Pipeline) -> None:
    """`iotsim load --shard` with device connections: each shard holds its own devices' connections,
    and `iotsim load report` sums the shards' connected devices second by second."""
    scenario = pipeline.scenario_file(SHARDED)
    bridge = pipeline.start_bridge()
    try:
        shards = [subprocess.Popen([*IOTSIM, "load", str(scenario), "--shard", f"{index}/2", "--run-id", "conn-shards"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=child_env()) for index in range(2)]  # fmt: skip
        results = [shard.communicate(timeout=90) + (shard.returncode,) for shard in shards]
    finally:
        bridge.terminate()
        bridge.communicate(timeout=30)
    for stdout, stderr, code in results:
        assert code == 0, stdout + stderr
    out = pipeline.tmp / "merged"
    merged = iotsim("load", "report", "conn-shards", "--influx", pipeline.influx_url, "--db", pipeline.database, "--out", str(out), timeout=90)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    figures = json.loads((out / "summary.json").read_text())["figures"]
    assert figures["connected"] == 60 and figures["connects"] == 60  # 30 + 30, the shards' seconds aligned
    assert figures["loss"] == 0 and figures["generated"] == pipeline.count("load_probe")
    finals = pipeline.query("SELECT \"connected\", \"connects\" FROM \"loadshard\" WHERE \"run\" = 'conn-shards' AND \"phase\" = 'final' GROUP BY \"shard\"")
    assert sorted(s["values"][-1][1:] for s in finals) == [[30, 30], [30, 30]]


def test_an_outage_of_a_broker_the_experiment_cannot_control_is_only_announced_and_its_time_not_measured(pipeline: Pipeline, tmp_path: Path) -> None:
    scenario = pipeline.scenario_file(
        OUTAGE.replace("count: 100", "count: 20").replace("target: 100, duration: 3s, hold: 15s", "target: 20, duration: 1s, hold: 5s")
        .replace("at: 6s, duration: 3s", "at: 2s, duration: 1s").replace("connected >= 100", "connected >= 20")
    )  # fmt: skip
    out = pipeline.tmp / "results"
    run = iotsim("load", str(scenario), "--out", str(out), "--state-dir", str(tmp_path / "no-stack"), timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"note: the broker_outage is only announced: the broker at {pipeline.broker.url} is not the local stack's under {tmp_path / 'no-stack'}" in run.stderr
    assert "FAIL reconnect_all_s < 30  (measured not measured, limit 30)" in run.stdout
    assert "FAILED 1 of 3 thresholds: reconnect_all_s < 30" in run.stdout
    figures = json.loads((out / "summary.json").read_text())["figures"]
    assert figures["reconnect_all_s"] is None and figures["reconnects"] == 0 and figures["connected"] == 20
    outage = pipeline.query('SELECT count("seq") FROM "events" WHERE "kind" = \'fault_broker_outage\' GROUP BY "phase"')
    assert {s["tags"]["phase"]: s["values"][0][1] for s in outage} == {"start": 1, "end": 1}  # announced all the same


RAMP_DOWN = """
name: load-test-ramp-down
seed: 14
duration: 1m
fleets:
  - {type: load_probe, count: 40, connection: device}
load:
  unit: connections
  device_rate: 2
  profile: {kind: stages, start: 0, stages: [{duration: 2s, target: 40}, {duration: 4s, target: 40}, {duration: 2s, target: 10}, {duration: 4s, target: 10}]}
  qos: 1
  drain: 20s
  thresholds: [connected >= 40, loss == 0]
"""


def test_a_falling_profile_disconnects_its_devices_cleanly_and_they_stop_sending(pipeline: Pipeline) -> None:
    out = pipeline.tmp / "results"
    run = iotsim("load", str(pipeline.scenario_file(RAMP_DOWN)), "--out", str(out), timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads((out / "summary.json").read_text())
    figures = summary["figures"]
    assert figures["connected"] == 40 and figures["connects"] == 40 and figures["reconnects"] == 0
    assert figures["loss"] == 0 and figures["generated"] == figures["acknowledged"] == pipeline.count("load_probe")
    with open(out / "timeseries.csv") as file:
        connected = {int(row["second"]): int(row["connected"]) for row in csv.DictReader(file)}
    assert connected[5] == 40 and connected[11] == 10  # held at the peak, then at 10 after the fall (6-8 s)
    # Gateway d (lp-{d+1}) for d >= 10 left when the target fell to d, at 6 + (40 - d) / 15 s: its
    # death (online false) at a later time than its birth, so no will replaced the birth's point,
    # and no message of it after that. The first 10 stayed until the end.
    start_ms = int(datetime.fromisoformat(summary["started"]).timestamp() * 1000)
    statuses = {s["tags"]["device_id"]: [row[1] for row in s["values"]] for s in pipeline.query('SELECT "online" FROM "device_status" GROUP BY "device_id"')}
    answer = requests.get(f"{pipeline.influx_url}/query", params={"db": pipeline.database, "epoch": "ms", "q": 'SELECT last("seq") FROM "load_probe" GROUP BY "device_id"'}, timeout=60)
    last = {s["tags"]["device_id"]: s["values"][0][0] for s in answer.json()["results"][0]["series"]}  # each device's last message's timestamp
    assert len(statuses) == len(last) == 40
    for d in range(40):
        device_id = f"lp-{d + 1:04d}"
        assert statuses[device_id] == [True, False], (device_id, statuses[device_id])
        if d >= 10:
            assert last[device_id] - start_ms < 6000 + (40 - d) * 1000 / 15 + 1, (device_id, last[device_id] - start_ms)
        else:
            assert last[device_id] - start_ms >= 11_000, (device_id, last[device_id] - start_ms)  # ticks every 0.5 s until the end (12 s)


def test_devices_that_left_connect_again_when_the_profile_rises_again(pipeline: Pipeline) -> None:
    scenario = RAMP_DOWN.replace("count: 40", "count: 20").replace(
        "stages: [{duration: 2s, target: 40}, {duration: 4s, target: 40}, {duration: 2s, target: 10}, {duration: 4s, target: 10}]",
        "stages: [{duration: 1s, target: 20}, {duration: 3s, target: 20}, {duration: 1s, target: 0}, {duration: 1s, target: 20}, {duration: 3s, target: 20}]",
    ).replace("connected >= 40", "connected >= 20")
    out = pipeline.tmp / "results"
    run = iotsim("load", str(pipeline.scenario_file(scenario)), "--out", str(out), timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    figures = json.loads((out / "summary.json").read_text())["figures"]
    # Gateways 1-19: connected, left cleanly as the target fell to their index, connected again as it
    # rose past it (a reconnect: they had been connected). Gateway 0 stayed: the target is above 0
    # everywhere but at the instant it touched 0 (5 s).
    assert figures["connected"] == 20 and figures["connects"] == 39 and figures["reconnects"] == 19 and figures["connect_failures"] == 0
    assert figures["loss"] == 0 and figures["generated"] == figures["acknowledged"] == pipeline.count("load_probe")
    statuses = {s["tags"]["device_id"]: [row[1] for row in s["values"]] for s in pipeline.query('SELECT "online" FROM "device_status" GROUP BY "device_id"')}
    assert statuses.pop("lp-0001") == [True, False]
    assert len(statuses) == 19 and all(online == [True, False, True, False] for online in statuses.values()), statuses


def test_ctrl_c_during_a_load_experiments_broker_outage_starts_the_stacks_broker_again(pipeline: Pipeline, own_broker: tuple[Path, stack.Service]) -> None:
    # The workers are killed when the run is cut short: the one that had stopped the broker cannot start it again.
    state, broker = own_broker
    scenario = pipeline.scenario_file(OUTAGE.replace("duration: 3s}", "duration: 10m}"))
    run = iotsim_interrupted_in_fault("load", str(scenario), "--out", str(pipeline.tmp / "results"), "--state-dir", str(state), stopped_pid=broker.pid)
    err = run.stderr
    assert run.returncode == 130, err
    assert f"fault injection cut short: mosquitto started again on port {broker.port}; the run ended before its outage did" in err.splitlines()
    record = stack.recorded(state, "mosquitto")
    assert record is not None and record.running and record.port == broker.port and stack.accepts_tcp(broker.port)
