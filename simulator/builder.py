"""Building a world from a validated scenario: the one way `iotsim run` and the load workers do it.

The telemetry numbers and stamps the messages; each fleet's device type registers its devices and
starts their processes, in the scenario's order; then the pipeline faults of the scenario's
`faults:` section are injected between the telemetry and the sink. A sharded run (`iotsim run
--shard`, a load worker) passes its shard: each fleet then builds only the shard's devices
(`owned_devices`, simulator/device_type.py); the shared models (weather, roads, the port) are built
whole, the same in every shard, and the sink drops the messages of the other shards' sources
(simulator/shard.py). A scenario with `duplicates`, `malformed` or `partition` faults builds every
device in every shard: those faults act on all the world's messages (`need_every_message`). Process faults act on
the stack only in the shard that owns their events' source (`fault-injector`), so one shard, not
every one, stops the broker. A scenario with a `load:` section paces the `load_probe` gateways by
its profile: the builder puts that pacing into the world (simulator/load/pacing.py), so the devices
never read the section. A large world takes a while to
build: `progress`, if given, hears how many devices are built (`BuildProgress`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import simpy

from simulator.faults import SOURCE as FAULT_SOURCE
from simulator.faults import FaultySink, inject, need_every_message
from simulator.load.pacing import LINKS_KEY, PACING_KEY, Links
from simulator.scenario import Scenario
from simulator.shard import SHARD_KEY, Shard
from simulator.telemetry import Sink, Telemetry
from simulator.world import Summary, World

if TYPE_CHECKING:
    from simulator.stack import StackControl

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
    progress: BuildProgress | None = None, links: Links | None = None,
) -> World:  # fmt: skip
    """The scenario's world on `env`, publishing to `sink`; `stack_control` lets process faults act on
    the local stack (without it they are only announced); `progress` hears how far the build is;
    `links` are the load_probe devices' own connections that a `unit: connections` profile drives."""
    faulty = FaultySink(sink, scenario.faults, scenario.seed, scenario.mqtt.topic_prefix) if scenario.faults else None
    start_ms = round(scenario.start.timestamp() * 1000)
    telemetry = Telemetry(env=env, start_ms=start_ms, prefix=scenario.mqtt.topic_prefix, sink=faulty or sink)
    world = World(env=env, scenario=scenario, telemetry=telemetry)
    builds_share = shard is not None and not need_every_message(scenario.faults)
    if shard is not None:
        if builds_share:
            world.shared(SHARD_KEY, lambda _: shard)
        if not shard.owns(FAULT_SOURCE):
            stack_control = None  # announced only: the owning shard acts
    if scenario.load is not None:
        pacing = scenario.load.pacing()
        world.shared(PACING_KEY, lambda _: pacing)
    if links is not None:
        world.shared(LINKS_KEY, lambda _: links)
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
        title = faults_title(shard, builds_share)
        world.add_summary(lambda: Summary(title, {name: str(count) for name, count in faulty.injected.items()}))
    return world


def faults_title(shard: Shard | None, builds_share: bool) -> str:
    """What the counts of injected faults cover: the run, the shard's devices, or the whole world a shard generated."""
    if shard is None or shard.count == 1:
        return "faults injected"
    return f"faults injected (shard {shard.spec}: its devices)" if builds_share else f"faults injected (shard {shard.spec}: the whole world, generated in every shard)"
