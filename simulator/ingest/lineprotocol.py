"""Checking a device payload and turning it into one InfluxDB line-protocol point.

measurement = the payload's `type`; tags = `device_id` and the payload's `tags`; fields = the
readings and `seq` (integer); time = `ts` in epoch milliseconds (write with precision=ms).
Every number is stored as a float, so a reading that is 20 in one message and 20.5 in the next never
causes a field type conflict; with a `FieldTypes` map a value of another type than its field's goes
to the typed name `{name}_{kind}` (simulator/ingest/fieldtypes.py). Names must match NAME in full;
tag values cannot hold control characters or backslashes; string fields escape quotes, backslashes,
newlines and carriage returns: every accepted payload is exactly one line, so none can inject a point.
"""

from __future__ import annotations

import re

import orjson

from simulator.ingest.fieldtypes import FieldTypes
from simulator.telemetry import MAX_PAYLOAD_BYTES, MAX_READINGS, MAX_TEXT

# 2000-01-01 .. 2100-01-01 in epoch ms: anything else is a unit mistake (seconds, µs).
TS_RANGE = (946_684_800_000, 4_102_444_800_000)
# Measurement, tag and field names; always fullmatch (`$` would also match before a final newline).
# A leading `_` is InfluxDB's reserved namespace (2.x/3.x refuse `_field`, `_measurement` ...).
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
# `time` is InfluxDB's timestamp column: a field `time` is silently dropped, a tag key `time` refused.
RESERVED_MEASUREMENTS = frozenset({"time"})
RESERVED_TAGS = frozenset({"device_id", "time"})
RESERVED_READINGS = frozenset({"device_id", "seq", "time"})
# No escape exists for these in a tag: a newline ends the point, a trailing backslash breaks the line,
# and control characters (C0, DEL, C1, Unicode line and paragraph separators) do not belong in an identifier.
UNSAFE_IN_TAG = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\\]")


class BadPayload(ValueError):
    """A payload the bridge cannot store; the message is the dead-letter reason."""


# What escape_key must look at: the unsafe characters, and the three it escapes. A tag without any
# (nearly every device id and tag value) is its own escaped form, found with one search.
NEEDS_CARE_IN_TAG = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\\, =]")
# Names that matched NAME, remembered: a fleet repeats the same few hundred names in every message.
# Bounded, so that payloads full of random names cannot grow it; past the bound names are matched again.
NAME_CACHE_LIMIT = 4096
_names: set[str] = set()
# Per topic, what to_line derived from the last message it accepted there: a device repeats its id,
# type and tags (so the line's head) and the names and types of its readings in every message. A
# message that repeats them all takes the cached head and a %-template of its fields and is checked
# for what can still differ (time, seq, readings' sizes, strings that need escaping, large integers);
# anything else takes the full way, whose result (line or refusal) is the same. Bounded, as the name
# cache is: past the bound new topics are converted the full way every time.
TOPIC_CACHE_LIMIT = 50_000  # about 0.7 KB a topic (the pipeline's payloads), at most ~2 KB (the limits below): at most ~100 MB
# A topic may be 64 KB and a payload's tags 16 KB: a message with more tags, or more text in its topic,
# head and tag names together, than any device's, is converted the full way every time (it was 90 KB a topic).
CACHED_TAGS_LIMIT = 8
CACHED_TEXT_LIMIT = 512
LAYOUT_CACHE_LIMIT = 4096
NEEDS_ESCAPE_IN_FIELD = re.compile(r'[\\"\n\r]')
EXACT_INT = 2**53  # integers within ±2**53 are written as f"{value}.0", exactly what float(value) is
FIELD_FORMATS = {float: "%r", int: "%d.0", str: '"%s"', bool: "%s"}  # the same text as field_value, given the checks


class Layout:
    """The readings of a message, by their names and value types in order, as a %-template of the
    line's fields (seq and time included), valid while the measurement's field types are those it was
    made with (`known`, `changes`): every reading of that type is written under its own name."""

    __slots__ = ("names", "types", "template", "texts", "ints", "flags", "known", "changes")

    def __init__(self, names: tuple[str, ...], types: tuple[type, ...], known: dict[str, str] | None, changes: int) -> None:
        self.names, self.types, self.known, self.changes = names, types, known, changes
        self.template = "".join(f"{name}={FIELD_FORMATS[kind]}," for name, kind in zip(names, types)) + "seq=%di %d"
        self.texts = tuple(at for at, kind in enumerate(types) if kind is str)
        self.ints = tuple(at for at, kind in enumerate(types) if kind is int)
        self.flags = tuple(at for at, kind in enumerate(types) if kind is bool)


class TopicLine:
    """What the last message accepted on a topic gave: its identity, its tags, the line's head up to
    the fields (`{type},device_id=...,{tag}={value} `, escaped), and the layout of its readings."""

    __slots__ = ("device_id", "kind", "tags", "head", "layout")

    def __init__(self, device_id: str, kind: str, tags: dict, head: str, layout: Layout) -> None:
        self.device_id, self.kind, self.tags, self.head, self.layout = device_id, kind, tags, head, layout


