"""Bounded memory for a run without end: lists and caches that forget their oldest entries.

A finite run keeps everything (`keep=None`), so what it computes is what it always computed. A live
run (`duration: until-stopped`) gives each growing list or per-day cache a `keep`: past twice that
many entries, the oldest are dropped down to `keep` (one deletion per `keep` appends), so memory
stays flat over weeks while the recent past (what the models read, what the summaries show) stays.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import TypeVar

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")


class Recent(list[T]):
    """A list that forgets its oldest items past 2 x `keep`. `at(i)` and `total` count every item ever
    appended (indexes keep their meaning after a forget); plain indexing sees only what is kept."""

    def __init__(self, items: Iterable[T] = (), keep: int | None = None) -> None:
        super().__init__(items)
        self.keep = keep
        self.forgotten = 0

    def append(self, item: T) -> None:
        super().append(item)
        if self.keep is not None and len(self) > 2 * self.keep:
            drop = len(self) - self.keep
            del self[:drop]
            self.forgotten += drop

    @property
    def total(self) -> int:
        """Items ever appended, the forgotten ones included."""
        return self.forgotten + len(self)

    def at(self, index: int) -> T:
        """The item appended `index`-th (0-based), if it is still kept (else IndexError)."""
        if index < self.forgotten:
            raise IndexError(f"item {index} was forgotten (the first {self.forgotten} are)")
        return self[index - self.forgotten]


def forget_oldest(cache: MutableMapping[K, V], keep: int | None) -> None:
    """Drop a dict's first-inserted entries past `keep` (a per-day cache filled day by day)."""
    if keep is None:
        return
    while len(cache) > keep:
        del cache[next(iter(cache))]
