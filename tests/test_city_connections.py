"""scenarios/city-connections.yaml scaled down (issue 15): 300 smart electricity meters, each its own
connection, one simulated hour with the broker stopped mid-way, through the real Mosquitto, bridge and
InfluxDB. Every reading is stored exactly once, every meter's birth is stored, and every meter
reconnects exactly once after the outage."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from conftest import RUN_IDLE, Pipeline, iotsim

from simulator import stack

ROOT = Path(__file__).resolve().parent.parent
METERS = 300
READINGS = METERS * 4  # an hour at 15 min


def scaled_down(pipeline: Pipeline, mqtt_url: str, influx_url: str) -> Path:
    """The shipped file with 300 meters, 1 h (the outage at 30 min for 5 min: 2.5 s of wall time at speed
    120), connects spread over 2 s, pointed at this test's servers; its reconnect policy as shipped."""
    data = yaml.safe_load((ROOT / "scenarios" / "city-connections.yaml").read_text())
    data.update(duration="1h", speed=120)
    data["fleets"][0]["count"] = METERS
    data["faults"] = [{"kind": "broker_outage", "at": "30m", "duration": "5m"}]
    data["mqtt"].update(url=mqtt_url, topic_prefix=pipeline.prefix, client_id_prefix=pipeline.prefix, connect_window="2s")
    data["influx"].update(url=influx_url, database=pipeline.database)
    path = pipeline.tmp / "city-connections.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_city_connections_scaled_down_stores_every_reading_once_and_every_meter_reconnects(pipeline: Pipeline, tmp_path: Path) -> None:
    state = tmp_path / "stack"
    broker = stack.start_mosquitto(state, stack.free_port())
    influx = stack.start_influxdb(state, stack.free_port(), database=pipeline.database)
    pipeline.broker, pipeline.influxdb = broker, influx  # this test's own servers: the outage restarts the broker
    scenario = scaled_down(pipeline, broker.url, influx.url)
    shipped = yaml.safe_load((ROOT / "scenarios" / "city-connections.yaml").read_text())
    assert shipped["fleets"][0]["connection"] == "device" and shipped["fleets"][0]["reconnect"]["jitter"] == "full"
    bridge = pipeline.start_bridge("--exit-when-idle", RUN_IDLE)
    try:
        run = iotsim("run", str(scenario), "--state-dir", str(state), timeout=240)
        assert run.returncode == 0, run.stdout + run.stderr
        events = 2  # the outage's start and end, through the run's shared connection
        assert f"generated {READINGS + events}, published {READINGS + events}, acknowledged {READINGS + events}" in run.stdout
        # The run's own (shared) connection is back soon after the broker, not at the run's end: the
        # devices' loop turns it while the meters wait (outage 2.5 s of wall time, the run ~30 s).
        shared = re.search(r"lost the broker for ([\d.]+) s", run.stdout)
        assert shared is not None and float(shared.group(1)) < 12.0, run.stdout  # 4.0 s here (its reconnect 4 s after the loss); the run ends ~15 s after the outage
        line = re.search(r"device connections: (\d+) own connections.*?, connects (\d+), reconnects (\d+),", run.stdout)
        assert line is not None, run.stdout
        assert tuple(map(int, line.groups())) == (METERS, 2 * METERS, METERS)  # each meter: its first connect, and one after the outage
        _, bridge_err = bridge.communicate(timeout=120)
        assert bridge.returncode == 0, bridge_err

        assert pipeline.count("electricity_meter") == READINGS
        series = pipeline.query('SELECT count("seq"), min("seq"), max("seq") FROM "electricity_meter" GROUP BY "device_id"')
        assert len(series) == METERS and all(s["values"][0][1:] == [4, 0, 3] for s in series)  # each reading once, no gaps
        # Per meter: its first connection's birth, the will Mosquitto fired for it when stopped (stamped with
        # that connection's start: the same point as the birth when both fall in one millisecond), the birth
        # after the outage, and the run's clean end saying offline.
        statuses = pipeline.query('SELECT "online" FROM "device_status" GROUP BY "device_id"')
        assert len(statuses) == METERS
        for one in statuses:
            online = [row[1] for row in one["values"]]
            assert online[-2:] == [True, False] and online.count(False) == 2 and online.count(True) in (1, 2), (one["tags"], online)
        figures = pipeline.query("SELECT last(\"connected\"), last(\"reconnects\"), last(\"outbox_depth\") FROM \"pipeline\" WHERE \"component\" = 'simulator'")
        assert figures[0]["values"][0][1:] == [METERS, METERS, 0]
        outage = pipeline.query('SELECT count("seq") FROM "events" WHERE "kind" = \'fault_broker_outage\' GROUP BY "phase"')
        assert {s["tags"]["phase"]: s["values"][0][1] for s in outage} == {"start": 1, "end": 1}
    finally:
        if bridge.poll() is None:
            stack.stop_pid(bridge.pid)
        stack.stack_down(state)  # the injector restarted the broker: stop it by the PID file it left
        broker.stop()
        influx.stop()
