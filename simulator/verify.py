"""`iotsim verify`: what a scenario generates, compared with what InfluxDB stored, per device.

Expected: the scenario's world run as a dry run does, each message passed through the bridge's own
payload check (`to_line`), so only what the bridge would store is expected:
- `malformed` payloads (a fault, or a device's) are dead-lettered by design: not expected;
- a `duplicates` delivery is the same point again (same series and time): expected once;
- messages a device never sends (device faults such as `battery_death`) have no seq: not expected;
- two messages of one series at the same millisecond are one point in InfluxDB (the later one
  overwrites the earlier): the earlier is counted as overwritten, not expected.
A device's seqs are 0..n-1 in time order, so they are kept as runs (first seq, first time, step,
count), not as sets; seqs that arrive out of order are kept one by one.

Stored: `SELECT "seq" ... GROUP BY "device_id"` per expected measurement, over the run's time span
(widened to every expected timestamp, so clock skew stays inside), streamed in chunks. A stored
point counts when its (device, seq) was expected at that time; more points with the same (device,
seq) are duplicates; any other point (unknown device, unknown seq, or an expected seq at another
time) is unexpected; points outside the span are not looked at. Measurements the scenario does not
write (e.g. `pipeline`) are listed with their points, not checked.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from simulator.errors import UsageError
from simulator.influx import InfluxClient
from simulator.ingest.lineprotocol import BadPayload, to_line
from simulator.scenario import Scenario

# The series key of a line-protocol point: everything before the first unescaped space.
SERIES_KEY = re.compile(r"(?:[^ \\]|\\.)*")


class ExpectedDevice:
    """One device's expected seqs and timestamps, compactly."""

    __slots__ = ("runs", "starts", "scattered", "overwritten", "last_seq", "last_ts", "last_series")

    def __init__(self) -> None:
        self.runs: list[list[int]] = []  # [first_seq, first_ts, step_ms, count], seqs ascending
        self.starts: list[int] = []  # first_seq of each run, for bisect
        self.scattered: dict[int, int] = {}  # seq -> ts, for seqs that came out of order
        self.overwritten: set[int] = set()
        self.last_seq = -1
        self.last_ts = 0
        self.last_series = ""

    def add(self, seq: int, ts: int, series: str) -> bool:
        """Record a message; False when it is one already recorded (a repeated delivery)."""
        if seq <= self.last_seq:
            if self.ts_of(seq) is not None:
                return False
            self.scattered[seq] = ts
            return True
        if ts == self.last_ts and series == self.last_series:
            self.overwritten.add(self.last_seq)
        run = self.runs[-1] if self.runs else None
        if run is not None and seq == self.last_seq + 1 and (run[3] == 1 or ts - self.last_ts == run[2]):
            if run[3] == 1:
                run[2] = ts - self.last_ts
            run[3] += 1
        else:
            self.runs.append([seq, ts, 0, 1])
            self.starts.append(seq)
        self.last_seq, self.last_ts, self.last_series = seq, ts, series
        return True

    def ts_of(self, seq: int) -> int | None:
        """The time `seq` is expected at, or None when it is not expected."""
        if seq in self.overwritten:
            return None
        index = bisect.bisect_right(self.starts, seq) - 1
        if index >= 0:
            first_seq, first_ts, step, count = self.runs[index]
            if seq < first_seq + count:
                return first_ts + (seq - first_seq) * step
        return self.scattered.get(seq)

    def seqs(self) -> Iterator[int]:
        """Every expected seq, ascending."""
        in_runs = (seq for first, _, _, count in self.runs for seq in range(first, first + count))
        ordered = sorted([*in_runs, *self.scattered]) if self.scattered else in_runs
        return (seq for seq in ordered if seq not in self.overwritten)

    @property
    def count(self) -> int:
        return sum(run[3] for run in self.runs) + len(self.scattered) - len(self.overwritten)


