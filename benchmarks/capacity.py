"""Pipeline capacity: the highest rate sustained with zero loss, end to end, at QoS 0 and QoS 1.

Each figure stands beside two baselines measured in the same run on the same broker. C clients:
Mosquitto's own clients passing the same load_probe payloads through (`mosquitto_pub -l` into
`mosquitto_sub`) at QoS 1 with an in-flight window as large as our publisher's (`-M N`), at QoS 1
with mosquitto_pub's default window of 20 (labelled, beside it) and at QoS 0, five times each: one
pass takes about a second and varies by about a quarter from pass to pass on a shared machine, so
the median is the baseline and the spread is printed beside it. Floor (benchmarks/floor.py): the
rate if the simulator and the bridge cost nothing, cores / (Mosquitto's CPU per message over the
QoS 1 passes at our window + InfluxDB's CPU per point for the same messages' line protocol POSTed
directly in 5,000-point gzip batches). Capacity comes from `iotsim load --find-capacity` trials
(constant rate). The search starts at the target, 0.6 x the C clients'
median (QoS 0 starts at the QoS 1 capacity), climbs by `--factor` while trials hold or descends by it
while they break, then bisects until the last rate that held and the next that broke are within
`--resolution` % (± of their middle) or `--max-trials` is spent; it prints "capacity X (held), next
broke at Y: resolution ±Z %". The defaults gave ±3.4 % in 4-5 trials a QoS, 6.8 minutes a run on
the shared 2-core machine (load average 4-5; most of it the settle before each trial). Trials are
judged by:

    loss == 0                                  every generated message is in InfluxDB
    written_rate >= 0.99 * offered_rate        written while offered, not only after draining
    p99_latency_ms < 1000                      device timestamp → written, a stable pipeline

Also: the simulator's generation rate per core (SimPy world → load_probe messages encoded as JSON,
no broker), from CPU time, and each process's CPU per message at the QoS 1 capacity. Target on the
2-core machine (issue 17): QoS 1 capacity >= 0.6 x the C clients' QoS 1 pass-through at our window.
`--json FILE` writes every figure (e2e_msgs_per_s = the QoS 1 capacity, floor_msgs_per_s,
e2e_over_floor, c_clients_msgs_per_s, cpu_us_per_msg per process, ...). SIGTERM, Ctrl-C or an error
stops the Mosquitto, InfluxDB and mosquitto_sub it started (an interrupt: one line, exit 130).

    .venv/bin/python benchmarks/capacity.py [--probes 500] [--trial 10] [--start RATE] [--resolution 4] [--workers 1] [--batch 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import common  # benchmarks/common.py, beside this script: the way out on signals
import floor  # benchmarks/floor.py, beside this script
import paho.mqtt.client as mqtt
import simpy
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.table import Table

from simulator import stack
from simulator.load.results import write_results
from simulator.load.runner import Bracket, Experiment, Trial, bracket, find_capacity, run_live
from simulator.load.worker import build_sharded_world
from simulator.scenario import Scenario
from simulator.shard import Shard, ShardSink

THRESHOLDS = ["loss == 0", "written_rate >= 0.99 * offered_rate", "p99_latency_ms < 1000"]
TARGET_RATIO = 0.60  # issue 17: of the C clients at their best window (it was 0.40 of the default window's)
BASELINE_PASSES = 5
SAMPLED_KEYS = {"simulator": "simulator", "bridge": "bridge", "broker": "mosquitto", "database": "influxd"}  # runner's names → ours
console = Console(width=160)


def scenario(args: argparse.Namespace, broker: stack.Service, influx: stack.Service, qos: int, prefix: str, start: float) -> Scenario:
    return Scenario.model_validate(
        {
            "name": f"capacity-qos{qos}",
            "seed": 1,
            "duration": 60,
            "mqtt": {"url": broker.url, "topic_prefix": prefix, "client_id_prefix": prefix, "qos": qos},
            "influx": {"url": influx.url, "database": "bench"},
            "fleets": [{"type": "load_probe", "count": args.probes, "batch": args.batch}],
            "load": {
                "profile": {"kind": "constant", "target": start, "duration": args.trial},
                "qos": qos,
                "workers": args.workers,
                "drain": 20,
                "thresholds": THRESHOLDS,
                "capacity": {"start": start, "factor": args.factor, "trial": args.trial, "refine": args.refine, "max_trials": args.max_trials,
                             "resolution": args.resolution or None, "descend": True},
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


def payloads(spec: Scenario, path: Path, count: int) -> list[tuple[str, bytes]]:
    """`count` load_probe messages as the simulator makes them: their payloads one per line in
    `path`; returns (topic, payload) of each."""
    lines: list[tuple[str, bytes]] = []

    def keep(topic: str, payload: bytes) -> None:
        if len(lines) < count:
            lines.append((topic, payload))

    env = simpy.Environment()
    seconds = count / 1000.0 + 1
    spec = spec.model_copy(update={"load": spec.load.model_copy(update={"profile": spec.load.profile.model_copy(update={"target": 1000.0, "duration": seconds})})})  # type: ignore[union-attr]
    build_sharded_world(spec, env, ShardSink(keep, Shard()))
    env.run(until=seconds)
    path.write_bytes(b"\n".join(payload for _, payload in lines) + b"\n")
    return lines


def c_client_baseline(broker: stack.Service, payload_file: Path, count: int, qos: int, window: int | None) -> tuple[int, float, float]:
    """mosquitto_pub -l → mosquitto_sub at `qos`, mosquitto_pub's in-flight `window` (None: its
    default): messages delivered, seconds from first publish to last delivery, Mosquitto's CPU seconds."""
    topic = f"baseline{qos}"
    subscriber = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", str(qos), "-t", f"{topic}/#", "-i", f"bench-sub-{qos}-{window or 'default'}"],
        stdout=subprocess.PIPE,
    )
    try:
        return pass_through(broker, payload_file, count, qos, window, topic, subscriber)
    finally:
        common.kill_child_if_running(subscriber)


