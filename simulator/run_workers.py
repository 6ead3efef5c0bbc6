"""`iotsim run FILE --workers N` (issue 15): one run spread over N child processes on this host.

Each child is exactly `iotsim run FILE --shard i/N` with the parent's other options (the shard path of
simulator/shard.py: no second way to run), so a fleet larger than one process's open-files limit can
connect. The parent starts them together, each in its own process group (a Ctrl-C at the terminal
reaches the parent only, which forwards it once: a second one would interrupt a live run at once),
forwards SIGTERM, SIGINT (as SIGTERM), SIGHUP and Ctrl-Z, relays their lines, and sums the figures each child writes as one JSON
object to the file `IOTSIM_RUN_SUMMARY` names (`write_summary`; set by the parent, for its children only).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

from simulator.errors import UsageError
from simulator.shard import SHARD_ENV, Shard

SUMMARY_ENV = "IOTSIM_RUN_SUMMARY"
MAX_WORKERS = 64  # two cores here; beyond this a host wants --shard across hosts, not more processes
POLL_S = 0.1
RELAY_JOIN_S = 5.0  # a grandchild holding a pipe open must not keep the parent waiting


def write_summary(figures: dict[str, Any]) -> None:
    """In a child of `iotsim run --workers`, its figures for the parent's total line; elsewhere nothing."""
    path = os.environ.get(SUMMARY_ENV)
    if path:
        try:
            Path(path).write_text(json.dumps(figures))
        except OSError:
            pass  # the parent's folder is gone (the parent with it): the child's own line has said the figures


def shard_output(output: Path, shard: Shard) -> Path:
    """A dry run's file for one shard: `city.jsonl` → `city-s0of2.jsonl` (as the shard's client id ends)."""
    return output.with_name(f"{output.stem}-s{shard.index}of{shard.count}{output.suffix}")


@dataclass
class Worker:
    """One child: its shard, its process, the file of its figures, and its last stderr line."""

    shard: Shard
    process: subprocess.Popen[bytes]
    summary_file: Path
    last_error: str = ""
    forwarded: int = 0  # how many of the parent's signals it has been sent
    relays: list[threading.Thread] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"(shard {self.shard.spec})"

    @property
    def code(self) -> int:
        """The exit code as a shell reports it: a child killed by signal S is 128 + S."""
        code = self.process.returncode
        assert code is not None
        return 128 - code if code < 0 else code

    def summary(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.summary_file.read_text())
        except (OSError, ValueError):
            return None


class Workers:
    """The children of one `iotsim run --workers` and the signals the parent forwarded to them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.children: list[Worker] = []
        self.signals: list[int] = []  # received by the parent, in order
        self.stopped: list[Worker] = []  # the children of a live run stopped because another ended
        self.lock = threading.Lock()  # one relayed line at a time
        self.gone: set[TextIO] = set()  # the parent's outputs whose reader went away: no more lines to them

    def receive(self, signum: int, frame: object) -> None:
        # Only noted here: `forward` sends it, from the parent's own code, so a child being started
        # when the signal comes (not yet among the children) gets it too, and gets it once.
        # Ctrl-C goes on as SIGTERM: a child takes both alike once running, and one still importing
        # ends at once on SIGTERM, where SIGINT printed a KeyboardInterrupt traceback.
        self.signals.append(signal.SIGTERM if signum == signal.SIGINT else signum)

    def pause(self, signum: int, frame: object) -> None:
        """Ctrl-Z: it reaches the parent's process group only. Every child stops, then the parent; when
        the shell continues the parent (fg, bg), the parent continues them."""
        for worker in self.children:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGSTOP)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # stopped here until SIGCONT
        signal.signal(signal.SIGTSTP, self.pause)
        for worker in self.children:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGCONT)

    def forward(self) -> None:
        """Send each child the signals received that it has not been sent yet."""
        for worker in self.children:
            while worker.forwarded < len(self.signals):
                signum = self.signals[worker.forwarded]
                worker.forwarded += 1
                if worker.process.poll() is None:
                    worker.process.send_signal(signum)

    def start(self, commands: list[tuple[Shard, list[str]]]) -> None:
        """Start every child; a signal while starting them starts no more (those started have it)."""
        handlers = {signal.SIGTERM: self.receive, signal.SIGINT: self.receive, signal.SIGHUP: self.receive, signal.SIGTSTP: self.pause}
        for signum, handler in handlers.items():
            # SIGHUP (the terminal closed) and Ctrl-Z too: they reach the parent's process group only. One ignored (nohup) stays so, as by the children.
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, handler)
        for shard, command in commands:
            if self.signals:
                break
            summary_file = self.folder / f"shard-{shard.index}.json"
            env = {key: value for key, value in os.environ.items() if key != SHARD_ENV} | {SUMMARY_ENV: str(summary_file)}
            try:
                process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, process_group=0)
            except OSError as error:  # out of open files or processes: the children started must not go on alone
                self.stop_all()
                raise UsageError(f"--workers {len(commands)}: cannot start shard {shard.spec} ({error.strerror}); the shards started are stopped") from None
            worker = Worker(shard, process, summary_file)
            self.children.append(worker)
            assert process.stdout is not None and process.stderr is not None
            worker.relays = [self._relay(worker, process.stdout, sys.stdout, False), self._relay(worker, process.stderr, sys.stderr, True)]
            self.forward()

    def stop_all(self) -> None:
        """SIGTERM to every child (a live one drains and ends), and wait for their ends."""
        for worker in self.children:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        self.wait(live=False)

    def _relay(self, worker: Worker, source: IO[bytes], target: TextIO, errors: bool) -> threading.Thread:
        def copy() -> None:
            for raw in source:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if errors and line.strip():
                    worker.last_error = line.strip()
                # The child's own lines that name their shard stay as they are; the others get its label.
                text = line if not line or worker.label in line else f"{worker.label} {line}"
                with self.lock:
                    if target in self.gone:
                        continue
                    try:
                        target.write(text + "\n")
                        target.flush()
                    except OSError:  # its reader went away (`| head -1`): the child's lines are still read, so it never blocks on a full pipe
                        self.gone.add(target)

        thread = threading.Thread(target=copy, daemon=True)
        thread.start()
        return thread

    def wait(self, live: bool) -> None:
        """Until every child has ended. In a live run a child that ends before the parent is signalled
        (it failed, or was stopped from outside) stops the others: the run would go on without its
        devices. A finite run's others finish their share."""
        while any(worker.process.poll() is None for worker in self.children):
            self.forward()
            if live and not self.stopped and not self.signals and any(worker.process.returncode is not None for worker in self.children):
                self.stopped = [worker for worker in self.children if worker.process.poll() is None]
                for worker in self.stopped:
                    worker.process.send_signal(signal.SIGTERM)
            time.sleep(POLL_S)
        for worker in self.children:
            for relay in worker.relays:
                relay.join(RELAY_JOIN_S)

    def exit_code(self) -> int:
        """0 if every child ended 0 (a live run stopped by a signal too); 130 if interrupted; else the worst
        code of the children that failed on their own (not of those stopped because of them)."""
        if self.children and not any(worker.code for worker in self.children):
            return 0
        if self.signals:
            return 130
        return max((worker.code for worker in self.failed()), default=1)

    def failed(self) -> list[Worker]:
        """The children that failed on their own, the worst first."""
        return sorted((worker for worker in self.children if worker.code and worker not in self.stopped), key=lambda worker: -worker.code)
