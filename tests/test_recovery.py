"""Recovery with real processes: a broker restart and an InfluxDB outage in the middle of a QoS 1 run
lose nothing and store nothing twice (generated = stored, per device, no gaps)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import IOTSIM, Pipeline, RUN_IDLE, child_env
from simulator import stack

STATIONS, MINUTES = 200, 60
SCENARIO = f"""
name: recovery
seed: 3
duration: {MINUTES}m
speed: 400
fleets:
  - type: air_quality
    count: {STATIONS}
    cadence: 1m
"""
EXPECTED = STATIONS * MINUTES


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting {timeout} s for {what}")
        time.sleep(0.05)


def assert_complete(pipeline: Pipeline) -> None:
    assert pipeline.count("air_quality") == EXPECTED
    series = pipeline.query('SELECT count("seq"), min("seq"), max("seq") FROM "air_quality" GROUP BY "device_id"')
    assert len(series) == STATIONS
    assert all(s["values"][0][1:] == [MINUTES, 0, MINUTES - 1] for s in series)


def run_in_background(pipeline: Pipeline, mqtt: str = "") -> subprocess.Popen[str]:
    scenario = pipeline.scenario_file(SCENARIO, mqtt=mqtt)
    return subprocess.Popen([*IOTSIM, "run", str(scenario)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())


def test_broker_restart_mid_run_loses_nothing(pipeline: Pipeline, tmp_path: Path) -> None:
    broker_dir = tmp_path / "broker"
    port = stack.free_port()
    broker = stack.start_mosquitto(broker_dir, port)
    pipeline.broker = broker  # this test's own broker: it gets stopped
    try:
        bridge = pipeline.start_bridge("--exit-when-idle", RUN_IDLE)
        run = run_in_background(pipeline)
        wait_for(lambda: pipeline.count("air_quality") > EXPECTED // 4, 60, "a quarter of the points")
        broker.stop()  # SIGTERM: Mosquitto saves its sessions and queued messages
        assert pipeline.count("air_quality") < EXPECTED
        time.sleep(1.0)  # an outage both clients notice
        broker = stack.start_mosquitto(broker_dir, port)

        run_out, run_err = run.communicate(timeout=180)
        assert run.returncode == 0, run_err
        assert f"generated {EXPECTED}, published {EXPECTED}, acknowledged {EXPECTED}" in run_out
        bridge_out, bridge_err = bridge.communicate(timeout=180)
        assert bridge.returncode == 0, bridge_err
        assert "lost the broker" in bridge_err
        assert "has no session" not in bridge_err  # Mosquitto saved the bridge's session and restored it
        assert_complete(pipeline)
    finally:
        broker.stop()


def test_publisher_holds_a_long_outage_on_disk_and_sends_it_in_order(pipeline: Pipeline, tmp_path: Path) -> None:
    broker_dir = tmp_path / "broker"
    port = stack.free_port()
    broker = stack.start_mosquitto(broker_dir, port)
    pipeline.broker = broker
    try:
        bridge = pipeline.start_bridge("--exit-when-idle", RUN_IDLE)
        # 100 held messages in memory, the rest in the outbox's file; the simulation keeps going.
        run = run_in_background(pipeline, mqtt="buffer_in_memory: 100")
        wait_for(lambda: pipeline.count("air_quality") > EXPECTED // 4, 60, "a quarter of the points")
        broker.stop()
        time.sleep(3.0)  # ~4,000 messages at this pace: more than max_queued (1,000) ever held in paho
        broker = stack.start_mosquitto(broker_dir, port)

        run_out, run_err = run.communicate(timeout=180)
        assert run.returncode == 0, run_err
        assert f"generated {EXPECTED}, published {EXPECTED}, acknowledged {EXPECTED}" in run_out
        held = int(run_out.split("messages held meanwhile")[0].rsplit("; ", 1)[1])
        assert held > 1000, run_out
        assert "all handed over again" in run_out
        bridge_out, bridge_err = bridge.communicate(timeout=180)
        assert bridge.returncode == 0, bridge_err
        assert_complete(pipeline)
    finally:
        broker.stop()


def test_influxdb_outage_mid_run_loses_nothing(pipeline: Pipeline, tmp_path: Path) -> None:
    influx_dir = tmp_path / "influx"
    port = stack.free_port()
    influx = stack.start_influxdb(influx_dir, port, database=pipeline.database)
    pipeline.influxdb = influx  # this test's own database server: it gets stopped
    try:
        bridge = pipeline.start_bridge("--exit-when-idle", RUN_IDLE)
        run = run_in_background(pipeline)
        wait_for(lambda: pipeline.count("air_quality") > EXPECTED // 4, 60, "a quarter of the points")
        influx.stop()
        time.sleep(2.0)  # the bridge keeps receiving and holds the acknowledgements
        influx = stack.start_influxdb(influx_dir, port, database=pipeline.database)

        run_out, run_err = run.communicate(timeout=180)
        assert run.returncode == 0, run_err
        bridge_out, bridge_err = bridge.communicate(timeout=180)
        assert bridge.returncode == 0, bridge_err
        assert "InfluxDB write failed" in bridge_err
        received = int(bridge_out.split("received ")[1].split(",")[0])
        assert received >= EXPECTED  # redeliveries may come twice; they are the same points
        assert_complete(pipeline)
    finally:
        influx.stop()


def spooled_points(directory: Path) -> int:
    """Points in the bridge's spool files (each file is named NUMBER-POINTS.lp)."""
    return sum(int(path.stem.split("-")[1]) for path in directory.glob("*/*.lp"))


def test_bridge_spools_to_disk_while_influxdb_is_down_and_survives_kill_9(pipeline: Pipeline, tmp_path: Path) -> None:
    influx_dir = tmp_path / "influx"
    port = stack.free_port()
    influx = stack.start_influxdb(influx_dir, port, database=pipeline.database)
    pipeline.influxdb = influx
    spool = pipeline.tmp / "spool"
    bridge = pipeline.start_bridge("--max-pending", "300")
    try:
        run = run_in_background(pipeline)
        wait_for(lambda: pipeline.count("air_quality") > EXPECTED // 4, 60, "a quarter of the points")
        influx.stop()
        run_out, run_err = run.communicate(timeout=180)
        assert run.returncode == 0, run_err
        # More than half the run arrived after InfluxDB stopped: past 300 held messages, it goes to disk.
        wait_for(lambda: spooled_points(spool) > EXPECTED // 2, 60, "the spool to take the backlog")
        # Spooled messages are acknowledged: killing the bridge now leaves them only in the spool.
        bridge.kill()
        bridge.wait()
        influx = stack.start_influxdb(influx_dir, port, database=pipeline.database)
        bridge = pipeline.start_bridge("--exit-when-idle", "3")
        bridge_out, bridge_err = bridge.communicate(timeout=180)
        assert bridge.returncode == 0, bridge_err
        assert_complete(pipeline)
        assert spooled_points(spool) == 0
    finally:
        bridge.kill()
        influx.stop()
