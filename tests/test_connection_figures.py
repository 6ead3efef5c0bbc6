"""A run's device connections in its `pipeline` points (issue 15): the figures `iotsim run` writes to
InfluxDB beside its publisher's, against the real Mosquitto and InfluxDB."""

from __future__ import annotations

from conftest import Pipeline, iotsim
from simulator.transport.stats import DEVICE_FIELDS

STATIONS = """
name: connection-figures
seed: 8
duration: 2h
fleets:
  - type: air_quality
    count: 25
    cadence: 10m
    connection: device
  - type: noise_monitor
    count: 3
"""


def last_simulator_point(pipeline: Pipeline, *fields: str) -> dict[str, int]:
    selected = ", ".join(f'last("{field}") AS "{field}"' for field in fields)
    series = pipeline.query(f"SELECT {selected} FROM \"pipeline\" WHERE \"component\" = 'simulator'")
    assert series, "the run wrote no pipeline point"
    columns, values = series[0]["columns"], series[0]["values"][0]
    return dict(zip(columns[1:], values[1:], strict=True))


def test_a_runs_pipeline_point_has_its_device_connections(pipeline: Pipeline) -> None:
    run = iotsim("run", str(pipeline.scenario_file(STATIONS, mqtt="connect_window: 1s")), timeout=120)
    assert run.returncode == 0, run.stderr
    assert "connects 25, reconnects 0, failed attempts 0" in run.stdout
    point = last_simulator_point(pipeline, *DEVICE_FIELDS, "published", "acknowledged")
    # The final point is written once everything is acknowledged and before the devices say goodbye.
    messages = 25 * 12 + 3 * 120
    assert point["published"] == 3 * 120 and point["acknowledged"] == 3 * 120  # the shared connection's own
    assert {name: point[name] for name in DEVICE_FIELDS[:6]} == {
        "connected": 25,
        "connects": 25,
        "reconnects": 0,
        "connect_failures": 0,
        "device_disconnects": 0,
        "outbox_depth": 0,
    }
    assert 1 <= point["connect_p50_ms"] <= point["connect_p99_ms"] < 5_000  # loopback: the CONNACK within a few ms, 1 ms the histogram's floor
    assert f"published {messages}, acknowledged {messages}" in run.stdout


def test_a_run_without_device_connections_writes_no_device_fields(pipeline: Pipeline) -> None:
    run = iotsim("run", str(pipeline.scenario_file(STATIONS.replace("    connection: device\n", ""))), timeout=120)
    assert run.returncode == 0, run.stderr
    keys = pipeline.query('SHOW FIELD KEYS FROM "pipeline"')
    names = {row[0] for row in keys[0]["values"]}
    assert {"published", "acknowledged", "disconnects"} <= names and names.isdisjoint(DEVICE_FIELDS)
