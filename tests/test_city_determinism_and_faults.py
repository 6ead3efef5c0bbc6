"""Same scenario and seed, same bytes; device faults send what a failing sensor would send."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from simulator.engine import run_scenario
from simulator.scenario import Scenario, ScenarioError, load_scenario

REPO = Path(__file__).resolve().parent.parent


def raw_stream(scenario: Scenario) -> list[tuple[str, bytes]]:
    messages: list[tuple[str, bytes]] = []
    run_scenario(scenario, lambda topic, payload: messages.append((topic, payload)))
    return messages


def test_same_seed_gives_the_same_bytes_and_another_seed_differs() -> None:
    scenario = load_scenario(REPO / "scenarios/city-incident.yaml").with_overrides(duration="2h")
    first, second = raw_stream(scenario), raw_stream(scenario)
    assert first == second
    other = raw_stream(scenario.with_overrides(seed=scenario.seed + 1))
    assert len(other) > 0 and other != first


def test_a_device_stream_does_not_depend_on_the_other_fleets() -> None:
    def aq_stream(fleets: list[dict]) -> list[bytes]:
        scenario = Scenario.model_validate({"name": "d", "seed": 9, "duration": "6h", "fleets": fleets})
        return [payload for topic, payload in raw_stream(scenario) if topic.endswith("/aq-0002")]

    alone = aq_stream([{"type": "air_quality", "count": 3}])
    crowded = aq_stream([{"type": "traffic_loop", "count": 20}, {"type": "air_quality", "count": 30}, {"type": "dc_rack", "count": 10}])
    assert alone == crowded and len(alone) == 72


def run(fleet: dict, duration: str = "1d", seed: int = 4) -> dict[str, list[dict]]:
    """Messages per device id ("events" for events) of a one-fleet run starting at START."""
    scenario = Scenario.model_validate({"name": "f", "seed": seed, "start": START.isoformat(), "duration": duration, "fleets": [fleet]})
    devices: dict[str, list[dict]] = {}
    for _, payload in raw_stream(scenario):
        message = orjson.loads(payload)
        key = "events" if message["type"] == "events" else message["device_id"]
        devices.setdefault(key, []).append(message)
    return devices


START = datetime(2026, 1, 14, tzinfo=timezone(timedelta(hours=8)))
START_MS = int(START.timestamp() * 1000)
DAY_MS = 86_400_000


def days_in(message: dict) -> float:
    return (message["ts"] - START_MS) / DAY_MS


def test_dropout_silences_a_device_for_its_window_and_seq_continues() -> None:
    fleet = {"type": "water_pressure", "count": 2, "cadence": "5m", "faults": [{"kind": "dropout", "devices": ["water-0001"], "at": "3h", "duration": "2h"}]}
    healthy = run({**fleet, "faults": []})
    faulty = run(fleet)
    sent = faulty["water-0001"]
    expected = [m["readings"] for m in healthy["water-0001"] if not 3 / 24 <= days_in(m) < 5 / 24]
    assert [m["readings"] for m in sent] == expected and len(sent) == 288 - 24
    assert [m["seq"] for m in sent] == list(range(len(sent)))  # nothing was sent, so nothing is missing
    assert faulty["water-0002"] == healthy["water-0002"]
    phases = [(e["device_id"], e["tags"]["fault"], e["tags"]["phase"], days_in(e) * 24) for e in faulty["events"]]
    assert phases == [("water-0001", "dropout", "start", 3.0), ("water-0001", "dropout", "end", 5.0)]


def test_battery_death_silences_a_device_for_good() -> None:
    devices = run({"type": "parking_lot", "count": 1, "cadence": "5m", "faults": [{"kind": "battery_death", "devices": ["parking-0001"], "at": "10h"}]})
    assert len(devices["parking-0001"]) == 120  # ten hours of 5-minute reports
    assert [e["tags"]["phase"] for e in devices["events"]] == ["start"]


def test_a_stuck_reading_repeats_its_value_and_a_drifting_one_gains_per_day() -> None:
    base = {"type": "heating_substation", "count": 2, "cadence": "10m"}
    healthy = run(base, "3d")
    faulty = run(
        {
            **base,
            "faults": [
                {"kind": "stuck", "devices": ["heat-0001"], "at": "1d", "duration": "12h", "reading": "supply_temp_c"},
                {"kind": "drift", "devices": ["heat-0002"], "at": "1d", "reading": "return_temp_c", "per_day": 2.0},
            ],
        },
        "3d",
    )
    for good, bad in zip(healthy["heat-0001"], faulty["heat-0001"], strict=True):
        bad_rest = {k: v for k, v in bad["readings"].items() if k != "supply_temp_c"}
        assert bad_rest == {k: v for k, v in good["readings"].items() if k != "supply_temp_c"}
        if not 1.0 <= days_in(bad) < 1.5:
            assert bad["readings"]["supply_temp_c"] == good["readings"]["supply_temp_c"]
    window = [m["readings"]["supply_temp_c"] for m in faulty["heat-0001"] if 1.0 <= days_in(m) < 1.5]
    assert len(window) == 72 and len(set(window)) == 1
    for good, bad in zip(healthy["heat-0002"], faulty["heat-0002"], strict=True):
        error = 2.0 * (days_in(bad) - 1.0) if days_in(bad) >= 1.0 else 0.0
        assert bad["readings"]["return_temp_c"] == pytest.approx(good["readings"]["return_temp_c"] + error, abs=0.002)


def test_spikes_multiply_a_reading_in_about_the_configured_share_of_messages() -> None:
    base = {"type": "noise_monitor", "count": 4, "cadence": "1m"}
    healthy = run(base)
    faulty = run({**base, "faults": [{"kind": "spikes", "share": 1.0, "rate": 0.05, "reading": "lmax_dba", "factor": 1.5}]})
    spikes = total = 0
    for device, messages in healthy.items():
        if device == "events":
            continue
        for good, bad in zip(messages, faulty[device], strict=True):
            total += 1
            if bad["readings"]["lmax_dba"] != good["readings"]["lmax_dba"]:
                spikes += 1
                assert bad["readings"]["lmax_dba"] == pytest.approx(good["readings"]["lmax_dba"] * 1.5, abs=0.001)
    # Binomial(total, 0.05): within 4 standard deviations.
    assert abs(spikes - 0.05 * total) < 4 * (total * 0.05 * 0.95) ** 0.5


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"kind": "dropout", "devices": ["aq-0099"], "at": "1h", "duration": "1h"}, "aq-0099 not in this fleet"),
        ({"kind": "drift", "devices": ["aq-0001"], "reading": "pm1", "per_day": 1}, "'pm1' is not a reading of air_quality"),
        ({"kind": "stuck", "at": "1h"}, "either `devices`"),
        ({"kind": "melted", "devices": ["aq-0001"]}, "tag 'melted'"),
    ],
    ids=["unknown-device", "unknown-reading", "no-devices", "unknown-kind"],
)
def test_a_fault_that_does_not_fit_its_fleet_is_a_scenario_error(fault: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Scenario.model_validate({"name": "bad", "duration": "1h", "fleets": [{"type": "air_quality", "count": 3, "faults": [fault]}]})


@pytest.mark.parametrize(
    ("text", "line", "where", "message"),
    [
        ("fleets:\n  - type: traffic_loop\n    count: 2\n    roads: [taobei-rd, moon-rd]\n", 6, "fleets.0.roads", "no road 'moon-rd'"),
        (
            "fleets:\n  - type: mine_gas\n    count: 2\ncity:\n  mine:\n    gas_events:\n      - {device: gas-0009, at: 1h}\n",
            9, "city.mine.gas_events.0.device", "'gas-0009' is not a mine_gas device",
        ),
        ("fleets:\n  - type: air_quality\n    count: 1\ncity:\n  traffic:\n    incidents:\n      - {road: moon-rd, at: 1h}\n", 9, "city.traffic.incidents.0.road", "no road 'moon-rd'"),
        ("fleets:\n  - type: air_quality\n    count: 1\ncity:\n  calendar:\n    heating_start: 11/01\n", 8, "city.calendar.heating_start", "MM-DD"),
    ],
    ids=["unknown-road", "unknown-gas-monitor", "incident-on-unknown-road", "bad-heating-date"],
)  # fmt: skip
def test_a_city_section_that_does_not_fit_is_reported_at_its_line(tmp_path: Path, text: str, line: int, where: str, message: str) -> None:
    path = tmp_path / "city.yaml"
    path.write_text("name: bad\nduration: 1h\n" + text)
    with pytest.raises(ScenarioError) as error:
        load_scenario(path)
    assert any(problem.startswith(f"{path}:{line}: {where}") and message in problem for problem in error.value.problems), error.value.problems


@pytest.mark.parametrize("name", ["city-day", "city-heating-season", "city-incident"])
def test_city_scenarios_survive_command_line_overrides_unchanged(name: str) -> None:
    scenario = load_scenario(REPO / f"scenarios/{name}.yaml")
    copy = scenario.with_overrides(seed=scenario.seed)  # dumped to JSON and validated again
    assert copy.fleets == scenario.fleets and copy.city == scenario.city


def test_the_city_keeps_beijing_time_however_the_start_is_written() -> None:
    fleets = [{"type": "traffic_loop", "count": 3}, {"type": "street_light", "count": 2}, {"type": "air_quality", "count": 2}]
    local = Scenario.model_validate({"name": "tz", "start": "2026-01-14T06:00:00+08:00", "duration": "3h", "fleets": fleets})
    utc = Scenario.model_validate({"name": "tz", "start": "2026-01-13T22:00:00Z", "duration": "3h", "fleets": fleets})
    assert raw_stream(local) == raw_stream(utc)
