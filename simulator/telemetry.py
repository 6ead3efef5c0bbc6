"""The message contract: how a device's readings become an MQTT topic and a JSON payload.

Topic:   {prefix}/{domain}/{type}/{device_id}
Payload: {"device_id": str, "type": str, "ts": epoch ms (int), "seq": int from 0, +1 per message,
          "tags": {label: str}, "readings": {name: number | str | bool}}

Events (an AQI category change, a gas alarm, a train arrival, an injected fault) use the same payload
with `type` "events", published on {prefix}/events/{kind}/{source}; `tags` holds at least `kind`,
`severity` (info | warning | alarm) and `domain`, `readings` at least `text`. Each source has its own
event sequence. The bridge stores them in the `events` measurement, which dashboards draw as
annotations.

A device has its own `Device` (registered by id, checked unique), or, in a fleet scheduled together
(simulator/cohort.py: a million meters), is a `Compact` device: its id, its tags encoded once as JSON,
its seq, and the fleet's `Wire` (type and topic base, held once per fleet). Both publish the same
bytes: an encoded tag set is inserted as it is (`orjson.Fragment`). Compact devices' ids need no
check of their own: a fleet's ids are `{prefix}-{n:04d}` and scenario.py refuses two fleets with one
prefix, so two fleets never share an id.

`simulator/schemas/telemetry.schema.json` is the JSON Schema of the payload; docs/message-contract.md
explains it. This module is the hot path of every run: it does no validation and no logging.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import orjson

if TYPE_CHECKING:  # an annotation only: the telemetry's contract (and `iotsim`'s start-up) need no SimPy
    import simpy

Reading = float | int | str | bool
# The contract's limits, which the bridge enforces (a message past one is a dead letter): a payload's
# size, its readings (and, apart, its tags), the length of a string reading.
MAX_PAYLOAD_BYTES = 16 * 1024
MAX_READINGS = 64
MAX_TEXT = 1024
# The kind of a reading, as the bridge stores it: every number is a float (docs/message-contract.md).
Kind = Literal["float", "string", "boolean"]
FLOAT: Kind = "float"
STRING: Kind = "string"
BOOLEAN: Kind = "boolean"
KINDS: tuple[Kind, ...] = (FLOAT, STRING, BOOLEAN)  # the bridge's own list (ingest/fieldtypes.py) is the same; a test checks
# What every event declares; the rest of an event's readings depend on its kind and are left undeclared.
EVENT_READINGS: dict[str, Kind] = {"text": STRING}
Sink = Callable[[str, bytes], None]
"""Takes (topic, payload); a dry-run file, an MQTT publisher or a list in tests."""


@dataclass(slots=True)
class Device:
    """A device's identity on the wire and its message counter."""

    device_id: str
    type: str
    domain: str
    tags: dict[str, str]
    topic: str
    seq: int = 0


class Compact:
    """A device of a fleet scheduled together, as little as its messages need: its id, its tags as
    encoded JSON (`encode_tags`), its seq. A device type's state class derives from it (slots)."""

    __slots__ = ("device_id", "tags", "seq")

    def __init__(self, device_id: str, tags: orjson.Fragment) -> None:
        self.device_id = device_id
        self.tags = tags
        self.seq = 0


@dataclass(slots=True, eq=False)
class Wire:
    """What a fleet's compact devices share on the wire: their type, domain and topic base, and the
    devices themselves (for counts and ids; their fleet's process walks them)."""

    type: str
    domain: str
    topic_base: str  # "{prefix}/{domain}/{type}/"; the device id completes it
    devices: list[Compact] = field(default_factory=list)


def encode_tags(tags: dict[str, str]) -> orjson.Fragment:
    """A device's tags as the JSON its payloads carry. Decoded to a str: the bytes orjson.dumps returns
    keep its whole output buffer (~4 KB) allocated, the str only the text (~140 B)."""
    return orjson.Fragment(orjson.dumps(tags).decode())


@dataclass
class Telemetry:
    """Numbers, timestamps, encodes and hands each device's messages to the sink."""

    env: simpy.Environment
    start_ms: int
    prefix: str
    sink: Sink
    devices: dict[str, Device] = field(default_factory=dict)
    event_sources: dict[str, Device] = field(default_factory=dict)
    wires: list[Wire] = field(default_factory=list)  # the fleets of compact devices
    generated: int = 0

    def register(self, device_id: str, type: str, domain: str, tags: dict[str, str] | None = None) -> Device:
        if device_id in self.devices:
            raise ValueError(f"device id {device_id!r} is used twice")
        device = Device(
            device_id=device_id,
            type=type,
            domain=domain,
            tags=dict(tags or {}),
            topic=f"{self.prefix}/{domain}/{type}/{device_id}",
        )
        self.devices[device_id] = device
        return device

    def wire(self, type: str, domain: str) -> Wire:
        """The wire of a new fleet of compact devices (simulator/cohort.py)."""
        wire = Wire(type, domain, f"{self.prefix}/{domain}/{type}/")
        self.wires.append(wire)
        return wire

    def device_count(self) -> int:
        """Every device registered: those with their own `Device` and the compact ones."""
        return len(self.devices) + sum(len(wire.devices) for wire in self.wires)

    def device_ids(self) -> Iterator[str]:
        yield from self.devices
        for wire in self.wires:
            for device in wire.devices:
                yield device.device_id

    def now_ms(self) -> int:
        return self.start_ms + round(self.env.now * 1000)

    def payload(self, device_id: str, type: str, seq: int, tags: dict[str, str] | orjson.Fragment, readings: dict[str, Reading]) -> bytes:
        """A message's payload now (the contract above): the one place its JSON is built."""
        return orjson.dumps(
            {
                "device_id": device_id,
                "type": type,
                "ts": self.start_ms + round(self.env.now * 1000),  # now_ms() written out: a call less a message
                "seq": seq,
                "tags": tags,
                "readings": readings,
            }
        )

    def publish(self, device: Device, readings: dict[str, Reading]) -> None:
        payload = self.payload(device.device_id, device.type, device.seq, device.tags, readings)
        device.seq += 1
        self.generated += 1
        self.sink(device.topic, payload)

    def publish_compact(self, wire: Wire, device: Compact, readings: dict[str, Reading]) -> None:
        """`publish` for a compact device: the same payload bytes."""
        payload = self.payload(device.device_id, wire.type, device.seq, device.tags, readings)
        device.seq += 1
        self.generated += 1
        self.sink(wire.topic_base + device.device_id, payload)

    def event(
        self,
        source: str,
        domain: str,
        kind: str,
        severity: str,
        text: str,
        tags: dict[str, str] | None = None,
        **values: Reading,
    ) -> None:
        """Publish a notable event from `source` (a device id or a model's name, e.g. "port-gate")."""
        stream = self.event_sources.get(source)
        if stream is None:
            stream = self.event_sources[source] = Device(source, "events", domain, {}, "")
        readings: dict[str, Reading] = {"text": text, **values}
        event_tags = {"kind": kind, "severity": severity, "domain": domain, **(tags or {})}
        payload = self.payload(source, "events", stream.seq, event_tags, readings)
        stream.seq += 1
        self.generated += 1
        self.sink(f"{self.prefix}/events/{kind}/{source}", payload)
