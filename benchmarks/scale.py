"""How the simulator's cost grows with the fleet: build time, memory per device, generation rate.

For each size, a world of air-quality stations (`cadence: 5m`, 10 simulated minutes unless
`--minutes` says otherwise, a dry run to
/dev/null through the dry run's own JSON-lines writer) runs in a fresh Python process, so no size
inherits another's heap. Per size: the build time (devices registered and their processes started),
the run's wall and CPU time, messages/s and readings/s (10 readings a message: six pollutants and
the AQI's four), the child's peak RSS (`ru_maxrss`, from `os.wait4`) and the RSS per device: the
peak minus that of the same child with no devices (same imports, same scenario, no fleet built),
divided by the size; and how long the child took to exit once it had measured (freeing the world).
`--scenario FILE` measures that scenario's world the same way instead (its own duration unless
`--minutes` is given; readings/s is then not counted).

`--runs N` measures every size N times (the sizes in turn, then again, so a drift of the machine
touches every size alike) and prints, per size, the median and the spread (min-max) of each figure;
the plot shows the medians. A shared machine's rate varies by a fifth from run to run: compare
medians of three runs or more, never one run against one.

    .venv/bin/python benchmarks/scale.py [--sizes 1000,10000,100000] [--minutes 10] [--runs 3] [--json FILE] [--plot PNG]
    .venv/bin/python benchmarks/scale.py --scenario scenarios/yangquan-full.yaml --minutes 10 [--json FILE]
    .venv/bin/python benchmarks/scale.py --from-json FILE --plot PNG     # a saved run, again

Run it with `nice` on a shared machine; a million stations take about 3 minutes and 6 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from simulator.builder import build_world
from simulator.engine import make_environment
from simulator.scenario import Scenario, load_scenario
from simulator.transport.jsonl import JsonlWriter

READINGS_PER_MESSAGE = 10  # pm25 pm10 so2 no2 co o3 aqi aqi_level aqi_category primary_pollutant
DEFAULT_MINUTES = 10.0
DEFAULT_SIZES = "1000,10000,100000"
MAX_RUNS = 20
# The figures whose spread over runs is printed and written (`spread` in --json).
SPREAD_FIGURES = ("messages_per_cpu_s", "messages_per_s", "rss_per_device_bytes", "build_cpu_s", "exit_s")
CHILD_FLAG = "--child"
console = Console(width=160)


@dataclass(frozen=True)
class Measured:
    """What one child process measured of its own world (printed as one JSON line)."""

    devices: int
    build_s: float
    build_cpu_s: float
    run_wall_s: float
    run_cpu_s: float
    messages: int


@dataclass(frozen=True)
class Row(Measured):
    """One size's figures, as `--json` writes them: what its child measured (rounded), then the figures
    derived from it and from the child's exit (the keys in this order)."""

    messages_per_s: float
    readings_per_s: float | None  # None for a scenario file's world (its messages carry different readings)
    messages_per_cpu_s: float
    peak_rss_bytes: int
    rss_per_device_bytes: float | None  # None for the empty baseline
    exit_s: float  # from the child's figures to its exit: freeing the world
    run: int = 1  # which of --runs (from 1)


def stations(count: int, simulated_s: float) -> Scenario:
    return Scenario.model_validate(
        {"name": "scale", "duration": simulated_s, "fleets": [{"type": "air_quality", "count": max(count, 1), "cadence": "5m"}]}
    )


def world_of(count: int, simulated_s: float, scenario_file: str) -> Scenario:
    """The stations' scenario, or the file's (`count` 0: the same with no fleet, the baseline)."""
    if scenario_file:
        scenario = load_scenario(scenario_file)
        scenario = scenario.with_overrides(duration=simulated_s) if simulated_s else scenario
    else:
        scenario = stations(count, simulated_s)
    if count == 0:
        scenario = scenario.model_copy(update={"fleets": []})  # the baseline: everything but the devices
    return scenario


