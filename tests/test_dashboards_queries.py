"""Every query on the boards, run against a real InfluxDB holding what the simulator and the bridge write.

City and port data: the real scenarios (city-day, city-incident, port-day; household water meters
from a small inline scenario, as only yangquan-full has them) simulated in dry run and
turned into line protocol by the bridge's own converter. Pipeline data: a real run through the test
Mosquitto with the real bridge, which write their `pipeline` counters. Each panel query, each
annotation and each template variable query is then executed with the variables expanded the way
Grafana expands them, and must return at least one series with a value.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from datetime import datetime, timezone
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import requests

from conftest import IOTSIM, Pipeline, RUN_IDLE, child_env, iotsim
from publishing import message, publish, topic
from simulator import stack
from simulator.dashboards.build import JSON_DIR
from simulator.engine import run_scenario
from simulator.ingest.lineprotocol import to_line
from simulator.ingest.status import to_point
from simulator.scenario import Scenario, load_scenario
from simulator.transport.sessions import DeviceSessions, SessionSettings

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "dashboards"
# (scenario, duration override): a winter day's first six hours of every city type, the incident
# morning (traffic incident, gas alarm, cooling fault), and a whole port day (trains, reefer alarms).
SCENARIOS = [("city-day.yaml", "6h"), ("city-incident.yaml", None), ("port-day.yaml", None)]
# The household water meters (in no shipped scenario but yangquan-full, whose 1 million devices are
# too many here): city-day's six hours, 50 meters over the five districts, hourly as by default.
WATER_METERS = {
    "name": "dashboards-water", "seed": 20260114, "start": "2026-01-14T00:00:00+08:00", "duration": "6h",
    "fleets": [{"type": "water_meter", "count": 50}],
}  # fmt: skip
# Device statuses in the simulated window (minutes from its start, device, online): em-0002's will
# came last, em-0001 came back after its will, em-0003 has a birth only. The City board's "Devices
# offline" lists em-0002 alone.
STATUSES = [(0, "em-0001", True), (0, "em-0002", True), (0, "em-0003", True), (30, "em-0001", False), (45, "em-0002", False), (60, "em-0001", True)]
OFFLINE = ["em-0002"]
INTERVAL = "5m"  # what Grafana's $__interval is for ~36 h on a 1,000-pixel-wide panel
CONFLICTS = 3  # pm25 strings sent through the bridge: stored as pm25_string, counted as type conflicts
RUN_DEVICES = 50  # the pipeline run's air-quality stations, each its own connection
# Two devices of their own beside the run: one dies (its will fires), one closes cleanly (its death).
WILL_DEVICES = ("em-dash-1", "em-dash-2")
# Statuses with online = false in the wall-clock window: the run's devices' deaths when it ends, the
# will, the clean close.
OFFLINE_STATUSES = RUN_DEVICES + 2


@dataclass(frozen=True)
class Window:
    """A time range as Grafana puts it in $timeFilter (epoch ms)."""

    start_ms: int
    end_ms: int

    def filter(self) -> str:
        return f"time >= {self.start_ms}ms and time <= {self.end_ms}ms"


@dataclass
class Loaded:
    url: str
    simulated: Window
    wall_clock: Window
    dead_letters: int
    connects: int  # the run's device connections' accepted CONNACKs

    def query(self, q: str) -> list[dict]:
        response = requests.get(f"{self.url}/query", params={"db": DATABASE, "q": q, "epoch": "ms"}, timeout=60)
        response.raise_for_status()
        result = response.json()["results"][0]
        assert "error" not in result, f"{result['error']}\n  in: {q}"
        return result.get("series", [])


def board_scenarios() -> list[Scenario]:
    """The shipped scenarios (durations overridden where given), then the water meters."""
    scenarios = []
    for name, duration in SCENARIOS:
        scenario = load_scenario(ROOT / "scenarios" / name)
        scenarios.append(scenario if duration is None else scenario.with_overrides(duration=duration))
    return [*scenarios, Scenario.model_validate(WATER_METERS)]


def simulate_scenarios() -> tuple[Window, list[str]]:
    """Each scenario's time span and its messages as line protocol, converted by the bridge's own code."""
    lines: list[str] = []
    starts, ends = [], []
    for scenario in board_scenarios():
        run_scenario(scenario, lambda topic, payload: lines.append(to_line(topic, payload)[0]))
        starts.append(int(scenario.start.timestamp() * 1000))
        ends.append(starts[-1] + int(scenario.duration * 1000))
    for minute, device_id, online in STATUSES:  # births and wills, converted as the bridge does
        payload = orjson.dumps({"device_id": device_id, "online": online, "ts": min(starts) + minute * 60_000})
        lines.append(to_point(f"yangquan/status/{device_id}", payload, "yangquan")[0])
    return Window(min(starts), max(ends)), lines


@pytest.fixture(scope="module")
def loaded(broker: stack.Service, influxdb: stack.Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    stack.create_database(influxdb.url, DATABASE)
    simulated, lines = simulate_scenarios()
    session = requests.Session()
    for first in range(0, len(lines), 20_000):
        body = "\n".join(lines[first : first + 20_000]).encode()
        response = session.post(f"{influxdb.url}/write", params={"db": DATABASE, "precision": "ms"}, data=body, timeout=120)
        assert response.status_code == 204, response.text
    # The pipeline board's data: a real run through the broker and the bridge, long enough (~12 s of
    # wall time) for both to write several `pipeline` points (every 5 s and at the end), stamped now
    # like a real-time run, with malformed messages among the good ones (dead letters, fault events).
    tmp = tmp_path_factory.mktemp("dashboards")
    pipeline = Pipeline(broker, influxdb, DATABASE, "dash", f"bridge-dash-{time.monotonic_ns()}", tmp)
    began = int(time.time() * 1000)
    bridge = pipeline.start_bridge("--exit-when-idle", RUN_IDLE)
    scenario = pipeline.scenario_file(PIPELINE_RUN.format(start=datetime.now(timezone.utc).isoformat(timespec="seconds")))
    # The run starts first and the rest is published while it runs: the bridge's idle time counts from
    # its last message, and a loaded machine can take longer than RUN_IDLE to start a run of 50 connections.
    running = subprocess.Popen([*IOTSIM, "run", str(scenario)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    strings = [message(seq, {"pm25": "high"}, device_id="aq-9999", ts=began + seq) for seq in range(CONFLICTS)]
    publish(pipeline, [(topic(pipeline, "aq-9999"), payload) for payload in strings])
    fire_a_will(pipeline)
    stdout, stderr = running.communicate(timeout=120)
    run = subprocess.CompletedProcess(running.args, running.returncode, stdout, stderr)
    assert run.returncode == 0, run.stderr
    _, bridge_err = bridge.communicate(timeout=120)
    assert bridge.returncode == 0, bridge_err
    dead_letters = len((tmp / "dead-letters.jsonl").read_text().splitlines())
    connects = int(re.search(r"device connections: .*?, connects (\d+),", run.stdout).group(1))  # type: ignore[union-attr]
    # A short load experiment: its per-second and summary `loadtest` points.
    load = iotsim("load", str(pipeline.scenario_file(LOAD_RUN, "load.yaml")), "--out", str(tmp / "load-results"), timeout=180)
    assert load.returncode == 0, load.stdout + load.stderr
    # The run's device data and fault events are stamped start + simulated time: up to 2 h from now.
    yield Loaded(influxdb.url, simulated, Window(began - 60_000, int(time.time() * 1000) + 2 * 3600_000), dead_letters, connects)


def fire_a_will(pipeline: Pipeline) -> None:
    """Two devices connect with a 1 s keepalive; one's battery dies (the broker fires its will after
    1.5 s of silence), the other closes cleanly (its death)."""
    sessions = DeviceSessions(list(WILL_DEVICES), SessionSettings(port=pipeline.broker.port, prefix=pipeline.prefix, keepalive=1))
    sessions.start()
    try:
        assert sessions.run_until(sessions.all_connected, 10)
        sessions.kill(WILL_DEVICES[0])
        sessions.run_until(lambda: False, 2.5)  # past 1.5 keepalives: the will is out
    finally:
        sessions.close()


PIPELINE_RUN = """
name: dashboards-pipeline
start: {start}
duration: 2h
speed: 600
fleets:
  - {{type: air_quality, count: 50, cadence: 5m, connection: device}}
