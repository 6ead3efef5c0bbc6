"""`iotsim`: validate and run scenarios, run the ingest bridge, manage the local stack."""

from __future__ import annotations

import errno
import functools
import inspect
import json
import math
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Optional, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from typer._click.core import ParameterSource  # typer 0.29 vendors click; no public names for these
from typer._click.exceptions import NoArgsIsHelpError
from typer._click.globals import get_current_context

from simulator import readings_schema, scenario_schema
from simulator.dashboards.cli import dashboards_app
from simulator.errors import BrokerRefused, BrokerUnreachable, DatabaseError, IotsimError, UsageError
from simulator.ingest.settings import FIRST_MESSAGE_TIMEOUT_S, BridgeSettings, flag_of
from simulator.load.cli import LoadCommand
from simulator.load.cli import load as load_command
from simulator.run_workers import MAX_WORKERS, write_summary
from simulator.scenario_schema import SCHEMA_PATH
from simulator.shard import SHARD_ENV, Shard, shard_from_env
from simulator.units import UNTIL_STOPPED, format_duration, format_run_duration
from simulator.userfiles import Refused, check_directory, check_regular

# Here only what every command needs: each `iotsim` process builds all the commands' options (typer),
# whichever it runs. What a command runs with (the scenario and its device types, the engine, paho,
# InfluxDB, the bridge) it imports in its own function (docs/architecture.md, Start-up).
if TYPE_CHECKING:
    from rich.progress import Progress

    from simulator.connections import ConnectionPlan
    from simulator.engine import RunResult, Stop, Wait
    from simulator.influx import InfluxClient
    from simulator.ingest.bridge import Bridge
    from simulator.scenario import Scenario
    from simulator.stack import StackControl
    from simulator.telemetry import Sink
    from simulator.transport.sessions import DeviceSessions
    from simulator.verify import Verification

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

DAY_S = 86400.0
DATABASE_NAME = re.compile(r"[A-Za-z0-9_-]+")  # as scenario.py's influx.database

# What to do next, chosen by the class of the error (never by its text).
HINTS: dict[type[IotsimError], str] = {
    BrokerRefused: "check mqtt.username and MQTT_PASSWORD",
    BrokerUnreachable: "start one with `iotsim stack up` or pass --mqtt",
}


