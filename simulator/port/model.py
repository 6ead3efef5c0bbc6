"""The port as one shared model: its plant, the plan of train services and truck appointments, and
the bookkeeping that keeps every box accounted for.

`port_of(world)` creates it once per world (several port fleets share it). On creation it plans the
train services from three weeks before the run to a week after it; boxes that, by that plan, are in
the yard at the start are placed there (so a one-day run starts from a realistic yard), and the
trains, truck visits and corridor trucks of the run are started as SimPy processes.

A live run (`duration: until-stopped`) has no end to plan to: it plans as a one-day run does, then
rolls the plan on, one day a day (`roll_plan`: at each local midnight the day LOOKAHEAD_DAYS ahead
is planned and its trains and deliveries started); services are not kept once started, and the
KPI samples keep a bounded recent window (simulator/recent.py), so memory stays flat.

Conservation: every box is in exactly one place. `initial_boxes + entered - left` equals the boxes in
yard blocks + on the way between a train or truck and the yard (`in_handling`) + in the customs shed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, TypeVar

import simpy

from simulator.port import kpis
from simulator.port.containers import Box, BoxNumbers
from simulator.port.corridor import HaulTruck, build_trucks, haul
from simulator.port.cranes import build_pools
from simulator.port.customs import inspect
from simulator.port.gate import build_gates
from simulator.port.reefers import Ambient, ReeferRack
from simulator.port.settings import PortSettings
from simulator.port.trains import Service, call, clock_seconds, load_wagons
from simulator.port.trucks import Appointments, Job, plate, visit
from simulator.port.yard import Block, Yard
from simulator.randomness import Stream
from simulator.telemetry import Telemetry

if TYPE_CHECKING:
    from simulator.world import World

T = TypeVar("T")
DOMAIN = "port"  # the topic domain of the port's devices and events
DAY = 86400.0
PORT_TIME = timezone(timedelta(hours=8), "CST")  # the timetable and the gate's hours are Yangquan time
HISTORY_DAYS = 21  # longer than almost every import dwell (log-normal, median 4 d)
LOOKAHEAD_DAYS = 8  # exports for trains after the run are delivered during it
LIVE_SAMPLES = 2_000  # KPI samples a live run keeps per figure (between this and twice this: days of trucks)


@dataclass
class PortRngs:
    """One random stream per process family, so changing one (e.g. gate service) leaves the others."""

    plan: Stream
    trains: Stream
    customs: Stream
    trucks: Stream
    ocr: Stream
    corridor: Stream


class Port:
    def __init__(
        self, env: simpy.Environment, settings: PortSettings, start: datetime, duration: float,
        telemetry: Telemetry, rng_for: Callable[[str], Stream],
    ) -> None:  # fmt: skip
        self.env = env
        self.settings = settings
        start = start.astimezone(PORT_TIME)
        self.start = start
        self.duration = duration
        self.live = duration == math.inf  # until stopped: the plan rolls, the samples are bounded
        keep = LIVE_SAMPLES if self.live else None
        self.telemetry = telemetry
        self.rngs = PortRngs(*(rng_for(f"port/{name}") for name in ("plan", "trains", "customs", "trucks", "ocr", "corridor")))
        self.yard = Yard(env, settings.yard)
        self.rmgs, self.reach_stackers = build_pools(env, settings.cranes, rng_for)
        self.gate_in, self.gate_out = build_gates(env, settings.gate, rng_for, keep)
        self.tracks = simpy.Resource(env, capacity=settings.trains.tracks)
        self.customs_bays = simpy.Resource(env, capacity=settings.customs.bays)
        start_local_s = start.hour * 3600.0 + start.minute * 60.0 + start.second
        self.reefers = ReeferRack(env, settings.reefers, Ambient.for_start(settings.reefers, start), rng_for("port/reefer-technicians"))
        self.appointments = Appointments(settings.trucks, start_local_s)
        self.numbers = BoxNumbers(self.rngs.plan.randrange(10_000_000))
        self.haul_trucks: list[HaulTruck] = build_trucks(settings.corridor, self.rngs.corridor)
        self.kpis = kpis.Kpis.keeping(keep)
        self.in_handling: dict[str, Box] = {}
        self.in_customs: dict[str, Box] = {}
        self.initial_boxes = self.entered = self.left = 0
        self.services_planned = 0
        self._instrumented: dict[str, int] = {}
        self.start_local_s = start_local_s
        self.begin(self.plan())

    # -- the plan -----------------------------------------------------------------------------
    def new_box(self, teu: int, direction: str, service: int, rng: Stream, reefer_powered_at: float) -> Box:
        s = self.settings.trains
        is_reefer = rng.random() < s.reefer_share
        coal = not is_reefer and direction == "export" and rng.random() < s.coal_share
        # Gross weights: 20 ft ~8-24 t, 40 ft ~10-28 t; coal fills a 20 ft box to ~26 t.
        weight = rng.uniform(22.0, 28.0) if coal else rng.uniform(8.0, 24.0) if teu == 1 else rng.uniform(10.0, 28.0)
        box = Box(self.numbers(), teu, direction, "coal" if coal else "reefer" if is_reefer else "general", round(weight, 1), service)  # type: ignore[arg-type]
        if is_reefer:
            # Running on the ship's, train's or genset's power until the plan brings it here.
            box.reefer = self.reefers.new_unit(rng, min(reefer_powered_at, 0.0), powered=True)
        return box

    def plan(self) -> list[Service]:
        """Train services with their boxes, and each box's appointment, in a fixed order: from
        HISTORY_DAYS before the start to LOOKAHEAD_DAYS after the end (a live run: after its first day)."""
        run_days = 1 if self.live else math.ceil(self.duration / DAY)
        return [service for day in range(-HISTORY_DAYS, run_days + LOOKAHEAD_DAYS + 1) for service in self.plan_day(day)]

    def plan_day(self, day: int) -> list[Service]:
        """The train services of local day `day` (0: the start's day), numbered on from the last planned."""
        s, rng = self.settings.trains, self.rngs.plan
        midnight = -self.start_local_s + day * DAY  # simulated time of the local midnight starting the day
        services: list[Service] = []
        slots = [(t, False) for t in s.timetable] + [(t, True) for t in s.surge_timetable]
        for slot, (time, surge) in enumerate(sorted(slots)):
            arrival = midnight + clock_seconds(time)
            if surge and (arrival < 0 or arrival >= self.duration):
                continue  # the surge is only during the run
            index = self.services_planned
            self.services_planned += 1
            date = self.start.date() + timedelta(days=day)
            train_id = f"X{8701 + slot}/{date:%m%d}"  # China Railway numbers container block trains X...
            service = Service(index, train_id, arrival, arrival + s.planned_turnaround, surge)
            service.imports = [self.new_box(teu, "import", index, rng, arrival) for teu in load_wagons(s, rng, s.import_load_factor)]
            service.exports = [self.new_box(teu, "export", index, rng, arrival) for teu in load_wagons(s, rng, s.export_load_factor)]
            for box in service.imports:
                box.arrived = arrival  # planned landing; trains during the run overwrite it
                box.due = self.appointments.import_pickup(arrival, rng)
            for box in service.exports:
                box.due = self.appointments.export_delivery(service.planned_departure, rng)
            services.append(service)
        return services

    def begin(self, services: list[Service]) -> None:
        """Fill the yard as the plan has it at the start, and start the run's processes."""
        env, rng = self.env, self.rngs.trucks
        for service in services:
            if service.planned_arrival < 0:
                for box in service.imports:
                    if box.due > 0 and self.admit_initial(box):
                        if box.due < self.duration:
                            env.process(visit(env, self, Job(box.due, plate(rng), collect=box)))
            else:
                self.start_service(service)
        for truck in self.haul_trucks:
            env.process(haul(env, self, truck, self.rngs.corridor))
        env.process(kpis.sample_yard(env, self))
        if self.live:
            env.process(roll_plan(env, self, first_day=1 + LOOKAHEAD_DAYS + 1))

    def start_service(self, service: Service) -> None:
        """A coming train's call, and the deliveries of the exports booked on it (due before the
        start: in the yard already)."""
        env, rng = self.env, self.rngs.trucks
        for box in service.exports:
            if box.due < 0:
                box.arrived = box.due
                self.admit_initial(box)
            elif box.due < self.duration:
                env.process(visit(env, self, Job(box.due, plate(rng), deliver=box)))
        if service.planned_arrival < self.duration:
            env.process(call(env, self, service))

    def admit_initial(self, box: Box) -> bool:
        if not self.yard.admit_initial(box):
            return False
        self.initial_boxes += 1
        if box.reefer is not None:
            self.reefers.plug_initial(box)
            if box.reefer.plug_point is None:  # more reefers than plugs: it waits, unplugged
                box.reefer.powered = False
                self.env.process(self.reefers.settle(box))
        return True

    # -- where boxes are ----------------------------------------------------------------------
    def enter(self, box: Box) -> None:
        """A box comes off a train or through the gate: it is in the port, not yet in the yard."""
        self.entered += 1
        self.in_handling[box.box_id] = box

    def land(self, box: Box, block: Block) -> None:
        del self.in_handling[box.box_id]
        box.arrived = self.env.now
        self.yard.place(box, block)
        if box.reefer is not None:
            self.env.process(self.reefers.settle(box))

    def unpower(self, box: Box) -> None:
        """A reefer loses the power of the train or truck that brought it."""
        if box.reefer is not None and box.reefer.powered:
            self.reefers.set_power(box, False)

    def take_from_yard(self, box: Box) -> None:
        """A box is lifted for departure; its dwell ends."""
        if box.reefer is not None:
            self.reefers.release(box)
        self.yard.lift(box)
        self.in_handling[box.box_id] = box
        dwell = self.env.now - box.arrived
        (self.kpis.dwell_import_s if box.direction == "import" else self.kpis.dwell_export_s).append(dwell)

    def leave(self, box: Box) -> None:
        del self.in_handling[box.box_id]
        box.departed = self.env.now
        self.left += 1

    def boxes_in_port(self) -> int:
        return self.yard.boxes() + len(self.in_handling) + len(self.in_customs)

    # -- decisions ------------------------------------------------------------------------------
    def declare_import(self, box: Box) -> None:
        """An import box is in the yard: customs may select it, and its consignee books a truck."""
        self.kpis.imports_declared += 1
        if self.rngs.customs.random() < self.settings.customs.selection_rate:
            self.env.process(inspect(self.env, self, box))
        now, rng = self.env.now, self.rngs.trucks
        due = box.due if box.service >= 0 else self.appointments.import_pickup(now, rng)
        while due < now + self.settings.trucks.release_time:
            due += DAY  # the train was late: the consignee comes on a later day
        box.due = due
        if due < self.duration:
            self.env.process(visit(self.env, self, Job(due, plate(rng), collect=box)))

    def claim_exports(self, service: int, max_teu: int) -> list[Box]:
        """Export boxes in the yard booked on this train or an earlier one, oldest booking first."""
        waiting = [
            box for block in self.yard.blocks if block.kind != "import"
            for box in block.boxes.values() if box.direction == "export" and not box.claimed and box.service <= service
        ]  # fmt: skip
        waiting.sort(key=lambda box: (box.service, box.arrived))
        chosen, teu = [], 0
        for box in waiting:
            if teu + box.teu <= max_teu:
                box.claimed = True
                chosen.append(box)
                teu += box.teu
        return chosen

    def claim_road_export(self) -> Box | None:
        """The export box that has waited longest, for a truck going back to Tianjin by road."""
        waiting = [
            box for block in self.yard.blocks if block.kind == "export"
            for box in block.boxes.values() if not box.claimed and box.hold is None
        ]  # fmt: skip
        if not waiting:
            return None
        box = min(waiting, key=lambda box: box.arrived)
        box.claimed = True
        return box

    def road_import(self) -> Box:
        """An import box a corridor truck loads at Tianjin Port for Shanxi."""
        return self.new_box(self.rngs.corridor.choice((1, 2)), "import", -1, self.rngs.corridor, self.env.now)

    # -- sensors --------------------------------------------------------------------------------
    def instrument(self, kind: str, count: int, items: Sequence[T]) -> list[T]:
        """The next `count` items of a kind for a fleet's sensors (validated against the plant)."""
        first = self._instrumented.get(kind, 0)
        chosen = list(items[first : first + count])
        if len(chosen) < count:
            raise ValueError(f"the port has {len(items)} {kind} items; fleets ask for {first + count}")
        self._instrumented[kind] = first + count
        return chosen


def roll_plan(env: simpy.Environment, port: Port, first_day: int) -> Generator[simpy.Event, None, None]:
    """A live run's plan rolls on: LOOKAHEAD_DAYS before each day starts, plan its trains and start them."""
    day = first_day
    while True:
        yield env.timeout(max(0.0, (day - LOOKAHEAD_DAYS) * DAY - port.start_local_s - env.now))
        for service in port.plan_day(day):
            port.start_service(service)
        day += 1


def port_of(world: World) -> Port:
    """The world's port, created by the first port fleet that asks."""

    def create(world: World) -> Port:
        port = Port(world.env, world.scenario.port, world.start, world.scenario.duration, world.telemetry, world.rng)
        world.add_summary(lambda: kpis.summary(port))
        return port

    return world.shared("port", create)
