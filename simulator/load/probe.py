"""`load_probe`: a gateway that reads `batch` sensors and sends them as one message (domain `load`).

Each sensor is a vibration level on a coal conveyor: an AR(1) process around the gateway's own mean,
so readings come from a process, not from a uniform draw. `payload_bytes` pads the message with
string readings `pad0`, `pad1` ... to about that size, within the message contract (readings of at
most 1,000 characters).

When the gateway sends is the experiment's business: whoever builds the world for one gives the
gateways its pacing (simulator/load/pacing.py; the builder does, from the scenario's `load:` section):
- `ByRate`: the profile's offered messages/s is split evenly over the fleet; gateway d sends its
  k-th message when the profile's cumulative offered count reaches count * (k + phase_d), so the
  fleet together follows the profile exactly, whatever the shard;
- `ByDevices`: gateway d is on while the profile's target exceeds d; it then sends every
  1 / device_rate seconds, at its own phase;
- `ByConnections`: as `ByDevices`, and gateway d's own connection is up while the target exceeds d:
  it connects when the target rises past d and disconnects cleanly when it falls (the world's
  `Links`, a load worker's device sessions), at those simulated times, the same every run.
Without a pacing (a scenario with no `load:` section), a gateway sends every `interval`. Device
`faults:` apply to the sensor readings `s00` ..; a silent gateway skips its turn.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import TYPE_CHECKING, ClassVar

import orjson
import simpy
from pydantic import Field, model_validator

from simulator.device_faults import FaultyReadings
from simulator.device_type import DeviceType, FleetConfig, owned_devices, register_device, send
from simulator.fleet import Duration
from simulator.load.pacing import LINKS_KEY, PACING_KEY, ByConnections, ByDevices, ByRate, Links, NoLinks, Pacing
from simulator.load.profile import Schedule
from simulator.randomness import Stream
from simulator.telemetry import FLOAT, MAX_READINGS, STRING, Device, Reading, Telemetry

if TYPE_CHECKING:
    from simulator.world import World

PAD_CHUNK = 1000
MAX_BATCH = 60
MAX_PAYLOAD_BYTES = 15_000
SENSORS: tuple[str, ...] = tuple(f"s{n:02d}" for n in range(MAX_BATCH))  # the readings a gateway may send
# Every pad but the last holds PAD_CHUNK characters, so a payload never has more than these.
PADS: tuple[str, ...] = tuple(f"pad{n}" for n in range(math.ceil(MAX_PAYLOAD_BYTES / PAD_CHUNK)))


class Fleet(FleetConfig):
    paced_by_load: ClassVar[bool] = True  # the builder gives the gateways the load section's pacing

    batch: int = Field(default=1, ge=1, le=MAX_BATCH, description="sensor readings per MQTT message (gateway batching)")
    payload_bytes: int = Field(default=0, ge=0, le=MAX_PAYLOAD_BYTES, description="pad each JSON payload to about this many bytes; 0 = no padding")
    interval: Duration = Field(default=1.0, description="send interval when the scenario has no load section")

    @model_validator(mode="after")
    def _fits_the_contract(self) -> Fleet:
        # Each pad holds at most PAD_CHUNK characters, so a message has at most this many readings.
        most = self.batch + math.ceil(self.payload_bytes / PAD_CHUNK)
        if most > MAX_READINGS:
            raise ValueError(
                f"batch {self.batch} padded to payload_bytes {self.payload_bytes} makes messages of up to {most} readings; "
                f"the message contract allows {MAX_READINGS} (docs/message-contract.md): lower one of them"
            )
        return self


class Gateway:
    """The sensors behind one gateway: an AR(1) vibration level each (mm/s RMS)."""

    def __init__(self, device: Device, fleet: Fleet, rng: Stream, faults: FaultyReadings | None) -> None:
        self.device = device
        self.rng = rng
        self.faults = faults
        self.names = list(SENSORS[: fleet.batch])
        self.mean = 2.0 + 2.0 * rng.random()
        self.levels = [self.mean] * fleet.batch
        self.padding = padding(device, self.names, fleet.payload_bytes)

    def readings(self) -> dict[str, Reading]:
        gauss, mean = self.rng.gauss, self.mean
        values: dict[str, Reading] = {}
        for index, name in enumerate(self.names):
            level = mean + 0.9 * (self.levels[index] - mean) + 0.3 * gauss(0.0, 1.0)
            self.levels[index] = level
            values[name] = round(abs(level), 3)
        values.update(self.padding)
        return values

    def send(self, telemetry: Telemetry, now: float) -> None:
        """Read the sensors and publish them, as its device faults (if any) have it."""
        send(telemetry, self.device, self.faults, now, self.readings())


def padding(device: Device, names: list[str], payload_bytes: int) -> dict[str, str]:
    """String readings that bring a typical payload of this gateway to about `payload_bytes`."""
    sample = {
        "device_id": device.device_id, "type": device.type, "ts": 1_768_320_000_000, "seq": 12345,
        "tags": device.tags, "readings": {name: 12.345 for name in names},
    }  # fmt: skip
    missing = payload_bytes - len(orjson.dumps(sample))
    pads: dict[str, str] = {}
    while missing > 0:
        name = f"pad{len(pads)}"
        size = max(min(PAD_CHUNK, missing - len(name) - 6), 1)  # "name":"...", costs 6 more bytes
        pads[name] = "x" * size
        missing -= size + len(name) + 6
    return pads


def by_rate(env: simpy.Environment, gateway: Gateway, telemetry: Telemetry, schedule: Schedule, devices: int, phase: float) -> Generator[simpy.Event, None, None]:
    """Send the k-th message when the fleet's offered count reaches devices * (k + phase)."""
    k = 0
    while True:
        due = schedule.time_of(devices * (k + phase))
        if math.isinf(due) or due >= schedule.duration:
            return
        if due > env.now:
            yield env.timeout(due - env.now)
        gateway.send(telemetry, env.now)
        k += 1


