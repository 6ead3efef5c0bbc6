"""Device status (issue 15): births and last wills on `{prefix}/status/{device_id}` are stored in the
`device_status` measurement, against the real Mosquitto, bridge and InfluxDB; hostile status messages
are dead-lettered with their reason and the good data around them is all stored."""

from __future__ import annotations

import base64
import subprocess

import orjson
import requests

from conftest import Pipeline, QUEUED_IDLE
from publishing import TS, dead_letters, message, publish, topic


def status(device_id: str, online: bool, ts: int) -> dict:
    return {"device_id": device_id, "online": online, "ts": ts}


def status_topic(pipeline: Pipeline, device_id: str) -> str:
    return f"{pipeline.prefix}/status/{device_id}"


def stored_status(pipeline: Pipeline) -> list[tuple[str, int, bool]]:
    """(device_id, time ms, online) of every device_status point, by device then time."""
    q = 'SELECT "online" FROM "device_status" GROUP BY "device_id"'
    response = requests.get(f"{pipeline.influx_url}/query", params={"db": pipeline.database, "epoch": "ms", "q": q}, timeout=30)
    series = response.json()["results"][0].get("series", [])
    return [(s["tags"]["device_id"], time_ms, online) for s in series for time_ms, online in s["values"]]


def test_births_and_wills_are_stored_as_device_status_beside_the_readings(pipeline: Pipeline) -> None:
    bridge = pipeline.start_bridge("--exit-when-idle", QUEUED_IDLE)
    sent = [
        (status_topic(pipeline, "em-0001"), status("em-0001", True, TS)),
        (status_topic(pipeline, "em-0002"), status("em-0002", True, TS + 5)),
        *[(topic(pipeline), message(seq, {"pm25": 10.0 + seq})) for seq in range(3)],
        (status_topic(pipeline, "em-0002"), status("em-0002", False, TS + 90_000)),  # its will
        (status_topic(pipeline, "aq-0001"), status("aq-0001", True, TS + 500)),  # a device of the readings too
    ]
    publish(pipeline, sent)
    out, err = bridge.communicate(timeout=60)
    assert bridge.returncode == 0, err
    assert stored_status(pipeline) == [
        ("aq-0001", TS + 500, True),
        ("em-0001", TS, True),
        ("em-0002", TS + 5, True),
        ("em-0002", TS + 90_000, False),
    ]
    assert pipeline.count("air_quality") == 3
    assert dead_letters(pipeline) == []
    # Status messages have no seq: the bridge's seq check sees no gap from them.
    gaps = pipeline.query('SELECT last("seq_gaps") FROM "pipeline" WHERE "component" = \'bridge\'')
    assert gaps[0]["values"][0][1] == 0


def test_a_retained_birth_published_before_the_bridge_subscribed_is_stored(pipeline: Pipeline) -> None:
    retained = status_topic(pipeline, "em-0007")
    mosquitto_pub(pipeline, retained, orjson.dumps(status("em-0007", True, TS)), "-r")
    try:
        bridge = pipeline.start_bridge("--exit-when-idle", QUEUED_IDLE)
        out, err = bridge.communicate(timeout=60)
        assert bridge.returncode == 0, err
        assert stored_status(pipeline) == [("em-0007", TS, True)]
    finally:
        mosquitto_pub(pipeline, retained, b"", "-r")  # clear it (no other test shares the prefix anyway)


