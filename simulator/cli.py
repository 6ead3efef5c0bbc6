"""`iotsim`: validate and run scenarios, run the ingest bridge, manage the local stack."""

from __future__ import annotations

import json
import os
from datetime import datetime
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import requests
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from simulator import scenario_schema, stack
from simulator.dashboards.cli import dashboards_app
from simulator.engine import RunResult, Wait, run_scenario
from simulator.faults import StackControl
from simulator.ingest.bridge import Bridge, BridgeSettings
from simulator.ingest.influx import InfluxRefused, InfluxWriter
from simulator.scenario import YANGQUAN_TZ, Scenario, ScenarioError, load_scenario
from simulator.scenario_schema import SCHEMA_PATH
from simulator.transport.jsonl import JsonlWriter
from simulator.errors import BridgeError, BrokerError
from simulator.transport.mqtt import (
    BRIDGE_CLIENT_ID,
    BrokerUnreachable,
    Credentials,
    MqttPublisher,
    bridge_client_id_problem,
    password_from_environment,
    run_client_id,
)
from simulator.transport.stats import PublisherStats
from simulator.units import format_duration
from simulator.backlog import backlog_warnings
from simulator.errors import DatabaseError, UsageError
from simulator.verify import ExpectedMessages, InfluxCredentials, Verification, reject_now, verify
from simulator.load.cli import load as load_command

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help=__doc__)
stack_app = typer.Typer(no_args_is_help=True, help="Start, stop and inspect the local Mosquitto + InfluxDB.")
app.add_typer(stack_app, name="stack")
app.add_typer(dashboards_app, name="dashboards")
app.command(name="load")(load_command)

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

