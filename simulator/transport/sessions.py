"""Every device its own MQTT connection (issue 15): thousands of paho clients on one epoll loop.

A real meter or station holds its own session: its client id, keepalive and last will. `DeviceSessions`
drives one paho client per device from one `selectors.EpollSelector`, through paho's documented
external-loop API (`socket()`, `loop_read()`, `loop_write()`, `loop_misc()` and the on_socket_*
callbacks): no thread per device, no select() limit of 1,024 sockets. Measured side by side
(benchmarks/connection_engines.py, docs/scale.md), paho clients on one external epoll loop cost
~10.7 KB a connection against ~20-25 KB for aiomqtt / gmqtt on uvloop and connected 19,000 fastest;
gmqtt spends less CPU (idle a third of ours, per message a little less), aiomqtt more.

A device's session:
- client id = the device id; keepalive `keepalive` s (PINGREQs keep an idle device's session);
- a last will on `{prefix}/status/{device_id}`, retained, QoS 1, `{"device_id", "online": false, "ts"}`
  (`ts` is when that connection was made: the broker sends the will later, unchanged), and on every
  CONNACK the same topic retained with `"online": true` (birth and death, as Sparkplug does);
- its first connect at an offset in [0, `connect_window`) s drawn from its own random stream, so a
  run's connect order is the same every time; after losing the broker it waits by its reconnect
  policy (`ReconnectPolicy`, a fleet's `reconnect:`) (exponential or fixed, full jitter or none) before trying again;
- a bounded QoS 1 outbox: messages wait there while the device is disconnected (a broker outage loses
  nothing) and go to paho `max_inflight` at a time. After a reconnect the birth goes first, then what
  paho had in flight (taken back from it, oldest first; an unacknowledged status of the lost connection
  is dropped, its will having said the last word), then the outbox: a device's messages reach the
  broker in seq order. A full outbox drops its oldest message and counts it (`SessionStats.overflowed`).

Logins: every device as `settings.username`, or each as itself (user = its id, its own password:
`passwords`, the secure profile's per-device logins). TLS (`settings.tls`, an mqtts:// broker): one
SSLContext for every device. A connection opens on the loop, never blocking it: the TCP connect, then
over TLS the handshake, each step taken when the socket is ready, the whole given up after
CONNECT_TIMEOUT_S (a failed connect); then paho gets the socket and sends CONNECT. (paho's own connect
and TLS block in `reconnect()`: against a broker that takes the TCP connect but does not answer, or
whose accept queue is full, that held the loop 5 s per device, every other device unserved meanwhile.)

`kill()` is a battery death: the device's socket goes silent without DISCONNECT (it stays open, read
by nobody), so the broker fires the will once 1.5 keepalives pass without a packet, as for a real
device; `revive()` connects it again. In `iotsim run` a device's `dropout` or `battery_death` fault
does that (`SessionSink.fault`); an idle device keeps its session with PINGREQs.

One source address has ~28,000 ephemeral ports, and finding a free one slows long before they run
out, so connections to a loopback broker spread over 127.0.0.1, 127.0.0.2, ..., 10,000 each
(`source_addresses`). Each connection is one open file:
the limit is raised to the hard limit at start, and a fleet the process cannot hold is one line saying
how many files it needs and how to get them (`OpenFilesLimit`).
"""

from __future__ import annotations

import errno
import heapq
import ipaddress
import math
import os
import resource
import selectors
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import paho.mqtt.client as mqtt
from hdrh.histogram import HdrHistogram
from paho.mqtt.enums import CallbackAPIVersion

from simulator.errors import UsageError
from simulator.fleet import ReconnectPolicy
from simulator.randomness import Stream, stream_key
from simulator.transport.mqtt import tls_context

KEEPALIVE_S = 60
# Connections to one broker per loopback source address. One address has ~28,000 ephemeral ports
# (32768-60999), but the kernel's search for a free one slows as they fill (connect() takes even ports
# first): connecting 19,000 devices took 36 s from one address, 19 s spread over two.
PORTS_PER_ADDRESS = 10_000
# Files the process holds besides its device sockets (the epoll descriptor, logs, the run's own
# connection, InfluxDB's): asked for on top of one per device.
FILES_MARGIN = 64
OUTBOX_LIMIT = 1_000  # messages a device holds while disconnected: 10 days of 15-minute readings
MAX_INFLIGHT = 20  # messages a device hands to paho before waiting for PUBACKs (paho's own default)
# paho's keepalive bookkeeping (PINGREQ when due, a missing PINGRESP noticed) runs for every connected
# device once a second: ~2 µs each, so 19,000 devices cost ~4 % of a core.
MISC_INTERVAL_S = 1.0
# Connect attempts made in one turn before the loop reads again, and connections at most opening or
# waiting for their CONNACK: past Mosquitto's accept queue (a backlog of 100) the kernel drops the SYN
# and the connect waits a second for its retry. Bounding the handshakes keeps that queue short.
CONNECTS_PER_TURN = 64
MAX_CONNECTING = 64
CONNECT_TIMEOUT_S = 5.0
# A killed device's silent socket stays open this long past two keepalives: Mosquitto notices a
# missed keepalive up to a couple of seconds late, and a socket closed before then would be a close
# (its will at once), not a silence.
HOLD_MARGIN_S = 10.0
TLS_PENDING_READS = 64  # reads of bytes OpenSSL already holds, at most, after one readable event
SETTLE_S = 1.0  # how long a leaving device's last messages may take to be acknowledged (loopback: ms)
LATENCY_MAX_MS = 3_600_000  # the connect-latency histogram's range: 1 ms to an hour, 3 digits
_CONNECT, _RELEASE = 0, 1  # what a timer does: try to connect, or close a dead device's held socket

