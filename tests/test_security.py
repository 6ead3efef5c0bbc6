"""The secure broker profile (brokers/secure/, docs/security.md) against a real Mosquitto.

One broker for the module, started by `stack.start_secure_mosquitto` with a test CA and passwords
made by the profile's own scripts in a temporary folder. Refusals are observed as a client sees
them: CONNACK codes; with MQTT 5 the PUBACK or SUBACK reason 0x87 "Not authorized"; with MQTT 3.1.1,
which has no way to refuse a publish, a subscriber that gets the allowed messages and a sentinel
published after the forbidden one, but never the forbidden one.
"""

from __future__ import annotations

import getpass
import json
import queue
import re
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import requests
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from conftest import IOTSIM, RUN_IDLE, child_env
from simulator import stack

SCRIPTS = stack.SECURE_DIR
DEVICES = ("aq-0007", "aq-0008")  # per-device users, besides the profile's shared identities
# A scenario's fleet whose every device logs in as itself: its users come from `iotsim devices`.
METERS = "name: secure-meters\nduration: 1h\nfleets:\n  - {type: electricity_meter, count: 3}\n"
METER_IDS = ("meter-0001", "meter-0002", "meter-0003")
NOT_AUTHORIZED = 0x87
ACCEPTED = (0x00, 0x10)  # MQTT 5 PUBACK: success, or success with "no matching subscribers"
WAIT = 5.0  # seconds for any one broker answer on loopback


@dataclass(frozen=True)
class SecureBroker:
    service: stack.Service
    tls_port: int
    secrets: Path

    @property
    def port(self) -> int:
        return self.service.port

    @property
    def ca_file(self) -> Path:
        return self.secrets / "ca.crt"

    def password(self, user: str) -> str:
        return (self.secrets / "passwords" / user).read_text().strip()


def make_secrets(folder: Path, *devices: str, devices_from: str | None = None) -> None:
    """The test CA and the passwords; `devices_from`: more device users, one a line (DEVICES_FROM=-)."""
    for command in (["sh", str(SCRIPTS / "make-test-certs.sh"), str(folder)], ["sh", str(SCRIPTS / "make-passwords.sh"), str(folder), *devices]):
        env = {**child_env(), "DEVICES_FROM": "-"} if devices_from is not None and "make-passwords.sh" in command[1] else None
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, input=devices_from, env=env)
        assert done.returncode == 0, done.stderr


def scenario_device_ids(folder: Path) -> str:
    """`iotsim devices` of the METERS scenario: what feeds make-passwords.sh."""
    scenario = folder / "meters.yaml"
    scenario.write_text(METERS)
    listed = subprocess.run([*IOTSIM, "devices", str(scenario)], capture_output=True, text=True, timeout=60, env=child_env())
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    assert listed.stdout == "".join(f"{device_id}\n" for device_id in METER_IDS)
    return listed.stdout


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    secrets = tmp_path_factory.mktemp("secrets")
    make_secrets(secrets, *DEVICES, devices_from=scenario_device_ids(tmp_path_factory.mktemp("scenario")))
    tls_port = stack.free_port()
    service = stack.start_secure_mosquitto(tmp_path_factory.mktemp("secure-broker"), stack.free_port(), tls_port, secrets)
    yield SecureBroker(service, tls_port, secrets)
    service.stop()