class IotsimApp(typer.Typer):
    """The `iotsim` application. The one place errors end: an IotsimError, or a flag typer could not
    parse, is one line on stderr and its exit code (2 for usage); anything else is a bug and keeps
    its traceback."""

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        try:
            code = super().__call__(*args, standalone_mode=False, **{"prog_name": "iotsim", **kwargs})
        except NoArgsIsHelpError as error:
            error.show()
            sys.exit(error.exit_code)
        except typer.TyperException as error:  # click's usage errors: a missing argument, '--batch-size abc'
            command = getattr(getattr(error, "ctx", None), "command_path", "iotsim")
            say(f"{command}: {' '.join(error.format_message().split())}")
            sys.exit(error.exit_code)
        except typer.Abort:
            sys.exit(130)
        except IotsimError as error:
            say(describe(error))
            sys.exit(error.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


def describe(error: IotsimError) -> str:
    hint = next((text for kind, text in HINTS.items() if isinstance(error, kind)), None)
    return f"{error}; {hint}" if hint else str(error)


def say(line: str) -> None:
    err.print(line, markup=False, highlight=False, soft_wrap=True)


app = IotsimApp(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help=__doc__)
stack_app = typer.Typer(no_args_is_help=True, help="Start, stop and inspect the local Mosquitto + InfluxDB.")
app.add_typer(stack_app, name="stack")
app.add_typer(dashboards_app, name="dashboards")
app.command(name="load", cls=LoadCommand, epilog="iotsim load report RUN_ID [FILE] [--out DIR] [--influx URL] [--db NAME]: merge the shards of a run made with --shard.")(load_command)

def usable_dir(path: Path) -> Path:
    """--state-dir: a FIFO or a dangling link there is one line, not a hang or "File exists" later."""
    try:
        check_directory(path)
    except Refused as refused:
        raise typer.BadParameter(f"{path}: {refused}") from None
    return path


def usable_ca_file(path: Path | None) -> Path | None:
    """--ca-file: ssl would block on a FIFO and read a device without end; refuse either before anything connects."""
    if path is not None:
        try:
            check_regular(path)
        except Refused as refused:
            raise typer.BadParameter(f"{path}: {refused}") from None
    return path


StateDir = Annotated[Path, typer.Option("--state-dir", file_okay=False, callback=usable_dir, help="where the stack keeps data, logs and PID files")]
# InfluxDB credentials of `iotsim bridge` and `iotsim counts`: a flag wins over its environment variable.
InfluxUser = Annotated[Optional[str], typer.Option("--user", envvar="INFLUX_USER", help="InfluxDB user, if authentication is on")]
InfluxPassword = Annotated[Optional[str], typer.Option("--password", envvar="INFLUX_PASSWORD", help="that user's password; prefer the environment: INFLUX_PASSWORD")]
InfluxToken = Annotated[Optional[str], typer.Option("--token", envvar="INFLUX_TOKEN", help="InfluxDB 2.x/3.x token for the v1 API")]
CaFile = Annotated[Optional[Path], typer.Option("--ca-file", exists=True, dir_okay=False, readable=True, callback=usable_ca_file, help="the CA certificate of an mqtts:// broker")]


def fail(message: str, code: int = 1) -> NoReturn:
    say(message)
    raise typer.Exit(code)


def flag_errors(error: ValidationError, flags: dict[str, str]) -> UsageError:
    """A model's validation errors as one line naming the flags that set the fields (`flags`: the
    dotted field → its flag; another field is named `--field`)."""
    def flag(location: tuple[int | str, ...]) -> str:
        return flags.get(".".join(map(str, location)), f"--{location[-1]}")

    return UsageError("; ".join(f"{flag(e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in error.errors()))


def finite(low: float, high: float = math.inf) -> Callable[[float | None], float | None]:
    """A typer callback: a number in [low, high), never NaN or infinite (click's ranges let NaN through)."""

    def check(value: float | None) -> float | None:
        if value is not None and not (low <= value < high and math.isfinite(value)):
            raise typer.BadParameter(f"{value} is not a number from {low:g}" + (f" below {high:g}" if math.isfinite(high) else ""))
        return value

    return check


def writable_file(path: Path, flag: str) -> Path:
    """`path` once its folder exists and may hold a new file (the file itself is not created: a
    ready file must not appear early); else a UsageError naming `flag`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "it is a directory")
        if not os.access(path.parent, os.W_OK):
            raise PermissionError(errno.EACCES, "permission denied")
    except OSError as error:
        raise cannot_write(flag, path, error) from None
    return path


def cannot_write(flag: str, path: Path, error: OSError) -> UsageError:
    return UsageError(f"{flag} {path}: cannot write there ({error.strerror})")


Model = TypeVar("Model", bound=BaseModel)
Command = TypeVar("Command", bound=Callable[..., None])


def options_of(model: type[Model], parameter: str) -> Callable[[Command], Command]:
    """Give a command one option per field of `model` that has a flag (simulator/ingest/settings.py:
    the flag, default and help text come from the field) and call it with the validated model as
    `parameter`. A flag not given is left out, so the model's own default applies (or one it derives
    from other fields: a group member's client id). A value the model refuses is a UsageError naming the flag."""
    flags = {name: flag for name, field in model.model_fields.items() if (flag := flag_of(name, field))}

    def option(name: str) -> inspect.Parameter:
        field = model.model_fields[name]
        annotation = Annotated[field.annotation, typer.Option(flags[name], help=field.description)]  # type: ignore[name-defined]
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=field.default)

    def decorate(command: Command) -> Command:
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != parameter]

        @functools.wraps(command)
        def with_model(**values: Any) -> None:
            chosen = {name: values.pop(name) for name in flags}
            context = get_current_context(silent=True)
            if context is not None:  # the flags not given: the model's defaults
                chosen = {name: value for name, value in chosen.items() if context.get_parameter_source(name) is not ParameterSource.DEFAULT}
            try:
                values[parameter] = model.model_validate(chosen)
            except ValidationError as error:
                raise flag_errors(error, flags) from None
            command(**values)

        with_model.__signature__ = inspect.Signature([*map(option, flags), *own])  # type: ignore[attr-defined]
        return with_model  # type: ignore[return-value]

    return decorate


def terminate_on_sigterm() -> None:
    """SIGTERM (docker stop, kill) ends the command like Ctrl-C: cleanly, with a summary."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def stop_on_signals(stop: Stop) -> None:
    """A live run's end: the first SIGTERM or Ctrl-C asks the run to stop between two events (it then
    drains and exits 0); a second one interrupts at once, like Ctrl-C in a finite run."""

    def request(signum: int, frame: object) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.request()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request)


@app.command()
def validate(file: Annotated[Path, typer.Argument(help="scenario YAML file")]) -> None:
    """Check a scenario file: exit 0, or exit 2 with one `FILE:LINE: field: problem` line per problem."""
    from simulator.scenario import load_scenario

    scenario = load_scenario(file)
    warn_about_backlog(scenario)
    devices = sum(fleet.count for fleet in scenario.fleets)
    out.print(f"{file}: ok ({scenario.name}: {devices} devices, {format_run_duration(scenario.duration)}, speed {scenario.speed})")


@app.command()
def devices(
    file: Annotated[Path, typer.Argument(help="scenario YAML file")],
    acl: Annotated[bool, typer.Option("--acl", help="print instead the ACL lines that let each gateway publish for its devices (append them to brokers/secure/acl)")] = False,
) -> None:
    """Print the ids that log in, one a line, fleet by fleet: each device's id, but a `connection: gateway`
    fleet's gateway ids (its devices publish through them); the users of the secure profile's per-device
    logins (`iotsim devices FILE | DEVICES_FROM=- brokers/secure/make-passwords.sh`, docs/security.md)."""
    from simulator.connections import gateway_acl
    from simulator.scenario import load_scenario

    scenario = load_scenario(file)
    if acl:
        sys.stdout.write("".join(f"{line}\n" for line in gateway_acl(scenario)))
        return
    for fleet in scenario.fleets:
        ids = fleet.gateway_ids() if fleet.connection == "gateway" else fleet.device_ids()
        sys.stdout.write("".join(f"{connection_id}\n" for connection_id in ids))


# The scenario key each `iotsim run` override sets, and its flag (for error messages).
RUN_OVERRIDES = {"duration": "--duration", "speed": "--speed", "seed": "--seed", "start": "--start", "mqtt.url": "--mqtt", "mqtt.qos": "--qos",
                 "mqtt.username": "--mqtt-username", "mqtt.ca_file": "--ca-file", "mqtt.device_passwords": "--device-passwords", "influx.url": "--influx"}  # fmt: skip


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="scenario YAML file")],
    duration: Annotated[Optional[str], typer.Option(help=f"override the scenario's duration, e.g. 10m, 2h, 30d, or {UNTIL_STOPPED} (paced, ends on SIGTERM or Ctrl-C)")] = None,
    speed: Annotated[Optional[str], typer.Option(help="override the speed: 'afap' or N (N x real time)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="override the scenario's seed")] = None,
    start: Annotated[
        Optional[str], typer.Option(help=f"override the start: ISO time, or 'now' (Yangquan time, whole second) for live dashboards; a run {UNTIL_STOPPED} starts now unless given")
    ] = None,
    mqtt: Annotated[Optional[str], typer.Option("--mqtt", help="override the broker URL, mqtt://, tcp:// or mqtts://host:port")] = None,
    qos: Annotated[Optional[int], typer.Option(help="override the QoS (0 or 1)")] = None,
    mqtt_username: Annotated[
        Optional[str],
        typer.Option("--mqtt-username", envvar="MQTT_USERNAME", help="override mqtt.username (secure profile); the password comes from MQTT_PASSWORD or the file MQTT_PASSWORD_FILE names"),
    ] = None,
    ca_file: CaFile = None,
    device_passwords: Annotated[
        Optional[Path],
        typer.Option(
            "--device-passwords",
            envvar="MQTT_DEVICE_PASSWORDS_DIR",
            file_okay=False,
            help="override mqtt.device_passwords (also MQTT_DEVICE_PASSWORDS_DIR): the folder make-passwords.sh wrote; each own connection logs in as its id with FOLDER/passwords/{id}",
        ),
    ] = None,
    influx: Annotated[Optional[str], typer.Option("--influx", help="override where the run's own counters go (`pipeline` measurement)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="write messages to --out instead of publishing")] = False,
    output: Annotated[Optional[Path], typer.Option("--out", dir_okay=False, help="dry-run output, JSON lines {topic, payload}")] = None,
    drain_timeout: Annotated[float, typer.Option(callback=finite(0), help="seconds to wait for the last QoS 1 acknowledgements")] = 300.0,
    state_dir: StateDir = Path(".iotsim"),
    shard_spec: Annotated[
        Optional[str],
        typer.Option("--shard", help=f"run shard INDEX/COUNT (INDEX from 0): only its devices' messages and its share of the events; default: {SHARD_ENV}, else all"),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            max=MAX_WORKERS,
            help=f"run as N child processes on this host, `--shard i/N` each, and print their total (1 to {MAX_WORKERS}; 1: this process alone)",
        ),
    ] = 1,
) -> None:
    """Simulate a scenario and publish its telemetry over MQTT (or write it to a file with --dry-run)."""
    from simulator.engine import Stop
    from simulator.scenario import load_scenario
    from simulator.stack import StackControl

    refuse_workers_with_shard(shard_spec)
    shard = shard_from_env(shard_spec)  # InvalidShard: one line naming --shard or IOTSIM_SHARD, exit 2
    scenario = load_scenario(file)
    overrides = {"duration": duration, "speed": _speed(speed), "seed": seed, "start": _start(start), "mqtt.url": mqtt, "mqtt.qos": qos,
                 "mqtt.username": mqtt_username, "mqtt.ca_file": str(ca_file) if ca_file else None,
                 "mqtt.device_passwords": str(device_passwords) if device_passwords else None, "influx.url": influx}  # fmt: skip
    try:
        scenario = scenario.with_overrides(**overrides)
        if scenario.until_stopped and start is None:
            scenario = scenario.with_overrides(start=_start("now"))  # live: a restart resumes from now
    except ValidationError as error:
        raise flag_errors(error, RUN_OVERRIDES) from None
    if scenario.until_stopped and dry_run:
        raise UsageError(f"--dry-run: {file} runs {UNTIL_STOPPED}, a file without end; give --duration D (e.g. 1d)")
    if workers > 1:
        given = {"--duration": duration, "--speed": speed, "--seed": seed, "--mqtt": mqtt, "--qos": qos, "--mqtt-username": mqtt_username, "--ca-file": ca_file,
                 "--device-passwords": device_passwords, "--influx": influx}  # fmt: skip
        if start is not None or scenario.until_stopped:  # 'now' once for every child: the shards of one run share its start
            given["--start"] = scenario.start.isoformat()
        options = [str(item) for flag, value in given.items() if value is not None for item in (flag, value)]
        options += ["--drain-timeout", repr(drain_timeout), "--state-dir", str(state_dir)]
        output = writable_file(output or Path(".iotsim") / f"{file.stem}.jsonl", "--out") if dry_run else None
        run_workers(scenario, file, options, workers, output)
        return
    warn_about_backlog(scenario)
    stop = Stop() if scenario.until_stopped else None
    if stop is not None:
        stop_on_signals(stop)
    else:
        terminate_on_sigterm()
    if dry_run:
        run_dry(scenario, writable_file(output or Path(".iotsim") / f"{file.stem}.jsonl", "--out"), shard)
    else:
        run_published(scenario, drain_timeout, StackControl(state_dir), stop, shard, source=str(file))


def warn_about_backlog(scenario: Scenario) -> None:
    """More messages queued at the broker than it keeps while the bridge is away: say so before running."""
    from simulator.backlog import backlog_warnings

    for line in backlog_warnings(scenario):
        err.print(line, markup=False, highlight=False)


def _start(text: str | None) -> str | None:
    if text == "now":
        from simulator.scenario import YANGQUAN_TZ

        return datetime.now(YANGQUAN_TZ).replace(microsecond=0).isoformat()
    return text


def _speed(text: str | None) -> str | float | None:
    if text is None or text == "afap":
        return text
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"--speed: {text!r} is neither 'afap' nor a number") from None


def refuse_workers_with_shard(shard_spec: str | None) -> None:
    """`--workers` makes the shards itself: a shard given too (flag or environment) is one line."""
    context = get_current_context(silent=True)
    if context is None or context.get_parameter_source("workers") is ParameterSource.DEFAULT:
        return
    if shard_spec is not None:
        raise UsageError("--workers: not with --shard (--workers N runs the shards 0/N to N-1/N itself); give one of them")
    if os.environ.get(SHARD_ENV, "").strip():
        raise UsageError(f"--workers: not with {SHARD_ENV} set (--workers N runs the shards 0/N to N-1/N itself); unset it or drop --workers")


def run_workers(scenario: Scenario, file: Path, options: list[str], count: int, output: Path | None) -> None:
    """`iotsim run --workers N`: N children, `iotsim run FILE --shard i/N` with the same `options` each
    (simulator/run_workers.py), their lines relayed, then one total line and the worst exit code."""
    import tempfile

    from simulator.run_workers import Workers, shard_output

    shards = [Shard(index, count) for index in range(count)]
    if output is None:  # what every child would refuse, said once, here, before any child connects
        from simulator.connections import refuse_split_gateways
        from simulator.transport.mqtt import password_from_environment

        refuse_split_gateways(scenario, count, "--workers")
        password_from_environment()  # UsageError: MQTT_PASSWORD_FILE cannot be read
        counters_client(scenario).close()  # InfluxRefused: credentials to fix, nothing published
    outputs = {shard: shard_output(output, shard) for shard in shards} if output else {}
    commands = []
    for shard in shards:
        extra = ["--dry-run", "--out", str(outputs[shard])] if output else []
        commands.append((shard, [sys.executable, "-m", "simulator.cli", "run", str(file), *options, *extra, "--shard", shard.spec]))
    say(f"{scenario.name}: {count} workers, `iotsim run {file} --shard INDEX/{count}` each")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="iotsim-workers-") as folder:
        children = Workers(Path(folder))
        children.start(commands)
        children.wait(scenario.until_stopped)
        wall_s = time.perf_counter() - started
        summaries = {worker.shard: worker.summary() for worker in children.children}
    print_workers_total(scenario, summaries, count, wall_s, [outputs[shard] for shard in shards] if output else None)
    code = children.exit_code()
    failed = children.failed()
    if failed and not children.signals:  # a child may end 130 on its own (interrupted from outside): it is named too
        worst = failed[0]
        more = f" (and {len(failed) - 1} more failed)" if len(failed) > 1 else ""
        say(f"{scenario.name}: shard {worst.shard.spec} failed with exit code {worst.code}{more}: {worst.last_error or 'no error line'}")
    if code:
        raise typer.Exit(code)


def print_workers_total(scenario: Scenario, summaries: dict[Shard, dict[str, Any] | None], count: int, wall_s: float, outputs: list[Path] | None) -> None:
    """The children's figures summed in one line; a child that gave none is named."""
    given = [summary for summary in summaries.values() if summary is not None]
    missing = [shard.spec for shard, summary in summaries.items() if summary is None]
    if not given:
        return
    generated = sum(summary["generated"] for summary in given)
    rate = f"in {wall_s:.1f} s ({generated / max(wall_s, 1e-9):,.0f} msg/s)"
    if outputs is not None:
        line = f"dry run ({count} workers): {generated} messages {rate} → {', '.join(map(str, outputs))}"
    else:
        published = sum(summary["published"] for summary in given)
        acknowledged = sum(summary["acknowledged"] for summary in given) if scenario.mqtt.qos == 1 else "n/a (QoS 0)"
        line = f"{scenario.name} ({count} workers): generated {generated}, published {published}, acknowledged {acknowledged} {rate} → {given[0]['address']}"
    if missing:
        line += f"; no figures from shard{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
    out.print(line, markup=False, highlight=False)


