"""The compose stack on the secure broker profile, checked without Docker.

docker-compose.yml runs a one-shot `config` service that copies the broker's files into a volume, a
one-shot `secrets` service that writes a test CA and a password per identity into the
`mqtt-secrets` volume, then Mosquitto with (the copy of) brokers/secure/mosquitto.conf, then a
bridge and a simulator that log in with passwords read from that volume. Here the resolved compose
file says what each container runs, and the same programs run on this machine: each named volume is
a folder, each container path is the file or folder its mount names, `mosquitto` and `influxdb` are
loopback servers, and the image's users are local ones (run as root, the broker drops to the local
`mosquitto` user as eclipse-mosquitto drops to uid 1883, so it reads the volume as a non-owner).
"""

from __future__ import annotations

import getpass
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import requests

from conftest import IOTSIM, child_env, iotsim
from simulator import stack
from test_compose import ROOT, as_mounts, checkout_path, compose  # noqa: F401  (compose: the resolved file, a fixture)

SECURE = stack.SECURE_DIR
SECRETS_VOLUME = "mqtt-secrets"


# --- the identities and the ACL, as files ---


def identities() -> list[str]:
    """The users make-passwords.sh makes a password for without device ids."""
    found = re.search(r'^users="([^"$]+)', (SECURE / "make-passwords.sh").read_text(), re.M)
    assert found is not None
    return found.group(1).split()


def acl_rules() -> tuple[dict[str, list[tuple[str, str]]], list[tuple[str, str]]]:
    """brokers/secure/acl as (access, topic) rules per user, and the `pattern` rules for every user."""
    users: dict[str, list[tuple[str, str]]] = {}
    patterns: list[tuple[str, str]] = []
    current: list[tuple[str, str]] | None = None
    for line in (SECURE / "acl").read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        rule = (words[1], words[2]) if len(words) == 3 else ("readwrite", words[1])
        if words[0] == "user":
            current = users.setdefault(words[1], [])
        elif words[0] == "pattern":
            patterns.append(rule)
        else:
            assert words[0] == "topic" and current is not None, f"unexpected ACL line: {line}"
            current.append(rule)
    return users, patterns


def granted(user: str, access: str, topic: str) -> bool:
    """Mosquitto's reading of the ACL for one user: a matching `deny` of the user's refuses; otherwise
    a matching grant of the user's, or of a pattern with %u replaced, allows; nothing else does."""
    users, patterns = acl_rules()
    own = users.get(user, [])
    if any(kind == "deny" and mqtt.topic_matches_sub(rule, topic) for kind, rule in own):
        return False
    rules = own + [(kind, rule.replace("%u", user)) for kind, rule in patterns]
    return any(kind in (access, "readwrite") and mqtt.topic_matches_sub(rule, topic) for kind, rule in rules)


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def mount_of(service: dict, target: str) -> dict:
    [mount] = [mount for mount in as_mounts(service.get("volumes", [])) if mount["target"] == target]
    return mount


# --- static checks of the resolved compose file ---


def test_the_broker_runs_the_secure_profile_after_the_secrets_service(compose: dict) -> None:
    services = compose["services"]
    mosquitto = services["mosquitto"]
    assert mosquitto["command"] == ["mosquitto", "-c", "/mosquitto/config/secure/mosquitto.conf"]
    assert checkout_path(compose, "mosquitto", mosquitto["command"][2]) == SECURE / "mosquitto.conf"  # a copy the `config` service makes
    assert mosquitto["depends_on"]["secrets"] == {"condition": "service_completed_successfully"}
    # The secrets service writes the volume; everyone else mounts it read-only (for the broker, that
    # also keeps the image's entrypoint from handing the files to uid 1883).
    secrets = services["secrets"]
    assert secrets["user"] == "root"
    assert not mount_of(secrets, "/secrets")["read_only"] and mount_of(secrets, "/secrets")["source"] == SECRETS_VOLUME
    for name, target in (("mosquitto", "/mosquitto/config/secure/generated"), ("bridge", "/secrets"), ("simulator", "/secrets")):
        mount = mount_of(services[name], target)
        assert mount["source"] == SECRETS_VOLUME and mount["read_only"], name
    assert SECRETS_VOLUME in compose["volumes"]
    # What the secrets service runs: the profile's script, mounted beside the two it calls.
    script = Path(mount_of(secrets, secrets["entrypoint"][1])["source"])
    assert secrets["entrypoint"][0] == "sh" and script == SECURE / "make-compose-secrets.sh"
    folder = str(Path(secrets["entrypoint"][1]).parent)
    for name in ("make-test-certs.sh", "make-passwords.sh"):
        assert Path(mount_of(secrets, f"{folder}/{name}")["source"]) == SECURE / name


