"""The gate: OCR/RFID lanes trucks pass on the way in and out.

Each direction (in, out) is a pool of lanes fed by one first-come-first-served queue on the
approach road (`simpy.Store` of `Lane`: the first truck waiting gets the next free lane), so a
direction with c lanes, Poisson arrivals and exponential service is exactly an M/M/c queue, which
the tests check against Erlang C. Service (OCR of plate and container number, RFID tag, seal and
damage check) takes ~1-3 min per truck (shared/domain.md): gamma-distributed with the configured
mean and coefficient of variation (cv 1 = exponential).

The gate keeps the time integral of its queue, so the mean queue length is exact, not sampled.

The `gate_lane` sensor on each lane is in sensors/gate_lane.py.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Literal

import simpy
from pydantic import Field

from simulator.fleet import Duration, StrictModel
from simulator.randomness import Stream
from simulator.recent import Recent

GateDirection = Literal["in", "out"]


class GateSettings(StrictModel):
    in_lanes: int = Field(default=2, ge=1, le=20, description="lanes for trucks entering")
    out_lanes: int = Field(default=2, ge=1, le=20, description="lanes for trucks leaving")
    service_time: Duration = Field(default=100.0, description="mean OCR/RFID check per truck (domain: 1-3 min)")
    service_cv: float = Field(default=0.4, gt=0, le=2, description="coefficient of variation of the service time (1 = exponential)")
    ocr_read_rate: float = Field(default=0.97, ge=0, le=1, description="share of trucks whose plate and box number OCR reads first time")
    rfid_read_rate: float = Field(default=0.99, ge=0, le=1, description="share of trucks whose RFID tag (electronic plate) reads first time")


@dataclass(eq=False)
class Lane:
    name: str
    direction: GateDirection
    busy: bool = False
    served: int = 0
    last_service_s: float = 0.0
    busy_s: float = 0.0  # total service time


@dataclass(eq=False)
class Gate:
    """The lanes of one direction and their shared queue."""

    env: simpy.Environment
    direction: GateDirection
    lanes: list[Lane]
    mean_service_s: float
    cv: float
    rng: Stream
    free: simpy.Store = field(init=False)
    waiting: int = 0
    queue_area: float = 0.0  # ∫ waiting dt
    last_change: float = 0.0
    keep: int | None = None  # a live run: the waits and arrivals kept (simulator/recent.py); None: all
    waits: Recent[float] = field(init=False)
    arrivals: Recent[float] = field(init=False)  # when each truck joined the queue

    def __post_init__(self) -> None:
        self.waits = Recent(keep=self.keep)
        self.arrivals = Recent(keep=self.keep)
        self.free = simpy.Store(self.env, capacity=len(self.lanes))
        self.free.items.extend(self.lanes)
        self.shape = 1.0 / (self.cv * self.cv)
        self.scale = self.mean_service_s / self.shape

    def _queue_changes(self, by: int) -> None:
        now = self.env.now
        self.queue_area += self.waiting * (now - self.last_change)
        self.last_change = now
        self.waiting += by

    def queue_area_at(self, now: float) -> float:
        return self.queue_area + self.waiting * (now - self.last_change)

    def pass_through(self) -> Generator[simpy.Event, None, Lane]:
        """Queue for the next free lane and be checked; returns the lane used."""
        arrived = self.env.now
        self.arrivals.append(arrived)
        self._queue_changes(+1)
        lane = yield self.free.get()
        self._queue_changes(-1)
        self.waits.append(self.env.now - arrived)
        lane.busy = True
        service = self.rng.gammavariate(self.shape, self.scale)
        yield self.env.timeout(service)
        lane.busy = False
        lane.served += 1
        lane.last_service_s = service
        lane.busy_s += service
        yield self.free.put(lane)
        return lane


def build_gates(
    env: simpy.Environment, settings: GateSettings, rng_for: Callable[[str], Stream], keep: int | None = None
) -> tuple[Gate, Gate]:
    lanes_in = [Lane(f"G{n}", "in") for n in range(1, settings.in_lanes + 1)]
    lanes_out = [Lane(f"G{n}", "out") for n in range(settings.in_lanes + 1, settings.in_lanes + settings.out_lanes + 1)]
    return (
        Gate(env, "in", lanes_in, settings.service_time, settings.service_cv, rng_for("port/gate-in"), keep=keep),
        Gate(env, "out", lanes_out, settings.service_time, settings.service_cv, rng_for("port/gate-out"), keep=keep),
    )