def pass_through(broker: stack.Service, payload_file: Path, count: int, qos: int, window: int | None, topic: str,
                 subscriber: subprocess.Popen[bytes]) -> tuple[int, float, float]:  # fmt: skip
    """One pass through the started `subscriber`: what c_client_baseline returns."""
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
    broker_cpu = floor.cpu_seconds(broker.pid)
    started = time.perf_counter()
    floor.run_c_pass(floor.mosquitto_pub(broker.port, qos, f"{topic}/data", window), payload_file)
    deadline = time.monotonic() + 120
    while delivered[0] < count and time.monotonic() < deadline and time.perf_counter() - last_seen[0] < 2.0:
        time.sleep(0.01)
    broker_cpu = floor.cpu_seconds(broker.pid) - broker_cpu  # before the subscriber's goodbye
    subscriber.terminate()
    subscriber.wait(10)
    return delivered[0], last_seen[0] - started, broker_cpu


def baseline_rates(passes: list[tuple[int, float, float]]) -> list[float]:
    """Messages delivered per second, each pass."""
    return [delivered / seconds for delivered, seconds, _ in passes]


def baseline_note(rates: list[float], passes: list[tuple[int, float, float]], sent: int) -> str:
    spread = " / ".join(f"{rate:,.0f}" for rate in rates)
    return f"median of {len(rates)} passes ({spread}); {sum(d for d, _, _ in passes):,} of {sent * len(passes):,} delivered"


def cpu_us_per_msg(trials: list[Trial], best: float | None) -> dict[str, float | None]:
    """CPU µs per message of each process in the best passing trial (its mean CPU over its written rate)."""
    trial = next((t for t in trials if t.passed and t.rate == best), None)
    if trial is None:
        return {ours: None for ours in SAMPLED_KEYS.values()}
    figures = json.loads((trial.out / "summary.json").read_text())["figures"]
    written = figures["written_rate"]
    return {ours: None if figures.get(f"{name}_cpu_percent") is None else figures[f"{name}_cpu_percent"] * 1e4 / written for name, ours in SAMPLED_KEYS.items()}


def bracket_note(found: Bracket, trials: list[Trial]) -> str:
    """Where the capacity lies, and which thresholds the next rate broke."""
    if found.broke is None:
        return "none broke: a lower bound"
    why = "; ".join(next(t.failed for t in trials if t.rate == found.broke))
    held = "none held" if found.held is None else f"resolution ±{found.resolution_percent:.1f} %"
    return f"next broke at {found.broke:,.0f} ({why}): {held}"


