"""What the broker can lose (docs/faults.md): messages it acknowledged more than ~2 s before a
kill -9 survive it; a scenario whose bridge crash queues more messages than Mosquitto keeps per
client gets one warning line from `iotsim validate` and `iotsim run` (the bound read from brokers/conf.d)."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path

from conftest import Pipeline, QUEUED_IDLE, iotsim
from simulator import stack
from simulator.backlog import DEV_CONF, backlog_warnings, max_queued_messages
from simulator.scenario import load_scenario

# 300 stations every second: 1,080,000 messages in the hour the bridge is away, past the 1,000,000
# Mosquitto keeps; a crash of 1 minute queues 18,000, well inside.
CRASH = """
name: crash
duration: 2h
speed: 100000                   # process faults need a numeric speed
fleets:
  - type: air_quality
    count: 300
    cadence: 1s
faults:
  - {kind: duplicates, rate: 0.01}
  - {kind: bridge_crash, at: 1s, restart_after: 1h}
  - {kind: bridge_crash, at: 90m, restart_after: 1m}
"""
WARNING = (
    "warning: faults.1: the bridge is away ~3600 s (simulated), about 1080000 messages queue at the broker; "
    "Mosquitto keeps at most 1000000 per client (brokers/conf.d/10-dev.conf max_queued_messages), the rest would be lost\n"
)


def test_the_bound_is_the_shared_broker_settings_value() -> None:
    assert max_queued_messages(DEV_CONF) == 1_000_000


def test_validate_warns_once_for_the_long_crash_and_still_exits_0(tmp_path: Path) -> None:
    scenario = tmp_path / "crash.yaml"
    scenario.write_text(CRASH)
    result = iotsim("validate", str(scenario))
    assert result.returncode == 0
    assert result.stderr == WARNING


def test_run_warns_before_it_starts(pipeline: Pipeline) -> None:
    # No bridge.pid in the state dir: the crash at 1 s fails the run, after the warning.
    result = iotsim("run", str(pipeline.scenario_file(CRASH)), "--state-dir", str(pipeline.tmp / "state"))
    assert result.stderr.startswith(WARNING), result.stderr
    assert result.returncode == 1


def test_a_crash_near_the_end_queues_only_until_the_run_ends(tmp_path: Path) -> None:
    scenario = tmp_path / "late.yaml"
    scenario.write_text(CRASH.replace("at: 1s, restart_after: 1h", "at: 1h50m, restart_after: 1h"))
    conf = tmp_path / "10-dev.conf"
    conf.write_text("max_queued_messages 1000\nmax_queued_messages 100000\n")  # the last value wins
    warnings = backlog_warnings(load_scenario(scenario), conf)
    # 10 minutes left: 180,000 messages, past 100,000; the 1-minute crash (18,000) is inside.
    assert len(warnings) == 1 and "~600 s (simulated), about 180000 messages" in warnings[0] and "at most 100000" in warnings[0]


def test_no_limit_means_no_warning(tmp_path: Path) -> None:
    scenario = tmp_path / "crash.yaml"
    scenario.write_text(CRASH)
    conf = tmp_path / "10-dev.conf"
    conf.write_text("max_queued_messages 0\n")
    assert backlog_warnings(load_scenario(scenario), conf) == []
    assert backlog_warnings(load_scenario(REPO_QUICKSTART)) == []


REPO_QUICKSTART = Path(__file__).resolve().parent.parent / "scenarios" / "quickstart.yaml"

# 50 gateways whose own interval (1 s) would send 50 messages/s; the load profile paces them instead:
# 100 messages/s, a spike to 2,000 from 2 min to 4 min.
PACED = """
name: paced
duration: 10m
speed: 100000
fleets:
  - {type: load_probe, count: 50}
  - {type: air_quality, count: 10, cadence: 1s}
load:
  profile: {kind: spike, base: 100, peak: 2000, before: 2m, spike: 2m, after: 6m}
faults:
  - {kind: bridge_crash, at: 1m, restart_after: 4m}
  - {kind: bridge_crash, at: 6m, restart_after: 2m}
"""


def test_a_load_profile_paces_the_estimate_over_the_window_the_bridge_is_away(tmp_path: Path) -> None:
    scenario = tmp_path / "paced.yaml"
    scenario.write_text(PACED)
    conf = tmp_path / "10-dev.conf"
    conf.write_text("max_queued_messages 100000\n")
    warnings = backlog_warnings(load_scenario(scenario), conf)
    # 1 m - 5 m: 1 min at 100/s + 2 min at 2,000/s + 1 min at 100/s = 252,000, and 10 stations/s = 2,400;
    # 6 m - 8 m: 2 min at 100/s = 12,000 + 1,200, inside (the gateways' own 1 s would have said 6,000 + 1,200).
    assert len(warnings) == 1 and warnings[0].startswith("warning: faults.0: the bridge is away ~240 s (simulated), about 254400 messages"), warnings
    # Without the section the gateways send every second: 50 + 10 per second over 240 s, inside.
    assert backlog_warnings(load_scenario(scenario).model_copy(update={"load": None}), conf) == []


STATIONS = """
name: persisted
seed: 5
duration: 2h
fleets:
  - type: air_quality
    count: 20
    cadence: 5m
"""


def test_messages_queued_for_the_away_bridge_survive_a_broker_kill_9_once_autosaved(pipeline: Pipeline) -> None:
    state = pipeline.tmp / "broker"
    own = dataclasses.replace(pipeline, broker=stack.start_mosquitto(state, stack.free_port()))  # this test kills it
    try:
        bridge = own.start_bridge()
        bridge.send_signal(signal.SIGTERM)  # subscribed: its persistent session now queues for it
        bridge.communicate(timeout=30)
        run = iotsim("run", str(own.scenario_file(STATIONS)))
        assert "acknowledged 480" in run.stdout, run.stdout + run.stderr
        acknowledged_at = time.time()
        saved = state / "mosquitto" / "mosquitto.db"
        deadline = time.monotonic() + 5  # autosave_interval 1: written within ~2 s
        while not (saved.exists() and saved.stat().st_mtime > acknowledged_at) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert saved.exists() and saved.stat().st_mtime > acknowledged_at, "the broker did not save within 5 s"
        os.kill(own.broker.pid, signal.SIGKILL)
        while stack.alive(own.broker.pid):
            time.sleep(0.01)
        own = dataclasses.replace(own, broker=stack.start_mosquitto(state, own.broker.port))
        bridge = own.start_bridge("--exit-when-idle", QUEUED_IDLE)
        bridge.communicate(timeout=60)
        verified = iotsim("verify", str(own.scenario_file(STATIONS)))
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert verified.stdout.strip().endswith("verified: 480 of 480 stored")
    finally:
        own.broker.stop()
