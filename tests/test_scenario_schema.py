"""The scenario JSON Schema: generated from the models, committed fresh, accepting every shipped
scenario as an editor reads it, rejecting what `iotsim validate` rejects field by field."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.constructor import SafeConstructor

from conftest import iotsim
from simulator.scenario import ScenarioError, load_scenario
from simulator.scenario_schema import SCHEMA_ID, SCHEMA_PATH, render
from simulator.units import DURATION_PATTERN, SIGNED_DURATION_PATTERN, parse_duration

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted((REPO / "scenarios").glob("*.yaml"))
SCHEMA_LINE = "# yaml-language-server: $schema=../simulator/schemas/scenario.schema.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)

GOOD = """\
name: ok
duration: 1h
fleets:
  - type: air_quality
    count: 3
"""


class EditorConstructor(SafeConstructor):
    """YAML as yaml-language-server reads it (1.2 core schema): a timestamp stays a string."""


EditorConstructor.add_constructor("tag:yaml.org,2002:timestamp", SafeConstructor.construct_yaml_str)


def as_an_editor_reads(text: str) -> Any:
    yaml = YAML(typ="safe", pure=True)
    yaml.Constructor = EditorConstructor
    return yaml.load(text)


def problems(document: Any) -> list[ValidationError]:
    return list(VALIDATOR.iter_errors(document))


def leaves(error: ValidationError) -> Iterator[ValidationError]:
    """The innermost errors: for a union, why each member refused the value."""
    if not error.context:
        yield error
    for inner in error.context:
        yield from leaves(inner)


def properties(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, schema) of every property declared anywhere in the schema."""
    if isinstance(node, dict):
        for name, value in node.get("properties", {}).items():
            yield f"{path}.{name}", value
        for key, value in node.items():
            yield from properties(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from properties(value, f"{path}/{index}")


def test_iotsim_schema_prints_the_committed_file_byte_for_byte() -> None:
    check = iotsim("schema", "--check")
    assert check.returncode == 0, check.stderr  # names the file and the command that regenerates it
    result = iotsim("schema")
    assert result.returncode == 0, result.stderr
    assert result.stdout == SCHEMA_PATH.read_text(encoding="utf-8") == render()


def test_check_exits_1_naming_a_stale_or_missing_file_and_how_to_regenerate(tmp_path: Path) -> None:
    stale = tmp_path / "scenario.schema.json"
    stale.write_text(SCHEMA_PATH.read_text().replace("how many devices of this type", "how many, edited by hand"))
    result = iotsim("schema", "--check", "--out", str(stale))
    assert result.returncode == 1
    assert result.stderr.strip() == f"{stale}: stale (differs from the models in simulator/); run `iotsim schema --out simulator/schemas/scenario.schema.json`"
    missing = iotsim("schema", "--check", "--out", str(tmp_path / "nowhere.json"))
    assert missing.returncode == 1 and missing.stderr.startswith(f"{tmp_path / 'nowhere.json'}: missing; run `iotsim schema --out")


def test_out_writes_the_file_check_then_accepts(tmp_path: Path) -> None:
    target = tmp_path / "schemas" / "scenario.schema.json"
    result = iotsim("schema", "--out", str(target))
    assert result.returncode == 0, result.stderr
    assert target.read_text(encoding="utf-8") == render()
    assert iotsim("schema", "--check", "--out", str(target)).returncode == 0


def test_out_that_cannot_be_written_exits_2_with_one_line(tmp_path: Path) -> None:
    result = iotsim("schema", "--out", str(tmp_path))  # a directory
    assert result.returncode == 2
    assert result.stderr.strip() == f"--out: cannot write {tmp_path} (Is a directory)"


def test_the_schema_is_valid_draft_2020_12_with_id_and_title() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert list(SCHEMA)[:4] == ["$schema", "$id", "title", "description"]
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["$id"] == SCHEMA_ID and SCHEMA["title"] == "Yangquan testbed scenario"
    assert SCHEMA["required"] == ["name", "duration", "fleets"] and SCHEMA["additionalProperties"] is False


def test_every_property_has_a_description() -> None:
    declared = list(properties(SCHEMA))
    assert len(declared) > 300  # every section and device type is in it
    undescribed = [where for where, schema in declared if not schema.get("description")]
    assert undescribed == []


def test_fleet_sections_are_named_by_device_type_and_each_tag_selects_its_own_section() -> None:
    union = SCHEMA["properties"]["fleets"]["items"]
    assert union["discriminator"]["propertyName"] == "type"
    mapping = union["discriminator"]["mapping"]
    assert len(mapping) >= 16 and sorted(ref["$ref"] for ref in union["oneOf"]) == sorted(mapping.values())
    assert not [name for name in SCHEMA["$defs"] if "__" in name]  # not simulator__city__air_quality__Fleet
    assert mapping["air_quality"] == "#/$defs/AirQualityFleet"
    for tag, reference in mapping.items():
        assert SCHEMA["$defs"][reference.removeprefix("#/$defs/")]["properties"]["type"]["const"] == tag


def test_every_file_begins_with_the_line_that_names_the_schema() -> None:
    for path in SHIPPED:
        assert path.read_text(encoding="utf-8").splitlines()[0] == SCHEMA_LINE, path
        assert (path.parent / "../simulator/schemas/scenario.schema.json").resolve() == SCHEMA_PATH


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.name)
def test_every_shipped_scenario_validates_as_written_and_fully_expanded(path: Path) -> None:
    """As an editor reads the file, and with every default written out (every section's defaults
    and the spelling the model writes them in: '5m', ISO times, null)."""
    assert [error.message for error in problems(as_an_editor_reads(path.read_text(encoding="utf-8")))] == []
    expanded = load_scenario(path).model_dump(mode="json")
    assert [error.message for error in problems(expanded)] == []