def measure(count: int, simulated_s: float, scenario_file: str = "") -> Measured:
    """Build and run the world in this process."""
    scenario = world_of(count, simulated_s, scenario_file)
    writer = JsonlWriter(Path(os.devnull))
    env = make_environment(scenario)
    started, cpu = time.perf_counter(), time.process_time()
    build_world(scenario, env, writer)
    built, built_cpu = time.perf_counter(), time.process_time()
    env.run(until=scenario.duration)
    run_cpu = time.process_time() - built_cpu
    run_wall = time.perf_counter() - built
    writer.close()
    devices = sum(fleet.count for fleet in scenario.fleets)
    return Measured(devices, built - started, built_cpu - cpu, run_wall, run_cpu, writer.written)


def in_fresh_process(count: int, simulated_s: float, scenario_file: str = "") -> tuple[Measured, int, float]:
    """`measure(...)` in a child process: what it measured, its peak RSS in bytes, and the seconds it
    took to exit after printing its figures."""
    command = [sys.executable, __file__, CHILD_FLAG, str(count), str(simulated_s), scenario_file]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, env=os.environ.copy())
    assert child.stdout is not None
    line = child.stdout.readline()
    measured_at = time.perf_counter()
    child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    exit_s = time.perf_counter() - measured_at
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"the child with {count} devices failed (exit {child.returncode})")
    return Measured(**json.loads(line)), usage.ru_maxrss * 1024, exit_s  # ru_maxrss: kilobytes on Linux


def row_of(measured: Measured, peak_rss: int, baseline_rss: int, exit_s: float, readings_per_message: int | None, run: int = 1) -> Row:
    per_device = (peak_rss - baseline_rss) / measured.devices if measured.devices else None
    wall, cpu = measured.run_wall_s, measured.run_cpu_s
    return Row(
        devices=measured.devices,
        build_s=round(measured.build_s, 3),
        build_cpu_s=round(measured.build_cpu_s, 3),
        run_wall_s=round(wall, 3),
        run_cpu_s=round(cpu, 3),
        messages=measured.messages,
        messages_per_s=round(measured.messages / wall, 1) if wall else 0.0,
        readings_per_s=None if readings_per_message is None else round(measured.messages * readings_per_message / wall, 1) if wall else 0.0,
        messages_per_cpu_s=round(measured.messages / cpu, 1) if cpu else 0.0,
        peak_rss_bytes=peak_rss,
        rss_per_device_bytes=None if per_device is None else round(per_device, 1),
        exit_s=round(exit_s, 3),
        run=run,
    )


def runs_by_size(rows: list[Row]) -> dict[int, list[Row]]:
    """The measured worlds' rows (not the empty baselines), grouped by size in the order first seen."""
    grouped: dict[int, list[Row]] = {}
    for row in rows:
        if row.devices:
            grouped.setdefault(row.devices, []).append(row)
    return grouped


def median_row(runs: list[Row]) -> Row:
    """One row whose every figure is the median of the runs' (each figure on its own: not one run's row)."""
    figures = {name: statistics.median(getattr(row, name) for row in runs) for name in asdict(runs[0]) if name not in ("devices", "run", "readings_per_s")}
    readings = [row.readings_per_s for row in runs if row.readings_per_s is not None]
    return Row(devices=runs[0].devices, readings_per_s=statistics.median(readings) if readings else None, run=0, **figures)


def spread_of(rows: list[Row]) -> list[dict[str, Any]]:
    """Per size: how many runs, and the min, median and max of each of SPREAD_FIGURES."""
    spread = []
    for devices, runs in runs_by_size(rows).items():
        entry: dict[str, Any] = {"devices": devices, "runs": len(runs)}
        for name in SPREAD_FIGURES:
            values = [getattr(row, name) for row in runs]
            entry[name] = {"min": min(values), "median": statistics.median(values), "max": max(values)}
        spread.append(entry)
    return spread


