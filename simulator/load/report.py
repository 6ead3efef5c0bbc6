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
from typing import Any
from urllib.parse import urlsplit

from hdrh.histogram import HdrHistogram

from simulator.influx import InfluxClient
from simulator.load.metrics import Server, decode, new_histogram, summarize_ms
from simulator.load.profile import Schedule, schedule_of
from simulator.load.records import BridgeRecord, ShardRecord, read_bridge, read_run
from simulator.load.runner import CPU_FIGURES, RSS_FIGURES, SAMPLED, LoadError, environment, none_if_nan, offered_between
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


@dataclass
class Ingest:
    """The bridge's side of a run: per second (k from 1, since the earliest shard's start) and in
    total; a figure it could not measure is NaN in `totals` and absent from `per_second`."""

    totals: dict[str, float]  # received, written, distinct, duplicates, dead_letters, gaps
    per_second: dict[int, dict[str, float]]
    latency_per_second: dict[int, str] = field(default_factory=dict)  # HDR, encoded
    latency: HdrHistogram = field(default_factory=new_histogram)


def ingest_of_bridge(bridge: BridgeRecord) -> Ingest:
    """From the experiment's own bridge's records (`iotsim load` on one machine: its start is the shards')."""
    assert bridge.final is not None
    final = bridge.final
    totals = {name: float(final[name]) for name in (*INGEST_FLOWS, "dead_letters")}
    totals["gaps"] = float(final["gaps"])
    per_second: dict[int, dict[str, float]] = {}
    previous = dict.fromkeys(INGEST_FLOWS, 0.0)
    last = max(bridge.intervals, default=0)
    for k in range(1, last + 2):  # the second after the last interval holds what came after it
        counts = {name: float(value) for name, value in bridge.counts_at(k).items() if name in INGEST_FLOWS} or previous
        per_second[k] = {name: counts[name] - previous[name] for name in INGEST_FLOWS}
        previous = counts
    latency = new_histogram()
    for encoded in [*(fields.get("latency_hist", "") for fields in bridge.intervals.values()), final.get("latency_hist", "")]:
        if encoded:
            latency.add(decode(encoded))
    hists = {k: fields["latency_hist"] for k, fields in bridge.intervals.items() if fields.get("latency_hist")}
    return Ingest(totals, per_second, hists, latency)


def ingest_of_stored(stored: Stored) -> Ingest:
    """From the points InfluxDB holds (a sharded run: the bridge is not the experiment's)."""
    totals = {"received": math.nan, "written": float(stored.distinct), "distinct": float(stored.distinct), "duplicates": math.nan,
              "dead_letters": math.nan, "gaps": float(stored.gaps)}  # fmt: skip
    return Ingest(totals, {k: {"written": float(n), "distinct": float(n)} for k, n in stored.per_second.items()})


@dataclass
class Stored:
    """What InfluxDB holds of the run's devices."""

    distinct: int
    gaps: int
    per_second: dict[int, int]  # second k (1-based, from the earliest start) -> points stamped in it


def merge_run(client: InfluxClient, run_id: str, load_override: LoadSection | None = None, say: Callable[[str], None] = lambda line: None) -> Merged:
    """The results of run `run_id` from its records; `load_override`'s thresholds replace the recorded ones."""
    records = read_run(client, run_id)
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
    if bridge is not None:  # the run had its own bridge (`iotsim load` on one machine)
        ingest = ingest_of_bridge(bridge)
    else:
        published = sum(int(record.final["published"]) for record in records.values() if record.final is not None)
        ingest = ingest_of_stored(wait_for_bridge(client, t0, t1, published, load.drain, say))
    rows = merge_rows(records, load, schedule, probes, t0, ingest)
    figures = merge_figures(records, load, schedule, probes, batch, rows, ingest)
    verdicts = judge(load.thresholds, figures)
    summary = summary_of(run_id, first, records, load, schedule, t0, figures, ingest, missing)
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
               figures: dict[str, float], ingest: Ingest, missing: list[str]) -> dict[str, Any]:  # fmt: skip
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
        "servers": {name: asdict(server) for name, server in unsampled_servers(first).items()},
        "shards": {
            "count": start["count"],
            "reported": sorted((record.shard.spec for record in finished), key=lambda spec: int(spec.split("/")[0])),
            "missing": missing,
            "complete": not missing,
            "hosts": {record.shard.spec: record.start.get("host") for record in records.values()},
        },
        "figures": {name: none_if_nan(value) for name, value in figures.items()},
        "latency_histogram": ingest.latency.encode().decode() if ingest.latency.get_total_count() else "",
        "publish_histogram": merged_histogram(records),
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


