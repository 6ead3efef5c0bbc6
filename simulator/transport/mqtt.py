"""Publishing a run's messages to an MQTT broker with paho-mqtt 2.x, from the simulation's own thread.

paho's network loop is turned by the caller's thread (simulator/transport/loop.py), not by a thread
of its own: `publish()` hands the message over at once, and every few messages, while waiting
for room, and whenever the simulation waits for the wall clock (`idle`), a turn of the loop sends
what was written and reads the PUBACKs.

One bound keeps memory flat: at most `window` messages handed to paho and not yet acknowledged
(QoS 1) or not yet written to the socket (QoS 0); past it, `__call__` waits. While the broker is
unreachable, new messages wait in an outbox instead (in memory up to `buffer_in_memory`, then in a
temporary file) and go out in order once the connection is back; past `buffer_limit` held messages,
`__call__` waits for the broker, which pauses the simulation rather than losing anything. What paho
already had in flight when the connection dropped, it sends again itself after reconnecting (QoS 1);
QoS 0 messages it had not yet written are gone with the connection and counted as `dropped`; a QoS 0
message counts as acknowledged once written, that is collected for the socket (Client.publish_qos0, or
paho's own write), and one lost with the connection after that is not noticed, as QoS 0 allows.

Client ids carry their role and are derived in one place, simulator/transport/client_ids.py: a broker
lets one connection per id, and a second client with the same id takes the first one's session.
`TakeoverWatch` notices when that happens.
"""

from __future__ import annotations

import os
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Self
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from simulator.errors import BrokerError, BrokerRefused, BrokerUnreachable, UsageError
from simulator.transport.client import QUEUE_SIZE, Client
from simulator.transport.loop import LOOP_WAIT_S, ClientLoop
from simulator.transport.outbox import Outbox
from simulator.userfiles import Refused, read_regular

if TYPE_CHECKING:
    from simulator.scenario import MqttSettings


KEEPALIVE_S = 30
CA_FILE_LIMIT = 16 * 1024 * 1024  # bytes: a CA bundle is a few hundred KiB; more is not one
PASSWORD_FILE_LIMIT = 1024  # bytes: a password is one line; more is not a password file (a device, a log)
# A turn of the network loop (send what was written, read PUBACKs) after this many publishes; a read
# costs one recv() however many acknowledgements wait.
READ_EVERY = 64
SHORT_IDLE_S = 0.005


class TakeoverWatch:
    """Notices another client using our client id. With MQTT 3.1.1 a takeover is only a close: the
    broker accepts the newcomer and closes the older connection, which reconnects and takes the id
    back. So: connections the broker closed within `short_s` of accepting them, `limit` of them within
    `window_s` (each was accepted, so the broker is reachable; an outage closes one connection, then
    refuses new ones)."""

    def __init__(self, short_s: float = 10.0, limit: int = 3, window_s: float = 30.0) -> None:
        self.short_s, self.limit, self.window_s = short_s, limit, window_s
        self.takeovers = 0  # connections closed that soon, in all
        self._connected_at: float | None = None
        self._recent: deque[float] = deque()

    def connected(self) -> None:
        self._connected_at = time.monotonic()

    def closed_by_broker(self) -> bool:
        """Note a close we did not ask for; True once it looks like a takeover fight."""
        now, since = time.monotonic(), self._connected_at
        self._connected_at = None
        if since is None or now - since > self.short_s:
            return False
        self.takeovers += 1
        self._recent.append(now)
        while now - self._recent[0] > self.window_s:
            self._recent.popleft()
        return len(self._recent) >= self.limit

    def describe(self, client_id: str, advice: str) -> str:
        return (
            f"client id {client_id} is in use by another client: the broker closed {len(self._recent)} of our connections "
            f"within {self.short_s:.0f} s of accepting them, in {self.window_s:.0f} s; each connection takes over the other's "
            f"session (messages come again, or are lost with a clean session); {advice}"
        )


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
    password: str | None = field(default=None, repr=False)  # kept out of reprs: a failed assertion or a traceback prints them
    ca_file: str | None = None

    def apply(self, client: mqtt.Client, address: BrokerAddress) -> None:
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if address.tls:
            client.tls_set_context(tls_context(self.ca_file))  # None: the system's trusted CAs


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """A client's TLS context: TLS 1.2 or newer, the broker's certificate checked against `ca_file`
    (None: the system's CAs) and its name against the host dialled, as paho's `tls_set` does; one for
    the run's connection, one shared by every device connection (not one per device: each would load
    the CA file). A CA file that cannot be read is one line (exit 2)."""
    try:
        # Read here, as the other user files (a FIFO would block ssl's own open, a device never end its read), and
        # handed over as data: no second open of a path that may have changed since.
        data = None if ca_file is None else read_regular(Path(ca_file), CA_FILE_LIMIT)
        cadata = None if data is None else (data.decode("ascii", "replace") if b"-----BEGIN" in data else data)  # PEM text, else DER
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=cadata)
    except Refused as refused:
        raise UsageError(f"CA file {ca_file} (mqtt.ca_file, --ca-file): cannot read it as a CA certificate ({refused})") from None
    except (OSError, ssl.SSLError) as error:
        raise UsageError(f"CA file {ca_file} (mqtt.ca_file, --ca-file): cannot read it as a CA certificate ({error.strerror or error})") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def password_from_environment(variable: str = "MQTT_PASSWORD") -> str | None:
    """$MQTT_PASSWORD, or else the contents of the file $MQTT_PASSWORD_FILE names (Docker secrets
    style); another `variable` and `variable`_FILE likewise."""
    if variable in os.environ:
        return os.environ[variable]
    path = os.environ.get(f"{variable}_FILE")
    if not path:
        return None
    try:  # a FIFO would block the read, /dev/zero never end it; a link (a Docker or Kubernetes secret) is fine
        return read_regular(Path(path), PASSWORD_FILE_LIMIT).decode("utf-8").strip()
    except Refused as refused:
        raise UsageError(f"{variable}_FILE {path}: {refused}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{variable}_FILE {path}: not a password file (not UTF-8 text)") from None


