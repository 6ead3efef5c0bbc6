"""Container handling machines: rail-mounted gantry cranes (train ↔ yard) and reach stackers
(yard ↔ truck, yard ↔ customs shed).

Each kind is a pool of identified machines (`simpy.Store` of `Crane`): a move takes the first free
machine, in request order. Move times are gamma-distributed with the configured mean and coefficient
of variation. Defaults: an RMG does ~20-30 moves/hour, a reach stacker ~12-20 (shared/domain.md,
"Inland port operations"); 144 s and 240 s per move are 25 and 15 moves/hour.

Power draw comes from the machine's state: its auxiliaries (lights, HVAC, control) when idle, plus
the drives in proportion to the box's weight while moving. `energy_kwh` integrates it exactly.

The `port_crane` sensor on each machine is in sensors/port_crane.py.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Literal

import simpy
from pydantic import Field

from simulator.fleet import Duration, StrictModel
from simulator.port.containers import Box
from simulator.randomness import Stream

CraneKind = Literal["rmg", "reach_stacker"]


class CraneSettings(StrictModel):
    gantry_cranes: int = Field(default=2, ge=1, le=50, description="rail-mounted gantry cranes working the trains")
    gantry_move_time: Duration = Field(default=144.0, description="mean time of one RMG move (25 moves/hour)")
    reach_stackers: int = Field(default=4, ge=1, le=100, description="reach stackers serving trucks and customs")
    reach_stacker_move_time: Duration = Field(default=240.0, description="mean time of one reach-stacker move (15 moves/hour)")
    move_time_cv: float = Field(default=0.35, gt=0, le=2, description="coefficient of variation of move times (1 = exponential)")
    gantry_idle_kw: float = Field(default=20.0, ge=0, description="RMG auxiliaries when idle")
    gantry_move_kw: float = Field(default=180.0, ge=0, description="RMG drives while moving a 30 t box")
    reach_stacker_idle_kw: float = Field(default=15.0, ge=0, description="reach stacker engine at idle")
    reach_stacker_move_kw: float = Field(default=110.0, ge=0, description="reach stacker engine while moving a 30 t box")


@dataclass(eq=False)
class Crane:
    """One machine, its counters and the move it is making."""

    name: str
    kind: CraneKind
    idle_kw: float
    move_kw: float
    moves: int = 0
    busy_s: float = 0.0
    energy_done_kwh: float = 0.0  # energy of completed moves above idle
    move_started: float | None = None
    move_extra_kw: float = 0.0  # drive power of the current move

    def start_move(self, now: float, box: Box) -> None:
        self.move_started = now
        # Hoisting dominates: drive power scales with the gross weight (30 t = full rating).
        self.move_extra_kw = self.move_kw * (0.4 + 0.6 * min(box.weight_t, 30.0) / 30.0)

    def finish_move(self, now: float) -> None:
        assert self.move_started is not None
        duration = now - self.move_started
        self.busy_s += duration
        self.energy_done_kwh += self.move_extra_kw * duration / 3600.0
        self.moves += 1
        self.move_started = None
        self.move_extra_kw = 0.0

    def power_kw(self) -> float:
        return self.idle_kw + self.move_extra_kw

    def energy_kwh(self, now: float) -> float:
        current = self.move_extra_kw * (now - self.move_started) / 3600.0 if self.move_started is not None else 0.0
        return self.idle_kw * now / 3600.0 + self.energy_done_kwh + current


class Cranes:
    """A pool of machines of one kind."""

    def __init__(self, env: simpy.Environment, machines: list[Crane], mean_move_s: float, cv: float, rng: Stream) -> None:
        self.env = env
        self.machines = machines
        self.free = simpy.Store(env, capacity=len(machines))
        self.free.items.extend(machines)
        self.shape = 1.0 / (cv * cv)
        self.scale = mean_move_s / self.shape
        self.rng = rng

    def move(self, box: Box, on_lift: Callable[[], None] | None = None) -> Generator[simpy.Event, None, Crane]:
        """Take the next free machine, move `box`, give the machine back; `on_lift` runs as the
        machine picks the box up (until then it stays where it was, e.g. on the train's power)."""
        crane = yield self.free.get()
        if on_lift is not None:
            on_lift()
        crane.start_move(self.env.now, box)
        yield self.env.timeout(self.rng.gammavariate(self.shape, self.scale))
        crane.finish_move(self.env.now)
        yield self.free.put(crane)
        return crane


def build_pools(env: simpy.Environment, settings: CraneSettings, rng_for: Callable[[str], Stream]) -> tuple[Cranes, Cranes]:
    rmgs = [Crane(f"RMG{n}", "rmg", settings.gantry_idle_kw, settings.gantry_move_kw) for n in range(1, settings.gantry_cranes + 1)]
    stackers = [
        Crane(f"RS{n}", "reach_stacker", settings.reach_stacker_idle_kw, settings.reach_stacker_move_kw)
        for n in range(1, settings.reach_stackers + 1)
    ]
    return (
        Cranes(env, rmgs, settings.gantry_move_time, settings.move_time_cv, rng_for("port/rmg")),
        Cranes(env, stackers, settings.reach_stacker_move_time, settings.move_time_cv, rng_for("port/reach-stackers")),
    )
