"""Smart household water meter: the flat's water use and its register, reported like an NB-IoT meter.

A household draws water by the hour of its day (calendar: workday or rest day; a morning peak at
07:00, later on rest days, and the evening's at 19:00-21:00, almost nothing at 03:00), more on hot
days (+2 % per °C above 20 °C, the weather), about 2.5 persons x 130 L a day on average (Chinese
urban domestic use is ~120-180 L a person a day; check), each household's mean log-normal (sd 0.4)
and wandering (AR(1), log-sd 0.3, 2 h: showers and washing machines). The register adds each
interval's volume.

Readings every `cadence` (default 1 h; NB-IoT meters report hourly or daily): flow_lph (L/h, the
household's flow at the report, taken as the interval's mean for the register) and volume_m3
(register, m³, 3 decimals). Tags: district, lat, lon.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import TYPE_CHECKING

import simpy
from pydantic import Field

from simulator.city.common import AR1, DOMAIN, hourly, register
from simulator.city.model import City, city_of
from simulator.device_faults import FaultyReadings
from simulator.device_type import DeviceType, FleetConfig, first_delay, owned_devices, send
from simulator.fleet import Duration
from simulator.randomness import Stream
from simulator.telemetry import FLOAT, Device, Reading, Telemetry

if TYPE_CHECKING:
    from simulator.world import World

# A household's use per local hour as a share of its daily mean (value at the start of the hour).
WORKDAY_USE: tuple[float, ...] = (
    0.30, 0.15, 0.10, 0.08, 0.10, 0.35, 1.40, 2.20, 1.50, 0.80, 0.70, 0.90,
    1.20, 0.90, 0.60, 0.55, 0.70, 1.00, 1.60, 2.10, 2.00, 1.70, 1.20, 0.70,
)  # fmt: skip
REST_DAY_USE: tuple[float, ...] = (
    0.40, 0.20, 0.12, 0.08, 0.08, 0.15, 0.50, 1.20, 1.80, 1.70, 1.40, 1.30,
    1.40, 1.00, 0.80, 0.75, 0.85, 1.10, 1.60, 2.00, 1.90, 1.60, 1.20, 0.80,
)  # fmt: skip
MEAN_LPH = 2.5 * 130.0 / 24.0  # persons x litres a person a day, per hour
HOT_DAY_GAIN = 0.02  # share more per °C above HOT_FROM_C
HOT_FROM_C = 20.0


class Fleet(FleetConfig):
    cadence: Duration = Field(default=3600.0, description="reporting interval (NB-IoT meters: hourly or daily)")


def meter_water(
    env: simpy.Environment, device: Device, city: City, telemetry: Telemetry,
    rng: Stream, faults: FaultyReadings | None, cadence: float, first_delay: float,
) -> Generator[simpy.Event, None, None]:  # fmt: skip
    """The meter integrates the household's flow and reports it with its register."""
    yield env.timeout(first_delay)
    mean_lph = MEAN_LPH * math.exp(rng.gauss(0.0, 0.4))
    wander = AR1(rng, 0.3, 7200.0)
    register_m3 = round(rng.uniform(50.0, 2_000.0), 3)
    while True:
        now = env.now
        profile = WORKDAY_USE if city.calendar.day(now).workday else REST_DAY_USE
        hot = 1.0 + HOT_DAY_GAIN * max(0.0, city.weather.temp_c(now) - HOT_FROM_C)
        flow_lph = mean_lph * hourly(profile, city.calendar.hour(now)) * hot * math.exp(wander.step(rng, now))
        register_m3 += flow_lph * cadence / 3600.0 / 1000.0
        readings: dict[str, Reading] = {"flow_lph": round(flow_lph, 1), "volume_m3": round(register_m3, 3)}
        send(telemetry, device, faults, now, readings)
        yield env.timeout(cadence)


def build(world: World, fleet: Fleet) -> None:
    city = city_of(world)
    for index, device_id in owned_devices(world, fleet):
        device, rng, faults = register(world, fleet, device_id, fleet.district_of(index))
        world.env.process(meter_water(world.env, device, city, world.telemetry, rng, faults, fleet.cadence, first_delay(rng, fleet.cadence)))


DEVICE = DeviceType("water_meter", DOMAIN, "wmeter", Fleet, build, readings={"flow_lph": FLOAT, "volume_m3": FLOAT})
