"""Ctrl-C while a fault injection starts the user's broker again (StackControl.start, the end of a
broker_outage): the new broker is the one the stack's PID file names and `iotsim stack down` stops, so
the interrupt must not stop it (it did, when it came while Mosquitto was not yet accepting connections)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import RUN_IDLE, Pipeline, child_env, iotsim_interrupted_in_fault

from simulator import stack

# A child that restarts the stack's broker as a fault does; the test sends it SIGINT (Ctrl-C) meanwhile.
RESTART = "import sys; from pathlib import Path; from simulator.stack import StackControl; StackControl(Path(sys.argv[1])).start('mosquitto', int(sys.argv[2]))"
ATTEMPTS = 10  # Mosquitto listens within ~0.1 s: an attempt whose interrupt came after that is tried again


def accepts_within(port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not stack.accepts_tcp(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def interrupted_restart(state_dir: Path, port: int) -> tuple[bool, str]:
    """Restart the stack's broker in a child and Ctrl-C it once it has launched Mosquitto: (whether the interrupt
    came before Mosquitto listened, the child's stderr)."""
    pid_file = state_dir / "mosquitto.pid"
    child = subprocess.Popen([sys.executable, "-c", RESTART, str(state_dir), str(port)], stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:  # launched: now it waits for the broker to listen
            time.sleep(0.001)
        assert pid_file.exists(), "the child did not start the broker"
        in_window = not stack.accepts_tcp(port)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=30)
        return in_window, err
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)


def test_ctrl_c_during_a_fault_restart_leaves_the_broker_running(tmp_path: Path) -> None:
    port = stack.free_port()
    stack.start_mosquitto(tmp_path, port).stop()  # the stack's broker, stopped by the fault (its PID file gone)
    try:
        for _ in range(ATTEMPTS):
            in_window, err = interrupted_restart(tmp_path, port)
            if in_window:
                break
            record = stack.recorded(tmp_path, "mosquitto")
            assert record is not None
            stack.stop_pid(record.pid)
            (tmp_path / "mosquitto.pid").unlink()
        assert in_window, f"no interrupt in {ATTEMPTS} attempts came before Mosquitto listened"
        assert "KeyboardInterrupt" in err, err  # the interrupt still ends what was running
        record = stack.recorded(tmp_path, "mosquitto")
        assert record is not None and record.running and record.port == port, err
        assert accepts_within(port, 15), err  # the stack's broker, up as the user expects it
    finally:
        record = stack.recorded(tmp_path, "mosquitto")
        if record is not None and record.running:
            stack.stop_pid(record.pid)


def test_an_interrupt_during_a_restart_that_then_fails_is_still_raised(tmp_path: Path) -> None:
    # A real Mosquitto whose readiness is never seen: the interrupt (raised by the first check, as SIGINT's
    # handler would raise it there) was swallowed when the start gave up, a StackError instead (exit 1, not 130).
    port = stack.free_port()
    service = stack.launch("mosquitto", [stack.MOSQUITTO.path(), "-p", str(port)], port, tmp_path, tmp_path / "mosquitto.log")
    checks = []

    def ready() -> bool:
        checks.append(1)
        if len(checks) == 1:
            raise KeyboardInterrupt
        return False

    try:
        with pytest.raises(KeyboardInterrupt):
            stack.wait_until(ready, service, 1.0, "Mosquitto to accept connections", keep_on_interrupt=True)
        assert len(checks) > 1  # the start went on after the interrupt, as keep_on_interrupt says
        assert not stack.alive(service.pid) and not service.pid_file.exists()  # given up: stopped, as without an interrupt
    finally:
        if stack.alive(service.pid):
            stack.stop_pid(service.pid)


@pytest.mark.parametrize("keep_on_interrupt", [False, True])
def test_an_interrupt_while_the_pid_file_is_written_still_records_the_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_on_interrupt: bool) -> None:
    # A Ctrl-C once came inside write_text (a suite run on 2 cores): the PID file was left empty and the broker ran, unknown to
    # `stack down`. Now the file is written whole anyway: the server then stopped, or kept (the user's stack).
    port = stack.free_port()
    write_text = Path.write_text
    written: list[str] = []

    def interrupted_once(path: Path, text: str, *args: object, **kwargs: object) -> int:
        written.append(text)
        if len(written) == 1:
            write_text(path, "")  # opened (truncated), then the interrupt
            raise KeyboardInterrupt
        return write_text(path, text, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "write_text", interrupted_once)
    try:
        with pytest.raises(KeyboardInterrupt):
            stack.launch("mosquitto", [stack.MOSQUITTO.path(), "-p", str(port)], port, tmp_path, tmp_path / "mosquitto.log", keep_on_interrupt)
        monkeypatch.undo()
        pid = int(written[-1].split()[0])
        record = stack.recorded(tmp_path, "mosquitto")
        if keep_on_interrupt:
            assert record is not None and record.running and (record.pid, record.port) == (pid, port)
            assert accepts_within(port, 15)
        else:
            assert record is None and not stack.alive(pid)
        assert [path.name for path in tmp_path.iterdir() if path.name.endswith(".partial")] == []
    finally:
        monkeypatch.undo()
        if written and stack.alive(int(written[-1].split()[0])):
            stack.stop_pid(int(written[-1].split()[0]))


