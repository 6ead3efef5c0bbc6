"""py-spy for the CPU benchmarks (bridge_cpu.py, publisher_cpu.py): sampling this process into a raw
stacks file, and that file split by function and printed.

py-spy is not a project dependency: each benchmark takes its path with `--py-spy`. A raw file's line is
one stack and its samples, `frame;frame;...;frame COUNT`, the outermost frame first; a frame reads
`Class.function (file:line)`. Sampled with `--threads`, each stack starts with its thread instead,
`thread (ID): NAME`.
"""

from __future__ import annotations

import atexit
import collections
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

RATE = 250  # samples a second


@dataclass(frozen=True)
class Stack:
    """One line of py-spy's raw output."""

    thread: str  # "thread (ID): NAME" when sampled with threads, else ""
    frames: list[str]
    count: int

    @property
    def functions(self) -> set[str]:
        return {frame.split(" (")[0].rpartition(".")[2] for frame in self.frames}  # "Client.loop_read (file:line)" → loop_read


@dataclass
class Split:
    """Samples of the stacks kept: all of them, per label of `inclusive` (its function, with what it calls, on the
    stack) and per innermost frame."""

    total: int = 0
    inclusive: dict[str, int] = field(default_factory=dict)
    innermost: collections.Counter[str] = field(default_factory=collections.Counter)


def record(output: Path, py_spy: str | None, threads: bool = False) -> subprocess.Popen[bytes]:
    """py-spy sampling this process into `output` (raw stacks) until `stop`."""
    command = [py_spy or "py-spy", "record", "--pid", str(os.getpid()), "--nonblocking", *(["--threads"] if threads else []), "--rate", str(RATE),
               "--format", "raw", "--output", str(output)]  # fmt: skip
    sampler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(kill_if_running, sampler)  # a benchmark stopped by SIGTERM or an error never reaches `stop`
    time.sleep(1.0)  # py-spy attaches
    return sampler


def stop(sampler: subprocess.Popen[bytes]) -> None:
    sampler.send_signal(signal.SIGINT)  # py-spy writes its file
    sampler.wait(timeout=60)


def kill_if_running(sampler: subprocess.Popen[bytes]) -> None:
    """A sampler still running when the benchmark exits: killed and reaped (its file is of no use then)."""
    if sampler.poll() is None:
        sampler.kill()
        sampler.wait(timeout=10)


def read_stacks(profile: Path, threads: bool = False) -> list[Stack]:
    """The raw file's stacks; with `threads`, each line's first element is its thread, not a frame."""
    result = []
    for line in profile.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        frames = stack_text.split(";")
        thread = frames.pop(0) if threads else ""
        result.append(Stack(thread, frames, int(count_text)))
    return result


def split(stacks: list[Stack], inclusive: dict[str, str], keep: Callable[[Stack], bool]) -> Split:
    """The samples of the stacks `keep` keeps, split by `inclusive` ("label": function name) and by innermost frame."""
    result = Split(inclusive=dict.fromkeys(inclusive, 0))
    for stack in filter(keep, stacks):
        result.total += stack.count
        functions = stack.functions
        for label, function in inclusive.items():
            if function in functions:
                result.inclusive[label] += stack.count
        if stack.frames:
            result.innermost[stack.frames[-1]] += stack.count
    return result


def show(shares: Split, heading: str, most: int = 25) -> None:
    """`heading`, then each label's share of the samples and the `most` sampled innermost functions'."""
    print(heading)
    for label, count in shares.inclusive.items():
        print(f"  {100 * count / max(shares.total, 1):5.1f} %  {label}")
    print("innermost functions:")
    for frame, count in shares.innermost.most_common(most):
        print(f"  {100 * count / max(shares.total, 1):5.1f} %  {frame}")
