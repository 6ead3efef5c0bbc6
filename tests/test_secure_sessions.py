"""Device sessions on the secure profile (issue 15) against a real Mosquitto: every device logs in as
itself (its user its client id, its password from the folder make-passwords.sh wrote for the ids
`iotsim devices` lists), over TLS; the ACL keeps each to its own topics; a dead battery fires exactly
that device's will; a broker restart loses nothing at QoS 1.

One broker for the module, started by `stack.start_secure_mosquitto` with the profile's ACL and a
test-only reader (`test-watcher`, which may also read the broker's client count), $SYS every second.
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
import pytest
from conftest import IOTSIM, child_env, iotsim
from test_device_sessions import STORE_TOPICS, Watcher, acknowledged_by_watcher
from test_security import make_secrets

from simulator import stack
from simulator.connections import connection_plan
from simulator.fleet import ReconnectPolicy
from simulator.scenario import load_scenario
from simulator.transport.sessions import CONNECT_TIMEOUT_S, DeviceSessions, raise_open_files

FLEET = 2_000
IDS = [f"meter-{n:04d}" for n in range(1, FLEET + 1)]
WATCHER = "test-watcher"  # the test's own reader: everything under the prefix and the broker's client count
WATCHER_ACL = f"\n# tests/test_secure_sessions.py: its reader.\nuser {WATCHER}\ntopic read yangquan/#\ntopic read $SYS/broker/clients/connected\ntopic read $SYS/broker/version\n" + "".join(f"topic read {topic}\n" for topic in STORE_TOPICS)
CONNECTED_TOPIC = "$SYS/broker/clients/connected"
SYS_INTERVAL_S = 1
NOT_AUTHORIZED = 0x87
ACCEPTED = (0x00, 0x10)  # MQTT 5 PUBACK: success, or success with "no matching subscribers"
SCENARIO = """
name: secure-fleet
seed: 15
duration: 1h
fleets:
  - type: electricity_meter
    count: {count}
    connection: device
{more}
mqtt:
  url: mqtts://127.0.0.1:{tls_port}
  username: simulator
  ca_file: {ca_file}
{device_passwords}
influx:
  url: http://127.0.0.1:{influx_port}
"""
# A gateway fleet: 5 meters behind gateways of 3 (gm-gw-0001: gm-0001..0003, gm-gw-0002: gm-0004..0005).
GATEWAY_FLEET = "  - {type: electricity_meter, id_prefix: gm, count: 5, connection: gateway, gateway_size: 3}"
GATEWAY_ACL = [
    "# fleets.1: 5 electricity_meter devices behind 2 gateways",
    "user gm-gw-0001",
    *(f"topic write yangquan/+/+/gm-{n:04d}" for n in (1, 2, 3)),
    "user gm-gw-0002",
    *(f"topic write yangquan/+/+/gm-{n:04d}" for n in (4, 5)),
]
UNLISTED_GATEWAY = "gx-gw-0001"  # a gateway user without the ACL lines for its devices


@dataclass
class SecureFleet:
    """The module's secure broker and the secrets of FLEET meters, each its own user."""

    root: Path
    secrets: Path
    port: int
    tls_port: int
    service: stack.Service

    @property
    def ca_file(self) -> Path:
        return self.secrets / "ca.crt"

    def password(self, user: str) -> str:
        return (self.secrets / "passwords" / user).read_text().strip()

    def scenario(self, name: str, count: int = FLEET, device_passwords: bool = True, secrets: Path | None = None, more: str = "") -> Path:
        """A scenario of `count` meters, each its own connection, and `more` fleets, over TLS; logins from `secrets` (default: the module's)."""
        path = self.root / name
        folder = f"  device_passwords: {secrets or self.secrets}" if device_passwords else ""
        path.write_text(SCENARIO.format(count=count, more=more, tls_port=self.tls_port, ca_file=self.ca_file, device_passwords=folder, influx_port=stack.free_port()))
        return path

    def start(self) -> None:
        self.service = stack.start_secure_mosquitto(self.root / "broker", self.port, self.tls_port, self.secrets, self.root / "acl", self.root / "conf.d")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureFleet]:
    root = tmp_path_factory.mktemp("secure-fleet")
    secrets = root / "secrets"
    holder = SecureFleet(root, secrets, stack.free_port(), stack.free_port(), None)  # type: ignore[arg-type]  # started below
    # The users are what `iotsim devices` lists for the scenario: its 2,000 meters.
    listed = subprocess.run([*IOTSIM, "devices", str(holder.scenario("ids.yaml", device_passwords=False))], capture_output=True, text=True, timeout=60, env=child_env())
    assert listed.returncode == 0 and listed.stdout.splitlines() == IDS, listed.stderr
    # And a scenario's gateways: their users, and the ACL lines that let each publish for its devices.
    gateways = holder.scenario("gateways.yaml", 2, more=GATEWAY_FLEET)
    users = subprocess.run([*IOTSIM, "devices", str(gateways)], capture_output=True, text=True, timeout=60, env=child_env())
    assert users.returncode == 0 and users.stdout.splitlines() == [*IDS[:2], "gm-gw-0001", "gm-gw-0002"], users.stderr
    acl = subprocess.run([*IOTSIM, "devices", str(gateways), "--acl"], capture_output=True, text=True, timeout=60, env=child_env())
    assert acl.returncode == 0 and acl.stdout.splitlines() == GATEWAY_ACL, acl.stderr
    make_secrets(secrets, WATCHER, UNLISTED_GATEWAY, devices_from=listed.stdout + users.stdout)
    (root / "acl").write_text((stack.SECURE_DIR / "acl").read_text() + WATCHER_ACL + acl.stdout)
    conf_dir = root / "conf.d"
    conf_dir.mkdir()
    for conf in (stack.BROKERS_DIR / "conf.d").glob("*.conf"):
        shutil.copy(conf, conf_dir / conf.name)
    (conf_dir / "90-test-sys.conf").write_text(f"sys_interval {SYS_INTERVAL_S}\n")
    raise_open_files(FLEET + 500)  # Mosquitto inherits our open-files limit: one file per device connection
    holder.start()
    yield holder
    holder.service.stop()


