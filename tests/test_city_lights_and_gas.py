"""Street lights are on exactly between sunset and sunrise over Yangquan; a gas monitor raises one
alarm per crossing of the 1.0 % threshold and cuts the power at 1.5 %."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import orjson
import pytest
from astral import Observer
from astral.sun import dawn, dusk, sunrise, sunset

from simulator.engine import run_scenario
from simulator.scenario import Scenario

CST = timezone(timedelta(hours=8))
YANGQUAN = Observer(37.86, 113.58)


def run(start: datetime, duration: str, fleets: list[dict], city: dict | None = None, seed: int = 5) -> list[dict]:
    scenario = Scenario.model_validate({"name": "t", "seed": seed, "start": start.isoformat(), "duration": duration, "fleets": fleets, "city": city or {}})
    messages: list[dict] = []
    run_scenario(scenario, lambda topic, payload: messages.append(orjson.loads(payload)))
    return messages


@pytest.mark.parametrize(
    ("start", "twilight"),
    [(datetime(2026, 1, 14, tzinfo=CST), "official"), (datetime(2026, 6, 20, tzinfo=CST), "official"), (datetime(2026, 3, 28, tzinfo=CST), "civil")],
    ids=["winter", "summer-solstice", "spring-civil"],
)
def test_lights_are_on_exactly_between_sunset_and_sunrise(start: datetime, twilight: str) -> None:
    messages = run(start, "3d", [{"type": "street_light", "count": 4, "cadence": "1m", "twilight": twilight}])
    morning, evening = (dawn, dusk) if twilight == "civil" else (sunrise, sunset)
    days: dict[date, tuple[datetime, datetime]] = {}
    switches = 0
    previous: dict[str, bool] = {}
    for message in messages:
        local = datetime.fromtimestamp(message["ts"] / 1000, CST)
        day = local.date()
        if day not in days:
            days[day] = (morning(YANGQUAN, day, tzinfo=CST), evening(YANGQUAN, day, tzinfo=CST))
        up, down = days[day]
        on = message["readings"]["on"]
        assert on == (local < up or local >= down), (message["device_id"], local, up, down)
        assert (message["readings"]["power_w"] > 100) == on
        switches += previous.get(message["device_id"], on) != on
        previous[message["device_id"]] = on
    assert switches == 4 * 6  # each controller: off at three sunrises, on at three sunsets


def crossings(values: list[float], threshold: float) -> list[int]:
    """Indexes where a series goes from below `threshold` to at or above it (the first reading counts if above)."""
    return [i for i, value in enumerate(values) if value >= threshold and (i == 0 or values[i - 1] < threshold)]


def test_one_gas_alarm_per_crossing_and_the_power_cut_at_1_5_percent() -> None:
    city = {
        "mine": {
            "outbursts_per_day": 1.5,
            "gas_events": [{"device": "gas-0001", "at": "2h", "peak_pct": 2.5}],
        }
    }
    messages = run(datetime(2026, 1, 14, tzinfo=CST), "4d", [{"type": "mine_gas", "count": 6, "cadence": "10s"}], city)
    readings: dict[str, list[dict]] = {}
    events: dict[tuple[str, str], list[int]] = {}
    for message in messages:
        if message["type"] == "events":
            events.setdefault((message["device_id"], message["tags"]["kind"]), []).append(message["ts"])
        else:
            readings.setdefault(message["device_id"], []).append(message)
    total_alarms = 0
    for device, series in readings.items():
        ch4 = [m["readings"]["ch4_pct"] for m in series]
        alarm_times = [series[i]["ts"] for i in crossings(ch4, 1.0)]
        assert events.get((device, "gas_alarm"), []) == alarm_times
        total_alarms += len(alarm_times)
        # Cleared at the first reading back below 1.0 after each alarm.
        cleared = [series[i]["ts"] for i in range(1, len(ch4)) if ch4[i] < 1.0 and ch4[i - 1] >= 1.0]
        assert events.get((device, "gas_alarm_cleared"), []) == cleared
        # The power is cut at the first reading at or above 1.5 % and restored with the alarm's clearing.
        cut, cuts, restores = False, [], []
        for message in series:
            value = message["readings"]["ch4_pct"]
            if value >= 1.5 and not cut:
                cut = True
                cuts.append(message["ts"])
            elif value < 1.0 and cut:
                cut = False
                restores.append(message["ts"])
            assert message["readings"]["alarm"] == (value >= 1.0)
            assert message["readings"]["power_cut"] == cut
        assert events.get((device, "gas_power_cut"), []) == cuts
        assert events.get((device, "gas_power_restored"), []) == restores
    assert events[("gas-0001", "gas_power_cut")]  # the 2.5 % emission cut the power
    assert total_alarms >= 3


def test_a_stuck_methane_sensor_raises_no_alarm() -> None:
    city = {"mine": {"outbursts_per_day": 0, "gas_events": [{"device": "gas-0001", "at": "2h", "peak_pct": 2.5}]}}
    fleet = {"type": "mine_gas", "count": 1, "cadence": "10s", "faults": [{"kind": "stuck", "devices": ["gas-0001"], "at": "1h", "reading": "ch4_pct"}]}
    messages = run(datetime(2026, 1, 14, tzinfo=CST), "6h", [fleet], city)
    kinds = [m["tags"]["kind"] for m in messages if m["type"] == "events"]
    assert kinds == ["device_fault"]
    stuck = {m["readings"]["ch4_pct"] for m in messages if m["type"] == "mine_gas" and m["ts"] >= datetime(2026, 1, 14, 1, tzinfo=CST).timestamp() * 1000}
    assert len(stuck) == 1
