"""The device-type contract: one `DeviceType` declaration makes a type a scenario can name, and every
type, the port's and the load probe's included, takes the device `faults:` of docs/city.md."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Generator
from pathlib import Path
from typing import Any

import orjson
import pytest
import simpy
from pydantic import Field

from conftest import iotsim
from simulator import catalogue
from simulator.builder import build_world
from simulator.city import mine_gas
from simulator.city.model import City, city_of
from simulator.device_faults import FaultyReadings
from simulator.device_type import DeviceType, FleetConfig, first_delay, owned_devices, register_device, send
from simulator.engine import run_scenario
from simulator.fleet import Duration
from simulator.scenario import Scenario, ScenarioError, load_scenario
from simulator.telemetry import BOOLEAN, FLOAT, Device, Reading, Telemetry
from simulator.world import World

START_MS = 1_768_320_000_000  # the default start, 2026-01-14 00:00 +08:00


# -- a device type defined here, as a new sensor module would define it --------------------------------
class ThermometerFleet(FleetConfig):
    cadence: Duration = Field(default=600.0, description="reporting interval")


def measure(
    env: simpy.Environment, device: Device, city: City, telemetry: Telemetry, rng: random.Random,
    faults: FaultyReadings | None, cadence: float, first_delay: float,
) -> Generator[simpy.Event, None, None]:  # fmt: skip
    """A bus-stop thermometer reads the city's outdoor air, with 0.2 °C of sensor noise."""
    yield env.timeout(first_delay)
    while True:
        readings: dict[str, Reading] = {"temp_c": round(city.weather.temp_c(env.now) + rng.gauss(0.0, 0.2), 2)}
        send(telemetry, device, faults, env.now, readings)
        yield env.timeout(cadence)


def build_thermometers(world: World, fleet: ThermometerFleet) -> None:
    city = city_of(world)
    for index, device_id in owned_devices(world, fleet):
        device, faults = register_device(world, fleet, device_id, {"district": fleet.district_of(index)})
        rng = world.rng(device_id)
        world.env.process(measure(world.env, device, city, world.telemetry, rng, faults, fleet.cadence, first_delay(rng, fleet.cadence)))


THERMOMETER = DeviceType("bus_stop_thermometer", "city", "stop", ThermometerFleet, build_thermometers, readings={"temp_c": FLOAT})
WithThermometers = Scenario.with_device_types(THERMOMETER)


def messages_of(scenario: Scenario) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    run_scenario(scenario, lambda topic, payload: messages.append({"topic": topic, **orjson.loads(payload)}))
    return messages


