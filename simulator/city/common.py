"""What every city device type shares: its fleet section's base, where a device stands, and the
small random samplers the sensors use."""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field, model_validator

from simulator.city.geography import location_tags, site_in
from simulator.device_faults import DeviceFault, FaultyReadings, faults_for
from simulator.fleet import FleetConfig

if TYPE_CHECKING:
    from simulator.telemetry import Device
    from simulator.world import World

DOMAIN = "city"


class CityFleet(FleetConfig):
    """A city fleet: the common options plus its device faults."""

    ID_PREFIX: ClassVar[str] = ""
    READINGS: ClassVar[tuple[str, ...]] = ()  # what a device measures (faults may name these)

    faults: list[DeviceFault] = Field(default_factory=list, description="device faults (simulator/device_faults.py)")

    @model_validator(mode="after")
    def _faults_name_this_fleet(self) -> CityFleet:
        ids = set(self.device_ids(self.ID_PREFIX))
        for index, fault in enumerate(self.faults):
            unknown = [device for device in fault.devices if device not in ids]
            if unknown:
                raise ValueError(f"faults.{index}.devices: {', '.join(unknown)} not in this fleet ({min(ids)} .. {max(ids)})")
            reading = getattr(fault, "reading", None)
            if reading is not None and reading not in self.READINGS:
                raise ValueError(f"faults.{index}.reading: {reading!r} is not a reading of {self.type} ({', '.join(self.READINGS)})")
        return self


def register(
    world: World, fleet: CityFleet, device_id: str, type_name: str, district: str, site: tuple[float, float] | None = None, **tags: str
) -> tuple[Device, random.Random, FaultyReadings | None]:
    """Register a device at `site` (default: a site drawn in its district); its random stream and faults."""
    lat, lon = site if site is not None else site_in(district, world.rng(f"{device_id}/site"))
    device = world.telemetry.register(device_id, type_name, DOMAIN, {**location_tags(district, lat, lon), **tags})
    faults = faults_for(world.env, world.telemetry, device, fleet.faults, world.seed) if fleet.faults else None
    return device, world.rng(device_id), faults


def near(lat: float, lon: float, rng: random.Random, radius_deg: float = 0.004) -> tuple[float, float]:
    """A site within `radius_deg` of a point (a detector along a road, a monitor beside it)."""
    return lat + rng.uniform(-radius_deg, radius_deg), lon + rng.uniform(-radius_deg, radius_deg)


class AR1:
    """Autocorrelated noise sampled at irregular times: N(0, sd) stationary, correlation exp(-dt/tau)."""

    __slots__ = ("sd", "tau", "value", "last")

    def __init__(self, rng: random.Random, sd: float, tau: float) -> None:
        self.sd = sd
        self.tau = tau
        self.value = rng.gauss(0.0, sd)  # start in the stationary distribution
        self.last: float | None = None

    def step(self, rng: random.Random, now: float) -> float:
        if self.last is not None and now > self.last:
            phi = math.exp(-(now - self.last) / self.tau)
            self.value = phi * self.value + self.sd * math.sqrt(1.0 - phi * phi) * rng.gauss(0.0, 1.0)
        self.last = now
        return self.value


def hourly(profile: tuple[float, ...], hour: float) -> float:
    """A 24-value profile (value at the start of each hour) linearly interpolated at `hour`."""
    index = int(hour)
    low = profile[index]
    return low + (profile[(index + 1) % 24] - low) * (hour - index)


def first_delay(rng: random.Random, cadence: float) -> float:
    """A whole-millisecond phase within the first cadence: each device sends exactly duration / cadence messages."""
    return rng.randrange(max(round(cadence * 1000), 1)) / 1000.0


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson count: exact (Knuth) for small means, the normal approximation for large ones."""
    if mean <= 0.0:
        return 0
    if mean > 30.0:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def binomial(rng: random.Random, n: int, p: float) -> int:
    """A binomial count: exact for small n, the normal approximation for large ones."""
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if n * p * (1 - p) > 20.0:
        return min(n, max(0, round(rng.gauss(n * p, math.sqrt(n * p * (1 - p))))))
    return sum(1 for _ in range(n) if rng.random() < p)
