"""Fleets that schedule their devices together: one SimPy process per fleet (a cohort), not one per device.

A city has a million meters; a SimPy process, its generator and its pending timeout cost a device
about 1.3 KB and put one entry per device on the environment's heap (docs/scale.md). A fleet whose
devices all report on one cadence needs none of that: device i reports at phase[i] + k x cadence
(its phase: `first_delay`, whole milliseconds). A `Cohort` keeps the fleet's devices sorted by
(phase, index) and `report_rounds` walks them round after round, one `env.timeout` per distinct
report time; the devices due at one time report in (phase, index) order.

Each device's messages are what its own process would have sent: its report times are the same
floats (phase, then + cadence again and again, as a process's timeouts add them up), its random
stream and state are its own, and `env.now` is exactly its report time when it reports. Only the
order of messages with the same timestamp can differ from per-device processes (SimPy orders those
by its heap's history; a cohort by phase and index, which never depends on history).

A device type keeps its model: its module has a state class deriving from `Member` (slots: only
what the device needs between reports) and computes its readings there; `send_member` passes them
through the device's faults (`device_type.after_faults`, as `device_type.send` does for a device of
its own) to the telemetry.
A device with device faults stays in the cohort (its faults are a slot, None for a healthy device);
the announcements of its faults are processes of their own, as for every device.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

import orjson
import simpy

from simulator.device_faults import FaultyReadings, faults_for
from simulator.device_type import FleetConfig, after_faults
from simulator.telemetry import Compact, Reading, Telemetry, Wire, encode_tags

if TYPE_CHECKING:
    from simulator.world import World


class Member(Compact):
    """A device of a cohort: its identity on the wire (`Compact`) and its faults (None: healthy)."""

    __slots__ = ("faults",)

    def __init__(self, device_id: str, tags: orjson.Fragment, faults: FaultyReadings | None) -> None:
        super().__init__(device_id, tags)
        self.faults = faults


M = TypeVar("M", bound=Member)
Report = Callable[[M, float], None]  # a device reports at a time: measures and sends
Complete = Callable[[M, float, dict[str, Reading]], None]  # what a device adds to what it sends, from the faulty values


def delay_to(now: float, at: float) -> float:
    """The timeout delay that puts `env.now` exactly on `at`: `now + (at - now)` can round a bit off,
    and a device's readings (and ts) must see the very time its own process would have."""
    delay = at - now
    while now + delay < at:
        delay = math.nextafter(delay, math.inf)
    while now + delay > at:
        delay = math.nextafter(delay, -math.inf)
    return delay


def report_rounds(
    env: simpy.Environment, devices: Sequence[M], starts: Sequence[int], times: array[float], cadence: float, report: Report[M]
) -> Generator[simpy.Event, None, None]:
    """Walk a cohort's devices round after round: group g (the devices `starts[g]` to `starts[g + 1]`,
    one phase) reports at `times[g]`, which then moves on by `cadence`."""
    groups = len(times)
    while True:
        for group in range(groups):
            at = times[group]
            yield env.timeout(delay_to(env.now, at))  # also at a phase of 0: after the world's start, as a process's first timeout
            for position in range(starts[group], starts[group + 1]):
                report(devices[position], at)
            times[group] = at + cadence


class Cohort(Generic[M]):
    """A fleet's devices on one cadence, gathered while the fleet is built, then run by one process."""

    def __init__(self, world: World, fleet: FleetConfig, cadence: float) -> None:
        self.world = world
        self.fleet = fleet
        self.cadence = cadence
        self.wire: Wire = world.telemetry.wire(fleet.type, fleet.device_type.domain)
        self.telemetry: Telemetry = world.telemetry
        self._devices: list[M] = []
        self._phases = array("d")

    def enlist(self, device_id: str, tags: dict[str, str]) -> tuple[orjson.Fragment, FaultyReadings | None]:
        """Register a device as `register_device` does (the build's count, its faults and their
        announcements): its tags encoded once, and its faults (None: a healthy device)."""
        world, fleet = self.world, self.fleet
        if world.registered is not None:
            world.registered()
        faults = faults_for(world.env, world.telemetry, device_id, fleet.type, self.wire.domain, fleet.faults, world.seed) if fleet.faults else None
        return encode_tags(tags), faults

    def add(self, device: M, phase: float) -> None:
        """A device of the fleet, in the order of the fleet's indices, reporting first at `phase` seconds."""
        self._devices.append(device)
        self._phases.append(phase)

    def start(self, report: Report[M]) -> None:
        """Sort the devices by (phase, index) and start the fleet's one process."""
        phases = self._phases
        order = sorted(range(len(phases)), key=phases.__getitem__)  # stable: equal phases keep the index order
        devices = [self._devices[position] for position in order]
        self._devices, self._phases = [], array("d")
        self.wire.devices = devices  # type: ignore[assignment]  # the telemetry's count and ids
        if not devices:
            return  # a shard that owns none of the fleet
        starts, times = array("l"), array("d")
        now = self.world.env.now
        previous = -1.0
        for position, index in enumerate(order):
            if phases[index] != previous:
                previous = phases[index]
                starts.append(position)
                times.append(now + previous)  # as a device process's first timeout: now + first_delay
        starts.append(len(devices))
        self.world.env.process(report_rounds(self.world.env, devices, starts, times, self.cadence, report))


def send_member(
    telemetry: Telemetry, wire: Wire, device: M, now: float, readings: dict[str, Reading], complete: Complete[M] | None = None
) -> None:
    """`device_type.send` for a cohort's device: its faults (if any) change or silence what it
    measured; what is left, with what `complete` adds from it, is published."""
    sent = after_faults(device.faults, now, readings)
    if sent is None:
        return  # silenced by a fault
    if complete is not None:
        complete(device, now, sent)
    telemetry.publish_compact(wire, device, sent)
