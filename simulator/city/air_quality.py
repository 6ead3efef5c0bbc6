"""Air-quality monitoring station: PM2.5, PM10, SO2, NO2, CO, O3.

Concentrations follow a diurnal cycle (PM and SO2 peak in the morning inversion, O3 in the
afternoon) with autocorrelated lognormal noise (an AR(1) process per pollutant), as hourly data from
northern coal cities look. Units: µg/m³, CO in mg/m³ (HJ 633-2012). Winter levels in northern coal
cities: PM2.5 daily means often 75-200 µg/m³ (shared/domain.md, "Air quality").
"""

from __future__ import annotations

import math
import random
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import simpy
from pydantic import Field

from simulator.fleet import Duration, FleetConfig
from simulator.telemetry import Device, Telemetry

if TYPE_CHECKING:
    from simulator.world import World

ID_PREFIX = "aq"


@dataclass(frozen=True)
class Pollutant:
    name: str
    mean: float  # long-run level at the station
    diurnal_amplitude: float  # fraction of the mean
    peak_hour: float  # local hour of the diurnal maximum
    decimals: int


POLLUTANTS: tuple[Pollutant, ...] = (
    Pollutant("pm25", 85.0, 0.30, 8.0, 1),
    Pollutant("pm10", 140.0, 0.30, 8.5, 1),
    Pollutant("so2", 45.0, 0.35, 9.0, 1),
    Pollutant("no2", 40.0, 0.25, 19.0, 1),
    Pollutant("co", 1.4, 0.30, 8.0, 2),
    Pollutant("o3", 45.0, 0.60, 15.0, 1),
)


class Fleet(FleetConfig):
    type: Literal["air_quality"]
    cadence: Duration = Field(default=300.0, description="reporting interval (national network: 1h)")
    level: float = Field(default=1.0, gt=0, le=10, description="multiplies every pollutant's mean")
    noise: float = Field(default=0.25, ge=0, le=2, description="std dev of the log-noise")
    correlation_time: Duration = Field(default=10800.0, description="how long the noise remembers")


class AirQualityStation:
    """One station: its noise state per pollutant, advanced at each report."""

    def __init__(self, device: Device, fleet: Fleet, rng: random.Random, utc_offset_h: float) -> None:
        self.device = device
        self.fleet = fleet
        self.rng = rng
        self.utc_offset_h = utc_offset_h
        # Stationary start: draw the initial noise from the AR(1) process's own distribution.
        self.noise = [rng.gauss(0.0, fleet.noise) for _ in POLLUTANTS]
        self.site_factor = math.exp(rng.gauss(0.0, 0.15))
        self.last_time: float | None = None

    def readings(self, epoch_s: float, now: float) -> dict[str, float]:
        phi = math.exp(-(now - self.last_time) / self.fleet.correlation_time) if self.last_time is not None else 0.0
        innovation = self.fleet.noise * math.sqrt(1.0 - phi * phi) if self.last_time is not None else 0.0
        self.last_time = now
        local_hour = (epoch_s / 3600.0 + self.utc_offset_h) % 24.0
        gauss = self.rng.gauss
        level = self.fleet.level * self.site_factor
        values: dict[str, float] = {}
        for index, pollutant in enumerate(POLLUTANTS):
            if innovation:
                self.noise[index] = phi * self.noise[index] + innovation * gauss(0.0, 1.0)
            diurnal = 1.0 + pollutant.diurnal_amplitude * math.cos(2 * math.pi * (local_hour - pollutant.peak_hour) / 24.0)
            values[pollutant.name] = round(pollutant.mean * level * diurnal * math.exp(self.noise[index]), pollutant.decimals)
        # Coarse particles include the fine ones.
        if values["pm10"] < values["pm25"]:
            values["pm10"] = values["pm25"]
        return values


def report(env: simpy.Environment, station: AirQualityStation, telemetry: Telemetry, first_delay: float) -> Generator[simpy.Event, None, None]:
    """A station reports its readings every `cadence` seconds, starting at its own phase."""
    yield env.timeout(first_delay)
    start_s = telemetry.start_ms / 1000.0
    while True:
        telemetry.publish(station.device, station.readings(start_s + env.now, env.now))
        yield env.timeout(station.fleet.cadence)


def build(world: World, fleet: Fleet) -> None:
    utc_offset_h = world.start.utcoffset().total_seconds() / 3600.0  # type: ignore[union-attr]
    for index, device_id in enumerate(fleet.device_ids(ID_PREFIX)):
        district = fleet.district_of(index)
        device = world.telemetry.register(device_id, "air_quality", "city", {"district": district})
        rng = world.rng(device_id)
        station = AirQualityStation(device, fleet, rng, utc_offset_h)
        first_delay = rng.randrange(round(fleet.cadence * 1000)) / 1000.0  # whole ms: exact counts
        world.env.process(report(world.env, station, world.telemetry, first_delay))
