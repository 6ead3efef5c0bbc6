"""Payload → line protocol: what is stored, what is refused, and that no payload can inject a point."""

from __future__ import annotations

import orjson
import pytest
import requests

from conftest import Pipeline
from simulator.ingest.lineprotocol import BadPayload, to_line

TOPIC = "yangquan/city/air_quality/aq-0001"
GOOD = {"device_id": "aq-0001", "type": "air_quality", "ts": 1768320000000, "seq": 4, "tags": {"district": "Chengqu"}, "readings": {"pm25": 80.5, "ok": True, "count": 3, "state": "on"}}


def test_a_payload_becomes_one_point_with_float_numbers_and_integer_seq() -> None:
    line, device_id, seq, ts = to_line(TOPIC, orjson.dumps(GOOD))
    assert line == 'air_quality,device_id=aq-0001,district=Chengqu pm25=80.5,ok=true,count=3.0,state="on",seq=4i 1768320000000'
    assert (device_id, seq, ts) == ("aq-0001", 4, 1768320000000)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b'"text"', "not a JSON object"),
        (orjson.dumps({**GOOD, "ts": 1768320000}), "ts is missing or not an epoch time"),
        (orjson.dumps({**GOOD, "seq": True}), "seq is missing"),
        (orjson.dumps({**GOOD, "type": "air quality"}), "type is missing"),
        (orjson.dumps({**GOOD, "readings": {"a": None}}), "reading 'a' is a NoneType"),
        (orjson.dumps({**GOOD, "readings": {"seq": 1}}), "reading name 'seq' is not allowed"),
        (orjson.dumps({**GOOD, "tags": {"device_id": "x"}}), "tag name 'device_id' is not allowed"),
        (orjson.dumps({**GOOD, "tags": {"d": "a\nb"}}), "newline"),
        (orjson.dumps({**GOOD, "tags": {"d": "a\\"}}), "backslash"),
        (b" " * 20000, "exceeds"),
    ],
    ids=["binary", "string", "ts-in-seconds", "bool-seq", "bad-type", "null-reading", "seq-reading", "device-id-tag", "newline-tag", "backslash-tag", "oversize"],
)
def test_bad_payloads_are_refused_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(BadPayload, match=reason):
        to_line(TOPIC, payload)


def test_injection_attempts_are_escaped_and_write_exactly_one_point(pipeline: Pipeline) -> None:
    evil = {
        **GOOD,
        "tags": {"district": 'Cheng qu,x=1 pm25=1 1', "road": "a=b"},
        "readings": {"note": 'x" \nair_quality,device_id=aq-0001 pm25=999 1768320000001', "pm25": 1.0},
    }
    line, *_ = to_line(TOPIC, orjson.dumps(evil))
    response = requests.post(f"{pipeline.influx_url}/write", params={"db": pipeline.database, "precision": "ms"}, data=line.encode(), timeout=10)
    assert response.status_code == 204, response.text
    series = pipeline.query('SELECT * FROM "air_quality"')
    assert len(series) == 1 and len(series[0]["values"]) == 1
    row = dict(zip(series[0]["columns"], series[0]["values"][0]))
    assert row["district"] == 'Cheng qu,x=1 pm25=1 1'
    assert row["road"] == "a=b"
    assert row["note"] == 'x" \\nair_quality,device_id=aq-0001 pm25=999 1768320000001'
    assert row["pm25"] == 1.0
