"""A shard's records in InfluxDB: what `iotsim load --shard` writes and `iotsim load report` reads.

Shards on different hosts never talk to each other; InfluxDB is where they meet. Each writes
measurement `loadshard`, tags `run` (the run id every shard of the experiment shares), `shard`
(INDEX/COUNT) and `phase`:

    start     once, at its start: scenario, load (the load: section as JSON, thresholds included),
              qos, probes, batch, payload_bytes, seed, duration_s, count, host, mqtt, influx
    interval  at start + k s: k, generated, published, acknowledged (cumulative), publish_hist (the
              second's publish latencies: HDR, compressed base64 encoding, mergeable),
              simulator_cpu_percent, simulator_rss_mb; its devices' own connections: connected (now),
              connects, reconnects, connect_failures (cumulative), connect_hist (the second's
              CONNECT→CONNACK latencies, HDR), lost (away after losing the broker), reconnected_ms
              (when none was lost any more, the latest), outage_end_ms (the broker it stopped was back)
    final     once, after its drain: generated, published, acknowledged, publish_hist, devices,
              wall_s, drained, and the same connection figures

A shard started again under the same run id (a retried pod) writes a new start; the reader keeps
each shard's latest start and what followed it.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from simulator.errors import IotsimError, UsageError
from simulator.influx import InfluxClient, WriteDeferred
from simulator.ingest.lineprotocol import escape_key
from simulator.load.metrics import ResourceSampler
from simulator.load.protocol import BridgeFinal, BridgeInterval, ConnectionReport, Message, WorkerFinal, WorkerInterval
from simulator.shard import Shard

MEASUREMENT = "loadshard"
BRIDGE_MEASUREMENT = "loadbridge"
RUN_ID_ENV = "IOTSIM_RUN_ID"
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # a tag value and a directory name, no quoting needed
FLUSH_S = 5.0  # a second's records wait at most this long for InfluxDB; later ones retry them
CLOSE_S = 60.0  # the last records wait this long before the shard gives up (exit 2)


class InvalidRunId(UsageError):
    """A `--run-id`/`IOTSIM_RUN_ID` that cannot be a tag value and a directory name."""


def check_run_id(text: str, source: str = "--run-id") -> str:
    if RUN_ID.fullmatch(text) is None:
        raise InvalidRunId(f"{source}: {text!r} is not a run id: 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return text


def run_id_of(name: str) -> str:
    """A valid run id for `iotsim load`'s own records, from its run's name (the results directory's,
    which may hold any character): the name itself when it is one, else its other characters as '-'."""
    if RUN_ID.fullmatch(name):
        return name
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", name).lstrip("._-")[:100]
    return cleaned or "run"


def run_id_from_env(flag: str | None) -> str | None:
    """The run id every shard of one experiment shares, found without talking to the others: the
    flag, else IOTSIM_RUN_ID (in a Kubernetes Indexed Job, set from the Job's name by the downward
    API: `fieldRef: metadata.labels['job-name']`); else None."""
    if flag is not None:
        return check_run_id(flag)
    env = os.environ.get(RUN_ID_ENV, "").strip()
    return check_run_id(env, RUN_ID_ENV) if env else None


# --- writing ---


def string_field(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def field_set(values: dict[str, Any]) -> str:
    """Line-protocol fields: ints as integers, floats, bools, strings quoted; None and NaN left out."""
    parts = []
    for name, value in values.items():
        if value is None or (isinstance(value, float) and (math.isnan(value) or math.isinf(value))):
            continue
        if isinstance(value, bool):
            parts.append(f"{name}={'true' if value else 'false'}")
        elif isinstance(value, int):
            parts.append(f"{name}={value}i")
        elif isinstance(value, float):
            parts.append(f"{name}={value!r}")
        else:
            parts.append(f"{name}={string_field(str(value))}")
    return ",".join(parts)


class Recorder:
    """Lines of one measurement and tag set, written in order; a failed write is retried with the next."""

    def __init__(self, client: InfluxClient, measurement: str, tags: str) -> None:
        self.client = client
        self.prefix = f"{measurement},{tags}"
        self.pending: list[str] = []
        self.lock = threading.Lock()
        self.failure: IotsimError | None = None

    def add(self, phase: str, fields: dict[str, Any], ts_ms: int) -> None:
        with self.lock:
            self.pending.append(f"{self.prefix},phase={phase} {field_set(fields)} {ts_ms}")

    def flush(self, within_s: float) -> bool:
        """Write what is pending, retrying for at most `within_s`; True when nothing is left."""
        with self.lock:
            lines, self.pending = self.pending, []
            if not lines:
                return True
            deadline = time.monotonic() + within_s
            try:
                refused = self.client.write(lines, give_up=lambda: time.monotonic() > deadline)
            except WriteDeferred:
                self.pending = lines + self.pending
                return False
            except IotsimError as error:  # InfluxDB refused us: nothing can be recorded
                self.failure = error
                return False
            if refused:
                self.failure = IotsimError(f"InfluxDB refused a {self.prefix.split(',')[0]} record: {refused[0][1]}")
            return not refused

    def close(self) -> None:
        """Everything written, or the reason it was not (an IotsimError: the run did not report)."""
        if not self.flush(CLOSE_S) and self.failure is None:
            self.failure = IotsimError(f"cannot write {self.prefix.split(',')[0]} records to InfluxDB at {self.client.url} within {CLOSE_S:.0f} s")
        if self.failure is not None:
            raise self.failure


class ShardRecorder(Recorder):
    """One shard's records; `send` takes the worker's reports (simulator/load/worker.py)."""

    def __init__(self, client: InfluxClient, run_id: str, shard: Shard) -> None:
        super().__init__(client, MEASUREMENT, f"run={escape_key(run_id)},shard={escape_key(shard.spec)}")
        self.sampler = ResourceSampler([os.getpid()])
        self.start_ms = 0

    def start(self, start_ms: int, inputs: dict[str, Any]) -> None:
        self.start_ms = start_ms
        self.sampler.sample()  # CPU from here on, not the start-up's
        self.add("start", inputs, start_ms)  # written with the first second's record: the start is not delayed

    def send(self, message: Message) -> None:
        match message:
            case WorkerInterval():
                usage = self.sampler.sample()
                fields = {"k": message.k, **message.counts.model_dump(), "publish_hist": message.publish_hist, **connection_fields(message),
                          "simulator_cpu_percent": usage.cpu_percent, "simulator_rss_mb": round(usage.rss_mb, 1)}  # fmt: skip
                self.add("interval", fields, self.start_ms + message.k * 1000)
            case WorkerFinal():
                fields = {**message.counts.model_dump(), "publish_hist": message.publish_hist, **connection_fields(message), "devices": message.devices,
                          "wall_s": message.wall_s, "drained": message.drained}  # fmt: skip
                self.add("final", fields, int(time.time() * 1000))
        self.flush(FLUSH_S)


def connection_fields(message: ConnectionReport) -> dict[str, Any]:
    """A report's device-connection figures; an unmeasured time (None) is left out of the point."""
    return message.model_dump(include=set(ConnectionReport.model_fields))


