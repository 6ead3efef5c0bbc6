"""A warning when a scenario's faults would queue more messages at the broker than it keeps.

While the bridge is away (a `bridge_crash` until its restart), Mosquitto queues the messages for the
bridge's persistent session, at most `max_queued_messages` of them per client; it drops the rest
without telling anyone (docs/faults.md). The rate is estimated from the fleets' reporting intervals
(count / cadence): events and emergent port messages are not counted, so it is a lower bound.
Broker and InfluxDB outages do not queue at the broker: the publisher holds messages in its outbox
while the broker is down, and the bridge keeps reading (and spooling) while InfluxDB is down.
"""

from __future__ import annotations

import re
from pathlib import Path

from simulator.faults import BridgeCrash
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
    """Messages per simulated second from the fleets' reporting intervals."""
    rate = 0.0
    for fleet in scenario.fleets:
        interval = getattr(fleet, "cadence", None) or getattr(fleet, "interval", None)
        if interval:
            rate += fleet.count / interval
    return rate


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
        queued = round(rate * away)
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
