"""k6-like thresholds: `p99_latency_ms < 250`, `loss == 0`, `written_rate >= 0.99 * offered_rate`.

A threshold is `METRIC OP VALUE`, where OP is one of < <= > >= == != and VALUE is a number, another
metric, or `NUMBER * METRIC`. Both sides must have the same unit (a rate is never compared with a
count). `evaluate` judges one threshold against a run's figures; a figure the run could not measure
(no message written, so no latency; a broker not running on this machine, so no broker CPU) fails
its thresholds.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

FLOWS = ("offered", "generated", "published", "acknowledged", "received", "written")
PERCENTILES = ("p50", "p90", "p99", "p999", "max", "mean")
CONNECTION_COUNTS = ("connected", "connects", "reconnects", "connect_failures")  # the devices' own connections

METRICS: dict[str, str] = {
    **{name: "messages" for name in FLOWS},
    **{f"{name}_rate": "messages/s" for name in FLOWS},
    "written_readings_rate": "readings/s",
    "loss": "messages",
    "duplicates": "messages",
    "gaps": "messages",
    "dead_letters": "messages",
    "loss_ratio": "ratio",
    **{f"{p}_latency_ms": "ms" for p in PERCENTILES},
    **{f"publish_{p}_ms": "ms" for p in PERCENTILES},
    **{name: "connections" for name in CONNECTION_COUNTS},
    **{f"connect_{p}_ms": "ms" for p in PERCENTILES},
    "reconnect_all_s": "s",
    "simulator_cpu_percent": "%",
    "bridge_cpu_percent": "%",
    "broker_cpu_percent": "%",
    "database_cpu_percent": "%",
    "machine_cpu_percent": "%",
    "simulator_rss_mb": "MB",
    "bridge_rss_mb": "MB",
    "broker_rss_mb": "MB",
    "database_rss_mb": "MB",
}

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_SHAPE = re.compile(r"^\s*(?P<metric>[a-z0-9_]+)\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<value>.+?)\s*$")
_VALUE = re.compile(rf"^(?:(?P<number>{_NUMBER})|(?P<factor>{_NUMBER})\s*\*\s*(?P<other>[a-z0-9_]+)|(?P<other2>[a-z0-9_]+)(?:\s*\*\s*(?P<factor2>{_NUMBER}))?)$")


@dataclass(frozen=True)
class Threshold:
    text: str
    metric: str
    op: str
    factor: float
    other: str | None  # None: compare with `factor` itself

    def limit(self, figures: dict[str, float]) -> float:
        return self.factor * figures.get(self.other, math.nan) if self.other else self.factor


@dataclass(frozen=True)
class Verdict:
    threshold: str
    passed: bool
    actual: float
    limit: float

    def line(self) -> str:
        mark = "ok  " if self.passed else "FAIL"
        return f"{mark} {self.threshold}  (measured {format_figure(self.actual)}, limit {format_figure(self.limit)})"


def parse_threshold(text: str) -> Threshold:
    """Parse one threshold; raises ValueError with a one-line explanation."""
    shape = _SHAPE.match(text)
    if shape is None:
        raise ValueError(f"{text!r} is not a threshold; write METRIC OP VALUE, e.g. 'p99_latency_ms < 250' or 'loss == 0'")
    metric, op, value = shape["metric"], shape["op"], shape["value"]
    check_metric(metric)
    parts = _VALUE.match(value)
    if parts is None:
        raise ValueError(f"{value!r} is not a number, a metric or NUMBER * METRIC")
    if parts["number"] is not None:
        return Threshold(text.strip(), metric, op, float(parts["number"]), None)
    other = parts["other"] or parts["other2"]
    factor = float(parts["factor"] or parts["factor2"] or 1.0)
    check_metric(other)
    if METRICS[other] != METRICS[metric]:
        raise ValueError(
            f"{metric} is in {METRICS[metric]} but {other} is in {METRICS[other]}; compare like with like"
            + (f" (e.g. {other}_rate)" if f"{other}_rate" in METRICS and METRICS[metric] == "messages/s" else "")
        )
    return Threshold(text.strip(), metric, op, factor, other)


def check_metric(name: str) -> None:
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")


def evaluate(threshold: Threshold, figures: dict[str, float | None]) -> Verdict:
    """A figure that was not measured (NaN, or None as summary.json has it) fails its threshold."""
    figures = {name: math.nan if value is None else value for name, value in figures.items()}
    actual = figures.get(threshold.metric, math.nan)
    limit = threshold.limit(figures)
    measured = not (math.isnan(actual) or math.isnan(limit))
    return Verdict(threshold.text, measured and OPERATORS[threshold.op](actual, limit), actual, limit)


def judge(texts: list[str], figures: dict[str, float | None]) -> list[Verdict]:
    return [evaluate(parse_threshold(text), figures) for text in texts]


def format_figure(value: float) -> str:
    if math.isnan(value):
        return "not measured"
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.3f}"