class Client:
    """A paho-mqtt 2.x client that records what the broker answers: CONNACK, PUBACKs, SUBACKs, messages."""

    def __init__(
        self, user: str | None = None, password: str | None = None, *, protocol: MQTTProtocolVersion = mqtt.MQTTv311, ca_file: Path | None = None, client_id: str = ""
    ) -> None:
        self.paho = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        if user is not None:
            self.paho.username_pw_set(user, password)
        if ca_file is not None:
            self.paho.tls_set(ca_certs=str(ca_file))
        self.connack: queue.Queue[ReasonCode] = queue.Queue()
        self.closed = threading.Event()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.answers: dict[int, list[ReasonCode]] = {}  # PUBACK or SUBACK reasons by message id
        self.answered = threading.Condition()
        self.paho.on_connect = lambda client, userdata, flags, reason, properties: self.connack.put(reason)
        self.paho.on_disconnect = lambda client, userdata, flags, reason, properties: self.closed.set()
        self.paho.on_message = lambda client, userdata, message: self.messages.put((message.topic, bytes(message.payload)))
        self.paho.on_publish = lambda client, userdata, mid, reason, properties: self._answer(mid, [reason])
        self.paho.on_subscribe = lambda client, userdata, mid, reasons, properties: self._answer(mid, reasons)

    def connect(self, port: int) -> ReasonCode | None:
        """The CONNACK's reason, or None if the broker closed the connection without one."""
        self.paho.connect("127.0.0.1", port, keepalive=30)
        self.paho.loop_start()
        reason: ReasonCode | None = None
        for _ in range(int(WAIT / 0.05)):
            # A refusing broker sends its CONNACK and closes at once: look for the CONNACK first.
            try:
                reason = self.connack.get(timeout=0.05)
                break
            except queue.Empty:
                if self.closed.is_set():
                    break
        if reason is None or reason.is_failure:
            self.stop()  # no reconnecting after a refusal
        return reason

    def publish(self, topic: str, payload: bytes = b"{}", qos: int = 1) -> int:
        """Publish and wait for the broker's PUBACK; its reason code (always 0 with MQTT 3.1.1)."""
        info = self.paho.publish(topic, payload, qos=qos)
        return self._wait(info.mid)[0].value

    def subscribe(self, topic: str) -> int:
        """Subscribe at QoS 1; the SUBACK's code: the granted QoS, or a failure (0x80, 0x87)."""
        _, mid = self.paho.subscribe(topic, qos=1)
        assert mid is not None
        return self._wait(mid)[0].value

    def received_until(self, sentinel: bytes) -> list[tuple[str, bytes]]:
        """Messages received up to and including the first with payload `sentinel`."""
        got = []
        while True:
            topic, payload = self.messages.get(timeout=WAIT)
            got.append((topic, payload))
            if payload == sentinel:
                return got

    def stop(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()

    def _answer(self, mid: int, reasons: list[ReasonCode]) -> None:
        with self.answered:
            self.answers[mid] = reasons
            self.answered.notify_all()

    def _wait(self, mid: int) -> list[ReasonCode]:
        with self.answered:
            assert self.answered.wait_for(lambda: mid in self.answers, WAIT), f"no answer from the broker to message {mid}"
            return self.answers.pop(mid)


def connected(secure: SecureBroker, user: str, *, protocol: MQTTProtocolVersion = mqtt.MQTTv311, tls: bool = False, will: str | None = None) -> Client:
    """`user` logged in; `will`: as a device with its own connection, client id = user and a last will on that topic."""
    client = Client(user, secure.password(user), protocol=protocol, ca_file=secure.ca_file if tls else None, client_id=user if will else "")
    if will is not None:
        client.paho.will_set(will, b"offline", qos=1)
    reason = client.connect(secure.tls_port if tls else secure.port)
    assert reason is not None and not reason.is_failure, f"{user} refused: {reason}"
    return client


@pytest.fixture
def bridge_subscriber(secure: SecureBroker) -> Iterator[Client]:
    """The bridge's identity, subscribed to everything under the prefix, as the bridge does."""
    client = connected(secure, "bridge")
    assert client.subscribe("yangquan/#") == 1
    yield client
    client.stop()


# --- who may connect ---


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["mqtt311", "mqtt5"])
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_anonymous_clients_are_refused_on_both_listeners(secure: SecureBroker, tls: bool, protocol: MQTTProtocolVersion) -> None:
    client = Client(protocol=protocol, ca_file=secure.ca_file if tls else None)
    reason = client.connect(secure.tls_port if tls else secure.port)
    assert reason is not None and reason.value == NOT_AUTHORIZED  # MQTT 3.1.1 CONNACK 5, as paho names it


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["mqtt311", "mqtt5"])
def test_a_wrong_password_or_unknown_user_is_refused(secure: SecureBroker, protocol: MQTTProtocolVersion) -> None:
    for user, password in (("aq-0007", secure.password("aq-0008")), ("bridge", "bridge"), ("nobody", secure.password("bridge"))):
        reason = Client(user, password, protocol=protocol).connect(secure.port)
        # Mosquitto answers "not authorized" for both, so a client cannot learn which names exist.
        assert reason is not None and reason.value == NOT_AUTHORIZED, (user, reason)
    connected(secure, "aq-0007", protocol=protocol).stop()  # while the right password works