def shard_label(shard: Shard) -> str:
    """How a run names its shard in its lines: ` (shard 1/3)`, or nothing for a whole run."""
    return f" (shard {shard.spec})" if shard.count > 1 else ""


def run_dry(scenario: Scenario, output: Path, shard: Shard = Shard()) -> None:
    from simulator.transport.jsonl import JsonlWriter

    try:
        writer = JsonlWriter(output)
    except OSError as error:
        raise cannot_write("--out", output, error) from None
    try:
        try:
            result = run_with_progress(scenario, writer, shard=shard)
        finally:
            writer.close()
    except OSError as error:  # the disk filled up, say: what was written stays, and we say where it stopped
        raise IotsimError(f"--out {output}: writing failed after {writer.written} messages ({error.strerror})") from None
    out.print(f"dry run{shard_label(shard)}: {result.generated} messages in {result.wall_s:.2f} s ({result.messages_per_s:,.0f} msg/s) → {output}")
    write_summary({"generated": result.generated, "output": str(output)})
    print_summaries(result)


def run_published(scenario: Scenario, drain_timeout: float, control: StackControl, stop: Stop | None = None, shard: Shard = Shard(), source: str = "FILE") -> None:
    from simulator.connections import connection_plan
    from simulator.transport.client_ids import run_client_id
    from simulator.transport.mqtt import MqttPublisher, password_from_environment
    from simulator.transport.sessions import SessionSink, SessionStats
    from simulator.transport.stats import PublisherStats

    settings = scenario.mqtt
    client_id = run_client_id(settings.client_id_prefix, scenario.name, shard.index, shard.count)  # any scenario name, a valid id with its role
    label = shard_label(shard)
    if settings.ca_file:  # the scenario's own (--ca-file was checked as a flag)
        try:
            check_regular(Path(settings.ca_file))
        except Refused as refused:
            raise UsageError(f"CA file {settings.ca_file} (mqtt.ca_file, --ca-file): cannot read it as a CA certificate ({refused})") from None  # as tls_context says
    publisher = MqttPublisher.from_settings(settings, client_id)  # UsageError: MQTT_PASSWORD_FILE cannot be read
    plan = connection_plan(scenario, shard, password_from_environment(), source)  # UsageError: a gateway fleet in a shard, a device's password missing
    sessions = plan.sessions() if plan else None  # OpenFilesLimit: one line, how many files and how to get them
    if settings.device_passwords and all(fleet.connection == "shared" for fleet in scenario.fleets):
        err.print(f"note: mqtt.device_passwords ({settings.device_passwords}) is not used: no fleet has connection: device or gateway, so every message goes through the run's own connection", markup=False, highlight=False)
    counters = counters_client(scenario)
    publisher.start()  # BrokerUnreachable, BrokerRefused: the app says which and what to do
    sink: Sink = publisher
    wait: Wait = publisher.idle
    if plan and sessions:
        routed = SessionSink(publisher, publisher.idle, sessions, plan.route)
        sink, wait = routed, routed.idle
        sessions.start()
    if stop is not None:  # said once connected, so a mistake above stays the only line
        say(f"{scenario.name}{label}: live from {scenario.start.isoformat()} at {scenario.speed:g} x real time until stopped (SIGTERM or Ctrl-C)")
    stats = PublisherStats(publisher, counters, client_id, warn=err.print, shard=shard.spec if shard.count > 1 else None, sessions=sessions)
    stats.start()
    interrupted = False
    result: RunResult | None = None
    try:
        result = run_with_progress(scenario, sink, control, wait=wait, stop=stop, shard=shard)
        if not publisher.drain(drain_timeout):
            err.print(f"gave up after {drain_timeout:.0f} s waiting for {publisher.pending + publisher.buffered} acknowledgements")
        if sessions and not sessions.run_until(sessions.drained, drain_timeout):
            err.print(f"gave up after {drain_timeout:.0f} s waiting for {sessions.outbox_depth()} acknowledgements on the devices' own connections")
    except KeyboardInterrupt:
        interrupted = True
        restore_stack(control)  # first: what is still unacknowledged may need the broker the outage stopped
        publisher.drain(5.0)
        if sessions:
            sessions.run_until(sessions.drained, 5.0)
    finally:
        restore_stack(control)  # an error during an outage, too
        stats.stop()
        publisher.stop()
        if sessions:
            sessions.close()
    own = sessions.stats if sessions else SessionStats()
    published, acknowledged_count = publisher.published + own.sent, publisher.acknowledged + own.acknowledged
    generated = result.generated if result else published
    acknowledged = acknowledged_count if settings.qos == 1 else "n/a (QoS 0)"
    out.print(
        f"{scenario.name}{label}: generated {generated}, published {published}, acknowledged {acknowledged}"
        + (f" in {result.wall_s:.1f} s ({result.messages_per_s:,.0f} msg/s)" if result else "")
        + f" → {publisher.address}"
    )
    write_summary({"generated": generated, "published": published, "acknowledged": acknowledged_count, "address": str(publisher.address), "interrupted": interrupted})
    if plan and sessions:
        out.print(describe_sessions(plan, sessions), markup=False, highlight=False)
    for outage in publisher.outages:
        out.print(outage.describe(), markup=False, highlight=False)
    if result:
        print_summaries(result)
        if scenario.until_stopped:  # another live run from this start sends the same messages, as far as it goes
            say(f"{scenario.name}{label}: stopped after {format_duration(result.simulated_s)} simulated, live from --start {scenario.start.isoformat()}")
    if interrupted:
        raise typer.Exit(130)
    if settings.qos == 1 and (acknowledged_count < published or own.overflowed or own.stranded):
        raise typer.Exit(1)