faults:
  - {{kind: malformed, rate: 0.03}}
"""

LOAD_RUN = """
name: dashboards-load
seed: 5
duration: 1m
fleets:
  - {type: load_probe, count: 4}
load:
  profile: {kind: constant, target: 50, duration: 3s}
  qos: 1
  drain: 20s
  thresholds:
    - loss == 0
"""


def boards() -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(JSON_DIR.glob("*.json"))}


def regex_value(value: str) -> str:
    """A single variable value as Grafana writes it into /^$var$/: regex metacharacters escaped."""
    return re.sub(r"([\\^$.|?*+()\[\]{}/])", r"\\\1", value)


def expand(query: str, variables: dict[str, str], window: Window, interval: str) -> str:
    text = query.replace("$timeFilter", window.filter()).replace("$__interval", interval).replace("${__to}", str(window.end_ms))
    for name in sorted(variables, key=len, reverse=True):
        text = text.replace(f"${name}", variables[name])
    unexpanded = re.findall(r"\$(?!tag_|col\b)(?:\w+|\{\w+\})", text)
    assert not unexpanded, f"unexpanded variables {unexpanded} in {text}"
    return text


def variable_values(loaded: Loaded, board: dict, chosen: dict[str, str]) -> dict[str, list[str]]:
    """Each variable's values: custom ones from their list, query ones by running the query with the
    variables before it expanded to `chosen` (Grafana resolves them in order)."""
    values: dict[str, list[str]] = {}
    for variable in board["templating"]["list"]:
        name = variable["name"]
        if variable["type"] == "custom":
            values[name] = [item.strip() for item in variable["query"].split(",")]
        else:
            q = expand(variable["query"], chosen, loaded.simulated, INTERVAL)
            values[name] = [row[1] for series in loaded.query(q) for row in series["values"]]
        assert values[name], f"variable {name} has no values"
        chosen.setdefault(name, regex_value(values[name][0]))
    return values


def has_values(series: list[dict]) -> bool:
    return any(any(value is not None for value in row[1:]) for one in series for row in one.get("values", []))


def window_for(board_name: str, loaded: Loaded) -> Window:
    return loaded.wall_clock if board_name == "pipeline" else loaded.simulated


def every_district(loaded: Loaded) -> str:
    """A district every city device type has (a real value of the District variable)."""
    sets = []
    for measurement in ("air_quality", "traffic_loop", "mine_gas", "heating_substation", "noise_monitor", "street_light", "water_meter"):
        sets.append({row[1] for series in loaded.query(f'SHOW TAG VALUES FROM "{measurement}" WITH KEY = "district"') for row in series["values"]})
    common = sorted(set.intersection(*sets))
    assert common, sets
    return common[0]


def run_board(loaded: Loaded, name: str, board: dict, chosen: dict[str, str]) -> list[str]:
    """Run every query of the board; the problems, one line each."""
    problems = []
    window = window_for(name, loaded)
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            q = expand(target["query"], chosen, window, panel.get("interval") or INTERVAL)
            if not has_values(loaded.query(q)):
                problems.append(f"{name}: panel {panel['title']!r} target {target['refId']}: no data from {q}")
    for annotation in board["annotations"]["list"]:
        q = expand(annotation["target"]["query"], chosen, window, INTERVAL)
        if not has_values(loaded.query(q)):
            problems.append(f"{name}: annotation {annotation['name']!r}: no data from {q}")
    return problems


@pytest.mark.parametrize("name", ["city", "port", "pipeline"])
def test_every_panel_query_returns_data_with_all_selected(loaded: Loaded, name: str) -> None:
    board = boards()[name]
    chosen: dict[str, str] = {}
    for variable in board["templating"]["list"]:
        if variable.get("includeAll"):
            chosen[variable["name"]] = variable["allValue"]
    values = variable_values(loaded, board, chosen)
    assert all(values.values())
    problems = run_board(loaded, name, board, chosen)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", ["city", "port", "pipeline"])
def test_every_panel_query_returns_data_for_one_real_value_of_each_variable(loaded: Loaded, name: str) -> None:
    board = boards()[name]
    chosen: dict[str, str] = {}
    if name == "city":
        chosen["district"] = regex_value(every_district(loaded))
    variable_values(loaded, board, chosen)  # the first value of each other variable
    problems = run_board(loaded, name, board, chosen)
    assert not problems, "\n".join(problems)


def test_device_explorer_shows_each_device_type_of_the_board(loaded: Loaded) -> None:
    for name in ("city", "port"):
        board = boards()[name]
        explorer = next(panel for panel in board["panels"] if panel["type"] == "timeseries" and panel["title"].startswith("Device explorer"))
        types = next(v for v in board["templating"]["list"] if v["name"] == "device_type")["query"].split(",")
        for device_type in types:
            chosen = {"device_type": regex_value(device_type), "district": ".*"}
            values = variable_values(loaded, board, dict(chosen))
            chosen["device"] = regex_value(values["device"][0])
            q = expand(explorer["targets"][0]["query"], chosen, loaded.simulated, INTERVAL)
            assert has_values(loaded.query(q)), f"{name}: no readings for {device_type}: {q}"



def test_devices_offline_lists_the_devices_whose_latest_status_is_offline(loaded: Loaded) -> None:
    panel = next(panel for panel in boards()["city"]["panels"] if panel["title"] == "Devices offline")
    q = expand(panel["targets"][0]["query"], {}, loaded.simulated, INTERVAL)
    rows = [row for series in loaded.query(q) for row in series["values"]]
    assert [(device_id, online) for _, device_id, online in rows] == [(device_id, False) for device_id in OFFLINE]
    assert rows[0][0] == loaded.simulated.start_ms + 45 * 60_000  # the time of its will
    # As of a time range ending before its will, em-0001 (offline from minute 30 to 60) is listed instead.
    earlier = expand(panel["targets"][0]["query"], {}, Window(loaded.simulated.start_ms, loaded.simulated.start_ms + 40 * 60_000), INTERVAL)
    assert [row[1] for series in loaded.query(earlier) for row in series["values"]] == ["em-0001"]


def test_dead_letters_stat_counts_what_the_bridge_set_aside(loaded: Loaded) -> None:
    board = boards()["pipeline"]
    stat = next(panel for panel in board["panels"] if panel["title"] == "Dead letters")
    q = expand(stat["targets"][0]["query"], {"bridge": ".*"}, loaded.wall_clock, INTERVAL)
    values = [row[1] for series in loaded.query(q) for row in series["values"] if row[1] is not None]
    assert loaded.dead_letters > 0
    assert max(values) == loaded.dead_letters


def test_type_conflicts_panel_counts_the_readings_stored_under_a_typed_name(loaded: Loaded) -> None:
    board = boards()["pipeline"]
    panel = next(panel for panel in board["panels"] if panel["title"] == "Type conflicts")
    q = expand(panel["targets"][0]["query"], {"bridge": ".*"}, loaded.wall_clock, INTERVAL)
    values = [row[1] for series in loaded.query(q) for row in series["values"] if row[1] is not None]
    assert max(values) == CONFLICTS
    stored = loaded.query('SELECT count("pm25_string") FROM "air_quality" WHERE "device_id" = \'aq-9999\'')
    assert stored[0]["values"][0][1] == CONFLICTS


def pipeline_panel(title: str) -> dict:
    return next(panel for panel in boards()["pipeline"]["panels"] if panel["title"] == title)


def panel_values(loaded: Loaded, panel: dict, ref: str = "A") -> list[float]:
    target = next(target for target in panel["targets"] if target["refId"] == ref)
    q = expand(target["query"], {"simulator": ".*", "bridge": ".*"}, loaded.wall_clock, panel.get("interval") or INTERVAL)
    return [row[1] for series in loaded.query(q) for row in series["values"] if row[1] is not None]


def test_connected_devices_shows_every_device_of_the_run_connected(loaded: Loaded) -> None:
    values = panel_values(loaded, pipeline_panel("Connected devices"))
    assert max(values) == RUN_DEVICES and min(values) >= 0


def test_connects_per_second_adds_up_to_the_runs_connects(loaded: Loaded) -> None:
    panel = pipeline_panel("Connects per second")
    per_second = panel_values(loaded, panel)
    # non_negative_derivative of 5 s buckets: a rate times 5 s is at most its bucket's increase (a bucket
    # without a point makes the step longer), and the run's first point, at its start, precedes the connects.
    assert max(per_second) > 0 and min(per_second) >= 0
    assert sum(rate * 5 for rate in per_second) <= loaded.connects == RUN_DEVICES
    assert panel_values(loaded, panel, "B") == [0] * len(panel_values(loaded, panel, "B"))  # no failed attempts


def test_wills_fired_counts_the_offline_statuses_the_bridge_stored(loaded: Loaded) -> None:
    assert sum(panel_values(loaded, pipeline_panel("Wills fired"))) == OFFLINE_STATUSES
    # Each of the two devices has one offline status: the dead one's will, the other's clean death.
    stored = loaded.query('SELECT count("online") FROM "device_status" WHERE "device_id" =~ /^em-dash-/ AND "online" = false GROUP BY "device_id"')
    assert {series["tags"]["device_id"]: series["values"][0][1] for series in stored} == {device_id: 1 for device_id in WILL_DEVICES}
