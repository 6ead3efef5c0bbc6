"""The `iotsim` command line: hostile flags are one line and exit 2, errors are mapped by their class,
the bridge's options come from one declaration, and a full spool disk stops the bridge losing nothing."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import simpy
from conftest import IOTSIM, Pipeline, child_env, iotsim
from filesystems import fill, tmpfs

from simulator import stack
from simulator.builder import build_world
from simulator.ingest.settings import BridgeSettings, flag_of
from simulator.load.section import BridgeOptions
from simulator.scenario import load_scenario
from simulator.transport.client_ids import run_client_id
from simulator.units import format_duration

ROOT = Path(__file__).resolve().parent.parent
QUICK = str(ROOT / "scenarios" / "quickstart.yaml")
LOAD = str(ROOT / "scenarios" / "load-ramp.yaml")
DRY = ["--dry-run", "--out", "{tmp}/out.jsonl"]  # a run case that slipped through must not reach for a broker

# (arguments, a fragment of the one line on stderr). {tmp} is the test's directory, {file} a file in it (in both).
HOSTILE = {
    # iotsim run
    "run --out DIR": (["run", QUICK, "--dry-run", "--out", "{tmp}"], "is a directory"),
    "run --out /proc": (["run", QUICK, "--dry-run", "--out", "/proc/x/y.jsonl"], "--out /proc/x/y.jsonl: cannot write there"),
    "run --out ''": (["run", QUICK, "--dry-run", "--out", ""], "--out"),
    "run --mqtt http": (["run", QUICK, *DRY, "--mqtt", "http://x:y"], "--mqtt: 'http://x:y' is not a mqtt://host:port URL"),
    "run --mqtt ''": (["run", QUICK, *DRY, "--mqtt", ""], "--mqtt:"),
    "run --mqtt bad port": (["run", QUICK, *DRY, "--mqtt", "mqtt://127.0.0.1:99999"], "--mqtt:"),
    "run --mqtt port 0": (["run", QUICK, *DRY, "--mqtt", "mqtt://127.0.0.1:0"], "--mqtt:"),
    "run --mqtt no host": (["run", QUICK, *DRY, "--mqtt", "mqtt://:1883"], "--mqtt:"),
    "run --influx ftp": (["run", QUICK, *DRY, "--influx", "ftp://x"], "--influx:"),
    "run --duration ''": (["run", QUICK, *DRY, "--duration", ""], "--duration:"),
    "run --duration -5m": (["run", QUICK, *DRY, "--duration", "-5m"], "--duration:"),
    "run --duration nan": (["run", QUICK, *DRY, "--duration", "nan"], "--duration:"),
    "run --speed nan": (["run", QUICK, *DRY, "--speed", "nan"], "--speed:"),
    "run --speed inf": (["run", QUICK, *DRY, "--speed", "inf"], "--speed:"),
    "run --speed -1": (["run", QUICK, *DRY, "--speed", "-1"], "--speed:"),
    "run --speed word": (["run", QUICK, *DRY, "--speed", "fast"], "--speed:"),
    "run --seed -1": (["run", QUICK, *DRY, "--seed", "-1"], "--seed:"),
    "run --seed huge": (["run", QUICK, *DRY, "--seed", str(10**30)], "--seed:"),
    "run --qos 2": (["run", QUICK, *DRY, "--qos", "2"], "--qos:"),
    "run --start ''": (["run", QUICK, *DRY, "--start", ""], "--start:"),
    "run --start word": (["run", QUICK, *DRY, "--start", "yesterday"], "--start:"),
    "run --mqtt-username ''": (["run", QUICK, *DRY, "--mqtt-username", ""], "--mqtt-username:"),
    "run --ca-file DIR": (["run", QUICK, *DRY, "--ca-file", "{tmp}"], "--ca-file"),
    "run --ca-file missing": (["run", QUICK, *DRY, "--ca-file", "{tmp}/missing.crt"], "--ca-file"),
    "run --drain-timeout nan": (["run", QUICK, *DRY, "--drain-timeout", "nan"], "--drain-timeout"),
    "run --drain-timeout -1": (["run", QUICK, *DRY, "--drain-timeout", "-1"], "--drain-timeout"),
    "run --drain-timeout inf": (["run", QUICK, *DRY, "--drain-timeout", "inf"], "--drain-timeout"),
    "run --state-dir FILE": (["run", QUICK, *DRY, "--state-dir", "{file}"], "--state-dir"),
    "run FILE=DIR": (["run", "{tmp}", *DRY], "{tmp}: a directory, not a regular file"),
    "run FILE=''": (["run", "", *DRY], ".: a directory, not a regular file"),
    # iotsim bridge
    "bridge --mqtt http": (["bridge", "--mqtt", "http://x:y"], "--mqtt: 'http://x:y' is not a mqtt://host:port URL"),
    "bridge --mqtt ''": (["bridge", "--mqtt", ""], "--mqtt:"),
    "bridge --mqtt bad port": (["bridge", "--mqtt", "mqtts://127.0.0.1:-3"], "--mqtt:"),
    "bridge --client-id escape": (["bridge", "--client-id", "../../escape"], "--client-id: '../../escape' is not a client id"),
    "bridge --client-id ''": (["bridge", "--client-id", ""], "--client-id:"),
    "bridge --client-id dot": (["bridge", "--client-id", ".hidden"], "--client-id:"),
    "bridge --client-id space": (["bridge", "--client-id", "a b"], "--client-id:"),
    "bridge --client-id long": (["bridge", "--client-id", "x" * 65], "--client-id:"),
    "bridge --prefix ''": (["bridge", "--prefix", ""], "--prefix:"),
    "bridge --prefix wildcard": (["bridge", "--prefix", "a/#"], "--prefix:"),
    "bridge --batch-size 0": (["bridge", "--batch-size", "0"], "--batch-size:"),
    "bridge --batch-size huge": (["bridge", "--batch-size", str(10**30)], "--batch-size:"),
    "bridge --batch-size word": (["bridge", "--batch-size", "abc"], "--batch-size"),
    "bridge --batch-interval nan": (["bridge", "--batch-interval", "nan"], "--batch-interval:"),
    "bridge --batch-interval inf": (["bridge", "--batch-interval", "inf"], "--batch-interval:"),
    "bridge --batch-interval 0": (["bridge", "--batch-interval", "0"], "--batch-interval:"),
    "bridge --batch-quiet -1": (["bridge", "--batch-quiet", "-1"], "--batch-quiet:"),
    "bridge --max-pending 0": (["bridge", "--max-pending", "0"], "--max-pending:"),
    "bridge --max-pending huge": (["bridge", "--max-pending", str(10**20)], "--max-pending:"),
    "bridge --spool-limit -1": (["bridge", "--spool-limit", "-1"], "--spool-limit:"),
    "bridge --spool-dir ''": (["bridge", "--spool-dir", ""], "--spool-dir:"),
    "bridge --spool-dir FILE": (["bridge", "--spool-dir", "{file}", "--dead-letters", "{tmp}/dl.jsonl"], "--spool-dir {file}: cannot write there (a file, not a directory)"),
    "bridge --dead-letters DIR": (["bridge", "--dead-letters", "{tmp}", "--spool-dir", "{tmp}/spool"], "--dead-letters {tmp}: cannot write there (a directory, not a regular file)"),
    "bridge --dead-letters /proc": (["bridge", "--dead-letters", "/proc/x/dl.jsonl"], "--dead-letters /proc/x/dl.jsonl: cannot write there (No such file or directory)"),
    "bridge --spool-dir /proc": (["bridge", "--spool-dir", "/proc/x/spool", "--dead-letters", "{tmp}/dl.jsonl"], "--spool-dir /proc/x/spool: cannot write there (No such file or directory)"),
    "bridge --exit-when-idle nan": (["bridge", "--exit-when-idle", "nan"], "--exit-when-idle"),
    "bridge --exit-when-idle -1": (["bridge", "--exit-when-idle", "-1"], "--exit-when-idle"),
    "bridge --first-message-timeout alone": (["bridge", "--first-message-timeout", "5"], "--first-message-timeout: goes with --exit-when-idle"),
    "bridge --first-message-timeout nan": (["bridge", "--exit-when-idle", "1", "--first-message-timeout", "nan"], "--first-message-timeout"),
    "bridge --ready-file DIR": (["bridge", "--ready-file", "{tmp}"], "--ready-file"),
    "bridge --ready-file /proc": (["bridge", "--ready-file", "/proc/x/ready"], "--ready-file /proc/x/ready: cannot write there"),
    "bridge --pid-file /proc": (["bridge", "--pid-file", "/proc/x/pid"], "--pid-file /proc/x/pid: cannot write there"),
    "bridge --ca-file missing": (["bridge", "--ca-file", "{tmp}/missing.crt"], "--ca-file"),
    "bridge --username ''": (["bridge", "--username", ""], "--username:"),
    "bridge --declared-types ''": (["bridge", "--declared-types", ""], "--declared-types: give 'shipped', 'none' or a JSON file of field types"),
    "bridge --declared-types missing": (["bridge", "--declared-types", "{tmp}/types.json"], "types.json: cannot read field types (no such file)"),
    "bridge --declared-types DIR": (["bridge", "--declared-types", "{tmp}"], "cannot read field types (a directory, not a regular file)"),
    "bridge --declared-types not JSON": (["bridge", "--declared-types", "{file}"], "a-file: not JSON"),
    # iotsim load
    "load --mqtt http": (["load", LOAD, "--mqtt", "http://x:y"], "--mqtt: 'http://x:y' is not a mqtt://host:port URL"),
    "load --mqtt ''": (["load", LOAD, "--mqtt", ""], "--mqtt:"),
    "load --influx ''": (["load", LOAD, "--influx", ""], "--influx:"),
    "load --workers 0": (["load", LOAD, "--workers", "0"], "--workers"),
    "load --workers huge": (["load", LOAD, "--workers", "1000"], "--workers"),
    "load --qos 3": (["load", LOAD, "--qos", "3"], "--qos"),
    "load --out /proc": (["load", LOAD, "--out", "/proc/x/out"], "--out /proc/x/out: cannot write a results directory there"),
    "load --out FILE": (["load", LOAD, "--out", "{file}"], "--out"),
    "load --ca-file missing": (["load", LOAD, "--ca-file", "{tmp}/missing.crt"], "--ca-file"),
    "load --mqtt-username ''": (["load", LOAD, "--mqtt-username", ""], "--mqtt-username:"),
    "load --bridge-username ''": (["load", LOAD, "--bridge-username", ""], "--bridge-username:"),
    "load FILE=DIR": (["load", "{tmp}"], "{tmp}: a directory, not a regular file"),
    # iotsim validate
    "validate FILE=DIR": (["validate", "{tmp}"], "{tmp}: a directory, not a regular file"),
    "validate FILE=''": (["validate", ""], ".: a directory, not a regular file"),
    "validate FILE missing": (["validate", "{tmp}/missing.yaml"], "no such file"),
    # iotsim stack
    "stack up --state-dir /proc": (["stack", "up", "--state-dir", "/proc/x/state"], "--state-dir /proc/x/state: cannot write there"),
    "stack up --state-dir FILE": (["stack", "up", "--state-dir", "{file}"], "--state-dir"),
    "stack up --mqtt-port 0": (["stack", "up", "--state-dir", "{tmp}/s", "--mqtt-port", "0"], "--mqtt-port"),
    "stack up --mqtt-port huge": (["stack", "up", "--state-dir", "{tmp}/s", "--mqtt-port", "70000"], "--mqtt-port"),
    "stack up --influx-port -1": (["stack", "up", "--state-dir", "{tmp}/s", "--influx-port", "-1"], "--influx-port"),
    "stack up --db ''": (["stack", "up", "--state-dir", "{tmp}/s", "--db", ""], "--db:"),
    "stack up --db injection": (["stack", "up", "--state-dir", "{tmp}/s", "--db", 'x"; DROP DATABASE y'], "--db:"),
    "stack status --state-dir FILE": (["stack", "status", "--state-dir", "{file}"], "--state-dir"),
    "stack down --state-dir FILE": (["stack", "down", "--state-dir", "{file}"], "--state-dir"),
}


@pytest.mark.parametrize(("arguments", "fragment"), HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_value_is_one_line_naming_it_and_exit_2(tmp_path: Path, arguments: list[str], fragment: str) -> None:
    (tmp_path / "a-file").write_text("not a directory\n")
    args = [arg.replace("{tmp}", str(tmp_path)).replace("{file}", str(tmp_path / "a-file")) for arg in [*arguments, fragment]]
    fragment = args.pop()
    done = subprocess.run([*IOTSIM, *args], capture_output=True, text=True, timeout=60, env=child_env(), cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], done.stderr
    assert done.stdout == ""


def test_a_client_id_cannot_put_its_spool_outside_the_spool_dir(tmp_path: Path) -> None:
    spool = tmp_path / "a" / "b" / "spool"
    done = iotsim("bridge", "--client-id", "../../escape", "--spool-dir", str(spool), "--dead-letters", str(tmp_path / "dl.jsonl"))
    assert done.returncode == 2, done.stderr
    assert list(tmp_path.iterdir()) == []  # no spool, no escape, no dead-letter file


def test_bridge_help_shows_the_defaults_the_model_declares() -> None:
    env = child_env() | {"COLUMNS": "400", "TERM": "dumb"}  # one row per option
    done = subprocess.run([*IOTSIM, "bridge", "--help"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    shown = dict(re.findall(r"(--[a-z-]+)\s.*?\[default: ([^\]]+)\]", done.stdout))
    # An option without a default (None: --group) shows none.
    declared = {flag: str(field.default) for name, field in BridgeSettings.model_fields.items() if (flag := flag_of(name, field)) and field.default is not None}
    assert declared and {flag: shown.get(flag) for flag in declared} == declared
    assert "--stats-interval" not in done.stdout  # declared without a flag


def test_the_readme_table_lists_every_bridge_option_with_its_declared_default() -> None:
    readme = (ROOT / "README.md").read_text()
    table = dict(re.findall(r"^\| `(--[a-z-]+)` \| `([^`]*)` \|", readme, re.MULTILINE))
    declared = {flag: str(field.default) for name, field in BridgeSettings.model_fields.items() if (flag := flag_of(name, field))}
    assert {flag: table.get(flag) for flag in declared} == declared


def test_the_load_section_shares_the_declarations_and_docs_show_its_defaults() -> None:
    options, settings = BridgeOptions.model_fields, BridgeSettings.model_fields
    for name in ("batch_size", "batch_interval", "batch_quiet"):
        assert options[name].description == settings[name].description
        assert options[name].metadata == settings[name].metadata  # the same limits and parsing
    assert options["batch_size"].default == settings["batch_size"].default
    assert options["batch_quiet"].default == settings["batch_quiet"].default
    assert options["batch_interval"].default == settings["batch_interval"].default
    defaults = BridgeOptions()
    documented = (
        f"bridge: {{batch_size: {defaults.batch_size}, batch_interval: {format_duration(defaults.batch_interval)}, "
        f"batch_quiet: {format_duration(defaults.batch_quiet)}}}"
    )
    assert documented in (ROOT / "docs" / "load.md").read_text()
    with pytest.raises(ValueError, match="batch_interval"):
        BridgeOptions(batch_interval=float("nan"))


@pytest.mark.parametrize("command", ["run", "bridge"])
def test_an_unreadable_password_file_is_a_usage_error_naming_the_variable_and_file(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "missing.password"
    args = ["run", QUICK] if command == "run" else ["bridge", "--spool-dir", str(tmp_path / "spool"), "--dead-letters", str(tmp_path / "dl.jsonl")]
    env = {name: value for name, value in child_env().items() if name != "MQTT_PASSWORD"} | {"MQTT_PASSWORD_FILE": str(missing)}
    done = subprocess.run([*IOTSIM, *args], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"MQTT_PASSWORD_FILE {missing}: no such file"


def test_an_unreachable_broker_gets_the_hint_to_start_one_not_to_check_the_password(tmp_path: Path) -> None:
    port = stack.free_port()  # nothing listens: "Connection refused" from the socket, not from a broker
    done = iotsim("run", QUICK, "--mqtt", f"mqtt://127.0.0.1:{port}")
    assert done.returncode == 1, done.stderr
    line = done.stderr.strip()
    assert line.startswith(f"cannot reach the MQTT broker at mqtt://127.0.0.1:{port}") and "Connection refused" in line, line
    assert line.endswith("; start one with `iotsim stack up` or pass --mqtt"), line
    assert "check mqtt.username" not in line


STATIONS = """
name: spool-full
seed: 11
duration: 1h
fleets:
  - type: air_quality
    count: 20
    cadence: 5m
