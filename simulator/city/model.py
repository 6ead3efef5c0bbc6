"""The city as one world: the models every city fleet shares, created once per run by `city_of`.

The calendar, the weather, the sun, the road network, the data centre and the mines' settings come
from the scenario's `city:` section. Creating the city starts its scheduled happenings (traffic
incidents, cooling faults) as SimPy processes, whichever city fleet asks first; they happen whether
or not a sensor watches them.

The weather, the data centre's load and the calendars are made on demand, hour by hour and day by
day, so they never depend on the run's length; a live run (`duration: until-stopped`) keeps only
the last LIVE_KEEP_DAYS of them (simulator/recent.py) and its summary covers the last
LIVE_SUMMARY_DAYS.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.city.calendar import DAY_S, YANGQUAN_TZ, CityCalendar
from simulator.city.data_centre import DataCentre, cooling_fault
from simulator.city.roads import RoadNetwork, incident
from simulator.city.settings import CitySettings
from simulator.city.sun import SunClock
from simulator.city.weather import Weather
from simulator.world import Summary, World


LIVE_KEEP_DAYS = 8  # hours and days a live run keeps (between this and twice this)
LIVE_SUMMARY_DAYS = 6  # a live run's summary: the last days, all still kept


@dataclass(eq=False)
class City:
    settings: CitySettings
    calendar: CityCalendar
    weather: Weather
    sun: SunClock
    roads: RoadNetwork
    data_centre: DataCentre
    keep_days: int | None = None  # a live run: what the models keep of the past; None: all


def build_city(world: World) -> City:
    settings: CitySettings = world.scenario.city
    start = world.start.astimezone(YANGQUAN_TZ)
    keep = LIVE_KEEP_DAYS if world.scenario.until_stopped else None
    calendar = CityCalendar(settings.calendar, start, keep)
    weather = Weather(settings.weather, start, calendar, world.rng("city/weather"), keep)
    city = City(
        settings=settings,
        calendar=calendar,
        weather=weather,
        sun=SunClock(calendar, start, keep_days=keep),
        roads=RoadNetwork(settings.traffic, calendar),
        data_centre=DataCentre(settings.data_centre, start, weather, world.rng("city/data-centre"), None if keep is None else keep * 24),
        keep_days=keep,
    )
    if keep is None:
        world.add_summary(lambda: summary(city, 0.0, world.scenario.duration))
    else:
        world.add_summary(lambda: summary(city, max(0.0, world.env.now - LIVE_SUMMARY_DAYS * DAY_S), world.env.now, f"the last {LIVE_SUMMARY_DAYS} days"))
    for spec in settings.traffic.incidents:
        world.env.process(incident(world.env, city.roads, spec, world.telemetry))
    for fault in settings.data_centre.cooling_faults:
        world.env.process(cooling_fault(world.env, fault, world.telemetry))
    return city


def summary(city: City, begin: float, end: float, span: str = "") -> Summary:
    """The weather and happenings of [begin, end) of the run, printed after it (`span` says which)."""
    first = int(begin // 3600)
    hours = range(first, max(first + 1, int(end // 3600)))
    temps = [city.weather.temp_c(hour * 3600.0) for hour in hours]
    inversion_hours = sum(1 for hour in hours if city.weather.inversion(hour * 3600.0) > 0.5)
    days = {city.calendar.day(hour * 3600.0) for hour in hours}
    return Summary(
        f"city ({span})" if span else "city",
        {
            "outdoor temperature min / mean / max": f"{min(temps):.1f} / {sum(temps) / len(temps):.1f} / {max(temps):.1f} °C",
            "hours under a strong inversion": str(inversion_hours),
            "days in the heating season": f"{sum(day.heating for day in days)} of {len(days)}",
            "workdays": f"{sum(day.workday for day in days)} of {len(days)}",
            "traffic incidents": str(sum(1 for incident in city.settings.traffic.incidents if begin <= incident.at < end)),
            "cooling faults": str(sum(1 for fault in city.settings.data_centre.cooling_faults if begin <= fault.at < end)),
        },
    )


def city_of(world: World) -> City:
    return world.shared("city", build_city)
