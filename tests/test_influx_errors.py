"""User mistakes about InfluxDB (issue 20, item 5): a database name InfluxDB cannot take, a URL that
is not one, an InfluxDB that never answers. Each command that takes them says so in one line (exit 2
for usage, before anything is sent or acknowledged); a bridge that never reached InfluxDB says so on
SIGTERM and exits 1. Nothing is lost: a bridge started afterwards with the right settings stores
every message the wrong ones saw."""

from __future__ import annotations

import re
import signal
import subprocess

import pytest

from conftest import Pipeline, QUEUED_IDLE, child_env, iotsim
from publishing import message, publish, topic
from simulator import stack

BAD_DATABASES = [
    ("", "--db: give a database name (InfluxDB refuses an empty one)"),
    ('a"b', "--db: 'a\"b' cannot be a database name (no double quote, backslash or control character)"),
    ("a\\b", "--db: 'a\\\\b' cannot be a database name"),
    ("a\nb", "--db: 'a\\nb' cannot be a database name"),
]
BAD_URLS = [
    ("not a url", "--influx: 'not a url' is not a http://host:port URL (http://, https://)"),
    ("ftp://x", "--influx: 'ftp://x' is not a http://host:port URL"),
    ("http://", "--influx: 'http://' is not a http://host:port URL"),
    ("http://127.0.0.1:99999", "--influx: 'http://127.0.0.1:99999': Port out of range"),
    ("http://admin:pw@127.0.0.1:8086", "--influx: the URL holds credentials; give them as INFLUX_USER and INFLUX_PASSWORD"),
]
BAD_INPUT = [(["--db", db], line) for db, line in BAD_DATABASES] + [(["--influx", url], line) for url, line in BAD_URLS]

STATIONS = """
name: errors
seed: 5
duration: 1h
fleets:
  - type: air_quality
    count: 4
    cadence: 10m
"""

LOAD = """
name: errors-load
duration: 1m
fleets:
  - {type: load_probe, count: 2, batch: 1}
load:
  profile: {kind: constant, target: 10, duration: 2s}
"""


def usage_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip()


def closed_url() -> str:
    return f"http://127.0.0.1:{stack.free_port()}"  # nothing listens there


def messages(pipeline: Pipeline, seqs: range) -> list[tuple[str, dict]]:
    return [(topic(pipeline), message(seq, {"pm25": 20.0 + seq})) for seq in seqs]


def test_bridge_refuses_bad_settings_in_one_line_and_acknowledges_nothing(pipeline: Pipeline) -> None:
    first = pipeline.start_bridge()  # its session at the broker, which then queues for it
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=60)
    publish(pipeline, messages(pipeline, range(25)))
    for args, line in BAD_INPUT:
        result = iotsim(*pipeline.bridge_command(*args)[3:], "--exit-when-idle", "1")
        assert usage_line(result).startswith(line), (args, result.stderr)
        assert result.stdout == ""
    good = pipeline.start_bridge("--exit-when-idle", QUEUED_IDLE)
    out, err = good.communicate(timeout=60)
    assert good.returncode == 0, err
    assert "received 25, written 25, dead letters 0" in out
    assert pipeline.count("air_quality") == 25


@pytest.mark.parametrize(("args", "line"), BAD_INPUT)
def test_counts_refuses_bad_settings_in_one_line(pipeline: Pipeline, args: list[str], line: str) -> None:
    result = iotsim("counts", "--influx", pipeline.influx_url, "--db", pipeline.database, *args)
    assert usage_line(result).startswith(line)
    assert result.stdout == ""


def test_counts_of_an_unreachable_influxdb_is_one_line_and_exit_1() -> None:
    url = closed_url()
    result = iotsim("counts", "--influx", url)
    assert (result.returncode, result.stderr) == (1, f"cannot reach InfluxDB at {url}: ConnectionError; is the stack up? (iotsim stack status)\n")


def test_counts_of_a_missing_database_is_one_line_and_exit_1(pipeline: Pipeline) -> None:
    result = iotsim("counts", "--influx", pipeline.influx_url, "--db", "no_such_db")
    assert (result.returncode, result.stderr) == (1, f"--db: database 'no_such_db' does not exist at {pipeline.influx_url} (SHOW DATABASES lists those that do)\n")