"""


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, filled by the test once its folders exist."""
    with tmpfs(tmp_path / "full", "size=64k") as mount_point:
        yield mount_point


def test_a_full_spool_disk_stops_the_bridge_in_one_line_and_the_broker_keeps_the_messages(pipeline: Pipeline, full_disk: Path) -> None:
    spool = full_disk / "spool"
    (spool / pipeline.bridge_id).mkdir(parents=True)  # the directory exists; its files find no room
    fill(full_disk)
    nowhere = f"http://127.0.0.1:{stack.free_port()}"  # InfluxDB down: past --max-pending the bridge spools
    command = [arg if arg != pipeline.influx_url else nowhere for arg in pipeline.bridge_command("--max-pending", "20")]
    command[command.index("--spool-dir") + 1] = str(spool)
    bridge = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    assert bridge.stderr is not None and bridge.stderr.readline().startswith("bridge:")
    run = iotsim("run", str(pipeline.scenario_file(STATIONS)))
    assert run.returncode == 0, run.stderr
    published = int(re.search(r"published (\d+), acknowledged", run.stdout)[1])  # type: ignore[index]
    assert published == 20 * 12
    _, bridge_err = bridge.communicate(timeout=120)
    assert bridge.returncode == 1, bridge_err
    assert "Traceback" not in bridge_err
    last = bridge_err.strip().splitlines()[-1]
    assert last.startswith("bridge: cannot spool ") and f"to {spool / pipeline.bridge_id} (No space left on device)" in last, bridge_err
    assert "the broker keeps them" in last
    assert os.listdir(spool / pipeline.bridge_id) == []  # no partial segment left behind

    # The same session, with room and InfluxDB back: every message comes again and is stored once.
    again = subprocess.run(pipeline.bridge_command("--exit-when-idle", "2"), capture_output=True, text=True, timeout=120, env=child_env())
    assert again.returncode == 0, again.stderr
    assert pipeline.count("air_quality") == published