def watch(fleet: SecureFleet, topics: list[str], client_id: str | None = None) -> Watcher:
    """mosquitto_sub as `test-watcher` on the plain port, keeping every message: (topic, payload, retained)."""
    return Watcher(fleet.port, topics, client_id, login=(WATCHER, fleet.password(WATCHER)))


def last_connected(messages: list[tuple[str, bytes, bool]]) -> int | None:
    values = [int(payload) for topic, payload, _ in messages if topic == CONNECTED_TOPIC]
    return values[-1] if values else None


def tls_sessions(fleet: SecureFleet, count: int = FLEET, policy: ReconnectPolicy | None = None, **changes: object) -> DeviceSessions:
    """The first `count` meters' sessions as `iotsim run` builds them from the scenario (TLS, each its own login);
    `policy`: a reconnect policy for all instead of the fleet's, `changes`: settings changed."""
    plan = connection_plan(load_scenario(fleet.scenario("fleet.yaml", count)))
    assert plan is not None and plan.settings.tls and plan.ids == IDS[:count]
    assert plan.passwords == [fleet.password(device_id) for device_id in plan.ids]  # each its own password, none shared
    policies = [policy] * count if policy else plan.policies
    return DeviceSessions(plan.ids, replace(plan.settings, **changes), policies=policies, passwords=plan.passwords)  # type: ignore[arg-type]


