"""Client ids, one per role, derived here in one place (`run_client_id`, `load_worker_client_id`,
`load_bridge_client_id`, `BRIDGE_CLIENT_ID`, `group_bridge_client_id`): a broker lets one connection
per id, and a second client with the same id takes the first one's session (issue 20, part 3).

Apart from `mqtt.py`, so the bridge's options (simulator/ingest/settings.py), which every `iotsim`
command builds, need no paho.
"""

from __future__ import annotations

import hashlib
import re

BRIDGE_CLIENT_ID = "iotsim-bridge"  # `iotsim bridge`'s default: fixed, so its persistent session persists
MAX_CLIENT_ID = 64  # MQTT 3.1.1 servers must accept 23 characters; Mosquitto (and most) accept this many
SLUG_HASH = 6  # hex digits of the scenario name's hash when its slug alone could be another name's
# What the simulator's ids look like: a bridge given one would share its session with a run or a worker.
SIMULATOR_CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]+-(run-[A-Za-z0-9_-]+|load-w\d+-\d+)$")


def run_client_id(prefix: str, scenario_name: str, shard_index: int = 0, shard_count: int = 1) -> str:
    """`iotsim run`: `{prefix}-run-{slug}`, the slug being the scenario name reduced to `[A-Za-z0-9_-]`.
    A name the slug changes or cuts short gets a hash of itself appended: two names, two ids. Shard
    INDEX/COUNT of a sharded run (COUNT > 1) ends the id with `-s{INDEX}of{COUNT}`: shards running at
    once would otherwise take each other's connection."""
    base = f"{prefix}-run-"
    suffix = f"-s{shard_index}of{shard_count}" if shard_count > 1 else ""
    room = MAX_CLIENT_ID - len(base) - len(suffix)
    slug = re.sub(r"[^A-Za-z0-9_-]", "_", scenario_name)
    if slug == scenario_name and len(slug) <= room:
        return base + slug + suffix
    digest = hashlib.sha256(scenario_name.encode()).hexdigest()[:SLUG_HASH]
    return f"{base}{slug[: room - SLUG_HASH - 1]}-{digest}{suffix}"


def load_worker_client_id(prefix: str, index: int, pid: int) -> str:
    """A load experiment's worker `index` in process `pid`: unique while it runs."""
    return f"{prefix}-load-w{index}-{pid}"


def load_bridge_client_id(prefix: str) -> str:
    """The bridge a load experiment starts (its own session, apart from `iotsim bridge`'s)."""
    return f"{prefix}-load-bridge"


def group_bridge_client_id(hostname: str) -> str:
    """A bridge group member's default id, `bridge-{hostname}`: one per host (a Kubernetes pod's host
    name is its pod name, stable in a StatefulSet). Characters outside `[A-Za-z0-9._-]` become `_`; a
    name past 64 characters is cut and ends with 6 hex digits of its hash, so two hosts never share an id."""
    client_id = "bridge-" + re.sub(r"[^A-Za-z0-9._-]", "_", hostname)
    if len(client_id) <= MAX_CLIENT_ID:
        return client_id
    digest = hashlib.sha256(hostname.encode()).hexdigest()[:SLUG_HASH]
    return f"{client_id[: MAX_CLIENT_ID - SLUG_HASH - 1]}-{digest}"


def bridge_client_id_problem(client_id: str) -> str | None:
    """Why `client_id` cannot be a bridge's, or None: the simulator's forms are the simulator's."""
    if SIMULATOR_CLIENT_ID.match(client_id):
        return (
            f"{client_id!r} has the form of the simulator's client ids ({{prefix}}-run-{{scenario}}, {{prefix}}-load-w{{N}}-{{pid}}): "
            f"a run with that id would take over the bridge's session and its messages would be lost; choose another (default {BRIDGE_CLIENT_ID})"
        )
    return None