# --- who may publish where ---


def test_a_device_cannot_publish_on_another_devices_topic_mqtt311(secure: SecureBroker, bridge_subscriber: Client) -> None:
    device = connected(secure, "aq-0007")
    device.publish("yangquan/city/air_quality/aq-0008", b"forged")  # 3.1.1: PUBACKed, then dropped
    device.publish("yangquan/events/gas_alarm/aq-0008", b"forged event")
    device.publish("yangquan/city/air_quality/aq-0007", b"own reading")
    device.publish("yangquan/events/aqi_category/aq-0007", b"own event")
    device.publish("yangquan/city/air_quality/aq-0007", b"sentinel")
    device.stop()
    # One connection's messages reach a subscriber in order, so had the broker passed either
    # forgery on, it would have arrived before the sentinel.
    assert bridge_subscriber.received_until(b"sentinel") == [
        ("yangquan/city/air_quality/aq-0007", b"own reading"),
        ("yangquan/events/aqi_category/aq-0007", b"own event"),
        ("yangquan/city/air_quality/aq-0007", b"sentinel"),
    ]


def test_a_device_is_told_not_authorized_with_mqtt5(secure: SecureBroker) -> None:
    device = connected(secure, "aq-0007", protocol=mqtt.MQTTv5)
    assert device.publish("yangquan/city/air_quality/aq-0007") in ACCEPTED
    assert device.publish("yangquan/events/gas_alarm/aq-0007") in ACCEPTED
    assert device.publish("yangquan/city/air_quality/aq-0008") == NOT_AUTHORIZED
    assert device.publish("yangquan/events/gas_alarm/aq-0008") == NOT_AUTHORIZED
    assert device.publish("yangquan/city/air_quality/aq-0007/extra") == NOT_AUTHORIZED
    assert device.publish("elsewhere/aq-0007") == NOT_AUTHORIZED
    device.stop()


# --- a scenario's devices, each logged in as itself (issue 15): readings and status, own topics only ---


def test_a_scenario_device_logs_in_as_itself_and_publishes_only_on_its_own_topics_mqtt311(secure: SecureBroker, bridge_subscriber: Client) -> None:
    device = connected(secure, "meter-0001", will="yangquan/status/meter-0001")
    device.publish("yangquan/city/electricity_meter/meter-0002", b"forged reading")  # 3.1.1: PUBACKed, then dropped
    device.publish("yangquan/status/meter-0002", b"forged status")
    device.publish("yangquan/status/meter-0001", b"own birth")
    device.publish("yangquan/city/electricity_meter/meter-0001", b"own reading")
    device.publish("yangquan/status/meter-0001", b"sentinel")
    device.stop()
    assert bridge_subscriber.received_until(b"sentinel") == [
        ("yangquan/status/meter-0001", b"own birth"),
        ("yangquan/city/electricity_meter/meter-0001", b"own reading"),
        ("yangquan/status/meter-0001", b"sentinel"),
    ]


