"""Where a device's memory goes: the objects one waiting air-quality station holds, and the heap per device.

Builds `--stations` stations (`cadence: 5m`, as benchmarks/scale.py) and runs them `--minutes`
(default 10), so each station waits as it does in a long run: its process suspended at a timeout.
Then it prints two views, per device:

- the objects of one station of the fleet's cohort (simulator/cohort.py): its state (slots), its
  noise array, its random stream, its id and encoded tags, and its share of what the fleet holds
  once (the sorted device list, the phase groups' starts and times), each with `sys.getsizeof`;
- what tracemalloc saw allocated and still alive after the run, by source line, divided by the
  number of stations (the lines that hold at least `--floor` bytes per device).

    .venv/bin/python benchmarks/device_memory.py [--stations 10000] [--minutes 10] [--floor 16]
"""

from __future__ import annotations

import argparse
import os
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from simulator.builder import build_world
from simulator.engine import make_environment
from simulator.scenario import Scenario
from simulator.transport.jsonl import JsonlWriter

console = Console(width=160)


def size(*objects: Any) -> int:
    return sum(sys.getsizeof(item) for item in objects)


def one_station(env: Any, telemetry: Any, devices: int) -> list[tuple[str, int]]:
    """The objects a waiting station holds, named, with their sizes (a station of the fleet's cohort,
    simulator/cohort.py), and its share of what the fleet holds once (its process and schedule)."""
    wire = telemetry.wires[0]
    station = wire.devices[len(wire.devices) // 2]
    process = next(entry[3].callbacks[0].__self__ for entry in env._queue if entry[3].callbacks)
    frame = process._generator.gi_frame
    schedule = size(frame.f_locals["starts"], frame.f_locals["times"], wire.devices)
    return [
        ("random Stream (slots: key, counter, gauss_next)", size(station.rng, station.rng.key, station.rng.counter)),
        ("AirQualityStation (slots) + its noise array + scale and last time floats", size(station, station.noise, station.scale)),
        ("device_id string", size(station.device_id)),
        ("encoded tags (orjson.Fragment + its str)", size(station.tags, orjson.dumps(station.tags).decode())),  # dumps(fragment): its text
        ("seq int (shared below 257)", size(station.seq) if station.seq > 256 else 0),
        ("its share of the fleet's schedule (device list, group starts and times)", round(schedule / devices)),
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
