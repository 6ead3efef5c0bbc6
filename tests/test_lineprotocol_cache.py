"""to_line's per-topic cache: a message like the last accepted one on its topic takes the cached head
and field template; every way a message can differ from it gives the reference's line or refusal."""

from __future__ import annotations

import random
import tracemalloc

import orjson
import pytest
from test_lineprotocol_differential import outcome, reference_to_line

from simulator.ingest import lineprotocol
from simulator.ingest.fieldtypes import FieldTypes
from simulator.ingest.lineprotocol import TOPIC_CACHE_LIMIT, to_line
from simulator.telemetry import MAX_TEXT

TOPIC = "yangquan/city/air_quality/aq-0001"
BASE = {
    "device_id": "aq-0001", "type": "air_quality", "ts": 1768320000000, "seq": 3,
    "tags": {"district": "Chengqu", "lat": "37.9", "lon": "113.5"},
    "readings": {"pm25": 152.4, "aqi": 284, "aqi_category": "heavily_polluted", "ok": True},
}  # fmt: skip


def changed(**fields: object) -> bytes:
    payload = {**BASE, **fields}
    return orjson.dumps({key: value for key, value in payload.items() if value is not None})


VARIANTS = [
    changed(),
    changed(ts=1768320000001, seq=4),
    changed(readings={"pm25": 1e300, "aqi": -7, "aqi_category": "", "ok": False}),
    changed(readings={"pm25": 1.0, "aqi": 2**53, "aqi_category": "x", "ok": True}),  # beyond 2**53: repr(float())
    changed(readings={"pm25": 1.0, "aqi": 1, "aqi_category": 'say "hi"\n', "ok": True}),  # escaped
    changed(readings={"pm25": 1.0, "aqi": 1, "aqi_category": "x" * (MAX_TEXT + 1), "ok": True}),  # refused
    changed(readings={"pm25": "high", "aqi": 1, "aqi_category": "x", "ok": True}),  # another type: a typed name
    changed(readings={"aqi": 1, "pm25": 1.0, "aqi_category": "x", "ok": True}),  # another order
    changed(readings={"pm25": 1.0, "aqi": 1, "aqi_category": "x", "ok": True, "so2": 2.5}),
    changed(readings={"pm25": 1.0, "seq": 1.0}),
    changed(readings={}),
    changed(readings=None),
    changed(tags={"district": "Chengqu", "lat": "37.9", "lon": "113.6"}),
    changed(tags={"district": "Cheng qu,=x", "lat": "37.9", "lon": "113.5"}),
    changed(tags={"district": "a\nb"}),
    changed(tags={"pm25": "x"}),
    changed(tags=None),
    changed(tags={"district": "100% sure"}),
    changed(device_id="aq-0002"),
    changed(type="meter"),
    changed(ts=True),
    changed(ts=17683200),
    changed(seq=-1),
    changed(seq=None),
    changed(),
]


@pytest.mark.parametrize("with_types", [True, False])
def test_every_variant_on_a_cached_topic_gives_the_reference_s_outcome(with_types: bool) -> None:
    ours, theirs = (FieldTypes(), FieldTypes()) if with_types else (None, None)
    for _ in range(2):  # the second round meets each variant cached after the one before it
        for previous, raw in zip([VARIANTS[0], *VARIANTS], VARIANTS):
            for payload in (previous, raw, raw):  # cached from the one before, then from itself
                assert outcome(to_line, TOPIC, payload, ours) == outcome(reference_to_line, TOPIC, payload, theirs), payload
                if with_types:
                    assert ours.known == theirs.known and ours.conflicts == theirs.conflicts
    assert TOPIC in lineprotocol._topics


def test_a_field_type_that_changes_is_seen_by_cached_topics() -> None:
    types = FieldTypes()
    first = to_line(TOPIC, changed(), types)[0]
    assert to_line(TOPIC, changed(), types)[0] == first  # from the cache
    types.holds("air_quality", "pm25", "string")  # InfluxDB said it holds pm25 as a string (a refused write)
    assert to_line(TOPIC, changed(), types)[0] == first.replace("pm25=152.4", "pm25_float=152.4")


def test_the_topic_cache_stays_bounded() -> None:
    lineprotocol._topics.clear()
    for i in range(TOPIC_CACHE_LIMIT + 50):
        payload = orjson.dumps({"device_id": f"d{i}", "type": "events", "ts": 1768320000000, "seq": 0, "readings": {"x": 1.0}})
        assert to_line(f"p/events/d{i}", payload)[0] == f"events,device_id=d{i} x=1.0,seq=0i 1768320000000"
    assert len(lineprotocol._topics) == TOPIC_CACHE_LIMIT
    last = TOPIC_CACHE_LIMIT + 49
    assert to_line(f"p/events/d{last}", payload)[0] == f"events,device_id=d{last} x=1.0,seq=0i 1768320000000"  # past the bound: the full way


