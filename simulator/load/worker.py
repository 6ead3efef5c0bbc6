"""A load worker: one shard of the scenario's devices, simulated in real time and published.

Started by the runner as `python -m simulator.load.worker`; it reads its orders as JSON lines on
stdin and reports as JSON lines on stdout:

    stdin   {"scenario": {...}, "shard": [i, n], "qos": 1, "dry_run": null | "file.jsonl", "interval": 1.0}
    stdout  {"ready": true}                           connected to the broker (not in a dry run)
    stdin   {"start_ms": 1768...}                     the common start; the world's clock starts then
    stdout  {"k": 3, "generated": ..., "published": ..., "acknowledged": ..., "publish_hist": "..."}
            ... once per interval, for the interval ending at start + k * interval
    stdout  {"final": true, ...}                      after the last stage, once everything is acknowledged
    stdout  {"error": "..."}                          could not run (then exit 1)

A dry run needs no broker and no start: the world runs as fast as possible from the scenario's own
start and writes its messages to the file, so runs can be compared byte for byte.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import simpy

from simulator.builder import build_world
from simulator.engine import PacedEnvironment
from simulator.load.metrics import LatencyRecorder
from simulator.load.shard import Shard, ShardSink
from simulator.scenario import Scenario
from simulator.transport.jsonl import JsonlWriter
from simulator.errors import BrokerError
from simulator.transport.mqtt import MqttPublisher, load_worker_client_id
from simulator.world import World

DRAIN_TIMEOUT = 120.0


def build_sharded_world(scenario: Scenario, env: simpy.Environment, sink: ShardSink) -> World:
    """The world of `iotsim run` (simulator/builder.py), for the devices of the sink's shard. Its pipeline
    faults are injected as in `iotsim run`; process faults (outages, crashes) are only announced, since
    the workers do not control the stack."""
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


class Reporter:
    """Prints a JSON line per interval, aligned on the common start, until stopped."""

    def __init__(self, start_ms: int, interval: float, snapshot: Any) -> None:
        self.start_s = start_ms / 1000.0
        self.interval = interval
        self.snapshot = snapshot
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="load-reporter", daemon=True)

    def _run(self) -> None:
        k = 1
        while not self.stopping.wait(max(self.start_s + k * self.interval - time.time(), 0.0)):
            say({"k": k, **self.snapshot()})
            k += 1

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()


_print_lock = threading.Lock()


def say(record: dict[str, Any]) -> None:
    with _print_lock:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


def read_order() -> dict[str, Any]:
    line = sys.stdin.readline()
    if not line:
        raise SystemExit(0)  # the runner went away
    return json.loads(line)


def run_dry(scenario: Scenario, shard: Shard, output: Path) -> None:
    writer = JsonlWriter(output)
    sink = ShardSink(writer, shard)
    env = simpy.Environment()
    world = build_sharded_world(scenario, env, sink)
    started = time.perf_counter()
    env.run(until=scenario.duration)
    wall = time.perf_counter() - started
    writer.close()
    say({"final": True, "generated": sink.passed, "published": 0, "acknowledged": 0, "publish_hist": "",
         "devices": len(world.telemetry.devices), "wall_s": wall})  # fmt: skip


def run_live(scenario: Scenario, shard: Shard, qos: int, interval: float) -> None:
    settings = scenario.mqtt
    try:
        publisher = InstrumentedPublisher.from_settings(
            settings, client_id=load_worker_client_id(settings.client_id_prefix, shard.index, os.getpid()), qos=qos
        )
        publisher.start()
    except BrokerError as error:
        say({"error": str(error)})
        raise SystemExit(1) from None
    say({"ready": True})
    start_ms = int(read_order()["start_ms"])
    start = datetime.fromtimestamp(start_ms / 1000, tz=timezone.utc)
    scenario = scenario.with_overrides(start=start.isoformat())
    sink = ShardSink(publisher, shard)
    env = PacedEnvironment(factor=1.0, wait=publisher.idle)
    world = build_sharded_world(scenario, env, sink)

    def snapshot() -> dict[str, Any]:
        return {"generated": sink.passed, "published": publisher.published, "acknowledged": publisher.acknowledged,
                "publish_hist": publisher.latency.take()}  # fmt: skip

    reporter = Reporter(start_ms, interval, snapshot)
    publisher.idle(max(start_ms / 1000 - time.time(), 0.0))
    env.sync()
    reporter.start()
    started = time.perf_counter()
    env.run(until=scenario.duration)
    wall = time.perf_counter() - started
    drained = publisher.drain(DRAIN_TIMEOUT)
    reporter.stop()
    say({"final": True, **snapshot(), "devices": len(world.telemetry.devices), "wall_s": wall, "drained": drained})
    publisher.stop()


def main() -> None:
    order = read_order()
    scenario = Scenario.model_validate(order["scenario"])
    shard = Shard(*order["shard"])
    if order.get("dry_run"):
        run_dry(scenario, shard, Path(order["dry_run"]))
    else:
        run_live(scenario, shard, int(order["qos"]), float(order.get("interval", 1.0)))


if __name__ == "__main__":
    main()