def spread_table(spread: list[dict[str, Any]], title: str) -> Table:
    view = Table(title=title)
    for name in ("devices", "runs", "msg/CPU s", "msg/s", "RSS/device B", "build CPU s", "exit s"):
        view.add_column(name, justify="right")
    formats = {"messages_per_cpu_s": "{:,.0f}", "messages_per_s": "{:,.0f}", "rss_per_device_bytes": "{:,.0f}", "build_cpu_s": "{:.1f}", "exit_s": "{:.1f}"}

    def cell(figure: dict[str, float], form: str) -> str:
        return f"{form.format(figure['median'])} ({form.format(figure['min'])}-{form.format(figure['max'])})"

    for entry in spread:
        view.add_row(f"{entry['devices']:,}", str(entry["runs"]), *(cell(entry[name], form) for name, form in formats.items()))
    return view


def table(rows: list[Row], title: str) -> Table:
    view = Table(title=title)
    for name in ("run", "devices", "build s", "build CPU s", "run s", "run CPU s", "messages", "msg/s", "readings/s", "msg/CPU s", "peak RSS MB", "RSS/device", "exit s"):
        view.add_column(name, justify="right")
    for row in rows:
        view.add_row(
            str(row.run), f"{row.devices:,}", f"{row.build_s:.2f}", f"{row.build_cpu_s:.2f}", f"{row.run_wall_s:.2f}", f"{row.run_cpu_s:.2f}", f"{row.messages:,}",
            f"{row.messages_per_s:,.0f}", "-" if row.readings_per_s is None else f"{row.readings_per_s:,.0f}", f"{row.messages_per_cpu_s:,.0f}",
            f"{row.peak_rss_bytes / 1e6:,.0f}", "-" if row.rss_per_device_bytes is None else f"{row.rss_per_device_bytes:,.0f} B", f"{row.exit_s:.2f}",
        )  # fmt: skip
    return view


def plot(rows: list[Row], path: Path) -> None:
    """Three panels against the fleet size (log x): build time, RSS per device, messages/s and readings/s;
    with several runs, each figure's median."""
    # Imported here: only a run with --plot pays for matplotlib, and never a child.
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    sized = [median_row(runs) for runs in runs_by_size(rows).values()]
    sizes = [row.devices for row in sized]
    fig, (build, memory, rate) = plt.subplots(1, 3, figsize=(13, 3.8), dpi=100)
    build.plot(sizes, [row.build_s for row in sized], marker="o", label="wall")
    build.plot(sizes, [row.build_cpu_s for row in sized], marker="^", linestyle="--", label="CPU")
    build.legend(fontsize="small")
    build.set(xscale="log", yscale="log", title="build time", xlabel="devices", ylabel="seconds")
    memory.plot(sizes, [row.rss_per_device_bytes for row in sized], marker="o", label="measured")
    memory.axhline(1024, color="grey", linestyle="--", label="target 1 KB")
    memory.set(xscale="log", title="peak RSS per device", xlabel="devices", ylabel="bytes")
    memory.set_ylim(bottom=0)
    memory.legend(fontsize="small")
    rate.plot(sizes, [row.messages_per_s for row in sized], marker="o", label="messages/s")
    rate.plot(sizes, [row.readings_per_s for row in sized], marker="s", label="readings/s")
    rate.plot(sizes, [row.messages_per_cpu_s for row in sized], marker="^", linestyle="--", label="messages/CPU s")
    rate.set(xscale="log", yscale="log", title="generation rate", xlabel="devices", ylabel="per second (wall, or CPU)")
    rate.legend(fontsize="small")
    for axes in (build, memory, rate):
        axes.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def usage_error(message: str) -> SystemExit:
    """A bad flag: its one line on stderr, exit 2."""
    print(message, file=sys.stderr)
    return SystemExit(2)


