"""The ingest bridge's options, declared once: name, default, limits and description.

`iotsim bridge` makes one command-line flag of each field (its `flag`, else `--field-name`; the
help text and default shown by `--help` come from here), a load experiment's `load.bridge` section
takes some of them (simulator/load/section.py), and the README's table of bridge options lists
them with these defaults (a test compares the three).
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic.fields import FieldInfo

from simulator.fleet import Duration, StrictModel
from simulator.ingest.fieldtypes import NOT_DECLARED, SHIPPED
from simulator.transport.client_ids import BRIDGE_CLIENT_ID, bridge_client_id_problem, group_bridge_client_id
from simulator.urls import MQTT_SCHEMES, check_url

# Client ids become directory names (the spool) and InfluxDB tags: letters, digits, '.', '_', '-',
# at most 64 (what MQTT 3.1.1 brokers must accept is 23; Mosquitto takes 65535), no leading dot.
CLIENT_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
# A group name is one topic level of `$share/{group}/...`: no `/ + # $`, nor anything else but these.
GROUP = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
TOPIC_PREFIX_PATTERN = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$"


def _flag(name: str) -> dict[str, Any]:
    return {"flag": name}


# With exit_when_idle: how long a bridge that has had no work yet waits for some (here, not in bridge.py:
# the CLI reads it for its default without importing the bridge).
FIRST_MESSAGE_TIMEOUT_S = 300.0  # with exit_when_idle: how long a bridge that has had no work yet waits for some
NO_FLAG: dict[str, Any] = {"flag": None}  # a setting for code and tests, not offered on the command line


class BridgeSettings(StrictModel):
    """What `simulator.ingest.bridge.Bridge` takes; every field but `stats_interval` is an `iotsim bridge` flag."""

    model_config = ConfigDict(allow_inf_nan=False)  # merged with StrictModel's: no unknown keys, frozen

    mqtt_url: str = Field(default="mqtt://127.0.0.1:1883", description="broker URL: mqtt://, tcp:// or mqtts://host:port", json_schema_extra=_flag("--mqtt"))
    topic_prefix: str = Field(default="yangquan", pattern=TOPIC_PREFIX_PATTERN, description="topic prefix to subscribe under ({prefix}/#)", json_schema_extra=_flag("--prefix"))
    client_id: str = Field(
        default=BRIDGE_CLIENT_ID,
        description="MQTT client id (letters, digits, . _ -, at most 64, no leading dot); keep it fixed so the session persists; with --group and no --client-id: bridge-{host name}",
    )  # fmt: skip
    group: str | None = Field(
        default=None,
        description="join bridge group NAME: subscribe $share/NAME/{prefix}/#, so the broker gives each member a share of the messages (each member its own --client-id)",
    )  # fmt: skip
    batch_size: int = Field(default=5000, ge=1, le=1_000_000, description="points per InfluxDB write")
    batch_interval: Duration = Field(default=0.01, le=3600, description="seconds a message may wait for its batch while no write is in flight (while one is, the next batch grows until it ends)")
    batch_quiet: Duration = Field(default=0.05, le=60, description="write the batch once no message has come for this many seconds (a burst goes out when it ends)")
    max_pending: int = Field(default=100_000, ge=1, le=100_000_000, description="messages held unacknowledged in memory (InfluxDB slow or down) before spooling")
    spool_dir: Path = Field(default=Path(".iotsim/spool"), description="disk spool past --max-pending, one subdirectory per client id")
    spool_limit: int = Field(default=10_000_000, ge=0, le=10**12, description="points in the spool before the bridge stops reading (the broker holds the rest); 0 = no spool")
    dead_letter_path: Path = Field(default=Path(".iotsim/dead-letters.jsonl"), description="JSON-lines file for messages that cannot be stored", json_schema_extra=_flag("--dead-letters"))
    declared_types: str = Field(
        default=SHIPPED,
        description=f"the type each reading is stored as, unless InfluxDB already holds another: {SHIPPED!r} (every shipped device type's, "
        f"simulator/schemas/readings.json), {NOT_DECLARED!r} (the first value seen decides), or a JSON file {{measurement: {{field: kind}}}}",
    )  # fmt: skip
    stats_interval: Duration = Field(default=5.0, le=3600, description="seconds between `pipeline` points about the bridge itself", json_schema_extra=NO_FLAG)

    @model_validator(mode="before")
    @classmethod
    def _member_id(cls, data: Any) -> Any:
        """A group member given no client id takes its host's: members need distinct ids."""
        if isinstance(data, dict) and data.get("group") is not None and data.get("client_id") is None:
            return {**data, "client_id": group_bridge_client_id(socket.gethostname())}
        return data

    @field_validator("group")
    @classmethod
    def _group(cls, group: str | None) -> str | None:
        if group is not None and not GROUP.fullmatch(group):
            raise ValueError(f"{group!r} is not a group name: letters, digits, '.', '_' and '-', at most 64, not starting with '.' (it is a topic level: no / + # $)")
        return group

    @property
    def topic_filter(self) -> str:
        """What the bridge subscribes to: its prefix, or its group's share of it."""
        return f"$share/{self.group}/{self.topic_prefix}/#" if self.group else f"{self.topic_prefix}/#"

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, url: str) -> str:
        return check_url(url, MQTT_SCHEMES)

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, client_id: str) -> str:
        if problem := bridge_client_id_problem(check_client_id(client_id)):
            raise ValueError(problem)
        return client_id

    @field_validator("declared_types")
    @classmethod
    def _declared_types(cls, choice: str) -> str:
        if choice.strip() == "":
            raise ValueError(f"give {SHIPPED!r}, {NOT_DECLARED!r} or a JSON file of field types")
        return choice

    @field_validator("spool_dir", "dead_letter_path")
    @classmethod
    def _named(cls, path: Path) -> Path:
        if str(path) in ("", "."):
            raise ValueError("give a path")
        return path

    @property
    def spooling(self) -> bool:
        return self.spool_limit > 0


def check_client_id(client_id: str) -> str:
    if not CLIENT_ID.fullmatch(client_id):
        raise ValueError(f"{client_id!r} is not a client id: letters, digits, '.', '_' and '-', at most 64, not starting with '.'")
    return client_id


def flag_of(name: str, field: FieldInfo) -> str | None:
    """The command-line flag of a field: its declared `flag`, else `--field-name`; None: no flag."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if "flag" in extra:
        return extra["flag"]  # type: ignore[return-value]
    return "--" + name.replace("_", "-")


def bridge_field(name: str, **overrides: Any) -> Any:
    """The declaration of bridge option `name`, for a section that offers it (simulator/load/section.py);
    `overrides` (a default, say) replace parts of it."""
    return FieldInfo.merge_field_infos(BridgeSettings.model_fields[name], **overrides)
