"""Water-supply pressure node: pressure and flow at a node of the distribution network.

Demand follows the day (calendar): low at night (minimum ~03:00-04:00), a morning peak at 07:00
(later on rest days), lunch and an evening peak at 19:00-20:00. Pressure at the node = its static
pressure (0.40-0.46 MPa at zero flow, set by the reservoir's height) - head loss, which grows with
the square of the flow in the mains; at the peak a node sits near 0.2-0.3 MPa (shared/domain.md,
"Water supply pressure at nodes 0.2-0.4 MPa"). A leak (`leaks`) adds a constant flow from `at`,
which shows in the night minimum flow (how utilities find leaks) and drops the pressure; it is
announced as a `water_leak` event from the node.

Readings every `cadence` (default 5 min): pressure_mpa (MPa), flow_m3h (m³/h, the node's district
meter). Tags: district, lat, lon.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import TYPE_CHECKING

import simpy
from pydantic import Field, model_validator

from simulator.city.common import AR1, DOMAIN, hourly, register
from simulator.city.model import City, city_of
from simulator.device_faults import FaultyReadings
from simulator.device_type import DeviceType, FleetConfig, first_delay, owned_devices, send
from simulator.fleet import Duration, StrictModel
from simulator.randomness import Stream
from simulator.telemetry import FLOAT, Device, Reading, Telemetry

if TYPE_CHECKING:
    from simulator.world import World


# Demand per local hour as a share of the peak (value at the start of the hour).
WORKDAY_DEMAND: tuple[float, ...] = (
    0.35, 0.28, 0.25, 0.24, 0.25, 0.35, 0.70, 1.00, 0.90, 0.75, 0.70, 0.75,
    0.80, 0.70, 0.62, 0.60, 0.62, 0.72, 0.88, 0.95, 0.90, 0.75, 0.58, 0.45,
)  # fmt: skip
REST_DAY_DEMAND: tuple[float, ...] = (
    0.38, 0.30, 0.26, 0.24, 0.24, 0.28, 0.42, 0.65, 0.90, 0.95, 0.88, 0.85,
    0.85, 0.75, 0.68, 0.65, 0.66, 0.74, 0.88, 0.95, 0.90, 0.78, 0.62, 0.48,
)  # fmt: skip


class Leak(StrictModel):
    device: str = Field(description="the node nearest the leak, e.g. 'water-0003'")
    at: Duration = Field(description="simulated time after the start when the main bursts")
    flow_m3h: float = Field(default=30.0, gt=0, le=5000, description="water lost, m³/h")


class Fleet(FleetConfig):
    cadence: Duration = Field(default=300.0, description="reporting interval")
    peak_flow_m3h: float = Field(default=250.0, gt=0, le=50_000, description="a node's flow at the peak hour (nodes vary log-normally, sd 0.4)")
    leaks: list[Leak] = Field(default_factory=list, description="leaks starting at simulated times")

    @model_validator(mode="after")
    def _leaks_at_nodes_of_this_fleet(self) -> Fleet:
        ids = set(self.device_ids())
        for index, leak in enumerate(self.leaks):
            if leak.device not in ids:
                raise ValueError(f"leaks.{index}.device: {leak.device!r} is not a node of this fleet")
        return self


def deliver_water(
    env: simpy.Environment, device: Device, fleet: Fleet, city: City, telemetry: Telemetry,
    rng: Stream, faults: FaultyReadings | None, first_delay: float,
) -> Generator[simpy.Event, None, None]:  # fmt: skip
    """The node's meter and pressure sensor report as the city draws water through the mains."""
    yield env.timeout(first_delay)
    peak = fleet.peak_flow_m3h * math.exp(rng.gauss(0.0, 0.4))
    static = rng.uniform(0.40, 0.46)
    loss_at_peak = rng.uniform(0.12, 0.20)  # MPa lost in the mains at the node's peak flow
    wander = AR1(rng, 0.05, 3600.0)
    leaks = [leak for leak in fleet.leaks if leak.device == device.device_id]
    while True:
        now = env.now
        profile = WORKDAY_DEMAND if city.calendar.day(now).workday else REST_DAY_DEMAND
        flow = peak * hourly(profile, city.calendar.hour(now)) * (1.0 + wander.step(rng, now))
        flow += sum(leak.flow_m3h for leak in leaks if now >= leak.at)
        pressure = static - loss_at_peak * (flow / peak) ** 2
        readings: dict[str, Reading] = {"pressure_mpa": round(pressure + rng.gauss(0.0, 0.002), 3), "flow_m3h": round(flow, 1)}
        send(telemetry, device, faults, now, readings)
        yield env.timeout(fleet.cadence)


def burst(env: simpy.Environment, leak: Leak, telemetry: Telemetry) -> Generator[simpy.Event, None, None]:
    """A main bursts near a node: announced when it happens (the node's flow shows it from then on)."""
    yield env.timeout(leak.at)
    telemetry.event(
        leak.device, "city", "water_leak", "warning", f"leak near {leak.device}: {leak.flow_m3h:.0f} m³/h lost",
        tags={"phase": "start"}, flow_m3h=leak.flow_m3h,
    )  # fmt: skip


def build(world: World, fleet: Fleet) -> None:
    city = city_of(world)
    for leak in fleet.leaks:
        world.env.process(burst(world.env, leak, world.telemetry))
    for index, device_id in owned_devices(world, fleet):
        device, rng, faults = register(world, fleet, device_id, fleet.district_of(index))
        world.env.process(deliver_water(world.env, device, fleet, city, world.telemetry, rng, faults, first_delay(rng, fleet.cadence)))


DEVICE = DeviceType("water_pressure", DOMAIN, "water", Fleet, build, readings={"pressure_mpa": FLOAT, "flow_m3h": FLOAT})
