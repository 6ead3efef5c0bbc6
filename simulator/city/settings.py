"""The scenario's optional `city:` section: what the whole city shares, one sub-section per concept.

Every option has a default (docs/city.md shows them all); a scenario with only fleets gets a winter
city with Yangquan's climate, the default road network and no incidents or faults.
"""

from __future__ import annotations

from pydantic import Field

from simulator.city.calendar import CalendarSettings
from simulator.city.data_centre import DataCentreSettings
from simulator.city.mine import MineSettings
from simulator.city.roads import TrafficSettings
from simulator.city.weather import WeatherSettings
from simulator.fleet import StrictModel


class CitySettings(StrictModel):
    weather: WeatherSettings = Field(default_factory=WeatherSettings, description="temperature, wind, inversion nights")
    calendar: CalendarSettings = Field(default_factory=CalendarSettings, description="heating season, holidays")
    traffic: TrafficSettings = Field(default_factory=TrafficSettings, description="road network and incidents")
    data_centre: DataCentreSettings = Field(default_factory=DataCentreSettings, description="IT load, cooling, cooling faults")
    mine: MineSettings = Field(default_factory=MineSettings, description="gas emissions at the working faces")
