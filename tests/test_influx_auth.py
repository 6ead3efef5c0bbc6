"""An InfluxDB with authentication on (issue 14): `iotsim run`'s counters, `iotsim counts`, `iotsim
bridge` and `iotsim load` work with credentials (environment or flags, a flag winning over its
variable) and stop with one clear line without them, naming the user but never the password. A
bridge turned away acknowledges nothing: the next one with the right credentials stores it all."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import IOTSIM, Pipeline, child_env
from publishing import message, publish, topic
from simulator import stack
from simulator.influx import InfluxClient, InfluxCredentials

ADMIN, PASSWORD = "admin", "s3cret-Admin-pw"
WRONG = "not-the-Password-42"
_names = itertools.count(1)

STATIONS = """
name: auth
seed: 3
duration: 1h
fleets:
  - type: air_quality
    count: 5
    cadence: 5m
"""

LOAD = """
name: auth-load
seed: 12
duration: 1m
fleets:
  - {type: load_probe, count: 6, batch: 2}
load:
  profile: {kind: constant, target: 60, duration: 3s}
  qos: 1
  drain: 20s
  thresholds: [loss == 0, written == generated]
"""


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack.Service]:
    service = stack.start_influxdb(tmp_path_factory.mktemp("influx-auth"), stack.free_port(), database=None, admin=(ADMIN, PASSWORD))
    yield service
    service.stop()


@pytest.fixture
def guarded(broker: stack.Service, secured: stack.Service, tmp_path: Path) -> Pipeline:
    """A test's names on the shared broker and the InfluxDB with authentication on."""
    n = next(_names)
    database = f"auth{n}"
    stack.create_database(secured.url, database, InfluxCredentials(ADMIN, PASSWORD))
    return Pipeline(broker, secured, database, f"auth{n}", f"bridge-auth{n}-{os.getpid()}", tmp_path)


def as_admin(pipeline: Pipeline) -> InfluxClient:
    return InfluxClient(pipeline.influx_url, pipeline.database, InfluxCredentials(ADMIN, PASSWORD))


def count(pipeline: Pipeline, measurement: str, field: str = "seq", where: str = "") -> int:
    series = as_admin(pipeline).query(f'SELECT count("{field}") FROM "{measurement}"{where}')
    return series[0]["values"][0][1] if series else 0


def env(user: str | None = None, password: str | None = None) -> dict[str, str]:
    """The child's environment with exactly these InfluxDB credentials (none: no INFLUX_* at all)."""
    chosen = {key: value for key, value in child_env().items() if not key.startswith("INFLUX_")}
    return chosen | ({"INFLUX_USER": user} if user else {}) | ({"INFLUX_PASSWORD": password} if password else {})


def iotsim(environment: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*IOTSIM, *args], capture_output=True, text=True, timeout=timeout, env=environment)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip()


def test_the_runs_counters_land_with_credentials_from_the_environment(guarded: Pipeline) -> None:
    run = iotsim(env(ADMIN, PASSWORD), "run", str(guarded.scenario_file(STATIONS)))
    assert run.returncode == 0, run.stderr
    assert "generated 60, published 60, acknowledged 60" in run.stdout  # 5 stations x 12 five-minute readings
    assert "note:" not in run.stderr
    simulator = as_admin(guarded).query('SELECT last("published"), last("acknowledged") FROM "pipeline" WHERE "component" = \'simulator\'')
    assert simulator[0]["values"][0][1:] == [60, 60]


@pytest.mark.parametrize(("user", "password", "who"), [(None, None, "without credentials"), (ADMIN, WRONG, f"as user {ADMIN!r}")])
def test_the_run_without_the_credentials_stops_before_publishing_with_one_line(guarded: Pipeline, user: str | None, password: str | None, who: str) -> None:
    run = iotsim(env(user, password), "run", str(guarded.scenario_file(STATIONS)))
    assert run.returncode == 1 and run.stdout == "", run.stdout + run.stderr
    line = one_line(run)
    assert line.startswith(f"InfluxDB at {guarded.influx_url} refused writes to database {guarded.database!r} {who} (HTTP 401 "), line
    assert "set INFLUX_USER and INFLUX_PASSWORD, or INFLUX_TOKEN" in line and line.endswith("nothing was published (the run writes its counters there)")
    assert WRONG not in line
    assert count(guarded, "pipeline", "published") == 0


def test_counts_takes_credentials_from_the_environment_or_its_flags(guarded: Pipeline) -> None:
    as_admin(guarded).write([f"air_quality,device_id=aq-{n} seq={n}i {1768341600000 + n}" for n in range(7)])
    by_env = iotsim(env(ADMIN, PASSWORD), "counts", "--influx", guarded.influx_url, "--db", guarded.database)
    assert by_env.returncode == 0, by_env.stderr
    assert [line.split() for line in by_env.stdout.splitlines() if "air_quality" in line] == [["│", "air_quality", "│", "7", "│"]]
    # The flags win over a wrong environment.
    by_flags = iotsim(env(ADMIN, WRONG), "counts", "--influx", guarded.influx_url, "--db", guarded.database, "--user", ADMIN, "--password", PASSWORD)
    assert by_flags.returncode == 0 and by_flags.stdout == by_env.stdout, by_flags.stderr


