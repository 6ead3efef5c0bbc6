"""Data-centre rack (the cloud computing centre, simulator/city/data_centre.py): inlet and outlet air,
power, utilisation, and the site's PUE.

A rack's utilisation is the site's IT load plus its own job mix (offset sd 0.08, AR(1) wander sd
0.05, 20 min); its power = rated x (0.35 idle + 0.65 x utilisation), rated 6-12 kW (racks draw 5-15
kW, shared/domain.md "Data-centre racks"), and its fans draw up to 3 % more as the inlet heats up.
Inlet air = the hall's supply air + the rack's position in the aisle (0-2 °C) + the hall's cooling
fault rise; outlet = inlet + 1.25 °C per kW (the servers' airflow). An inlet above 27 °C (ASHRAE
recommended maximum; allowable A1 to 32 °C) is a `rack_inlet_high` event (tag `phase` start, and
end when it is back at or below 27 °C).

Readings every `cadence` (default 1 min): inlet_temp_c, outlet_temp_c (°C), power_kw (kW),
utilisation_pct (0-100 %), site_pue (the site's PUE now, 1.1-1.3). Tags: district, lat, lon, hall.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import simpy
from pydantic import Field

from simulator.city.common import AR1, DOMAIN, near, register
from simulator.city.data_centre import DataCentre
from simulator.city.model import city_of
from simulator.device_faults import FaultyReadings
from simulator.device_type import DeviceType, FleetConfig, first_delay, owned_devices, send
from simulator.fleet import District, Duration
from simulator.randomness import Stream
from simulator.telemetry import FLOAT, Device, Reading, Telemetry

if TYPE_CHECKING:
    from simulator.world import World

SITE = (37.885, 113.610)  # the data centre campus, approximate
ASHRAE_RECOMMENDED_MAX_C = 27.0


class Fleet(FleetConfig):
    cadence: Duration = Field(default=60.0, description="reporting interval")
    districts: list[District] = Field(default=["Jiaoqu"], min_length=1, description="the data centre's district")


def run_rack(
    env: simpy.Environment, device: Device, hall: str, centre: DataCentre, telemetry: Telemetry,
    rng: Stream, faults: FaultyReadings | None, cadence: float, first_delay: float,
) -> Generator[simpy.Event, None, None]:  # fmt: skip
    """The rack's sensors report its air temperatures and power as its servers work."""
    yield env.timeout(first_delay)
    rated_kw = rng.uniform(6.0, 12.0)
    offset = rng.gauss(0.0, 0.08)
    wander = AR1(rng, 0.05, 1200.0)
    position_c = rng.uniform(0.0, 2.0)
    supply_c = centre.settings.supply_air_c
    hot = False

    def watch_inlet(readings: dict[str, Reading]) -> None:
        """An inlet above the recommended range (and back within it) is an event, on the value read; the site's PUE goes along."""
        nonlocal hot
        inlet_read: float = readings["inlet_temp_c"]  # type: ignore[assignment]
        if (inlet_read > ASHRAE_RECOMMENDED_MAX_C) != hot:
            hot = not hot
            telemetry.event(
                device.device_id, "city", "rack_inlet_high", "warning" if hot else "info",
                f"{device.device_id}: inlet {inlet_read:.1f} °C " + ("above" if hot else "back within") + f" the {ASHRAE_RECOMMENDED_MAX_C:.0f} °C recommended",
                tags={"phase": "start" if hot else "end", "hall": hall}, inlet_temp_c=inlet_read,
            )  # fmt: skip
        readings["site_pue"] = round(centre.pue(env.now), 3)

    while True:
        now = env.now
        utilisation = min(max(centre.load(now) + offset + wander.step(rng, now), 0.02), 1.0)
        rise = centre.inlet_rise(hall, now)
        inlet = supply_c + position_c + rise + rng.gauss(0.0, 0.15)
        power = rated_kw * (0.35 + 0.65 * utilisation) * (1.0 + 0.03 * min(rise / 10.0, 1.0))
        readings: dict[str, Reading] = {
            "inlet_temp_c": round(inlet, 1),
            "outlet_temp_c": round(inlet + 1.25 * power + rng.gauss(0.0, 0.2), 1),
            "power_kw": round(power, 2),
            "utilisation_pct": round(100.0 * utilisation, 1),
        }
        send(telemetry, device, faults, now, readings, watch_inlet)
        yield env.timeout(cadence)


def build(world: World, fleet: Fleet) -> None:
    centre = city_of(world).data_centre
    for index, device_id in owned_devices(world, fleet):
        hall = centre.hall_names[index % len(centre.hall_names)]
        site = near(*SITE, world.rng(f"{device_id}/site"), radius_deg=0.001)
        device, rng, faults = register(world, fleet, device_id, fleet.district_of(index), site, hall=hall)
        world.env.process(run_rack(world.env, device, hall, centre, world.telemetry, rng, faults, fleet.cadence, first_delay(rng, fleet.cadence)))


DEVICE = DeviceType("dc_rack", DOMAIN, "rack", Fleet, build, readings=dict.fromkeys(("inlet_temp_c", "outlet_temp_c", "power_kw", "utilisation_pct"), FLOAT),
    also_sends={"site_pue": FLOAT},  # the campus's, added after faults
)  # fmt: skip