def restore_stack(control: StackControl) -> None:
    """What a fault injection left stopped when the run ended before the fault did, started again and said."""
    for line in control.restore():
        err.print(line, markup=False, highlight=False)


def describe_sessions(plan: ConnectionPlan, sessions: DeviceSessions) -> str:
    """The run's own connections in one line: how many, connects, reconnects, connect latency, anything dropped."""
    stats = sessions.stats
    latency = stats.latency_ms
    line = (
        f"device connections: {plan.describe()}, connects {stats.connects}, reconnects {stats.reconnects}, "
        f"failed attempts {stats.connect_failures}, CONNECT→CONNACK p50 {latency.get_value_at_percentile(50)} ms, p99 {latency.get_value_at_percentile(99)} ms"
    )
    if stats.overflowed:
        line += f"; {stats.overflowed} messages dropped from full outboxes"
    if stats.abandoned:
        line += f"; {stats.abandoned} messages never sent: their devices were dead at the end (battery, dropout)"
    if stats.refused:
        line += f"; {stats.refused} messages refused by the broker (not authorized: its ACL, docs/security.md)"
    if stats.stranded:
        line += f"; {stats.stranded} messages never sent: their devices were not connected at the end"
    if refused := sessions.refused():
        device_id, reason = refused[0]
        line += f"; logins refused by the broker: {len(refused)} ({device_id}: {reason}; check mqtt.device_passwords and the broker's password_file)"
    return line


