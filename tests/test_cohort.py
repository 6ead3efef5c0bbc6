"""Fleets that schedule their devices together (simulator/cohort.py): one process walks a fleet's
devices, and each device still sends exactly what it would alone; devices due at the same time
report in (phase, index) order."""

from __future__ import annotations

import math
from collections import defaultdict

import orjson
import pytest

from simulator.cohort import delay_to
from simulator.engine import run_scenario
from simulator.scenario import Scenario
from simulator.shard import Shard

COUNT = 120
CADENCE = "40ms"  # 40 phases for 120 devices: most report together with others
ALONE = 1000  # a shard of 1/1000 of fleets of COUNT devices builds one device of each
CHECKED = (1, 2, 41, 77, COUNT)


def fleets_scenario() -> Scenario:
    """The three cohort types, with device faults and AQI category events, in one world."""
    return Scenario.model_validate(
        {
            "name": "cohorts",
            "seed": 18,
            "duration": "4s",
            "fleets": [
                {"type": "electricity_meter", "count": COUNT, "cadence": CADENCE,
                 "faults": [{"kind": "spikes", "share": 0.3, "rate": 0.2}, {"kind": "dropout", "devices": ["meter-0041"], "at": "1s", "duration": "1s"}]},
                {"type": "water_meter", "count": COUNT, "cadence": CADENCE, "faults": [{"kind": "stuck", "devices": ["wmeter-0002"], "at": "2s"}]},
                {"type": "air_quality", "count": COUNT, "cadence": CADENCE, "category_events": True, "category_hold": "0s",
                 "faults": [{"kind": "drift", "devices": ["aq-0077"], "reading": "pm25", "per_day": 5_000_000.0}]},
            ],
        }
    )  # fmt: skip


def by_source(scenario: Scenario, shard: Shard | None = None) -> dict[str, list[tuple[str, bytes]]]:
    """Every message of the run, by the device (or model) it comes from, in the order sent."""
    sources: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
    run_scenario(scenario, lambda topic, payload: sources[topic.rpartition("/")[2]].append((topic, payload)), shard=shard)
    return sources


def test_a_device_in_its_fleet_sends_what_it_sends_built_alone() -> None:
    scenario = fleets_scenario()
    whole = by_source(scenario)
    assert len(whole["aq-0001"]) == 100  # every 40 ms for 4 s
    for number in CHECKED:
        alone = by_source(scenario, Shard(number % ALONE, ALONE))
        for prefix in ("meter", "wmeter", "aq"):
            device_id = f"{prefix}-{number:04d}"
            assert alone[device_id] == whole[device_id], device_id
    kinds = [orjson.loads(payload)["tags"]["kind"] for topic, payload in whole["aq-0077"] if "/events/" in topic]
    assert kinds.count("device_fault") == 1 and kinds.count("aqi_category") >= 2  # its drift raised its AQI: events from the device
    # The dropout silenced meter-0041 for a second: 25 reports of 100, and no seq was spent on them.
    seqs = [orjson.loads(payload)["seq"] for topic, payload in whole["meter-0041"] if "/events/" not in topic]
    assert seqs == list(range(75))


def test_devices_due_together_report_in_phase_then_index_order_and_on_their_own_times() -> None:
    scenario = Scenario.model_validate(
        {"name": "ties", "seed": 3, "duration": "20ms", "fleets": [{"type": "water_meter", "count": 40, "cadence": "4ms"}]}
    )
    sent: list[tuple[int, int, int]] = []  # (ts, device number, seq) in the order sent
    start_ms = round(scenario.start.timestamp() * 1000)

    def sink(topic: str, payload: bytes) -> None:
        message = orjson.loads(payload)
        sent.append((message["ts"] - start_ms, int(message["device_id"].rpartition("-")[2]), message["seq"]))

    run_scenario(scenario, sink)
    assert len(sent) == 40 * 5  # each device every 4 ms of 20
    assert sent == sorted(sent)  # by time, and at one time by index: a device's phase is its time within the cadence
    phase = {number: ts for ts, number, seq in sent if seq == 0}
    assert len(set(phase.values())) == 4  # 40 devices on 4 phases: ties at every report time
    assert all(ts == phase[number] + 4 * seq for ts, number, seq in sent)


@pytest.mark.parametrize("now, at", [(0.0, 0.123), (0.1, 0.3), (899.999, 1800.001), (1e6 + 0.001, 1e6 + 900.002), (3.3, 3.3)])
def test_the_delay_to_a_report_lands_exactly_on_its_time(now: float, at: float) -> None:
    delay = delay_to(now, at)
    assert now + delay == at
    assert math.isclose(delay, at - now, abs_tol=1e-9)