Protocol = Literal["3.1.1", "5"]
PROTOCOLS: dict[str, int] = {"3.1.1": mqtt.MQTTv311, "5": mqtt.MQTTv5}


# Linux's IP_BIND_ADDRESS_NO_PORT (Python names it from 3.12 on): a bind() that leaves the port to connect().
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


class DeviceClient(mqtt.Client):
    """paho's client, connecting without first binding to a port of its own.

    paho's connect binds to `(bind_address, 0)` even without a bind address: the kernel then looks for
    a port free for any destination, which grows with the connections held. Connecting 19,000 devices
    took 55.6 s here, 27.7 s of it in bind() (1.5 ms each). connect() alone picks a port free for its
    own destination; with a source address, IP_BIND_ADDRESS_NO_PORT leaves the port to connect() as
    well. paho has no public way to change how it opens the socket: this overrides its
    `_create_socket_connection` (no proxies, which device sessions do not use). It hands paho the
    connection `DeviceSessions` opened on its loop (`ready_socket`: connected, over TLS its handshake
    done; paho's own TLS set-up is not used, it would complete the handshake blocking)."""

    def __init__(self, *args: Any, source_address: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.source_address = source_address
        self.ready_socket: socket.socket | None = None  # a connection opened on the loop: the next reconnect() takes it

    def _create_socket_connection(self) -> socket.socket:
        sock, self.ready_socket = self.ready_socket, None
        return sock if sock is not None else self.tcp_connect()

    def tcp_connect(self, blocking: bool = True) -> socket.socket:
        """A TCP connection to the broker from `source_address` if set; not `blocking`: under way (done
        when the socket is writable, its SO_ERROR the outcome)."""
        family, kind, proto, _, address = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        try:
            if self.source_address:
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((self.source_address, 0))
            if blocking:
                sock.settimeout(self.connect_timeout)
                sock.connect(address)
            else:
                sock.setblocking(False)
                error = sock.connect_ex(address)
                if error not in (0, errno.EINPROGRESS):
                    raise OSError(error, os.strerror(error))
        except OSError:
            sock.close()
            raise
        return sock


class OpenFilesLimit(UsageError):
    """The process may not open a file per device connection (exit 2: the line says how to get them)."""


def reconnect_delay(policy: ReconnectPolicy, attempt: int, rng: Stream) -> float:
    """Seconds to wait before retry number `attempt` (0: the first after a loss): `exponential` doubles
    from `min` up to `max`, `fixed` waits `min`; `full` jitter draws from [0, that], `none` waits that."""
    base = policy.min if policy.policy == "fixed" else min(policy.max, policy.min * 2.0 ** min(attempt, 60))
    return rng.uniform(0.0, base) if policy.jitter == "full" else base


@dataclass(frozen=True)
class SessionSettings:
    """How the devices connect; one value for every device of a `DeviceSessions`."""

    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = "yangquan"
    keepalive: int = KEEPALIVE_S
    connect_window: float = 0.0
    protocol: Protocol = "3.1.1"
    reconnect: ReconnectPolicy = ReconnectPolicy()
    seed: int = 0
    # Source addresses to spread connections over; None: as many of 127.0.0.1, .2, ... as the fleet
    # needs when the broker is on loopback (PORTS_PER_ADDRESS connections each), else the kernel's choice.
    source_addresses: tuple[str, ...] | None = None
    outbox_limit: int = OUTBOX_LIMIT
    max_inflight: int = MAX_INFLIGHT
    # One login for every device (`mqtt.username`, MQTT_PASSWORD), unless DeviceSessions gets each
    # device's own password (`mqtt.device_passwords`), when every device logs in as itself.
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # kept out of reprs: they end up in logs
    # MQTT over TLS (an mqtts:// broker), the server's certificate checked against `ca_file`
    # (None: the system's CAs); one SSLContext for every device.
    tls: bool = False
    ca_file: str | None = None


@dataclass
class SessionStats:
    """The sessions' counters, all since the start; `connected` is now."""

    connected: int = 0
    connects: int = 0  # CONNACKs accepted, first connects and reconnects
    reconnects: int = 0  # accepted CONNACKs of devices that had been connected before
    connect_failures: int = 0  # connects that failed (broker down) or timed out (TCP, TLS handshake, no CONNACK) and CONNACKs that refused
    disconnects: int = 0  # connections lost (broker gone, keepalive missed, killed)
    queued: int = 0  # messages put into outboxes
    sent: int = 0  # messages handed to paho
    acknowledged: int = 0  # their PUBACKs
    refused: int = 0  # PUBACKs with a failure reason (MQTT 5; e.g. 0x87, the ACL): the broker dropped the message
    overflowed: int = 0  # messages dropped from full outboxes, oldest first
    abandoned: int = 0  # messages a device that was dead at close() still held, unsent or unacknowledged (counted then)
    stranded: int = 0  # messages a live device still held when close() ended (not connected: e.g. its login refused), never acknowledged
    statuses: int = 0  # births and clean-close deaths published (retained, on the status topics)
    latency_ms: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, LATENCY_MAX_MS, 3))  # CONNECT → CONNACK


