"""End to end through real Mosquitto and InfluxDB: what the simulator generates is what is stored."""

from __future__ import annotations

import signal
import subprocess
import time

import orjson
import paho.mqtt.client as mqtt
import pytest
from conftest import IOTSIM, QUEUED_IDLE, RUN_IDLE, Pipeline, child_env, iotsim
from paho.mqtt.enums import CallbackAPIVersion

STATIONS = """
name: e2e
seed: 7
duration: 2h
fleets:
  - type: air_quality
    count: 20
    cadence: 5m
"""


def seqs_by_device(pipeline: Pipeline, measurement: str) -> dict[str, list[int]]:
    series = pipeline.query(f'SELECT "seq" FROM "{measurement}" GROUP BY "device_id"')
    return {s["tags"]["device_id"]: sorted(row[1] for row in s["values"]) for s in series}


@pytest.mark.parametrize(
    ("flags", "counted"),
    [([], "acknowledged 480"), (["--qos", "0"], "acknowledged n/a (QoS 0)")],  # QoS 0: the fast publish, nothing lost on a quiet loopback
    ids=["qos1", "qos0"],
)
def test_every_generated_reading_reaches_influxdb_exactly_once(pipeline: Pipeline, flags: list[str], counted: str) -> None:
    bridge = pipeline.start_bridge("--exit-when-idle", RUN_IDLE)
    run = iotsim("run", str(pipeline.scenario_file(STATIONS)), *flags)
    assert run.returncode == 0, run.stderr
    assert f"generated 480, published 480, {counted}" in run.stdout
    bridge_out, bridge_err = bridge.communicate(timeout=60)
    assert bridge.returncode == 0, bridge_err
    assert "received 480, written 480, dead letters 0" in bridge_out

    # 20 stations x 2 h / 5 min
    assert pipeline.count("air_quality") == 20 * 24
    seqs = seqs_by_device(pipeline, "air_quality")
    assert len(seqs) == 20
    assert all(values == list(range(24)) for values in seqs.values())
    low, high = pipeline.query('SELECT min("pm25"), max("pm25") FROM "air_quality"')[0]["values"][0][1:]
    assert 0 < low < high < 1000  # µg/m³, physically plausible for a winter coal city

    # Both ends report their own counters for the pipeline-health board (at QoS 0 a message is acknowledged once written).
    simulator = pipeline.query('SELECT last("published"), last("acknowledged") FROM "pipeline" WHERE "component" = \'simulator\'')
    assert simulator[0]["values"][0][1:] == [480, 480]
    bridge_stats = pipeline.query('SELECT last("written"), last("dead_letters") FROM "pipeline" WHERE "component" = \'bridge\'')
    assert bridge_stats[0]["values"][0][1:] == [480, 0]


def test_a_burst_is_written_when_it_ends_not_when_its_batch_interval_runs_out(pipeline: Pipeline) -> None:
    # Batches of 5,000 that may wait 60 s: only --batch-quiet writes these 480 points within 20 s.
    bridge = pipeline.start_bridge("--batch-interval", "60", "--batch-quiet", "0.1")
    try:
        run = iotsim("run", str(pipeline.scenario_file(STATIONS)))
        assert run.returncode == 0, run.stderr
        deadline = time.monotonic() + 20
        while pipeline.count("air_quality") < 480 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pipeline.count("air_quality") == 480
    finally:
        bridge.send_signal(signal.SIGTERM)
        bridge.communicate(timeout=30)


