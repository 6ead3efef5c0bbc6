"""The simulator's own CPU per message, and where it goes: model + encode against the publish path.

The pipeline benchmark's world (air-quality stations, 10 readings a message, a dry run's exact
messages) runs in this process twice per round, alternating: once into a sink that discards every
message (what the dry run costs without writing its file: the models and the JSON encoding), and
once published at QoS 1 (`--qos 0`: at QoS 0) to a Mosquitto the benchmark starts, until every PUBACK
is in (QoS 0: every message written to the socket). The CPU of
this process (getrusage: user + system; the publisher turns paho's loop in this thread) per message
of each pass, and their difference, the publish path's. With `--stock-publish`, the publish passes
use paho's own `publish()` instead of the client's fast QoS 1 or 0 path (simulator/transport/client.py),
so the two can be compared in one session. With `--profile FILE`, py-spy (not a project dependency:
give its path with `--py-spy`) samples the last publish pass and the split by function is printed.
SIGTERM, Ctrl-C or an error stops the Mosquitto it started (an interrupt: one line, exit 130).

    .venv/bin/python benchmarks/publisher_cpu.py [--stations 5000] [--hours 1] [--runs 3] [--qos 1] [--stock-publish] [--profile FILE --py-spy PATH] [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common  # benchmarks/common.py, beside this script: the way out on signals
import orjson
import pipeline  # benchmarks/pipeline.py: the same scenario
import pyspy  # benchmarks/pyspy.py: the sampler and its split by function

from simulator import stack
from simulator.engine import run_scenario
from simulator.transport.mqtt import MqttPublisher

DRAIN_TIMEOUT_S = 600.0
# Functions whose time (with what they call) is shown in the profile's split, as "label: function name".
INCLUSIVE = {
    "the world's run (everything)": "run_scenario",
    "publisher (__call__)": "__call__",
    "  publish (hand one message to paho)": "_publish",
    "    paho's publish()": "publish",
    "    publish_qos1 (with --stock-publish, paho's publish() inside)": "publish_qos1",
    "    publish_qos0 (likewise)": "publish_qos0",
    "  network turns (_run_network)": "_run_network",
    "    paho reading (loop_read)": "loop_read",
    "      PUBACK handling": "_handle_pubackcomp",
    "      socket reads (recv)": "_sock_recv",
    "    paho writing (loop_write)": "loop_write",
    "    sending (flush_output)": "flush_output",
    "    keepalive (loop_misc)": "loop_misc",
    "  acknowledged (_on_publish)": "_on_publish",
    "the payload's JSON (Telemetry.payload)": "payload",
}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def system_seconds() -> float:
    """The kernel's part (socket calls, mostly), of the CPU above."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def discard(topic: str, payload: bytes) -> None:
    """The sink of the model + encode pass."""


def model_pass(spec: pipeline.Scenario) -> tuple[int, float, float]:
    """(messages, seconds, CPU seconds) of the world into `discard`."""
    before, started = cpu_seconds(), time.perf_counter()
    result = run_scenario(spec, discard)
    return result.generated, time.perf_counter() - started, cpu_seconds() - before


def publish_pass(spec: pipeline.Scenario, run: int, qos: int, stock: bool, profile: Path | None, py_spy: str | None) -> tuple[int, float, float, float]:
    """(messages acknowledged, seconds, CPU seconds, of them system) of the world published at `qos` until every PUBACK (QoS 0:
    until every message is written)."""
    publisher = MqttPublisher.from_settings(spec.mqtt, f"bench-pub-cpu-{run}", qos=qos)
    publisher.client.fast_publish = not stock
    publisher.start()
    sampler = pyspy.record(profile, py_spy) if profile is not None else None
    before, system_before, started = cpu_seconds(), system_seconds(), time.perf_counter()
    result = run_scenario(spec, publisher)
    drained = publisher.drain(DRAIN_TIMEOUT_S)
    elapsed, cpu, system = time.perf_counter() - started, cpu_seconds() - before, system_seconds() - system_before
    if sampler is not None:
        pyspy.stop(sampler)
    publisher.stop()
    assert drained and publisher.acknowledged == publisher.published == result.generated, (
        f"acknowledged {publisher.acknowledged} of {publisher.published} published, {result.generated} generated"
    )
    return publisher.acknowledged, elapsed, cpu, system


