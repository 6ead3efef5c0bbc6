"""The images docker-compose.yml pins are the servers the tests run: x-images holds each version
once, and it must agree with the Mosquitto and InfluxDB that simulator/stack.py starts here
(Debian bookworm's packages). A new Debian package, or a new pin, fails here until the two agree."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from ruamel.yaml import YAML

from simulator import stack

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"


def pins() -> dict[str, str]:
    return YAML(typ="safe", pure=True).load(COMPOSE.read_text())["x-images"]


def tag(image: str) -> tuple[int, ...]:
    repository, _, version = image.rpartition(":")
    assert repository and re.fullmatch(r"\d+\.\d+\.\d+", version), f"{image}: pin a full version (MAJOR.MINOR.PATCH), not a moving tag"
    return tuple(int(part) for part in version.split("."))


def local_version(command: list[str], pattern: str) -> tuple[int, ...]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    found = re.search(pattern, done.stdout + done.stderr)
    assert found is not None, (command, done.stdout, done.stderr)
    return tuple(int(part) for part in found.groups())


def test_every_image_is_pinned_once_in_x_images_and_used_by_name() -> None:
    text = COMPOSE.read_text()
    services = YAML(typ="safe", pure=True).load(text)["services"]
    for name, service in services.items():
        assert service["image"] in pins().values(), name
    # Each version is written once: the services refer to x-images by anchor.
    for image in pins().values():
        assert text.count(image) == 1, image
    assert re.findall(r"^\s+image: (\S+)", text, re.M) and all(word.startswith("*") for word in re.findall(r"^\s+image: (\S+)", text, re.M))


def test_the_broker_image_is_the_mosquitto_the_tests_run() -> None:
    # `mosquitto -h` prints "mosquitto version 2.0.11" and exits 3.
    here = local_version([stack.MOSQUITTO.path(), "-h"], r"mosquitto version (\d+)\.(\d+)\.(\d+)")
    assert pins()["mosquitto"].startswith("eclipse-mosquitto:")
    assert tag(pins()["mosquitto"]) == here


def test_the_database_image_is_the_influxdb_line_the_tests_run() -> None:
    """Debian's influxd is 1.6.7~rc0, a release candidate InfluxData never published as an image:
    the pin is the newest 1.6 image, 1.6.6 (same release line: the /write and InfluxQL the tests use)."""
    here = local_version([stack.INFLUXD.path(), "version"], r"InfluxDB v(\d+)\.(\d+)\.(\d+)")
    pinned = tag(pins()["influxdb"])
    assert pins()["influxdb"].startswith("influxdb:")
    assert pinned[:2] == here[:2], f"compose pins {pins()['influxdb']}, the tests run influxd {'.'.join(map(str, here))}"
    assert here == (1, 6, 7) and pinned == (1, 6, 6)  # the one known gap; a new Debian influxdb needs a new decision


def test_grafana_is_the_version_of_the_dashboard_sdk() -> None:
    """The boards are built with grafana-foundation-sdk for one Grafana version (pyproject.toml)."""
    sdk = re.search(r'"grafana-foundation-sdk==\d+!(\d+)\.(\d+)\.(\d+)"', (ROOT / "pyproject.toml").read_text())
    assert sdk is not None and pins()["grafana"].startswith("grafana/grafana-oss:")
    assert tag(pins()["grafana"]) == tuple(int(part) for part in sdk.groups())
