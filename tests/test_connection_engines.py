"""benchmarks/connection_engines.py: the paho engine (DeviceSessions) end to end against its own real
Mosquitto, every message counted by its persistent subscriber; bad flags and a missing library one line,
exit 2. The gmqtt and aiomqtt engines need the `bench` extra, not the tests': they are measured by the
benchmark, not run here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.randomness import Stream, stream_key

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "connection_engines.py"


def bench(*flags: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *flags], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def expected_messages(devices: int, cadence: float, seconds: float) -> int:
    """Each device's messages at its phase + k × cadence within the publishing phase (the benchmark's schedule)."""
    total = 0
    for n in range(devices):
        at = Stream(stream_key(1, f"em-{n:05d}/phase")).uniform(0, cadence)
        while at < seconds:
            total += 1
            at += cadence
    return total


def test_paho_engine_holds_every_connection_and_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "engines.json"
    result = bench("--engines", "paho", "--sizes", "150", "--cadence", "2", "--minutes", "0.1", "--idle", "0.02", "--json", str(out))
    assert result.returncode == 0, result.stderr
    [figures] = json.loads(out.read_text())
    published = expected_messages(150, 2.0, 6.0)
    assert published > 150 * 2  # 3 cadences: every device sends 3 (its phase is below 2 s)
    assert figures["engine"] == "paho" and figures["devices"] == 150 and figures["connected"] == 150
    assert (figures["published"], figures["received"], figures["lost"]) == (published, published, 0)
    assert 1_000 < figures["bytes_per_connection"] < 200_000  # a paho client and its socket: KB, not bytes or MB
    assert figures["connects_per_s"] > 0 and figures["cpu_us_per_message"] > 0


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (("--engines", "paho,mosquitto"), "--engines: unknown mosquitto"),
        (("--sizes", "20000"), "--sizes '20000': each from 1 to 19,000"),
        (("--sizes", "1000,lots"), "--sizes '1000,lots'"),
        (("--minutes", "0"), "--minutes above 0"),
        (("--cadence", "nan"), "--cadence and --minutes above 0"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(flags: tuple[str, ...], says: str) -> None:
    result = bench(*flags, timeout=60)
    assert result.returncode == 2
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_missing_library_is_one_line_and_exit_2() -> None:
    # gmqtt made unimportable in the benchmark's process, as where the bench extra is not installed.
    code = f"import runpy, sys; sys.path.insert(0, {str(SCRIPT.parent)!r}); sys.modules['gmqtt'] = None; sys.argv = [{str(SCRIPT)!r}, '--engines', 'gmqtt']; runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2
    # gmqtt first among what is missing (uvloop too, where the bench extra is not installed at all)
    line = result.stderr.strip()
    assert line.startswith("--engines gmqtt: gmqtt") and line.endswith(" not installed (pip install -e '.[bench]')") and "\n" not in line, line