class Session:
    """One device's connection and what it holds."""

    __slots__ = (
        "attempt",
        "client",
        "closing",
        "connect_started",
        "connect_ts",
        "connected",
        "connecting",
        "device_id",
        "ever_connected",
        "generation",
        "opening",
        "opening_due",
        "held",
        "index",
        "inflight",
        "killed",
        "outbox",
        "overflowed",
        "reconnect",
        "refusal",
        "rng",
        "status_mids",
        "status_topic",
    )  # fmt: skip

    def __init__(self, index: int, device_id: str, client: mqtt.Client, rng: Stream, reconnect: ReconnectPolicy, status_topic: str, outbox_limit: int) -> None:
        self.index = index
        self.device_id = device_id
        self.client = client
        self.rng = rng
        self.reconnect = reconnect
        self.status_topic = status_topic
        self.outbox: deque[tuple[str, bytes]] = deque(maxlen=outbox_limit)
        self.inflight = 0  # messages handed to paho, PUBACK not yet read
        self.status_mids: tuple[int, ...] = ()  # births (and the death of a clean close) not yet acknowledged
        self.connected = False
        self.connecting = False  # CONNECT sent, CONNACK not yet read
        self.ever_connected = False
        self.attempt = 0  # failed connects since the last success
        self.connect_started = 0.0
        self.connect_ts = 0  # the wall-clock ms of the connection's will and birth: one status point for both
        self.killed = False
        self.closing = False
        self.held: socket.socket | None = None  # a killed device's silent socket
        self.opening: socket.socket | None = None  # its connection being opened (TCP connect, TLS handshake), not yet paho's
        self.opening_due = 0.0  # when that gives up (monotonic s)
        self.generation = 0  # kill() and revive() each begin a new life: a timer of an earlier one does nothing
        self.overflowed = 0
        self.refusal: str | None = None  # the broker's reason when it refused the last CONNECT (a wrong password, say)


def status_payload(device_id: str, online: bool, ts: int) -> bytes:
    return orjson.dumps({"device_id": device_id, "online": online, "ts": ts})


def connect_offset(seed: int, device_id: str, window: float) -> float:
    """When, within the connect window, the device first connects: from its own stream, the same every run."""
    return Stream(stream_key(seed, f"{device_id}/connect")).uniform(0.0, window) if window > 0 else 0.0