@pytest.mark.parametrize(
    ("filler", "tags", "cached"),
    [
        (60_000, {f"t{i:02d}": "v" * 200 for i in range(60)}, False),  # a 64 KB topic, a 16 KB payload's worth of tags
        (90, {f"t{i}" + "k" * 8: "v" * 20 for i in range(8)}, True),  # about as large as the cache still takes
        (100, {f"t{i:02d}" + "k" * 27: "" for i in range(8)}, True),  # tag names that are not in the line
    ],
)
def test_hostile_topics_and_tags_cannot_make_the_topic_cache_large(filler: int, tags: dict[str, str], cached: bool) -> None:
    """A publisher under the prefix may use topics of 64 KB and payloads full of long tags: accepted,
    but the cache keeps no more per topic than a device's own messages need (its bound of entries
    times that is the most it can hold)."""
    lineprotocol._topics.clear()
    count = 200
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            device_id = f"d{i}"
            topic = f"p/{'x' * filler}{i}/air_quality/{device_id}"  # a 3.1.1 topic may be 65,535 bytes
            payload = orjson.dumps({"device_id": device_id, "type": "air_quality", "ts": 1768320000000, "seq": 0, "tags": tags, "readings": {"x": 1.0}})
            line = to_line(topic, payload)[0]
            assert line == to_line(topic, payload)[0] == reference_to_line(topic, payload)[0]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(lineprotocol._topics) == (count if cached else 0)
    assert held / count < 2048, f"{held / count:.0f} bytes a topic, at most {TOPIC_CACHE_LIMIT} topics"


def mutated(rng: random.Random, payload: dict) -> dict:
    """The last payload on a topic with one thing changed, as a device's next message (or a hostile one) might."""
    payload = orjson.loads(orjson.dumps(payload))
    readings, tags = payload["readings"], payload["tags"]
    choice = rng.randrange(12)
    if choice < 4:
        payload["ts"], payload["seq"] = payload["ts"] + 1000, payload["seq"] + 1  # the usual next message
    elif choice < 8 and readings:
        name = rng.choice(list(readings))
        readings[name] = rng.choice(
            (rng.uniform(-1e6, 1e6), -0.0, 1e300, 5e-324, 7, -(2**53) + 1, 2**53, 2**63 - 1, True, False, "", "ok", 'q"', "a\\b", "l\n", "r\r", "%s %d", "x" * MAX_TEXT, "x" * (MAX_TEXT + 1), None)
        )
    elif choice == 8:
        readings[rng.choice(("so2", "no2", "seq", "pm25_string", "pm25_float", "district", "ok"))] = rng.choice((1.0, "s", True))
    elif choice == 9 and readings:
        del readings[rng.choice(list(readings))]
    elif choice == 10:
        tags[rng.choice(("district", "lat", "zone"))] = rng.choice(("Chengqu", "", "a b", "k=v", "a,b", "100%"))
    else:
        payload["device_id"] = rng.choice(("aq-0001", "aq-0002", "aq 0001", "aq,1"))
    return payload


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_topic_s_next_messages_differing_in_one_thing_give_the_reference_s_outcome(seed: int) -> None:
    """Each message is the last accepted one on its topic with one thing changed, so nearly every one meets a
    cached entry; now and then InfluxDB is said to hold a field as another type. Line or refusal, the
    known types and conflicts stay the reference's."""
    rng = random.Random(seed)
    ours, theirs = FieldTypes(declared={"air_quality": {"pm25": "float"}}), FieldTypes(declared={"air_quality": {"pm25": "float"}})
    topics = {f"yangquan/city/air_quality/aq-000{i}": {**BASE, "device_id": f"aq-000{i}"} for i in (1, 2)}
    topics["yangquan/city/air_quality/aq 0001"] = {**BASE, "device_id": "aq 0001"}
    hits = accepted = 0
    for _ in range(4000):
        topic = rng.choice(list(topics))
        payload = mutated(rng, topics[topic])
        raw = orjson.dumps(payload)
        hits += topic in lineprotocol._topics
        expected = outcome(reference_to_line, topic, raw, theirs)
        assert outcome(to_line, topic, raw, ours) == expected, (topic, raw)
        if expected[0] != "refused":
            topics[topic] = payload  # the next one differs from the last accepted
            accepted += 1
        assert outcome(to_line, topic, raw, None) == outcome(reference_to_line, topic, raw, None), (topic, raw)
        assert ours.known == theirs.known and ours.conflicts == theirs.conflicts, (topic, raw)
        if rng.random() < 0.01:
            name, kind = rng.choice(list(payload["readings"]) or ["pm25"]), rng.choice(("float", "string", "boolean"))
            ours.holds("air_quality", name, kind)
            theirs.holds("air_quality", name, kind)
    assert hits > 3000 and accepted > 2000
