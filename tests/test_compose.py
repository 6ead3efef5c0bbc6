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
from docker.utils.build import exclude_paths
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


ONE_SHOTS = ("config", "secrets")  # run to completion on every `up`, before the servers that read their volumes


def test_docker_compose_accepts_the_file_with_the_seven_services(compose: dict) -> None:
    assert set(compose["services"]) == {"config", "secrets", "mosquitto", "influxdb", "grafana", "bridge", "simulator"}
    # Pinned in one place, x-images (tests/test_image_versions.py: the versions the tests run).
    images = load_yaml(COMPOSE.read_text())["x-images"]
    assert compose["services"]["mosquitto"]["image"] == images["mosquitto"] == "eclipse-mosquitto:2.0.11"
    assert compose["services"]["influxdb"]["image"] == images["influxdb"] == "influxdb:1.6.6"
    assert compose["services"]["grafana"]["image"] == images["grafana"] == "grafana/grafana-oss:11.6.0"


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
        if name in ONE_SHOTS:
            continue  # below
        assert service.get("restart") in ("unless-stopped", "on-failure"), name
        for dependency, condition in service.get("depends_on", {}).items():
            if dependency in ONE_SHOTS:
                assert condition == {"condition": "service_completed_successfully"}, (name, dependency)
                continue
            assert condition == {"condition": "service_healthy"}, (name, dependency)
            assert "healthcheck" in services[dependency], dependency
    # The one-shots run once per `up` and are never restarted; what reads their volumes starts only
    # if they succeeded.
    for name in ONE_SHOTS:
        assert services[name]["restart"] == "no" and "healthcheck" not in services[name], name
    assert set(services["mosquitto"]["depends_on"]) == {"config", "secrets"}
    assert set(services["bridge"]["depends_on"]) == {"mosquitto", "influxdb"}
    assert set(services["simulator"]["depends_on"]) == {"mosquitto", "influxdb", "bridge"}
    assert set(services["grafana"]["depends_on"]) == {"config", "influxdb"}
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
    """docker-compose 1.29 prints short syntax (SOURCE:TARGET[:OPTIONS], options comma-separated:
    `ro`/`rw`, `z`/`Z`); both forms as dicts in the long syntax's shape (`bind.selinux`)."""
    mounts = []
    for volume in volumes:
        if isinstance(volume, dict):
            mounts.append(volume)
            continue
        source, target, *mode = volume.split(":")
        options = set(mode[0].split(",")) if mode else set()
        kind = "bind" if source.startswith("/") or source.startswith(".") else "volume"
        mount = {"type": kind, "source": source, "target": target, "read_only": "ro" in options}
        if options & {"z", "Z"}:
            mount["bind"] = {"selinux": (options & {"z", "Z"}).pop()}
        mounts.append(mount)
    return mounts


def binds(compose: dict) -> list[tuple[str, dict]]:
    return [(name, mount) for name, service in compose["services"].items() for mount in as_mounts(service.get("volumes", [])) if mount["type"] == "bind"]


def test_every_mounted_file_exists_and_is_read_only_with_the_shared_selinux_label(compose: dict) -> None:
    """On SELinux hosts (Fedora, RHEL) a container reads a bind mount only if Docker relabels it: `z`
    (shared: several containers mount these files). Only the one-shots mount the checkout."""
    assert binds(compose)
    for name, mount in binds(compose):
        assert Path(mount["source"]).exists(), mount
        assert mount["read_only"], mount
        assert mount.get("bind", {}).get("selinux") == "z", (name, mount)
        assert name in ONE_SHOTS, (name, mount)


def checkout_path(compose: dict, service: str, path: str) -> Path:
    """The checkout's file a container path shows: through its bind mount, or through the volume the
    `config` service fills (compose/stage-config.sh SRC DEST: SRC/NAME's files into DEST/NAME)."""
    target, mount = deepest_mount(compose, service, path)
    rest = path[len(target) :]
    if mount["type"] == "bind":
        return Path(mount["source"] + rest)
    config = compose["services"]["config"]
    src, dest = config["command"][:2]
    [staged] = [found["target"] for found in as_mounts(config["volumes"]) if found["type"] == "volume" and found["source"] == mount["source"]]
    assert staged.startswith(dest + "/"), f"{service} {path}: volume {mount['source']} is not one `config` fills"
    return checkout_path(compose, "config", src + staged[len(dest) :] + rest)