def test_two_thousand_devices_each_log_in_as_itself_over_tls_and_publish_only_as_itself(fleet: SecureFleet) -> None:
    sessions = tls_sessions(fleet)
    watcher = watch(fleet, [CONNECTED_TOPIC, "yangquan/city/#"])
    try:
        started = time.monotonic()
        sessions.start()
        assert sessions.run_until(sessions.all_connected, timeout=120), f"{sessions.stats.connected} of {FLEET} connected"
        took = time.monotonic() - started
        stats = sessions.stats
        assert stats.connects == FLEET and stats.connect_failures == 0 and stats.latency_ms.get_total_count() == FLEET
        assert all(isinstance(session.client.socket(), ssl.SSLSocket) for session in sessions.sessions)
        print(f"\n{FLEET} TLS device connections in {took:.2f} s ({FLEET / took:.0f}/s), CONNECT→CONNACK p99 {stats.latency_ms.get_value_at_percentile(99)} ms")

        # The broker's own count: the devices and this watcher, exactly.
        def counted(messages: list) -> bool:
            sessions.turn(0.0)  # the devices answer the broker's traffic meanwhile
            return last_connected(messages) == FLEET + 1

        assert last_connected(watcher.wait(counted, timeout=3 * SYS_INTERVAL_S + 10)) == FLEET + 1
        # Each logged in as itself: the broker's log names its client id and its user, the same.
        log = fleet.service.log_file.read_text()
        assert sum(f" as {device_id} (p2, c1, k60, u'{device_id}')." in log for device_id in IDS) == FLEET

        # meter-0001 publishing on meter-0002's topics: MQTT 3.1.1 acknowledges and drops it. Its own
        # messages come to the watcher in order, so a forgery passed on would arrive before the sentinel.
        sessions.publish("meter-0001", "yangquan/city/electricity_meter/meter-0002", b"forged reading")
        sessions.publish("meter-0001", "yangquan/status/meter-0002", b"forged status")
        sessions.publish("meter-0001", "yangquan/city/electricity_meter/meter-0001", b"own reading")
        sessions.publish("meter-0001", "yangquan/city/electricity_meter/meter-0001", b"sentinel")
        assert sessions.run_until(sessions.drained, timeout=10)
        messages = watcher.wait(lambda m: sessions.turn(0.0) or any(payload == b"sentinel" for _, payload, _ in m), timeout=10)
        assert [(topic, payload) for topic, payload, _ in messages if topic.startswith("yangquan/")] == [
            ("yangquan/city/electricity_meter/meter-0001", b"own reading"),
            ("yangquan/city/electricity_meter/meter-0001", b"sentinel"),
        ]
    finally:
        watcher.stop()
        sessions.close()


def test_a_device_session_is_told_not_authorized_on_another_devices_topics_with_mqtt5(fleet: SecureFleet) -> None:
    sessions = tls_sessions(fleet, 2, protocol="5")
    reasons: dict[str, list[int]] = {device_id: [] for device_id in IDS[:2]}  # each device's PUBACK reasons, in order
    for session in sessions.sessions:
        forward = session.client.on_publish

        def spy(client: object, userdata: object, mid: int, reason: object, properties: object, forward: Callable = forward, device_id: str = session.device_id) -> None:
            reasons[device_id].append(reason.value)  # type: ignore[attr-defined]
            forward(client, userdata, mid, reason, properties)

        session.client.on_publish = spy
    try:
        sessions.start()
        assert sessions.run_until(sessions.all_connected, timeout=10)
        for topic in ("yangquan/city/electricity_meter/meter-0001", "yangquan/city/electricity_meter/meter-0002", "yangquan/status/meter-0002", "yangquan/status/meter-0001"):
            sessions.publish("meter-0001", topic, b"{}")
        assert sessions.run_until(lambda: sessions.drained() and len(reasons["meter-0001"]) == 5, timeout=10)
        birth, own, forged, forged_status, own_status = reasons["meter-0001"]
        assert birth in ACCEPTED and own in ACCEPTED and own_status in ACCEPTED
        assert (forged, forged_status) == (NOT_AUTHORIZED, NOT_AUTHORIZED)
        assert len(reasons["meter-0002"]) == 1 and reasons["meter-0002"][0] in ACCEPTED  # its birth
    finally:
        sessions.close()


