"""The simulator's own counters, written to InfluxDB's `pipeline` measurement for the health board.

A daemon thread posts one point every few seconds while a run publishes (tags `component` =
`simulator`, `client_id`; integer fields `published`, `acknowledged`, `pending`, `buffered`, `disconnects`,
`takeovers`: connections the broker closed soon after accepting them, another client with the run's id).
Best effort: an unreachable InfluxDB is reported once and never slows the run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import requests

from simulator.transport.mqtt import MqttPublisher


class PublisherStats:
    def __init__(self, publisher: MqttPublisher, influx_url: str, database: str, client_id: str, warn: Callable[[str], None], every: float = 5.0) -> None:
        self.publisher = publisher
        self.url = f"{influx_url.rstrip('/')}/write"
        self.params = {"db": database, "precision": "ms"}
        self.client_id = client_id.replace(" ", "_").replace(",", "_").replace("=", "_")
        self.warn = warn
        self.every = every
        self.stopping = threading.Event()
        self.warned = False
        self.thread = threading.Thread(target=self._report, name="pipeline-stats", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.write()  # the final figures

    def _report(self) -> None:
        while not self.stopping.wait(self.every):
            self.write()

    def write(self) -> None:
        p = self.publisher
        line = (
            f"pipeline,component=simulator,client_id={self.client_id} "
            f"published={p.published}i,acknowledged={p.acknowledged}i,pending={p.pending}i,buffered={p.buffered}i,disconnects={p.disconnects}i,"
            f"takeovers={p.takeover.takeovers}i "
            f"{int(time.time() * 1000)}"
        )
        try:
            requests.post(self.url, params=self.params, data=line.encode(), timeout=2).raise_for_status()
        except requests.RequestException as error:
            if not self.warned:
                self.warned = True
                self.warn(f"note: cannot write the simulator's counters to {self.url} ({type(error).__name__}); the run goes on")
