"""Traffic loop detector: vehicles counted, occupancy and speed on one road (simulator/city/roads.py).

Each detector sits on a road (round-robin over `roads`, default every road of `city.traffic.roads`)
and reads the road's state: the vehicles it counts in an interval are Poisson with the road's flow
(all lanes) as mean; speed is the road's speed with 4 % measurement spread; occupancy (share of time
the loop is covered) scales with the vehicles counted. An incident on the road or a neighbour lowers
its speed and raises its occupancy (roads.py). Detectors report every 20 s-5 min
(shared/domain.md, "Traffic loop detectors").

Readings every `cadence` (default 1 min): volume (vehicles in the interval), flow_vph (vehicles per
hour, all lanes, 0-~9,000), occupancy_pct (0-95 %), speed_kmh (0-~120 km/h).
Tags: district (the road's), lat, lon, road.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import simpy
from pydantic import Field

from simulator.city.common import DOMAIN, near, poisson, register
from simulator.city.model import city_of
from simulator.city.roads import Road, RoadNetwork
from simulator.device_faults import FaultyReadings
from simulator.device_type import DeviceType, FleetConfig, first_delay, owned_devices, send
from simulator.fleet import Duration
from simulator.randomness import Stream
from simulator.telemetry import FLOAT, Device, Reading, Telemetry

if TYPE_CHECKING:
    from simulator.world import World


class Fleet(FleetConfig):
    cadence: Duration = Field(default=60.0, description="reporting interval (loops: 20 s - 5 min)")
    roads: list[str] | None = Field(default=None, description="roads to instrument, round-robin; null: every road of city.traffic")


def measure(
    env: simpy.Environment, device: Device, road: Road, network: RoadNetwork, telemetry: Telemetry,
    rng: Stream, faults: FaultyReadings | None, cadence: float, first_delay: float,
) -> Generator[simpy.Event, None, None]:  # fmt: skip
    """The loop counts the vehicles passing over it and reports each interval."""
    yield env.timeout(first_delay)
    lanes = road.settings.lanes
    while True:
        state = network.state(road, env.now)
        expected = state.flow_vphpl * lanes * cadence / 3600.0
        volume = poisson(rng, expected)
        occupancy = state.occupancy_pct * (volume / expected if expected > 0 else 0.0)
        readings: dict[str, Reading] = {
            "volume": volume,
            "flow_vph": round(volume * 3600.0 / cadence, 1),
            "occupancy_pct": round(min(occupancy, 95.0), 1),
            "speed_kmh": round(max(state.speed_kmh * (1.0 + 0.04 * rng.gauss(0.0, 1.0)), 0.0), 1),
        }
        send(telemetry, device, faults, env.now, readings)
        yield env.timeout(cadence)


def build(world: World, fleet: Fleet) -> None:
    city = city_of(world)
    network = city.roads
    names = fleet.roads or list(network.roads)  # checked against the network by CitySettings.check_fleets
    for index, device_id in owned_devices(world, fleet):
        road = network.roads[names[index % len(names)]]
        site = near(road.settings.lat, road.settings.lon, world.rng(f"{device_id}/site"))
        device, rng, faults = register(world, fleet, device_id, road.settings.district, site, road=road.name)
        world.env.process(measure(world.env, device, road, network, world.telemetry, rng, faults, fleet.cadence, first_delay(rng, fleet.cadence)))


DEVICE = DeviceType("traffic_loop", DOMAIN, "loop", Fleet, build, readings=dict.fromkeys(("volume", "flow_vph", "occupancy_pct", "speed_kmh"), FLOAT))
