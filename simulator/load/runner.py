"""One load experiment, end to end, and the capacity search built from experiments.

The runner starts the instrumented bridge (simulator/load/bridge.py) and `workers` simulator
processes (simulator/load/worker.py), each owning a deterministic shard of the devices; once all are
connected it gives them a common start, a little in the future. The children write their counters
and interval histograms to InfluxDB as the shards of `iotsim load --shard` do (simulator/load/records.py);
the pipes carry only control: orders, ready, start, stop (the bridge's stdin closed) and a child's
fatal error. Every second the runner reads the records that arrived (the live row), samples the
bridge's, the broker's, the database's and the whole machine's CPU and memory, and writes a `loadtest`
point. After the last stage it waits (at most `load.drain`) for the pipeline to catch up, stops the
bridge, and makes its results from the run's records with the merge of `iotsim load report`
(simulator/load/report.py), its own samples added.
"""

from __future__ import annotations

import ipaddress
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
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import TypeAdapter

from simulator.errors import DatabaseError
from simulator.influx import InfluxClient, InfluxCredentials, InfluxRefused
from simulator.load.figures import LoadError, none_if_nan, offered_between
from simulator.load.live import LiveResults
from simulator.load.metrics import MachineSampler, ResourceSampler, Server, find_server
from simulator.load.probe import DEVICE as PROBE
from simulator.load.profile import Constant, Schedule, schedule_of
from simulator.load.protocol import (
    CONTROL_REPORTS,
    DRY_RUN_REPORTS,
    BridgeOrders,
    Failure,
    Message,
    ProtocolError,
    Ready,
    Start,
    WorkerFinal,
    WorkerOrders,
    decode_message,
    encode_message,
)  # fmt: skip
from simulator.load.records import RunWatcher, ShardRecord, run_id_of
from simulator.load.report import BridgeIngest, LocalRun, RowMerger, merge_run
from simulator.load.section import CapacitySearch, LoadSection
from simulator.load.thresholds import Verdict
from simulator.scenario import Scenario
from simulator.shard import Shard
from simulator.stack import StackControl, recorded
from simulator.transport.client_ids import load_bridge_client_id
from simulator.transport.mqtt import BrokerAddress, password_from_environment

READY_TIMEOUT = 30.0
START_MARGIN_S = 0.5
COLLECT_DELAY_S = 0.3  # read interval k this long after it ends, so every process has reported it


