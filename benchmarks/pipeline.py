"""Pipeline throughput, each figure beside two baselines measured in the same run.

C clients (median of 3 passes): Mosquitto's own `mosquitto_pub -l` (QoS 1) into `mosquitto_sub`
(QoS 1), with the same payloads the simulator generates, at an in-flight window as large as our
publisher's (`-M N`; the figure at mosquitto_pub's default window of 20 is printed beside it,
labelled): what the broker and the loopback can carry. Floor (benchmarks/floor.py): the rate if the simulator and the bridge cost
nothing, cores / (Mosquitto's CPU per message under the C clients + InfluxDB's CPU per point for the
same messages' line protocol POSTed directly in 5,000-point gzip batches, median of 3 passes).
Measured: dry-run generation (SimPy world → JSON lines file), publishing (simulator → broker at
QoS 1, until every PUBACK), and end to end (simulator → broker → bridge → InfluxDB, until every
point is stored, checked for zero loss by exact counts and per-device seq), with the CPU each of the
four processes spent on it: the CPU cost per message, and the rate all cores could carry at that cost.
The simulator's figure is the simulation thread's CPU (time.thread_time) over the world's run (building
it included, as benchmarks/publisher_cpu.py counts it) and the drain until every PUBACK is in; this
process's whole CPU until the last point was stored, which adds the benchmark's own polling of
InfluxDB for that point, is printed beside it (JSON `simulator_process_cpu_us_per_msg`).
A reading is one value; an air-quality message carries 10 (six pollutants and the AQI's four).
`--json FILE` writes every figure (e2e_msgs_per_s, floor_msgs_per_s, e2e_over_floor,
c_clients_msgs_per_s, cpu_us_per_msg per process, ...). SIGTERM, Ctrl-C or an error stops the Mosquitto,
InfluxDB, bridge and mosquitto_sub it started (an interrupt: one line, exit 130).

    .venv/bin/python benchmarks/pipeline.py [--stations 5000] [--hours 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import common  # benchmarks/common.py, beside this script: the way out on signals
import floor  # benchmarks/floor.py, beside this script
import orjson
import psutil
from rich.console import Console
from rich.table import Table

from simulator import stack
from simulator.engine import run_scenario
from simulator.influx import InfluxClient
from simulator.scenario import Scenario
from simulator.transport.jsonl import JsonlWriter
from simulator.transport.mqtt import MqttPublisher

READINGS_PER_MESSAGE = 10  # pm25 pm10 so2 no2 co o3 aqi aqi_level aqi_category primary_pollutant
IOTSIM = [sys.executable, "-m", "simulator.cli"]
LOW_RATE = 2000  # msg/s of the latency pass: a steady load far below capacity, where only batching makes latency
LOW_RATE_S = 15  # its length; the load's gateways: 200 of 10 readings, as scenarios/load-ramp.yaml
C_PASSES = 3  # each C-client figure is the median of this many passes: one varies by a quarter on a shared machine
PROCESS_KEYS = {"simulator (simulation thread)": "simulator", "bridge": "bridge", "mosquitto": "mosquitto", "influxd": "influxd"}
console = Console(width=160)


def scenario(stations: int, hours: float, mqtt_url: str, prefix: str) -> Scenario:
    return Scenario.model_validate(
        {
            "name": "bench",
            "duration": hours * 3600,
            "mqtt": {"url": mqtt_url, "topic_prefix": prefix, "qos": 1},
            "fleets": [{"type": "air_quality", "count": stations, "cadence": "5m"}],
        }
    )


def dry_run(spec: Scenario, path: Path) -> tuple[int, float]:
    writer = JsonlWriter(path)
    started = time.perf_counter()
    result = run_scenario(spec, writer)
    elapsed = time.perf_counter() - started
    writer.close()
    return result.generated, elapsed


def write_payloads(dataset: Path, payloads: Path) -> int:
    """The dry run's payloads, one per line, for `mosquitto_pub -l`; returns how many."""
    count = 0
    with open(dataset, "rb") as source, open(payloads, "wb") as target:
        for line in source:
            target.write(orjson.dumps(orjson.loads(line)["payload"]) + b"\n")
            count += 1
    return count


def dataset_messages(dataset: Path) -> Iterator[tuple[str, bytes]]:
    """(topic, payload) of every message of the dry run, as the bridge would receive them."""
    with open(dataset, "rb") as source:
        for line in source:
            record = orjson.loads(line)
            yield record["topic"], orjson.dumps(record["payload"])


