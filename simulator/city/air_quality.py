"""Air-quality monitoring station: PM2.5, PM10, SO2, NO2, CO, O3 and the AQI (HJ 633-2012).

Each pollutant at a station is

    level(year) / shape x fleet level x site x diurnal cycle x heating x dispersion^k x exp(noise)   (+ traffic NO2)

- level(year): the published record for the simulated year, or `city.air.year` (simulator/city/air_record.py:
  Yangquan's bulletins, Shanxi's where Yangquan's are missing) - annual means for PM2.5, PM10, SO2, NO2,
  the 95th percentile of daily means for CO, the 90th of daily maximum 8-h means for O3; `shape` is
  that statistic of the city's cycles below per unit level (measured once, `benchmarks/air_record.py
  --shape`), so a year's run lands on the record and the cycles keep their shape;
- heating (the calendar's heating season): coal boilers add `gain x demand`, demand =
  (18 °C - outdoor temperature felt by buildings) / 20 (the substations' heat load, shared/domain.md
  "District heating"); gains PM2.5 1.0, PM10 0.7, SO2 3.0, NO2 0.25, CO 1.0 - so SO2 is several
  times higher in the heating season and January PM2.5 about three times July's (shared/domain.md,
  "Air quality"); O3 scaled by the season's photochemistry (0.35 in the cold, 1.0 from 25 °C);
- dispersion: the weather's (low wind, inversion nights trap ground-level emissions; O3 falls
  instead, titrated by NO), exponent k per pollutant;
- traffic: a traffic incident in the station's district adds its `no2_rise_ugm3` to NO2;
- noise: autocorrelated log-normal (AR(1) per pollutant, `noise`, `correlation_time`).

Readings (every `cadence`, default 5 min, low-cost network; national stations report hourly):
pm25, pm10, so2, no2, o3 (µg/m³, 1 decimal), co (mg/m³, 2 decimals), aqi (0-500), aqi_level (1-6),
aqi_category (excellent .. severely_polluted), primary_pollutant ("pm25", "so2,pm25" .. or "none").
The AQI is the station's real-time index of the values it sends (simulator/city/aqi.py). With
`category_events: true`, a new category that holds for `category_hold` (default 1 h, the national
network's reporting interval: a reading flapping across a boundary is not news) is an
`aqi_category` event from the station.
Tags: district, lat, lon.

The fleet's stations report together (simulator/cohort.py): a station is its state between reports
(`AirQualityStation`), `concentrations` what it measures, `add_aqi` what it computes from what it sends.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson
from pydantic import Field

from simulator.city.air_record import annual_level
from simulator.city.aqi import category, realtime_aqi
from simulator.city.calendar import DAY_S
from simulator.city.common import DOMAIN, enlist
from simulator.city.model import City, city_of
from simulator.cohort import Cohort, Member, send_member
from simulator.device_faults import FaultyReadings, Offset
from simulator.device_type import DeviceType, FleetConfig, first_delay, owned_devices
from simulator.fleet import Duration
from simulator.randomness import Stream
from simulator.recent import forget_oldest
from simulator.telemetry import FLOAT, STRING, Reading, Telemetry

if TYPE_CHECKING:
    from simulator.world import World

PHOTOCHEMISTRY_FLOOR = 0.35


@dataclass(frozen=True)
class Pollutant:
    name: str
    shape: float  # the record's statistic (air_record.STATISTICS) of the city's cycles per unit level
    diurnal_amplitude: float  # fraction of the level
    peak_hour: float  # local hour of the diurnal maximum
    decimals: int
    heating_gain: float  # extra share per unit of heat demand in the heating season
    dispersion_exponent: float  # how strongly poor dispersion concentrates it (O3: negative)


# shape: measured by `benchmarks/air_record.py --shape` (the shipped stations, 2018 and 2023 averaged).
POLLUTANTS: tuple[Pollutant, ...] = (
    Pollutant("pm25", 2.109, 0.15, 8.0, 1, 1.0, 1.0),
    Pollutant("pm10", 1.815, 0.15, 8.5, 1, 0.7, 0.9),
    Pollutant("so2", 3.383, 0.20, 9.0, 1, 3.0, 1.0),
    Pollutant("no2", 1.393, 0.25, 19.0, 1, 0.25, 0.7),
    Pollutant("co", 5.463, 0.20, 8.0, 2, 1.0, 1.0),
    Pollutant("o3", 1.656, 0.60, 15.0, 1, 0.0, -0.3),
)
NAMES: tuple[str, ...] = tuple(p.name for p in POLLUTANTS)
DECIMALS: tuple[int, ...] = tuple(p.decimals for p in POLLUTANTS)
O3_INDEX = 5
TWO_PI = 2 * math.pi
AIR_STEP_S = 60.0  # the city's air changes over hours; stations share its state minute by minute


class CityAir:
    """What the city does to every station's pollutants at a time: the year's level, diurnal cycle,
    heating, dispersion, photochemistry, as one multiplier per pollutant, computed once per simulated
    minute for all stations (only the minutes some station reads: a sparse cadence stays cheap)."""

    def __init__(self, city: City, keep_minutes: int | None = None) -> None:
        self.city = city
        self.roads = city.roads
        self.year = city.settings.air.year  # None: follow the simulated date
        self._factors: dict[int, tuple[float, ...]] = {}  # by minute; a live run keeps the recent ones
        self.keep_minutes = keep_minutes
        self._levels: dict[int, tuple[float, ...]] = {}
        self._peaks = [(math.cos(2 * math.pi * p.peak_hour / 24.0), math.sin(2 * math.pi * p.peak_hour / 24.0)) for p in POLLUTANTS]

    @property
    def no2_excess(self) -> bool:
        return bool(self.roads.no2_excess_ugm3)

    def factors(self, now: float) -> tuple[float, ...]:
        index = int(now // AIR_STEP_S)
        factors = self._factors.get(index)
        if factors is None:
            factors = self._factors[index] = self._at(index * AIR_STEP_S)
            forget_oldest(self._factors, self.keep_minutes)
        return factors

    def levels(self, year: int) -> tuple[float, ...]:
        """Each pollutant's level per unit of the cycles' shape in `year` (the published record)."""
        levels = self._levels.get(year)
        if levels is None:
            levels = self._levels[year] = tuple(annual_level(p.name, year) / p.shape for p in POLLUTANTS)
        return levels

    def _at(self, now: float) -> tuple[float, ...]:
        calendar, weather = self.city.calendar, self.city.weather
        # The diurnal cycle cos(2π(h - peak)/24) = cos(2πh/24) cos(2π peak/24) + sin(...) sin(...).
        angle = 2 * math.pi * calendar.hour(now) / 24.0
        cos_h, sin_h = math.cos(angle), math.sin(angle)
        dispersion = weather.dispersion(now)
        felt_c = weather.heating_temp_c(now)
        day = calendar.day(now)
        heat_demand = max(0.0, 18.0 - felt_c) / 20.0 if day.heating else 0.0
        levels = self.levels(self.year if self.year is not None else day.date.year)
        factors = []
        for index, (pollutant, (cos_p, sin_p), level) in enumerate(zip(POLLUTANTS, self._peaks, levels)):
            diurnal = 1.0 + pollutant.diurnal_amplitude * (cos_h * cos_p + sin_h * sin_p)
            factor = level * diurnal * (1.0 + pollutant.heating_gain * heat_demand) * dispersion**pollutant.dispersion_exponent
            if index == O3_INDEX:
                factor *= PHOTOCHEMISTRY_FLOOR + (1 - PHOTOCHEMISTRY_FLOOR) * min(max((felt_c + 5.0) / 30.0, 0.0), 1.0)
            factors.append(factor)
        return tuple(factors)


class Fleet(FleetConfig):
    cadence: Duration = Field(default=300.0, description="reporting interval (national network: 1h)")
    level: float = Field(default=1.0, gt=0, le=10, description="multiplies every pollutant's level")
    noise: float = Field(default=0.25, ge=0, le=2, description="std dev of the log-noise")
    correlation_time: Duration = Field(default=10800.0, description="how long the noise remembers")
    category_events: bool = Field(default=False, description="publish an aqi_category event when a station's AQI category changes")
    category_hold: Offset = Field(default=3600.0, description="a new category is announced once it has held this long (0: at once)")


class AirQualityStation(Member):
    """One station between reports: its noise state per pollutant, its site's scale, when it last
    measured, and its AQI category (announced, and a new one waiting to hold)."""

    __slots__ = ("rng", "district", "noise", "scale", "last_time", "level", "previous_level", "candidate")

    def __init__(self, device_id: str, tags: orjson.Fragment, faults: FaultyReadings | None, rng: Stream, fleet: Fleet, district: str) -> None:
        super().__init__(device_id, tags, faults)
        self.rng = rng
        self.district = district
        # Stationary start: draw the initial noise from the AR(1) process's own distribution.
        self.noise = array("d", [rng.gauss(0.0, fleet.noise) for _ in POLLUTANTS])
        self.scale = fleet.level * math.exp(rng.gauss(0.0, 0.15))  # the fleet's level x the site's factor
        self.last_time: float | None = None
        self.level: int | None = None  # the AQI category the station last announced (or started in)
        self.previous_level: int | None = None
        self.candidate: tuple[int, float] | None = None  # a new category and when it was first read

    def category_changed(self, now: float, level: int, hold: float) -> bool:
        """True once a new category has held for `hold` seconds (readings near a boundary flap)."""
        if self.level is None or level == self.level:
            self.level = self.level if self.level is not None else level
            self.candidate = None
            return False
        if self.candidate is None or self.candidate[0] != level:
            self.candidate = (level, now)
        if now - self.candidate[1] < hold:
            return False
        self.previous_level, self.level, self.candidate = self.level, level, None
        return True


def concentrations(station: AirQualityStation, air: CityAir, fleet: Fleet, now: float) -> dict[str, float]:
    """What the station measures at `now`: the city's air at its site, with its own noise."""
    last = station.last_time
    station.last_time = now
    noise = station.noise
    if last is not None:
        phi = math.exp(-(now - last) / fleet.correlation_time)
        innovation = fleet.noise * math.sqrt(1.0 - phi * phi)
        uniform = station.rng.random
        # Box-Muller: two standard normals from each pair of uniforms (6 pollutants, 3 pairs).
        for index in (0, 2, 4):
            angle = TWO_PI * uniform()
            radius = math.sqrt(-2.0 * math.log(1.0 - uniform()))
            noise[index] = phi * noise[index] + innovation * radius * math.cos(angle)
            noise[index + 1] = phi * noise[index + 1] + innovation * radius * math.sin(angle)
    exp = math.exp
    factors = air.factors(now)
    scale = station.scale
    values: dict[str, float] = {}
    for index in (0, 1, 2, 3, 4, 5):
        values[NAMES[index]] = round(scale * factors[index] * exp(noise[index]), DECIMALS[index])
    if air.no2_excess:
        values["no2"] = round(values["no2"] + air.roads.district_no2_excess(station.district), 1)
    # Coarse particles include the fine ones.
    if values["pm10"] < values["pm25"]:
        values["pm10"] = values["pm25"]
    return values


