"""The ingest bridge of a load experiment: `simulator.ingest.bridge.Bridge`, unchanged, writing
through an InfluxWriter that notes when each point was stored.

Started by the runner as `python -m simulator.load.bridge`; JSON lines on stdin/stdout like the
workers (simulator/load/worker.py):

    stdin   {"mqtt_username", "mqtt_password", "ca_file", "influx_url", "database", "user", "password",
             "token", "settings" (BridgeSettings, simulator/ingest/settings.py, as JSON), "interval"}
    stdout  {"ready": true}                   subscribed
    stdin   {"start_ms": ...}                 the common start
    stdout  {"k": 3, "received", "written", "acknowledged", "dead_letters", "distinct",
             "duplicates", "stale", "latency_hist"}    once per interval
    (stdin closed)                            write what is pending, acknowledge it, stop
    stdout  {"final": true, ..., "gaps": n}

With "raw_latencies": FILE, every latency is also appended to FILE as a signed 64-bit integer
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

from simulator.errors import IotsimError
from simulator.ingest.bridge import Bridge
from simulator.ingest.settings import BridgeSettings
from simulator.ingest.influx import InfluxWriter
from simulator.load.metrics import LatencyRecorder, SeqTracker, point_identity
from simulator.load.worker import Reporter, read_order, say
from simulator.transport.mqtt import Credentials


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
                if line in bad:
                    continue
                device_id, seq, ts_ms = point_identity(line)
                if ts_ms < self.start_ms:
                    self.stale += 1
                    continue
                self.sequences.add(device_id, seq)
                latencies.append(now_us - ts_ms * 1000)
        self.latency.record_many_us(latencies)
        if self.raw is not None:
            self.raw.write(array("q", latencies).tobytes())


class RecordingWriter(InfluxWriter):
    """An InfluxWriter that tells the recorder about every batch once InfluxDB has stored it."""

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


def main() -> None:
    order = read_order()
    recorder = WriteRecorder(order.get("raw_latencies"))
    writer = RecordingWriter(recorder, order["influx_url"], order["database"], user=order.get("user"), password=order.get("password"), token=order.get("token"))
    settings = BridgeSettings.model_validate(order["settings"])  # load.bridge and where the experiment puts things (runner.py)
    credentials = Credentials(order.get("mqtt_username"), order.get("mqtt_password"), order.get("ca_file"))
    bridge = Bridge(settings, writer, log=lambda line: print(line, file=sys.stderr, flush=True), credentials=credentials)
    try:
        bridge.start()
    except IotsimError as error:  # unreachable, refused, or another client uses our client id
        say({"error": str(error)})
        raise SystemExit(1) from None
    say({"ready": True})
    recorder.start_ms = int(read_order()["start_ms"])

    def snapshot() -> dict[str, Any]:
        counts, sequences = bridge.counts, recorder.sequences
        with recorder.lock:
            distinct, duplicates, stale = sequences.distinct, sequences.duplicates, recorder.stale
        return {"received": counts.received, "written": counts.written, "acknowledged": counts.acknowledged,
                "dead_letters": counts.dead_letters, "distinct": distinct, "duplicates": duplicates, "stale": stale,
                "latency_hist": recorder.latency.take()}  # fmt: skip

    reporter = Reporter(recorder.start_ms, float(order.get("interval", 1.0)), snapshot)
    reporter.start()
    closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), closed.set()), daemon=True).start()
    last_stats = time.monotonic()
    error = None
    while not closed.wait(0.1):
        if bridge.failure is not None:
            error = bridge.failure
            break
        if time.monotonic() - last_stats >= 5.0:
            bridge.write_own_stats()  # the pipeline board's `pipeline` points, as `iotsim bridge` writes them
            last_stats = time.monotonic()
    bridge.stop()
    reporter.stop()
    if isinstance(error, IotsimError):  # InfluxDB refused us, the spool is full, another client took our client id ...: one line for the runner
        say({"error": str(error)})
    if recorder.raw is not None:
        recorder.raw.close()
    say({"final": True, **snapshot(), "gaps": recorder.sequences.gaps()})


if __name__ == "__main__":
    main()
