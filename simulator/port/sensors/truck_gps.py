"""`truck_gps`: the GPS tracker on a corridor truck (simulator/port/corridor.py).

One per truck (H001..), every `cadence` (GPS every 10-60 s, shared/domain.md), with GPS noise (~5 m,
~1 km/h): lat, lon (degrees WGS 84), speed_kmh, state ("driving" | "resting" | "at_tianjin" |
"at_port"), loaded.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import simpy
from pydantic import Field

from simulator.device_faults import FaultyReadings
from simulator.device_type import DeviceType, first_delay, owned_devices, register_device, send
from simulator.fleet import Duration
from simulator.port.corridor import HaulTruck, position
from simulator.port.model import DOMAIN, port_of
from simulator.port.settings import PortFleet, PortSettings
from simulator.randomness import Stream
from simulator.telemetry import BOOLEAN, FLOAT, STRING, Device, Reading, Telemetry

if TYPE_CHECKING:
    from simulator.world import World


class Fleet(PortFleet):
    cadence: Duration = Field(default=30.0, description="reporting interval (GPS trackers: 10-60 s)")

    @classmethod
    def plant(cls, port: PortSettings) -> tuple[int, str]:
        return port.corridor.trucks, "port.corridor.trucks"


def report(
    env: simpy.Environment, truck: HaulTruck, road_km: float, device: Device, telemetry: Telemetry, rng: Stream,
    faults: FaultyReadings | None, cadence: float, first_delay: float,
) -> Generator[simpy.Event, None, None]:  # fmt: skip
    """The tracker reports the truck's position and speed."""
    yield env.timeout(first_delay)
    while True:
        lat, lon = position(truck.km(env.now) / road_km)
        driving = truck.state == "driving"
        readings: dict[str, Reading] = {
            "lat": round(lat + rng.gauss(0.0, 0.00005), 6),
            "lon": round(lon + rng.gauss(0.0, 0.00005), 6),
            "speed_kmh": round(max(0.0, truck.speed_kmh + rng.gauss(0.0, 1.0)), 1) if driving else 0.0,
            "state": truck.state,
            "loaded": truck.box is not None,
        }
        send(telemetry, device, faults, env.now, readings)
        yield env.timeout(cadence)


def build(world: World, fleet: Fleet) -> None:
    port = port_of(world)
    trucks = port.instrument(fleet.type, fleet.count, port.haul_trucks)  # the whole fleet's, in every shard
    for index, device_id in owned_devices(world, fleet):
        truck = trucks[index]
        device, faults = register_device(world, fleet, device_id, {"truck": truck.name})
        rng = world.rng(device_id)
        delay = first_delay(rng, fleet.cadence)
        world.env.process(report(world.env, truck, port.settings.corridor.road_km, device, world.telemetry, rng, faults, fleet.cadence, delay))


DEVICE = DeviceType("truck_gps", DOMAIN, "port-truck", Fleet, build, readings={"lat": FLOAT, "lon": FLOAT, "speed_kmh": FLOAT, "state": STRING, "loaded": BOOLEAN})
