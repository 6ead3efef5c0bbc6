"""`iotsim load FILE`: run the scenario's load experiment, judge it, and write a results directory.

Exit codes: 0 every threshold held (with --find-capacity: some rate held), 1 a threshold failed
(or no rate held), 2 the experiment could not run (bad scenario, no load: section, broker or InfluxDB
unreachable), 130 interrupted.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer
from pydantic import ValidationError
from rich.console import Console

from simulator.errors import UsageError
from simulator.load.results import write_results
from simulator.load.runner import Experiment, LoadError, find_capacity, run_dry, run_live
from simulator.load.thresholds import Verdict, format_figure
from simulator.scenario import Scenario, load_scenario

out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)


def stop(message: str, code: int = 2) -> NoReturn:
    err.print(message, markup=False)
    raise typer.Exit(code)


def load(
    file: Annotated[Path, typer.Argument(help="scenario YAML file with a load: section")],
    output: Annotated[Optional[Path], typer.Option("--out", help="results directory (default: load.results/NAME-YYYYmmdd-HHMMSS)")] = None,
    workers: Annotated[Optional[int], typer.Option(min=1, max=64, help="simulator processes (overrides load.workers)")] = None,
    find_capacity_: Annotated[bool, typer.Option("--find-capacity", help="raise a constant rate until a threshold breaks; report the highest that held")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="no broker: each worker writes its messages to OUT/messages-wN.jsonl")] = False,
    mqtt: Annotated[Optional[str], typer.Option("--mqtt", help="override the broker URL")] = None,
    influx: Annotated[Optional[str], typer.Option("--influx", help="override the InfluxDB URL")] = None,
    qos: Annotated[Optional[int], typer.Option(min=0, max=1, help="override the QoS (load.qos, else mqtt.qos)")] = None,
    raw_latencies: Annotated[bool, typer.Option("--raw-latencies", help="also write every end-to-end latency (µs, int64) to OUT/latencies.i64")] = False,
    mqtt_username: Annotated[
        Optional[str],
        typer.Option("--mqtt-username", envvar="MQTT_USERNAME", help="override mqtt.username, the workers' broker user; the password comes from MQTT_PASSWORD or the file MQTT_PASSWORD_FILE names"),
    ] = None,
    bridge_username: Annotated[
        Optional[str],
        typer.Option("--bridge-username", envvar="BRIDGE_MQTT_USERNAME", help="override load.bridge.username, the bridge's broker user; the password comes from BRIDGE_MQTT_PASSWORD or the file BRIDGE_MQTT_PASSWORD_FILE names"),
    ] = None,
    ca_file: Annotated[Optional[Path], typer.Option("--ca-file", exists=True, dir_okay=False, readable=True, help="override mqtt.ca_file: the CA certificate of an mqtts:// broker")] = None,
) -> None:
    """Run a load experiment from a scenario file: measure the pipeline, judge the thresholds, write a report."""
    overrides = {"mqtt.url": mqtt, "influx.url": influx, "mqtt.username": mqtt_username, "mqtt.ca_file": str(ca_file) if ca_file else None,
                 "load.bridge.username": bridge_username}  # fmt: skip
    scenario = scenario_with(file, overrides)
    try:
        experiment = Experiment.of(scenario, workers, qos)
    except LoadError as error:
        raise LoadError(f"{file}: {error}") from None
    assert experiment.scenario.load is not None
    folder = writable_folder(output or Path(experiment.load.results) / f"{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        if dry_run:
            summary = run_dry(experiment, folder)
            out.print(f"dry run: {summary['generated']:,} messages from {experiment.workers} worker(s) → {folder}/messages-w*.jsonl")
            return
        if find_capacity_:
            capacity(experiment, folder)
            return
        passed = run_one(experiment, folder, show=True, raw_latencies=raw_latencies)
    except KeyboardInterrupt:
        stop("interrupted", 130)
    if not passed:
        raise typer.Exit(1)


# The flag of each override `iotsim load` applies (for error messages).
FLAGS = {"mqtt.url": "--mqtt", "influx.url": "--influx", "mqtt.username": "--mqtt-username", "mqtt.ca_file": "--ca-file", "load.bridge.username": "--bridge-username"}


def scenario_with(file: Path, overrides: dict[str, str | None]) -> Scenario:
    scenario = load_scenario(file)  # ScenarioError: one line per problem, exit 2
    if scenario.load is None:
        overrides = {key: value for key, value in overrides.items() if not key.startswith("load.")}  # Experiment.of says what is missing
    try:
        return scenario.with_overrides(**overrides)
    except ValidationError as error:
        raise UsageError("; ".join(f"{FLAGS.get('.'.join(map(str, e['loc'])), e['loc'][-1])}: {e['msg'].removeprefix('Value error, ')}" for e in error.errors())) from None


def writable_folder(folder: Path) -> Path:
    """The results directory, created now: a bad --out fails before the experiment, not after it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".writable").touch()
        (folder / ".writable").unlink()
    except OSError as error:
        raise UsageError(f"--out {folder}: cannot write a results directory there ({error.strerror})") from None
    return folder


