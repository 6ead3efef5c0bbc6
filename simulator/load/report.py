"""`iotsim load report RUN_ID`: merge what the shards of a run wrote into one results directory.

The shards' records (simulator/load/records.py) give the simulator's side: generated, published,
acknowledged, the publish-latency histograms (HDR, added up), the shards' CPU and memory. The
bridge's side is what InfluxDB stored: the points stamped within the run (the earliest shard's
start to the latest's end), counted per device. InfluxDB keeps one point per device and timestamp,
so that count is the distinct messages written, and `loss` is generated minus it; what only the
experiment's own bridge can see (received, duplicates, dead letters, end-to-end latency) is not
measured in a sharded run, and a threshold on it fails as "not measured". Thresholds come from the
load: section the shards recorded, or from FILE's when one is given. A shard with no records, or
with no final record, is missing: said in one line and in summary.json, and the run is not passed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Union
from urllib.parse import urlsplit

from hdrh.histogram import HdrHistogram

from simulator.influx import InfluxClient
from simulator.load.figures import CPU_FIGURES, RSS_FIGURES, SAMPLED, LoadError, environment, none_if_nan, offered_between
from simulator.load.metrics import Server, decode, new_histogram, summarize_ms
from simulator.load.profile import Schedule, schedule_of
from simulator.load.records import BridgeRecord, ShardRecord, read_bridge, read_run
from simulator.load.section import LoadSection
from simulator.load.thresholds import FLOWS, Verdict, judge
from simulator.transport.mqtt import BrokerAddress

POLL_S = 1.0
QUIET_POLLS = 3  # the stored count unchanged this many polls in a row: the bridge has written what it will


class NoRecords(LoadError):
    """No shard of the run wrote records to this database."""


@dataclass
class Merged:
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    verdicts: list[Verdict]
    missing: list[str]


INGEST_FLOWS = ("received", "written", "distinct", "duplicates")
CONNECTION_EVENTS = ("connects", "reconnects", "connect_failures")  # cumulative in the shards' records, per second in the rows
NO_COUNTS = dict.fromkeys(INGEST_FLOWS, 0)


class BridgeIngest:
    """The bridge's side of a run from the experiment's own bridge's records (`iotsim load` on one
    machine: its start is the shards'); per second k (from 1) as differences of its cumulative
    counters, so a second can be read while the run goes on (the runner's live rows)."""

    measured = INGEST_FLOWS

    def __init__(self, bridge: BridgeRecord) -> None:
        self.bridge = bridge

    def counts(self, k: int) -> dict[str, int]:
        counts = self.bridge.counts_at(k) if k >= 1 else {}
        return {name: int(counts[name]) for name in INGEST_FLOWS} if counts else NO_COUNTS

    def second(self, k: int) -> dict[str, int]:  # whole messages, as the runner's rows always had them
        now, before = self.counts(k), self.counts(k - 1)
        return {name: now[name] - before[name] for name in INGEST_FLOWS}

    def latency_hist(self, k: int) -> str:
        return str(self.bridge.intervals.get(k, {}).get("latency_hist", ""))

    def last(self) -> int:
        """The last second with figures: the one after the last interval holds what came after it."""
        return max(self.bridge.intervals, default=0) + 1

    def totals(self) -> dict[str, float]:
        final = self.bridge.final
        assert final is not None
        return {name: float(final[name]) for name in (*INGEST_FLOWS, "dead_letters", "gaps")}

    def latency(self) -> HdrHistogram:
        histogram = new_histogram()
        for fields in [*self.bridge.intervals.values(), self.bridge.final or {}]:
            if fields.get("latency_hist"):
                histogram.add(decode(fields["latency_hist"]))
        return histogram


@dataclass
class Stored:
    """What InfluxDB holds of the run's devices."""

    distinct: int
    gaps: int
    per_second: dict[int, int]  # second k (1-based, from the earliest start) -> points stamped in it


class StoredIngest:
    """The bridge's side of a sharded run, from the points InfluxDB holds (the bridge is not the
    experiment's): written and distinct only; the rest is NaN in the totals and None in the rows."""

    measured = ("written", "distinct")

    def __init__(self, stored: Stored) -> None:
        self.stored = stored

    def second(self, k: int) -> dict[str, int]:
        points = self.stored.per_second.get(k, 0)
        return {"written": points, "distinct": points}

    def latency_hist(self, k: int) -> str:
        return ""

    def last(self) -> int:
        return max(self.stored.per_second, default=0)

    def totals(self) -> dict[str, float]:
        distinct = float(self.stored.distinct)
        return {"received": math.nan, "written": distinct, "distinct": distinct, "duplicates": math.nan, "dead_letters": math.nan, "gaps": float(self.stored.gaps)}

    def latency(self) -> HdrHistogram:
        return new_histogram()


Ingest = Union[BridgeIngest, StoredIngest]


@dataclass
class LocalRun:
    """What only `iotsim load` on one machine measures beside the records: the servers it found and,
    per second k, the CPU and memory of the bridge, the broker and the database and the machine's CPU."""

    servers: dict[str, Server]
    samples: dict[int, dict[str, float | None]] = field(default_factory=dict)


def merge_run(client: InfluxClient, run_id: str, load_override: LoadSection | None = None, say: Callable[[str], None] = lambda line: None,
              since_ms: int | None = None, local: LocalRun | None = None) -> Merged:  # fmt: skip
    """The results of run `run_id` from its records; `load_override`'s thresholds replace the recorded ones.
    `iotsim load` merges its own run this way too: `since_ms` (its start) leaves out earlier runs under
    the same id, and `local` adds what it sampled on this machine; its own bridge's records are then required."""
    records = read_run(client, run_id, since_ms)
    first = agreed_start(records, run_id, client)
    load = LoadSection.model_validate_json(first.start["load"])
    if load_override is not None:
        load = load.model_copy(update={"thresholds": load_override.thresholds})
    schedule = schedule_of(load.profile)
    probes, batch = int(first.start["probes"]), int(first.start["batch"])
    missing = missing_shards(records, int(first.start["count"]))
    t0 = min(record.start_ms for record in records.values())
    t1 = max(record.start_ms for record in records.values()) + int(schedule.duration * 1000) + 1000
    bridge = read_bridge(client, run_id, t0)
    ingest: Ingest
    if bridge is not None:  # the run had its own bridge (`iotsim load` on one machine)
        ingest = BridgeIngest(bridge)
    elif local is not None:
        raise LoadError(f"run {run_id!r}: the experiment's bridge left no final loadbridge record in InfluxDB at {client.url} database {client.database}")
    else:
        published = sum(int(record.final["published"]) for record in records.values() if record.final is not None)
        ingest = StoredIngest(wait_for_bridge(client, t0, t1, published, load.drain, say))
    rows = merge_rows(records, load, schedule, probes, t0, ingest, local)
    figures = merge_figures(records, load, schedule, probes, batch, rows, ingest)
    verdicts = judge(load.thresholds, figures)
    summary = summary_of(run_id, first, records, load, schedule, t0, figures, ingest, missing, local)
    summary["thresholds"] = [{"threshold": v.threshold, "passed": v.passed, "measured": none_if_nan(v.actual), "limit": none_if_nan(v.limit)} for v in verdicts]
    summary["passed"] = not missing and all(v.passed for v in verdicts)  # a partial run never passes
    summary["stale"] = bridge.final.get("stale") if bridge is not None and bridge.final is not None else None
    return Merged(summary, rows, verdicts, missing)


def agreed_start(records: dict[str, ShardRecord], run_id: str, client: InfluxClient) -> ShardRecord:
    """A shard's start record, once every shard's agrees on what was run."""
    if not records:
        raise NoRecords(f"run {run_id!r}: no shard wrote records to InfluxDB at {client.url} database {client.database} (measurement loadshard)")
    first = next(iter(records.values()))
    for record in records.values():
        for name in ("count", "scenario", "load"):
            if record.start.get(name) != first.start.get(name):
                raise LoadError(f"run {run_id!r}: shards {first.shard.spec} and {record.shard.spec} disagree on {name}; were they started from one scenario?")
    return first


def summary_of(run_id: str, first: ShardRecord, records: dict[str, ShardRecord], load: LoadSection, schedule: Schedule, t0: int,
               figures: dict[str, float], ingest: Ingest, missing: list[str], local: LocalRun | None = None) -> dict[str, Any]:  # fmt: skip
    """summary.json as `iotsim load` writes it, with `shards`: which reported, which are missing."""
    start = first.start
    finished = [record for record in records.values() if record.final is not None]
    return {
        "run": run_id,
        "scenario": start["scenario"],
        "started": datetime.fromtimestamp(t0 / 1000, tz=timezone.utc).isoformat(),
        "inputs": {
            "load": load.model_dump(mode="json"), "qos": start["qos"], "workers": start["count"], "probes": start["probes"],
            "batch": start["batch"], "payload_bytes": start["payload_bytes"], "seed": start["seed"],
            "mqtt": start["mqtt"], "influx": start["influx"], "duration_s": schedule.duration,
        },
        "environment": environment(),
        "servers": {name: asdict(server) for name, server in (local.servers if local is not None else unsampled_servers(first)).items()},
        "shards": {
            "count": start["count"],
            "reported": sorted((record.shard.spec for record in finished), key=lambda spec: int(spec.split("/")[0])),
            "missing": missing,
            "complete": not missing,
            "hosts": {record.shard.spec: record.start.get("host") for record in records.values()},
        },
        "figures": {name: none_if_nan(value) for name, value in figures.items()},
        "latency_histogram": encoded(ingest.latency()),
        "publish_histogram": merged_histogram(records),
        "connect_histogram": encoded(merged_publish(records, "connect_hist")),
        "drained": bool(finished) and all(bool(record.final and record.final.get("drained")) for record in finished),
    }  # fmt: skip


def missing_shards(records: dict[str, ShardRecord], count: int) -> list[str]:
    """`INDEX/COUNT (why)` of every shard that did not report its final figures."""
    missing = []
    for index in range(count):
        spec = f"{index}/{count}"
        record = records.get(spec)
        if record is None:
            missing.append(f"{spec} (no records)")
        elif record.final is None:
            missing.append(f"{spec} (started, but no final record: still running, or stopped)")
    return missing


def stored_points(client: InfluxClient, t0: int, t1: int) -> Stored:
    """Points with a `seq` stamped in [t0, t1) ms, in every measurement: the devices' messages."""
    window = f"time >= {t0}ms AND time < {t1}ms"
    distinct = highest = 0
    for series in client.query_chunked(f'SELECT count("seq"), max("seq") FROM /.*/ WHERE {window} GROUP BY "device_id"'):
        for _, points, top in series.get("values", []):
            distinct += int(points or 0)
            highest += int(top) + 1 if top is not None else 0
    per_second: dict[int, int] = {}
    for series in client.query_chunked(f'SELECT count("seq") FROM /.*/ WHERE {window} GROUP BY time(1s, {t0 % 1000}ms)'):
        for ts, points in series.get("values", []):
            if points:
                k = round((ts - t0) / 1000) + 1
                per_second[k] = per_second.get(k, 0) + int(points)
    return Stored(distinct, max(highest - distinct, 0), per_second)


def wait_for_bridge(client: InfluxClient, t0: int, t1: int, published: int, drain: float, say: Callable[[str], None]) -> Stored:
    """What InfluxDB holds once the bridge has caught up: every published message stored, or the count
    unchanged for QUIET_POLLS polls, or `drain` seconds passed."""
    deadline = time.monotonic() + drain
    stored = stored_points(client, t0, t1)
    quiet = 0
    while stored.distinct < published and quiet < QUIET_POLLS and time.monotonic() < deadline:
        time.sleep(POLL_S)
        latest = stored_points(client, t0, t1)
        quiet = quiet + 1 if latest.distinct == stored.distinct else 0
        stored = latest
    if stored.distinct < published:
        say(f"note: InfluxDB holds {stored.distinct:,} of the {published:,} messages the shards published")
    return stored


def shift_of(record: ShardRecord, t0: int) -> int:
    """Seconds between the earliest shard's start and this one's (shards start on their own)."""
    return round((record.start_ms - t0) / 1000)


def merge_rows(records: dict[str, ShardRecord], load: LoadSection, schedule: Schedule, probes: int, t0: int, ingest: Ingest,
               local: LocalRun | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """A timeseries row per second since the earliest start, with the columns `iotsim load` writes."""
    last = max((shift_of(record, t0) + max(record.intervals, default=0) for record in records.values()), default=0) + 1
    last = max(last, math.ceil(schedule.duration), ingest.last())
    rows = RowMerger(load, schedule, probes, t0, local)
    return [rows.row(k, records, ingest) for k in range(1, last + 1)]


class RowMerger:
    """Timeseries rows, one second after the other (k = 1, 2, ...), from the records read so far: the
    whole run's for a results directory, or what has arrived for `iotsim load`'s live row."""

    def __init__(self, load: LoadSection, schedule: Schedule, probes: int, t0: int, local: LocalRun | None = None) -> None:
        self.load, self.schedule, self.probes, self.t0, self.local = load, schedule, probes, t0, local
        self.previous: dict[str, float] = {}  # the cumulative counters at the last row
        self.distinct_so_far = 0.0

    def row(self, k: int, records: dict[str, ShardRecord], ingest: Ingest) -> dict[str, Any]:
        totals = {"generated": 0.0, "published": 0.0, "acknowledged": 0.0, **dict.fromkeys(CONNECTION_EVENTS, 0.0)}
        publish_hist, connect_hist = new_histogram(), new_histogram()
        connected = 0
        cpu = rss = 0.0
        sampled = 0
        for record in records.values():
            local = k - shift_of(record, self.t0)
            counts = record.counts_at(local) if local >= 1 else {}
            for name in totals:
                totals[name] += float(counts.get(name, 0))
            connected += int(counts.get("connected", 0))
            interval = record.intervals.get(local, {})
            if interval.get("publish_hist"):
                publish_hist.add(decode(interval["publish_hist"]))
            if interval.get("connect_hist"):
                connect_hist.add(decode(interval["connect_hist"]))
            if "simulator_cpu_percent" in interval:
                cpu += float(interval["simulator_cpu_percent"])
                rss += float(interval.get("simulator_rss_mb", 0.0))
                sampled += 1
        row: dict[str, Any] = {"second": k, "offered": round(offered_between(self.load, self.schedule, self.probes, k - 1, k), 3)}
        for name in ("generated", "published", "acknowledged"):
            row[name] = totals[name] - self.previous.get(name, 0.0)
            self.previous[name] = totals[name]
        second = ingest.second(k)
        for name in INGEST_FLOWS:
            row[name] = second.get(name, 0) if name in ingest.measured else None
        self.distinct_so_far += second.get("distinct", 0.0)
        row["backlog"] = totals["published"] - self.distinct_so_far
        for name, value in summarize_ms(decode(ingest.latency_hist(k))).items():
            row[f"latency_{name}_ms"] = none_if_nan(value)
        for name, value in summarize_ms(publish_hist).items():
            row[f"publish_{name}_ms"] = none_if_nan(value)
        row["connected"] = connected  # devices connected through their own connections at the second's end, all shards
        for name in CONNECTION_EVENTS:
            row[name] = totals[name] - self.previous.get(name, 0.0)
            self.previous[name] = totals[name]
        connect = summarize_ms(connect_hist)
        row["connect_p50_ms"], row["connect_p99_ms"] = none_if_nan(connect["p50"]), none_if_nan(connect["p99"])
        samples = self.local.samples.get(k, {}) if self.local is not None else {}  # a sharded run: the shards' hosts are not this one
        for name in SAMPLED:
            own = name == "simulator"  # the shards sample themselves; the rest only `iotsim load` on one machine
            row[f"{name}_cpu_percent"] = (round(cpu, 1) if sampled else None) if own else samples.get(f"{name}_cpu_percent")
            row[f"{name}_rss_mb"] = (round(rss, 1) if sampled else None) if own else samples.get(f"{name}_rss_mb")
        row["machine_cpu_percent"] = samples.get("machine_cpu_percent")
        return row


def encoded(histogram: HdrHistogram) -> str:
    return histogram.encode().decode() if histogram.get_total_count() else ""


def merged_histogram(records: dict[str, ShardRecord]) -> str:
    histogram = merged_publish(records)
    return histogram.encode().decode() if histogram.get_total_count() else ""


def merged_publish(records: dict[str, ShardRecord], name: str = "publish_hist") -> Any:
    """The run's histogram `name` (publish_hist, connect_hist): every shard's intervals and final added up."""
    histogram = new_histogram()
    for record in records.values():
        for fields in [*record.intervals.values(), record.final or {}]:
            if fields.get(name):
                histogram.add(decode(fields[name]))
    return histogram


def reconnect_all_s(records: dict[str, ShardRecord]) -> float:
    """Seconds from the end of the broker outage (its broker accepting connections again) until every
    device that had lost it was connected again, in the shard whose devices took longest; NaN without
    an outage the run executed, or when a device was still away at the end."""
    finals = [record.final for record in records.values() if record.final is not None]
    ends = [int(final["outage_end_ms"]) for final in finals if final.get("outage_end_ms") is not None]
    backs = [int(final["reconnected_ms"]) for final in finals if final.get("reconnected_ms") is not None]
    if not ends or not backs or any(int(final.get("lost", 0)) for final in finals):
        return math.nan
    return max(max(backs) - max(ends), 0) / 1000.0


def merge_figures(records: dict[str, ShardRecord], load: LoadSection, schedule: Schedule, probes: int, batch: int, rows: list[dict[str, Any]], ingest: Ingest) -> dict[str, float]:
    """summary.json's figures, as `iotsim load` computes them, from the shards and what was stored."""
    duration = schedule.duration
    finals = [record.final for record in records.values() if record.final is not None]
    figures: dict[str, float] = {"offered": float(round(offered_between(load, schedule, probes, 0, duration)))}
    for name in ("generated", "published", "acknowledged"):
        figures[name] = float(sum(int(final[name]) for final in finals))
    totals = ingest.totals()
    figures["received"] = totals["received"]
    figures["written"] = totals["written"]
    within = [row for row in rows if row["second"] <= math.ceil(duration) + 1]
    figures["offered_rate"] = offered_between(load, schedule, probes, 0, duration) / duration
    for name in FLOWS[1:]:
        values = [row[name] for row in within]
        figures[f"{name}_rate"] = math.nan if None in values else sum(values) / duration
    figures["written_readings_rate"] = figures["written_rate"] * batch
    figures["loss"] = float(max(figures["generated"] - totals["distinct"], 0))
    figures["loss_ratio"] = figures["loss"] / figures["generated"] if figures["generated"] else math.nan
    figures["duplicates"] = totals["duplicates"]  # a sharded run: NaN, InfluxDB keeps one point per device and timestamp
    figures["gaps"] = totals["gaps"]
    figures["dead_letters"] = totals["dead_letters"]  # a sharded run: NaN, the file is on the bridge's host
    for name, value in summarize_ms(ingest.latency()).items():
        figures[f"{name}_latency_ms"] = value
    for name, value in summarize_ms(merged_publish(records)).items():
        figures[f"publish_{name}_ms"] = value
    figures["connected"] = float(max((row["connected"] for row in rows), default=0))  # the most at once, all shards in the same second
    for name in CONNECTION_EVENTS:
        figures[name] = float(sum(int(final.get(name, 0)) for final in finals))
    for name, value in summarize_ms(merged_publish(records, "connect_hist")).items():
        figures[f"connect_{name}_ms"] = value
    figures["reconnect_all_s"] = reconnect_all_s(records)
    for name in CPU_FIGURES:
        values = [row[name] for row in within[1:] if row[name] is not None] or [math.nan]
        figures[name] = sum(values) / len(values)
    for name in RSS_FIGURES:
        figures[name] = max((row[name] for row in rows if row[name] is not None), default=math.nan)
    return figures


def unsampled_servers(first: ShardRecord) -> dict[str, Server]:
    note = "not sampled (the shards record only their own CPU and memory)"
    influx = urlsplit(str(first.start["influx"]).split(" ")[0])
    return {
        "broker": Server(BrokerAddress.from_url(str(first.start["mqtt"])).port, note=note),
        "database": Server(influx.port or (443 if influx.scheme == "https" else 80), note=note),
    }
