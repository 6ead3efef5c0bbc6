"""`iotsim stack up|down|status`: real servers, PID files, idempotent, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from conftest import iotsim
from simulator import stack


def test_stack_up_status_down_on_chosen_ports(tmp_path: Path) -> None:
    state = tmp_path / "state"
    mqtt_port, influx_port = stack.free_port(), stack.free_port()
    ports = ["--state-dir", str(state), "--mqtt-port", str(mqtt_port), "--influx-port", str(influx_port)]
    try:
        up = iotsim("stack", "up", *ports, "--db", "city")
        assert up.returncode == 0, up.stderr
        assert stack.accepts_tcp(mqtt_port)
        databases = requests.get(f"http://127.0.0.1:{influx_port}/query", params={"q": "SHOW DATABASES"}, timeout=10).json()
        assert ["city"] in databases["results"][0]["series"][0]["values"]
        pids = {name: stack.recorded(state, name) for name in ("mosquitto", "influxdb")}
        assert all(record is not None and record.running for record in pids.values())

        again = iotsim("stack", "up", *ports)
        assert again.returncode == 0
        assert again.stdout.count("already running") == 2

        status = iotsim("stack", "status", "--state-dir", str(state))
        assert status.returncode == 0 and status.stdout.count(": up (pid") == 2
    finally:
        down = iotsim("stack", "down", "--state-dir", str(state))
    assert down.returncode == 0
    assert not stack.accepts_tcp(mqtt_port) and not stack.accepts_tcp(influx_port)
    assert not any(stack.alive(record.pid) for record in pids.values() if record)
    status = iotsim("stack", "status", "--state-dir", str(state))
    assert status.returncode == 1 and status.stdout.count(": down") == 2


def test_a_busy_port_is_reported_not_fought_over(tmp_path: Path, broker: stack.Service) -> None:
    with pytest.raises(stack.StackError, match=f"port {broker.port} on 127.0.0.1 is already in use"):
        stack.start_mosquitto(tmp_path, broker.port)


def test_a_missing_server_names_the_debian_package() -> None:
    binary = stack.Binary("no-such-mqtt-server", "mosquitto", search=())
    with pytest.raises(stack.StackError, match="apt-get install mosquitto"):
        binary.path()


def test_a_server_that_dies_at_start_reports_its_log(tmp_path: Path) -> None:
    bad_conf = tmp_path / "conf.d"
    bad_conf.mkdir()
    (bad_conf / "broken.conf").write_text("this_is_not_an_option 1\n")
    with pytest.raises(stack.StackError, match="mosquitto exited at start"):
        stack.start_mosquitto(tmp_path, stack.free_port(), conf_dir=bad_conf)
