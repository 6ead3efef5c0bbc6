"""Load profiles, thresholds and the load: section of scenario files."""

from __future__ import annotations

import math

import pytest
from conftest import iotsim

from simulator.load.profile import Constant, Ramp, Schedule, Segment, Soak, Spike, Stages, Step, schedule_of
from simulator.load.thresholds import evaluate, parse_threshold


def test_each_profile_offers_the_area_under_its_target() -> None:
    cases = [
        (Constant(kind="constant", target=100, duration=10), 10, 1000),
        (Ramp(kind="ramp", start=0, target=200, duration=10, hold=5), 15, 1000 + 1000),
        (Step(kind="step", start=100, step=50, steps=3, hold=4), 12, 4 * (100 + 150 + 200)),
        (Spike(kind="spike", base=10, peak=500, before=5, spike=2, after=5), 12, 10 * 10 + 500 * 2),
        (Soak(kind="soak", target=300, duration=60, warmup=10), 70, 1500 + 18000),
        (Stages(kind="stages", start=50, stages=[{"duration": 4, "target": 150}, {"duration": 2, "target": 0}]), 6, 400 + 150),
    ]
    for profile, duration, total in cases:
        schedule = schedule_of(profile)
        assert schedule.duration == duration, profile
        assert schedule.total == pytest.approx(total), profile
        assert schedule.cumulative(duration) == pytest.approx(total)


def test_time_of_inverts_cumulative_on_ramps_up_and_down() -> None:
    schedule = Schedule([Segment(10, 0, 300), Segment(5, 300, 300), Segment(10, 300, 20)])
    for count in [0.5, 1, 17.3, 1499.9, 1500, 2000, 3000.5, 4000, schedule.total]:
        assert schedule.cumulative(schedule.time_of(count)) == pytest.approx(count, rel=1e-9, abs=1e-6)
    assert math.isinf(schedule.time_of(schedule.total + 1))
    assert schedule.target(5) == pytest.approx(150)
    assert schedule.target(20) == pytest.approx(300 - 280 * 0.5)


def test_thresholds_parse_and_judge_like_k6() -> None:
    figures = {"p99_latency_ms": 120.0, "loss": 0.0, "written_rate": 990.0, "offered_rate": 1000.0}
    assert evaluate(parse_threshold("p99_latency_ms < 250"), figures).passed
    assert not evaluate(parse_threshold("p99_latency_ms < 100"), figures).passed
    assert evaluate(parse_threshold("loss == 0"), figures).passed
    assert evaluate(parse_threshold("written_rate >= 0.99 * offered_rate"), figures).passed
    assert not evaluate(parse_threshold("written_rate >= offered_rate * 0.995"), figures).passed
    verdict = evaluate(parse_threshold("max_latency_ms < 1"), figures)  # not measured: fails
    assert not verdict.passed and "not measured" in verdict.line()
    # summary.json's figures hold None where nothing was measured (no point written: no latency)
    for text in ("p99_latency_ms < 250", "max_latency_ms >= 2 * p99_latency_ms"):
        verdict = evaluate(parse_threshold(text), figures | {"p99_latency_ms": None, "max_latency_ms": 300.0})
        assert not verdict.passed and "not measured" in verdict.line()


def test_the_servers_and_the_machine_have_cpu_and_memory_thresholds() -> None:
    figures = {"broker_cpu_percent": 11.0, "database_rss_mb": 140.0, "machine_cpu_percent": 180.0, "simulator_cpu_percent": 85.0}
    assert evaluate(parse_threshold("broker_cpu_percent < 150"), figures).passed
    assert evaluate(parse_threshold("database_rss_mb <= 500"), figures).passed
    assert evaluate(parse_threshold("machine_cpu_percent > 2 * simulator_cpu_percent"), figures).passed
    # a database that was not sampled (not on this machine) fails its threshold rather than passing on 0
    assert not evaluate(parse_threshold("database_cpu_percent < 150"), figures).passed
    with pytest.raises(ValueError, match="compare like with like"):
        parse_threshold("broker_rss_mb < broker_cpu_percent")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("p99_latency < 250", "unknown metric 'p99_latency'"),
        ("loss = 0", "is not a threshold"),
        ("written_rate >= 0.99 * offered", "compare like with like (e.g. offered_rate)"),
        ("loss == lots", "unknown metric 'lots'"),
    ],
)
def test_bad_thresholds_are_explained(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_threshold(text)


def test_a_bad_load_section_is_one_line_per_problem_with_its_line_number(tmp_path) -> None:
    scenario = tmp_path / "bad.yaml"
    scenario.write_text(
        "name: bad\nduration: 1m\nfleets:\n  - {type: load_probe, count: 5}\nload:\n"
        "  profile: {kind: ramp, target: 100, duration: 10s}\n  thresholds:\n    - loss == 0\n    - p99_latency < 250\n"
    )
    result = iotsim("load", str(scenario))
    assert result.returncode == 2
    assert result.stderr.strip() == f"{scenario}:9: load.thresholds.1: unknown metric 'p99_latency'; known: " + result.stderr.split("known: ")[1].strip()
    assert "Traceback" not in result.stderr


def test_a_scenario_without_load_section_is_refused_in_one_line(tmp_path) -> None:
    scenario = tmp_path / "plain.yaml"
    scenario.write_text("name: plain\nduration: 1m\nfleets:\n  - {type: air_quality, count: 2}\n")
    result = iotsim("load", str(scenario))
    assert result.returncode == 2
    assert result.stderr.strip() == f"{scenario}: scenario 'plain' has no load: section; see docs/load.md"


def test_spans_above_are_exactly_when_the_target_exceeds_a_device_index() -> None:
    """unit: connections: device d is connected in the spans where the target exceeds d."""
    ramp = schedule_of(Ramp(kind="ramp", start=0, target=10, duration=10, hold=5))
    assert ramp.spans_above(0) == [(0.0, 15.0)]
    assert ramp.spans_above(3) == [(3.0, 15.0)]
    assert ramp.spans_above(10) == []  # the target never exceeds 10
    spike = schedule_of(Spike(kind="spike", base=2, peak=5, before=3, spike=2, after=3))
    assert spike.spans_above(1) == [(0.0, 8.0)] and spike.spans_above(2) == [(3.0, 5.0)] and spike.spans_above(5) == []
    up_down = schedule_of(Stages(kind="stages", stages=[{"duration": 10, "target": 10}, {"duration": 10, "target": 0}, {"duration": 5, "target": 4}]))
    assert up_down.spans_above(5) == [(5.0, 15.0)]
    assert up_down.spans_above(2) == [(2.0, 18.0), pytest.approx((22.5, 25.0))]
    for level in (0, 2, 5, 9):  # every span agrees with target() just inside and just outside it
        for on, off in up_down.spans_above(level):
            assert up_down.target(on + 1e-6) > level and up_down.target(off - 1e-6) > level
            assert on == 0 or up_down.target(on - 1e-6) <= level
            assert off == up_down.duration or up_down.target(off + 1e-6) <= level