def c_client_baseline(broker: stack.Service, payloads: Path, count: int, window: int | None) -> tuple[int, float, float]:
    """mosquitto_pub -l → mosquitto_sub, QoS 1, the simulator's own payloads (one per line), with
    mosquitto_pub's in-flight `window` (None: its default). Returns (messages, seconds, Mosquitto's CPU seconds)."""
    session = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t", "baseline/#", "-i", f"bench-sub-{window or 'default'}"]
    # mosquitto_sub says nothing once subscribed, but -E exits then: its persistent session (-c) keeps every message
    # published from now on, for the subscriber that takes it over next.
    subprocess.run([*session, "-c", "-E"], stdout=subprocess.DEVNULL, check=True, timeout=60)
    subscriber = subprocess.Popen([*session, "-c", "-C", str(count)], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.2)  # connected by then, as a rule (if not, the broker holds the first messages for it)
        broker_cpu = floor.cpu_seconds(broker.pid)
        started = time.perf_counter()
        floor.run_c_pass(floor.mosquitto_pub(broker.port, 1, "baseline/air_quality", window), payloads)
        subscriber.wait(timeout=600)
        seconds, broker_seconds = time.perf_counter() - started, floor.cpu_seconds(broker.pid) - broker_cpu
    finally:
        common.kill_child_if_running(subscriber)
    # A clean session under the same id ends the persistent one: the next passes' messages are not queued for it.
    subprocess.run([*session, "-E"], stdout=subprocess.DEVNULL, check=True, timeout=60)
    return count, seconds, broker_seconds


def publish(spec: Scenario) -> tuple[int, float]:
    publisher = MqttPublisher.from_settings(spec.mqtt, "bench-pub", qos=1)
    publisher.start()
    started = time.perf_counter()
    run_scenario(spec, publisher)
    publisher.drain(600)
    elapsed = time.perf_counter() - started
    publisher.stop()
    assert publisher.acknowledged == publisher.published
    return publisher.acknowledged, elapsed