def add_aqi(telemetry: Telemetry, station: AirQualityStation, now: float, readings: dict[str, Reading], events_hold: float | None) -> None:
    """The AQI of the concentrations sent (faulty ones included), and its category's event once it
    changed (`events_hold` None: the fleet announces no categories)."""
    aqi, primary = realtime_aqi(readings)  # type: ignore[arg-type]
    level, name = category(aqi)
    readings["aqi"] = aqi
    readings["aqi_level"] = level
    readings["aqi_category"] = name
    readings["primary_pollutant"] = primary
    if events_hold is not None and station.category_changed(now, level, events_hold):
        severity = "info" if level <= 2 else "warning" if level <= 4 else "alarm"
        telemetry.event(
            station.device_id, "city", "aqi_category", severity,
            f"{station.device_id}: AQI {aqi}, {name.replace('_', ' ')} (primary: {primary})",
            tags={"district": station.district}, aqi=aqi, aqi_level=level, previous_level=station.previous_level,
        )  # fmt: skip


def make_air(world: World) -> CityAir:
    city = city_of(world)
    return CityAir(city, None if city.keep_days is None else 2 * int(DAY_S // AIR_STEP_S))  # two days of minutes


def build(world: World, fleet: Fleet) -> None:
    air = world.shared("city/air", make_air)
    cohort: Cohort[AirQualityStation] = Cohort(world, fleet, fleet.cadence)
    for index, device_id in owned_devices(world, fleet):
        district = fleet.district_of(index)
        tags, rng, faults = enlist(world, cohort, device_id, district)
        station = AirQualityStation(device_id, tags, faults, rng, fleet, district)
        cohort.add(station, first_delay(rng, fleet.cadence))  # drawn after the station's state, as ever
    telemetry, wire = world.telemetry, cohort.wire
    events_hold = fleet.category_hold if fleet.category_events else None

    def complete(station: AirQualityStation, now: float, readings: dict[str, Reading]) -> None:
        add_aqi(telemetry, station, now, readings, events_hold)

    def report(station: AirQualityStation, now: float) -> None:
        """A station measures and sends its readings with their AQI."""
        readings: dict = concentrations(station, air, fleet, now)  # floats, and the AQI's values to come
        send_member(telemetry, wire, station, now, readings, complete)

    cohort.start(report)


DEVICE = DeviceType(
    "air_quality", DOMAIN, "aq", Fleet, build,
    readings=dict.fromkeys(NAMES, FLOAT),
    also_sends={"aqi": FLOAT, "aqi_level": FLOAT, "aqi_category": STRING, "primary_pollutant": STRING},  # the AQI of the values sent, after faults
)  # fmt: skip
