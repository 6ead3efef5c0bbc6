"""`to_line` against its earlier, plainer implementation (kept here as the reference): the same line,
the same identity, the same refusal reason and the same field types learnt, for random payloads
with hostile names and strings (control characters, escapes, reserved and typed names, wrong types)."""

from __future__ import annotations

import random
import re

import orjson
import pytest

from simulator.ingest.fieldtypes import FieldTypes
from simulator.ingest.lineprotocol import NAME_CACHE_LIMIT, BadPayload, _names, to_line
from simulator.telemetry import MAX_PAYLOAD_BYTES, MAX_READINGS, MAX_TEXT

# --- the reference: lineprotocol.py's to_line before issue 17, verbatim but for its names ---

TS_RANGE = (946_684_800_000, 4_102_444_800_000)
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
RESERVED_MEASUREMENTS = frozenset({"time"})
RESERVED_TAGS = frozenset({"device_id", "time"})
RESERVED_READINGS = frozenset({"device_id", "seq", "time"})
UNSAFE_IN_TAG = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\\]")


def reference_escape_key(text: str) -> str:
    if UNSAFE_IN_TAG.search(text):
        raise BadPayload(f"newline, control character or backslash in tag {text[:40]!r}")
    return text.replace(",", "\\,").replace(" ", "\\ ").replace("=", "\\=")


def reference_field_value(name: str, value: object) -> tuple[str, str]:
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


