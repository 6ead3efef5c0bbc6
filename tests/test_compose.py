"""The docker compose stack, checked without Docker: Debian's docker-compose parses and resolves it,
every file it mounts exists, the provisioning points at the boards, and the commands the images run
are real `iotsim` commands. The secure broker and what the containers do with it, against real
servers: tests/test_compose_secure.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from conftest import IOTSIM, iotsim
from simulator import stack
from simulator.dashboards.build import BOARDS, JSON_DIR
from simulator.dashboards.influxql import DATASOURCE_UID
from simulator.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
PROVISIONING = ROOT / "dashboards" / "provisioning"
DOCKER_COMPOSE = shutil.which("docker-compose") or "/usr/bin/docker-compose"


def load_yaml(text: str) -> dict:
    return YAML(typ="safe", pure=True).load(text)


def resolved(env: dict[str, str] | None = None) -> dict:
    """`docker-compose config`: the file validated against the compose schema, variables substituted."""
    environment = {key: value for key, value in os.environ.items() if key not in ("SCENARIO", "SPEED", "DURATION", "GRAFANA_PORT", "MQTTS_PORT")}
    result = subprocess.run(
        [DOCKER_COMPOSE, "-f", str(COMPOSE), "--project-directory", str(ROOT), "config"],
        capture_output=True, text=True, timeout=60, env={**environment, **(env or {})},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return load_yaml(result.stdout)


@pytest.fixture(scope="module")
def compose() -> dict:
    if not Path(DOCKER_COMPOSE).exists():
        pytest.fail("docker-compose is not installed; on Debian: sudo apt-get install docker-compose")
    return resolved()


def test_docker_compose_accepts_the_file_with_the_six_services(compose: dict) -> None:
    assert set(compose["services"]) == {"secrets", "mosquitto", "influxdb", "grafana", "bridge", "simulator"}
    assert compose["services"]["mosquitto"]["image"] == "eclipse-mosquitto:2"
    assert compose["services"]["influxdb"]["image"] == "influxdb:1.11"
    assert compose["services"]["grafana"]["image"].startswith("grafana/grafana-oss")


def test_only_grafana_and_mqtt_over_tls_on_loopback_reach_the_host(compose: dict) -> None:
    published = {name: service.get("ports", []) for name, service in compose["services"].items() if service.get("ports")}
    assert set(published) == {"grafana", "mosquitto"}
    assert as_ports(published["grafana"]) == [(None, 3000, 3000)]
    assert as_ports(published["mosquitto"]) == [("127.0.0.1", 8883, 8883)]  # plain 1883 stays in the compose network
    assert as_ports(resolved({"MQTTS_PORT": "18883"})["services"]["mosquitto"]["ports"]) == [("127.0.0.1", 18883, 8883)]


def as_ports(ports: list) -> list[tuple[str | None, int, int]]:
    """(host ip, host port, container port) from either syntax docker-compose prints."""
    parsed = []
    for port in ports:
        if isinstance(port, dict):
            parsed.append((port.get("host_ip"), int(port["published"]), int(port["target"])))
        else:
            *host, published, target = str(port).removesuffix("/tcp").split(":")
            parsed.append((host[0] if host else None, int(published), int(target)))
    return parsed


def test_every_service_restarts_and_waits_for_what_it_needs_to_be_healthy(compose: dict) -> None:
    services = compose["services"]
    for name, service in services.items():
        if name == "secrets":
            continue  # the one-shot, below
        assert service.get("restart") in ("unless-stopped", "on-failure"), name
        for dependency, condition in service.get("depends_on", {}).items():
            if dependency == "secrets":
                continue
            assert condition == {"condition": "service_healthy"}, (name, dependency)
            assert "healthcheck" in services[dependency], dependency
    # The one-shot runs once per `up` and is never restarted; the broker starts only if it succeeded.
    assert services["secrets"]["restart"] == "no" and "healthcheck" not in services["secrets"]
    assert services["mosquitto"]["depends_on"] == {"secrets": {"condition": "service_completed_successfully"}}
    assert set(services["bridge"]["depends_on"]) == {"mosquitto", "influxdb"}
    assert set(services["simulator"]["depends_on"]) == {"mosquitto", "influxdb", "bridge"}
    assert set(services["grafana"]["depends_on"]) == {"influxdb"}
    for name in ("mosquitto", "influxdb", "grafana", "bridge"):
        assert services[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
    database = services["influxdb"]["environment"]["INFLUXDB_DB"]
    assert f'"{database}"' in services["influxdb"]["healthcheck"]["test"][1]  # healthy = the database exists


def test_data_lives_in_named_volumes(compose: dict) -> None:
    expected = {"mosquitto": "/mosquitto/data", "influxdb": "/var/lib/influxdb", "grafana": "/var/lib/grafana", "bridge": "/data"}
    for name, target in expected.items():
        volumes = compose["services"][name]["volumes"]
        assert any(volume["type"] == "volume" and volume["target"] == target and volume["source"] in compose["volumes"] for volume in as_mounts(volumes)), name
    # What the bridge keeps on disk survives a new container: its spool holds messages it has already
    # acknowledged to the broker.
    bridge = compose["services"]["bridge"]["command"]
    for option in ("--dead-letters", "--spool-dir"):
        assert bridge[bridge.index(option) + 1].startswith("/data/"), option


def as_mounts(volumes: list) -> list[dict]:
    """docker-compose 1.29 prints short syntax (SOURCE:TARGET[:MODE]); both forms as dicts."""
    mounts = []
    for volume in volumes:
        if isinstance(volume, dict):
            mounts.append(volume)
            continue
        source, target, *mode = volume.split(":")
        kind = "bind" if source.startswith("/") or source.startswith(".") else "volume"
        mounts.append({"type": kind, "source": source, "target": target, "read_only": mode == ["ro"]})
    return mounts


def test_every_mounted_file_exists_and_is_read_only(compose: dict) -> None:
    binds = [mount for service in compose["services"].values() for mount in as_mounts(service.get("volumes", [])) if mount["type"] == "bind"]
    assert binds
    for mount in binds:
        assert Path(mount["source"]).exists(), mount
        assert mount["read_only"], mount


def test_the_broker_config_compose_runs_includes_the_shared_settings(compose: dict) -> None:
    mosquitto = compose["services"]["mosquitto"]
    mounts = {mount["target"]: Path(mount["source"]) for mount in as_mounts(mosquitto["volumes"])}
    config = mounts[mosquitto["command"][2]].read_text()
    assert re.search(r"^listener 1883\s*$", config, re.M)
    assert re.search(r"^persistence_location /mosquitto/data/\s*$", config, re.M)
    include = re.search(r"^include_dir (\S+)\s*$", config, re.M)
    assert include is not None and include.group(1) in mounts
    assert sorted(mounts[include.group(1)].glob("*.conf"))


def test_grafana_provisioning_points_at_the_boards_and_the_home_board_exists(compose: dict) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {mount["target"]: Path(mount["source"]) for mount in as_mounts(grafana["volumes"])}
    assert mounts["/etc/grafana/provisioning"] == PROVISIONING
    providers = load_yaml((PROVISIONING / "dashboards" / "yangquan.yaml").read_text())["providers"]
    assert [provider["type"] for provider in providers] == ["file"]
    in_container = providers[0]["options"]["path"]
    assert mounts[in_container] == JSON_DIR
    assert sorted(path.name for path in JSON_DIR.glob("*.json")) == sorted(BOARDS)
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{in_container}/city.json" and (JSON_DIR / "city.json").is_file()
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_the_datasource_matches_compose_the_bridge_and_the_scenario_defaults(compose: dict) -> None:
    sources = load_yaml((PROVISIONING / "datasources" / "influxdb.yaml").read_text())["datasources"]
    assert len(sources) == 1
    source = sources[0]
    assert source["uid"] == DATASOURCE_UID and source["type"] == "influxdb" and source["jsonData"]["version"] == "InfluxQL"
    database = source["jsonData"]["dbName"]
    assert source["url"] == "http://influxdb:8086" and "influxdb" in compose["services"]
    assert compose["services"]["influxdb"]["environment"]["INFLUXDB_DB"] == database
    bridge = compose["services"]["bridge"]["command"]
    assert bridge[bridge.index("--influx") + 1] == source["url"] and bridge[bridge.index("--db") + 1] == database
    simulator = compose["services"]["simulator"]["command"]
    assert simulator[simulator.index("--influx") + 1] == source["url"]
    # The scenario the stack runs writes its counters to the same database.
    scenario = load_scenario(ROOT / simulator[1])
    assert scenario.influx.database == database


def test_the_default_scenario_runs_in_real_time_and_is_overridable(compose: dict) -> None:
    command = compose["services"]["simulator"]["command"]
    assert command[:2] == ["run", "scenarios/yangquan.yaml"] and command[command.index("--speed") + 1] == "1"
    assert command[command.index("--duration") + 1] == "until-stopped" and command[command.index("--start") + 1] == "now"  # live, from now
    assert compose["services"]["simulator"]["restart"] == "unless-stopped"  # a restart resumes from now
    other = resolved({"SCENARIO": "city-incident.yaml", "SPEED": "60"})["services"]["simulator"]["command"]
    assert other[1] == "scenarios/city-incident.yaml" and other[other.index("--speed") + 1] == "60"
    assert (ROOT / other[1]).is_file()


def test_bridge_simulator_and_secrets_are_one_image_built_from_the_repository(compose: dict) -> None:
    services = [compose["services"][name] for name in ("bridge", "simulator", "secrets")]
    assert len({service["image"] for service in services}) == 1
    assert all(Path(service["build"]["context"]) == ROOT for service in services)


def test_the_image_installs_the_package_and_carries_the_scenarios() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^RUN pip install \.", dockerfile, re.M)
    assert re.search(r'^ENTRYPOINT \["iotsim"\]', dockerfile, re.M)
    copied = re.findall(r"^COPY (.+) \S+$", dockerfile, re.M)
    for sources in copied:
        for source in sources.split():
            assert (ROOT / source).exists(), source
    ignored = (ROOT / ".dockerignore").read_text().split()
    for needed in ("simulator", "scenarios", "pyproject.toml", "README.md"):
        assert needed not in ignored
    # The `secrets` service runs brokers/secure/make-*.sh with this image: openssl and mosquitto_passwd.
    install = re.search(r"apt-get install -y --no-install-recommends ([^\\\n]+)", dockerfile)
    assert install is not None and {"openssl", "mosquitto"} <= set(install.group(1).split())


@pytest.mark.parametrize("service", ["bridge", "simulator"])
def test_the_images_commands_are_iotsim_commands(compose: dict, service: str) -> None:
    command = compose["services"][service]["command"]
    help_text = iotsim(command[0], "--help")
    assert help_text.returncode == 0, help_text.stderr
    for option in (word for word in command if word.startswith("--")):
        assert option in help_text.stdout, f"{service}: iotsim {command[0]} has no {option}"


def healthcheck_command(check: list[str], port: int) -> list[str]:
    """A compose healthcheck as a local command, its container port replaced by the test server's."""
    kind, *command = check
    # `docker-compose config` prints `$$` (compose's escape for a literal `$`) as written.
    command = [part.replace("$$", "$").replace("127.0.0.1:8086", f"127.0.0.1:{port}") for part in command]
    if kind == "CMD-SHELL":
        return ["sh", "-c", command[0]]
    return [str(port) if part in ("1883", "8086") else part for part in command]


