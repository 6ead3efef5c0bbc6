"""benchmarks/pyspy.py: py-spy's raw stacks split by function, as bridge_cpu.py and publisher_cpu.py print
them. The lines are py-spy 0.4.3's own (recorded from both benchmarks here), a few shortened to their
ends; the benchmarks themselves need py-spy and ptrace, which the tests do not."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the benchmarks import each other from beside themselves

import bridge_cpu  # noqa: E402
import publisher_cpu  # noqa: E402
import pyspy  # noqa: E402

NETWORK = (
    "thread (26576): mqtt-network;Thread._bootstrap (threading.py:1002);Thread.run (threading.py:982);Bridge._serve_network (simulator/ingest/bridge.py:251);"
    "Client.loop_read (paho/mqtt/client.py:2102);Client._handle_publish (simulator/transport/client.py:216);Bridge._on_message (simulator/ingest/bridge.py:362);"
    "to_line (simulator/ingest/lineprotocol.py:132);escape_key (simulator/ingest/lineprotocol.py:50) 2"
)
WRITER = (
    "thread (26575): influx-writer;Thread._bootstrap (threading.py:1002);Bridge._write_batches (simulator/ingest/bridge.py:401);"
    "InfluxClient.write (simulator/influx.py:186);InfluxClient._post_until_answered (simulator/influx.py:201);compress (gzip.py:590) 25"
)
MAIN = "thread (26334): MainThread;<module> (bridge_cpu.py:161);main (bridge_cpu.py:139);drain (bridge_cpu.py:93) 3"
THREAD_ONLY = "thread (26576): mqtt-network 4"  # sampled in native code: no Python frame

RUN = (
    "<module> (publisher_cpu.py:169);main (publisher_cpu.py:139);publish_pass (publisher_cpu.py:87);run_scenario (simulator/engine.py:141);"
    "Process._resume (simpy/events.py:399);report_rounds (simulator/cohort.py:79);Telemetry.publish_compact (simulator/telemetry.py:163);"
    "Telemetry.payload (simulator/telemetry.py:141) 3"
)
DRAIN = "<module> (publisher_cpu.py:169);main (publisher_cpu.py:139);publish_pass (publisher_cpu.py:88);MqttPublisher.drain (simulator/transport/mqtt.py:301) 5"
CUT_SHORT = "Client._packet_read (paho/mqtt/client.py:3149) 1"  # a stack py-spy could not walk to its root


def raw(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "profile.raw"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_bridge_split_counts_only_its_threads_and_a_function_with_what_it_calls(tmp_path: Path) -> None:
    shares = bridge_cpu.split(raw(tmp_path, NETWORK, WRITER, MAIN, THREAD_ONLY))
    assert shares.total == 2 + 25 + 4  # not the main thread's 3
    labels = {label.strip(): count for label, count in shares.inclusive.items()}
    assert labels["paho reading (loop_read, incl. the on_message callback)"] == 2
    assert labels["on_message (conversion, batching)"] == labels["to_line"] == 2
    assert labels["writer: InfluxDB write (gzip, HTTP)"] == labels["gzip"] == 25
    assert labels["seq check"] == labels["acknowledgements, one by one (ack)"] == labels["acknowledgements of a batch at once (ack_all)"] == 0
    # The innermost frame of each stack with one; a thread's name is none.
    assert dict(shares.innermost) == {"escape_key (simulator/ingest/lineprotocol.py:50)": 2, "compress (gzip.py:590)": 25}


def test_the_publisher_split_keeps_the_run_and_the_drain(tmp_path: Path) -> None:
    shares = publisher_cpu.split(raw(tmp_path, RUN, DRAIN, CUT_SHORT))
    assert shares.total == 3 + 5
    labels = {label.strip(): count for label, count in shares.inclusive.items()}
    assert labels["the world's run (everything)"] == labels["the payload's JSON (Telemetry.payload)"] == 3
    assert labels["publisher (__call__)"] == 0
    assert dict(shares.innermost) == {"Telemetry.payload (simulator/telemetry.py:141)": 3, "MqttPublisher.drain (simulator/transport/mqtt.py:301)": 5}


def test_the_split_prints_each_share_of_the_samples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shares = pyspy.split(pyspy.read_stacks(raw(tmp_path, RUN, DRAIN)), {"run": "run_scenario", "drain": "drain"}, lambda stack: True)
    pyspy.show(shares, f"py-spy: {shares.total:,} samples")
    assert capsys.readouterr().out.splitlines() == [
        "py-spy: 8 samples",
        "   37.5 %  run",
        "   62.5 %  drain",
        "innermost functions:",
        "   62.5 %  MqttPublisher.drain (simulator/transport/mqtt.py:301)",
        "   37.5 %  Telemetry.payload (simulator/telemetry.py:141)",
    ]
