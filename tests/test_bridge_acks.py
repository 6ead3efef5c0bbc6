"""The bridge's acknowledgements against the real servers: a PUBACK goes out only on the connection its
message came on, once InfluxDB stored the batch holding it (review of the batch paths, rev3)."""

from __future__ import annotations

import base64
import socket
import time

import paho.mqtt.client as mqtt
import pytest
from conftest import QUEUED_IDLE, Pipeline
from paho.mqtt.enums import CallbackAPIVersion
from publishing import dead_letters, message, publish, topic

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
        # Its acknowledgements go out at the network thread's next turn; then a moment for any that should not.
        wait_until(lambda: len(sent) == 2 and puback_mids(bytes(sent[1][1])) == [1, 2, 3, 4, 5], 10, "the 5 written were not acknowledged")
        time.sleep(0.5)
        assert pipeline.count("air_quality") == 15  # the next batch waits (batch_interval, batch_quiet: 60 s)
        assert len(sent) == 2  # the first connection, and the one after the session was lost
        assert puback_mids(bytes(sent[0][1])) == []
        assert puback_mids(bytes(sent[1][1])) == [1, 2, 3, 4, 5]  # the broker's ids on the new connection of the 5 written
    finally:
        bridge.stop()
    assert pipeline.count("air_quality") == 20
    assert puback_mids(bytes(sent[-1][1]))[-5:] == [6, 7, 8, 9, 10]  # written at the stop, then acknowledged


def test_a_stream_with_a_1_mb_message_and_bad_payloads_between_good_ones(pipeline: Pipeline) -> None:
    """Through the real broker to the bridge's batch paths: a 1 MB message (many reads; a 4-byte remaining
    length, 2 MiB and more, passes no broker of ours: max_packet_size 1 MiB), payloads just past the
    limit and not JSON, between 3 devices' readings
    with a seq gap, a string where a float is declared and tags that need escaping. Every good one is
    stored once with its exact values, every bad one dead-lettered with its reason."""
    good, bad = [], []
    for seq in range(120):
        for device in ("aq-0001", "aq-0002", "aq-0003"):
            if device == "aq-0003" and seq in (50, 51):
                continue  # never sent: a gap of 2
            readings = {"pm25": "high"} if (device, seq) == ("aq-0002", 7) else {"pm25": seq + 0.5, "aqi": seq, "ok": seq % 2 == 0}
            good.append((topic(pipeline, device), message(seq, readings, tags={"district": "Cheng qu,=x"}, device_id=device)))
        if seq == 30:
            bad.append((topic(pipeline), b'{"device_id": "aq-0001", "pad": "' + b"x" * 1_000_000 + b'"}', "payload of 1000035 bytes exceeds 16384"))
            good.append(bad[-1][:2])
        if seq == 60:
            bad.append((topic(pipeline), b" " * 16_385, "payload of 16385 bytes exceeds 16384"))
            good.append(bad[-1][:2])
        if seq == 90:
            bad.append((topic(pipeline), b"{not json", "not JSON: "))
            good.append(bad[-1][:2])
    bridge = pipeline.start_bridge("--exit-when-idle", QUEUED_IDLE)
    publish(pipeline, good)
    out, err = bridge.communicate(timeout=120)
    assert bridge.returncode == 0, err
    stored = len(good) - len(bad)
    assert f"received {len(good)}, written {stored}, dead letters {len(bad)}" in out, out
    assert "seq gaps 2" in out
    assert pipeline.count("air_quality") == stored and pipeline.count("air_quality", "pm25_string") == 1 and pipeline.count("air_quality", "pm25") == stored - 1
    rows = pipeline.query('SELECT "pm25", "aqi", "ok", "seq" FROM "air_quality" WHERE "device_id" = \'aq-0003\' AND "district" = \'Cheng qu,=x\'')[0]["values"]
    assert [row[1:] for row in rows] == [[seq + 0.5, float(seq), seq % 2 == 0, seq] for seq in range(120) if seq not in (50, 51)]
    letters = dead_letters(pipeline)
    assert [base64.b64decode(letter["payload_base64"]) for letter in letters] == [payload for _, payload, _ in bad]
    assert [letter["reason"][: len(reason)] for letter, (_, _, reason) in zip(letters, bad)] == [reason for _, _, reason in bad]


def test_a_batch_across_a_reconnect_that_kept_the_session_stores_and_acknowledges_every_message(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """10 messages wait in the open batch when the connection breaks; the broker keeps the session and
    sends them again (the same ids). The first connection's acknowledgements are not sent on the new
    one; those of the messages sent again are, once written, and in the end the session holds nothing."""
    settings = BridgeSettings(
        mqtt_url=pipeline.mqtt_url, topic_prefix=pipeline.prefix, client_id=pipeline.bridge_id, batch_size=15, max_pending=15,
        batch_interval=60, batch_quiet=60, spool_dir=pipeline.tmp / "spool", dead_letter_path=pipeline.tmp / "dead-letters.jsonl",
    )  # fmt: skip
    bridge = Bridge(settings, InfluxClient(pipeline.influx_url, pipeline.database), log=lambda line: None)
    sent = wire_by_connection(monkeypatch, bridge.client)
    bridge.start()
    try:
        publish(pipeline, [(topic(pipeline), message(seq, {"pm25": float(seq)})) for seq in range(10)])
        wait_until(lambda: bridge.counts.received == 10, 10, "the bridge did not receive the 10")
        bridge.client.socket().shutdown(socket.SHUT_RDWR)  # the connection breaks; the broker keeps the session
        wait_until(lambda: bridge.counts.received == 20 and bridge.counts.written == 15, 20, "the 10 did not come again")
        # The acknowledgements go out at the network thread's next turn; then a moment for any that should not.
        wait_until(lambda: len(sent) == 2 and puback_mids(bytes(sent[1][1])) == [1, 2, 3, 4, 5], 10, "the 5 written were not acknowledged")
        time.sleep(0.5)
        assert pipeline.count("air_quality") == 10  # the 15 written are the 10, 5 of them twice (the same points)
        assert len(sent) == 2 and puback_mids(bytes(sent[0][1])) == [] and puback_mids(bytes(sent[1][1])) == [1, 2, 3, 4, 5]
    finally:
        bridge.stop()
    assert puback_mids(bytes(sent[-1][1])) == list(range(1, 11))
    assert bridge.counts.sessions_lost == 0
    again: list[bytes] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=pipeline.bridge_id, clean_session=False, protocol=mqtt.MQTTv311)
    client.on_message = lambda c, u, m: again.append(m.payload)
    client.connect("127.0.0.1", pipeline.broker.port)
    client.loop_start()
    try:
        wait_until(client.is_connected, 10, "the session could not be taken")
        time.sleep(1.0)
    finally:
        client.disconnect()
        client.loop_stop()
    assert again == []  # every message of the session acknowledged
