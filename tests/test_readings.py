"""Each device type declares every reading it sends and its kind; the shipped scenarios send exactly
that, and `simulator/schemas/readings.json`, what the bridge reads, is the declarations, current."""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from conftest import iotsim
from full_city import FULL_CITY, scaled_down
from test_dry_run_hashes import unpaced
from simulator import catalogue, telemetry
from simulator.engine import run_scenario
from simulator.ingest import fieldtypes
from simulator.ingest.fieldtypes import read_declared
from simulator.ingest.lineprotocol import field_value
from simulator.telemetry import MAX_READINGS
from simulator.load.probe import MAX_BATCH, MAX_PAYLOAD_BYTES, PADS, SENSORS
from simulator.readings_schema import READINGS_PATH, declared_readings, render
from simulator.scenario import Scenario, load_scenario

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted((REPO / "scenarios").glob("*.yaml"))

Seen = dict[str, dict[str, set[str]]]  # measurement → reading → kinds the bridge would store it as


def readings_seen(scenario: Scenario, seen: Seen) -> None:
    def sink(topic: str, payload: bytes) -> None:
        message = orjson.loads(payload)
        for name, value in message["readings"].items():
            seen[message["type"]][name].add(field_value(name, value)[0])  # the bridge's own kind of the value

    run_scenario(unpaced(scenario), sink)


@pytest.fixture(scope="module")
def shipped_seen() -> Seen:
    seen: Seen = defaultdict(lambda: defaultdict(set))
    for path in SHIPPED:
        span = "2m" if path.name.startswith("load-") else "2h"  # as tests/test_dry_run_hashes.py: ~10^5 load messages a minute
        scenario = load_scenario(path).with_overrides(duration=span)
        readings_seen(scaled_down(scenario) if path.name == FULL_CITY else scenario, seen)  # tests/full_city.py
    return seen


def undeclared_or_mistyped(seen: Seen) -> list[str]:
    declared = declared_readings()
    problems = []
    for measurement, readings in seen.items():
        if measurement == "events":
            continue  # free readings but `text`, checked on their own
        for name, kinds in readings.items():
            if name not in declared[measurement]:
                problems.append(f"{measurement}.{name}: sent ({', '.join(sorted(kinds))}), not declared")
            elif kinds != {declared[measurement][name]}:
                problems.append(f"{measurement}.{name}: declared {declared[measurement][name]}, sent as {', '.join(sorted(kinds))}")
    return problems


def test_the_shipped_scenarios_send_only_declared_readings_of_their_declared_kinds(shipped_seen: Seen) -> None:
    assert set(shipped_seen) == set(catalogue.type_names()) | {"events"}  # every device type ran
    assert not undeclared_or_mistyped(shipped_seen), "\n".join(undeclared_or_mistyped(shipped_seen))
    assert shipped_seen["events"]["text"] == {"string"}
    assert declared_readings()["events"] == {"text": "string"}  # the other event readings depend on the event's kind


def test_every_declared_reading_is_sent_by_a_shipped_scenario_but_the_load_probes_maximum_set(shipped_seen: Seen) -> None:
    """The shipped load experiments use `batch` up to 10 and `payload_bytes` up to 400: the probe's
    s10 .. s59 and pad1 .. pad14 are declared for the largest gateway, which the next test runs."""
    probe_maximum = set(SENSORS[10:]) | set(PADS[1:])
    never_sent = [
        f"{measurement}.{name}"
        for measurement, readings in declared_readings().items()
        for name in readings
        if name not in shipped_seen[measurement] and not (measurement == "load_probe" and name in probe_maximum)
    ]
    assert not never_sent, never_sent
    assert probe_maximum.isdisjoint(shipped_seen["load_probe"])  # else the docstring above is out of date


def test_the_largest_load_probe_gateways_send_exactly_their_declared_maximum() -> None:
    fleets = [
        {"type": "load_probe", "count": 3, "batch": MAX_BATCH},  # every sensor, no padding
        {"type": "load_probe", "count": 3, "id_prefix": "pad", "payload_bytes": MAX_PAYLOAD_BYTES},  # one sensor, every pad
    ]
    seen: Seen = defaultdict(lambda: defaultdict(set))
    readings_seen(Scenario.model_validate({"name": "probe-maximum", "duration": "10s", "fleets": fleets}), seen)
    assert not undeclared_or_mistyped(seen), undeclared_or_mistyped(seen)
    assert {name: kinds for name, kinds in seen["load_probe"].items()} == {name: {kind} for name, kind in declared_readings()["load_probe"].items()}


def test_iotsim_schema_readings_prints_the_committed_file_the_bridge_reads() -> None:
    check = iotsim("schema", "--readings", "--check")
    assert check.returncode == 0, check.stderr
    printed = iotsim("schema", "--readings")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == READINGS_PATH.read_text(encoding="utf-8") == render()
    assert read_declared(READINGS_PATH) == declared_readings()  # valid for the bridge: every kind float, string or boolean
    assert telemetry.KINDS == fieldtypes.KINDS  # the kinds a device declares are the bridge's
    assert list(declared_readings()) == [*catalogue.type_names(), "events"]


def test_a_stale_or_missing_readings_file_is_one_line_naming_it_and_the_command(tmp_path: Path) -> None:
    copy = tmp_path / "readings.json"
    shutil.copy(READINGS_PATH, copy)
    copy.write_text(copy.read_text().replace('"pm25": "float"', '"pm25": "string"'))
    stale = iotsim("schema", "--readings", "--check", "--out", str(copy))
    assert stale.returncode == 1
    assert stale.stderr.strip() == f"{copy}: stale (differs from the device types' declarations); run `iotsim schema --readings --out simulator/schemas/readings.json`"
    missing = iotsim("schema", "--readings", "--check", "--out", str(tmp_path / "none.json"))
    assert missing.returncode == 1 and f"{tmp_path / 'none.json'}: missing" in missing.stderr
    written = iotsim("schema", "--readings", "--out", str(copy))
    assert written.returncode == 0, written.stderr
    assert copy.read_text() == render()


@pytest.mark.parametrize(("batch", "payload_bytes", "valid"), [(49, 15_000, True), (50, 15_000, False), (60, 4_000, True), (60, 5_000, False)])
def test_a_load_probe_fleet_whose_messages_would_pass_the_contracts_readings_limit_is_refused(batch: int, payload_bytes: int, valid: bool) -> None:
    """The bridge dead-letters a message of more than MAX_READINGS readings, so such a fleet would lose every message."""
    fleet = {"type": "load_probe", "count": 2, "batch": batch, "payload_bytes": payload_bytes}
    document = {"name": "probe-limit", "duration": "10s", "fleets": [fleet]}
    if not valid:
        with pytest.raises(ValidationError, match=f"the message contract allows {MAX_READINGS}"):
            Scenario.model_validate(document)
        return
    sizes: list[int] = []
    run_scenario(Scenario.model_validate(document), lambda topic, payload: sizes.append(len(orjson.loads(payload)["readings"])))
    assert sizes and max(sizes) <= MAX_READINGS