def by_device(messages: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    devices: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for message in messages:
        if message["type"] != "events":
            devices[message["device_id"]].append(message)
    return devices


def test_a_device_type_declared_once_runs_in_a_scenario() -> None:
    scenario = WithThermometers.model_validate(
        {
            "name": "thermometers",
            "duration": "4h",
            "fleets": [
                {"type": "bus_stop_thermometer", "count": 3, "districts": ["Chengqu", "Kuangqu"]},
                {"type": "air_quality", "count": 2},
            ],
        }
    )
    messages: list[dict[str, Any]] = []
    world = build_world(scenario, simpy.Environment(), lambda topic, payload: messages.append({"topic": topic, **orjson.loads(payload)}))
    world.env.run(until=scenario.duration)
    devices = by_device(messages)

    assert sorted(devices) == ["aq-0001", "aq-0002", "stop-0001", "stop-0002", "stop-0003"]
    weather = city_of(world).weather
    for device_id in ("stop-0001", "stop-0002", "stop-0003"):
        sent = devices[device_id]
        assert len(sent) == 24  # 4 h / 10 min, from a phase in the first cadence
        assert [message["seq"] for message in sent] == list(range(24))
        for message in sent:
            assert message["topic"] == f"yangquan/city/bus_stop_thermometer/{device_id}"
            assert message["type"] == "bus_stop_thermometer"
            assert abs(message["readings"]["temp_c"] - weather.temp_c((message["ts"] - START_MS) / 1000)) < 1.0  # 5 sd of the noise
    assert [devices[f"stop-000{n}"][0]["tags"] for n in (1, 2, 3)] == [{"district": "Chengqu"}, {"district": "Kuangqu"}, {"district": "Chengqu"}]
    assert all(len(devices[device_id]) == 48 for device_id in ("aq-0001", "aq-0002"))  # the shipped type beside it, every 5 min


def test_the_new_type_takes_device_faults() -> None:
    scenario = WithThermometers.model_validate(
        {
            "name": "thermometers",
            "duration": "4h",
            "fleets": [
                {
                    "type": "bus_stop_thermometer", "count": 2,
                    "faults": [{"kind": "dropout", "devices": ["stop-0002"], "at": "1h", "duration": "1h"}],
                }
            ],
        }
    )  # fmt: skip
    messages = messages_of(scenario)
    devices = by_device(messages)
    assert len(devices["stop-0001"]) == 24
    assert len(devices["stop-0002"]) == 24 - 6  # silent for an hour of 10-min reports
    assert all(not START_MS + 3600_000 <= message["ts"] < START_MS + 7200_000 for message in devices["stop-0002"])
    faults = [(message["ts"] - START_MS, message["tags"]["phase"]) for message in messages if message["type"] == "events"]
    assert faults == [(3600_000, "start"), (7200_000, "end")]


def test_a_fault_on_a_reading_the_new_type_does_not_send_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"faults\.0\.reading: 'pm25' is not a reading of bus_stop_thermometer \(temp_c\)"):
        WithThermometers.model_validate(
            {
                "name": "t", "duration": "1h",
                "fleets": [{"type": "bus_stop_thermometer", "count": 1, "faults": [{"kind": "stuck", "share": 0.5, "reading": "pm25"}]}],
            }
        )  # fmt: skip
    # The shipped scenario model does not know the test's type, and says which types it knows.
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nduration: 1h\nfleets:\n  - {type: bus_stop_thermometer, count: 1}\n")
    with pytest.raises(ScenarioError) as error:
        load_scenario(path)
    assert error.value.problems == [f"{path}:4: fleets.0.type: unknown device type 'bus_stop_thermometer'; known: {', '.join(catalogue.type_names())}"]


