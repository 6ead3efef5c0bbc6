"""A load worker's device connections: `DeviceSessions` that also measure what an experiment reports.

A worker (simulator/load/worker.py) holds its shard's own connections (fleets with `connection:
device`) as `iotsim run` does, from `connection_plan`, through its `SessionSink`. These sessions add:

- each CONNECT→CONNACK in a `LatencyRecorder` (µs, HDR), taken per reporting interval as the publish
  latencies are, so shards' and intervals' histograms add up (`connect_hist`);
- each message's publish latency, queued in the device's outbox → its PUBACK (a broker outage's
  wait included), added to the worker's publish latencies;
- when every device that lost its connection (a broker outage) was connected again: `reconnected_ms`,
  the wall-clock ms of the last reconnect that left none lost; `lost` is how many are away now. A
  device that leaves cleanly (`disconnect()`, the profile falling) is not waited for.

They are the gateways' `Links` (simulator/load/pacing.py): `connect()` and `disconnect()` of the
load_probe devices come from the world under `unit: connections`.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import paho.mqtt.client as mqtt

from simulator.load.metrics import LatencyRecorder
from simulator.transport.sessions import DeviceSessions, Session


class MeasuredSessions(DeviceSessions):
    """DeviceSessions whose connect latencies and recoveries a load worker reports."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connect_latency = LatencyRecorder()
        self.publish_latency = LatencyRecorder()
        self.queued_ns: dict[str, deque[int]] = {}  # per device, when each message waiting for its PUBACK was queued, in order
        self.lost: set[str] = set()  # devices that lost the broker while meant to be connected
        self.reconnected_ms: int | None = None

    def publish(self, device_id: str, topic: str, payload: bytes) -> bool:
        queued = self.queued_ns.setdefault(device_id, deque())
        queued.append(time.perf_counter_ns())
        kept = super().publish(device_id, topic, payload)
        if not kept:
            queued.popleft()  # the full outbox dropped its oldest message
        return kept

    def _on_publish(self, client: mqtt.Client, session: Session, mid: int, reason: Any, properties: Any) -> None:
        # One connection's PUBACKs come in the order of its messages (paho sends again in that order after a reconnect).
        queued = self.queued_ns.get(session.device_id)
        if mid not in session.status_mids and queued:
            self.publish_latency.record_us((time.perf_counter_ns() - queued.popleft()) // 1000)
        super()._on_publish(client, session, mid, reason, properties)

    def _on_connect(self, client: mqtt.Client, session: Session, flags: Any, reason: Any, properties: Any) -> None:
        super()._on_connect(client, session, flags, reason, properties)
        if not session.connected:
            return  # refused
        self.connect_latency.record_us(round((time.monotonic() - session.connect_started) * 1_000_000))
        self._back(session.device_id)

    def _on_disconnect(self, client: mqtt.Client, session: Session, flags: Any, reason: Any, properties: Any) -> None:
        was_connected = session.connected
        super()._on_disconnect(client, session, flags, reason, properties)
        if was_connected and not session.closing and not session.killed:
            self.lost.add(session.device_id)

    def disconnect(self, device_id: str) -> None:
        super().disconnect(device_id)
        self._back(device_id)  # it left: nobody waits for it to come back

    def settle(self, timeout: float) -> bool:
        """After the last stage: wait until every message is acknowledged and every device that lost
        the broker is back (so `reconnected_ms` covers an outage near the end); False if `timeout` passed first."""
        return self.run_until(lambda: not self.lost and self.drained(), timeout)

    def _back(self, device_id: str) -> None:
        if device_id in self.lost:
            self.lost.discard(device_id)
            if not self.lost:
                self.reconnected_ms = time.time_ns() // 1_000_000