def end_to_end(spec: Scenario, broker: stack.Service, influx: stack.Service, database: str, expected: int, dataset: Path, work: Path
               ) -> tuple[int, float, int, dict[str, float], float]:  # fmt: skip
    """Publish in this process (as `iotsim run` does, without its interpreter start-up) through a
    bridge process into InfluxDB; time from the first message to the last point stored. Returns
    (stored, seconds, devices with seq gaps, CPU seconds per process while it ran, this process's CPU
    seconds): the simulator's are the simulation thread's until every PUBACK was in."""
    prefix = spec.mqtt.topic_prefix
    bridge = subprocess.Popen(
        [*IOTSIM, "bridge", "--mqtt", broker.url, "--influx", influx.url, "--db", database, "--prefix", prefix,
         "--client-id", f"bench-{prefix}", "--exit-when-idle", "3", "--dead-letters", str(work / "dl.jsonl"),
         "--spool-dir", str(work / "spool"), "--ready-file", str(work / "bridge.ready")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        return run_end_to_end(spec, broker, influx, database, expected, dataset, work, bridge)
    finally:
        common.kill_child_if_running(bridge)


def run_end_to_end(spec: Scenario, broker: stack.Service, influx: stack.Service, database: str, expected: int, dataset: Path, work: Path,
                   bridge: subprocess.Popen) -> tuple[int, float, int, dict[str, float], float]:  # fmt: skip
    while not (work / "bridge.ready").exists():
        assert bridge.poll() is None, bridge.communicate()[0]
        time.sleep(0.05)
    publisher = MqttPublisher.from_settings(spec.mqtt, "bench-e2e-publisher", qos=1)
    publisher.start()
    processes = {"simulator (simulation thread)": psutil.Process(), "bridge": psutil.Process(bridge.pid),
                 "mosquitto": psutil.Process(broker.pid), "influxd": psutil.Process(influx.pid)}  # fmt: skip
    cpu_before = {name: cpu_seconds(process) for name, process in processes.items()}
    started, thread_before = time.perf_counter(), time.thread_time()
    run_scenario(spec, publisher)
    publisher.drain(600)
    simulator_s = time.thread_time() - thread_before  # the simulation's own CPU: the world and the publish path
    finished = wait_for_point(influx, database, last_payload(dataset), timeout=600)
    cpu = {name: cpu_seconds(process) - cpu_before[name] for name, process in processes.items()}
    process_s, cpu["simulator (simulation thread)"] = cpu["simulator (simulation thread)"], simulator_s
    # One writer stores the batches in arrival order, so the rest is normally there already; if not, wait for it.
    deadline = time.monotonic() + 600
    while (stored := count_points(influx, database)) < expected and time.monotonic() < deadline:
        time.sleep(0.25)
        finished = time.perf_counter()
    elapsed = finished - started
    publisher.stop()
    log = bridge.communicate(timeout=120)[0]
    if stored < expected:
        console.print(f"[red]the bridge stored {stored:,} of {expected:,}[/]; its log:\n{log}")
    return stored, elapsed, seq_gaps(influx, database), cpu, process_s


def low_rate_latency(broker: stack.Service, influx: stack.Service, work: Path) -> dict[str, float]:
    """End-to-end latency at LOW_RATE msg/s (device timestamp → InfluxDB acknowledged the write), as
    `iotsim load` measures it, with the bridge's default batching; its summary's figures."""
    experiment = {
        "name": "bench-latency", "seed": 1, "duration": LOW_RATE_S,
        "mqtt": {"url": broker.url, "qos": 1, "topic_prefix": "latency"}, "influx": {"url": influx.url, "database": "latency"},
        "fleets": [{"type": "load_probe", "count": 200, "batch": 10}],
        "load": {"unit": "rate", "profile": {"kind": "constant", "target": LOW_RATE, "duration": f"{LOW_RATE_S}s"}, "qos": 1, "workers": 1,
                 "drain": "30s", "thresholds": ["loss == 0"]},
    }  # fmt: skip
    path, out = work / "latency.json", work / "latency-results"
    path.write_bytes(orjson.dumps(experiment))
    run = subprocess.run([*IOTSIM, "load", str(path), "--out", str(out)], capture_output=True, text=True, timeout=300)
    if run.returncode != 0:
        console.print(f"[red]the latency pass failed (exit {run.returncode})[/]:\n{run.stdout}{run.stderr}")
        sys.exit(1)
    return orjson.loads((out / "summary.json").read_bytes())["figures"]


def last_payload(dataset: Path) -> dict:
    """The run's last message (the dry run made the same messages in the same order)."""
    with open(dataset, "rb") as lines:
        *_, last = lines
    return orjson.loads(last)["payload"]


def wait_for_point(influx: stack.Service, database: str, payload: dict, timeout: float) -> float:
    """perf_counter when `payload`'s point was stored. Asks every 10 ms for that point alone (one
    series: cheap); a full count costs InfluxDB ~60 ms of CPU at 60,000 points, so polling one while
    the pipeline runs would take CPU from what is being measured. One client for all the asking: a
    client each time cost this process 0.9 ms of CPU a question, 1.4 µs a message in a second's wait."""
    deadline = time.monotonic() + timeout
    point = f"SELECT count(\"seq\") FROM \"{payload['type']}\" WHERE \"device_id\" = '{payload['device_id']}' AND time = {payload['ts']}ms"
    client = InfluxClient(influx.url, database)
    try:
        while not client.query(point, timeout=120) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        client.close()
    return time.perf_counter()


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def count_points(influx: stack.Service, database: str) -> int:
    series = query(influx, database, 'SELECT count("seq") FROM "air_quality"')
    return series[0]["values"][0][1] if series else 0


def seq_gaps(influx: stack.Service, database: str) -> int:
    """Devices whose stored seq numbers are not exactly 0..n-1."""
    series = query(influx, database, 'SELECT count("seq"), min("seq"), max("seq") FROM "air_quality" GROUP BY "device_id"')
    return sum(1 for s in series if not (s["values"][0][2] == 0 and s["values"][0][3] == s["values"][0][1] - 1))


def query(influx: stack.Service, database: str, q: str) -> list[dict]:
    """The series InfluxDB answers `q` with; DatabaseError when it cannot."""
    client = InfluxClient(influx.url, database)
    try:
        return client.query(q, timeout=120)
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stations", type=int, default=5000, help="air-quality stations (default 5000)")
    parser.add_argument("--hours", type=float, default=1.0, help="simulated hours (default 1)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write every figure to FILE as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="iotsim-bench-") as tmp:
        work = Path(tmp)
        servers: list[stack.Service] = []  # each added as it starts: the way out (an error, SIGTERM, Ctrl-C) stops exactly these
        try:
            servers.append(broker := stack.start_mosquitto(work / "broker", stack.free_port()))
            servers.append(influx := stack.start_influxdb(work / "influx", stack.free_port(), database="bench"))
            spec = scenario(args.stations, args.hours, broker.url, "bench")
            window = floor.publisher_window(spec.mqtt)
            dataset = work / "dry.jsonl"
            generated, dry_s = dry_run(spec, dataset)
            payloads = work / "payloads.txt"
            count = write_payloads(dataset, payloads)
            passes = [c_client_baseline(broker, payloads, count, window) for _ in range(C_PASSES)]
            default_passes = [c_client_baseline(broker, payloads, count, None) for _ in range(C_PASSES)]
            pub_n, pub_s = publish(spec.with_overrides(**{"mqtt.topic_prefix": "benchpub"}))
            e2e_spec = spec.with_overrides(**{"mqtt.topic_prefix": "e2e"})
            stored, e2e_s, gaps, cpu, simulator_process_s = end_to_end(e2e_spec, broker, influx, "bench", generated, dataset, work)
            latency = low_rate_latency(broker, influx, work)
            # After the end-to-end pass, so that these points' compaction cannot land in its figures.
            bottom = floor.measure_floor(sum(c for _, _, c in passes), sum(n for n, _, _ in passes), influx, dataset_messages(dataset))
        finally:
            for server in servers:
                server.stop()

    rates, default_rates = [n / s for n, s, _ in passes], [n / s for n, s, _ in default_passes]
    baseline, default_rate = statistics.median(rates), statistics.median(default_rates)
    table = Table(title=f"pipeline throughput: {args.stations} stations x {args.hours:g} h = {generated:,} messages")
    for column in ("stage", "messages", "seconds", "messages/s", "readings/s", "x C clients", "x floor"):
        table.add_column(column, justify="right" if column != "stage" else "left")

    def row(stage: str, messages: int, seconds: float) -> None:
        rate = messages / seconds
        table.add_row(stage, f"{messages:,}", f"{seconds:.2f}", f"{rate:,.0f}", f"{rate * READINGS_PER_MESSAGE:,.0f}", f"{rate / baseline:.2f}", f"{rate / bottom.msgs_per_s:.2f}")

    def c_row(stage: str, messages: int, rate: float) -> None:  # the median of C_PASSES passes
        table.add_row(stage, f"{messages:,}", f"{messages / rate:.2f}", f"{rate:,.0f}", f"{rate * READINGS_PER_MESSAGE:,.0f}", f"{rate / baseline:.2f}", f"{rate / bottom.msgs_per_s:.2f}")

    table.add_row(f"floor: {bottom.cores} cores / (Mosquitto {bottom.broker_us_per_msg:.1f} µs + InfluxDB {bottom.influxd_us_per_point:.1f} µs)",
                  "", "", f"{bottom.msgs_per_s:,.0f}", f"{bottom.msgs_per_s * READINGS_PER_MESSAGE:,.0f}", f"{bottom.msgs_per_s / baseline:.2f}", "1.00")  # fmt: skip
    c_row(f"baseline: {floor.window_label(window)} → mosquitto_sub, QoS 1", count, baseline)
    c_row(f"baseline: {floor.window_label(None)} → mosquitto_sub, QoS 1", count, default_rate)
    row("dry-run generation (1 core)", generated, dry_s)
    row("publish, QoS 1, all acknowledged", pub_n, pub_s)
    row("end to end into InfluxDB, QoS 1", stored, e2e_s)
    console.print(table)
    console.print(
        f"floor: Mosquitto's CPU per message under the C clients (-M {window}), InfluxDB's per point for the same {count:,} messages' "
        f"line protocol POSTed directly in {floor.FLOOR_BATCH:,}-point gzip batches ({bottom.influxd_points_per_s:,.0f} points/s from one client); "
        f"InfluxDB µs per point, median of {floor.FLOOR_PASSES} passes ({' / '.join(f'{us:.1f}' for us in bottom.influxd_us_per_point_passes)}); "
        f"C clients: median of {C_PASSES} passes each, -M {window}: {' / '.join(f'{r:,.0f}' for r in rates)}, default window: {' / '.join(f'{r:,.0f}' for r in default_rates)}"
    )
    usage = Table(title=f"where the CPU went end to end ({bottom.cores} cores; 100% = one core busy)")
    for column in ("process", "CPU seconds", "% of one core", "CPU µs per message", "floor µs"):
        usage.add_column(column, justify="right" if column != "process" else "left")
    floor_us = {"mosquitto": bottom.broker_us_per_msg, "influxd": bottom.influxd_us_per_point}
    for name, seconds in [*cpu.items(), ("all four", sum(cpu.values()))]:
        usage.add_row(name, f"{seconds:.2f}", f"{100 * seconds / e2e_s:.0f}", f"{1e6 * seconds / stored:.1f}", f"{floor_us[name]:.1f}" if name in floor_us else "")
    console.print(usage)
    console.print(
        f"simulator: the simulation thread's CPU over the world's run and the drain until every PUBACK was in; this whole process "
        f"until the last point was stored (with the benchmark's polling of InfluxDB) {1e6 * simulator_process_s / stored:.1f} µs per message"
    )
    ceiling = bottom.cores * stored / sum(cpu.values())
    console.print(
        f"at that CPU cost per message, {bottom.cores} fully busy cores would carry ~{ceiling:,.0f} messages/s end to end "
        f"= {ceiling / baseline:.2f} x the C clients = {ceiling / bottom.msgs_per_s:.2f} x the floor"
    )
    floor_ratio = 1e6 * cpu["influxd"] / stored / bottom.influxd_us_per_point
    console.print(
        f"batching: under full load InfluxDB spent {1e6 * cpu['influxd'] / stored:.1f} µs per point = {floor_ratio:.2f} x its floor "
        f"({bottom.influxd_us_per_point:.1f}); at a steady {LOW_RATE:,} msg/s (`iotsim load`, {LOW_RATE_S} s) end-to-end latency "
        f"p50 {latency['p50_latency_ms']:.1f} ms, p99 {latency['p99_latency_ms']:.1f} ms, max {latency['max_latency_ms']:.1f} ms"
    )
    loss = generated - stored
    console.print(f"end to end: generated {generated:,}, stored {stored:,}, lost {loss:,}, devices with seq gaps {gaps}")
    if args.json:
        e2e = stored / e2e_s
        figures = {
            "stations": args.stations, "hours": args.hours, "readings_per_message": READINGS_PER_MESSAGE, "publisher_window": window,
            "generated": generated, "stored": stored, "lost": loss, "seq_gap_devices": gaps,
            "e2e_msgs_per_s": e2e, "e2e_seconds": e2e_s,
            "c_clients_msgs_per_s": baseline, "c_clients_window": window, "c_clients_passes_msgs_per_s": rates,
            "c_clients_default_window_msgs_per_s": default_rate, "c_clients_default_window": floor.DEFAULT_WINDOW,
            "c_clients_default_window_passes_msgs_per_s": default_rates,
            "dry_run_msgs_per_s": generated / dry_s, "publish_msgs_per_s": pub_n / pub_s,
            **bottom.as_json(),
            "e2e_over_floor": e2e / bottom.msgs_per_s, "e2e_over_c_clients": e2e / baseline,
            "publish_over_floor": pub_n / pub_s / bottom.msgs_per_s, "publish_over_c_clients": pub_n / pub_s / baseline,
            "cpu_us_per_msg": {PROCESS_KEYS[name]: 1e6 * seconds / stored for name, seconds in cpu.items()},
            "simulator_process_cpu_us_per_msg": 1e6 * simulator_process_s / stored,
            "influxd_over_floor": floor_ratio, "low_rate_msgs_per_s": LOW_RATE, "low_rate_seconds": LOW_RATE_S,
            "low_rate_p50_latency_ms": latency["p50_latency_ms"], "low_rate_p99_latency_ms": latency["p99_latency_ms"],
            "low_rate_max_latency_ms": latency["max_latency_ms"], "low_rate_loss": latency["loss"],
            "cpu_ceiling_msgs_per_s": ceiling, "cpu_ceiling_over_floor": ceiling / bottom.msgs_per_s,
        }  # fmt: skip
        args.json.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2) + b"\n")
    if loss or gaps:
        sys.exit(1)


if __name__ == "__main__":
    sys.exit(common.run(main))
