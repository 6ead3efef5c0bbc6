"""Scenario files: YAML, validated by pydantic v2 models. Unknown keys are errors.

`load_scenario(path)` returns a frozen `Scenario` or raises `ScenarioError`, whose `problems` are
one line each: `FILE:LINE: dotted.field.path: message`, with the line taken from the YAML.
`load_scenario(path, Scenario.with_device_types(...))` reads a file whose fleets may also name more
device types (a test's, a plug-in's); an unknown type's line lists every type that model knows.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BeforeValidator, Field, ValidationError, ValidationInfo, WithJsonSchema, create_model, field_validator
from pydantic.json_schema import JsonSchemaValue
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from simulator import catalogue
from simulator.city.settings import CitySettings
from simulator.device_type import DeviceType
from simulator.errors import UsageError
from simulator.faults import PROCESS_FAULTS, Fault
from simulator.fleet import DurationOrZero, RunDuration, StrictModel
from simulator.load.probe import DEVICE as PROBE
from simulator.load.section import LoadSection
from simulator.port.settings import PortSettings
from simulator.units import UNTIL_STOPPED
from simulator.urls import MQTT_SCHEMES, check_url
from simulator.userfiles import Refused, read_regular

SCENARIO_FILE_LIMIT = 16 * 1024 * 1024  # bytes: the largest shipped scenario is a few KiB; more is not a scenario (a device, a log)
YANGQUAN_TZ = timezone(timedelta(hours=8), "CST")

# What a file may write for `start` and `speed` (JSON Schema of the input: editors read YAML timestamps as strings).
START_JSON_SCHEMA: JsonSchemaValue = {
    "type": "string",
    "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?([Zz]|[+-][0-9]{2}:?[0-9]{2})?)?$",
}
SPEED_JSON_SCHEMA: JsonSchemaValue = {"anyOf": [{"const": "afap"}, {"type": "number", "exclusiveMinimum": 0, "maximum": 1_000_000}]}


def fleet_section(device_types: tuple[DeviceType[Any], ...]) -> Any:
    """One fleet of a scenario: the fleet model of the device type its `type` names."""
    return Annotated[Union[tuple(kind.fleet_model for kind in device_types)], Field(discriminator="type")]


FleetSection = fleet_section(catalogue.DEVICE_TYPES)


class MqttSettings(StrictModel):
    url: str = Field(default="mqtt://127.0.0.1:1883", description="mqtt://host:port of the broker")
    qos: Literal[0, 1] = Field(default=1, description="0 = at most once, 1 = at least once")
    topic_prefix: str = Field(
        default="yangquan", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$", description="first topic level(s): {prefix}/{domain}/{type}/{device_id}"
    )
    client_id_prefix: str = Field(
        default="iotsim", pattern=r"^[A-Za-z0-9_-]{1,40}$", description="MQTT client ids are '{client_id_prefix}-{scenario name}'"
    )
    # The publisher's window is the smaller of the two: at most that many messages handed over and not
    # yet acknowledged (QoS 1) or written (QoS 0); at the bound the simulation waits.
    max_inflight: int = Field(default=1000, ge=1, le=65535, description="unacknowledged QoS 1 messages on the wire")
    max_queued: int = Field(default=1000, ge=1, description="messages not yet acknowledged before the simulation is paused")
    buffer_in_memory: int = Field(default=10_000, ge=0, description="messages held in memory while the broker is unreachable")
    buffer_limit: int = Field(
        default=1_000_000, ge=1, description="messages held in all (past buffer_in_memory, on disk) before the simulation pauses"
    )
    buffer_dir: str | None = Field(default=None, description="where held messages spill to disk; default: the system's temporary directory")
    username: str | None = Field(default=None, min_length=1, description="broker user (secure profile); the password comes from MQTT_PASSWORD")
    ca_file: str | None = Field(default=None, description="CA certificate for an mqtts:// broker; default: the system's CAs")
    device_passwords: str | None = Field(
        default=None,
        min_length=1,
        description="folder that brokers/secure/make-passwords.sh wrote (relative to the working directory, as ca_file): each own connection "
        "logs in as its client id (device or gateway id) with the password in FOLDER/passwords/{id}; default: every one as username, with MQTT_PASSWORD",
    )
    # The fleets' own connections (a fleet's `connection: device` or `gateway`; simulator/transport/sessions.py).
    keepalive: int = Field(default=60, ge=2, le=65535, description="seconds between a device connection's packets at the least (PINGREQ); the broker fires a silent device's will after 1.5 x this")
    connect_window: DurationOrZero = Field(default=0.0, description="device connections first connect spread over this window, each at a time from its own random stream")
    protocol: Annotated[Literal["3.1.1", "5"], BeforeValidator(str)] = Field(default="3.1.1", description="MQTT version of the device connections: '3.1.1' or '5'")

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, url: str) -> str:
        return check_url(url, MQTT_SCHEMES)


class InfluxSettings(StrictModel):
    url: str = Field(default="http://127.0.0.1:8086", description="InfluxDB 1.x API (or 2.x/3.x v1 compatibility)")
    database: str = Field(default="yangquan", pattern=r"^[A-Za-z0-9_-]+$", description="database on that server")
    user: str | None = Field(default=None, description="InfluxDB 1.x user, if authentication is on")
    password: str | None = Field(default=None, description="that user's password")
    token: str | None = Field(default=None, description="InfluxDB 2.x/3.x token for the v1 API")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return check_url(url, ("http", "https"))


# The scenario name goes into file names (load results), MQTT client ids and line-protocol tags.
UNSAFE_IN_NAME = re.compile(r"[/\\\x00-\x1f\x7f-\x9f\u2028\u2029]|^\.")


class Scenario(StrictModel):
    device_types: ClassVar[tuple[DeviceType[Any], ...]] = catalogue.DEVICE_TYPES  # what `fleets` may name (with_device_types adds)

    name: str = Field(min_length=1, max_length=100, description="names the run: MQTT client id, results, summaries")
    description: str = Field(default="", description="free text: what the experiment is for")
    seed: int = Field(default=1, ge=0, lt=2**63, description="same scenario + seed = byte-identical messages")
    start: Annotated[datetime, WithJsonSchema(START_JSON_SCHEMA, mode="validation")] = Field(
        default=datetime(2026, 1, 14, 0, 0, tzinfo=YANGQUAN_TZ),
        description="ISO time; without a zone it is Yangquan's local time (UTC+8)",
    )
    duration: RunDuration
    speed: Annotated[Literal["afap"] | float, BeforeValidator(parse_speed), WithJsonSchema(SPEED_JSON_SCHEMA, mode="validation")] = Field(
        default="afap", description="'afap' = as fast as possible, or N = N times real time"
    )
    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="the broker the devices publish to")
    influx: InfluxSettings = Field(default_factory=InfluxSettings, description="InfluxDB for the run's `pipeline` counters and `iotsim load`'s bridge")
    fleets: list[FleetSection] = Field(min_length=1, description="the devices: one entry per fleet; `type` is the device type and InfluxDB measurement")  # type: ignore[valid-type]
    port: PortSettings = Field(
        default_factory=PortSettings, validate_default=True, description="the inland port's plant and processes (docs/port.md)"
    )
    faults: list[Fault] = Field(default_factory=list, description="pipeline faults at simulated times (simulator/faults.py)")
    city: CitySettings = Field(default_factory=CitySettings, validate_default=True, description="what the whole city shares: weather, calendar, roads, incidents (docs/city.md)")
    load: LoadSection | None = Field(default=None, description="a load experiment for `iotsim load` (docs/load.md)")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if UNSAFE_IN_NAME.search(name):
            raise ValueError(f"{name!r} names files, client ids and tags: no '/', '\\', control characters or leading '.'")
        return name

    @field_validator("start")
    @classmethod
    def _local_time_by_default(cls, start: datetime) -> datetime:
        return start if start.tzinfo is not None else start.replace(tzinfo=YANGQUAN_TZ)

    @field_validator("speed")
    @classmethod
    def _paced_until_stopped(cls, speed: str | float, info: ValidationInfo) -> str | float:
        if speed == "afap" and info.data.get("duration") == math.inf:
            raise ValueError(f"'afap' never ends with duration {UNTIL_STOPPED}; give a number N (N x real time) or a finite duration")
        return speed

    @property
    def until_stopped(self) -> bool:
        """A live run: paced, it lasts until SIGTERM or Ctrl-C (`duration: until-stopped`)."""
        return self.duration == math.inf

    @field_validator("fleets")
    @classmethod
    def _device_ids_unique(cls, fleets: list[Any]) -> list[Any]:
        seen: dict[str, int] = {}
        for index, fleet in enumerate(fleets):
            prefix = fleet.prefix
            if prefix in seen:
                raise ValueError(
                    f"fleets {seen[prefix]} and {index} both name devices '{prefix}-NNNN'; give one an id_prefix"
                )
            seen[prefix] = index
        for index, fleet in enumerate(fleets):  # a gateway '{prefix}-gw-NNNN' is also a name of the devices '{prefix}-gw-NNNN'
            if fleet.connection == "gateway" and (other := seen.get(f"{fleet.prefix}-gw")) is not None:
                raise ValueError(f"fleets {index} and {other}: fleet {index}'s gateways '{fleet.prefix}-gw-NNNN' have the ids of fleet {other}'s devices; give one another id_prefix")
        return fleets

    @field_validator("fleets")
    @classmethod
    def _own_connections_fit_the_broker(cls, fleets: list[Any], info: ValidationInfo) -> list[Any]:
        mqtt = info.data.get("mqtt")
        for index, fleet in enumerate(fleets):
            if fleet.connection == "shared" or mqtt is None:
                continue
            if mqtt.qos != 1:
                raise ValueError(f"fleets.{index}.connection: a fleet's own connections publish at QoS 1 (each device's outbox keeps what an outage would lose); set mqtt.qos: 1")
        return fleets

    @field_validator("port")
    @classmethod
    def _port_fleets_fit_the_port(cls, port: PortSettings, info: ValidationInfo) -> PortSettings:
        port.check_fleets(info.data.get("fleets", []))
        return port

    @field_validator("city")
    @classmethod
    def _city_fits_the_fleets(cls, city: CitySettings, info: ValidationInfo) -> CitySettings:
        if "fleets" in info.data:  # else the fleets have errors of their own
            city.check_fleets(info.data["fleets"])
        return city

    @field_validator("faults")
    @classmethod
    def _faults_fit_the_run(cls, faults: list[Any], info: ValidationInfo) -> list[Any]:
        fleets, speed = info.data.get("fleets", []), info.data.get("speed")
        prefixes = {fleet.prefix for fleet in fleets}
        for index, fault in enumerate(faults):
            # "faults.N.field: ..." : describe() points the error at that entry of the file.
            if getattr(fault, "fleet", None) is not None and fleets and fault.fleet not in prefixes:
                raise ValueError(f"faults.{index}.fleet: no fleet names its devices '{fault.fleet}-NNNN' (known: {', '.join(sorted(prefixes))})")
            if fault.kind in PROCESS_FAULTS and speed == "afap":
                raise ValueError(f"faults.{index}.kind: a {fault.kind} takes wall-clock time; give the scenario a numeric speed")
        return faults

    @field_validator("load")
    @classmethod
    def _load_fits_the_fleets(cls, load: LoadSection | None, info: ValidationInfo) -> LoadSection | None:
        if load is None or load.unit != "connections":
            return load
        for index, fleet in enumerate(info.data.get("fleets", [])):
            if fleet.type == PROBE.name and fleet.connection != "device":
                raise ValueError(f"load.unit: connections ramps the {PROBE.name} devices' own connections, but fleets.{index} has connection: {fleet.connection}; give it connection: device")
        return load

    @classmethod
    def with_device_types(cls, *extra: DeviceType[Any]) -> type[Scenario]:
        """A scenario model whose fleets may also name these device types (a test's, a plug-in's);
        `load_scenario(path, model)` reads files with it."""
        device_types = (*cls.device_types, *extra)
        fleets = list[fleet_section(device_types)]  # type: ignore[misc]
        model = create_model(cls.__name__, __base__=cls, __module__=cls.__module__, fleets=(fleets, Field(min_length=1)))
        model.device_types = device_types
        return model

    def with_overrides(self, **changes: Any) -> Scenario:
        """A copy with command-line overrides applied and validated like the file."""
        data = self.model_dump(mode="json")
        for key, value in changes.items():
            if value is None:
                continue
            *sections, field = key.split(".")
            target = data
            for section in sections:
                target = target[section]
            target[field] = value
        return type(self).model_validate(data)


def parse_speed(value: object) -> str | float:
    if value == "afap":
        return "afap"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1_000_000:
        return float(value)
    raise ValueError(f"{value!r} is not a speed; use 'afap' (as fast as possible) or a number N > 0 (N x real time)")


@dataclass
class ScenarioError(UsageError):
    """A scenario that cannot be used; `problems` holds one printable line each."""

    problems: list[str]

    def __str__(self) -> str:
        return "\n".join(self.problems)


def load_scenario(path: str | Path, model: type[Scenario] = Scenario) -> Scenario:
    """The scenario in the file at `path`, validated by `model` (one with more device types: `Scenario.with_device_types`)."""
    path = Path(path)
    try:
        text = read_regular(path, SCENARIO_FILE_LIMIT).decode("utf-8")
    except Refused as refused:
        raise ScenarioError([f"{path}: {refused}"]) from None
    except UnicodeDecodeError as error:
        raise ScenarioError([f"{path}: cannot read: {error}"]) from None
    try:
        document = YAML(typ="rt").load(text)
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ScenarioError([f"{path}:{line}: not valid YAML: {error.problem or error.context}"]) from None
    except YAMLError as error:
        raise ScenarioError([f"{path}:1: not valid YAML: {error}"]) from None
    if not isinstance(document, dict):
        raise ScenarioError([f"{path}:1: a scenario is a YAML mapping (name: ..., duration: ..., fleets: [...])"])
    try:
        return model.model_validate(to_plain(document))
    except ValidationError as error:
        raise ScenarioError(describe(error, document, path, [kind.name for kind in model.device_types])) from None


def to_plain(node: Any) -> Any:
    """ruamel's commented containers as plain dicts and lists (strict validation rejects subclasses)."""
    if isinstance(node, dict):
        return {key: to_plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [to_plain(value) for value in node]
    return node


POINTED_MESSAGE = re.compile(r"^(?P<path>[a-z_]+(?:\.[A-Za-z0-9_]+)+): (?P<message>.*)$", re.DOTALL)


def describe(error: ValidationError, document: CommentedMap, path: Path, type_names: list[str]) -> list[str]:
    """One `FILE:LINE: dotted.field: problem` line per error; an unknown device type lists `type_names`, the model's."""
    problems = []
    for item in error.errors():
        location = field_path(item["loc"], document)
        message = item["msg"].removeprefix("Value error, ")
        if (pointed := POINTED_MESSAGE.match(message)) is not None:
            pointed_at = [int(part) if part.isdigit() else part for part in pointed["path"].split(".")]
            # A fleet's own validator points inside the fleet (faults.0.reading); the scenario's, from the top.
            location = [*location, *pointed_at] if location[:1] == ["fleets"] and len(location) > 1 else pointed_at
            message = pointed["message"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling)"
        elif item["type"] == "union_tag_invalid":
            location = [*location, "type"]
            message = f"unknown device type {item['input'].get('type')!r}; known: {', '.join(type_names)}"
        line = line_of(document, location)
        dotted = ".".join(str(part) for part in location) or "(top level)"
        problems.append(f"{path}:{line}: {dotted}: {message}")
    return problems


def field_path(loc: tuple[int | str, ...], document: Any) -> list[int | str]:
    """Pydantic's error location without the union tags it inserts (fleets.0.air_quality.count)."""
    parts: list[int | str] = []
    node = document
    for part in loc:
        if isinstance(node, dict) and part not in node and part in (node.get("type"), node.get("kind")):
            continue
        if isinstance(part, str) and ("[" in part or part.startswith(("constrained-", "function-"))):
            continue  # a union branch's label, not a key of the file
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
        parts.append(part)
    return parts


def line_of(document: Any, location: list[int | str]) -> int:
    """1-based line of the deepest node of `location` that exists in the YAML."""
    line = 1
    node = document
    for part in location:
        if isinstance(node, CommentedMap) and part in node:
            line = node.lc.key(part)[0] + 1
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            line = node.lc.item(part)[0] + 1
            node = node[part]
        else:
            break
    return line
