"""Deterministic sharding of a scenario's devices over worker processes and hosts.

A shard is `INDEX/COUNT`, INDEX 0-based (as Kubernetes' `JOB_COMPLETION_INDEX`), given by
`--shard` or the `IOTSIM_SHARD` environment variable (`Shard.from_spec`, `shard_from_env`).

A device belongs to worker `n % workers`, where n is the number in its id (`lp-0042` → 42), or a
stable hash of the id for sources without one (event sources such as `port-gate`). Every device's
messages depend only on the seed, its own id and the shared models, so the union of the workers'
streams is exactly the single-process stream.

What a shard builds (simulator/builder.py): of every fleet only its own devices (`owned_devices` in
simulator/device_type.py, each at its index in the whole fleet), so its CPU is its share; the shared
models (the city's weather, calendar, roads, data centre and air, the port and its processes, the
scenario's incidents, leaks and fault schedule) whole, the same in every shard, and `ShardSink`
drops the messages of the sources it does not own (the models' events, the whole-built devices'
messages). A device only reads the shared models; the models that cache what they computed (the
weather's hours, the air's minutes) compute the same values whoever asks first. Built whole:
- `reefer` monitors: a monitor keeps its alarm state on the box's unit, and a box back from customs
  lands on another plug point, read by another monitor (maybe of another shard);
- every device of a scenario with `duplicates`, `malformed` or `partition` faults
  (`faults.need_every_message`): they act on the whole world's message stream;
- a device type whose `build` walks `fleet.device_ids()` itself (a plug-in's): correct, at its whole cost.
`simulator/load/worker.py` builds a shard's world.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

from simulator.errors import UsageError
from simulator.telemetry import Sink

SHARD_KEY = "load.shard"
SHARD_ENV = "IOTSIM_SHARD"
_SPEC = re.compile(r"(\d{1,9})/(\d{1,9})")


class InvalidShard(UsageError):
    """A `--shard`/`IOTSIM_SHARD` value that is not INDEX/COUNT with 0 <= INDEX < COUNT."""


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    @classmethod
    def from_spec(cls, spec: str, source: str = "--shard") -> Shard:
        """`"2/7"` → Shard(2, 7); anything else is one line naming `source` (exit 2)."""
        match = _SPEC.fullmatch(spec.strip())
        if match is None:
            raise InvalidShard(f"{source}: {spec!r} is not INDEX/COUNT (e.g. 0/3: the first of three shards, INDEX from 0)")
        index, count = int(match[1]), int(match[2])
        if count < 1:
            raise InvalidShard(f"{source}: {spec!r}: COUNT must be at least 1")
        if index >= count:
            raise InvalidShard(f"{source}: {spec!r}: INDEX must be below COUNT (0 to {count - 1})")
        return cls(index, count)

    @property
    def spec(self) -> str:
        return f"{self.index}/{self.count}"

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


def shard_from_env(flag: str | None) -> Shard:
    """The shard a command runs: its `--shard` flag, else `IOTSIM_SHARD`, else the whole (0/1)."""
    if flag is not None:
        return Shard.from_spec(flag)
    spec = os.environ.get(SHARD_ENV)
    if spec is not None and spec.strip():
        return Shard.from_spec(spec, SHARD_ENV)
    return Shard()