def test_a_scenario_device_is_told_not_authorized_on_another_devices_topics_with_mqtt5(secure: SecureBroker) -> None:
    device = connected(secure, "meter-0002", protocol=mqtt.MQTTv5, will="yangquan/status/meter-0002")
    assert device.publish("yangquan/status/meter-0002") in ACCEPTED
    assert device.publish("yangquan/city/electricity_meter/meter-0002") in ACCEPTED
    assert device.publish("yangquan/status/meter-0003") == NOT_AUTHORIZED
    assert device.publish("yangquan/city/electricity_meter/meter-0003") == NOT_AUTHORIZED
    assert device.publish("yangquan/status/meter-0002/extra") == NOT_AUTHORIZED
    assert device.publish("yangquan/status") == NOT_AUTHORIZED
    device.stop()


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["mqtt311", "mqtt5"])
def test_a_scenario_device_with_a_wrong_password_is_refused(secure: SecureBroker, protocol: MQTTProtocolVersion) -> None:
    for password in (secure.password("meter-0002"), secure.password("aq-0007"), ""):
        reason = Client("meter-0001", password, protocol=protocol, client_id="meter-0001").connect(secure.port)
        assert reason is not None and reason.value == NOT_AUTHORIZED, reason
    connected(secure, "meter-0001", protocol=protocol, will="yangquan/status/meter-0001").stop()  # its own password works


def test_the_will_of_a_device_that_vanishes_arrives_on_its_status_topic(secure: SecureBroker, bridge_subscriber: Client) -> None:
    device = connected(secure, "meter-0003", will="yangquan/status/meter-0003")
    device.paho.loop_stop()
    device.paho.socket().close()  # no DISCONNECT: a battery dying
    assert bridge_subscriber.messages.get(timeout=WAIT) == ("yangquan/status/meter-0003", b"offline")


def test_a_will_on_another_devices_status_topic_is_never_published(secure: SecureBroker, bridge_subscriber: Client) -> None:
    # Mosquitto accepts the CONNECT and checks the will against its user's ACL when it would publish it.
    device = connected(secure, "meter-0001", will="yangquan/status/meter-0002")
    device.paho.loop_stop()
    device.paho.socket().close()
    # The broker sees that socket close before this new connection's publish.
    simulator = connected(secure, "simulator")
    simulator.publish("yangquan/status/meter-0002", b"sentinel")
    simulator.stop()
    assert bridge_subscriber.received_until(b"sentinel") == [("yangquan/status/meter-0002", b"sentinel")]


def test_the_bridge_reads_everything_and_can_publish_nothing(secure: SecureBroker, bridge_subscriber: Client) -> None:
    bridge = connected(secure, "bridge", protocol=mqtt.MQTTv5)
    for topic in (
        "yangquan/city/air_quality/aq-0007",
        "yangquan/port/gate_lane/gate-01",
        "yangquan/events/gas_alarm/mg-0001",
        "yangquan/city/air_quality/bridge",  # the device patterns under its own name: denied too
        "yangquan/status/bridge",
        "yangquan/status/aq-0007",
        "elsewhere/anything",
    ):
        assert bridge.publish(topic, b"from the bridge") == NOT_AUTHORIZED, topic
    bridge.stop()
    simulator = connected(secure, "simulator")
    simulator.publish("yangquan/port/gate_lane/gate-01", b"sentinel")
    simulator.stop()
    assert bridge_subscriber.received_until(b"sentinel") == [("yangquan/port/gate_lane/gate-01", b"sentinel")]


@pytest.mark.parametrize(
    ("user", "allowed", "refused"),
    [
        ("simulator", ["yangquan/city/air_quality/aq-0001", "yangquan/port/crane/rmg-01", "yangquan/events/train/t-1", "yangquan/status/meter-0001"],
         ["elsewhere/x", "yangquan/other/x/y", "yangquan/city/x/simulator", "yangquan/status/simulator"]),
        ("city-devices", ["yangquan/city/air_quality/aq-0001", "yangquan/events/gas_alarm/mg-0001"],
         ["yangquan/port/crane/rmg-01", "yangquan/port/crane/city-devices", "yangquan/status/city-devices", "yangquan/status/aq-0001"]),
        ("port-devices", ["yangquan/port/crane/rmg-01", "yangquan/events/train/t-1"],
         ["yangquan/city/air_quality/aq-0001", "yangquan/city/x/port-devices", "yangquan/status/port-devices", "yangquan/status/rmg-01"]),
        ("healthcheck", [], ["yangquan/city/air_quality/aq-0001", "yangquan/events/train/healthcheck", "yangquan/city/x/healthcheck", "yangquan/status/healthcheck"]),
    ],
)  # fmt: skip
def test_shared_identities_publish_only_in_their_subtrees(secure: SecureBroker, user: str, allowed: list[str], refused: list[str]) -> None:
    client = connected(secure, user, protocol=mqtt.MQTTv5)
    assert all(client.publish(topic) in ACCEPTED for topic in allowed)
    assert [client.publish(topic) for topic in refused] == [NOT_AUTHORIZED] * len(refused)
    client.stop()


