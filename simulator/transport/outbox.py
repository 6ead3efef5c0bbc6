"""Messages held while they cannot be sent: in memory up to a bound, then in a file, in order.

Used by a publisher cut off from its broker (a real outage or a scenario's `partition` fault). The
oldest messages stay in memory; once memory is full, newer ones go to an unnamed temporary file
(removed by the OS even after a crash) until everything spilled has been taken back out. Taking
reads the file back in chunks of the memory bound, so memory stays bounded while draining too.
"""

from __future__ import annotations

import struct
import tempfile
from collections import deque
from collections.abc import Iterator
from typing import BinaryIO

# A record in the file: topic length, payload length, then both as bytes (payloads may be any bytes).
HEADER = struct.Struct(">HI")


class Outbox:
    def __init__(self, memory_bound: int, directory: str | None = None) -> None:
        self.memory_bound = memory_bound
        self.directory = directory  # None: the system's temporary directory
        self.memory: deque[tuple[str, bytes]] = deque()
        self.spill: BinaryIO | None = None
        self.unread = 0  # messages in the file not yet taken back
        self.read_offset = 0
        self.spilled_total = 0

    def put(self, topic: str, payload: bytes) -> None:
        # Once anything is in the file, everything newer must go there too, or order would break.
        if self.spill is None and len(self.memory) < self.memory_bound:
            self.memory.append((topic, payload))
            return
        if self.spill is None:
            self.spill = tempfile.TemporaryFile(prefix="iotsim-outbox-", dir=self.directory)
            self.read_offset = 0
        self.spill.seek(0, 2)
        encoded = topic.encode()
        self.spill.write(HEADER.pack(len(encoded), len(payload)) + encoded + payload)
        self.unread += 1
        self.spilled_total += 1

    def take(self) -> tuple[str, bytes] | None:
        """The oldest message held, or None when empty."""
        if not self.memory and self.unread:
            self._read_back()
        return self.memory.popleft() if self.memory else None

    def drain(self) -> Iterator[tuple[str, bytes]]:
        """Everything held, oldest first."""
        while (message := self.take()) is not None:
            yield message

    def __len__(self) -> int:
        return len(self.memory) + self.unread

    def _read_back(self) -> None:
        assert self.spill is not None
        self.spill.seek(self.read_offset)
        for _ in range(min(self.unread, max(self.memory_bound, 1))):
            topic_length, payload_length = HEADER.unpack(self.spill.read(HEADER.size))
            topic = self.spill.read(topic_length).decode()
            self.memory.append((topic, self.spill.read(payload_length)))
            self.unread -= 1
        self.read_offset = self.spill.tell()
        if not self.unread:
            self.spill.close()
            self.spill = None
