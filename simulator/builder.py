"""Building a world from a validated scenario: the one way `iotsim run` and the load workers do it.

The telemetry numbers and stamps the messages; each fleet's device type registers its devices and
starts their processes, in the scenario's order; then the pipeline faults of the scenario's
`faults:` section are injected between the telemetry and the sink. A load worker passes its shard:
`load_probe` fleets then build only the shard's devices (the worker's sink drops the messages of
the other devices; simulator/shard.py). A scenario with a `load:` section paces the
`load_probe` gateways by its profile: the builder puts that pacing into the world
(simulator/load/pacing.py), so the devices never read the section. A large world takes a while to
build: `progress`, if given, hears how many devices are built (`BuildProgress`).
"""

from __future__ import annotations

from collections.abc import Callable

import simpy

from simulator.faults import FaultySink, StackControl, inject
from simulator.load.pacing import PACING_KEY
from simulator.shard import SHARD_KEY, Shard
from simulator.scenario import Scenario
from simulator.telemetry import Sink, Telemetry
from simulator.world import Summary, World

BuildProgress = Callable[[int, int], None]
"""Called while a world is built with (devices built, devices the fleets count): at the start and
every PROGRESS_EVERY devices; at the end with (devices built, devices built), as a world that builds
only some of its fleets' devices (a shard's) is then complete."""
PROGRESS_EVERY = 1000  # a call per device would cost the build more than the display is worth


class BuildCount:
    """Counts the devices as they register and passes the count on every PROGRESS_EVERY devices."""

    def __init__(self, total: int, progress: BuildProgress) -> None:
        self.total = total
        self.progress = progress
        self.built = 0

    def __call__(self) -> None:
        self.built += 1
        if self.built % PROGRESS_EVERY == 0:
            self.progress(self.built, self.total)


def build_world(
    scenario: Scenario, env: simpy.Environment, sink: Sink, shard: Shard | None = None, stack_control: StackControl | None = None,
    progress: BuildProgress | None = None,
) -> World:  # fmt: skip
    """The scenario's world on `env`, publishing to `sink`; `stack_control` lets process faults act on
    the local stack (without it they are only announced); `progress` hears how far the build is."""
    faulty = FaultySink(sink, scenario.faults, scenario.seed, scenario.mqtt.topic_prefix) if scenario.faults else None
    start_ms = round(scenario.start.timestamp() * 1000)
    telemetry = Telemetry(env=env, start_ms=start_ms, prefix=scenario.mqtt.topic_prefix, sink=faulty or sink)
    world = World(env=env, scenario=scenario, telemetry=telemetry)
    if shard is not None:
        world.shared(SHARD_KEY, lambda _: shard)
    if scenario.load is not None:
        pacing = scenario.load.pacing()
        world.shared(PACING_KEY, lambda _: pacing)
    count = BuildCount(sum(fleet.count for fleet in scenario.fleets), progress) if progress is not None else None
    if count is not None:
        world.registered = count
        count.progress(0, count.total)
    for fleet in scenario.fleets:
        fleet.device_type.build(world, fleet)
    if count is not None:
        world.registered = None
        count.progress(count.built, count.built)
    if faulty is not None:
        inject(world, scenario.faults, faulty, stack_control)
        world.add_summary(lambda: Summary("faults injected", {name: str(count) for name, count in faulty.injected.items()}))
    return world