def counters_client(scenario: Scenario) -> InfluxClient:
    """Where the run's `pipeline` counters go. Refused credentials stop the run before it publishes
    (they are a mistake to fix); an InfluxDB away is noted once by the counters, and the run goes on."""
    from simulator.influx import InfluxClient, InfluxCredentials, InfluxRefused

    client = InfluxClient(scenario.influx.url, scenario.influx.database, InfluxCredentials.from_environment(scenario.influx))
    try:
        client.check_access(timeout=2.0)
    except InfluxRefused as error:
        client.close()
        raise InfluxRefused(f"{error}; nothing was published (the run writes its counters there)", error.reason) from None
    return client


def run_with_progress(
    scenario: Scenario, sink: object, control: StackControl | None = None, wait: Wait = time.sleep, stop: Stop | None = None, shard: Shard | None = None
) -> RunResult:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from simulator.engine import run_scenario

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[simulated]}"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, disable=not err.is_terminal, transient=False) as progress:
        building = BuildBar(progress, scenario.name)
        # Shown from the run's first report, so a long build shows only its own bar.
        task = progress.add_task(scenario.name, total=None if scenario.until_stopped else scenario.duration, simulated="", rate="", visible=False)
        started = [0.0]
        days_logged = [0]

        def update(simulated_s: float, generated: int) -> None:
            now = time.perf_counter()
            if not started[0]:
                started[0] = now
            elapsed = max(now - started[0], 1e-9)
            progress.update(
                task,
                visible=True,
                completed=simulated_s,
                simulated=f"{format_duration(round(simulated_s))} simulated",
                rate=f"{generated / elapsed:,.0f} msg/s",
            )
            if scenario.until_stopped and simulated_s >= (days_logged[0] + 1) * DAY_S:
                days_logged[0] = int(simulated_s // DAY_S)
                say(f"{scenario.name}: day {days_logged[0]} simulated, {generated} messages")  # for logs: a live run has no bar's end

        return run_scenario(scenario, sink, update, control, wait, stop, shard, building)  # type: ignore[arg-type]


# A build shorter than this shows no bar: most worlds are built before a bar could be read.
BUILD_BAR_AFTER_S = 1.0


class BuildBar:
    """How far building the world has got, devices built of the fleets' total, as a bar on the run's
    progress display (a terminal's stderr only), shown once the build has taken BUILD_BAR_AFTER_S."""

    def __init__(self, progress: Progress, name: str, clock: Callable[[], float] = time.perf_counter) -> None:
        self.progress = progress
        self.clock = clock
        self.started = clock()
        self.shown = False
        self.task = progress.add_task(f"{name}: building", total=None, visible=False, simulated="", rate="")

    def __call__(self, built: int, total: int) -> None:
        elapsed = self.clock() - self.started
        self.shown = self.shown or elapsed >= BUILD_BAR_AFTER_S
        rate = f"{built / elapsed:,.0f} devices/s" if elapsed > 0 else ""
        self.progress.update(self.task, visible=self.shown, completed=built, total=total, simulated=f"{built:,}/{total:,} devices", rate=rate)


def print_summaries(result: RunResult) -> None:
    from rich.table import Table

    for summary in result.summaries:
        table = Table(title=summary.title, show_header=False)
        for name, value in summary.figures.items():
            table.add_row(name, value)
        out.print(table)


@app.command()
@options_of(BridgeSettings, "settings")
def bridge(
    settings: BridgeSettings,
    influx: Annotated[str, typer.Option("--influx", help="InfluxDB URL (1.x API or v1 compatibility)")] = "http://127.0.0.1:8086",
    db: Annotated[str, typer.Option("--db", help="InfluxDB database")] = "yangquan",
    exit_when_idle: Annotated[
        Optional[float], typer.Option(callback=finite(0), help="exit after this many seconds without work (messages, spooled points), counted from the last work or a return to a lost broker")
    ] = None,
    first_message_timeout: Annotated[
        Optional[float],
        typer.Option(
            callback=finite(0),
            help=f"only with --exit-when-idle: exit after this many seconds from the start if no work has come (default {FIRST_MESSAGE_TIMEOUT_S:g} s)",
        ),
    ] = None,
    ready_file: Annotated[Optional[Path], typer.Option(dir_okay=False, help="touch this file once subscribed, remove it at start and exit (for scripts and healthchecks)")] = None,
    pid_file: Annotated[Optional[Path], typer.Option(dir_okay=False, help="record PID and command line here (fault injection restarts the bridge from it)")] = None,
    user: InfluxUser = None,
    password: InfluxPassword = None,
    token: InfluxToken = None,
    username: Annotated[Optional[str], typer.Option(envvar="MQTT_USERNAME", help="broker user (secure profile)")] = None,
    mqtt_password: Annotated[
        Optional[str],
        typer.Option("--mqtt-password", envvar="MQTT_PASSWORD", help="broker password; prefer the environment: MQTT_PASSWORD, or MQTT_PASSWORD_FILE naming a file that holds it"),
    ] = None,
    ca_file: CaFile = None,
) -> None:
    """Subscribe to the telemetry at QoS 1 and write it to InfluxDB, acknowledging only what is stored."""
    from simulator.influx import InfluxClient, InfluxCredentials
    from simulator.ingest.bridge import Bridge
    from simulator.transport.mqtt import Credentials, password_from_environment

    mqtt, prefix, dead_letters = settings.mqtt_url, settings.topic_prefix, settings.dead_letter_path
    if first_message_timeout is not None and exit_when_idle is None:  # it bounds only the wait of a bridge that exits when idle
        raise UsageError("--first-message-timeout: goes with --exit-when-idle; without it the bridge runs until stopped")
    if username == "":
        raise UsageError("--username: give a user name, or none for an anonymous broker")
    for path, flag in ((ready_file, "--ready-file"), (pid_file, "--pid-file")):
        if path is not None:
            writable_file(path, flag)
    if ready_file is not None:
        # One left by a bridge that was killed (SIGKILL, a container's hard stop) would say ready
        # before this one has subscribed.
        ready_file.unlink(missing_ok=True)
    writer = InfluxClient(influx, db, InfluxCredentials(user, password, token))  # InvalidInfluxSetting: --influx or --db, exit 2
    # Without --mqtt-password (or MQTT_PASSWORD), the file MQTT_PASSWORD_FILE names (compose's secrets volume).
    broker_password = mqtt_password if mqtt_password is not None else password_from_environment()
    credentials = Credentials(username, broker_password, str(ca_file) if ca_file else None)
    the_bridge = Bridge(settings, writer, log=say, credentials=credentials)  # UsageError: --dead-letters or --spool-dir cannot be written
    terminate_on_sigterm()
    if pid_file is not None:
        record_pid(pid_file)
    try:
        the_bridge.start()  # BrokerUnreachable, BrokerRefused: the app says which and what to do
        if ready_file is not None:
            touch_ready_file(the_bridge, ready_file)
        group = f" in group {settings.group} ({settings.topic_filter}) as {settings.client_id}" if settings.group else ""
        say(f"bridge: {mqtt} {prefix}/#{group} → {influx} database {db}")
        the_bridge.run(exit_when_idle, first_message_timeout if first_message_timeout is not None else FIRST_MESSAGE_TIMEOUT_S)  # BridgeError, InfluxRefused: the messages not stored stay at the broker
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
    if not writer.reached:  # not a clean end: nothing can have been stored
        fail(f"bridge: never reached InfluxDB at {writer.url}; {counts.received - counts.acknowledged} messages left unacknowledged at the broker")


def touch_ready_file(the_bridge: Bridge, path: Path) -> None:
    """Tell scripts the bridge is subscribed. A ready file that cannot be made (no room for it) stops
    the bridge, as nobody would know it runs: what it stored is acknowledged, the rest stays at the broker."""
    try:
        path.touch()
    except OSError as error:
        the_bridge.stop()
        raise cannot_write("--ready-file", path, error) from None


def record_pid(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"pid": os.getpid(), "argv": [sys.executable, "-m", "simulator.cli", *sys.argv[1:]]}))
    except OSError as error:
        raise cannot_write("--pid-file", path, error) from None


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
    user: InfluxUser = None,
    password: InfluxPassword = None,
    token: InfluxToken = None,
) -> None:
    """Print the number of points per measurement stored in InfluxDB."""
    from rich.table import Table

    from simulator.influx import InfluxClient, InfluxCredentials

    client = InfluxClient(influx, db, InfluxCredentials(user, password, token))  # InvalidInfluxSetting: --influx or --db, exit 2
    table = points_per_measurement(client)  # DatabaseError: unreachable, refused, no such database (exit 1)
    view = Table(title=f"points in {client.url} database {db}")
    view.add_column("measurement")
    view.add_column("points", justify="right")
    for measurement, points in table.items():
        view.add_row(measurement, f"{points:,}")
    view.add_row("[bold]total", f"[bold]{sum(table.values()):,}")
    out.print(view)


