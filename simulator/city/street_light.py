"""Street-light controller: one lighting circuit of LED heads, switched at sunset and sunrise.

The controller switches its circuit on at the day's sunset and off at the next sunrise over Yangquan,
computed by astral for the simulated date (simulator/city/sun.py; `twilight: civil` uses civil
dusk and dawn), and dims to `night_dim_pct` between `dim_from` and `dim_to` local time (a common
energy-saving schedule). Power = heads x `head_w` x dim level when on (LED heads 100-250 W,
shared/domain.md "Street lights"), the controller's own `standby_w` when off; the energy register
adds the power of each interval.

Readings every `cadence` (default 5 min): on (bool), dim_pct (0-100 %), power_w (W), energy_kwh
(kWh, cumulative since the run started). Tags: district, lat, lon.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import simpy
from pydantic import Field

from simulator.city.calendar import CityCalendar
from simulator.city.common import DOMAIN, register
from simulator.city.model import city_of
from simulator.city.sun import SunClock, Twilight
from simulator.device_faults import FaultyReadings
from simulator.device_type import DeviceType, FleetConfig, first_delay, owned_devices, send
from simulator.fleet import Duration
from simulator.randomness import Stream
from simulator.telemetry import BOOLEAN, FLOAT, Device, Reading, Telemetry

if TYPE_CHECKING:
    from simulator.world import World


class Fleet(FleetConfig):
    cadence: Duration = Field(default=300.0, description="reporting interval")
    heads: int = Field(default=24, ge=1, le=500, description="LED heads on a controller's circuit")
    head_w: float = Field(default=150.0, ge=20, le=400, description="rated power of one head, W (LED: 100-250)")
    standby_w: float = Field(default=3.0, ge=0, le=50, description="the controller's own draw, W")
    twilight: Twilight = Field(default="official", description="'official': sunset/sunrise; 'civil': civil dusk/dawn")
    night_dim_pct: float = Field(default=50.0, ge=0, le=100, description="dim level in the small hours, % of full power")
    dim_from: float = Field(default=0.0, ge=0, lt=24, description="local hour the dimming starts")
    dim_to: float = Field(default=5.0, ge=0, lt=24, description="local hour the dimming ends")


def switch(
    env: simpy.Environment, device: Device, fleet: Fleet, sun: SunClock, calendar: CityCalendar, telemetry: Telemetry,
    rng: Stream, faults: FaultyReadings | None, first_delay: float,
) -> Generator[simpy.Event, None, None]:  # fmt: skip
    """The controller keeps its circuit lit while it is dark and reports its state and energy."""
    yield env.timeout(first_delay)
    # Heads age differently: a circuit draws within ±5 % of its rating.
    rated_w = fleet.heads * fleet.head_w * rng.uniform(0.95, 1.05)
    energy_kwh = 0.0
    power_w = 0.0
    last = env.now
    while True:
        now = env.now
        energy_kwh += power_w * (now - last) / 3.6e6
        last = now
        on = sun.is_dark(now, fleet.twilight)
        hour = calendar.hour(now)
        dimmed = (fleet.dim_from <= hour < fleet.dim_to) if fleet.dim_from <= fleet.dim_to else (hour >= fleet.dim_from or hour < fleet.dim_to)
        dim_pct = (fleet.night_dim_pct if dimmed else 100.0) if on else 0.0
        power_w = rated_w * dim_pct / 100.0 + fleet.standby_w
        readings: dict[str, Reading] = {"on": on, "dim_pct": dim_pct, "power_w": round(power_w, 1), "energy_kwh": round(energy_kwh, 3)}
        send(telemetry, device, faults, now, readings)
        yield env.timeout(fleet.cadence)


def build(world: World, fleet: Fleet) -> None:
    city = city_of(world)
    for index, device_id in owned_devices(world, fleet):
        device, rng, faults = register(world, fleet, device_id, fleet.district_of(index))
        world.env.process(switch(world.env, device, fleet, city.sun, city.calendar, world.telemetry, rng, faults, first_delay(rng, fleet.cadence)))


DEVICE = DeviceType("street_light", DOMAIN, "light", Fleet, build, readings=dict.fromkeys(("dim_pct", "power_w", "energy_kwh"), FLOAT),
    also_sends={"on": BOOLEAN},
)  # fmt: skip
