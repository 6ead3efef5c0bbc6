"""The benchmarks that start Mosquitto and InfluxDB (pipeline.py, bridge_cpu.py, capacity.py, ...) on the way out:
SIGTERM once both servers run stops both (and whatever else the benchmark started), one line, exit 130."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
SERVERS = {"mosquitto", "influxd"}
# Small runs that still last well past their servers' start, so that SIGTERM finds them running.
SMALL = {
    "pipeline.py": ("--stations", "100", "--hours", "1"),
    "bridge_cpu.py": ("--stations", "2000", "--hours", "1"),
    "capacity.py": ("--probes", "10", "--trial", "1", "--baseline-messages", "1000"),
}
STARTED_S = 20  # the longest both servers take to listen


def listening_servers(bench: psutil.Process) -> list[psutil.Process]:
    """The benchmark's Mosquitto and InfluxDB once both listen on a port; fails after STARTED_S."""
    deadline = time.monotonic() + STARTED_S
    while time.monotonic() < deadline:
        servers = [child for child in bench.children(recursive=True) if name(child) in SERVERS]
        if {name(server) for server in servers if listening(server)} == SERVERS:
            return servers
        time.sleep(0.1)
    raise AssertionError(f"the benchmark did not start Mosquitto and InfluxDB in {STARTED_S} s")


def name(process: psutil.Process) -> str | None:
    try:
        return process.name()
    except psutil.NoSuchProcess:
        return None


def listening(process: psutil.Process) -> bool:
    try:
        return any(connection.status == psutil.CONN_LISTEN for connection in process.net_connections(kind="tcp"))
    except psutil.NoSuchProcess:
        return False


def running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("script", SMALL)
def test_sigterm_stops_the_servers_the_benchmark_started(script: str) -> None:
    bench = subprocess.Popen([sys.executable, str(BENCHMARKS / script), *SMALL[script]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    parent = psutil.Process(bench.pid)
    children: list[psutil.Process] = []
    try:
        listening_servers(parent)
        children = parent.children(recursive=True)  # the servers and anything else it runs now
        bench.terminate()
        _, err = bench.communicate(timeout=30)
        left = [f"{child.name()} {child.pid}" for child in children if running(child)]
        assert left == [], err
        assert bench.returncode == 130, err
        assert err.strip().splitlines() == ["interrupted: the servers and processes it started are stopped"], err
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait(timeout=30)
        for child in children:  # what a failed run left, stopped by PID
            if running(child):
                child.kill()
