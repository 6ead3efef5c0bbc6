"""Trucks at the port: when consignees collect imports and shippers deliver exports, and a truck's
visit through the gate, the yard and out again.

Each import box is collected after a log-normal dwell (median 4 days: import dwell at a dry port is
~3-7 days and skewed, shared/domain.md); each export box is delivered a log-normal lead time (median
1.5 days; export dwell ~1-3 days) before its train's planned departure, but no later than the
cut-off. The time of day of each appointment is drawn from the gate's hourly profile (peaks
mid-morning and mid-afternoon). Many independent appointments make the truck arrivals a
non-homogeneous Poisson process with that hourly profile.

A visit: queue and pass the in-gate (OCR/RFID), drive to the block, wait for a reach stacker to put
down or lift the box, drive to the out-gate, pass it. Truck turnaround is gate-in queue to gate-out.
Events (source `port-gate`): `gate_ocr`, one per truck per gate passage.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import simpy
from pydantic import Field, field_validator

from simulator.fleet import Duration, StrictModel
from simulator.port.containers import Box
from simulator.randomness import Stream

if TYPE_CHECKING:
    from simulator.port.gate import Gate
    from simulator.port.model import Port

SOURCE = "port-gate"
DAY = 86400.0

# Relative truck arrivals per local hour 00..23: quiet at night, peaks ~09-11 and ~14-16.
DEFAULT_PROFILE: list[float] = [
    0.3, 0.2, 0.2, 0.2, 0.3, 0.5, 1.0, 1.8, 2.6, 3.0, 2.8, 2.0,
    1.4, 2.2, 2.8, 2.6, 2.0, 1.4, 1.0, 0.8, 0.6, 0.5, 0.4, 0.3,
]  # fmt: skip
PLATE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"  # no I or O on Chinese plates


class TruckSettings(StrictModel):
    hourly_profile: list[float] = Field(default=DEFAULT_PROFILE, min_length=24, max_length=24, description="relative truck arrivals per local hour 00..23")
    import_dwell_median: Duration = Field(default=4 * DAY, description="median time an import box waits for its consignee")
    import_dwell_sigma: float = Field(default=0.5, ge=0, le=2, description="shape of the log-normal import dwell")
    release_time: Duration = Field(default=3 * 3600.0, description="earliest collection after unloading (declaration, payment)")
    export_lead_median: Duration = Field(default=1.5 * DAY, description="median time an export box is delivered before its train's planned departure")
    export_lead_sigma: float = Field(default=0.5, ge=0, le=2, description="shape of the log-normal export lead time")
    export_cutoff: Duration = Field(default=6 * 3600.0, description="exports must be in this long before planned departure")
    yard_drive_time: Duration = Field(default=240.0, description="drive from the gate to a block, and from a block to the gate")

    @field_validator("hourly_profile")
    @classmethod
    def _some_traffic(cls, profile: list[float]) -> list[float]:
        if min(profile) < 0 or sum(profile) <= 0:
            raise ValueError("weights must be non-negative with a positive sum")
        return profile


@dataclass(frozen=True)
class Appointments:
    """Turns a planned day into a time of day drawn from the hourly profile."""

    settings: TruckSettings
    start_local_s: float  # seconds since local midnight at simulated time 0

    def on_day_of(self, when: float, rng: Stream) -> float:
        """A time on the local day containing `when`, at an hour drawn from the profile."""
        day = math.floor((self.start_local_s + when) / DAY)
        hour = rng.choices(range(24), weights=self.settings.hourly_profile)[0]
        return day * DAY - self.start_local_s + (hour + rng.random()) * 3600.0

    def import_pickup(self, landed: float, rng: Stream) -> float:
        s = self.settings
        dwell = rng.lognormvariate(math.log(s.import_dwell_median), s.import_dwell_sigma)
        return max(self.on_day_of(landed + dwell, rng), landed + s.release_time)

    def export_delivery(self, planned_departure: float, rng: Stream) -> float:
        s = self.settings
        lead = max(rng.lognormvariate(math.log(s.export_lead_median), s.export_lead_sigma), s.export_cutoff)
        at = self.on_day_of(planned_departure - lead, rng)
        while at > planned_departure - s.export_cutoff:
            at -= DAY  # the profile's hour fell after the cut-off: the shipper came a day earlier
        return at


def plate(rng: Stream, province: str = "晋C") -> str:
    """A Chinese plate: 晋C is Yangquan, 津 Tianjin."""
    return province + "".join(rng.choice(PLATE_LETTERS) for _ in range(5))


@dataclass(eq=False)
class Job:
    at: float  # appointment, simulated s
    plate: str
    deliver: Box | None = None
    collect: Box | None = None


def pass_gate(env: simpy.Environment, port: Port, gate: Gate, truck_plate: str, box: Box | None) -> Generator[simpy.Event, None, None]:
    """Queue for a lane, be read by OCR and RFID, and report the passage."""
    lane = yield from gate.pass_through()
    rng, settings = port.rngs.ocr, port.settings.gate
    ocr_ok = rng.random() < settings.ocr_read_rate
    rfid_ok = rng.random() < settings.rfid_read_rate
    problems = ([] if ocr_ok else ["OCR failed"]) + ([] if rfid_ok else ["RFID not read"])
    port.telemetry.event(
        SOURCE, "port", "gate_ocr", "warning" if problems else "info",
        f"{truck_plate} {gate.direction} at {lane.name}" + (f" with {box.box_id}" if box is not None else " empty")
        + (f": {', '.join(problems)}, checked by hand" if problems else ""),
        {"direction": gate.direction},
        plate=truck_plate, container=box.box_id if box is not None else "", lane=lane.name, ocr_ok=ocr_ok,
        ocr_confidence=round(rng.uniform(0.9, 0.999) if ocr_ok else rng.uniform(0.4, 0.8), 3), rfid_ok=rfid_ok,
    )  # fmt: skip


def visit(env: simpy.Environment, port: Port, job: Job) -> Generator[simpy.Event, None, None]:
    """A local truck comes at its appointment to deliver or collect one box."""
    yield env.timeout(max(0.0, job.at - env.now))
    yield from call_at_port(env, port, job.plate, job.deliver, job.collect)


def call_at_port(
    env: simpy.Environment, port: Port, truck_plate: str, deliver: Box | None, collect: Box | None, take_export: bool = False
) -> Generator[simpy.Event, None, Box | None]:
    """Through the in-gate, put down `deliver`, pick up `collect` (or any export, for road haulage to
    Tianjin), out through the out-gate. Returns the box the truck leaves with."""
    arrived = env.now
    drive = port.settings.trucks.yard_drive_time
    if collect is not None and collect.reefer is not None:
        port.reefers.unplug(collect, leaving=True)  # the gate tells the technician the box is called
    yield from pass_gate(env, port, port.gate_in, truck_plate, deliver)
    if deliver is not None:
        port.enter(deliver)
    yield env.timeout(drive)
    if deliver is not None:
        block = yield from port.yard.reserve(deliver)
        yield from port.reach_stackers.move(deliver, on_lift=lambda: port.unpower(deliver))  # off the truck's genset
        port.land(deliver, block)
        if deliver.direction == "import":
            port.declare_import(deliver)
    if take_export:
        collect = port.claim_road_export()
        if collect is not None and collect.reefer is not None:
            port.reefers.unplug(collect, leaving=True)
    if collect is not None:
        if collect.hold is not None:
            yield collect.hold  # customs has not released it yet
        yield from port.reach_stackers.move(collect, on_lift=lambda: port.take_from_yard(collect))
    yield env.timeout(drive)
    yield from pass_gate(env, port, port.gate_out, truck_plate, collect)
    if collect is not None:
        port.leave(collect)
    port.kpis.truck_turnaround_s.append(env.now - arrived)
    return collect
