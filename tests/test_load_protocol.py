"""The load runner and its children speak typed messages (simulator/load/protocol.py), control only
(a live child's figures go to InfluxDB, tests/test_load_hosts.py): every kind survives its JSON line, a line that is no message its reader expects is one clear error naming the
sender and the line, and an IotsimError a worker meets mid-run (another client takes its client id)
ends the experiment as one line, with no traceback anywhere."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from conftest import IOTSIM, Pipeline, child_env
from simulator.ingest.settings import BridgeSettings
from simulator.load.protocol import (
    BRIDGE_ORDERS, CONTROL_REPORTS, DRY_RUN_REPORTS, WORKER_ORDERS, BridgeOrders, Failure, ProtocolError, Ready, Start, WorkerCounts, WorkerFinal,
    WorkerOrders, decode_message, encode_message,
)  # fmt: skip
from simulator.load.runner import LoadError, Worker
from simulator.shard import Shard
from simulator.scenario import load_scenario
from simulator.transport.client_ids import load_bridge_client_id, load_worker_client_id

REPO = Path(__file__).resolve().parent.parent

CONTROL_MESSAGES = [Ready(), Failure(message="client id t1-load-w0-42 is in use by another client: ..."), Failure(message="InfluxDB refused the write")]
DRY_RUN_MESSAGES = [
    WorkerFinal(counts=WorkerCounts(generated=31, published=31, acknowledged=31), publish_hist="", devices=12, wall_s=4.25, drained=True),
    Failure(message="cannot write /tmp/x.jsonl"),
]


def test_every_message_survives_its_line() -> None:
    scenario = load_scenario(REPO / "scenarios" / "load-ramp.yaml")
    settings = BridgeSettings(client_id="iotsim-load-bridge", spool_dir=Path("/tmp/spool"), dead_letter_path=Path("/tmp/dead.jsonl"), batch_interval=0.2)
    bridge_orders = BridgeOrders(
        settings=settings, influx_url="http://127.0.0.1:8086", database="db", user=None, password="secret", token=None,
        mqtt_username="bridge", mqtt_password="pw", ca_file=None, raw_latencies="/tmp/latencies.i64", run_id="ramp-1",
    )  # fmt: skip
    orders = [(WORKER_ORDERS, WorkerOrders(scenario=scenario, shard=Shard(1, 3), qos=1, run_id="ramp-1")), (WORKER_ORDERS, Start(start_ms=1_768_000_000_123))]
    orders += [(BRIDGE_ORDERS, bridge_orders), (BRIDGE_ORDERS, Start(start_ms=5))]
    reports = [(CONTROL_REPORTS, message) for message in CONTROL_MESSAGES] + [(DRY_RUN_REPORTS, message) for message in DRY_RUN_MESSAGES]
    for kinds, message in orders + reports:
        line = encode_message(message)
        assert line.endswith("\n") and line.count("\n") == 1
        assert decode_message(kinds, line, "worker 0") == message
    decoded = decode_message(WORKER_ORDERS, encode_message(orders[0][1]), "the runner")
    assert isinstance(decoded, WorkerOrders) and decoded.scenario == scenario and decoded.shard == Shard(1, 3)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"ready": true}\n', "Unable to extract tag using discriminator 'kind'"),  # the protocol before kinds
        ('{"kind": "bridge_final", "gaps": 0}\n', "does not match any of the expected tags"),  # figures are records in InfluxDB, not lines
        ('{"kind": "worker_interval", "k": 2, "counts": {"generated": 1, "published": 1, "acknowledged": 1}, "publish_hist": ""}\n', "does not match any of the expected tags"),
        ('{"kind": "error"}\n', "error.message: Field required"),
        ('{"kind": "ready", "x": 1}\n', "ready.x: Extra inputs are not permitted"),
        ("Traceback (most recent call last):\n", "line: Invalid JSON"),
    ],
)
def test_a_line_that_is_no_message_is_one_error_naming_the_sender_and_the_line(line: str, problem: str) -> None:
    with pytest.raises(ProtocolError) as raised:
        decode_message(CONTROL_REPORTS, line, "worker 2")
    text = str(raised.value)
    assert text.startswith("worker 2 sent a line that is no message of the load protocol (") and problem in text, text
    assert text.endswith(f": {line.rstrip()!r}") and "\n" not in text


def test_a_long_line_is_shown_cut() -> None:
    line = '{"kind": "nonsense", "pad": "' + "x" * 5000 + '"}'
    with pytest.raises(ProtocolError) as raised:
        decode_message(CONTROL_REPORTS, line, "bridge")
    assert len(str(raised.value)) < 600 and f"... ({len(line)} characters)'" in str(raised.value)


def test_the_runner_stops_a_child_that_sends_a_line_it_cannot_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A worker of the protocol before kinds: it answers its orders with {"ready": true}, then waits.
    (tmp_path / "old_worker.py").write_text("import sys, time\nsys.stdin.readline()\nprint('{\"ready\": true}', flush=True)\ntime.sleep(60)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    scenario = load_scenario(REPO / "scenarios" / "load-ramp.yaml")
    worker = Worker.start("worker 0", "old_worker", WorkerOrders(scenario=scenario, shard=Shard(0, 1), qos=1), tmp_path / "w.log", CONTROL_REPORTS)
    started = time.monotonic()
    with pytest.raises(LoadError) as raised:
        worker.wait_ready(30)
    assert time.monotonic() - started < 10  # not the ready timeout: the line itself is the error
    assert str(raised.value) == (
        "worker 0 sent a line that is no message of the load protocol (line: Unable to extract tag using discriminator 'kind'): '{\"ready\": true}'"
    )
    assert worker.process.poll() is not None  # stopped, not left sleeping


@pytest.mark.parametrize("module", ["simulator.load.worker", "simulator.load.bridge"])
def test_a_child_given_an_order_it_cannot_read_says_so_in_one_failure(module: str) -> None:
    child = subprocess.run([sys.executable, "-m", module], input='{"start_ms": 1}\n', capture_output=True, text=True, timeout=60, env=child_env())
    assert child.returncode == 1
    assert "Traceback" not in child.stderr
    [line] = child.stdout.splitlines()
    failure = decode_message(CONTROL_REPORTS, line, module)
    assert isinstance(failure, Failure)
    assert failure.message.startswith("the runner sent a line that is no message of the load protocol (") and "'{\"start_ms\": 1}'" in failure.message


def test_a_start_where_orders_are_due_is_refused_by_name() -> None:
    line = encode_message(Start(start_ms=1))
    child = subprocess.run([sys.executable, "-m", "simulator.load.worker"], input=line, capture_output=True, text=True, timeout=60, env=child_env())
    assert child.returncode == 1 and "Traceback" not in child.stderr
    assert decode_message(CONTROL_REPORTS, child.stdout, "worker") == Failure(message="the runner sent 'start' where 'worker_orders' was due")


LONG_RUN = """
name: load-test-takeover
seed: 3
duration: 1m
fleets:
  - {type: load_probe, count: 4}
