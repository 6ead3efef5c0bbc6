"""The boards as files: generated, current, valid for Grafana's models, complete and laid out.

(tests/test_dashboards_queries.py runs their queries against a real InfluxDB.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
from itertools import combinations
from pathlib import Path

import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import units
from grafana_foundation_sdk.models.dashboard import Dashboard
from ruamel.yaml import YAML

from conftest import IOTSIM, child_env
from simulator.dashboards import influxql  # registers the InfluxQL query type with the SDK
from simulator.dashboards.build import BOARDS, JSON_DIR, render_all

ROOT = Path(__file__).resolve().parent.parent
GRAFANA_UNITS = {value for name, value in vars(units).items() if not name.startswith("_") and isinstance(value, str)}
INFLUX_ANNOTATION_KEYS = {"refId", "fromAnnotations", "queryType", "rawQuery", "query", "textColumn", "tagsColumn"}


IOTSIM_DASHBOARDS = [IOTSIM[0], "-m", "simulator.dashboards.cli"]  # `iotsim dashboards` once registered


def run_build(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*IOTSIM_DASHBOARDS, "build", *args], capture_output=True, text=True, timeout=120, env=child_env())


def boards() -> dict[str, dict]:
    return {name: json.loads((JSON_DIR / name).read_text()) for name in BOARDS}


def panels(board: dict) -> list[dict]:
    return [panel for panel in board["panels"] if panel["type"] != "row"]


def test_the_committed_json_is_what_the_generator_builds() -> None:
    result = run_build("--check")
    assert result.returncode == 0, result.stderr
    assert render_all() == {name: (JSON_DIR / name).read_text() for name in BOARDS}


def test_check_exits_1_naming_a_stale_or_missing_file(tmp_path: Path) -> None:
    copy = tmp_path / "json"
    shutil.copytree(JSON_DIR, copy)
    port = copy / "port.json"
    port.write_text(port.read_text().replace("Yard occupancy by block", "Yard occupancy, edited by hand"))
    (copy / "pipeline.json").unlink()
    result = run_build("--check", "--out", str(copy))
    assert result.returncode == 1
    assert f"{port}: stale" in result.stderr
    assert f"{copy / 'pipeline.json'}: missing" in result.stderr
    assert "city.json" not in result.stderr


def test_build_writes_the_files_check_then_accepts(tmp_path: Path) -> None:
    result = run_build("--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(BOARDS)
    assert run_build("--check", "--out", str(tmp_path)).returncode == 0


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_the_json_reads_back_through_the_sdk_models_unchanged(name: str) -> None:
    """Every key is one Grafana's schema (as the SDK models it) knows, with the right shape; only the
    InfluxDB annotation fields, which the SDK's generic annotation type lacks, are outside it."""
    data = boards()[name]
    model = Dashboard.from_json(data)
    again = json.loads(json.dumps(model, cls=JSONEncoder))
    for annotation in data["annotations"]["list"]:
        assert INFLUX_ANNOTATION_KEYS <= set(annotation["target"])
    expected = json.loads(json.dumps(data))
    for annotation in expected["annotations"]["list"]:
        for key in INFLUX_ANNOTATION_KEYS:
            del annotation["target"][key]
    assert again == expected
    targets = [target for panel in model.panels or [] for target in getattr(panel, "targets", None) or []]
    assert targets and all(isinstance(target, influxql.InfluxQLQuery) for target in targets)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_panel_has_a_title_description_datasource_and_unit(name: str) -> None:
    for panel in panels(boards()[name]):
        where = f"{name}: {panel.get('title')!r}"
        assert panel["title"].strip(), where
        assert len(panel.get("description", "")) >= 20, where
        assert panel["datasource"] == {"type": "influxdb", "uid": influxql.DATASOURCE_UID}, where
        unit = panel["fieldConfig"]["defaults"].get("unit")
        assert unit in GRAFANA_UNITS or (unit or "").startswith("suffix:"), f"{where}: unit {unit!r}"
        assert panel["targets"], where
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == influxql.DATASOURCE_UID and target["rawQuery"], where
            # `${__to}`: a state as of the range's end (Devices offline: a will before the range still counts).
            assert "$timeFilter" in target["query"] or "${__to}" in target["query"], f"{where}: query ignores the time range"
        for override in panel["fieldConfig"].get("overrides", []):
            for item in override["properties"]:
                if item["id"] == "unit":
                    assert item["value"] in GRAFANA_UNITS or item["value"].startswith("suffix:"), where


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_no_two_panels_overlap_and_all_fit_the_grid(name: str) -> None:
    placed = [(panel["title"], panel["gridPos"]) for panel in boards()[name]["panels"]]
    for title, grid in placed:
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["y"] >= 0, title
        assert grid["x"] + grid["w"] <= 24, title
    for (first, a), (second, b) in combinations(placed, 2):
        apart = a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"] or a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"]
        assert apart, f"{name}: {first!r} {a} overlaps {second!r} {b}"