class BridgeRecorder(Recorder):
    """The experiment's own bridge's records (`iotsim load` without --shard): measurement
    `loadbridge`, tags `run`, `phase` (interval, final); its counters and latency histograms."""

    def __init__(self, client: InfluxClient, run_id: str, start_ms: int) -> None:
        super().__init__(client, BRIDGE_MEASUREMENT, f"run={escape_key(run_id)}")
        self.start_ms = start_ms

    def send(self, message: Message) -> None:
        match message:
            case BridgeInterval():
                self.add("interval", {"k": message.k, **message.counts.model_dump(), "latency_hist": message.latency_hist}, self.start_ms + message.k * 1000)
            case BridgeFinal():
                self.add("final", {**message.counts.model_dump(), "latency_hist": message.latency_hist, "gaps": message.gaps}, int(time.time() * 1000))
        self.flush(FLUSH_S)


# --- reading ---


@dataclass
class ShardRecord:
    shard: Shard
    start_ms: int
    start: dict[str, Any]
    intervals: dict[int, dict[str, Any]] = field(default_factory=dict)
    final: dict[str, Any] | None = None

    def counts_at(self, k: int) -> dict[str, Any]:
        return counts_at(self.intervals, self.final, k)


def counts_at(intervals: dict[int, dict[str, Any]], final: dict[str, Any] | None, k: int) -> dict[str, Any]:
    """The cumulative counters at interval k: its record, the final ones after the last, else the latest before k."""
    if k in intervals:
        return intervals[k]
    if final is not None and (not intervals or k > max(intervals)):
        return final
    earlier = [j for j in intervals if j < k]
    return intervals[max(earlier)] if earlier else {}


