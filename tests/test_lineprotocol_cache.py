"""to_line's per-topic cache: a message like the last accepted one on its topic takes the cached head
and field template; every way a message can differ from it gives the reference's line or refusal."""

from __future__ import annotations

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
