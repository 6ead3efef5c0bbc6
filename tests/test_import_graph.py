"""Imports point one way: no module of `simulator` imports, even inside a function, a module that
imports it back (tests/importgraph.py reads the imports from the source)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import importgraph

REPO = Path(__file__).resolve().parent.parent


def test_simulator_has_no_import_cycle() -> None:
    edges = importgraph.graph(REPO, "simulator")
    assert len({edge.source for edge in edges}) > 50  # the walk found the package's modules
    found = importgraph.cycles(edges)
    assert not found, "import cycles (move the shared code down a layer):\n" + "\n".join(map(importgraph.describe, found))


def test_the_port_model_and_its_sensors_import_one_way() -> None:
    edges = importgraph.graph(REPO, "simulator")
    sensors = {f"simulator.port.sensors.{name}" for name in ("port_crane", "yard_block", "gate_lane", "reefer", "truck_gps")}
    into_sensors = [edge for edge in edges if edge.target in sensors and edge.source not in {"simulator.catalogue"}]
    assert into_sensors == []  # only the catalogue knows them
    assert all(
        any(edge.source == sensor and edge.target == "simulator.port.model" and edge.kind == "module" for edge in edges) for sensor in sensors
    )  # port_of at the top of each sensor module


def write_package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_the_checker_names_a_cycle_between_two_modules(tmp_path: Path) -> None:
    write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import B\n\nA = 1\n",
            "pkg/b.py": "from pkg.a import A\n\nB = 2\n",
            "pkg/c.py": "from pkg.a import A\n",  # imports into the cycle, is not in it
        },
    )
    found = importgraph.cycles(importgraph.graph(tmp_path, "pkg"))
    assert [[(edge.source, edge.target, edge.kind) for edge in cycle] for cycle in found] == [
        [("pkg.a", "pkg.b", "module"), ("pkg.b", "pkg.a", "module")]
    ]
    message = importgraph.describe(found[0])
    assert message.splitlines()[0] == "pkg.a -> pkg.b -> pkg.a"
    assert "pkg/a.py:1" in message and "pkg/b.py:1" in message
    # ... and it is a real cycle: Python cannot import the pair.
    result = subprocess.run([sys.executable, "-c", "import pkg.a"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1 and "partially initialized module" in result.stderr


def test_an_import_inside_a_function_still_closes_a_cycle(tmp_path: Path) -> None:
    write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/model.py": "from pkg.sensor import build\n",
            "pkg/sensor.py": "def build():\n    from pkg.model import port_of  # to avoid a cycle\n    return port_of\n",
        },
    )
    found = importgraph.cycles(importgraph.graph(tmp_path, "pkg"))
    assert [[(edge.source, edge.target, edge.kind) for edge in cycle] for cycle in found] == [
        [("pkg.model", "pkg.sensor", "module"), ("pkg.sensor", "pkg.model", "deferred")]
    ]


def test_a_cycle_of_annotations_only_is_listed_apart(tmp_path: Path) -> None:
    write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/world.py": """
                from __future__ import annotations
                from typing import TYPE_CHECKING

                if TYPE_CHECKING:
                    from pkg.scenario import Scenario
            """,
            "pkg/scenario.py": "from pkg.world import *\n",
        },
    )
    edges = importgraph.graph(tmp_path, "pkg")
    assert importgraph.cycles(edges) == []
    typing_only = importgraph.cycles(edges, typing=True)
    assert [[(edge.source, edge.target, edge.kind) for edge in cycle] for cycle in typing_only] == [
        [("pkg.scenario", "pkg.world", "module"), ("pkg.world", "pkg.scenario", "typing")]
    ]


def test_relative_and_package_imports_are_resolved(tmp_path: Path) -> None:
    write_package(
        tmp_path,
        {
            "pkg/__init__.py": "from .sub import thing\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/thing.py": "from .. import other\n",
            "pkg/other.py": "import pkg.sub.thing\n",
        },
    )
    edges = {(edge.source, edge.target) for edge in importgraph.graph(tmp_path, "pkg")}
    assert edges == {
        ("pkg", "pkg.sub"), ("pkg", "pkg.sub.thing"),
        ("pkg.sub.thing", "pkg.other"),
        ("pkg.other", "pkg.sub"), ("pkg.other", "pkg.sub.thing"),
    }  # fmt: skip
    cycle = importgraph.cycles(importgraph.graph(tmp_path, "pkg"))
    assert [[edge.source for edge in found] for found in cycle] == [["pkg.other", "pkg.sub.thing"]]
