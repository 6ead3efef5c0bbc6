"""Coal-mine gas monitor at a working face: methane, carbon monoxide, ventilation air speed, and the
safety logic of the Coal Mine Safety Regulations (simulator/city/mine.py).

The face's methane comes from the mine model (coal cutting by shift, a slow wander, outbursts).
The monitor applies the thresholds to what it measures: at >= 1.0 % CH4 it raises the alarm (one
`gas_alarm` event per crossing), at >= 1.5 % it cuts the power to the face (`gas_power_cut`; the
shearer stops, so less gas is released), and below 1.0 % it clears the alarm (`gas_alarm_cleared`)
and restores the power (`gas_power_restored`). CO above 24 ppm sets `co_alarm`.
Monitoring systems sample every few seconds (shared/domain.md).

Readings every `cadence` (default 10 s): ch4_pct (% by volume, 0-~5), co_ppm (ppm), airflow_ms
(m/s, ventilation at the face, ~1.5-3), alarm, power_cut, co_alarm (bools).
Tags: district, lat, lon, face.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import TYPE_CHECKING, ClassVar

import simpy
from pydantic import Field

from simulator.city.calendar import CityCalendar
from simulator.city.common import AR1, DOMAIN, register
from simulator.city.mine import ALARM_PCT, CO_LIMIT_PPM, POWER_CUT_PCT, RESTORE_PCT, GasEvent, outburst_pct, shift_activity
from simulator.city.model import city_of
from simulator.device_faults import FaultyReadings
from simulator.device_type import DeviceType, FleetConfig, first_delay, owned_devices, send
from simulator.fleet import District, Duration
from simulator.randomness import Stream
from simulator.telemetry import BOOLEAN, FLOAT, Device, Reading, Telemetry

if TYPE_CHECKING:
    from simulator.world import World

POWER_CUT_ACTIVITY = 0.3  # the shearer stands; the face still releases gas from exposed coal
OUTBURST_DONE = 1e-4  # % CH4: an outburst this small is over


class Fleet(FleetConfig):
    monitors_gas: ClassVar[bool] = True  # a gas event names one of these devices: its face emits the gas

    cadence: Duration = Field(default=10.0, description="reporting interval (mine monitoring: every few seconds)")
    districts: list[District] = Field(default=["Kuangqu", "Jiaoqu", "Pingding", "Yuxian"], min_length=1, description="the mining districts, round-robin")
    background_pct: float = Field(default=0.3, gt=0, le=1.0, description="CH4 at the face while cutting, without outbursts, %")


class Face:
    """One working face: its gas, its monitor's alarm state and its power."""

    def __init__(self, device_id: str, fleet: Fleet, outbursts_per_day: float, events: list[GasEvent], rng: Stream, calendar: CityCalendar) -> None:
        self.device_id = device_id
        self.rng = rng
        self.background = fleet.background_pct * math.exp(rng.gauss(0.0, 0.2))
        self.calendar = calendar
        self.rate_per_s = outbursts_per_day / 86400.0
        self.scheduled = sorted(events, key=lambda event: event.at)
        self.outbursts: list[GasEvent] = []
        self.next_random = rng.expovariate(self.rate_per_s) if self.rate_per_s > 0 else math.inf
        self.ch4_wander = AR1(rng, 0.15, 1800.0)
        self.co_wander = AR1(rng, 0.2, 3600.0)
        self.airflow = rng.uniform(1.8, 2.6)
        self.alarm = False
        self.power_cut = False

    def ch4_pct(self, now: float) -> float:
        rng = self.rng
        while self.scheduled and self.scheduled[0].at <= now:
            self.outbursts.append(self.scheduled.pop(0))
        while self.next_random <= now:
            peak = 1.2 * math.exp(rng.gauss(0.0, 0.35))
            self.outbursts.append(GasEvent(device=self.device_id, at=self.next_random, peak_pct=peak))
            self.next_random += rng.expovariate(self.rate_per_s)
        gas = sum(outburst_pct(event, now) for event in self.outbursts)
        self.outbursts = [event for event in self.outbursts if now < event.at + event.rise or outburst_pct(event, now) > OUTBURST_DONE]
        activity = POWER_CUT_ACTIVITY if self.power_cut else shift_activity(self.calendar.hour(now))
        return self.background * activity * math.exp(self.ch4_wander.step(rng, now)) + gas

    def co_ppm(self, now: float) -> float:
        rng = self.rng
        activity = POWER_CUT_ACTIVITY if self.power_cut else shift_activity(self.calendar.hour(now))
        return 3.0 * activity * math.exp(self.co_wander.step(rng, now))


