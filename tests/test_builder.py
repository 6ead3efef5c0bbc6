"""One builder: a load worker builds its shard's world as `iotsim run` builds the whole world, with the
scenario's device faults and pipeline faults (simulator/builder.py)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from conftest import iotsim
from simulator.engine import run_scenario
from simulator.scenario import load_scenario

SCENARIO = """
name: faults in shards
seed: 7
duration: 6m
fleets:
  - {type: load_probe, count: 6, batch: 2}
  - type: air_quality
    count: 3
    cadence: 1m
    faults: [{kind: dropout, devices: [aq-0002], at: 2m, duration: 3m}]
faults:
  - {kind: clock_skew, fleet: aq, offset: 30s}
load:
  profile: {kind: constant, target: 10, duration: 6m}
"""


def by_device(lines: list[bytes]) -> dict[str, list[dict]]:
    streams: dict[str, list[dict]] = defaultdict(list)
    for line in lines:
        message = json.loads(line)
        streams[message["topic"]].append(message["payload"])
    return streams


def test_sharded_load_workers_inject_the_faults_iotsim_run_does(tmp_path: Path) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text(SCENARIO)
    single: list[bytes] = []
    run_scenario(load_scenario(path), lambda topic, payload: single.append(json.dumps({"topic": topic, "payload": json.loads(payload)}).encode()))

    result = iotsim("load", str(path), "--dry-run", "--workers", "2", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    sharded = [line for index in range(2) for line in (tmp_path / "out" / f"messages-w{index}.jsonl").read_bytes().splitlines()]

    assert by_device(sharded) == by_device(single)  # the same messages, faults included, device by device
    streams = by_device(sharded)
    aq = {topic.rsplit("/", 1)[1]: payloads for topic, payloads in streams.items() if "/air_quality/" in topic}
    assert {device: len(payloads) for device, payloads in aq.items()} == {"aq-0001": 6, "aq-0002": 3, "aq-0003": 6}  # 3 min silent
    start_ms = round(load_scenario(path).start.timestamp() * 1000)
    for payloads in aq.values():
        assert 30_000 <= payloads[0]["ts"] - start_ms < 90_000  # skewed 30 s past a phase in the first minute
    skews = [payload for topic, payloads in streams.items() if topic.endswith("/fault_clock_skew/fault-injector") for payload in payloads]
    assert len(skews) == 1  # announced once, by the worker that owns the fault injector's id
