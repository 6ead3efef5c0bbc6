"""The city's air follows the published record of the simulated year (simulator/city/air_record.py):
a year's dry run of the shipped stations reduced as the bulletins reduce a city's year lands on
Yangquan's (or Shanxi's) published figures, winter stays above summer, and `city.air.year` pins the era."""

from __future__ import annotations

import calendar
import functools
from pathlib import Path

import orjson
import pytest
from conftest import iotsim

from simulator.city.air_record import (
    FIRST_YEAR,
    GOOD_DAYS,
    JANUARY_DAYS_OVER_75,
    LATEST_YEAR,
    PEAK_MONTH,
    RECORD,
    SOURCES,
    CityStatistics,
    annual_level,
    city_statistics,
    published,
    published_good_days,
    published_january_days,
)
from simulator.engine import run_scenario
from simulator.scenario import Scenario, load_scenario

ROOT = Path(__file__).resolve().parent.parent
TESTED = ("pm25", "pm10", "so2", "no2", "co")
# A year's run lands on the record by construction of the shapes (measured at 1 h cadence, benchmarks/air_record.py);
# at the tests' 3 h cadence and with 10 stations' noise the figures move by a few per cent, ±25 % is the bound.
TOLERANCE = 0.25
# Good days: the levels were not fitted to them. Measured (benchmarks/air_record.py): 74.5 % at 1 h, 70.4 % at
# the tests' 3 h (fewer hours in O3's 8-h means), Yangquan's bulletin 72.3 %; 5 points either side holds both.
GOOD_DAYS_POINTS = 5.0


def shipped_stations(start: str, duration: str, air: dict | None = None) -> Scenario:
    """scenarios/city-day.yaml's air_quality fleet and city, 10 stations at 3 h, no faults, no events."""
    shipped = load_scenario(ROOT / "scenarios" / "city-day.yaml").model_dump(mode="json")
    fleet = next(fleet for fleet in shipped["fleets"] if fleet["type"] == "air_quality")
    fleet.update(count=10, cadence="3h", faults=[], category_events=False)
    city = {**shipped["city"], "air": air or {}}
    return Scenario.model_validate({"name": "air", "seed": shipped["seed"], "start": start, "duration": duration, "fleets": [fleet], "city": city})


def readings(scenario: Scenario) -> list[tuple[float, dict]]:
    samples: list[tuple[float, dict]] = []
    run_scenario(scenario, lambda topic, payload: samples.append(((m := orjson.loads(payload))["ts"], m["readings"])))
    return samples


@functools.cache  # a year's run is shared by the tests that read it
def year_of(year: int) -> CityStatistics:
    days = 366 if calendar.isleap(year) else 365
    return city_statistics(readings(shipped_stations(f"{year}-01-01T00:00:00+08:00", f"{days}d")))


@pytest.fixture(scope="module", params=[2018, 2023], ids=["seed-era-2018", "recent-2023"])
def year(request: pytest.FixtureRequest) -> tuple[int, CityStatistics]:
    return request.param, year_of(request.param)


def test_a_years_annual_figures_are_within_25_percent_of_the_published_ones(year: tuple[int, CityStatistics]) -> None:
    number, stats = year
    for pollutant in TESTED:
        level = published(pollutant, number)
        assert level is not None, (pollutant, number)  # a published figure, not an interpolated one
        assert abs(stats.record[pollutant] / level.value - 1.0) <= TOLERANCE, (pollutant, number, stats.record[pollutant], level)


def test_january_is_above_july_for_pm25_and_so2(year: tuple[int, CityStatistics]) -> None:
    _, stats = year
    for pollutant in ("pm25", "so2"):
        january, july = stats.monthly_means[pollutant][0], stats.monthly_means[pollutant][6]
        assert january is not None and july is not None
        # The heating season: PM2.5 about twice, SO2 several times July's (air_quality.py's heating gains).
        assert january > (2.0 if pollutant == "pm25" else 3.0) * july, (pollutant, january, july)


def test_january_is_the_month_of_highest_pm25_as_in_yangquans_hourly_record() -> None:
    # wang-2021: Yangquan's particulates 2017-2019 were highest in January (and lowest in August, which the
    # model's flat summer does not reproduce: its lowest month is May or October, docs/city.md). One simulated year's
    # weather is one draw (a cold February or December can top January, as in real years), so the model's
    # seasonal shape is read from the mean of several years: the same 2018 city under seeds 1..6.
    years = [city_statistics(readings(shipped_stations("2018-01-01T00:00:00+08:00", "365d").model_copy(update={"seed": seed}))) for seed in range(1, 7)]
    pm25 = [sum(year.monthly_means["pm25"][month] or 0.0 for year in years) / len(years) for month in range(12)]
    assert all(year.monthly_means["pm25"][month] is not None for year in years for month in range(12))
    assert max(range(12), key=lambda month: pm25[month]) + 1 == PEAK_MONTH, pm25


