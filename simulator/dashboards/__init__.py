"""Grafana dashboards as code, with grafana-foundation-sdk.

Modules: `influxql` (the InfluxQL query and annotation types the SDK lacks), `panels` (panel kinds and
the `Trend` table row most panels are), `common` (board frame, event annotations, variables, device
explorer), `city`, `port`, `pipeline` (the three boards), `build` (JSON out and the staleness check),
`cli` (`iotsim dashboards build [--check]`). docs/stack.md describes the boards and the compose stack.
"""

from pathlib import Path

DASHBOARDS_DIR = Path(__file__).resolve().parent.parent.parent / "dashboards"
# Here, not in build.py, so `iotsim` names --out's default without importing the SDK and the boards.
JSON_DIR = DASHBOARDS_DIR / "json"
