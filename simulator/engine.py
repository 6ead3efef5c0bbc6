"""Running a world: as fast as possible, or paced against the wall clock.

`speed: afap` uses a plain `simpy.Environment`; `speed: N` uses a `PacedEnvironment` with one
simulated second taking 1/N wall seconds. Timestamps always come from the simulated clock
(scenario start + env.now), so a paced run and an afap run produce the same messages.

A live run (`duration: until-stopped`, always paced) has no end: it runs until its `Stop` is
requested (the CLI does that on SIGTERM and Ctrl-C), between two events, so every message the world
generated has been handed to the sink and the run returns like a finished one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import simpy
import simpy.rt
from simpy.core import EmptySchedule, Infinity

from simulator.builder import BuildProgress, build_world
from simulator.scenario import Scenario
from simulator.shard import Shard, ShardSink
from simulator.telemetry import Sink
from simulator.world import Summary, World

if TYPE_CHECKING:
    from simulator.stack import StackControl

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
# A live run's longest single wait: how soon a requested stop is seen while the world is quiet.
STOP_CHECK_S = 0.25


@dataclass
class Stop:
    """Asked for by a signal handler, seen by the run between events."""

    requested: bool = False

    def request(self) -> None:
        self.requested = True


class PacedEnvironment(simpy.rt.RealtimeEnvironment):
    """simpy's real-time environment, waiting for each event's wall-clock time through `wait`.

    Not strict: when publishing falls behind the pace, the run catches up instead of raising."""

    def __init__(self, factor: float, wait: Wait = time.sleep, stop: Stop | None = None) -> None:
        super().__init__(factor=factor, strict=False)
        self.wait = wait
        self.stop = stop

    def step(self) -> None:
        event_time = self.peek()
        if event_time is Infinity:
            raise EmptySchedule
        due = self.real_start + (event_time - self.env_start) * self.factor
        if (delay := due - time.monotonic()) > 0:
            self.wait(self._slice(max(delay, MIN_WAIT_S)))
            while (delay := due - time.monotonic()) > 0:  # a wait that ended early (or was sliced)
                if self.stop is not None and self.stop.requested:
                    return  # the event stays due; the run ends before it
                self.wait(self._slice(delay))
        simpy.Environment.step(self)

    def _slice(self, delay: float) -> float:
        """A stoppable run waits in slices, so a stop is seen within STOP_CHECK_S."""
        return delay if self.stop is None else min(delay, STOP_CHECK_S)


@dataclass
class RunResult:
    generated: int
    simulated_s: float
    wall_s: float
    summaries: list[Summary] = field(default_factory=list)

    @property
    def messages_per_s(self) -> float:
        return self.generated / self.wall_s if self.wall_s > 0 else float("inf")


def make_environment(scenario: Scenario, wait: Wait = time.sleep, stop: Stop | None = None) -> simpy.Environment:
    if scenario.speed == "afap":
        return simpy.Environment()
    return PacedEnvironment(factor=1.0 / float(scenario.speed), wait=wait, stop=stop)


def report_progress(env: simpy.Environment, world: World, progress: Progress, every: float) -> Generator[simpy.Event, None, None]:
    """Tell the progress display how far the run is, every `every` simulated seconds."""
    while True:
        progress(env.now, world.telemetry.generated)
        yield env.timeout(every)


# A live run reports its progress every simulated hour (the CLI logs each simulated day).
LIVE_PROGRESS_S = 3600.0


def run_scenario(
    scenario: Scenario, sink: Sink, progress: Progress | None = None, stack_control: StackControl | None = None, wait: Wait = time.sleep,
    stop: Stop | None = None, shard: Shard | None = None, build_progress: BuildProgress | None = None,
) -> RunResult:  # fmt: skip
    """Run the scenario's world; `stack_control` lets process faults act on the local stack; a paced
    run waits for the wall clock through `wait` (pass a publisher's `idle`). A live run
    (`until-stopped`) ends once `stop` is requested. A `shard` of more than one passes on only its
    own sources' messages (simulator/shard.py); `generated` then counts those. `build_progress` hears
    how far building the world has got (simulator/builder.py)."""
    if scenario.until_stopped and stop is None:
        raise ValueError("a run until stopped needs a Stop to end it")
    env = make_environment(scenario, wait, stop)
    sharded = ShardSink(sink, shard) if shard is not None and shard.count > 1 else None
    world = build_world(
        scenario, env, sharded or sink, shard=sharded.shard if sharded else None, stack_control=stack_control, progress=build_progress
    )
    if progress is not None:
        every = LIVE_PROGRESS_S if scenario.until_stopped else max(scenario.duration / 200.0, 1.0)
        env.process(report_progress(env, world, progress, every))
    started = time.perf_counter()
    if stop is not None and scenario.until_stopped:
        run_until_stopped(env, stop)
    else:
        # Messages stamped exactly at `duration` belong to the next run: the span is [start, start + duration).
        env.run(until=scenario.duration)
    wall = time.perf_counter() - started
    simulated = float(env.now) if scenario.until_stopped else scenario.duration
    generated = sharded.passed if sharded else world.telemetry.generated
    if progress is not None:
        progress(simulated, generated)
    return RunResult(
        generated=generated,
        simulated_s=simulated,
        wall_s=wall,
        summaries=[make() for make in world.summaries],
    )


def run_until_stopped(env: simpy.Environment, stop: Stop) -> None:
    """Step the world until a stop is requested (a live world's processes never run out)."""
    while not stop.requested:
        try:
            env.step()
        except EmptySchedule:
            return
