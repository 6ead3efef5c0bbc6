"""What the runner (simulator/load/runner.py) and the merge of a run's records (simulator/load/report.py)
share: the experiment's error, the sampled processes' figure names, the offered count, the machine's
description. The runner merges its own run's records, so this cannot live in either of them.
"""

from __future__ import annotations

import math
import os
import platform
from typing import Any

import psutil

from simulator.errors import IotsimError
from simulator.load.profile import Schedule
from simulator.load.section import LoadSection

SAMPLED = ("simulator", "bridge", "broker", "database")  # whose CPU and memory each second holds
CPU_FIGURES = (*(f"{name}_cpu_percent" for name in SAMPLED), "machine_cpu_percent")
RSS_FIGURES = tuple(f"{name}_rss_mb" for name in SAMPLED)


class LoadError(IotsimError):
    """An experiment that cannot run (wrong scenario, unreachable broker ...); one printable line."""

    exit_code = 2  # `iotsim load`'s contract: 1 is a threshold that failed, 2 an experiment that could not run


def offered_between(load: LoadSection, schedule: Schedule, probes: int, begin: float, end: float) -> float:
    """Messages the profile offers in [begin, end) seconds."""
    if load.unit == "rate":
        return schedule.cumulative(end) - schedule.cumulative(begin)
    steps = max(int((end - begin) * 100), 1)
    width = (end - begin) / steps
    active = sum(min(math.ceil(schedule.target(begin + (n + 0.5) * width)), probes) for n in range(steps))
    return active * width * load.device_rate


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "host": platform.node(),
    }


def none_if_nan(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value
