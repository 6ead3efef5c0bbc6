"""`iotsim run FILE --workers N` (issue 15): N children, each `iotsim run FILE --shard i/N`, against the
real Mosquitto. Together they publish exactly the unsharded run's messages, every device connects
once, the total line sums the children's figures exactly; SIGTERM stops every child; bad combinations
are one line and exit 2."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import IO

import orjson
import psutil
from conftest import IOTSIM, child_env, iotsim
from test_device_sessions import Watcher, sys_broker  # noqa: F401 (a fixture)

from simulator import stack
from simulator.faults import SOURCE as FAULT_SOURCE
from simulator.run_workers import Workers
from simulator.shard import SHARD_ENV, Shard

METERS = 200
READINGS = METERS * 4  # an hour at 15 min
AIR = 10 * 12  # 10 air-quality monitors on the run's shared connection, every 5 min

SCENARIO = """
name: {name}
seed: 15
start: 2026-01-16T00:00:00+08:00
duration: {duration}
speed: {speed}
fleets:
  - type: electricity_meter
    count: {meters}
    cadence: 15m
    connection: device
  - type: air_quality
    count: 10
    cadence: 5m
{extra}
mqtt:
  url: mqtt://127.0.0.1:{port}
  qos: 1
  topic_prefix: {prefix}
  client_id_prefix: {prefix}
  connect_window: 1s
influx:
  url: http://127.0.0.1:{influx_port}
"""


def scenario_file(tmp_path: Path, port: int, prefix: str, duration: str = "1h", speed: str = "afap", meters: int = METERS, extra: str = "") -> Path:
    path = tmp_path / f"{prefix}.yaml"
    path.write_text(SCENARIO.format(name="workers", duration=duration, speed=speed, meters=meters, extra=extra, port=port, prefix=prefix, influx_port=stack.free_port()))
    return path  # no InfluxDB: the run notes it once and goes on


def telemetry(messages: list[tuple[str, bytes, bool]], prefix: str) -> Counter[tuple[str, bytes]]:
    """The run's messages (not the births and deaths on status/), topic without its prefix, payload normalised."""
    return Counter(
        (topic.removeprefix(prefix), orjson.dumps(orjson.loads(payload)))
        for topic, payload, _ in messages
        if topic.startswith(f"{prefix}/") and not topic.startswith(f"{prefix}/status/")
    )


def published(watcher: Watcher, prefix: str, total: int) -> Counter[tuple[str, bytes]]:
    return telemetry(watcher.wait(lambda messages: sum(telemetry(messages, prefix).values()) >= total, timeout=20), prefix)


