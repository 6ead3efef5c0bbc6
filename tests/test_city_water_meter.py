"""Household water meters: use follows the household's day (morning and evening peaks, almost none
at night) and the register adds up what the meter reported (simulator/city/water_meter.py)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import orjson

from simulator.city.water_meter import MEAN_LPH
from simulator.engine import run_scenario
from simulator.scenario import Scenario

CST = timezone(timedelta(hours=8))
START = datetime(2026, 1, 14, tzinfo=CST)  # a Wednesday, a workday
METERS = 200
CADENCE_S = 900.0


def one_workday() -> list[dict]:
    scenario = Scenario.model_validate(
        {"name": "water", "seed": 5, "start": START.isoformat(), "duration": "1d", "fleets": [{"type": "water_meter", "count": METERS, "cadence": "15m"}]}
    )
    messages: list[dict] = []
    run_scenario(scenario, lambda topic, payload: messages.append(orjson.loads(payload)))
    return messages


def local_hour(message: dict) -> int:
    return datetime.fromtimestamp(message["ts"] / 1000, CST).hour


def test_household_water_use_peaks_morning_and_evening_and_nearly_stops_at_night() -> None:
    messages = one_workday()
    assert len(messages) == METERS * 96  # duration / cadence each
    flow: dict[int, list[float]] = defaultdict(list)
    for message in messages:
        flow[local_hour(message)].append(message["readings"]["flow_lph"])
    mean = {hour: statistics.mean(values) for hour, values in flow.items()}
    night = statistics.mean([mean[2], mean[3]])
    assert mean[7] > 5 * night and mean[19] > 5 * night
    assert mean[7] > mean[10] and mean[19] > mean[15]
    # The day's mean per household: ~325 L a day (MEAN_LPH), the households' spread (log-sd 0.4) and
    # the wander (log-sd 0.3) raise the mean by exp(0.08 + 0.045) ~ 13 %; 200 households: ±10 %.
    day_mean = statistics.mean(value for values in flow.values() for value in values)
    assert 0.9 * MEAN_LPH * 1.13 < day_mean < 1.1 * MEAN_LPH * 1.13


def test_the_register_adds_each_reported_flow_over_its_interval() -> None:
    by_meter: dict[str, list[dict]] = defaultdict(list)
    for message in one_workday():
        by_meter[message["device_id"]].append(message["readings"])
    for readings in by_meter.values():
        for before, after in zip(readings, readings[1:]):
            added_l = (after["volume_m3"] - before["volume_m3"]) * 1000
            # flow_lph is rounded to 0.1 L/h and the register to 1 L: one interval adds flow x 0.25 h.
            assert abs(added_l - after["flow_lph"] * CADENCE_S / 3600) <= 0.1 * 0.25 + 1.0
