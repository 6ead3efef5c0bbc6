"""How the `load_probe` gateways send in a load experiment: its pacing, given to them by the builder.

A scenario with a `load:` section paces its gateways by the load profile (`LoadSection.pacing()`);
simulator/builder.py puts that pacing into the world under `PACING_KEY`, as it puts a worker's shard,
and the gateways (simulator/load/probe.py) take it from there. Without one (a scenario with no
`load:` section) each gateway sends every `interval` of its fleet. The devices never read the
scenario's `load:` section themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from simulator.load.profile import Schedule

PACING_KEY = "load.pacing"


@dataclass(frozen=True)
class ByRate:
    """unit `rate`: the schedule's target is the messages/s the whole fleet offers."""

    schedule: Schedule


@dataclass(frozen=True)
class ByDevices:
    """unit `devices`: the schedule's target is how many gateways are on; each on sends every `interval` s."""

    schedule: Schedule
    interval: float


Pacing = Union[ByRate, ByDevices]
