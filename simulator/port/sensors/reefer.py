"""`reefer`: the remote reefer monitor on a plug point (simulator/port/reefers.py).

The remote reefer monitoring system reads the unit of the box on each plug point every `cadence` and
evaluates the alarm on the box air it reads: one `reefer_alarm` event when an excursion has lasted
the delay, one `reefer_alarm_cleared` when the air is back in band. No monitor, no alarm.

One per plug point (P001..), every `cadence`: occupied, plugged, alarm (bools), and while a box is on
the point: supply_temp_c, return_temp_c, setpoint_c (°C), container (its number). Device faults
change what the monitor sends, not the alarm evaluation.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import simpy
from pydantic import Field

from simulator.device_faults import FaultyReadings
from simulator.device_type import DeviceType, first_delay, register_device, send
from simulator.fleet import Duration
from simulator.port.model import DOMAIN, port_of
from simulator.port.reefers import PlugPoint, ReeferRack
from simulator.port.settings import PortFleet, PortSettings
from simulator.randomness import Stream
from simulator.telemetry import BOOLEAN, FLOAT, STRING, Device, Kind, Reading, Telemetry

if TYPE_CHECKING:
    from simulator.world import World

READINGS: dict[str, Kind] = {
    "occupied": BOOLEAN, "plugged": BOOLEAN, "alarm": BOOLEAN,
    "supply_temp_c": FLOAT, "return_temp_c": FLOAT, "setpoint_c": FLOAT, "container": STRING,
}  # fmt: skip


class Fleet(PortFleet):
    cadence: Duration = Field(default=300.0, description="reporting interval (remote reefer monitoring: every few minutes)")

    @classmethod
    def plant(cls, port: PortSettings) -> tuple[int, str]:
        return port.reefers.plugs, "port.reefers.plugs"


def report(
    env: simpy.Environment, plug: PlugPoint, rack: ReeferRack, device: Device, telemetry: Telemetry, rng: Stream,
    faults: FaultyReadings | None, cadence: float, first_delay: float,
) -> Generator[simpy.Event, None, None]:  # fmt: skip
    """The monitor on a plug point reads the unit of the box on it and raises its alarms."""
    settings = rack.settings
    yield env.timeout(first_delay)
    while True:
        box = plug.box
        readings: dict[str, Reading]
        if box is None or box.reefer is None:
            readings = {"occupied": False, "plugged": False, "alarm": False}
        else:
            unit = box.reefer
            now = env.now
            ambient = rack.ambient.at(now)
            air = unit.temperature(now, ambient)
            change = unit.check_alarm(now, air, settings.alarm_band_c, settings.alarm_delay)
            if change is not None:
                raised = change == "raised"
                telemetry.event(
                    device.device_id, DOMAIN, "reefer_alarm" if raised else "reefer_alarm_cleared", "alarm" if raised else "info",
                    f"reefer {box.box_id} on {plug.name}: box air {air:.1f} °C, set point {unit.setpoint_c:.0f} °C"
                    + ("" if unit.powered else " (unplugged)"),
                    container=box.box_id, temp_c=round(air, 1), setpoint_c=unit.setpoint_c, plugged=unit.powered,
                )  # fmt: skip
            if unit.powered:
                # The unit blows air colder than the box while pulling down; the return air carries
                # the heat leaking in through the walls, more when the outside is warmer.
                supply = unit.setpoint_c + 0.3 * (air - unit.setpoint_c)
                ret = air + min(max(0.04 * (ambient - unit.setpoint_c), 0.3), 3.0)
            else:
                supply = ret = air  # fans stopped: both sensors see the box air
            readings = {
                "occupied": True,
                "plugged": unit.powered,
                "alarm": unit.alarmed,
                "supply_temp_c": round(supply + rng.gauss(0.0, 0.1), 1),
                "return_temp_c": round(ret + rng.gauss(0.0, 0.1), 1),
                "setpoint_c": unit.setpoint_c,
                "container": box.box_id,
            }
        send(telemetry, device, faults, env.now, readings)
        yield env.timeout(cadence)


def build(world: World, fleet: Fleet) -> None:
    port = port_of(world)
    # Built whole in every shard (the sink keeps the shard's): a monitor keeps its alarm state on the
    # box's unit, and a box back from customs lands on another plug, read by another monitor.
    for device_id, plug in zip(fleet.device_ids(), port.instrument(fleet.type, fleet.count, port.reefers.plugs)):
        device, faults = register_device(world, fleet, device_id, {"plug": plug.name})
        rng = world.rng(device_id)
        delay = first_delay(rng, fleet.cadence)
        world.env.process(report(world.env, plug, port.reefers, device, world.telemetry, rng, faults, fleet.cadence, delay))


DEVICE = DeviceType("reefer", DOMAIN, "port-reefer", Fleet, build, readings=READINGS)
