"""The message contract: every message matches the JSON Schema, and a seed fixes the stream."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import orjson
import pytest

from conftest import iotsim
from simulator.engine import run_scenario
from simulator.scenario import Scenario, load_scenario

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "simulator/schemas/telemetry.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def stream(fleets: list[dict], seed: int = 1, duration: str = "6h") -> list[tuple[str, bytes]]:
    scenario = Scenario.model_validate({"name": "contract", "seed": seed, "duration": duration, "fleets": fleets})
    messages: list[tuple[str, bytes]] = []
    run_scenario(scenario, lambda topic, payload: messages.append((topic, payload)))
    return messages


def test_every_message_matches_the_schema_and_topic() -> None:
    messages = stream([{"type": "air_quality", "count": 25}])
    assert len(messages) == 25 * 6 * 12
    for topic, raw in messages:
        payload = orjson.loads(raw)
        VALIDATOR.validate(payload)
        domain = "events" if payload["type"] == "events" else "city"
        assert topic == f"yangquan/{domain}/{payload['type']}/{payload['device_id']}" or payload["type"] == "events"


@pytest.mark.parametrize(
    "change",
    [
        {"ts": 1768320000000.5},
        {"seq": -1},
        {"readings": {}},
        {"readings": {"pm25": [1, 2]}},
        {"tags": {"district": 3}},
        {"extra": True},
    ],
    ids=["float-ts", "negative-seq", "no-readings", "list-reading", "numeric-tag", "unknown-key"],
)
def test_schema_rejects_what_the_contract_forbids(change: dict) -> None:
    _, raw = stream([{"type": "air_quality", "count": 1}], duration="5m")[0]
    payload = orjson.loads(raw) | change
    assert not VALIDATOR.is_valid(payload)


def test_seq_starts_at_zero_and_increases_by_one_per_device() -> None:
    by_device: dict[str, list[int]] = {}
    times: dict[str, list[int]] = {}
    for _, raw in stream([{"type": "air_quality", "count": 10, "cadence": "10m"}]):
        payload = orjson.loads(raw)
        by_device.setdefault(payload["device_id"], []).append(payload["seq"])
        times.setdefault(payload["device_id"], []).append(payload["ts"])
    assert all(seqs == list(range(36)) for seqs in by_device.values())
    assert all(all(b - a == 600_000 for a, b in zip(ts, ts[1:])) for ts in times.values())


def test_same_seed_gives_byte_identical_dry_runs_and_another_seed_differs(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text("name: det\nseed: 42\nduration: 3h\nfleets:\n  - type: air_quality\n    count: 30\n")
    outputs = []
    for name, seed in (("a", "42"), ("b", "42"), ("c", "43")):
        result = iotsim("run", str(scenario), "--dry-run", "--out", str(tmp_path / f"{name}.jsonl"), "--seed", seed)
        assert result.returncode == 0, result.stderr
        outputs.append((tmp_path / f"{name}.jsonl").read_bytes())
    assert outputs[0] == outputs[1]
    assert len(outputs[0].splitlines()) == 30 * 36
    assert outputs[0] != outputs[2]


def test_a_device_stream_does_not_depend_on_the_rest_of_the_fleet() -> None:
    def device(messages: list[tuple[str, bytes]], device_id: str) -> list[bytes]:
        return [raw for topic, raw in messages if topic.endswith("/" + device_id)]

    small = stream([{"type": "air_quality", "count": 3}])
    large = stream([{"type": "air_quality", "count": 40, "districts": ["Chengqu", "Kuangqu", "Jiaoqu", "Pingding", "Yuxian"]}])
    assert device(small, "aq-0002") == device(large, "aq-0002")
    assert device(small, "aq-0002") != device(small, "aq-0003")


@pytest.mark.parametrize(
    "change",
    [
        {"type": "air_quality\n"},
        {"device_id": "aq-0001\n"},
        {"tags": {"district\n": "Chengqu"}},
        {"readings": {"pm25\n": 1.0}},
        {"tags": {"district": "Cheng\nqu"}},
        {"tags": {"district": "Chengqu\n"}},
        {"tags": {"district": "Cheng\u2028qu"}},
        {"tags": {"district": "Cheng\\qu"}},
        {"type": "time"},
        {"tags": {"time": "noon"}},
        {"readings": {"time": 1.0}},
        {"readings": {"_pm25": 1.0}},
        {"tags": {"_field": "x"}},
    ],
    ids=["type-newline", "device-newline", "tag-key-newline", "reading-newline", "tag-value-newline", "tag-value-final-newline",
         "tag-value-line-separator", "tag-value-backslash", "time-type", "time-tag", "time-reading", "underscore-reading", "underscore-tag"],
)  # fmt: skip
def test_schema_patterns_hold_to_the_end_of_the_text_in_pythons_re_too(change: dict) -> None:
    # jsonschema matches `pattern` with Python's re, where `$` also matches before a final newline.
    _, raw = stream([{"type": "air_quality", "count": 1}], duration="5m")[0]
    payload = orjson.loads(raw) | change
    assert not VALIDATOR.is_valid(payload)


def test_every_device_type_of_city_and_port_matches_the_schema() -> None:
    scenario = load_scenario(Path(__file__).resolve().parent.parent / "scenarios/yangquan.yaml").model_copy(update={"duration": 3600.0})
    types: set[str] = set()

    def check(topic: str, raw: bytes) -> None:
        payload = orjson.loads(raw)
        VALIDATOR.validate(payload)
        assert not set(payload["readings"]) & set(payload["tags"])  # a reading may not be named like a tag
        types.add(payload["type"])

    run_scenario(scenario, check)
    assert len(types) >= 10