def test_januarys_days_above_75_in_the_record_lie_within_the_models_weather_spread() -> None:
    # No bulletin gives a January count; the one found is January 2015's from Yangquan's daily CNEMC data
    # (13 of 31). One simulated January is one draw of the weather (an inversion week more or less moves the
    # count by several days), so the model is held to covering the record: over six draws (seeds 1..6, as the
    # peak-month test) the fewest and the most days above 75 µg/m³ bracket it. Measured at the tests' cadence:
    # 11-22 days, the shipped seed 16, the model's January mean 83-121 µg/m³ against the data's 70.5
    # (docs/city.md: the model's January is more peaked than 2015's).
    level = published_january_days(2015)
    assert level is not None and level.source == "cnemc-2015", level
    january = shipped_stations("2015-01-01T00:00:00+08:00", "31d")
    draws = [city_statistics(readings(january.model_copy(update={"seed": seed}))) for seed in range(1, 7)]
    assert all(draw.january_days == 31 for draw in draws), [draw.january_days for draw in draws]
    counts = [draw.january_days_over_75 for draw in draws]
    assert min(counts) <= level.value <= max(counts), counts


def test_2023s_share_of_good_days_is_within_5_points_of_yangquans_bulletin() -> None:
    level = published_good_days(2023)
    assert level is not None and level.source == "yq-2023", level  # Yangquan's own figure, not Shanxi's
    stats = year_of(2023)
    assert abs(stats.good_days_pct - level.value) <= GOOD_DAYS_POINTS, (stats.good_days_pct, level)


def test_the_recent_year_is_cleaner_than_the_seed_era_as_published() -> None:
    for pollutant in TESTED:
        assert annual_level(pollutant, 2023) < annual_level(pollutant, 2018), pollutant


def test_city_air_year_pins_the_era_whatever_the_date() -> None:
    # Same month-days, same seed: the weather and the heating season are the same in 2018 and 2026, so a
    # 2026 run pinned to 2018 reads exactly what the 2018 run read; unpinned, 2026 follows the latest record.
    seed_era = readings(shipped_stations("2018-01-01T00:00:00+08:00", "10d"))
    pinned = readings(shipped_stations("2026-01-01T00:00:00+08:00", "10d", {"year": 2018}))
    today = readings(shipped_stations("2026-01-01T00:00:00+08:00", "10d"))
    assert len(seed_era) == len(pinned) == len(today) == 10 * 10 * 8
    assert [values for _, values in pinned] == [values for _, values in seed_era]
    ratio = sum(values["so2"] for _, values in today) / sum(values["so2"] for _, values in pinned)
    assert ratio == pytest.approx(annual_level("so2", LATEST_YEAR) / annual_level("so2", 2018), rel=0.01)


def test_years_outside_the_record_hold_its_first_and_latest_and_between_are_interpolated() -> None:
    for pollutant, levels in RECORD.items():
        assert annual_level(pollutant, 1990) == annual_level(pollutant, FIRST_YEAR) == levels[0].value
        assert annual_level(pollutant, 2100) == annual_level(pollutant, LATEST_YEAR) == levels[-1].value
        for low, high in zip(levels, levels[1:]):
            assert low.year < high.year
            middle = (low.year + high.year) / 2
            if middle == int(middle):
                assert annual_level(pollutant, int(middle)) == pytest.approx((low.value + high.value) / 2)


def test_every_figure_names_a_source_and_docs_cite_every_source() -> None:
    docs = (ROOT / "docs" / "city.md").read_text()
    for levels in (*RECORD.values(), GOOD_DAYS, JANUARY_DAYS_OVER_75):
        assert all(level.source in SOURCES for level in levels)
    for source in SOURCES.values():
        assert source.id in docs and source.url in docs, source.id


@pytest.mark.parametrize("year", ["soon", "1800", "2017.5"])
def test_a_bad_city_air_year_is_one_line_naming_it_and_exit_2(tmp_path: Path, year: str) -> None:
    scenario = tmp_path / "air.yaml"
    scenario.write_text(f"name: air\nduration: 1h\nfleets:\n  - type: air_quality\n    count: 1\ncity:\n  air:\n    year: {year}\n")
    done = iotsim("validate", str(scenario))
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "city.air.year" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