def points_per_measurement(client: InfluxClient) -> dict[str, int]:
    """Exact point counts: every point has `seq` (device data) or `received` (pipeline), so the
    largest per-field count of a measurement is its number of points."""
    table: dict[str, int] = {}
    for series in client.query("SELECT count(*) FROM /.*/"):
        table[series["name"]] = max(value for value in series["values"][0][1:] if value is not None)
    return dict(sorted(table.items()))


@stack_app.command("up")
def stack_up(
    state_dir: StateDir = Path(".iotsim"),
    mqtt_port: Annotated[int, typer.Option(min=1, max=65535, help="broker port on 127.0.0.1")] = 1883,
    influx_port: Annotated[int, typer.Option(min=1, max=65535, help="InfluxDB port on 127.0.0.1")] = 8086,
    db: Annotated[str, typer.Option("--db", help="database to create (letters, digits, _ and -)")] = "yangquan",
) -> None:
    """Start Mosquitto and InfluxDB (whatever is not already running) on loopback."""
    from simulator import stack

    if not DATABASE_NAME.fullmatch(db):
        raise UsageError(f"--db: {db!r} is not a database name (letters, digits, _ and -)")
    writable_dir(state_dir)
    for line in stack.stack_up(state_dir, mqtt_port, influx_port, db):  # StackError: the app says why
        out.print(line, markup=False, highlight=False)