@pytest.mark.parametrize(
    ("credentials", "who"),
    [([], "without credentials"), (["--user", ADMIN, "--password", WRONG], f"as user {ADMIN!r}"), (["--user", "nobody"], "as user 'nobody'")],
)
def test_counts_without_the_credentials_is_one_line_and_exit_1(guarded: Pipeline, credentials: list[str], who: str) -> None:
    result = iotsim(env(), "counts", "--influx", guarded.influx_url, "--db", guarded.database, *credentials)
    assert result.returncode == 1 and result.stdout == "", result.stdout + result.stderr
    line = one_line(result)
    assert line.startswith(f"InfluxDB at {guarded.influx_url} refused the query 'SELECT count(*) FROM /.*/' {who} (HTTP 401 "), line
    assert WRONG not in line


def bridge(pipeline: Pipeline, environment: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(pipeline.bridge_command(*extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)


def test_the_bridge_stores_with_credentials_and_stops_with_one_line_without_them_acknowledging_nothing(guarded: Pipeline) -> None:
    # With the environment's credentials: every message stored (and its session created at the broker).
    first = bridge(guarded, env(ADMIN, PASSWORD), "--exit-when-idle", "2")
    assert first.stderr is not None and first.stderr.readline().startswith("bridge:")
    publish(guarded, [(topic(guarded), message(seq, {"pm25": 10.0 + seq})) for seq in range(50)])
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert "received 50, written 50, dead letters 0" in out
    assert count(guarded, "air_quality") == 50

    # 30 more wait in the session while bridges without the right credentials are turned away.
    publish(guarded, [(topic(guarded), message(seq, {"pm25": 10.0 + seq})) for seq in range(50, 80)])
    for environment, who in ((env(), "without credentials"), (env(ADMIN, WRONG), f"as user {ADMIN!r}")):
        refused = bridge(guarded, environment, "--exit-when-idle", "2")
        out, err = refused.communicate(timeout=60)
        assert refused.returncode == 1 and out == "", out + err
        assert err.count("\n") == 1 and "Traceback" not in err and WRONG not in err, err
        assert err.startswith(f"InfluxDB at {guarded.influx_url} refused writes to database {guarded.database!r} {who} (HTTP 401 "), err

    # The flags win over a wrong environment; the 30 were never acknowledged, so they come now.
    last = bridge(guarded, env(ADMIN, WRONG), "--exit-when-idle", "2", "--user", ADMIN, "--password", PASSWORD)
    out, err = last.communicate(timeout=60)
    assert last.returncode == 0, err
    assert "received 30, written 30, dead letters 0" in out
    assert count(guarded, "air_quality") == 80
    assert count(guarded, "pipeline", "received", " WHERE \"component\" = 'bridge'") >= 2  # each good bridge's counters landed too


def test_a_user_who_may_not_create_the_database_gets_one_line_saying_so(guarded: Pipeline) -> None:
    admin = as_admin(guarded)
    admin.command("CREATE USER reader WITH PASSWORD 'reader-pw'")
    admin.command(f'GRANT READ ON "{guarded.database}" TO reader')
    missing = bridge(guarded, env("reader", "reader-pw"), "--exit-when-idle", "2", "--db", f"{guarded.database}_new")
    out, err = missing.communicate(timeout=60)
    assert missing.returncode == 1 and out == "", out + err
    assert err.count("\n") == 1 and "reader-pw" not in err, err
    assert err.startswith(f"InfluxDB at {guarded.influx_url} did not create database '{guarded.database}_new' as user 'reader': HTTP 403 "), err
    # Read, but not write: refused at the start too, before anything is taken from the broker.
    readonly = bridge(guarded, env("reader", "reader-pw"), "--exit-when-idle", "2")
    out, err = readonly.communicate(timeout=60)
    assert readonly.returncode == 1 and err.count("\n") == 1, err
    assert err.startswith(f"InfluxDB at {guarded.influx_url} refused writes to database {guarded.database!r} as user 'reader' (HTTP 403 "), err
    admin.command("DROP USER reader")


def test_a_load_experiment_writes_with_credentials_and_stops_at_once_without_them(guarded: Pipeline) -> None:
    scenario = guarded.scenario_file(LOAD)
    refused = iotsim(env(), "load", str(scenario), "--out", str(guarded.tmp / "refused"))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith(f"InfluxDB at {guarded.influx_url} refused writes to database {guarded.database!r} without credentials")
    assert "Traceback" not in refused.stderr
    run = iotsim(env(ADMIN, PASSWORD), "load", str(scenario), "--out", str(guarded.tmp / "out"))
    assert run.returncode == 0, run.stdout + run.stderr
    figures = json.loads((guarded.tmp / "out" / "summary.json").read_text())["figures"]
    assert figures["generated"] > 0 and count(guarded, "load_probe") == figures["written"] == figures["generated"]
    assert count(guarded, "loadtest", "generated", " WHERE \"phase\" = 'summary'") == 1  # the recorder's point, with the same credentials