@dataclass
class ExpectedMessages:
    """A sink for `run_scenario`: keeps, per measurement and device, what InfluxDB should hold."""

    devices: dict[str, dict[str, ExpectedDevice]] = field(default_factory=dict)
    generated: int = 0
    dead_lettered: int = 0
    repeated: int = 0
    first_ts: int | None = None
    last_ts: int | None = None

    def __call__(self, topic: str, payload: bytes) -> None:
        self.generated += 1
        try:
            line, device_id, seq, ts = to_line(topic, payload)
        except BadPayload:
            self.dead_lettered += 1
            return
        series = SERIES_KEY.match(line).group()  # type: ignore[union-attr]  # matches any string
        measurement = series[: series.index(",")]
        devices = self.devices.setdefault(measurement, {})
        device = devices.get(device_id)
        if device is None:
            device = devices[device_id] = ExpectedDevice()
        if not device.add(seq, ts, series):
            self.repeated += 1
            return
        self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)

    @property
    def overwritten(self) -> int:
        return sum(len(device.overwritten) for devices in self.devices.values() for device in devices.values())


@dataclass
class DeviceResult:
    measurement: str
    device_id: str
    expected: int
    stored: int = 0
    missing: list[tuple[int, int]] = field(default_factory=list)  # seq ranges, inclusive
    duplicates: int = 0
    unexpected: int = 0

    @property
    def missing_count(self) -> int:
        return sum(last - first + 1 for first, last in self.missing)

    @property
    def exact(self) -> bool:
        return not self.missing and not self.duplicates and not self.unexpected

    def describe(self) -> str:
        """'aq-0003 (air_quality): missing 17-25, 40; 1 duplicate'"""
        parts = []
        if self.missing:
            parts.append("missing " + ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in self.missing))
        if self.duplicates:
            parts.append(f"{self.duplicates} duplicate{'s' * (self.duplicates != 1)}")
        if self.unexpected:
            parts.append(f"{self.unexpected} unexpected")
        return f"{self.device_id} ({self.measurement}): " + "; ".join(parts)

    def as_json(self) -> dict[str, Any]:
        return {
            "measurement": self.measurement,
            "device_id": self.device_id,
            "expected": self.expected,
            "stored": self.stored,
            "missing": self.missing_count,
            "missing_seqs": [list(pair) for pair in self.missing],
            "duplicates": self.duplicates,
            "unexpected": self.unexpected,
        }


@dataclass
class Verification:
    scenario: str
    influx: str
    database: str
    span_ms: tuple[int, int]  # [from, to)
    devices: list[DeviceResult]
    not_checked: dict[str, int]  # other measurements in the database -> points
    dead_lettered: int
    repeated: int
    overwritten: int

    def total(self, name: str) -> int:
        return sum(getattr(device, name) for device in self.devices)

    @property
    def expected(self) -> int:
        return self.total("expected")

    @property
    def stored(self) -> int:
        return self.total("stored")

    @property
    def missing(self) -> int:
        return self.total("missing_count")

    @property
    def exact(self) -> bool:
        return all(device.exact for device in self.devices)

    def by_measurement(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        for device in self.devices:
            row = table.setdefault(device.measurement, dict.fromkeys(("devices", "expected", "stored", "missing", "duplicates", "unexpected"), 0))
            row["devices"] += 1 if device.expected else 0
            row["expected"] += device.expected
            row["stored"] += device.stored
            row["missing"] += device.missing_count
            row["duplicates"] += device.duplicates
            row["unexpected"] += device.unexpected
        return dict(sorted(table.items()))

    def final_line(self) -> str:
        if self.exact:
            return f"verified: {self.stored} of {self.expected} stored"
        return (
            f"NOT verified: {self.stored} of {self.expected} stored, {self.missing} missing, "
            f"{self.total('duplicates')} duplicates, {self.total('unexpected')} unexpected"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "influx": self.influx,
            "database": self.database,
            "from": iso(self.span_ms[0]),
            "to": iso(self.span_ms[1]),
            "verified": self.exact,
            "expected": self.expected,
            "stored": self.stored,
            "missing": self.missing,
            "duplicates": self.total("duplicates"),
            "unexpected": self.total("unexpected"),
            "by_design": {"dead_lettered": self.dead_lettered, "repeated": self.repeated, "overwritten": self.overwritten},
            "measurements": self.by_measurement(),
            "not_checked": self.not_checked,
            "devices": [device.as_json() for device in self.devices],
        }


def iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, timezone.utc).isoformat().replace("+00:00", "Z")


Query = Callable[[str], Iterator[dict[str, Any]]]