def monitor(
    env: simpy.Environment, device: Device, face: Face, telemetry: Telemetry, rng: Stream,
    faults: FaultyReadings | None, cadence: float, first_delay: float,
) -> Generator[simpy.Event, None, None]:  # fmt: skip
    """The monitor samples the face's air and applies the safety thresholds to what it reads."""
    yield env.timeout(first_delay)
    source = device.device_id
    tags = {"district": device.tags["district"], "face": device.tags["face"]}

    def apply_thresholds(readings: dict[str, Reading]) -> None:
        """Alarm, power cut and their all-clear, decided on the methane the monitor read."""
        ch4: float = readings["ch4_pct"]  # type: ignore[assignment]
        if ch4 >= ALARM_PCT and not face.alarm:
            face.alarm = True
            telemetry.event(source, "city", "gas_alarm", "alarm", f"{source}: CH4 {ch4:.2f} % at the face (alarm at {ALARM_PCT} %)", tags=tags, ch4_pct=ch4)
        if ch4 >= POWER_CUT_PCT and not face.power_cut:
            face.power_cut = True
            telemetry.event(source, "city", "gas_power_cut", "alarm", f"{source}: CH4 {ch4:.2f} %, power to the face cut", tags=tags, ch4_pct=ch4)
        if ch4 < RESTORE_PCT and face.alarm:
            face.alarm = False
            telemetry.event(source, "city", "gas_alarm_cleared", "info", f"{source}: CH4 {ch4:.2f} %, alarm cleared", tags=tags, ch4_pct=ch4)
            if face.power_cut:
                face.power_cut = False
                telemetry.event(source, "city", "gas_power_restored", "info", f"{source}: power to the face restored", tags=tags, ch4_pct=ch4)
        readings["alarm"] = face.alarm
        readings["power_cut"] = face.power_cut
        readings["co_alarm"] = readings["co_ppm"] > CO_LIMIT_PPM  # type: ignore[operator]

    while True:
        now = env.now
        readings: dict[str, Reading] = {
            "ch4_pct": round(face.ch4_pct(now), 2),
            "co_ppm": round(face.co_ppm(now), 1),
            "airflow_ms": round(face.airflow * (1.0 + 0.03 * rng.gauss(0.0, 1.0)), 2),
        }
        send(telemetry, device, faults, now, readings, apply_thresholds)
        yield env.timeout(cadence)


def build(world: World, fleet: Fleet) -> None:
    city = city_of(world)
    mine = city.settings.mine
    for index, device_id in owned_devices(world, fleet):
        face_name = f"F{index + 1:02d}"
        device, rng, faults = register(world, fleet, device_id, fleet.district_of(index), face=face_name)
        events = [event for event in mine.gas_events if event.device == device_id]
        face = Face(device_id, fleet, mine.outbursts_per_day, events, world.rng(f"{device_id}/outbursts"), city.calendar)
        world.env.process(monitor(world.env, device, face, world.telemetry, rng, faults, fleet.cadence, first_delay(rng, fleet.cadence)))


DEVICE = DeviceType("mine_gas", DOMAIN, "gas", Fleet, build, readings=dict.fromkeys(("ch4_pct", "co_ppm", "airflow_ms"), FLOAT),
    also_sends=dict.fromkeys(("alarm", "power_cut", "co_alarm"), BOOLEAN),  # the face's state, from the (faulty) values
)  # fmt: skip
