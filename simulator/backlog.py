"""A warning when a scenario's faults would queue more messages at the broker than it keeps.

While the bridge is away (a `bridge_crash` until its restart), Mosquitto queues the messages for the
bridge's persistent session, at most `max_queued_messages` of them per client; it drops the rest
without telling anyone (docs/faults.md). The messages sent while it is away are estimated from the
fleets' reporting intervals (count / cadence), and, for fleets a `load:` section paces (load_probe),
from its profile over the very window the bridge is away (a spike in it counts whole). Events and
emergent port messages are not counted (only a run knows them), so it is a lower bound.
Broker and InfluxDB outages do not queue at the broker: the publisher holds messages in its outbox
while the broker is down, and the bridge keeps reading (and spooling) while InfluxDB is down.
"""

from __future__ import annotations

import re
from pathlib import Path

from simulator.faults import BridgeCrash
from simulator.load.pacing import ByDevices, ByRate, Pacing
from simulator.scenario import Scenario
from simulator.stack import BROKERS_DIR

DEV_CONF = BROKERS_DIR / "conf.d" / "10-dev.conf"
SETTING = re.compile(r"^\s*max_queued_messages\s+(\d+)\s*$", re.MULTILINE)


def max_queued_messages(conf: Path = DEV_CONF) -> int | None:
    """The broker's per-client queue bound (the file's last value wins, as in Mosquitto); None when
    the file or the setting is absent, or 0 (no limit)."""
    try:
        values = SETTING.findall(conf.read_text())
    except OSError:
        return None
    return int(values[-1]) or None if values else None


def messages_per_s(scenario: Scenario) -> float:
    """Messages per simulated second from the reporting intervals of the fleets no load profile paces."""
    rate = 0.0
    paced = scenario.load is not None
    for fleet in scenario.fleets:
        interval = getattr(fleet, "cadence", None) or getattr(fleet, "interval", None)
        if interval and not (paced and fleet.paced_by_load):
            rate += fleet.count / interval
    return rate


def paced_messages(scenario: Scenario, start: float, end: float) -> float:
    """Messages the fleets a `load:` section paces send from `start` to `end` (simulated s)."""
    if scenario.load is None:
        return 0.0
    pacing = scenario.load.pacing()
    return sum(offered(pacing, fleet.count, start, end) for fleet in scenario.fleets if fleet.paced_by_load)


def offered(pacing: Pacing, devices: int, start: float, end: float) -> float:
    """What one paced fleet of `devices` offers from `start` to `end`: the profile's count (unit rate),
    or the active devices' ticks, at most all of them (unit devices)."""
    match pacing:
        case ByRate(schedule):
            return schedule.cumulative(end) - schedule.cumulative(start)
        case ByDevices(schedule, interval):
            return min(schedule.cumulative(end) - schedule.cumulative(start), devices * (end - start)) / interval


def backlog_warnings(scenario: Scenario, conf: Path = DEV_CONF) -> list[str]:
    """One line per fault that leaves the bridge away longer than the broker's queue holds."""
    limit = max_queued_messages(conf)
    if limit is None:
        return []
    rate = messages_per_s(scenario)
    warnings = []
    for index, fault in enumerate(scenario.faults):
        if not isinstance(fault, BridgeCrash) or fault.at >= scenario.duration:
            continue
        away = min(fault.restart_after, scenario.duration - fault.at)  # no messages come after the run
        queued = round(rate * away + paced_messages(scenario, fault.at, fault.at + away))
        if queued > limit:
            warnings.append(
                f"warning: faults.{index}: the bridge is away ~{away:.0f} s (simulated), about {queued} messages "
                f"queue at the broker; Mosquitto keeps at most {limit} per client ({display(conf)} max_queued_messages), the rest would be lost"
            )
    return warnings


def display(path: Path) -> str:
    """The path relative to the repository when it is inside it (brokers/conf.d/10-dev.conf)."""
    try:
        return str(path.resolve().relative_to(BROKERS_DIR.parent))
    except ValueError:
        return str(path)
