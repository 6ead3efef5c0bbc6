"""The city's air against the published record: a year's dry run of the shipped stations, per year.

The stations are `scenarios/city-day.yaml`'s air_quality fleet (its options and seed, no faults, no
events) with `--stations` of them at `--cadence`, for a year from 1 January. Each year's run is
reduced as the bulletins reduce a city's year (simulator/city/air_record.py, `city_statistics`) and
printed beside the record: the published figure and its source, or the interpolated/held level.

    .venv/bin/python benchmarks/air_record.py [--years 2018 2023] [--stations 10] [--cadence 1h] [--json FILE] [--markdown]
    .venv/bin/python benchmarks/air_record.py --shape    # the shape constants for air_quality.py
    .venv/bin/python benchmarks/air_record.py --levels   # the record's levels by year (docs/city.md)

`--shape` prints each pollutant's `shape` that would put the runs exactly on the record (the mean over
the years of current shape x model / record): paste them into air_quality.POLLUTANTS.
"""

from __future__ import annotations

import argparse
import calendar
import json
import sys
import time
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from simulator.city.air_quality import POLLUTANTS
from simulator.city.air_record import POLLUTANTS as NAMES
from simulator.city.air_record import (
    FIRST_YEAR,
    GOOD_AQI,
    LATEST_YEAR,
    SOURCES,
    STATISTICS,
    CityStatistics,
    annual_level,
    basis_of,
    city_statistics,
    published,
    published_good_days,
    published_january_days,
)
from simulator.engine import run_scenario
from simulator.scenario import Scenario, load_scenario

REPO = Path(__file__).resolve().parent.parent
UNITS = {name: "mg/m³" if name == "co" else "µg/m³" for name in NAMES}


def year_of_stations(year: int, stations: int, cadence: str, pinned: int | None = None) -> Scenario:
    """The shipped city's stations for the year from 1 January (`pinned`: `city.air.year`)."""
    shipped = load_scenario(REPO / "scenarios" / "city-day.yaml").model_dump(mode="json")
    fleet = next(fleet for fleet in shipped["fleets"] if fleet["type"] == "air_quality")
    fleet.update(count=stations, cadence=cadence, faults=[], category_events=False)
    city = {**shipped["city"], "air": {"year": pinned}}
    days = 366 if calendar.isleap(year) else 365
    return Scenario.model_validate(
        {"name": f"air-{year}", "seed": shipped["seed"], "start": f"{year}-01-01T00:00:00+08:00", "duration": f"{days}d", "fleets": [fleet], "city": city}
    )


def run_year(scenario: Scenario) -> CityStatistics:
    samples: list[tuple[float, dict[str, float]]] = []

    def sink(topic: str, payload: bytes) -> None:
        message = orjson.loads(payload)
        samples.append((message["ts"], message["readings"]))

    run_scenario(scenario, sink)
    return city_statistics(samples)


def rows(year: int, stats: CityStatistics) -> list[dict]:
    found = []
    for name in NAMES:
        record = annual_level(name, year)
        found.append(
            {
                "year": year, "pollutant": name, "statistic": STATISTICS[name], "unit": UNITS[name],
                "model": round(stats.record[name], 2), "record": round(record, 2),
                "error_pct": round(100.0 * (stats.record[name] / record - 1.0), 1),
                "published": published(name, year) is not None,
                "source": basis_of(name, year),
                "january_mean": round(stats.monthly_means[name][0] or 0.0, 2), "july_mean": round(stats.monthly_means[name][6] or 0.0, 2),
            }
        )  # fmt: skip
    return found