def test_a_dead_battery_over_tls_fires_exactly_that_devices_will(fleet: SecureFleet) -> None:
    keepalive = 3  # the broker gives up on a silent device after 1.5 keepalives: 4.5 s
    sessions = tls_sessions(fleet, 20, keepalive=keepalive)
    watcher = watch(fleet, [f"yangquan/status/{device_id}" for device_id in IDS[:20]])
    live = lambda messages: [(topic, orjson.loads(payload)) for topic, payload, retained in messages if topic.startswith("yangquan/") and not retained]  # noqa: E731
    try:
        sessions.start()
        assert sessions.run_until(sessions.all_connected, timeout=10)
        births = live(watcher.wait(lambda m: sessions.turn(0.0) or len(live(m)) >= 20, timeout=10))
        assert sorted(topic for topic, _ in births) == [f"yangquan/status/{device_id}" for device_id in IDS[:20]] and all(payload["online"] for _, payload in births)
        seen = len(live(watcher.taken()))
        sessions.publish("meter-0007", "yangquan/city/electricity_meter/meter-0007", b"{}")  # its last packet: the broker's keepalive counts from it
        assert sessions.run_until(lambda: sessions.settled("meter-0007"), timeout=5)
        killed_at = time.monotonic()
        sessions.kill("meter-0007")
        # The dead device's will comes after ~1.5 keepalives; the others, idle as long and a second more, keep their sessions with PINGREQs.
        assert sessions.run_until(lambda: len(live(watcher.taken())) > seen, timeout=4 * keepalive)
        assert time.monotonic() - killed_at > keepalive  # silent, not closed: the broker waited for the keepalive to pass
        sessions.run_until(lambda: False, timeout=1.0)
        wills = live(watcher.taken())[seen:]
        assert [(topic, payload["device_id"], payload["online"]) for topic, payload in wills] == [("yangquan/status/meter-0007", "meter-0007", False)]
        assert sessions.stats.connected == 19 and sessions.stats.disconnects == 1
    finally:
        watcher.stop()
        sessions.close()


def test_a_broker_restart_over_tls_every_device_reconnects_and_nothing_is_lost(fleet: SecureFleet) -> None:
    during_outage = 3
    policy = ReconnectPolicy(policy="exponential", min=0.25, max=2.0, jitter="full")
    sessions = tls_sessions(fleet, policy=policy, connect_window=0.5)
    watcher = watch(fleet, ["yangquan/city/electricity_meter/#", *STORE_TOPICS], client_id="test-watcher-restart")
    seq = dict.fromkeys(IDS, 0)

    def publish_all() -> None:
        for device_id in IDS:
            sessions.publish(device_id, f"yangquan/city/electricity_meter/{device_id}", orjson.dumps({"device_id": device_id, "seq": seq[device_id]}))
            seq[device_id] += 1

    try:
        sessions.start()
        assert sessions.run_until(sessions.all_connected, timeout=120)
        publish_all()
        assert sessions.run_until(sessions.drained, timeout=60)
        settled = watcher.wait(lambda m: acknowledged_by_watcher(m, "yangquan/", FLEET), timeout=60 + 3 * SYS_INTERVAL_S)
        assert acknowledged_by_watcher(settled, "yangquan/", FLEET), "the broker still holds messages for the watcher"

        fleet.service.stop()  # SIGTERM by PID: Mosquitto saves its persistence (the watcher's session) and exits
        assert sessions.run_until(lambda: sessions.stats.connected == 0, timeout=10)
        for _ in range(during_outage):
            publish_all()  # into the devices' outboxes
        sessions.run_until(lambda: False, timeout=1.0)  # attempts against the stopped broker fail and back off
        assert sessions.outbox_depth() == FLEET * during_outage and sessions.stats.connect_failures > 0

        fleet.start()  # the same ports, config and persistence
        restarted = time.monotonic()
        assert sessions.run_until(sessions.all_connected, timeout=120), f"{sessions.stats.connected} of {FLEET} back"
        storm_s = time.monotonic() - restarted
        stats = sessions.stats
        assert stats.reconnects == FLEET and stats.overflowed == 0
        connects_per_s = stats.reconnects / storm_s
        assert storm_s > 0 and connects_per_s > 0
        print(f"\nTLS reconnect storm: {FLEET} devices all back {storm_s:.2f} s after the broker restarted ({connects_per_s:.0f} connects/s)")
        assert sessions.run_until(sessions.drained, timeout=60)

        expected = FLEET * (1 + during_outage)
        messages = watcher.wait(lambda m: sum(1 for topic, *_ in m if topic.startswith("yangquan/")) >= expected, timeout=60)
        payloads = [orjson.loads(payload) for topic, payload, _ in messages if topic.startswith("yangquan/")]
        assert len(payloads) == expected, f"{len(payloads)} messages of {expected}"
        assert Counter((p["device_id"], p["seq"]) for p in payloads) == Counter({(device_id, n): 1 for device_id in IDS for n in range(1 + during_outage)})
        assert seq_gaps(payloads) == 0  # per device, in arrival order, as the bridge counts them
    finally:
        watcher.stop()
        sessions.close()


