"""Smart electricity meter: a customer's power, energy register and supply voltage.

A household's or a shop's demand follows its kind's daily profile (workday or rest day, calendar),
plus electric heaters when it is cold (many flats supplement district heating; 0.4 kW x (5 °C -
outdoor) / 15 per household) and air conditioning when it is hot (0.8 kW x (outdoor - 26 °C) / 8),
from the weather; appliances switching make it wander (AR(1), log-sd 0.3 households, 0.12 shops,
30 min). The register adds each interval's energy. The voltage sags with the feeder's load
(the same profile): 230 V x (1 - 0.04 x load) ± 1 V (China: 220 V nominal, ±7 %).

The fleet's meters report together (simulator/cohort.py): a meter is its state between reports
(`Meter`), and `reading` is one report.

Readings every `cadence` (default 15 min, the State Grid load-curve interval): power_kw (mean over
the interval, kW), energy_kwh (register, kWh), voltage_v (V). Tags: district, lat, lon, kind.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

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

CustomerKind = Literal["residential", "commercial"]

# Demand per local hour as a share of the kind's mean: (workday, rest day).
PROFILES: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "residential": (
        (0.55, 0.45, 0.40, 0.40, 0.42, 0.55, 0.95, 1.30, 0.95, 0.70, 0.65, 0.85,
         1.10, 0.90, 0.70, 0.70, 0.80, 1.10, 1.65, 1.95, 1.90, 1.65, 1.20, 0.80),
        (0.60, 0.48, 0.42, 0.40, 0.40, 0.45, 0.65, 0.95, 1.15, 1.20, 1.15, 1.20,
         1.30, 1.10, 0.95, 0.95, 1.00, 1.20, 1.65, 1.90, 1.85, 1.60, 1.20, 0.85),
    ),
    "commercial": (
        (0.25, 0.22, 0.22, 0.22, 0.22, 0.25, 0.35, 0.70, 1.25, 1.55, 1.65, 1.70,
         1.60, 1.60, 1.65, 1.65, 1.60, 1.50, 1.30, 1.10, 0.90, 0.60, 0.35, 0.28),
        (0.25, 0.22, 0.22, 0.22, 0.22, 0.25, 0.30, 0.50, 0.95, 1.35, 1.55, 1.65,
         1.65, 1.65, 1.65, 1.65, 1.60, 1.55, 1.45, 1.30, 1.05, 0.70, 0.40, 0.28),
    ),
}  # fmt: skip
MEAN_KW: dict[str, float] = {"residential": 0.6, "commercial": 8.0}
WANDER_SD: dict[str, float] = {"residential": 0.3, "commercial": 0.12}
WANDER_TAU_S = 1800.0


class Fleet(FleetConfig):
    cadence: Duration = Field(default=900.0, description="reporting interval (load curve: 15 min)")
    kinds: list[CustomerKind] = Field(default=["residential", "residential", "residential", "commercial"], min_length=1, description="customer kinds, round-robin")


class Meter(Member):
    """One meter between reports: its customer's mean demand, the wander of its appliances (AR(1)
    value and when it was last stepped), its register."""

    __slots__ = ("rng", "kind", "mean_kw", "wander", "wander_last", "register_kwh")

    def __init__(self, device_id: str, tags: orjson.Fragment, faults: FaultyReadings | None, rng: Stream, kind: str) -> None:
        super().__init__(device_id, tags, faults)
        self.rng = rng
        self.kind = kind
        self.mean_kw = MEAN_KW[kind] * math.exp(rng.gauss(0.0, 0.35))
        self.wander = rng.gauss(0.0, WANDER_SD[kind])  # AR(1), started in its stationary distribution
        self.wander_last: float | None = None
        self.register_kwh = round(rng.uniform(500.0, 20_000.0), 1) * (1.0 if kind == "residential" else 10.0)


def reading(meter: Meter, city: City, cadence: float, now: float) -> dict[str, Reading]:
    """The meter integrates the customer's demand and reads its power, register and voltage."""
    kind, rng = meter.kind, meter.rng
    mean_kw = meter.mean_kw
    households = 1.0 if kind == "residential" else mean_kw / MEAN_KW["residential"] / 4.0
    workday_profile, rest_profile = PROFILES[kind]
    profile = workday_profile if city.calendar.day(now).workday else rest_profile
    shape = hourly(profile, city.calendar.hour(now))
    outdoor = city.weather.temp_c(now)
    weather_kw = households * (0.4 * max(0.0, 5.0 - outdoor) / 15.0 + 0.8 * max(0.0, outdoor - 26.0) / 8.0)
    meter.wander = ar1_step(rng, meter.wander, meter.wander_last, now, WANDER_SD[kind], WANDER_TAU_S)
    meter.wander_last = now
    power = mean_kw * shape * math.exp(meter.wander) + weather_kw
    meter.register_kwh += power * cadence / 3600.0
    voltage = 230.0 * (1.0 - 0.04 * shape) + rng.gauss(0.0, 1.0)
    return {"power_kw": round(power, 3), "energy_kwh": round(meter.register_kwh, 2), "voltage_v": round(voltage, 1)}


def build(world: World, fleet: Fleet) -> None:
    city = city_of(world)
    cadence = fleet.cadence
    cohort: Cohort[Meter] = Cohort(world, fleet, cadence)
    for index, device_id in owned_devices(world, fleet):
        kind = fleet.kinds[index % len(fleet.kinds)]
        tags, rng, faults = enlist(world, cohort, device_id, fleet.district_of(index), kind=kind)
        phase = first_delay(rng, cadence)  # drawn before the meter's state, as ever
        cohort.add(Meter(device_id, tags, faults, rng, kind), phase)
    telemetry, wire = world.telemetry, cohort.wire

    def report(meter: Meter, now: float) -> None:
        send_member(telemetry, wire, meter, now, reading(meter, city, cadence, now))

    cohort.start(report)


DEVICE = DeviceType("electricity_meter", DOMAIN, "meter", Fleet, build, readings=dict.fromkeys(("power_kw", "energy_kwh", "voltage_v"), FLOAT))
