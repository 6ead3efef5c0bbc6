"""Deterministic sharding of a scenario's devices over worker processes.

A device belongs to worker `n % workers`, where n is the number in its id (`lp-0042` → 42), or a
stable hash of the id for sources without one (event sources such as `port-gate`). Every device's
messages depend only on the seed and its own id, so the union of the workers' streams is exactly the
single-process stream. `load_probe` fleets build only their own devices; other device types are built
whole in every worker and filtered at the sink (correct for shared models, at some CPU cost).
`simulator/load/worker.py` builds a shard's world.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from simulator.telemetry import Sink

SHARD_KEY = "load.shard"


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def owns(self, device_id: str) -> bool:
        if self.count == 1:
            return True
        _, _, number = device_id.rpartition("-")
        if number.isdigit():
            return int(number) % self.count == self.index
        digest = hashlib.blake2b(device_id.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % self.count == self.index


class ShardSink:
    """Passes on only the messages of the shard's devices (the last topic segment names the device)."""

    def __init__(self, sink: Sink, shard: Shard) -> None:
        self.sink = sink
        self.shard = shard
        self.owned: dict[str, bool] = {}
        self.passed = 0

    def __call__(self, topic: str, payload: bytes) -> None:
        owned = self.owned.get(topic)
        if owned is None:
            owned = self.owned[topic] = self.shard.owns(topic.rpartition("/")[2])
        if owned:
            self.passed += 1
            self.sink(topic, payload)
