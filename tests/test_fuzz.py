"""Untrusted input, fuzzed: the bridge's payload parser and the scenario loader never crash, and no
payload turns into more than one point."""

from __future__ import annotations

import tempfile
import unicodedata
from pathlib import Path

import orjson
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Pipeline
from simulator.ingest.fieldtypes import FieldTypes
from simulator.ingest.lineprotocol import BadPayload, to_line
from simulator.scenario import ScenarioError, load_scenario

TOPIC = "yangquan/city/air_quality/aq-0001"
NASTY = st.sampled_from([",", " ", "=", '"', "\\", "\n", "\r", "'", "#", "\t", "ü", "💡", "\x00", "i", "t", "\x0b", "\x1c", "\x85", "\u2028", "\u2029"])
TEXT = st.lists(st.one_of(NASTY, st.characters(exclude_categories=["Cs"])), max_size=12).map("".join)  # JSON text is valid UTF-8
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False), TEXT)
JSON = st.recursive(SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)), max_leaves=8)

NAME = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,10}", fullmatch=True)
# A valid name with a nasty end or start: `$` matches before a final newline, so these get through a
# check that is not a full match.
NEAR_NAME = st.one_of(NAME, st.tuples(NAME, NASTY).map("".join), st.tuples(NASTY, NAME).map("".join), st.sampled_from(["time", "seq", "device_id", "_x", "x"]))
NEAR_VALID = st.fixed_dictionaries(
    {
        "device_id": st.just("aq-0001"),
        "type": st.just("air_quality"),
        "ts": st.integers(1_700_000_000_000, 1_800_000_000_000),
        "seq": st.integers(0, 2**40),
        "tags": st.dictionaries(NAME, TEXT, max_size=4),
        "readings": st.dictionaries(NAME, SCALAR, min_size=1, max_size=5),
    }
)
NEAR_NAMES = NEAR_VALID.flatmap(
    lambda payload: st.fixed_dictionaries(
        {**{key: st.just(value) for key, value in payload.items()}, "tags": st.dictionaries(NEAR_NAME, TEXT, max_size=3), "readings": st.dictionaries(NEAR_NAME, SCALAR, min_size=1, max_size=4)}
    )
)
WILD = st.fixed_dictionaries(
    {
        "device_id": st.one_of(st.just("aq-0001"), TEXT),
        "type": st.one_of(st.just("air_quality"), TEXT),
        "ts": st.one_of(st.integers(1_700_000_000_000, 1_800_000_000_000), SCALAR),
        "seq": st.one_of(st.integers(0, 2**40), SCALAR),
        "tags": st.one_of(st.dictionaries(TEXT, TEXT, max_size=4), JSON),
        "readings": st.one_of(st.dictionaries(TEXT, SCALAR, min_size=1, max_size=5), JSON),
    }
)
ACCEPTED: list[str] = []
# One map for the whole run, so fuzzed values also meet fields fixed as another type (typed names).
TYPES = FieldTypes(declared={"air_quality": {"x": "float", "x_string": "float", "state": "string"}})


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(NEAR_VALID, NEAR_NAMES, WILD), st.booleans())
def test_parser_refuses_or_yields_exactly_one_line(payload: dict, typed: bool) -> None:
    try:
        line, *_ = to_line(TOPIC, orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS), TYPES if typed else None)
    except BadPayload:
        return
    assert "\n" not in line and "\r" not in line
    head = line.split(" ", 1)[0]  # measurement and tags: one identifier, no control characters
    assert not any(unicodedata.category(char) in ("Cc", "Zl", "Zp") for char in head)
    ACCEPTED.append(line)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300))
def test_parser_survives_arbitrary_bytes(raw: bytes) -> None:
    try:
        to_line(TOPIC, raw)
    except BadPayload:
        pass


def test_every_accepted_fuzzed_line_is_exactly_one_point_in_influxdb(pipeline: Pipeline) -> None:
    if not ACCEPTED:  # run alone (-k): fuzz first
        test_parser_refuses_or_yields_exactly_one_line()
    assert len(ACCEPTED) > 100
    # Each accepted line in a measurement of its own (fuzzed fields may clash in type across lines),
    # so exactly one stored point per measurement proves that no payload injected another.
    lines = [f"fuzz{n}" + line.removeprefix("air_quality") for n, line in enumerate(ACCEPTED)]
    response = requests.post(f"{pipeline.influx_url}/write", params={"db": pipeline.database, "precision": "ms"}, data="\n".join(lines).encode(), timeout=30)
    assert response.status_code == 204, response.text[:500]
    series = pipeline.query('SELECT count("seq") FROM /^fuzz/')
    assert len(series) == len(lines)
    assert all(s["values"][0][1] == 1 for s in series)


YAML_BITS = st.sampled_from(
    ["name: x\n", "duration: 1h\n", "duration: -1\n", "fleets:\n", "  - type: air_quality\n", "    count: 2\n", "    count: [1]\n",
     "speed: 0\n", "mqtt: {qos: 3}\n", "faults:\n", "  - {kind: partition, fleet: aq, at: 1m, duration: 1m}\n", "  - kind: nope\n",
     ": :\n", "- - -\n", "[\n", "{a: 1}\n", "&a [*a]\n", "start: yesterday\n", "seed: -1\n", "\t\n", "'\n", "~\n"]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.lists(YAML_BITS, max_size=10).map("".join), st.text(max_size=200)))
def test_scenario_loader_only_ever_raises_scenario_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load_scenario(path)
        except ScenarioError as error:
            assert error.problems and all(problem.startswith(str(path)) for problem in error.problems)
