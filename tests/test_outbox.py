"""The outbox a publisher holds messages in while cut off: bounded memory, then a file, in order."""

from __future__ import annotations

import os

import orjson
import pytest

from simulator.transport.outbox import Outbox


def messages(count: int, start: int = 0) -> list[tuple[str, bytes]]:
    return [(f"yangquan/city/air_quality/aq-{n:04d}", orjson.dumps({"n": n, "text": "ü,\n"})) for n in range(start, start + count)]


@pytest.mark.parametrize("bound", [0, 3, 100])
def test_outbox_spills_to_disk_past_its_memory_bound_and_keeps_order(bound: int) -> None:
    outbox = Outbox(memory_bound=bound)
    held = messages(20)
    for topic, payload in held:
        outbox.put(topic, payload)
    assert len(outbox) == 20
    assert len(outbox.memory) == min(bound, 20) and outbox.unread == 20 - min(bound, 20)
    assert list(outbox.drain()) == held
    assert len(outbox) == 0 and outbox.spill is None


def test_messages_put_while_draining_come_after_the_older_ones() -> None:
    outbox = Outbox(memory_bound=4)
    taken: list[tuple[str, bytes]] = []
    for topic, payload in messages(10):
        outbox.put(topic, payload)
    for _ in range(6):  # part way into the file
        message = outbox.take()
        assert message is not None
        taken.append(message)
    for topic, payload in messages(7, start=10):  # a reconnect that fails again: more are held
        outbox.put(topic, payload)
    taken.extend(outbox.drain())
    assert taken == messages(17)
    assert outbox.take() is None


def test_memory_stays_within_the_bound_while_reading_the_file_back() -> None:
    outbox = Outbox(memory_bound=5)
    for topic, payload in messages(1000):
        outbox.put(topic, payload)
    largest = 0
    while outbox.take() is not None:
        largest = max(largest, len(outbox.memory))
    assert largest <= 5


def test_any_bytes_survive_the_file_and_no_file_is_left_named(tmp_path) -> None:
    outbox = Outbox(memory_bound=0, directory=str(tmp_path))
    odd = [("t/a", b"\x00\xff\x13garbage\x07"), ("t/ü", b""), ("t/b", bytes(range(256)) * 300)]
    for topic, payload in odd:
        outbox.put(topic, payload)
    # An unnamed temporary file: nothing is left behind in the directory if the process dies.
    assert os.listdir(tmp_path) == []
    assert outbox.spill is not None and os.fstat(outbox.spill.fileno()).st_size > 256 * 300
    assert list(outbox.drain()) == odd