def levels_markdown() -> str:
    """The record's level of each pollutant by year, and where it comes from (docs/city.md)."""
    lines = ["| year | " + " | ".join(f"{name} ({STATISTICS[name]}, {UNITS[name]})" for name in NAMES) + " |", "|---" * (len(NAMES) + 1) + "|"]
    for year in range(FIRST_YEAR, LATEST_YEAR + 1):
        cells = [f"{annual_level(name, year):.3g} ({basis_of(name, year)})" for name in NAMES]
        lines.append(f"| {year} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(results: list[dict], januaries: list[dict]) -> str:
    lines = ["| year | pollutant | statistic | model | published | error | January / July mean (model) | published figure's source |", "|---|---|---|---|---|---|---|---|"]
    for row in results:
        lines.append(
            f"| {row['year']} | {row['pollutant']} | {row['statistic']} | {row['model']:g} {row['unit']} | {row['record']:g} | {row['error_pct']:+.1f} % "
            f"| {row['january_mean']:g} / {row['july_mean']:g} | {row['source']} |"
        )
    lines.append("")
    lines.extend(f"{j['year']}: {january_line(j)}." for j in januaries)
    lines.append("")
    lines.extend(f"{j['year']}: {good_days_line(j)}." for j in januaries)
    return "\n".join(lines)


def year_summary(year: int, stats: CityStatistics) -> dict:
    """The year's January days, good days and PM2.5's highest and lowest months (1-12)."""
    pm25 = [value or 0.0 for value in stats.monthly_means["pm25"]]
    good = published_good_days(year)
    january = published_january_days(year)
    return {
        "year": year, "january_days": stats.january_days, "over_75": stats.january_days_over_75,
        "published_over_75": january.value if january else None, "over_75_source": f"{january.source}: {january.basis}" if january else None,
        "good_days_pct": round(stats.good_days_pct, 1), "published_good_days_pct": good.value if good else None,
        "good_days_source": f"{good.source}: {good.basis}" if good else None,
        "pm25_peak_month": pm25.index(max(pm25)) + 1, "pm25_low_month": pm25.index(min(pm25)) + 1,
    }  # fmt: skip


def january_line(summary: dict) -> str:
    found = (
        f"in the record {summary['published_over_75']:g} ({summary['over_75_source']})" if summary["published_over_75"] is not None else "no published figure"
    )
    return f"{summary['over_75']} of {summary['january_days']} January days above 75 µg/m³ PM2.5 (city daily mean), {found}"


def good_days_line(summary: dict) -> str:
    published_part = (
        f"published {summary['published_good_days_pct']:g} % ({summary['good_days_source']})" if summary["published_good_days_pct"] is not None else "no published figure"
    )
    return (
        f"good days (daily AQI <= {GOOD_AQI}) {summary['good_days_pct']:g} %, {published_part}; "
        f"PM2.5 highest in month {summary['pm25_peak_month']}, lowest in month {summary['pm25_low_month']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--years", type=int, nargs="+", default=[2018, 2023], help="years to simulate (default: the tests' two)")
    parser.add_argument("--stations", type=int, default=10, help="air_quality stations (default 10)")
    parser.add_argument("--cadence", default="1h", help="reporting interval (default 1h, the national network's; O3-8h needs hours)")
    parser.add_argument("--shape", action="store_true", help="print the shape constants that put the runs on the record")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--markdown", action="store_true", help="also print the table as markdown (docs/city.md)")
    parser.add_argument("--levels", action="store_true", help="print the record's levels by year as markdown and exit (no run)")
    args = parser.parse_args()
    console = Console(width=200)
    if args.levels:
        print(levels_markdown())
        return 0
    table = Table(title=f"Model vs published: {args.stations} stations, cadence {args.cadence}, a year from 1 January")
    for column in ("year", "pollutant", "statistic", "model", "record", "error", "January / July mean", "record's source"):
        table.add_column(column, justify="right" if column in {"year", "model", "record", "error"} else "left")
    results: list[dict] = []
    januaries: list[dict] = []
    for year in args.years:
        started = time.perf_counter()
        stats = run_year(year_of_stations(year, args.stations, args.cadence))
        console.print(f"{year}: simulated in {time.perf_counter() - started:.1f} s")
        januaries.append(year_summary(year, stats))
        for row in rows(year, stats):
            results.append(row)
            table.add_row(
                str(year), row["pollutant"], row["statistic"], f"{row['model']:g} {row['unit']}", f"{row['record']:g}", f"{row['error_pct']:+.1f} %",
                f"{row['january_mean']:g} / {row['july_mean']:g}", row["source"],
            )  # fmt: skip
    console.print(table)
    for january in januaries:
        console.print(f"{january['year']}: {january_line(january)}")
        console.print(f"{january['year']}: {good_days_line(january)}")
    console.print("Sources: " + "; ".join(f"{s.id}: {s.publisher}, {s.published}, {s.url}" for s in SOURCES.values()))
    if args.markdown:
        print(markdown(results, januaries))
    if args.shape:
        for pollutant in POLLUTANTS:
            ratios = [row["model"] / row["record"] for row in results if row["pollutant"] == pollutant.name]
            console.print(f"{pollutant.name}: shape {pollutant.shape * sum(ratios) / len(ratios):.4f} (now {pollutant.shape:g})")
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": results, "januaries": januaries}, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
