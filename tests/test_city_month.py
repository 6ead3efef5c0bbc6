"""A simulated month of every city type: readings stay in their documented ranges, every device sends
exactly duration / cadence messages, the heating season raises SO2 and starts the substations."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import orjson
import pytest

from simulator.city.geography import DISTRICT_AREAS
from simulator.engine import run_scenario
from simulator.scenario import Scenario

CST = timezone(timedelta(hours=8))
START = datetime(2025, 10, 17, tzinfo=CST)  # the heating season starts 15 days in
DAYS = 30
SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "simulator/schemas/telemetry.schema.json").read_text())

FLEETS = [
    {"type": "air_quality", "count": 3, "cadence": "30m"},
    {"type": "traffic_loop", "count": 3, "cadence": "15m"},
    {"type": "street_light", "count": 3, "cadence": "30m"},
    {"type": "heating_substation", "count": 3, "cadence": "30m"},
    {"type": "water_pressure", "count": 3, "cadence": "30m"},
    {"type": "parking_lot", "count": 3, "cadence": "15m"},
    {"type": "noise_monitor", "count": 3, "cadence": "15m"},
    {"type": "electricity_meter", "count": 4, "cadence": "1h"},
    {"type": "mine_gas", "count": 3, "cadence": "2m"},
    {"type": "dc_rack", "count": 3, "cadence": "15m"},
]
CADENCE_S = {"15m": 900, "30m": 1800, "1h": 3600, "2m": 120}

# Documented ranges (module docstrings, docs/city.md): (low, high), inclusive.
# SO2 after 2020 is ~12 µg/m³ a year (air_record.py); a clean autumn day with its lognormal noise reads below 1.
RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "air_quality": {"pm25": (1, 1000), "pm10": (1, 1500), "so2": (0.1, 800), "no2": (1, 400), "co": (0.05, 15), "o3": (1, 400), "aqi": (0, 500), "aqi_level": (1, 6)},
    "traffic_loop": {"volume": (0, 2500), "flow_vph": (0, 9000), "occupancy_pct": (0, 95), "speed_kmh": (0, 120)},
    "street_light": {"dim_pct": (0, 100), "power_w": (0, 24 * 150 * 1.05 + 3), "energy_kwh": (0, 1e6)},
    "heating_substation": {
        "outdoor_temp_c": (-35, 40), "supply_temp_c": (10, 70), "return_temp_c": (10, 55), "primary_supply_temp_c": (10, 120),
        "primary_return_temp_c": (10, 80), "supply_pressure_mpa": (0.1, 0.8), "return_pressure_mpa": (0.1, 0.8), "flow_m3h": (0, 1000), "heat_load_kw": (0, 6000),
    },  # fmt: skip
    "water_pressure": {"pressure_mpa": (0.15, 0.5), "flow_m3h": (0, 5000)},
    "parking_lot": {"occupancy_pct": (0, 100), "free_spaces": (0, 20000), "occupied": (0, 20000), "arrivals": (0, 5000), "refused": (0, 5000)},
    "noise_monitor": {"laeq_dba": (25, 100), "lmax_dba": (25, 130), "limit_dba": (45, 70)},
    "electricity_meter": {"power_kw": (0, 100), "energy_kwh": (0, 1e7), "voltage_v": (204.6, 235.4)},  # 220 V ± 7 %
    "mine_gas": {"ch4_pct": (0, 10), "co_ppm": (0, 50), "airflow_ms": (1, 4)},
    "dc_rack": {"inlet_temp_c": (15, 32), "outlet_temp_c": (15, 60), "power_kw": (0, 15), "utilisation_pct": (0, 100), "site_pue": (1.0, 1.5)},
}


@pytest.fixture(scope="module")
def month() -> list[dict]:
    scenario = Scenario.model_validate({"name": "month", "seed": 7, "start": START.isoformat(), "duration": f"{DAYS}d", "fleets": FLEETS})
    messages: list[dict] = []
    run_scenario(scenario, lambda topic, payload: messages.append(orjson.loads(payload)))
    return messages


def test_every_reading_stays_in_its_documented_range_for_a_month(month: list[dict]) -> None:
    checked: dict[str, int] = defaultdict(int)
    for message in month:
        ranges = RANGES.get(message["type"])
        if ranges is None:
            continue
        for name, value in message["readings"].items():
            if name in ranges:
                low, high = ranges[name]
                assert low <= value <= high, (message["device_id"], name, value)
                checked[message["type"]] += 1
        if message["type"] == "noise_monitor":
            assert message["readings"]["lmax_dba"] >= message["readings"]["laeq_dba"]
    assert set(checked) == set(RANGES)


def test_registers_only_count_up(month: list[dict]) -> None:
    last: dict[tuple[str, str], float] = {}
    for message in month:
        for name in ("energy_kwh",):
            if name in message["readings"]:
                key = (message["device_id"], name)
                assert message["readings"][name] >= last.get(key, 0.0)
                last[key] = message["readings"][name]


def test_each_device_sends_exactly_duration_over_cadence_messages_from_a_whole_ms_phase(month: list[dict]) -> None:
    start_ms = int(START.timestamp() * 1000)
    cadence = {fleet["type"]: CADENCE_S[fleet["cadence"]] for fleet in FLEETS}
    streams: dict[str, list[dict]] = defaultdict(list)
    for message in month:
        if message["type"] != "events":
            streams[message["device_id"]].append(message)
    assert len(streams) == sum(fleet["count"] for fleet in FLEETS)
    for device, messages in streams.items():
        step = cadence[messages[0]["type"]]
        assert len(messages) == DAYS * 86400 // step, device
        assert [m["seq"] for m in messages] == list(range(len(messages)))
        assert 0 <= messages[0]["ts"] - start_ms < step * 1000
        assert all(b["ts"] - a["ts"] == step * 1000 for a, b in zip(messages, messages[1:]))


def test_every_message_matches_the_schema_and_devices_stand_in_their_district(month: list[dict]) -> None:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for message in month[::25]:
        validator.validate(message)
    for message in month:
        tags = message["tags"]
        if message["type"] == "events" or "lat" not in tags:
            continue
        area = DISTRICT_AREAS[tags["district"]]
        # Road-side and data-centre devices stand near their road or campus, inside the district's area.
        distance = math.hypot(float(tags["lat"]) - area.lat, (float(tags["lon"]) - area.lon) * math.cos(math.radians(area.lat)))
        assert distance <= area.radius_deg + 0.03, (message["device_id"], tags)


def daily_means(messages: list[dict], kind: str, field: str) -> dict[str, float]:
    days: dict[str, list[float]] = defaultdict(list)
    for message in messages:
        if message["type"] == kind:
            days[datetime.fromtimestamp(message["ts"] / 1000, CST).date().isoformat()].append(message["readings"][field])
    return {day: statistics.mean(values) for day, values in days.items()}


def test_heating_season_so2_exceeds_the_days_before_it(month: list[dict]) -> None:
    so2 = daily_means(month, "air_quality", "so2")
    season = [value for day, value in so2.items() if day >= "2025-11-01"]
    before = [value for day, value in so2.items() if day < "2025-11-01"]
    # Welch's t on daily means: the difference stands far outside day-to-day weather noise.
    t = (statistics.mean(season) - statistics.mean(before)) / math.sqrt(
        statistics.variance(season) / len(season) + statistics.variance(before) / len(before)
    )
    assert t > 4, (statistics.mean(season), statistics.mean(before))


def test_substations_start_with_the_season_and_follow_the_outdoor_temperature(month: list[dict]) -> None:
    substation = [m for m in month if m["type"] == "heating_substation"]
    for message in substation:
        in_season = datetime.fromtimestamp(message["ts"] / 1000, CST).date().isoformat() >= "2025-11-01"
        assert message["readings"]["heating"] == in_season
        assert (message["readings"]["heat_load_kw"] > 0) == in_season
    load = daily_means(month, "heating_substation", "heat_load_kw")
    outdoor = daily_means(month, "heating_substation", "outdoor_temp_c")
    days = [day for day in load if day >= "2025-11-02"]
    assert statistics.correlation([load[d] for d in days], [outdoor[d] for d in days]) < -0.7


def test_the_heating_season_dates_come_from_the_scenario() -> None:
    scenario = Scenario.model_validate(
        {
            "name": "early", "start": "2025-10-10T00:00:00+08:00", "duration": "10d",
            "fleets": [{"type": "heating_substation", "count": 1, "cadence": "1h"}],
            "city": {"calendar": {"heating_start": "10-15"}},
        }
    )  # fmt: skip
    messages: list[dict] = []
    run_scenario(scenario, lambda topic, payload: messages.append(orjson.loads(payload)))
    first_warm = min(m["ts"] for m in messages if m["readings"]["heating"])
    assert datetime.fromtimestamp(first_warm / 1000, CST).date().isoformat() == "2025-10-15"
