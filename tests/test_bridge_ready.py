"""The bridge's ready file (compose's healthcheck tests it) says "subscribed" only about this bridge:
one left by a bridge that was killed (SIGKILL skips its cleanup, as `docker kill` or an OOM kill does)
is removed at start, and the file comes back once the new bridge has subscribed."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import Pipeline, child_env
from simulator import stack


def wait_for(condition: object, process: subprocess.Popen[str], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert process.poll() is None, f"the bridge exited while waiting for {what}"
        assert time.monotonic() < deadline, f"no {what} within {seconds} s"
        time.sleep(0.05)


def test_a_stale_ready_file_is_removed_before_the_bridge_subscribes(pipeline: Pipeline, tmp_path: Path) -> None:
    # A broker of this test's own, stopped (SIGSTOP) while the bridge starts: the kernel accepts the
    # connection, the broker answers nothing, so the bridge cannot have subscribed yet.
    broker = stack.start_mosquitto(tmp_path / "broker", stack.free_port())
    ready = tmp_path / "bridge.ready"
    ready.write_text("")  # left by a bridge killed with SIGKILL
    bridge = None
    try:
        os.kill(broker.pid, signal.SIGSTOP)
        command = pipeline.bridge_command("--ready-file", str(ready))
        command[command.index("--mqtt") + 1] = broker.url
        bridge = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
        wait_for(lambda: not ready.exists(), bridge, 30, "removal of the stale ready file")
        os.kill(broker.pid, signal.SIGCONT)
        assert bridge.stderr is not None
        first = bridge.stderr.readline()
        assert first.startswith("bridge:"), first  # said once subscribed, after touching the file
        assert ready.exists()
        bridge.send_signal(signal.SIGTERM)
        bridge.communicate(timeout=30)
        assert bridge.returncode == 0 and not ready.exists()
    finally:
        os.kill(broker.pid, signal.SIGCONT)
        if bridge is not None and bridge.poll() is None:
            bridge.kill()
            bridge.wait()
        broker.stop()

