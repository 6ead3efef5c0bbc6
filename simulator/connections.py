"""Which MQTT connection carries each device's messages in `iotsim run` (issue 15).

A fleet's `connection` says it: `shared` (the default) publishes through the run's one connection,
as before; `device` gives each device its own connection (client id = the device id); `gateway` puts
every `gateway_size` consecutive devices behind one gateway connection (`{id_prefix}-gw-NNNN`). The
own connections are `DeviceSessions` (simulator/transport/sessions.py) with the scenario's
`mqtt.keepalive`, `mqtt.connect_window`, `mqtt.protocol` and each fleet's `reconnect` policy. Topics
and payloads do not change: only which connection carries them.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.errors import UsageError
from simulator.fleet import ReconnectPolicy
from simulator.scenario import Scenario
from simulator.shard import Shard
from simulator.transport.mqtt import BrokerAddress
from simulator.transport.sessions import DeviceSessions, SessionSettings


@dataclass(frozen=True)
class ConnectionPlan:
    """The run's own connections: their client ids (each once), each one's reconnect policy, and the
    connection of every device that has one."""

    ids: list[str]
    policies: list[ReconnectPolicy]
    route: dict[str, str]  # device id → connection id
    settings: SessionSettings

    def sessions(self) -> DeviceSessions:
        return DeviceSessions(self.ids, self.settings, policies=self.policies)

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


def connection_plan(scenario: Scenario, shard: Shard = Shard(), password: str | None = None) -> ConnectionPlan | None:
    """The own connections of the scenario's fleets that the shard runs; None when every fleet shares the run's connection."""
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
    )
    return ConnectionPlan(list(ids), list(ids.values()), route, settings)
