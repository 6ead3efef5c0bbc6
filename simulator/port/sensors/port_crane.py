"""`port_crane`: the PLC of a gantry crane or reach stacker (simulator/port/cranes.py).

One per machine (RMG1, RMG2, then RS1..), every `cadence`: status ("idle" | "moving"), moves (count
since the start of the run), power_kw, energy_kwh.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import simpy
from pydantic import Field

from simulator.device_faults import FaultyReadings
from simulator.device_type import DeviceType, first_delay, owned_devices, register_device, send
from simulator.fleet import Duration
from simulator.port.cranes import Crane
from simulator.port.model import DOMAIN, port_of
from simulator.port.settings import PortFleet, PortSettings
from simulator.telemetry import FLOAT, STRING, Device, Reading, Telemetry

if TYPE_CHECKING:
    from simulator.world import World


class Fleet(PortFleet):
    cadence: Duration = Field(default=60.0, description="reporting interval")

    @classmethod
    def plant(cls, port: PortSettings) -> tuple[int, str]:
        return port.cranes.gantry_cranes + port.cranes.reach_stackers, "port.cranes"


def report(
    env: simpy.Environment, crane: Crane, device: Device, telemetry: Telemetry, faults: FaultyReadings | None, cadence: float, first_delay: float
) -> Generator[simpy.Event, None, None]:
    """A crane's PLC reports its state, move counter and power meter."""
    yield env.timeout(first_delay)
    while True:
        now = env.now
        readings: dict[str, Reading] = {
            "status": "moving" if crane.move_started is not None else "idle",
            "moves": float(crane.moves),
            "power_kw": round(crane.power_kw(), 1),
            "energy_kwh": round(crane.energy_kwh(now), 2),
        }
        send(telemetry, device, faults, now, readings)
        yield env.timeout(cadence)


def build(world: World, fleet: Fleet) -> None:
    port = port_of(world)
    machines = port.rmgs.machines + port.reach_stackers.machines
    cranes = port.instrument(fleet.type, fleet.count, machines)  # the whole fleet's, in every shard
    for index, device_id in owned_devices(world, fleet):
        crane = cranes[index]
        device, faults = register_device(world, fleet, device_id, {"crane": crane.name, "kind": crane.kind})
        delay = first_delay(world.rng(device_id), fleet.cadence)
        world.env.process(report(world.env, crane, device, world.telemetry, faults, fleet.cadence, delay))


DEVICE = DeviceType("port_crane", DOMAIN, "port-crane", Fleet, build, readings={"status": STRING, "moves": FLOAT, "power_kw": FLOAT, "energy_kwh": FLOAT})
