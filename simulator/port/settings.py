"""The scenario's `port:` section: the port's plant and processes, one sub-section per concept.

The plant (cranes, yard blocks, gate lanes, reefer plug points, corridor trucks) lives here; the
port fleets (`PortFleet`: `port_crane`, `yard_block`, `gate_lane`, `reefer`, `truck_gps`, in
sensors/) put sensors on it, the first `count` items of their kind, and each says how many items of
its kind the plant has, so a fleet can instrument at most the plant it has.
Every option has a default; docs/port.md shows them all.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from simulator.device_type import FleetConfig
from simulator.fleet import StrictModel
from simulator.port.corridor import CorridorSettings
from simulator.port.cranes import CraneSettings
from simulator.port.customs import CustomsSettings
from simulator.port.gate import GateSettings
from simulator.port.reefers import ReeferSettings
from simulator.port.trains import TrainSettings
from simulator.port.trucks import TruckSettings
from simulator.port.yard import YardSettings


class PortFleet(FleetConfig):
    """A port fleet: sensors on the first `count` items of one kind of the port's plant (sensors/)."""

    @classmethod
    def plant(cls, port: PortSettings) -> tuple[int, str]:
        """How many items of its kind the port has, and the option that sets that number."""
        raise NotImplementedError(f"{cls.__name__} does not say which plant it instruments")


class PortSettings(StrictModel):
    trains: TrainSettings = Field(default_factory=TrainSettings, description="timetable and what trains carry")
    cranes: CraneSettings = Field(default_factory=CraneSettings, description="gantry cranes and reach stackers")
    yard: YardSettings = Field(default_factory=YardSettings, description="container yard blocks")
    customs: CustomsSettings = Field(default_factory=CustomsSettings, description="inspection selection and time")
    gate: GateSettings = Field(default_factory=GateSettings, description="OCR/RFID gate lanes")
    trucks: TruckSettings = Field(default_factory=TruckSettings, description="when trucks collect and deliver")
    reefers: ReeferSettings = Field(default_factory=ReeferSettings, description="plug points and reefer behaviour")
    corridor: CorridorSettings = Field(default_factory=CorridorSettings, description="road haulage to Tianjin Port")

    def check_fleets(self, fleets: list[Any]) -> None:
        """Raise a `fleets.N.count: ...` error when port fleets ask for more items than the plant has."""
        used: dict[str, int] = {}
        for index, fleet in enumerate(fleets):
            if not isinstance(fleet, PortFleet):
                continue
            used[fleet.type] = used.get(fleet.type, 0) + fleet.count
            size, where = fleet.plant(self)
            if used[fleet.type] > size:
                raise ValueError(
                    f"fleets.{index}.count: the port has {size} to instrument ({where}) but the {fleet.type} fleets ask for {used[fleet.type]}"
                )
