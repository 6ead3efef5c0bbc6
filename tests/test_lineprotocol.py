"""Payload → line protocol: what is stored, what is refused, and that no payload can inject a point."""

from __future__ import annotations

import orjson
import pytest
import requests

from conftest import Pipeline
from simulator.ingest.fieldtypes import FieldTypes
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
        # `$` matched before a final newline: each of these passed and wrote a point of its own
        (orjson.dumps({**GOOD, "tags": {"t\n": "evil"}}), r"tag name 't\\n' is not allowed"),
        (orjson.dumps({**GOOD, "readings": {"pm25\n": 1}}), r"reading name 'pm25\\n' is not allowed"),
        (orjson.dumps({**GOOD, "type": "air_quality\n"}), "type is missing"),
        # names InfluxDB drops (`time` field), refuses (`time` tag) or reserves (leading `_`)
        (orjson.dumps({**GOOD, "readings": {"time": 5, "pm25": 1}}), "reading name 'time' is not allowed"),
        (orjson.dumps({**GOOD, "tags": {"time": "noon"}}), "tag name 'time' is not allowed"),
        (orjson.dumps({**GOOD, "type": "time"}), "type is missing"),
        (orjson.dumps({**GOOD, "readings": {"_x": 1}}), "reading name '_x' is not allowed"),
        (orjson.dumps({**GOOD, "tags": {"_field": "x"}}), "tag name '_field' is not allowed"),
        (orjson.dumps({**GOOD, "readings": {"": 1}}), "reading name '' is not allowed"),
        # one name for a tag and a field: InfluxDB stores both and the query shows `district_1`
        (orjson.dumps({**GOOD, "readings": {"district": 1}}), "reading name 'district' is not allowed"),
        (orjson.dumps({**GOOD, "readings": {"device_id": "x"}}), "reading name 'device_id' is not allowed"),
        # control characters have no escape in a tag; InfluxDB would store them in the identifier
        (orjson.dumps({**GOOD, "tags": {"d": "a\rb"}}), "control character"),
        (orjson.dumps({**GOOD, "tags": {"d": "a\tb"}}), "control character"),
        (orjson.dumps({**GOOD, "tags": {"d": "a\x00b"}}), "control character"),
        (orjson.dumps({**GOOD, "tags": {"d": "a\u2028b"}}), "control character"),
        (orjson.dumps({**GOOD, "tags": {"d": "a\x85b"}}), "control character"),
        (orjson.dumps({**GOOD, "device_id": "aq-0001\n"}), "topic names device"),
    ],
    ids=["binary", "string", "ts-in-seconds", "bool-seq", "bad-type", "null-reading", "seq-reading", "device-id-tag", "newline-tag", "backslash-tag", "oversize",
         "newline-after-tag-key", "newline-after-reading", "newline-after-type", "time-reading", "time-tag", "time-type", "underscore-reading",
         "underscore-tag", "empty-reading", "reading-named-like-tag", "device-id-reading", "cr-tag", "tab-tag", "nul-tag", "line-separator-tag",
         "next-line-tag", "newline-device-id"],
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


def test_a_device_id_with_a_control_character_is_refused_even_on_its_own_topic() -> None:
    for device_id in ("aq\t1", "aq\x001", "aq\u20281"):
        with pytest.raises(BadPayload, match="control character"):
            to_line(f"yangquan/city/air_quality/{device_id}", orjson.dumps({**GOOD, "device_id": device_id}))


def test_a_value_of_another_type_than_its_field_goes_to_the_typed_name() -> None:
    types = FieldTypes(declared={"air_quality": {"pm25": "float"}})
    line, *_ = to_line(TOPIC, orjson.dumps({**GOOD, "readings": {"pm25": "broken", "state": "on"}}), types)
    assert line.split(" ")[1] == 'pm25_string="broken",state="on",seq=4i'
    line, *_ = to_line(TOPIC, orjson.dumps({**GOOD, "readings": {"pm25": 3, "state": True}}), types)
    assert line.split(" ")[1] == "pm25=3.0,state_boolean=true,seq=4i"  # `state` was first seen as a string
    assert types.conflicts == 2
    assert types.of("air_quality") == {"pm25": "float", "pm25_string": "string", "state": "string", "state_boolean": "boolean"}


def test_a_refused_message_teaches_no_type() -> None:
    types = FieldTypes()
    with pytest.raises(BadPayload):
        to_line(TOPIC, orjson.dumps({**GOOD, "readings": {"x": "evil", "y": None}}), types)
    line, *_ = to_line(TOPIC, orjson.dumps({**GOOD, "readings": {"x": 1}}), types)
    assert " x=1.0," in line and types.conflicts == 0


def test_a_typed_name_that_is_taken_refuses_only_that_message() -> None:
    types = FieldTypes(declared={"air_quality": {"x": "float", "x_string": "float"}})
    with pytest.raises(BadPayload, match="'x_string' cannot take it"):
        to_line(TOPIC, orjson.dumps({**GOOD, "readings": {"x": "text"}}), types)
    with pytest.raises(BadPayload, match="'x_boolean' cannot take it"):
        to_line(TOPIC, orjson.dumps({**GOOD, "readings": {"x": True, "x_boolean": False}}), types)
    line, *_ = to_line(TOPIC, orjson.dumps({**GOOD, "readings": {"x": 2}}), types)
    assert " x=2.0," in line and types.conflicts == 0
