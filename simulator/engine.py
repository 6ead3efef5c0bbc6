"""Running a world: as fast as possible, or paced against the wall clock.

`speed: afap` uses a plain `simpy.Environment`; `speed: N` uses a `PacedEnvironment` with one
simulated second taking 1/N wall seconds. Timestamps always come from the simulated clock
(scenario start + env.now), so a paced run and an afap run produce the same messages.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import simpy
import simpy.rt
from simpy.core import EmptySchedule, Infinity

from simulator.builder import build_world
from simulator.faults import StackControl
from simulator.scenario import Scenario
from simulator.telemetry import Sink
from simulator.world import Summary, World

Progress = Callable[[float, int], None]
"""Called with (simulated seconds done, messages generated so far)."""

Wait = Callable[[float], None]
"""How a paced run lets wall-clock seconds pass: `time.sleep`, or a publisher's `idle`, which keeps
serving its connection meanwhile (it has no thread of its own)."""


# Each wait is at least this long: a wait costs the publisher a turn of its network loop and a wake-up,
# and at thousands of events a second one wait per event took more CPU than making and sending the
# messages. Events due meanwhile then run together, each at most this much late. Measured on the
# 2-core machine, a load worker publishing 7,500 msg/s at QoS 1: 51 µs of CPU per message with 1 ms,
# 42 with 4 ms, 41 with 10 ms (and 33 unpaced).
MIN_WAIT_S = 0.004


class PacedEnvironment(simpy.rt.RealtimeEnvironment):
    """simpy's real-time environment, waiting for each event's wall-clock time through `wait`.

    Not strict: when publishing falls behind the pace, the run catches up instead of raising."""

    def __init__(self, factor: float, wait: Wait = time.sleep) -> None:
        super().__init__(factor=factor, strict=False)
        self.wait = wait

    def step(self) -> None:
        event_time = self.peek()
        if event_time is Infinity:
            raise EmptySchedule
        due = self.real_start + (event_time - self.env_start) * self.factor
        if (delay := due - time.monotonic()) > 0:
            self.wait(max(delay, MIN_WAIT_S))
            while (delay := due - time.monotonic()) > 0:  # a wait that ended early
                self.wait(delay)
        simpy.Environment.step(self)


@dataclass
class RunResult:
    generated: int
    simulated_s: float
    wall_s: float
    summaries: list[Summary] = field(default_factory=list)

    @property
    def messages_per_s(self) -> float:
        return self.generated / self.wall_s if self.wall_s > 0 else float("inf")


def make_environment(scenario: Scenario, wait: Wait = time.sleep) -> simpy.Environment:
    if scenario.speed == "afap":
        return simpy.Environment()
    return PacedEnvironment(factor=1.0 / float(scenario.speed), wait=wait)


def report_progress(env: simpy.Environment, world: World, progress: Progress, every: float) -> Generator[simpy.Event, None, None]:
    """Tell the progress display how far the run is, every `every` simulated seconds."""
    while True:
        progress(env.now, world.telemetry.generated)
        yield env.timeout(every)


def run_scenario(
    scenario: Scenario, sink: Sink, progress: Progress | None = None, stack_control: StackControl | None = None, wait: Wait = time.sleep
) -> RunResult:
    """Run the scenario's world; `stack_control` lets process faults act on the local stack; a paced
    run waits for the wall clock through `wait` (pass a publisher's `idle`)."""
    env = make_environment(scenario, wait)
    world = build_world(scenario, env, sink, stack_control=stack_control)
    if progress is not None:
        env.process(report_progress(env, world, progress, every=max(scenario.duration / 200.0, 1.0)))
    started = time.perf_counter()
    # Messages stamped exactly at `duration` belong to the next run: the span is [start, start + duration).
    env.run(until=scenario.duration)
    wall = time.perf_counter() - started
    if progress is not None:
        progress(scenario.duration, world.telemetry.generated)
    return RunResult(
        generated=world.telemetry.generated,
        simulated_s=scenario.duration,
        wall_s=wall,
        summaries=[make() for make in world.summaries],
    )