def stored_by_device(run_query: Query, measurement: str, span_ms: tuple[int, int]) -> Iterator[tuple[str, list[list[int]]]]:
    """(device_id, [[time_ms, seq], ...]) per device of `measurement` in the span, one device at a time."""
    q = f'SELECT "seq" FROM "{measurement}" WHERE time >= {span_ms[0]}ms AND time < {span_ms[1]}ms GROUP BY "device_id"'
    current: str | None = None
    rows: list[list[int]] = []
    for series in run_query(q):
        device_id = (series.get("tags") or {}).get("device_id", "")
        if device_id != current:
            if current is not None:
                yield current, rows
            current, rows = device_id, []
        rows.extend(series["values"])
    if current is not None:
        yield current, rows


def compare(measurement: str, device_id: str, expected: ExpectedDevice | None, rows: list[list[int]]) -> DeviceResult:
    """One device: which expected seqs are stored at their time, which are missing, what is extra."""
    result = DeviceResult(measurement, device_id, expected.count if expected else 0)
    times_by_seq: dict[int, list[int]] = {}
    for time_ms, seq in rows:
        if seq is not None:
            times_by_seq.setdefault(int(seq), []).append(int(time_ms))
    found: set[int] = set()
    for seq, times in times_by_seq.items():
        wanted = expected.ts_of(seq) if expected else None
        if wanted is not None and wanted in times:
            found.add(seq)
            result.stored += 1
            result.duplicates += len(times) - 1
        else:
            result.unexpected += len(times)
    if expected is not None and result.stored < result.expected:
        result.missing = seq_ranges(seq for seq in expected.seqs() if seq not in found)
    return result


def seq_ranges(seqs: Iterator[int]) -> list[tuple[int, int]]:
    """Ascending seqs as inclusive ranges: 17, 18, 19, 40 -> [(17, 19), (40, 40)]."""
    ranges: list[tuple[int, int]] = []
    for seq in seqs:
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges


def span_of(scenario: Scenario, expected: ExpectedMessages) -> tuple[int, int]:
    """The run's [start, start + duration), widened to every expected timestamp (clock skew)."""
    start = round(scenario.start.timestamp() * 1000)
    end = start + round(scenario.duration * 1000)
    if expected.first_ts is not None and expected.last_ts is not None:
        start, end = min(start, expected.first_ts), max(end, expected.last_ts + 1)
    return start, end


def other_measurements(run_query: Query, checked: set[str]) -> dict[str, int]:
    """Points per measurement the scenario does not write, at any time (reported, not checked): e.g.
    `pipeline`, which the run and the bridge stamp with the wall clock, not the simulated one."""
    names = [row[0] for series in run_query("SHOW MEASUREMENTS") for row in series.get("values", [])]
    counts: dict[str, int] = {}
    for name in sorted(set(names) - checked):
        for series in run_query(f'SELECT count(*) FROM "{name}"'):
            points = max((value for value in series["values"][0][1:] if value is not None), default=0)
            counts[name] = counts.get(name, 0) + points
    return {name: points for name, points in counts.items() if points}


def verify(scenario: Scenario, expected: ExpectedMessages, client: InfluxClient) -> Verification:
    """Compare `expected` (filled by running `scenario`) with the client's database; DatabaseError
    when InfluxDB cannot be queried."""
    run_query = client.query_chunked

    span = span_of(scenario, expected)
    results: list[DeviceResult] = []
    for measurement, devices in sorted(expected.devices.items()):
        seen: set[str] = set()
        for device_id, rows in stored_by_device(run_query, measurement, span):
            seen.add(device_id)
            results.append(compare(measurement, device_id, devices.get(device_id), rows))
        results.extend(compare(measurement, device_id, device, []) for device_id, device in devices.items() if device_id not in seen)
    not_checked = other_measurements(run_query, set(expected.devices))
    results.sort(key=lambda result: (result.measurement, result.device_id))
    return Verification(
        scenario=scenario.name,
        influx=client.url,
        database=client.database,
        span_ms=span,
        devices=results,
        not_checked=not_checked,
        dead_lettered=expected.dead_lettered,
        repeated=expected.repeated,
        overwritten=expected.overwritten,
    )


def reject_now(start: str | None) -> str | None:
    if start == "now":
        raise UsageError("--start: 'now' is another time at every call; give the ISO start time the run used")
    return start
