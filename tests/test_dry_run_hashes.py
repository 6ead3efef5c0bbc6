"""Every shipped scenario's messages, byte for byte, recorded: a change that alters what a scenario
generates shows here and must say so (and update the hashes) in a commit of its own."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from full_city import FULL_CITY, scaled_down
from simulator.engine import run_scenario
from simulator.scenario import Scenario, load_scenario

REPO = Path(__file__).resolve().parent.parent

# sha256 over "topic\npayload\n" of every message, and the count, at a fixed simulated span:
# 2 h for the world scenarios, 2 min for the load ones (their profile generates ~10^5 messages a minute).
RECORDED: dict[str, tuple[str, int, str]] = {
    "city-day.yaml": ("2h", 50104, "5532ce0ee0ca201479b8be08c520874d86dcb1aeb549904f35709118e74cec48"),
    "city-heating-season.yaml": ("2h", 2724, "9cb84d2fe7daf5183fd82fae4596eaa5de830e6c2967e41e2f963f5083a44145"),
    "city-incident.yaml": ("2h", 39850, "45d244d806cb598dabe4f1e6fad5febdecb787efff42dde992f139b6d006448c"),
    "load-capacity.yaml": ("2m", 157500, "92603c2fbf561513030655fe19711b9dc41a2bab9c4309be23fc0eef1082f8fe"),
    "load-ramp.yaml": ("2m", 183000, "46d94e2ea38ac8ada0cd457a13d1573c17b54dbe886d313bbb6a41ae5e522bce"),
    "load-soak.yaml": ("2m", 45041, "07157fb706572e758fde6246cd736c5561f8ffde07c80a0006198e20fe970cf6"),
    "port-day.yaml": ("2h", 9528, "a8eea1f2df91453c40362eddf0b9e3714a75dca9f802690c6d424b14ad79179e"),
    "port-peak-week.yaml": ("2h", 7614, "64409547eaca474077b1e81618886fab21d1128a21067170806aac79d73d0468"),
    "quickstart.yaml": ("2h", 1200, "9685b016c1d5e799699a7ba5ca6dc37328f263d79dec750f75d6db44086ccfab"),
    "yangquan.yaml": ("2h", 59616, "1970bd869f25ebf160a7f2875d142e7b7d1f5f8398b56d39da0f2ba0445a1f51"),
}
# The whole city (~1,030,000 devices) takes minutes and GBs to build: recorded scaled down 1:1000
# (tests/full_city.py), which still builds and runs each of its fleets with its options.
RECORDED_SCALED: dict[str, tuple[str, int, str]] = {
    FULL_CITY: ("2h", 7502, "8c8771d2580d63d342ce4349b77e3cfad46f5143e62a00e8cfd476f146383d0a"),
}


def digest(scenario_file: Path, duration: str) -> tuple[str, int]:
    return digest_of(load_scenario(scenario_file).with_overrides(duration=duration))


def digest_of(scenario: Scenario) -> tuple[str, int]:
    hasher = hashlib.sha256()
    count = 0

    def sink(topic: str, payload: bytes) -> None:
        nonlocal count
        hasher.update(topic.encode() + b"\n" + payload + b"\n")
        count += 1

    run_scenario(scenario, sink)
    return hasher.hexdigest(), count


def test_every_shipped_scenario_is_recorded() -> None:
    assert sorted([*RECORDED, *RECORDED_SCALED]) == sorted(path.name for path in (REPO / "scenarios").glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_shipped_scenario_messages_are_unchanged(name: str) -> None:
    duration, count, sha = RECORDED[name]
    assert digest(REPO / "scenarios" / name, duration) == (sha, count)


@pytest.mark.parametrize("name", sorted(RECORDED_SCALED))
def test_shipped_scenario_scaled_down_messages_are_unchanged(name: str) -> None:
    duration, count, sha = RECORDED_SCALED[name]
    assert digest_of(scaled_down(load_scenario(REPO / "scenarios" / name).with_overrides(duration=duration))) == (sha, count)