def test_the_influxdb_healthcheck_waits_for_the_database(compose: dict, tmp_path: Path) -> None:
    influxdb = stack.start_influxdb(tmp_path, stack.free_port(), database=None)
    try:
        check = healthcheck_command(compose["services"]["influxdb"]["healthcheck"]["test"], influxdb.port)
        assert subprocess.run(check, capture_output=True, timeout=30).returncode != 0  # up, but no database yet
        stack.create_database(influxdb.url, compose["services"]["influxdb"]["environment"]["INFLUXDB_DB"])
        assert subprocess.run(check, capture_output=True, timeout=30).returncode == 0
    finally:
        influxdb.stop()


def build_context(destination: Path) -> Path:
    """The files `docker build .` sends: the repository minus .dockerignore's patterns (plain names,
    `**/name` and `*.ext`, the forms the file uses)."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]

    def ignored(relative: Path) -> bool:
        for pattern in patterns:
            name = pattern.removeprefix("**/")
            if relative.match(name) or any(Path(*relative.parts[: index + 1]).match(pattern) for index in range(len(relative.parts))):
                return True
            if pattern.startswith("**/") and any(part == name for part in relative.parts):
                return True
        return False

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        relative = Path(name)
        if not ignored(relative) and (ROOT / relative).is_file():
            (destination / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / relative, destination / relative)
    return destination


def test_the_build_context_makes_an_installable_iotsim(tmp_path: Path) -> None:
    """What the Dockerfile's `pip install .` does, from the files the build context holds (offline:
    the dependencies come from this environment, the package only from the context)."""
    context = build_context(tmp_path / "context")
    assert not (context / "tests").exists() and not (context / ".venv").exists()
    assert (context / "simulator" / "schemas" / "telemetry.schema.json").is_file()
    wheel = subprocess.run(
        [IOTSIM[0], "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "wheels"), str(context)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert wheel.returncode == 0, wheel.stderr
    [built] = list((tmp_path / "wheels").glob("*.whl"))
    install = subprocess.run(
        [IOTSIM[0], "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp_path / "site"), str(built)], capture_output=True, text=True, timeout=300
    )
    assert install.returncode == 0, install.stderr
    # Run from the context's directory as the image does (WORKDIR /app), importing the installed copy
    # as the `iotsim` script would (-P: the working directory is not put on sys.path).
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"} | {"PYTHONPATH": str(tmp_path / "site")}
    located = subprocess.run([IOTSIM[0], "-P", "-c", "import simulator; print(simulator.__file__)"], cwd=context, capture_output=True, text=True, env=env)
    assert located.stdout.startswith(str(tmp_path / "site")), located
    for command in (["--help"], ["validate", "scenarios/yangquan.yaml"], ["bridge", "--help"], ["run", "--help"]):
        result = subprocess.run([IOTSIM[0], "-P", "-m", "simulator.cli", *command], cwd=context, capture_output=True, text=True, timeout=120, env=env)
        assert result.returncode == 0, (command, result.stderr)