def test_every_path_in_the_broker_config_is_in_a_mount(compose: dict) -> None:
    mosquitto = compose["services"]["mosquitto"]
    config = (SECURE / "mosquitto.conf").read_text()
    paths = re.findall(r"^(\w+) (/\S*)\s*$", config, re.M)
    assert {key for key, _ in paths} >= {"cafile", "certfile", "keyfile", "password_file", "acl_file", "include_dir", "persistence_location"}
    targets = [mount["target"] for mount in as_mounts(mosquitto["volumes"])]
    for key, path in paths:
        assert any(path == target or path.startswith(target.rstrip("/") + "/") for target in targets), f"{key} {path}: in no mount"
    secrets = mount_of(mosquitto, "/mosquitto/config/secure/generated")["target"]
    for key in ("cafile", "certfile", "keyfile", "password_file"):
        assert dict(paths)[key].startswith(secrets + "/"), key  # made by the secrets service, not committed
    # The rest are committed files (or the data volume), copied by the `config` service.
    for key in ("acl_file", "include_dir"):
        assert checkout_path(compose, "mosquitto", dict(paths)[key]).exists(), key


def test_every_mqtt_client_logs_in_as_an_identity_the_acl_grants_what_it_needs(compose: dict, tmp_path: Path) -> None:
    services = compose["services"]
    clients = {name: service for name, service in services.items() if "--mqtt" in service.get("command", [])}
    assert set(clients) == {"bridge", "simulator"}
    users = {"bridge": option(clients["bridge"]["command"], "--username"), "simulator": option(clients["simulator"]["command"], "--mqtt-username")}
    assert users == {"bridge": "bridge", "simulator": "simulator"}
    for name, user in users.items():
        assert user in identities(), name
        # Its password: the file of that identity in the secrets volume, mounted at /secrets.
        assert clients[name]["environment"]["MQTT_PASSWORD_FILE"] == f"/secrets/passwords/{user}", name
        assert "MQTT_PASSWORD" not in clients[name]["environment"], name

    # Every topic the default scenario publishes: the simulator may write it, the bridge may read it
    # and neither may do the other.
    dry = iotsim("run", str(ROOT / services["simulator"]["command"][1]), "--dry-run", "--duration", "10m", "--out", str(tmp_path / "dry.jsonl"))
    assert dry.returncode == 0, dry.stderr
    topics = {json.loads(line)["topic"] for line in (tmp_path / "dry.jsonl").read_text().splitlines()}
    assert any(topic.startswith("yangquan/city/") for topic in topics) and any(topic.startswith("yangquan/port/") for topic in topics)
    for topic in topics:
        assert granted("simulator", "write", topic) and not granted("simulator", "read", topic), topic
        assert granted("bridge", "read", topic) and not granted("bridge", "write", topic), topic

    # The broker's healthcheck logs in too, as an identity that may read the uptime and nothing else.
    check = services["mosquitto"]["healthcheck"]["test"][1]
    user = re.search(r"-u (\S+)", check)
    assert user is not None and user.group(1) == "healthcheck" and "healthcheck" in identities()
    assert f"/mosquitto/config/secure/generated/passwords/{user.group(1)}" in check
    assert granted("healthcheck", "read", "$SYS/broker/uptime")
    assert not any(granted("healthcheck", access, topic) for access in ("read", "write") for topic in topics)


