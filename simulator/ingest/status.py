"""A device's status message (its birth and its last will) as one `device_status` point.

A device with its own MQTT connection publishes `{"device_id", "online": true, "ts"}` retained on
`{prefix}/status/{device_id}` when it connects, and its last will is the same with `"online": false`
(simulator/transport/sessions.py). The bridge stores each as measurement `device_status`, tag
`device_id`, boolean field `online`, time `ts` (epoch ms, as readings). Anything else on a status topic
is refused with its reason (a BadPayload, so a dead letter): the status of a device is not guessed.
"""

from __future__ import annotations

import re

from simulator.ingest.fieldtypes import FieldTypes
from simulator.ingest.lineprotocol import TS_RANGE, BadPayload, json_object, to_line

MEASUREMENT = "device_status"
KEYS = frozenset({"device_id", "online", "ts"})
# A device id as the telemetry schema has it (simulator/schemas/telemetry.schema.json): no `/`, `+`,
# `#` or spaces, so it is one topic level, one ACL user name and a tag value that needs no escape.
DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def status_device(topic: str, prefix: str) -> str | None:
    """What follows `{prefix}/status/` in the topic (the device id, if the topic is right), else None."""
    if topic.startswith(prefix) and topic.startswith("/status/", len(prefix)):  # without building the head: every message asks
        return topic[len(prefix) + 8 :]
    return None


def status_line(device_id: str, raw: bytes) -> tuple[str, int]:
    """(line, ts_ms) of a status message for the device its topic names; BadPayload otherwise."""
    if not DEVICE_ID.fullmatch(device_id):
        raise BadPayload(f"status topic names {device_id[:40]!r}, not a device id")
    if not raw:
        raise BadPayload("empty status payload (a retained status cleared): nothing to store")
    payload = json_object(raw)
    if payload.keys() != KEYS:
        raise BadPayload(f"a status holds exactly device_id, online and ts; this one has {', '.join(sorted(payload)) or 'nothing'}")
    online, ts = payload["online"], payload["ts"]
    if payload["device_id"] != device_id:
        raise BadPayload(f"topic names device {device_id!r} but the payload says {str(payload['device_id'])[:40]!r}")
    if not isinstance(online, bool):
        raise BadPayload("online is not a boolean")
    if not isinstance(ts, int) or isinstance(ts, bool) or not TS_RANGE[0] <= ts < TS_RANGE[1]:
        raise BadPayload("ts is missing or not an epoch time in integer milliseconds")
    return f"{MEASUREMENT},device_id={device_id} online={'true' if online else 'false'} {ts}", ts


def to_point(topic: str, raw: bytes, prefix: str, types: FieldTypes | None = None) -> tuple[str, str, int | None, int]:
    """(line, device_id, seq, ts_ms) of any message under `prefix`: a status (seq None) or readings."""
    device_id = status_device(topic, prefix)
    if device_id is None:
        return to_line(topic, raw, types)
    line, ts = status_line(device_id, raw)
    return line, device_id, None, ts