def test_boards_have_distinct_uids_and_unique_panel_ids() -> None:
    uids = [board["uid"] for board in boards().values()]
    assert len(set(uids)) == len(uids)
    for board in boards().values():
        ids = [panel["id"] for panel in board["panels"]]
        assert len(set(ids)) == len(ids)


def test_city_and_port_filter_by_district_type_and_device_and_annotate_events() -> None:
    variables = {name: [variable["name"] for variable in board["templating"]["list"]] for name, board in boards().items()}
    assert variables["city.json"] == ["district", "device_type", "device"]
    assert variables["port.json"] == ["device_type", "device"]
    assert variables["pipeline.json"] == ["simulator", "bridge", "run"]
    for board in boards().values():
        annotations = board["annotations"]["list"]
        assert annotations
        for annotation in annotations:
            target = annotation["target"]
            assert annotation["datasource"]["uid"] == influxql.DATASOURCE_UID
            assert 'FROM "events"' in target["query"] and "$timeFilter" in target["query"] and target["textColumn"] == "text"
    city = boards()["city.json"]
    filtered = [panel["title"] for panel in panels(city) if not all("$district" in target["query"] for target in panel["targets"])]
    # The data centre is one campus, in one district; a device's status carries no district.
    assert all(title.startswith("Data centre") or title == "Devices offline" for title in filtered), filtered


def test_the_boards_show_what_the_issue_asks_for() -> None:
    types = {name: {panel["type"] for panel in panels(board)} for name, board in boards().items()}
    assert {"geomap", "timeseries", "table"} <= types["city.json"]
    assert {"state-timeline", "timeseries", "table", "geomap"} <= types["port.json"]
    titles = {name: " | ".join(panel["title"] for panel in panels(board)) for name, board in boards().items()}
    for needed in ("AQI by station", "PM2.5", "Traffic flow", "Traffic speed", "Heat load vs outdoor temperature", "CH4", "rack inlet", "Devices offline"):
        assert needed in titles["city.json"], needed
    for needed in ("Yard occupancy", "Crane utilisation", "Crane moves per hour", "Gate queue per lane", "Train timeline", "Reefer alarms"):
        assert needed in titles["port.json"], needed
    for needed in ("published vs written", "End-to-end lag", "Dead letters", "Batch size", "retries", "Seq gaps", "Type conflicts", "Sessions lost", "Load: offered vs achieved"):
        assert needed in titles["pipeline.json"], needed


def test_threshold_lines_come_from_the_models_constants() -> None:
    from simulator.city.dc_rack import ASHRAE_RECOMMENDED_MAX_C
    from simulator.city.mine import ALARM_PCT, POWER_CUT_PCT

    city = {panel["title"]: panel for panel in panels(boards()["city.json"])}
    gas = city["Mine gas: CH4 at the working faces"]["fieldConfig"]["defaults"]
    assert [step["value"] for step in gas["thresholds"]["steps"]] == [None, ALARM_PCT, POWER_CUT_PCT]
    assert gas["custom"]["thresholdsStyle"]["mode"] == "dashed"
    inlet = city["Data centre: rack inlet temperature"]["fieldConfig"]["defaults"]
    assert ASHRAE_RECOMMENDED_MAX_C in [step["value"] for step in inlet["thresholds"]["steps"]]


def test_provisioning_yaml_loads_and_names_the_boards_datasource() -> None:
    yaml = YAML(typ="safe", pure=True)
    sources = yaml.load((ROOT / "dashboards/provisioning/datasources/influxdb.yaml").read_text())
    assert sources["apiVersion"] == 1
    assert [source["uid"] for source in sources["datasources"]] == [influxql.DATASOURCE_UID]
    providers = yaml.load((ROOT / "dashboards/provisioning/dashboards/yangquan.yaml").read_text())
    assert providers["apiVersion"] == 1 and providers["providers"][0]["type"] == "file"