# --- this machine standing in for Docker ---


def local_user(name: str) -> str | None:
    try:
        return pwd.getpwnam(name).pw_name
    except KeyError:
        return None


AS_ROOT = os.geteuid() == 0
# The image's users as local ones. Root can give the broker's files to the local `mosquitto` user,
# which Mosquitto started as root drops to; anyone else runs everything as themselves.
BROKER_USER = "mosquitto" if AS_ROOT and local_user("mosquitto") else None
USERS = {"iotsim": getpass.getuser(), "1883:1883": f"{BROKER_USER}:{BROKER_USER}" if BROKER_USER else getpass.getuser()}


@dataclass
class Machine:
    """Folders for the named volumes and containers' own files, loopback servers for the services."""

    compose: dict
    root: Path
    broker_port: int
    broker_tls_port: int
    influx_url: str
    broker: stack.Service | None = None

    def volume(self, name: str) -> Path:
        return self.root / "volumes" / name

    def local(self, service: str, path: str) -> Path:
        """Where `path` of `service`'s container lies here: under the mount that holds it (the deepest),
        else in a folder of the container's own."""
        best: tuple[str, dict] | None = None
        for mount in as_mounts(self.compose["services"][service].get("volumes", [])):
            target = mount["target"].rstrip("/")
            if (path == target or path.startswith(target + "/")) and (best is None or len(target) > len(best[0])):
                best = (target, mount)
        if best is None:
            return self.root / "containers" / service / path.lstrip("/")
        target, mount = best
        source = Path(mount["source"]) if mount["type"] == "bind" else self.volume(mount["source"])
        return Path(str(source) + path[len(target) :])

    def word(self, service: str, word: str) -> str:
        """A word of a command or an environment value, with service names and container paths mapped."""
        word = word.replace("mqtt://mosquitto:1883", f"mqtt://127.0.0.1:{self.broker_port}").replace("http://influxdb:8086", self.influx_url)
        if word.startswith("/"):
            return str(self.local(service, word)) + ("/" if word.endswith("/") else "")
        return USERS.get(word, word)

    def environment(self, service: str) -> dict[str, str]:
        """The service's environment, and none of the test runner's broker or InfluxDB credentials."""
        env = {name: value for name, value in child_env().items() if not name.startswith(("MQTT_", "INFLUX_"))}
        for name, value in self.compose["services"][service].get("environment", {}).items():
            env[name] = self.word(service, str(value))
        return env

    def container(self, service: str) -> Path:
        """The service's container as a folder, for a command that walks its paths (the `config`
        service reads /src/*/): each bind mount's source copied to its target as a checkout made
        with umask 077 would show it (owner-only, root's), each volume linked at its target."""
        view = self.root / "containers" / service
        for mount in as_mounts(self.compose["services"][service].get("volumes", [])):
            place = view / mount["target"].lstrip("/")
            place.parent.mkdir(parents=True, exist_ok=True)
            if mount["type"] == "volume":
                place.symlink_to(self.volume(mount["source"]), target_is_directory=True)
            elif Path(mount["source"]).is_dir():
                shutil.copytree(mount["source"], place)
            else:
                shutil.copyfile(mount["source"], place)
        for path in [view, *view.rglob("*")]:
            if not path.is_symlink():
                path.chmod(0o700 if path.is_dir() else 0o600)
        return view

    def run_config(self) -> subprocess.CompletedProcess[str]:
        config = self.compose["services"]["config"]
        view = self.container("config")
        command = [str(view) + word if word.startswith("/") else word for word in [*config["entrypoint"], *config["command"]]]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    def run_secrets(self) -> subprocess.CompletedProcess[str]:
        secrets = self.compose["services"]["secrets"]
        command = [self.word("secrets", word) for word in [*secrets["entrypoint"], *secrets["command"]]]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    def start_broker(self) -> stack.Service:
        mosquitto = self.compose["services"]["mosquitto"]
        lines = []
        for line in Path(self.word("mosquitto", mosquitto["command"][2])).read_text().splitlines():
            words = line.split()
            if words[:1] == ["listener"]:
                line = f"listener {self.broker_port if words[1] == '1883' else self.broker_tls_port} 127.0.0.1"
            elif len(words) == 2 and words[1].startswith("/"):
                line = f"{words[0]} {self.word('mosquitto', words[1])}"
            lines.append(line)
        if BROKER_USER is None:
            lines.append(f"user {getpass.getuser()}")  # run as the owner of the files (stack.py does the same)
        config = self.root / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        data = self.local("mosquitto", "/mosquitto/data")
        if BROKER_USER:
            shutil.chown(data, BROKER_USER, BROKER_USER)  # what the image's entrypoint does to its writable mounts
        log = self.root / "mosquitto.log"
        self.broker = stack.launch("mosquitto", [stack.MOSQUITTO.path(), "-c", str(config)], self.broker_port, self.root, log)
        ready = lambda: stack.accepts_tcp(self.broker_port) and stack.accepts_tcp(self.broker_tls_port)  # noqa: E731
        stack.wait_until(ready, self.broker, 15, "the compose broker")
        return self.broker


