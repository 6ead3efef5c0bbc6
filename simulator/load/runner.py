"""One load experiment, end to end, and the capacity search built from experiments.

The runner starts the instrumented bridge (simulator/load/bridge.py) and `workers` simulator
processes (simulator/load/worker.py), each owning a deterministic shard of the devices; once all are
connected it gives them a common start, a little in the future. Every second it collects their
counters and interval histograms, samples their CPU and memory (and the broker's, the database's and
the whole machine's), and writes a `loadtest` point to InfluxDB. After the last stage it waits (at
most `load.drain`) for the pipeline to catch up, stops the bridge, and judges the thresholds.
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from pydantic import TypeAdapter

from simulator.errors import IotsimError
from simulator.influx import InfluxClient, InfluxCredentials, InfluxRefused
from simulator.load.live import LiveResults
from simulator.load.metrics import MachineSampler, ResourceSampler, Server, decode, find_server, new_histogram, summarize_ms
from simulator.load.profile import Constant, Schedule, schedule_of
from simulator.load.protocol import (
    BRIDGE_REPORTS, WORKER_REPORTS, BridgeCounts, BridgeFinal, BridgeInterval, BridgeOrders, Failure, Message, ProtocolError, Ready, Start,
    WorkerCounts, WorkerFinal, WorkerInterval, WorkerOrders, decode_message, encode_message,
)  # fmt: skip
from simulator.load.records import RUN_ID
from simulator.load.section import LoadSection
from simulator.shard import Shard
from simulator.load.thresholds import FLOWS, Verdict, judge
from simulator.scenario import Scenario
from simulator.transport.mqtt import BrokerAddress, load_bridge_client_id, password_from_environment

READY_TIMEOUT = 30.0
START_MARGIN_S = 0.5
COLLECT_DELAY_S = 0.3  # read interval k this long after it ends, so every process has reported it
SAMPLED = ("simulator", "bridge", "broker", "database")  # whose CPU and memory each second holds
CPU_FIGURES = (*(f"{name}_cpu_percent" for name in SAMPLED), "machine_cpu_percent")
RSS_FIGURES = tuple(f"{name}_rss_mb" for name in SAMPLED)


class LoadError(IotsimError):
    """An experiment that cannot run (wrong scenario, unreachable broker ...); one printable line."""

    exit_code = 2  # `iotsim load`'s contract: 1 is a threshold that failed, 2 an experiment that could not run


IntervalT = TypeVar("IntervalT", WorkerInterval, BridgeInterval)
FinalT = TypeVar("FinalT", WorkerFinal, BridgeFinal)


@dataclass
class Child(Generic[IntervalT, FinalT]):
    """A worker or the bridge: its process, its log, and what it reported (simulator/load/protocol.py)."""

    name: str
    process: subprocess.Popen[str]
    log: Path
    reports: TypeAdapter[Any]  # the messages it may send
    records: dict[int, IntervalT] = field(default_factory=dict)
    final: FinalT | None = None
    error: str | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def start(cls, name: str, module: str, orders: Message, log: Path, reports: TypeAdapter[Any]) -> Child[IntervalT, FinalT]:
        with open(log, "w") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True, env=child_env()
            )
        child = cls(name, process, log, reports)
        threading.Thread(target=child._read, name=f"read-{name}", daemon=True).start()
        child.send(orders)
        return child

    def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            for line in self.process.stdout:
                self._take(decode_message(self.reports, line, self.name))
        except ProtocolError as error:  # it is not doing what it should: stop it, and say why
            self.error = str(error)
            self.process.kill()
        finally:
            self.done.set()
            self.ready.set()  # wakes a waiter if the process died before it was ready

    def _take(self, message: Ready | Failure | IntervalT | FinalT) -> None:
        match message:
            case Failure():
                self.error = f"{self.name}: {message.message}"
            case Ready():
                self.ready.set()
            case WorkerInterval() | BridgeInterval():
                self.records[message.k] = message
            case WorkerFinal() | BridgeFinal():
                self.final = message

    def send(self, message: Message) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(encode_message(message))
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except BrokenPipeError:
                pass

    def latest(self, k: int) -> IntervalT | None:
        """The last record at or before interval k (counters are cumulative)."""
        for index in range(k, 0, -1):
            if index in self.records:
                return self.records[index]
        return None

    def stopped_early(self) -> bool:
        """It ended (its Failure, a crash, a line it should not have sent) without its final figures."""
        return self.done.is_set() and self.final is None

    def stopped_error(self) -> LoadError:
        return LoadError(self.error or f"the {self.name} stopped without its final figures; see {self.log}")

    def wait_ready(self, timeout: float) -> None:
        if not self.ready.wait(timeout) or self.error or self.done.is_set():
            self.kill()
            raise LoadError(self.error or f"the {self.name} did not start in {timeout:.0f} s; see {self.log}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


Worker = Child[WorkerInterval, WorkerFinal]
BridgeChild = Child[BridgeInterval, BridgeFinal]
NO_WORKER_COUNTS = WorkerCounts(generated=0, published=0, acknowledged=0)
NO_BRIDGE_COUNTS = BridgeCounts(received=0, written=0, acknowledged=0, dead_letters=0, distinct=0, duplicates=0, stale=0)


def start_worker(index: int, orders: WorkerOrders, out: Path) -> Worker:
    return Worker.start(f"worker {index}", "simulator.load.worker", orders, out / f"worker-{index}.log", WORKER_REPORTS)


def start_bridge(orders: BridgeOrders, out: Path) -> BridgeChild:
    return BridgeChild.start("bridge", "simulator.load.bridge", orders, out / "bridge.log", BRIDGE_REPORTS)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@dataclass
class Experiment:
    """A validated load experiment: the scenario it runs and the figures it needs up front."""

    scenario: Scenario
    load: LoadSection
    schedule: Schedule
    probes: int
    qos: int
    workers: int

    @classmethod
    def of(cls, scenario: Scenario, workers: int | None = None, qos: int | None = None) -> Experiment:
        if scenario.load is None:
            raise LoadError(f"scenario {scenario.name!r} has no load: section; see docs/load.md")
        probe_fleets = [fleet for fleet in scenario.fleets if fleet.type == "load_probe"]
        if len(probe_fleets) != 1:
            raise LoadError(f"a load experiment needs exactly one load_probe fleet; {scenario.name!r} has {len(probe_fleets)}")
        load = scenario.load
        schedule = schedule_of(load.profile)
        probes = probe_fleets[0].count
        if load.unit == "devices" and schedule.peak > probes:
            raise LoadError(f"load.profile asks for {schedule.peak:g} active devices but the load_probe fleet has {probes}")
        return cls(scenario, load, schedule, probes, qos if qos is not None else (load.qos if load.qos is not None else scenario.mqtt.qos), workers or load.workers)

    def offered_between(self, begin: float, end: float) -> float:
        """Messages the profile offers in [begin, end) seconds."""
        return offered_between(self.load, self.schedule, self.probes, begin, end)

    def record_inputs(self, shard: Shard) -> dict[str, Any]:
        """What `iotsim load report` needs to know of the experiment: a shard's start record (simulator/load/records.py)."""
        probe = next(fleet for fleet in self.scenario.fleets if fleet.type == "load_probe")
        return {
            "scenario": self.scenario.name, "load": self.load.model_dump_json(), "qos": self.qos, "probes": self.probes,
            "batch": probe.batch, "payload_bytes": probe.payload_bytes, "seed": self.scenario.seed, "duration_s": float(self.schedule.duration),
            "count": shard.count, "host": platform.node(), "mqtt": self.scenario.mqtt.url,
            "influx": f"{self.scenario.influx.url} database {self.scenario.influx.database}",
        }  # fmt: skip

    def run_scenario(self, start: datetime | None = None) -> Scenario:
        changes: dict[str, Any] = {"duration": self.schedule.duration, "speed": 1.0}
        if start is not None:
            changes["start"] = start.isoformat()
        return self.scenario.with_overrides(**changes)


