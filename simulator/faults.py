"""Pipeline faults injected from a scenario's `faults:` section, at simulated times.

In-stream faults change what reaches the broker: a fleet's network `partition` (its devices keep
measuring; their messages wait in an outbox, on disk past a memory bound, and go out in order when
the partition ends), `malformed` payloads at a rate, `duplicates` at a rate, and `clock_skew` on a
fleet. Process faults act on the local stack (`iotsim stack up`, by its PID files): a
`broker_outage`, an `influx_outage` and a `bridge_crash` (kill -9, then the same command again), through
the run's `StackControl` (simulator/stack.py).
Every fault is announced as an event on `{prefix}/events/fault_{kind}/fault-injector` when it
starts and ends, so dashboards can show when it happened. A dry run publishes the events and the
in-stream faults but touches no process. Device faults (dropout, stuck-at, drift ...) belong to
each fleet's own section.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Annotated, Literal, Union

import orjson
import simpy
from pydantic import BeforeValidator, Field, WithJsonSchema

from simulator.fleet import SIGNED_DURATION_JSON_SCHEMA, Duration, StrictModel
from simulator.telemetry import Sink
from simulator.transport.outbox import Outbox
from simulator.units import parse_duration
from simulator.world import World

if TYPE_CHECKING:  # the stack (and InfluxDB's client) only when a run injects process faults: `iotsim validate` needs neither
    from simulator.stack import StackControl

SOURCE = "fault-injector"


def parse_signed_duration(value: object) -> float:
    if isinstance(value, str) and value.strip().startswith("-"):
        return -parse_duration(value.strip()[1:])
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        return float(value)
    return parse_duration(value)


class Window(StrictModel):
    at: Duration = Field(description="simulated time after the start when the fault begins")
    duration: Duration = Field(description="how long it lasts, in simulated time")


class Partition(Window):
    kind: Literal["partition"]
    fleet: str = Field(description="the fleet's device id prefix, e.g. 'aq'; its devices cannot reach the broker")
    buffer_in_memory: int = Field(default=10_000, ge=0, description="messages held in memory before spilling to disk")


class Malformed(StrictModel):
    kind: Literal["malformed"]
    rate: float = Field(gt=0, le=1, description="share of messages followed by a garbage payload on the same topic")


class Duplicates(StrictModel):
    kind: Literal["duplicates"]
    rate: float = Field(gt=0, le=1, description="share of messages delivered twice")


class ClockSkew(StrictModel):
    kind: Literal["clock_skew"]
    fleet: str = Field(description="the fleet's device id prefix")
    offset: Annotated[float, BeforeValidator(parse_signed_duration), WithJsonSchema(SIGNED_DURATION_JSON_SCHEMA, mode="validation")] = Field(
        description="added to the devices' timestamps: '30s', '-2m' (behind) or seconds"
    )


class BrokerOutage(Window):
    kind: Literal["broker_outage"]


class InfluxOutage(Window):
    kind: Literal["influx_outage"]


class BridgeCrash(StrictModel):
    kind: Literal["bridge_crash"]
    at: Duration = Field(description="simulated time of the kill -9")
    restart_after: Duration = Field(default=5.0, description="simulated time until the bridge is started again")


Fault = Annotated[
    Union[Partition, Malformed, Duplicates, ClockSkew, BrokerOutage, InfluxOutage, BridgeCrash], Field(discriminator="kind")
]
PROCESS_FAULTS = ("broker_outage", "influx_outage", "bridge_crash")


def need_every_message(faults: list[Fault]) -> bool:
    """Whether these faults act on the whole world's messages: duplicates and malformed payloads draw
    from one random stream, message after message, and a partition's end event counts every message
    it held. Only a world that generates every message does that as the unsharded run does."""
    return any(isinstance(fault, (Malformed, Duplicates, Partition)) for fault in faults)


class FaultySink:
    """Sits between the telemetry and the real sink and applies the in-stream faults."""

    def __init__(self, sink: Sink, faults: list[Fault], world_seed: int, topic_prefix: str) -> None:
        from simulator.randomness import stream

        self.sink = sink
        self.partitions: dict[str, Outbox] = {}  # fleet prefix -> outbox, while cut off
        self.malformed = next((f.rate for f in faults if isinstance(f, Malformed)), 0.0)
        self.duplicates = next((f.rate for f in faults if isinstance(f, Duplicates)), 0.0)
        self.skews = {f.fleet: round(f.offset * 1000) for f in faults if isinstance(f, ClockSkew)}
        self.rng = stream(world_seed, "faults")
        self.events_topic = f"{topic_prefix}/events/"
        self.injected = {"malformed": 0, "duplicates": 0, "held": 0}

    def __call__(self, topic: str, payload: bytes) -> None:
        if topic.startswith(self.events_topic):
            self.sink(topic, payload)
            return
        fleet = topic.rsplit("/", 1)[-1].rsplit("-", 1)[0]
        if fleet in self.skews:
            message = orjson.loads(payload)
            message["ts"] += self.skews[fleet]
            payload = orjson.dumps(message)
        outbox = self.partitions.get(fleet)
        if outbox is not None:
            outbox.put(topic, payload)
            self.injected["held"] += 1
            return
        self.deliver(topic, payload)

    def deliver(self, topic: str, payload: bytes) -> None:
        self.sink(topic, payload)
        if self.duplicates and self.rng.random() < self.duplicates:
            self.sink(topic, payload)
            self.injected["duplicates"] += 1
        if self.malformed and self.rng.random() < self.malformed:
            self.sink(topic, garbage(self.rng.randrange(4), payload))
            self.injected["malformed"] += 1

    def cut_off(self, fleet: str, memory_bound: int) -> None:
        self.partitions[fleet] = Outbox(memory_bound)

    def reconnect(self, fleet: str) -> int:
        outbox = self.partitions.pop(fleet)
        held = len(outbox)
        for topic, payload in outbox.drain():
            self.deliver(topic, payload)
        return held


def garbage(variant: int, payload: bytes) -> bytes:
    """What broken firmware sends: a truncated message, binary noise, a wrong type, a missing key."""
    if variant == 0:
        return payload[: len(payload) // 2]
    if variant == 1:
        return b"\x00\xff\x13garbage\x07"
    message = orjson.loads(payload)
    if variant == 2:
        message["ts"] = str(message["ts"])
    else:
        del message["readings"]
    return orjson.dumps(message)


def inject(world: World, faults: list[Fault], faulty: FaultySink, control: StackControl | None) -> None:
    """Start one SimPy process per fault that has a time."""
    for fault in faults:
        if isinstance(fault, Partition):
            world.env.process(cut_off_fleet(world, fault, faulty))
        elif isinstance(fault, (BrokerOutage, InfluxOutage)):
            world.env.process(stop_service(world, fault, control))
        elif isinstance(fault, BridgeCrash):
            world.env.process(crash_bridge(world, fault, control))
        else:
            world.env.process(announce_stream_fault(world, fault))


def announce(world: World, kind: str, text: str, phase: str, **values: float | str) -> None:
    world.telemetry.event(SOURCE, "pipeline", f"fault_{kind}", "warning", text, tags={"phase": phase}, **values)


def announce_stream_fault(world: World, fault: Malformed | Duplicates | ClockSkew) -> Generator[simpy.Event, None, None]:
    """Rates and skews apply for the whole run: announced once, at the start."""
    detail = f"fleet {fault.fleet}, offset {fault.offset:+g} s" if isinstance(fault, ClockSkew) else f"rate {fault.rate:g}"
    announce(world, fault.kind, f"{fault.kind} for the whole run ({detail})", "start")
    yield world.env.timeout(0)


def cut_off_fleet(world: World, fault: Partition, faulty: FaultySink) -> Generator[simpy.Event, None, None]:
    yield world.env.timeout(fault.at)
    announce(world, "partition", f"fleet {fault.fleet} cannot reach the broker", "start", fleet=fault.fleet)
    faulty.cut_off(fault.fleet, fault.buffer_in_memory)
    yield world.env.timeout(fault.duration)
    held = faulty.reconnect(fault.fleet)
    announce(world, "partition", f"fleet {fault.fleet} reconnected; sent {held} held messages in order", "end", fleet=fault.fleet, held=float(held))


def stop_service(world: World, fault: BrokerOutage | InfluxOutage, control: StackControl | None) -> Generator[simpy.Event, None, None]:
    name = "mosquitto" if fault.kind == "broker_outage" else "influxdb"
    yield world.env.timeout(fault.at)
    announce(world, fault.kind, f"{name} stopped", "start")
    port = control.stop(name) if control else 0
    yield world.env.timeout(fault.duration)
    if control:
        control.start(name, port)
    announce(world, fault.kind, f"{name} started again", "end")


def crash_bridge(world: World, fault: BridgeCrash, control: StackControl | None) -> Generator[simpy.Event, None, None]:
    yield world.env.timeout(fault.at)
    announce(world, "bridge_crash", "bridge killed (SIGKILL)", "start")
    argv = control.crash_bridge() if control else []
    yield world.env.timeout(fault.restart_after)
    if control:
        control.restart_bridge(argv)
    announce(world, "bridge_crash", "bridge started again", "end")
