"""Road haulage on the Yangquan–Tianjin corridor.

A haulier's trucks shuttle between Tianjin Port and the dry port: at Tianjin each loads an import box
for Shanxi, drives to Yangquan, passes the gate, puts the box down in the yard, takes the oldest
export box waiting (if any) and drives back. Road distance ~560 km (G5/G4/G18 expressways via
Shijiazhuang and Baoding; check) at a cruise speed drawn per trip, with a 20 min rest after every
4 h of driving (China's rule for commercial drivers). Trucks start spread along their cycle.

Positions come from the truck's state: the distance driven since its last stop at its cruise speed,
placed along the corridor's polyline (route km scaled to the polyline's length).

The `truck_gps` tracker on each truck is in sensors/truck_gps.py.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import simpy
from pydantic import Field

from simulator.fleet import Duration, StrictModel
from simulator.port.containers import Box
from simulator.port.trucks import call_at_port, plate
from simulator.randomness import Stream

if TYPE_CHECKING:
    from simulator.port.model import Port


# The corridor, dry port to Tianjin Port (Dongjiang), as (lat, lon) waypoints.
ROUTE: tuple[tuple[float, float], ...] = (
    (37.870, 113.620),  # Yangquan dry port
    (37.980, 113.900),  # Niangziguan pass, Shanxi-Hebei border
    (38.040, 114.510),  # Shijiazhuang
    (38.870, 115.460),  # Baoding
    (39.100, 116.400),  # Bazhou
    (39.080, 117.200),  # Tianjin
    (38.980, 117.730),  # Tianjin Port
)


def haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


_LEGS = [haversine_km(a, b) for a, b in zip(ROUTE, ROUTE[1:])]
_CUMULATIVE = [0.0]
for _leg in _LEGS:
    _CUMULATIVE.append(_CUMULATIVE[-1] + _leg)
POLYLINE_KM = _CUMULATIVE[-1]


def position(fraction: float) -> tuple[float, float]:
    """(lat, lon) at `fraction` (0 = dry port, 1 = Tianjin Port) along the corridor."""
    target = min(max(fraction, 0.0), 1.0) * POLYLINE_KM
    i = min(bisect.bisect_right(_CUMULATIVE, target) - 1, len(_LEGS) - 1)
    t = (target - _CUMULATIVE[i]) / _LEGS[i] if _LEGS[i] else 0.0
    (lat1, lon1), (lat2, lon2) = ROUTE[i], ROUTE[i + 1]
    return lat1 + t * (lat2 - lat1), lon1 + t * (lon2 - lon1)


class CorridorSettings(StrictModel):
    trucks: int = Field(default=20, ge=0, le=10_000, description="the haulier's trucks on the corridor")
    road_km: float = Field(default=560.0, gt=0, description="road distance dry port - Tianjin Port")
    cruise_kmh: float = Field(default=72.0, gt=10, le=100, description="mean cruise speed on the expressway (trucks: limit 80-100)")
    cruise_sd_kmh: float = Field(default=6.0, ge=0, description="spread of the cruise speed between trips")
    rest_after: Duration = Field(default=4 * 3600.0, description="driving time before a rest stop")
    rest_time: Duration = Field(default=1200.0, description="length of a rest stop")
    tianjin_time: Duration = Field(default=3 * 3600.0, description="mean (exponential) time at Tianjin Port to swap boxes")


@dataclass(eq=False)
class HaulTruck:
    """A truck and what it is doing: driving from `km0` at `speed_kmh` since `since`, or stopped."""

    name: str
    plate: str
    state: str = "at_tianjin"
    km0: float = 0.0  # km from the dry port
    heading: int = 1  # +1 towards Tianjin, -1 towards Yangquan
    speed_kmh: float = 0.0
    since: float = 0.0
    box: Box | None = None
    trips: int = 0

    def km(self, now: float) -> float:
        if self.state != "driving":
            return self.km0
        return self.km0 + self.heading * self.speed_kmh * (now - self.since) / 3600.0

    def stop(self, now: float, state: str) -> None:
        self.km0 = self.km(now)
        self.state = state
        self.since = now


def drive(env: simpy.Environment, truck: HaulTruck, to_km: float, settings: CorridorSettings, rng: Stream) -> Generator[simpy.Event, None, None]:
    """Drive to `to_km` at a cruise speed for the trip, resting after every `rest_after` of driving."""
    truck.speed_kmh = max(30.0, rng.gauss(settings.cruise_kmh, settings.cruise_sd_kmh))
    truck.heading = 1 if to_km > truck.km0 else -1
    while abs(to_km - truck.km0) > 1e-6:
        stint_km = min(abs(to_km - truck.km0), truck.speed_kmh * settings.rest_after / 3600.0)
        truck.state, truck.since = "driving", env.now
        yield env.timeout(stint_km / truck.speed_kmh * 3600.0)
        truck.stop(env.now, "resting")
        truck.km0 = to_km if abs(to_km - truck.km0) < 1e-3 else truck.km0
        if abs(to_km - truck.km0) > 1e-6:
            yield env.timeout(settings.rest_time)


def haul(env: simpy.Environment, port: Port, truck: HaulTruck, rng: Stream) -> Generator[simpy.Event, None, None]:
    """Shuttle between Tianjin Port and the dry port, starting at a random point of the cycle."""
    settings = port.settings.corridor
    road = settings.road_km
    truck.km0 = rng.uniform(0.0, road)
    truck.heading = rng.choice((1, -1))
    truck.since = env.now
    if truck.heading < 0:
        truck.box = port.road_import()
    while True:
        if truck.heading > 0:
            yield from drive(env, truck, road, settings, rng)
            truck.stop(env.now, "at_tianjin")
            yield env.timeout(rng.expovariate(1.0 / settings.tianjin_time))
            truck.box = port.road_import()  # the export it brought is on a ship's yard now
            truck.heading = -1
        else:
            yield from drive(env, truck, 0.0, settings, rng)
            truck.stop(env.now, "at_port")
            truck.box = yield from call_at_port(env, port, truck.plate, truck.box, None, take_export=True)
            truck.trips += 1
            truck.heading = 1


def build_trucks(settings: CorridorSettings, rng: Stream) -> list[HaulTruck]:
    return [HaulTruck(f"H{n:03d}", plate(rng, "津")) for n in range(1, settings.trucks + 1)]
