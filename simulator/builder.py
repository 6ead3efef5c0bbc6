"""Building a world from a validated scenario: the one way `iotsim run` and the load workers do it.

The telemetry numbers and stamps the messages; each fleet's device type registers its devices and
starts their processes, in the scenario's order; then the pipeline faults of the scenario's
`faults:` section are injected between the telemetry and the sink. A sharded run (`iotsim run
--shard`, a load worker) passes its shard: `load_probe` fleets then build only the shard's devices;
every other model is built whole, the same in every shard, and the sink drops the messages of the
other shards' sources (simulator/shard.py). Process faults act on the stack only in the shard that
owns their events' source (`fault-injector`), so one shard, not every one, stops the broker. A scenario with a `load:` section paces the
`load_probe` gateways by its profile: the builder puts that pacing into the world
(simulator/load/pacing.py), so the devices never read the section.
"""

from __future__ import annotations

import simpy

from simulator.faults import SOURCE as FAULT_SOURCE, FaultySink, StackControl, inject
from simulator.load.pacing import PACING_KEY
from simulator.shard import SHARD_KEY, Shard
from simulator.scenario import Scenario
from simulator.telemetry import Sink, Telemetry
from simulator.world import Summary, World


def build_world(
    scenario: Scenario, env: simpy.Environment, sink: Sink, shard: Shard | None = None, stack_control: StackControl | None = None
) -> World:
    """The scenario's world on `env`, publishing to `sink`; `stack_control` lets process faults act on
    the local stack (without it they are only announced)."""
    faulty = FaultySink(sink, scenario.faults, scenario.seed, scenario.mqtt.topic_prefix) if scenario.faults else None
    start_ms = round(scenario.start.timestamp() * 1000)
    telemetry = Telemetry(env=env, start_ms=start_ms, prefix=scenario.mqtt.topic_prefix, sink=faulty or sink)
    world = World(env=env, scenario=scenario, telemetry=telemetry)
    if shard is not None:
        world.shared(SHARD_KEY, lambda _: shard)
        if not shard.owns(FAULT_SOURCE):
            stack_control = None  # announced only: the owning shard acts
    if scenario.load is not None:
        pacing = scenario.load.pacing()
        world.shared(PACING_KEY, lambda _: pacing)
    for fleet in scenario.fleets:
        fleet.device_type.build(world, fleet)
    if faulty is not None:
        inject(world, scenario.faults, faulty, stack_control)
        world.add_summary(lambda: Summary("faults injected", {name: str(count) for name, count in faulty.injected.items()}))
    return world