@pytest.mark.parametrize(
    "text",
    [
        GOOD.replace("1h", "3600"),
        GOOD.replace("1h", "1h 30m"),
        GOOD.replace("1h", "0.5d"),
        GOOD + "speed: 60\nseed: 7\n",
        GOOD + "start: 2026-01-14T06:00:00\n",  # no zone: Yangquan time
        GOOD + "start: '2026-01-14 06:00:00Z'\n",
        GOOD + "load:\n  profile: {kind: ramp, target: 100, duration: 5m, hold: 0}\n",
        GOOD + "    faults: [{kind: dropout, share: 0.1, at: 0s, duration: 10m}]\n",
        GOOD + "faults: [{kind: clock_skew, fleet: aq, offset: -2m}]\nspeed: 10\n",
    ],
    ids=["seconds", "spaced-parts", "fraction", "numeric-speed", "local-start", "utc-start", "zero-hold", "zero-at", "negative-skew"],
)
def test_what_the_model_accepts_the_schema_accepts(tmp_path: Path, text: str) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    load_scenario(path)  # the model takes it
    assert [error.message for error in problems(as_an_editor_reads(text))] == []


@pytest.mark.parametrize(
    ("text", "where", "keyword"),
    [
        (GOOD.replace("duration", "duraton"), [], "additionalProperties"),
        (GOOD + "mqtt:\n  qos: 1\n  hots: x\n", ["mqtt"], "additionalProperties"),
        (GOOD.replace("    count: 3", "    count: 3\n    cadance: 5m"), ["fleets", 0], "additionalProperties"),
        (GOOD.replace("air_quality", "air_qualty"), ["fleets", 0, "type"], "const"),
        (GOOD.replace("1h", "1 fortnight"), ["duration"], "pattern"),
        (GOOD.replace("1h", "-5m"), ["duration"], "pattern"),
        (GOOD.replace("1h", "0s"), ["duration"], "pattern"),
        (GOOD.replace("1h", "0"), ["duration"], "exclusiveMinimum"),
        (GOOD.replace("count: 3", "count: three"), ["fleets", 0, "count"], "type"),
        (GOOD + "speed: warp\n", ["speed"], "const"),
        (GOOD + "start: tomorrow\n", ["start"], "pattern"),
        (GOOD.replace("name: ok\n", ""), [], "required"),
        (GOOD + "load:\n  profile: {kind: zigzag, target: 1}\n", ["load", "profile", "kind"], "const"),
    ],
    ids=[
        "unknown-key", "unknown-nested-key", "unknown-fleet-key", "unknown-type", "bad-duration", "negative-duration",
        "zero-duration", "zero-seconds", "wrong-type", "bad-speed", "bad-start", "no-name", "unknown-profile",
    ],
)
def test_bad_documents_fail_where_iotsim_validate_fails(tmp_path: Path, text: str, where: list[Any], keyword: str) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError):
        load_scenario(path)
    errors = [leaf for error in problems(as_an_editor_reads(text)) for leaf in leaves(error)]
    assert errors, "the schema accepted a document the model rejects"
    assert any(list(error.absolute_path) == where and error.validator == keyword for error in errors), [
        (list(error.absolute_path), error.validator, error.message) for error in errors
    ]


@pytest.mark.parametrize(
    "text",
    ["90s", "5m", "1h30m", "30d", "2w", "200ms", "1.5h", "0.5s", "1h 30m", " 5m ", "0s", "0.0s", "00m", "-5m", "5", "m", "",
     "5M", "1 fortnight", "1.s", ".5s", "1h30", "1h-30m"],
)
def test_the_duration_pattern_accepts_exactly_what_parse_duration_accepts(text: str) -> None:
    try:
        parse_duration(text)
        parsed = True
    except ValueError:
        parsed = False
    assert (re.search(DURATION_PATTERN, text) is not None) == parsed
    signed = re.search(SIGNED_DURATION_PATTERN, f"-{text}") is not None
    assert signed == parsed
