"""Scenario files: good ones load, bad ones exit 2 with one `FILE:LINE: field: message` line each."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import iotsim
from simulator.scenario import ScenarioError, load_scenario

REPO = Path(__file__).resolve().parent.parent

GOOD = """\
name: ok
duration: 1h
fleets:
  - type: air_quality
    count: 3
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("scenario", sorted((REPO / "scenarios").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_scenario_validates(scenario: Path) -> None:
    result = iotsim("validate", str(scenario))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{scenario}: ok")


@pytest.mark.parametrize(
    ("text", "line", "field", "message"),
    [
        (GOOD.replace("duration", "duraton"), 2, "duraton", "unknown key"),
        (GOOD.replace("count: 3", "count: three"), 5, "fleets.0.count", "valid integer"),
        (GOOD.replace("count: 3", "count: -4"), 5, "fleets.0.count", "greater than or equal to 1"),
        (GOOD.replace("1h", "1 fortnight"), 2, "duration", "not a duration"),
        (GOOD.replace("1h", "-5m"), 2, "duration", "not a duration"),
        (GOOD.replace("air_quality", "air_qualty"), 4, "fleets.0.type", "unknown device type 'air_qualty'"),
        (GOOD + "speed: warp\n", 6, "speed", "not a speed"),
        (GOOD + "mqtt:\n  qos: 2\n", 7, "mqtt.qos", "0 or 1"),
        (GOOD + "mqtt:\n  url: http://x\n", 7, "mqtt.url", "mqtt://host:port"),
        (GOOD + "  - type: air_quality\n    count: 1\n", 3, "fleets", "both name devices 'aq-NNNN'"),
    ],
    ids=["typo", "wrong-type", "negative-count", "bad-duration", "negative-duration", "unknown-type", "bad-speed", "bad-qos", "bad-url", "duplicate-ids"],
)
def test_bad_scenario_exits_2_naming_file_line_and_field(tmp_path: Path, text: str, line: int, field: str, message: str) -> None:
    path = write(tmp_path, text)
    result = iotsim("validate", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert any(item.startswith(f"{path}:{line}: {field}: ") and message in item for item in lines), lines


def test_every_problem_is_reported_on_its_own_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nduraton: 1h\nfleets:\n  - type: air_quality\n    count: 0\n")
    problems = iotsim("validate", str(path)).stderr.strip().splitlines()
    assert sorted(problems) == sorted(
        [
            f"{path}:1: duration: Field required",
            f"{path}:5: fleets.0.count: Input should be greater than or equal to 1",
            f"{path}:2: duraton: unknown key (check the spelling)",
        ]
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "no such file"),
        ("name: [unclosed\nduration: 1h\n", ":2: not valid YAML"),
        ("- just\n- a list\n", ":1: a scenario is a YAML mapping"),
        ("\t- tabs: are not yaml\n", "not valid YAML"),
    ],
    ids=["missing-file", "broken-yaml", "not-a-mapping", "tab"],
)
def test_unreadable_scenarios_exit_2_without_traceback(tmp_path: Path, text: str | None, expected: str) -> None:
    path = tmp_path / "scenario.yaml"
    if text is not None:
        path.write_text(text)
    for command in ("validate", "run"):
        result = iotsim(command, str(path))
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert result.stderr.startswith(str(path)) and expected in result.stderr


def test_command_line_overrides_are_validated_like_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    result = iotsim("run", str(path), "--dry-run", "--out", str(tmp_path / "x.jsonl"), "--duration", "soon")
    assert result.returncode == 2
    assert "--duration" in result.stderr and "not a duration" in result.stderr
    assert "Traceback" not in result.stderr


def test_start_without_zone_is_yangquan_local_time(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, GOOD + "start: 2026-02-01T08:00:00\n"))
    assert scenario.start.utcoffset().total_seconds() == 8 * 3600


def test_scenario_error_lists_problems() -> None:
    with pytest.raises(ScenarioError) as raised:
        load_scenario("/nonexistent/scenario.yaml")
    assert raised.value.problems == ["/nonexistent/scenario.yaml: no such file"]
