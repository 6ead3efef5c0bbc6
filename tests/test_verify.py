"""`iotsim verify`: a run through real Mosquitto, the bridge and InfluxDB verifies exactly; points
deleted, added or stored twice afterwards are reported per device, with exit 1; bad input exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from conftest import Pipeline, RUN_IDLE, iotsim
from simulator.engine import run_scenario
from simulator.scenario import load_scenario
from simulator.verify import ExpectedMessages

REPO = Path(__file__).resolve().parent.parent

# 8 stations x 30 min at 1 min = 240 readings, plus aqi_category and fault events; 5% of messages
# delivered twice and 5% followed by garbage: both by design not separate points.
STATIONS = """
name: verify
seed: 11
duration: 30m
fleets:
  - type: air_quality
    count: 8
    cadence: 1m
    category_events: true
faults:
  - {kind: duplicates, rate: 0.05}
  - {kind: malformed, rate: 0.05}
"""


def run_through_pipeline(pipeline: Pipeline) -> Path:
    scenario = pipeline.scenario_file(STATIONS)
    bridge = pipeline.start_bridge("--exit-when-idle", RUN_IDLE)
    run = iotsim("run", str(scenario))
    assert run.returncode == 0, run.stderr
    _, bridge_err = bridge.communicate(timeout=60)
    assert bridge.returncode == 0, bridge_err
    return scenario


def verify(pipeline: Pipeline, scenario: Path) -> tuple[int, str, dict]:
    report = pipeline.tmp / "verify.json"
    result = iotsim("verify", str(scenario), "--json", str(report))
    assert result.stderr == "", result.stderr
    return result.returncode, result.stdout, json.loads(report.read_text())


def times_by_seq(pipeline: Pipeline, device_id: str) -> dict[int, int]:
    response = requests.get(
        f"{pipeline.influx_url}/query",
        params={"db": pipeline.database, "epoch": "ms", "q": f"SELECT \"seq\" FROM \"air_quality\" WHERE \"device_id\" = '{device_id}'"},
        timeout=30,
    )
    return {int(seq): time_ms for time_ms, seq in response.json()["results"][0]["series"][0]["values"]}


def write_line(pipeline: Pipeline, line: str) -> None:
    response = requests.post(f"{pipeline.influx_url}/write", params={"db": pipeline.database, "precision": "ms"}, data=line, timeout=30)
    assert response.status_code == 204, response.text


def test_a_run_through_the_bridge_verifies_exactly_with_duplicates_and_malformed_messages(pipeline: Pipeline) -> None:
    scenario = run_through_pipeline(pipeline)
    code, stdout, report = verify(pipeline, scenario)
    assert code == 0, stdout
    events = report["measurements"]["events"]["expected"]
    assert events >= 2  # the two fault announcements, and category changes
    assert report["measurements"]["air_quality"] == {"devices": 8, "expected": 240, "stored": 240, "missing": 0, "duplicates": 0, "unexpected": 0}
    assert stdout.strip().endswith(f"verified: {240 + events} of {240 + events} stored")
    dead_letters = (pipeline.tmp / "dead-letters.jsonl").read_text().splitlines()
    assert report["by_design"]["dead_lettered"] == len(dead_letters) > 0
    assert report["by_design"]["repeated"] > 0
    assert report["not_checked"]["pipeline"] > 0  # the run's and the bridge's own counters
    assert (report["verified"], report["expected"], report["stored"], report["missing"]) == (True, 240 + events, 240 + events, 0)
    assert {device["device_id"] for device in report["devices"] if device["measurement"] == "air_quality"} == {f"aq-{n:04d}" for n in range(1, 9)}


def test_device_status_points_are_listed_not_checked_and_do_not_break_verification(pipeline: Pipeline) -> None:
    scenario = run_through_pipeline(pipeline)
    some_time = times_by_seq(pipeline, "aq-0001")[0]
    write_line(pipeline, "\n".join(f"device_status,device_id=aq-000{n} online={'false' if n == 2 else 'true'} {some_time + n}" for n in (1, 2, 3)))
    code, stdout, report = verify(pipeline, scenario)
    assert code == 0, stdout
    assert report["not_checked"]["device_status"] == 3
    assert "device_status 3 points" in stdout
    assert report["missing"] == report["unexpected"] == 0


def test_deleted_points_are_reported_as_the_missing_seq_ranges(pipeline: Pipeline) -> None:
    scenario = run_through_pipeline(pipeline)
    times = times_by_seq(pipeline, "aq-0003")
    pipeline.query(f"DELETE FROM \"air_quality\" WHERE \"device_id\" = 'aq-0003' AND time >= {times[17]}ms AND time <= {times[25]}ms")
    pipeline.query(f"DELETE FROM \"air_quality\" WHERE \"device_id\" = 'aq-0003' AND time = {times[28]}ms")
    code, stdout, report = verify(pipeline, scenario)
    assert code == 1
    assert "aq-0003 (air_quality): missing 17-25, 28" in stdout
    total = report["expected"]
    assert stdout.strip().endswith(f"NOT verified: {total - 10} of {total} stored, 10 missing, 0 duplicates, 0 unexpected")
    device = next(d for d in report["devices"] if d["device_id"] == "aq-0003" and d["measurement"] == "air_quality")
    assert device == {
        "measurement": "air_quality", "device_id": "aq-0003", "expected": 30, "stored": 20,
        "missing": 10, "missing_seqs": [[17, 25], [28, 28]], "duplicates": 0, "unexpected": 0,
    }  # fmt: skip
    assert report["measurements"]["air_quality"]["missing"] == 10


def test_a_point_of_a_device_the_scenario_does_not_have_is_unexpected(pipeline: Pipeline) -> None:
    scenario = run_through_pipeline(pipeline)
    some_time = times_by_seq(pipeline, "aq-0001")[5]
    write_line(pipeline, f"air_quality,device_id=aq-0999 pm25=12.0,seq=5i {some_time}")
    code, stdout, report = verify(pipeline, scenario)
    assert code == 1
    assert report["measurements"]["air_quality"]["unexpected"] == 1
    assert (report["missing"], report["duplicates"], report["unexpected"]) == (0, 0, 1)
    assert "aq-0999 (air_quality): 1 unexpected" in stdout


def test_the_same_seq_stored_at_another_time_is_a_duplicate(pipeline: Pipeline) -> None:
    scenario = run_through_pipeline(pipeline)
    times = times_by_seq(pipeline, "aq-0002")
    write_line(pipeline, f"air_quality,device_id=aq-0002 pm25=12.0,seq=4i {times[4] + 1500}")
    code, stdout, report = verify(pipeline, scenario)
    assert code == 1
    assert (report["missing"], report["duplicates"], report["unexpected"]) == (0, 1, 0)
    assert "aq-0002 (air_quality): 1 duplicate" in stdout
    assert stdout.strip().endswith(f"NOT verified: {report['expected']} of {report['expected']} stored, 0 missing, 1 duplicates, 0 unexpected")


def test_an_empty_database_misses_everything(pipeline: Pipeline) -> None:
    code, stdout, report = verify(pipeline, pipeline.scenario_file(STATIONS))
    assert code == 1
    assert report["stored"] == 0 and report["missing"] == report["expected"] > 240
    assert "aq-0001 (air_quality): missing 0-29" in stdout


def test_a_regular_device_is_kept_as_one_run_of_seqs() -> None:
    expected = ExpectedMessages()
    run_scenario(load_scenario(REPO / "scenarios" / "quickstart.yaml"), expected)
    stations = expected.devices["air_quality"]
    assert len(stations) == 50
    assert all(len(device.runs) == 1 and device.count == 12 for device in stations.values())
    assert expected.generated == 600 and (expected.dead_lettered, expected.repeated, expected.overwritten) == (0, 0, 0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--duration", "soon"], "--duration: "),
        (["--start", "now"], "--start: 'now' is another time"),
        (["--start", "yesterday"], "--start: "),
        (["--seed", "-1"], "--seed: "),
        (["--influx", "ftp://somewhere"], "--influx: "),
        (["--db", "no such"], "--db: "),
        (["--db", "absent"], "--db: database 'absent' does not exist at "),
        (["--influx", "http://127.0.0.1:9"], "cannot reach InfluxDB at http://127.0.0.1:9"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(pipeline: Pipeline, args: list[str], message: str) -> None:
    result = iotsim("verify", str(pipeline.scenario_file(STATIONS)), *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_scenario_file_exits_2(tmp_path: Path) -> None:
    result = iotsim("verify", str(tmp_path / "nope.yaml"))
    assert (result.returncode, result.stderr) == (2, f"{tmp_path / 'nope.yaml'}: no such file\n")
