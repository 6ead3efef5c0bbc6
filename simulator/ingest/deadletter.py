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
import os
import stat
import time
from pathlib import Path
from typing import BinaryIO

import orjson

from simulator.errors import BridgeError
from simulator.userfiles import Refused, check_writable_file, kind_of


def open_for_append(path: Path) -> BinaryIO:
    """The regular file at `path` (created if missing) open for appending. Non-blocking, then checked on the
    descriptor: a FIFO put there after check_writable_file would otherwise block the open until a reader came."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as error:
        if error.errno == errno.ENXIO:  # what a non-blocking open for writing answers at a FIFO with no reader
            raise OSError(errno.EINVAL, "a FIFO, not a regular file") from None
        raise
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        raise OSError(errno.EINVAL, f"{kind_of(mode)}, not a regular file")
    os.set_blocking(descriptor, True)
    return os.fdopen(descriptor, "ab")


class DeadLetters:
    def __init__(self, path: Path) -> None:
        """Open (append to) the file at `path`; OSError if it cannot be (the caller names the flag)."""
        self.path = path
        self.count = 0
        try:
            check_writable_file(path)  # a FIFO would block the open (until a reader comes), a dangling link create a file elsewhere
        except Refused as refused:
            raise OSError(errno.EINVAL, str(refused)) from None
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open_for_append(path)

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
