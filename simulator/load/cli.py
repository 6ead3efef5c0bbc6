"""`iotsim load FILE`: run the scenario's load experiment, judge it, and write a results directory.
`iotsim load FILE --shard INDEX/COUNT`: run one shard of it on this host, its records to InfluxDB;
`iotsim load report RUN_ID`: merge the shards' records into the results directory.

Exit codes: 0 every threshold held (with --find-capacity: some rate held), 1 a threshold failed
(or no rate held), 2 the experiment could not run (bad scenario, no load: section, broker or InfluxDB
unreachable; for a report, a shard missing), 130 interrupted.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Optional

import typer
import typer._click as click  # typer 0.29 vendors click: its Context and Command
from pydantic import ValidationError
from rich.console import Console
from typer.core import TyperCommand

from simulator.errors import DatabaseError, UsageError
from simulator.shard import SHARD_ENV, Shard, shard_from_env

# The runner, the scenario and InfluxDB are imported by the functions that use them: every `iotsim`
# command builds this one's options, and only `iotsim load` needs them (docs/architecture.md, Start-up).
if TYPE_CHECKING:
    from simulator.load.runner import Experiment
    from simulator.load.section import LoadSection
    from simulator.load.thresholds import Verdict
    from simulator.scenario import InfluxSettings, Scenario

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
    shard_spec: Annotated[
        Optional[str],
        typer.Option("--shard", metavar="INDEX/COUNT", help=f"run only this shard (INDEX from 0), no bridge, its records to InfluxDB for `iotsim load report`; also {SHARD_ENV}"),
    ] = None,
    run_id: Annotated[Optional[str], typer.Option("--run-id", metavar="ID", help="the run's id, shared by its shards (default: IOTSIM_RUN_ID)")] = None,
    state_dir: Annotated[
        Path, typer.Option("--state-dir", file_okay=False, help="the local stack's state dir (iotsim stack up): a broker_outage stops and starts its broker when it is the scenario's")
    ] = Path(".iotsim"),
) -> None:
    """Run a load experiment from a scenario file: measure the pipeline, judge the thresholds, write a report.

    `iotsim load report RUN_ID` merges the shards of a run made with --shard (see `iotsim load report --help`)."""
    from simulator.load.records import run_id_from_env
    from simulator.load.runner import Experiment, LoadError, run_dry

    sharded = shard_spec is not None or bool(os.environ.get(SHARD_ENV, "").strip())
    shard = shard_from_env(shard_spec)  # InvalidShard: one line, exit 2
    run = run_id_from_env(run_id)  # InvalidRunId: one line, exit 2
    if sharded:
        check_shard_flags(workers=workers, find_capacity=find_capacity_, dry_run=dry_run, raw_latencies=raw_latencies, output=output)
        if run is None:
            raise UsageError("--run-id: a sharded run needs the id all its shards share: --run-id ID or IOTSIM_RUN_ID (in a Kubernetes Indexed Job, set it from the Job's name)")
    overrides = {"mqtt.url": mqtt, "influx.url": influx, "mqtt.username": mqtt_username, "mqtt.ca_file": str(ca_file) if ca_file else None,
                 "load.bridge.username": bridge_username}  # fmt: skip
    scenario = scenario_with(file, overrides)
    try:
        experiment = Experiment.of(scenario, workers, qos)
    except LoadError as error:
        raise LoadError(f"{file}: {error}") from None
    assert experiment.scenario.load is not None
    if sharded:
        assert run is not None
        try:
            shard_one(experiment, shard, run, state_dir)
        except KeyboardInterrupt:
            stop("interrupted", 130)
        return
    folder = writable_folder(output or Path(experiment.load.results) / (run or f"{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"))
    try:
        if dry_run:
            summary = run_dry(experiment, folder)
            out.print(f"dry run: {summary['generated']:,} messages from {experiment.workers} worker(s) → {folder}/messages-w*.jsonl")
            return
        if find_capacity_:
            capacity(experiment, folder)
            return
        passed = run_one(experiment, folder, show=True, raw_latencies=raw_latencies, run_id=run, state_dir=state_dir)
    except KeyboardInterrupt:
        stop("interrupted", 130)
    if not passed:
        raise typer.Exit(1)


# The flag of each override `iotsim load` applies (for error messages).
FLAGS = {"mqtt.url": "--mqtt", "influx.url": "--influx", "mqtt.username": "--mqtt-username", "mqtt.ca_file": "--ca-file", "load.bridge.username": "--bridge-username"}


def scenario_with(file: Path, overrides: dict[str, str | None]) -> Scenario:
    from simulator.scenario import load_scenario

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


def check_shard_flags(**given: object) -> None:
    """--shard runs one shard in this process and writes no results directory: flags that cannot go with it."""
    flags = {"workers": "--workers", "find_capacity": "--find-capacity", "dry_run": "--dry-run", "raw_latencies": "--raw-latencies", "output": "--out"}
    for name, value in given.items():
        if value not in (None, False):
            where = "; the results directory comes from `iotsim load report RUN_ID --out DIR`" if name == "output" else ""
            raise UsageError(f"{flags[name]} cannot go with --shard ({SHARD_ENV}): a shard is one process that writes its records to InfluxDB{where}")


def shard_one(experiment: Experiment, shard: Shard, run_id: str, state_dir: Path) -> None:
    from simulator.load.shardrun import run_shard

    scenario = experiment.scenario
    err.print(
        f"{scenario.name}: shard {shard.spec} of run {run_id}, {experiment.load.profile.kind} profile over {experiment.schedule.duration:g} s, "
        f"QoS {experiment.qos}, no bridge (run `iotsim bridge` beside the shards) → InfluxDB at {scenario.influx.url} database {scenario.influx.database}",
        markup=False,
    )
    final = run_shard(experiment, shard, run_id, state_dir)
    counts = final.counts
    out.print(
        f"shard {shard.spec} of run {run_id}: {final.devices} devices, generated {counts.generated:,}, published {counts.published:,}, "
        f"acknowledged {counts.acknowledged:,}; merge the shards with `iotsim load report {run_id}`",
        markup=False,
    )


def run_one(experiment: Experiment, folder: Path, show: bool, raw_latencies: bool = False, run_id: str | None = None, state_dir: Path | None = None) -> bool:
    from simulator.load.results import write_results
    from simulator.load.runner import run_live

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
                f"  p99 {'-' if p99 is None else f'{p99:,.1f} ms'}  backlog {row['backlog']:,.0f}"
                + (f"  connected {row['connected']:,}" if row.get("connected") else ""),
                markup=False,
            )

    summary, rows, verdicts = run_live(experiment, folder, progress, raw_latencies, run_id, state_dir)
    write_results(folder, summary, rows)
    if show:
        print_summary(summary, verdicts, folder)
    return bool(summary["passed"])


def print_summary(summary: dict[str, Any], verdicts: list[Verdict], folder: Path) -> None:
    from simulator.load.thresholds import format_figure

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
    if f.get("connects"):
        out.print(connections_line(f), markup=False)
    out.print(cpu_line(summary), markup=False)
    for verdict in verdicts:
        out.print(verdict.line(), markup=False)
    failed = [v.threshold for v in verdicts if not v.passed]
    if failed:
        out.print(f"FAILED {len(failed)} of {len(verdicts)} thresholds: {'; '.join(failed)}", markup=False)
    else:
        out.print(f"passed {len(verdicts)} thresholds", markup=False)
    out.print(f"results: {folder}/report.html", markup=False)


def connections_line(f: dict[str, float]) -> str:
    """The devices' own connections: `device connections: at most 300 connected, 600 connects ...`."""
    from simulator.load.thresholds import format_figure

    return (
        f"device connections: at most {format_figure(f['connected'])} connected, {format_figure(f['connects'])} connects, "
        f"{format_figure(f['reconnects'])} reconnects, {format_figure(f['connect_failures'])} failed attempts; CONNECT→CONNACK ms: "
        f"p50 {format_figure(f['connect_p50_ms'])}, p99 {format_figure(f['connect_p99_ms'])}, max {format_figure(f['connect_max_ms'])}; "
        f"all reconnected after the broker outage in {format_figure(f['reconnect_all_s'])} s"
    )


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
    machine = f"whole machine {percent(figures['machine_cpu_percent'])}"
    if figures["machine_cpu_percent"] is not None:  # a sharded run's hosts are not the report's
        machine += f" of {100 * (summary['environment']['cpus'] or 1)}%"
    return f"CPU, % of one core, mean while loaded: {', '.join(parts)}; {machine}"


