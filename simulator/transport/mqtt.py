"""Publishing a run's messages to an MQTT broker with paho-mqtt 2.x.

paho's network loop runs in its own thread and reconnects with exponential backoff; messages
published while the connection is down wait in paho's queue and go out after reconnecting. The
number of messages not yet acknowledged (QoS 1) or not yet written to the socket (QoS 0) is bounded
by `max_queued`: past it, `__call__` blocks, which pauses the simulation rather than growing memory.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Self
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

if TYPE_CHECKING:
    from simulator.scenario import MqttSettings


class BrokerUnreachable(Exception):
    """The broker did not accept a connection in time."""


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        tls = parts.scheme == "mqtts"
        return cls(parts.hostname or "127.0.0.1", parts.port or (8883 if tls else 1883), tls)

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


@dataclass(frozen=True)
class Credentials:
    """Who the client is to the broker: user name and password, and the CA that signed a TLS broker."""

    username: str | None = None
    password: str | None = None
    ca_file: str | None = None

    def apply(self, client: mqtt.Client, address: BrokerAddress) -> None:
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if address.tls:
            client.tls_set(ca_certs=self.ca_file)  # None: the system's trusted CAs


def password_from_environment() -> str | None:
    """MQTT_PASSWORD, or else the contents of the file MQTT_PASSWORD_FILE names (Docker secrets style)."""
    if "MQTT_PASSWORD" in os.environ:
        return os.environ["MQTT_PASSWORD"]
    path = os.environ.get("MQTT_PASSWORD_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text().strip()
    except OSError as error:
        raise BrokerUnreachable(f"MQTT_PASSWORD_FILE {path}: cannot read it ({error.strerror})") from None


def refusal(reason: object) -> str | None:
    """The broker's reason for refusing a connection, or None if it accepted."""
    return str(reason) if getattr(reason, "is_failure", False) else None


class MqttPublisher:
    def __init__(
        self,
        url: str,
        client_id: str,
        qos: int = 1,
        max_inflight: int = 100,
        max_queued: int = 1000,
        credentials: Credentials = Credentials(),
    ) -> None:
        self.address = BrokerAddress.from_url(url)
        self.refused: str | None = None
        self.qos = qos
        self.max_queued = max_queued
        self.published = 0
        self.acknowledged = 0
        self.disconnects = 0
        self._progress = threading.Condition()
        self._connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(0)  # our own bound applies, before paho's queue
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        credentials.apply(self.client, self.address)

    @classmethod
    def from_settings(cls, settings: MqttSettings, client_id: str, qos: int | None = None) -> Self:
        """A publisher as a scenario's `mqtt:` section describes it (the password from the environment)."""
        return cls(
            settings.url,
            client_id=client_id,
            qos=settings.qos if qos is None else qos,
            max_inflight=settings.max_inflight,
            max_queued=settings.max_queued,
            credentials=Credentials(settings.username, password_from_environment(), settings.ca_file),
        )

    def start(self, timeout: float = 15.0) -> None:
        self.client.connect_async(self.address.host, self.address.port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(timeout) or self.refused:
            self.client.loop_stop()
            if self.refused:
                raise BrokerUnreachable(f"the MQTT broker at {self.address} refused the connection: {self.refused}")
            raise BrokerUnreachable(f"cannot reach the MQTT broker at {self.address} (waited {timeout:.0f} s)")

    def __call__(self, topic: str, payload: bytes) -> int:
        """Publish once fewer than `max_queued` messages wait; return paho's message id."""
        if self.published - self.acknowledged >= self.max_queued:
            with self._progress:
                while self.published - self.acknowledged >= self.max_queued:
                    self._progress.wait(1.0)
        info = self.client.publish(topic, payload, self.qos)
        self.published += 1
        return info.mid

    def drain(self, timeout: float) -> bool:
        """Wait until every published message is acknowledged; False if `timeout` passed first."""
        deadline = time.monotonic() + timeout
        with self._progress:
            while self.acknowledged < self.published:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._progress.wait(min(remaining, 0.5))
        return True

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    @property
    def pending(self) -> int:
        return self.published - self.acknowledged

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object, properties: object) -> None:
        self.refused = refusal(reason)
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: object, properties: object) -> None:
        self.disconnects += 1

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason: object, properties: object) -> None:
        with self._progress:
            self.acknowledged += 1
            if self.published - self.acknowledged < self.max_queued or self.acknowledged >= self.published:
                self._progress.notify_all()
