"""Dry-run sink: one `{"topic": ..., "payload": {...}}` line per message, no broker needed."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import orjson


class JsonlWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: BinaryIO = open(path, "wb", buffering=1 << 20)  # noqa: SIM115 - closed by close()
        self.written = 0

    def __call__(self, topic: str, payload: bytes) -> None:
        self.file.write(b'{"topic":' + orjson.dumps(topic) + b',"payload":' + payload + b"}\n")
        self.written += 1

    def close(self) -> None:
        self.file.close()


def read_messages(path: Path) -> list[tuple[str, dict]]:
    """(topic, payload) of every line of a dry-run file."""
    with open(path, "rb") as file:
        return [(record["topic"], record["payload"]) for record in map(orjson.loads, file)]
