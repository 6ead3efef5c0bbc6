"""The port's key performance indicators, collected as the model runs and printed after the run.

- crane moves/hour: moves per hour a machine is working (3600 / mean move time; domain: RMG ~20-30,
  reach stacker ~12-20), and the share of the run the machines are working;
- dwell: days between a box entering the yard and leaving it, mean and 95th percentile, over the
  boxes that left during the run (boxes in the yard at the start have their planned history);
- gate: waiting time for a lane, and truck turnaround from joining the in-gate queue to leaving the
  out-gate;
- train turnaround: arrival to departure;
- yard utilisation: TEU allocated / capacity, sampled every 10 min.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import simpy

from simulator.recent import Recent
from simulator.world import Summary

if TYPE_CHECKING:
    from simulator.port.cranes import Cranes
    from simulator.port.model import Port

DAY = 86400.0


@dataclass
class Kpis:
    dwell_import_s: Recent[float] = field(default_factory=Recent)
    dwell_export_s: Recent[float] = field(default_factory=Recent)
    truck_turnaround_s: Recent[float] = field(default_factory=Recent)
    train_turnaround_s: Recent[float] = field(default_factory=Recent)
    yard_utilisation: Recent[float] = field(default_factory=Recent)
    trains_arrived: int = 0
    trains_departed: int = 0
    imports_declared: int = 0
    customs_holds: int = 0

    @classmethod
    def keeping(cls, keep: int | None) -> Kpis:
        """KPIs whose samples keep the last `keep` (a live run; None: every sample of the run)."""
        return cls(*(Recent(keep=keep) for _ in range(5)))


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100.0 * len(ordered) + 0.5) - 1))]


def moves_per_hour(pool: Cranes) -> float:
    busy = sum(crane.busy_s for crane in pool.machines)
    return sum(crane.moves for crane in pool.machines) / (busy / 3600.0) if busy else float("nan")


def utilisation(pool: Cranes, now: float) -> float:
    return sum(crane.busy_s for crane in pool.machines) / (len(pool.machines) * now) if now else float("nan")


def sample_yard(env: simpy.Environment, port: Port, every: float = 600.0) -> Generator[simpy.Event, None, None]:
    """Record the yard's utilisation for the run's mean and peak."""
    while True:
        port.kpis.yard_utilisation.append(port.yard.occupancy_teu() / port.yard.capacity_teu)
        yield env.timeout(every)


def summary(port: Port) -> Summary:
    k, now = port.kpis, port.env.now
    waits = port.gate_in.waits + port.gate_out.waits
    return Summary(
        "port KPIs",
        {
            "trains arrived / departed": f"{k.trains_arrived} / {k.trains_departed}",
            "RMG moves/hour (working)": f"{moves_per_hour(port.rmgs):.1f} ({sum(c.moves for c in port.rmgs.machines)} moves, {utilisation(port.rmgs, now):.0%} busy)",
            "reach stacker moves/hour (working)": f"{moves_per_hour(port.reach_stackers):.1f} ({sum(c.moves for c in port.reach_stackers.machines)} moves, {utilisation(port.reach_stackers, now):.0%} busy)",
            "import dwell mean / p95": f"{mean(k.dwell_import_s) / DAY:.2f} / {percentile(k.dwell_import_s, 95) / DAY:.2f} days ({k.dwell_import_s.total} boxes)",
            "export dwell mean / p95": f"{mean(k.dwell_export_s) / DAY:.2f} / {percentile(k.dwell_export_s, 95) / DAY:.2f} days ({k.dwell_export_s.total} boxes)",
            "gate wait mean / p95": f"{mean(waits) / 60:.1f} / {percentile(waits, 95) / 60:.1f} min",
            "truck turnaround mean / p95": f"{mean(k.truck_turnaround_s) / 60:.1f} / {percentile(k.truck_turnaround_s, 95) / 60:.1f} min ({k.truck_turnaround_s.total} trucks)",
            "train turnaround mean / max": f"{mean(k.train_turnaround_s) / 3600:.2f} / {max(k.train_turnaround_s, default=float('nan')) / 3600:.2f} h",
            "yard utilisation mean / max": f"{mean(k.yard_utilisation):.0%} / {max(k.yard_utilisation, default=float('nan')):.0%}",
            "customs inspections done": f"{k.customs_holds}",
            "boxes in / out / in port": f"{port.initial_boxes} at start + {port.entered} in, {port.left} out, {port.boxes_in_port()} in port",
        },
    )
