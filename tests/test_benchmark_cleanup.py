"""The benchmarks that start Mosquitto and InfluxDB (pipeline.py, bridge_cpu.py, capacity.py, recovery.py; publisher_cpu.py
Mosquitto alone) on the way out: SIGTERM once their servers run (and, for pipeline.py and recovery.py, their bridge
process) stops all of them and whatever else the benchmark started, one line, exit 130."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from test_connection_benchmarks import running, stop_what_is_left

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
SERVERS = {"mosquitto", "influxd"}
# Small runs that still last well past what they start (the servers, then those waited for here), so that SIGTERM finds it running.
SMALL = {
    "pipeline.py": (("--stations", "100", "--hours", "1"), SERVERS | {"bridge"}),
    "bridge_cpu.py": (("--stations", "2000", "--hours", "1"), SERVERS),
    "capacity.py": (("--probes", "10", "--trial", "1", "--baseline-messages", "1000"), SERVERS),
    "recovery.py": (("--stations", "10", "--minutes", "1", "--faults", "broker_outage"), SERVERS | {"bridge"}),
    "publisher_cpu.py": (("--stations", "2000", "--hours", "1", "--runs", "1"), {"mosquitto"}),
}
# The longest the servers take to listen and a bridge to connect, and the benchmark to stop them: deadlines
# polled, not sleeps, so they cost nothing when the machine is idle. On the 2-core machine beside the
# connection benchmarks (each a broker, a subscriber and worker processes), 20 s to start and 30 s to stop
# once proved too short for capacity.py (InfluxDB's start, then its probes' first trial).
STARTED_S = 120
STOPPED_S = 120


def up(bench: psutil.Process, kinds: set[str]) -> None:
    """Waits until the benchmark runs each of `kinds`, the servers listening and a bridge connected; fails after STARTED_S."""
    deadline = time.monotonic() + STARTED_S
    while time.monotonic() < deadline:
        if {kind(child) for child in bench.children(recursive=True) if connected(child)} >= kinds:
            return
        time.sleep(0.1)
    raise AssertionError(f"the benchmark did not start {', '.join(sorted(kinds))} in {STARTED_S} s")


def kind(process: psutil.Process) -> str | None:
    """A server's name, "bridge" for an `iotsim bridge` process, else None."""
    try:
        if process.name() in SERVERS:
            return process.name()
        return "bridge" if "simulator.cli" in process.cmdline() and "bridge" in process.cmdline() else None
    except psutil.NoSuchProcess:
        return None


def connected(process: psutil.Process) -> bool:
    """Listening (a server) or connected (a bridge to its broker)."""
    try:
        return any(connection.status in (psutil.CONN_LISTEN, psutil.CONN_ESTABLISHED) for connection in process.net_connections(kind="tcp"))
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("script", SMALL)
def test_sigterm_stops_the_servers_the_benchmark_started(script: str) -> None:
    flags, kinds = SMALL[script]
    bench = subprocess.Popen([sys.executable, str(BENCHMARKS / script), *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    parent = psutil.Process(bench.pid)
    children: list[psutil.Process] = []
    try:
        up(parent, kinds)
        children = parent.children(recursive=True)  # the servers and anything else it runs now
        assert {kind(child) for child in children} >= kinds
        bench.terminate()
        _, err = bench.communicate(timeout=STOPPED_S)
        left = [f"{child.name()} {child.pid}" for child in children if running(child)]
        assert left == [], err
        assert bench.returncode == 130, err
        assert err.strip().splitlines() == ["interrupted: the servers and processes it started are stopped"], err
    finally:
        stop_what_is_left(bench, children)


def test_sigterm_stops_the_py_spy_sampler_too(tmp_path: Path) -> None:
    # py-spy is not a project dependency (the benchmarks take its path): a stand-in that samples nothing and
    # runs until killed, as py-spy does until its SIGINT, shows whether the benchmark stops its sampler.
    sampler = tmp_path / "py-spy"
    sampler.write_text("#!/bin/sh\nexec sleep 600\n")
    sampler.chmod(0o755)
    command = [sys.executable, str(BENCHMARKS / "bridge_cpu.py"), *SMALL["bridge_cpu.py"][0], "--profile", str(tmp_path / "raw.txt"), "--py-spy", str(sampler)]
    bench = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    parent = psutil.Process(bench.pid)
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + STARTED_S
        while not any(child.name() == "sleep" for child in children) and time.monotonic() < deadline:
            children = parent.children(recursive=True)
            time.sleep(0.1)
        assert any(child.name() == "sleep" for child in children), f"no sampler started in {STARTED_S} s"
        bench.terminate()
        _, err = bench.communicate(timeout=STOPPED_S)
        left = [f"{child.name()} {child.pid}" for child in children if running(child)]
        assert left == [], err
        assert bench.returncode == 130, err
    finally:
        stop_what_is_left(bench, children)
