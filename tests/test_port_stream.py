"""The port's messages: exact counts per device, the message contract, determinism, and the real
pipeline (Mosquitto → bridge → InfluxDB) storing exactly what was generated."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import jsonschema
import orjson

from conftest import Pipeline, RUN_IDLE, iotsim
from simulator.engine import run_scenario
from simulator.scenario import Scenario, load_scenario
from simulator.transport.jsonl import read_messages

REPO = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((REPO / "simulator/schemas/telemetry.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
PORT_DAY = load_scenario(REPO / "scenarios/port-day.yaml")
READINGS = {
    "port_crane": {"status", "moves", "power_kw", "energy_kwh"},
    "yard_block": {"occupancy_teu", "capacity_teu", "utilisation", "boxes"},
    "gate_lane": {"queue_length", "busy", "service_time_s", "trucks_served"},
    "reefer": {"occupied", "plugged", "alarm"},  # + temperatures, setpoint and container when occupied
    "truck_gps": {"lat", "lon", "speed_kmh", "state", "loaded"},
}


def stream(scenario: Scenario) -> list[tuple[str, bytes]]:
    messages: list[tuple[str, bytes]] = []
    run_scenario(scenario, lambda topic, payload: messages.append((topic, payload)))
    return messages


def test_each_device_sends_exactly_duration_over_cadence_messages_in_sequence() -> None:
    messages = stream(PORT_DAY.with_overrides(duration="6h"))
    by_device: dict[str, list[dict]] = {}
    events: list[dict] = []
    for topic, raw in messages:
        payload = orjson.loads(raw)
        if payload["type"] == "events":
            events.append(payload)
            assert topic == f"yangquan/events/{payload['tags']['kind']}/{payload['device_id']}"
            assert payload["tags"]["domain"] == "port"
        else:
            assert topic == f"yangquan/port/{payload['type']}/{payload['device_id']}"
            by_device.setdefault(payload["device_id"], []).append(payload)
    cadence = {fleet.type: fleet.cadence for fleet in PORT_DAY.fleets}
    devices = Counter(payloads[0]["type"] for payloads in by_device.values())
    assert devices == {"port_crane": 6, "yard_block": 6, "gate_lane": 4, "reefer": 120, "truck_gps": 20}
    for device_id, payloads in by_device.items():
        kind = payloads[0]["type"]
        assert [p["seq"] for p in payloads] == list(range(round(6 * 3600 / cadence[kind]))), device_id
        assert all(b["ts"] - a["ts"] == cadence[kind] * 1000 for a, b in zip(payloads, payloads[1:]))
        assert all(READINGS[kind] <= p["readings"].keys() for p in payloads)
        for p in payloads[:3]:
            VALIDATOR.validate(p)
    for event in events:
        VALIDATOR.validate(event)
    assert len(messages) == sum(len(p) for p in by_device.values()) + len(events)
    kinds = Counter(e["tags"]["kind"] for e in events)
    assert kinds["train_arrival"] >= 1 and kinds["gate_ocr"] > 50


def test_readings_come_from_the_model_state() -> None:
    messages = [orjson.loads(raw) for _, raw in stream(PORT_DAY.with_overrides(duration="12h"))]
    cranes = [m for m in messages if m["type"] == "port_crane"]
    # A crane draws drive power only while moving; its move counter never goes back.
    assert {m["readings"]["status"] for m in cranes} == {"idle", "moving"}
    assert all((m["readings"]["power_kw"] > 20.0) == (m["readings"]["status"] == "moving") for m in cranes if m["tags"]["kind"] == "rmg")
    by_crane: dict[str, list[float]] = {}
    for m in cranes:
        by_crane.setdefault(m["device_id"], []).append(m["readings"]["moves"])
    assert all(b >= a for moves in by_crane.values() for a, b in zip(moves, moves[1:]))
    # Gate passages: each truck is read once going in and once going out, at the lanes that report.
    served = max(m["readings"]["trucks_served"] for m in messages if m["type"] == "gate_lane" and m["tags"]["lane"] == "G1")
    assert served > 0
    blocks = [m["readings"] for m in messages if m["type"] == "yard_block"]
    assert all(0 <= b["occupancy_teu"] <= b["capacity_teu"] for b in blocks)
    trucks = [m["readings"] for m in messages if m["type"] == "truck_gps"]
    assert all(37.8 < t["lat"] < 39.2 and 113.5 < t["lon"] < 117.8 for t in trucks)  # on the corridor
    assert all((t["speed_kmh"] > 0) == (t["state"] == "driving") for t in trucks)


def test_same_seed_gives_the_same_bytes_and_another_seed_differs() -> None:
    scenario = PORT_DAY.with_overrides(duration="4h")
    first, second = stream(scenario), stream(scenario)
    assert first == second
    assert stream(scenario.with_overrides(seed=scenario.seed + 1)) != first


def test_a_port_device_stream_does_not_depend_on_the_other_port_sensors() -> None:
    scenario = PORT_DAY.with_overrides(duration="6h")
    alone = scenario.with_overrides(fleets=[{"type": "port_crane", "count": 6, "cadence": "1m"}])

    def crane(messages: list[tuple[str, bytes]]) -> list[bytes]:
        return [raw for topic, raw in messages if topic.endswith("/port-crane-0001")]

    assert crane(stream(alone)) == crane(stream(scenario))


def test_port_day_streams_through_the_real_pipeline_with_exact_counts(pipeline: Pipeline, tmp_path: Path) -> None:
    # Two hours of port-day (its fleets and port) against the test's own broker and database.
    text = (REPO / "scenarios/port-day.yaml").read_text()
    body = text.split("\nmqtt:")[0].replace("duration: 1d", "duration: 2h") + "\n" + "fleets:" + text.split("\nfleets:")[1]
    path = pipeline.scenario_file(body)
    dry = tmp_path / "dry.jsonl"
    assert iotsim("run", str(path), "--dry-run", "--out", str(dry)).returncode == 0
    expected = Counter(payload["type"] for _, payload in read_messages(dry))
    total = sum(expected.values())
    assert expected["truck_gps"] == 20 * 240 and expected["reefer"] == 120 * 24 and expected["gate_lane"] == 4 * 240

    bridge = pipeline.start_bridge("--exit-when-idle", RUN_IDLE)
    run = iotsim("run", str(path))
    assert run.returncode == 0, run.stderr
    assert f"generated {total}, published {total}, acknowledged {total}" in run.stdout
    out, err = bridge.communicate(timeout=120)
    assert bridge.returncode == 0, err
    assert f"received {total}, written {total}, dead letters 0" in out
    for measurement, count in expected.items():
        assert pipeline.count(measurement) == count, measurement