@pytest.mark.parametrize(("args", "line"), [*BAD_INPUT[:2], *BAD_INPUT[4:7]])
def test_verify_refuses_bad_settings_in_one_line(pipeline: Pipeline, args: list[str], line: str) -> None:
    result = iotsim("verify", str(pipeline.scenario_file(STATIONS)), *args)
    assert usage_line(result).startswith(line.split(":")[0] + ":")  # the scenario's own validation: the flag, then its reason


def test_verify_of_an_unreachable_influxdb_is_one_line_and_exit_2(pipeline: Pipeline) -> None:
    url = closed_url()
    result = iotsim("verify", str(pipeline.scenario_file(STATIONS)), "--influx", url)
    assert usage_line(result) == f"cannot reach InfluxDB at {url}: ConnectionError; is the stack up? (iotsim stack status)"


@pytest.mark.parametrize("url", ["not a url", "ftp://x", "http://"])
def test_run_and_load_refuse_a_bad_influx_url_in_one_line(pipeline: Pipeline, url: str) -> None:
    for command, body in (("run", STATIONS), ("load", LOAD)):
        result = iotsim(command, str(pipeline.scenario_file(body)), "--influx", url)
        assert usage_line(result).startswith(f"--influx: {url!r} is not a http://host:port URL"), (command, result.stderr)


@pytest.mark.parametrize("database", ["''", "'a\"b'"])
def test_a_scenario_with_a_bad_database_name_is_refused_by_every_command(pipeline: Pipeline, database: str) -> None:
    path = pipeline.scenario_file(STATIONS)
    path.write_text(path.read_text().replace(f"database: {pipeline.database}", f"database: {database}"))
    for command in ("run", "verify", "load", "validate"):
        line = usage_line(iotsim(command, str(path)))
        assert line.startswith(f"{path}:") and "influx.database" in line, (command, line)


def test_a_run_with_influxdb_away_publishes_everything_and_says_so_once(pipeline: Pipeline) -> None:
    url = closed_url()
    run = iotsim("run", str(pipeline.scenario_file(STATIONS)), "--influx", url)
    assert run.returncode == 0, run.stderr
    assert "generated 24, published 24, acknowledged 24" in run.stdout
    assert run.stderr == f"note: cannot write the simulator's counters to {url} database {pipeline.database} (ConnectionError); the run goes on\n"


def test_a_load_experiment_with_influxdb_away_stops_at_once(pipeline: Pipeline) -> None:
    url = closed_url()
    result = iotsim("load", str(pipeline.scenario_file(LOAD)), "--influx", url, "--out", str(pipeline.tmp / "out"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"cannot reach InfluxDB at {url}; start it with `iotsim stack up` or pass --influx"


def test_a_bridge_that_never_reached_influxdb_says_so_on_sigterm_and_leaves_its_messages_at_the_broker(pipeline: Pipeline) -> None:
    url = closed_url()
    command = pipeline.bridge_command()
    assert command[6] == "--influx"
    away = subprocess.Popen([*command[:7], url, *command[8:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    assert away.stderr is not None
    assert away.stderr.readline() == f"bridge: cannot reach InfluxDB at {url} yet; messages wait at the broker until it answers\n"
    publish(pipeline, messages(pipeline, range(40)))
    lines = []  # its start line, a field-type lookup that failed, then the first failed write
    while len(lines) < 10 and not (lines and "retrying" in lines[-1]):
        lines.append(away.stderr.readline())
    assert "retrying" in lines[-1], lines
    away.send_signal(signal.SIGTERM)
    out, err = away.communicate(timeout=60)
    assert away.returncode == 1, out + err
    received = int(re.search(r"received (\d+), written 0, dead letters 0", out)[1])  # type: ignore[index]
    assert 0 < received <= 40
    assert err.splitlines()[-1] == f"bridge: never reached InfluxDB at {url}; {received} messages left unacknowledged at the broker"
    assert "Traceback" not in err
    good = pipeline.start_bridge("--exit-when-idle", QUEUED_IDLE)
    out, err = good.communicate(timeout=60)
    assert good.returncode == 0, err
    assert "received 40, written 40, dead letters 0" in out
    assert pipeline.count("air_quality") == 40
