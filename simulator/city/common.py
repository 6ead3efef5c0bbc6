"""What the city's device types share: where a device stands, and the small random samplers the
sensors use."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from simulator.city.geography import location_tags, site_in
from simulator.cohort import Cohort
from simulator.device_type import FleetConfig, register_device
from simulator.randomness import Stream

if TYPE_CHECKING:
    import orjson

    from simulator.device_faults import FaultyReadings
    from simulator.telemetry import Device
    from simulator.world import World

DOMAIN = "city"


def register(
    world: World, fleet: FleetConfig, device_id: str, district: str, site: tuple[float, float] | None = None, **tags: str
) -> tuple[Device, Stream, FaultyReadings | None]:
    """Register a device at `site` (default: a site drawn in its district); its random stream and faults."""
    lat, lon = site if site is not None else site_in(district, world.rng(f"{device_id}/site"))
    device, faults = register_device(world, fleet, device_id, {**location_tags(district, lat, lon), **tags})
    return device, world.rng(device_id), faults


def enlist(
    world: World, cohort: Cohort, device_id: str, district: str, **tags: str
) -> tuple[orjson.Fragment, Stream, FaultyReadings | None]:
    """`register` for a device of a cohort (simulator/cohort.py): a site drawn in its district; its
    encoded tags, random stream and faults."""
    lat, lon = site_in(district, world.rng(f"{device_id}/site"))
    encoded, faults = cohort.enlist(device_id, {**location_tags(district, lat, lon), **tags})
    return encoded, world.rng(device_id), faults


def near(lat: float, lon: float, rng: Stream, radius_deg: float = 0.004) -> tuple[float, float]:
    """A site within `radius_deg` of a point (a detector along a road, a monitor beside it)."""
    return lat + rng.uniform(-radius_deg, radius_deg), lon + rng.uniform(-radius_deg, radius_deg)


class AR1:
    """Autocorrelated noise sampled at irregular times: N(0, sd) stationary, correlation exp(-dt/tau)."""

    __slots__ = ("sd", "tau", "value", "last")

    def __init__(self, rng: Stream, sd: float, tau: float) -> None:
        self.sd = sd
        self.tau = tau
        self.value = rng.gauss(0.0, sd)  # start in the stationary distribution
        self.last: float | None = None

    def step(self, rng: Stream, now: float) -> float:
        self.value = ar1_step(rng, self.value, self.last, now, self.sd, self.tau)
        self.last = now
        return self.value


def ar1_step(rng: Stream, value: float, last: float | None, now: float, sd: float, tau: float) -> float:
    """An AR(1) value last sampled at `last` (None: never), sampled again at `now`; for state kept
    without an `AR1` object (a cohort's meter)."""
    if last is not None and now > last:
        phi = math.exp(-(now - last) / tau)
        return phi * value + sd * math.sqrt(1.0 - phi * phi) * rng.gauss(0.0, 1.0)
    return value


def hourly(profile: tuple[float, ...], hour: float) -> float:
    """A 24-value profile (value at the start of each hour) linearly interpolated at `hour`."""
    index = int(hour)
    low = profile[index]
    return low + (profile[(index + 1) % 24] - low) * (hour - index)


def poisson(rng: Stream, mean: float) -> int:
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


def binomial(rng: Stream, n: int, p: float) -> int:
    """A binomial count: exact for small n, the normal approximation for large ones."""
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if n * p * (1 - p) > 20.0:
        return min(n, max(0, round(rng.gauss(n * p, math.sqrt(n * p * (1 - p))))))
    return sum(1 for _ in range(n) if rng.random() < p)
