"""Smart household water meter: the flat's water use and its register, reported like an NB-IoT meter.

A household draws water by the hour of its day (calendar: workday or rest day; a morning peak at
07:00, later on rest days, and the evening's at 19:00-21:00, almost nothing at 03:00), more on hot
days (+2 % per °C above 20 °C, the weather), about 2.5 persons x 130 L a day on average (Chinese
urban domestic use is ~120-180 L a person a day; check), each household's mean log-normal (sd 0.4)
and wandering (AR(1), log-sd 0.3, 2 h: showers and washing machines). The register adds each
interval's volume.

The fleet's meters report together (simulator/cohort.py): a meter is its state between reports
(`WaterMeter`), and `reading` is one report.

Readings every `cadence` (default 1 h; NB-IoT meters report hourly or daily): flow_lph (L/h, the
household's flow at the report, taken as the interval's mean for the register) and volume_m3
(register, m³, 3 decimals). Tags: district, lat, lon.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import orjson
from pydantic import Field

from simulator.city.common import DOMAIN, ar1_step, enlist, hourly
from simulator.city.model import City, city_of
from simulator.cohort import Cohort, Member, send_member
from simulator.device_faults import FaultyReadings
from simulator.device_type import DeviceType, FleetConfig, first_delay, owned_devices
from simulator.fleet import Duration
from simulator.randomness import Stream
from simulator.telemetry import FLOAT, Reading

if TYPE_CHECKING:
    from simulator.world import World

# A household's use per local hour as a share of its daily mean (value at the start of the hour).
WORKDAY_USE: tuple[float, ...] = (
    0.30, 0.15, 0.10, 0.08, 0.10, 0.35, 1.40, 2.20, 1.50, 0.80, 0.70, 0.90,
    1.20, 0.90, 0.60, 0.55, 0.70, 1.00, 1.60, 2.10, 2.00, 1.70, 1.20, 0.70,
)  # fmt: skip
REST_DAY_USE: tuple[float, ...] = (
    0.40, 0.20, 0.12, 0.08, 0.08, 0.15, 0.50, 1.20, 1.80, 1.70, 1.40, 1.30,
    1.40, 1.00, 0.80, 0.75, 0.85, 1.10, 1.60, 2.00, 1.90, 1.60, 1.20, 0.80,
)  # fmt: skip
MEAN_LPH = 2.5 * 130.0 / 24.0  # persons x litres a person a day, per hour
HOT_DAY_GAIN = 0.02  # share more per °C above HOT_FROM_C
HOT_FROM_C = 20.0
WANDER_SD = 0.3  # log-sd of a household's wandering use
WANDER_TAU_S = 7200.0


class Fleet(FleetConfig):
    cadence: Duration = Field(default=3600.0, description="reporting interval (NB-IoT meters: hourly or daily)")


class WaterMeter(Member):
    """One water meter between reports: its household's mean flow, the wander of its use (AR(1) value
    and when it was last stepped), its register."""

    __slots__ = ("rng", "mean_lph", "wander", "wander_last", "register_m3")

    def __init__(self, device_id: str, tags: orjson.Fragment, faults: FaultyReadings | None, rng: Stream) -> None:
        super().__init__(device_id, tags, faults)
        self.rng = rng
        self.mean_lph = MEAN_LPH * math.exp(rng.gauss(0.0, 0.4))
        self.wander = rng.gauss(0.0, WANDER_SD)  # AR(1), started in its stationary distribution
        self.wander_last: float | None = None
        self.register_m3 = round(rng.uniform(50.0, 2_000.0), 3)


def reading(meter: WaterMeter, city: City, cadence: float, now: float) -> dict[str, Reading]:
    """The meter integrates the household's flow and reads it with its register."""
    profile = WORKDAY_USE if city.calendar.day(now).workday else REST_DAY_USE
    hot = 1.0 + HOT_DAY_GAIN * max(0.0, city.weather.temp_c(now) - HOT_FROM_C)
    meter.wander = ar1_step(meter.rng, meter.wander, meter.wander_last, now, WANDER_SD, WANDER_TAU_S)
    meter.wander_last = now
    flow_lph = meter.mean_lph * hourly(profile, city.calendar.hour(now)) * hot * math.exp(meter.wander)
    meter.register_m3 += flow_lph * cadence / 3600.0 / 1000.0
    return {"flow_lph": round(flow_lph, 1), "volume_m3": round(meter.register_m3, 3)}


def build(world: World, fleet: Fleet) -> None:
    city = city_of(world)
    cadence = fleet.cadence
    cohort: Cohort[WaterMeter] = Cohort(world, fleet, cadence)
    for index, device_id in owned_devices(world, fleet):
        tags, rng, faults = enlist(world, cohort, device_id, fleet.district_of(index))
        phase = first_delay(rng, cadence)  # drawn before the meter's state, as ever
        cohort.add(WaterMeter(device_id, tags, faults, rng), phase)
    telemetry, wire = world.telemetry, cohort.wire

    def report(meter: WaterMeter, now: float) -> None:
        send_member(telemetry, wire, meter, now, reading(meter, city, cadence, now))

    cohort.start(report)


DEVICE = DeviceType("water_meter", DOMAIN, "wmeter", Fleet, build, readings={"flow_lph": FLOAT, "volume_m3": FLOAT})
