"""Checking a device payload and turning it into one InfluxDB line-protocol point.

measurement = the payload's `type`; tags = `device_id` and the payload's `tags`; fields = the
readings and `seq` (integer); time = `ts` in epoch milliseconds (write with precision=ms).
Every number is stored as a float, so a reading that is 20 in one message and 20.5 in the next never
causes a field type conflict. Keys and tag values are escaped; string fields escape quotes,
backslashes and newlines, so no payload can inject an extra point.
"""

from __future__ import annotations

import re

import orjson

MAX_PAYLOAD_BYTES = 16 * 1024
MAX_READINGS = 64
MAX_TEXT = 1024
# 2000-01-01 .. 2100-01-01 in epoch ms: anything else is a unit mistake (seconds, µs).
TS_RANGE = (946_684_800_000, 4_102_444_800_000)
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class BadPayload(ValueError):
    """A payload the bridge cannot store; the message is the dead-letter reason."""


def escape_key(text: str) -> str:
    """Tag keys and values: backslash-escape commas, spaces and '='.

    InfluxDB 1.x has no escape for a backslash in a tag (a trailing one breaks the line), and a
    newline ends a point, so identifiers holding either are refused rather than stored altered.
    """
    if "\n" in text or "\r" in text or "\\" in text:
        raise BadPayload(f"newline or backslash in tag {text[:40]!r}")
    return text.replace(",", "\\,").replace(" ", "\\ ").replace("=", "\\=")


def format_field(name: str, value: object) -> str:
    if value is True:
        return f"{name}=true"
    if value is False:
        return f"{name}=false"
    if isinstance(value, float):
        return f"{name}={value!r}"
    if isinstance(value, int):
        return f"{name}={value}.0" if abs(value) < 2**53 else f"{name}={float(value)!r}"
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise BadPayload(f"reading {name!r} is longer than {MAX_TEXT} characters")
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
        return f'{name}="{escaped}"'
    raise BadPayload(f"reading {name!r} is a {type(value).__name__}; expected a number, string or boolean")


def to_line(topic: str, raw: bytes) -> tuple[str, str, int, int]:
    """(line, device_id, seq, ts_ms) for a valid payload on `topic`; raises BadPayload otherwise."""
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
    if not isinstance(kind, str) or not NAME.match(kind):
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
    tag_part = f"device_id={escape_key(device_id)}"
    for key in sorted(tags):
        if key == "device_id" or not NAME.match(key):
            raise BadPayload(f"tag name {key!r} is not allowed")
        if tags[key]:  # InfluxDB rejects empty tag values
            tag_part += f",{key}={escape_key(tags[key])}"
    fields = []
    for name, value in readings.items():
        if name == "seq" or not NAME.match(name):
            raise BadPayload(f"reading name {name!r} is not allowed")
        fields.append(format_field(name, value))
    fields.append(f"seq={seq}i")
    return f"{kind},{tag_part} {','.join(fields)} {ts}", device_id, seq, ts