def test_only_the_bridge_reads(secure: SecureBroker, bridge_subscriber: Client) -> None:
    # Mosquitto 2 grants every subscription and checks read access per message delivered.
    readers = {user: connected(secure, user) for user in ("aq-0007", "simulator", "city-devices", "port-devices", "healthcheck")}
    for reader in readers.values():
        assert reader.subscribe("yangquan/#") == 1
    simulator = connected(secure, "simulator")
    simulator.publish("yangquan/city/air_quality/aq-0008", b"reading")
    simulator.stop()
    assert bridge_subscriber.received_until(b"reading") == [("yangquan/city/air_quality/aq-0008", b"reading")]
    for user, reader in readers.items():
        # The broker writes to a connection in order: a PUBACK it sends after routing the reading
        # arrives after the reading would have.
        reader.publish(f"yangquan/city/air_quality/{user}" if user == "aq-0007" else "yangquan/port/x/y")
        assert reader.messages.empty(), user
        reader.stop()


def test_the_healthcheck_identity_reads_the_broker_uptime_and_the_bridge_does_not(secure: SecureBroker) -> None:
    # The compose broker's healthcheck: Mosquitto keeps $SYS/broker/uptime retained, so a reader gets
    # it as soon as it subscribes.
    checker = connected(secure, "healthcheck")
    assert checker.subscribe("$SYS/broker/uptime") == 1
    topic, payload = checker.messages.get(timeout=WAIT)
    assert topic == "$SYS/broker/uptime" and payload.endswith(b"seconds")
    checker.stop()
    bridge = connected(secure, "bridge")
    assert bridge.subscribe("$SYS/broker/uptime") == 1
    bridge.publish("yangquan/city/air_quality/x")  # refused, but its PUBACK comes after any retained message
    assert bridge.messages.empty()
    bridge.stop()


# --- TLS ---


def test_tls_with_the_test_ca_carries_messages(secure: SecureBroker) -> None:
    subscriber = connected(secure, "bridge", tls=True)
    assert subscriber.subscribe("yangquan/#") == 1
    device = connected(secure, "aq-0008", tls=True)
    device.publish("yangquan/city/air_quality/aq-0008", b"over tls")
    device.stop()
    assert subscriber.received_until(b"over tls") == [("yangquan/city/air_quality/aq-0008", b"over tls")]
    subscriber.stop()


def test_plain_mqtt_on_the_tls_port_gets_no_connack(secure: SecureBroker) -> None:
    client = Client("aq-0007", secure.password("aq-0007"))  # no TLS
    assert client.connect(secure.tls_port) is None
    assert client.closed.is_set()


def test_a_client_trusting_another_ca_refuses_the_broker(secure: SecureBroker, tmp_path: Path) -> None:
    make_secrets(tmp_path)  # a second, unrelated test CA
    client = Client("aq-0007", secure.password("aq-0007"), ca_file=tmp_path / "ca.crt")
    with pytest.raises(ssl.SSLCertVerificationError):
        client.connect(secure.tls_port)


def test_tls_on_the_plain_port_fails(secure: SecureBroker) -> None:
    client = Client("aq-0007", secure.password("aq-0007"), ca_file=secure.ca_file)
    with pytest.raises((ssl.SSLError, ConnectionError)):  # the broker resets a handshake it cannot parse
        client.connect(secure.port)


# --- the shipped files ---