def bracket_json(found: Bracket) -> dict[str, float | None]:
    return {"next_broke_msgs_per_s": found.broke, "resolution_percent": found.resolution_percent}


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
    parser.add_argument("--start", type=float, default=None, help="first QoS 1 trial's messages/s (default: the target, 0.6 x the C clients' median; QoS 0 starts at the QoS 1 capacity)")
    parser.add_argument("--factor", type=float, default=1.15, help="each trial's rate over the last, up while they hold, down while they break (default 1.15)")
    parser.add_argument("--trial", type=float, default=10.0, help="seconds per trial (default 10)")
    parser.add_argument("--resolution", type=float, default=4.0, help="bisect until held and broke are within ± this %% of their middle (default 4; 0: --refine times)")
    parser.add_argument("--refine", type=int, default=3, help="bisection trials after the first break when --resolution is 0 (default 3)")
    parser.add_argument("--max-trials", type=int, default=7, help="at most this many trials per QoS (default 7)")
    parser.add_argument("--baseline-messages", type=int, default=60_000, help="messages for the C-client baseline (default 60000; mosquitto_pub 2.0.11 -l loses QoS 1 messages past 65,535 in one session)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the trials' results directories here")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write every figure to FILE as JSON")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]  # the machine may be shared: its load beside the figures
    began = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="iotsim-capacity-") as tmp:
        work = Path(tmp)
        out = args.keep or work / "results"
        servers: list[stack.Service] = []  # each added as it starts: the way out (an error, SIGTERM, Ctrl-C) stops exactly these
        try:
            servers.append(broker := stack.start_mosquitto(work / "broker", stack.free_port()))
            servers.append(influx := stack.start_influxdb(work / "influx", stack.free_port(), database="bench"))
            spec1 = scenario(args, broker, influx, 1, "cap1", args.start or 1000.0)
            window = floor.publisher_window(spec1.mqtt)
            generated, cpu_s = generation_per_core(spec1, 20.0)
            payload_file = work / "payloads.txt"
            messages = payloads(spec1, payload_file, args.baseline_messages)
            base1 = [c_client_baseline(broker, payload_file, args.baseline_messages, 1, window) for _ in range(BASELINE_PASSES)]
            base1_default = [c_client_baseline(broker, payload_file, args.baseline_messages, 1, None) for _ in range(BASELINE_PASSES)]
            base0 = [c_client_baseline(broker, payload_file, args.baseline_messages, 0, window) for _ in range(BASELINE_PASSES)]
            bottom = floor.measure_floor(sum(c for _, _, c in base1), sum(d for d, _, _ in base1), influx, iter(messages))
            start1 = args.start or math.ceil(TARGET_RATIO * statistics.median(baseline_rates(base1)) / 10) * 10  # the target, rounded up: a first trial that holds meets it
            spec1 = scenario(args, broker, influx, 1, "cap1", start1)
            console.print(f"capacity search, QoS 1, from {start1:,.0f} msg/s:")
            cap1, trials1 = capacity(spec1, out / "qos1")
            cpu1 = cpu_us_per_msg(trials1, cap1)
            start0 = cap1 or start1
            console.print(f"capacity search, QoS 0, from {start0:,.0f} msg/s:")
            cap0, trials0 = capacity(scenario(args, broker, influx, 0, "cap0", start0), out / "qos0")
        finally:
            for server in servers:
                server.stop()

    rates1, rates1_default, rates0 = baseline_rates(base1), baseline_rates(base1_default), baseline_rates(base0)
    rate1, rate1_default, rate0 = statistics.median(rates1), statistics.median(rates1_default), statistics.median(rates0)
    table = Table(title=f"capacity: {args.probes} load_probe gateways, {args.batch} reading(s)/message, {args.workers} worker(s), {args.trial:g} s trials")
    for column in ("what", "messages/s", "x C clients QoS 1", "x floor", "note"):
        table.add_column(column, justify="left" if column in ("what", "note") else "right")

    def row(what: str, rate: float, note: str) -> None:
        table.add_row(what, f"{rate:,.0f}", f"{rate / rate1:.2f}", f"{rate / bottom.msgs_per_s:.2f}", note)

    row(f"floor: {bottom.cores} cores / (Mosquitto {bottom.broker_us_per_msg:.1f} µs + InfluxDB {bottom.influxd_us_per_point:.1f} µs)", bottom.msgs_per_s,
        f"Mosquitto under the C clients' QoS 1 passes at -M {window}; InfluxDB: {len(messages):,} points in {floor.FLOOR_BATCH:,}-point gzip POSTs")  # fmt: skip
    row(f"baseline: {floor.window_label(window)} → mosquitto_sub, QoS 1", rate1, baseline_note(rates1, base1, args.baseline_messages))
    row(f"baseline: {floor.window_label(None)} → mosquitto_sub, QoS 1", rate1_default, baseline_note(rates1_default, base1_default, args.baseline_messages))
    row("baseline: mosquitto_pub -l → mosquitto_sub, QoS 0", rate0, baseline_note(rates0, base0, args.baseline_messages))
    for qos, best, trials in ((1, cap1, trials1), (0, cap0, trials0)):
        note = f"{len(trials)} trials; {bracket_note(bracket(trials), trials)}"
        if best is None:
            table.add_row(f"end to end, QoS {qos}, zero loss, sustained", "-", "-", "-", note)
        else:
            row(f"end to end, QoS {qos}, zero loss, sustained", best, note)
    row("simulator generation, per core (no broker)", generated / cpu_s, f"{generated:,} messages in {cpu_s:.2f} CPU s")
    load_after, elapsed = os.getloadavg()[0], time.monotonic() - began
    console.print(table)
    console.print(f"load average (1 min) at the start {load_before:.1f}, at the end {load_after:.1f}, on {os.cpu_count()} CPUs; {elapsed / 60:.1f} min in all")
    console.print("CPU µs per message at the QoS 1 capacity: " + ", ".join(f"{name} {'-' if us is None else f'{us:.1f}'}" for name, us in cpu1.items()))
    if cap1 is not None:
        verdict = "met" if cap1 >= TARGET_RATIO * rate1 else "NOT met"
        console.print(f"target: QoS 1 end-to-end zero-loss capacity >= {TARGET_RATIO:.2f} x the C clients' QoS 1 pass-through at -M {window}: {verdict} ({cap1 / rate1:.2f})")
    if args.json:
        figures = {
            "probes": args.probes, "readings_per_message": args.batch, "workers": args.workers, "trial_s": args.trial, "publisher_window": window,
            "e2e_msgs_per_s": cap1, "qos1_capacity_msgs_per_s": cap1, "qos0_capacity_msgs_per_s": cap0,
            "c_clients_msgs_per_s": rate1, "c_clients_window": window, "c_clients_passes_msgs_per_s": rates1,
            "c_clients_default_window_msgs_per_s": rate1_default, "c_clients_default_window": floor.DEFAULT_WINDOW,
            "c_clients_default_window_passes_msgs_per_s": rates1_default,
            "c_clients_qos0_msgs_per_s": rate0, "c_clients_qos0_passes_msgs_per_s": rates0,
            **bottom.as_json(),
            "e2e_over_floor": None if cap1 is None else cap1 / bottom.msgs_per_s,
            "e2e_over_c_clients": None if cap1 is None else cap1 / rate1,
            "qos0_over_floor": None if cap0 is None else cap0 / bottom.msgs_per_s,
            "qos0_over_c_clients": None if cap0 is None else cap0 / rate1,
            "cpu_us_per_msg": cpu1,
            "generation_msgs_per_cpu_s": generated / cpu_s,
            "load_average_start": load_before, "load_average_end": load_after, "elapsed_s": elapsed,
            **{f"qos{qos}_{key}": value for qos, trials in ((1, trials1), (0, trials0)) for key, value in bracket_json(bracket(trials)).items()},
            "trials": {f"qos{qos}": [{"rate": t.rate, "passed": t.passed, "failed": t.failed} for t in trials] for qos, trials in ((1, trials1), (0, trials0))},
        }  # fmt: skip
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(common.run(main))
