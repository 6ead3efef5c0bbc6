"""Results to InfluxDB as the experiment runs: the `loadtest` measurement, for the pipeline board.

One point per second (tags `run`, `scenario`, `phase=interval`; fields: that second's offered,
generated, published, acknowledged, received and written messages, latency percentiles in ms, CPU and
memory of the simulator, bridge, broker and database, the machine's CPU) and one at the end
(`phase=summary`; every figure of summary.json and `passed`). A figure that was not measured (None: a
broker on another machine has no CPU here) is left out, never written as 0. Best effort: an
unreachable InfluxDB is reported once and never stops the experiment.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import requests

from simulator.ingest.lineprotocol import escape_key


class LiveResults:
    def __init__(self, influx: Any, run_id: str, scenario: str, warn: Callable[[str], None]) -> None:
        self.url = f"{influx.url.rstrip('/')}/write"
        self.params = {"db": influx.database, "precision": "ms"}
        if influx.user:
            self.params |= {"u": influx.user, "p": influx.password or ""}
        self.headers = {"Authorization": f"Token {influx.token}"} if influx.token else {}
        self.tags = f"run={escape_key(run_id)},scenario={escape_key(scenario)}"
        self.warn = warn
        self.warned = False

    def write_row(self, row: dict[str, Any], ts_ms: int) -> None:
        self.post(f"loadtest,{self.tags},phase=interval {fields(row)} {ts_ms}")

    def write_summary(self, figures: dict[str, Any], passed: bool) -> None:
        self.post(f"loadtest,{self.tags},phase=summary {fields(figures)},passed={'true' if passed else 'false'} {int(time.time() * 1000)}")

    def post(self, line: str) -> None:
        try:
            requests.post(self.url, params=self.params, data=line.encode(), headers=self.headers, timeout=2).raise_for_status()
        except requests.RequestException as error:
            if not self.warned:
                self.warned = True
                self.warn(f"note: cannot write loadtest points to {self.url} ({type(error).__name__}); the experiment goes on")


def fields(values: dict[str, Any]) -> str:
    """Numbers as float fields; None, NaN and non-numbers left out."""
    parts = [
        f"{name}={float(value)!r}"
        for name, value in values.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value) and not math.isinf(value)
    ]
    return ",".join(parts)