def deepest_mount(compose: dict, service: str, path: str) -> tuple[str, dict]:
    """The mount that holds `path` in `service`'s container (the deepest), and its target."""
    holding = [(mount["target"].rstrip("/"), mount) for mount in as_mounts(compose["services"][service].get("volumes", []))]
    holding = [(target, mount) for target, mount in holding if path == target or path.startswith(target + "/")]
    assert holding, f"{service}: {path} is in no mount"
    return max(holding, key=lambda found: len(found[0]))


def test_the_broker_and_grafana_read_copies_made_by_the_config_service(compose: dict) -> None:
    """Not the checkout: what they read is in volumes the `config` one-shot fills (root, so a umask
    077 checkout is readable to it), read-only."""
    services = compose["services"]
    config = services["config"]
    assert config["user"] == "root" and config["entrypoint"] == ["sh", "/opt/compose/stage-config.sh"]
    assert checkout_path(compose, "config", config["entrypoint"][1]) == ROOT / "compose" / "stage-config.sh"
    expected = {
        ("mosquitto", "/mosquitto/config/secure/mosquitto.conf"): ROOT / "brokers" / "secure" / "mosquitto.conf",
        ("mosquitto", "/mosquitto/config/secure/acl"): ROOT / "brokers" / "secure" / "acl",
        ("mosquitto", "/mosquitto/config/conf.d/10-dev.conf"): ROOT / "brokers" / "conf.d" / "10-dev.conf",
        ("grafana", "/etc/grafana/provisioning/datasources/influxdb.yaml"): PROVISIONING / "datasources" / "influxdb.yaml",
        ("grafana", "/etc/grafana/dashboards/city.json"): JSON_DIR / "city.json",
    }
    for (service, path), source in expected.items():
        assert checkout_path(compose, service, path) == source, (service, path)
        target, mount = deepest_mount(compose, service, path)
        assert mount["type"] == "volume" and mount["read_only"], (service, path)
    # The secrets volume is mounted inside the broker's read-only config volume: `config` makes its mountpoint.
    mountpoint = config["command"][2]
    assert deepest_mount(compose, "mosquitto", "/mosquitto/config/secure/generated")[1]["source"] == "mqtt-secrets"
    staged = {mount["source"]: mount["target"] for mount in as_mounts(config["volumes"]) if mount["type"] == "volume"}
    assert f"{staged['mosquitto-config']}/secure/generated" == f"{config['command'][1]}/{mountpoint}"


def test_the_broker_config_compose_runs_includes_the_shared_settings(compose: dict) -> None:
    mosquitto = compose["services"]["mosquitto"]
    config = checkout_path(compose, "mosquitto", mosquitto["command"][2]).read_text()
    assert re.search(r"^listener 1883\s*$", config, re.M)
    assert re.search(r"^persistence_location /mosquitto/data/\s*$", config, re.M)
    include = re.search(r"^include_dir (\S+)\s*$", config, re.M)
    assert include is not None and checkout_path(compose, "mosquitto", include.group(1)) == ROOT / "brokers" / "conf.d"
    assert sorted((ROOT / "brokers" / "conf.d").glob("*.conf"))


def test_grafana_provisioning_points_at_the_boards_and_the_home_board_exists(compose: dict) -> None:
    grafana = compose["services"]["grafana"]
    assert checkout_path(compose, "grafana", "/etc/grafana/provisioning") == PROVISIONING
    providers = load_yaml((PROVISIONING / "dashboards" / "yangquan.yaml").read_text())["providers"]
    assert [provider["type"] for provider in providers] == ["file"]
    in_container = providers[0]["options"]["path"]
    assert checkout_path(compose, "grafana", in_container) == JSON_DIR
    assert sorted(path.name for path in JSON_DIR.glob("*.json")) == sorted(BOARDS)
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{in_container}/city.json" and (JSON_DIR / "city.json").is_file()
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_grafana_finds_every_provisioning_folder_it_reads_and_only_files_it_accepts() -> None:
    """Grafana 11 reads four folders under provisioning/ and logs an error for a missing one;
    alerting/ may hold only .yaml/.yml/.json files (any other stops Grafana at start), plugins/ reads
    .yaml/.yml. The two unused ones provision nothing."""
    assert sorted(path.name for path in PROVISIONING.iterdir()) == ["alerting", "dashboards", "datasources", "plugins"]
    accepted = {"alerting": (".yaml", ".yml", ".json"), "plugins": (".yaml", ".yml"), "dashboards": (".yaml", ".yml"), "datasources": (".yaml", ".yml")}
    for folder, suffixes in accepted.items():
        files = sorted((PROVISIONING / folder).iterdir())
        assert files and all(path.is_file() and path.name.endswith(suffixes) for path in files), folder
        for path in files:
            assert load_yaml(path.read_text())["apiVersion"] == 1, path
    assert [load_yaml(path.read_text()) for path in (PROVISIONING / "alerting").iterdir()] == [{"apiVersion": 1}]
    assert [load_yaml(path.read_text()) for path in (PROVISIONING / "plugins").iterdir()] == [{"apiVersion": 1, "apps": []}]


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