@pytest.fixture(scope="module")
def machine(compose: dict, influxdb: stack.Service) -> Iterator[Machine]:
    # Not pytest's tmp_path: its folders are private to the test's user, and the broker may run as another.
    root = Path(tempfile.mkdtemp(prefix="iotsim-compose-"))
    root.chmod(0o755)
    here = Machine(compose, root, stack.free_port(), stack.free_port(), influxdb.url)
    try:
        for name in compose["volumes"]:
            here.volume(name).mkdir(parents=True)
        for made in (here.run_config(), here.run_secrets()):  # the one-shots, as compose orders them
            assert made.returncode == 0, made.stderr
        here.start_broker()
        yield here
    finally:
        if here.broker is not None:
            here.broker.stop()
        shutil.rmtree(root, ignore_errors=True)


# --- what the containers do ---


def test_the_secrets_service_gives_each_file_only_to_who_reads_it_and_keeps_them(machine: Machine) -> None:
    secrets = machine.volume(SECRETS_VOLUME)
    kept = {path: path.read_bytes() for path in [*secrets.glob("*.crt"), *secrets.glob("*.key"), *secrets.glob("passwords/*")]}
    again = machine.run_secrets()  # every `docker compose up` runs it again
    assert again.returncode == 0, again.stderr
    assert {path: path.read_bytes() for path in kept} == kept

    def mode(name: str) -> int:
        return stat.S_IMODE((secrets / name).stat().st_mode)

    def owner(name: str) -> str:
        return pwd.getpwuid((secrets / name).stat().st_uid).pw_name

    assert mode(".") == 0o755 and mode("passwords") == 0o711  # enter, but not list the passwords
    assert mode("ca.crt") == mode("server.crt") == 0o644
    assert mode("passwords/healthcheck") == 0o644  # the broker container's healthcheck reads it
    broker = BROKER_USER or getpass.getuser()
    for name in ("passwd", "server.key"):
        assert mode(name) == 0o600 and owner(name) == broker, name
    for user in identities():
        if user != "healthcheck":
            assert mode(f"passwords/{user}") == 0o600 and owner(f"passwords/{user}") == USERS["iotsim"], user
    assert mode("ca.key") == 0o600
    if BROKER_USER:
        assert owner("ca.key") != BROKER_USER and owner("passwords/bridge") != BROKER_USER


