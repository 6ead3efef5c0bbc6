"""The device types a scenario's `fleets` may name: every shipped `DeviceType`, registered here.

A new type is one `DEVICE = DeviceType(...)` declaration in its own module (simulator/device_type.py)
and one line in `DEVICE_TYPES`. A scenario model with more types (a test's, a plug-in's) comes from
`Scenario.with_device_types(...)`.
"""

from __future__ import annotations

from typing import Any

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
    water_meter,
    water_pressure,
)
from simulator.device_type import DeviceType
from simulator.load import probe
from simulator.port.sensors import gate_lane, port_crane, reefer, truck_gps, yard_block

DEVICE_TYPES: tuple[DeviceType[Any], ...] = (
    air_quality.DEVICE,
    traffic_loop.DEVICE,
    street_light.DEVICE,
    heating_substation.DEVICE,
    water_pressure.DEVICE,
    parking_lot.DEVICE,
    noise_monitor.DEVICE,
    electricity_meter.DEVICE,
    mine_gas.DEVICE,
    dc_rack.DEVICE,
    water_meter.DEVICE,
    port_crane.DEVICE,
    yard_block.DEVICE,
    gate_lane.DEVICE,
    reefer.DEVICE,
    truck_gps.DEVICE,
    probe.DEVICE,
)


def type_names() -> list[str]:
    return [kind.name for kind in DEVICE_TYPES]
