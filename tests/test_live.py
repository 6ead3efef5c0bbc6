"""A live run (`duration: until-stopped`): paced, it keeps the city and the port going day after day
with flat memory, starts from now, and ends on SIGTERM like a finished run (drained, summary, exit
0); what cannot run until stopped (as fast as possible, a dry run, verify) is refused in one line."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import simpy

from conftest import IOTSIM, Pipeline, child_env, iotsim
from simulator.builder import build_world
from simulator.city.air_quality import make_air
from simulator.city.model import LIVE_KEEP_DAYS, city_of
from simulator.port.model import LIVE_SAMPLES, port_of
from simulator.scenario import load_scenario

DAY = 86400.0

# One device of every city and port type, reporting every 30 min: the whole city and port models run
# (trains, trucks, the gate, the weather), but a simulated day is ~2,700 messages.
FLEETS = """
fleets:
  - {type: air_quality, count: 2, cadence: 30m, category_events: true}
  - {type: traffic_loop, count: 1, cadence: 30m}
  - {type: street_light, count: 1, cadence: 30m}
  - {type: heating_substation, count: 1, cadence: 30m}
  - {type: water_pressure, count: 1, cadence: 30m}
  - {type: parking_lot, count: 1, cadence: 30m}
  - {type: noise_monitor, count: 1, cadence: 30m}
  - {type: electricity_meter, count: 1, cadence: 30m}
  - {type: mine_gas, count: 1, cadence: 30m}
  - {type: dc_rack, count: 1, cadence: 30m}
  - {type: port_crane, count: 1, cadence: 30m}
  - {type: yard_block, count: 1, cadence: 30m}
  - {type: gate_lane, count: 1, cadence: 30m}
  - {type: reefer, count: 1, cadence: 30m}
  - {type: truck_gps, count: 1, cadence: 30m}
"""
LIVE = "name: live\nseed: 7\nduration: until-stopped\nspeed: 20000\n" + FLEETS


def scenario_file(tmp_path: Path, text: str = LIVE) -> Path:
    path = tmp_path / "live.yaml"
    path.write_text(text)
    return path


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def lines_of(stream: object) -> tuple[queue.Queue[str], threading.Thread]:
    """A child's output lines, read on a thread so the test can wait for one with a timeout."""
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True)  # type: ignore[attr-defined]
    reader.start()
    return lines, reader


def rest_of(lines: queue.Queue[str], reader: threading.Thread) -> str:
    """What the child wrote after the last line waited for, once it has exited."""
    reader.join(timeout=30)
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    return "".join(rest)