def offered_between(load: LoadSection, schedule: Schedule, probes: int, begin: float, end: float) -> float:
    """Messages the profile offers in [begin, end) seconds (also what `iotsim load report` needs)."""
    if load.unit == "rate":
        return schedule.cumulative(end) - schedule.cumulative(begin)
    steps = max(int((end - begin) * 100), 1)
    width = (end - begin) / steps
    active = sum(min(math.ceil(schedule.target(begin + (n + 0.5) * width)), probes) for n in range(steps))
    return active * width * load.device_rate


Progress = Callable[[int, dict[str, Any]], None]
"""Called with (second, that second's timeseries row)."""


def run_dry(experiment: Experiment, out: Path) -> dict[str, Any]:
    """Every worker writes its shard's messages to out/messages-wN.jsonl, as fast as possible."""
    out.mkdir(parents=True, exist_ok=True)
    scenario = experiment.scenario.with_overrides(duration=experiment.schedule.duration)
    children = [
        start_worker(index, WorkerOrders(scenario=scenario, shard=Shard(index, experiment.workers), dry_run=str(out / f"messages-w{index}.jsonl")), out)
        for index in range(experiment.workers)
    ]
    finals: list[WorkerFinal] = []
    for child in children:
        child.done.wait(3600)
        child.process.wait()
        if child.final is None:
            raise child.stopped_error()
        finals.append(child.final)
    summary = {
        "scenario": scenario.name, "dry_run": True, "workers": experiment.workers,
        "generated": sum(final.counts.generated for final in finals),
        "per_worker": [{"generated": final.counts.generated, "devices": final.devices, "wall_s": final.wall_s} for final in finals],
        "offered": round(experiment.schedule.total) if experiment.load.unit == "rate" else round(experiment.offered_between(0, experiment.schedule.duration)),
    }  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def run_live(experiment: Experiment, out: Path, progress: Progress | None = None, raw_latencies: bool = False, run_id: str | None = None) -> tuple[dict[str, Any], list[dict[str, Any]], list[Verdict]]:
    """Run the experiment against the broker and InfluxDB; return (summary, timeseries rows, verdicts).
    The run id (the `loadtest` points' tag) is the results directory's name unless given."""
    scenario, load = experiment.scenario, experiment.load
    preflight(scenario)
    servers = local_servers(scenario)
    out.mkdir(parents=True, exist_ok=True)
    run_id = run_id or out.name
    record_id = run_id if RUN_ID.fullmatch(run_id) else None  # records for `iotsim load report` need an id it can name
    influx, credentials = scenario.influx, InfluxCredentials.from_environment(scenario.influx)
    bridge_orders = BridgeOrders(
        influx_url=influx.url, database=influx.database, user=credentials.user, password=credentials.password, token=credentials.token,
        settings=load.bridge.settings(
            mqtt_url=scenario.mqtt.url, topic_prefix=scenario.mqtt.topic_prefix, client_id=load_bridge_client_id(scenario.mqtt.client_id_prefix),
            dead_letter_path=out / "dead-letters.jsonl", spool_dir=out / "spool",
        ),
        interval=1.0,
        raw_latencies=str(out / "latencies.i64") if raw_latencies else None,
        run_id=record_id,
        **bridge_credentials(scenario),
    )  # fmt: skip
    bridge = start_bridge(bridge_orders, out)
    workers: list[Worker] = []
    collected = False
    try:
        bridge.wait_ready(READY_TIMEOUT)
        timed = experiment.run_scenario()
        for index in range(experiment.workers):
            orders = WorkerOrders(scenario=timed, shard=Shard(index, experiment.workers), qos=experiment.qos, interval=1.0, run_id=record_id)
            workers.append(start_worker(index, orders, out))
        for worker in workers:
            worker.wait_ready(READY_TIMEOUT)
        start_ms = int((time.time() + START_MARGIN_S) * 1000)
        for child in (bridge, *workers):
            child.send(Start(start_ms=start_ms))
        rows = collect(experiment, bridge, workers, servers, start_ms, LiveResults(influx_client(scenario), run_id, scenario.name, warn=lambda line: print(line, file=sys.stderr)), progress)
        collected = True
    finally:
        bridge.close()  # it writes what is pending, acknowledges it and stops
        for child in (bridge, *workers):
            if collected or child is bridge:  # a run cut short does not wait for the workers' last stages
                child.done.wait(60)
            child.kill()
    for child in (bridge, *workers):
        if child.final is None:
            raise child.stopped_error()
    summary = summarize(experiment, bridge, workers, servers, rows, start_ms, run_id)
    verdicts = judge(load.thresholds, summary["figures"])
    summary["thresholds"] = [{"threshold": v.threshold, "passed": v.passed, "measured": none_if_nan(v.actual), "limit": none_if_nan(v.limit)} for v in verdicts]
    summary["passed"] = all(v.passed for v in verdicts)
    LiveResults(influx_client(scenario), run_id, scenario.name, warn=lambda line: None).write_summary(summary["figures"], summary["passed"])
    return summary, rows, verdicts