def test_the_compose_config_enforces_the_same_rules(secure: SecureBroker, tmp_path: Path) -> None:
    """brokers/secure/mosquitto.conf, with its container paths and ports mapped to this machine."""
    port, tls_port = stack.free_port(), stack.free_port()
    text = (SCRIPTS / "mosquitto.conf").read_text()
    text = text.replace("/mosquitto/config/secure/generated/", f"{secure.secrets}/")
    text = text.replace("/mosquitto/config/", f"{stack.BROKERS_DIR}/").replace("/mosquitto/data/", f"{tmp_path}/")
    text = re.sub(r"^listener 1883$", f"listener {port} 127.0.0.1", text, flags=re.MULTILINE)
    text = re.sub(r"^listener 8883$", f"listener {tls_port} 127.0.0.1", text, flags=re.MULTILINE)
    text = text.replace("log_dest stdout", f"log_dest stderr\nuser {getpass.getuser()}")
    (tmp_path / "mosquitto.conf").write_text(text)
    service = stack.launch("mosquitto", [stack.MOSQUITTO.path(), "-c", str(tmp_path / "mosquitto.conf")], port, tmp_path, tmp_path / "mosquitto.log")
    try:
        stack.wait_until(lambda: stack.accepts_tcp(port) and stack.accepts_tcp(tls_port), service, 15, "the compose config's broker")
        anonymous = Client().connect(port)
        assert anonymous is not None and anonymous.value == NOT_AUTHORIZED
        client = Client("aq-0007", secure.password("aq-0007"), protocol=mqtt.MQTTv5, ca_file=secure.ca_file)
        reason = client.connect(tls_port)
        assert reason is not None and not reason.is_failure, reason
        assert client.publish("yangquan/city/air_quality/aq-0008") == NOT_AUTHORIZED
        client.stop()
    finally:
        service.stop()


# --- make-passwords.sh with a whole fleet ---


def make_passwords(folder: Path, devices: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = ["sh", str(SCRIPTS / "make-passwords.sh"), str(folder), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, input=devices, env={**child_env(), "DEVICES_FROM": "-"})


def test_make_passwords_takes_15000_devices_in_one_hashing_run_and_keeps_them(tmp_path: Path) -> None:
    ids = [f"meter-{n:05d}" for n in range(1, 15_001)]
    done = make_passwords(tmp_path, "".join(f"{device_id}\n" for device_id in ids) + "\nmeter-00001\n", "aq-0007")  # blank and repeated lines count once
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"make-passwords: wrote {tmp_path}/passwd for 15006 users: simulator city-devices port-devices bridge healthcheck ... (passwords in {tmp_path}/passwords/)\n"
    users = [line.split(":", 1)[0] for line in (tmp_path / "passwd").read_text().splitlines()]
    assert users == ["simulator", "city-devices", "port-devices", "bridge", "healthcheck", "aq-0007", *ids]
    passwords = {device_id: (tmp_path / "passwords" / device_id).read_text() for device_id in ids}
    assert all(re.fullmatch(r"[0-9a-f]{32}\n", password) for password in passwords.values())
    assert len(set(passwords.values())) == len(ids)
    first_hashes = (tmp_path / "passwd").read_text()
    again = make_passwords(tmp_path, "meter-00002\nmeter-20000\n")  # only these devices now, one of them new
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "passwords" / "meter-00002").read_text() == passwords["meter-00002"]  # kept
    assert [line.split(":", 1)[0] for line in (tmp_path / "passwd").read_text().splitlines()][-2:] == ["meter-00002", "meter-20000"]
    assert (tmp_path / "passwd").read_text() != first_hashes


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("meter 0001", "is not a valid user name (letters, digits, _ and - only)"),
        ("aq/0007", "is not a valid user name (letters, digits, _ and - only)"),
        ("+", "is not a valid user name (letters, digits, _ and - only)"),
        ("meter-0001\r", "ends in a CR (a list with CRLF line endings?); give the names with LF"),
    ],
)
def test_make_passwords_refuses_a_bad_device_id_in_one_line_writing_nothing(tmp_path: Path, bad: str, reason: str) -> None:
    done = make_passwords(tmp_path, f"meter-0001\n{bad}\n")
    assert done.returncode == 2
    assert done.stderr == f"make-passwords: '{bad.strip()}' {reason}\n"
    assert not (tmp_path / "passwd").exists() and list((tmp_path / "passwords").iterdir()) == []