def by_devices(env: simpy.Environment, gateway: Gateway, telemetry: Telemetry, schedule: Schedule, index: int, interval: float, phase: float) -> Generator[simpy.Event, None, None]:
    """Tick every `interval`; send while the profile keeps more than `index` devices on."""
    yield env.timeout(phase * interval)
    while env.now < schedule.duration:
        if schedule.target(env.now) > index:
            gateway.send(telemetry, env.now)
        yield env.timeout(interval)


def by_connections(
    env: simpy.Environment, gateway: Gateway, telemetry: Telemetry, links: Links, spans: list[tuple[float, float]], interval: float, phase: float
) -> Generator[simpy.Event, None, None]:
    """Connected in each span [on, off) of the profile above this gateway's index; sends on its ticks
    (every `interval` from `phase * interval`) that fall in it."""
    device_id = gateway.device.device_id
    for on, off in spans:
        if on > env.now:
            yield env.timeout(on - env.now)
        links.connect(device_id)
        tick = phase * interval + max(math.ceil((on - phase * interval) / interval), 0) * interval
        while tick < off:
            if tick > env.now:
                yield env.timeout(tick - env.now)
            gateway.send(telemetry, env.now)
            tick += interval
        if off > env.now:
            yield env.timeout(off - env.now)
        links.disconnect(device_id)


def every(env: simpy.Environment, gateway: Gateway, telemetry: Telemetry, interval: float, phase: float) -> Generator[simpy.Event, None, None]:
    yield env.timeout(phase * interval)
    while True:
        gateway.send(telemetry, env.now)
        yield env.timeout(interval)


def no_pacing(world: World) -> Pacing | None:
    return None


def no_links(world: World) -> Links:
    return NoLinks()


def build(world: World, fleet: Fleet) -> None:
    pacing = world.shared(PACING_KEY, no_pacing)
    for index, device_id in owned_devices(world, fleet):
        device, faults = register_device(world, fleet, device_id, {"group": f"g{index % 10}"})
        rng = world.rng(device_id)
        phase = rng.random()
        gateway = Gateway(device, fleet, rng, faults)
        env, telemetry = world.env, world.telemetry
        match pacing:
            case None:
                env.process(every(env, gateway, telemetry, fleet.interval, phase))
            case ByRate(schedule):
                env.process(by_rate(env, gateway, telemetry, schedule, fleet.count, phase))
            case ByDevices(schedule, interval):
                env.process(by_devices(env, gateway, telemetry, schedule, index, interval, phase))
            case ByConnections(schedule, interval):
                links = world.shared(LINKS_KEY, no_links)
                env.process(by_connections(env, gateway, telemetry, links, schedule.spans_above(index), interval, phase))


DEVICE = DeviceType("load_probe", "load", "lp", Fleet, build, readings=dict.fromkeys(SENSORS, FLOAT), also_sends=dict.fromkeys(PADS, STRING))
