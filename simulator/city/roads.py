"""The road network: demand by hour of day on each road, and incidents that take capacity away.

Each road has lanes, a capacity per lane (urban arterial ~1,200-1,800 veh/h/lane), a free-flow
speed (40-60 km/h urban) and a peak demand as a share of capacity (shared/domain.md, "Traffic loop
detectors"). Demand follows an hourly profile: weekday peaks 07:00-09:00 and 17:00-19:00, a broad
midday hump on rest days (calendar). Speed comes from the BPR link function
speed = free_flow / (1 + 0.15 (demand / capacity)^4), flow is demand up to the capacity left, and
density = flow / speed, read by a loop as occupancy (6 m effective vehicle length).

An incident (a SimPy process started from `city.traffic.incidents`) takes `capacity_drop` of its
road's capacity and `neighbour_drop` of each neighbour's (queues spill back onto them) from `at`
for `duration`, raises NO2 by `no2_rise_ugm3` at air-quality stations in the road's district,
and is announced as `traffic_incident` events (tag `phase` start/end) from source `city-traffic`.
Road names are illustrative; their positions are approximate.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import simpy
from pydantic import Field, model_validator

from simulator.city.calendar import CityCalendar
from simulator.fleet import District, Duration, StrictModel

if TYPE_CHECKING:
    from simulator.telemetry import Telemetry

EVENT_SOURCE = "city-traffic"
VEHICLE_LENGTH_KM = 0.006  # effective length seen by a loop: vehicle + loop

# Demand per local hour as a share of the road's peak demand (value at the start of the hour,
# linearly interpolated): weekday peaks 07-09 and 17-19, rest days a broad midday hump.
WORKDAY_PROFILE: tuple[float, ...] = (
    0.10, 0.06, 0.05, 0.05, 0.08, 0.20, 0.50, 0.95, 1.00, 0.70, 0.60, 0.62,
    0.60, 0.55, 0.58, 0.62, 0.75, 0.98, 0.95, 0.70, 0.50, 0.38, 0.25, 0.15,
)  # fmt: skip
REST_DAY_PROFILE: tuple[float, ...] = (
    0.12, 0.08, 0.06, 0.05, 0.06, 0.10, 0.20, 0.35, 0.50, 0.62, 0.70, 0.72,
    0.70, 0.68, 0.66, 0.66, 0.68, 0.70, 0.66, 0.55, 0.45, 0.35, 0.25, 0.18,
)  # fmt: skip


class RoadSettings(StrictModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$", description="road id, the `road` tag of its sensors")
    district: District = Field(description="the district the road runs through (its sensors' `district` tag)")
    lat: float = Field(ge=37.5, le=38.3, description="latitude of a point on the road, degrees north; its sensors stand near it")
    lon: float = Field(ge=113.1, le=114.1, description="longitude of that point, degrees east")
    lanes: int = Field(default=2, ge=1, le=6, description="lanes per direction")
    capacity_vphpl: float = Field(default=1600.0, ge=600, le=2400, description="capacity, vehicles per hour per lane")
    free_flow_kmh: float = Field(default=50.0, ge=20, le=120, description="speed on an empty road")
    peak_demand: float = Field(default=0.85, gt=0, le=1.2, description="demand at the peak hour as a share of capacity")
    neighbours: list[str] = Field(default_factory=list, description="roads a queue spills back onto")


def _road(name: str, district: str, lat: float, lon: float, neighbours: list[str], **options: float) -> RoadSettings:
    return RoadSettings.model_validate({"name": name, "district": district, "lat": lat, "lon": lon, "neighbours": neighbours, **options})


DEFAULT_ROADS: tuple[RoadSettings, ...] = (
    _road("desheng-st", "Chengqu", 37.858, 113.596, ["taobei-rd", "beida-st", "nanda-st"], lanes=3),
    _road("taobei-rd", "Chengqu", 37.866, 113.590, ["desheng-st", "xinquan-rd"], lanes=3),
    _road("nanda-st", "Chengqu", 37.850, 113.602, ["desheng-st", "pingding-rd"]),
    _road("beida-st", "Chengqu", 37.864, 113.604, ["desheng-st", "ring-rd-north"]),
    _road("xinquan-rd", "Kuangqu", 37.870, 113.566, ["taobei-rd", "kuangqu-ave"], lanes=3),
    _road("kuangqu-ave", "Kuangqu", 37.874, 113.550, ["xinquan-rd", "ring-rd-north"]),
    _road("ring-rd-north", "Jiaoqu", 37.900, 113.580, ["beida-st", "kuangqu-ave", "yuxian-rd"], free_flow_kmh=60.0, peak_demand=0.7),
    _road("pingding-rd", "Pingding", 37.795, 113.628, ["nanda-st"], free_flow_kmh=60.0, peak_demand=0.75),
    _road("yuxian-rd", "Yuxian", 38.084, 113.415, ["ring-rd-north"], free_flow_kmh=50.0, peak_demand=0.7),
)


class Incident(StrictModel):
    road: str = Field(description="the road it happens on (a name in city.traffic.roads)")
    at: Duration = Field(description="simulated time after the start when it happens")
    duration: Duration = Field(default=3600.0, description="until the road is cleared")
    capacity_drop: float = Field(default=0.6, gt=0, lt=1, description="share of the road's capacity lost (lanes blocked)")
    neighbour_drop: float = Field(default=0.2, ge=0, lt=1, description="share of each neighbour's capacity lost to the spill-back")
    no2_rise_ugm3: float = Field(default=30.0, ge=0, le=500, description="extra NO2 at air-quality stations in the road's district")


class TrafficSettings(StrictModel):
    roads: list[RoadSettings] = Field(default_factory=lambda: list(DEFAULT_ROADS), min_length=1, description="the road network")
    incidents: list[Incident] = Field(default_factory=list, description="incidents at simulated times")

    @model_validator(mode="after")
    def _names_are_known(self) -> TrafficSettings:
        # Messages start with their place in the scenario, so the error points at the line (scenario.describe).
        names = [road.name for road in self.roads]
        for index, road in enumerate(self.roads):
            if names.index(road.name) != index:
                raise ValueError(f"city.traffic.roads.{index}.name: {road.name!r} is used twice")
            for neighbour in road.neighbours:
                if neighbour not in names or neighbour == road.name:
                    raise ValueError(f"city.traffic.roads.{index}.neighbours: {neighbour!r} is not another road of city.traffic.roads")
        for index, incident in enumerate(self.incidents):
            if incident.road not in names:
                raise ValueError(f"city.traffic.incidents.{index}.road: no road {incident.road!r} (known: {', '.join(names)})")
        return self


@dataclass(eq=False)
class Road:
    settings: RoadSettings
    neighbours: list[Road] = field(default_factory=list)
    capacity_factors: list[float] = field(default_factory=list)  # one per active incident or spill-back
    capacity_factor: float = 1.0

    @property
    def name(self) -> str:
        return self.settings.name

    def take_capacity(self, factor: float) -> None:
        self.capacity_factors.append(factor)
        self._update()

    def give_back_capacity(self, factor: float) -> None:
        self.capacity_factors.remove(factor)
        self._update()

    def _update(self) -> None:
        product = 1.0
        for factor in self.capacity_factors:
            product *= factor
        self.capacity_factor = product


@dataclass(frozen=True, slots=True)
class RoadState:
    flow_vphpl: float  # vehicles per hour per lane
    speed_kmh: float
    occupancy_pct: float
    free_flow_kmh: float


class RoadNetwork:
    def __init__(self, settings: TrafficSettings, calendar: CityCalendar) -> None:
        self.settings = settings
        self.calendar = calendar
        self.roads: dict[str, Road] = {road.name: Road(road) for road in settings.roads}
        for road in self.roads.values():
            for name in road.settings.neighbours:
                other = self.roads[name]
                if other not in road.neighbours:
                    road.neighbours.append(other)
                if road not in other.neighbours:  # spill-back goes both ways
                    other.neighbours.append(road)
        self.no2_excess_ugm3: dict[str, float] = {}

    def demand_share(self, now: float) -> float:
        """Demand as a share of a road's peak demand at local time `now` (workday or rest day)."""
        profile = WORKDAY_PROFILE if self.calendar.day(now).workday else REST_DAY_PROFILE
        hour = self.calendar.hour(now)
        index = int(hour)
        low = profile[index]
        # The next hour's value; at 23:xx it is tomorrow's 00:00, close enough to today's profile.
        return low + (profile[(index + 1) % 24] - low) * (hour - index)

    def state(self, road: Road, now: float) -> RoadState:
        s = road.settings
        demand = s.capacity_vphpl * s.peak_demand * self.demand_share(now)
        capacity = s.capacity_vphpl * road.capacity_factor
        ratio = demand / capacity
        speed = s.free_flow_kmh / (1.0 + 0.15 * ratio**4)
        flow = min(demand, capacity)
        occupancy = min(flow / speed * VEHICLE_LENGTH_KM * 100.0, 95.0)
        return RoadState(flow, speed, occupancy, s.free_flow_kmh)

    def district_no2_excess(self, district: str) -> float:
        return self.no2_excess_ugm3.get(district, 0.0)


