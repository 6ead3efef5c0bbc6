"""Sessions and client ids against the real servers (issue 20, parts 3, 4 and 6): no role takes another's
session by accident, a lost or fought-over session is said so, a restarted bridge stores only its own
prefix, and seq gaps are counted as they appear."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import time

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from conftest import Pipeline, QUEUED_IDLE, RUN_IDLE, child_env, iotsim
from simulator import stack
from simulator.errors import BrokerError
from simulator.influx import InfluxClient, InfluxCredentials
from simulator.ingest.sequences import SeqGaps
from simulator.transport.client_ids import MAX_CLIENT_ID, bridge_client_id_problem, load_worker_client_id, run_client_id
from simulator.transport.mqtt import MqttPublisher
from simulator.transport.stats import PublisherStats

STATIONS = """
name: {name}
seed: 11
duration: 2h
fleets:
  - type: air_quality
    count: {count}
    cadence: 5m
"""
TS = 1768320000000  # 2026-01-13T16:00Z


def stations(count: int, name: str = "sessions") -> str:
    return STATIONS.format(name=name, count=count)


def stop(process: subprocess.Popen[str], timeout: float = 30) -> tuple[str, str]:
    """SIGTERM (a clean stop, as Ctrl-C), then its output."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    return process.communicate(timeout=timeout)


def wait_for_count(pipeline: Pipeline, measurement: str, expected: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while (count := pipeline.count(measurement)) < expected and time.monotonic() < deadline:
        time.sleep(0.2)
    return count


def last_bridge_fields(pipeline: Pipeline, *fields: str) -> list[int]:
    selected = ", ".join(f'last("{field}")' for field in fields)
    series = pipeline.query(f'SELECT {selected} FROM "pipeline" WHERE "component" = \'bridge\' AND "client_id" = \'{pipeline.bridge_id}\'')
    assert series, "the bridge wrote no pipeline point"
    return series[0]["values"][0][1:]


def wait_for_lost_session(pipeline: Pipeline, timeout: float = 60) -> None:
    """Until the bridge's periodic pipeline point (every 5 s) counts one lost session: it has reconnected by then."""
    deadline = time.monotonic() + timeout
    while (series := pipeline.query('SELECT last("sessions_lost") FROM "pipeline" WHERE "component" = \'bridge\'')) == [] or series[0]["values"][0][1] != 1:
        assert time.monotonic() < deadline, f"no pipeline point from the bridge counting the lost session: {series}"
        time.sleep(0.2)


def connected_client(pipeline: Pipeline, client_id: str, clean_session: bool = True) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session, protocol=mqtt.MQTTv311)
    client.connect("127.0.0.1", pipeline.broker.port)
    client.loop_start()
    deadline = time.monotonic() + 10
    while not client.is_connected():
        assert time.monotonic() < deadline, f"{client_id} could not connect"
        time.sleep(0.02)
    return client


def take_session(pipeline: Pipeline, client_id: str) -> None:
    """What a clean-session client with the bridge's id does: connect (the broker drops the session), leave."""
    client = connected_client(pipeline, client_id, clean_session=True)
    client.disconnect()
    client.loop_stop()