CUT_SHORT = """
name: {name}
seed: 3
duration: 2h
speed: 60
fleets:
  - type: air_quality
    count: 5
    cadence: 1m
faults:
  - {fault}
"""


def run_counts(stdout: str, name: str) -> tuple[int, int, int]:
    """The run's generated, published and acknowledged counts from its summary line."""
    counts = re.search(rf"{name}: generated (\d+), published (\d+), acknowledged (\d+)", stdout)
    assert counts is not None, stdout
    generated, published, acknowledged = map(int, counts.groups())
    return generated, published, acknowledged


def test_ctrl_c_during_a_broker_outage_starts_the_stacks_broker_again_and_says_so(tmp_path: Path) -> None:
    # The outage starts 2 s into the run (2 min at 60 x) and would last an hour: the user stops the run meanwhile.
    state = tmp_path / "stack"
    port = stack.free_port()
    first = stack.start_mosquitto(state, port)
    scenario = tmp_path / "cut-short.yaml"
    fault = "{kind: broker_outage, at: 2m, duration: 1h}"
    scenario.write_text(CUT_SHORT.format(name="cut-short", fault=fault) + f"mqtt: {{url: 'mqtt://127.0.0.1:{port}', topic_prefix: tcut}}\ninflux: {{url: 'http://127.0.0.1:{stack.free_port()}'}}\n")
    # 0.5 s into the outage: the publisher holds what the devices send meanwhile.
    run = iotsim_interrupted_in_fault("run", str(scenario), "--state-dir", str(state), stopped_pid=first.pid, into_fault_s=0.5, timeout=60)
    out, err = run.stdout, run.stderr
    try:
        assert run.returncode == 130, err
        assert f"fault injection cut short: mosquitto started again on port {port}; the run ended before its outage did\n" in err
        record = stack.recorded(state, "mosquitto")
        assert record is not None and record.running and record.port == port and record.pid != first.pid
        assert accepts_within(port, 5)
        generated, published, acknowledged = run_counts(out, "cut-short")
        assert generated >= 5 and published == acknowledged == generated  # what waited for the broker reached it
    finally:
        stack.stack_down(state)


def test_ctrl_c_before_a_killed_bridge_restarts_starts_it_again_and_it_stores_everything(pipeline: Pipeline, tmp_path: Path) -> None:
    # The bridge is killed 2 s into the run and would be started again an hour later: the user stops the run meanwhile.
    state = tmp_path / "stack"
    state.mkdir()
    bridge = pipeline.start_bridge("--pid-file", str(state / "bridge.pid"), "--exit-when-idle", RUN_IDLE)
    scenario = pipeline.scenario_file(CUT_SHORT.format(name="cut-short-bridge", fault="{kind: bridge_crash, at: 2m, restart_after: 1h}"))
    try:
        run = iotsim_interrupted_in_fault("run", str(scenario), "--state-dir", str(state), stopped_pid=bridge.pid, into_fault_s=0.5, timeout=60)
        assert run.returncode == 130, run.stderr
        assert f"fault injection cut short: the bridge started again ({state / 'bridge.log'}); the run ended before its bridge_crash did\n" in run.stderr
        assert bridge.poll() is not None or not stack.alive(bridge.pid)  # killed (stack.alive reaps it: no exit code to read)
        deadline = time.monotonic() + 30
        while recorded_bridge(state) in (None, bridge.pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # the restarted bridge records itself once it has started
        assert recorded_bridge(state) not in (None, bridge.pid), (state / "bridge.log").read_text()
        generated, published, acknowledged = run_counts(run.stdout, "cut-short-bridge")
        assert generated > 5 and published == acknowledged == generated
        deadline = time.monotonic() + 60
        while (state / "bridge.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.1)  # the restarted bridge stores what waited at the broker, exits when idle, removes its PID file
        assert not (state / "bridge.pid").exists(), (state / "bridge.log").read_text()
        assert pipeline.count("air_quality") == generated - 1  # all but the crash's start event
        assert pipeline.count("events") == 1
    finally:
        if bridge.poll() is None:
            bridge.kill()
        if (restarted := recorded_bridge(state)) is not None:
            stack.stop_pid(restarted)


def recorded_bridge(state: Path) -> int | None:
    """The PID in the stack's bridge.pid (`iotsim bridge --pid-file`), or None."""
    try:
        return int(json.loads((state / "bridge.pid").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def test_a_second_ctrl_c_while_a_cut_short_run_starts_the_broker_again_starts_it_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = stack.free_port()
    first = stack.start_mosquitto(tmp_path, port)
    control = stack.StackControl(tmp_path)
    assert control.stop("mosquitto") == port  # the outage, which the run ends before its end
    accepts, checks = stack.accepts_tcp, []

    def interrupted_once(checked: int) -> bool:
        checks.append(checked)
        if len(checks) == 2:  # the first readiness check (the first call is launch's: is the port free)
            raise KeyboardInterrupt
        return accepts(checked)

    monkeypatch.setattr(stack, "accepts_tcp", interrupted_once)
    try:
        with pytest.raises(KeyboardInterrupt):
            control.restore()
        monkeypatch.undo()
        record = stack.recorded(tmp_path, "mosquitto")
        assert record is not None and record.running and record.port == port and record.pid != first.pid
        assert control.restore() == []  # started once: no second start refused for a port in use
    finally:
        monkeypatch.undo()
        stack.stack_down(tmp_path)
