"""The city as one world: the models every city fleet shares, created once per run by `city_of`.

The calendar, the weather, the sun, the road network, the data centre and the mines' settings come
from the scenario's `city:` section. Creating the city starts its scheduled happenings (traffic
incidents, cooling faults) as SimPy processes, whichever city fleet asks first; they happen whether
or not a sensor watches them.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.city.calendar import YANGQUAN_TZ, CityCalendar
from simulator.city.data_centre import DataCentre, cooling_fault
from simulator.city.roads import RoadNetwork, incident
from simulator.city.settings import CitySettings
from simulator.city.sun import SunClock
from simulator.city.weather import Weather
from simulator.world import Summary, World


@dataclass(eq=False)
class City:
    settings: CitySettings
    calendar: CityCalendar
    weather: Weather
    sun: SunClock
    roads: RoadNetwork
    data_centre: DataCentre


def build_city(world: World) -> City:
    settings: CitySettings = world.scenario.city
    start = world.start.astimezone(YANGQUAN_TZ)
    calendar = CityCalendar(settings.calendar, start)
    weather = Weather(settings.weather, start, calendar, world.rng("city/weather"))
    city = City(
        settings=settings,
        calendar=calendar,
        weather=weather,
        sun=SunClock(calendar, start),
        roads=RoadNetwork(settings.traffic, calendar),
        data_centre=DataCentre(settings.data_centre, start, weather, world.rng("city/data-centre")),
    )
    world.add_summary(lambda: summary(city, world.scenario.duration))
    for spec in settings.traffic.incidents:
        world.env.process(incident(world.env, city.roads, spec, world.telemetry))
    for fault in settings.data_centre.cooling_faults:
        world.env.process(cooling_fault(world.env, fault, world.telemetry))
    return city


def summary(city: City, duration: float) -> Summary:
    """The run's weather and happenings, printed after the run."""
    hours = max(1, int(duration // 3600))
    temps = [city.weather.temp_c(hour * 3600.0) for hour in range(hours)]
    inversion_hours = sum(1 for hour in range(hours) if city.weather.inversion(hour * 3600.0) > 0.5)
    days = {city.calendar.day(hour * 3600.0) for hour in range(hours)}
    return Summary(
        "city",
        {
            "outdoor temperature min / mean / max": f"{min(temps):.1f} / {sum(temps) / len(temps):.1f} / {max(temps):.1f} °C",
            "hours under a strong inversion": str(inversion_hours),
            "days in the heating season": f"{sum(day.heating for day in days)} of {len(days)}",
            "workdays": f"{sum(day.workday for day in days)} of {len(days)}",
            "traffic incidents": str(sum(1 for incident in city.settings.traffic.incidents if incident.at < duration)),
            "cooling faults": str(sum(1 for fault in city.settings.data_centre.cooling_faults if fault.at < duration)),
        },
    )


def city_of(world: World) -> City:
    return world.shared("city", build_city)
