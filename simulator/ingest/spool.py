"""The bridge's disk spool: points acknowledged to the broker but not yet stored in InfluxDB.

While InfluxDB is down, the bridge first holds messages unacknowledged in memory. Past its memory
bound it writes them here and acknowledges them only once the file is on disk (fsync), so the broker
can let them go and nothing is lost if the bridge dies. Each spooled batch is one file, named by a
sequence number and its point count; the bridge stores the oldest first and deletes a file only
after InfluxDB has all of it. A crash in between repeats a write, which stores the same points
again (same series and time: overwritten, not duplicated), and never skips one. Files left by an
earlier run are written when the bridge starts again.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from simulator.userfiles import Refused, check_directory, kind_of, read_regular

SEGMENT_NAME = re.compile(r"[0-9]{12}-[0-9]+\.lp")  # as append() names them
SEGMENT_LIMIT = 1 << 30  # bytes: far above a spooled batch; a file larger is not one the bridge wrote


@dataclass(frozen=True)
class Segment:
    """One spooled batch, in a file named NUMBER-POINTS.lp."""

    path: Path

    @property
    def number(self) -> int:
        return int(self.path.stem.split("-")[0])

    @property
    def points(self) -> int:
        return int(self.path.stem.split("-")[1])

    def lines(self) -> list[str]:
        # Only "\n" ends a point (as for InfluxDB): splitlines() would also cut at \x0b, \x1c, \u2028 ...,
        # which a string reading may hold, and turn one point into two broken ones.
        # Read as a user's file (userfiles): a FIFO put in its place must not block the bridge.
        return read_regular(self.path, SEGMENT_LIMIT, follow_symlinks=False).decode("utf-8").split("\n")  # bytes: no newline translation of "\r"


class Spool:
    def __init__(self, directory: Path, limit: int) -> None:
        self.directory = directory
        self.limit = limit  # points on disk before the bridge stops spooling and lets the broker hold the rest
        try:
            check_directory(directory.parent)  # --spool-dir: a FIFO or a dangling link there is one clear line, not "File exists"
            check_directory(directory)
        except Refused as refused:
            raise OSError(errno.EINVAL, str(refused)) from None
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob("*.tmp"):  # a write the last run did not finish: never acknowledged
            refuse_unless_regular(leftover)
            leftover.unlink()
        segments = sorted(directory.glob("*.lp"))
        for path in segments:
            refuse_unless_regular(path)
            if not SEGMENT_NAME.fullmatch(path.name):
                raise Refused(f"{path}: not a name the bridge gives its spool files (NUMBER-POINTS.lp); move it out of the folder")
        self.segments: deque[Segment] = deque(sorted((Segment(path) for path in segments), key=lambda s: s.number))
        self.points = sum(segment.points for segment in self.segments)
        self.next_number = self.segments[-1].number + 1 if self.segments else 0

    def has_room(self) -> bool:
        return self.points < self.limit

    def append(self, lines: list[str]) -> None:
        """Put `lines` on disk durably: when this returns, a crash cannot lose them."""
        final = self.directory / f"{self.next_number:012d}-{len(lines)}.lp"
        temporary = final.with_suffix(".tmp")
        try:
            with open(temporary, "x", encoding="utf-8") as file:  # created here: never a FIFO or link put in its place
                file.write("\n".join(lines))
                file.flush()
                os.fsync(file.fileno())
        except OSError:
            temporary.unlink(missing_ok=True)  # a full disk: give back what the partial file took
            raise
        temporary.rename(final)
        sync_directory(self.directory)  # the rename itself must survive a power cut too
        self.segments.append(Segment(final))
        self.points += len(lines)
        self.next_number += 1

    def oldest(self) -> Segment | None:
        return self.segments[0] if self.segments else None

    def remove_oldest(self) -> None:
        segment = self.segments.popleft()
        segment.path.unlink()
        self.points -= segment.points

    def __bool__(self) -> bool:
        return bool(self.segments)


def refuse_unless_regular(path: Path) -> None:
    """A file in the spool folder the bridge could have written: a regular file, not a link to one."""
    mode = path.lstat().st_mode
    if not stat.S_ISREG(mode):
        raise Refused(f"{path}: {kind_of(mode)}, not a spool file the bridge wrote; move it out of the folder")


def sync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
