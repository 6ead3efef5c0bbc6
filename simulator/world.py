"""The simulated world: the clock, the calendar, random streams, shared models and the telemetry.

A world is built from a validated scenario by `simulator.builder.build_world`; each fleet's device
type adds its devices and SimPy processes. Models that several fleets share (the city, the port) are
created once through `World.shared`. This module knows no device type and no model: they import it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import simpy

from simulator.randomness import Stream, stream
from simulator.telemetry import Telemetry

if TYPE_CHECKING:
    from simulator.scenario import Scenario

T = TypeVar("T")


@dataclass(frozen=True)
class Summary:
    """A titled table of figures a model prints at the end of a run (e.g. the port's KPIs)."""

    title: str
    figures: dict[str, str]


@dataclass
class World:
    env: simpy.Environment
    scenario: Scenario
    telemetry: Telemetry
    summaries: list[Callable[[], Summary]] = field(default_factory=list)
    # Called as each device registers, while the world is built (the builder's progress count).
    registered: Callable[[], None] | None = None
    _shared: dict[str, Any] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return self.scenario.seed

    @property
    def start(self) -> datetime:
        return self.scenario.start

    def rng(self, name: str) -> Stream:
        """A random stream owned by `name` (a device id, or a shared model's name)."""
        return stream(self.scenario.seed, name)

    def local_time(self, now: float | None = None) -> datetime:
        """Wall-clock time in the scenario's time zone at simulated time `now` (default: env.now)."""
        return self.scenario.start + timedelta(seconds=self.env.now if now is None else now)

    def add_summary(self, make: Callable[[], Summary]) -> None:
        """Register a function called after the run to report the model's figures."""
        self.summaries.append(make)

    def shared(self, key: str, factory: Callable[[World], T]) -> T:
        """The one instance of a shared model, created on first use."""
        if key not in self._shared:
            self._shared[key] = factory(self)
        return self._shared[key]
