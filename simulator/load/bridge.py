"""The ingest bridge of a load experiment: `simulator.ingest.bridge.Bridge`, unchanged, writing
through an InfluxDB client (simulator/influx.py) that notes when each point was stored.

Started by the runner as `python -m simulator.load.bridge`; one JSON line per message on stdin and
stdout, like the workers (simulator/load/protocol.py has every message), control only:

    stdin   BridgeOrders      BridgeSettings (simulator/ingest/settings.py), InfluxDB, credentials, interval
    stdout  Ready             subscribed
    stdin   Start             the common start
    (stdin closed)            write what is pending, acknowledge it, stop
    stdout  Failure           could not go on (then exit 1): any IotsimError, one line

Its figures go to InfluxDB under the run id (simulator/load/records.py, measurement `loadbridge`):
once per interval received, written, acknowledged, dead letters, distinct, duplicates, stale and the
interval's latency histogram; after stdin closed the same counters and the gaps (`final`), and then
it exits 0.

With `raw_latencies`: FILE, every latency is also appended to FILE as a signed 64-bit integer
(native byte order), to check the histograms against. End-to-end latency is (the moment InfluxDB acknowledged the write holding a point) minus (the
point's device timestamp), in microseconds. Points stamped before the start (left at the broker by
an earlier, interrupted run) are counted as `stale` and otherwise ignored.
"""

from __future__ import annotations

import sys
import threading
import time
from array import array
from collections.abc import Callable
from typing import Any

from simulator.influx import InfluxClient, InfluxCredentials
from simulator.ingest.bridge import Bridge
from simulator.ingest.status import MEASUREMENT as STATUS_MEASUREMENT
from simulator.load.metrics import LatencyRecorder, SeqTracker, point_identity
from simulator.load.protocol import BRIDGE_ORDERS, BridgeCounts, BridgeFinal, BridgeInterval, BridgeOrders, Ready, Reporter, Start, read_order, say, serve
from simulator.load.records import BridgeRecorder
from simulator.transport.mqtt import Credentials

STATUS_PREFIX = f"{STATUS_MEASUREMENT},"  # a device_status point's line


class WriteRecorder:
    """Latency, distinct and duplicate counts of the points written, by device sequence number."""

    def __init__(self, raw_path: str | None = None) -> None:
        self.start_ms = 0
        self.raw = open(raw_path, "ab") if raw_path else None  # noqa: SIM115 - closed at exit
        self.latency = LatencyRecorder()
        self.lock = threading.Lock()
        self.sequences = SeqTracker()
        self.stale = 0

    def observe(self, lines: list[str], refused: list[tuple[str, str]]) -> None:
        now_us = time.time_ns() // 1000
        bad = {line for line, _ in refused}
        latencies = []
        with self.lock:
            for line in lines:
                if line in bad or line.startswith(STATUS_PREFIX):
                    continue  # a device's birth or will (retained, say, from an earlier run): not one of the load's messages
                device_id, seq, ts_ms = point_identity(line)
                if ts_ms < self.start_ms:
                    self.stale += 1
                    continue
                self.sequences.add(device_id, seq)
                latencies.append(now_us - ts_ms * 1000)
        self.latency.record_many_us(latencies)
        if self.raw is not None:
            self.raw.write(array("q", latencies).tobytes())


class RecordingWriter(InfluxClient):
    """An InfluxDB client that tells the recorder about every batch once InfluxDB has stored it."""

    def __init__(self, recorder: WriteRecorder, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorder = recorder
        self.depth = 0  # write() splits refused batches recursively; observe the outermost call only

    def write(self, lines: list[str], give_up: Callable[[], bool] = lambda: False) -> list[tuple[str, str]]:
        self.depth += 1
        try:
            refused = super().write(lines, give_up)
        finally:
            self.depth -= 1
        if self.depth == 0:
            self.recorder.observe(lines, refused)
        return refused


def serve_bridge() -> None:
    orders = read_order(BRIDGE_ORDERS, BridgeOrders)
    recorder = WriteRecorder(orders.raw_latencies)
    writer = RecordingWriter(recorder, orders.influx_url, orders.database, InfluxCredentials(orders.user, orders.password, orders.token))
    credentials = Credentials(orders.mqtt_username, orders.mqtt_password, orders.ca_file)
    bridge = Bridge(orders.settings, writer, log=lambda line: print(line, file=sys.stderr, flush=True), credentials=credentials)
    bridge.start()  # IotsimError: unreachable, refused, or another client uses our client id
    say(Ready())
    recorder.start_ms = read_order(BRIDGE_ORDERS, Start).start_ms

    def counts() -> BridgeCounts:
        ingest, sequences = bridge.counts, recorder.sequences
        with recorder.lock:
            distinct, duplicates, stale = sequences.distinct, sequences.duplicates, recorder.stale
        return BridgeCounts(received=ingest.received, written=ingest.written, acknowledged=ingest.acknowledged,
                            dead_letters=ingest.dead_letters, distinct=distinct, duplicates=duplicates, stale=stale)  # fmt: skip

    records = BridgeRecorder(InfluxClient(orders.influx_url, orders.database, writer.credentials), orders.run_id, recorder.start_ms)
    reporter = Reporter(recorder.start_ms, orders.interval, lambda k: BridgeInterval(k=k, counts=counts(), latency_hist=recorder.latency.take()), records.send)
    reporter.start()
    closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), closed.set()), daemon=True).start()
    last_stats = time.monotonic()
    failure = None
    while not closed.wait(0.1):
        if bridge.failure is not None:
            failure = bridge.failure
            break
        if time.monotonic() - last_stats >= 5.0:
            bridge.write_own_stats()  # the pipeline board's `pipeline` points, as `iotsim bridge` writes them
            last_stats = time.monotonic()
    bridge.stop()
    reporter.stop()
    if recorder.raw is not None:
        recorder.raw.close()
    if failure is not None:
        raise failure  # InfluxDB refused us, the spool is full, another client took our client id ...: an IotsimError is one Failure (serve)
    records.send(BridgeFinal(counts=counts(), latency_hist=recorder.latency.take(), gaps=recorder.sequences.gaps()))
    records.close()  # an IotsimError when its records did not reach InfluxDB: a Failure, exit 1 (serve)


def main() -> None:
    serve(serve_bridge)


if __name__ == "__main__":
    main()