def seq_gaps(payloads: list[dict]) -> int:
    """Gaps as the bridge counts them: a device's seq past the next one expected, in the order they came."""
    last: dict[str, int] = {}
    gaps = 0
    for payload in payloads:
        device_id, seq = payload["device_id"], payload["seq"]
        if device_id in last and seq > last[device_id] + 1:
            gaps += 1
        last[device_id] = max(seq, last.get(device_id, seq))
    return gaps


@pytest.mark.parametrize("gateways", [False, True], ids=["devices", "and-gateways"])
def test_iotsim_run_logs_each_connection_in_as_itself_over_tls(fleet: SecureFleet, gateways: bool) -> None:
    # The folder from the flag or the variable instead of the scenario; gateways publish for their devices by the ACL lines of `iotsim devices --acl`.
    scenario = fleet.scenario(f"run-{gateways}.yaml", 5, device_passwords=False, more=GATEWAY_FLEET if gateways else "")
    connections = [*IDS[:5], "gm-gw-0001", "gm-gw-0002"] if gateways else IDS[:5]
    dry = fleet.root / "run.jsonl"
    assert iotsim("run", str(scenario), "--dry-run", "--out", str(dry)).returncode == 0
    expected = sorted((record["topic"], orjson.dumps(record["payload"])) for record in map(orjson.loads, dry.read_bytes().splitlines()))
    watcher = watch(fleet, ["yangquan/city/#", "yangquan/events/#"])
    try:
        env = {**child_env(), "MQTT_PASSWORD_FILE": str(fleet.secrets / "passwords" / "simulator")}
        if gateways:  # the folder from the variable, the other time from the flag
            command, env = [*IOTSIM, "run", str(scenario)], {**env, "MQTT_DEVICE_PASSWORDS_DIR": str(fleet.secrets)}
        else:
            command = [*IOTSIM, "run", str(scenario), "--device-passwords", str(fleet.secrets)]
        run = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
        assert run.returncode == 0, run.stderr
        total = len(expected)
        assert f"generated {total}, published {total}, acknowledged {total}" in run.stdout
        described = "7 own connections (10 devices, 2 gateways), connects 7" if gateways else "5 own connections (5 devices), connects 5"
        assert f"device connections: {described}, reconnects 0, failed attempts 0" in run.stdout
        messages = watcher.wait(lambda m: sum(1 for topic, *_ in m if topic.startswith("yangquan/")) >= total, timeout=60)
    finally:
        watcher.stop()
    assert sorted((topic, orjson.dumps(orjson.loads(payload))) for topic, payload, _ in messages if topic.startswith("yangquan/")) == expected
    log = fleet.service.log_file.read_text()
    assert all(f" as {connection} (p2, c1, k60, u'{connection}')." in log for connection in connections)


@pytest.mark.parametrize("problem", ["missing", "empty"])
def test_a_device_without_its_password_is_one_line_before_any_connection(fleet: SecureFleet, problem: str) -> None:
    secrets = fleet.root / f"secrets-{problem}"
    (secrets / "passwords").mkdir(parents=True, exist_ok=True)
    for device_id in IDS[:2]:
        shutil.copy(fleet.secrets / "passwords" / device_id, secrets / "passwords" / device_id)
    if problem == "empty":
        (secrets / "passwords" / "meter-0003").write_text("\n")
    scenario = fleet.scenario(f"{problem}.yaml", 3, secrets=secrets)
    before = fleet.service.log_file.read_text().count("New client connected")
    env = {**child_env(), "MQTT_PASSWORD_FILE": str(fleet.secrets / "passwords" / "simulator")}
    run = subprocess.run([*IOTSIM, "run", str(scenario)], capture_output=True, text=True, timeout=120, env=env)
    what = "no such file" if problem == "missing" else "empty"
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == f"{secrets}/passwords/meter-0003: {what}; generate them: iotsim devices {scenario} | DEVICES_FROM=- brokers/secure/make-passwords.sh {secrets}\n"
    assert fleet.service.log_file.read_text().count("New client connected") == before  # not even the run's shared connection


GATEWAYS = """
name: gateways
duration: 1h
fleets:
  - {type: air_quality, count: 3, connection: device}
  - {type: water_pressure, count: 10, connection: gateway, gateway_size: 4}
  - {type: noise_monitor, count: 2}
mqtt: {url: "mqtts://127.0.0.1:8883", ca_file: ca.crt, device_passwords: secrets}
"""


