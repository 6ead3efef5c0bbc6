"""The data centre, parking, water and power: readings that follow the load, the day and the weather."""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import orjson

from simulator.engine import run_scenario
from simulator.scenario import Scenario

CST = timezone(timedelta(hours=8))
START = datetime(2026, 1, 14, tzinfo=CST)  # a Wednesday
START_MS = int(START.timestamp() * 1000)


def run(fleets: list[dict], duration: str, city: dict | None = None, start: datetime = START) -> list[dict]:
    scenario = Scenario.model_validate({"name": "s", "seed": 21, "start": start.isoformat(), "duration": duration, "fleets": fleets, "city": city or {}})
    messages: list[dict] = []
    run_scenario(scenario, lambda topic, payload: messages.append(orjson.loads(payload)))
    return messages


def hours_in(message: dict) -> float:
    return (message["ts"] - START_MS) / 3_600_000


def test_a_cooling_fault_heats_the_inlets_of_its_hall_only_and_each_crossing_of_27_c_is_one_event() -> None:
    fleets = [{"type": "dc_rack", "count": 16, "cadence": "1m"}]
    fault = {"at": "2h", "duration": "1h", "hall": "H2", "rise_c": 12.0, "time_constant": "10m"}
    calm = run(fleets, "5h")
    hot = run(fleets, "5h", {"data_centre": {"cooling_faults": [fault]}})
    racks = lambda messages: [m for m in messages if m["type"] == "dc_rack"]  # noqa: E731
    for before, during in zip(racks(calm), racks(hot), strict=True):
        if during["tags"]["hall"] != "H2" or hours_in(during) <= 2.0:
            assert during == before
        elif 2.75 <= hours_in(during) <= 3.0:
            # Three time constants in: 95 % of the 12 °C rise, give or take the 0.15 °C sensor noise.
            rise = during["readings"]["inlet_temp_c"] - before["readings"]["inlet_temp_c"]
            assert 12.0 * (1 - 2.72**-4.5) - 0.1 <= rise <= 12.0 + 0.1
    events = [m for m in hot if m["type"] == "events"]
    assert [(e["device_id"], e["tags"]["phase"]) for e in events if e["tags"]["kind"] == "cooling_fault"] == [("city-data-centre", "start"), ("city-data-centre", "end")]
    for device in {m["device_id"] for m in racks(hot)}:
        inlets = [m for m in racks(hot) if m["device_id"] == device]
        over = [m["readings"]["inlet_temp_c"] > 27.0 for m in inlets]
        changes = [inlets[i]["ts"] for i in range(len(over)) if over[i] != (over[i - 1] if i else False)]
        assert [e["ts"] for e in events if e["tags"]["kind"] == "rack_inlet_high" and e["device_id"] == device] == changes


def test_rack_power_follows_the_data_centre_load() -> None:
    racks = [m for m in run([{"type": "dc_rack", "count": 8, "cadence": "5m"}], "3d") if m["type"] == "dc_rack"]
    for message in racks:
        readings = message["readings"]
        assert 1.1 <= readings["site_pue"] <= 1.3
        assert readings["outlet_temp_c"] > readings["inlet_temp_c"]
    by_device: dict[str, list[dict]] = defaultdict(list)
    for message in racks:
        by_device[message["device_id"]].append(message)
    for messages in by_device.values():
        power = [m["readings"]["power_kw"] for m in messages]
        utilisation = [m["readings"]["utilisation_pct"] for m in messages]
        assert statistics.correlation(power, utilisation) > 0.95


def test_parking_follows_its_kind_office_lots_fill_on_workdays_and_empty_at_the_weekend() -> None:
    start = datetime(2026, 1, 16, tzinfo=CST)  # Friday, then Saturday
    messages = [m for m in run([{"type": "parking_lot", "count": 6, "cadence": "10m", "kinds": ["office", "residential"]}], "2d", start=start) if m["type"] == "parking_lot"]

    def mean_occupancy(kind: str, day: int, hour: int) -> float:
        local = lambda m: datetime.fromtimestamp(m["ts"] / 1000, CST)  # noqa: E731
        return statistics.mean(
            m["readings"]["occupancy_pct"] for m in messages if m["tags"]["kind"] == kind and local(m).day == 16 + day and local(m).hour == hour
        )

    assert mean_occupancy("office", 0, 10) > 70 > mean_occupancy("office", 0, 3)
    assert mean_occupancy("office", 1, 10) < 30  # Saturday
    assert mean_occupancy("residential", 0, 2) > 70 > mean_occupancy("residential", 0, 11)
    spaces: dict[str, int] = {}
    for message in messages:
        readings = message["readings"]
        lot = spaces.setdefault(message["device_id"], readings["occupied"] + readings["free_spaces"])
        assert readings["occupied"] + readings["free_spaces"] == lot  # cars are counted, not invented
        assert readings["occupancy_pct"] == round(100 * readings["occupied"] / lot, 1)
        assert readings["full"] == (readings["free_spaces"] == 0)


def test_a_leak_raises_the_night_flow_and_drops_the_pressure_of_its_node() -> None:
    fleet = {"type": "water_pressure", "count": 3, "cadence": "15m"}
    calm = run([fleet], "2d")
    leak = run([{**fleet, "leaks": [{"device": "water-0002", "at": "1d", "flow_m3h": 40}]}], "2d")
    for before, after in zip(calm, [m for m in leak if m["type"] != "events"], strict=True):
        if after["device_id"] != "water-0002" or hours_in(after) < 24:
            assert after == before
        else:
            assert abs(after["readings"]["flow_m3h"] - before["readings"]["flow_m3h"] - 40.0) <= 0.1 + 1e-9  # rounded to 0.1
            assert after["readings"]["pressure_mpa"] < before["readings"]["pressure_mpa"]
    assert [(e["device_id"], e["tags"]["kind"], hours_in(e)) for e in leak if e["type"] == "events"] == [("water-0002", "water_leak", 24.0)]


def test_cold_weather_raises_household_power_and_heat_load() -> None:
    fleets = [{"type": "electricity_meter", "count": 40, "cadence": "1h", "kinds": ["residential"]}, {"type": "heating_substation", "count": 10, "cadence": "1h"}]
    mild = run(fleets, "3d", {"weather": {"mean_c": 4.0}})
    cold = run(fleets, "3d", {"weather": {"mean_c": -12.0}})
    mean = lambda messages, kind, field: statistics.mean(m["readings"][field] for m in messages if m["type"] == kind)  # noqa: E731
    assert mean(cold, "electricity_meter", "power_kw") > mean(mild, "electricity_meter", "power_kw") + 0.3
    assert mean(cold, "heating_substation", "heat_load_kw") > 1.5 * mean(mild, "heating_substation", "heat_load_kw")
