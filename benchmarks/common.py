"""What the benchmarks share: the connection benchmarks' (connections.py, connection_engines.py) flag
checks, each a bad flag's one line and exit 2, and a way out on SIGTERM, Ctrl-C and errors that stops
every server and process a benchmark started, by PID."""

from __future__ import annotations

import contextlib
import math
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
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
        if _received:  # its KeyboardInterrupt came inside a finalizer (the garbage collector's), which swallows it
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        print("interrupted: the servers and processes it started are stopped", file=sys.stderr)
        return INTERRUPTED
    finally:
        # Held from here to the exit: the interpreter's shutdown puts back the default handlers, and a
        # signal then would end the process by SIGTERM instead of its exit status.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    return 0


_received: list[int] = []  # the signal that interrupted the run, once one has


def _interrupt(signum: int, frame: object) -> NoReturn:
    _received.append(signum)
    # The next ones are ignored by a handler that does nothing, not SIG_IGN: a signal already caught
    # (two at once, or both held by `signals_deferred`) whose handler is SIG_IGN by the time Python runs
    # it is a printed traceback, "OSError: Signal 15 ignored due to race condition".
    signal.signal(signal.SIGTERM, _ignore)
    signal.signal(signal.SIGINT, _ignore)
    raise KeyboardInterrupt


def _ignore(signum: int, frame: object) -> None:
    """A SIGTERM or Ctrl-C after the first: the way out is already under way."""


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Around the stopping of what a benchmark started: a SIGTERM or Ctrl-C that comes meanwhile (on the way
    out after its figures or an error, before `run`'s handler has ignored the next ones) is held until
    everything is stopped, then delivered as it would have been; it cannot cut the stopping short.
    Blocked, not re-handled: changing a handler while a signal is pending is itself a race (CPython
    raises "Signal 15 ignored due to race condition")."""
    held = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)  # one held now runs its handler: KeyboardInterrupt, or nothing after the first


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