def test_iotsim_devices_lists_the_ids_that_log_in_and_own_connections_may_speak_tls(tmp_path: Path) -> None:
    path = tmp_path / "gateways.yaml"
    path.write_text(GATEWAYS)
    assert iotsim("validate", str(path)).returncode == 0  # own connections over mqtts:// (before issue 15's TLS: refused)
    listed = iotsim("devices", str(path))
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    # A gateway fleet's devices publish through their gateways, which are what log in; a shared fleet's devices are listed as before.
    assert listed.stdout.splitlines() == ["aq-0001", "aq-0002", "aq-0003", "water-gw-0001", "water-gw-0002", "water-gw-0003", "noise-0001", "noise-0002"]


def test_publishes_the_broker_refuses_with_mqtt5_are_counted_and_fail_the_run(fleet: SecureFleet) -> None:
    # A gateway logged in as itself without its ACL lines: the broker refuses its devices' readings (0x87).
    scenario = fleet.scenario("unlisted.yaml", 1, more="  - {type: electricity_meter, id_prefix: gx, count: 2, connection: gateway, gateway_size: 2}")
    scenario.write_text(scenario.read_text().replace("  username: simulator\n", "  username: simulator\n  protocol: '5'\n"))
    dry = fleet.root / "unlisted.jsonl"
    assert iotsim("run", str(scenario), "--dry-run", "--out", str(dry)).returncode == 0
    topics = [orjson.loads(line)["topic"] for line in dry.read_bytes().splitlines()]
    refused = sum(1 for topic in topics if topic.rsplit("/", 1)[1].startswith("gx-"))
    assert refused > 0
    env = {**child_env(), "MQTT_PASSWORD_FILE": str(fleet.secrets / "passwords" / "simulator")}
    run = subprocess.run([*IOTSIM, "run", str(scenario)], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"generated {len(topics)}, published {len(topics)}, acknowledged {len(topics) - refused}" in run.stdout
    assert f"; {refused} messages refused by the broker (not authorized: its ACL, docs/security.md)" in run.stdout


@pytest.mark.parametrize(("content", "reason"), [(None, "(no such file)"), ("not a certificate\n", "does not contain a certificate")], ids=["missing", "junk"])
def test_a_ca_file_that_is_no_certificate_is_one_line(tmp_path: Path, content: str | None, reason: str) -> None:
    ca_file = tmp_path / "ca.crt"
    if content is not None:
        ca_file.write_text(content)
    scenario = tmp_path / "bad-ca.yaml"
    scenario.write_text(f"name: bad-ca\nduration: 1h\nfleets:\n  - {{type: electricity_meter, count: 2, connection: device}}\nmqtt: {{url: 'mqtts://127.0.0.1:1', ca_file: {ca_file}}}\n")
    run = iotsim("run", str(scenario))
    assert (run.returncode, run.stdout, run.stderr.count("\n")) == (2, "", 1), run.stderr
    assert run.stderr.startswith(f"CA file {ca_file} (mqtt.ca_file, --ca-file): cannot read it as a CA certificate (") and reason in run.stderr


def test_a_device_whose_login_the_broker_refuses_fails_the_run_and_says_what_never_left(fleet: SecureFleet) -> None:
    # meter-0002's password file holds another password than the broker's (regenerated, the broker not told):
    # its messages never leave its outbox, which is a loss the exit code and the summary must show.
    secrets = fleet.root / "secrets-wrong"
    (secrets / "passwords").mkdir(parents=True, exist_ok=True)
    for device_id in IDS[:2]:
        shutil.copy(fleet.secrets / "passwords" / device_id, secrets / "passwords" / device_id)
    (secrets / "passwords" / "meter-0002").write_text("0" * 32 + "\n")
    scenario = fleet.scenario("wrong-password.yaml", 2, secrets=secrets)
    dry = fleet.root / "wrong-password.jsonl"
    assert iotsim("run", str(scenario), "--dry-run", "--out", str(dry)).returncode == 0
    topics = [orjson.loads(line)["topic"] for line in dry.read_bytes().splitlines()]
    stuck = sum(1 for topic in topics if topic.endswith("/meter-0002"))
    assert 0 < stuck < len(topics)
    env = {**child_env(), "MQTT_PASSWORD_FILE": str(fleet.secrets / "passwords" / "simulator")}
    run = subprocess.run([*IOTSIM, "run", str(scenario), "--drain-timeout", "2"], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"generated {len(topics)}, published {len(topics) - stuck}, acknowledged {len(topics) - stuck}" in run.stdout
    assert f"; {stuck} messages never sent: their devices were not connected at the end; logins refused by the broker: 1 (meter-0002: Not authorized; " in run.stdout
    assert "0" * 32 not in run.stdout + run.stderr


def test_a_broker_that_accepts_but_does_not_answer_stalls_no_turn_of_the_tls_loop(fleet: SecureFleet) -> None:
    # Mosquitto stopped (SIGSTOP: a frozen host, a broker swamped by a storm): the kernel still completes
    # the TCP connects, and no TLS handshake gets an answer. Each such connect must not hold the loop,
    # which serves every other device meanwhile: a turn stays a turn, the handshakes time out as failed
    # connects, and once the broker answers again every device connects.
    count = 8
    policy = ReconnectPolicy(policy="fixed", min=0.5, max=0.5, jitter="none")
    sessions = tls_sessions(fleet, count, policy=policy)
    os.kill(fleet.service.pid, signal.SIGSTOP)
    try:
        sessions.start()
        turns = []
        deadline = time.monotonic() + CONNECT_TIMEOUT_S + 3
        while time.monotonic() < deadline and sessions.stats.connect_failures < count:
            began = time.monotonic()
            sessions.turn(0.05)
            turns.append(time.monotonic() - began)
        # a blocking handshake would hold the loop up to CONNECT_TIMEOUT_S; a busy machine, a few tenths
        assert max(turns) < 0.9, f"the longest turn took {max(turns):.1f} s"
        assert sessions.stats.connect_failures >= count and sessions.stats.connected == 0  # each handshake gave up after CONNECT_TIMEOUT_S
    finally:
        os.kill(fleet.service.pid, signal.SIGCONT)
    try:
        assert sessions.run_until(sessions.all_connected, timeout=20), f"{sessions.stats.connected} of {count} connected"
        for device_id in IDS[:count]:
            sessions.publish(device_id, f"yangquan/city/electricity_meter/{device_id}", orjson.dumps({"device_id": device_id, "seq": 0}))
        assert sessions.run_until(sessions.drained, timeout=10) and sessions.stats.acknowledged == count
    finally:
        sessions.close()


def test_iotsim_run_workers_log_each_device_in_as_itself_with_the_flag(fleet: SecureFleet) -> None:
    # --device-passwords given to a run of 2 workers: each child logs its devices in as themselves, not as mqtt.username.
    scenario = fleet.scenario("workers.yaml", 4, device_passwords=False)
    env = {**child_env(), "MQTT_PASSWORD_FILE": str(fleet.secrets / "passwords" / "simulator")}
    env.pop("MQTT_DEVICE_PASSWORDS_DIR", None)
    before = fleet.service.log_file.read_text()
    run = subprocess.run([*IOTSIM, "run", str(scenario), "--workers", "2", "--device-passwords", str(fleet.secrets)], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    log = fleet.service.log_file.read_text()[len(before) :]
    assert all(f" as {device_id} (p2, c1, k60, u'{device_id}')." in log for device_id in IDS[:4]), log


def test_a_device_that_leaves_while_its_tls_connection_opens_never_connects(fleet: SecureFleet) -> None:
    # disconnect() (a load experiment's ramp down) while the device's TLS handshake waits for a stopped
    # broker: it must not connect once the broker answers again.
    sessions = tls_sessions(fleet, 2)
    os.kill(fleet.service.pid, signal.SIGSTOP)
    try:
        sessions.start()
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            sessions.turn(0.05)
        leaving, staying = IDS[0], IDS[1]
        assert sessions.by_id[leaving].opening is not None  # its handshake is still waiting
        sessions.disconnect(leaving)
    finally:
        os.kill(fleet.service.pid, signal.SIGCONT)
    try:
        assert sessions.run_until(lambda: sessions.by_id[staying].connected, timeout=20)
        sessions.run_until(lambda: False, 1.0)
        assert not sessions.by_id[leaving].connected and sessions.stats.connected == 1
    finally:
        sessions.close()
