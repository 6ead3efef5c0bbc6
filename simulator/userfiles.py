"""Reading the files and folders a user names (a scenario, a CA file, field types, device passwords,
--state-dir, --spool-dir, --dead-letters) without hanging or reading without end.

A plain `open()` of a FIFO blocks until someone writes to it, a device such as /dev/zero never ends,
and a symbolic link can lead anywhere. So a file is opened with O_NONBLOCK (a FIFO opens at once),
checked to be a regular file on the open descriptor (no race with a rename), and read up to a
bound. Each refusal is a `Refused` whose text is one short reason; the caller puts the file and the
flag in front of it.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

READ_CHUNK = 1 << 20  # bytes read at once


class Refused(Exception):
    """The reason a path cannot be used, one phrase: 'a FIFO, not a regular file'."""


def kind_of(mode: int) -> str:
    """What a non-regular file is, for the line that refuses it."""
    for test, name in ((stat.S_ISREG, "a file"), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):  # fmt: skip
        if test(mode):
            return name
    return "an unknown kind of file"


def missing(path: Path) -> Refused:
    """No such file, or a symbolic link that leads nowhere (which the user would not guess from 'no such file')."""
    if path.is_symlink():
        return Refused(f"a symbolic link to {os.readlink(path)}, which does not exist")
    return Refused("no such file")


def open_regular(path: Path, follow_symlinks: bool = True) -> int:
    """A descriptor open for reading on the regular file at `path`; Refused if it is anything else (a FIFO,
    a directory, a device, a dangling link; with follow_symlinks=False any link) or cannot be opened."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        descriptor = os.open(path, flags)
    except FileNotFoundError:
        raise missing(path) from None
    except OSError as error:
        if error.errno == errno.ELOOP and not follow_symlinks:
            raise Refused(f"a symbolic link (to {os.readlink(path)}); give the file itself") from None
        raise Refused(f"cannot read it ({error.strerror})") from None
    return regular_or_refused(descriptor)


def regular_or_refused(descriptor: int) -> int:
    """`descriptor` if it is open on a regular file; else closed, and Refused saying what it is. Checked on
    the descriptor, not the path: nothing can be put in the path's place between the check and the use."""
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        raise Refused(f"{kind_of(mode)}, not a regular file")
    return descriptor


def open_for_append(path: Path) -> BinaryIO:
    """The regular file at `path` (created if missing) open for appending; Refused if it is anything else.
    Opened non-blocking: a FIFO put there after check_writable_file would otherwise block the open until a reader came."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as error:
        if error.errno == errno.ENXIO:  # what a non-blocking open for writing answers at a FIFO with no reader
            raise Refused("a FIFO, not a regular file") from None
        raise
    os.set_blocking(regular_or_refused(descriptor), True)
    return os.fdopen(descriptor, "ab")


def read_regular(path: Path, limit: int, follow_symlinks: bool = True) -> bytes:
    """The bytes of the regular file at `path`; Refused as `open_regular`, or if it holds more than `limit` bytes."""
    descriptor = open_regular(path, follow_symlinks)
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= limit and (chunk := os.read(descriptor, min(limit + 1 - size, READ_CHUNK))):  # os.read allocates all it is asked for
            chunks.append(chunk)
            size += len(chunk)
    except OSError as error:
        raise Refused(f"cannot read it ({error.strerror})") from None
    finally:
        os.close(descriptor)
    if size > limit:
        raise Refused(f"larger than {limit:,} bytes")
    return b"".join(chunks)


def check_regular(path: Path) -> None:
    """Refused unless `path` is a regular file this process can open (for a file another library reads: a CA file)."""
    os.close(open_regular(path))


def check_directory(path: Path) -> None:
    """Refused if `path` exists as something other than a directory (or a link to one), or is a link to nothing;
    a path that does not exist yet is fine (the caller creates it)."""
    if path.is_symlink() and not path.exists():
        raise missing(path)
    if path.exists() and not path.is_dir():
        raise Refused(f"{kind_of(path.stat().st_mode)}, not a directory")


def check_writable_file(path: Path) -> None:
    """Refused if `path` exists as something other than a regular file (or a link to one), or is a link to
    nothing (appending would create a file where the link points); a path that does not exist yet is fine."""
    if path.is_symlink() and not path.exists():
        raise missing(path)
    if path.exists() and not path.is_file():
        raise Refused(f"{kind_of(path.stat().st_mode)}, not a regular file")
    check_directory(path.parent)
