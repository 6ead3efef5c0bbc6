"""The whole city (scenarios/yangquan-full.yaml, ~1,030,000 devices) costs minutes and gigabytes to build
today (docs/scale.md), too much for every test run. The tests that run every shipped scenario run it
scaled down instead: the same fleets, options, city and port, each fleet's count divided by SCALE
(at least one device), so each of its fleets is built and sends."""

from __future__ import annotations

from simulator.scenario import Scenario

FULL_CITY = "yangquan-full.yaml"
SCALE = 1000


def scaled_down(scenario: Scenario, factor: int = SCALE) -> Scenario:
    data = scenario.model_dump(mode="json")
    for fleet in data["fleets"]:
        fleet["count"] = max(1, fleet["count"] // factor)
    return type(scenario).model_validate(data)