def wait_for(lines: queue.Queue[str], pattern: str, seen: list[str], timeout: float = 300.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            break
        seen.append(line)
        if (match := re.search(pattern, line)) is not None:
            return match
    raise AssertionError(f"no line matching {pattern!r} within {timeout:.0f} s; stderr so far:\n{''.join(seen)}")


def test_a_live_run_goes_on_for_days_from_now_with_flat_memory_and_ends_cleanly_on_sigterm(pipeline: Pipeline) -> None:
    path = pipeline.scenario_file(LIVE)
    run = subprocess.Popen([*IOTSIM, "run", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        assert run.stderr is not None
        (lines, reader), seen = lines_of(run.stderr), []
        started = datetime.fromisoformat(wait_for(lines, r"live from (\S+) at 20000 x real time until stopped", seen)[1])
        assert abs((started - datetime.now().astimezone()).total_seconds()) < 60  # from now, not the file's start
        # Started now, it exits 10 s after the run's last message (the days before its start are not asserted).
        bridge = pipeline.start_bridge("--exit-when-idle", "10")
        wait_for(lines, r"^live: day 1 simulated", seen)
        day1 = rss_kb(run.pid)
        wait_for(lines, r"^live: day 3 simulated", seen)
        day3 = rss_kb(run.pid)
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=120)
        assert run.stdout is not None
        out, err = run.stdout.read(), rest_of(lines, reader)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(10)
    assert run.returncode == 0, "".join(seen) + err
    counts = re.search(r"live: generated (\d+), published (\d+), acknowledged (\d+)", out)
    assert counts is not None, out
    generated, published, acknowledged = map(int, counts.groups())
    assert generated == published == acknowledged > 3 * 16 * 48  # every message out and acknowledged
    assert "port KPIs" in out and "city (the last 6 days)" in out  # the summary
    assert re.search(rf"live: stopped after \d+d\S* simulated, live from --start {re.escape(started.isoformat())}", err), err
    # The models' memory is bounded: days 1 to 3 add no more than allocator noise (a leak of every
    # message, or of the minutes of the city's air, would add several MB).
    assert day3 - day1 < 8 * 1024, (day1, day3)
    bridge.wait(timeout=120)
    day2, later = (int((started + timedelta(days=days)).timestamp() * 1000) for days in (2, 30))
    for measurement in ("air_quality", "parking_lot", "yard_block", "gate_lane", "truck_gps"):
        # The points are in the future (the run went faster than the wall clock): an explicit upper bound.
        series = pipeline.query(f'SELECT count("seq") FROM "{measurement}" WHERE time >= {day2}ms AND time < {later}ms')
        assert series and series[0]["values"][0][1] > 0, measurement  # day 2 and later, city and port


def test_a_live_world_plans_the_port_day_by_day_and_keeps_its_memory_bounded(tmp_path: Path) -> None:
    scenario = load_scenario(scenario_file(tmp_path))
    env = simpy.Environment()  # the world as a live run builds it, run as fast as possible
    messages: list[tuple[str, bytes]] = []
    world = build_world(scenario, env, lambda topic, payload: messages.append((topic, payload)))
    days = 2 * LIVE_KEEP_DAYS + 1  # past what the weather keeps
    env.run(until=days * DAY)
    start_ms = scenario.start.timestamp() * 1000
    arrivals_per_day = [0] * days
    for topic, payload in messages:
        if topic.endswith("/events/train_arrival/port-rail"):
            arrivals_per_day[int((orjson.loads(payload)["ts"] - start_ms) // (DAY * 1000))] += 1
    assert all(3 <= arrivals <= 6 for arrivals in arrivals_per_day), arrivals_per_day  # 4 a day, late ones the next day
    port, city, air = port_of(world), city_of(world), world.shared("city/air", make_air)
    for samples in (port.kpis.truck_turnaround_s, port.kpis.dwell_import_s, port.kpis.yard_utilisation, port.gate_in.waits, port.gate_out.arrivals):
        assert len(samples) <= 2 * LIVE_SAMPLES
    assert port.kpis.truck_turnaround_s.total > 2 * LIVE_SAMPLES  # ... while the counts go on
    assert len(city.weather.temp) <= 2 * LIVE_KEEP_DAYS * 24 < city.weather.temp.total
    assert len(city.calendar._days) <= LIVE_KEEP_DAYS and len(city.data_centre._load) <= 2 * LIVE_KEEP_DAYS * 24
    # The air keeps only the minutes stations read (sparse), and in a live run two days of them at most:
    # read every minute of the last three days and the oldest of them are forgotten (the minutes the
    # stations had read before are among the kept ones, so the bound on the oldest kept is looser).
    now_minute = int(env.now // 60)
    for minute in range(now_minute - 3 * 1440, now_minute):
        air.factors(minute * 60.0)
    assert len(air._factors) <= 2 * 1440 and min(air._factors) > now_minute - 3 * 1440 + 720
    # The same scenario, seed and start: the same messages, wherever a live run is stopped.
    again: list[tuple[str, bytes]] = []
    env = simpy.Environment()
    build_world(scenario, env, lambda topic, payload: again.append((topic, payload)))
    env.run(until=DAY)
    assert again == messages[: len(again)] and len(again) > 16 * 48


def test_until_stopped_is_refused_where_a_run_must_end(tmp_path: Path) -> None:
    path = scenario_file(tmp_path)
    assert iotsim("validate", str(path)).stdout.strip().endswith("until-stopped, speed 20000.0)")
    for args, flag in (
        (["run", str(path), "--speed", "afap"], "--speed"),
        (["run", str(path), "--dry-run", "--out", str(tmp_path / "out.jsonl")], "--dry-run"),
        (["verify", str(path), "--influx", "http://127.0.0.1:9"], "--duration"),
    ):
        result = iotsim(*args)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(f"{flag}: ") and "until" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.jsonl").exists()
    unpaced = scenario_file(tmp_path, LIVE.replace("speed: 20000", "speed: afap"))
    result = iotsim("validate", str(unpaced))
    assert result.returncode == 2 and result.stderr.strip() == (
        f"{unpaced}:4: speed: 'afap' never ends with duration until-stopped; give a number N (N x real time) or a finite duration"
    )


def test_a_duration_on_the_command_line_makes_a_live_scenario_finite(tmp_path: Path) -> None:
    path, out = scenario_file(tmp_path), tmp_path / "two-hours.jsonl"
    result = iotsim("run", str(path), "--duration", "2h", "--speed", "afap", "--start", "2026-01-14T00:00:00", "--dry-run", "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = out.read_text().splitlines()
    devices = 16
    assert sum(1 for line in lines if "/events/" not in json.loads(line)["topic"]) == devices * 4  # 2 h / 30 min each