def split(profile: Path) -> pyspy.Split:
    """The samples of the world's run and the drain in py-spy's raw stacks (not py-spy's attaching, nor the
    connection's start and stop), by INCLUSIVE label and innermost function."""
    return pyspy.split(pyspy.read_stacks(profile), INCLUSIVE, lambda stack: bool({"run_scenario", "drain"} & stack.functions))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stations", type=int, default=5000, help="air-quality stations (default 5000)")
    parser.add_argument("--hours", type=float, default=1.0, help="simulated hours (default 1)")
    parser.add_argument("--runs", type=int, default=3, help="rounds of a model + encode pass and a publish pass (default 3)")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1, help="the publish passes' QoS (default 1)")
    parser.add_argument("--stock-publish", action="store_true", help="publish with paho's own publish(), not the fast QoS 1 or 0 path")
    parser.add_argument("--profile", type=Path, default=None, metavar="FILE", help="sample the last publish pass with py-spy, raw stacks to FILE")
    parser.add_argument("--py-spy", default=None, metavar="PATH", help="the py-spy executable (default: py-spy on PATH)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the figures to FILE as JSON")
    args = parser.parse_args()
    models: list[float] = []
    publishes: list[float] = []
    rates: list[float] = []
    systems: list[float] = []
    with tempfile.TemporaryDirectory(prefix="iotsim-publisher-cpu-") as tmp:
        servers: list[stack.Service] = []  # kept as it starts: the way out (an error, SIGTERM, Ctrl-C) stops exactly what runs
        try:
            servers.append(broker := stack.start_mosquitto(Path(tmp) / "broker", stack.free_port()))
            spec = pipeline.scenario(args.stations, args.hours, broker.url, "bench")
            for run in range(args.runs):
                generated, _, model_cpu = model_pass(spec)
                profile = args.profile if run == args.runs - 1 else None
                messages, elapsed, publish_cpu, system_cpu = publish_pass(spec, run, args.qos, args.stock_publish, profile, args.py_spy)
                assert messages == generated, f"published {messages}, the model pass made {generated}"
                models.append(1e6 * model_cpu / generated)
                publishes.append(1e6 * publish_cpu / messages)
                rates.append(messages / elapsed)
                systems.append(1e6 * system_cpu / messages)
                print(f"run {run + 1}: {messages:,} messages; model + encode {models[-1]:.1f} µs/msg, published end to end "
                      f"{publishes[-1]:.1f} µs/msg (publish path {publishes[-1] - models[-1]:.1f}; system {systems[-1]:.1f}), {rates[-1]:,.0f} msg/s", flush=True)  # fmt: skip
        finally:
            for server in servers:
                server.stop()
    path = f"QoS {args.qos}, " + ("paho's publish()" if args.stock_publish else "the fast path")
    model, total = statistics.median(models), statistics.median(publishes)
    print(f"median of {args.runs} ({path}; load average {os.getloadavg()[0]:.2f}): simulator {total:.1f} µs of CPU per message end to end, "
          f"model + encode {model:.1f}, publish path {total - model:.1f}; system (kernel) {statistics.median(systems):.1f}")  # fmt: skip
    if args.profile is not None:
        shares = split(args.profile)
        pyspy.show(shares, f"py-spy, the last publish pass: {shares.total:,} samples")
    if args.json:
        figures = {"messages": messages, "runs": args.runs, "qos": args.qos, "publish_path": "stock" if args.stock_publish else "fast",
                   "model_encode_us_per_msg": models, "published_us_per_msg": publishes, "published_system_us_per_msg": systems, "msgs_per_s": rates,
                   "median_published_us_per_msg": total, "median_model_encode_us_per_msg": model, "median_publish_path_us_per_msg": total - model}  # fmt: skip
        args.json.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2) + b"\n")


if __name__ == "__main__":
    sys.exit(common.run(main))
