"""What the benchmarks share: the connection benchmarks' (connections.py, connection_engines.py) flag
checks, each a bad flag's one line and exit 2, and a way out on SIGTERM, Ctrl-C and errors that stops
every server and process a benchmark started, by PID."""

from __future__ import annotations

import math
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from multiprocessing.process import BaseProcess
from typing import NoReturn

INTERRUPTED = 130  # the exit status of a benchmark stopped by SIGTERM or Ctrl-C (128 + SIGINT, as a shell's)


def usage_error(line: str) -> NoReturn:
    """Bad flags: one line, exit 2."""
    print(line, file=sys.stderr)
    sys.exit(2)


def device_counts(text: str, most: int | None = None, why: str = "") -> list[int]:
    """`--sizes`: device counts separated by commas, each from 1 (to `most`, for the reason `why`)."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        usage_error(f"--sizes {text!r}: give device counts separated by commas, e.g. 1000,5000")
    if any(count < 1 or (most is not None and count > most) for count in counts):
        usage_error(f"--sizes {text!r}: each from 1" + (f" to {most:,} ({why})" if most is not None else ""))
    return counts


def seconds_ok(above_zero: Iterable[float], at_least_zero: Iterable[float] = ()) -> bool:
    """Every value finite (argparse's float takes nan and inf), those of `above_zero` above 0, the others 0 or more."""
    above, rest = list(above_zero), list(at_least_zero)
    return all(math.isfinite(value) for value in above + rest) and all(value > 0 for value in above) and all(value >= 0 for value in rest)


def open_files_hard_limit() -> float:
    """The most files one process may open (the benchmarks raise their soft limit to it, the brokers inherit it); inf if unlimited."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return math.inf if hard == resource.RLIM_INFINITY else hard


def run(main: Callable[[], None]) -> int:
    """`main` with SIGTERM (kill, a CI job's timeout) and SIGINT (Ctrl-C) raised in it as KeyboardInterrupt,
    so that its `finally` blocks stop what it started; the first signal ignores the next ones, which would
    cut that short. An interrupted run is one line and exit 130."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted: the servers and processes it started are stopped", file=sys.stderr)
        return INTERRUPTED
    return 0


def _interrupt(signum: int, frame: object) -> NoReturn:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def leave_ctrl_c_to_the_parent() -> None:
    """First thing in a worker process: Ctrl-C at a terminal reaches the whole process group, and each
    worker printed its KeyboardInterrupt's traceback; its parent stops it instead (`kill_if_alive`).
    (Ignoring SIGINT in the parent while it starts a worker would cover the worker's imports too, but
    would lose a Ctrl-C meant for the parent meanwhile.)"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def kill_if_alive(process: BaseProcess) -> None:
    """A worker process still running on the way out (an error, an interrupt): killed and reaped, not waited for."""
    if process.pid is None:
        return  # never started
    if process.is_alive():
        process.kill()
    process.join(timeout=10)


def kill_child_if_running(process: subprocess.Popen) -> None:
    """A child command (a bridge, mosquitto_sub) still running on the way out (an error, an interrupt): killed and reaped."""
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)
