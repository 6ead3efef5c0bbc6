"""Customs: a share of import boxes is selected for inspection and held until it is done.

Customs selects ~3-10% of containers and an inspection takes 1-4 hours (shared/domain.md): each
import box is selected with probability `selection_rate` when it is declared (on unloading); a held
box is taken by reach stacker to the inspection shed, waits for a free bay (`simpy.Resource`), is
inspected for a uniform 1-4 h, and is taken back to the yard. A truck that comes for a held box
waits for the release. Events: `customs_hold` (warning) and `customs_release` (info), source
`port-customs`.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import simpy
from pydantic import Field, model_validator

from simulator.fleet import Duration, StrictModel
from simulator.port.containers import Box

if TYPE_CHECKING:
    from simulator.port.model import Port

SOURCE = "port-customs"


class CustomsSettings(StrictModel):
    selection_rate: float = Field(default=0.05, ge=0, le=1, description="share of import boxes selected for inspection (domain: 3-10%)")
    inspection_min: Duration = Field(default=3600.0, description="shortest inspection")
    inspection_max: Duration = Field(default=14400.0, description="longest inspection")
    bays: int = Field(default=3, ge=1, le=100, description="inspection bays working at once")

    @model_validator(mode="after")
    def _min_below_max(self) -> CustomsSettings:
        if self.inspection_min > self.inspection_max:
            raise ValueError("inspection_min must not exceed inspection_max")
        return self


def inspect(env: simpy.Environment, port: Port, box: Box) -> Generator[simpy.Event, None, None]:
    """Hold a box, take it to the shed, inspect it, bring it back and release it."""
    settings = port.settings.customs
    box.hold = env.event()
    held_at = env.now
    port.telemetry.event(SOURCE, "port", "customs_hold", "warning", f"{box.box_id} held for inspection", container=box.box_id)
    with port.customs_bays.request() as bay:
        yield bay
        if box.reefer is not None:
            port.reefers.unplug(box, leaving=False)
            port.reefers.release(box)
        port.yard.lift(box)
        port.in_customs[box.box_id] = box
        yield from port.reach_stackers.move(box)
        yield env.timeout(port.rngs.customs.uniform(settings.inspection_min, settings.inspection_max))
        block = yield from port.yard.reserve(box)
        yield from port.reach_stackers.move(box)
        del port.in_customs[box.box_id]
        port.yard.place(box, block)
    if box.reefer is not None:
        env.process(port.reefers.settle(box))
    port.kpis.customs_holds += 1
    port.telemetry.event(
        SOURCE, "port", "customs_release", "info", f"{box.box_id} released after inspection",
        container=box.box_id, held_h=round((env.now - held_at) / 3600.0, 2),
    )  # fmt: skip
    hold, box.hold = box.hold, None
    hold.succeed()
