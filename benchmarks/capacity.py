"""Pipeline capacity: the highest rate sustained with zero loss, end to end, at QoS 0 and QoS 1.

Each figure stands beside a baseline measured in the same run on the same broker: Mosquitto's own C
clients passing the same load_probe payloads through (`mosquitto_pub -l` into `mosquitto_sub`, at
QoS 1 and at QoS 0), five times each: one pass takes about a second and varies by about a quarter
from pass to pass on a shared machine, so the median is the baseline and the spread is printed
beside it. Capacity comes from `iotsim load --find-capacity` trials (constant rate, each `--factor`
x the last, then bisection) judged by:

    loss == 0                                  every generated message is in InfluxDB
    written_rate >= 0.99 * offered_rate        written while offered, not only after draining
    p99_latency_ms < 1000                      device timestamp → written, a stable pipeline

Also: the simulator's generation rate per core (SimPy world → load_probe messages encoded as JSON,
no broker), from CPU time. Target on the 2-core machine: QoS 1 capacity >= 40% of the C-client
QoS 1 pass-through rate.

    .venv/bin/python benchmarks/capacity.py [--probes 500] [--trial 10] [--start 2000] [--workers 1] [--batch 1]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import simpy
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.table import Table

from simulator import stack
from simulator.load.results import write_results
from simulator.load.runner import Experiment, find_capacity, run_live
from simulator.shard import Shard, ShardSink
from simulator.load.worker import build_sharded_world
from simulator.scenario import Scenario

THRESHOLDS = ["loss == 0", "written_rate >= 0.99 * offered_rate", "p99_latency_ms < 1000"]
TARGET_RATIO = 0.40
BASELINE_PASSES = 5
console = Console(width=160)


def scenario(args: argparse.Namespace, broker: stack.Service, influx: stack.Service, qos: int, prefix: str) -> Scenario:
    return Scenario.model_validate(
        {
            "name": f"capacity-qos{qos}",
            "seed": 1,
            "duration": 60,
            "mqtt": {"url": broker.url, "topic_prefix": prefix, "client_id_prefix": prefix, "qos": qos},
            "influx": {"url": influx.url, "database": "bench"},
            "fleets": [{"type": "load_probe", "count": args.probes, "batch": args.batch}],
            "load": {
                "profile": {"kind": "constant", "target": args.start, "duration": args.trial},
                "qos": qos,
                "workers": args.workers,
                "drain": 20,
                "thresholds": THRESHOLDS,
                "capacity": {"start": args.start, "factor": args.factor, "trial": args.trial, "refine": args.refine, "max_trials": args.max_trials},
            },
        }
    )


def generation_per_core(spec: Scenario, seconds: float) -> tuple[int, float]:
    """Messages generated per CPU second by one process: SimPy + readings + JSON, into a null sink."""
    counted = [0]

    def null_sink(topic: str, payload: bytes) -> None:
        counted[0] += 1

    rate = 20_000.0
    spec = spec.model_copy(update={"load": spec.load.model_copy(update={"profile": spec.load.profile.model_copy(update={"target": rate, "duration": seconds})})})  # type: ignore[union-attr]
    env = simpy.Environment()
    build_sharded_world(spec, env, ShardSink(null_sink, Shard()))
    started = time.process_time()
    env.run(until=seconds)
    return counted[0], time.process_time() - started


def payloads(spec: Scenario, path: Path, count: int) -> None:
    """`count` load_probe payloads, one per line, as the simulator makes them."""
    lines: list[bytes] = []

    def keep(topic: str, payload: bytes) -> None:
        if len(lines) < count:
            lines.append(payload)

    env = simpy.Environment()
    seconds = count / 1000.0 + 1
    spec = spec.model_copy(update={"load": spec.load.model_copy(update={"profile": spec.load.profile.model_copy(update={"target": 1000.0, "duration": seconds})})})  # type: ignore[union-attr]
    build_sharded_world(spec, env, ShardSink(keep, Shard()))
    env.run(until=seconds)
    path.write_bytes(b"\n".join(lines) + b"\n")


def c_client_baseline(broker: stack.Service, payload_file: Path, count: int, qos: int) -> tuple[int, float]:
    """mosquitto_pub -l → mosquitto_sub at `qos`: messages delivered, seconds from first publish to last delivery."""
    topic = f"baseline{qos}"
    subscriber = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", str(qos), "-t", f"{topic}/#", "-i", f"bench-sub-{qos}"],
        stdout=subprocess.PIPE,
    )
    assert subscriber.stdout is not None
    delivered = [0]
    first_line = threading.Event()
    last_seen = [time.perf_counter()]

    def read() -> None:
        assert subscriber.stdout is not None
        for line in subscriber.stdout:
            if line.startswith(b"ping"):
                first_line.set()
                continue
            delivered[0] += 1
            last_seen[0] = time.perf_counter()

    threading.Thread(target=read, daemon=True).start()
    pinger = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-ping-{qos}")
    pinger.connect("127.0.0.1", broker.port)
    pinger.loop_start()
    deadline = time.monotonic() + 10
    while not first_line.is_set() and time.monotonic() < deadline:  # readiness: the subscriber sees our ping
        pinger.publish(f"{topic}/ping", b"ping", qos=1)
        first_line.wait(0.05)
    pinger.disconnect()
    pinger.loop_stop()
    started = time.perf_counter()
    with open(payload_file, "rb") as lines:
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", str(qos), "-t", f"{topic}/data", "-l"], stdin=lines, check=True, timeout=600)
    deadline = time.monotonic() + 120
    while delivered[0] < count and time.monotonic() < deadline and time.perf_counter() - last_seen[0] < 2.0:
        time.sleep(0.01)
    subscriber.terminate()
    subscriber.wait(10)
    return delivered[0], last_seen[0] - started


def baseline_rates(passes: list[tuple[int, float]]) -> list[float]:
    """Messages delivered per second, each pass."""
    return [delivered / seconds for delivered, seconds in passes]


def baseline_note(rates: list[float], passes: list[tuple[int, float]], sent: int) -> str:
    spread = " / ".join(f"{rate:,.0f}" for rate in rates)
    return f"median of {len(rates)} passes ({spread}); {sum(d for d, _ in passes):,} of {sent * len(passes):,} delivered"


def capacity(spec: Scenario, out: Path) -> tuple[float | None, list[Any]]:
    experiment = Experiment.of(spec)

    def run(attempt: Experiment, folder: Path) -> tuple[dict[str, Any], list[Any]]:
        summary, rows, verdicts = run_live(attempt, folder)
        write_results(folder, summary, rows)
        return summary, verdicts

    return find_capacity(experiment, out, run, lambda line: console.print(f"  qos {experiment.qos} {line}", markup=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probes", type=int, default=500, help="load_probe gateways (default 500)")
    parser.add_argument("--batch", type=int, default=1, help="readings per message (default 1)")
    parser.add_argument("--workers", type=int, default=1, help="simulator processes (default 1: on 2 cores one leaves the bridge more CPU, and held 21,832 msg/s at QoS 1 where two held 19,934)")
    parser.add_argument("--start", type=float, default=2000.0, help="first trial's messages/s (default 2000)")
    parser.add_argument("--factor", type=float, default=1.5, help="each trial's rate over the last (default 1.5)")
    parser.add_argument("--trial", type=float, default=10.0, help="seconds per trial (default 10)")
    parser.add_argument("--refine", type=int, default=3, help="bisection trials after the first break (default 3)")
    parser.add_argument("--max-trials", type=int, default=14, help="at most this many trials per QoS (default 14)")
    parser.add_argument("--baseline-messages", type=int, default=60_000, help="messages for the C-client baseline (default 60000; mosquitto_pub 2.0.11 -l loses QoS 1 messages past 65,535 in one session)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the trials' results directories here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="iotsim-capacity-") as tmp:
        work = Path(tmp)
        out = args.keep or work / "results"
        broker = stack.start_mosquitto(work / "broker", stack.free_port())
        influx = stack.start_influxdb(work / "influx", stack.free_port(), database="bench")
        try:
            spec1 = scenario(args, broker, influx, 1, "cap1")
            spec0 = scenario(args, broker, influx, 0, "cap0")
            generated, cpu_s = generation_per_core(spec1, 20.0)
            payload_file = work / "payloads.txt"
            payloads(spec1, payload_file, args.baseline_messages)
            base1 = [c_client_baseline(broker, payload_file, args.baseline_messages, 1) for _ in range(BASELINE_PASSES)]
            base0 = [c_client_baseline(broker, payload_file, args.baseline_messages, 0) for _ in range(BASELINE_PASSES)]
            console.print("capacity search, QoS 1:")
            cap1, trials1 = capacity(spec1, out / "qos1")
            console.print("capacity search, QoS 0:")
            cap0, trials0 = capacity(spec0, out / "qos0")
        finally:
            broker.stop()
            influx.stop()

    rates1, rates0 = baseline_rates(base1), baseline_rates(base0)
    rate1, rate0 = statistics.median(rates1), statistics.median(rates0)
    table = Table(title=f"capacity: {args.probes} load_probe gateways, {args.batch} reading(s)/message, {args.workers} worker(s), {args.trial:g} s trials")
    for column in ("what", "messages/s", "x C-client QoS 1", "note"):
        table.add_column(column, justify="left" if column in ("what", "note") else "right")
    table.add_row("baseline: mosquitto_pub -l → mosquitto_sub, QoS 1", f"{rate1:,.0f}", "1.00", baseline_note(rates1, base1, args.baseline_messages))
    table.add_row("baseline: mosquitto_pub -l → mosquitto_sub, QoS 0", f"{rate0:,.0f}", f"{rate0 / rate1:.2f}", baseline_note(rates0, base0, args.baseline_messages))
    for qos, best, trials in ((1, cap1, trials1), (0, cap0, trials0)):
        broke = next((t for t in trials if not t.passed), None)
        note = f"{len(trials)} trials; first break at {broke.rate:,.0f}: {'; '.join(broke.failed)}" if broke else f"{len(trials)} trials; none broke"
        table.add_row(f"end to end, QoS {qos}, zero loss, sustained", "-" if best is None else f"{best:,.0f}", "-" if best is None else f"{best / rate1:.2f}", note)
    table.add_row("simulator generation, per core (no broker)", f"{generated / cpu_s:,.0f}", f"{generated / cpu_s / rate1:.2f}", f"{generated:,} messages in {cpu_s:.2f} CPU s")
    console.print(table)
    if cap1 is not None:
        verdict = "met" if cap1 >= TARGET_RATIO * rate1 else "NOT met"
        console.print(f"target: QoS 1 end-to-end zero-loss capacity >= {TARGET_RATIO:.0%} of the C-client QoS 1 pass-through: {verdict} ({cap1 / rate1:.0%})")


if __name__ == "__main__":
    main()
