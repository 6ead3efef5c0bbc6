"""A load worker: one shard of the scenario's devices, simulated in real time and published.

Started by the runner as `python -m simulator.load.worker`; it reads its orders on stdin and reports
on stdout, one JSON line each (simulator/load/protocol.py has every message):

    stdin   WorkerOrders      the scenario, the shard, the QoS, the interval; or a dry run's file
    stdout  Ready             connected to the broker (not in a dry run)
    stdin   Start             the common start; the world's clock starts then
    stdout  WorkerInterval    once per interval, for the interval ending at start + k * interval
    stdout  WorkerFinal       after the last stage, once everything is acknowledged
    stdout  Failure           could not go on (then exit 1): any IotsimError, one line

With a run id in its orders it also writes each report to InfluxDB (simulator/load/records.py), as
`iotsim load --shard` does: that one runs `publish_shard` in its own process, reporting only there.

A dry run needs no broker and no start: the world runs as fast as possible from the scenario's own
start and writes its messages to the file, so runs can be compared byte for byte.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import simpy

from simulator.builder import build_world
from simulator.connections import ConnectionPlan, connection_plan
from simulator.engine import PacedEnvironment
from simulator.influx import InfluxClient, InfluxCredentials
from simulator.load.links import MeasuredSessions
from simulator.load.metrics import LatencyRecorder, take_all
from simulator.load.probe import DEVICE as PROBE
from simulator.load.protocol import WORKER_ORDERS, Message, ProtocolError, Ready, Reporter, Start, WorkerCounts, WorkerFinal, WorkerInterval, WorkerOrders, read_order, say, serve
from simulator.load.records import ShardRecorder
from simulator.load.runner import Experiment
from simulator.scenario import Scenario
from simulator.shard import Shard, ShardSink
from simulator.stack import StackControl
from simulator.transport.client_ids import load_worker_client_id
from simulator.transport.jsonl import JsonlWriter
from simulator.transport.mqtt import MqttPublisher, password_from_environment
from simulator.transport.sessions import SessionSink, SessionStats
from simulator.world import World

DRAIN_TIMEOUT = 120.0


def build_sharded_world(scenario: Scenario, env: simpy.Environment, sink: ShardSink) -> World:
    """The world of `iotsim run` (simulator/builder.py), for the devices of the sink's shard (a dry run's:
    process faults only announced)."""
    return build_world(scenario, env, sink, shard=sink.shard)


class InstrumentedPublisher(MqttPublisher):
    """MqttPublisher that records each message's publish latency: handed to paho → PUBACK (QoS 1) or
    seen written to the socket (QoS 0). Waiting for room in the in-flight window is not counted here;
    the end-to-end latency (device timestamp → written) includes it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.latency = LatencyRecorder()
        self.sent_ns: dict[int, int] = {}

    def _publish(self, topic: str, payload: bytes) -> int:
        started = time.perf_counter_ns()
        mid = super()._publish(topic, payload)
        self.sent_ns[mid] = started
        return mid

    def _acknowledged(self, mid: int) -> None:
        started = self.sent_ns.pop(mid, None)
        if started is not None:
            self.latency.record_us((time.perf_counter_ns() - started) // 1000)
        super()._acknowledged(mid)


def run_dry(scenario: Scenario, shard: Shard, output: Path) -> None:
    writer = JsonlWriter(output)
    sink = ShardSink(writer, shard)
    env = simpy.Environment()
    world = build_sharded_world(scenario, env, sink)
    started = time.perf_counter()
    env.run(until=scenario.duration)
    wall = time.perf_counter() - started
    writer.close()
    counts = WorkerCounts(generated=sink.passed, published=0, acknowledged=0)
    say(WorkerFinal(counts=counts, publish_hist="", devices=world.telemetry.device_count(), wall_s=wall, drained=True))  # nothing to drain


def run_live(scenario: Scenario, shard: Shard, qos: int, interval: float, run_id: str | None, state_dir: str | None = None) -> None:
    """A worker of the runner: Ready on stdout, the common start from stdin, and its reports to
    InfluxDB under the run id, as a shard's of `iotsim load --shard` (the runner reads them there)."""
    if run_id is None:
        raise ProtocolError("the runner sent worker_orders without a run_id: a live worker's figures go to InfluxDB under it")
    client = InfluxClient(scenario.influx.url, scenario.influx.database, InfluxCredentials.from_environment(scenario.influx))
    recorder = ShardRecorder(client, run_id, shard)

    def ready() -> int:
        say(Ready())
        start_ms = read_order(WORKER_ORDERS, Start).start_ms
        recorder.start(start_ms, Experiment.of(scenario, shard.count, qos).record_inputs(shard))
        return start_ms

    try:
        publish_shard(scenario, shard, qos, interval, ready, recorder.send, state_dir)
        recorder.close()  # an IotsimError when its records did not reach InfluxDB: a Failure, exit 1 (serve)
    finally:
        client.close()


def publish_shard(
    scenario: Scenario, shard: Shard, qos: int, interval: float, ready: Callable[[], int], report: Callable[[Message], None], state_dir: str | None = None
) -> WorkerFinal:
    """Connect, learn the start from `ready()` (epoch ms), simulate the shard's devices in real time
    and `report` a WorkerInterval every interval, then the WorkerFinal (also returned). The runner's
    workers report on stdout; `iotsim load --shard` reports to InfluxDB (simulator/load/records.py).
    Devices of fleets with their own connections (`connection: device`) publish through them, as in
    `iotsim run`; with `state_dir` (the local stack's, whose broker this is) a `broker_outage` stops
    and starts that broker (in the shard that owns the fault injector)."""
    settings = scenario.mqtt
    client_id = load_worker_client_id(settings.client_id_prefix, shard.index, os.getpid())
    publisher = InstrumentedPublisher.from_settings(settings, client_id=client_id, qos=qos)
    plan = connection_plan(scenario, shard, password_from_environment())  # UsageError: a gateway fleet in a shard
    sessions = MeasuredSessions(plan.ids, plan.settings, policies=plan.policies) if plan else None  # OpenFilesLimit: one line
    control = BrokerControl(Path(state_dir)) if state_dir is not None else None
    publisher.start()  # BrokerError: unreachable or refused
    start_ms = ready()
    start = datetime.fromtimestamp(start_ms / 1000, tz=timezone.utc)
    scenario = scenario.with_overrides(start=start.isoformat())
    routed = SessionSink(publisher, publisher.idle, sessions, plan.route) if plan and sessions else None
    sink = ShardSink(routed or publisher, shard)
    wait = routed.idle if routed else publisher.idle
    env = PacedEnvironment(factor=1.0, wait=wait)
    world = build_world(scenario, env, sink, shard=shard, stack_control=control, links=sessions)
    if sessions is not None:  # under unit: connections the profile connects the load_probe devices (simulator/load/probe.py)
        sessions.start(later=probe_ids(scenario, plan) if scenario.load is not None and scenario.load.unit == "connections" else ())

    def counts() -> WorkerCounts:
        own = sessions.stats if sessions else SessionStats()
        return WorkerCounts(
            generated=sink.passed, published=publisher.published + own.sent, acknowledged=publisher.acknowledged + own.acknowledged,
            connected=own.connected, connects=own.connects, reconnects=own.reconnects, connect_failures=own.connect_failures,
        )  # fmt: skip

    def connections() -> dict[str, Any]:
        figures: dict[str, Any] = {"outage_end_ms": control.restarted_ms if control else None}
        if sessions is not None:
            figures.update(connect_hist=sessions.connect_latency.take(), lost=len(sessions.lost), reconnected_ms=sessions.reconnected_ms)
        return figures

    def publish_hist() -> str:  # the shared connection's and the devices' own
        return take_all(publisher.latency, sessions.publish_latency) if sessions is not None else publisher.latency.take()

    def interval_report(k: int) -> WorkerInterval:
        return WorkerInterval(k=k, counts=counts(), publish_hist=publish_hist(), **connections())

    reporter = Reporter(start_ms, interval, interval_report, report)
    try:  # a BrokerError on the way (another client took our client id ...) ends the run as one Failure (serve)
        wait(max(start_ms / 1000 - time.time(), 0.0))
        env.sync()
        reporter.start()
        started = time.perf_counter()
        env.run(until=scenario.duration)
        wall = time.perf_counter() - started
        drained = publisher.drain(DRAIN_TIMEOUT) and (sessions is None or sessions.settle(DRAIN_TIMEOUT))
    finally:
        reporter.stop()
    final = WorkerFinal(counts=counts(), publish_hist=publish_hist(), devices=world.telemetry.device_count(), wall_s=wall, drained=drained, **connections())
    report(final)
    publisher.stop()
    if sessions is not None:
        sessions.close()
    return final


def probe_ids(scenario: Scenario, plan: ConnectionPlan) -> set[str]:
    """The shard's load_probe devices with their own connections: the profile connects them."""
    probes = {device_id for fleet in scenario.fleets if fleet.type == PROBE.name for device_id in fleet.device_ids()}
    return {device_id for device_id in plan.route if device_id in probes}


class BrokerControl(StackControl):
    """The local stack's broker, for a load experiment's `broker_outage` (simulator/faults.py): stopped
    and started as `iotsim run` does it, noting when it accepted connections again (`restarted_ms`).
    Other process faults stay announced only: the experiment's own bridge and records need InfluxDB."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.restarted_ms: int | None = None

    def stop(self, name: str) -> int:
        return super().stop(name) if name == "mosquitto" else 0

    def start(self, name: str, port: int) -> None:
        if name == "mosquitto":
            super().start(name, port)  # returns once it accepts connections
            self.restarted_ms = time.time_ns() // 1_000_000

    def crash_bridge(self) -> list[str]:
        return []

    def restart_bridge(self, argv: list[str]) -> None:
        pass


def work() -> None:
    orders = read_order(WORKER_ORDERS, WorkerOrders)
    if orders.dry_run:
        run_dry(orders.scenario, orders.shard, Path(orders.dry_run))
    else:
        run_live(orders.scenario, orders.shard, orders.qos if orders.qos is not None else orders.scenario.mqtt.qos, orders.interval, orders.run_id, orders.state_dir)


def main() -> None:
    serve(work)


if __name__ == "__main__":
    main()