def percent(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.0f}%"


def capacity(experiment: Experiment, folder: Path) -> None:
    from simulator.load.results import write_results
    from simulator.load.runner import bracket, find_capacity, run_live

    def run(attempt: Experiment, trial_folder: Path) -> tuple[dict[str, Any], list[Verdict]]:
        summary, rows, verdicts = run_live(attempt, trial_folder)
        write_results(trial_folder, summary, rows)
        return summary, verdicts

    best, trials = find_capacity(experiment, folder, run, lambda line: out.print(line, markup=False))
    found = bracket(trials)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "capacity.json").write_text(
        json.dumps(
            {"scenario": experiment.scenario.name, "qos": experiment.qos, "workers": experiment.workers, "capacity_msg_s": best,
             "next_broke_msg_s": found.broke, "resolution_percent": found.resolution_percent,
             "thresholds": experiment.load.thresholds,
             "trials": [{"rate": t.rate, "passed": t.passed, "failed": t.failed, "results": str(t.out)} for t in trials]},
            indent=2,
        )  # fmt: skip
    )
    if best is None:
        out.print(f"capacity: no rate held; the lowest trial, {min(t.rate for t in trials):,.0f} msg/s, broke ({folder}/capacity.json)", markup=False)
        raise typer.Exit(1)
    out.print(f"capacity: {best:,.0f} msg/s held every threshold at QoS {experiment.qos} ({folder}/capacity.json)", markup=False)


