"""Sharded workers: the union of their streams is exactly the single-process stream (dry run)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from conftest import iotsim

SCENARIO = """
name: shards
seed: 99
duration: 30m
fleets:
  - {type: load_probe, count: 23, batch: 5, payload_bytes: 200}
  - {type: air_quality, count: 7, cadence: 1m}
load:
  profile: {kind: stages, start: 20, stages: [{duration: 10s, target: 400}, {duration: 5s, target: 400}, {duration: 5s, target: 50}]}
"""


def dry_run(tmp_path: Path, scenario: Path, workers: int) -> tuple[list[bytes], dict]:
    out = tmp_path / f"w{workers}"
    result = iotsim("load", str(scenario), "--dry-run", "--workers", str(workers), "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = [line for index in range(workers) for line in (out / f"messages-w{index}.jsonl").read_bytes().splitlines()]
    return lines, json.loads((out / "summary.json").read_text())


def by_device(lines: list[bytes]) -> dict[str, list[bytes]]:
    streams: dict[str, list[bytes]] = defaultdict(list)
    for line in lines:
        streams[json.loads(line)["topic"]].append(line)
    return streams


def test_sharded_workers_union_equals_the_single_process_stream(tmp_path: Path) -> None:
    scenario = tmp_path / "shards.yaml"
    scenario.write_text(SCENARIO)
    single, single_summary = dry_run(tmp_path, scenario, 1)
    sharded, sharded_summary = dry_run(tmp_path, scenario, 3)

    assert sorted(sharded) == sorted(single)  # the same messages, byte for byte
    assert by_device(sharded) == by_device(single)  # and each device's in the same order
    assert len(single) == single_summary["generated"] == sharded_summary["generated"]
    assert sum(worker["generated"] for worker in sharded_summary["per_worker"]) == len(single)
    workers_of = defaultdict(set)
    for index in range(3):
        for line in (tmp_path / "w3" / f"messages-w{index}.jsonl").read_bytes().splitlines():
            workers_of[json.loads(line)["topic"]].add(index)
    assert all(len(owners) == 1 for owners in workers_of.values())  # every device in exactly one worker
    assert len({owner for owners in workers_of.values() for owner in owners}) == 3


def test_the_probes_offer_exactly_the_profile(tmp_path: Path) -> None:
    scenario = tmp_path / "shards.yaml"
    scenario.write_text(SCENARIO)
    lines, summary = dry_run(tmp_path, scenario, 2)
    probes = [json.loads(line)["payload"] for line in lines if b"/load/load_probe/" in line]
    # area under the stages: (20+400)/2*10 + 400*5 + (400+50)/2*5 = 2100 + 2000 + 1125
    assert summary["offered"] == 5225
    assert abs(len(probes) - 5225) <= 23  # each gateway rounds its share down or up by at most one message
    seqs = defaultdict(list)
    for payload in probes:
        seqs[payload["device_id"]].append(payload["seq"])
        assert len([name for name in payload["readings"] if name.startswith("s")]) == 5
    assert len(seqs) == 23 and all(values == list(range(len(values))) for values in seqs.values())
    sizes = [len(json.dumps(payload, separators=(",", ":"))) for payload in probes]
    assert all(180 <= size <= 220 for size in sizes)  # payload_bytes: 200, about
