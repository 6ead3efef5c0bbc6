"""District-heating substation (heat exchanger station between the primary network and a district's
buildings).

In the heating season (calendar) the heat load follows the outdoor temperature as the buildings
feel it (weather, ~12 h average): load = design_load x x, x = (18 °C - outdoor) / (18 °C -
`design_outdoor_c`), clipped to 0-1.2 ("roughly linear in 18 °C - outdoor", shared/domain.md
"District heating"), with a morning peak (+8 % at 07:00) and a slow wander (AR(1), 3 %).
Temperatures follow the station's heating curve: secondary supply 40 → 60 °C and return 35 → 45 °C,
primary supply 70 → 110 °C and return 45 → 70 °C as x goes 0 → 1 (design 110/70 primary, 50-60 /
40-45 secondary). Flow = load / (1.163 kWh/(m³·K) x ΔT). Outside the season the pumps stand: no
load, no flow, water at plant-room temperature, static pressure.

Readings every `cadence` (default 5 min): outdoor_temp_c (the station's outdoor sensor, °C),
supply_temp_c, return_temp_c (secondary, °C), primary_supply_temp_c, primary_return_temp_c (°C),
supply_pressure_mpa, return_pressure_mpa (secondary, MPa), flow_m3h (secondary, m³/h), heat_load_kw
(kW, 0-~1.2 x design), heating (bool: the season is on). Tags: district, lat, lon.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import TYPE_CHECKING

import simpy
from pydantic import Field

from simulator.city.common import AR1, DOMAIN, register
from simulator.city.model import City, city_of
from simulator.device_faults import FaultyReadings
from simulator.device_type import DeviceType, FleetConfig, first_delay, owned_devices, send
from simulator.fleet import Duration
from simulator.randomness import Stream
from simulator.telemetry import BOOLEAN, FLOAT, Device, Reading, Telemetry

if TYPE_CHECKING:
    from simulator.world import World

WATER_KWH_PER_M3K = 1.163  # heat carried by a cubic metre of water per kelvin


READINGS: tuple[str, ...] = (
    "outdoor_temp_c", "supply_temp_c", "return_temp_c", "primary_supply_temp_c", "primary_return_temp_c",
    "supply_pressure_mpa", "return_pressure_mpa", "flow_m3h", "heat_load_kw",
)  # fmt: skip


class Fleet(FleetConfig):
    cadence: Duration = Field(default=300.0, description="reporting interval")
    design_load_kw: float = Field(default=2500.0, gt=0, le=100_000, description="heat load at the design outdoor temperature (stations vary ±30 %)")
    design_outdoor_c: float = Field(default=-10.0, ge=-40, le=5, description="design outdoor temperature (Yangquan about -10 °C; check)")


def supply_heat(
    env: simpy.Environment, device: Device, fleet: Fleet, city: City, telemetry: Telemetry,
    rng: Stream, faults: FaultyReadings | None, first_delay: float,
) -> Generator[simpy.Event, None, None]:  # fmt: skip
    """The station follows its heating curve and reports its temperatures, pressures, flow and load."""
    yield env.timeout(first_delay)
    design_kw = fleet.design_load_kw * rng.uniform(0.7, 1.3)
    wander = AR1(rng, 0.03, 6 * 3600.0)
    static_mpa = rng.uniform(0.22, 0.30)  # the height of the buildings it serves
    while True:
        now = env.now
        heating = city.calendar.day(now).heating
        outdoor = city.weather.temp_c(now)
        noise = wander.step(rng, now)
        if heating:
            x = min(max((18.0 - city.weather.heating_temp_c(now)) / (18.0 - fleet.design_outdoor_c), 0.0), 1.2)
            hour = city.calendar.hour(now)
            morning = 1.0 + 0.08 * math.exp(-(((hour - 7.0) / 1.5) ** 2))
            load = design_kw * x * morning * (1.0 + noise)
            supply, ret = 40.0 + 20.0 * x, 35.0 + 10.0 * x
            primary_supply, primary_return = 70.0 + 40.0 * x, 45.0 + 25.0 * x
            flow = load / (WATER_KWH_PER_M3K * (supply - ret))
            supply_p = static_mpa + 0.20 + 0.05 * x
            return_p = static_mpa + 0.02
        else:
            load = flow = 0.0
            supply = ret = primary_supply = primary_return = 18.0 + 0.3 * (outdoor - 18.0)
            supply_p = return_p = static_mpa
        gauss = rng.gauss
        readings: dict[str, Reading] = {
            "outdoor_temp_c": round(outdoor + gauss(0.0, 0.2), 1),
            "supply_temp_c": round(supply + gauss(0.0, 0.2), 1),
            "return_temp_c": round(ret + gauss(0.0, 0.2), 1),
            "primary_supply_temp_c": round(primary_supply + gauss(0.0, 0.3), 1),
            "primary_return_temp_c": round(primary_return + gauss(0.0, 0.3), 1),
            "supply_pressure_mpa": round(supply_p + gauss(0.0, 0.003), 3),
            "return_pressure_mpa": round(return_p + gauss(0.0, 0.003), 3),
            "flow_m3h": round(flow, 1),
            "heat_load_kw": round(load, 1),
            "heating": heating,
        }
        send(telemetry, device, faults, now, readings)
        yield env.timeout(fleet.cadence)


def build(world: World, fleet: Fleet) -> None:
    city = city_of(world)
    for index, device_id in owned_devices(world, fleet):
        device, rng, faults = register(world, fleet, device_id, fleet.district_of(index))
        world.env.process(supply_heat(world.env, device, fleet, city, world.telemetry, rng, faults, first_delay(rng, fleet.cadence)))


DEVICE = DeviceType("heating_substation", DOMAIN, "heat", Fleet, build, readings=dict.fromkeys(READINGS, FLOAT), also_sends={"heating": BOOLEAN})
