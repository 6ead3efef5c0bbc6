"""`iotsim load` against real Mosquitto and InfluxDB: the results directory tells the truth, and a
threshold that fails makes the command fail. Rates are kept small and nothing asserts speed: the
machine is shared, so only counts and verdicts are checked."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
from conftest import Pipeline, iotsim

RAMP = """
name: load-test-ramp
seed: 5
duration: 1m
fleets:
  - {type: load_probe, count: 12, batch: 3, payload_bytes: 250}
load:
  profile: {kind: ramp, start: 20, target: 120, duration: 4s, hold: 2s}
  qos: 1
  workers: 2
  drain: 20s
  thresholds:
    - loss == 0
    - duplicates == 0
    - written == generated
    - p99_latency_ms < 60000
"""

FAILING = """
name: load-test-fail
seed: 5
duration: 1m
fleets:
  - {type: load_probe, count: 4}
load:
  profile: {kind: constant, target: 20, duration: 2s}
  qos: 1
  drain: 20s
  thresholds:
    - loss == 0
    - p50_latency_ms < 0
"""


def test_a_short_ramp_writes_a_results_directory_whose_counts_agree_with_influxdb(pipeline: Pipeline) -> None:
    out = pipeline.tmp / "results"
    run = iotsim("load", str(pipeline.scenario_file(RAMP)), "--out", str(out), "--raw-latencies", timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "passed 4 thresholds" in run.stdout

    summary = json.loads((out / "summary.json").read_text())
    figures = summary["figures"]
    stored = pipeline.count("load_probe")
    # (20 + 120) / 2 * 4 s + 120 * 2 s = 520 offered; each of the 12 gateways rounds its share by at most one
    assert figures["offered"] == 520
    assert abs(figures["generated"] - 520) <= 12
    assert figures["generated"] == figures["published"] == figures["acknowledged"] == figures["received"] == figures["written"] == stored
    assert figures["loss"] == figures["duplicates"] == figures["gaps"] == figures["dead_letters"] == 0
    assert summary["passed"] is True and all(verdict["passed"] for verdict in summary["thresholds"])
    assert summary["inputs"]["workers"] == 2 and summary["inputs"]["qos"] == 1

    # Every device's sequence numbers are in InfluxDB exactly once: 0 .. n-1.
    series = pipeline.query('SELECT "seq" FROM "load_probe" GROUP BY "device_id"')
    seqs = {s["tags"]["device_id"]: sorted(row[1] for row in s["values"]) for s in series}
    assert len(seqs) == 12 and all(values == list(range(len(values))) for values in seqs.values())

    # The per-second timeseries adds up to the totals.
    with open(out / "timeseries.csv") as file:
        rows = list(csv.DictReader(file))
    for name in ("generated", "published", "written"):
        assert sum(float(row[name]) for row in rows) == figures[name], name
    assert sum(float(row["offered"]) for row in rows) == 520

    # CPU and memory of every process on the path: the session's broker and InfluxDB are local child
    # processes, so they are found by their ports and sampled every second (never null).
    servers = summary["servers"]
    assert (servers["broker"]["pid"], servers["broker"]["process"], servers["broker"]["note"]) == (pipeline.broker.pid, "mosquitto", None)
    assert (servers["database"]["pid"], servers["database"]["process"], servers["database"]["note"]) == (pipeline.influxdb.pid, "influxd", None)
    cores = os.cpu_count() or 1
    for name in ("simulator", "bridge", "broker", "database", "machine"):
        assert 0 <= figures[f"{name}_cpu_percent"] <= 100 * cores, name  # % of one core
    for name in ("simulator", "bridge", "broker", "database"):
        assert figures[f"{name}_rss_mb"] > 1, name
    for row in rows:  # the servers outlive the run, so every second has their figures
        assert all(row[name] != "" for name in ("broker_cpu_percent", "database_cpu_percent", "machine_cpu_percent")), row
        assert float(row["broker_rss_mb"]) > 1 and float(row["database_rss_mb"]) > 1, row
    assert f"broker (mosquitto) {figures['broker_cpu_percent']:.0f}%, database (influxd) {figures['database_cpu_percent']:.0f}%" in run.stdout

    # The summary's HDR percentiles agree with the raw latencies the bridge measured (1/1024 resolution).
    raw = np.sort(np.fromfile(out / "latencies.i64", dtype=np.int64))
    assert len(raw) == stored
    for name, percentile in (("p50", 50.0), ("p99", 99.0), ("p999", 99.9)):
        exact_ms = raw[max(int(percentile / 100 * len(raw) + 0.5), 1) - 1] / 1000
        assert exact_ms <= figures[f"{name}_latency_ms"] <= exact_ms * (1 + 1 / 1024), name

    # Plots and a self-contained report.
    for plot in ("rates.png", "latency.png", "loss.png", "resources.png"):
        assert (out / plot).read_bytes().startswith(b"\x89PNG"), plot
    report = (out / "report.html").read_text()
    assert report.count('src="data:image/png;base64,') == 4 and 'src="http' not in report
    assert "PASSED" in report
    assert f"<li>broker: mosquitto (PID {pipeline.broker.pid}, port {pipeline.broker.port})</li>" in report

    # The loadtest measurement in InfluxDB: one point per recorded second, and the summary.
    intervals = pipeline.query(f"SELECT sum(\"written\") FROM \"loadtest\" WHERE \"run\" = '{out.name}' AND \"phase\" = 'interval'")
    assert intervals[0]["values"][0][1] == stored
    usage = pipeline.query(f"SELECT count(\"broker_cpu_percent\"), count(\"database_rss_mb\"), count(\"machine_cpu_percent\") FROM \"loadtest\" WHERE \"run\" = '{out.name}' AND \"phase\" = 'interval'")
    assert usage[0]["values"][0][1:] == [len(rows)] * 3
    final = pipeline.query(f"SELECT \"written\", \"loss\", \"passed\", \"database_cpu_percent\" FROM \"loadtest\" WHERE \"phase\" = 'summary' AND \"run\" = '{out.name}'")
    assert final[0]["values"][0][1:] == [stored, 0, True, figures["database_cpu_percent"]]


def test_a_failing_threshold_exits_1_and_names_it(pipeline: Pipeline) -> None:
    out = pipeline.tmp / "results"
    run = iotsim("load", str(pipeline.scenario_file(FAILING)), "--out", str(out), timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert any(line.startswith("FAIL p50_latency_ms < 0") for line in lines), run.stdout
    assert any(line.startswith("ok   loss == 0") for line in lines), run.stdout
    assert "FAILED 1 of 2 thresholds: p50_latency_ms < 0" in run.stdout
    assert "Traceback" not in run.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] is False
    verdicts = {verdict["threshold"]: verdict["passed"] for verdict in summary["thresholds"]}
    assert verdicts == {"loss == 0": True, "p50_latency_ms < 0": False}
    assert summary["figures"]["written"] == pipeline.count("load_probe") == summary["figures"]["generated"] == 40


def test_an_unreachable_broker_is_one_line_and_exit_2(pipeline: Pipeline, tmp_path: Path) -> None:
    from simulator import stack

    url = f"mqtt://127.0.0.1:{stack.free_port()}"
    scenario = pipeline.scenario_file(FAILING).read_text().replace(pipeline.mqtt_url, url)
    path = tmp_path / "nobroker.yaml"
    path.write_text(scenario)
    run = iotsim("load", str(path), "--out", str(tmp_path / "r"), timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == f"cannot reach the MQTT broker at {url}; start one with `iotsim stack up` or pass --mqtt"
    assert "Traceback" not in run.stderr


CAPACITY = """
name: load-test-capacity
seed: 5
duration: 1m
fleets:
  - {type: load_probe, count: 10}
