"""No payload can write a point of its own through the bridge into real InfluxDB (issue 20, part 1):
names that end in a newline, control characters in tags, names InfluxDB reserves."""

from __future__ import annotations

import base64

import orjson

from conftest import Pipeline, QUEUED_IDLE
from publishing import dead_letters, message, publish, topic

REPRODUCE = b'{"device_id":"aq-0001","type":"air_quality","ts":1768341600000,"seq":0,"tags":{"t\\n":"evil"},"readings":{"pm25":1}}'


def test_a_newline_after_a_tag_key_is_dead_lettered_and_stores_nothing(pipeline: Pipeline) -> None:
    bridge = pipeline.start_bridge("--exit-when-idle", QUEUED_IDLE)
    attempts = [
        REPRODUCE,
        orjson.dumps(message(1, {"pm25\n": 1, "pm10": 2})),
        orjson.dumps(message(2, {"pm25": 1}, tags={"district\n": "x", "road": "y"})),
        orjson.dumps(message(3, {"pm25": 1}, tags={"district": "a\u2028b"})),
        orjson.dumps(message(4, {"pm25": 1}, tags={"district": "a\rb"})),
        orjson.dumps(message(5, {"_pm25": 1})),
        orjson.dumps(message(6, {"pm25": 1}, tags={"_measurement": "x"})),
    ]
    good = [orjson.dumps(message(100 + n, {"pm25": 10.0 + n})) for n in range(3)]
    publish(pipeline, [(topic(pipeline), raw) for raw in [good[0], *attempts, good[1], good[2]]])
    out, err = bridge.communicate(timeout=60)
    assert bridge.returncode == 0, err

    measurements = pipeline.query("SHOW MEASUREMENTS")[0]["values"]
    assert measurements == [["air_quality"], ["pipeline"]]
    assert pipeline.count("air_quality") == 3
    assert [row[1] for row in pipeline.query('SELECT "pm25" FROM "air_quality"')[0]["values"]] == [10.0, 11.0, 12.0]
    keys = {row[0] for row in pipeline.query('SHOW TAG KEYS FROM "air_quality"')[0]["values"]}
    assert keys == {"device_id"}
    fields = {row[0] for row in pipeline.query('SHOW FIELD KEYS FROM "air_quality"')[0]["values"]}
    assert fields == {"pm25", "seq"}

    letters = dead_letters(pipeline)
    assert [base64.b64decode(letter["payload_base64"]) for letter in letters] == attempts
    assert all(letter["topic"] == topic(pipeline) for letter in letters)
    assert letters[0]["reason"] == "tag name 't\\n' is not allowed"
    assert f"dead letters {len(attempts)}" in out
