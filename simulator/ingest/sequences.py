"""Seq gaps as they appear: messages a device sent that never reached the bridge.

Every device numbers its messages from 0, one more per message (docs/message-contract.md), so a jump
from seq 2 to seq 5 means 3 and 4 were lost on the way. The bridge notes each message's seq as it
receives it (the network thread, before the write): whatever it received is either written or in the
dead-letter file, so what is missing here is what the transport lost. A silent device (the `dropout`
device fault) sends nothing and numbers nothing: no gap.

Per (measurement, device_id): the last seq received, one small int. Rules:
- the next seq, or the first one seen (the bridge may start in the middle of a run): no gap;
- a jump over k seqs: k more missing, and a warning line (at most `lines_per_second` in all, then a
  count of the lines suppressed);
- seq 0 again: the device's run started again (a new `iotsim run`): no gap, start over;
- a seq at or below the last one: a duplicate or a redelivery (the same point again), ignored,
  unless it is one of the missing ones arriving late (out of order): then it counts no more.
  Missing ranges are kept only for devices with gaps, at most `max_open` ranges in all; past that a
  gap is still counted but a late arrival can no longer take it back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class SeqGaps:
    def __init__(self, log: Callable[[str], None], lines_per_second: int = 5, max_open: int = 100_000) -> None:
        self.log = log
        self.lines_per_second = lines_per_second
        self.max_open = max_open
        self.last: dict[str, dict[str, int]] = {}  # measurement -> device_id -> last seq received
        self.open: dict[tuple[str, str], list[tuple[int, int]]] = {}  # missing [first, end) ranges, devices with gaps only
        self.open_ranges = 0
        self._warnings = threading.Lock()  # the network thread warns; write_own_stats reports the suppressed
        self._window_start = 0.0
        self._lines_in_window = 0
        self._suppressed = 0

    def observe(self, measurement: str, device_id: str, seq: int) -> int:
        """Note a message's seq; the change in missing seqs (k for a jump over k, -1 for a late one, else 0)."""
        devices = self.last.get(measurement)
        if devices is None:
            devices = self.last[measurement] = {}
        last = devices.get(device_id)
        if last is None or seq == last + 1:
            devices[device_id] = seq
            return 0
        if seq == 0:
            devices[device_id] = 0
            self._forget(measurement, device_id)
            return 0
        if seq > last:
            devices[device_id] = seq
            return self._gap(measurement, device_id, last, seq)
        return self._late(measurement, device_id, seq)

    def report_suppressed(self) -> None:
        """Say how many warning lines were held back, if any (called now and then, and at the end)."""
        with self._warnings:
            self._say_suppressed()

    def _gap(self, measurement: str, device_id: str, last: int, seq: int) -> int:
        missing = seq - last - 1
        if self.open_ranges < self.max_open:
            self.open.setdefault((measurement, device_id), []).append((last + 1, seq))
            self.open_ranges += 1
        self._warn(f"bridge: seq gap: {measurement} {device_id} went from seq {last} to {seq}: {missing} message(s) never received")
        return missing

    def _late(self, measurement: str, device_id: str, seq: int) -> int:
        ranges = self.open.get((measurement, device_id))
        if not ranges:
            return 0  # a duplicate or a redelivery
        for index, (first, end) in enumerate(ranges):
            if first <= seq < end:
                pieces = [(a, b) for a, b in ((first, seq), (seq + 1, end)) if a < b]
                ranges[index : index + 1] = pieces
                self.open_ranges += len(pieces) - 1
                if not ranges:
                    del self.open[(measurement, device_id)]
                return -1
        return 0

    def _forget(self, measurement: str, device_id: str) -> None:
        """A new run of the device: what the last one missed stays counted, and can no longer come."""
        ranges = self.open.pop((measurement, device_id), None)
        if ranges:
            self.open_ranges -= len(ranges)

    def _warn(self, line: str) -> None:
        now = time.monotonic()
        with self._warnings:
            if now - self._window_start >= 1.0:
                self._say_suppressed()
                self._window_start, self._lines_in_window = now, 0
            if self._lines_in_window < self.lines_per_second:
                self._lines_in_window += 1
                self.log(line)
            else:
                self._suppressed += 1

    def _say_suppressed(self) -> None:
        if self._suppressed:
            self.log(f"bridge: {self._suppressed} more seq gap warnings not shown (seq_gaps in the pipeline measurement counts every gap)")
            self._suppressed = 0