load:
  profile: {kind: constant, target: 10, duration: 2s}
  qos: 1
  drain: 20s
  capacity: {start: 40, factor: 2, trial: 2s, refine: 1, max_trials: 6, settle: 3s}
  # A limit the pipeline meets at any of these rates, so the search's course is known: 40 and 80
  # hold, 160 breaks, and the one bisection trial, 120, breaks too.
  thresholds: [loss == 0, offered_rate < 110]
"""


def test_find_capacity_raises_the_rate_until_a_threshold_breaks_then_bisects(pipeline: Pipeline) -> None:
    out = pipeline.tmp / "capacity"
    run = iotsim("load", str(pipeline.scenario_file(CAPACITY)), "--find-capacity", "--out", str(out), timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "capacity: 80 msg/s held every threshold at QoS 1" in run.stdout
    search = json.loads((out / "capacity.json").read_text())
    assert [(t["rate"], t["passed"]) for t in search["trials"]] == [(40, True), (80, True), (160, False), (120, False)]
    assert search["capacity_msg_s"] == 80 and search["trials"][2]["failed"] == ["offered_rate < 110"]
    for trial in search["trials"]:  # each trial is a whole experiment with its own results
        figures = json.loads((Path(trial["results"]) / "summary.json").read_text())["figures"]
        assert figures["loss"] == 0 and abs(figures["generated"] - 2 * trial["rate"]) <= 10
    # Every trial's messages reached InfluxDB: 2 s at each rate, each gateway rounding its share.
    assert abs(pipeline.count("load_probe") - 2 * (40 + 80 + 160 + 120)) <= 4 * 10


# A start above the limit, descending, then bisecting until the bracket is within ±12 %: 240 breaks,
# 120 holds, 180 and 150 break (120..150 is ±11.1 %); refine: 1 would have stopped after 180.
FINE = CAPACITY.replace("name: load-test-capacity", "name: load-test-capacity-fine").replace(
    "capacity: {start: 40, factor: 2, trial: 2s, refine: 1, max_trials: 6, settle: 3s}",
    "capacity: {start: 240, factor: 2, trial: 2s, refine: 1, resolution: 12, descend: true, max_trials: 6, settle: 3s}",
).replace("offered_rate < 110", "offered_rate < 140")


def test_find_capacity_descends_from_a_start_that_broke_and_bisects_to_the_resolution(pipeline: Pipeline) -> None:
    out = pipeline.tmp / "capacity-fine"
    run = iotsim("load", str(pipeline.scenario_file(FINE)), "--find-capacity", "--out", str(out), timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "capacity 120 msg/s (held), next broke at 150 msg/s: resolution ±11.1 %" in run.stdout
    search = json.loads((out / "capacity.json").read_text())
    assert [(t["rate"], t["passed"]) for t in search["trials"]] == [(240, False), (120, True), (180, False), (150, False)]
    assert search["capacity_msg_s"] == 120 and search["next_broke_msg_s"] == 150
    assert abs(search["resolution_percent"] - 100 * 30 / 270) < 1e-9
    assert abs(pipeline.count("load_probe") - 2 * (240 + 120 + 180 + 150)) <= 4 * 10


def test_find_capacity_with_a_start_above_max_rate_is_one_line_and_exit_2(pipeline: Pipeline) -> None:
    # No trial could run: it was a traceback (min() of no trials) after the search, exit 1.
    body = CAPACITY.replace("capacity: {start: 40,", "capacity: {start: 400, max_rate: 300,")
    out = pipeline.tmp / "capacity-none"
    run = iotsim("load", str(pipeline.scenario_file(body)), "--find-capacity", "--out", str(out), timeout=60)
    assert run.returncode == 2, run.stdout + run.stderr
    lines = (run.stdout + run.stderr).strip().splitlines()
    assert len(lines) == 1 and "load.capacity: start 400 msg/s is above max_rate 300" in lines[0], lines
    assert "Traceback" not in run.stderr and not out.exists()
    assert pipeline.count("load_probe") == 0
