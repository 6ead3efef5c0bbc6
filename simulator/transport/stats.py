"""The simulator's own counters, written to InfluxDB's `pipeline` measurement for the health board.

A daemon thread posts one point every few seconds while a run publishes (tags `component` =
`simulator`, `client_id`, and `shard` = INDEX/COUNT for a sharded run; integer fields `published`, `acknowledged`, `pending`, `buffered`, `disconnects`,
`takeovers`: connections the broker closed soon after accepting them, another client with the run's id).
Best effort (the InfluxDB client's `write_point`): an unreachable InfluxDB is reported once and never
slows the run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from simulator.influx import InfluxClient
from simulator.transport.mqtt import MqttPublisher


class PublisherStats:
    def __init__(
        self, publisher: MqttPublisher, client: InfluxClient, client_id: str, warn: Callable[[str], None], every: float = 5.0, shard: str | None = None
    ) -> None:
        self.publisher = publisher
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
        while not self.stopping.wait(self.every):
            self.write()

    def write(self) -> None:
        p = self.publisher
        line = (
            f"pipeline,{self.tags} "
            f"published={p.published}i,acknowledged={p.acknowledged}i,pending={p.pending}i,buffered={p.buffered}i,disconnects={p.disconnects}i,"
            f"takeovers={p.takeover.takeovers}i "
            f"{int(time.time() * 1000)}"
        )
        self.client.write_point(line, warn=self._note)

    def _note(self, reason: str) -> None:
        self.warn(f"note: cannot write the simulator's counters to {self.client.url} database {self.client.database} ({reason}); the run goes on")