load:
  profile: {kind: constant, target: 20, duration: 120s}
  qos: 1
  drain: 5s
"""


@pytest.mark.parametrize("child", ["worker", "bridge"])
def test_a_child_whose_client_id_is_taken_ends_the_experiment_with_one_line(pipeline: Pipeline, child: str) -> None:
    out = pipeline.tmp / "results"
    run = subprocess.Popen([*IOTSIM, "load", str(pipeline.scenario_file(LONG_RUN)), "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    rival = None
    try:
        worker_pid = wait_for_worker(run.pid)  # the bridge is subscribed before the workers start
        client_id = load_worker_client_id(pipeline.prefix, 0, worker_pid) if child == "worker" else load_bridge_client_id(pipeline.prefix)
        # Another client with the child's id, reconnecting whenever the broker closes it (as the child does).
        rival = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        rival.reconnect_delay_set(min_delay=1, max_delay=1)
        rival.connect("127.0.0.1", pipeline.broker.port)
        rival.loop_start()
        stdout, stderr = run.communicate(timeout=60)  # the profile lasts 120 s: the experiment ends well before it
    finally:
        if rival is not None:
            rival.loop_stop()
            rival.disconnect()
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 2, stdout + stderr
    last = stderr.strip().splitlines()[-1]
    name, log = ("worker 0", "worker-0.log") if child == "worker" else ("bridge", "bridge.log")
    assert last.startswith(f"{name}: client id {client_id} is in use by another client: the broker closed "), stderr
    assert "Traceback" not in stderr
    assert "Traceback" not in (out / log).read_text()
    assert not (out / "summary.json").exists()  # no results from an experiment that could not run


def wait_for_worker(runner_pid: int) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for child in psutil.Process(runner_pid).children(recursive=True):
            try:
                if "simulator.load.worker" in child.cmdline():
                    return child.pid
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.1)
    raise AssertionError("no load worker started within 30 s")
