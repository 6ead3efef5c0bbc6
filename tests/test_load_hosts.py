"""Load experiments across hosts: `iotsim load FILE --shard INDEX/COUNT` processes that meet only in
Mosquitto and InfluxDB, one `iotsim bridge` beside them, and `iotsim load report RUN_ID` merging
what the shards recorded. Counts and verdicts are checked, never speed."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from conftest import IOTSIM, Pipeline, child_env, iotsim
from simulator.load.metrics import decode

SCENARIO = """
name: load-test-hosts
seed: 11
duration: 1m
fleets:
  - {type: load_probe, count: 10, batch: 2}
load:
  profile: {kind: constant, target: 60, duration: 4s}
  qos: 1
  drain: 20s
  thresholds:
    - loss == 0
    - written == generated
    - publish_p99_ms < 60000
"""


def start_shard(scenario: Path, spec: str, run_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*IOTSIM, "load", str(scenario), "--shard", spec, "--run-id", run_id], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=90)
    return process.returncode, stdout, stderr


def shard_finals(pipeline: Pipeline, run_id: str) -> dict[str, dict[str, int]]:
    series = pipeline.query(f"SELECT \"generated\", \"published\", \"acknowledged\" FROM \"loadshard\" WHERE \"run\" = '{run_id}' AND \"phase\" = 'final' GROUP BY \"shard\"")
    return {s["tags"]["shard"]: dict(zip(s["columns"][1:], s["values"][-1][1:])) for s in series}


def report(pipeline: Pipeline, run_id: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return iotsim("load", "report", run_id, *extra, "--influx", pipeline.influx_url, "--db", pipeline.database, "--out", str(out), timeout=90)


def test_two_shards_behind_one_bridge_merge_into_one_results_directory(pipeline: Pipeline) -> None:
    scenario = pipeline.scenario_file(SCENARIO)
    bridge = pipeline.start_bridge()
    try:
        shards = [start_shard(scenario, f"{index}/2", "hosts-1") for index in range(2)]
        results = [finish(shard) for shard in shards]
    finally:
        bridge.terminate()
        bridge.communicate(timeout=30)
    for index, (code, stdout, stderr) in enumerate(results):
        assert code == 0, stdout + stderr
        assert f"shard {index}/2 of run hosts-1: 5 devices" in stdout
        assert "no bridge" in stderr

    out = pipeline.tmp / "merged"
    merged = report(pipeline, "hosts-1", out)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    assert "passed 3 thresholds" in merged.stdout
    summary = json.loads((out / "summary.json").read_text())
    figures = summary["figures"]
    finals = shard_finals(pipeline, "hosts-1")
    assert sorted(finals) == ["0/2", "1/2"]
    for name in ("generated", "published", "acknowledged"):
        assert figures[name] == sum(final[name] for final in finals.values()), name
    stored = pipeline.count("load_probe")
    assert figures["offered"] == 240  # 60 msg/s for 4 s; each of the 10 gateways rounds its share by at most one
    assert abs(figures["generated"] - 240) <= 10
    assert figures["generated"] == figures["published"] == figures["written"] == stored
    assert figures["loss"] == figures["gaps"] == 0
    # What only the experiment's own bridge sees is not measured in a sharded run.
    assert figures["received"] is None and figures["duplicates"] is None and figures["p99_latency_ms"] is None
    # The shards' publish histograms, merged, hold every published message once.
    assert decode(summary["publish_histogram"]).get_total_count() == figures["published"]
    assert summary["shards"] == {"count": 2, "reported": ["0/2", "1/2"], "missing": [], "complete": True, "hosts": summary["shards"]["hosts"]}
    assert [(v["threshold"], v["passed"]) for v in summary["thresholds"]] == [("loss == 0", True), ("written == generated", True), ("publish_p99_ms < 60000", True)]
    assert summary["passed"] is True and summary["inputs"]["workers"] == 2

    with open(out / "timeseries.csv") as file:
        rows = list(csv.DictReader(file))
    for name in ("generated", "published", "written"):
        assert sum(float(row[name]) for row in rows) == figures[name], name
    assert sum(float(row["offered"]) for row in rows) == 240
    assert "PASSED" in (out / "report.html").read_text()

    # FILE's thresholds replace the recorded ones; one that fails makes the report fail, as `iotsim load` does.
    stricter = pipeline.scenario_file(SCENARIO.replace("    - publish_p99_ms < 60000\n", "    - publish_p99_ms < 60000\n    - generated > 1000000\n"), name="stricter.yaml")
    judged = report(pipeline, "hosts-1", pipeline.tmp / "judged", str(stricter))
    assert judged.returncode == 1, judged.stdout + judged.stderr
    assert "FAILED 1 of 4 thresholds: generated > 1000000" in judged.stdout
    verdicts = json.loads((pipeline.tmp / "judged" / "summary.json").read_text())["thresholds"]
    assert [v["passed"] for v in verdicts] == [True, True, True, False]


def test_a_missing_shard_is_reported_and_a_shard_starts_no_bridge(pipeline: Pipeline) -> None:
    scenario = pipeline.scenario_file(SCENARIO)
    code, stdout, stderr = finish(start_shard(scenario, "0/2", "hosts-2"))  # no `iotsim bridge` runs: nothing is stored
    assert code == 0, stdout + stderr

    out = pipeline.tmp / "partial"
    merged = report(pipeline, "hosts-2", out)
    assert merged.returncode == 2, merged.stdout + merged.stderr
    assert merged.stderr.splitlines()[-1] == "run hosts-2: 1 of 2 shards missing: 1/2 (no records); these results are partial (summary.json: shards.complete false)"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["shards"]["missing"] == ["1/2 (no records)"] and summary["shards"]["complete"] is False
    assert summary["passed"] is False
    published = shard_finals(pipeline, "hosts-2")["0/2"]["published"]
    assert published > 0 and summary["figures"]["published"] == published
    assert summary["figures"]["written"] == 0 == pipeline.count("load_probe")  # the shard started no bridge of its own
    assert summary["figures"]["loss"] == summary["figures"]["generated"]


def test_a_local_run_gives_the_same_figures_through_its_records(pipeline: Pipeline) -> None:
    """`iotsim load --workers 2`: its workers and its bridge record to InfluxDB, the runner makes its
    results from those records with the report's merge, and `iotsim load report` gives the same."""
    scenario = pipeline.scenario_file(SCENARIO.replace("    - loss == 0\n", "    - loss == 0\n    - duplicates == 0\n    - p99_latency_ms < 60000\n"))
    out = pipeline.tmp / "local"
    run = iotsim("load", str(scenario), "--workers", "2", "--run-id", "local-1", "--out", str(out), timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    merged = report(pipeline, "local-1", pipeline.tmp / "merged")
    assert merged.returncode == 0, merged.stdout + merged.stderr

    piped, recorded = (json.loads((folder / "summary.json").read_text()) for folder in (out, pipeline.tmp / "merged"))
    same = ("offered", "generated", "published", "acknowledged", "received", "written", "loss", "duplicates", "gaps", "dead_letters",
            "p50_latency_ms", "p99_latency_ms", "max_latency_ms", "publish_p50_ms", "publish_p99_ms")  # fmt: skip
    assert {name: recorded["figures"][name] for name in same} == {name: piped["figures"][name] for name in same}
    assert piped["figures"]["written"] == pipeline.count("load_probe") > 0
    for histogram, total in (("latency_histogram", "written"), ("publish_histogram", "published")):
        assert decode(recorded[histogram]).get_total_count() == decode(piped[histogram]).get_total_count() == piped["figures"][total], histogram
    assert [(v["threshold"], v["passed"]) for v in recorded["thresholds"]] == [(v["threshold"], v["passed"]) for v in piped["thresholds"]]
    assert len(recorded["thresholds"]) == 5 and recorded["passed"] is piped["passed"] is True
    assert recorded["shards"]["reported"] == piped["shards"]["reported"] == ["0/2", "1/2"]

    # One code path: the runner's timeseries is the report's, row for row, but for what only the
    # runner samples on its machine (the bridge's, the servers' and the machine's CPU and memory).
    runner_rows, report_rows = read_rows(out), read_rows(pipeline.tmp / "merged")
    assert [without(row, LOCAL_ONLY) for row in runner_rows] == [without(row, LOCAL_ONLY) for row in report_rows]
    assert all(row["machine_cpu_percent"] != "" for row in runner_rows) and all(row["machine_cpu_percent"] == "" for row in report_rows)

    # The same run id again, with one worker: the runner merges only the records written since its own
    # start, so the first run's shards (0/2, 1/2) are left out of its results.
    again = iotsim("load", str(scenario), "--workers", "1", "--run-id", "local-1", "--out", str(pipeline.tmp / "again"), timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    second = json.loads((pipeline.tmp / "again" / "summary.json").read_text())
    assert second["shards"]["count"] == 1 and second["shards"]["reported"] == ["0/1"]
    assert second["figures"]["generated"] == piped["figures"]["generated"]  # one seed, one stream, however many workers
    assert second["figures"]["written"] == pipeline.count("load_probe") - piped["figures"]["written"] == second["figures"]["generated"]


LOCAL_ONLY = {"bridge_cpu_percent", "bridge_rss_mb", "broker_cpu_percent", "broker_rss_mb", "database_cpu_percent", "database_rss_mb", "machine_cpu_percent"}


def read_rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "timeseries.csv") as file:
        return list(csv.DictReader(file))


def without(row: dict[str, str], names: set[str]) -> dict[str, str]:
    return {name: value for name, value in row.items() if name not in names}


def test_a_run_nobody_recorded_is_one_line(pipeline: Pipeline) -> None:
    result = report(pipeline, "never-ran", pipeline.tmp / "none")
    assert result.returncode == 2
    assert result.stderr.strip() == f"run 'never-ran': no shard wrote records to InfluxDB at {pipeline.influx_url} database {pipeline.database} (measurement loadshard)"


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        (["--run-id", "r"], {"IOTSIM_SHARD": "a/b"}, "IOTSIM_SHARD: 'a/b' is not INDEX/COUNT (e.g. 0/3: the first of three shards, INDEX from 0)"),
        (["--shard", "0/2"], {}, "--run-id: a sharded run needs the id all its shards share: --run-id ID or IOTSIM_RUN_ID (in a Kubernetes Indexed Job, set it from the Job's name)"),
        (["--shard", "0/2"], {"IOTSIM_RUN_ID": "x/y"}, "IOTSIM_RUN_ID: 'x/y' is not a run id: 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"),
        (["--shard", "1/2", "--run-id", "r", "--workers", "2"], {}, "--workers cannot go with --shard (IOTSIM_SHARD): a shard is one process that writes its records to InfluxDB"),
    ],
)
def test_bad_shard_and_run_id_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], env: dict[str, str], line: str) -> None:
    scenario = tmp_path / "hosts.yaml"
    scenario.write_text(SCENARIO)
    result = subprocess.run([*IOTSIM, "load", str(scenario), *args], capture_output=True, text=True, timeout=60, env={**child_env(), **env})
    assert (result.returncode, result.stderr.strip(), result.stdout) == (2, line, "")


def test_load_report_needs_a_run_id(tmp_path: Path) -> None:
    result = iotsim("load", "report")
    assert (result.returncode, result.stderr.strip()) == (2, "iotsim load report: Missing argument 'RUN_ID'.")
