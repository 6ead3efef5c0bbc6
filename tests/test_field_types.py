"""One message can never turn a field away from the others (issue 20, part 2), against real servers:
a value of another type than its field's is stored under `{name}_{kind}`, counted, never refused."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from conftest import Pipeline, QUEUED_IDLE, RUN_IDLE
from publishing import TS, dead_letters, message, publish, topic
from simulator.ingest.bridge import Bridge, BridgeSettings, stored_field_types
from simulator.errors import UsageError
from simulator.ingest.fieldtypes import FieldTypes, LookupFailed, read_declared
from simulator.influx import InfluxClient

GOOD = 600
WEEK_MS = 7 * 24 * 3600 * 1000  # the default shard duration: a field's type is fixed per shard


def first_a_string_then_numbers(pipeline: Pipeline) -> list[tuple[str, dict]]:
    return [(topic(pipeline), message(0, {"x": "sensor fault", "pm25": 1.0}))] + [
        (topic(pipeline), message(seq, {"x": seq / 10, "pm25": 1.0})) for seq in range(1, GOOD + 1)
    ]


def field_types(pipeline: Pipeline) -> dict[str, str]:
    return {name: kind for name, kind in pipeline.query('SHOW FIELD KEYS FROM "air_quality"')[0]["values"]}


def write_directly(pipeline: Pipeline, line: str) -> None:
    response = requests.post(f"{pipeline.influx_url}/write", params={"db": pipeline.database, "precision": "ms"}, data=line.encode(), timeout=10)
    assert response.status_code == 204, response.text


def test_undeclared_field_first_seen_as_a_string_keeps_every_later_number(pipeline: Pipeline) -> None:
    bridge = pipeline.start_bridge("--exit-when-idle", QUEUED_IDLE)
    publish(pipeline, first_a_string_then_numbers(pipeline))
    out, err = bridge.communicate(timeout=120)
    assert bridge.returncode == 0, err
    assert f"received {GOOD + 1}, written {GOOD + 1}, dead letters 0" in out
    assert pipeline.count("air_quality") == GOOD + 1
    assert pipeline.count("air_quality", "x") == 1  # the first value fixed `x` as a string
    assert pipeline.count("air_quality", "x_float") == GOOD
    assert field_types(pipeline) == {"x": "string", "x_float": "float", "pm25": "float", "seq": "integer"}
    assert "air_quality.x is stored as string; float values go to x_float (logged once)" in err
    assert err.count("logged once") == 1
    stats = pipeline.query('SELECT last("type_conflicts") FROM "pipeline" WHERE "component" = \'bridge\'')
    assert stats[0]["values"][0][1] == GOOD


def test_declared_numeric_field_sends_the_one_string_to_its_typed_name(pipeline: Pipeline) -> None:
    settings = BridgeSettings(
        mqtt_url=pipeline.mqtt_url, topic_prefix=pipeline.prefix, client_id=pipeline.bridge_id, batch_interval=0.2,
        spool_dir=pipeline.tmp / "spool", dead_letter_path=pipeline.tmp / "dead-letters.jsonl",
    )  # fmt: skip
    writer = InfluxClient(pipeline.influx_url, pipeline.database)
    logged: list[str] = []
    declared = FieldTypes(declared={"air_quality": {"x": "float", "pm25": "float"}}, lookup=lambda m: stored_field_types(writer, m), log=logged.append)
    bridge = Bridge(settings, writer, log=logged.append, field_types=declared)
    bridge.start()
    publish(pipeline, first_a_string_then_numbers(pipeline))
    bridge.run(exit_when_idle=2)
    assert (bridge.counts.received, bridge.counts.written, bridge.counts.dead_letters) == (GOOD + 1, GOOD + 1, 0)
    assert pipeline.count("air_quality", "x") == GOOD
    assert pipeline.count("air_quality", "x_string") == 1
    assert field_types(pipeline) == {"x": "float", "x_string": "string", "pm25": "float", "seq": "integer"}
    assert declared.conflicts == 1 and "bridge: air_quality.x is stored as float; string values go to x_string (logged once)" in logged


ATTACKED = 100  # good air_quality messages after the first one, whose pm25 is a string

# --declared-types → (points with pm25, points with its typed name, the typed name, type conflicts)
DECLARATIONS = {
    "shipped by default": ((), ATTACKED, 1, "pm25_string", 1),
    "a file": (("--declared-types", "{tmp}/types.json"), ATTACKED, 1, "pm25_string", 1),
    "none": (("--declared-types", "none"), 1, ATTACKED, "pm25_float", ATTACKED),
}


@pytest.mark.parametrize(("flags", "kept", "typed", "typed_name", "conflicts"), DECLARATIONS.values(), ids=DECLARATIONS.keys())
def test_a_string_first_cannot_take_a_declared_reading_from_its_device_type(
    pipeline: Pipeline, flags: tuple[str, ...], kept: int, typed: int, typed_name: str, conflicts: int
) -> None:
    """Issue 20's attack on a fresh database: the first pm25 is "high". With the shipped declarations
    (or a file declaring pm25 a float) it goes to pm25_string and the readings keep pm25; without any,
    the first value decides, as before."""
    (pipeline.tmp / "types.json").write_text('{"air_quality": {"pm25": "float"}}')
    bridge = pipeline.start_bridge("--exit-when-idle", QUEUED_IDLE, *(flag.replace("{tmp}", str(pipeline.tmp)) for flag in flags))
    attack = [(topic(pipeline), message(0, {"pm25": "high"}))]
    publish(pipeline, attack + [(topic(pipeline), message(seq, {"pm25": 20.0 + seq / 10})) for seq in range(1, ATTACKED + 1)])
    out, err = bridge.communicate(timeout=120)
    assert bridge.returncode == 0, err
    assert f"received {ATTACKED + 1}, written {ATTACKED + 1}, dead letters 0" in out
    assert (pipeline.count("air_quality", "pm25"), pipeline.count("air_quality", typed_name)) == (kept, typed)
    stored = "float" if kept == ATTACKED else "string"
    assert field_types(pipeline) == {"pm25": stored, typed_name: typed_name.removeprefix("pm25_"), "seq": "integer"}
    stats = pipeline.query('SELECT last("type_conflicts") FROM "pipeline" WHERE "component" = \'bridge\'')
    assert stats[0]["values"][0][1] == conflicts


def test_the_type_influxdb_already_holds_wins_over_the_first_value_of_a_new_run(pipeline: Pipeline) -> None:
    write_directly(pipeline, f'air_quality,device_id=aq-0000 x="from an earlier run" {TS - 1000}')
    bridge = pipeline.start_bridge("--exit-when-idle", QUEUED_IDLE)
    publish(pipeline, [(topic(pipeline), message(seq, {"x": float(seq)})) for seq in range(5)])
    out, err = bridge.communicate(timeout=60)
    assert bridge.returncode == 0, err
    assert "dead letters 0" in out and not dead_letters(pipeline)
    assert pipeline.count("air_quality", "x_float") == 5


def test_a_field_type_conflict_influxdb_reports_costs_no_message(pipeline: Pipeline) -> None:
    bridge = pipeline.start_bridge("--exit-when-idle", RUN_IDLE)
    publish(pipeline, [(topic(pipeline), message(0, {"x": 0.5}))])  # the bridge learns x as a float
    deadline = time.monotonic() + 20
    while pipeline.count("air_quality") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    later = TS + 3 * WEEK_MS
    write_directly(pipeline, f'air_quality,device_id=aq-0009 x="another writer" {later}')  # x is a string in that shard
    batch = [message(seq, {"x": seq / 2}) for seq in range(1, 5)] + [message(5, {"x": 5.0}, ts=later + 1000)] + [message(seq, {"x": seq / 2}) for seq in range(6, 10)]
    publish(pipeline, [(topic(pipeline), payload) for payload in batch])
    out, err = bridge.communicate(timeout=60)
    assert bridge.returncode == 0, err
    assert "received 10, written 10, dead letters 0" in out
    assert not dead_letters(pipeline)
    assert pipeline.count("air_quality") == 10  # `seq` is only in the bridge's points
    # InfluxDB refused 5.0 under `x` in the later shard: the bridge took the type it named and stored it as x_float.
    assert pipeline.query(f'SELECT "x_float", "seq" FROM "air_quality" WHERE time >= {later}ms')[0]["values"][0][1:] == [5.0, 5]


def test_types_influxdb_holds_win_and_a_failed_lookup_is_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[list[tuple[str, str]] | None] = [None, [("x", "string"), ("x", "float"), ("y", "integer")]]

    def lookup(measurement: str) -> list[tuple[str, str]]:
        answer = answers.pop(0)
        if answer is None:
            raise LookupFailed("connection refused")
        return answer

    logged: list[str] = []
    types = FieldTypes(declared={"m": {"x": "float"}}, lookup=lookup, log=logged.append)
    assert types.of("m") == {"x": "float"}  # InfluxDB unreachable: the declared types meanwhile
    assert logged == ["bridge: cannot ask InfluxDB the field types of 'm' (connection refused); using declared and first-seen types"]
    assert types.of("m") == {"x": "float"}  # not asked again before LOOKUP_RETRY_S
    monkeypatch.setattr(types, "next_lookup", 0.0)
    assert types.of("m") == {"x": "float", "y": "integer"}  # x holds float in one shard: the declared type stays
    assert types.of("m") == {"x": "float", "y": "integer"} and not answers  # asked once, then cached


def test_a_declared_types_file_with_a_wrong_kind_is_one_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "types.json"
    path.write_text('{"air_quality": {"pm25": "float", "state": "text"}}')
    with pytest.raises(UsageError, match=r"types.json: air_quality.state: kind 'text' is not one of float, string, boolean$"):
        read_declared(path)
    path.write_text('{"air_quality": {"pm25": "float"}}')
    assert read_declared(path) == {"air_quality": {"pm25": "float"}}
    path.write_text("[1]")
    with pytest.raises(UsageError, match="expected an object"):
        read_declared(path)
