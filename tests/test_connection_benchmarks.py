"""benchmarks/connections.py and benchmarks/connection_engines.py on the way out: SIGTERM or Ctrl-C
(SIGINT) stops every Mosquitto, mosquitto_sub and worker process they started, and is one line, exit
130; connections.py's bad flags are one line, exit 2 (connection_engines.py's: tests/test_connection_engines.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
# The smallest runs that would go on for a minute: long enough to be stopped midway.
TINY = {
    "connections.py": ("--sizes", "5", "--cadence", "1", "--minutes", "1"),
    "connection_engines.py": ("--engines", "paho", "--sizes", "5", "--cadence", "1", "--minutes", "1", "--idle", "1"),
}
STARTED_S = 60  # the longest the broker, its subscriber and a worker's devices take to be running


def started(bench: psutil.Process) -> list[psutil.Process]:
    """The benchmark's descendants once its broker and subscriber run and a worker's devices are connecting
    (the worker past its imports); fails after STARTED_S."""
    deadline = time.monotonic() + STARTED_S
    while time.monotonic() < deadline:
        children = [child for child in bench.children(recursive=True) if kind(child)]
        kinds = {kind(child) for child in children}
        if {"mosquitto", "mosquitto_sub"} <= kinds and any(kind(child) == "worker" and connecting(child) for child in children):
            return children
        time.sleep(0.1)
    raise AssertionError(f"the benchmark did not start its broker, subscriber and devices in {STARTED_S} s")


def connecting(worker: psutil.Process) -> bool:
    try:
        return bool(worker.net_connections(kind="tcp"))
    except psutil.NoSuchProcess:
        return False


def kind(process: psutil.Process) -> str | None:
    """What a descendant is: a broker, a subscriber or a worker (multiprocessing's resource tracker is none of these)."""
    try:
        if process.name() in ("mosquitto", "mosquitto_sub"):
            return process.name()
        return "worker" if any("spawn_main" in part for part in process.cmdline()) else None
    except psutil.NoSuchProcess:
        return None


def running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop_what_is_left(bench: subprocess.Popen[str], children: list[psutil.Process]) -> None:
    """After a test of a benchmark's stopping: the benchmark, and what a failed run left, killed by PID."""
    if bench.poll() is None:
        bench.kill()
        bench.wait(timeout=30)
    for child in children:
        if running(child):
            child.kill()


# kill -TERM, kill -INT (the benchmark alone), and Ctrl-C at a terminal (SIGINT to its whole process group:
# its workers and mosquitto_sub get it too; the brokers run in sessions of their own).
STOPS = {"SIGTERM": (signal.SIGTERM, False), "SIGINT": (signal.SIGINT, False), "Ctrl-C": (signal.SIGINT, True)}


@pytest.mark.parametrize("stop", STOPS)
@pytest.mark.parametrize("script", TINY)
def test_a_stopped_benchmark_stops_every_server_and_process_it_started(script: str, stop: str) -> None:
    signum, to_group = STOPS[stop]
    bench = subprocess.Popen([sys.executable, str(BENCHMARKS / script), *TINY[script]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                             start_new_session=to_group)  # fmt: skip
    children: list[psutil.Process] = []
    try:
        children = started(psutil.Process(bench.pid))
        if to_group:
            os.killpg(bench.pid, signum)
        else:
            bench.send_signal(signum)
        _, err = bench.communicate(timeout=60)
        left = [f"{child.name()} {child.pid}" for child in children if running(child)]
        assert left == [], err
        assert bench.returncode == 130, err
        assert err.strip().splitlines()[-1] == "interrupted: the servers and processes it started are stopped" and "Traceback" not in err, err
    finally:
        stop_what_is_left(bench, children)


def test_signals_while_it_stops_do_not_cut_the_stopping_short() -> None:
    # SIGTERM, then SIGTERM and SIGINT again every 20 ms until it has exited (a supervisor that insists, a
    # user pressing Ctrl-C twice): the stopping of its broker, subscriber and workers still finishes.
    bench = subprocess.Popen([sys.executable, str(BENCHMARKS / "connections.py"), *TINY["connections.py"]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    children: list[psutil.Process] = []
    try:
        children = started(psutil.Process(bench.pid))
        deadline = time.monotonic() + 60
        while bench.poll() is None and time.monotonic() < deadline:
            for signum in (signal.SIGTERM, signal.SIGINT):
                if bench.poll() is None:
                    bench.send_signal(signum)
            time.sleep(0.02)
        _, err = bench.communicate(timeout=60)
        left = [f"{child.name()} {child.pid}" for child in children if running(child)]
        assert left == [], err
        assert bench.returncode == 130, err
        assert err.strip().splitlines()[-1] == "interrupted: the servers and processes it started are stopped" and "Traceback" not in err, err
    finally:
        stop_what_is_left(bench, children)


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (("--sizes", "0"), "--sizes '0': each from 1"),
        (("--sizes", "10,many"), "--sizes '10,many': give device counts separated by commas"),
        (("--cadence", "nan"), "--cadence and --minutes above 0"),
        (("--minutes", "0"), "--cadence and --minutes above 0"),
        (("--window", "-1"), "--window 0 or more"),
        (("--min", "5", "--max", "1"), "0 < --min <= --max"),
        (("--brokers", "2", "--processes", "1"), "--processes at least --brokers"),
    ],
)
def test_connections_bad_flags_are_one_line_and_exit_2(flags: tuple[str, ...], says: str) -> None:
    result = subprocess.run([sys.executable, str(BENCHMARKS / "connections.py"), *flags], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2, result.stderr
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""
