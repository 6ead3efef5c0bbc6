"""`iotsim run --shard INDEX/COUNT`: the shards of a run, together, are exactly the whole run.

For every shipped scenario and COUNT in {2, 3, 7}, the messages of the COUNT shards' dry runs,
sorted, equal the unsharded dry run's, sorted: each message in exactly one shard, events included
(they go with their source). The runs are in-process through the engine, as `iotsim run --dry-run`
does; the CLI is checked once for the flag, the environment and bad specs. What a shard costs: it
registers, and runs, only its own share of every fleet's devices."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import simpy

from conftest import IOTSIM, child_env
from full_city import FULL_CITY, scaled_down
from test_dry_run_hashes import unpaced
from simulator.builder import build_world
from simulator.engine import run_scenario
from simulator.faults import SOURCE as FAULT_SOURCE
from simulator.scenario import Scenario, load_scenario
from simulator.shard import SHARD_ENV, Shard
from simulator.transport.client_ids import MAX_CLIENT_ID, run_client_id

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted(path.name for path in (ROOT / "scenarios").glob("*.yaml"))
COUNTS = (2, 3, 7)
# Simulated spans short enough to run 13 times each (the whole file in about a minute), long enough to
# hold each scenario's first events: device faults at the start (city-incident's after an hour), the
# port gate's first OCR event after 30 minutes (port-day and the whole city; port-peak-week's after 3),
# heating-season's first AQI category change after 132.
SPAN = {"city-heating-season.yaml": "135m", "city-incident.yaml": "65m", "port-day.yaml": "32m", "yangquan-full.yaml": "32m"}
SPAN_DEFAULT = "20m"
SPAN_LOAD = "15s"  # a load profile generates about 500 messages a second
WITH_EVENTS = {"city-day.yaml", "city-heating-season.yaml", "city-incident.yaml", "port-day.yaml", "port-peak-week.yaml", "yangquan.yaml", "yangquan-full.yaml"}

Message = tuple[str, bytes]


def shipped(name: str) -> Scenario:
    """A shipped scenario; the whole city scaled down (tests/full_city.py: a million devices take minutes)."""
    scenario = load_scenario(ROOT / "scenarios" / name)
    return scaled_down(scenario) if name == FULL_CITY else scenario


def messages(name: str, shard: Shard | None = None) -> list[Message]:
    scenario = shipped(name)
    scenario = unpaced(scenario.with_overrides(duration=SPAN_LOAD if scenario.load else SPAN.get(name, SPAN_DEFAULT)))
    out: list[Message] = []
    result = run_scenario(scenario, lambda topic, payload: out.append((topic, payload)), shard=shard)
    assert result.generated == len(out)  # a shard's summary counts its own messages
    return out


def test_every_shipped_scenario_is_covered() -> None:
    assert len(SCENARIOS) == 13 and WITH_EVENTS <= set(SCENARIOS)


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_shards_of_a_dry_run_together_are_exactly_the_whole_run(name: str) -> None:
    whole = messages(name)
    events = [topic for topic, _ in whole if "/events/" in topic]
    assert bool(events) == (name in WITH_EVENTS), events[:3]
    devices = {topic.rpartition("/")[2] for topic, _ in whole if "/events/" not in topic}
    for count in COUNTS:
        shards = [messages(name, Shard(index, count)) for index in range(count)]
        assert sorted(message for shard in shards for message in shard) == sorted(whole), f"{count} shards"
        if len(devices) >= count:
            assert all(shards), f"{count} shards: sizes {[len(shard) for shard in shards]}"
        # Each source (a device, or a model such as port-gate) lies whole in one shard: its seq runs unbroken there.
        owners = [{topic.rpartition("/")[2] for topic, _ in shard} for shard in shards]
        assert sum(map(len, owners)) == len(set().union(*owners))


# What a shard costs: it builds only its own devices of every fleet, about 1/COUNT of each (the ids are
# numbered, so each of 7 shards has the floor or the ceiling of count / 7), except the reefer monitors,
# built whole in every shard (simulator/shard.py: their alarm state travels with the boxes).
BUILT_WHOLE = {"reefer"}


def registered(scenario: Scenario, shard: Shard | None) -> set[str]:
    """The devices a (sharded) world registers, and so runs: each device type's build runs every device it registers
    (its own process, or its fleet's: simulator/cohort.py)."""
    world = build_world(scenario, simpy.Environment(), lambda topic, payload: None, shard=shard)
    return set(world.telemetry.device_ids())


@pytest.mark.parametrize("name", SCENARIOS)
def test_a_shard_builds_only_its_share_of_every_fleet(name: str) -> None:
    scenario = shipped(name)
    assert registered(scenario, None) == {device for fleet in scenario.fleets for device in fleet.device_ids()}
    count = 7  # the messages test above shows COUNT 2 and 3 right too
    shards = [registered(scenario, Shard(index, count)) for index in range(count)]
    for fleet in scenario.fleets:
        ids = set(fleet.device_ids())
        built = [shard & ids for shard in shards]
        if fleet.type in BUILT_WHOLE:
            assert all(mine == ids for mine in built), fleet.prefix
            continue
        assert sum(map(len, built)) == len(ids) and set().union(*built) == ids, fleet.prefix
        assert {len(mine) for mine in built} <= {len(ids) // count, -(-len(ids) // count)}, f"{fleet.prefix}: {[len(mine) for mine in built]}"
        assert all(all(Shard(index, count).owns(device) for device in mine) for index, mine in enumerate(built))


# Pipeline faults sit before the shard's filter: duplicates, garbage and held messages keep their topic,
# so they land in their device's shard; the faults' own events (source fault-injector) in one shard.
# Duplicates and malformed payloads draw from one stream over every message, and a partition's end event
# counts every message it held: with them each shard builds the whole world (and counts its faults);
# with only clock skews it builds its own devices.
# (Process faults need a paced run: test_process_faults_act_in_exactly_one_shard covers who acts.)
FAULTS = """
name: faults
seed: 11
duration: 40m
fleets:
  - type: air_quality
    count: 40
    cadence: 1m
  - type: air_quality
    id_prefix: aqs
    count: 10
    cadence: 1m
faults:
  - {kind: clock_skew, fleet: aqs, offset: -30s}
"""
EVERY_MESSAGE = """
  - {kind: partition, fleet: aq, at: 5m, duration: 8m, buffer_in_memory: 50}
  - {kind: duplicates, rate: 0.05}
  - {kind: malformed, rate: 0.03}
"""


@pytest.mark.parametrize("every", [False, True], ids=["own-devices", "whole-world"])
def test_the_shards_of_a_run_with_pipeline_faults_together_are_exactly_the_whole_run(tmp_path: Path, every: bool) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text(FAULTS + (EVERY_MESSAGE if every else ""))
    scenario = load_scenario(path)

    def run(shard: Shard | None) -> tuple[list[Message], dict[str, dict[str, str]]]:
        out: list[Message] = []
        result = run_scenario(scenario, lambda topic, payload: out.append((topic, payload)), shard=shard)
        return out, {summary.title: summary.figures for summary in result.summaries}

    whole, summaries = run(None)
    assert len(whole) > 50 * 40 and sum("/events/fault_" in topic for topic, _ in whole) == (5 if every else 1)
    assert int(summaries["faults injected"]["held"]) == (8 * 40 if every else 0)
    for count in COUNTS:
        shards = [run(Shard(index, count)) for index in range(count)]
        assert sorted(message for messages, _ in shards for message in messages) == sorted(whole), f"{count} shards"
        whose = "the whole world, generated in every shard" if every else "its devices"
        assert all(f"faults injected (shard {index}/{count}: {whose})" in figures for index, (_, figures) in enumerate(shards))
        if every:  # every shard generates, and counts, the whole world's faults
            assert all(figures[f"faults injected (shard {index}/{count}: {whose})"] == summaries["faults injected"] for index, (_, figures) in enumerate(shards))


def test_process_faults_act_in_exactly_one_shard() -> None:
    for count in COUNTS:
        assert sum(Shard(index, count).owns(FAULT_SOURCE) for index in range(count)) == 1


def test_each_shard_has_its_own_client_id() -> None:
    ids = {run_client_id("iotsim", "city-day", index, 7) for index in range(7)}
    assert len(ids) == 7 and "iotsim-run-city-day-s3of7" in ids
    assert run_client_id("iotsim", "city-day", 0, 1) == "iotsim-run-city-day"  # unsharded: as before
    long = {run_client_id("p" * 40, "x" * 60, index, 12) for index in range(12)}
    assert len(long) == 12 and max(map(len, long)) <= MAX_CLIENT_ID


def dry_run(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [*IOTSIM, "run", str(ROOT / "scenarios" / "quickstart.yaml"), "--dry-run", "--out", str(tmp_path / "out.jsonl"), *args]
    environment = {key: value for key, value in child_env().items() if key != SHARD_ENV} | (env or {})
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=environment)


def lines_of(shard: Shard) -> list[str]:
    return [f'{{"topic":"{topic}","payload":{payload.decode()}}}' for topic, payload in messages("quickstart.yaml", shard)]


def test_the_cli_runs_the_shard_its_flag_or_the_environment_names(tmp_path: Path) -> None:
    expected = {index: lines_of(Shard(index, 3)) for index in range(3)}
    assert [len(lines) for lines in expected.values()] == [64, 68, 68]  # quickstart's 200 messages in 20 minutes
    flag = dry_run(tmp_path, "--shard", "1/3", "--duration", SPAN_DEFAULT)
    assert flag.returncode == 0, flag.stderr
    assert flag.stdout.startswith("dry run (shard 1/3): 68 messages"), flag.stdout
    assert sorted((tmp_path / "out.jsonl").read_text().splitlines()) == sorted(expected[1])
    by_env = dry_run(tmp_path, "--duration", SPAN_DEFAULT, env={SHARD_ENV: "2/3"})
    assert by_env.returncode == 0 and by_env.stdout.startswith("dry run (shard 2/3): 68 messages"), by_env.stdout + by_env.stderr
    assert sorted((tmp_path / "out.jsonl").read_text().splitlines()) == sorted(expected[2])
    flag_wins = dry_run(tmp_path, "--shard", "0/3", "--duration", SPAN_DEFAULT, env={SHARD_ENV: "a/b"})
    assert flag_wins.returncode == 0 and flag_wins.stdout.startswith("dry run (shard 0/3): 64 messages"), flag_wins.stdout + flag_wins.stderr


BAD = {
    "3/3": "'3/3': INDEX must be below COUNT (0 to 2)",
    "-1/2": "'-1/2' is not INDEX/COUNT (e.g. 0/3: the first of three shards, INDEX from 0)",
    "a/b": "'a/b' is not INDEX/COUNT (e.g. 0/3: the first of three shards, INDEX from 0)",
    "0/0": "'0/0': COUNT must be at least 1",
}


@pytest.mark.parametrize("spec", sorted(BAD))
def test_a_bad_shard_spec_is_one_line_and_exit_2(tmp_path: Path, spec: str) -> None:
    by_flag = dry_run(tmp_path, f"--shard={spec}")
    by_env = dry_run(tmp_path, env={SHARD_ENV: spec})
    assert (by_flag.returncode, by_flag.stderr) == (2, f"--shard: {BAD[spec]}\n")
    assert (by_env.returncode, by_env.stderr) == (2, f"{SHARD_ENV}: {BAD[spec]}\n")
    assert not (tmp_path / "out.jsonl").exists() and not os.listdir(tmp_path)
