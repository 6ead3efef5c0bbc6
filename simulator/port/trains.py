"""Block trains between Tianjin Port and the dry port: the timetable, what each train carries, and a
train's call at the port (arrive, unload, load, depart).

A block train has ~50 flat wagons of 2 TEU (~100 TEU; shared/domain.md, check), each wagon carrying
one 40 ft box or two 20 ft boxes, loaded to a load factor; a share of the boxes are reefers, a share
of the exports containerised coal (Shanxi's main freight). Trains run on a daily timetable and arrive
late by a log-normal delay (tens of minutes, sometimes hours). On arrival a train waits for a free
loading track (`simpy.Resource`), is set up (brake test, uncoupling), the rail-mounted gantry cranes
unload its import boxes into the yard and load the export boxes booked on it (or earlier trains, if
they missed theirs) that are in the yard, and it departs after the dispatch checks.

Events (source `port-rail`): `train_arrival`, `train_unloading` (unloading done), `train_departure`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import simpy
from pydantic import Field, field_validator

from simulator.fleet import Duration, StrictModel
from simulator.port.containers import Box
from simulator.randomness import Stream

if TYPE_CHECKING:
    from simulator.port.model import Port

SOURCE = "port-rail"
_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")  # fullmatch: `$` would allow a final newline


class TrainSettings(StrictModel):
    timetable: list[str] = Field(default=["02:30", "08:00", "13:30", "19:00"], description="daily arrivals from Tianjin Port, local HH:MM")
    surge_timetable: list[str] = Field(default=[], description="extra daily arrivals during the run only (a surge; the yard starts at its usual level)")
    delay_mean: Duration = Field(default=2700.0, description="mean arrival delay (log-normal)")
    delay_sigma: float = Field(default=1.0, ge=0, le=3, description="shape of the log-normal delay (larger: longer tail)")
    wagons: int = Field(default=50, ge=1, le=120, description="flat wagons per train, 2 TEU each")
    feu_share: float = Field(default=0.5, ge=0, le=1, description="share of loaded wagons carrying one 40 ft box instead of two 20 ft")
    import_load_factor: float = Field(default=0.9, ge=0, le=1, description="share of wagons loaded arriving")
    export_load_factor: float = Field(default=0.8, ge=0, le=1, description="share of wagons booked leaving")
    reefer_share: float = Field(default=0.05, ge=0, le=1, description="share of boxes that are reefers")
    coal_share: float = Field(default=0.3, ge=0, le=1, description="share of dry export boxes carrying containerised coal")
    tracks: int = Field(default=2, ge=1, le=20, description="loading tracks under the gantry cranes")
    setup_time: Duration = Field(default=1200.0, description="brake test and uncoupling before the cranes start")
    dispatch_time: Duration = Field(default=1200.0, description="checks between the last move and departure")
    planned_turnaround: Duration = Field(default=18000.0, description="planned departure after planned arrival (export bookings and cut-off)")

    @field_validator("timetable", "surge_timetable")
    @classmethod
    def _clock_times(cls, times: list[str]) -> list[str]:
        for time in times:
            if not _CLOCK.fullmatch(time):
                raise ValueError(f"{time!r} is not a local time HH:MM")
        return times


def clock_seconds(time: str) -> float:
    hours, minutes = time.split(":")
    return int(hours) * 3600.0 + int(minutes) * 60.0


@dataclass(eq=False)
class Service:
    """One scheduled train call and the boxes planned on it."""

    index: int
    train_id: str
    planned_arrival: float  # simulated s (negative: before the run)
    planned_departure: float
    surge: bool
    imports: list[Box] = field(default_factory=list)
    exports: list[Box] = field(default_factory=list)  # booked on it


def load_wagons(settings: TrainSettings, rng: Stream, load_factor: float) -> list[int]:
    """Box sizes (TEU) on a train's wagons."""
    sizes: list[int] = []
    for _ in range(settings.wagons):
        if rng.random() < load_factor:
            sizes.extend((2,) if rng.random() < settings.feu_share else (1, 1))
    return sizes


def delay(settings: TrainSettings, rng: Stream) -> float:
    sigma = settings.delay_sigma
    mu = math.log(settings.delay_mean) - sigma * sigma / 2.0  # so that the mean is delay_mean
    return rng.lognormvariate(mu, sigma)


def call(env: simpy.Environment, port: Port, service: Service) -> Generator[simpy.Event, None, None]:
    """A train arrives (late), is unloaded and loaded on a track, and leaves."""
    settings = port.settings.trains
    yield env.timeout(max(0.0, service.planned_arrival + delay(settings, port.rngs.trains) - env.now))
    arrived = env.now
    port.kpis.trains_arrived += 1
    late_min = round((arrived - service.planned_arrival) / 60.0, 1)
    teu_in = sum(box.teu for box in service.imports)
    port.telemetry.event(
        SOURCE, "port", "train_arrival", "info", f"train {service.train_id} from Tianjin Port arrived {late_min:.0f} min late",
        train=service.train_id, delay_min=late_min, boxes=float(len(service.imports)), teu=float(teu_in),
    )  # fmt: skip
    with port.tracks.request() as track:
        yield track
        yield env.timeout(settings.setup_time)
        unloading_started = env.now
        yield env.all_of([env.process(unload(env, port, box)) for box in service.imports])
        port.telemetry.event(
            SOURCE, "port", "train_unloading", "info", f"train {service.train_id} unloaded: {len(service.imports)} boxes",
            train=service.train_id, boxes=float(len(service.imports)), duration_min=round((env.now - unloading_started) / 60.0, 1),
        )  # fmt: skip
        exports = port.claim_exports(service.index, 2 * settings.wagons)
        yield env.all_of([env.process(load(env, port, box)) for box in exports])
        yield env.timeout(settings.dispatch_time)
    turnaround = env.now - arrived
    port.kpis.train_turnaround_s.append(turnaround)
    port.kpis.trains_departed += 1
    port.telemetry.event(
        SOURCE, "port", "train_departure", "info", f"train {service.train_id} left for Tianjin Port with {len(exports)} boxes",
        train=service.train_id, boxes=float(len(exports)), teu=float(sum(box.teu for box in exports)),
        turnaround_h=round(turnaround / 3600.0, 2),
    )  # fmt: skip


def unload(env: simpy.Environment, port: Port, box: Box) -> Generator[simpy.Event, None, None]:
    """A gantry crane lifts an import box off its wagon into a yard slot."""
    block = yield from port.yard.reserve(box)
    port.enter(box)
    yield from port.rmgs.move(box, on_lift=lambda: port.unpower(box))  # off the train's power for the move
    port.land(box, block)
    port.declare_import(box)


def load(env: simpy.Environment, port: Port, box: Box) -> Generator[simpy.Event, None, None]:
    """A gantry crane lifts an export box from the yard onto the train."""
    yield from port.rmgs.move(box, on_lift=lambda: port.take_from_yard(box))
    port.leave(box)