def test_make_passwords_names_a_devices_file_it_cannot_read(tmp_path: Path) -> None:
    command = ["sh", str(SCRIPTS / "make-passwords.sh"), str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, env={**child_env(), "DEVICES_FROM": str(tmp_path / "ids.txt")})
    assert (done.returncode, done.stderr) == (2, f"make-passwords: DEVICES_FROM={tmp_path}/ids.txt is not a readable file\n")
    assert not (tmp_path / "passwd").exists()


def test_no_secret_of_the_profile_can_be_committed() -> None:
    generated = SCRIPTS / "generated"
    for path in (generated / "ca.key", generated / "server.key", generated / "passwd", generated / "passwords" / "bridge"):
        done = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=stack.BROKERS_DIR.parent, timeout=10)
        assert done.returncode == 0, f"{path} is not git-ignored"


# --- the testbed's own programs on the secure profile ---

SCENARIO = """
name: secure
seed: 11
duration: 1h
fleets:
  - type: air_quality
    count: 3
    cadence: 10m
"""


def test_simulator_and_bridge_run_over_tls_with_their_identities(secure: SecureBroker, influxdb: stack.Service, tmp_path: Path) -> None:
    database = "secure_e2e"
    stack.create_database(influxdb.url, database)
    url = f"mqtts://127.0.0.1:{secure.tls_port}"
    bridge_env = child_env() | {"MQTT_PASSWORD": secure.password("bridge")}
    bridge = subprocess.Popen(
        [*IOTSIM, "bridge", "--mqtt", url, "--username", "bridge", "--ca-file", str(secure.ca_file), "--influx", influxdb.url,
         "--db", database, "--client-id", "secure-bridge", "--dead-letters", str(tmp_path / "dead.jsonl"), "--spool-dir", str(tmp_path / "spool"),
         "--batch-interval", "0.2", "--exit-when-idle", RUN_IDLE],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=bridge_env,
    )  # fmt: skip
    assert bridge.stderr is not None
    first = bridge.stderr.readline()
    assert first.startswith("bridge:"), first + bridge.stderr.read()

    scenario = tmp_path / "secure.yaml"
    scenario.write_text(
        SCENARIO
        + f"mqtt: {{url: '{url}', username: simulator, ca_file: '{secure.ca_file}'}}\n"
        + f"influx: {{url: '{influxdb.url}', database: {database}}}\n"
    )
    run = subprocess.run([*IOTSIM, "run", str(scenario)], capture_output=True, text=True, timeout=120, env=child_env() | {"MQTT_PASSWORD": secure.password("simulator")})
    assert run.returncode == 0, run.stderr
    assert "generated 18, published 18, acknowledged 18" in run.stdout
    bridge_out, bridge_err = bridge.communicate(timeout=60)
    assert bridge.returncode == 0, bridge_err
    assert "received 18, written 18, dead letters 0" in bridge_out
    answer = requests.get(f"{influxdb.url}/query", params={"db": database, "q": 'SELECT count("seq") FROM "air_quality"'}, timeout=30)
    assert answer.json()["results"][0]["series"][0]["values"][0][1] == 3 * 6


