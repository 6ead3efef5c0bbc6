"""Dead letters keep what was sent and nothing is dropped in silence (issue 20, part 7), against real
servers: a reading InfluxDB would drop is refused with a reason, and a spooled point InfluxDB refuses
is recorded as `(spool)` with its line."""

from __future__ import annotations

import base64
import time

import orjson
import requests

from conftest import Pipeline, QUEUED_IDLE
from publishing import TS, dead_letters, message, publish, topic


def test_a_reading_named_time_is_dead_lettered_not_dropped(pipeline: Pipeline) -> None:
    bridge = pipeline.start_bridge("--exit-when-idle", QUEUED_IDLE)
    sent = [message(0, {"time": 5, "pm25": 1.0}), message(1, {"pm25": 2.0}, tags={"time": "noon"}), message(2, {"pm25": 3.0})]
    publish(pipeline, [(topic(pipeline), payload) for payload in sent])
    out, err = bridge.communicate(timeout=60)
    assert bridge.returncode == 0, err
    assert [row[1:] for row in pipeline.query('SELECT "pm25", "seq" FROM "air_quality"')[0]["values"]] == [[3.0, 2]]
    letters = dead_letters(pipeline)
    assert [letter["topic"] for letter in letters] == [topic(pipeline)] * 2
    assert [orjson.loads(base64.b64decode(letter["payload_base64"])) for letter in letters] == sent[:2]
    assert [letter["reason"] for letter in letters] == ["reading name 'time' is not allowed", "tag name 'time' is not allowed"]


def test_a_point_influxdb_refuses_is_dead_lettered_as_the_message_it_came_from(pipeline: Pipeline) -> None:
    stack_query(pipeline, f'ALTER RETENTION POLICY "autogen" ON "{pipeline.database}" DURATION 1h SHARD DURATION 1h')
    bridge = pipeline.start_bridge("--exit-when-idle", QUEUED_IDLE)
    now = int(time.time() * 1000)
    sent = [message(0, {"pm25": 1.0}, ts=now), message(1, {"pm25": 2.0}, ts=TS), message(2, {"pm25": 3.0}, ts=now + 1000)]  # TS: beyond the 1 h
    publish(pipeline, [(topic(pipeline), payload) for payload in sent])
    out, err = bridge.communicate(timeout=60)
    assert bridge.returncode == 0, err
    assert pipeline.count("air_quality") == 2
    letters = dead_letters(pipeline)
    assert len(letters) == 1
    assert letters[0]["topic"] == topic(pipeline)
    assert orjson.loads(base64.b64decode(letters[0]["payload_base64"])) == sent[1]
    assert letters[0]["reason"] == "InfluxDB refused the point: partial write: points beyond retention policy dropped=1"


def stack_query(pipeline: Pipeline, q: str) -> None:
    response = requests.post(f"{pipeline.influx_url}/query", params={"q": q}, timeout=10)
    assert response.status_code == 200 and "error" not in response.text, response.text


def test_a_spooled_point_influxdb_refuses_is_recorded_as_spool_with_its_line(pipeline: Pipeline) -> None:
    spool = pipeline.tmp / "spool" / pipeline.bridge_id
    spool.mkdir(parents=True)
    lines = [
        f"air_quality,device_id=aq-0001 pm25=1.0,seq=0i {TS}",
        f"air_quality,device_id=aq-0001 pm25=oops,seq=1i {TS + 1000}",  # no such value: InfluxDB refuses it
        f'air_quality,device_id=aq-0001 note="a\u2028b\x1cc",seq=2i {TS + 2000}',  # one point, not three
    ]
    (spool / f"000000000000-{len(lines)}.lp").write_text("\n".join(lines), encoding="utf-8")
    bridge = pipeline.start_bridge("--exit-when-idle", QUEUED_IDLE)
    out, err = bridge.communicate(timeout=60)
    assert bridge.returncode == 0, err
    assert pipeline.count("air_quality") == 2
    assert pipeline.query('SELECT "note" FROM "air_quality" WHERE "seq" = 2')[0]["values"][0][1] == "a\u2028b\x1cc"
    letters = dead_letters(pipeline)
    assert len(letters) == 1
    assert letters[0]["topic"] == "(spool)"
    assert base64.b64decode(letters[0]["payload_base64"]).decode() == lines[1]
    assert letters[0]["reason"].startswith("InfluxDB refused the point:")
    assert list(spool.glob("*.lp")) == []  # the segment is gone once written
