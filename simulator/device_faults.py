"""Device faults: what a failing sensor really sends, configured per fleet (`faults:` in any fleet).

| kind | the device ... |
|---|---|
| `dropout` | sends nothing from `at` for `duration` (radio or power loss), then carries on |
| `stuck` | repeats the value(s) it read at `at` for `duration` (null: to the end of the run) |
| `drift` | reads `per_day` too high (negative: too low) per day since `at`, until `duration` ends (recalibration) |
| `spikes` | multiplies a reading by `factor` in a share `rate` of its messages while active |
| `battery_death` | sends nothing from `at` to the end of the run |

A fault applies to the devices listed in `devices` (ids), or to a share `share` of the fleet picked
from the seed. `reading` names the reading affected (default: every numeric reading; `spikes`: one
chosen at random per spike). The device's own logic sees the faulty values (a stuck methane sensor
raises no alarm), and a silent device sends no message, so its `seq` has no gap: nothing was sent.
Each fault on each device is announced as a `device_fault` event from the device (tags `phase`
start/end and `fault`) so dashboards can mark it.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Annotated, Literal, Union

import simpy
from pydantic import BeforeValidator, Field, PlainSerializer, WithJsonSchema, model_validator

from simulator.fleet import DURATION_OR_ZERO_JSON_SCHEMA, Duration, StrictModel, parse_duration_or_zero
from simulator.randomness import Stream, stream
from simulator.telemetry import Reading
from simulator.units import format_duration

if TYPE_CHECKING:
    from simulator.telemetry import Telemetry

Readings = dict[str, Reading]


Offset = Annotated[
    float,
    BeforeValidator(parse_duration_or_zero),  # 0: the fault is there from the start
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(DURATION_OR_ZERO_JSON_SCHEMA, mode="validation"),
    Field(description="seconds after the start; '0s', '90s', '5m', '1h', '2d'"),
]


class FaultBase(StrictModel):
    devices: list[str] = Field(default_factory=list, description="ids of the devices with this fault")
    share: float | None = Field(default=None, gt=0, le=1, description="or: this share of the fleet, picked from the seed")
    at: Offset = Field(default=0.0, description="simulated time after the start when the fault begins")

    @model_validator(mode="after")
    def _devices_or_share(self) -> FaultBase:
        if bool(self.devices) == (self.share is not None):
            raise ValueError("give either `devices` (a list of ids) or `share` (a share of the fleet)")
        return self

    def applies_to(self, seed: int, device_id: str, index: int) -> bool:
        if self.devices:
            return device_id in self.devices
        assert self.share is not None
        return stream(seed, f"{device_id}/fault-{index}").random() < self.share

    def end(self) -> float:
        duration = getattr(self, "duration", None)
        return float("inf") if duration is None else self.at + duration


class Dropout(FaultBase):
    kind: Literal["dropout"]
    duration: Duration = Field(description="how long the device is silent")


class Stuck(FaultBase):
    kind: Literal["stuck"]
    duration: Duration | None = Field(default=None, description="how long it stays stuck; null: to the end")
    reading: str | None = Field(default=None, description="the stuck reading; null: every reading")


class Drift(FaultBase):
    kind: Literal["drift"]
    duration: Duration | None = Field(default=None, description="until recalibration; null: to the end")
    reading: str = Field(description="the drifting reading")
    per_day: float = Field(description="error added per day since `at`, in the reading's unit")


class Spikes(FaultBase):
    kind: Literal["spikes"]
    duration: Duration | None = Field(default=None, description="how long the sensor spikes; null: to the end")
    reading: str | None = Field(default=None, description="the spiking reading; null: one numeric reading at random")
    rate: float = Field(default=0.02, gt=0, le=1, description="share of messages with a spike")
    factor: float = Field(default=5.0, description="a spike multiplies the reading by this")


class BatteryDeath(FaultBase):
    kind: Literal["battery_death"]


DeviceFault = Annotated[Union[Dropout, Stuck, Drift, Spikes, BatteryDeath], Field(discriminator="kind")]


def _is_number(value: Reading) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class FaultyReadings:
    """One device's active faults, applied to each set of readings it measures."""

    def __init__(self, faults: list[DeviceFault], rng: Stream) -> None:
        self.faults = faults
        self.rng = rng
        self.stuck_values: dict[int, Readings] = {}

    def apply(self, now: float, readings: Readings) -> Readings | None:
        """What the device sends at `now` instead of `readings`; None: it sends nothing."""
        for index, fault in enumerate(self.faults):
            if now < fault.at or now >= fault.end():
                continue
            if isinstance(fault, (Dropout, BatteryDeath)):
                return None
            readings = dict(readings)
            if isinstance(fault, Stuck):
                frozen = self.stuck_values.get(index)
                if frozen is None:
                    names = [fault.reading] if fault.reading else list(readings)
                    frozen = self.stuck_values[index] = {name: readings[name] for name in names if name in readings}
                readings.update(frozen)
            elif isinstance(fault, Drift):
                value = readings.get(fault.reading)
                if value is not None and _is_number(value):
                    readings[fault.reading] = round(value + fault.per_day * (now - fault.at) / 86400.0, 3)  # type: ignore[operator]
            elif isinstance(fault, Spikes) and self.rng.random() < fault.rate:
                names = [fault.reading] if fault.reading else [name for name, value in readings.items() if _is_number(value)]
                name = names[0] if len(names) == 1 else self.rng.choice(names)
                value = readings.get(name)
                if value is not None and _is_number(value):
                    readings[name] = round(value * fault.factor, 3)  # type: ignore[operator]
        return readings


def faults_for(
    env: simpy.Environment, telemetry: Telemetry, device_id: str, device_type: str, domain: str, faults: list[DeviceFault], seed: int
) -> FaultyReadings | None:
    """The faults of the device `device_id` (of `device_type`, in `domain`) among its fleet's (None: a
    healthy device), announced as events."""
    mine = [fault for index, fault in enumerate(faults) if fault.applies_to(seed, device_id, index)]
    if not mine:
        return None
    for fault in mine:
        env.process(announce(env, fault, device_id, device_type, domain, telemetry))
    return FaultyReadings(mine, stream(seed, f"{device_id}/faults"))


def announce(
    env: simpy.Environment, fault: DeviceFault, device_id: str, device_type: str, domain: str, telemetry: Telemetry
) -> Generator[simpy.Event, None, None]:
    """Publish a `device_fault` event when the fault begins and, if it ends, when it ends."""
    tags = {"phase": "start", "fault": fault.kind, "device_type": device_type}
    yield env.timeout(fault.at)
    telemetry.event(device_id, domain, "device_fault", "warning", f"{device_id}: {fault.kind.replace('_', ' ')}", tags=tags)
    end = fault.end()
    if end != float("inf"):
        yield env.timeout(end - fault.at)
        telemetry.event(device_id, domain, "device_fault", "info", f"{device_id}: {fault.kind.replace('_', ' ')} over", tags={**tags, "phase": "end"})
