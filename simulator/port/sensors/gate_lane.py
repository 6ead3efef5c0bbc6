"""`gate_lane`: the controller of one OCR/RFID gate lane (simulator/port/gate.py).

One per lane (G1 G2 in, G3 G4 out by default), every `cadence`: queue_length (trucks waiting for a
lane of this lane's direction: the shared queue), busy (a truck in the lane), service_time_s (the
last truck's), trucks_served (count since the start of the run).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import simpy
from pydantic import Field

from simulator.device_faults import FaultyReadings
from simulator.device_type import DeviceType, first_delay, owned_devices, register_device, send
from simulator.fleet import Duration
from simulator.port.gate import Gate, Lane
from simulator.port.model import DOMAIN, port_of
from simulator.port.settings import PortFleet, PortSettings
from simulator.telemetry import BOOLEAN, FLOAT, Device, Reading, Telemetry

if TYPE_CHECKING:
    from simulator.world import World


class Fleet(PortFleet):
    cadence: Duration = Field(default=30.0, description="reporting interval")

    @classmethod
    def plant(cls, port: PortSettings) -> tuple[int, str]:
        return port.gate.in_lanes + port.gate.out_lanes, "port.gate"


def report(
    env: simpy.Environment, gate: Gate, lane: Lane, device: Device, telemetry: Telemetry, faults: FaultyReadings | None, cadence: float, first_delay: float
) -> Generator[simpy.Event, None, None]:
    """A lane's controller reports the queue at its gate and its own work."""
    yield env.timeout(first_delay)
    while True:
        readings: dict[str, Reading] = {
            "queue_length": float(gate.waiting),
            "busy": lane.busy,
            "service_time_s": round(lane.last_service_s, 1),
            "trucks_served": float(lane.served),
        }
        send(telemetry, device, faults, env.now, readings)
        yield env.timeout(cadence)


def build(world: World, fleet: Fleet) -> None:
    port = port_of(world)
    lanes = [(port.gate_in, lane) for lane in port.gate_in.lanes] + [(port.gate_out, lane) for lane in port.gate_out.lanes]
    instrumented = port.instrument(fleet.type, fleet.count, lanes)  # the whole fleet's, in every shard
    for index, device_id in owned_devices(world, fleet):
        gate, lane = instrumented[index]
        device, faults = register_device(world, fleet, device_id, {"lane": lane.name, "direction": lane.direction})
        delay = first_delay(world.rng(device_id), fleet.cadence)
        world.env.process(report(world.env, gate, lane, device, world.telemetry, faults, fleet.cadence, delay))


DEVICE = DeviceType("gate_lane", DOMAIN, "port-lane", Fleet, build, readings={"queue_length": FLOAT, "busy": BOOLEAN, "service_time_s": FLOAT, "trucks_served": FLOAT})