def rows_of(series: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    columns = series["columns"]
    return [(row[0], {name: value for name, value in zip(columns[1:], row[1:]) if value is not None}) for row in series.get("values", [])]


def read_run(client: InfluxClient, run_id: str, since_ms: int | None = None) -> dict[str, ShardRecord]:
    """Every shard's records of the run (from `since_ms` on, when given), by INDEX/COUNT (empty when none wrote any)."""
    by_phase: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = {}
    since = f" AND time >= {since_ms}ms" if since_ms is not None else ""
    query = f'SELECT * FROM "{MEASUREMENT}" WHERE "run" = \'{check_run_id(run_id, "RUN_ID")}\'{since} GROUP BY "shard", "phase"'
    for series in client.query_chunked(query):
        tags = series.get("tags", {})
        by_phase.setdefault((tags.get("shard", ""), tags.get("phase", "")), []).extend(rows_of(series))
    return records_of(by_phase)


def records_of(by_phase: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]]) -> dict[str, ShardRecord]:
    """Shards' records from their points by (shard, phase): each shard's latest start and what followed it."""
    records: dict[str, ShardRecord] = {}
    for (spec, phase), rows in sorted(by_phase.items()):
        if phase != "start" or not rows:
            continue
        start_ms, start = max(rows, key=lambda row: row[0])  # a retried shard: its latest attempt
        record = records[spec] = ShardRecord(Shard.from_spec(spec, f"{MEASUREMENT} shard tag"), start_ms, start)
        for ts, fields in by_phase.get((spec, "interval"), []):
            if ts > start_ms:
                record.intervals[int(fields["k"])] = fields
        finals = [(ts, fields) for ts, fields in by_phase.get((spec, "final"), []) if ts >= start_ms]
        if finals:
            record.final = max(finals, key=lambda row: row[0])[1]
    return records


@dataclass
class BridgeRecord:
    """The experiment's own bridge's records (a run of `iotsim load` on one machine)."""

    intervals: dict[int, dict[str, Any]] = field(default_factory=dict)
    final: dict[str, Any] | None = None

    def counts_at(self, k: int) -> dict[str, Any]:
        return counts_at(self.intervals, self.final, k)

    def add(self, series: dict[str, Any]) -> None:
        """The points of one `loadbridge` series (grouped by phase)."""
        phase = series.get("tags", {}).get("phase")
        for _, fields in rows_of(series):
            if phase == "interval":
                self.intervals[int(fields["k"])] = fields
            elif phase == "final":
                self.final = fields


def read_bridge(client: InfluxClient, run_id: str, since_ms: int) -> BridgeRecord | None:
    """The run's bridge records from `since_ms` on (its shards' start), or None when it had no bridge of its own."""
    record = BridgeRecord()
    query = f'SELECT * FROM "{BRIDGE_MEASUREMENT}" WHERE "run" = \'{check_run_id(run_id, "RUN_ID")}\' AND time >= {since_ms}ms GROUP BY "phase"'
    for series in client.query_chunked(query):
        record.add(series)
    return record if record.final is not None else None


WATCH_WINDOW_MS = 30_000  # a live poll re-reads this much: records arrive late (a shard retries for FLUSH_S), and in no order across shards


class RunWatcher:
    """A local run's records as they arrive, for `iotsim load`'s live rows and its drain: each poll
    re-reads the last WATCH_WINDOW_MS of the run's loadshard and loadbridge points and keeps what it
    read before, so a poll costs the same at the end of a soak as at its start. The results come
    from one full read afterwards (simulator/load/report.py), never from this."""

    def __init__(self, client: InfluxClient, run_id: str, since_ms: int) -> None:
        self.client = client
        self.run = check_run_id(run_id, "RUN_ID")
        self.since_ms = since_ms
        self.shard_points: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
        self.bridge = BridgeRecord()

    def poll(self, now_ms: int) -> dict[str, ShardRecord]:
        """The shards' records read so far; `self.bridge` holds the bridge's."""
        window = f'"run" = \'{self.run}\' AND time >= {max(self.since_ms, now_ms - WATCH_WINDOW_MS)}ms'
        for series in self.client.query_chunked(f'SELECT * FROM "{MEASUREMENT}" WHERE {window} GROUP BY "shard", "phase"'):
            tags = series.get("tags", {})
            self.shard_points.setdefault((tags.get("shard", ""), tags.get("phase", "")), {}).update(rows_of(series))
        for series in self.client.query_chunked(f'SELECT * FROM "{BRIDGE_MEASUREMENT}" WHERE {window} GROUP BY "phase"'):
            self.bridge.add(series)
        return records_of({key: list(points.items()) for key, points in self.shard_points.items()})