def merge_rows(records: dict[str, ShardRecord], load: LoadSection, schedule: Schedule, probes: int, t0: int, ingest: Ingest) -> list[dict[str, Any]]:
    """A timeseries row per second since the earliest start, with the columns `iotsim load` writes."""
    last = max((shift_of(record, t0) + max(record.intervals, default=0) for record in records.values()), default=0) + 1
    last = max(last, math.ceil(schedule.duration), max(ingest.per_second, default=0))
    measured = {name for second in ingest.per_second.values() for name in second}
    previous: dict[str, float] = {}
    distinct_so_far = 0.0
    rows = []
    for k in range(1, last + 1):
        totals = {"generated": 0.0, "published": 0.0, "acknowledged": 0.0}
        publish_hist = new_histogram()
        cpu = rss = 0.0
        sampled = 0
        for record in records.values():
            local = k - shift_of(record, t0)
            counts = record.counts_at(local) if local >= 1 else {}
            for name in totals:
                totals[name] += float(counts.get(name, 0))
            interval = record.intervals.get(local, {})
            if interval.get("publish_hist"):
                publish_hist.add(decode(interval["publish_hist"]))
            if "simulator_cpu_percent" in interval:
                cpu += float(interval["simulator_cpu_percent"])
                rss += float(interval.get("simulator_rss_mb", 0.0))
                sampled += 1
        row: dict[str, Any] = {"second": k, "offered": round(offered_between(load, schedule, probes, k - 1, k), 3)}
        for name, value in totals.items():
            row[name] = value - previous.get(name, 0.0)
            previous[name] = value
        second = ingest.per_second.get(k, {})
        for name in INGEST_FLOWS:
            row[name] = second.get(name, 0.0) if name in measured else None
        distinct_so_far += second.get("distinct", 0.0)
        row["backlog"] = totals["published"] - distinct_so_far
        for name, value in summarize_ms(decode(ingest.latency_per_second.get(k, ""))).items():
            row[f"latency_{name}_ms"] = none_if_nan(value)
        for name, value in summarize_ms(publish_hist).items():
            row[f"publish_{name}_ms"] = none_if_nan(value)
        for name in SAMPLED:
            row[f"{name}_cpu_percent"] = round(cpu, 1) if name == "simulator" and sampled else None
            row[f"{name}_rss_mb"] = round(rss, 1) if name == "simulator" and sampled else None
        row["machine_cpu_percent"] = None  # the shards' hosts are not this one
        rows.append(row)
    return rows


def merged_histogram(records: dict[str, ShardRecord]) -> str:
    histogram = merged_publish(records)
    return histogram.encode().decode() if histogram.get_total_count() else ""


def merged_publish(records: dict[str, ShardRecord]) -> Any:
    histogram = new_histogram()
    for record in records.values():
        for fields in [*record.intervals.values(), record.final or {}]:
            if fields.get("publish_hist"):
                histogram.add(decode(fields["publish_hist"]))
    return histogram


def merge_figures(records: dict[str, ShardRecord], load: LoadSection, schedule: Schedule, probes: int, batch: int, rows: list[dict[str, Any]], ingest: Ingest) -> dict[str, float]:
    """summary.json's figures, as `iotsim load` computes them, from the shards and what was stored."""
    duration = schedule.duration
    finals = [record.final for record in records.values() if record.final is not None]
    figures: dict[str, float] = {"offered": float(round(offered_between(load, schedule, probes, 0, duration)))}
    for name in ("generated", "published", "acknowledged"):
        figures[name] = float(sum(int(final[name]) for final in finals))
    figures["received"] = ingest.totals["received"]
    figures["written"] = ingest.totals["written"]
    within = [row for row in rows if row["second"] <= math.ceil(duration) + 1]
    figures["offered_rate"] = offered_between(load, schedule, probes, 0, duration) / duration
    for name in FLOWS[1:]:
        values = [row[name] for row in within]
        figures[f"{name}_rate"] = math.nan if None in values else sum(values) / duration
    figures["written_readings_rate"] = figures["written_rate"] * batch
    figures["loss"] = float(max(figures["generated"] - ingest.totals["distinct"], 0))
    figures["loss_ratio"] = figures["loss"] / figures["generated"] if figures["generated"] else math.nan
    figures["duplicates"] = ingest.totals["duplicates"]  # a sharded run: NaN, InfluxDB keeps one point per device and timestamp
    figures["gaps"] = ingest.totals["gaps"]
    figures["dead_letters"] = ingest.totals["dead_letters"]  # a sharded run: NaN, the file is on the bridge's host
    for name, value in summarize_ms(ingest.latency).items():
        figures[f"{name}_latency_ms"] = value
    for name, value in summarize_ms(merged_publish(records)).items():
        figures[f"publish_{name}_ms"] = value
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
