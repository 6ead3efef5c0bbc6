"""The cloud data centre (Baidu's Yangquan computing centre, shared/domain.md "The place"): its IT
load, its cooling and the site PUE.

- IT load: the share of the servers' capacity in use, one series for the site (stream
  "city/data-centre"): `load_mean` + a daily cycle peaking at 21:00 (consumer internet evening
  peak) of `load_swing` + an hourly AR(1) wander (sd 0.05), linearly interpolated, 0.05-0.98.
- Cooling: the halls' supply air is held at `supply_air_c` (inside ASHRAE's recommended 18-27 °C
  inlet range). A cooling fault (`cooling_faults`, a CRAH/chiller failure in one hall or all) makes
  the inlet air approach `supply + rise_c` with `time_constant`, and relax back the same way once
  repaired; announced as `cooling_fault` events (tag `phase` start/end) from `city-data-centre`.
- PUE = 1 + cooling + other overhead: free cooling keeps it near `pue_min` when the outdoor air is
  below 5 °C; above that the chillers add 0.008 per °C (hyperscale PUE ~1.1-1.3, shared/domain.md).
"""

from __future__ import annotations

import math
from collections.abc import Generator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import simpy
from pydantic import Field

from simulator.city.weather import Weather
from simulator.fleet import Duration, StrictModel
from simulator.randomness import Stream
from simulator.recent import Recent

if TYPE_CHECKING:
    from simulator.telemetry import Telemetry

EVENT_SOURCE = "city-data-centre"


class CoolingFault(StrictModel):
    at: Duration = Field(description="simulated time after the start when the cooling fails")
    duration: Duration = Field(default=3600.0, description="until it is repaired")
    hall: str | None = Field(default=None, description="the hall that loses cooling (H1, H2, ...); null: every hall")
    rise_c: float = Field(default=12.0, gt=0, le=40, description="how far above the supply air the inlets would end up")
    time_constant: Duration = Field(default=900.0, description="how fast the inlet air heats up and cools down again")


class DataCentreSettings(StrictModel):
    halls: int = Field(default=4, ge=1, le=50, description="data halls; racks are spread over them round-robin")
    supply_air_c: float = Field(default=22.0, ge=15, le=30, description="cold-aisle supply air set point")
    load_mean: float = Field(default=0.55, ge=0.05, le=0.95, description="mean share of server capacity in use")
    load_swing: float = Field(default=0.15, ge=0, le=0.45, description="half the daily swing of that share")
    pue_min: float = Field(default=1.10, ge=1.0, le=2.0, description="PUE with free cooling (outdoor air below 5 °C)")
    cooling_faults: list[CoolingFault] = Field(default_factory=list, description="cooling failures at simulated times")


class DataCentre:
    def __init__(self, settings: DataCentreSettings, start: datetime, weather: Weather, rng: Stream, keep_hours: int | None = None) -> None:
        self.settings = settings
        self.start = start
        self.weather = weather
        self.rng = rng
        self.hall_names = [f"H{n}" for n in range(1, settings.halls + 1)]
        self._load: Recent[float] = Recent(keep=keep_hours)  # hourly; a live run keeps the recent ones
        self._wander = rng.gauss(0.0, 0.05)

    def load(self, now: float) -> float:
        """Share of the site's server capacity in use."""
        position = now / 3600.0
        index = int(position)
        while index + 1 >= self._load.total:
            self._extend()
        low = self._load.at(index)
        return low + (self._load.at(index + 1) - low) * (position - index)

    def _extend(self) -> None:
        s = self.settings
        local = self.start + timedelta(hours=self._load.total)
        hour = local.hour + local.minute / 60.0
        self._wander = 0.8 * self._wander + math.sqrt(1 - 0.64) * 0.05 * self.rng.gauss(0.0, 1.0)
        load = s.load_mean + s.load_swing * math.cos(2 * math.pi * (hour - 21.0) / 24.0) + self._wander
        self._load.append(min(max(load, 0.05), 0.98))

    def inlet_rise(self, hall: str, now: float) -> float:
        """How far the hall's cooling faults have pushed its inlet air above the supply air, °C."""
        rise = 0.0
        for fault in self.settings.cooling_faults:
            if now <= fault.at or (fault.hall is not None and fault.hall != hall):
                continue
            end = fault.at + fault.duration
            reached = fault.rise_c * (1.0 - math.exp(-(min(now, end) - fault.at) / fault.time_constant))
            rise += reached if now <= end else reached * math.exp(-(now - end) / fault.time_constant)
        return rise

    def pue(self, now: float) -> float:
        outdoor = self.weather.temp_c(now)
        return self.settings.pue_min + 0.008 * max(0.0, outdoor - 5.0)


def cooling_fault(env: simpy.Environment, fault: CoolingFault, telemetry: Telemetry) -> Generator[simpy.Event, None, None]:
    """Announce a cooling failure and its repair (the inlet temperatures follow `inlet_rise`)."""
    where = f"hall {fault.hall}" if fault.hall else "every hall"
    tags = {"phase": "start", "hall": fault.hall or "all"}
    yield env.timeout(fault.at)
    telemetry.event(EVENT_SOURCE, "city", "cooling_fault", "alarm", f"cooling lost in {where}", tags=tags, rise_c=fault.rise_c)
    yield env.timeout(fault.duration)
    telemetry.event(EVENT_SOURCE, "city", "cooling_fault", "info", f"cooling restored in {where}", tags={**tags, "phase": "end"}, rise_c=fault.rise_c)