@dataclass
class Child:
    """A worker or the bridge: its process, its log, and what it said on its pipe (simulator/load/protocol.py):
    ready, or its fatal error; a dry-run worker also its final figures (a dry run has no InfluxDB)."""

    name: str
    process: subprocess.Popen[str]
    log: Path
    reports: TypeAdapter[Any]  # the messages it may send
    final: WorkerFinal | None = None
    error: str | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def start(cls, name: str, module: str, orders: Message, log: Path, reports: TypeAdapter[Any]) -> Child:
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

    def _take(self, message: Ready | Failure | WorkerFinal) -> None:
        match message:
            case Failure():
                self.error = f"{self.name}: {message.message}"
            case Ready():
                self.ready.set()
            case WorkerFinal():
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

    def stopped_early(self) -> bool:
        """It ended badly: its Failure, a line it should not have sent, or an exit other than 0 (a crash, killed)."""
        return self.error is not None or (self.done.is_set() and self.process.poll() not in (None, 0))

    def finished(self) -> bool:
        """It exited 0: a live child has written its final record to InfluxDB (else it fails, exit 1)."""
        return self.done.is_set() and self.process.poll() == 0 and self.error is None

    def stopped_error(self) -> LoadError:
        return LoadError(self.error or f"the {self.name} stopped (exit {self.process.poll()}) before the end of the run; see {self.log}")

    def wait_ready(self, timeout: float) -> None:
        if not self.ready.wait(timeout) or self.error or self.done.is_set():
            self.kill()
            raise LoadError(self.error or f"the {self.name} did not start in {timeout:.0f} s; see {self.log}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


Worker = Child
BridgeChild = Child


def start_worker(index: int, orders: WorkerOrders, out: Path) -> Worker:
    reports = DRY_RUN_REPORTS if orders.dry_run else CONTROL_REPORTS
    return Worker.start(f"worker {index}", "simulator.load.worker", orders, out / f"worker-{index}.log", reports)


def start_bridge(orders: BridgeOrders, out: Path) -> BridgeChild:
    return BridgeChild.start("bridge", "simulator.load.bridge", orders, out / "bridge.log", CONTROL_REPORTS)


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
        probe_fleets = [fleet for fleet in scenario.fleets if fleet.type == PROBE.name]
        if len(probe_fleets) != 1:
            raise LoadError(f"a load experiment needs exactly one load_probe fleet; {scenario.name!r} has {len(probe_fleets)}")
        load = scenario.load
        schedule = schedule_of(load.profile)
        probes = probe_fleets[0].count
        if load.unit != "rate" and schedule.peak > probes:
            what = "active" if load.unit == "devices" else "connected"
            raise LoadError(f"load.profile asks for {schedule.peak:g} {what} devices but the load_probe fleet has {probes}")
        return cls(scenario, load, schedule, probes, qos if qos is not None else (load.qos if load.qos is not None else scenario.mqtt.qos), workers or load.workers)

    def offered_between(self, begin: float, end: float) -> float:
        """Messages the profile offers in [begin, end) seconds."""
        return offered_between(self.load, self.schedule, self.probes, begin, end)

    def record_inputs(self, shard: Shard) -> dict[str, Any]:
        """What `iotsim load report` needs to know of the experiment: a shard's start record (simulator/load/records.py)."""
        probe = next(fleet for fleet in self.scenario.fleets if fleet.type == PROBE.name)
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


def run_live(experiment: Experiment, out: Path, progress: Progress | None = None, raw_latencies: bool = False, run_id: str | None = None,
             state_dir: Path | None = None) -> tuple[dict[str, Any], list[dict[str, Any]], list[Verdict]]:  # fmt: skip
    """Run the experiment against the broker and InfluxDB; return (summary, timeseries rows, verdicts).
    The run id (the `loadtest` points' tag) is the results directory's name unless given; the
    children's records go under it too (made a valid run id, simulator/load/records.py). A
    `broker_outage` stops and starts the broker when it is the local stack's under `state_dir`."""
    scenario, load = experiment.scenario, experiment.load
    preflight(scenario)
    controlled = broker_control(scenario, state_dir, lambda line: print(line, file=sys.stderr))
    servers = local_servers(scenario)
    out.mkdir(parents=True, exist_ok=True)
    run_id = run_id or out.name
    record_id = run_id_of(run_id)
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
    live = LiveResults(influx_client(scenario), run_id, scenario.name, warn=lambda line: print(line, file=sys.stderr))
    bridge = start_bridge(bridge_orders, out)
    workers: list[Worker] = []
    collected = False
    client = influx_client(scenario)
    try:
        bridge.wait_ready(READY_TIMEOUT)
        timed = experiment.run_scenario()
        for index in range(experiment.workers):
            orders = WorkerOrders(scenario=timed, shard=Shard(index, experiment.workers), qos=experiment.qos, interval=1.0, run_id=record_id, state_dir=controlled)
            workers.append(start_worker(index, orders, out))
        for worker in workers:
            worker.wait_ready(READY_TIMEOUT)
        start_ms = int((time.time() + START_MARGIN_S) * 1000)
        for child in (bridge, *workers):
            child.send(Start(start_ms=start_ms))
        local = LocalRun(servers)
        sampling = Sampling(start_ms, bridge, servers, local.samples)
        collect(experiment, bridge, workers, RunWatcher(client, record_id, start_ms), sampling, RowMerger(load, experiment.schedule, experiment.probes, start_ms, local), live, progress)
        collected = True
    finally:
        bridge.close()  # it writes what is pending, records its final figures and stops
        for child in (bridge, *workers):
            if collected or child is bridge:  # a run cut short does not wait for the workers' last stages
                child.done.wait(60)
            child.kill()
        if controlled is not None:
            restore_broker(Path(controlled), scenario)
    try:
        for child in (bridge, *workers):
            if not child.finished():
                raise child.stopped_error()
        sampling.until(math.floor(time.time() - start_ms / 1000) + 1)  # the bridge's last second too (its final counters)
        merged = merge_run(client, record_id, since_ms=start_ms, local=local)
    except DatabaseError as error:  # InfluxDB went away after the run
        raise LoadError(f"cannot read the run's records: {error}") from None
    finally:
        client.close()
    if merged.missing:
        raise LoadError(f"run {record_id}: records missing in InfluxDB for {', '.join(merged.missing)}; see the workers' logs in {out}")
    summary = {**merged.summary, "run": run_id}
    live.write_rows(merged.rows, start_ms)  # the live points, replaced by the merged rows: they agree with timeseries.csv
    live.write_summary(summary["figures"], summary["passed"])
    return summary, merged.rows, merged.verdicts


def broker_control(scenario: Scenario, state_dir: Path | None, say: Callable[[str], None]) -> str | None:
    """The state dir of the local stack (`iotsim stack up`) whose Mosquitto is the scenario's broker,
    when the scenario has a `broker_outage`: the worker that owns the fault injector then stops and
    starts it as `iotsim run` does (simulator/faults.py, through StackControl). Otherwise None: the
    outage is only announced, and this says why."""
    if not any(fault.kind == "broker_outage" for fault in scenario.faults):
        return None
    broker = BrokerAddress.from_url(scenario.mqtt.url)
    record = recorded(state_dir, "mosquitto") if state_dir is not None else None
    if record is None or not record.running or record.port != broker.port or not is_loopback(broker.host):
        say(f"note: the broker_outage is only announced: the broker at {broker} is not the local stack's under {state_dir} (iotsim stack up, --state-dir DIR)")
        return None
    assert state_dir is not None
    return str(state_dir.resolve())


def restore_broker(state_dir: Path, scenario: Scenario) -> None:
    """The local stack's broker (the scenario's), running when the experiment began, started again if the
    experiment ended (Ctrl-C, a failure: its workers killed) while a worker had it stopped for the
    broker_outage; said on stderr."""
    record = recorded(state_dir, "mosquitto")
    if record is None or not record.running:
        print(StackControl(state_dir).start_again("mosquitto", BrokerAddress.from_url(scenario.mqtt.url).port), file=sys.stderr)


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


class Sampling:
    """Once per second of the run (k from 1, read COLLECT_DELAY_S after it ends): CPU and memory of the
    bridge, the broker and the database, and the machine's CPU, into `samples` (the workers sample
    themselves, in their records)."""

    def __init__(self, start_ms: int, bridge: BridgeChild, servers: dict[str, Server], samples: dict[int, dict[str, float | None]]) -> None:
        self.start_s = start_ms / 1000
        self.samplers = {
            "bridge": ResourceSampler([bridge.process.pid]),
            "broker": ResourceSampler(servers["broker"].pids()),
            "database": ResourceSampler(servers["database"].pids()),
        }
        self.machine = MachineSampler()
        self.samples = samples
        self.k = 0

    def next(self) -> int:
        """Wait for the next second to end, sample it; its k."""
        self.k += 1
        time.sleep(max(self.start_s + self.k + COLLECT_DELAY_S - time.time(), 0.0))
        sample: dict[str, float | None] = {}
        for name, sampler in self.samplers.items():  # a server not found on this machine has no process: None, not 0
            usage = sampler.sample()
            sample[f"{name}_cpu_percent"] = none_if_nan(usage.cpu_percent)
            sample[f"{name}_rss_mb"] = none_if_nan(round(usage.rss_mb, 1))
        sample["machine_cpu_percent"] = self.machine.sample()
        self.samples[self.k] = sample
        return self.k

    def until(self, k: int) -> None:
        while self.k < k:
            self.next()


def collect(experiment: Experiment, bridge: BridgeChild, workers: list[Worker], watcher: RunWatcher, sampling: Sampling, rows: RowMerger,
            live: LiveResults, progress: Progress | None) -> None:  # fmt: skip
    """A live row per second from the records read so far, until the pipeline has caught up (or `drain` has passed)."""
    duration = experiment.schedule.duration
    drain_until = duration + experiment.load.drain + 120.0  # workers have 120 s to be acknowledged, then drain
    caught_up_since = None
    records: dict[str, ShardRecord] = {}
    while True:
        k = sampling.next()
        try:
            records = watcher.poll(int(time.time() * 1000))
        except DatabaseError:
            pass  # a live row only: the results are read again at the end, and a bridge that cannot write fails by itself
        row = rows.row(k, records, BridgeIngest(watcher.bridge))
        live.write_row(row, int(rows.t0 + k * 1000))
        if progress is not None:
            progress(k, row)
        for child in (bridge, *workers):
            if child.stopped_early():  # its Failure (e.g. another client took its client id) ends the experiment
                raise child.stopped_error()
        finals = [record.final for record in records.values() if record.final is not None]
        if not all(worker.finished() for worker in workers) or len(finals) < len(workers):
            if k > drain_until:
                break
            continue
        finished = sum(int(final["published"]) for final in finals)
        if caught_up_since is None:
            caught_up_since = k
        ingest = watcher.bridge.counts_at(k)
        received, acknowledged = int(ingest.get("received", 0)), int(ingest.get("acknowledged", 0))
        if received >= finished and acknowledged >= received:
            break
        if k - caught_up_since >= experiment.load.drain or (experiment.qos == 0 and k - caught_up_since >= 3 and row["received"] == 0 and acknowledged >= received):
            break


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
    """Constant-rate trials, each `factor` x the last, until a threshold breaks (with `descend`, a first
    trial that broke divides by `factor` until one holds); then bisect `refine` times, or until within
    `resolution`. Says the bracket; returns the highest rate that held (None if none did) and every trial."""
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
        if trial(rate):
            best = rate
            if broke is not None:  # descending from a start that broke: the first that holds ends it
                break
            rate = rate * search.factor
        else:
            broke = rate
            if best is not None or not search.descend:
                break
            rate = rate / search.factor
    bisections = 0
    while best is not None and broke is not None and len(trials) < search.max_trials and not_fine_enough(search, bisections, best, broke):
        middle = (best + broke) / 2
        if trial(middle):
            best = middle
        else:
            broke = middle
        bisections += 1
    say(bracket_line(bracket(trials)))
    return best, trials


def not_fine_enough(search: CapacitySearch, bisections: int, best: float, broke: float) -> bool:
    """Bisect again: `refine` times, or, with a `resolution`, until the bracket is within it."""
    if search.resolution is None:
        return bisections < search.refine
    return spread_percent(best, broke) > search.resolution


def spread_percent(held: float, broke: float) -> float:
    """± how many % of its middle the bracket (held, broke) spans: the search's resolution."""
    return 100.0 * (broke - held) / (broke + held)


@dataclass(frozen=True)
class Bracket:
    """Where the capacity lies: the highest rate that held, the lowest above it that broke, ± % between."""

    held: float | None
    broke: float | None
    resolution_percent: float | None


def bracket(trials: list[Trial]) -> Bracket:
    held = max((t.rate for t in trials if t.passed), default=None)
    broke = min((t.rate for t in trials if not t.passed and (held is None or t.rate > held)), default=None)
    resolution = None if held is None or broke is None else spread_percent(held, broke)
    return Bracket(held, broke, resolution)


def bracket_line(found: Bracket) -> str:
    if found.held is None:
        return "capacity: no trial held" if found.broke is None else f"capacity: none held; the lowest trial broke at {found.broke:,.0f} msg/s"
    if found.broke is None:
        return f"capacity {found.held:,.0f} msg/s (held), none broke: resolution unknown (a lower bound)"
    return f"capacity {found.held:,.0f} msg/s (held), next broke at {found.broke:,.0f} msg/s: resolution ±{found.resolution_percent:.1f} %"
