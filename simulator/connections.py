"""Which MQTT connection carries each device's messages in `iotsim run` (issue 15).

A fleet's `connection` says it: `shared` (the default) publishes through the run's one connection,
as before; `device` gives each device its own connection (client id = the device id); `gateway` puts
every `gateway_size` consecutive devices behind one gateway connection (`{id_prefix}-gw-NNNN`). The
own connections are `DeviceSessions` (simulator/transport/sessions.py) with the scenario's
`mqtt.keepalive`, `mqtt.connect_window`, `mqtt.protocol` and each fleet's `reconnect` policy. Topics
and payloads do not change: only which connection carries them.

Logins: every own connection logs in as `mqtt.username` with MQTT_PASSWORD, or, with
`mqtt.device_passwords: FOLDER` (the folder brokers/secure/make-passwords.sh wrote), each as itself:
user name = its client id, password = the line in FOLDER/passwords/{id}, all read before any connects
(docs/security.md). An mqtts:// broker: every own connection speaks TLS, checked against `mqtt.ca_file`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from simulator.errors import UsageError
from simulator.fleet import ReconnectPolicy
from simulator.scenario import Scenario
from simulator.shard import Shard
from simulator.transport.mqtt import PASSWORD_FILE_LIMIT, BrokerAddress
from simulator.transport.sessions import DeviceSessions, SessionSettings
from simulator.userfiles import Refused, read_regular


@dataclass(frozen=True)
class ConnectionPlan:
    """The run's own connections: their client ids (each once), each one's reconnect policy, and the
    connection of every device that has one."""

    ids: list[str]
    policies: list[ReconnectPolicy]
    route: dict[str, str]  # device id → connection id
    settings: SessionSettings
    passwords: list[str] | None = field(default=None, repr=False)  # each connection's own password (mqtt.device_passwords), in the order of `ids`; kept out of reprs

    def sessions(self) -> DeviceSessions:
        return DeviceSessions(self.ids, self.settings, policies=self.policies, passwords=self.passwords)

    def describe(self) -> str:
        gateways = len(self.ids) - sum(1 for device, connection in self.route.items() if device == connection)
        return f"{len(self.ids)} own connections ({len(self.route)} devices" + (f", {gateways} gateways)" if gateways else ")")


def refuse_split_gateways(scenario: Scenario, count: int, flag: str = "--shard") -> None:
    """A gateway fleet in a run of `count` shards is one line naming `flag` (`--shard`, or `iotsim run
    --workers`, which checks before any child connects)."""
    if count < 2:
        return
    for number, fleet in enumerate(scenario.fleets):
        if fleet.connection == "gateway":
            raise UsageError(f"{flag}: fleets.{number} has connection: gateway, whose devices shards would split between them; run it unsharded or give it connection: device")


def connection_plan(scenario: Scenario, shard: Shard = Shard(), password: str | None = None, source: str = "FILE") -> ConnectionPlan | None:
    """The own connections of the scenario's fleets that the shard runs; None when every fleet shares the run's connection.
    `source`: the scenario's file, for the line that says how to make a missing password."""
    refuse_split_gateways(scenario, shard.count)
    ids: dict[str, ReconnectPolicy] = {}
    route: dict[str, str] = {}
    for fleet in scenario.fleets:
        if fleet.connection == "shared":
            continue
        for index, device_id in enumerate(fleet.device_ids()):
            if not shard.owns(device_id):
                continue
            connection = fleet.connection_of(index, device_id)
            assert connection is not None  # a fleet that is not shared
            route[device_id] = connection
            ids.setdefault(connection, fleet.reconnect)
    if not route:
        return None
    mqtt = scenario.mqtt
    address = BrokerAddress.from_url(mqtt.url)
    settings = SessionSettings(
        host=address.host,
        port=address.port,
        prefix=mqtt.topic_prefix,
        keepalive=mqtt.keepalive,
        connect_window=mqtt.connect_window,
        protocol=mqtt.protocol,
        seed=scenario.seed,
        username=mqtt.username,
        password=password,
        tls=address.tls,
        ca_file=mqtt.ca_file,
    )
    passwords = device_passwords(Path(mqtt.device_passwords), list(ids), source) if mqtt.device_passwords else None
    return ConnectionPlan(list(ids), list(ids.values()), route, settings, passwords)


def device_passwords(folder: Path, ids: list[str], source: str) -> list[str]:
    """Each connection's password, the first line of `folder`/passwords/{id} (make-passwords.sh's
    layout); UsageError naming the first that is missing, unreadable, empty or not a small regular file
    (a FIFO, a device, a dangling link), and how to make them. Links are followed: a Kubernetes secret
    volume is a folder of links (passwords/ID -> ..data/ID)."""
    make = f"generate them: iotsim devices {source} | DEVICES_FROM=- brokers/secure/make-passwords.sh {folder}"
    passwords = []
    for connection in ids:
        path = folder / "passwords" / connection
        try:
            password = read_regular(path, PASSWORD_FILE_LIMIT).decode("utf-8").split("\n", 1)[0].strip()
        except Refused as refused:
            raise UsageError(f"{path}: {refused}; {make}") from None
        except UnicodeDecodeError:
            raise UsageError(f"{path}: not a password file (not UTF-8 text); {make}") from None
        if not password:
            raise UsageError(f"{path}: empty; {make}")
        passwords.append(password)
    return passwords


def gateway_acl(scenario: Scenario) -> list[str]:
    """Mosquitto ACL lines for the scenario's gateways (`iotsim devices FILE --acl`): each gateway, logged
    in as itself, may publish its devices' readings and events; the profile's patterns give it its status.
    Without them the broker refuses those publishes (MQTT 3.1.1: acknowledged and dropped)."""
    lines: list[str] = []
    for number, fleet in enumerate(scenario.fleets):
        if fleet.connection != "gateway":
            continue
        lines.append(f"# fleets.{number}: {fleet.count} {fleet.type} devices behind {len(fleet.gateway_ids())} gateways")
        gateway = None
        for index, device_id in enumerate(fleet.device_ids()):
            if (connection := fleet.connection_of(index, device_id)) != gateway:
                gateway = connection
                lines.append(f"user {gateway}")
            lines.append(f"topic write {scenario.mqtt.topic_prefix}/+/+/{device_id}")
    return lines
