"""Where a device's memory goes: the objects one waiting air-quality station holds, and the heap per device.

Builds `--stations` stations (`cadence: 5m`, as benchmarks/scale.py) and runs them `--minutes`
(default 10), so each station waits as it does in a long run: its process suspended at a timeout.
Then it prints two views, per device:

- the objects of one station, walked from the SimPy queue (its Timeout and the heap entry, its
  Process, the generator and its frame, the AQI closure, the station and its noise state, its
  random.Random, its telemetry Device, tags and topic, its slot in the telemetry's device table),
  each with `sys.getsizeof`;
- what tracemalloc saw allocated and still alive after the run, by source line, divided by the
  number of stations (the lines that hold at least `--floor` bytes per device).

    .venv/bin/python benchmarks/device_memory.py [--stations 10000] [--minutes 10] [--floor 16]
"""

from __future__ import annotations

import argparse
import os
import sys
import tracemalloc
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from simulator.builder import build_world
from simulator.engine import make_environment
from simulator.scenario import Scenario
from simulator.transport.jsonl import JsonlWriter

console = Console(width=160)


def size(*objects: Any) -> int:
    return sum(sys.getsizeof(item) for item in objects)


def strings(values: Iterable[Any]) -> list[str]:
    return [value for value in values if isinstance(value, str)]


def one_station(env: Any, telemetry: Any, devices: int) -> list[tuple[str, int]]:
    """The objects a waiting station holds, named, with their sizes (the first station in the queue)."""
    when, priority, eid, timeout = next(entry for entry in env._queue if entry[3].callbacks)
    resume = timeout.callbacks[0]
    process = resume.__self__
    generator = process._generator
    frame = generator.gi_frame
    station = frame.f_locals["station"]
    add_aqi = frame.f_locals["add_aqi"]
    readings = frame.f_locals.get("readings")
    device = station.device
    tags = device.tags
    unique_tag_values = [value for key, value in tags.items() if key in ("lat", "lon")]  # the district: a shared string
    return [
        ("random Stream (slots: key, counter, gauss_next)", size(station.rng, station.rng.key, station.rng.counter)),
        ("pending Timeout + its __dict__ + callbacks list + bound method", size(timeout, timeout.__dict__, timeout.callbacks, resume)),
        ("its heap entry (tuple, time float, event id int, list slot)", size((when, priority, eid, timeout), when, eid) + 8),
        ("SimPy Process + its __dict__ + callbacks list", size(process, process.__dict__, process.callbacks)),
        ("generator with its frame (locals of `report`)", size(generator)),
        ("the last readings dict and its floats, a local of the waiting frame", size(readings, *(v for v in readings.values() if isinstance(v, float))) if readings else 0),
        ("add_aqi closure (function + cells)", size(add_aqi, *(add_aqi.__closure__ or ()))),
        ("AirQualityStation + __dict__ + noise list + its floats", size(station, station.__dict__, station.noise, *station.noise, station.site_factor, station.scale)),
        ("Device (slots) + device_id + topic strings", size(device, device.device_id, device.topic)),
        ("tags dict + lat/lon strings", size(tags, *unique_tag_values)),
        ("telemetry.devices: its share of the dict", round(sys.getsizeof(telemetry.devices) / devices)),
        ("faults (None: a healthy station)", 0),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=10_000)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--floor", type=float, default=16.0, help="list source lines holding at least this many bytes per device")
    args = parser.parse_args(argv)
    scenario = Scenario.model_validate(
        {"name": "memory", "duration": args.minutes * 60, "fleets": [{"type": "air_quality", "count": args.stations, "cadence": "5m"}]}
    )
    writer = JsonlWriter(Path(os.devnull))
    env = make_environment(scenario)
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    world = build_world(scenario, env, writer)
    env.run(until=scenario.duration)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    writer.close()

    objects = one_station(env, world.telemetry, args.stations)
    view = Table(title=f"one waiting station's objects (sys.getsizeof), {args.stations:,} stations after {args.minutes:g} simulated minutes")
    view.add_column("object")
    view.add_column("bytes", justify="right")
    for name, bytes_ in objects:
        view.add_row(name, f"{bytes_:,}")
    view.add_row("total", f"{sum(bytes_ for _, bytes_ in objects):,}")
    console.print(view)

    lines = Table(title="alive after the run, by source line (tracemalloc), bytes per station")
    lines.add_column("where")
    lines.add_column("bytes/station", justify="right")
    total = 0.0
    for stat in after.compare_to(before, "lineno"):
        per_device = stat.size_diff / args.stations
        total += per_device
        if per_device >= args.floor:
            frame = stat.traceback[0]
            lines.add_row(f"{Path(frame.filename).name}:{frame.lineno}", f"{per_device:,.0f}")
    lines.add_row("total (every line)", f"{total:,.0f}")
    console.print(lines)


if __name__ == "__main__":
    main()
