"""Reefers: refrigerated boxes, the yard's plug points and the technicians who plug them in.

A reefer unit holds its box's air at the setpoint while it has power (after plugging in it pulls down
exponentially, time constant `pulldown_time_constant`); without power (on a crane's spreader, waiting
for a plug, unplugged before a truck takes it) the air drifts exponentially toward the ambient
temperature (`drift_time_constant`). Set points: frozen -18 to -25 °C, chilled 0-4 °C; an alarm when
the box air is out of band (±`alarm_band_c`) for longer than `alarm_delay` (shared/domain.md, "Reefers").
The ambient air follows Yangquan's monthly mean temperature (approximate climate normals, check) with a
diurnal swing peaking at 15:00.

A unit keeps the state of its alarm (`check_alarm`); the remote monitor on each plug point that
reads it and raises the alarm events is the `reefer` sensor, in sensors/reefer.py.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import datetime

import simpy
from pydantic import Field

from simulator.fleet import Duration, StrictModel
from simulator.port.containers import Box
from simulator.randomness import Stream

# Yangquan monthly mean air temperature, °C, January..December (approximate climate normals; check).
YANGQUAN_MONTHLY_MEAN_C: tuple[float, ...] = (-3.6, -0.2, 6.0, 13.5, 19.5, 23.5, 24.8, 23.2, 18.5, 12.5, 4.8, -1.6)


class ReeferSettings(StrictModel):
    plugs: int = Field(default=120, ge=1, le=10_000, description="plug points in the reefer blocks")
    frozen_share: float = Field(default=0.6, ge=0, le=1, description="share of reefers carrying frozen cargo (the rest chilled)")
    frozen_setpoints_c: list[float] = Field(default=[-18.0, -20.0, -25.0], min_length=1, description="set points of frozen cargo, chosen at random")
    chilled_setpoints_c: list[float] = Field(default=[0.0, 2.0, 4.0], min_length=1, description="set points of chilled cargo, chosen at random")
    alarm_band_c: float = Field(default=2.5, gt=0, description="an excursion is |box air - setpoint| above this")
    alarm_delay: Duration = Field(default=1800.0, description="an excursion raises an alarm once it has lasted this long")
    drift_time_constant: Duration = Field(default=10800.0, description="without power, the box air approaches ambient with this time constant")
    pulldown_time_constant: Duration = Field(default=2400.0, description="with power, the box air approaches the setpoint with this time constant")
    plug_in_delay: Duration = Field(default=1200.0, description="mean time (exponential) from a box landing on a plug point to a technician plugging it in")
    ambient_c: float | None = Field(default=None, ge=-40, le=50, description="mean ambient air; default: Yangquan's monthly mean for the start month")
    ambient_swing_c: float = Field(default=5.0, ge=0, le=20, description="half the diurnal range of the ambient air")


@dataclass(eq=False, slots=True)
class ReeferUnit:
    """A box's refrigeration unit and the temperature of the air in the box."""

    setpoint_c: float
    temp_c: float  # box air at `since`
    since: float
    powered: bool
    drift_tau: float
    pulldown_tau: float
    plug_point: PlugPoint | None = None
    leaving: bool = False  # unplugged for departure: no one plugs it in again
    out_since: float | None = None  # first reading out of band of the current excursion
    alarmed: bool = False

    def temperature(self, now: float, ambient_c: float) -> float:
        target, tau = (self.setpoint_c, self.pulldown_tau) if self.powered else (ambient_c, self.drift_tau)
        return target + (self.temp_c - target) * math.exp(-(now - self.since) / tau)

    def set_power(self, now: float, powered: bool, ambient_c: float) -> None:
        self.temp_c = self.temperature(now, ambient_c)
        self.since = now
        self.powered = powered

    def check_alarm(self, now: float, temp_c: float, band_c: float, delay_s: float) -> str | None:
        """'raised' or 'cleared' when the alarm changes state at this reading, else None."""
        if abs(temp_c - self.setpoint_c) > band_c:
            if self.out_since is None:
                self.out_since = now
            if not self.alarmed and now - self.out_since >= delay_s:
                self.alarmed = True
                return "raised"
            return None
        self.out_since = None
        if self.alarmed:
            self.alarmed = False
            return "cleared"
        return None


@dataclass(eq=False)
class PlugPoint:
    name: str
    box: Box | None = None


@dataclass(frozen=True)
class Ambient:
    """Outdoor air temperature at the port."""

    mean_c: float
    swing_c: float
    start_local_s: float  # seconds since local midnight at simulated time 0

    def at(self, now: float) -> float:
        hour = ((self.start_local_s + now) / 3600.0) % 24.0
        return self.mean_c + self.swing_c * math.cos(2 * math.pi * (hour - 15.0) / 24.0)

    @classmethod
    def for_start(cls, settings: ReeferSettings, start: datetime) -> Ambient:
        mean = settings.ambient_c if settings.ambient_c is not None else YANGQUAN_MONTHLY_MEAN_C[start.month - 1]
        return cls(mean, settings.ambient_swing_c, start.hour * 3600.0 + start.minute * 60.0 + start.second)


@dataclass(eq=False)
class ReeferRack:
    """The plug points and the technicians who plug boxes in."""

    env: simpy.Environment
    settings: ReeferSettings
    ambient: Ambient
    rng: Stream
    plugs: list[PlugPoint] = field(init=False)
    free: simpy.Store = field(init=False)

    def __post_init__(self) -> None:
        self.plugs = [PlugPoint(f"P{n:03d}") for n in range(1, self.settings.plugs + 1)]
        self.free = simpy.Store(self.env, capacity=len(self.plugs))
        self.free.items.extend(self.plugs)

    def new_unit(self, rng: Stream, now: float, powered: bool) -> ReeferUnit:
        s = self.settings
        setpoint = rng.choice(s.frozen_setpoints_c) if rng.random() < s.frozen_share else rng.choice(s.chilled_setpoints_c)
        return ReeferUnit(setpoint, setpoint + rng.gauss(0.0, 0.3), now, powered, s.drift_time_constant, s.pulldown_time_constant)

    def set_power(self, box: Box, powered: bool) -> None:
        assert box.reefer is not None
        box.reefer.set_power(self.env.now, powered, self.ambient.at(self.env.now))

    def plug_initial(self, box: Box) -> None:
        """A box already plugged in when the run starts (if a point is free)."""
        if self.free.items:
            plug = self.free.items.pop(0)
            plug.box = box
            assert box.reefer is not None
            box.reefer.plug_point = plug

    def settle(self, box: Box) -> Generator[simpy.Event, None, None]:
        """A box just put in the reefer block waits for a free plug point, then for a technician."""
        unit = box.reefer
        assert unit is not None
        plug = yield self.free.get()
        if unit.leaving or box.block is None:  # taken away before a point was free
            yield self.free.put(plug)
            return
        plug.box = box
        unit.plug_point = plug
        yield self.env.timeout(self.rng.expovariate(1.0 / self.settings.plug_in_delay))
        if unit.plug_point is plug and not unit.leaving:
            self.set_power(box, True)

    def unplug(self, box: Box, leaving: bool) -> None:
        """A technician unplugs the box (before it is moved)."""
        assert box.reefer is not None
        box.reefer.leaving = leaving
        if box.reefer.powered:
            self.set_power(box, False)

    def release(self, box: Box) -> None:
        """The box is lifted off its plug point."""
        unit = box.reefer
        assert unit is not None
        if unit.powered:
            self.set_power(box, False)
        plug = unit.plug_point
        if plug is not None:
            plug.box = None
            unit.plug_point = None
            self.free.put(plug)