_topics: dict[str, TopicLine] = {}
_layouts: dict[tuple[str, tuple[str, ...], tuple[type, ...]], Layout] = {}


def escape_key(text: str) -> str:
    """Tag keys and values: backslash-escape commas, spaces and '='; refuse what cannot be escaped."""
    if NEEDS_CARE_IN_TAG.search(text) is None:
        return text
    if UNSAFE_IN_TAG.search(text):
        raise BadPayload(f"newline, control character or backslash in tag {text[:40]!r}")
    return text.replace(",", "\\,").replace(" ", "\\ ").replace("=", "\\=")


def is_name(text: str) -> bool:
    """`text` matches NAME in full."""
    if text in _names:
        return True
    if NAME.fullmatch(text) is None:
        return False
    if len(_names) < NAME_CACHE_LIMIT:
        _names.add(text)
    return True


def field_value(name: str, value: object) -> tuple[str, str]:
    """(kind, line-protocol value) of a reading: kind is float, string or boolean."""
    kind = type(value)  # orjson makes exactly these types; a subclass (from elsewhere) takes the checks below
    if kind is float:
        return "float", repr(value)  # orjson never yields inf or nan
    if value is True:
        return "boolean", "true"
    if value is False:
        return "boolean", "false"
    if isinstance(value, float):
        return "float", repr(value)
    if isinstance(value, int):
        return "float", f"{value}.0" if abs(value) < 2**53 else repr(float(value))
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise BadPayload(f"reading {name!r} is longer than {MAX_TEXT} characters")
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
        return "string", f'"{escaped}"'
    raise BadPayload(f"reading {name!r} is a {type(value).__name__}; expected a number, string or boolean")