StateDir = Annotated[Path, typer.Option("--state-dir", help="where the stack keeps data, logs and PID files")]


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(message, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def load_or_exit(path: Path) -> Scenario:
    try:
        return load_scenario(path)
    except ScenarioError as error:
        fail(str(error), code=2)


def terminate_on_sigterm() -> None:
    """SIGTERM (docker stop, kill) ends the command like Ctrl-C: cleanly, with a summary."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


@app.command()
def validate(file: Annotated[Path, typer.Argument(help="scenario YAML file")]) -> None:
    """Check a scenario file: exit 0, or exit 2 with one `FILE:LINE: field: problem` line per problem."""
    scenario = load_or_exit(file)
    warn_about_backlog(scenario)
    devices = sum(fleet.count for fleet in scenario.fleets)
    out.print(f"{file}: ok ({scenario.name}: {devices} devices, {format_duration(scenario.duration)}, speed {scenario.speed})")


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="scenario YAML file")],
    duration: Annotated[Optional[str], typer.Option(help="override the scenario's duration, e.g. 10m, 2h, 30d")] = None,
    speed: Annotated[Optional[str], typer.Option(help="override the speed: 'afap' or N (N x real time)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="override the scenario's seed")] = None,
    start: Annotated[Optional[str], typer.Option(help="override the start: ISO time, or 'now' (Yangquan time, whole second) for live dashboards")] = None,
    mqtt: Annotated[Optional[str], typer.Option("--mqtt", help="override the broker URL, mqtt://host:port")] = None,
    qos: Annotated[Optional[int], typer.Option(help="override the QoS (0 or 1)")] = None,
    mqtt_username: Annotated[
        Optional[str],
        typer.Option("--mqtt-username", envvar="MQTT_USERNAME", help="override mqtt.username (secure profile); the password comes from MQTT_PASSWORD or the file MQTT_PASSWORD_FILE names"),
    ] = None,
    ca_file: Annotated[Optional[Path], typer.Option("--ca-file", help="override mqtt.ca_file: the CA certificate of an mqtts:// broker")] = None,
    influx: Annotated[Optional[str], typer.Option("--influx", help="override where the run's own counters go (`pipeline` measurement)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="write messages to --out instead of publishing")] = False,
    output: Annotated[Optional[Path], typer.Option("--out", help="dry-run output, JSON lines {topic, payload}")] = None,
    drain_timeout: Annotated[float, typer.Option(help="seconds to wait for the last QoS 1 acknowledgements")] = 300.0,
    state_dir: StateDir = Path(".iotsim"),
) -> None:
    """Simulate a scenario and publish its telemetry over MQTT (or write it to a file with --dry-run)."""
    scenario = load_or_exit(file)
    try:
        mqtt_overrides = {"mqtt.url": mqtt, "mqtt.qos": qos, "mqtt.username": mqtt_username, "mqtt.ca_file": str(ca_file) if ca_file else None}
        scenario = scenario.with_overrides(duration=duration, speed=_speed(speed), seed=seed, start=_start(start), **mqtt_overrides, **{"influx.url": influx})
    except ValidationError as error:
        fail("; ".join(f"--{'.'.join(map(str, e['loc'])).removeprefix('mqtt.')}: {e['msg']}" for e in error.errors()), code=2)
    warn_about_backlog(scenario)
    terminate_on_sigterm()
    if dry_run:
        run_dry(scenario, output or Path(".iotsim") / f"{file.stem}.jsonl")
    else:
        run_published(scenario, drain_timeout, StackControl(state_dir))


def warn_about_backlog(scenario: Scenario) -> None:
    """More messages queued at the broker than it keeps while the bridge is away: say so before running."""
    for line in backlog_warnings(scenario):
        err.print(line, markup=False, highlight=False)


def _start(text: str | None) -> str | None:
    if text == "now":
        return datetime.now(YANGQUAN_TZ).replace(microsecond=0).isoformat()
    return text


def _speed(text: str | None) -> str | float | None:
    if text is None or text == "afap":
        return text
    try:
        return float(text)
    except ValueError:
        fail(f"--speed: {text!r} is neither 'afap' nor a number", code=2)


def run_dry(scenario: Scenario, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    writer = JsonlWriter(output)
    try:
        result = run_with_progress(scenario, writer)
    finally:
        writer.close()
    out.print(f"dry run: {result.generated} messages in {result.wall_s:.2f} s ({result.messages_per_s:,.0f} msg/s) → {output}")
    print_summaries(result)


def run_published(scenario: Scenario, drain_timeout: float, control: StackControl) -> None:
    settings = scenario.mqtt
    client_id = run_client_id(settings.client_id_prefix, scenario.name)
    try:
        publisher = MqttPublisher.from_settings(settings, client_id)
    except BrokerUnreachable as error:  # MQTT_PASSWORD_FILE names a file that cannot be read
        fail(str(error))
    try:
        publisher.start()
    except BrokerUnreachable as error:
        hint = "check mqtt.username and MQTT_PASSWORD" if "refused" in str(error) else "start one with `iotsim stack up` or pass --mqtt"
        fail(f"{error}; {hint}")
    stats = PublisherStats(publisher, scenario.influx.url, scenario.influx.database, client_id, warn=err.print)
    stats.start()
    interrupted = False
    result: RunResult | None = None
    try:
        result = run_with_progress(scenario, publisher, control, wait=publisher.idle)
        if not publisher.drain(drain_timeout):
            err.print(f"gave up after {drain_timeout:.0f} s waiting for {publisher.pending + publisher.buffered} acknowledgements")
    except KeyboardInterrupt:
        interrupted = True
        publisher.drain(5.0)
    except (stack.StackError, BrokerError) as error:  # BrokerError: another client took our client id
        fail(str(error))
    finally:
        stats.stop()
        publisher.stop()
    generated = result.generated if result else publisher.published
    acknowledged = publisher.acknowledged if settings.qos == 1 else "n/a (QoS 0)"
    out.print(
        f"{scenario.name}: generated {generated}, published {publisher.published}, acknowledged {acknowledged}"
        + (f" in {result.wall_s:.1f} s ({result.messages_per_s:,.0f} msg/s)" if result else "")
        + f" → {publisher.address}"
    )
    for outage in publisher.outages:
        out.print(outage.describe(), markup=False, highlight=False)
    if result:
        print_summaries(result)
    if interrupted:
        raise typer.Exit(130)
    if settings.qos == 1 and publisher.acknowledged < publisher.published:
        raise typer.Exit(1)


def run_with_progress(scenario: Scenario, sink: object, control: StackControl | None = None, wait: Wait = time.sleep) -> RunResult:
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[simulated]}"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, disable=not err.is_terminal, transient=False) as progress:
        task = progress.add_task(scenario.name, total=scenario.duration, simulated="", rate="")
        started = [0.0]

        def update(simulated_s: float, generated: int) -> None:
            now = time.perf_counter()
            if not started[0]:
                started[0] = now
            elapsed = max(now - started[0], 1e-9)
            progress.update(
                task,
                completed=simulated_s,
                simulated=f"{format_duration(round(simulated_s))} simulated",
                rate=f"{generated / elapsed:,.0f} msg/s",
            )

        return run_scenario(scenario, sink, update, control, wait)  # type: ignore[arg-type]


def print_summaries(result: RunResult) -> None:
    for summary in result.summaries:
        table = Table(title=summary.title, show_header=False)
        for name, value in summary.figures.items():
            table.add_row(name, value)
        out.print(table)


@app.command()
def bridge(
    mqtt: Annotated[str, typer.Option("--mqtt", help="broker URL")] = "mqtt://127.0.0.1:1883",
    influx: Annotated[str, typer.Option("--influx", help="InfluxDB URL (1.x API or v1 compatibility)")] = "http://127.0.0.1:8086",
    db: Annotated[str, typer.Option("--db", help="InfluxDB database")] = "yangquan",
    prefix: Annotated[str, typer.Option(help="topic prefix to subscribe under")] = "yangquan",
    client_id: Annotated[str, typer.Option(help="MQTT client id; keep it fixed so the session persists, one per bridge")] = BRIDGE_CLIENT_ID,
    batch_size: Annotated[int, typer.Option(min=1, help="points per InfluxDB write")] = 5000,
    batch_interval: Annotated[float, typer.Option(min=0.01, help="seconds a message may wait for its batch")] = 1.0,
    batch_quiet: Annotated[float, typer.Option(min=0.001, help="write the batch once no message has come for this many seconds")] = 0.05,
    dead_letters: Annotated[Path, typer.Option(help="JSON-lines file for messages that cannot be stored")] = Path(".iotsim/dead-letters.jsonl"),
    max_pending: Annotated[int, typer.Option(min=1, help="messages held unacknowledged in memory (InfluxDB slow or down) before spooling")] = 100_000,
    spool_dir: Annotated[Path, typer.Option(help="disk spool past --max-pending, one subdirectory per client id")] = Path(".iotsim/spool"),
    spool_limit: Annotated[int, typer.Option(min=0, help="points in the spool before the bridge stops reading (the broker holds the rest); 0 = no spool")] = 10_000_000,
    exit_when_idle: Annotated[Optional[float], typer.Option(help="exit after this many seconds without messages")] = None,
    ready_file: Annotated[Optional[Path], typer.Option(help="touch this file once subscribed (for scripts and healthchecks)")] = None,
    pid_file: Annotated[Optional[Path], typer.Option(help="record PID and command line here (fault injection restarts the bridge from it)")] = None,
    user: Annotated[Optional[str], typer.Option(envvar="INFLUX_USER", help="InfluxDB user")] = None,
    password: Annotated[Optional[str], typer.Option(envvar="INFLUX_PASSWORD", help="InfluxDB password")] = None,
    token: Annotated[Optional[str], typer.Option(envvar="INFLUX_TOKEN", help="InfluxDB 2.x/3.x token")] = None,
    username: Annotated[Optional[str], typer.Option(envvar="MQTT_USERNAME", help="broker user (secure profile)")] = None,
    mqtt_password: Annotated[
        Optional[str],
        typer.Option("--mqtt-password", envvar="MQTT_PASSWORD", help="broker password; prefer the environment: MQTT_PASSWORD, or MQTT_PASSWORD_FILE naming a file that holds it"),
    ] = None,
    ca_file: Annotated[Optional[Path], typer.Option(help="CA certificate for an mqtts:// broker")] = None,
) -> None:
    """Subscribe to the telemetry at QoS 1 and write it to InfluxDB, acknowledging only what is stored."""
    if problem := bridge_client_id_problem(client_id):
        fail(f"--client-id: {problem}", code=2)
    settings = BridgeSettings(
        mqtt_url=mqtt,
        topic_prefix=prefix,
        client_id=client_id,
        batch_size=batch_size,
        batch_interval=batch_interval,
        batch_quiet=batch_quiet,
        dead_letter_path=dead_letters,
        max_pending=max_pending,
        spool_dir=spool_dir if spool_limit else None,
        spool_limit=spool_limit,
    )
    writer = InfluxWriter(influx, db, user=user, password=password, token=token)
    try:
        # Without --mqtt-password (or MQTT_PASSWORD), the file MQTT_PASSWORD_FILE names (compose's secrets volume).
        broker_password = mqtt_password if mqtt_password is not None else password_from_environment()
    except BrokerUnreachable as error:
        fail(str(error))
    credentials = Credentials(username, broker_password, str(ca_file) if ca_file else None)
    try:
        the_bridge = Bridge(settings, writer, log=lambda line: err.print(line, markup=False, highlight=False), credentials=credentials)
    except OSError as error:
        fail(f"{error.filename}: cannot write there ({error.strerror}); check --spool-dir and --dead-letters")
    terminate_on_sigterm()
    if pid_file is not None:
        record_pid(pid_file)
    try:
        the_bridge.start()
        if ready_file is not None:
            ready_file.parent.mkdir(parents=True, exist_ok=True)
            ready_file.touch()
        err.print(f"bridge: {mqtt} {prefix}/# → {influx} database {db}", markup=False, highlight=False)
        the_bridge.run(exit_when_idle)
    except BrokerUnreachable as error:
        fail(str(error))
    except (InfluxRefused, BridgeError) as error:  # BridgeError: another client uses our client id
        fail(str(error))
    except KeyboardInterrupt:
        the_bridge.stop()
    finally:
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)
        if pid_file is not None:
            forget_pid(pid_file)
    counts = the_bridge.counts
    out.print(
        f"bridge: received {counts.received}, written {counts.written}, dead letters {counts.dead_letters}"
        + (f" (see {dead_letters})" if counts.dead_letters else "")
        + f", InfluxDB retries {writer.stats.retries}"
        + (f", seq gaps {counts.seq_gaps}" if counts.seq_gaps else "")
        + (f", sessions lost {counts.sessions_lost}" if counts.sessions_lost else "")
    )


def record_pid(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": os.getpid(), "argv": [sys.executable, "-m", "simulator.cli", *sys.argv[1:]]}))


def forget_pid(path: Path) -> None:
    try:
        if json.loads(path.read_text())["pid"] == os.getpid():
            path.unlink()
    except (OSError, ValueError, KeyError):
        pass


@app.command()
def counts(
    influx: Annotated[str, typer.Option("--influx", help="InfluxDB URL")] = "http://127.0.0.1:8086",
    db: Annotated[str, typer.Option("--db", help="InfluxDB database")] = "yangquan",
) -> None:
    """Print the number of points per measurement stored in InfluxDB."""
    try:
        table = points_per_measurement(influx, db)
    except requests.RequestException as error:
        fail(f"cannot query InfluxDB at {influx}: {type(error).__name__}; is the stack up? (iotsim stack status)")
    view = Table(title=f"points in {influx} database {db}")
    view.add_column("measurement")
    view.add_column("points", justify="right")
    for measurement, points in table.items():
        view.add_row(measurement, f"{points:,}")
    view.add_row("[bold]total", f"[bold]{sum(table.values()):,}")
    out.print(view)


def points_per_measurement(influx: str, db: str) -> dict[str, int]:
    """Exact point counts: every point has `seq` (device data) or `received` (pipeline), so the
    largest per-field count of a measurement is its number of points."""
    response = requests.get(f"{influx.rstrip('/')}/query", params={"db": db, "q": "SELECT count(*) FROM /.*/"}, timeout=60)
    response.raise_for_status()
    table: dict[str, int] = {}
    for result in response.json().get("results", []):
        if "error" in result:
            fail(f"InfluxDB: {result['error']}")
        for series in result.get("series", []):
            table[series["name"]] = max(value for value in series["values"][0][1:] if value is not None)
    return dict(sorted(table.items()))


@stack_app.command("up")
def stack_up(
    state_dir: StateDir = Path(".iotsim"),
    mqtt_port: Annotated[int, typer.Option(help="broker port on 127.0.0.1")] = 1883,
    influx_port: Annotated[int, typer.Option(help="InfluxDB port on 127.0.0.1")] = 8086,
    db: Annotated[str, typer.Option("--db", help="database to create")] = "yangquan",
) -> None:
    """Start Mosquitto and InfluxDB (whatever is not already running) on loopback."""
    try:
        for line in stack.stack_up(state_dir, mqtt_port, influx_port, db):
            out.print(line, markup=False, highlight=False)
    except stack.StackError as error:
        fail(str(error))


@stack_app.command("down")
def stack_down(state_dir: StateDir = Path(".iotsim")) -> None:
    """Stop the servers `stack up` started (by their PID files)."""
    for line in stack.stack_down(state_dir):
        out.print(line, markup=False, highlight=False)


@stack_app.command("status")
def stack_status(state_dir: StateDir = Path(".iotsim")) -> None:
    """Show whether the servers are up; exit 1 if any is down."""
    lines, all_up = stack.stack_status(state_dir)
    for line in lines:
        out.print(line, markup=False, highlight=False)
    if not all_up:
        raise typer.Exit(1)


@app.command()
def schema(
    output: Annotated[Optional[Path], typer.Option("--out", help="write the schema to this file instead of printing it")] = None,
    check: Annotated[bool, typer.Option("--check", help=f"write nothing; exit 1 if the file (--out, default {SCHEMA_PATH.name}) is missing or stale")] = False,
) -> None:
    """Print the JSON Schema of scenario files (editor completion and validation; README, Scenario files)."""
    if check:
        path = output or SCHEMA_PATH
        problem = scenario_schema.stale(path)
        if problem:
            fail(problem)
        out.print(f"{path}: up to date", markup=False, highlight=False)
    elif output is not None:
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(scenario_schema.render(), encoding="utf-8")
        except OSError as error:
            fail(f"--out: cannot write {output} ({error.strerror})", code=2)
        out.print(f"wrote {output}", markup=False, highlight=False)
    else:
        sys.stdout.write(scenario_schema.render())


VERIFY_FLAGS = {"duration": "--duration", "seed": "--seed", "start": "--start", "influx.url": "--influx", "influx.database": "--db"}


def verify_flag(location: tuple[int | str, ...]) -> str:
    """The flag that set a scenario field `verify` overrides: ('influx', 'url') -> '--influx'."""
    field = ".".join(map(str, location))
    return VERIFY_FLAGS.get(field, field)


@app.command(name="verify")
def verify_command(
    file: Annotated[Path, typer.Argument(help="scenario YAML file (the one the run used)")],
    influx: Annotated[Optional[str], typer.Option("--influx", help="InfluxDB URL; default: the scenario's influx.url")] = None,
    db: Annotated[Optional[str], typer.Option("--db", help="InfluxDB database; default: the scenario's influx.database")] = None,
    seed: Annotated[Optional[int], typer.Option(help="the seed the run used, if overridden")] = None,
    duration: Annotated[Optional[str], typer.Option(help="the duration the run used, if overridden")] = None,
    start: Annotated[Optional[str], typer.Option(help="the start the run used, if overridden (ISO time)")] = None,
    json_file: Annotated[Optional[Path], typer.Option("--json", help="write the full per-device detail here (docs/faults.md)")] = None,
    show: Annotated[int, typer.Option(min=0, help="list at most this many devices that differ")] = 10,
) -> None:
    """Regenerate the scenario's messages (as a dry run does) and compare them with InfluxDB per device:
    exit 0 when every expected point is stored exactly once, 1 when anything is missing or extra, 2 when it cannot
    verify (bad input, an InfluxDB it cannot query)."""
    scenario = load_or_exit(file)
    overrides = {"duration": duration, "seed": seed, "start": start, "influx.url": influx, "influx.database": db}
    try:
        reject_now(start)
        # The same messages at any speed: regenerate as fast as possible.
        scenario = scenario.with_overrides(speed="afap", **overrides)
    except UsageError as error:
        fail(str(error), code=2)
    except ValidationError as error:
        fail("; ".join(f"{verify_flag(e['loc'])}: {e['msg']}" for e in error.errors()), code=2)
    expected = ExpectedMessages()
    run_with_progress(scenario, expected)
    try:
        report = verify(scenario, expected, scenario.influx.url, scenario.influx.database, InfluxCredentials.from_environment(scenario.influx))
    except DatabaseError as error:
        fail(str(error), code=2)  # could not verify: 1 is kept for "verified and found a difference"
    print_verification(report, show)
    if json_file is not None:
        try:
            json_file.parent.mkdir(parents=True, exist_ok=True)
            json_file.write_text(json.dumps(report.as_json(), indent=1) + "\n")
        except OSError as error:
            fail(f"--json: cannot write {json_file} ({error.strerror})", code=2)
    out.print(report.final_line(), markup=False, highlight=False)
    if not report.exact:
        raise typer.Exit(1)


def print_verification(report: Verification, show: int) -> None:
    view = Table(title=f"{report.scenario}: expected vs stored in {report.influx} database {report.database}")
    rows = report.by_measurement()
    view.add_column("measurement", no_wrap=True, min_width=max(map(len, rows), default=11))
    for column in ("devices", "expected", "stored", "missing", "duplicates", "unexpected"):
        view.add_column(column, justify="right", no_wrap=True, min_width=len(column))
    for measurement, row in rows.items():
        view.add_row(measurement, *(f"{value:,}" for value in row.values()))
    out.print(view, width=max(out.width, 100))  # whole headers also in a pipe (80 columns)
    by_design = {"dead-lettered (malformed)": report.dead_lettered, "delivered twice (one point)": report.repeated, "overwritten (same series and time)": report.overwritten}
    if any(by_design.values()):
        out.print("not expected, by design: " + ", ".join(f"{count} {what}" for what, count in by_design.items() if count), markup=False, highlight=False)
    if report.not_checked:
        out.print("also in the database, not checked: " + ", ".join(f"{name} {points:,} points" for name, points in report.not_checked.items()), markup=False, highlight=False)
    differing = [device for device in report.devices if not device.exact]
    for device in differing[:show]:
        out.print(device.describe(), markup=False, highlight=False)
    if len(differing) > show:
        out.print(f"... and {len(differing) - show} more devices that differ (--show N, or --json FILE for all)", markup=False, highlight=False)


def main() -> None:  # pragma: no cover - `python -m simulator.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
