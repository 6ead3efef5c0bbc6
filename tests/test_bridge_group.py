"""A bridge group behind a shared subscription: 3 shards of a run, 3 bridges in a group, one Mosquitto
and one InfluxDB. Every point is stored exactly once per identity (device id and seq), every bridge
takes a share, and a member killed with -9 mid-run has its share held by its session at the broker
until it returns with the same client id."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from conftest import IOTSIM, Pipeline, child_env, iotsim
from simulator.engine import run_scenario
from simulator.scenario import load_scenario
from simulator.transport.client_ids import group_bridge_client_id

SCENARIO = """
name: group
seed: 16
start: 2026-01-14T06:00:00+08:00
duration: 2h
speed: afap
fleets:
  - type: air_quality
    count: 30
    cadence: 1m
    faults:
      - {kind: dropout, devices: [aq-0004], at: 30m, duration: 20m}
"""
SHARDS = 3
MEMBERS = 3
# Members that must outlive the gaps between the shards' runs (a run's start: imports, its world) on a
# loaded machine, and then notice they are done.
MEMBER_IDLE = "10"
SUMMARY = re.compile(r"bridge: received (\d+), written (\d+), dead letters 0")
POLL_S = 0.1


def expected_identities(scenario_file: Path) -> Counter[tuple[str, str, int]]:
    """(measurement, device id, seq) of every message the whole run sends, from its dry run."""
    identities: Counter[tuple[str, str, int]] = Counter()

    def note(topic: str, payload: bytes) -> None:
        message = orjson.loads(payload)
        identities[(message["type"], message["device_id"], message["seq"])] += 1

    run_scenario(load_scenario(scenario_file), note)
    return identities


def stored_identities(pipeline: Pipeline) -> Counter[tuple[str, str, int]]:
    stored: Counter[tuple[str, str, int]] = Counter()
    for measurement in ("air_quality", "events"):
        for series in pipeline.query(f'SELECT "seq" FROM "{measurement}" GROUP BY "device_id"'):
            for _, seq in series["values"]:
                stored[(measurement, series["tags"]["device_id"], seq)] += 1
    return stored


def members(pipeline: Pipeline, client_ids: list[str], *extra: str) -> list[subprocess.Popen[str]]:
    """Group members, started together (their idle time counts from the same moment), each with its
    own client id; returned once each has subscribed (its first line)."""
    processes = []
    for client_id in client_ids:
        command = pipeline.bridge_command("--group", "g", *extra)
        command[command.index("--client-id") + 1] = client_id
        processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env()))
    for client_id, process in zip(client_ids, processes):
        assert process.stderr is not None
        first = process.stderr.readline()
        assert first.startswith("bridge:") and f"in group g ($share/g/{pipeline.prefix}/#) as {client_id}" in first, first + process.stderr.read()
    return processes


def received_by(process: subprocess.Popen[str]) -> int:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    summary = SUMMARY.search(out)
    assert summary is not None, out + err
    assert summary[1] == summary[2]  # each member wrote what it received
    return int(summary[1])


def run_shard(scenario_file: Path, index: int, *extra: str) -> subprocess.CompletedProcess[str]:
    done = iotsim("run", str(scenario_file), "--shard", f"{index}/{SHARDS}", *extra)
    assert done.returncode == 0, done.stderr
    return done


def wait_for(condition: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {what}"
        time.sleep(POLL_S)


def test_three_shards_through_a_group_of_three_bridges_store_every_point_once(pipeline: Pipeline) -> None:
    scenario_file = pipeline.scenario_file(SCENARIO)
    expected = expected_identities(scenario_file)
    ids = [f"{pipeline.bridge_id}-m{n}" for n in range(MEMBERS)]
    group = members(pipeline, ids, "--exit-when-idle", MEMBER_IDLE)
    for index in range(SHARDS):
        done = run_shard(scenario_file, index)
        assert f"group (shard {index}/{SHARDS}): generated" in done.stdout, done.stdout
    shares = [received_by(process) for process in group]
    assert sum(shares) == sum(expected.values()) == 3600 - 20 + 2  # 30 stations x 120 minutes, a 20-minute dropout, its 2 events
    assert all(share > 0 for share in shares), shares  # the broker gave every member a share
    assert stored_identities(pipeline) == Counter(dict.fromkeys(expected, 1))
    for client_id in ids:  # each member its own session record, under its own client id
        record = json.loads((pipeline.tmp / "spool" / client_id / "session.json").read_text())
        assert record["topic_filter"] == f"$share/g/{pipeline.prefix}/#"
    # The shards' counters do not overwrite each other: one series per shard.
    tags = pipeline.query("SHOW TAG VALUES FROM \"pipeline\" WITH KEY = \"shard\" WHERE \"component\" = 'simulator'")
    assert sorted(value for _, value in tags[0]["values"]) == [f"{index}/{SHARDS}" for index in range(SHARDS)]


def test_a_member_killed_mid_run_has_its_share_held_until_it_returns(pipeline: Pipeline) -> None:
    scenario_file = pipeline.scenario_file(SCENARIO)
    expected = expected_identities(scenario_file)
    total = sum(expected.values())
    ids = [f"{pipeline.bridge_id}-m{n}" for n in range(MEMBERS)]
    *steady, doomed = members(pipeline, [ids[0], ids[2]], "--exit-when-idle", MEMBER_IDLE) + members(pipeline, [ids[1]])
    try:
        run_shard(scenario_file, 0)
        first_shard = pipeline.count("air_quality")
        # Shard 1 paced (2 h in about 6 s): kill -9 the member while the shard is publishing.
        paced = subprocess.Popen([*IOTSIM, "run", str(scenario_file), "--shard", f"1/{SHARDS}", "--speed", "1200"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
        wait_for(lambda: pipeline.count("air_quality") > first_shard + 100, "shard 1's first points")
        doomed.kill()
        doomed.wait(timeout=30)
        assert paced.poll() is None, "shard 1 ended before the kill: not mid-run"
        out, err = paced.communicate(timeout=120)
        assert paced.returncode == 0, err
        run_shard(scenario_file, 2)
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait(timeout=30)
    shares = [received_by(process) for process in steady]
    assert all(share > 0 for share in shares), shares
    # The remaining members are done and idle; the dead member's session holds its share at the broker.
    held = total - len(stored_identities(pipeline))
    assert held > 0
    (returned,) = members(pipeline, [ids[1]], "--exit-when-idle", "2")  # its share is waiting for it
    assert received_by(returned) >= held  # its queued share, and what it had not acknowledged when killed
    assert stored_identities(pipeline) == Counter(dict.fromkeys(expected, 1))


def test_a_member_without_a_client_id_takes_its_host_name(pipeline: Pipeline) -> None:
    command = [arg for arg in pipeline.bridge_command("--group", "g") if arg != pipeline.bridge_id]
    command.remove("--client-id")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        client_id = group_bridge_client_id(socket.gethostname())
        assert client_id.startswith("bridge-") and f"as {client_id} →" in first, first
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert process.returncode == 0
    assert (pipeline.tmp / "spool" / client_id / "session.json").exists()


def test_a_host_name_becomes_a_valid_client_id() -> None:
    assert group_bridge_client_id("bridge-0") == "bridge-bridge-0"
    assert group_bridge_client_id("node 7/eu") == "bridge-node_7_eu"
    long = [group_bridge_client_id("h" * 80 + suffix) for suffix in "ab"]
    assert long[0] != long[1] and all(len(client_id) == 64 for client_id in long)


@pytest.mark.parametrize("name", ["a/b", "", "+", "#", "$share", ".hidden", "x" * 65])
def test_a_bad_group_name_is_one_line_and_exit_2(tmp_path: Path, name: str) -> None:
    done = iotsim("bridge", "--group", name, "--mqtt", "mqtt://127.0.0.1:1", "--spool-dir", str(tmp_path / "spool"), "--dead-letters", str(tmp_path / "dl.jsonl"))
    assert (done.returncode, done.stderr.splitlines()) == (2, [f"--group: {name!r} is not a group name: letters, digits, '.', '_' and '-', at most 64, not starting with '.' (it is a topic level: no / + # $)"])
    assert not list(tmp_path.iterdir())
