"""The port model: boxes are conserved, the yard never overflows, the default KPIs fall in the
ranges shared/domain.md cites, and a reefer left unplugged raises exactly one alarm."""

from __future__ import annotations

import math
import random
from collections.abc import Generator
from pathlib import Path

import orjson
import pytest
import simpy

from simulator.builder import build_world
from simulator.port.containers import Box, iso6346
from simulator.port.model import port_of
from simulator.port.reefers import Ambient, ReeferRack, ReeferSettings
from simulator.port.sensors.reefer import report
from simulator.port.settings import PortSettings
from simulator.randomness import stream
from simulator.scenario import Scenario, load_scenario
from simulator.telemetry import Telemetry
from simulator.world import World

REPO = Path(__file__).resolve().parent.parent
DAY = 86400.0


def world_of(scenario: Scenario) -> tuple[World, list[tuple[str, bytes]]]:
    messages: list[tuple[str, bytes]] = []
    world = build_world(scenario, simpy.Environment(), lambda topic, payload: messages.append((topic, payload)))
    return world, messages


def test_boxes_are_conserved_and_the_yard_never_exceeds_capacity_through_a_peak_week() -> None:
    # The peak week fills the import blocks: the capacity bound is reached, not just respected.
    scenario = load_scenario(REPO / "scenarios/port-peak-week.yaml").with_overrides(fleets=[{"type": "yard_block", "count": 6}])
    world, _ = world_of(scenario)
    port = port_of(world)
    fullest: list[float] = []

    def audit(env: simpy.Environment) -> Generator[simpy.Event, None, None]:
        while True:
            counted = sum(len(block.boxes) for block in port.yard.blocks) + len(port.in_handling) + len(port.in_customs)
            assert port.initial_boxes + port.entered - port.left == counted, f"at {env.now} s"
            for block in port.yard.blocks:
                stacked = sum(box.teu for box in block.boxes.values())
                assert stacked <= block.space.level <= block.capacity_teu, f"{block.name} at {env.now} s"
                assert all(box.block is block for box in block.boxes.values())
            fullest.append(max(block.space.level / block.capacity_teu for block in port.yard.blocks))
            yield env.timeout(900.0)

    world.env.process(audit(world.env))
    world.env.run(until=scenario.duration)
    assert len(fullest) == 7 * 96
    assert max(fullest) > 0.98
    assert port.entered > 4000 and port.left > 4000  # boxes really flowed both ways


def test_default_kpis_fall_in_the_domain_ranges() -> None:
    # Three days of the defaults (port-day.yaml's port section) and one sensor fleet.
    scenario = load_scenario(REPO / "scenarios/port-day.yaml").with_overrides(duration="3d", fleets=[{"type": "yard_block", "count": 6}])
    world, _ = world_of(scenario)
    port = port_of(world)
    world.env.run(until=scenario.duration)
    k = port.kpis

    def moves_per_hour(machines: list) -> float:
        return sum(c.moves for c in machines) / (sum(c.busy_s for c in machines) / 3600.0)

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    assert 20 <= moves_per_hour(port.rmgs.machines) <= 30  # RMG ~20-30 moves/hour
    assert 12 <= moves_per_hour(port.reach_stackers.machines) <= 20  # reach stacker ~12-20
    assert 3 <= mean(k.dwell_import_s) / DAY <= 7  # import dwell ~3-7 days
    assert 1 <= mean(k.dwell_export_s) / DAY <= 3  # export dwell ~1-3 days
    lanes = port.gate_in.lanes + port.gate_out.lanes
    assert 60 <= sum(lane.busy_s for lane in lanes) / sum(lane.served for lane in lanes) <= 180  # gate ~1-3 min a truck
    assert 10 * 60 <= mean(k.truck_turnaround_s) <= 60 * 60  # a truck is in and out within the hour
    assert k.trains_arrived == 12 and k.trains_departed in (11, 12)  # 4 a day; the last may still be working
    # Dwell is skewed (log-normal): the 95th percentile is well above the mean.
    assert sorted(k.dwell_import_s)[int(0.95 * len(k.dwell_import_s))] > 1.5 * mean(k.dwell_import_s)


def test_truck_arrivals_follow_the_hourly_profile() -> None:
    # A week of appointments, without the corridor trucks (they arrive whenever the road brings them).
    scenario = load_scenario(REPO / "scenarios/port-day.yaml").with_overrides(
        duration="7d", fleets=[{"type": "yard_block", "count": 1}], port={"corridor": {"trucks": 0}}
    )
    world, _ = world_of(scenario)
    port = port_of(world)
    world.env.run(until=scenario.duration)
    profile = port.settings.trucks.hourly_profile
    observed = [0] * 24
    for t in port.gate_in.arrivals:
        observed[int((port.start_local_s + t) / 3600.0) % 24] += 1
    n = sum(observed)
    assert n > 3000
    expected = [n * w / sum(profile) for w in profile]
    chi2 = sum((o - e) ** 2 / e for o, e in zip(observed, expected))
    assert chi2 < 49.73, chi2  # chi-square, 23 degrees of freedom, p = 0.001


