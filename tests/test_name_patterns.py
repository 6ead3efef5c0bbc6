"""Every pattern that checks a name in a scenario holds to the end of the text: a value with a final
newline (`$` matches before one in Python's re) is a usage error naming its field, never accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import iotsim

BASE = "name: patterns\nduration: 1h\n"
FLEET = "fleets:\n  - type: air_quality\n    count: 1\n"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (BASE + FLEET + 'mqtt: {topic_prefix: "yangquan\\n"}\n', "mqtt.topic_prefix"),
        (BASE + FLEET + 'mqtt: {client_id_prefix: "iotsim\\n"}\n', "mqtt.client_id_prefix"),
        (BASE + FLEET + 'influx: {database: "yangquan\\n"}\n', "influx.database"),
        (BASE + 'fleets:\n  - type: air_quality\n    count: 1\n    id_prefix: "aq\\n"\n', "fleets.0.id_prefix"),
        (BASE + FLEET + 'city:\n  calendar: {heating_start: "11-01\\n"}\n', "city.calendar.heating_start"),
        (BASE + FLEET + 'port:\n  trains: {timetable: ["02:30\\n"]}\n', "port.trains.timetable"),
    ],
    ids=["topic-prefix", "client-id-prefix", "database", "id-prefix", "heating-start", "timetable"],
)
def test_a_name_with_a_final_newline_is_a_usage_error(tmp_path: Path, body: str, field: str) -> None:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(body)
    result = iotsim("validate", str(scenario))
    assert result.returncode == 2, result.stdout + result.stderr
    problems = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(problems) == 1 and field in problems[0], problems
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", ["../escape", "a/b", "back\\slash", "tab\there", "new\nline", ".hidden", "nul\u0000"])
def test_a_scenario_name_that_cannot_name_a_file_client_or_tag_is_a_usage_error(tmp_path: Path, name: str) -> None:
    scenario = tmp_path / "scenario.yaml"
    escaped = name.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\u0000", "\\0")
    scenario.write_text(f'name: "{escaped}"\nduration: 1h\n' + FLEET)  # YAML double quotes: escapes as in Python
    result = iotsim("validate", str(scenario))
    assert result.returncode == 2, result.stdout + result.stderr
    problems = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(problems) == 1 and ": name: " in problems[0], problems


def test_a_scenario_name_in_any_script_with_spaces_is_fine(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text("name: 阳泉 city day (2)\nduration: 1h\n" + FLEET)
    result = iotsim("validate", str(scenario))
    assert result.returncode == 0, result.stdout + result.stderr
