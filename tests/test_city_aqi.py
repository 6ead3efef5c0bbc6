"""The AQI follows HJ 633-2012: sub-indices on the breakpoint table, rounding up, categories, the
primary pollutant; and every station message carries the index of the values it sends."""

from __future__ import annotations

import math

import orjson
import pytest

from simulator.city.aqi import CONCENTRATION_BREAKPOINTS, IAQI_BREAKPOINTS, category, daily_aqi, iaqi, realtime_aqi
from simulator.engine import run_scenario
from simulator.scenario import Scenario

# The standard's table, written out again here from shared/domain.md so a typo in the module fails.
TABLE = {
    "so2_24h": (0, 50, 150, 475, 800, 1600, 2100, 2620),
    "so2_1h": (0, 150, 500, 650, 800),
    "no2_24h": (0, 40, 80, 180, 280, 565, 750, 940),
    "no2_1h": (0, 100, 200, 700, 1200, 2340, 3090, 3840),
    "pm10_24h": (0, 50, 150, 250, 350, 420, 500, 600),
    "co_24h": (0, 2, 4, 14, 24, 36, 48, 60),
    "co_1h": (0, 5, 10, 35, 60, 90, 120, 150),
    "o3_1h": (0, 160, 200, 300, 400, 800, 1000, 1200),
    "o3_8h": (0, 100, 160, 215, 265, 800),
    "pm25_24h": (0, 35, 75, 115, 150, 250, 350, 500),
}
BOUNDARIES = [(table, c, IAQI_BREAKPOINTS[i]) for table, row in TABLE.items() for i, c in enumerate(row)]


def test_the_breakpoint_table_is_the_standards() -> None:
    assert {name: tuple(row) for name, row in CONCENTRATION_BREAKPOINTS.items()} == TABLE
    assert IAQI_BREAKPOINTS == (0, 50, 100, 150, 200, 300, 400, 500)


@pytest.mark.parametrize(("table", "concentration", "expected"), BOUNDARIES, ids=[f"{t}={c}" for t, c, _ in BOUNDARIES])
def test_a_breakpoint_concentration_gives_exactly_its_index(table: str, concentration: float, expected: int) -> None:
    assert iaqi(table, concentration) == expected


@pytest.mark.parametrize("table", sorted(TABLE))
def test_inside_a_bracket_the_index_is_interpolated_and_rounded_up(table: str) -> None:
    row = TABLE[table]
    for i in range(1, len(row)):
        c_lo, c_hi = row[i - 1], row[i]
        i_lo, i_hi = IAQI_BREAKPOINTS[i - 1], IAQI_BREAKPOINTS[i]
        middle = (c_lo + c_hi) / 2
        assert iaqi(table, middle) == math.ceil((i_lo + i_hi) / 2)
        # Just above a breakpoint the index is already the next whole number (the standard rounds up).
        step = (c_hi - c_lo) / 1000
        assert iaqi(table, c_lo + step) == i_lo + 1


def test_so2_above_the_one_hour_table_uses_the_24_hour_table() -> None:
    assert iaqi("so2_1h", 800) == 200
    assert iaqi("so2_1h", 801) == iaqi("so2_24h", 801) == math.ceil(200 + 100 * 1 / 800)
    assert iaqi("so2_1h", 1600) == 300


def test_above_the_top_of_a_table_the_index_is_500() -> None:
    assert iaqi("pm25_24h", 501) == 500
    assert iaqi("co_1h", 1000) == 500


@pytest.mark.parametrize(
    ("aqi", "level", "name"),
    [(0, 1, "excellent"), (50, 1, "excellent"), (51, 2, "good"), (100, 2, "good"), (101, 3, "lightly_polluted"), (150, 3, "lightly_polluted"),
     (151, 4, "moderately_polluted"), (200, 4, "moderately_polluted"), (201, 5, "heavily_polluted"), (300, 5, "heavily_polluted"),
     (301, 6, "severely_polluted"), (500, 6, "severely_polluted")],
)  # fmt: skip
def test_categories_follow_the_standard(aqi: int, level: int, name: str) -> None:
    assert category(aqi) == (level, name)


def test_a_days_index_uses_the_24_hour_tables_and_o3s_8_hour_maximum() -> None:
    day = {"pm25": 20.0, "pm10": 25.0, "so2": 10.0, "no2": 20.0, "co": 0.5}
    assert daily_aqi(day, o3_8h_max=50.0, o3_1h_max=90.0) == 29  # PM2.5: 50 x 20 / 35 = 28.6, rounded up (O3 8-h: 25)
    assert daily_aqi({**day, "pm25": 75.0}, 60.0, 90.0) == 100  # the top of "good"
    assert daily_aqi({**day, "pm25": 75.1}, 60.0, 90.0) == 101
    # SO2 and NO2 on their 24-hour tables (a day mean of 150 SO2 is 100; on the 1-hour table it would be 50).
    assert daily_aqi({**day, "so2": 150.0}, 60.0, 90.0) == 100
    assert daily_aqi({**day, "no2": 80.0}, 60.0, 90.0) == 100
    assert daily_aqi(day, o3_8h_max=160.0, o3_1h_max=170.0) == 100  # O3: the 8-hour table, not the 1-hour
    # Above the 8-hour table's 800 µg/m³ the standard indexes the day's 1-hour maximum.
    assert daily_aqi(day, o3_8h_max=801.0, o3_1h_max=1000.0) == 400


def test_the_primary_pollutant_is_named_only_above_50_and_ties_are_all_named() -> None:
    clean = {"pm25": 20.0, "pm10": 25.0, "so2": 10.0, "no2": 20.0, "co": 0.5, "o3": 60.0}
    assert realtime_aqi(clean) == (29, "none")  # PM2.5: 50 x 20 / 35 = 28.6, rounded up
    assert realtime_aqi({**clean, "pm25": 115.0}) == (150, "pm25")
    assert realtime_aqi({**clean, "pm25": 75.0, "pm10": 150.0}) == (100, "pm25,pm10")
    assert realtime_aqi({**clean, "so2": 900.0}) == (iaqi("so2_24h", 900.0), "so2")


def test_every_station_message_carries_the_index_of_its_own_values() -> None:
    scenario = Scenario.model_validate(
        {"name": "aqi", "seed": 3, "duration": "2d", "fleets": [{"type": "air_quality", "count": 10, "cadence": "10m"}]}
    )
    messages: list[dict] = []
    run_scenario(scenario, lambda topic, payload: messages.append(orjson.loads(payload)))
    assert len(messages) == 10 * 2 * 144
    seen = set()
    for message in messages:
        readings = message["readings"]
        aqi, primary = realtime_aqi(readings)
        assert (readings["aqi"], readings["primary_pollutant"]) == (aqi, primary)
        assert (readings["aqi_level"], readings["aqi_category"]) == category(aqi)
        seen.add(readings["aqi_level"])
    assert len(seen) >= 3  # a winter city moves through several categories in two days
