"""Every device its own MQTT connection (issue 15) against the real Mosquitto: thousands of sessions on
one epoll loop, births retained, exactly the dead device's will, and a broker restart that loses
nothing at QoS 1."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from conftest import iotsim

from simulator import stack
from simulator.connections import connection_plan
from simulator.errors import UsageError
from simulator.fleet import ReconnectPolicy
from simulator.randomness import stream
from simulator.scenario import load_scenario
from simulator.shard import Shard
from simulator.transport.sessions import (
    HOLD_MARGIN_S,
    PORTS_PER_ADDRESS,
    DeviceSessions,
    OpenFilesLimit,
    SessionSettings,
    connect_offset,
    raise_open_files,
    reconnect_delay,
    source_addresses,
)

READY_TOPIC = "$SYS/broker/version"
SYS_INTERVAL_S = 1  # the test broker publishes $SYS every second (Mosquitto's default: 10 s)
UPTIME_TOPIC = "$SYS/broker/uptime"  # published every round; the others below only when they change
STORED_TOPIC = "$SYS/broker/store/messages/count"
RETAINED_TOPIC = "$SYS/broker/retained messages/count"
STORE_TOPICS = [UPTIME_TOPIC, STORED_TOPIC, RETAINED_TOPIC]


@pytest.fixture
def sys_broker(tmp_path: Path) -> Iterator[stack.Service]:
    """A broker of our own (this test restarts or loads it), with the shared settings and $SYS every second."""
    raise_open_files(2_500)  # Mosquitto inherits our open-files limit: one file per device connection
    conf_dir = tmp_path / "conf.d"
    conf_dir.mkdir()
    for conf in (stack.BROKERS_DIR / "conf.d").glob("*.conf"):
        shutil.copy(conf, conf_dir / conf.name)
    (conf_dir / "90-test-sys.conf").write_text(f"sys_interval {SYS_INTERVAL_S}\n")
    service = stack.start_mosquitto(tmp_path / "state", stack.free_port(), conf_dir=conf_dir)
    yield service
    service.stop()


class Watcher:
    """A subscriber in its own process (mosquitto_sub: paho's own loop would select() on a descriptor
    past 1,024 in this one) that keeps every message it receives: (topic, payload, retained)."""

    def __init__(self, port: int, topics: list[str], client_id: str | None = None, login: tuple[str, str] | None = None) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        command = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-F", "%r %l %t %p"]
        if login is not None:  # a broker that wants passwords (the secure profile): user, password
            command += ["-u", login[0], "-P", login[1]]
        if client_id is not None:
            command += ["-i", client_id, "-c"]  # a persistent session: the broker keeps what comes while it is away
        for topic in [READY_TOPIC, *topics]:
            command += ["-t", topic]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        # $SYS topics are retained: the first one says the subscription is in place.
        assert self.wait(lambda messages: any(topic == READY_TOPIC for topic, *_ in messages), timeout=10), "mosquitto_sub did not subscribe"

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            # The payload's length says where the topic ends ($SYS has topics with spaces).
            retained, length, rest = line.rstrip(b"\n").split(b" ", 2)
            topic, payload = rest[: len(rest) - int(length) - 1], rest[len(rest) - int(length) :]
            with self.lock:
                self.messages.append((topic.decode(), payload, retained == b"1"))

    def taken(self) -> list[tuple[str, bytes, bool]]:
        with self.lock:
            return list(self.messages)

    def wait(self, done: Callable[[list[tuple[str, bytes, bool]]], bool], timeout: float) -> list[tuple[str, bytes, bool]]:
        deadline = time.monotonic() + timeout
        while not done(messages := self.taken()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return messages

    def stop(self) -> None:
        stack.stop_pid(self.process.pid)
        self.process.wait(timeout=10)
        self.reader.join(timeout=10)


def acknowledged_by_watcher(messages: list[tuple[str, bytes, bool]], prefix: str, count: int) -> bool:
    """The watcher (subscribed to STORE_TOPICS too) has `count` messages under `prefix` and, in a $SYS
    round wholly after the last of them, the broker's store held retained messages only: it had every
    PUBACK of the watcher's. A broker stopped before then sends the unacknowledged ones again after its
    restart (QoS 1's copies, which an exact count would take for the devices')."""
    under = [i for i, (topic, *_) in enumerate(messages) if topic.startswith(prefix)]
    if len(under) < count:
        return False
    rounds_after = sum(1 for topic, *_ in messages[under[-1] + 1 :] if topic == UPTIME_TOPIC)
    latest = {topic: payload for topic, payload, _ in messages if topic in (STORED_TOPIC, RETAINED_TOPIC)}
    return rounds_after >= 2 and len(latest) == 2 and latest[STORED_TOPIC] == latest[RETAINED_TOPIC]


def device_ids(count: int) -> list[str]:
    return [f"em-{n:05d}" for n in range(count)]


def last_connected(messages: list[tuple[str, bytes, bool]]) -> int | None:
    values = [int(payload) for topic, payload, _ in messages if topic == "$SYS/broker/clients/connected"]
    return values[-1] if values else None


def test_two_thousand_devices_each_connected_with_a_retained_birth(sys_broker: stack.Service) -> None:
    ids = device_ids(2_000)
    settings = SessionSettings(port=sys_broker.port, prefix="t2k", connect_window=2.0, seed=7, source_addresses=("127.0.0.1", "127.0.0.2"))
    sessions = DeviceSessions(ids, settings)
    started = time.monotonic()
    sessions.start()
    try:
        assert sessions.run_until(sessions.all_connected, timeout=60), f"{sessions.stats.connected} of 2000 connected"
        took = time.monotonic() - started
        assert took >= 1.5, f"2,000 connects spread over a 2 s window took only {took:.2f} s"
        assert sessions.stats.connects == 2_000 and sessions.stats.reconnects == 0 and sessions.stats.connect_failures == 0
        assert sessions.stats.latency_ms.get_total_count() == 2_000
        sources = Counter(session.client.socket().getsockname()[0] for session in sessions.sessions)
        assert sources == {"127.0.0.1": 1_000, "127.0.0.2": 1_000}

        watcher = Watcher(sys_broker.port, ["$SYS/broker/clients/connected", "t2k/status/#"])
        try:
            # Births are retained: a subscriber that comes later gets each device's, online.
            def counted(messages: list) -> bool:
                sessions.turn(0.0)  # the devices answer the broker's traffic meanwhile
                return last_connected(messages) == 2_001 and sum(1 for topic, *_ in messages if topic.startswith("t2k/")) >= 2_000

            messages = watcher.wait(counted, timeout=3 * SYS_INTERVAL_S + 10)
            assert last_connected(messages) == 2_001, "the broker's count of connected clients (the devices and this watcher)"
            births = {topic: (orjson.loads(payload), retain) for topic, payload, retain in messages if topic.startswith("t2k/")}
            assert set(births) == {f"t2k/status/{device_id}" for device_id in ids}
            for topic, (payload, retain) in births.items():
                assert retain and payload["online"] is True and payload["device_id"] == topic.rsplit("/", 1)[1]
                assert abs(payload["ts"] - time.time() * 1000) < 120_000
        finally:
            watcher.stop()
    finally:
        sessions.close()
    # A clean close says goodbye: each device's retained status is now offline, and none is connected.
    watcher = Watcher(sys_broker.port, ["$SYS/broker/clients/connected", "t2k/status/#"])
    try:
        messages = watcher.wait(lambda m: last_connected(m) == 1 and sum(1 for t, *_ in m if t.startswith("t2k/")) >= 2_000, timeout=15)
        statuses = {topic: orjson.loads(payload)["online"] for topic, payload, _ in messages if topic.startswith("t2k/")}
        assert len(statuses) == 2_000 and not any(statuses.values())
        assert last_connected(messages) == 1
    finally:
        watcher.stop()


def test_a_dead_battery_fires_exactly_that_devices_will(sys_broker: stack.Service) -> None:
    ids = device_ids(20)
    keepalive = 3  # the broker gives up on a silent device after 1.5 keepalives: 4.5 s
    sessions = DeviceSessions(ids, SessionSettings(port=sys_broker.port, prefix="twill", keepalive=keepalive, seed=3))
    sessions.start()
    watcher = Watcher(sys_broker.port, ["twill/status/#"])
    try:
        assert sessions.run_until(sessions.all_connected, timeout=15)

        def births(messages: list) -> bool:
            sessions.turn(0.0)
            return len({topic for topic, *_ in messages if topic.startswith("twill/")}) == 20

        assert births(watcher.wait(births, timeout=10))
        (birth_ts,) = [orjson.loads(payload)["ts"] for topic, payload, _ in watcher.taken() if topic == "twill/status/em-00007"]
        seen = len(watcher.taken())
        sessions.publish("em-00007", "twill/data/em-00007", b"{}")  # its last packet: the broker's keepalive counts from it
        assert sessions.run_until(lambda: sessions.settled("em-00007"), timeout=5)
        killed_at = time.monotonic()
        sessions.kill("em-00007")
        # Silent, not closed: for one keepalive the broker has no reason to give up on it.
        sessions.run_until(lambda: time.monotonic() - killed_at > keepalive, timeout=keepalive + 1)
        assert not [topic for topic, *_ in watcher.taken()[seen:] if topic.startswith("twill/")]
        # Four keepalives: the dead device's will comes after ~1.5 of them; the live devices, idle
        # all along, keep their sessions with PINGREQs and send no will.
        sessions.run_until(lambda: time.monotonic() - killed_at > 4 * keepalive, timeout=4 * keepalive + 1)
        wills = [(topic, orjson.loads(payload), retain) for topic, payload, retain in watcher.taken()[seen:] if topic.startswith("twill/")]
        assert [(topic, payload["device_id"], payload["online"]) for topic, payload, _ in wills] == [("twill/status/em-00007", "em-00007", False)]
        assert wills[0][1]["ts"] == birth_ts  # one connection, one status point: the bridge stores its will over its birth
        assert sessions.stats.connected == 19 and sessions.stats.disconnects == 1 and sessions.stats.reconnects == 0

        # It comes back: a new session, its birth again.
        seen = len(watcher.taken())
        sessions.revive("em-00007")
        assert sessions.run_until(sessions.all_connected, timeout=10)
        back = watcher.wait(lambda m: sessions.turn(0.0) or len(m) > seen, timeout=10)[seen:]
        assert [(topic, orjson.loads(payload)["online"]) for topic, payload, _ in back] == [("twill/status/em-00007", True)]
        assert sessions.stats.reconnects == 1
    finally:
        watcher.stop()
        sessions.close()


def test_a_birth_unacknowledged_when_its_connection_died_does_not_outlive_its_will(sys_broker: stack.Service) -> None:
    """paho sends such a birth again on the next connection, after that connection's will: the status
    point of the dead connection (the birth's ts) must still end offline, and the retained status be the
    new connection's birth."""
    ids, victim, keepalive = device_ids(5), "em-00003", 2
    sessions = DeviceSessions(ids, SessionSettings(port=sys_broker.port, prefix="tstale", keepalive=keepalive, seed=4))
    watcher = Watcher(sys_broker.port, ["tstale/status/#"])

    def statuses(messages: list[tuple[str, bytes, bool]]) -> list[tuple[int, bool]]:
        return [(status["ts"], status["online"]) for topic, payload, _ in messages if topic == f"tstale/status/{victim}" for status in [orjson.loads(payload)]]

    try:
        sessions.start()
        assert sessions.run_until(lambda: sessions.by_id[victim].connected, timeout=15)
        assert sessions.by_id[victim].status_mids  # its birth's PUBACK is not read yet
        sessions.kill(victim)
        (birth, will) = statuses(watcher.wait(lambda m: sessions.turn(0.0) or (False, False) in [(False, o) for _, o in statuses(m)], timeout=4 * keepalive + 5))
        assert birth == (will[0], True) and will[1] is False  # the broker had the birth; paho did not hear so
        sessions.revive(victim)
        assert sessions.run_until(lambda: sessions.all_connected() and all(sessions.settled(d) for d in ids), timeout=10)
        watcher.wait(lambda m: sessions.turn(0.0) or any(online and ts != will[0] for ts, online in statuses(m)), timeout=10)  # the new birth
        sessions.run_until(lambda: False, timeout=0.5)  # whatever else comes
        seen = statuses(watcher.taken())
        points = dict(seen)  # the bridge's device_status points: one per ts, the last status wins
        births = [ts for ts, online in seen if online and ts != will[0]]
        assert len(births) == 1 and points == {will[0]: False, births[0]: True}, seen
        assert seen[-1] == (births[0], True), seen  # the retained status: the live connection's birth
    finally:
        watcher.stop()
        sessions.close()


def test_a_second_death_keeps_its_silent_socket_whatever_the_first_deaths_timer(sys_broker: stack.Service) -> None:
    """kill(), revive(), kill() again: the first death's timer to close its held socket comes due in the
    second death's hold, and must leave that one alone (closed, the broker would fire the will at once)."""
    ids, victim, keepalive = device_ids(3), "em-00001", 3
    sessions = DeviceSessions(ids, SessionSettings(port=sys_broker.port, prefix="trel", keepalive=keepalive, seed=6))
    watcher = Watcher(sys_broker.port, ["trel/status/#"])
    first_release = 2 * keepalive + HOLD_MARGIN_S  # after the first kill
    try:
        sessions.start()
        assert sessions.run_until(lambda: sessions.all_connected() and all(sessions.settled(d) for d in ids), timeout=15)
        first_kill = time.monotonic()
        sessions.kill(victim)
        sessions.revive(victim)
        assert sessions.run_until(lambda: sessions.all_connected() and sessions.settled(victim), timeout=10)
        # 2 s before the first death's timer: the device speaks (a message, its PUBACK read), then dies again.
        sessions.run_until(lambda: time.monotonic() - first_kill > first_release - 2.0, timeout=first_release)
        spoke = time.monotonic()
        sessions.publish(victim, f"trel/data/{victim}", b"{}")
        assert sessions.run_until(lambda: sessions.settled(victim), timeout=5)
        seen = len(watcher.taken())
        sessions.kill(victim)
        # Past the first death's timer, short of the 1.5 keepalives (4-5 s: Mosquitto counts whole seconds)
        # the broker waits after the device's last packet.
        sessions.run_until(lambda: time.monotonic() - first_kill > first_release + 0.5, timeout=first_release)
        assert time.monotonic() - spoke < 1.3 * keepalive, "the machine too slow for this test's timing"
        assert sessions.by_id[victim].held is not None, "the second death's silent socket was closed by the first death's timer"
        assert not [topic for topic, *_ in watcher.taken()[seen:]], "a will before the broker could miss 1.5 keepalives"
        wills = watcher.wait(lambda m: sessions.turn(0.0) or len(m) > seen, timeout=3 * keepalive)[seen:]
        assert [(topic, orjson.loads(payload)["online"]) for topic, payload, _ in wills] == [(f"trel/status/{victim}", False)]
    finally:
        watcher.stop()
        sessions.close()


def test_a_broker_restart_loses_nothing_and_every_device_reconnects(sys_broker: stack.Service, tmp_path: Path) -> None:
    count, during_outage = 2_000, 3
    ids = device_ids(count)
    policy = ReconnectPolicy(policy="exponential", min=0.25, max=2.0, jitter="full")
    sessions = DeviceSessions(ids, SessionSettings(port=sys_broker.port, prefix="tout", reconnect=policy, seed=5, connect_window=0.5))
    watcher = Watcher(sys_broker.port, ["tout/data/#", *STORE_TOPICS], client_id="tout-watcher")
    broker = sys_broker
    seq = dict.fromkeys(ids, 0)

    def publish_all() -> None:
        for device_id in ids:
            payload = orjson.dumps({"device_id": device_id, "seq": seq[device_id]})
            sessions.publish(device_id, f"tout/data/{device_id}", payload)
            seq[device_id] += 1

    try:
        sessions.start()
        assert sessions.run_until(sessions.all_connected, timeout=60)
        publish_all()
        assert sessions.run_until(sessions.drained, timeout=60)
        settled = watcher.wait(lambda m: acknowledged_by_watcher(m, "tout/", count), timeout=60 + 3 * SYS_INTERVAL_S)
        assert acknowledged_by_watcher(settled, "tout/", count), "the broker still holds messages for the watcher"

        broker.stop()  # SIGTERM: Mosquitto saves its persistence (the watcher's session) and exits
        assert sessions.run_until(lambda: sessions.stats.connected == 0, timeout=10)
        for _ in range(during_outage):
            publish_all()  # into the devices' outboxes
        sessions.run_until(lambda: False, timeout=1.0)  # attempts against the stopped broker fail and back off
        assert sessions.outbox_depth() == count * during_outage and sessions.stats.connect_failures > 0

        restarted = time.monotonic()
        broker = stack.start_mosquitto(tmp_path / "state", sys_broker.port, conf_dir=tmp_path / "conf.d")
        assert sessions.run_until(sessions.all_connected, timeout=60), f"{sessions.stats.connected} of {count} back"
        storm_s = time.monotonic() - restarted
        assert sessions.stats.reconnects == count
        assert sessions.run_until(sessions.drained, timeout=60)
        print(f"\nreconnect storm: {count} devices all back {storm_s:.2f} s after the broker restarted ({count / storm_s:.0f} connects/s)")

        expected = count * (1 + during_outage)
        messages = watcher.wait(lambda m: sum(1 for topic, *_ in m if topic.startswith("tout/")) >= expected, timeout=60)
        messages = [payload for topic, payload, _ in messages if topic.startswith("tout/")]
        received = Counter((orjson.loads(payload)["device_id"], orjson.loads(payload)["seq"]) for payload in messages)
        assert len(messages) == expected, f"{len(messages)} messages of {expected}"
        assert received == Counter({(device_id, n): 1 for device_id in ids for n in range(1 + during_outage)})
        assert sessions.stats.overflowed == 0
    finally:
        watcher.stop()
        sessions.close()
        if broker is not sys_broker:
            broker.stop()


def in_seq_order(seqs: list[int]) -> bool:
    """Each message is the next seq or a copy of one already received (QoS 1 sends again what lacked its
    PUBACK): no seq comes before one it follows."""
    seen: set[int] = set()
    for seq in seqs:
        if seq != len(seen) and seq not in seen:
            return False
        seen.add(seq)
    return True


def test_after_a_broker_restart_every_devices_messages_arrive_in_seq_order(sys_broker: stack.Service, tmp_path: Path) -> None:
    """paho sends again what it had in flight only after on_connect returns: messages sent from there
    would overtake them, seq gaps the bridge counts (it sees only the reordering)."""
    count, acknowledged, unsent, during_outage = 500, 2, 3, 3
    ids = device_ids(count)
    policy = ReconnectPolicy(policy="exponential", min=0.25, max=1.0, jitter="full")
    sessions = DeviceSessions(ids, SessionSettings(port=sys_broker.port, prefix="tord", reconnect=policy, seed=11))
    watcher = Watcher(sys_broker.port, ["tord/data/#"], client_id="tord-watcher")
    broker = sys_broker
    seq = dict.fromkeys(ids, 0)

    def publish_all(times: int) -> None:
        for _ in range(times):
            for device_id in ids:
                sessions.publish(device_id, f"tord/data/{device_id}", orjson.dumps({"device_id": device_id, "seq": seq[device_id]}))
                seq[device_id] += 1

    try:
        sessions.start()
        assert sessions.run_until(lambda: sessions.all_connected() and all(sessions.settled(d) for d in ids), timeout=20)
        publish_all(acknowledged)
        assert sessions.run_until(sessions.drained, timeout=20)
        publish_all(unsent)  # handed to paho, not yet written: in flight when the broker goes
        broker.stop()  # SIGTERM: Mosquitto saves its persistence (the watcher's session) and exits
        assert sessions.run_until(lambda: sessions.stats.connected == 0, timeout=10)
        publish_all(during_outage)  # into the devices' outboxes
        broker = stack.start_mosquitto(tmp_path / "state", sys_broker.port, conf_dir=tmp_path / "conf.d")
        assert sessions.run_until(sessions.all_connected, timeout=20), f"{sessions.stats.connected} of {count} back"
        assert sessions.run_until(sessions.drained, timeout=20)

        total = acknowledged + unsent + during_outage
        taken = watcher.wait(lambda m: len({payload for topic, payload, _ in m if topic.startswith("tord/")}) >= count * total, timeout=20)
        received: dict[str, list[int]] = {device_id: [] for device_id in ids}
        for topic, payload, _ in taken:
            if topic.startswith("tord/"):
                message = orjson.loads(payload)
                received[message["device_id"]].append(message["seq"])
        assert {device_id: sorted(set(seqs)) for device_id, seqs in received.items()} == {device_id: list(range(total)) for device_id in ids}  # nothing lost
        out_of_order = {device_id: seqs for device_id, seqs in received.items() if not in_seq_order(seqs)}
        assert not out_of_order, f"{len(out_of_order)} of {count} devices' messages out of seq order, e.g. {next(iter(out_of_order.items()))}"
        assert sessions.stats.overflowed == 0
    finally:
        watcher.stop()
        sessions.close()
        if broker is not sys_broker:
            broker.stop()


@pytest.mark.parametrize("busy", [False, True])
def test_devices_connecting_while_the_sessions_close_end_offline_or_never_connected(sys_broker: stack.Service, busy: bool) -> None:
    """busy: other devices are connected with messages in flight, which close() waits for; else
    none is connected yet and close() goes straight to the DISCONNECTs."""
    ids = device_ids(200)
    sessions = DeviceSessions(ids, SessionSettings(port=sys_broker.port, prefix="tclose", seed=2))
    sessions.start()
    if busy:
        assert sessions.run_until(lambda: sessions.stats.connected > 0 and any(s.connecting for s in sessions.sessions), timeout=10)
        for session in sessions.sessions:
            if session.connected:
                sessions.publish(session.device_id, f"tclose/data/{session.device_id}", b"{}")
    else:
        sessions.turn(0.0)  # the first connects: their CONNECTs are out, no CONNACK read yet
    assert sum(session.connecting for session in sessions.sessions) > 0
    sessions.close()
    watcher = Watcher(sys_broker.port, ["$SYS/broker/clients/connected", "tclose/status/#"])

    def accepted() -> set[str]:
        log = sys_broker.log_file.read_text().splitlines()
        return {line.rsplit(" as ", 1)[1].split(" ", 1)[0] for line in log if "New client connected" in line and " as em-" in line}

    def retained_statuses(messages: list[tuple[str, bytes, bool]]) -> dict[str, bool]:
        return {topic.rsplit("/", 1)[1]: orjson.loads(payload)["online"] for topic, payload, retain in messages if topic.startswith("tclose/") and retain}

    try:
        # The retained statuses come after the $SYS count (the order of the subscription's filters): wait for both.
        messages = watcher.wait(lambda m: last_connected(m) == 1 and accepted() <= retained_statuses(m).keys(), timeout=3 * SYS_INTERVAL_S + 5)
    finally:
        watcher.stop()
    assert last_connected(messages) == 1  # none of the devices is still connected
    log = sys_broker.log_file.read_text().splitlines()
    connected = accepted()
    assert connected  # the broker accepted some of them before the close
    retained = retained_statuses(messages)
    assert retained == dict.fromkeys(connected, False)  # each device the broker accepted said goodbye: retained offline
    said_goodbye = {line.split("Client ", 1)[1].split(" ", 1)[0] for line in log if line.endswith(" disconnected.") and "Client em-" in line}
    assert said_goodbye == connected  # a DISCONNECT each: no will fired later


def test_mqtt_5_sessions_with_their_births(sys_broker: stack.Service) -> None:
    ids = device_ids(50)
    sessions = DeviceSessions(ids, SessionSettings(port=sys_broker.port, prefix="tv5", protocol="5", keepalive=45))
    sessions.start()
    try:
        assert sessions.run_until(sessions.all_connected, timeout=15)
        watcher = Watcher(sys_broker.port, ["tv5/status/#"])
        try:
            messages = watcher.wait(lambda m: sessions.turn(0.0) or sum(1 for t, *_ in m if t.startswith("tv5/")) >= 50, timeout=10)
        finally:
            watcher.stop()
        assert {topic for topic, _, retain in messages if topic.startswith("tv5/") and retain} == {f"tv5/status/{device_id}" for device_id in ids}
    finally:
        sessions.close()
    log = sys_broker.log_file.read_text()
    assert sum(f" as {device_id} (p5, c1, k45" in log for device_id in ids) == 50  # the broker's word: MQTT 5, clean start, keepalive 45 s


def test_a_full_outbox_drops_its_oldest_and_counts_it() -> None:
    sessions = DeviceSessions(["em-00001"], SessionSettings(port=1, outbox_limit=3))  # never started: nothing connects
    accepted = [sessions.publish("em-00001", "t/data/em-00001", str(n).encode()) for n in range(5)]
    assert accepted == [True, True, True, False, False]
    assert [payload for _, payload in sessions.sessions[0].outbox] == [b"2", b"3", b"4"]
    assert sessions.stats.overflowed == 2 and sessions.outbox_depth() == 3
    sessions.close()


def test_what_a_dead_device_still_holds_at_the_end_is_counted_as_abandoned() -> None:
    sessions = DeviceSessions(["em-00001", "em-00002"], SessionSettings(port=1))  # never started: the outboxes keep all
    for n in range(3):
        sessions.publish("em-00001", "t/data/em-00001", str(n).encode())
        sessions.publish("em-00002", "t/data/em-00002", str(n).encode())
    sessions.kill("em-00002")  # its battery dies with three messages in its outbox
    sessions.close(timeout=0.1)
    assert sessions.stats.abandoned == 3 and sessions.stats.overflowed == 0


def test_connect_offsets_are_each_devices_own_and_spread_over_the_window() -> None:
    ids = device_ids(2_000)
    offsets = [connect_offset(42, device_id, 60.0) for device_id in ids]
    assert offsets == [connect_offset(42, device_id, 60.0) for device_id in ids]  # the same every run
    assert offsets != [connect_offset(43, device_id, 60.0) for device_id in ids]  # another seed, other times
    assert all(0.0 <= offset < 60.0 for offset in offsets)
    assert 27.0 < statistics.mean(offsets) < 33.0
    assert Counter(int(offset // 6) for offset in offsets).most_common()[-1][1] > 150  # every tenth of the window used
    assert connect_offset(42, "em-00000", 0.0) == 0.0


def test_reconnect_delays_follow_the_policy() -> None:
    rng = stream(1, "policy")
    doubling, fixed = ReconnectPolicy(jitter="none"), ReconnectPolicy(policy="fixed", min=5.0, jitter="none")
    assert [reconnect_delay(doubling, n, rng) for n in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert [reconnect_delay(fixed, n, rng) for n in range(3)] == [5, 5, 5]
    jittered = [reconnect_delay(ReconnectPolicy(), 10, rng) for _ in range(1_000)]
    assert all(0.0 <= delay <= 60.0 for delay in jittered) and 25 < statistics.mean(jittered) < 35


def test_source_addresses_spread_the_connections() -> None:
    assert source_addresses(PORTS_PER_ADDRESS, "127.0.0.1") == ()  # one address: the kernel's choice
    assert source_addresses(19_000, "127.0.0.1") == ("127.0.0.1", "127.0.0.2")
    assert source_addresses(3 * PORTS_PER_ADDRESS + 1, "localhost") == ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")
    assert source_addresses(50_000, "broker.example") == ()  # 127.0.0.x could not reach it


def test_too_many_connections_for_the_open_files_limit_is_one_line() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # 20,000 on our machines
    with pytest.raises(OpenFilesLimit) as raised:
        DeviceSessions(device_ids(hard), SessionSettings())
    message = str(raised.value)
    assert "\n" not in message and f"{hard} device connections need {hard + 64} open files" in message and "ulimit -Hn" in message
    assert raised.value.exit_code == 2


CONNECTIONS = """
name: connections
duration: 1h
{mqtt}
fleets:
  - type: air_quality
    count: 10
{fleet}
"""


@pytest.mark.parametrize(
    ("mqtt", "fleet", "problem"),
    [
        ("", "    connection: pigeon", "8: fleets.0.connection: Input should be 'shared', 'device' or 'gateway'"),
        ("", "    connection: gateway", "6: fleets.0.gateway_size: connection gateway needs gateway_size: N (devices behind each gateway)"),
        ("", "    gateway_size: 3", "8: fleets.0.gateway_size: only for connection: gateway (this fleet's connection is shared)"),
        ("", "    connection: device\n    reconnect: {min: 2m, max: 1m}", "9: fleets.0.reconnect: min (2m) is longer than max (1m)"),
        ("", "    reconnect: {jitter: half}", "8: fleets.0.reconnect.jitter: Input should be 'full' or 'none'"),
        ("mqtt:\n  protocol: 4", "", "5: mqtt.protocol: Input should be '3.1.1' or '5'"),
        ("mqtt:\n  keepalive: 0", "", "5: mqtt.keepalive: Input should be greater than or equal to 2"),
        ("mqtt:\n  connect_window: soon", "", "5: mqtt.connect_window: "),
        ("mqtt:\n  qos: 0", "    connection: device", "9: fleets.0.connection: a fleet's own connections publish at QoS 1"),
        ("", "    connection: gateway\n    gateway_size: 2\n  - type: air_quality\n    id_prefix: aq-gw\n    count: 3", "5: fleets: fleets 0 and 1: fleet 0's gateways 'aq-gw-NNNN' have the ids of fleet 1's devices"),
    ],
)
def test_bad_connection_keys_are_one_line_each(tmp_path: Path, mqtt: str, fleet: str, problem: str) -> None:
    path = tmp_path / "connections.yaml"
    path.write_text(CONNECTIONS.format(mqtt=mqtt, fleet=fleet))
    result = iotsim("validate", str(path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"{path}:{problem}"), result.stderr


def test_connection_keys_and_their_defaults(tmp_path: Path) -> None:
    path = tmp_path / "connections.yaml"
    path.write_text(CONNECTIONS.format(mqtt="mqtt:\n  protocol: 5\n  connect_window: 30s", fleet="    connection: gateway\n    gateway_size: 4\n    reconnect: {policy: fixed, min: 5s, jitter: none}"))
    scenario = load_scenario(path)
    fleet = scenario.fleets[0]
    assert (scenario.mqtt.protocol, scenario.mqtt.connect_window, scenario.mqtt.keepalive) == ("5", 30.0, 60)
    assert fleet.gateway_ids() == ["aq-gw-0001", "aq-gw-0002", "aq-gw-0003"]
    assert [fleet.connection_of(index, device_id) for index, device_id in enumerate(fleet.device_ids())] == ["aq-gw-0001"] * 4 + ["aq-gw-0002"] * 4 + ["aq-gw-0003"] * 2
    assert (fleet.reconnect.policy, fleet.reconnect.min, fleet.reconnect.max, fleet.reconnect.jitter) == ("fixed", 5.0, 60.0, "none")
    path.write_text(CONNECTIONS.format(mqtt="", fleet=""))
    shared = load_scenario(path)
    assert (shared.fleets[0].connection, shared.mqtt.protocol, shared.mqtt.connect_window) == ("shared", "3.1.1", 0.0)
    assert shared.fleets[0].connection_of(0, "aq-0001") is None


OWN_CONNECTIONS = """
name: own-connections
seed: 4
duration: 2h
fleets:
  - type: air_quality
    count: 30
    cadence: 5m
{air}
  - type: water_pressure
    count: 10
{water}
  - type: noise_monitor
    count: 5
mqtt:
  url: mqtt://127.0.0.1:{port}
  topic_prefix: {prefix}
  connect_window: 1s
influx:
  url: http://127.0.0.1:{influx_port}
"""
OWN = {"air": "    connection: device", "water": "    connection: gateway\n    gateway_size: 4"}


def own_connections(tmp_path: Path, name: str, port: int, prefix: str, air: str = "", water: str = "") -> Path:
    path = tmp_path / name
    path.write_text(OWN_CONNECTIONS.format(air=air, water=water, port=port, prefix=prefix, influx_port=stack.free_port()))  # no InfluxDB: the run notes it and goes on
    return path


def test_own_connections_do_not_change_a_dry_run(tmp_path: Path) -> None:
    shared, own = tmp_path / "shared.jsonl", tmp_path / "own.jsonl"
    for scenario, out in ((own_connections(tmp_path, "shared.yaml", 1883, "dry"), shared), (own_connections(tmp_path, "own.yaml", 1883, "dry", **OWN), own)):
        result = iotsim("run", str(scenario), "--dry-run", "--out", str(out))
        assert result.returncode == 0, result.stderr
    assert own.read_bytes() == shared.read_bytes() and len(own.read_bytes().splitlines()) == 30 * 24 + 10 * 24 + 5 * 120


def test_iotsim_run_publishes_a_device_fleets_messages_through_its_own_connections(sys_broker: stack.Service, tmp_path: Path) -> None:
    scenario = own_connections(tmp_path, "own.yaml", sys_broker.port, "town", **OWN)
    dry = tmp_path / "dry.jsonl"
    assert iotsim("run", str(scenario), "--dry-run", "--out", str(dry)).returncode == 0
    expected = sorted((record["topic"], orjson.dumps(record["payload"])) for record in map(orjson.loads, dry.read_bytes().splitlines()))
    watcher = Watcher(sys_broker.port, ["town/#"])
    try:
        run = iotsim("run", str(scenario), timeout=120)
        assert run.returncode == 0, run.stderr
        total = len(expected)
        assert f"generated {total}, published {total}, acknowledged {total}" in run.stdout
        # 30 devices of their own, 3 gateways for 10 water-pressure sensors; the noise monitors share the run's connection.
        assert "device connections: 33 own connections (40 devices, 3 gateways), connects 33, reconnects 0, failed attempts 0" in run.stdout
        messages = watcher.wait(lambda m: sum(1 for t, *_ in m if not t.startswith("town/status/")) >= total and sum(1 for t, *_ in m if t.startswith("town/status/")) >= 66, timeout=20)
    finally:
        watcher.stop()
    data = sorted((topic, orjson.dumps(orjson.loads(payload))) for topic, payload, _ in messages if topic.startswith("town/") and not topic.startswith("town/status/"))
    assert data == expected  # the same topics and payloads as the dry run, each once
    statuses = Counter((topic.rsplit("/", 1)[1], orjson.loads(payload)["online"]) for topic, payload, _ in messages if topic.startswith("town/status/"))
    connections = [f"aq-{n:04d}" for n in range(1, 31)] + ["water-gw-0001", "water-gw-0002", "water-gw-0003"]
    assert statuses == Counter({(connection, online): 1 for connection in connections for online in (True, False)})  # a birth, then a clean close's death
    log = sys_broker.log_file.read_text()
    assert all(f" as {connection} (p2, c1, k60)" in log for connection in connections)  # each its own client id, MQTT 3.1.1, keepalive 60


def test_a_shard_connects_only_its_own_devices_and_gateways_do_not_shard(tmp_path: Path) -> None:
    scenario = load_scenario(own_connections(tmp_path, "own.yaml", 1883, "tshard", air="    connection: device"))
    plan = connection_plan(scenario, Shard(1, 3))
    assert plan is not None and plan.ids == [f"aq-{n:04d}" for n in range(1, 31) if n % 3 == 1] and plan.route == {i: i for i in plan.ids}
    assert connection_plan(load_scenario(own_connections(tmp_path, "shared.yaml", 1883, "tshard"))) is None  # every fleet shared: today's run
    gateways = load_scenario(own_connections(tmp_path, "gw.yaml", 1883, "tshard", **OWN))
    with pytest.raises(UsageError, match=r"^--shard: fleets.1 has connection: gateway"):
        connection_plan(gateways, Shard(0, 2))
    assert connection_plan(gateways).describe() == "33 own connections (40 devices, 3 gateways)"


FAULTY = """
name: faulty-connections
seed: 5
duration: 2m
speed: 6
fleets:
  - type: air_quality
    count: 4
    cadence: 30s
    connection: device
    faults: [{{kind: dropout, devices: [aq-0002], at: 30s, duration: 60s}}, {{kind: battery_death, devices: [aq-0004], at: 60s}}]
mqtt:
  url: mqtt://127.0.0.1:{port}
  topic_prefix: {prefix}
  keepalive: 2
influx:
  url: http://127.0.0.1:{influx_port}
"""


def test_a_dropout_or_a_dead_battery_closes_that_devices_connection_without_disconnect_and_a_dropout_comes_back(sys_broker: stack.Service, tmp_path: Path) -> None:
    # 20 s of wall time: readings every 5 s, longer than the broker waits for a silent device (1.5 x 2 s),
    # so the idle devices keep their sessions only by PINGREQs; aq-0002 is silent from 5 s to 15 s, aq-0004 from 10 s on.
    scenario = tmp_path / "faulty.yaml"
    scenario.write_text(FAULTY.format(port=sys_broker.port, prefix="tfault", influx_port=stack.free_port()))
    dry = tmp_path / "dry.jsonl"
    assert iotsim("run", str(scenario), "--dry-run", "--out", str(dry)).returncode == 0
    records = [orjson.loads(line) for line in dry.read_bytes().splitlines()]
    expected = sorted((record["topic"], orjson.dumps(record["payload"])) for record in records)
    readings = Counter(record["payload"]["device_id"] for record in records if "/events/" not in record["topic"])
    assert readings == {"aq-0001": 4, "aq-0002": 2, "aq-0003": 4, "aq-0004": 2}  # the dropout drops aq-0002's readings at 30 s and 60 s, the battery aq-0004's from 60 s
    watcher = Watcher(sys_broker.port, ["tfault/#"])
    try:
        run = iotsim("run", str(scenario), timeout=120)
        assert run.returncode == 0, run.stderr
        total = len(expected)
        assert f"generated {total}, published {total}, acknowledged {total}" in run.stdout
        assert "device connections: 4 own connections (4 devices), connects 5, reconnects 1, failed attempts 0" in run.stdout
        messages = watcher.wait(lambda m: sum(1 for t, *_ in m if not t.startswith("tfault/status/")) >= total and sum(1 for t, *_ in m if t.startswith("tfault/status/")) >= 10, timeout=20)
    finally:
        watcher.stop()
    data = sorted((topic, orjson.dumps(orjson.loads(payload))) for topic, payload, _ in messages if topic.startswith("tfault/") and not topic.startswith("tfault/status/"))
    assert data == expected  # every message of the dry run once: nothing lost or sent twice over the reconnect
    statuses: dict[str, list[bool]] = {}
    for topic, payload, _ in messages:
        if topic.startswith("tfault/status/"):
            statuses.setdefault(topic.rsplit("/", 1)[1], []).append(orjson.loads(payload)["online"])
    # A birth and the clean close's death for each; aq-0002 also its will while silent and its birth when
    # back; dead aq-0004 only its will, and no goodbye at the end.
    assert statuses == {"aq-0001": [True, False], "aq-0002": [True, False, True, False], "aq-0003": [True, False], "aq-0004": [True, False]}
    assert topics_before_close(messages, "aq-0004") == ["tfault/events/device_fault/aq-0004", "tfault/status/aq-0004"]
    topics = [topic for topic, *_ in messages]
    will = topics.index("tfault/status/aq-0002", topics.index("tfault/status/aq-0002") + 1)
    assert topics.index("tfault/events/device_fault/aq-0002") < will < topics.index("tfault/events/device_fault/aq-0002", will)  # during the dropout
    log = sys_broker.log_file.read_text()
    timeouts = [line for line in log.splitlines() if "exceeded timeout" in line]
    assert len(timeouts) == 2 and "aq-0002" in timeouts[0] and "aq-0004" in timeouts[1], timeouts  # the broker gave up on the silent devices only


def topics_before_close(messages: list[tuple[str, bytes, bool]], device_id: str) -> list[str]:
    """The device's event and status topics after its birth, in the order they came."""
    topics = [topic for topic, *_ in messages if topic.endswith(f"/{device_id}") and ("/status/" in topic or "/device_fault/" in topic)]
    return topics[1:]


def test_a_stopped_broker_whose_accept_queue_fills_stalls_no_turn(sys_broker: stack.Service) -> None:
    # Mosquitto stopped (SIGSTOP): its accept queue (a backlog of 100) fills with connects nobody accepts,
    # the CONNECTs time out by the keepalive and are tried again, and past the backlog the kernel drops
    # the SYNs. A connect that blocks for that would hold the loop that serves every other device.
    count = 300
    policy = ReconnectPolicy(policy="fixed", min=0.2, max=0.2, jitter="none")
    sessions = DeviceSessions(device_ids(count), SessionSettings(port=sys_broker.port, keepalive=2, reconnect=policy))
    os.kill(sys_broker.pid, signal.SIGSTOP)
    try:
        sessions.start()
        turns = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            began = time.monotonic()
            sessions.turn(0.05)
            turns.append(time.monotonic() - began)
        # a blocking connect would hold the loop for its SYN's retries: a second and more; a busy machine, a few tenths
        assert max(turns) < 0.9, f"the longest turn took {max(turns):.1f} s"
        assert sessions.stats.connect_failures > 100 and sessions.stats.connected == 0  # past the backlog: tried, given up, tried again
    finally:
        os.kill(sys_broker.pid, signal.SIGCONT)
    try:
        assert sessions.run_until(sessions.all_connected, timeout=60), f"{sessions.stats.connected} of {count} connected"
    finally:
        sessions.close()


def test_no_password_shows_in_the_plan_or_its_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A repr ends up in logs: an assertion's message in CI, a debugger, an error report.
    (tmp_path / "secrets" / "passwords").mkdir(parents=True)
    for n in (1, 2):
        (tmp_path / "secrets" / "passwords" / f"meter-{n:04d}").write_text(f"device-secret-{n}\n")
    scenario = tmp_path / "logins.yaml"
    scenario.write_text(f"name: logins\nduration: 1h\nfleets:\n  - {{type: electricity_meter, id_prefix: meter, count: 2, connection: device}}\nmqtt: {{username: simulator, device_passwords: {tmp_path / 'secrets'}}}\n")
    plan = connection_plan(load_scenario(scenario), password="shared-secret")
    assert plan is not None and plan.passwords == ["device-secret-1", "device-secret-2"] and plan.settings.password == "shared-secret"
    shown = repr(plan) + str(plan.settings)
    assert "secret" not in shown and "simulator" in shown


def test_device_passwords_for_a_scenario_without_own_connections_are_said_unused(sys_broker: stack.Service, tmp_path: Path) -> None:
    scenario = own_connections(tmp_path, "shared.yaml", sys_broker.port, "unused")  # every fleet on the run's connection
    run = iotsim("run", str(scenario), "--device-passwords", str(tmp_path), timeout=120)
    assert run.returncode == 0, run.stderr
    assert f"note: mqtt.device_passwords ({tmp_path}) is not used: no fleet has connection: device or gateway" in run.stderr
    total = 30 * 24 + 10 * 24 + 5 * 120
    assert f"generated {total}, published {total}, acknowledged {total}" in run.stdout
