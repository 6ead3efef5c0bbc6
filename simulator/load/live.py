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

from simulator.influx import InfluxClient
from simulator.ingest.lineprotocol import escape_key


ROWS_PER_POST = 100  # about 100 kB: well within write_point's 2 s (a soak's half hour is 1,800 rows)


class LiveResults:
    def __init__(self, client: InfluxClient, run_id: str, scenario: str, warn: Callable[[str], None]) -> None:
        self.client = client
        self.tags = f"run={escape_key(run_id)},scenario={escape_key(scenario)}"
        self.warn = warn

    def write_row(self, row: dict[str, Any], ts_ms: int) -> None:
        self.post(f"loadtest,{self.tags},phase=interval {fields(row)} {ts_ms}")

    def write_rows(self, rows: list[dict[str, Any]], start_ms: int) -> None:
        """The rows, each at start + its second: the same points as write_row's, replaced (ROWS_PER_POST a request)."""
        for first in range(0, len(rows), ROWS_PER_POST):
            chunk = rows[first : first + ROWS_PER_POST]
            self.post("\n".join(f"loadtest,{self.tags},phase=interval {fields(row)} {start_ms + int(row['second']) * 1000}" for row in chunk))

    def write_summary(self, figures: dict[str, Any], passed: bool) -> None:
        self.post(f"loadtest,{self.tags},phase=summary {fields(figures)},passed={'true' if passed else 'false'} {int(time.time() * 1000)}")

    def post(self, line: str) -> None:
        self.client.write_point(line, warn=self._note)

    def _note(self, reason: str) -> None:
        self.warn(f"note: cannot write loadtest points to {self.client.url} database {self.client.database} ({reason}); the experiment goes on")


def fields(values: dict[str, Any]) -> str:
    """Numbers as float fields; None, NaN and non-numbers left out."""
    parts = [
        f"{name}={float(value)!r}"
        for name, value in values.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value) and not math.isinf(value)
    ]
    return ",".join(parts)
