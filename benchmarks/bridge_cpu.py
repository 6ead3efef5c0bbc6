"""The bridge's own CPU per message, and where it goes.

The messages of the pipeline benchmark's dry run (air quality, 10 readings, QoS 1) are queued at the
broker for the bridge's persistent session first; then a bridge in this process drains them into
InfluxDB, alone: its CPU per message comes from /proc (the process's and each of its threads'
utime + stime) from its start to the last point stored, with nothing else running in it. With
`--profile FILE`, py-spy (not a project dependency: give its path with `--py-spy`) samples this
process meanwhile and the split by function is printed (FILE keeps the raw stacks). SIGTERM, Ctrl-C or
an error stops the Mosquitto and InfluxDB it started (an interrupt: one line, exit 130).

    .venv/bin/python benchmarks/bridge_cpu.py [--stations 5000] [--hours 1] [--profile FILE --py-spy PATH] [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import common  # benchmarks/common.py, beside this script: the way out on signals
import floor  # benchmarks/floor.py, beside this script
import orjson
import pipeline  # benchmarks/pipeline.py: the same scenario and publisher
import pyspy  # benchmarks/pyspy.py: the sampler and its split by function

from simulator import stack
from simulator.influx import InfluxClient
from simulator.ingest.bridge import Bridge
from simulator.ingest.settings import BridgeSettings
from simulator.transport.mqtt import MqttPublisher

DRAIN_TIMEOUT_S = 300.0
THREADS = ("mqtt-network", "influx-writer")  # the bridge's own
# Functions whose time (with what they call) is shown in the profile's split, as "label: function name".
# Labels of functions the code before issue 17's batching had (_on_message, ack) stay, so both can be profiled.
INCLUSIVE = {
    "paho reading (loop_read, incl. the on_message callback)": "loop_read",
    "  socket reads (recv)": "_sock_recv",
    "  whole PUBLISH packets from the read buffer (_take_publishes)": "_take_publishes",
    "  PUBLISH handling one by one (_handle_publish)": "_handle_publish",
    "    topic matching for callbacks (iter_match)": "iter_match",
    "    the bridge's batch of a read (_on_messages: conversion, batching)": "_on_messages",
    "    on_message (conversion, batching)": "_on_message",
    "      to_line": "to_line",
    "        JSON parse (json_object)": "json_object",
    "        cached fields (cached_fields)": "cached_fields",
    "      seq check": "observe",
    "acknowledgements, one by one (ack)": "ack",
    "acknowledgements of a batch at once (ack_all)": "ack_all",
    "writer: InfluxDB write (gzip, HTTP)": "write",
    "    gzip": "compress",
}


def thread_cpu_seconds() -> dict[str, float]:
    """utime + stime of each thread of this process, by thread name."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    result: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        name = names.get(int(task.name), f"thread {task.name}")
        result[name] = result.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / floor.CLOCK_TICKS
    return result


def settings_for(broker: stack.Service, work: Path) -> BridgeSettings:
    return BridgeSettings(mqtt_url=broker.url, topic_prefix="bench", client_id="bench-bridge-cpu",
                          spool_dir=work / "spool", dead_letter_path=work / "dead.jsonl")  # fmt: skip


def queue_messages(spec: pipeline.Scenario, broker: stack.Service, influx: stack.Service, work: Path) -> int:
    """Subscribe the bridge's session once, then publish every message for it; returns how many."""
    bridge = Bridge(settings_for(broker, work), InfluxClient(influx.url, "bench"), log=lambda line: None)
    bridge.start()
    bridge.stop()
    publisher = MqttPublisher.from_settings(spec.mqtt, "bench-cpu-pub", qos=1)
    publisher.start()
    pipeline.run_scenario(spec, publisher)
    publisher.drain(600)
    publisher.stop()
    return publisher.acknowledged


def drain(broker: stack.Service, influx: stack.Service, work: Path, expected: int, profile: Path | None, py_spy: str | None) -> tuple[float, float, dict[str, float], int]:
    """(seconds, CPU seconds of the process, CPU seconds per thread, batches) to store `expected` points."""
    sampler = pyspy.record(profile, py_spy, threads=True) if profile is not None else None
    writer = InfluxClient(influx.url, "bench")
    bridge = Bridge(settings_for(broker, work), writer, log=lambda line: None)
    before, threads_before = floor.cpu_seconds(os.getpid()), thread_cpu_seconds()
    started = time.perf_counter()
    bridge.start()
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while bridge.counts.written < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    cpu, threads = floor.cpu_seconds(os.getpid()) - before, thread_cpu_seconds()
    per_thread = {name: seconds - threads_before.get(name, 0.0) for name, seconds in threads.items() if name in THREADS}
    bridge.stop()
    if sampler is not None:
        pyspy.stop(sampler)
    assert bridge.counts.written == expected, f"stored {bridge.counts.written} of {expected}"
    return elapsed, cpu, per_thread, writer.stats.batches


def split(profile: Path) -> pyspy.Split:
    """The samples of the bridge's threads in py-spy's raw stacks, by INCLUSIVE label and innermost function."""
    return pyspy.split(pyspy.read_stacks(profile, threads=True), INCLUSIVE, lambda stack: any(name in stack.thread for name in THREADS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stations", type=int, default=5000, help="air-quality stations (default 5000)")
    parser.add_argument("--hours", type=float, default=1.0, help="simulated hours (default 1)")
    parser.add_argument("--profile", type=Path, default=None, metavar="FILE", help="sample the bridge with py-spy, raw stacks to FILE")
    parser.add_argument("--py-spy", default=None, metavar="PATH", help="the py-spy executable (default: py-spy on PATH)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the figures to FILE as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="iotsim-bridge-cpu-") as tmp:
        work = Path(tmp)
        servers: list[stack.Service] = []  # each added as it starts: the way out (an error, SIGTERM, Ctrl-C) stops exactly these
        try:
            servers.append(broker := stack.start_mosquitto(work / "broker", stack.free_port()))
            servers.append(influx := stack.start_influxdb(work / "influx", stack.free_port(), database="bench"))
            spec = pipeline.scenario(args.stations, args.hours, broker.url, "bench")
            expected = queue_messages(spec, broker, influx, work)
            elapsed, cpu, per_thread, batches = drain(broker, influx, work, expected, args.profile, args.py_spy)
        finally:
            for server in servers:
                server.stop()
    print(f"bridge alone, draining {expected:,} queued messages: {elapsed:.2f} s, {expected / elapsed:,.0f} msg/s, {batches:,} InfluxDB writes "
          f"({expected / batches:,.0f} points each); load average {os.getloadavg()[0]:.2f}")
    print(f"CPU per message: process {1e6 * cpu / expected:.1f} µs; " + ", ".join(f"{name} {1e6 * s / expected:.1f} µs" for name, s in per_thread.items()))
    if args.profile is not None:
        shares = split(args.profile)
        pyspy.show(shares, f"py-spy: {shares.total:,} samples of the bridge's threads while on CPU")
    if args.json:
        figures = {"messages": expected, "seconds": elapsed, "msgs_per_s": expected / elapsed, "batches": batches,
                   "bridge_cpu_us_per_msg": 1e6 * cpu / expected, "thread_cpu_us_per_msg": {name: 1e6 * s / expected for name, s in per_thread.items()}}  # fmt: skip
        args.json.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2) + b"\n")


if __name__ == "__main__":
    sys.exit(common.run(main))