def refusal(reason: object) -> str | None:
    """The broker's reason for refusing a connection, or None if it accepted."""
    return str(reason) if getattr(reason, "is_failure", False) else None


@dataclass
class Outage:
    """One loss of the broker connection, in monotonic seconds, for the recovery figures."""

    lost_at: float
    back_at: float | None = None  # connected again
    caught_up_at: float | None = None  # everything held meanwhile handed to paho again
    held: int = 0

    @property
    def reconnect_s(self) -> float | None:
        return None if self.back_at is None else self.back_at - self.lost_at

    @property
    def catch_up_s(self) -> float | None:
        return None if self.caught_up_at is None or self.back_at is None else self.caught_up_at - self.back_at

    def describe(self) -> str:
        if self.reconnect_s is None:
            return f"lost the broker and it was not back by the end; {self.held} messages held"
        text = f"lost the broker for {self.reconnect_s:.1f} s; {self.held} messages held meanwhile"
        if self.held and self.catch_up_s is not None:
            text += f", all handed over again {self.catch_up_s:.2f} s after reconnecting"
        return text


class MqttPublisher:
    """Publishes from the caller's thread; every wait (for room, for the broker, for the wall clock
    through `idle`) runs paho's network loop meanwhile."""

    def __init__(
        self,
        url: str,
        client_id: str,
        qos: int = 1,
        window: int = 1000,
        credentials: Credentials = Credentials(),
        buffer_in_memory: int = 10_000,
        buffer_limit: int = 1_000_000,
        buffer_dir: str | None = None,
    ) -> None:
        self.address = BrokerAddress.from_url(url)
        self.refused: str | None = None
        self.qos = qos
        self.window = window
        self.buffer_limit = buffer_limit
        self.outbox = Outbox(buffer_in_memory, buffer_dir)
        self.outages: list[Outage] = []
        self.published = 0
        self.acknowledged = 0
        self.dropped = 0  # QoS 0 messages paho gave up with a lost connection (QoS 1 ones it sends again)
        self.disconnects = 0
        self.client_id = client_id
        self.takeover = TakeoverWatch()
        self.failure: BrokerError | None = None  # raised from the next turn of the network loop
        self.stopping = False
        self.online = False
        self._answered = False  # the broker accepted or refused the first connection
        self._unread = 0  # publishes since the last turn of the network loop
        # QoS 0, in order: the ids of messages written (publish_qos0), and paho's infos of those its publish() took, until counted
        self._unwritten: deque[int | mqtt.MQTTMessageInfo] = deque()
        self.client = Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        # Our window bounds what is in flight; paho's own bound would re-scan its table on every PUBACK.
        self.client.max_inflight_messages_set(0)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        # QoS 0 is "acknowledged" once written; paho would tell on_publish, building an MQTT 5
        # ReasonCode and Properties for every message (a third of the publisher's CPU), so the
        # publisher counts what publish_qos0 wrote, and looks at the MessageInfo of what paho took.
        self.client.on_publish = self._on_publish if qos > 0 else None
        credentials.apply(self.client, self.address)
        self.loop = ClientLoop(self.client)

    @classmethod
    def from_settings(cls, settings: MqttSettings, client_id: str, qos: int | None = None) -> Self:
        """A publisher as a scenario's `mqtt:` section describes it (the password from the environment)."""
        return cls(
            settings.url,
            client_id=client_id,
            qos=settings.qos if qos is None else qos,
            window=min(settings.max_inflight, settings.max_queued),
            credentials=Credentials(settings.username, password_from_environment(), settings.ca_file),
            buffer_in_memory=settings.buffer_in_memory,
            buffer_limit=settings.buffer_limit,
            buffer_dir=settings.buffer_dir,
        )

    def start(self, timeout: float = 15.0) -> None:
        """Connect, trying again with backoff until the broker answers or `timeout` passes."""
        self.client.connect_async(self.address.host, self.address.port, keepalive=KEEPALIVE_S)
        deadline = time.monotonic() + timeout
        while not self._answered and (remaining := deadline - time.monotonic()) > 0:
            self._run_network(min(remaining, 0.25))
        if self.refused:
            raise BrokerRefused(f"the MQTT broker at {self.address} refused the connection: {self.refused}")
        if not self._answered:
            why = f": {self.loop.last_error}" if self.loop.last_error else ""
            raise BrokerUnreachable(f"cannot reach the MQTT broker at {self.address} (waited {timeout:.0f} s){why}")

    def __call__(self, topic: str, payload: bytes) -> None:
        """Publish, or hold the message in the outbox while the broker is unreachable."""
        self._unread += 1
        if self._unread >= READ_EVERY:
            self._run_network(0.0)
        if self.online and not self.outbox and self.published - self.acknowledged - self.dropped < self.window:
            self._publish(topic, payload)  # the common case, in as few calls as it takes
            if self._unwritten:
                self._count_written()
            return
        if self.outbox or not self.online:
            self._send_held()
            if self.outbox or not self.online:
                self._hold(topic, payload)
                return
        if self._wait_for_room():
            self._publish(topic, payload)
            self._count_written()
        else:
            self._hold(topic, payload)  # the connection dropped while we waited

    def _publish(self, topic: str, payload: bytes) -> int:
        """Hand one message to paho, which writes it to the socket at once; every message goes out through here."""
        if self.qos == 1:
            rc, mid = self.client.publish_qos1(topic, payload)  # paho's publish() without its per-message objects
            while rc == QUEUE_SIZE:
                # The next message id is still in flight (a PUBACK not yet come), so paho did not take the
                # message: wait for PUBACKs (through a reconnect, if need be) and hand it over again.
                self._run_network(LOOP_WAIT_S)
                rc, mid = self.client.publish_qos1(topic, payload)
            self.published += 1  # MQTT_ERR_NO_CONN too: paho keeps the message and sends it after reconnecting
            return mid
        if self.qos == 0:
            sent = self.client.publish_qos0(topic, payload)  # its id if written, paho's MessageInfo if paho took it
            self.published += 1
            self._unwritten.append(sent)
            return sent if type(sent) is int else sent.mid
        info = self.client.publish(topic, payload, self.qos)
        self.published += 1
        return info.mid

    def _acknowledged(self, mid: int) -> None:
        """A message's PUBACK came (QoS 1), or it was written to the socket (QoS 0)."""
        self.acknowledged += 1

    def _count_written(self) -> None:
        """QoS 0: acknowledge the messages paho has written since the last look (it writes in order).
        Called after `_publish` returns, not inside it, so a subclass's `_publish` has noted the message first."""
        unwritten = self._unwritten
        while unwritten:
            sent = unwritten[0]
            if type(sent) is not int:  # paho's MessageInfo
                try:
                    if not sent.is_published():
                        return
                except RuntimeError:  # not written before the connection dropped (or not connected): gone, as QoS 0 allows
                    self.dropped += 1
                    unwritten.popleft()
                    continue
                sent = sent.mid
            unwritten.popleft()
            self._acknowledged(sent)

    def idle(self, seconds: float) -> None:
        """Let `seconds` of wall-clock time pass while keeping the connection: send what was written,
        read acknowledgements, keep alive, reconnect. The paced simulation waits through here.

        A short wait (the pace of thousands of messages a second) is one turn and a sleep: waking
        for every acknowledgement as it arrives would cost a turn each."""
        deadline = time.monotonic() + seconds
        if seconds <= 0 or (seconds < SHORT_IDLE_S and self.online):
            # One turn even for no time and offline: a caller that serves other loops too (the device
            # sessions' SessionSink) idles us for 0 s, and only a turn reconnects after an outage.
            self._run_network(0.0)
            time.sleep(max(deadline - time.monotonic(), 0.0))
            return
        while (remaining := deadline - time.monotonic()) > 0:
            self._run_network(remaining)

    def drain(self, timeout: float) -> bool:
        """Send everything held and wait until all is acknowledged (QoS 0: on the socket); False if
        `timeout` passed first."""
        deadline = time.monotonic() + timeout
        while self.outbox or self.pending or self.client.want_write():
            if not (self.outbox or self.pending):
                # Only writes left (QoS 0): send them now; a turn would wait up to a second for a read that does not come.
                self.loop.flush()
                if not self.client.want_write():
                    break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._run_network(min(remaining, LOOP_WAIT_S))
            self._send_held()
        return True

    def stop(self, timeout: float = 2.0) -> None:
        """Say goodbye to the broker (DISCONNECT) and close the connection."""
        self.stopping = True
        self.loop.disconnect(timeout)

    @property
    def pending(self) -> int:
        """Handed to paho and not yet acknowledged (nor dropped)."""
        return self.published - self.acknowledged - self.dropped

    @property
    def buffered(self) -> int:
        """Held in the outbox while the broker was unreachable."""
        return len(self.outbox)

    # --- holding messages while the broker is unreachable ---

    def _hold(self, topic: str, payload: bytes) -> None:
        while len(self.outbox) >= self.buffer_limit:
            self._run_network(LOOP_WAIT_S)  # full: pause the simulation until the broker is back
            self._send_held()
        self.outbox.put(topic, payload)
        if self.outages:
            self.outages[-1].held += 1

    def _send_held(self) -> None:
        """Hand held messages to paho, oldest first, while the connection lasts."""
        if not self.outbox:
            return
        while self.outbox and self._wait_for_room():
            message = self.outbox.take()
            assert message is not None
            self._publish(*message)
            self._count_written()
        if not self.outbox and self.outages and self.outages[-1].caught_up_at is None:
            self.outages[-1].caught_up_at = time.monotonic()

    def _wait_for_room(self) -> bool:
        """Wait until fewer than `window` messages are unacknowledged; False if offline meanwhile."""
        while self.online and self.pending >= self.window:
            self._run_network(LOOP_WAIT_S)  # returns as soon as PUBACKs arrive
        return self.online

    # --- paho's network loop, in this thread ---

    def _run_network(self, wait: float) -> None:
        self._unread = 0
        self.loop.turn(wait)
        self._count_written()
        if self.failure is not None:
            raise self.failure

    # --- paho callbacks (from within publish() and the network loop above) ---

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object, properties: object) -> None:
        self.refused = refusal(reason)
        if not self.refused:
            self.loop.connected()
            self.takeover.connected()
            if self.outages and self.outages[-1].back_at is None:
                self.outages[-1].back_at = time.monotonic()
            self.online = True
        self._answered = True

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: object, properties: object) -> None:
        self.disconnects += 1
        if self.online and not self.stopping:
            self.outages.append(Outage(lost_at=time.monotonic()))
            if self.takeover.closed_by_broker():
                advice = "give each run its own id (two runs of one scenario at once? set another mqtt.client_id_prefix)"
                self.failure = BrokerError(self.takeover.describe(self.client_id, advice))
        self.online = False
        self.loop.disconnected()

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason: object, properties: object) -> None:
        self._acknowledged(mid)