def tcp_connected(sock: socket.socket) -> bool:
    """A non-blocking connect is done (it has a peer), not still under way or failed."""
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def source_addresses(count: int, host: str) -> tuple[str, ...]:
    """Loopback source addresses enough for `count` connections to `host`; () when one address does
    (or the broker is not on loopback, where 127.0.0.x could not reach it): the kernel then chooses."""
    needed = math.ceil(count / PORTS_PER_ADDRESS)
    if needed <= 1 or not _loopback(host):
        return ()
    return tuple(f"127.0.0.{n}" for n in range(1, needed + 1))


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def raise_open_files(connections: int) -> int:
    """Raise the soft open-files limit to the hard one; the limit now. `OpenFilesLimit` if it is still
    too low for `connections` sockets besides the files the process needs anyway."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    needed = connections + FILES_MARGIN
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise OpenFilesLimit(
            f"{connections} device connections need {needed} open files, but this process may open {soft} (ulimit -Hn): "
            f"raise the hard limit (as root: `ulimit -Hn {needed}` before starting, or LimitNOFILE={needed} for a service) "
            "or spread the fleet over more processes (iotsim run --shard, iotsim load --workers)"
        )
    return soft


class DeviceSessions:
    """Many devices' own MQTT connections, turned by one epoll loop in the caller's thread.

    `start()` schedules the first connects; `publish()` queues a device's message; `turn()` runs the
    loop once (call it often, or `run_until()`); `close()` says goodbye for every device."""

    def __init__(
        self,
        device_ids: Sequence[str],
        settings: SessionSettings,
        clock_ms: Callable[[], int] = wall_ms,
        policies: Sequence[ReconnectPolicy] | None = None,
        passwords: Sequence[str] | None = None,
    ) -> None:
        """`policies`: each device's reconnect policy (its fleet's), else `settings.reconnect` for all.
        `passwords`: each device's own password, its user name its id (the secure profile's
        per-device logins), else `settings.username` and `settings.password` for all."""
        raise_open_files(len(device_ids))
        self.settings = settings
        self.tls = tls_context(settings.ca_file) if settings.tls else None
        self.clock_ms = clock_ms
        self.stats = SessionStats()
        self.selector = selectors.EpollSelector()
        addresses = settings.source_addresses
        self.addresses = addresses if addresses is not None else source_addresses(len(device_ids), settings.host)
        policies = policies if policies is not None else [settings.reconnect] * len(device_ids)
        logins = zip(device_ids, passwords, strict=True) if passwords is not None else [(settings.username, settings.password)] * len(device_ids)
        self.sessions = [
            self._session(index, device_id, policy, login) for index, (device_id, policy, login) in enumerate(zip(device_ids, policies, logins, strict=True))
        ]
        self.by_id = {session.device_id: session for session in self.sessions}
        if len(self.by_id) != len(self.sessions):
            raise ValueError("device ids must be unique: each is a client id")
        self._timers: list[tuple[float, int, int, int, int]] = []  # (due, tie, kind, session index, its generation)
        self._killed = 0
        self._connecting = 0
        self._opening: dict[int, Session] = {}  # session index → its session, its connection being opened
        self._ties = 0
        self._next_misc = 0.0
        self._close_ms: int | None = None  # when close() began: the ts of the clean close's deaths
        self._disconnecting = False  # close() sends the DISCONNECTs now: nothing more is published

    # --- building ---

    def _session(self, index: int, device_id: str, policy: ReconnectPolicy, login: tuple[str | None, str | None]) -> Session:
        settings = self.settings
        client = DeviceClient(
            CallbackAPIVersion.VERSION2,
            client_id=device_id,
            protocol=PROTOCOLS[settings.protocol],
            clean_session=True if settings.protocol == "3.1.1" else None,
            source_address=self.addresses[index % len(self.addresses)] if self.addresses else "",
        )
        username, password = login
        if username is not None:
            client.username_pw_set(username, password)
        client.connect_timeout = CONNECT_TIMEOUT_S
        client.max_inflight_messages_set(settings.max_inflight)
        if settings.protocol == "5":
            client.connect_async(settings.host, settings.port, settings.keepalive, clean_start=True)
        else:
            client.connect_async(settings.host, settings.port, settings.keepalive)
        rng = Stream(stream_key(settings.seed, f"{device_id}/reconnect"))  # not the stream of its readings
        session = Session(index, device_id, client, rng, policy, f"{settings.prefix}/status/{device_id}", settings.outbox_limit)
        client.user_data_set(session)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        return session

    # --- what the caller does ---

    def start(self, later: Collection[str] = ()) -> None:
        """Schedule every device's first connect, at its own offset within the connect window; the
        devices in `later` wait for their `connect()` (a load experiment's ramp of connections)."""
        now = time.monotonic()
        settings = self.settings
        for session in self.sessions:
            if session.device_id not in later:
                self._schedule(now + connect_offset(settings.seed, session.device_id, settings.connect_window), _CONNECT, session)

    def connect(self, device_id: str) -> None:
        """The device connects now (and after losing the broker again, by its policy) until `disconnect()`."""
        session = self.by_id[device_id]
        if session.killed or (session.connected and not session.closing):
            return
        if session.closing:  # left just now: its DISCONNECT goes out and the socket closes first
            self.run_until(lambda: session.client.socket() is None, SETTLE_S)
        session.closing = False
        session.attempt = 0
        self._schedule(time.monotonic(), _CONNECT, session)

    def disconnect(self, device_id: str) -> None:
        """The device leaves cleanly: once its messages are acknowledged, its death (retained, `online:
        false`) and DISCONNECT, so the broker discards its will; it stays away until `connect()`. What a
        device away from the broker still holds waits in its outbox (sent when it connects again)."""
        session = self.by_id[device_id]
        if session.closing or session.killed:
            return
        session.closing = True
        if session.opening is not None:
            self._drop_opening(session)  # no CONNECT was sent yet: it never connects now
        if session.connected:
            self.run_until(lambda: not session.connected or (not session.outbox and session.inflight == 0), SETTLE_S)
        if session.connected:
            self._publish_status(session, False, self.clock_ms())  # the broker takes it before the DISCONNECT behind it
        if session.client.socket() is not None:
            session.client.disconnect()

    def publish(self, device_id: str, topic: str, payload: bytes) -> bool:
        """Queue one of the device's messages (QoS 1); sent now if the device is connected. False when
        its outbox was full and dropped its oldest message to take this one (counted)."""
        session = self.by_id[device_id]
        outbox = session.outbox
        full = len(outbox) == outbox.maxlen
        if full:
            session.overflowed += 1
            self.stats.overflowed += 1
        outbox.append((topic, payload))
        self.stats.queued += 1
        if session.connected:
            self._send_outbox(session)
        return not full

    def turn(self, timeout: float = 0.05) -> None:
        """One pass of the loop: connects that are due, up to `timeout` s waiting for the sockets,
        their reads and writes, and keepalives when due."""
        now = time.monotonic()
        self._run_timers(now)
        # A connect due but held back (MAX_CONNECTING) waits for a CONNACK, not a spin that takes the broker's CPU.
        next_connect = self._timers[0][0] - now if self._timers and self._connecting < MAX_CONNECTING else timeout
        wait = max(0.0, min(timeout, self._next_misc - now, next_connect))
        for key, mask in self.selector.select(wait):
            session = key.data
            if key.fileobj is session.opening:
                self._advance_opening(session)
                continue
            client = session.client
            if mask & selectors.EVENT_READ:
                self._read(client)
            if mask & selectors.EVENT_WRITE and client.socket() is not None:
                client.loop_write()
        now = time.monotonic()
        for session in [s for s in self._opening.values() if now >= s.opening_due]:
            self._opening_failed(session)  # no answer in CONNECT_TIMEOUT_S: the broker is stuck, or swamped
        if now >= self._next_misc:
            self._next_misc = now + min(MISC_INTERVAL_S, self.settings.keepalive / 4)  # a PINGREQ well before 1.5 keepalives
            for session in self.sessions:
                if session.client.socket() is not None and session.held is None:
                    session.client.loop_misc()

    def run_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Turn the loop until `done()` or `timeout` s have passed; whether done."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() >= deadline:
                return False
            self.turn(min(0.05, max(0.0, deadline - time.monotonic())))
        return True

    def all_connected(self) -> bool:
        """Every device that is not dead is connected."""
        return self.stats.connected == len(self.sessions) - self._killed

    def has_room(self, device_id: str) -> bool:
        """The device's outbox can take a message without dropping one."""
        outbox = self.by_id[device_id].outbox
        return len(outbox) < (outbox.maxlen or 0)

    def drained(self) -> bool:
        """Every queued message acknowledged (or dropped from a full outbox, counted)."""
        return all(not session.outbox and session.inflight == 0 for session in self.sessions if not session.killed)

    def settled(self, device_id: str) -> bool:
        """The device has nothing waiting or unacknowledged, or is not connected (it keeps what it holds)."""
        session = self.by_id[device_id]
        return not session.connected or (not session.outbox and session.inflight == 0 and not session.status_mids)

    def outbox_depth(self) -> int:
        """Messages waiting in outboxes or in flight, all devices."""
        return sum(len(session.outbox) + session.inflight for session in self.sessions)

    def kill(self, device_id: str) -> None:
        """The device dies (battery, dropout): its socket goes silent, without DISCONNECT, and stays open
        for two keepalives and HOLD_MARGIN_S, read by nobody; the broker fires its will after 1.5 keepalives. No retries
        until `revive()`."""
        session = self.by_id[device_id]
        if session.killed:
            return
        session.killed = True
        session.generation += 1
        self._killed += 1
        if session.opening is not None:
            self._drop_opening(session)  # no CONNECT was sent: nothing for the broker to fire
        sock = session.client.socket()
        if not isinstance(sock, socket.socket):
            return  # not connected now: it just stops trying
        self._unregister(sock)
        session.held = socket.fromfd(sock.fileno(), sock.family, sock.type)  # a dup() (TLS's SSLSocket has none) keeps the TCP connection open after paho closes its own
        sock.close()
        session.client.loop_read()  # paho's read fails on its closed socket: the connection is lost to it
        self._schedule(time.monotonic() + 2 * self.settings.keepalive + HOLD_MARGIN_S, _RELEASE, session)

    def revive(self, device_id: str) -> None:
        """The device comes back: it connects again now (a new session, its birth published again)."""
        session = self.by_id[device_id]
        if not session.killed:
            return
        session.killed = False
        session.generation += 1
        self._killed -= 1
        self._release(session)
        session.attempt = 0
        self._schedule(time.monotonic(), _CONNECT, session)

    def close(self, timeout: float = 10.0) -> None:
        """Every connected device publishes its death (retained, `online: false`) and DISCONNECTs, so
        the broker discards its will; turns the loop until all are closed or `timeout` s passed. A device
        whose CONNECT is out gets its CONNACK first and does the same (its death instead of a birth); one
        not connecting now never connects. What a dead device still holds is never sent: counted in
        `stats.abandoned`; what a live one still holds at the end (not connected: its login refused, say) in `stats.stranded`."""
        self._close_ms = now_ms = self.clock_ms()
        self.stats.abandoned += sum(len(session.outbox) + session.inflight for session in self.sessions if session.killed)
        for session in list(self._opening.values()):
            self._drop_opening(session)  # not connected: it never connects now
        for session in self.sessions:
            session.closing = True
            self._release(session)
            if session.connected:
                self._publish_status(session, False, now_ms)
        self.run_until(lambda: all(not s.connecting and (not s.connected or (s.inflight == 0 and not s.status_mids)) for s in self.sessions), timeout)
        self._disconnecting = True
        for session in self.sessions:
            if session.client.socket() is not None:
                session.client.disconnect()
        self.run_until(lambda: not self.selector.get_map(), timeout)
        self.selector.close()
        # Whatever a live device still holds now is lost: counted, so the run says so and fails.
        self.stats.stranded += sum(len(session.outbox) + session.inflight for session in self.sessions if not session.killed)

    def refused(self) -> list[tuple[str, str]]:
        """(device id, the broker's reason) of every device whose last CONNECT the broker refused."""
        return [(session.device_id, session.refusal) for session in self.sessions if session.refusal is not None]

    def _read(self, client: mqtt.Client) -> None:
        client.loop_read()
        if self.tls is None:
            return
        # OpenSSL may hold decrypted bytes of a record already read from the socket, which epoll
        # cannot see (paho's own loop checks pending() too): read them now. Bounded: each read takes some.
        for _ in range(TLS_PENDING_READS):
            sock = client.socket()
            if not isinstance(sock, ssl.SSLSocket) or not sock.pending():
                return
            client.loop_read()

    # --- timers ---

    def _schedule(self, due: float, kind: int, session: Session) -> None:
        self._ties += 1
        heapq.heappush(self._timers, (due, self._ties, kind, session.index, session.generation))

    def _run_timers(self, now: float) -> None:
        connects = 0
        while self._timers and self._timers[0][0] <= now and connects < CONNECTS_PER_TURN and self._connecting < MAX_CONNECTING:
            _, _, kind, index, generation = heapq.heappop(self._timers)
            session = self.sessions[index]
            if generation != session.generation:
                continue  # set in an earlier life: a first death's release would close a second death's socket
            if kind == _RELEASE:
                self._release(session)
            elif not session.killed and not session.closing and session.client.socket() is None and session.opening is None:
                self._connect(session)
                connects += 1

    def _connect(self, session: Session) -> None:
        client = session.client
        # The will is fixed at CONNECT; the birth takes the same ts, so the bridge stores one point per
        # connection (online, or offline once its will came: docs/message-contract.md, "Device status").
        session.connect_ts = self.clock_ms()
        client.will_set(session.status_topic, status_payload(session.device_id, False, session.connect_ts), qos=1, retain=True)
        session.connect_started = time.monotonic()
        try:
            sock = client.tcp_connect(blocking=False)  # type: ignore[attr-defined]
        except OSError:
            self.stats.connect_failures += 1
            self._retry(session)
            return
        session.opening = sock
        session.opening_due = session.connect_started + CONNECT_TIMEOUT_S
        session.connecting = True
        self._connecting += 1
        self._opening[session.index] = session
        if tcp_connected(sock):
            self._advance_opening(session)  # on loopback the connect is done at once: no turn's wait for it
        else:
            self._watch(sock, selectors.EVENT_WRITE, session)  # writable once the TCP connect is done

    # --- opening a connection on the loop, not blocking it ---

    def _advance_opening(self, session: Session) -> None:
        """The socket is ready: the TCP connect's outcome, or the TLS handshake's next step."""
        sock = session.opening
        assert sock is not None
        if not isinstance(sock, ssl.SSLSocket):
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self._opening_failed(session)  # refused, reset: the broker is down
                return
            if self.tls is None:
                self._opened(session)
                return
            self._unregister(sock)  # wrap_socket takes over its descriptor
            try:
                sock = session.opening = self.tls.wrap_socket(sock, server_hostname=self.settings.host, do_handshake_on_connect=False)
            except OSError:
                self._opening_failed(session)
                return
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(sock, selectors.EVENT_READ, session)
        except ssl.SSLWantWriteError:
            self._watch(sock, selectors.EVENT_WRITE, session)
        except OSError:  # a certificate refused, the connection reset
            self._opening_failed(session)
        else:
            self._opened(session)

    def _opened(self, session: Session) -> None:
        client = session.client
        sock = session.opening
        self._opening.pop(session.index, None)
        session.opening = None
        self._unregister(sock)
        client.ready_socket = sock  # type: ignore[attr-defined]
        try:
            client.reconnect()  # takes the socket (no connect, no handshake of its own) and sends CONNECT; the CONNACK comes to loop_read
        except OSError:
            client.ready_socket = None  # type: ignore[attr-defined]
            self._handshake_over(session)
            self.stats.connect_failures += 1
            self._retry(session)

    def _opening_failed(self, session: Session) -> None:
        self._drop_opening(session)
        self.stats.connect_failures += 1
        self._retry(session)

    def _drop_opening(self, session: Session) -> None:
        sock = session.opening
        self._opening.pop(session.index, None)
        session.opening = None
        if sock is not None:
            self._unregister(sock)
            sock.close()
        self._handshake_over(session)

    def _watch(self, sock: Any, events: int, session: Session) -> None:
        try:
            self.selector.modify(sock, events, session)
        except KeyError:
            self.selector.register(sock, events, session)

    def _handshake_over(self, session: Session) -> None:
        if session.connecting:
            session.connecting = False
            self._connecting -= 1

    def _retry(self, session: Session) -> None:
        delay = reconnect_delay(session.reconnect, session.attempt, session.rng)
        session.attempt += 1
        self._schedule(time.monotonic() + delay, _CONNECT, session)

    def _release(self, session: Session) -> None:
        if session.held is not None:
            session.held.close()
            session.held = None

    # --- paho's callbacks (userdata: the session) ---

    def _on_connect(self, client: mqtt.Client, session: Session, flags: Any, reason: Any, properties: Any) -> None:
        self._handshake_over(session)
        if reason.is_failure:
            self.stats.connect_failures += 1
            session.refusal = str(reason)
            return  # the broker closes the connection: _on_disconnect schedules the retry
        session.refusal = None
        stats = self.stats
        stats.latency_ms.record_value(max(1, min(LATENCY_MAX_MS, round((time.monotonic() - session.connect_started) * 1000))))
        stats.connects += 1
        if session.ever_connected:
            stats.reconnects += 1
        session.ever_connected = True
        session.connected = True
        session.attempt = 0
        stats.connected += 1
        if self._disconnecting:
            return  # its CONNACK came after close() gave up waiting: its DISCONNECT is on the way
        # paho sends again what it had in flight only after this returns, behind whatever is sent from
        # here: take that back (paho's public drop_out_messages()) and send it, oldest first, after the
        # birth and before the outbox, so the device's messages reach the broker in seq order. A status
        # among them is not sent again: the birth of a connection now gone would land after its will.
        unacknowledged = client.drop_out_messages()
        statuses, session.status_mids = session.status_mids, ()
        if not session.closing:
            self._publish_status(session, True, session.connect_ts)
        for message in unacknowledged:
            if message.mid not in statuses:
                client.publish(message.topic, message.payload, qos=1)
        self._send_outbox(session)
        if session.closing and self._close_ms is not None:
            self._publish_status(session, False, self._close_ms)  # connected while close() waited: goodbye at once

    def _publish_status(self, session: Session, online: bool, ts: int) -> None:
        """The birth (online) or a clean close's death, retained, beside the device's own messages."""
        info = session.client.publish(session.status_topic, status_payload(session.device_id, online, ts), qos=1, retain=True)
        session.status_mids += (info.mid,)
        self.stats.statuses += 1

    def _on_disconnect(self, client: mqtt.Client, session: Session, flags: Any, reason: Any, properties: Any) -> None:
        if session.connecting:
            self.stats.connect_failures += 1  # no CONNACK within the keepalive (paho gave up), or the connection lost before it
        self._handshake_over(session)
        if session.connected:
            session.connected = False
            self.stats.connected -= 1
            self.stats.disconnects += 1
        if not session.killed and not session.closing:
            self._retry(session)

    def _on_publish(self, client: mqtt.Client, session: Session, mid: int, reason: Any, properties: Any) -> None:
        if mid in session.status_mids:
            session.status_mids = tuple(m for m in session.status_mids if m != mid)
            return
        session.inflight -= 1
        if reason.is_failure:  # MQTT 5: the broker refused it (0x87: not authorized by its ACL); 3.1.1 cannot say
            self.stats.refused += 1
        else:
            self.stats.acknowledged += 1
        if session.outbox and session.connected:
            self._send_outbox(session)

    def _send_outbox(self, session: Session) -> None:
        outbox, client, limit = session.outbox, session.client, self.settings.max_inflight
        while outbox and session.inflight < limit:
            topic, payload = outbox.popleft()
            client.publish(topic, payload, qos=1)  # paho keeps it until PUBACK, and sends it again after a reconnect
            session.inflight += 1
            self.stats.sent += 1

    def _on_socket_open(self, client: mqtt.Client, session: Session, sock: Any) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a device's packets are few and small
        except OSError:
            pass  # already gone: paho notices on its next read
        self.selector.register(sock, selectors.EVENT_READ, session)

    def _on_socket_close(self, client: mqtt.Client, session: Session, sock: Any) -> None:
        self._unregister(sock)

    def _on_socket_register_write(self, client: mqtt.Client, session: Session, sock: Any) -> None:
        self._modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, session)

    def _on_socket_unregister_write(self, client: mqtt.Client, session: Session, sock: Any) -> None:
        self._modify(sock, selectors.EVENT_READ, session)

    def _modify(self, sock: Any, events: int, session: Session) -> None:
        try:
            self.selector.modify(sock, events, session)
        except (KeyError, ValueError):
            pass  # unregistered already (a killed device's) or closed

    def _unregister(self, sock: Any) -> None:
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass


