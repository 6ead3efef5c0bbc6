"""Files the bridge and the dry run cannot write (a full disk, a read-only file system, no inode left):
one line naming the flag and the file, no traceback, and nothing the broker holds is lost. The file
systems are real tmpfs mounts (the tests run as root), never patched calls."""

from __future__ import annotations

import base64
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import IOTSIM, Pipeline, child_env, iotsim
from filesystems import fill, tmpfs
from publishing import dead_letters, message, publish, topic

ROOT = Path(__file__).resolve().parent.parent
QUICK = str(ROOT / "scenarios" / "quickstart.yaml")


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """64 KiB filled to the last byte, with an empty `dead-letters.jsonl` made before (it opens, it cannot grow)."""
    with tmpfs(tmp_path / "full", "size=64k") as mount_point:
        (mount_point / "dead-letters.jsonl").touch()
        fill(mount_point)
        yield mount_point


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "ro", "ro,size=64k") as mount_point:
        yield mount_point


@pytest.fixture
def no_inodes(tmp_path: Path) -> Iterator[Path]:
    """Writable, with room, but no inode for a new file: access() says yes, creating one says ENOSPC."""
    with tmpfs(tmp_path / "noinodes", "size=64k,nr_inodes=1") as mount_point:
        yield mount_point


def with_option(command: list[str], flag: str, value: str) -> list[str]:
    command = list(command)
    command[command.index(flag) + 1] = value
    return command


# One bad message: its dead letter waits in the file's buffer and the flush before acknowledging fails
# (the writer thread). A hundred (18 KB of dead letters): the 8 KiB buffer can also overflow as they
# arrive (the network thread). Either way: the same line, nothing acknowledged.
@pytest.mark.parametrize("bad", [1, 100])
def test_dead_letters_that_cannot_be_written_stop_the_bridge_in_one_line_and_the_broker_keeps_every_message(pipeline: Pipeline, full_disk: Path, bad: int) -> None:
    letters = full_disk / "dead-letters.jsonl"
    command = with_option(pipeline.bridge_command(), "--dead-letters", str(letters))
    bridge = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    assert bridge.stderr is not None
    started = bridge.stderr.readline()
    assert started.startswith("bridge:"), started + bridge.stderr.read()
    # The bad message first: whatever batch it is in, nothing after it is acknowledged either.
    good = [(topic(pipeline), message(seq, {"pm25": float(seq)})) for seq in range(10)]
    publish(pipeline, [*[(topic(pipeline), b"not json")] * bad, *good])
    out, err = bridge.communicate(timeout=60)
    assert bridge.returncode == 1, err
    assert "Traceback" not in err
    assert err.splitlines() == [
        f"bridge: cannot write dead letters to {letters} (No space left on device); stopped taking messages, the broker keeps them: "
        "free space or pass another --dead-letters"
    ]
    assert out == ""

    # The same session with a file that can be written: the broker sends them all again, none was acknowledged.
    again = subprocess.run(pipeline.bridge_command("--exit-when-idle", "2"), capture_output=True, text=True, timeout=120, env=child_env())
    assert again.returncode == 0, again.stderr
    assert f"bridge: received {bad + 10}, written 10, dead letters {bad} " in again.stdout, again.stdout
    assert pipeline.count("air_quality") == 10
    assert [(base64.b64decode(letter["payload_base64"]), letter["reason"][:9]) for letter in dead_letters(pipeline)] == [(b"not json", "not JSON:")] * bad


READ_ONLY = {
    "bridge --dead-letters": (["bridge", "--dead-letters", "{ro}/dl.jsonl", "--spool-dir", "{tmp}/spool"], "--dead-letters {ro}/dl.jsonl: cannot write there (Read-only file system)"),
    "bridge --spool-dir": (["bridge", "--spool-dir", "{ro}/spool", "--dead-letters", "{tmp}/dl.jsonl"], "--spool-dir {ro}/spool: cannot write there (Read-only file system)"),
    "bridge --ready-file": (["bridge", "--ready-file", "{ro}/ready"], "--ready-file {ro}/ready: cannot write there"),
    "bridge --pid-file": (["bridge", "--pid-file", "{ro}/pid"], "--pid-file {ro}/pid: cannot write there"),
    "run --dry-run --out": (["run", QUICK, "--dry-run", "--out", "{ro}/out.jsonl"], "--out {ro}/out.jsonl: cannot write there"),
}


@pytest.mark.parametrize(("arguments", "line"), READ_ONLY.values(), ids=READ_ONLY.keys())
def test_a_path_on_a_read_only_file_system_is_one_line_naming_its_flag_and_exit_2(tmp_path: Path, read_only: Path, arguments: list[str], line: str) -> None:
    args = [arg.replace("{ro}", str(read_only)).replace("{tmp}", str(tmp_path)) for arg in [*arguments, line]]
    line = args.pop()
    done = subprocess.run([*IOTSIM, *args], capture_output=True, text=True, timeout=60, env=child_env(), cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith(line), done.stderr
    assert done.stdout == ""


def test_a_ready_file_with_no_inode_left_stops_the_bridge_in_one_line_and_exit_2(pipeline: Pipeline, no_inodes: Path) -> None:
    ready = no_inodes / "ready"
    done = subprocess.run(pipeline.bridge_command("--ready-file", str(ready)), capture_output=True, text=True, timeout=60, env=child_env())
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [f"--ready-file {ready}: cannot write there (No space left on device)"]
    assert done.stdout == ""


def test_a_pid_file_with_no_inode_left_is_one_line_and_exit_2(pipeline: Pipeline, no_inodes: Path) -> None:
    pid = no_inodes / "bridge.pid"
    done = subprocess.run(pipeline.bridge_command("--pid-file", str(pid)), capture_output=True, text=True, timeout=60, env=child_env())
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [f"--pid-file {pid}: cannot write there (No space left on device)"]


def test_a_dry_run_that_fills_the_disk_says_where_it_stopped_in_one_line(full_disk: Path) -> None:
    output = full_disk / "dead-letters.jsonl"  # the one file the full disk can open: it cannot grow
    done = iotsim("run", QUICK, "--dry-run", "--out", str(output))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and re.fullmatch(rf"--out {re.escape(str(output))}: writing failed after \d+ messages \(No space left on device\)", lines[0]), done.stderr


def test_a_session_record_that_cannot_be_written_is_one_warning_and_ingest_goes_on(pipeline: Pipeline) -> None:
    # Without a spool the record goes beside the dead letters, in sessions/CLIENT_ID; a file is in the way.
    (pipeline.tmp / "sessions").write_text("in the way\n")
    command = pipeline.bridge_command("--spool-limit", "0", "--exit-when-idle", "2")
    bridge = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    assert bridge.stderr is not None
    warning = bridge.stderr.readline()  # said once subscribed, before the bridge says where it writes
    assert warning == f"bridge: cannot record the session in {pipeline.tmp / 'sessions' / pipeline.bridge_id} (Not a directory); a lost session may go unnoticed\n"
    assert bridge.stderr.readline().startswith(f"bridge: {pipeline.mqtt_url} ")
    publish(pipeline, [(topic(pipeline), message(seq, {"pm25": 1.0})) for seq in range(5)])
    out, err = bridge.communicate(timeout=60)
    assert bridge.returncode == 0, err
    assert err == "" and "received 5, written 5, dead letters 0" in out
    assert pipeline.count("air_quality") == 5
    assert os.path.isfile(pipeline.tmp / "sessions")