def bridge_credentials(scenario: Scenario) -> dict[str, str | None]:
    """Who the experiment's bridge is to the broker: load.bridge.username, whose password is in
    BRIDGE_MQTT_PASSWORD (or the file BRIDGE_MQTT_PASSWORD_FILE names); without one, the workers'
    identity, mqtt.username with MQTT_PASSWORD (or MQTT_PASSWORD_FILE). Sent on the bridge's stdin,
    never on a command line."""
    assert scenario.load is not None
    own = scenario.load.bridge.username
    password = password_from_environment("BRIDGE_MQTT_PASSWORD" if own else "MQTT_PASSWORD")  # UsageError if its file cannot be read
    return {"mqtt_username": own or scenario.mqtt.username, "mqtt_password": password, "ca_file": scenario.mqtt.ca_file}


def preflight(scenario: Scenario) -> None:
    """Fail in a second, with what to do, when the broker or InfluxDB is not there."""
    broker = BrokerAddress.from_url(scenario.mqtt.url)
    try:
        socket.create_connection((broker.host, broker.port), timeout=3).close()
    except OSError:
        raise LoadError(f"cannot reach the MQTT broker at {broker}; start one with `iotsim stack up` or pass --mqtt") from None
    client = influx_client(scenario)
    try:
        reachable = client.check_access(timeout=3)  # the database is created here when missing
    except InfluxRefused as error:  # wrong credentials: the bridge would stop at once
        raise LoadError(str(error)) from None
    finally:
        client.close()
    if not reachable:
        raise LoadError(f"cannot reach InfluxDB at {scenario.influx.url}; start it with `iotsim stack up` or pass --influx")