def incident(env: simpy.Environment, network: RoadNetwork, spec: Incident, telemetry: Telemetry) -> Generator[simpy.Event, None, None]:
    """A crash blocks lanes: capacity drops on the road and its neighbours until it is cleared."""
    yield env.timeout(spec.at)
    road = network.roads[spec.road]
    district = road.settings.district
    road.take_capacity(1.0 - spec.capacity_drop)
    for neighbour in road.neighbours:
        neighbour.take_capacity(1.0 - spec.neighbour_drop)
    network.no2_excess_ugm3[district] = network.no2_excess_ugm3.get(district, 0.0) + spec.no2_rise_ugm3
    neighbours = ",".join(n.name for n in road.neighbours)
    telemetry.event(
        EVENT_SOURCE, "city", "traffic_incident", "warning",
        f"incident on {road.name}: {spec.capacity_drop:.0%} of capacity lost; spill-back onto {neighbours}",
        tags={"phase": "start", "road": road.name, "district": district}, capacity_drop=spec.capacity_drop,
    )  # fmt: skip
    yield env.timeout(spec.duration)
    road.give_back_capacity(1.0 - spec.capacity_drop)
    for neighbour in road.neighbours:
        neighbour.give_back_capacity(1.0 - spec.neighbour_drop)
    network.no2_excess_ugm3[district] -= spec.no2_rise_ugm3
    telemetry.event(
        EVENT_SOURCE, "city", "traffic_incident", "info", f"incident on {road.name} cleared",
        tags={"phase": "end", "road": road.name, "district": district}, capacity_drop=spec.capacity_drop,
    )  # fmt: skip
