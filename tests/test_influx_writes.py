"""Batch writes on the client's own keep-alive connection (simulator/influx.py, BatchPoster): what they
store, exactly, across an InfluxDB restart (the kept-alive connection dies with it), with a refused
point among them, and that a proxy in the environment keeps them on requests."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator import stack
from simulator.influx import InfluxClient

DATABASE = "writes"


def points(first: int, count: int) -> list[str]:
    return [f"probe,device_id=d{n % 7} level={n * 0.5},seq={n}i {1_768_320_000_000 + n}" for n in range(first, first + count)]


def stored(client: InfluxClient) -> int:
    series = client.query('SELECT count("level") FROM "probe"')
    return int(series[0]["values"][0][1]) if series else 0


def test_batches_survive_an_influxdb_restart_between_them(tmp_path: Path) -> None:
    port = stack.free_port()
    influx = stack.start_influxdb(tmp_path / "influx", port, database=DATABASE)
    client = InfluxClient(influx.url, DATABASE)
    try:
        assert client.batches is not None  # plain http, no proxy: the client's own connection
        assert client.write(points(0, 300)) == []
        assert client.write(points(300, 300)) == []
        assert stored(client) == 600
        influx.stop()
        influx = stack.start_influxdb(tmp_path / "influx", port, database=DATABASE)
        # The kept-alive connection died with the old server: the write goes again on a new one, no retry counted.
        assert client.write(points(600, 300)) == []
        assert client.stats.retries == 0
        assert client.stats.batches == 3 and client.stats.points == 900
        assert stored(client) == 900
    finally:
        client.close()
        influx.stop()


def test_a_refused_point_leaves_its_neighbours_stored(influxdb: stack.Service) -> None:
    client = InfluxClient(influxdb.url, "writes_refused")
    try:
        client.create_database()
        assert client.write(points(0, 10)) == []
        batch = points(10, 20)
        bad = batch[5].replace("level=", 'level="high",x=')  # a string where a float is stored
        batch[5] = bad
        refused = client.write(batch)
        assert [line for line, _ in refused] == [bad]
        assert "field type conflict" in refused[0][1]
        assert stored(client) == 29
    finally:
        client.close()


def test_a_proxy_in_the_environment_keeps_the_writes_on_requests(monkeypatch: pytest.MonkeyPatch, influxdb: stack.Service) -> None:
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.2:9")
    assert InfluxClient(influxdb.url, DATABASE).batches is None  # requests sends them through the proxy
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert InfluxClient(influxdb.url, DATABASE).batches is not None