def influx_client(scenario: Scenario) -> InfluxClient:
    """The experiment's InfluxDB: the scenario's `influx:`, credentials from INFLUX_* when set."""
    return InfluxClient(scenario.influx.url, scenario.influx.database, InfluxCredentials.from_environment(scenario.influx))


def local_servers(scenario: Scenario) -> dict[str, Server]:
    """The broker's and the database's processes, when they run on this machine."""
    broker = BrokerAddress.from_url(scenario.mqtt.url)
    influx = urlsplit(scenario.influx.url)
    influx_port = influx.port or (443 if influx.scheme == "https" else 80)  # where requests connects
    return {"broker": find_server(broker.host, broker.port), "database": find_server(influx.hostname or "", influx_port)}


def collect(experiment: Experiment, bridge: BridgeChild, workers: list[Worker], servers: dict[str, Server], start_ms: int, live: LiveResults, progress: Progress | None) -> list[dict[str, Any]]:
    """A timeseries row per second, until the pipeline has caught up (or `drain` has passed)."""
    start_s = start_ms / 1000
    samplers = {
        "simulator": ResourceSampler([worker.process.pid for worker in workers]),
        "bridge": ResourceSampler([bridge.process.pid]),
        "broker": ResourceSampler(servers["broker"].pids()),
        "database": ResourceSampler(servers["database"].pids()),
    }
    machine = MachineSampler()
    duration = experiment.schedule.duration
    drain_until = duration + experiment.load.drain + 120.0  # workers have 120 s to be acknowledged, then drain
    rows: list[dict[str, Any]] = []
    previous: dict[str, float] = {}
    caught_up_since = None
    k = 0
    while True:
        k += 1
        time.sleep(max(start_s + k + COLLECT_DELAY_S - time.time(), 0.0))
        row = make_row(experiment, k, bridge, workers, previous, samplers, machine)
        rows.append(row)
        live.write_row(row, int(start_ms + k * 1000))
        if progress is not None:
            progress(k, row)
        for child in (bridge, *workers):
            if child.stopped_early():  # its Failure (e.g. another client took its client id) ends the experiment
                raise child.stopped_error()
        if not all(worker.done.is_set() for worker in workers):
            if k > drain_until:
                break
            continue
        finished = sum(w.final.counts.published for w in workers if w.final)
        if caught_up_since is None:
            caught_up_since = k
        latest = bridge.latest(k)
        ingest = latest.counts if latest is not None else NO_BRIDGE_COUNTS
        received, acknowledged = ingest.received, ingest.acknowledged
        if received >= finished and acknowledged >= received:
            break
        if k - caught_up_since >= experiment.load.drain or (experiment.qos == 0 and k - caught_up_since >= 3 and row["received"] == 0 and acknowledged >= received):
            break
    return rows


