"""The image builds on linux/amd64 and linux/arm64 (Dockerfile): every runtime dependency in
pyproject.toml installs on the runtime stage's Python (CPython 3.11 on Debian bookworm, glibc 2.36)
from a wheel published on PyPI, except the ones the wheels stage compiles, which build here from
their sdist with gcc into a wheel that the runtime stage installs without a compiler.

Needs PyPI, as installing the test environment does; pip runs isolated from this machine's pip
configuration (no local wheel folder, no constraints), so it sees what a Docker build sees."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from packaging import tags
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
INDEX = "https://pypi.org/simple"
BASE_IMAGE = "python:3.11-slim-bookworm"
GLIBC = (2, 36)  # Debian bookworm's, the base image's: manylinux_2_5 .. manylinux_2_36 run there
ARCHES = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}
# What the wheels stage compiles, per architecture: PyPI has no aarch64 wheel of any hdrhistogram
# release >= 0.10; everything else has a wheel for both.
COMPILED = {"x86_64": set[str](), "aarch64": {"hdrhistogram"}}


def dependencies() -> list[Requirement]:
    """The runtime dependencies, from pyproject.toml (what the wheels stage reads too)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(line) for line in project["dependencies"]]


def pip(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    return subprocess.run(
        [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def resolve(arch: str, requirements: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """What `pip install --only-binary=:all:` would install on `arch` in the runtime stage (a dry run,
    its report in tmp_path/report-<arch>.json)."""
    return pip(
        "install", "--dry-run", "--ignore-installed", "--only-binary=:all:", "--index-url", INDEX,
        *platform_options(arch), "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
        "--target", str(tmp_path / f"target-{arch}"), "--report", str(tmp_path / f"report-{arch}.json"), "-q",
        *requirements,
    )  # fmt: skip


def platform_tags(arch: str) -> list[str]:
    """Every platform tag the base image's pip accepts on `arch`: one per manylinux glibc level (pip's
    --platform does not widen manylinux_2_X itself), the legacy aliases, and linux_<arch> (a wheel
    built in the wheels stage)."""
    levels = [f"manylinux_2_{minor}_{arch}" for minor in range(5, GLIBC[1] + 1)]
    legacy = [f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}"] if arch == "x86_64" else [f"manylinux2014_{arch}"]
    return [*levels, *legacy, f"linux_{arch}"]


def platform_options(arch: str) -> list[str]:
    return [option for tag in platform_tags(arch) for option in ("--platform", tag)]


def wheel_fits(filename: str, arch: str) -> bool:
    """CPython 3.11 on glibc 2.36 `arch` installs this wheel: one of its tags is one of that
    interpreter's (packaging's own list, the one pip uses)."""
    platforms = platform_tags(arch)
    supported = {*tags.cpython_tags((3, 11), ["cp311"], platforms), *tags.compatible_tags((3, 11), "cp311", platforms)}
    return bool(parse_wheel_filename(filename)[3] & supported)


def test_the_dockerfile_builds_wheels_with_a_compiler_and_installs_them_without_one() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(rf"^ARG PYTHON_IMAGE={re.escape(BASE_IMAGE)}$", text, re.M)
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert [stage.split()[0] for stage in stages] == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    wheels, runtime = stages
    assert wheels.split("\n", 1)[0].strip() == "${PYTHON_IMAGE} AS wheels"
    assert "gcc" in wheels and "pip wheel --wheel-dir /wheels -r requirements.txt" in wheels
    # The wheels stage reads the dependency list from pyproject.toml, not a copy of it.
    assert "tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']" in wheels
    assert "gcc" not in runtime and "pip wheel" not in runtime
    install = re.search(r"^RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \\\n\s+pip install --no-index --find-links /wheels (\S+)", runtime, re.M)
    assert install is not None
    assert canonicalize_name(install.group(1)) == canonicalize_name(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"])


@pytest.fixture(scope="module")
def compiled_wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """What the wheels stage compiles on arm64, built here from the sdist with gcc (on this machine's
    architecture: the same source, the same compiler, the same Python)."""
    folder = tmp_path_factory.mktemp("wheels")
    wanted = [str(requirement) for requirement in dependencies() if canonicalize_name(requirement.name) in set().union(*COMPILED.values())]
    built = pip("wheel", "--no-deps", "--no-binary", ":all:", "--index-url", INDEX, "--wheel-dir", str(folder), *wanted, timeout=600)
    assert built.returncode == 0, built.stderr
    return {canonicalize_name(parse_wheel_filename(path.name)[0]): path for path in folder.glob("*.whl")}


def test_the_compiled_dependencies_build_from_their_sdist_with_gcc(compiled_wheels: dict[str, Path]) -> None:
    assert set(compiled_wheels) == set().union(*COMPILED.values())
    for name, wheel in compiled_wheels.items():
        # A C extension: the reason the runtime stage could not build it without a compiler.
        assert all(tag.platform != "any" for tag in parse_wheel_filename(wheel.name)[3]), wheel.name
        with zipfile.ZipFile(wheel) as archive:
            assert any(member.endswith(".so") for member in archive.namelist()), name


def requires(wheel: Path) -> list[str]:
    """The wheel's own runtime requirements (Requires-Dist without extras), from its METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        [metadata] = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
        lines = archive.read(metadata).decode().splitlines()
    found = [Requirement(line.split(":", 1)[1].strip()) for line in lines if line.startswith("Requires-Dist:")]
    return [str(requirement) for requirement in found if requirement.marker is None or requirement.marker.evaluate({"extra": ""})]


@pytest.mark.parametrize("platform", sorted(ARCHES))
def test_every_other_dependency_has_a_wheel_for_the_platform(platform: str, compiled_wheels: dict[str, Path], tmp_path: Path) -> None:
    arch = ARCHES[platform]
    compiled = COMPILED[arch]
    names = {canonicalize_name(requirement.name) for requirement in dependencies()}
    assert compiled <= names, "COMPILED names a package pyproject.toml does not depend on"
    # The rest, and what the compiled ones need in turn, resolve from published wheels alone.
    wanted = [str(requirement) for requirement in dependencies() if canonicalize_name(requirement.name) not in compiled]
    wanted += [line for name in sorted(compiled) for line in requires(compiled_wheels[name])]
    done = resolve(arch, wanted, tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / f"report-{arch}.json").read_text())
    chosen = {canonicalize_name(item["metadata"]["name"]): unquote(Path(urlparse(item["download_info"]["url"]).path).name) for item in report["install"]}
    assert names - compiled <= set(chosen)
    assert not compiled & set(chosen)
    for name, filename in chosen.items():
        assert filename.endswith(".whl") and wheel_fits(filename, arch), f"{platform}: {name} from {filename}"
    # And the compiled ones are needed: no published wheel fits (else the stage would not compile them).
    for name in sorted(compiled):
        [requirement] = [str(requirement) for requirement in dependencies() if canonicalize_name(requirement.name) == name]
        alone = resolve(arch, [requirement], tmp_path)
        assert alone.returncode != 0 and f"No matching distribution found for {requirement}" in alone.stderr, alone.stderr
