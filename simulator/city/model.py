"""The city as one world: the models every city fleet shares, created once per run by `city_of`.

The calendar, the weather, the sun, the road network, the data centre and the mines' settings come
from the scenario's `city:` section. Creating the city starts its scheduled happenings (traffic
incidents, cooling faults) as SimPy processes, whichever city fleet asks first; they happen whether
or not a sensor watches them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from simulator.city.calendar import CityCalendar
from simulator.city.data_centre import DataCentre, cooling_fault
from simulator.city.roads import RoadNetwork, incident
from simulator.city.settings import CitySettings
from simulator.city.sun import SunClock
from simulator.city.weather import Weather

if TYPE_CHECKING:
    from simulator.world import World


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
    calendar = CityCalendar(settings.calendar, world.start)
    weather = Weather(settings.weather, world.start, calendar, world.rng("city/weather"))
    city = City(
        settings=settings,
        calendar=calendar,
        weather=weather,
        sun=SunClock(calendar, world.start),
        roads=RoadNetwork(settings.traffic, calendar),
        data_centre=DataCentre(settings.data_centre, world.start, weather, world.rng("city/data-centre")),
    )
    for spec in settings.traffic.incidents:
        world.env.process(incident(world.env, city.roads, spec, world.telemetry))
    for fault in settings.data_centre.cooling_faults:
        world.env.process(cooling_fault(world.env, fault, world.telemetry))
    return city


def city_of(world: World) -> City:
    return world.shared("city", build_city)
