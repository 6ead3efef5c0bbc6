"""The bridge's disk spool on its own: durable, ordered, and picked up again after a crash."""

from __future__ import annotations

from pathlib import Path

from simulator.ingest.spool import Spool


def lines(count: int, start: int = 0) -> list[str]:
    return [f"air_quality,device_id=aq-{n:04d} pm25=35.5,seq={n}i 1768320000000" for n in range(start, start + count)]


def test_segments_come_back_oldest_first_and_the_count_follows(tmp_path: Path) -> None:
    spool = Spool(tmp_path, limit=1000)
    assert not spool and spool.oldest() is None
    spool.append(lines(3))
    spool.append(lines(2, start=3))
    assert spool.points == 5
    first = spool.oldest()
    assert first is not None and first.lines() == lines(3)
    spool.remove_oldest()
    second = spool.oldest()
    assert second is not None and second.lines() == lines(2, start=3)
    spool.remove_oldest()
    assert not spool and spool.points == 0 and list(tmp_path.iterdir()) == []


def test_a_new_spool_on_the_same_directory_finds_what_a_crashed_one_left(tmp_path: Path) -> None:
    crashed = Spool(tmp_path, limit=1000)
    for n in range(12):  # more than 10: file names must sort numerically
        crashed.append(lines(1, start=n))
    (tmp_path / "000000000012-1.tmp").write_text("half a write, never acknowledged")
    spool = Spool(tmp_path, limit=1000)
    assert spool.points == 12
    assert not list(tmp_path.glob("*.tmp"))
    seen = []
    while (segment := spool.oldest()) is not None:
        seen += segment.lines()
        spool.remove_oldest()
    assert seen == lines(12)
    spool.append(lines(1, start=99))  # numbering goes on after the highest number found
    assert spool.oldest() is not None and spool.oldest().path.name == "000000000012-1.lp"


def test_the_limit_is_in_points(tmp_path: Path) -> None:
    spool = Spool(tmp_path, limit=5)
    spool.append(lines(4))
    assert spool.has_room()
    spool.append(lines(1))
    assert not spool.has_room()
