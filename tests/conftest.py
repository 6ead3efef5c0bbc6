"""Real servers for the tests: one Mosquitto and one InfluxDB per test session, on free loopback
ports with temporary data dirs, stopped by PID at the end. Each test gets its own database, topic
prefix and bridge client id, so tests never see each other's data or sessions."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from simulator import stack

IOTSIM = [sys.executable, "-m", "simulator.cli"]
# A bridge started before `iotsim run` counts its idle time from its first message (until then it
# waits up to --first-message-timeout, 300 s), so this only has to outlast a pause between two of the
# run's messages on a loaded machine. Before issue 17 it counted from the bridge's start and was 20 s.
RUN_IDLE = "5"
# A bridge whose messages are already at the broker (or in its spool), or come from this test's own
# publish() right after it subscribed: nothing has to start first, a short idle ends it.
QUEUED_IDLE = "3"
_names = itertools.count(1)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack.Service]:
    service = stack.start_mosquitto(tmp_path_factory.mktemp("mosquitto"), stack.free_port())
    yield service
    service.stop()


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack.Service]:
    service = stack.start_influxdb(tmp_path_factory.mktemp("influxdb"), stack.free_port(), database=None)
    yield service
    service.stop()


@dataclass
class Pipeline:
    """Addresses and names one test uses on the shared servers."""

    broker: stack.Service
    influxdb: stack.Service
    database: str
    prefix: str
    bridge_id: str
    tmp: Path

    @property
    def mqtt_url(self) -> str:
        return self.broker.url

    @property
    def influx_url(self) -> str:
        return self.influxdb.url

    def query(self, q: str) -> list[dict]:
        response = requests.get(f"{self.influx_url}/query", params={"db": self.database, "q": q}, timeout=60)
        response.raise_for_status()
        result = response.json()["results"][0]
        assert "error" not in result, result
        return result.get("series", [])

    def count(self, measurement: str, field: str = "seq") -> int:
        series = self.query(f'SELECT count("{field}") FROM "{measurement}"')
        return series[0]["values"][0][1] if series else 0

    def bridge_command(self, *extra: str) -> list[str]:
        return [
            *IOTSIM, "bridge",
            "--mqtt", self.mqtt_url,
            "--influx", self.influx_url,
            "--db", self.database,
            "--prefix", self.prefix,
            "--client-id", self.bridge_id,
            "--dead-letters", str(self.tmp / "dead-letters.jsonl"),
            "--batch-interval", "0.2",
            "--spool-dir", str(self.tmp / "spool"),
            *extra,
        ]  # fmt: skip

    def start_bridge(self, *extra: str) -> subprocess.Popen[str]:
        """The bridge as its own process; returns once it has subscribed (its first stderr line)."""
        process = subprocess.Popen(self.bridge_command(*extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
        assert process.stderr is not None
        first = process.stderr.readline()
        assert first.startswith("bridge:"), first + process.stderr.read()
        return process

    def scenario_file(self, body: str, name: str = "scenario.yaml", mqtt: str = "") -> Path:
        """`body` pointed at this test's broker, prefix and database; `mqtt`: more `mqtt:` lines."""
        path = self.tmp / name
        path.write_text(
            body
            + f"\nmqtt:\n  url: {self.mqtt_url}\n  topic_prefix: {self.prefix}\n  client_id_prefix: {self.prefix}\n"
            + "".join(f"  {line}\n" for line in mqtt.splitlines())
            + f"influx:\n  url: {self.influx_url}\n  database: {self.database}\n"
        )
        return path


@pytest.fixture
def pipeline(broker: stack.Service, influxdb: stack.Service, tmp_path: Path) -> Pipeline:
    n = next(_names)
    database = f"test{n}"
    stack.create_database(influxdb.url, database)
    return Pipeline(broker, influxdb, database, f"t{n}", f"bridge-t{n}-{os.getpid()}", tmp_path)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    return env


def iotsim(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*IOTSIM, *args], capture_output=True, text=True, timeout=timeout, env=child_env())


def iotsim_interrupted_in_fault(*args: str, stopped_pid: int, into_fault_s: float = 0.0, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`iotsim ARGS`, sent SIGINT (Ctrl-C) `into_fault_s` after its fault stopped the process `stopped_pid`
    (the broker of a broker_outage, the bridge of a bridge_crash)."""
    process = subprocess.Popen([*IOTSIM, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        deadline = time.monotonic() + 60
        while stack.alive(stopped_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not stack.alive(stopped_pid), f"the fault did not stop process {stopped_pid}"
        time.sleep(into_fault_s)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)
