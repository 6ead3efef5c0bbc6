"""What the bridge remembers of its broker session between runs: `session.json` in its spool directory
(one per client id), written once the broker confirmed the subscription.

The broker keeps a persistent session (clean_session=False) with its subscriptions and queued
messages; the CONNACK says whether it still has one. With this record the bridge can tell, on its
first connect, "no session" for a new client id (normal) from "no session" for an id that had one
(its queued messages are gone), and which subscription an earlier run left in the session (a bridge
restarted with another --prefix would otherwise go on receiving the old one).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from simulator.userfiles import Refused, read_regular

FILE_NAME = "session.json"
RECORD_LIMIT = 64 * 1024  # bytes: a record is a broker URL and a topic filter


@dataclass(frozen=True)
class SessionRecord:
    broker: str  # the broker URL the session is at
    topic_filter: str  # what the session is subscribed to

    @classmethod
    def load(cls, directory: Path) -> SessionRecord | None:
        """The record in `directory`, or None (none yet, or unreadable: then nothing is known)."""
        try:  # read as a user's file: a FIFO put in its place must not block the bridge's start
            data = json.loads(read_regular(directory / FILE_NAME, RECORD_LIMIT, follow_symlinks=False))
            return cls(str(data["broker"]), str(data["topic_filter"]))
        except (Refused, ValueError, KeyError, TypeError):
            return None

    def save(self, directory: Path) -> None:
        """Replace the record atomically: a crash leaves the old one or the new one."""
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f"{FILE_NAME}.new"
        try:
            temporary.unlink(missing_ok=True)  # then created anew: never a FIFO or a link left in its place
            with open(temporary, "x", encoding="utf-8") as file:
                file.write(json.dumps(asdict(self)) + "\n")
            os.replace(temporary, directory / FILE_NAME)
        except OSError:
            temporary.unlink(missing_ok=True)  # a full disk: leave no half-written record behind
            raise
