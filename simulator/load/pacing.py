"""How the `load_probe` gateways send in a load experiment: its pacing, given to them by the builder.

A scenario with a `load:` section paces its gateways by the load profile (`LoadSection.pacing()`);
simulator/builder.py puts that pacing into the world under `PACING_KEY`, as it puts a worker's shard,
and the gateways (simulator/load/probe.py) take it from there. Without one (a scenario with no
`load:` section) each gateway sends every `interval` of its fleet. The devices never read the
scenario's `load:` section themselves.

`ByConnections` (unit `connections`) also says when each gateway's own connection is up: a load
worker puts its device sessions into the world under `LINKS_KEY` (the builder does), and gateway d
calls `connect(d)` when the target rises past d and `disconnect(d)` when it falls to d or below. Without
them (a dry run, `iotsim run`) the calls do nothing: the sessions connect every device at the start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Union

from simulator.load.profile import Schedule

PACING_KEY = "load.pacing"
LINKS_KEY = "load.links"


@dataclass(frozen=True)
class ByRate:
    """unit `rate`: the schedule's target is the messages/s the whole fleet offers."""

    schedule: Schedule


@dataclass(frozen=True)
class ByDevices:
    """unit `devices`: the schedule's target is how many gateways are on; each on sends every `interval` s."""

    schedule: Schedule
    interval: float


@dataclass(frozen=True)
class ByConnections:
    """unit `connections`: the schedule's target is how many gateways are connected; each connected
    gateway sends every `interval` s."""

    schedule: Schedule
    interval: float


class Links(Protocol):
    """The gateways' own connections, as the gateways drive them (simulator/transport/sessions.py's DeviceSessions)."""

    def connect(self, device_id: str) -> None: ...

    def disconnect(self, device_id: str) -> None: ...


class NoLinks:
    """No connections to drive: the device sessions (if any) connect every device themselves."""

    def connect(self, device_id: str) -> None:
        pass

    def disconnect(self, device_id: str) -> None:
        pass


Pacing = Union[ByRate, ByDevices, ByConnections]
