"""Publishing hand-made messages to the test broker, for tests that feed the bridge directly."""

from __future__ import annotations

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from conftest import Pipeline

TS = 1768341600000  # 2026-01-14 06:00 Yangquan time


def message(seq: int, readings: dict, tags: dict | None = None, device_id: str = "aq-0001", ts: int | None = None) -> dict:
    return {"device_id": device_id, "type": "air_quality", "ts": TS + seq * 1000 if ts is None else ts, "seq": seq, "tags": tags or {}, "readings": readings}


def topic(pipeline: Pipeline, device_id: str = "aq-0001") -> str:
    return f"{pipeline.prefix}/city/air_quality/{device_id}"


def publish(pipeline: Pipeline, messages: list[tuple[str, bytes | dict]], client_id: str = "") -> None:
    """Publish (topic, payload) at QoS 1, in order; returns once the broker has every one."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"{pipeline.prefix}-publisher")
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", pipeline.broker.port)
    client.loop_start()
    try:
        infos = [client.publish(t, p if isinstance(p, bytes) else orjson.dumps(p), qos=1) for t, p in messages]
        for info in infos:
            info.wait_for_publish(30)
    finally:
        client.disconnect()
        client.loop_stop()


def dead_letters(pipeline: Pipeline) -> list[dict]:
    path = pipeline.tmp / "dead-letters.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []
