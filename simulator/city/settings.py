"""The scenario's optional `city:` section: what the whole city shares, one sub-section per concept.

Every option has a default (docs/city.md shows them all); a scenario with only fleets gets a winter
city with Yangquan's climate, the default road network and no incidents or faults.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from simulator.city.air_record import AirSettings
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
    air: AirSettings = Field(default_factory=AirSettings, description="the published year the air's levels follow")

    def check_fleets(self, fleets: list[Any]) -> None:
        """Raise a pointed error (`fleets.N.roads: ...`, `city.mine.gas_events.N.device: ...`) when the
        fleets and the city section name each other's things wrongly."""
        roads = [road.name for road in self.traffic.roads]
        gas_ids: set[str] = set()
        for index, fleet in enumerate(fleets):
            unknown = [name for name in getattr(fleet, "roads", None) or [] if name not in roads]
            if unknown:
                raise ValueError(f"fleets.{index}.roads: no road {', '.join(map(repr, unknown))} in city.traffic.roads (known: {', '.join(roads)})")
            if fleet.monitors_gas:
                gas_ids.update(fleet.device_ids())
        for index, event in enumerate(self.mine.gas_events):
            if event.device not in gas_ids:
                raise ValueError(f"city.mine.gas_events.{index}.device: {event.device!r} is not a mine_gas device of this scenario")