def test_hostile_status_messages_are_dead_lettered_with_their_reason(pipeline: Pipeline) -> None:
    bridge = pipeline.start_bridge("--exit-when-idle", QUEUED_IDLE)
    hostile = [
        (status_topic(pipeline, "em 0001"), status("em 0001", True, TS)),
        (status_topic(pipeline, "em-0001/x"), status("em-0001/x", True, TS)),
        (status_topic(pipeline, "em-0001"), status("em-0002", False, TS)),
        (status_topic(pipeline, "em-0001"), status("em-0001", "false", TS)),  # type: ignore[arg-type]
        (status_topic(pipeline, "em-0001"), status("em-0001", 0, TS)),  # type: ignore[arg-type]
        (status_topic(pipeline, "em-0001"), {"device_id": "em-0001", "online": True}),
        (status_topic(pipeline, "em-0001"), status("em-0001", True, TS // 1000)),  # seconds, not ms
        (status_topic(pipeline, "em-0001"), {**status("em-0001", True, TS), "seq": 0}),
        (status_topic(pipeline, "em-0001"), b"[true]"),
        (status_topic(pipeline, "em-0001"), b""),  # a retained status cleared
    ]
    good = [(status_topic(pipeline, "em-0001"), status("em-0001", True, TS + 1000)), (topic(pipeline), message(0, {"pm25": 3.0}))]
    publish(pipeline, [hostile[0], good[0], *hostile[1:], good[1]])
    out, err = bridge.communicate(timeout=60)
    assert bridge.returncode == 0, err
    assert stored_status(pipeline) == [("em-0001", TS + 1000, True)]
    assert pipeline.count("air_quality") == 1
    letters = dead_letters(pipeline)
    assert [(letter["topic"], base64.b64decode(letter["payload_base64"])) for letter in letters] == [
        (t, p if isinstance(p, bytes) else orjson.dumps(p)) for t, p in hostile
    ]
    assert [letter["reason"] for letter in letters] == [
        "status topic names 'em 0001', not a device id",
        "status topic names 'em-0001/x', not a device id",
        "topic names device 'em-0001' but the payload says 'em-0002'",
        "online is not a boolean",
        "online is not a boolean",
        "a status holds exactly device_id, online and ts; this one has device_id, online",
        "ts is missing or not an epoch time in integer milliseconds",
        "a status holds exactly device_id, online and ts; this one has device_id, online, seq, ts",
        "payload is not a JSON object",
        "empty status payload (a retained status cleared): nothing to store",
    ]


def mosquitto_pub(pipeline: Pipeline, where: str, payload: bytes, *extra: str) -> None:
    """The broker's own client: `-r` retained, `-n` when the payload is empty (clearing a retained message)."""
    body = ["-n"] if not payload else ["-s"]
    command = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(pipeline.broker.port), "-q", "1", "-t", where, *body, *extra]
    subprocess.run(command, input=payload, check=True, timeout=30)


def test_a_will_with_its_births_ts_leaves_one_point_offline(pipeline: Pipeline) -> None:
    """A will's ts is its connection's start (fixed at CONNECT): birth and will are one point, offline."""
    bridge = pipeline.start_bridge("--exit-when-idle", QUEUED_IDLE)
    sent = [status("em-0005", True, TS), status("em-0005", False, TS), status("em-0005", True, TS + 60_000)]  # then it reconnects
    publish(pipeline, [(status_topic(pipeline, "em-0005"), payload) for payload in sent[:2]])
    publish(pipeline, [(status_topic(pipeline, "em-0005"), sent[2])])
    out, err = bridge.communicate(timeout=60)
    assert bridge.returncode == 0, err
    assert stored_status(pipeline) == [("em-0005", TS, False), ("em-0005", TS + 60_000, True)]
    assert dead_letters(pipeline) == []


def test_a_status_influxdb_refuses_for_its_field_type_is_dead_lettered_not_lost(pipeline: Pipeline) -> None:
    # Another client wrote `online` as a float first: a boolean status cannot go under it.
    response = requests.post(f"{pipeline.influx_url}/write", params={"db": pipeline.database, "precision": "ms"}, data=f"device_status,device_id=x-0001 online=1.0 {TS}", timeout=30)
    assert response.status_code == 204, response.text
    bridge = pipeline.start_bridge("--exit-when-idle", QUEUED_IDLE)
    publish(pipeline, [(status_topic(pipeline, "em-0006"), status("em-0006", False, TS)), (topic(pipeline), message(0, {"pm25": 3.0}))])
    out, err = bridge.communicate(timeout=60)
    assert bridge.returncode == 0, err
    assert pipeline.count("air_quality") == 1
    letters = dead_letters(pipeline)
    assert [letter["topic"] for letter in letters] == [status_topic(pipeline, "em-0006")]
    assert letters[0]["reason"].startswith("InfluxDB refused the point: ") and "field type conflict" in letters[0]["reason"], letters[0]["reason"]