def run_one(experiment: Experiment, folder: Path, show: bool, raw_latencies: bool = False) -> bool:
    load_ = experiment.load
    duration = experiment.schedule.duration
    if show:
        err.print(
            f"{experiment.scenario.name}: {load_.profile.kind} profile over {duration:g} s, {experiment.probes} probes, "
            f"QoS {experiment.qos}, {experiment.workers} worker(s) → {folder}",
            markup=False,
        )

    def progress(second: int, row: dict[str, Any]) -> None:
        if err.is_terminal:
            p99 = row.get("latency_p99_ms")
            err.print(
                f"  {second:>4} s  offered {row['offered']:>9,.0f}  published {row['published']:>9,.0f}  written {row['written']:>9,.0f}"
                f"  p99 {'-' if p99 is None else f'{p99:,.1f} ms'}  backlog {row['backlog']:,.0f}",
                markup=False,
            )

    summary, rows, verdicts = run_live(experiment, folder, progress, raw_latencies)
    write_results(folder, summary, rows)
    if show:
        print_summary(summary, verdicts, folder)
    return bool(summary["passed"])


def print_summary(summary: dict[str, Any], verdicts: list[Verdict], folder: Path) -> None:
    f = {name: (float("nan") if value is None else value) for name, value in summary["figures"].items()}
    out.print(
        f"{summary['scenario']}: offered {format_figure(f['offered'])}, generated {format_figure(f['generated'])}, "
        f"published {format_figure(f['published'])}, acknowledged {format_figure(f['acknowledged'])}, "
        f"received {format_figure(f['received'])}, written {format_figure(f['written'])}; "
        f"loss {format_figure(f['loss'])}, duplicates {format_figure(f['duplicates'])}"
    )
    out.print(
        f"end-to-end latency ms: p50 {format_figure(f['p50_latency_ms'])}, p90 {format_figure(f['p90_latency_ms'])}, "
        f"p99 {format_figure(f['p99_latency_ms'])}, p99.9 {format_figure(f['p999_latency_ms'])}, max {format_figure(f['max_latency_ms'])}; "
        f"publish p99 {format_figure(f['publish_p99_ms'])} ms"
    )
    out.print(cpu_line(summary), markup=False)
    for verdict in verdicts:
        out.print(verdict.line(), markup=False)
    failed = [v.threshold for v in verdicts if not v.passed]
    if failed:
        out.print(f"FAILED {len(failed)} of {len(verdicts)} thresholds: {'; '.join(failed)}", markup=False)
    else:
        out.print(f"passed {len(verdicts)} thresholds", markup=False)
    out.print(f"results: {folder}/report.html", markup=False)


def cpu_line(summary: dict[str, Any]) -> str:
    """Where the CPU went: `... simulator 85%, bridge 41%, broker (mosquitto) 11%, database (influxd) 32%; ...`."""
    figures, servers = summary["figures"], summary.get("servers", {})
    parts = [f"simulator {percent(figures['simulator_cpu_percent'])}", f"bridge {percent(figures['bridge_cpu_percent'])}"]
    for name in ("broker", "database"):
        server = servers.get(name, {})
        if server.get("note"):  # not sampled, and why
            parts.append(f"{name} {server['note']}")
        else:
            parts.append(f"{name} ({server.get('process')}) {percent(figures[f'{name}_cpu_percent'])}")
    machine = f"whole machine {percent(figures['machine_cpu_percent'])} of {100 * (summary['environment']['cpus'] or 1)}%"
    return f"CPU, % of one core, mean while loaded: {', '.join(parts)}; {machine}"


def percent(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.0f}%"


def capacity(experiment: Experiment, folder: Path) -> None:
    def run(attempt: Experiment, trial_folder: Path) -> tuple[dict[str, Any], list[Verdict]]:
        summary, rows, verdicts = run_live(attempt, trial_folder)
        write_results(trial_folder, summary, rows)
        return summary, verdicts

    best, trials = find_capacity(experiment, folder, run, lambda line: out.print(line, markup=False))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "capacity.json").write_text(
        json.dumps(
            {"scenario": experiment.scenario.name, "qos": experiment.qos, "workers": experiment.workers, "capacity_msg_s": best,
             "thresholds": experiment.load.thresholds,
             "trials": [{"rate": t.rate, "passed": t.passed, "failed": t.failed, "results": str(t.out)} for t in trials]},
            indent=2,
        )  # fmt: skip
    )
    if best is None:
        out.print(f"capacity: no rate held; the first trial at {trials[0].rate:,.0f} msg/s broke ({folder}/capacity.json)", markup=False)
        raise typer.Exit(1)
    out.print(f"capacity: {best:,.0f} msg/s held every threshold at QoS {experiment.qos} ({folder}/capacity.json)", markup=False)
