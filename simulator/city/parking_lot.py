"""Parking-lot occupancy: cars arrive, park, leave; the lot's counter reports the spaces in use.

Each lot is a queue with as many servers as spaces and no waiting room: cars arrive as a Poisson
process, stay an exponential time (mean `stay` of its kind), and a car finding the lot full drives on.
The arrival rate keeps the expected occupancy on the kind's daily profile: rate = target' +
target / stay (for this queue dN/dt = arrivals - N / stay), target = spaces x `peak_fill` x the
kind's profile (offices full on workday office hours, shops in the afternoon and evening, homes at
night; rest days swap offices for shops). Between two reports the counter sees Poisson arrivals and
binomial departures (exact for exponential stays). A lot starts from a day of warm-up.

Readings every `cadence` (default 5 min): occupied (cars), free_spaces, occupancy_pct (0-100 %),
full (bool), arrivals and refused (cars in the interval). Tags: district, lat, lon, kind.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import TYPE_CHECKING, Literal

import simpy
from pydantic import Field

from simulator.city.calendar import CityCalendar
from simulator.city.common import DOMAIN, binomial, hourly, poisson, register
from simulator.city.model import city_of
from simulator.device_faults import FaultyReadings
from simulator.device_type import DeviceType, FleetConfig, first_delay, owned_devices, send
from simulator.fleet import Duration
from simulator.randomness import Stream
from simulator.telemetry import BOOLEAN, FLOAT, Device, Reading, Telemetry

if TYPE_CHECKING:
    from simulator.world import World

LotKind = Literal["office", "commercial", "residential"]

# Target occupancy per local hour as a share of the peak: (workday, rest day).
PROFILES: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "office": (
        (0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.10, 0.45, 0.90, 1.00, 1.00, 0.95,
         0.85, 0.95, 1.00, 1.00, 0.95, 0.70, 0.35, 0.20, 0.12, 0.08, 0.06, 0.05),
        (0.04, 0.04, 0.04, 0.04, 0.04, 0.04, 0.05, 0.08, 0.12, 0.15, 0.16, 0.16,
         0.15, 0.15, 0.15, 0.14, 0.12, 0.10, 0.08, 0.06, 0.05, 0.05, 0.04, 0.04),
    ),
    "commercial": (
        (0.05, 0.04, 0.03, 0.03, 0.03, 0.03, 0.05, 0.10, 0.25, 0.40, 0.55, 0.65,
         0.70, 0.65, 0.60, 0.60, 0.65, 0.75, 0.85, 0.85, 0.70, 0.45, 0.20, 0.08),
        (0.05, 0.04, 0.03, 0.03, 0.03, 0.03, 0.05, 0.10, 0.30, 0.55, 0.75, 0.90,
         0.95, 0.95, 1.00, 1.00, 0.95, 0.90, 0.90, 0.85, 0.70, 0.45, 0.20, 0.08),
    ),
    "residential": (
        (0.95, 0.96, 0.96, 0.96, 0.95, 0.92, 0.80, 0.55, 0.40, 0.35, 0.35, 0.38,
         0.42, 0.40, 0.38, 0.38, 0.42, 0.55, 0.72, 0.85, 0.90, 0.92, 0.94, 0.95),
        (0.95, 0.96, 0.96, 0.96, 0.96, 0.95, 0.92, 0.85, 0.75, 0.65, 0.60, 0.60,
         0.62, 0.60, 0.58, 0.60, 0.65, 0.72, 0.80, 0.86, 0.90, 0.92, 0.94, 0.95),
    ),
}  # fmt: skip
MEAN_STAY_H: dict[str, float] = {"office": 3.0, "commercial": 1.5, "residential": 5.0}
WARM_UP_S = 86400.0


class Fleet(FleetConfig):
    cadence: Duration = Field(default=300.0, description="reporting interval")
    spaces: int = Field(default=300, ge=5, le=20_000, description="typical spaces per lot (lots vary log-normally, sd 0.5)")
    peak_fill: float = Field(default=0.92, gt=0, le=1.2, description="expected occupancy at the kind's busiest hour, share of spaces")
    kinds: list[LotKind] = Field(default=["commercial", "office", "residential"], min_length=1, description="lot kinds, round-robin")


class Lot:
    def __init__(self, spaces: int, kind: str, peak_fill: float, calendar: CityCalendar) -> None:
        self.spaces = spaces
        self.kind = kind
        self.peak_fill = peak_fill
        self.calendar = calendar
        self.stay_s = MEAN_STAY_H[kind] * 3600.0
        self.occupied = 0

    def target(self, now: float) -> float:
        workday, rest_day = PROFILES[self.kind]
        profile = workday if self.calendar.day(now).workday else rest_day
        return self.spaces * self.peak_fill * hourly(profile, self.calendar.hour(now))

    def advance(self, rng: Stream, start: float, end: float) -> tuple[int, int]:
        """Cars leaving and arriving over [start, end): (arrivals, refused)."""
        span = end - start
        leaving = binomial(rng, self.occupied, 1.0 - math.exp(-span / self.stay_s))
        target_start, target_end = self.target(start), self.target(end)
        rate = max(0.0, (target_end - target_start) / span + 0.5 * (target_start + target_end) / self.stay_s)
        arrivals = poisson(rng, rate * span)
        self.occupied -= leaving
        parked = min(arrivals, self.spaces - self.occupied)
        self.occupied += parked
        return arrivals, arrivals - parked


def count_cars(
    env: simpy.Environment, device: Device, lot: Lot, telemetry: Telemetry, rng: Stream,
    faults: FaultyReadings | None, cadence: float, first_delay: float,
) -> Generator[simpy.Event, None, None]:  # fmt: skip
    """The lot's entry and exit counters keep the number of cars inside and report it."""
    # A day of warm-up before the run, in the same steps, so the lot starts as yesterday left it.
    last = first_delay - WARM_UP_S
    while last + cadence <= first_delay:
        lot.advance(rng, last, last + cadence)
        last += cadence
    yield env.timeout(first_delay)
    last = env.now - cadence
    while True:
        now = env.now
        arrivals, refused = lot.advance(rng, last, now)
        last = now
        readings: dict[str, Reading] = {
            "occupied": lot.occupied,
            "free_spaces": lot.spaces - lot.occupied,
            "occupancy_pct": round(100.0 * lot.occupied / lot.spaces, 1),
            "full": lot.occupied >= lot.spaces,
            "arrivals": arrivals,
            "refused": refused,
        }
        send(telemetry, device, faults, now, readings)
        yield env.timeout(cadence)


def build(world: World, fleet: Fleet) -> None:
    city = city_of(world)
    for index, device_id in owned_devices(world, fleet):
        kind = fleet.kinds[index % len(fleet.kinds)]
        device, rng, faults = register(world, fleet, device_id, fleet.district_of(index), kind=kind)
        spaces = max(5, round(fleet.spaces * math.exp(rng.gauss(0.0, 0.5))))
        lot = Lot(spaces, kind, fleet.peak_fill, city.calendar)
        world.env.process(count_cars(world.env, device, lot, world.telemetry, rng, faults, fleet.cadence, first_delay(rng, fleet.cadence)))


DEVICE = DeviceType("parking_lot", DOMAIN, "parking", Fleet, build, readings=dict.fromkeys(("occupied", "free_spaces", "occupancy_pct"), FLOAT),
    also_sends={"full": BOOLEAN, "arrivals": FLOAT, "refused": FLOAT},
)  # fmt: skip