def report(
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="the id the run's shards shared (--run-id, IOTSIM_RUN_ID)")],
    file: Annotated[Optional[Path], typer.Argument(help="scenario file: its load.thresholds replace the recorded ones, its influx: is where to read")] = None,
    output: Annotated[Optional[Path], typer.Option("--out", help="results directory (default: load.results/RUN_ID)")] = None,
    influx: Annotated[Optional[str], typer.Option("--influx", help="InfluxDB URL (default: FILE's influx.url, else http://127.0.0.1:8086)")] = None,
    database: Annotated[Optional[str], typer.Option("--db", help="database (default: FILE's influx.database, else yangquan)")] = None,
) -> None:
    """Merge what the shards of a run (`iotsim load FILE --shard INDEX/COUNT`) wrote to InfluxDB into a results directory."""
    from simulator.influx import InfluxClient, InfluxCredentials
    from simulator.load.records import check_run_id
    from simulator.load.report import merge_run
    from simulator.load.results import write_results
    from simulator.load.runner import LoadError
    from simulator.load.section import LoadSection

    run_id = check_run_id(run_id, "RUN_ID")
    settings, thresholds = report_sources(file, influx, database)
    client = InfluxClient(settings.url, settings.database, InfluxCredentials.from_environment(settings))
    try:
        merged = merge_run(client, run_id, thresholds, say=lambda line: err.print(line, markup=False))
    except DatabaseError as error:  # unreachable, refused: the report could not be made
        raise LoadError(str(error)) from None
    finally:
        client.close()
    load_ = LoadSection.model_validate(merged.summary["inputs"]["load"])
    folder = writable_folder(output or Path(load_.results) / run_id)
    write_results(folder, merged.summary, merged.rows)
    print_summary(merged.summary, merged.verdicts, folder)
    if merged.missing:
        count = merged.summary["shards"]["count"]
        stop(f"run {run_id}: {len(merged.missing)} of {count} shards missing: {', '.join(merged.missing)}; these results are partial (summary.json: shards.complete false)")
    if not merged.summary["passed"]:
        raise typer.Exit(1)


def report_sources(file: Path | None, influx: str | None, database: str | None) -> tuple[InfluxSettings, LoadSection | None]:
    """Where the report reads (flags, else FILE's influx:, else the defaults) and FILE's load: section."""
    from simulator.load.runner import LoadError
    from simulator.scenario import InfluxSettings

    if file is None:
        try:
            return InfluxSettings(**{k: v for k, v in {"url": influx, "database": database}.items() if v is not None}), None
        except ValidationError as error:
            raise UsageError("; ".join(f"{ {'url': '--influx', 'database': '--db'}.get(str(e['loc'][-1]), e['loc'][-1])}: {e['msg'].removeprefix('Value error, ')}" for e in error.errors())) from None
    scenario = scenario_with(file, {"influx.url": influx, "influx.database": database})
    if scenario.load is None:
        raise LoadError(f"{file}: scenario {scenario.name!r} has no load: section; see docs/load.md")
    return scenario.influx, scenario.load


class LoadCommand(TyperCommand):
    """`iotsim load FILE ...`, with one subcommand: a first argument `report` is `iotsim load report
    RUN_ID ...` (a scenario file named report is ./report). A group would read FILE as a command name."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any) -> click.Context:
        if args and args[0] == "report":
            return report_command().make_context(f"{info_name} report", args[1:], parent=parent, **extra)
        return super().make_context(info_name, args, parent, **extra)


def report_command() -> click.Command:
    reports = typer.Typer(add_completion=False)
    reports.command("report")(report)
    command = typer.main.get_command(reports)
    return command
