"""Dead letters: messages the bridge could not store, one JSON line each, for a person to inspect.

Each record holds the message as it came (its topic and payload) and why it was not stored: a payload
the converter refused, or a point InfluxDB refused. Only points written back from the disk spool,
which holds line protocol, are recorded with topic `(spool)` and their line as the payload.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import orjson


class DeadLetters:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "ab")  # noqa: SIM115 - closed by close()

    def add(self, topic: str, raw: bytes, reason: str) -> None:
        record = {
            "received_ms": int(time.time() * 1000),
            "topic": topic,
            "payload_base64": base64.b64encode(raw).decode(),
            "reason": reason,
        }
        self.file.write(orjson.dumps(record) + b"\n")
        self.count += 1

    def flush(self) -> None:
        """Called before acknowledging: a dead letter is on disk before the broker forgets it."""
        self.file.flush()

    def close(self) -> None:
        self.file.close()
