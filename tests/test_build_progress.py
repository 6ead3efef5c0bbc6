"""Building a large world says how far it has got: the builder counts devices built of the fleets'
total, and `iotsim run` shows that as a bar once the build has taken a second (simulator/builder.py,
simulator/cli.py's BuildBar)."""

from __future__ import annotations

import hashlib
import io

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from simulator.builder import PROGRESS_EVERY
from simulator.cli import BUILD_BAR_AFTER_S, BuildBar
from simulator.engine import run_scenario
from simulator.scenario import Scenario

STATIONS = 2 * PROGRESS_EVERY + 500
CRANES = 6


def world() -> Scenario:
    return Scenario.model_validate(
        {
            "name": "building",
            "duration": "10m",
            "fleets": [{"type": "air_quality", "count": STATIONS, "cadence": "5m"}, {"type": "port_crane", "count": CRANES, "cadence": "1m"}],
        }
    )


def digest_of_run(**options: object) -> tuple[str, int]:
    hasher = hashlib.sha256()

    def sink(topic: str, payload: bytes) -> None:
        hasher.update(topic.encode() + b"\n" + payload + b"\n")

    result = run_scenario(world(), sink, **options)  # type: ignore[arg-type]
    return hasher.hexdigest(), result.generated


def test_the_build_reports_devices_built_of_the_total_at_the_start_every_thousand_and_at_the_end() -> None:
    calls: list[tuple[int, int]] = []
    run_scenario(world(), lambda topic, payload: None, build_progress=lambda built, total: calls.append((built, total)))
    total = STATIONS + CRANES
    assert calls == [(0, total), (PROGRESS_EVERY, total), (2 * PROGRESS_EVERY, total), (total, total)]


def test_watching_the_build_changes_no_message() -> None:
    assert digest_of_run(build_progress=lambda built, total: None) == digest_of_run()


class Clock:
    """The wall clock the bar reads, set by the test."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def rendered(progress: Progress, screen: io.StringIO) -> str:
    progress.refresh()
    return screen.getvalue()


def test_the_build_bar_shows_devices_built_of_total_once_the_build_has_taken_a_second() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120)
    clock = Clock()
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[simulated]}"), console=console, auto_refresh=False) as progress:
        bar = BuildBar(progress, "city", clock)
        clock.now += BUILD_BAR_AFTER_S / 2
        bar(1000, 550_976)
        assert "building" not in rendered(progress, screen)  # a short build shows no bar
        clock.now += BUILD_BAR_AFTER_S
        bar(2000, 550_976)
        assert "city: building" in rendered(progress, screen)
        assert "2,000/550,976 devices" in screen.getvalue()
        bar(550_976, 550_976)
        assert "550,976/550,976 devices" in rendered(progress, screen)