def test_two_workers_publish_exactly_the_unsharded_run_each_device_connected_once(sys_broker: stack.Service, tmp_path: Path) -> None:  # noqa: F811
    total = READINGS + AIR
    whole = scenario_file(tmp_path, sys_broker.port, "rwa")
    watcher = Watcher(sys_broker.port, ["rwa/#"])
    try:
        run = iotsim("run", str(whole), timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        assert f"workers: generated {total}, published {total}, acknowledged {total}" in run.stdout
        expected = published(watcher, "rwa", total)
    finally:
        watcher.stop()
    assert sum(expected.values()) == total and max(expected.values()) == 1

    sharded = scenario_file(tmp_path, sys_broker.port, "rwb")
    log_start = sys_broker.log_file.stat().st_size
    watcher = Watcher(sys_broker.port, ["rwb/#"])
    try:
        run = iotsim("run", str(sharded), "--workers", "2", timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        published(watcher, "rwb", total)
        time.sleep(0.5)  # anything more (a duplicate) would come now
        got = telemetry(watcher.taken(), "rwb")
    finally:
        watcher.stop()
    assert got == expected  # the same messages, each once: the union of the shards is the unsharded run
    # The parent's total is the children's sum, exact; each child's own lines carry its shard.
    assert re.search(rf"^workers \(2 workers\): generated {total}, published {total}, acknowledged {total} in [\d.]+ s", run.stdout, re.MULTILINE), run.stdout
    shards = [re.search(rf"^workers \(shard {index}/2\): generated (\d+), published \1, acknowledged \1 ", run.stdout, re.MULTILINE) for index in range(2)]
    assert all(shards) and sum(int(match.group(1)) for match in shards if match) == total, run.stdout
    # The broker's word: every meter connected exactly once, as itself, and each shard's run connection once.
    log = sys_broker.log_file.read_bytes()[log_start:].decode()
    connected = Counter(re.findall(r"New client connected from \S+ as (\S+) \(", log))
    meters = {f"meter-{n:04d}" for n in range(1, METERS + 1)}
    assert {client for client in connected if client.startswith("meter-")} == meters
    assert all(connected[meter] == 1 for meter in meters)
    assert connected["rwb-run-workers-s0of2"] == 1 and connected["rwb-run-workers-s1of2"] == 1


class Reader:
    """A child process's stdout and stderr, kept line by line as they come."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.out: list[str] = []
        self.lines: list[str] = []  # stderr
        assert process.stdout is not None and process.stderr is not None
        self.threads = [threading.Thread(target=self._keep, args=(stream, kept), daemon=True) for stream, kept in ((process.stdout, self.out), (process.stderr, self.lines))]
        for thread in self.threads:
            thread.start()

    @staticmethod
    def _keep(stream: IO[str], kept: list[str]) -> None:
        for line in stream:
            kept.append(line)

    def wait_for(self, text: str, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while sum(text in line for line in self.lines) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return sum(text in line for line in self.lines) >= count

    def end(self, timeout: float) -> str:
        """Wait for the process's end; its whole stdout."""
        self.process.wait(timeout)
        for thread in self.threads:
            thread.join(10)
        return "".join(self.out)


def start_workers(scenario: Path, *args: str) -> tuple[subprocess.Popen[str], Reader]:
    # A process group of its own, as a shell starts a job: pytest's group may be orphaned (started in the
    # background), and the kernel discards a Ctrl-Z's stop in an orphaned group.
    process = subprocess.Popen([*IOTSIM, "run", str(scenario), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
                               process_group=0)  # fmt: skip
    return process, Reader(process)


def children_of(process: subprocess.Popen[str], count: int, timeout: float = 30) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while len(found := psutil.Process(process.pid).children()) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def wait_until_live(process: subprocess.Popen[str], reader: Reader, children: list[psutil.Process]) -> None:
    """Both children found (into `children`, which the caller's cleanup stops) and both shards connected and running."""
    children.extend(children_of(process, 2))
    assert len(children) == 2
    assert reader.wait_for("live from", 2, timeout=20), reader.lines


def test_sigterm_stops_a_live_run_cleanly_with_every_child(sys_broker: stack.Service, tmp_path: Path) -> None:  # noqa: F811
    scenario = scenario_file(tmp_path, sys_broker.port, "rwlive", duration="until-stopped", speed="60", meters=40)
    process, reader = start_workers(scenario, "--workers", "2")
    children: list[psutil.Process] = []
    watcher = Watcher(sys_broker.port, ["rwlive/#"])
    try:
        wait_until_live(process, reader, children)
        assert watcher.wait(bool, timeout=60), "no message from the run"  # its world built ("live from" comes before), publishing
        process.send_signal(signal.SIGTERM)
        stdout = reader.end(timeout=30)
    finally:
        watcher.stop()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, "".join(reader.lines)  # a live run stopped by SIGTERM drains and ends 0, as one process does
    assert not [child for child in children if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]
    total = re.search(r"^workers \(2 workers\): generated (\d+), published \1, acknowledged \1 ", stdout, re.MULTILINE)
    assert total is not None and int(total.group(1)) > 0, stdout
    assert sum("stopped after" in line for line in reader.lines) == 2  # each child's own end, with its shard label


def test_sigterm_interrupts_a_finite_run_exit_130_and_no_child_left(sys_broker: stack.Service, tmp_path: Path) -> None:  # noqa: F811
    scenario = scenario_file(tmp_path, sys_broker.port, "rwfin", duration="6h", speed="60", meters=40)  # 6 min of wall time if let run
    process, reader = start_workers(scenario, "--workers", "2")
    try:
        children = children_of(process, 2)
        assert len(children) == 2
        assert reader.wait_for("2 workers", 1, timeout=30), reader.lines
        time.sleep(3.0)
        process.send_signal(signal.SIGTERM)
        reader.end(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, "".join(reader.lines)
    assert not [child for child in children if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]


def test_in_a_live_run_a_child_stopped_from_outside_stops_the_others(sys_broker: stack.Service, tmp_path: Path) -> None:  # noqa: F811
    scenario = scenario_file(tmp_path, sys_broker.port, "rwone", duration="until-stopped", speed="60", meters=10)
    process, reader = start_workers(scenario, "--workers", "2")
    children: list[psutil.Process] = []
    try:
        wait_until_live(process, reader, children)
        children[0].terminate()  # `kill` of one child: it drains and ends 0, and the run would go on without its devices
        stdout = reader.end(timeout=30)
    finally:
        for child in children:
            if child.is_running():
                child.kill()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, "".join(reader.lines)
    assert sum("stopped after" in line for line in reader.lines) == 2, reader.lines
    assert re.search(r"^workers \(2 workers\): generated (\d+), published \1, acknowledged \1 ", stdout, re.MULTILINE), stdout


def statuses(children: list[psutil.Process], wanted: str, timeout: float = 10) -> list[str]:
    """The children's process states, once all are `wanted` (or after `timeout`)."""
    deadline = time.monotonic() + timeout
    while {child.status() for child in children} != {wanted} and time.monotonic() < deadline:
        time.sleep(0.05)
    return [child.status() for child in children]


def test_ctrl_z_pauses_every_child_and_fg_resumes_them(sys_broker: stack.Service, tmp_path: Path) -> None:  # noqa: F811
    scenario = scenario_file(tmp_path, sys_broker.port, "rwtstp", duration="until-stopped", speed="60", meters=10)
    process, reader = start_workers(scenario, "--workers", "2")
    children: list[psutil.Process] = []
    try:
        wait_until_live(process, reader, children)
        process.send_signal(signal.SIGTSTP)  # Ctrl-Z: it reaches the parent's process group only
        assert statuses([psutil.Process(process.pid), *children], psutil.STATUS_STOPPED) == [psutil.STATUS_STOPPED] * 3
        process.send_signal(signal.SIGCONT)  # fg
        assert psutil.STATUS_STOPPED not in statuses(children, psutil.STATUS_SLEEPING)
        process.send_signal(signal.SIGTERM)
        stdout = reader.end(timeout=30)
    finally:
        for child in children:  # SIGKILL: even a stopped one ends
            if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                child.kill()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, "".join(reader.lines)
    assert re.search(r"^workers \(2 workers\): generated (\d+), published \1, acknowledged \1 ", stdout, re.MULTILINE), stdout


def test_sighup_the_terminal_closed_leaves_no_child_running(sys_broker: stack.Service, tmp_path: Path) -> None:  # noqa: F811
    scenario = scenario_file(tmp_path, sys_broker.port, "rwhup", duration="until-stopped", speed="60", meters=10)
    process, reader = start_workers(scenario, "--workers", "2")
    children: list[psutil.Process] = []
    try:
        wait_until_live(process, reader, children)
        process.send_signal(signal.SIGHUP)  # each child in its own process group: only the parent has it
        reader.end(timeout=30)
        assert psutil.wait_procs(children, timeout=10)[1] == []  # one process would have ended: so does each child
        assert process.returncode == 130, "".join(reader.lines)  # interrupted
    finally:
        for child in children:
            if child.is_running():
                child.kill()
        if process.poll() is None:
            process.kill()


def test_ctrl_c_while_the_children_start_is_no_traceback(sys_broker: stack.Service, tmp_path: Path) -> None:  # noqa: F811
    scenario = scenario_file(tmp_path, sys_broker.port, "rwearly", duration="6h", speed="60", meters=10)
    process, reader = start_workers(scenario, "--workers", "2")
    try:
        assert len(children_of(process, 2)) == 2  # started, still importing
        process.send_signal(signal.SIGINT)
        reader.end(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    assert not any("Traceback" in line or "KeyboardInterrupt" in line for line in reader.lines), "".join(reader.lines)


def test_in_a_finite_run_a_child_interrupted_from_outside_is_named(sys_broker: stack.Service, tmp_path: Path) -> None:  # noqa: F811
    scenario = scenario_file(tmp_path, sys_broker.port, "rwkill", duration="20m", speed="60", meters=10)  # 20 s of wall time
    process, reader = start_workers(scenario, "--workers", "2")
    try:
        children = children_of(process, 2)
        assert len(children) == 2
        assert reader.wait_for("note: cannot write the simulator's counters", 2, timeout=20), reader.lines  # both running
        shard = next(index for index in range(2) if f"--shard {index}/2" in " ".join(children[0].cmdline()))
        children[0].terminate()  # not the parent's doing: its other child finishes its share
        reader.end(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, "".join(reader.lines)  # the worst child's code
    assert reader.lines[-1].startswith(f"workers: shard {shard}/2 failed with exit code 130: "), reader.lines


def test_in_a_live_run_a_failing_child_stops_the_others(sys_broker: stack.Service, tmp_path: Path) -> None:  # noqa: F811
    # A broker outage with no local stack under --state-dir: the one shard that acts on process faults fails.
    outage = "faults:\n  - {kind: broker_outage, at: 5m, duration: 1m}"
    scenario = scenario_file(tmp_path, sys_broker.port, "rwfail", duration="until-stopped", speed="60", meters=20, extra=outage)
    owner = next(index for index in range(2) if Shard(index, 2).owns(FAULT_SOURCE))
    process, reader = start_workers(scenario, "--workers", "2", "--state-dir", str(tmp_path / "no-stack"))
    try:
        stdout = reader.end(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, "".join(reader.lines)
    other = 1 - owner
    assert sum(f"workers (shard {other}/2): stopped after" in line for line in reader.lines) == 1  # stopped by the parent, drained
    assert re.search(rf"^workers \(shard {other}/2\): generated (\d+), published \1, acknowledged \1 ", stdout, re.MULTILINE), stdout
    assert reader.lines[-1] == f"workers: shard {owner}/2 failed with exit code 1: fault injection: mosquitto is not running under {tmp_path / 'no-stack'} (iotsim stack up)\n"
    assert stdout.rstrip().endswith(f"; no figures from shard {owner}/2")


def test_a_failing_child_is_named_with_its_last_error_line(tmp_path: Path) -> None:
    scenario = scenario_file(tmp_path, stack.free_port(), "rwdown", meters=4)  # nothing listens there
    run = iotsim("run", str(scenario), "--workers", "2", timeout=60)
    assert run.returncode == 1, run.stdout + run.stderr
    last = run.stderr.splitlines()[-1]
    assert re.fullmatch(r"workers: shard [01]/2 failed with exit code 1 \(and 1 more failed\): cannot reach the MQTT broker at .*; start one with `iotsim stack up` or pass --mqtt", last), last


def test_a_dry_run_with_workers_writes_one_file_per_shard_together_the_unsharded_run(tmp_path: Path) -> None:
    scenario = scenario_file(tmp_path, 1883, "rwdry")
    assert iotsim("run", str(scenario), "--dry-run", "--out", str(tmp_path / "whole.jsonl")).returncode == 0
    run = iotsim("run", str(scenario), "--dry-run", "--out", str(tmp_path / "out.jsonl"), "--workers", "3")
    assert run.returncode == 0, run.stderr
    files = [tmp_path / f"out-s{index}of3.jsonl" for index in range(3)]
    assert f"dry run (3 workers): {READINGS + AIR} messages in " in run.stdout and run.stdout.rstrip().endswith(", ".join(map(str, files)))
    assert not (tmp_path / "out.jsonl").exists()
    lines = [line for path in files for line in path.read_bytes().splitlines()]
    assert sorted(lines) == sorted((tmp_path / "whole.jsonl").read_bytes().splitlines())


def test_a_reader_gone_from_stdout_is_no_traceback_and_the_children_finish(tmp_path: Path) -> None:
    scenario = scenario_file(tmp_path, 1883, "rwpipe", meters=20)
    read_end, write_end = os.pipe()
    os.close(read_end)  # `iotsim run ... | head -1` once head has gone: every line to stdout is a broken pipe
    try:
        command = [*IOTSIM, "run", str(scenario), "--dry-run", "--out", str(tmp_path / "out.jsonl"), "--workers", "2"]
        run = subprocess.run(command, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60, env=child_env())
    finally:
        os.close(write_end)
    assert "Traceback" not in run.stderr and "Exception" not in run.stderr, run.stderr
    assert run.returncode == 1, run.stderr  # as one process's run: its stdout could not be written
    readings = [line for index in range(2) for line in (tmp_path / f"out-s{index}of2.jsonl").read_bytes().splitlines()]
    assert len(readings) == 20 * 4 + AIR  # each child wrote its whole share


def running_shards_of(scenario: Path) -> list[psutil.Process]:
    """The children `iotsim run SCENARIO --workers` started that still run (by the scenario's own temporary path)."""
    found = []
    for candidate in psutil.process_iter(["cmdline", "status"]):
        if str(scenario) in (candidate.info["cmdline"] or []) and "--shard" in (candidate.info["cmdline"] or []) and candidate.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(candidate)
    return found


def test_a_child_that_cannot_be_started_is_one_line_and_leaves_none_running(sys_broker: stack.Service, tmp_path: Path) -> None:  # noqa: F811
    scenario = scenario_file(tmp_path, sys_broker.port, "rwfiles", duration="until-stopped", speed="60", meters=4)
    # 30 open files: the parent's own and two pipes a child, so the parent runs out of files while starting 12 children.
    limit = "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (30, 30)); sys.argv[0] = 'iotsim'; runpy.run_module('simulator.cli', run_name='__main__')"
    process = subprocess.Popen([sys.executable, "-c", limit, "run", str(scenario), "--workers", "12"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        started = len(children_of(process, 1))
        _, stderr = process.communicate(timeout=60)
        deadline = time.monotonic() + 10
        while running_shards_of(scenario) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = running_shards_of(scenario)
    finally:
        for child in running_shards_of(scenario):
            child.kill()
        if process.poll() is None:
            process.kill()
    assert started and not left, stderr  # the children it had started are stopped, not left running
    assert "Traceback" not in stderr and process.returncode == 2, stderr
    assert re.fullmatch(r"--workers 12: cannot start shard \d+/12 \(Too many open files\); the shards started are stopped", stderr.splitlines()[-1]), stderr


GATEWAYS = "  - type: water_pressure\n    count: 8\n    connection: gateway\n    gateway_size: 4"


def test_bad_combinations_are_one_line_and_exit_2(tmp_path: Path) -> None:
    scenario = scenario_file(tmp_path, stack.free_port(), "rwbad", meters=4)
    bad = {
        ("--workers", "0"): "iotsim run: Invalid value for '--workers': Input should be greater than or equal to 1",
        ("--workers", "65"): "iotsim run: Invalid value for '--workers': Input should be less than or equal to 64",
        ("--workers", "2", "--shard", "0/2"): "--workers: not with --shard (--workers N runs the shards 0/N to N-1/N itself); give one of them",
    }
    for args, line in bad.items():
        run = iotsim("run", str(scenario), *args)
        assert (run.returncode, run.stderr) == (2, line + "\n"), args
    by_env = subprocess.run([*IOTSIM, "run", str(scenario), "--workers", "2"], capture_output=True, text=True, timeout=60, env=child_env() | {SHARD_ENV: "1/2"})
    assert (by_env.returncode, by_env.stderr) == (2, f"--workers: not with {SHARD_ENV} set (--workers N runs the shards 0/N to N-1/N itself); unset it or drop --workers\n")
    # What every child would refuse, the parent says once: an unreadable password file.
    missing = tmp_path / "missing.password"
    env = {name: value for name, value in child_env().items() if name != "MQTT_PASSWORD"} | {"MQTT_PASSWORD_FILE": str(missing)}
    unreadable = subprocess.run([*IOTSIM, "run", str(scenario), "--workers", "2"], capture_output=True, text=True, timeout=60, env=env)
    assert (unreadable.returncode, unreadable.stderr) == (2, f"MQTT_PASSWORD_FILE {missing}: no such file\n")
    # A gateway fleet: the parent refuses once, before any child starts (nothing listens on that port: a child would say so).
    gateways = scenario_file(tmp_path, stack.free_port(), "rwgw", meters=4, extra=GATEWAYS)
    run = iotsim("run", str(gateways), "--workers", "2")
    expected = "--workers: fleets.2 has connection: gateway, whose devices shards would split between them; run it unsharded or give it connection: device\n"
    assert (run.returncode, run.stdout, run.stderr) == (2, "", expected)


class SignalWhileStarting(os.PathLike[str]):
    """An argument of a child's command that sends this process SIGTERM as Popen reads it: the signal
    comes while that child is being started, as it would from a user at that moment."""

    def __fspath__(self) -> str:
        os.kill(os.getpid(), signal.SIGTERM)
        return "30"


def test_a_signal_while_a_child_is_being_started_reaches_that_child_too(tmp_path: Path) -> None:
    sleeper = [sys.executable, "-c", "import sys, time; time.sleep(float(sys.argv[1]))"]
    commands = [(Shard(0, 2), [*sleeper, "30"]), (Shard(1, 2), [*sleeper, SignalWhileStarting()])]
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGTSTP)}
    children = Workers(tmp_path)
    try:
        children.start(commands)  # type: ignore[arg-type]
        waiter = threading.Thread(target=children.wait, args=(True,), daemon=True)
        waiter.start()
        waiter.join(15)  # each child ends at once on SIGTERM; one that never got it sleeps 30 s
        assert [worker.process.poll() for worker in children.children] == [-signal.SIGTERM, -signal.SIGTERM]
    finally:
        for worker in children.children:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait(10)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
