"""Build the boards to JSON under dashboards/json/, or check that the committed files are current.

The JSON is what Grafana's file provisioning loads (dashboards/provisioning/dashboards/yangquan.yaml).
Output is deterministic (sorted keys, two-space indent, trailing newline), so a diff shows what a
change to the generator changed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from simulator.dashboards import JSON_DIR, city, pipeline, port

BOARDS: dict[str, Callable[[], Dashboard]] = {
    "city.json": city.build,
    "port.json": port.build,
    "pipeline.json": pipeline.build,
}
"""File name → the function that builds the board. city.json is Grafana's home dashboard."""


def render(builder: Dashboard) -> str:
    model = builder.build()
    data = json.loads(json.dumps(model, cls=JSONEncoder))
    number_panels(data)
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def number_panels(data: dict) -> None:
    """Panel ids 1, 2, ... in grid order: Grafana needs unique ids to link and to view a panel."""
    for number, panel in enumerate(data.get("panels", []), start=1):
        panel["id"] = number


def render_all() -> dict[str, str]:
    return {name: render(build()) for name, build in BOARDS.items()}


def write(directory: Path = JSON_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_all().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale(directory: Path = JSON_DIR) -> list[str]:
    """Problems, one line each, with the committed JSON: missing, different from the generator, or not generated."""
    problems = []
    expected = render_all()
    for name, text in expected.items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{path}: missing; run `iotsim dashboards build`")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path}: stale (differs from simulator/dashboards/); run `iotsim dashboards build`")
    for path in sorted(directory.glob("*.json")):
        if path.name not in expected:
            problems.append(f"{path}: not produced by the generator; delete it or add it to simulator/dashboards/build.py")
    return problems