def test_customs_holds_its_share_of_imports_and_releases_them_after_inspection() -> None:
    scenario = load_scenario(REPO / "scenarios/port-day.yaml").with_overrides(duration="4d", fleets=[{"type": "yard_block", "count": 1}])
    world, messages = world_of(scenario)
    port = port_of(world)
    world.env.run(until=scenario.duration)
    events = [orjson.loads(payload) for topic, payload in messages if "/events/customs_" in topic]
    holds = [e for e in events if e["tags"]["kind"] == "customs_hold"]
    releases = [e for e in events if e["tags"]["kind"] == "customs_release"]
    # Binomial(n imports, 5%): within 3.3 standard deviations (99.9%).
    n, p = port.kpis.imports_declared, port.settings.customs.selection_rate
    assert n > 1000
    assert abs(len(holds) - n * p) <= 3.3 * math.sqrt(n * p * (1 - p))
    still_held = [box for block in port.yard.blocks for box in block.boxes.values() if box.hold is not None]
    assert len(holds) - len(releases) == len(still_held) + len(port.in_customs)
    assert all(1.0 <= r["readings"]["held_h"] for r in releases)


def monitor_a_reefer(unplugged_for: float, ambient_c: float = -4.0) -> tuple[list[dict], float, ReeferSettings]:
    """One frozen box on a monitored plug point, unplugged from 1 h for `unplugged_for` seconds."""
    env = simpy.Environment()
    messages: list[dict] = []
    telemetry = Telemetry(env, 1768320000000, "t", lambda topic, payload: messages.append(orjson.loads(payload)))
    settings = ReeferSettings(ambient_c=ambient_c, ambient_swing_c=0.0)
    rack = ReeferRack(env, settings, Ambient(ambient_c, 0.0, 0.0), stream_for("technicians"))
    box = Box(iso6346("CSNU", 1), 2, "import", "reefer", 20.0, 0)
    box.reefer = rack.new_unit(stream_for("unit"), 0.0, powered=True)
    box.reefer.setpoint_c, box.reefer.temp_c = -20.0, -20.0
    rack.plug_initial(box)
    device = telemetry.register("rf-1", "reefer", "port")
    env.process(report(env, rack.plugs[0], rack, device, telemetry, stream_for("rf-1"), None, 300.0, 0.0))

    def technician() -> Generator[simpy.Event, None, None]:
        yield env.timeout(3600.0)
        rack.unplug(box, leaving=False)
        yield env.timeout(unplugged_for)
        rack.set_power(box, True)

    env.process(technician())
    env.run(until=12 * 3600.0)
    # When the box air leaves the band: -20 drifting toward the ambient with the drift time constant.
    gap = ambient_c - (-20.0)
    leaves_band = 3600.0 + settings.drift_time_constant * math.log(gap / (gap - settings.alarm_band_c))
    return messages, leaves_band, settings


def stream_for(name: str) -> random.Random:
    return stream(5, name)


def test_a_reefer_unplugged_longer_than_the_alarm_delay_raises_exactly_one_alarm() -> None:
    messages, leaves_band, settings = monitor_a_reefer(unplugged_for=3 * 3600.0)
    alarms = [m for m in messages if m["type"] == "events" and m["tags"]["kind"] == "reefer_alarm"]
    cleared = [m for m in messages if m["type"] == "events" and m["tags"]["kind"] == "reefer_alarm_cleared"]
    assert len(alarms) == 1 and len(cleared) == 1
    raised_s = (alarms[0]["ts"] - 1768320000000) / 1000.0
    # Readings every 5 min: out of band seen within one reading, alarm at the first reading after the delay.
    assert leaves_band + settings.alarm_delay <= raised_s <= leaves_band + settings.alarm_delay + 2 * 300.0
    assert alarms[0]["readings"]["plugged"] is False
    readings = [m["readings"] for m in messages if m["type"] == "reefer"]
    assert len(readings) == 12 * 12
    assert any(r["alarm"] for r in readings) and not readings[-1]["alarm"]  # pulled back into band
    unplugged = [r["return_temp_c"] for r in readings if not r["plugged"]]
    assert unplugged[-1] > unplugged[0] + settings.alarm_band_c  # it drifted toward the -4 °C outside


def test_a_reefer_unplugged_briefly_raises_no_alarm() -> None:
    messages, leaves_band, settings = monitor_a_reefer(unplugged_for=20 * 60.0)
    assert leaves_band > 3600.0 + 20 * 60.0  # it never left the band
    assert not [m for m in messages if m["type"] == "events"]


def test_port_fleets_cannot_instrument_more_than_the_port_has() -> None:
    with pytest.raises(ValueError, match=r"fleets\.1\.count: the port has 4 to instrument \(port\.gate\)"):
        Scenario.model_validate(
            {"name": "x", "duration": "1h", "fleets": [{"type": "gate_lane", "count": 2}, {"type": "gate_lane", "count": 3, "id_prefix": "g2"}]}
        )


def test_port_day_writes_out_every_default() -> None:
    # port-day.yaml documents the defaults: its port section must be exactly them.
    assert load_scenario(REPO / "scenarios/port-day.yaml").port == PortSettings()


def test_container_numbers_carry_the_iso_6346_check_digit() -> None:
    assert iso6346("CSQU", 305438) == "CSQU3054383"  # the standard's own example
