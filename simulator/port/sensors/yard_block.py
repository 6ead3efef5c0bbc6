"""`yard_block`: the stacking sensor of a yard block (simulator/port/yard.py).

One per block (A1 A2 A3 B1 B2 R1 by default), every `cadence`: occupancy_teu, capacity_teu,
utilisation (occupancy / capacity, 0-1), boxes (count).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import simpy
from pydantic import Field

from simulator.device_faults import FaultyReadings
from simulator.device_type import DeviceType, first_delay, owned_devices, register_device, send
from simulator.fleet import Duration
from simulator.port.model import DOMAIN, port_of
from simulator.port.settings import PortFleet, PortSettings
from simulator.port.yard import Block
from simulator.telemetry import FLOAT, Device, Reading, Telemetry

if TYPE_CHECKING:
    from simulator.world import World


class Fleet(PortFleet):
    cadence: Duration = Field(default=300.0, description="reporting interval")

    @classmethod
    def plant(cls, port: PortSettings) -> tuple[int, str]:
        return len(port.yard.blocks), "port.yard.blocks"


def report(
    env: simpy.Environment, block: Block, device: Device, telemetry: Telemetry, faults: FaultyReadings | None, cadence: float, first_delay: float
) -> Generator[simpy.Event, None, None]:
    """A block's stacking sensor reports how full the block is."""
    yield env.timeout(first_delay)
    while True:
        level = block.space.level
        readings: dict[str, Reading] = {
            "occupancy_teu": float(level),
            "capacity_teu": float(block.capacity_teu),
            "utilisation": round(level / block.capacity_teu, 4),
            "boxes": float(len(block.boxes)),
        }
        send(telemetry, device, faults, env.now, readings)
        yield env.timeout(cadence)


def build(world: World, fleet: Fleet) -> None:
    port = port_of(world)
    blocks = port.instrument(fleet.type, fleet.count, port.yard.blocks)  # the whole fleet's, in every shard
    for index, device_id in owned_devices(world, fleet):
        block = blocks[index]
        device, faults = register_device(world, fleet, device_id, {"block": block.name, "kind": block.kind})
        delay = first_delay(world.rng(device_id), fleet.cadence)
        world.env.process(report(world.env, block, device, world.telemetry, faults, fleet.cadence, delay))


DEVICE = DeviceType("yard_block", DOMAIN, "port-yard", Fleet, build, readings=dict.fromkeys(("occupancy_teu", "capacity_teu", "utilisation", "boxes"), FLOAT))