def test_the_config_service_copies_an_owner_only_checkout_for_any_user_to_read(machine: Machine) -> None:
    """The stand-in checkout is owner-only and root's (umask 077): another user (the broker's uid
    1883, Grafana's 472; here `nobody`) cannot read it, and reads every copy in the volumes."""
    config = machine.compose["services"]["config"]
    view = machine.root / "containers" / "config"  # what run_config ran on
    src, dest = config["command"][:2]
    copied = 0
    for mount in as_mounts(config["volumes"]):
        if mount["type"] != "volume":
            continue
        name = mount["target"].removeprefix(dest + "/")
        originals = sorted(path for path in (view / src.lstrip("/") / name).rglob("*") if path.is_file())
        assert originals, name
        copies = [machine.volume(mount["source"]) / original.relative_to(view / src.lstrip("/") / name) for original in originals]
        for original, copy in zip(originals, copies):
            in_checkout = checkout_path(machine.compose, "config", "/" + str(original.relative_to(view)))
            assert copy.read_bytes() == in_checkout.read_bytes(), copy
            assert stat.S_IMODE(original.stat().st_mode) == 0o600 and stat.S_IMODE(copy.stat().st_mode) == 0o644, copy
            assert all(stat.S_IMODE(folder.stat().st_mode) == 0o755 for folder in copy.parents if machine.volume(mount["source"]) in (folder, *folder.parents))
        copied += len(copies)
        if AS_ROOT:
            assert not readable_by("nobody", originals)  # the checkout itself: owner-only
            assert readable_by("nobody", copies), copies
    # mosquitto.conf, acl, brokers/conf.d/ and everything under dashboards/ (provisioning and boards).
    assert copied == 2 + sum(1 for folder in (ROOT / "brokers" / "conf.d", ROOT / "dashboards") for path in folder.rglob("*") if path.is_file())
    # The mountpoint of the secrets inside the read-only config volume.
    assert (machine.volume("mosquitto-config") / config["command"][2].removeprefix("mosquitto-config/")).is_dir()


def readable_by(user: str, files: list[Path]) -> bool:
    """Every file readable by `user` (run as root: the check runs as that user)."""
    check = 'for f in "$@"; do cat "$f" >/dev/null 2>&1 || exit 1; done'
    return subprocess.run(["sh", "-c", check, "sh", *map(str, files)], user=user, capture_output=True, timeout=30).returncode == 0


def healthcheck(machine: Machine) -> list[str]:
    kind, script = machine.compose["services"]["mosquitto"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    # `docker-compose config` prints compose's `$$` escape as written; paths after a space or quote.
    script = script.replace("$$", "$").replace("-p 1883", f"-p {machine.broker_port}")
    script = re.sub(r"(?<![\w$])/[\w./-]+", lambda found: machine.word("mosquitto", found.group()), script)
    return ["sh", "-c", script]


def test_the_broker_healthcheck_logs_in_and_reads_the_uptime(machine: Machine) -> None:
    assert subprocess.run(healthcheck(machine), capture_output=True, timeout=30).returncode == 0
    # The same read without a password is refused: the check passes only by logging in.
    anonymous = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(machine.broker_port), "-t", "$SYS/broker/uptime", "-C", "1", "-W", "5"]
    assert subprocess.run(anonymous, capture_output=True, timeout=30).returncode != 0


SMALL = """
name: host-publisher
seed: 11
start: 2026-03-01T08:00:00+08:00
duration: 1h
fleets:
  - type: air_quality
    count: 3
    cadence: 10m
"""