def test_an_unknown_type_in_a_file_lists_every_type_the_model_knows_the_registered_ones_too(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nduration: 1h\nfleets:\n  - {type: bus_stop_thermometer, count: 1}\n  - {type: bus_stop_thermometr, count: 1}\n")
    with pytest.raises(ScenarioError) as error:
        load_scenario(path, WithThermometers)
    known = [*catalogue.type_names(), "bus_stop_thermometer"]
    assert error.value.problems == [f"{path}:5: fleets.1.type: unknown device type 'bus_stop_thermometr'; known: {', '.join(known)}"]
    path.write_text("name: t\nduration: 1h\nfleets:\n  - {type: bus_stop_thermometer, count: 2}\n")
    assert [fleet.device_ids() for fleet in load_scenario(path, WithThermometers).fleets] == [["stop-0001", "stop-0002"]]


# A second vendor's methane monitor: mine_gas's options and model under another name. Its fleet says
# it monitors gas, so the city's gas events may name its devices, as they name mine_gas's.
OTHER_GAS_MONITOR = DeviceType("mine_gas_b", "city", "gasb", mine_gas.Fleet, mine_gas.build, readings=mine_gas.DEVICE.readings, also_sends=mine_gas.DEVICE.also_sends)


def test_gas_events_may_name_any_fleet_that_monitors_gas_and_no_other() -> None:
    model = Scenario.with_device_types(OTHER_GAS_MONITOR, THERMOMETER)
    city = {"mine": {"outbursts_per_day": 0, "gas_events": [{"device": "gasb-0001", "at": "1h", "peak_pct": 2.5}]}}
    scenario = model.model_validate({"name": "g", "duration": "3h", "fleets": [{"type": "mine_gas_b", "count": 1}], "city": city})
    alarms = [(m["device_id"], m["tags"]["kind"]) for m in messages_of(scenario) if m["type"] == "events"]
    assert ("gasb-0001", "gas_alarm") in alarms and ("gasb-0001", "gas_power_cut") in alarms  # the event reached its face
    city["mine"]["gas_events"][0]["device"] = "stop-0001"
    with pytest.raises(ValueError, match=r"city\.mine\.gas_events\.0\.device: 'stop-0001' is not a mine_gas device of this scenario"):
        model.model_validate({"name": "g", "duration": "3h", "fleets": [{"type": "bus_stop_thermometer", "count": 1}], "city": city})


def test_a_device_type_name_must_fit_a_topic_and_a_measurement() -> None:
    with pytest.raises(ValueError, match="device type name 'Bus Stop'"):
        DeviceType("Bus Stop", "city", "stop", ThermometerFleet, build_thermometers, readings={"temp_c": FLOAT})


def test_a_reading_is_declared_once_with_a_kind_the_bridge_knows() -> None:
    with pytest.raises(ValueError, match="device type bus_stop_thermometer: temp_c declared in both readings and also_sends"):
        DeviceType("bus_stop_thermometer", "city", "stop", ThermometerFleet, build_thermometers, readings={"temp_c": FLOAT}, also_sends={"temp_c": FLOAT})
    with pytest.raises(ValueError, match="reading 'temp_c' has kind 'integer', not one of float, string, boolean"):
        DeviceType("bus_stop_thermometer", "city", "stop", ThermometerFleet, build_thermometers, readings={"temp_c": "integer"})  # type: ignore[dict-item]
    both = DeviceType("bus_stop_thermometer", "city", "stop", ThermometerFleet, build_thermometers, readings={"temp_c": FLOAT}, also_sends={"ok": BOOLEAN})
    assert both.sends == {"temp_c": "float", "ok": "boolean"} and list(both.readings) == ["temp_c"]


def test_a_drift_or_spikes_fault_on_a_reading_that_is_no_number_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "reefers.yaml"
    path.write_text(
        "name: r\nduration: 1h\nfleets:\n"
        "  - {type: reefer, count: 2, faults: [{kind: drift, share: 0.5, reading: alarm, per_day: 1}]}\n"
        "  - {type: port_crane, count: 2, faults: [{kind: spikes, share: 0.5, reading: status}, {kind: stuck, share: 0.5, reading: status}]}\n"
    )
    result = iotsim("validate", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{path}:4: fleets.0.faults.0.reading: 'alarm' is a boolean reading of reefer; drift needs a number",
        f"{path}:5: fleets.1.faults.0.reading: 'status' is a string reading of port_crane; spikes needs a number",
    ]  # a stuck status is a fault a crane can have


def test_every_shipped_type_is_declared_once() -> None:
    names = catalogue.type_names()
    assert len(names) == len(set(names)) == 17
    prefixes = [kind.id_prefix for kind in catalogue.DEVICE_TYPES]
    assert len(prefixes) == len(set(prefixes))
    for kind in catalogue.DEVICE_TYPES:
        fleet = kind.fleet_model.model_validate({"type": kind.name, "count": 2})
        assert fleet.device_type is kind and isinstance(fleet, kind.options)
        assert fleet.device_ids() == [f"{kind.id_prefix}-0001", f"{kind.id_prefix}-0002"]


@pytest.mark.parametrize("kind", catalogue.DEVICE_TYPES, ids=lambda kind: kind.name)
def test_every_shipped_type_takes_device_faults(kind: DeviceType[Any]) -> None:
    reading = next(iter(kind.readings))
    fleet = kind.fleet_model.model_validate(
        {
            "type": kind.name, "count": 2,
            "faults": [{"kind": "dropout", "devices": [f"{kind.id_prefix}-0002"], "at": "1h", "duration": "30m"},
                       {"kind": "stuck", "share": 0.5, "reading": reading}],
        }
    )  # fmt: skip
    assert [fault.kind for fault in fleet.faults] == ["dropout", "stuck"]
    with pytest.raises(ValueError, match=rf"faults\.0\.devices: {kind.id_prefix}-0003 not in this fleet"):
        kind.fleet_model.model_validate({"type": kind.name, "count": 2, "faults": [{"kind": "battery_death", "devices": [f"{kind.id_prefix}-0003"]}]})


PORT = {
    "name": "port faults",
    "duration": "4h",
    "fleets": [
        {"type": "gate_lane", "count": 4},
        {"type": "yard_block", "count": 6},
        {"type": "reefer", "count": 10},
    ],
}
PORT_FAULTS = {
    "gate_lane": [{"kind": "dropout", "devices": ["port-lane-0002"], "at": "1h", "duration": "30m"}],
    "yard_block": [{"kind": "drift", "devices": ["port-yard-0001"], "reading": "occupancy_teu", "per_day": 240.0, "at": "1h"}],
    "reefer": [{"kind": "battery_death", "devices": ["port-reefer-0003"], "at": "2h"}],
}


def test_port_fleets_take_device_faults_and_only_their_devices_change() -> None:
    healthy = messages_of(Scenario.model_validate(PORT))
    faulty_fleets = [{**fleet, "faults": PORT_FAULTS[fleet["type"]]} for fleet in PORT["fleets"]]
    faulty = messages_of(Scenario.model_validate({**PORT, "fleets": faulty_fleets}))
    before, after = by_device(healthy), by_device(faulty)
    assert sorted(before) == sorted(after)

    changed = {"port-lane-0002", "port-yard-0001", "port-reefer-0003"}
    for device_id in set(before) - changed:
        assert after[device_id] == before[device_id], device_id  # the port model runs the same; faults have their own streams

    # dropout: the lane is silent from 1 h to 1 h 30 (60 reports of 30 s) and its seq has no gap
    window = range(START_MS + 3600_000, START_MS + 5400_000)
    lane = after["port-lane-0002"]
    assert len(before["port-lane-0002"]) == 480 and len(lane) == 420
    assert [message["seq"] for message in lane] == list(range(420))
    assert [m["readings"] for m in lane] == [m["readings"] for m in before["port-lane-0002"] if m["ts"] not in window]

    # drift: occupancy reads 240 TEU/day too high from 1 h on
    for was, now in zip(before["port-yard-0001"], after["port-yard-0001"], strict=True):
        late = max(0.0, (was["ts"] - START_MS) / 1000 - 3600.0)
        assert now["readings"]["occupancy_teu"] == round(was["readings"]["occupancy_teu"] + 240.0 * late / 86400.0, 3)
        assert now["readings"]["capacity_teu"] == was["readings"]["capacity_teu"]
    assert after["port-yard-0001"][-1]["readings"]["occupancy_teu"] > before["port-yard-0001"][-1]["readings"]["occupancy_teu"] + 25

    # battery death: the plug point's monitor sends nothing from 2 h on (24 of its 48 reports of 5 min)
    assert len(after["port-reefer-0003"]) == 24 and all(m["ts"] < START_MS + 7200_000 for m in after["port-reefer-0003"])

    announced = sorted(
        (m["device_id"], m["tags"]["fault"], m["tags"]["phase"], m["tags"]["device_type"], m["ts"] - START_MS)
        for m in faulty if m["type"] == "events" and m["tags"]["kind"] == "device_fault"
    )  # fmt: skip
    assert announced == [
        ("port-lane-0002", "dropout", "end", "gate_lane", 5400_000),
        ("port-lane-0002", "dropout", "start", "gate_lane", 3600_000),
        ("port-reefer-0003", "battery_death", "start", "reefer", 7200_000),
        ("port-yard-0001", "drift", "start", "yard_block", 3600_000),
    ]


def test_a_bad_device_fault_on_a_port_fleet_is_one_line_naming_the_fleet(tmp_path: Path) -> None:
    path = tmp_path / "port.yaml"
    path.write_text(
        "name: p\nduration: 1h\nfleets:\n"
        "  - {type: gate_lane, count: 2}\n"
        "  - type: reefer\n    count: 3\n    faults: [{kind: stuck, devices: [port-reefer-0009]}]\n"
        "  - {type: yard_block, count: 2, faults: [{kind: drift, share: 0.5, reading: teu, per_day: 1}]}\n"
    )
    result = iotsim("validate", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{path}:7: fleets.1.faults.0.devices: port-reefer-0009 not in this fleet (port-reefer-0001 .. port-reefer-0003)",
        f"{path}:8: fleets.2.faults.0.reading: 'teu' is not a reading of yard_block (occupancy_teu, capacity_teu, utilisation, boxes)",
    ]