# A device fault's event (simulator/device_faults.py): `{prefix}/events/device_fault/{device_id}`.
FAULT_EVENTS = "/events/device_fault/"
SILENCING_FAULTS = ("dropout", "battery_death")  # the faults in which a device sends nothing
SETTLE_TIMEOUT_S = 1.0  # how long a dying device's last messages may take to be acknowledged (loopback: ms)
# A turn of the device loop (PUBACKs read, connects due) after this many messages through the sink.
TURN_EVERY = 64
# The longest the device loop waits at once while the run's shared connection waits too.
SHARED_SLICE_S = 0.02


class SessionSink:
    """`iotsim run`'s sink when fleets own their connections: a message of such a fleet's device goes
    through its connection (its own, or its gateway's: `route` maps device id → connection id), any
    other message through the run's shared connection (`shared`, served meanwhile by `shared_idle`).
    The topics and payloads are the same as through the shared connection. A full outbox pauses the
    simulation, turning the loop until it has room, rather than dropping a message. A device that a
    fault silences closes its connection without DISCONNECT and reconnects when it comes back (`fault`)."""

    def __init__(self, shared: Callable[[str, bytes], None], shared_idle: Callable[[float], None], sessions: DeviceSessions, route: dict[str, str]) -> None:
        self.shared = shared
        self.shared_idle = shared_idle
        self.sessions = sessions
        self.route = route
        self._unturned = 0

    def __call__(self, topic: str, payload: bytes) -> None:
        device_id = topic[topic.rfind("/") + 1 :]  # a device's topic ends with its id
        connection = self.route.get(device_id)
        if connection is None:
            self.shared(topic, payload)
            return
        if FAULT_EVENTS in topic:
            self.fault(topic, payload, device_id, connection)
            return
        sessions = self.sessions
        self._unturned += 1
        if self._unturned >= TURN_EVERY:
            self._unturned = 0
            sessions.turn(0.0)
        while not sessions.has_room(connection):
            self.idle(SHARED_SLICE_S)
        sessions.publish(connection, topic, payload)

    def fault(self, topic: str, payload: bytes, device_id: str, connection: str) -> None:
        """A device fault's event, the simulator's note for the dashboards (a silent device could not
        send it), goes through the shared connection. A fault that silences a device with its own
        connection (`dropout`, `battery_death`) kills that connection as it begins, once what the
        device sent before is acknowledged (nothing sent twice after the reconnect), and a dropout's
        end revives it; a gateway stays connected for its other devices."""
        self.shared(topic, payload)
        if connection != device_id:
            return
        tags = orjson.loads(payload)["tags"]
        if tags.get("fault") not in SILENCING_FAULTS:
            return
        sessions = self.sessions
        if tags.get("phase") == "start":
            sessions.run_until(lambda: sessions.settled(device_id), SETTLE_TIMEOUT_S)
            sessions.kill(device_id)
        else:
            sessions.revive(device_id)

    def idle(self, seconds: float) -> None:
        """Let `seconds` pass serving both loops: the paced simulation waits through here."""
        deadline = time.monotonic() + seconds
        while True:
            self.shared_idle(0.0)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.sessions.turn(min(remaining, SHARED_SLICE_S))

    def drain(self, timeout: float) -> bool:
        """Wait until every device message is acknowledged; False if `timeout` passed first."""
        return self.sessions.run_until(self.sessions.drained, timeout)
