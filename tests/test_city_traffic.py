"""Traffic follows the rush hours, and an incident slows its road and the neighbours only, raising
NO2 in its district and the noise beside it."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import orjson

from simulator.city.calendar import CalendarSettings, CityCalendar
from simulator.city.roads import RoadNetwork, TrafficSettings
from simulator.engine import run_scenario
from simulator.scenario import Scenario

CST = timezone(timedelta(hours=8))
START = datetime(2026, 1, 12, 0, 0, tzinfo=CST)  # a Monday
INCIDENT = {"road": "taobei-rd", "at": "8h", "duration": "1h", "capacity_drop": 0.6, "neighbour_drop": 0.2, "no2_rise_ugm3": 30}
SPEED_SD = 0.04  # the loops' measurement spread (traffic_loop.py)


def run(fleets: list[dict], duration: str, incidents: list[dict] | None = None, start: datetime = START) -> list[dict]:
    scenario = Scenario.model_validate(
        {"name": "traffic", "seed": 11, "start": start.isoformat(), "duration": duration, "fleets": fleets, "city": {"traffic": {"incidents": incidents or []}}}
    )
    messages: list[dict] = []
    run_scenario(scenario, lambda topic, payload: messages.append(orjson.loads(payload)))
    return messages


def local_hour(ts_ms: int) -> float:
    local = datetime.fromtimestamp(ts_ms / 1000, CST)
    return local.hour + local.minute / 60


def test_weekday_flow_peaks_in_the_morning_and_evening_rush_hours() -> None:
    messages = run([{"type": "traffic_loop", "count": 18, "cadence": "5m"}], "5d")  # Monday to Friday
    by_hour: dict[int, list[float]] = defaultdict(list)
    for message in messages:
        by_hour[int(local_hour(message["ts"]))].append(message["readings"]["flow_vph"])
    means = {hour: statistics.mean(values) for hour, values in by_hour.items()}
    morning = max(range(0, 12), key=means.__getitem__)
    evening = max(range(12, 24), key=means.__getitem__)
    assert 7 <= morning < 9, means
    assert 17 <= evening < 19, means
    # The peaks stand well above the middle of the day and far above the night.
    assert means[morning] > 1.3 * means[13] and means[evening] > 1.3 * means[13]
    assert means[3] < 0.1 * means[morning]


def test_rest_days_have_no_morning_rush() -> None:
    messages = run([{"type": "traffic_loop", "count": 18, "cadence": "5m"}], "2d", start=datetime(2026, 1, 17, tzinfo=CST))  # Sat, Sun
    by_hour: dict[int, list[float]] = defaultdict(list)
    for message in messages:
        by_hour[int(local_hour(message["ts"]))].append(message["readings"]["flow_vph"])
    assert statistics.mean(by_hour[8]) < statistics.mean(by_hour[11])


def by_device(messages: list[dict], kind: str) -> dict[str, list[dict]]:
    devices: dict[str, list[dict]] = defaultdict(list)
    for message in messages:
        if message["type"] == kind:
            devices[message["device_id"]].append(message)
    return devices


def in_incident(message: dict) -> bool:
    return 8.0 <= local_hour(message["ts"]) < 9.0


def test_an_incident_slows_its_road_and_neighbours_and_leaves_every_other_road_as_it_was() -> None:
    fleets = [{"type": "traffic_loop", "count": 27, "cadence": "1m"}]  # three loops per road
    calm = by_device(run(fleets, "12h"), "traffic_loop")
    crash = by_device(run(fleets, "12h", [INCIDENT]), "traffic_loop")
    road_of = {device: messages[0]["tags"]["road"] for device, messages in crash.items()}
    affected = {"taobei-rd", "desheng-st", "xinquan-rd"}  # the road and its neighbours (roads.py)

    for device, messages in crash.items():
        if road_of[device] not in affected:
            assert messages == calm[device], f"{device} on {road_of[device]} changed"

    # On the affected roads the measured speed follows the road model with the capacity taken away:
    # mean(measured / model) is 1 within 4 standard errors of the loops' 4 % spread.
    settings = TrafficSettings()
    network = RoadNetwork(settings, CityCalendar(CalendarSettings(), START))
    network.roads["taobei-rd"].take_capacity(1 - INCIDENT["capacity_drop"])
    for name in ("desheng-st", "xinquan-rd"):
        network.roads[name].take_capacity(1 - INCIDENT["neighbour_drop"])
    start_ms = int(START.timestamp() * 1000)
    for road in affected:
        ratios, slowdown = [], []
        for device in (d for d in crash if road_of[d] == road):
            for during, before in zip(crash[device], calm[device], strict=True):
                if in_incident(during):
                    model = network.state(network.roads[road], (during["ts"] - start_ms) / 1000).speed_kmh
                    ratios.append(during["readings"]["speed_kmh"] / model)
                    slowdown.append(during["readings"]["speed_kmh"] / before["readings"]["speed_kmh"])
        assert abs(statistics.mean(ratios) - 1) < 4 * SPEED_SD / math.sqrt(len(ratios)), road
        assert statistics.mean(slowdown) < (0.5 if road == "taobei-rd" else 0.95), road

    # And occupancy rises on the blocked road.
    taobei = [d for d in crash if road_of[d] == "taobei-rd"]
    occupancy = lambda runs: statistics.mean(m["readings"]["occupancy_pct"] for d in taobei for m in runs[d] if in_incident(m))  # noqa: E731
    assert occupancy(crash) > 1.3 * occupancy(calm)


def test_an_incident_is_announced_when_it_starts_and_ends() -> None:
    events = [m for m in run([{"type": "traffic_loop", "count": 1}], "12h", [INCIDENT]) if m["type"] == "events"]
    assert [(e["tags"]["phase"], e["tags"]["road"], local_hour(e["ts"])) for e in events] == [("start", "taobei-rd", 8.0), ("end", "taobei-rd", 9.0)]


def test_an_incident_raises_no2_in_its_district_and_noise_beside_its_road() -> None:
    fleets = [{"type": "air_quality", "count": 10, "cadence": "5m"}, {"type": "noise_monitor", "count": 9, "cadence": "1m", "zone_classes": ["4a"]}]
    calm, crash = run(fleets, "12h"), run(fleets, "12h", [INCIDENT])
    calm_aq, crash_aq = by_device(calm, "air_quality"), by_device(crash, "air_quality")
    for device, messages in crash_aq.items():
        for during, before in zip(messages, calm_aq[device], strict=True):
            rise = during["readings"]["no2"] - before["readings"]["no2"]
            if during["tags"]["district"] == "Chengqu" and in_incident(during):
                assert abs(rise - INCIDENT["no2_rise_ugm3"]) <= 0.1 + 1e-9  # the same station, rounded to 0.1
            else:
                assert rise == 0
    calm_noise, crash_noise = by_device(calm, "noise_monitor"), by_device(crash, "noise_monitor")
    taobei = [d for d, messages in crash_noise.items() if messages[0]["tags"]["road"] == "taobei-rd"]
    rises = [
        during["readings"]["laeq_dba"] - before["readings"]["laeq_dba"]
        for device in taobei
        for during, before in zip(crash_noise[device], calm_noise[device], strict=True)
        if in_incident(during)
    ]
    assert min(rises) >= -0.1 and statistics.mean(rises) > 2.0  # stop-and-go traffic is louder
