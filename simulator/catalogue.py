"""The device types a scenario's `fleets` may name: one module each, with `Fleet` and `build`."""

from __future__ import annotations

from types import ModuleType
from typing import get_args

from simulator.city import (
    air_quality,
    dc_rack,
    electricity_meter,
    heating_substation,
    mine_gas,
    noise_monitor,
    parking_lot,
    street_light,
    traffic_loop,
    water_pressure,
)
from simulator.port import corridor, cranes, gate, reefers, yard
from simulator.load import probe

MODULES: tuple[ModuleType, ...] = (
    air_quality,
    traffic_loop,
    street_light,
    heating_substation,
    water_pressure,
    parking_lot,
    noise_monitor,
    electricity_meter,
    mine_gas,
    dc_rack,
    cranes,  # port_crane
    yard,  # yard_block
    gate,  # gate_lane
    reefers,  # reefer
    corridor,  # truck_gps
    probe,  # load_probe
)


def fleet_models() -> tuple[type, ...]:
    return tuple(module.Fleet for module in MODULES)


def module_for(type_name: str) -> ModuleType:
    for module in MODULES:
        if type_name_of(module) == type_name:
            return module
    raise KeyError(type_name)


def type_name_of(module: ModuleType) -> str:
    """The `type` a fleet of this module is written with: its `Fleet.type` literal."""
    return get_args(module.Fleet.model_fields["type"].annotation)[0]


def type_names() -> list[str]:
    return [type_name_of(module) for module in MODULES]