def test_the_containers_commands_log_in_and_move_readings_into_influxdb(machine: Machine, tmp_path: Path) -> None:
    """The bridge and the simulator exactly as compose runs them (commands, environment, password
    files from the volume), then a publish from the host over TLS as docs/stack.md shows it."""
    services = machine.compose["services"]
    database = "compose_secure"
    stack.create_database(machine.influx_url, database)

    bridge_command = [machine.word("bridge", word) for word in services["bridge"]["command"]]
    bridge_command[bridge_command.index("--db") + 1] = database
    bridge = subprocess.Popen(
        [*IOTSIM, *bridge_command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=machine.environment("bridge"), cwd=tmp_path
    )
    try:
        assert bridge.stderr is not None
        first = bridge.stderr.readline()
        assert first.startswith("bridge:"), first + bridge.stderr.read()
        assert Path(machine.word("bridge", "/tmp/bridge.ready")).exists()  # what the bridge's healthcheck tests

        # The simulator: the default scenario's stand-in is the quickstart, as fast as possible.
        scenario = tmp_path / "quickstart.yaml"
        scenario.write_text((ROOT / "scenarios" / "quickstart.yaml").read_text().replace("database: yangquan", f"database: {database}"))
        run_command = [machine.word("simulator", word) for word in services["simulator"]["command"]]
        run_command[1] = str(scenario)
        run_command[run_command.index("--speed") + 1] = "afap"
        run_command[run_command.index("--duration") + 1] = "1h"  # compose's default, until-stopped, is a live run
        run = subprocess.run([*IOTSIM, *run_command], capture_output=True, text=True, timeout=120, env=machine.environment("simulator"), cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        assert "generated 600, published 600, acknowledged 600" in run.stdout, run.stdout

        # From the host: the volume's CA and the simulator's password copied out (docker compose cp),
        # the TLS port, the name the certificate holds.
        secrets = machine.volume(SECRETS_VOLUME)
        shutil.copy(secrets / "ca.crt", tmp_path / "ca.crt")
        shutil.copy(secrets / "passwords" / "simulator", tmp_path / "simulator.password")
        small = tmp_path / "small.yaml"
        small.write_text(SMALL + f"influx: {{url: '{machine.influx_url}', database: {database}}}\n")
        host_run = subprocess.run(
            [*IOTSIM, "run", str(small), "--mqtt", f"mqtts://127.0.0.1:{machine.broker_tls_port}", "--ca-file", str(tmp_path / "ca.crt"),
             "--mqtt-username", "simulator"],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
            env={name: value for name, value in child_env().items() if not name.startswith("MQTT_")} | {"MQTT_PASSWORD_FILE": str(tmp_path / "simulator.password")},
        )  # fmt: skip
        assert host_run.returncode == 0, host_run.stderr
        assert "generated 18, published 18, acknowledged 18" in host_run.stdout, host_run.stdout

        expected = 600 + 18
        deadline = time.monotonic() + 30
        while points(machine.influx_url, database, "air_quality") < expected and time.monotonic() < deadline:
            time.sleep(0.2)
        assert points(machine.influx_url, database, "air_quality") == expected
        bridge.send_signal(signal.SIGTERM)  # `docker compose stop`
        out, errors = bridge.communicate(timeout=30)
        assert bridge.returncode == 0, errors
        assert "dead letters 0" in out, out
        assert not Path(machine.word("bridge", "/tmp/bridge.ready")).exists()
    finally:
        if bridge.poll() is None:
            bridge.kill()
            bridge.wait()


def points(url: str, database: str, measurement: str) -> int:
    response = requests.get(f"{url}/query", params={"db": database, "q": f'SELECT count("seq") FROM "{measurement}"'}, timeout=30)
    response.raise_for_status()
    series = response.json()["results"][0].get("series", [])
    return series[0]["values"][0][1] if series else 0


def test_a_missing_password_file_stops_a_client_with_one_line(machine: Machine, tmp_path: Path) -> None:
    """What a container sees when the volume lacks its password: one line, no traceback."""
    services = machine.compose["services"]
    env = machine.environment("simulator") | {"MQTT_PASSWORD_FILE": str(tmp_path / "missing")}
    run_command = [machine.word("simulator", word) for word in services["simulator"]["command"]]
    run_command[1] = str(ROOT / "scenarios" / "quickstart.yaml")
    bridge_command = [machine.word("bridge", word) for word in services["bridge"]["command"]]
    for command in (run_command, bridge_command):
        done = subprocess.run([*IOTSIM, *command], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
        assert done.returncode == 2, done.stderr  # a usage mistake (UsageError), not an unreachable broker
        assert done.stderr.strip() == f"MQTT_PASSWORD_FILE {tmp_path / 'missing'}: no such file", done.stderr
