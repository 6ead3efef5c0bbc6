"""Dead letters: messages the bridge could not store, one JSON line each, for a person to inspect.

Each record holds the message as it came (its topic and payload) and why it was not stored: a payload
the converter refused, or a point InfluxDB refused. Only points written back from the disk spool,
which holds line protocol, are recorded with topic `(spool)` and their line as the payload.

A dead letter is on disk before its message is acknowledged. When the file cannot be written (a full
disk, a file system gone read-only) the bridge stops with a BridgeError naming the file: nothing of
the batch is acknowledged, so the broker sends it all again to the next run.
"""

from __future__ import annotations

import base64
import errno
import time
from pathlib import Path

import orjson

from simulator.errors import BridgeError
from simulator.userfiles import Refused, check_writable_file, open_for_append


class DeadLetters:
    def __init__(self, path: Path) -> None:
        """Open (append to) the file at `path`; OSError if it cannot be (the caller names the flag)."""
        self.path = path
        self.count = 0
        try:
            check_writable_file(path)  # a dangling link would create a file elsewhere
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open_for_append(path)  # non-blocking: a FIFO would block the open until a reader came
        except Refused as refused:
            raise OSError(errno.EINVAL, str(refused)) from None

    def add(self, topic: str, raw: bytes, reason: str) -> None:
        record = {
            "received_ms": int(time.time() * 1000),
            "topic": topic,
            "payload_base64": base64.b64encode(raw).decode(),
            "reason": reason,
        }
        try:
            self.file.write(orjson.dumps(record) + b"\n")  # the buffer, flushed to the file when full
        except OSError as error:
            raise self.cannot_write(error) from None
        self.count += 1

    def flush(self) -> None:
        """Called before acknowledging: a dead letter is on disk before the broker forgets it."""
        try:
            self.file.flush()
        except OSError as error:
            raise self.cannot_write(error) from None

    def close(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass  # what did not reach the file was never acknowledged: the broker sends it again

    def cannot_write(self, error: OSError) -> BridgeError:
        return BridgeError(
            f"bridge: cannot write dead letters to {self.path} ({error.strerror}); "
            "stopped taking messages, the broker keeps them: free space or pass another --dead-letters"
        )