def test_one_service_builds_the_image_the_others_name_it(compose: dict) -> None:
    """Compose v2 builds through bake, where several targets tagging one image can fail (`image ...
    already exists`): only the bridge builds; the others run its image and never pull it."""
    services = compose["services"]
    [builder] = [name for name, service in services.items() if "build" in service]
    assert builder == "bridge" and Path(services["bridge"]["build"]["context"]) == ROOT
    assert services["bridge"]["image"] == load_yaml(COMPOSE.read_text())["x-images"]["iotsim"]
    for name in ("simulator", "secrets", "config"):
        assert services[name]["image"] == services["bridge"]["image"], name
        assert services[name]["pull_policy"] == "never", name  # a local image: no registry has it


def test_the_image_installs_the_package_and_carries_the_scenarios() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    # The runtime stage installs the package from the wheels stage's wheels (tests/test_image_platforms.py).
    assert re.search(r"^\s+pip install --no-index --find-links /wheels yangquan-iot-testbed ", dockerfile, re.M)
    assert re.search(r'^ENTRYPOINT \["iotsim"\]', dockerfile, re.M)
    copied = re.findall(r"^COPY (.+) \S+$", dockerfile, re.M)
    for sources in copied:
        for source in sources.split():
            assert (ROOT / source).exists(), source
    ignored = (ROOT / ".dockerignore").read_text().split()
    for needed in ("simulator", "scenarios", "pyproject.toml", "README.md"):
        assert needed not in ignored
    # The `secrets` service runs brokers/secure/make-*.sh with this image: openssl and mosquitto_passwd.
    runtime = re.split(r"^FROM ", dockerfile, flags=re.M)[-1]
    install = re.search(r"apt-get install -y --no-install-recommends ([^\\\n]+)", runtime)
    assert install is not None and {"openssl", "mosquitto"} <= set(install.group(1).split())
    assert "chmod -R a+rX /app/scenarios" in runtime  # COPY keeps a umask 077 checkout's modes


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


def dockerignore_patterns() -> list[str]:
    """.dockerignore's patterns as Docker reads them: one per line, trimmed, `#` lines and blank ones
    skipped (the same reading as the Docker SDK's own `build`)."""
    lines = (line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def build_context(destination: Path, checkout: Path) -> Path:
    """The files `docker build .` sends from a fresh clone: the tracked files, less what .dockerignore
    excludes by Docker's rules (patterns from the context's root, `*` within a name, `**` across
    folders, `!` exceptions, the last matching pattern wins), applied by the Docker SDK's own
    `exclude_paths` (the Dockerfile is always sent)."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        if (ROOT / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, checkout / name)
    for name in exclude_paths(str(checkout), dockerignore_patterns()):
        if (checkout / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(checkout / name, destination / name)
    return destination


def test_the_build_context_keeps_what_the_image_needs_and_nothing_else(tmp_path: Path) -> None:
    context = build_context(tmp_path / "context", tmp_path / "checkout")
    sent = {path.relative_to(context).parts[0] for path in context.rglob("*")}
    assert sent == {"Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "simulator", "scenarios"}, sent  # Docker always sends the first two
    # Patterns match from the root: `dashboards` excludes the top-level boards, not the code that builds them.
    assert not (context / "dashboards").exists()
    assert (context / "simulator" / "dashboards" / "build.py").is_file()
    assert sorted(path.name for path in (context / "simulator" / "dashboards").glob("*.py")) == sorted(
        path.name for path in (ROOT / "simulator" / "dashboards").glob("*.py")
    )
    assert not list(context.rglob("__pycache__")) and not list(context.rglob("*.key"))


def test_the_build_context_makes_an_installable_iotsim(tmp_path: Path) -> None:
    """What the Dockerfile's `pip install .` does, from the files the build context holds (offline:
    the dependencies come from this environment, the package only from the context)."""
    context = build_context(tmp_path / "context", tmp_path / "checkout")
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
