"""Noise monitor: A-weighted equivalent sound level beside a road, against its GB 3096-2008 limit.

A monitor stands by a road (round-robin over `roads`) in an acoustic zone class (round-robin over
`zone_classes`). Road traffic noise grows with 10 lg(flow); stop-and-go traffic (an incident's
queue: acceleration, horns) adds up to 10 dB as the speed falls below free flow; the zone's distance
from the kerb takes `ZONE_OFFSET_DB` off; a background level (day/night) is added energetically;
a slow wander (AR(1), 1.2 dB, 15 min) stands for everything else. Limits day/night dB(A) (GB
3096-2008, shared/domain.md "Noise"): class 1 residential 55/45, 2 mixed 60/50, 3 industrial 65/55,
4a roadside 70/55; day is 06:00-22:00.

Readings every `cadence` (default 1 min): laeq_dba (LAeq over the interval, dB(A), ~35-85),
lmax_dba (dB(A)), limit_dba (the zone's limit now), over_limit (bool). Tags: district, lat, lon,
road, zone_class.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import TYPE_CHECKING, Literal

import simpy
from pydantic import Field

from simulator.city.calendar import CityCalendar
from simulator.city.common import AR1, DOMAIN, near, register
from simulator.city.model import city_of
from simulator.city.roads import Road, RoadNetwork
from simulator.device_faults import FaultyReadings
from simulator.device_type import Complete, DeviceType, FleetConfig, first_delay, owned_devices, send
from simulator.fleet import Duration
from simulator.randomness import Stream
from simulator.telemetry import BOOLEAN, FLOAT, Device, Reading, Telemetry

if TYPE_CHECKING:
    from simulator.world import World

ZoneClass = Literal["1", "2", "3", "4a"]
LIMITS_DBA: dict[str, tuple[float, float]] = {"1": (55.0, 45.0), "2": (60.0, 50.0), "3": (65.0, 55.0), "4a": (70.0, 55.0)}
ZONE_OFFSET_DB: dict[str, float] = {"1": -18.0, "2": -11.0, "3": -8.0, "4a": 0.0}  # farther from the kerb: quieter
BACKGROUND_DBA: dict[str, tuple[float, float]] = {"1": (42.0, 35.0), "2": (46.0, 38.0), "3": (55.0, 50.0), "4a": (48.0, 40.0)}
TRAFFIC_REFERENCE_DB = 35.0  # LAeq at the kerb is 35 + 10 lg(vehicles per hour): ~70 dB(A) at 3,000 veh/h
CONGESTION_DB = 10.0


class Fleet(FleetConfig):
    cadence: Duration = Field(default=60.0, description="reporting interval (LAeq over it)")
    roads: list[str] | None = Field(default=None, description="roads the monitors stand by, round-robin; null: every road")
    zone_classes: list[ZoneClass] = Field(default=["4a", "2", "1", "3"], min_length=1, description="GB 3096 zone classes, round-robin")


def listen(
    env: simpy.Environment, device: Device, road: Road, zone: str, network: RoadNetwork, calendar: CityCalendar,
    telemetry: Telemetry, rng: Stream, faults: FaultyReadings | None, cadence: float, first_delay: float,
) -> Generator[simpy.Event, None, None]:  # fmt: skip
    """The monitor integrates the sound of its road over each interval."""
    yield env.timeout(first_delay)
    lanes = road.settings.lanes
    wander = AR1(rng, 1.2, 900.0)
    while True:
        now = env.now
        state = network.state(road, now)
        hour = calendar.hour(now)
        day = 6.0 <= hour < 22.0
        congestion = max(0.0, 1.0 - state.speed_kmh / state.free_flow_kmh)
        traffic_db = TRAFFIC_REFERENCE_DB + 10.0 * math.log10(max(state.flow_vphpl * lanes, 1.0)) + CONGESTION_DB * congestion + ZONE_OFFSET_DB[zone]
        background_db = BACKGROUND_DBA[zone][0 if day else 1]
        laeq = 10.0 * math.log10(10.0 ** (traffic_db / 10.0) + 10.0 ** (background_db / 10.0)) + wander.step(rng, now)
        limit = LIMITS_DBA[zone][0 if day else 1]
        readings: dict[str, Reading] = {"laeq_dba": round(laeq, 1), "lmax_dba": round(laeq + 6.0 + rng.expovariate(1 / 3.0), 1)}
        send(telemetry, device, faults, now, readings, against_limit(limit))
        yield env.timeout(cadence)


def against_limit(limit: float) -> Complete:
    """The monitor compares the level it read with its zone's limit now."""

    def complete(readings: dict[str, Reading]) -> None:
        readings["limit_dba"] = limit
        readings["over_limit"] = readings["laeq_dba"] > limit  # type: ignore[operator]

    return complete


def build(world: World, fleet: Fleet) -> None:
    city = city_of(world)
    network = city.roads
    names = fleet.roads or list(network.roads)  # checked against the network by CitySettings.check_fleets
    for index, device_id in owned_devices(world, fleet):
        road = network.roads[names[index % len(names)]]
        zone = fleet.zone_classes[index % len(fleet.zone_classes)]
        site = near(road.settings.lat, road.settings.lon, world.rng(f"{device_id}/site"))
        device, rng, faults = register(world, fleet, device_id, road.settings.district, site, road=road.name, zone_class=zone)
        world.env.process(
            listen(world.env, device, road, zone, network, city.calendar, world.telemetry, rng, faults, fleet.cadence, first_delay(rng, fleet.cadence))
        )


DEVICE = DeviceType("noise_monitor", DOMAIN, "noise", Fleet, build, readings={"laeq_dba": FLOAT, "lmax_dba": FLOAT},
    also_sends={"limit_dba": FLOAT, "over_limit": BOOLEAN},  # added after faults
)  # fmt: skip
