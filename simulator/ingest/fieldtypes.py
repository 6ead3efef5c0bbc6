"""The type each field of each measurement is stored as, so that one message can never take a field over.

InfluxDB fixes a field's type with the first point of each shard that has it and refuses every later
point with another type. The bridge therefore decides the type itself, before writing: a field keeps
the type it is already stored as in InfluxDB (asked once per measurement and run, `SHOW FIELD KEYS`),
else the type the device type declares, else the type of the first value the bridge converted in this
run. A value of another type is stored under the typed name `{name}_{kind}` (`x_string`, `x_float`,
`x_boolean`): kept, counted as a type conflict, never refused, and the good messages keep `x`.

The declared types are data, `{"measurement": {"field": kind}}` in a JSON file, so the bridge needs no
device module: by default it reads `simulator/schemas/readings.json`, which `iotsim schema --readings`
generates from every shipped device type's declaration (simulator/readings_schema.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

import orjson

from simulator.errors import UsageError
from simulator.userfiles import Refused, read_regular

KINDS = ("float", "string", "boolean")  # what readings become; InfluxDB also knows "integer" (our `seq`)
LOOKUP_RETRY_S = 10.0  # while InfluxDB cannot answer, ask again at most this often (it blocks the caller)
SHIPPED = "shipped"  # the bridge's `--declared-types` default: the shipped device types' readings
NOT_DECLARED = "none"  # no declared types: InfluxDB's, then the first value seen
FIELD_TYPES_FILE_LIMIT = 16 * 1024 * 1024  # bytes: the shipped file is a few KiB; more is not a field types file
SHIPPED_PATH = Path(__file__).resolve().parent.parent / "schemas" / "readings.json"


class LookupFailed(Exception):
    """InfluxDB could not say which field types it holds (unreachable, or an error)."""


Declared = Mapping[str, Mapping[str, str]]  # measurement → field → kind
Lookup = Callable[[str], list[tuple[str, str]]]  # measurement → (field, kind) pairs InfluxDB holds; raises LookupFailed


class FieldTypes:
    """Per measurement, the kind each field is written as; shared by the converter and the bridge."""

    def __init__(self, declared: Declared | None = None, lookup: Lookup | None = None, log: Callable[[str], None] = lambda line: None) -> None:
        self.declared = check_declared(declared or {}, "declared field types")
        self.lookup = lookup
        self.log = log
        self.known: dict[str, dict[str, str]] = {}
        self.unconfirmed: set[str] = set()  # measurements whose InfluxDB types are not known yet
        self.next_lookup = 0.0
        self.conflicts = 0
        self.reported: set[tuple[str, str]] = set()
        self.changes = 0  # grows whenever a field known already takes another kind: to_line's per-topic cache checks it

    def of(self, measurement: str) -> dict[str, str]:
        """The measurement's {field: kind}, which the caller may add first-seen fields to."""
        known = self.known.get(measurement)
        if known is None:
            known = self.known[measurement] = dict(self.declared.get(measurement, {}))
            if self.lookup is not None:
                self.unconfirmed.add(measurement)
        if self.unconfirmed and measurement in self.unconfirmed and time.monotonic() >= self.next_lookup:
            self._ask_influxdb(measurement, known)
        return known

    def _ask_influxdb(self, measurement: str, known: dict[str, str]) -> None:
        assert self.lookup is not None
        try:
            stored = self.lookup(measurement)
        except LookupFailed as error:
            self.next_lookup = time.monotonic() + LOOKUP_RETRY_S
            self.log(f"bridge: cannot ask InfluxDB the field types of {measurement!r} ({error}); using declared and first-seen types")
            return
        held: dict[str, list[str]] = {}
        for name, kind in stored:  # a field may hold one type per shard
            held.setdefault(name, []).append(kind)
        for name, kinds in held.items():
            if known.get(name) not in kinds:
                known[name] = kinds[0]  # what InfluxDB holds is what it will accept
                self.changes += 1
        self.unconfirmed.discard(measurement)

    def holds(self, measurement: str, name: str, kind: str) -> None:
        """InfluxDB said it holds `name` as `kind` (a refused write): from now on that is its type."""
        self.of(measurement)[name] = kind
        self.changes += 1

    def conflict(self, measurement: str, name: str, stored: str, kind: str) -> None:
        """Count a value stored under its typed name; say so once per (measurement, field)."""
        self.conflicts += 1
        if (measurement, name) not in self.reported:
            self.reported.add((measurement, name))
            self.log(f"bridge: {measurement}.{name} is stored as {stored}; {kind} values go to {name}_{kind} (logged once)")


def check_declared(declared: Declared, source: str) -> dict[str, dict[str, str]]:
    """The declared map as plain dicts; a kind that is not float, string or boolean is a usage error."""
    checked: dict[str, dict[str, str]] = {}
    for measurement, fields in declared.items():
        if not isinstance(fields, Mapping):
            raise UsageError(f"{source}: {measurement}: expected an object of field: kind")
        for name, kind in fields.items():
            if kind not in KINDS:
                raise UsageError(f"{source}: {measurement}.{name}: kind {kind!r} is not one of {', '.join(KINDS)}")
        checked[measurement] = dict(fields)
    return checked


def read_declared(path: Path) -> dict[str, dict[str, str]]:
    """A JSON file {"measurement": {"field": "float" | "string" | "boolean"}}."""
    try:
        declared = orjson.loads(read_regular(path, FIELD_TYPES_FILE_LIMIT))
    except Refused as refused:
        raise UsageError(f"{path}: cannot read field types ({refused})") from None
    except orjson.JSONDecodeError as error:
        raise UsageError(f"{path}: not JSON ({error})") from None
    if not isinstance(declared, dict):
        raise UsageError(f"{path}: expected an object of measurement: {{field: kind}}")
    return check_declared(declared, str(path))


def declared_types(choice: str) -> dict[str, dict[str, str]]:
    """The declared map `choice` names: 'shipped' (SHIPPED_PATH), 'none' (no declarations) or a JSON file."""
    if choice == NOT_DECLARED:
        return {}
    return read_declared(SHIPPED_PATH if choice == SHIPPED else Path(choice))