def test_idleness_counts_from_the_first_message_and_the_start_up_bound_ends_a_bridge_without_any(pipeline: Pipeline) -> None:
    # Messages 5 s after the start, past --exit-when-idle 3 (which a loaded machine's pause inside the run must not reach):
    # within --first-message-timeout, so they are stored.
    bridge = pipeline.start_bridge("--exit-when-idle", "3", "--first-message-timeout", "60")
    time.sleep(5)
    run = iotsim("run", str(pipeline.scenario_file(STATIONS)))
    assert run.returncode == 0, run.stderr
    out, err = bridge.communicate(timeout=60)
    assert bridge.returncode == 0, err
    assert pipeline.count("air_quality") == 480 and "received 480, written 480" in out
    # No message at all: the start-up bound ends it (exit 0), not --exit-when-idle counted from the start.
    quiet = subprocess.Popen(pipeline.bridge_command("--client-id", f"{pipeline.bridge_id}-quiet", "--prefix", f"{pipeline.prefix}quiet",
                                                     "--exit-when-idle", "1", "--first-message-timeout", "5"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())  # fmt: skip
    started = time.monotonic()
    out, err = quiet.communicate(timeout=60)
    assert quiet.returncode == 0, err
    assert 5 <= time.monotonic() - started < 30 and "received 0, written 0" in out


def test_bad_payloads_go_to_dead_letters_and_good_ones_are_stored(pipeline: Pipeline) -> None:
    bridge = pipeline.start_bridge("--exit-when-idle", QUEUED_IDLE)
    good = {"device_id": "aq-0001", "type": "air_quality", "ts": 1768320000000, "seq": 0, "tags": {}, "readings": {"pm25": 80.5}}
    topic = f"{pipeline.prefix}/city/air_quality/aq-0001"
    bad = [
        (topic, b"not json at all"),
        (topic, b"[1, 2, 3]"),
        (topic, orjson.dumps({**good, "ts": "yesterday"})),
        (topic, orjson.dumps({k: v for k, v in good.items() if k != "readings"})),
        (topic, orjson.dumps({**good, "readings": {"pm25": {"nested": 1}}})),
        (topic, orjson.dumps({**good, "readings": {"pm25": 1.0, "x": "y" * 20_000}})),
        (f"{pipeline.prefix}/city/air_quality/aq-0002", orjson.dumps(good)),  # someone else's topic
    ]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{pipeline.prefix}-garbage")
    client.connect(pipeline.broker.url.split("//")[1].split(":")[0], pipeline.broker.port)
    client.loop_start()
    infos = []
    for seq in range(3):  # good messages before, between and after the garbage
        infos.append(client.publish(topic, orjson.dumps({**good, "seq": seq, "ts": good["ts"] + seq * 1000}), qos=1))
        for bad_topic, payload in bad:
            infos.append(client.publish(bad_topic, payload, qos=1))
    for info in infos:
        info.wait_for_publish(10)
    client.disconnect()
    client.loop_stop()

    out, err = bridge.communicate(timeout=60)
    assert bridge.returncode == 0, err
    assert pipeline.count("air_quality") == 3
    letters = [orjson.loads(line) for line in (pipeline.tmp / "dead-letters.jsonl").read_bytes().splitlines()]
    assert len(letters) == 3 * len(bad)
    reasons = {letter["reason"].split(":")[0].split(" ")[0] for letter in letters}
    assert {"not", "payload", "ts", "readings", "reading", "topic"} <= reasons
    assert all(letter["topic"].startswith(pipeline.prefix) and letter["payload_base64"] for letter in letters)
    assert f"dead letters {3 * len(bad)}" in out


def test_bridge_killed_mid_stream_loses_nothing(pipeline: Pipeline) -> None:
    scenario = pipeline.scenario_file(STATIONS.replace("count: 20", "count: 1500").replace("2h", "1h"))
    expected = 1500 * 12
    bridge = pipeline.start_bridge()
    run = subprocess.Popen([*IOTSIM, "run", str(scenario)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    deadline = time.monotonic() + 60
    while pipeline.count("air_quality") < 2000 and time.monotonic() < deadline:
        time.sleep(0.05)
    stored_at_kill = pipeline.count("air_quality")
    bridge.send_signal(signal.SIGKILL)
    bridge.wait(10)
    assert 0 < stored_at_kill < expected  # killed mid-stream

    run_out, run_err = run.communicate(timeout=120)  # the broker queues for the bridge's session
    assert run.returncode == 0, run_err
    assert f"generated {expected}, published {expected}, acknowledged {expected}" in run_out

    restarted = pipeline.start_bridge("--exit-when-idle", "3")
    restarted.communicate(timeout=120)
    assert pipeline.count("air_quality") == expected
    seqs = seqs_by_device(pipeline, "air_quality")
    assert len(seqs) == 1500
    assert all(values == list(range(12)) for values in seqs.values())


def test_speed_n_paces_the_run_and_keeps_simulated_timestamps(pipeline: Pipeline) -> None:
    scenario = pipeline.scenario_file(STATIONS.replace("2h", "10m"))
    paced = pipeline.tmp / "paced.jsonl"
    fast = pipeline.tmp / "fast.jsonl"
    started = time.monotonic()
    assert iotsim("run", str(scenario), "--dry-run", "--out", str(paced), "--speed", "300").returncode == 0
    wall = time.monotonic() - started
    assert iotsim("run", str(scenario), "--dry-run", "--out", str(fast)).returncode == 0
    assert paced.read_bytes() == fast.read_bytes()
    assert wall >= 600 / 300  # ten simulated minutes at 300x take at least 2 s