def writable_dir(state_dir: Path) -> None:
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        probe = state_dir / ".writable"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise UsageError(f"--state-dir {state_dir}: cannot write there ({error.strerror})") from None


@stack_app.command("down")
def stack_down(state_dir: StateDir = Path(".iotsim")) -> None:
    """Stop the servers `stack up` started (by their PID files)."""
    from simulator import stack

    for line in stack.stack_down(state_dir):
        out.print(line, markup=False, highlight=False)


@stack_app.command("status")
def stack_status(state_dir: StateDir = Path(".iotsim")) -> None:
    """Show whether the servers are up; exit 1 if any is down."""
    from simulator import stack

    lines, all_up = stack.stack_status(state_dir)
    for line in lines:
        out.print(line, markup=False, highlight=False)
    if not all_up:
        raise typer.Exit(1)


@app.command()
def schema(
    output: Annotated[Optional[Path], typer.Option("--out", help="write the schema to this file instead of printing it")] = None,
    check: Annotated[
        bool, typer.Option("--check", help=f"write nothing; exit 1 if the file (--out, default {SCHEMA_PATH.name} or {readings_schema.READINGS_PATH.name}) is missing or stale")
    ] = False,
    readings: Annotated[
        bool, typer.Option("--readings", help="the readings every device type sends and their kinds (what the bridge declares), instead of the scenario schema")
    ] = False,
) -> None:
    """Print the JSON Schema of scenario files (editor completion and validation; README, Scenario files), or with
    --readings the declared readings of every device type (simulator/schemas/readings.json, docs/message-contract.md)."""
    generator = readings_schema if readings else scenario_schema
    if check:
        path = output or (readings_schema.READINGS_PATH if readings else SCHEMA_PATH)
        problem = generator.stale(path)
        if problem:
            fail(problem)
        out.print(f"{path}: up to date", markup=False, highlight=False)
    elif output is not None:
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(generator.render(), encoding="utf-8")
        except OSError as error:
            fail(f"--out: cannot write {output} ({error.strerror})", code=2)
        out.print(f"wrote {output}", markup=False, highlight=False)
    else:
        sys.stdout.write(generator.render())


VERIFY_OVERRIDES = {"duration": "--duration", "seed": "--seed", "start": "--start", "influx.url": "--influx", "influx.database": "--db"}


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
    from simulator.influx import InfluxClient, InfluxCredentials
    from simulator.scenario import load_scenario
    from simulator.verify import ExpectedMessages, reject_now, verify

    scenario = load_scenario(file)  # ScenarioError: the app prints its lines, exit 2
    overrides = {"duration": duration, "seed": seed, "start": start, "influx.url": influx, "influx.database": db}
    if scenario.until_stopped and duration is None:
        raise UsageError(f"--duration: {file} runs {UNTIL_STOPPED}; give the --duration and --start the run printed when it stopped")
    try:
        reject_now(start)
        # The same messages at any speed: regenerate as fast as possible.
        scenario = scenario.with_overrides(speed="afap", **overrides)
    except ValidationError as error:
        raise flag_errors(error, VERIFY_OVERRIDES) from None
    expected = ExpectedMessages()
    run_with_progress(scenario, expected)
    try:
        client = InfluxClient(scenario.influx.url, scenario.influx.database, InfluxCredentials.from_environment(scenario.influx))
        report = verify(scenario, expected, client)
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
    from rich.table import Table

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