def worker_counts(worker: Worker, k: int) -> WorkerCounts:
    """A worker's counters at interval k: its final ones once it has no record of k."""
    if worker.final is not None and k not in worker.records:
        return worker.final.counts
    latest = worker.latest(k)
    return latest.counts if latest is not None else NO_WORKER_COUNTS


def make_row(experiment: Experiment, k: int, bridge: BridgeChild, workers: list[Worker], previous: dict[str, float], samplers: dict[str, ResourceSampler], machine: MachineSampler) -> dict[str, Any]:
    totals = {name: 0.0 for name in ("generated", "published", "acknowledged")}
    publish_hist = new_histogram()
    for worker in workers:
        counts = worker_counts(worker, k)
        totals["generated"] += counts.generated
        totals["published"] += counts.published
        totals["acknowledged"] += counts.acknowledged
        if k in worker.records and worker.records[k].publish_hist:
            publish_hist.add(decode(worker.records[k].publish_hist))
    latest = bridge.latest(k)
    ingest = latest.counts if latest is not None else NO_BRIDGE_COUNTS
    totals.update(received=ingest.received, written=ingest.written, distinct=ingest.distinct, duplicates=ingest.duplicates)
    latency = decode(bridge.records[k].latency_hist) if k in bridge.records else new_histogram()
    row: dict[str, Any] = {"second": k, "offered": round(experiment.offered_between(k - 1, k), 3)}
    for name, value in totals.items():
        row[name] = value - previous.get(name, 0)
        previous[name] = value
    row["backlog"] = totals["published"] - totals["distinct"]
    for name, value in summarize_ms(latency).items():
        row[f"latency_{name}_ms"] = none_if_nan(value)
    for name, value in summarize_ms(publish_hist).items():
        row[f"publish_{name}_ms"] = none_if_nan(value)
    for name in SAMPLED:  # a server not found on this machine has no process: None, not 0
        usage = samplers[name].sample()
        row[f"{name}_cpu_percent"] = none_if_nan(usage.cpu_percent)
        row[f"{name}_rss_mb"] = none_if_nan(round(usage.rss_mb, 1))
    row["machine_cpu_percent"] = machine.sample()
    return row


def summarize(experiment: Experiment, bridge: BridgeChild, workers: list[Worker], servers: dict[str, Server], rows: list[dict[str, Any]], start_ms: int, run_id: str) -> dict[str, Any]:
    """The results of a run every child finished (each has its final figures)."""
    finals = [worker.final for worker in workers if worker.final is not None]
    assert bridge.final is not None and len(finals) == len(workers)
    ingest = bridge.final
    latency, publish = new_histogram(), new_histogram()
    for latency_hist in [*(record.latency_hist for record in bridge.records.values()), ingest.latency_hist]:
        if latency_hist:
            latency.add(decode(latency_hist))
    for worker, final in zip(workers, finals):
        for publish_hist in [*(record.publish_hist for record in worker.records.values()), final.publish_hist]:
            if publish_hist:
                publish.add(decode(publish_hist))
    duration = experiment.schedule.duration
    counts = {
        "offered": round(experiment.offered_between(0, duration)),
        "generated": sum(final.counts.generated for final in finals),
        "published": sum(final.counts.published for final in finals),
        "acknowledged": sum(final.counts.acknowledged for final in finals),
        "received": ingest.counts.received,
        "written": ingest.counts.written,
    }
    # Rates: what each stage reached by the end of the last stage (plus one second for the last
    # batch), over the load's duration; what only arrived while draining does not count as sustained.
    within = [row for row in rows if row["second"] <= math.ceil(duration) + 1]
    figures: dict[str, float] = {name: float(value) for name, value in counts.items()}
    figures["offered_rate"] = experiment.offered_between(0, duration) / duration
    for name in FLOWS[1:]:
        figures[f"{name}_rate"] = sum(row[name] for row in within) / duration
    batch = next(fleet.batch for fleet in experiment.scenario.fleets if fleet.type == "load_probe")
    figures["written_readings_rate"] = figures["written_rate"] * batch
    figures["loss"] = float(max(counts["generated"] - ingest.counts.distinct, 0))
    figures["loss_ratio"] = figures["loss"] / counts["generated"] if counts["generated"] else math.nan
    figures["duplicates"] = float(ingest.counts.duplicates)
    figures["gaps"] = float(ingest.gaps)
    figures["dead_letters"] = float(ingest.counts.dead_letters)
    for name, value in summarize_ms(latency).items():
        figures[f"{name}_latency_ms"] = value
    for name, value in summarize_ms(publish).items():
        figures[f"publish_{name}_ms"] = value
    for name in CPU_FIGURES:  # mean while loaded (the first second warms up)
        values = [row[name] for row in within[1:] if row[name] is not None] or [math.nan]
        figures[name] = sum(values) / len(values)
    for name in RSS_FIGURES:
        figures[name] = max((row[name] for row in rows if row[name] is not None), default=math.nan)
    scenario = experiment.scenario
    return {
        "run": run_id,
        "scenario": scenario.name,
        "started": datetime.fromtimestamp(start_ms / 1000, tz=timezone.utc).isoformat(),
        "inputs": {
            "load": experiment.load.model_dump(mode="json"),
            "qos": experiment.qos,
            "workers": experiment.workers,
            "probes": experiment.probes,
            "batch": batch,
            "payload_bytes": next(fleet.payload_bytes for fleet in scenario.fleets if fleet.type == "load_probe"),
            "seed": scenario.seed,
            "mqtt": scenario.mqtt.url,
            "influx": f"{scenario.influx.url} database {scenario.influx.database}",
            "duration_s": duration,
        },
        "environment": environment(),
        "servers": {name: asdict(server) for name, server in servers.items()},
        "figures": {name: none_if_nan(value) for name, value in figures.items()},
        "latency_histogram": latency.encode().decode() if latency.get_total_count() else "",
        "publish_histogram": publish.encode().decode() if publish.get_total_count() else "",
        "drained": all(final.drained for final in finals),
        "stale": ingest.counts.stale,
    }


