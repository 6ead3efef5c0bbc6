"""The simulator's own counters, written to InfluxDB's `pipeline` measurement for the health board.

A daemon thread posts one point as a run starts and every few seconds while it publishes (tags `component` =
`simulator`, `client_id`, and `shard` = INDEX/COUNT for a sharded run; integer fields `published`, `acknowledged`, `pending`, `buffered`, `disconnects`,
`takeovers`: connections the broker closed soon after accepting them, another client with the run's id).
A run whose fleets own their connections (issue 15) adds its device sessions' figures (`DEVICE_FIELDS`):
`connected` devices now, `connects`, `reconnects`, `connect_failures`, `device_disconnects` (the run's
shared connection keeps `disconnects`), `outbox_depth` (messages queued or in flight, all devices) and
`connect_p50_ms` / `connect_p99_ms`, CONNECT→CONNACK since the start from the sessions' HDR histogram.
Best effort (the InfluxDB client's `write_point`): an unreachable InfluxDB is reported once and never
slows the run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from simulator.influx import InfluxClient
from simulator.transport.mqtt import MqttPublisher
from simulator.transport.sessions import DeviceSessions

# The device sessions' fields of a `pipeline` point, in the order written; a contract for the boards.
DEVICE_FIELDS = ("connected", "connects", "reconnects", "connect_failures", "device_disconnects", "outbox_depth", "connect_p50_ms", "connect_p99_ms")


class PublisherStats:
    def __init__(
        self,
        publisher: MqttPublisher,
        client: InfluxClient,
        client_id: str,
        warn: Callable[[str], None],
        every: float = 5.0,
        shard: str | None = None,
        sessions: DeviceSessions | None = None,  # a run whose fleets own their connections: their figures too
    ) -> None:
        self.publisher = publisher
        self.sessions = sessions
        self.client = client
        self.client_id = client_id.replace(" ", "_").replace(",", "_").replace("=", "_")
        self.tags = f"component=simulator,client_id={self.client_id}" + (f",shard={shard}" if shard else "")  # shard: INDEX/COUNT, digits and '/'
        self.warn = warn
        self.every = every
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._report, name="pipeline-stats", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.write()  # the final figures
        self.client.close()

    def _report(self) -> None:
        self.write()  # the run's start: the board sees every counter's increase from 0 (the first connects' burst)
        while not self.stopping.wait(self.every):
            self.write()

    def write(self) -> None:
        p = self.publisher
        line = (
            f"pipeline,{self.tags} "
            f"published={p.published}i,acknowledged={p.acknowledged}i,pending={p.pending}i,buffered={p.buffered}i,disconnects={p.disconnects}i,"
            f"takeovers={p.takeover.takeovers}i"
            f"{device_fields(self.sessions) if self.sessions else ''} "
            f"{int(time.time() * 1000)}"
        )
        self.client.write_point(line, warn=self._note)

    def _note(self, reason: str) -> None:
        self.warn(f"note: cannot write the simulator's counters to {self.client.url} database {self.client.database} ({reason}); the run goes on")


def device_fields(sessions: DeviceSessions) -> str:
    """The device sessions' figures as line-protocol fields after the publisher's (a leading comma).
    Read from this thread while the run's thread turns the sessions: each figure is one int read, a
    moment's inconsistency between them is corrected by the next point (and the final one is exact)."""
    stats = sessions.stats
    latency = stats.latency_ms
    values = (
        stats.connected,
        stats.connects,
        stats.reconnects,
        stats.connect_failures,
        stats.disconnects,
        sessions.outbox_depth(),
        latency.get_value_at_percentile(50) if latency.get_total_count() else 0,
        latency.get_value_at_percentile(99) if latency.get_total_count() else 0,
    )
    return "".join(f",{name}={value}i" for name, value in zip(DEVICE_FIELDS, values, strict=True))
