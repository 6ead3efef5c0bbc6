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
    "city-day.yaml": ("2h", 50091, "37b29795879308d9a526049f967f7c2432167a0f719d813c12cd60ee3ce89975"),
    "city-heating-season.yaml": ("2h", 2720, "d0e0a378e44b31d6bb7aa67d528a978ccddf43c8cb7a90fd68704135acfa50c9"),
    "city-connections.yaml": ("2h", 120000, "0c2766ec663ed031d1aea4f72a3eae494a7a22d9fb53037ec4cff6494dc75eba"),
    "city-incident.yaml": ("2h", 39842, "570beaacdfd1b7a1728690454944ac24688e7652ff224ccfbed128a247c07cd2"),
    "load-capacity.yaml": ("2m", 157500, "a63751909ec45fcd6116255d8cff892d8de34eb919280d521a9f9a683fbbcfb7"),
    "load-connections.yaml": ("2m", 3034, "4fce1030455667ed751bccc1b8e104c505dee995c4be83e3de326f7a29c22208"),
    "load-ramp.yaml": ("2m", 183000, "470b5a44c071f333a1a635ac252804d68962990d74e80035b6fa9bf0a612a769"),
    "load-soak.yaml": ("2m", 45064, "53279ea4af0aaaff2e3d0943a67ddc0fa066cb8bd32caf57841af1b05fb2fcf1"),
    "port-day.yaml": ("2h", 9521, "9f63c24f0033a696775978748cf5341806e8a7001bb8039044e1ff7fd8f9cd45"),
    "port-peak-week.yaml": ("2h", 7599, "18e872d1033cad0610d1ea5ba492b820888c6eba581c74bc195eda4853af7cb3"),
    "quickstart.yaml": ("2h", 1200, "45ee4032af368091f04af385b957c2b69637536cc9eb561b4c52b91d9704f6d7"),
    "yangquan.yaml": ("2h", 59612, "060c3f8adef447c370b2a26750f45bb8a737b26a4af064d528bcd3d2b519d62d"),
}
# The whole city (~1,030,000 devices) takes minutes and GBs to build: recorded scaled down 1:1000
# (tests/full_city.py), which still builds and runs each of its fleets with its options.
RECORDED_SCALED: dict[str, tuple[str, int, str]] = {
    FULL_CITY: ("2h", 7495, "3a89cc70742ce48b9e1f9cd571b14459ec2f9cac7e15d3929288a4ccf7305a3a"),
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

    run_scenario(unpaced(scenario), sink)
    return hasher.hexdigest(), count


def unpaced(scenario: Scenario) -> Scenario:
    """A paced scenario (city-connections: its broker outage takes wall time) at a million times real
    time: the messages do not depend on the wall clock, and a dry run needs no pacing."""
    return scenario if scenario.speed == "afap" else scenario.with_overrides(speed=1_000_000)


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
