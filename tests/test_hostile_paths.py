"""Paths a user hands us that are not what they should be (a FIFO, a directory, a device, a dangling
symbolic link, a huge file): each is one line naming the file and why, exit 2, before
anything connects; never a hang (a FIFO's read blocks forever), an unbounded read (/dev/zero) or a
traceback. Nothing listens at the broker and database ports given, so a command that got as far as
connecting would fail otherwise (exit 1, another line)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import IOTSIM, Pipeline, child_env, iotsim

from simulator import stack
from simulator.connections import device_passwords
from simulator.ingest.session import SessionRecord
from simulator.ingest.spool import Spool
from simulator.transport.client_ids import BRIDGE_CLIENT_ID
from simulator.userfiles import Refused, open_for_append

DEAD = stack.free_port()  # nothing listens here
DEVICE_SCENARIO = "name: logins\nduration: 1h\nfleets:\n  - {{type: electricity_meter, id_prefix: meter, count: 1, connection: device}}\nmqtt: {{url: 'mqtt://127.0.0.1:{port}', username: simulator, device_passwords: {folder}}}\n"
PLAIN_SCENARIO = "name: plain\nduration: 1h\nfleets:\n  - {{type: electricity_meter, id_prefix: meter, count: 1}}\nmqtt: {{url: '{url}'}}\n"


def make(path: Path, kind: str) -> str:
    """Put a `kind` at `path`; the words the refusal must hold."""
    if kind == "fifo":
        os.mkfifo(path)
        return "a FIFO"
    if kind == "directory":
        path.mkdir()
        return "a directory"
    if kind == "regular file":
        path.write_text("not a folder\n")
        return "a file"
    if kind == "dangling symlink":
        path.symlink_to(path.parent / "nowhere")
        return "does not exist"
    if kind == "device":
        path.symlink_to("/dev/zero")
        return "a character device"
    if kind == "huge file":
        path.write_bytes(b"x" * 10_000_000)
        return "larger than"
    raise AssertionError(kind)


def assert_refused(args: list[str], path: Path, words: str) -> None:
    result = iotsim(*args, timeout=60)  # a hang is a TimeoutExpired: the test fails
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and str(path) in lines[0] and words in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("kind", ["fifo", "directory", "dangling symlink", "huge file"])
def test_a_device_password_that_is_not_a_small_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "secrets"
    (folder / "passwords").mkdir(parents=True)
    path = folder / "passwords" / "meter-0001"
    words = make(path, kind)
    scenario = tmp_path / "logins.yaml"
    scenario.write_text(DEVICE_SCENARIO.format(port=DEAD, folder=folder))
    assert_refused(["run", str(scenario), "--speed", "afap"], path, words)


def test_a_device_password_on_a_device_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    (folder / "passwords").mkdir(parents=True)
    path = folder / "passwords" / "meter-0001"
    make(path, "device")  # a link to /dev/zero: refused as a device, never read
    scenario = tmp_path / "logins.yaml"
    scenario.write_text(DEVICE_SCENARIO.format(port=DEAD, folder=folder))
    assert_refused(["run", str(scenario), "--speed", "afap"], path, "a character device")


def test_device_passwords_mounted_as_a_kubernetes_secret_are_read_through_its_links(tmp_path: Path) -> None:
    """A secret volume: passwords/ID -> ..data/ID, ..data -> a timestamped folder holding the files."""
    passwords = tmp_path / "secrets" / "passwords"
    (passwords / "..2026_12_03_21_00_00.1").mkdir(parents=True)
    (passwords / "..data").symlink_to("..2026_12_03_21_00_00.1")
    for device, password in (("meter-0001", "s3cret-1"), ("meter-0002", "s3cret-2")):
        (passwords / "..data" / device).write_text(password + "\n")
        (passwords / device).symlink_to(Path("..data") / device)
    assert device_passwords(tmp_path / "secrets", ["meter-0001", "meter-0002"], "logins.yaml") == ["s3cret-1", "s3cret-2"]


FILE_KINDS = ["fifo", "directory", "dangling symlink", "device"]


@pytest.mark.parametrize("kind", FILE_KINDS)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_scenario_file_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: str, command: str) -> None:
    path = tmp_path / "scenario.yaml"
    words = make(path, kind)
    assert_refused([command, str(path)], path, words)


@pytest.mark.parametrize("kind", FILE_KINDS)
def test_a_ca_file_that_is_not_a_regular_file_is_refused_by_run(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "ca.crt"
    words = make(path, kind)
    scenario = tmp_path / "plain.yaml"
    scenario.write_text(PLAIN_SCENARIO.format(url=f"mqtts://127.0.0.1:{DEAD}"))
    assert_refused(["run", str(scenario), "--ca-file", str(path)], path, words if kind != "directory" else "directory")


@pytest.mark.parametrize("kind", FILE_KINDS)
def test_a_scenario_ca_file_that_is_not_a_regular_file_is_refused_by_run(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "ca.crt"
    words = make(path, kind)
    scenario = tmp_path / "plain.yaml"
    scenario.write_text(f"name: plain\nduration: 1h\nfleets:\n  - {{type: electricity_meter, id_prefix: meter, count: 1}}\nmqtt: {{url: 'mqtts://127.0.0.1:{DEAD}', ca_file: {path}}}\n")
    assert_refused(["run", str(scenario)], path, words)


def bridge(tmp_path: Path, *extra: str) -> list[str]:
    return ["bridge", "--mqtt", f"mqtt://127.0.0.1:{DEAD}", "--influx", f"http://127.0.0.1:{DEAD}", "--spool-dir", str(tmp_path / "spool"),
            "--dead-letters", str(tmp_path / "dead.jsonl"), "--exit-when-idle", "1", *extra]  # fmt: skip


@pytest.mark.parametrize("kind", FILE_KINDS)
def test_a_bridge_ca_file_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "ca.crt"
    words = make(path, kind)
    assert_refused(bridge(tmp_path, "--ca-file", str(path)), path, words if kind != "directory" else "directory")


@pytest.mark.parametrize("kind", FILE_KINDS)
def test_a_field_types_file_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "types.json"
    words = make(path, kind)
    assert_refused(bridge(tmp_path, "--declared-types", str(path)), path, words)


@pytest.mark.parametrize("kind", ["fifo", "directory", "dangling symlink"])
def test_a_dead_letter_file_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "letters.jsonl"
    words = make(path, kind)
    assert_refused([*bridge(tmp_path), "--dead-letters", str(path)], path, words)


DIR_KINDS = ["fifo", "regular file", "dangling symlink"]


@pytest.mark.parametrize("kind", DIR_KINDS)
def test_a_spool_dir_that_is_not_a_directory_is_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "spool-here"
    words = make(path, kind)
    assert_refused([*bridge(tmp_path), "--spool-dir", str(path)], path, words)


@pytest.mark.parametrize("kind", DIR_KINDS)
@pytest.mark.parametrize("command", ["up", "status", "down"])
def test_a_state_dir_that_is_not_a_directory_is_refused(tmp_path: Path, kind: str, command: str) -> None:
    path = tmp_path / "state"
    words = make(path, kind)
    assert_refused(["stack", command, "--state-dir", str(path)], path, words)


def run_with_password_file(tmp_path: Path, path: Path) -> subprocess.CompletedProcess[str]:
    scenario = tmp_path / "plain.yaml"
    scenario.write_text(PLAIN_SCENARIO.format(url=f"mqtt://127.0.0.1:{DEAD}', username: 'simulator"))
    env = {**child_env(), "MQTT_PASSWORD_FILE": str(path)}
    env.pop("MQTT_PASSWORD", None)
    return subprocess.run([*IOTSIM, "run", str(scenario)], capture_output=True, text=True, timeout=60, env=env)  # a hang: TimeoutExpired


@pytest.mark.parametrize("kind", ["fifo", "directory", "dangling symlink", "device", "huge file"])
def test_an_mqtt_password_file_that_is_not_a_small_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    # A FIFO hung `iotsim run` and /dev/zero was read until memory ran out (Path.read_text).
    path = tmp_path / "password"
    words = make(path, kind)
    result = run_with_password_file(tmp_path, path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and f"MQTT_PASSWORD_FILE {path}" in lines[0] and words in lines[0], result.stderr


def test_an_mqtt_password_file_through_a_symlink_is_read(tmp_path: Path) -> None:
    # Docker and Kubernetes secrets are often links: the password is read and the run goes on to the broker.
    (tmp_path / "real").write_text("secret\n")
    (tmp_path / "password").symlink_to(tmp_path / "real")
    result = run_with_password_file(tmp_path, tmp_path / "password")
    assert "MQTT_PASSWORD_FILE" not in result.stderr, result.stderr
    assert result.returncode == 1 and f"cannot reach the MQTT broker at mqtt://127.0.0.1:{DEAD}" in result.stderr, result.stderr


def test_a_load_scenario_ca_file_that_is_a_fifo_is_refused(pipeline: Pipeline, tmp_path: Path) -> None:
    # The servers are up, so `iotsim load` gets past its reachability checks to the TLS set-up.
    path = tmp_path / "ca.crt"
    words = make(path, "fifo")
    body = "name: loadca\nseed: 5\nduration: 1m\nfleets:\n  - {type: load_probe, count: 2}\nload:\n  profile: {kind: constant, target: 2, duration: 2s}\n  drain: 5s\n"
    scenario = pipeline.scenario_file(body, mqtt=f"ca_file: {path}")
    scenario.write_text(scenario.read_text().replace(f"url: {pipeline.mqtt_url}", f"url: {pipeline.mqtt_url.replace('mqtt://', 'mqtts://')}"))
    result = iotsim("load", str(scenario), "--out", str(tmp_path / "out"), timeout=60)  # a hang is a TimeoutExpired
    assert result.returncode == 2, result.stdout + result.stderr
    assert str(path) in result.stderr and words in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_fifo_put_where_the_dead_letters_go_after_the_check_is_refused_not_waited_on(tmp_path: Path) -> None:
    """The open itself refuses it (the window between check_writable_file and the open): no hang."""
    path = tmp_path / "dead.jsonl"
    os.mkfifo(path)
    with pytest.raises(Refused, match="a FIFO, not a regular file"):
        open_for_append(path)
    appended = open_for_append(tmp_path / "new.jsonl")
    appended.write(b"{}\n")
    appended.close()
    assert (tmp_path / "new.jsonl").read_bytes() == b"{}\n"


SEGMENT = "000000000000-5.lp"  # a name the bridge gives its spool files


def spool_folder(tmp_path: Path) -> Path:
    """The spool folder of `bridge(tmp_path)` (its default client id), made."""
    folder = tmp_path / "spool" / BRIDGE_CLIENT_ID
    folder.mkdir(parents=True)
    return folder


@pytest.mark.parametrize("kind", FILE_KINDS)
def test_a_spool_file_that_is_not_a_regular_file_is_refused_before_the_bridge_reads_it(tmp_path: Path, kind: str) -> None:
    # The bridge writes what its spool holds when it starts: a FIFO there blocked it, waiting for a writer.
    folder = spool_folder(tmp_path)
    path = folder / SEGMENT
    words = {"fifo": "a FIFO", "directory": "a directory", "dangling symlink": "a symbolic link", "device": "a symbolic link"}[kind]
    make(path, kind)
    assert_refused(bridge(tmp_path), path, words)


@pytest.mark.parametrize("name", ["notes.lp", "12-5.lp", "000000000000-x.lp", "000000000001-.lp"])
def test_a_file_the_bridge_did_not_name_in_its_spool_is_refused(tmp_path: Path, name: str) -> None:
    folder = spool_folder(tmp_path)
    (folder / name).write_text("air_quality pm25=1 0\n")
    assert_refused(bridge(tmp_path), folder / name, "not a name the bridge gives its spool files (NUMBER-POINTS.lp)")


def test_a_leftover_partial_spool_file_that_is_a_fifo_is_refused_not_removed(tmp_path: Path) -> None:
    folder = spool_folder(tmp_path)
    path = folder / "000000000003-5.tmp"
    os.mkfifo(path)
    assert_refused(bridge(tmp_path), path, "a FIFO, not a spool file the bridge wrote")
    assert path.exists()


def test_a_segment_replaced_by_a_fifo_while_the_bridge_runs_is_refused_not_waited_on(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", limit=1_000)
    spool.append(["air_quality pm25=1 0", "air_quality pm25=2 1"])
    segment = spool.oldest()
    assert segment is not None and segment.lines() == ["air_quality pm25=1 0", "air_quality pm25=2 1"]
    segment.path.unlink()
    os.mkfifo(segment.path)
    with pytest.raises(Refused, match="a FIFO, not a regular file"):
        segment.lines()


def test_a_fifo_as_the_bridges_session_record_is_no_record_and_is_replaced_on_save(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "session.json")
    os.mkfifo(tmp_path / "session.json.new")  # the temporary a save writes first
    assert SessionRecord.load(tmp_path) is None  # at once: nothing known, as for an unreadable record
    record = SessionRecord("mqtt://127.0.0.1:1883", "yangquan/#")
    record.save(tmp_path)
    assert SessionRecord.load(tmp_path) == record and (tmp_path / "session.json").is_file()
