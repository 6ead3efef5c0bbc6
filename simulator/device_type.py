"""The device-type contract: what a scenario's `fleets` may name, declared once per type.

A device type is one `DeviceType` object: its name (the fleet's `type`, the InfluxDB measurement and
the topic's type segment), its domain (the topic's domain segment), its default id prefix, the
options of its fleet section (a `FleetConfig` subclass without `type`), every reading a device sends
with its kind (float, string or boolean: what the bridge stores it as), and `build(world, fleet)`,
which registers the devices and starts their SimPy processes. `simulator/catalogue.py` lists the
shipped types.

The readings come in two declarations, each name written once: `readings`, what the device measures
(device `faults:` may name these), and `also_sends`, the readings it sends that no fault may name
(values computed after its faults from the faulty ones, such as the AQI; states; padding). Together
they are `sends`, the device type's part of the message contract; `iotsim schema --readings` writes
every type's into `simulator/schemas/readings.json`, which the bridge reads (simulator/ingest/fieldtypes.py).

From the options the type makes the scenario's model of its fleet section: the options plus
`type: Literal[name]`, with the type itself as `device_type`, so a validated fleet knows how to build
itself and the name is written nowhere else.

Every fleet has the common options (`count`, `id_prefix`, `districts`) and `faults:` (device faults,
simulator/device_faults.py), checked against the fleet's device ids and the type's readings (a drift
or spikes fault changes a number: the reading it names must be a float).

A `build` walks `owned_devices(world, fleet)`, not `fleet.device_ids()`: a shard of a sharded run
(`iotsim run --shard`) then builds and runs only its own devices, so its CPU is its share.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import Field, ValidationInfo, create_model, field_validator, model_validator

from simulator.device_faults import DeviceFault, FaultyReadings, faults_for
from simulator.fleet import DISTRICTS, District, ReconnectPolicy, StrictModel
from simulator.randomness import Stream
from simulator.shard import SHARD_KEY, Shard
from simulator.telemetry import FLOAT, KINDS, Device, Kind, Reading, Telemetry

if TYPE_CHECKING:
    from simulator.world import World

TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")  # a topic segment and an InfluxDB measurement
NUMERIC_FAULTS = ("drift", "spikes")  # they change a number: the reading they name must be a float


class FleetConfig(StrictModel):
    """What every fleet section has; each device type's options derive from it."""

    device_type: ClassVar[DeviceType[Any]]  # set on the fleet model a DeviceType makes
    # Its devices monitor a mine face's gas, so `city.mine.gas_events` may name them (mine_gas's fleet).
    monitors_gas: ClassVar[bool] = False
    # A scenario's `load:` profile paces its devices, not an interval of its own (load_probe's fleet).
    paced_by_load: ClassVar[bool] = False

    type: str
    count: int = Field(ge=1, le=1_000_000, description="how many devices of this type")
    id_prefix: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9-]{0,31}$",
        description="device ids are '{id_prefix}-{n:04d}'; defaults to the type's own prefix",
    )
    districts: list[District] = Field(
        default_factory=lambda: list(DISTRICTS),
        min_length=1,
        description="devices are spread round-robin over these districts",
    )
    faults: list[DeviceFault] = Field(default_factory=list, description="device faults (simulator/device_faults.py)")
    connection: Literal["shared", "device", "gateway"] = Field(
        default="shared",
        description="shared: the run's one MQTT connection; device: every device its own (client id = device id, a last will on "
        "{prefix}/status/{device_id}); gateway: every gateway_size consecutive devices behind one gateway connection ('{id_prefix}-gw-NNNN')",
    )
    gateway_size: int | None = Field(default=None, validate_default=True, ge=1, le=1_000_000, description="devices behind each gateway (connection: gateway)")
    reconnect: ReconnectPolicy = Field(default_factory=ReconnectPolicy, description="how the fleet's own connections retry after losing the broker")

    @property
    def prefix(self) -> str:
        """The prefix of this fleet's device ids: its own `id_prefix`, or the type's."""
        return self.id_prefix or self.device_type.id_prefix

    def device_ids(self) -> list[str]:
        prefix = self.prefix
        return [f"{prefix}-{n:04d}" for n in range(1, self.count + 1)]

    def district_of(self, index: int) -> str:
        return self.districts[index % len(self.districts)]

    def gateway_ids(self) -> list[str]:
        """The ids of the fleet's gateways (connection: gateway): `{prefix}-gw-0001` for its first
        `gateway_size` devices, and so on."""
        size = self.gateway_size or 1
        return [f"{self.prefix}-gw-{n:04d}" for n in range(1, (self.count + size - 1) // size + 1)]

    def connection_of(self, index: int, device_id: str) -> str | None:
        """The client id that carries the device's messages (its own, or its gateway's); None: the run's shared connection."""
        if self.connection == "device":
            return device_id
        if self.connection == "gateway":
            return f"{self.prefix}-gw-{index // (self.gateway_size or 1) + 1:04d}"
        return None

    @field_validator("gateway_size")
    @classmethod
    def _gateway_size_for_gateways(cls, size: int | None, info: ValidationInfo) -> int | None:
        connection = info.data.get("connection")
        if connection == "gateway" and size is None:
            raise ValueError("connection gateway needs gateway_size: N (devices behind each gateway)")
        if connection not in (None, "gateway") and size is not None:
            raise ValueError(f"only for connection: gateway (this fleet's connection is {connection})")
        return size

    @model_validator(mode="after")
    def _faults_name_this_fleet(self) -> FleetConfig:
        if not self.faults:
            return self  # a city's fleet of 100,000 meters need not spell its ids to have no faults
        ids = set(self.device_ids())
        readings = self.device_type.readings
        for index, fault in enumerate(self.faults):
            unknown = [device for device in fault.devices if device not in ids]
            if unknown:
                raise ValueError(f"faults.{index}.devices: {', '.join(unknown)} not in this fleet ({min(ids)} .. {max(ids)})")
            reading = getattr(fault, "reading", None)
            if reading is not None and reading not in readings:
                raise ValueError(f"faults.{index}.reading: {reading!r} is not a reading of {self.type} ({', '.join(readings)})")
            if reading is not None and fault.kind in NUMERIC_FAULTS and readings[reading] != FLOAT:
                raise ValueError(f"faults.{index}.reading: {reading!r} is a {readings[reading]} reading of {self.type}; {fault.kind} needs a number")
        return self


F = TypeVar("F", bound=FleetConfig)
Builder = Callable[["World", F], None]
Complete = Callable[[dict[str, Reading]], None]  # adds to what a device sends what it computes from what it read


@dataclass(frozen=True, eq=False)
class DeviceType(Generic[F]):
    """One device type, declared once: `DEVICE = DeviceType("water_pressure", "city", "water", Fleet, build,
    readings={"pressure_mpa": FLOAT, "flow_m3h": FLOAT})`."""

    name: str  # the fleet's `type`, the measurement, the topic's type segment
    domain: str  # the topic's domain segment: city, port, load ...
    id_prefix: str  # default device ids: {id_prefix}-0001 ...
    options: type[F]  # the fleet section's own options
    build: Builder[F]  # registers the fleet's devices with the world and starts their processes
    readings: Mapping[str, Kind]  # what a device measures and sends, and its kind; device faults may name these
    also_sends: Mapping[str, Kind] = field(default_factory=dict)  # the other readings it sends; no fault may name them
    fleet_model: type[F] = field(init=False, repr=False)  # the options + `type: Literal[name]`

    def __post_init__(self) -> None:
        if not TYPE_NAME.match(self.name):
            raise ValueError(f"device type name {self.name!r}: lower case letters, digits and '_', starting with a letter")
        if not issubclass(self.options, FleetConfig):
            raise TypeError(f"device type {self.name}: its options must derive from FleetConfig")
        if twice := sorted(set(self.readings) & set(self.also_sends)):
            raise ValueError(f"device type {self.name}: {', '.join(twice)} declared in both readings and also_sends")
        for reading, kind in self.sends.items():
            if kind not in KINDS:
                raise ValueError(f"device type {self.name}: reading {reading!r} has kind {kind!r}, not one of {', '.join(KINDS)}")
        model = create_model(
            "".join(part.title() for part in self.name.split("_")) + "Fleet",
            __base__=self.options,
            __module__=self.options.__module__,
            type=(Literal[self.name], Field(description="the device type")),  # type: ignore[valid-type]
        )
        model.device_type = self
        object.__setattr__(self, "fleet_model", model)

    @property
    def sends(self) -> dict[str, Kind]:
        """Every reading a device of this type may send, and its kind: its part of the message contract."""
        return {**self.readings, **self.also_sends}


def whole(world: World) -> Shard:
    return Shard()


def owned_devices(world: World, fleet: FleetConfig) -> Iterator[tuple[int, str]]:
    """(index, device id) of the fleet's devices this world builds: every one, or in a sharded world
    those of its shard (simulator/shard.py). The index is the device's place in the whole fleet, so
    its district, site, road and anything else derived from it are those of the unsharded run."""
    shard = world.shared(SHARD_KEY, whole)
    for index, device_id in enumerate(fleet.device_ids()):
        if shard.owns(device_id):
            yield index, device_id


def register_device(world: World, fleet: FleetConfig, device_id: str, tags: dict[str, str]) -> tuple[Device, FaultyReadings | None]:
    """Register one device of `fleet` with the world's telemetry; its faults (None: a healthy device)."""
    device = world.telemetry.register(device_id, fleet.type, fleet.device_type.domain, tags)
    if world.registered is not None:
        world.registered()
    faults = faults_for(world.env, world.telemetry, device_id, fleet.type, device.domain, fleet.faults, world.seed) if fleet.faults else None
    return device, faults


def first_delay(rng: Stream, cadence: float) -> float:
    """A whole-millisecond phase within the first cadence: each device sends exactly duration / cadence messages."""
    return rng.randrange(max(round(cadence * 1000), 1)) / 1000.0


def after_faults(faults: FaultyReadings | None, now: float, readings: dict[str, Reading]) -> dict[str, Reading] | None:
    """What a device sends of what it measured at `now`: as its faults (None: a healthy device)
    change it; None when they silence it (no message, so no seq is spent)."""
    if faults is None:
        return readings
    return faults.apply(now, readings)


def send(
    telemetry: Telemetry, device: Device, faults: FaultyReadings | None, now: float, readings: dict[str, Reading], complete: Complete | None = None
) -> None:
    """What every device does with what it measured at `now`: its faults (if any) change it or silence
    it; what is left, with what `complete` adds from it (an AQI, an alarm state), is published. The
    device logic in `complete` sees the faulty values, as a real device's would."""
    sent = after_faults(faults, now, readings)
    if sent is None:
        return  # silenced by a fault
    if complete is not None:
        complete(sent)
    telemetry.publish(device, sent)
