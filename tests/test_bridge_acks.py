"""The bridge's acknowledgements against the real servers: a PUBACK goes out only on the connection its
message came on, once InfluxDB stored the batch holding it (review of the batch paths, rev3)."""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
import pytest
from conftest import Pipeline
from paho.mqtt.enums import CallbackAPIVersion
from publishing import message, publish, topic

from simulator.influx import InfluxClient
from simulator.ingest.bridge import Bridge, BridgeSettings


def wire_by_connection(monkeypatch: pytest.MonkeyPatch, client: mqtt.Client) -> list[tuple[object, bytearray]]:
    """What `client` puts on the wire, per connection (socket) in order: paho's own `_sock_send`, recorded."""
    sent: list[tuple[object, bytearray]] = []
    original = mqtt.Client._sock_send

    def recording(self: mqtt.Client, buf: bytes | bytearray) -> int:
        count = original(self, buf)
        if self is client:
            if not sent or sent[-1][0] is not self._sock:
                sent.append((self._sock, bytearray()))
            sent[-1][1].extend(bytes(buf[:count]))
        return count

    monkeypatch.setattr(mqtt.Client, "_sock_send", recording)
    return sent


def puback_mids(stream: bytes) -> list[int]:
    """The message ids of the PUBACKs in an MQTT byte stream from a client."""
    mids, at = [], 0
    while at < len(stream):
        header, remaining, shift, at = stream[at], 0, 0, at + 1
        while True:
            byte, at = stream[at], at + 1
            remaining |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if header == 0x40:
            mids.append((stream[at] << 8) | stream[at + 1])
        at += remaining
    return mids


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_acknowledgements_of_an_earlier_connection_never_ack_the_new_one_s_messages(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """10 messages wait in the open batch when the session is lost (a clean-session client takes the
    bridge's id); the broker numbers the next ones from 1 again. The batch that holds the 10 and the
    first 5 new ones is written: only those 5 may be acknowledged on the new connection, not message
    ids 6-10, whose new messages wait unwritten in the next batch."""
    settings = BridgeSettings(
        mqtt_url=pipeline.mqtt_url, topic_prefix=pipeline.prefix, client_id=pipeline.bridge_id, batch_size=15, max_pending=15,
        batch_interval=60, batch_quiet=60, spool_dir=pipeline.tmp / "spool", dead_letter_path=pipeline.tmp / "dead-letters.jsonl",
    )  # fmt: skip
    bridge = Bridge(settings, InfluxClient(pipeline.influx_url, pipeline.database), log=lambda line: None)
    sent = wire_by_connection(monkeypatch, bridge.client)
    bridge.start()
    try:
        publish(pipeline, [(topic(pipeline), message(seq, {"pm25": float(seq)})) for seq in range(10)])
        wait_until(lambda: bridge.counts.received == 10, 10, "the bridge did not receive the first 10")
        taker = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=pipeline.bridge_id, clean_session=True, protocol=mqtt.MQTTv311)
        taker.connect("127.0.0.1", pipeline.broker.port)  # the broker drops the bridge's session (and its connection)
        taker.loop_start()
        wait_until(taker.is_connected, 10, "the clean-session client did not connect")
        taker.disconnect()
        taker.loop_stop()
        wait_until(lambda: bridge.counts.sessions_lost == 1 and bridge.subscribed and bridge.connected.is_set(), 10, "the bridge did not subscribe again")
        publish(pipeline, [(topic(pipeline), message(seq, {"pm25": float(seq)})) for seq in range(10, 20)])
        wait_until(lambda: bridge.counts.received == 20 and bridge.counts.written == 15, 20, "the first batch was not written")
        time.sleep(1.0)  # its acknowledgements go out at the network thread's next turn
        assert pipeline.count("air_quality") == 15  # the next batch waits (batch_interval, batch_quiet: 60 s)
        assert len(sent) == 2  # the first connection, and the one after the session was lost
        assert puback_mids(bytes(sent[0][1])) == []
        assert puback_mids(bytes(sent[1][1])) == [1, 2, 3, 4, 5]  # the broker's ids on the new connection of the 5 written
    finally:
        bridge.stop()
    assert pipeline.count("air_quality") == 20
    assert puback_mids(bytes(sent[-1][1]))[-5:] == [6, 7, 8, 9, 10]  # written at the stop, then acknowledged