def test_a_run_whose_scenario_name_is_no_client_id_publishes_under_a_valid_one(pipeline: Pipeline) -> None:
    scenario = pipeline.scenario_file(STATIONS.replace("name: spool-full", "name: 'a run: x.y'"))
    run = iotsim("run", str(scenario))
    assert run.returncode == 0, run.stderr
    tags = pipeline.query('SHOW TAG VALUES FROM "pipeline" WITH KEY = "client_id"')
    (client_id,) = [value for _, value in tags[0]["values"]]
    # The role, the name with " ", ":" and "." made "_", and a hash of the name (two names, two ids).
    assert re.fullmatch(rf"{pipeline.prefix}-run-a_run__x_y-[0-9a-f]{{6}}", client_id), client_id
    assert client_id == run_client_id(pipeline.prefix, "a run: x.y")


def test_devices_lists_every_device_id_the_scenario_builds_one_a_line(tmp_path: Path) -> None:
    path = ROOT / "scenarios" / "port-day.yaml"
    listed = iotsim("devices", str(path))
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    world = build_world(load_scenario(path), simpy.Environment(), lambda topic, payload: None)
    assert listed.stdout.splitlines() == list(world.telemetry.device_ids())
    assert len(listed.stdout.splitlines()) == world.telemetry.device_count() > 100
    missing = iotsim("devices", str(tmp_path / "nope.yaml"))
    assert (missing.returncode, missing.stdout, missing.stderr.count("\n")) == (2, "", 1)