def reference_to_line(topic: str, raw: bytes, types: FieldTypes | None = None) -> tuple[str, str, int, int]:
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise BadPayload(f"payload of {len(raw)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise BadPayload(f"not JSON: {error}") from None
    if not isinstance(payload, dict):
        raise BadPayload("payload is not a JSON object")
    device_id = payload.get("device_id")
    kind = payload.get("type")
    ts = payload.get("ts")
    seq = payload.get("seq")
    tags = payload.get("tags", {})
    readings = payload.get("readings")
    if not isinstance(device_id, str) or not 0 < len(device_id) <= 128:
        raise BadPayload("device_id is missing or not a string of 1-128 characters")
    if not isinstance(kind, str) or not NAME.fullmatch(kind) or kind in RESERVED_MEASUREMENTS:
        raise BadPayload("type is missing or not a name like 'air_quality'")
    if not isinstance(ts, int) or isinstance(ts, bool) or not TS_RANGE[0] <= ts < TS_RANGE[1]:
        raise BadPayload("ts is missing or not an epoch time in integer milliseconds")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise BadPayload("seq is missing or not a non-negative integer")
    if not isinstance(tags, dict) or not all(isinstance(value, str) for value in tags.values()):
        raise BadPayload("tags is not an object of strings")
    if not isinstance(readings, dict) or not readings:
        raise BadPayload("readings is missing or empty")
    if len(readings) > MAX_READINGS or len(tags) > MAX_READINGS:
        raise BadPayload(f"more than {MAX_READINGS} readings or tags")
    segments = topic.rsplit("/", 2)
    if segments[-1] != device_id:
        raise BadPayload(f"topic names device {segments[-1]!r} but the payload says {device_id!r}")
    if kind != "events" and (len(segments) < 3 or segments[-2] != kind):
        raise BadPayload(f"topic names type {segments[-2]!r} but the payload says {kind!r}")
    tag_part = f"device_id={reference_escape_key(device_id)}"
    for key in sorted(tags):
        if key in RESERVED_TAGS or not NAME.fullmatch(key):
            raise BadPayload(f"tag name {key!r} is not allowed")
        if tags[key]:
            tag_part += f",{key}={reference_escape_key(tags[key])}"
    known = types.of(kind) if types is not None else None
    first_seen: list[tuple[str, str]] = []
    conflicts: list[tuple[str, str, str]] = []
    fields = []
    for name, value in readings.items():
        if not NAME.fullmatch(name) or name in RESERVED_READINGS or name in tags:
            raise BadPayload(f"reading name {name!r} is not allowed")
        value_kind, text = reference_field_value(name, value)
        if known is not None and (stored := known.get(name)) != value_kind:
            if stored is None:
                first_seen.append((name, value_kind))
            else:
                conflicts.append((name, stored, value_kind))
                name = reference_typed_name(kind, name, stored, value_kind, known, readings, tags)
                if name not in known:
                    first_seen.append((name, value_kind))
        fields.append(f"{name}={text}")
    fields.append(f"seq={seq}i")
    if types is not None and (first_seen or conflicts):
        for name, value_kind in first_seen:
            known.setdefault(name, value_kind)  # type: ignore[union-attr]
        for name, stored, value_kind in conflicts:
            types.conflict(kind, name, stored, value_kind)
    return f"{kind},{tag_part} {','.join(fields)} {ts}", device_id, seq, ts


def reference_typed_name(measurement: str, name: str, stored: str, kind: str, known: dict[str, str], readings: dict, tags: dict) -> str:
    typed = f"{name}_{kind}"
    if typed in readings or typed in tags or known.get(typed, kind) != kind:
        raise BadPayload(f"reading {name!r} is a {kind} but {measurement}.{name} is stored as {stored}, and {typed!r} cannot take it")
    return typed


# --- random payloads ---

HOSTILE = ["\n", "\r", "\t", "\x00", "\x7f", "\x85", "\u2028", "\u2029", "\\", '"', ",", " ", "=", "é", "水", "😀", "$", "#", "/", "_"]
GOOD_NAMES = ["pm25", "pm10", "aqi", "state", "ok", "x", "x_string", "x_float", "x_boolean", "district", "A9", "a" * 64]
BAD_NAMES = ["seq", "time", "device_id", "_field", "a" * 65, "", "9a"]
DEVICES = ["aq-0001", "aq-0002", "m 1", "d,=x", "x" * 128]
BAD_DEVICES = ["d\\x", "d\nx", "", "x" * 129, 5]
KINDS = ["air_quality", "events", "meter"]
BAD_KINDS = ["time", "_bad", "air quality", "air_quality\n", 7, None]
GOOD_TS = [1768320000000, 946_684_800_000, 4_102_444_800_000 - 1]
BAD_TS = [1768320000, 946_684_800_000 - 1, 4_102_444_800_000, True, 1.5e12, "1768320000000"]
BAD_SEQ = [-1, True, 2.0, None, "1"]
DECLARED = {"air_quality": {"pm25": "float", "state": "string", "x": "boolean"}, "meter": {"x": "float"}}


def pick(rng: random.Random, good: list, bad: list, bad_odds: float = 0.05) -> object:
    return rng.choice(bad) if bad and rng.random() < bad_odds else rng.choice(good)


def text(rng: random.Random, good: list[str], bad: list[str], bad_odds: float = 0.02) -> str:
    """A name or a string: mostly a good one, sometimes a bad one or one with a hostile character in it."""
    base = str(pick(rng, good, bad, bad_odds))
    if rng.random() < bad_odds:
        at = rng.randrange(len(base) + 1)
        base = base[:at] + rng.choice(HOSTILE) + base[at:]
    return base


def value(rng: random.Random) -> object:
    choice = rng.randrange(40)
    if choice < 20:
        return rng.choice((rng.uniform(-1e6, 1e6), rng.random(), -0.0, 1e300, 5e-324, 0.1 + 0.2, float(rng.randrange(100))))
    if choice < 28:
        return rng.choice((rng.randrange(-1000, 1000), 2**53, 2**53 - 1, -(2**53), 2**63 - 1, -(2**63), 0))
    if choice < 33:
        return rng.choice((True, False))
    if choice < 39:
        return rng.choice((text(rng, ["on", "off", "", "moderately_polluted", 'say "hi"', "a\\b", "two\nlines\r"], [], 0.2), "x" * (MAX_TEXT + rng.choice((0, 0, 1)))))
    return rng.choice((None, [1, 2], {"a": 1}, []))


def message(rng: random.Random) -> tuple[str, bytes]:
    device, kind = pick(rng, DEVICES, BAD_DEVICES), pick(rng, KINDS, BAD_KINDS)
    payload: dict[str, object] = {
        "device_id": device, "type": kind, "ts": pick(rng, GOOD_TS, BAD_TS), "seq": pick(rng, [0, 4, rng.randrange(10**9)], BAD_SEQ),
        "tags": {text(rng, GOOD_NAMES, BAD_NAMES): pick(rng, [text(rng, ["Chengqu", "37.89", "", "a b", "k=v", "a,b"], [], 0.05)], [1, None]) for _ in range(rng.choice((0, 1, 1, 2, 3)))},
        "readings": {text(rng, GOOD_NAMES, BAD_NAMES): value(rng) for _ in range(rng.choice((0, 1, 3, 10, 10, 10)))},
    }  # fmt: skip
    for key in list(payload):
        if rng.random() < 0.01:
            del payload[key]
    if rng.random() < 0.01:
        payload["tags"] = rng.choice((["a"], "x", None))
    if rng.random() < 0.005:
        payload["readings"] = {f"r{i}": 1.0 for i in range(MAX_READINGS + rng.choice((0, 1)))}
    kind_level = kind if isinstance(kind, str) and rng.random() < 0.97 else "other"
    topic = f"yangquan/city/{kind_level}/{device if isinstance(device, str) and rng.random() < 0.97 else 'aq-0009'}"
    if rng.random() < 0.01:
        topic = str(device)
    raw = orjson.dumps(payload)
    if rng.random() < 0.01:
        raw = rng.choice((b"\xff", b"[1]", b'"x"', b"{", raw[:-1], b" " * (MAX_PAYLOAD_BYTES + 1)))
    return topic, raw


def outcome(convert, topic: str, raw: bytes, types: FieldTypes | None) -> object:  # noqa: ANN001 - either implementation
    try:
        return convert(topic, raw, types)
    except BadPayload as error:
        return ("refused", str(error))
    except IndexError:  # the reference's one crash: a one-level topic that names no type
        assert convert is reference_to_line and "/" not in topic
        return ("refused", f"topic names no type but the payload says {orjson.loads(raw)['type']!r}")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_to_line_agrees_with_the_reference_on_random_hostile_payloads(seed: int) -> None:
    rng = random.Random(seed)
    ours, theirs = FieldTypes(declared=DECLARED), FieldTypes(declared=DECLARED)
    accepted, reasons = 0, set()
    for _ in range(6000):
        topic, raw = message(rng)
        expected = outcome(reference_to_line, topic, raw, theirs)
        assert outcome(to_line, topic, raw, ours) == expected, (topic, raw)
        assert outcome(to_line, topic, raw, None) == outcome(reference_to_line, topic, raw, None), (topic, raw)
        assert ours.known == theirs.known and ours.conflicts == theirs.conflicts, (topic, raw)
        accepted += not (isinstance(expected, tuple) and expected[0] == "refused")
        reasons.add(expected[1][:25] if isinstance(expected, tuple) and expected[0] == "refused" else "accepted")
    assert accepted > 900, f"only {accepted} of 6000 random payloads accepted: the fuzzing misses the accepting paths"
    assert len(reasons) >= 20, f"only {len(reasons)} different outcomes: {sorted(reasons)}"


def test_the_name_cache_stays_bounded_and_still_checks_names_past_it() -> None:
    for i in range(NAME_CACHE_LIMIT + 100):
        to_line("p/t/events/d", orjson.dumps({"device_id": "d", "type": "events", "ts": 1768320000000, "seq": 0, "readings": {f"n{i}": 1.0}}))
    assert len(_names) <= NAME_CACHE_LIMIT


def test_a_topic_of_one_level_is_refused_not_a_crash() -> None:
    with pytest.raises(BadPayload, match="topic names no type but the payload says 'air_quality'"):
        to_line("d", orjson.dumps({"device_id": "d", "type": "air_quality", "ts": 1768320000000, "seq": 0, "readings": {"x": 1.0}}))
    with pytest.raises(BadPayload, match="reading name 'n x' is not allowed"):
        to_line("p/t/events/d", orjson.dumps({"device_id": "d", "type": "events", "ts": 1768320000000, "seq": 0, "readings": {"n x": 1.0}}))
