"""`iotsim`'s start-up imports only what a command runs with: every `iotsim` process builds all the
commands' options, so a module imported at the top of simulator/cli.py is paid by every command
(docs/architecture.md, Start-up). Each test imports in a fresh interpreter and reads its sys.modules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import child_env

REPO = Path(__file__).resolve().parent.parent

# What no command needs before it runs: the device types and the scenario models, the engine, the
# bridge, the load runner, the Grafana boards, and the libraries only they use.
NOT_AT_START = {
    "simulator.catalogue", "simulator.scenario", "simulator.engine", "simulator.builder", "simulator.stack", "simulator.influx",
    "simulator.ingest.bridge", "simulator.transport.mqtt", "simulator.load.runner", "simulator.dashboards.build", "simulator.verify",
    "paho", "requests", "simpy", "ruamel", "astral", "grafana_foundation_sdk", "psutil", "hdrh", "numpy", "matplotlib",
}  # fmt: skip
# What checking a scenario file does not need: talking to a broker or a database, running or drawing
# anything (simulator/stack.py's paths, for the broker's queue bound, it does).
NOT_TO_VALIDATE = {
    "simulator.engine", "simulator.builder", "simulator.influx", "simulator.ingest.bridge", "simulator.transport.mqtt",
    "simulator.load.runner", "simulator.dashboards.build", "simulator.verify",
    "paho", "requests", "grafana_foundation_sdk", "psutil", "hdrh", "numpy", "matplotlib",
}  # fmt: skip


def modules_after(code: str) -> tuple[set[str], str]:
    """The modules (and their top-level packages) loaded once `code` ran, and what it printed before."""
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO, env=child_env())
    assert result.returncode == 0, result.stderr
    *printed, last = result.stdout.splitlines()
    names = set(json.loads(last))
    return names | {name.split(".")[0] for name in names}, "\n".join(printed)


def test_importing_the_cli_loads_no_model_server_client_or_engine() -> None:
    loaded, _ = modules_after("import simulator.cli")
    assert "simulator.ingest.settings" in loaded and "typer" in loaded  # the options every command builds
    assert sorted(loaded & NOT_AT_START) == []


def test_validate_loads_the_scenario_models_and_nothing_that_runs_or_connects() -> None:
    code = (
        "from simulator.cli import app\n"
        "try:\n"
        "    app(['validate', 'scenarios/quickstart.yaml'])\n"
        "except SystemExit as end:\n"
        "    assert end.code == 0, end.code\n"
    )
    loaded, printed = modules_after(code)
    assert printed == "scenarios/quickstart.yaml: ok (quickstart: 50 devices, 1h, speed afap)"
    assert {"simulator.scenario", "simulator.catalogue"} <= loaded  # it did validate, with every device type
    assert sorted(loaded & NOT_TO_VALIDATE) == []