def publish(pipeline: Pipeline, messages: list[tuple[str, bytes]]) -> None:
    client = connected_client(pipeline, f"{pipeline.prefix}-hand-{time.monotonic_ns()}")
    infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def start_bridge_keeping_its_output(pipeline: Pipeline, *extra: str) -> subprocess.Popen[str]:
    """The bridge as its own process, once subscribed (its ready file), with every line it says kept."""
    ready = pipeline.tmp / f"ready-{time.monotonic_ns()}"
    bridge = subprocess.Popen(pipeline.bridge_command("--ready-file", str(ready), *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    deadline = time.monotonic() + 20
    while not ready.exists():
        assert bridge.poll() is None and time.monotonic() < deadline, "the bridge did not get ready"
        time.sleep(0.05)
    return bridge


def run_bridge(pipeline: Pipeline) -> subprocess.CompletedProcess[str]:
    """The bridge until idle for 2 s (2 s from its start when no message comes), all its output."""
    command = pipeline.bridge_command("--exit-when-idle", "2", "--first-message-timeout", "2")
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=child_env())


def reading(prefix: str, device_id: str, seq: int) -> tuple[str, bytes]:
    payload = {"device_id": device_id, "type": "air_quality", "ts": TS + seq * 60_000, "seq": seq, "tags": {}, "readings": {"pm25": 40.0 + seq}}
    return f"{prefix}/city/air_quality/{device_id}", orjson.dumps(payload)


# --- part 3: client ids carry their role ---


def test_run_and_load_client_ids_carry_their_role_fit_64_characters_and_stay_distinct() -> None:
    assert run_client_id("iotsim", "bridge") == "iotsim-run-bridge"
    assert run_client_id("iotsim", "city-day") == "iotsim-run-city-day"
    assert load_worker_client_id("iotsim", 3, 4242) == "iotsim-load-w3-4242"
    names = ["a b", "a_b", "a/b", "x" * 100, "x" * 99 + "y", "北京 day", "bridge"]
    ids = [run_client_id("p" * 40, name) for name in names]
    assert len(set(ids)) == len(names)
    assert all(len(client_id) <= MAX_CLIENT_ID and bridge_client_id_problem(client_id) for client_id in ids)
    assert bridge_client_id_problem("iotsim-bridge") is None and bridge_client_id_problem("iotsim-load-bridge") is None


def test_a_scenario_named_bridge_no_longer_takes_the_bridges_session(pipeline: Pipeline) -> None:
    # Before: the run connected as {client_id_prefix}-{name} = "<prefix>-bridge", the bridge's id here.
    pipeline = dataclasses.replace(pipeline, bridge_id=f"{pipeline.prefix}-bridge")
    bridge = pipeline.start_bridge()
    try:
        run = iotsim("run", str(pipeline.scenario_file(stations(100, name="bridge"))))
        assert run.returncode == 0, run.stderr
        assert "generated 2400, published 2400, acknowledged 2400" in run.stdout
        assert wait_for_count(pipeline, "air_quality", 2400) == 2400
    finally:
        out, err = stop(bridge)
    assert bridge.returncode == 0, err
    assert "no session" not in err and "in use by another client" not in err
    assert last_bridge_fields(pipeline, "sessions_lost", "takeovers") == [0, 0]


@pytest.mark.parametrize("client_id", ["iotsim-run-quickstart", "t1-load-w0-12345"])
def test_the_bridge_refuses_a_client_id_of_the_simulators_forms(pipeline: Pipeline, client_id: str) -> None:
    command = pipeline.bridge_command("--client-id", client_id)
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, env=child_env())
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("--client-id: ") and client_id in lines[0], result.stderr