def json_object(raw: bytes) -> dict:
    """The payload as a JSON object, within MAX_PAYLOAD_BYTES; BadPayload otherwise (readings and statuses alike)."""
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise BadPayload(f"payload of {len(raw)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise BadPayload(f"not JSON: {error}") from None
    if type(payload) is not dict:
        raise BadPayload("payload is not a JSON object")
    return payload


def to_line(topic: str, raw: bytes, types: FieldTypes | None = None) -> tuple[str, str, int, int]:
    """(line, device_id, seq, ts_ms) for a valid payload on `topic`; raises BadPayload otherwise.

    With `types`, each reading is written under the name that holds its type (see FieldTypes), and
    the types of an accepted message's new fields are recorded; a refused message records nothing.
    The checks run in a fixed order, so a payload with several faults is always refused for the same one.
    """
    payload = json_object(raw)
    get = payload.get
    device_id, kind, ts, seq, tags, readings = get("device_id"), get("type"), get("ts"), get("seq"), get("tags", {}), get("readings")
    cached = _topics.get(topic)
    if cached is not None and device_id == cached.device_id and kind == cached.kind and tags == cached.tags:
        # The identity, type and tags passed every check before with this topic: the checks between them come next, in order.
        check_time_and_seq(ts, seq)
        if type(readings) is not dict or not readings:
            raise BadPayload("readings is missing or empty")
        if len(readings) > MAX_READINGS:
            raise BadPayload(f"more than {MAX_READINGS} readings or tags")
        fields = cached_fields(cached.layout, readings, types.of(kind) if types is not None else None, types, seq, ts)
        if fields is not None:
            return cached.head + fields, device_id, seq, ts
    if type(device_id) is not str or not 0 < len(device_id) <= 128:
        raise BadPayload("device_id is missing or not a string of 1-128 characters")
    if type(kind) is not str or not is_name(kind) or kind in RESERVED_MEASUREMENTS:
        raise BadPayload("type is missing or not a name like 'air_quality'")
    check_time_and_seq(ts, seq)
    if type(tags) is not dict or not all(type(value) is str for value in tags.values()):
        raise BadPayload("tags is not an object of strings")
    if type(readings) is not dict or not readings:
        raise BadPayload("readings is missing or empty")
    if len(readings) > MAX_READINGS or len(tags) > MAX_READINGS:
        raise BadPayload(f"more than {MAX_READINGS} readings or tags")
    segments = topic.rsplit("/", 2)
    if segments[-1] != device_id:
        raise BadPayload(f"topic names device {segments[-1]!r} but the payload says {device_id!r}")
    if kind != "events" and (len(segments) < 3 or segments[-2] != kind):
        named = f"type {segments[-2]!r}" if len(segments) > 1 else "no type"  # one level: before issue 17 an IndexError stopped the bridge
        raise BadPayload(f"topic names {named} but the payload says {kind!r}")
    parts = [kind, ",device_id=", escape_key(device_id)]
    for key in sorted(tags) if len(tags) > 1 else tags:
        if key in RESERVED_TAGS or (key not in _names and not is_name(key)):
            raise BadPayload(f"tag name {key!r} is not allowed")
        if value := tags[key]:  # InfluxDB rejects empty tag values
            parts += (",", key, "=", escape_key(value))
    parts.append(" ")
    head = len(parts)
    known = types.of(kind) if types is not None else None
    first_seen: list[tuple[str, str]] | None = None  # (name, kind) recorded once the message is accepted
    conflicts: list[tuple[str, str, str]] | None = None  # (name, stored kind, value kind)
    names = _names
    for name, value in readings.items():
        if (name not in names and not is_name(name)) or name in RESERVED_READINGS or name in tags:
            raise BadPayload(f"reading name {name!r} is not allowed")
        if type(value) is float:  # most readings: the common case without a call
            value_kind, text = "float", repr(value)
        else:
            value_kind, text = field_value(name, value)
        if known is not None and (stored := known.get(name)) != value_kind:
            if stored is None:
                first_seen = (first_seen or []) + [(name, value_kind)]
            else:
                conflicts = (conflicts or []) + [(name, stored, value_kind)]
                name = typed_name(kind, name, stored, value_kind, known, readings, tags)
                if name not in known:
                    first_seen = (first_seen or []) + [(name, value_kind)]
        parts += (name, "=", text, ",")
    parts += ("seq=", str(seq), "i ", str(ts))
    if first_seen or conflicts:  # the message is accepted: only now may it teach a type (known is set: types was given)
        for name, value_kind in first_seen or ():
            known.setdefault(name, value_kind)  # type: ignore[union-attr]
        for name, stored, value_kind in conflicts or ():
            types.conflict(kind, name, stored, value_kind)  # type: ignore[union-attr]
    if not conflicts:  # every reading went under its own name: the next message like it may take the cached way
        remember(topic, device_id, kind, tags, "".join(parts[:head]), readings, known, types.changes if types is not None else 0)
    return "".join(parts), device_id, seq, ts


def check_time_and_seq(ts: object, seq: object) -> None:
    if type(ts) is not int or not TS_RANGE[0] <= ts < TS_RANGE[1]:  # type(): a bool is an int
        raise BadPayload("ts is missing or not an epoch time in integer milliseconds")
    if type(seq) is not int or seq < 0:
        raise BadPayload("seq is missing or not a non-negative integer")


def cached_fields(layout: Layout, readings: dict, known: dict[str, str] | None, types: FieldTypes | None, seq: int, ts: int) -> str | None:
    """The line's fields, seq and time if the readings fit `layout` (same names and value types in
    order, the field types unchanged since) and need none of field_value's care; else None."""
    if layout.known is not known or (types is not None and layout.changes != types.changes):
        return None
    values = tuple(readings.values())
    if tuple(map(type, values)) != layout.types or tuple(readings) != layout.names:
        return None
    for at in layout.texts:
        text = values[at]
        if len(text) > MAX_TEXT or NEEDS_ESCAPE_IN_FIELD.search(text) is not None:
            return None  # too long (refused) or escaped: field_value's way
    for at in layout.ints:
        if not -EXACT_INT < values[at] < EXACT_INT:
            return None
    if layout.flags:
        flags = list(values)
        for at in layout.flags:
            flags[at] = "true" if flags[at] else "false"
        values = tuple(flags)
    return layout.template % (*values, seq, ts)


def remember(topic: str, device_id: str, kind: str, tags: dict, head: str, readings: dict, known: dict[str, str] | None, changes: int) -> None:
    """Cache an accepted message's head and layout for its topic (within the bounds)."""
    if len(_topics) >= TOPIC_CACHE_LIMIT and topic not in _topics:
        return
    if len(tags) > CACHED_TAGS_LIMIT or len(topic) + len(head) + sum(map(len, tags)) > CACHED_TEXT_LIMIT:
        return  # too large to hold for every topic
    names, kinds = tuple(readings), tuple(map(type, readings.values()))
    if not all(kind_ in FIELD_FORMATS for kind_ in kinds):
        return  # a subclass (not from orjson): always the full way
    key = (kind, names, kinds)
    layout = _layouts.get(key)
    if layout is None or layout.known is not known or layout.changes != changes:
        layout = Layout(names, kinds, known, changes)
        if len(_layouts) < LAYOUT_CACHE_LIMIT or key in _layouts:
            _layouts[key] = layout
    _topics[topic] = TopicLine(device_id, kind, tags, head, layout)


def typed_name(measurement: str, name: str, stored: str, kind: str, known: dict[str, str], readings: dict, tags: dict) -> str:
    """`{name}_{kind}` for a value whose field holds another type; refused if that name is taken."""
    typed = f"{name}_{kind}"
    if typed in readings or typed in tags or known.get(typed, kind) != kind:
        raise BadPayload(f"reading {name!r} is a {kind} but {measurement}.{name} is stored as {stored}, and {typed!r} cannot take it")
    return typed
