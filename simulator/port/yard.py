"""The container yard: blocks of ground slots stacked in tiers.

Each block's capacity is stacks × tiers TEU. A block's occupancy is a `simpy.Container` whose level
is the TEU allocated to boxes in it (or on their way in): a put that would exceed capacity waits, so
the yard can never hold more than it has room for. Boxes go to the block of their kind (import,
export, reefer) with the most free room.

The `yard_block` sensor on each block is in sensors/yard_block.py.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Literal

import simpy
from pydantic import Field, field_validator

from simulator.fleet import StrictModel
from simulator.port.containers import Box

BlockKind = Literal["import", "export", "reefer"]


class BlockSettings(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,16}$", description="block name, e.g. A1")
    kind: BlockKind = Field(description="which boxes it takes: import, export or reefer (with plugs)")
    stacks: int = Field(ge=1, le=10_000, description="ground slots, in TEU")
    tiers: int = Field(default=4, ge=1, le=8, description="boxes stacked per slot")


def default_blocks() -> list[BlockSettings]:
    # Sized for the default timetable: ~1,600 TEU of imports (4 trains x 90 TEU x ~4.5 days) and
    # ~600 TEU of exports in stock at ~65% utilisation.
    return [
        BlockSettings(name="A1", kind="import", stacks=200),
        BlockSettings(name="A2", kind="import", stacks=200),
        BlockSettings(name="A3", kind="import", stacks=200),
        BlockSettings(name="B1", kind="export", stacks=120),
        BlockSettings(name="B2", kind="export", stacks=120),
        BlockSettings(name="R1", kind="reefer", stacks=80, tiers=3),
    ]


class YardSettings(StrictModel):
    blocks: list[BlockSettings] = Field(default_factory=default_blocks, min_length=3, description="the yard's blocks")

    @field_validator("blocks")
    @classmethod
    def _every_kind_has_a_block(cls, blocks: list[BlockSettings]) -> list[BlockSettings]:
        missing = {"import", "export", "reefer"} - {block.kind for block in blocks}
        if missing:
            raise ValueError(f"no block of kind {', '.join(sorted(missing))}; every kind needs one")
        names = [block.name for block in blocks]
        if len(set(names)) != len(names):
            raise ValueError("block names must be unique")
        return blocks


@dataclass(eq=False)
class Block:
    name: str
    kind: BlockKind
    capacity_teu: int
    space: simpy.Container  # level = TEU allocated
    boxes: dict[str, Box] = field(default_factory=dict)

    @property
    def free_teu(self) -> float:
        return self.capacity_teu - self.space.level


class Yard:
    """The blocks and the boxes in them."""

    def __init__(self, env: simpy.Environment, settings: YardSettings) -> None:
        self.env = env
        self.blocks = [
            Block(b.name, b.kind, b.stacks * b.tiers, simpy.Container(env, capacity=b.stacks * b.tiers))
            for b in settings.blocks
        ]
        self.capacity_teu = sum(block.capacity_teu for block in self.blocks)

    def block_for(self, box: Box) -> Block:
        kind = "reefer" if box.reefer is not None else box.direction
        return max((b for b in self.blocks if b.kind == kind), key=lambda b: b.free_teu)

    def admit_initial(self, box: Box) -> bool:
        """Place a box that was in the yard when the run starts; False when its blocks are full."""
        block = self.block_for(box)
        if block.free_teu < box.teu:
            return False
        block.space.put(box.teu)  # room is free: the put succeeds at once
        self.place(box, block)
        return True

    def reserve(self, box: Box) -> Generator[simpy.Event, None, Block]:
        """Wait for room in a block for `box` (a crane cannot put a box down without a slot)."""
        block = self.block_for(box)
        yield block.space.put(box.teu)
        return block

    def place(self, box: Box, block: Block) -> None:
        block.boxes[box.box_id] = box
        box.block = block

    def lift(self, box: Box) -> None:
        """Take a box off its stack; its slot is free again."""
        block = box.block
        assert block is not None, f"{box.box_id} is not in the yard"
        del block.boxes[box.box_id]
        block.space.get(box.teu)
        box.block = None

    def boxes(self) -> int:
        return sum(len(block.boxes) for block in self.blocks)

    def occupancy_teu(self) -> float:
        return sum(block.space.level for block in self.blocks)
