"""Containers ("boxes"): their ISO 6346 identity, size, cargo, direction and time in the port.

A box enters the port from a train or a truck and leaves on the other; in between it sits in a yard
block (or the customs shed, or on a crane's spreader). Sizes follow the TEU convention: a 20 ft box is
1 TEU, a 40 ft box (FEU) 2 TEU. Container numbers carry the ISO 6346 check digit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import simpy

if TYPE_CHECKING:
    from simulator.port.reefers import ReeferUnit
    from simulator.port.yard import Block

Direction = Literal["import", "export"]
"""import: Tianjin Port → Shanxi (arrives by train, leaves by truck); export: the reverse."""

OWNER_CODES: tuple[str, ...] = ("COSU", "CSNU", "TGHU", "MSCU", "OOLU", "CMAU", "TCNU", "SEGU")

# ISO 6346 letter values: A=10 upwards, skipping multiples of 11.
_LETTER_VALUES: dict[str, int] = {}
_value = 10
for _letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
    if _value % 11 == 0:
        _value += 1
    _LETTER_VALUES[_letter] = _value
    _value += 1


def iso6346(owner: str, serial: int) -> str:
    """Container number with its check digit, e.g. iso6346("CSQU", 305438) == "CSQU3054383"."""
    code = f"{owner}{serial:06d}"
    total = sum((_LETTER_VALUES[c] if c.isalpha() else int(c)) << i for i, c in enumerate(code))
    return f"{code}{total % 11 % 10}"


@dataclass(eq=False, slots=True)
class Box:
    """One container and where it is in its visit."""

    box_id: str
    teu: int  # 1 = 20 ft, 2 = 40 ft
    direction: Direction
    cargo: str  # "general", "coal" (containerised coal, Shanxi's main export) or "reefer"
    weight_t: float  # gross, drives crane power
    service: int  # import: the train service that brought it; export: the service it is booked on
    reefer: ReeferUnit | None = None
    arrived: float = 0.0  # simulated s it entered the yard (negative: before the run)
    due: float = 0.0  # import: its truck's appointment; export: its delivery appointment
    departed: float | None = None
    block: Block | None = None
    hold: simpy.Event | None = None  # set while customs holds the box; triggered on release
    claimed: bool = False  # a train or truck has taken it for loading


class BoxNumbers:
    """Hands out container numbers: owner codes in turn, serials counting up from a seeded base."""

    def __init__(self, base: int) -> None:
        self.next = base

    def __call__(self) -> str:
        n = self.next
        self.next += 1
        return iso6346(OWNER_CODES[n % len(OWNER_CODES)], (n // len(OWNER_CODES)) % 1_000_000)