def sizes_of(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise usage_error(f"--sizes: {text!r} is not a comma-separated list of device counts") from None
    if not sizes or any(size < 1 or size > 1_000_000 for size in sizes):
        raise usage_error(f"--sizes: {text!r}: each size from 1 to 1,000,000")
    return sizes


def runs_of(value: str) -> int:
    try:
        runs = int(value)
    except ValueError:
        raise usage_error(f"--runs: {value!r} is not a whole number") from None
    if not 1 <= runs <= MAX_RUNS:
        raise usage_error(f"--runs: {runs} is not from 1 to {MAX_RUNS}")
    return runs


def measure_runs(sizes: list[int], runs: int, simulated_s: float, scenario_file: str, readings: int | None) -> list[Row]:
    """Each run: the empty baseline, then every size, each in a fresh process."""
    rows = []
    for run in range(1, runs + 1):
        baseline, baseline_rss, baseline_exit = in_fresh_process(0, simulated_s, scenario_file)
        rows.append(row_of(baseline, baseline_rss, baseline_rss, baseline_exit, readings, run))
        for size in sizes:
            measured, rss, exit_s = in_fresh_process(size, simulated_s, scenario_file)
            rows.append(row_of(measured, rss, baseline_rss, exit_s, readings, run))
            console.print(
                f"run {run}/{runs}: {measured.devices:,} devices: built in {measured.build_s:.2f} s, ran in {measured.run_wall_s:.2f} s, "
                f"peak RSS {rss / 1e6:,.0f} MB, exit {exit_s:.1f} s"
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"device counts, comma-separated (default {DEFAULT_SIZES})")
    parser.add_argument("--minutes", type=float, help=f"simulated minutes (default {DEFAULT_MINUTES:g}; a --scenario's own duration)")
    parser.add_argument("--scenario", type=Path, help="measure this scenario file's world instead of air-quality stations")
    parser.add_argument("--runs", default="1", help=f"measure every size this many times, 1 to {MAX_RUNS} (default 1); medians and spread are printed")
    parser.add_argument("--json", type=Path, help="write the rows (every run's) and the spread here")
    parser.add_argument("--plot", type=Path, help="write a PNG of the rows here")
    parser.add_argument("--from-json", type=Path, help="measure nothing: print and plot the rows a --json run wrote")
    args = parser.parse_args(argv)
    if args.from_json:
        saved = json.loads(args.from_json.read_text(encoding="utf-8"))
        rows = [Row(**row) for row in saved["rows"]]
        console.print(table(rows, f"{args.from_json}"))
        if saved.get("runs", 1) > 1:
            console.print(spread_table(spread_of(rows), f"{args.from_json}: median (min-max) of {saved['runs']} runs"))
        if args.plot:
            plot(rows, args.plot)
        return
    runs = runs_of(args.runs)
    minutes = args.minutes if args.minutes is not None else (None if args.scenario else DEFAULT_MINUTES)
    if minutes is not None and not 0 < minutes <= 7 * 24 * 60:
        raise usage_error(f"--minutes: {minutes:g} is not from 0 to a week")
    simulated_s = minutes * 60.0 if minutes is not None else 0.0  # 0: the scenario's own duration
    scenario_file = str(args.scenario) if args.scenario else ""
    if scenario_file:
        load_scenario(scenario_file)  # a bad file is its one line here, not a child's traceback
    sizes = [1] if scenario_file else sizes_of(args.sizes)  # a scenario: one world, its own size
    readings = None if scenario_file else READINGS_PER_MESSAGE
    rows = measure_runs(sizes, runs, simulated_s, scenario_file, readings)
    what = scenario_file or "air-quality stations, cadence 5m"
    span = f"{simulated_s / 60:g} simulated minutes" if simulated_s else "its duration"
    console.print(table(rows, f"{what}, {span}, dry run to /dev/null"))
    spread = spread_of(rows)
    if runs > 1:
        console.print(spread_table(spread, f"{what}, {span}: median (min-max) of {runs} runs"))
    if args.json:
        document: dict[str, Any] = {
            "scenario": scenario_file or None, "simulated_s": simulated_s or None, "cadence_s": None if scenario_file else 300.0,
            "readings_per_message": readings, "runs": runs, "rows": [asdict(row) for row in rows], "spread": spread,
        }  # fmt: skip
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    if args.plot and not scenario_file:
        plot(rows, args.plot)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == CHILD_FLAG:
        print(json.dumps(asdict(measure(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]))), flush=True)
    else:
        main()