def test_two_bridges_with_one_client_id_are_told_so_and_the_other_carries_on(pipeline: Pipeline) -> None:
    first = pipeline.start_bridge()
    second = subprocess.Popen(pipeline.bridge_command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    bridges = [first, second]
    try:
        deadline = time.monotonic() + 30
        while all(bridge.poll() is None for bridge in bridges):
            assert time.monotonic() < deadline, "neither bridge noticed the other within 30 s"
            time.sleep(0.1)
        gone = next(bridge for bridge in bridges if bridge.poll() is not None)
        survivor = next(bridge for bridge in bridges if bridge is not gone)
        _, gone_err = gone.communicate(timeout=10)
        assert gone.returncode == 1, gone_err
        last_line = gone_err.strip().splitlines()[-1]
        assert f"client id {pipeline.bridge_id} is in use by another client" in last_line and "give each bridge its own --client-id" in last_line
        time.sleep(2)
        assert survivor.poll() is None, "the other bridge stopped too"
        run = iotsim("run", str(pipeline.scenario_file(stations(20))))
        assert run.returncode == 0, run.stderr
        assert wait_for_count(pipeline, "air_quality", 480) == 480
    finally:
        for bridge in bridges:
            if bridge.poll() is None:
                stop(bridge)
    takeovers = pipeline.query(f'SELECT max("takeovers") FROM "pipeline" WHERE "client_id" = \'{pipeline.bridge_id}\'')
    assert takeovers and takeovers[0]["values"][0][1] >= 3


def test_two_publishers_with_one_client_id_are_told_so(pipeline: Pipeline) -> None:
    client_id = f"{pipeline.prefix}-run-twice"
    publishers = [MqttPublisher(pipeline.mqtt_url, client_id, qos=1) for _ in range(2)]
    for publisher in publishers:
        publisher.start()
    deadline = time.monotonic() + 30
    try:
        with pytest.raises(BrokerError, match=f"client id {client_id} is in use by another client"):
            while time.monotonic() < deadline:
                for publisher in publishers:
                    publisher.idle(0.05)
    finally:
        for publisher in publishers:
            publisher.stop()
    assert sum(publisher.takeover.takeovers for publisher in publishers) >= 3


def test_the_simulators_pipeline_point_counts_the_takeovers_of_its_session(pipeline: Pipeline) -> None:
    client_id = f"{pipeline.prefix}-run-taken"
    run, other = MqttPublisher(pipeline.mqtt_url, client_id, qos=1), MqttPublisher(pipeline.mqtt_url, client_id, qos=1)
    stats = PublisherStats(run, InfluxClient(pipeline.influx_url, pipeline.database, InfluxCredentials()), client_id, warn=print)
    run.start()
    other.start()  # takes the session: the broker closes the run's connection, which takes it back ...
    deadline = time.monotonic() + 30
    try:
        while run.takeover.takeovers == 0 and time.monotonic() < deadline:
            for publisher in (run, other):
                try:
                    publisher.idle(0.05)
                except BrokerError:
                    pass  # one of them gave up the fight; the other's count stands
    finally:
        other.stop()
        run.stop()
    stats.write()
    taken = run.takeover.takeovers
    assert taken >= 1
    series = pipeline.query(f"SELECT \"takeovers\", \"disconnects\" FROM \"pipeline\" WHERE \"component\" = 'simulator' AND \"client_id\" = '{client_id}'")
    assert [row[1:] for row in series[0]["values"]] == [[taken, run.disconnects]]


# --- part 3, its family: the broker loses the session ---


def test_a_session_taken_while_running_is_reported_and_subscribed_again(pipeline: Pipeline) -> None:
    bridge = pipeline.start_bridge()
    try:
        take_session(pipeline, pipeline.bridge_id)
        wait_for_lost_session(pipeline)  # the bridge reconnected (after 0.25 s) to a broker without its session, and subscribed again
        run = iotsim("run", str(pipeline.scenario_file(stations(20))))
        assert run.returncode == 0, run.stderr
        assert wait_for_count(pipeline, "air_quality", 480) == 480
    finally:
        out, err = stop(bridge)
    assert bridge.returncode == 0, err
    warnings = [line for line in err.splitlines() if "has no session" in line]
    assert len(warnings) == 1 and f"client id {pipeline.bridge_id}" in warnings[0] and "messages published meanwhile are lost" in warnings[0]
    assert "sessions lost 1" in out
    assert last_bridge_fields(pipeline, "sessions_lost") == [1]


def test_a_session_lost_between_two_runs_of_the_bridge_is_reported_at_start(pipeline: Pipeline) -> None:
    stop(pipeline.start_bridge())
    take_session(pipeline, pipeline.bridge_id)
    publish(pipeline, [reading(pipeline.prefix, "aq-0001", seq) for seq in range(5)])  # queued for nobody: lost
    restarted = run_bridge(pipeline)
    assert restarted.returncode == 0, restarted.stderr
    assert "an earlier run of this bridge had one" in restarted.stderr.splitlines()[0]  # said before it is ready
    assert last_bridge_fields(pipeline, "sessions_lost") == [1]
    # A bridge whose session survived says nothing.
    again = run_bridge(pipeline)
    assert again.returncode == 0 and "has no session" not in again.stderr, again.stderr


def test_a_broker_restarted_without_its_persistence_is_a_lost_session_said_once(pipeline: Pipeline, tmp_path) -> None:
    broker_dir = tmp_path / "broker"
    port = stack.free_port()
    broker = stack.start_mosquitto(broker_dir, port)
    pipeline = dataclasses.replace(pipeline, broker=broker)  # this test's own broker: it gets restarted
    bridge = start_bridge_keeping_its_output(pipeline)
    try:
        broker.stop()  # saves the session to mosquitto.db ...
        for saved in (broker_dir / "mosquitto").iterdir():
            saved.unlink()  # ... which is lost, as a broker without a persistent volume loses it
        broker = stack.start_mosquitto(broker_dir, port)
        run = iotsim("run", str(pipeline.scenario_file(stations(20))))
        assert run.returncode == 0, run.stderr  # the run may start before the bridge is back: those are lost
        wait_for_lost_session(pipeline)
    finally:
        out, err = stop(bridge)
        broker.stop()
    assert bridge.returncode == 0, err
    assert [line for line in err.splitlines() if "has no session" in line and "until this connection" in line], err
    assert last_bridge_fields(pipeline, "sessions_lost") == [1]


def test_a_bridge_cut_off_longer_than_its_idle_time_waits_again_for_the_devices_coming_back(pipeline: Pipeline, tmp_path) -> None:
    """--exit-when-idle counts from the bridge's return to the broker too: the devices lost it as well and may reconnect later."""
    broker_dir = tmp_path / "broker"
    port = stack.free_port()
    broker = stack.start_mosquitto(broker_dir, port)
    pipeline = dataclasses.replace(pipeline, broker=broker)  # this test's own broker: it gets restarted
    bridge = start_bridge_keeping_its_output(pipeline, "--exit-when-idle", "3")
    bridge_connected = f" as {pipeline.bridge_id} ("
    try:
        publish(pipeline, [reading(pipeline.prefix, "aq-0001", 0)])
        assert wait_for_count(pipeline, "air_quality", 1) == 1
        broker.stop()
        time.sleep(4.0)  # longer than its idle time, counted from that message
        broker = stack.start_mosquitto(broker_dir, port)
        deadline = time.monotonic() + 30  # its reconnection backoff has reached 4 s
        while broker.log_file.read_text(errors="replace").count(bridge_connected) < 2:
            assert time.monotonic() < deadline, "the bridge did not reconnect"
            time.sleep(0.05)
        time.sleep(1.0)  # a device that comes back after the bridge
        publish(pipeline, [reading(pipeline.prefix, "aq-0001", 1)])
        out, err = bridge.communicate(timeout=60)
    finally:
        stop(bridge)
        broker.stop()
    assert bridge.returncode == 0, err
    assert "lost the broker" in err
    assert pipeline.count("air_quality") == 2  # the device's message after the outage was stored, not left at the broker


# --- part 6: a persistent session keeps yesterday's subscriptions ---


def test_a_bridge_restarted_with_another_prefix_stores_only_the_new_one(pipeline: Pipeline) -> None:
    stop(pipeline.start_bridge())  # subscribed to <p1>/# in its session, then stopped
    old_run = iotsim("run", str(pipeline.scenario_file(stations(10, name="old"), name="old.yaml")))
    assert old_run.returncode == 0, old_run.stderr  # 240 messages queued in the session under <p1>/
    new = dataclasses.replace(pipeline, prefix=f"{pipeline.prefix}new", database=f"{pipeline.database}new")
    stack.create_database(new.influx_url, new.database)
    bridge = start_bridge_keeping_its_output(new)
    try:
        run = iotsim("run", str(new.scenario_file(stations(20, name="new"), name="new.yaml")))
        assert run.returncode == 0, run.stderr
        assert wait_for_count(new, "air_quality", 480) == 480
        # The old subscription is gone: more of the old prefix does not even arrive.
        again = iotsim("run", str(pipeline.scenario_file(stations(10, name="old"), name="old.yaml")))
        assert again.returncode == 0, again.stderr
        time.sleep(2)
    finally:
        out, err = stop(bridge)
    assert bridge.returncode == 0, err
    assert new.count("air_quality") == 480 and new.count("events") == 0
    seqs = new.query('SELECT count("seq"), min("seq"), max("seq") FROM "air_quality" GROUP BY "device_id"')
    assert len(seqs) == 20 and all(s["values"][0][1:] == [24, 0, 23] for s in seqs)
    letters = [orjson.loads(line) for line in (pipeline.tmp / "dead-letters.jsonl").read_bytes().splitlines()]
    assert len(letters) == 240
    assert all(letter["topic"].startswith(f"{pipeline.prefix}/city/") and "outside this bridge's prefix" in letter["reason"] for letter in letters)
    assert f"was subscribed to {pipeline.prefix}/#; unsubscribed, now {new.prefix}/#" in err


# --- part 4: seq gaps as they appear ---


def test_seq_gaps_are_counted_and_said_as_they_appear(pipeline: Pipeline) -> None:
    prefix = pipeline.prefix
    bridge = pipeline.start_bridge("--exit-when-idle", QUEUED_IDLE)
    messages = [reading(prefix, "aq-0001", seq) for seq in (0, 1, 2, 5)]  # 3 and 4 lost: 2
    messages += [reading(prefix, "aq-0002", seq) for seq in (0, 1, 2, 3, 3)]  # a duplicate: no gap
    messages += [reading(prefix, "aq-0003", seq) for seq in (0, 1, 2, 0, 1)]  # a new run of the device: no gap
    messages += [reading(prefix, "aq-0004", seq) for seq in (0, 2, 1, 3)]  # 1 late, out of order: no gap in the end
    publish(pipeline, messages)
    out, err = bridge.communicate(timeout=60)
    assert bridge.returncode == 0, err
    gap_lines = [line for line in err.splitlines() if "seq gap" in line]
    assert gap_lines == [
        "bridge: seq gap: air_quality aq-0001 went from seq 2 to 5: 2 message(s) never received",
        "bridge: seq gap: air_quality aq-0004 went from seq 0 to 2: 1 message(s) never received",
    ]
    assert "seq gaps 2" in out
    assert last_bridge_fields(pipeline, "seq_gaps") == [2]


def test_a_device_dropout_is_no_seq_gap(pipeline: Pipeline) -> None:
    scenario = stations(10).replace("cadence: 5m", "cadence: 5m\n    faults: [{kind: dropout, devices: [aq-0003], at: 30m, duration: 1h}]")
    bridge = pipeline.start_bridge("--exit-when-idle", RUN_IDLE)
    run = iotsim("run", str(pipeline.scenario_file(scenario)))
    assert run.returncode == 0, run.stderr
    out, err = bridge.communicate(timeout=60)
    assert bridge.returncode == 0, err
    silent = pipeline.query('SELECT count("seq"), max("seq") FROM "air_quality" WHERE "device_id" = \'aq-0003\'')[0]["values"][0][1:]
    assert silent == [12, 11]  # 2 h every 5 min, less the silent hour: 12 messages, seq 0..11
    assert "seq gap" not in err
    assert last_bridge_fields(pipeline, "seq_gaps") == [0]


def test_late_arrivals_take_back_only_the_seqs_that_were_missing() -> None:
    lines: list[str] = []
    gaps = SeqGaps(lines.append, max_open=1)
    changes = [gaps.observe("air_quality", "aq-0001", seq) for seq in (0, 5, 3, 3, 1, 4, 2, 6)]
    assert changes == [0, 4, -1, 0, -1, -1, -1, 0]  # 3 twice: the second is a duplicate
    assert not gaps.open and gaps.open_ranges == 0
    # Past max_open ranges a gap still counts, but can no longer be taken back.
    assert [gaps.observe("air_quality", "aq-0002", seq) for seq in (0, 2)] == [0, 1]
    assert [gaps.observe("air_quality", "aq-0003", seq) for seq in (0, 2, 1)] == [0, 1, 0]
    assert len(lines) == 3