def test_the_simulator_with_a_wrong_password_stops_with_one_clear_line(secure: SecureBroker, tmp_path: Path) -> None:
    scenario = tmp_path / "secure.yaml"
    scenario.write_text(SCENARIO + f"mqtt: {{url: 'mqtt://127.0.0.1:{secure.port}', username: simulator}}\n")
    env = {name: value for name, value in child_env().items() if name != "MQTT_PASSWORD"}
    run = subprocess.run([*IOTSIM, "run", str(scenario)], capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 1
    line = run.stderr.strip()
    assert "refused" in line and "authori" in line.lower(), run.stderr
    assert line.endswith("; check mqtt.username and MQTT_PASSWORD") and "\n" not in line, run.stderr  # BrokerRefused's hint


def test_the_bridge_with_a_wrong_password_stops_with_one_clear_line(secure: SecureBroker, influxdb: stack.Service, tmp_path: Path) -> None:
    env = child_env() | {"MQTT_PASSWORD": "not-the-password"}
    done = subprocess.run(  # a real InfluxDB: the bridge checks it takes writes before it subscribes
        [*IOTSIM, "bridge", "--mqtt", f"mqtt://127.0.0.1:{secure.port}", "--username", "bridge", "--client-id", "secure-bridge-refused",
         "--influx", influxdb.url, "--db", "secure_bridge_refused",
         "--dead-letters", str(tmp_path / "dead.jsonl"), "--spool-dir", str(tmp_path / "spool")],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    line = done.stderr.strip()
    assert line.startswith(f"the MQTT broker at mqtt://127.0.0.1:{secure.port} refused the bridge: Not authorized"), done.stderr
    assert line.endswith("; check mqtt.username and MQTT_PASSWORD") and "\n" not in line



LOAD = """
name: secure-load
seed: 12
duration: 1m
fleets:
  - {type: load_probe, count: 6, batch: 2}
load:
  profile: {kind: constant, target: 60, duration: 3s}
  qos: 1
  drain: 20s
  thresholds: [loss == 0, written == generated]
"""


def load_command(secure: SecureBroker, influxdb: stack.Service, scenario: Path, out: Path) -> list[str]:
    return [*IOTSIM, "load", str(scenario), "--out", str(out), "--mqtt", f"mqtts://127.0.0.1:{secure.tls_port}", "--ca-file", str(secure.ca_file),
            "--influx", influxdb.url, "--mqtt-username", "simulator", "--bridge-username", "bridge"]  # fmt: skip


def test_a_load_experiment_runs_over_tls_with_a_worker_and_a_bridge_identity(secure: SecureBroker, influxdb: stack.Service, tmp_path: Path) -> None:
    database = "secure_load"
    stack.create_database(influxdb.url, database)
    scenario = tmp_path / "load.yaml"
    scenario.write_text(LOAD + f"influx: {{url: '{influxdb.url}', database: {database}}}\n")
    env = child_env() | {"MQTT_PASSWORD": secure.password("simulator")}
    (tmp_path / "bridge.password").write_text(secure.password("bridge") + "\n")
    env["BRIDGE_MQTT_PASSWORD_FILE"] = str(tmp_path / "bridge.password")
    run = subprocess.run(load_command(secure, influxdb, scenario, tmp_path / "out"), capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    figures = json.loads((tmp_path / "out" / "summary.json").read_text())["figures"]
    answer = requests.get(f"{influxdb.url}/query", params={"db": database, "q": 'SELECT count("seq") FROM "load_probe"'}, timeout=30)
    stored = answer.json()["results"][0]["series"][0]["values"][0][1]
    assert abs(figures["generated"] - 180) <= 6  # 60 msg/s for 3 s; each gateway rounds its share by at most one
    assert figures["generated"] == figures["acknowledged"] == figures["written"] == stored
    assert figures["loss"] == figures["dead_letters"] == 0


@pytest.mark.parametrize("wrong", ["bridge", "workers"])
def test_a_load_experiment_with_a_refused_identity_stops_with_one_clear_line(secure: SecureBroker, influxdb: stack.Service, tmp_path: Path, wrong: str) -> None:
    scenario = tmp_path / "load.yaml"
    scenario.write_text(LOAD + f"influx: {{url: '{influxdb.url}', database: secure_load_refused}}\n")
    env = child_env() | {"MQTT_PASSWORD": secure.password("simulator"), "BRIDGE_MQTT_PASSWORD": secure.password("bridge")}
    env["BRIDGE_MQTT_PASSWORD" if wrong == "bridge" else "MQTT_PASSWORD"] = "not-the-password"
    run = subprocess.run(load_command(secure, influxdb, scenario, tmp_path / "out"), capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 2, run.stdout + run.stderr
    # The experiment's heading, then the one line that says why it stopped.
    heading, error = run.stderr.strip().splitlines()
    assert heading.startswith("secure-load: constant profile"), run.stderr
    assert "refused" in error and "Not authorized" in error and ("the bridge" in error) == (wrong == "bridge"), run.stderr
