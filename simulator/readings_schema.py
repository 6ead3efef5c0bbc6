"""The readings every device type sends and their kinds, as data: `simulator/schemas/readings.json`.

`{"measurement": {"reading": "float" | "string" | "boolean"}}`: each device type's `sends` (its
`readings` and `also_sends`, simulator/device_type.py) and the `events` measurement's one declared
reading, `text` (an event's other readings depend on its kind and stay undeclared). The bridge reads
the file by default (`iotsim bridge --declared-types`, simulator/ingest/fieldtypes.py) and never
imports a device module; `iotsim schema --readings` writes it, and `--check` tells when it is stale.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simulator.ingest.fieldtypes import SHIPPED_PATH
from simulator.telemetry import EVENT_READINGS, Kind

if TYPE_CHECKING:
    from simulator.device_type import DeviceType

READINGS_PATH = SHIPPED_PATH
REGENERATE = "iotsim schema --readings --out simulator/schemas/readings.json"


def declared_readings(device_types: Iterable[DeviceType[Any]] | None = None) -> dict[str, dict[str, Kind]]:
    """Measurement → reading → kind, in the catalogue's order (or of `device_types`), `events` last."""
    if device_types is None:
        from simulator.catalogue import DEVICE_TYPES  # every device module: imported when asked, not by `iotsim` at start-up

        device_types = DEVICE_TYPES
    declared = {device_type.name: device_type.sends for device_type in device_types}
    return {**declared, "events": dict(EVENT_READINGS)}


def render() -> str:
    """The committed file's text: declaration order, two-space indent, trailing newline."""
    return json.dumps(declared_readings(), indent=2) + "\n"


def stale(path: Path = READINGS_PATH) -> str | None:
    """One line saying what is wrong with the file at `path`, or None when it is current."""
    if not path.is_file():
        return f"{path}: missing; run `{REGENERATE}`"
    if path.read_text(encoding="utf-8") != render():
        return f"{path}: stale (differs from the device types' declarations); run `{REGENERATE}`"
    return None
