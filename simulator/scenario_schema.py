"""The JSON Schema of scenario files, generated from the pydantic models in simulator/scenario.py.

Editors (yaml-language-server: VS Code's YAML extension, Neovim, JetBrains) give completion, hover
text and validation from it; a scenario names it in its first line:

    # yaml-language-server: $schema=../simulator/schemas/scenario.schema.json

The committed copy, `simulator/schemas/scenario.schema.json`, is what `render()` returns, byte for
byte (`iotsim schema --check` tells when it is stale). The schema describes what a file may *write*
(pydantic's validation mode: `duration: 1h` as well as `duration: 3600`); the checks between
sections (unique device ids, faults naming a fleet) stay with `iotsim validate`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "scenario.schema.json"
SCHEMA_ID = "https://github.com/yangquan-iot-testbed/schemas/scenario.schema.json"
REGENERATE = "iotsim schema --out simulator/schemas/scenario.schema.json"

HEADER: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "Yangquan testbed scenario",
    "description": "A scenario file for `iotsim validate`, `iotsim run` and `iotsim load` (README.md, Scenario files).",
}


def scenario_schema() -> dict[str, Any]:
    """The schema as a dict: pydantic's, with readable names for the device types' fleet sections."""
    from simulator.scenario import Scenario  # the models of every device type: imported when asked, not by `iotsim` at start-up

    schema = json.loads(json.dumps(Scenario.model_json_schema(mode="validation")))  # a deep copy we may edit
    schema.pop("title", None)
    name_union_members(schema)
    describe_union_tags(schema)
    return {**HEADER, **schema}


def render() -> str:
    """The committed file's text: stable key order (pydantic's, field declaration order), trailing newline."""
    return json.dumps(scenario_schema(), indent=2, ensure_ascii=False) + "\n"


def stale(path: Path = SCHEMA_PATH) -> str | None:
    """One line saying what is wrong with the file at `path`, or None when it is current."""
    if not path.is_file():
        return f"{path}: missing; run `{REGENERATE}`"
    if path.read_text(encoding="utf-8") != render():
        return f"{path}: stale (differs from the models in simulator/); run `{REGENERATE}`"
    return None


def discriminated_unions(node: Any) -> list[dict[str, Any]]:
    """Every `{"oneOf": [...], "discriminator": {...}}` in the schema, outermost first."""
    found = []
    if isinstance(node, dict):
        if "discriminator" in node and "oneOf" in node:
            found.append(node)
        for value in node.values():
            found.extend(discriminated_unions(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(discriminated_unions(value))
    return found


def name_union_members(schema: dict[str, Any]) -> None:
    """`simulator__city__air_quality__Fleet` → `AirQualityFleet`: pydantic qualifies same-named models
    (every device module has a `Fleet`) with their module path; name them by their tag instead."""
    definitions = schema["$defs"]
    renames: dict[str, str] = {}
    for union in discriminated_unions(schema):
        for tag, reference in union["discriminator"]["mapping"].items():
            old = reference.removeprefix("#/$defs/")
            if "__" not in old:
                continue
            title = definitions[old].get("title", "")
            new = "".join(word.capitalize() for word in tag.split("_")) + title
            if new in definitions or new in renames.values():
                raise ValueError(f"two models in the scenario schema would both be called {new}")
            renames[old] = new
    for old, new in renames.items():
        definitions[new] = {**definitions.pop(old), "title": new}
    schema["$defs"] = dict(sorted(definitions.items()))
    replace_references(schema, {f"#/$defs/{old}": f"#/$defs/{new}" for old, new in renames.items()})


def replace_references(node: Any, replacements: dict[str, str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str) and value in replacements:  # a `$ref` or a discriminator's mapping
                node[key] = replacements[value]
            else:
                replace_references(value, replacements)
    elif isinstance(node, list):
        for value in node:
            replace_references(value, replacements)


def describe_union_tags(schema: dict[str, Any]) -> None:
    """The tag of each union member (`type: air_quality`, `kind: ramp`) gets a description: pydantic
    has none for the `Literal` each member declares it with."""
    definitions = schema["$defs"]
    for union in discriminated_unions(schema):
        tag_name = union["discriminator"]["propertyName"]
        for tag, reference in union["discriminator"]["mapping"].items():
            tag_schema = definitions[reference.removeprefix("#/$defs/")]["properties"][tag_name]
            tag_schema.setdefault("description", f"{tag_name} {tag!r}: selects this entry's fields")
