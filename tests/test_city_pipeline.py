"""The city through real Mosquitto and InfluxDB: every type lands in its measurement, and the
incident, gas alarm and cooling fault land in `events` for the dashboards' annotations."""

from __future__ import annotations

from collections import Counter

import orjson

from conftest import Pipeline, RUN_IDLE, iotsim

CITY = """
name: city-e2e
seed: 3
start: 2026-01-15T07:00:00+08:00
duration: 1h
fleets:
  - {type: air_quality, count: 5, cadence: 5m, category_hold: 0, category_events: true}
  - {type: traffic_loop, count: 9, cadence: 1m}
  - {type: street_light, count: 3, cadence: 5m}
  - {type: heating_substation, count: 3, cadence: 5m}
  - {type: water_pressure, count: 3, cadence: 5m}
  - {type: parking_lot, count: 3, cadence: 5m}
  - {type: noise_monitor, count: 3, cadence: 1m}
  - {type: electricity_meter, count: 8, cadence: 15m}
  - {type: mine_gas, count: 2, cadence: 10s}
  - {type: dc_rack, count: 4, cadence: 1m}
city:
  traffic:
    incidents: [{road: taobei-rd, at: 10m, duration: 20m}]
  mine:
    outbursts_per_day: 0
    gas_events: [{device: gas-0001, at: 15m, peak_pct: 2.0}]
  data_centre:
    cooling_faults: [{at: 20m, duration: 20m, hall: H1}]
"""


def test_every_city_type_and_its_events_are_stored(pipeline: Pipeline) -> None:
    scenario = pipeline.scenario_file(CITY)
    dry = pipeline.tmp / "city.jsonl"
    assert iotsim("run", str(scenario), "--dry-run", "--out", str(dry)).returncode == 0
    generated = Counter(orjson.loads(line)["payload"]["type"] for line in dry.read_bytes().splitlines())

    bridge = pipeline.start_bridge("--exit-when-idle", RUN_IDLE)
    run = iotsim("run", str(scenario))
    assert run.returncode == 0, run.stderr
    _, bridge_err = bridge.communicate(timeout=120)
    assert bridge.returncode == 0, bridge_err

    assert len(generated) == 11  # ten device types and events
    for measurement, count in generated.items():
        assert pipeline.count(measurement) == count, measurement

    kinds = {value for _, value in pipeline.query('SHOW TAG VALUES FROM "events" WITH KEY = "kind"')[0]["values"]}
    assert {"traffic_incident", "gas_alarm", "gas_power_cut", "cooling_fault"} <= kinds
    # Strings and bools survive as fields, the district and road as tags.
    rows = pipeline.query('SELECT last("aqi_category"), last("aqi") FROM "air_quality" GROUP BY "district"')
    assert len(rows) == 5 and all(isinstance(series["values"][0][1], str) for series in rows)
    lights = pipeline.query('SELECT count("on") FROM "street_light" WHERE "on" = true')
    assert lights and lights[0]["values"][0][1] > 0  # 07:00-07:40 is before the January sunrise
    roads = pipeline.query('SHOW TAG VALUES FROM "traffic_loop" WITH KEY = "road"')
    assert len(roads[0]["values"]) == 9