def environment() -> dict[str, Any]:
    import psutil

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "host": platform.node(),
    }


def none_if_nan(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value


@dataclass
class Trial:
    rate: float
    passed: bool
    out: Path
    failed: list[str]


def settle(longest: float, cpu_percent: float) -> float:
    """Wait until the whole machine's CPU over one second is below `cpu_percent` (% of one core), at
    most `longest` seconds; returns the seconds waited."""
    started = time.monotonic()
    machine = MachineSampler()
    while (waited := time.monotonic() - started) < longest:
        time.sleep(min(1.0, longest - waited))
        if machine.sample() < cpu_percent:
            break
    return time.monotonic() - started


def find_capacity(experiment: Experiment, out: Path, run: Callable[[Experiment, Path], tuple[dict[str, Any], list[Verdict]]], say: Callable[[str], None]) -> tuple[float | None, list[Trial]]:
    """Constant-rate trials, each `factor` x the last, until a threshold breaks; then bisect `refine` times.
    Returns the highest rate that held (None if even the first broke) and every trial."""
    search = experiment.load.capacity
    if not experiment.load.thresholds:
        raise LoadError("--find-capacity needs load.thresholds: they decide which rates hold")
    trials: list[Trial] = []

    def trial(rate: float) -> bool:
        if trials:
            waited = settle(search.settle, search.settle_cpu_percent)
            if waited >= 2:
                say(f"  waited {waited:.0f} s for the machine to go quiet")
        load = experiment.load.model_copy(update={"unit": "rate", "profile": Constant(kind="constant", target=rate, duration=search.trial)})
        scenario = experiment.scenario.model_copy(update={"load": load})
        attempt = Experiment(scenario, load, schedule_of(load.profile), experiment.probes, experiment.qos, experiment.workers)
        folder = out / f"trial-{len(trials) + 1:02d}-{rate:.0f}"
        summary, verdicts = run(attempt, folder)
        failed = [v.threshold for v in verdicts if not v.passed]
        trials.append(Trial(rate, not failed, folder, failed))
        say(f"trial {len(trials)}: {rate:,.0f} msg/s " + ("held" if not failed else "broke: " + "; ".join(failed)))
        return not failed

    best, broke, rate = None, None, search.start
    while len(trials) < search.max_trials and rate <= search.max_rate:
        if not trial(rate):
            broke = rate
            break
        best = rate
        rate = rate * search.factor
    for _ in range(search.refine):
        if best is None or broke is None or len(trials) >= search.max_trials:
            break
        middle = (best + broke) / 2
        if trial(middle):
            best = middle
        else:
            broke = middle
    return best, trials
