"""Windows checkouts: .gitattributes checks every text file out with LF, and the shell scripts the
containers run refuse CRLF with one line, in themselves or in what they read (Git for Windows with
core.autocrlf=true, or a file edited on Windows, would otherwise give `set: Illegal option -`, or a
CR at the end of every broker setting)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from test_compose import ROOT, checkout_path, compose  # noqa: F401  (compose: the resolved file, a fixture)


def tracked(*patterns: str) -> list[str]:
    return subprocess.run(["git", "ls-files", "--", *patterns], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()


SCRIPTS = tracked("*.sh")


def test_gitattributes_checks_text_out_with_lf() -> None:
    lines = [line.split() for line in (ROOT / ".gitattributes").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == ["*", "text=auto", "eol=lf"]
    # What git would check out: LF for every tracked text file.
    for name in SCRIPTS + tracked("*.conf", "*.yml", "*.yaml", "brokers/secure/acl", "Dockerfile"):
        attributes = subprocess.run(["git", "check-attr", "text", "eol", "--", name], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        assert f"{name}: eol: lf" in attributes, attributes
        assert b"\r" not in (ROOT / name).read_bytes(), name


def test_every_script_a_container_runs_is_checked(compose: dict) -> None:
    run = {checkout_path(compose, name, service["entrypoint"][1]) for name, service in compose["services"].items() if service.get("entrypoint", [None])[0] == "sh"}
    assert run == {ROOT / "compose" / "stage-config.sh", ROOT / "brokers" / "secure" / "make-compose-secrets.sh"}
    # make-compose-secrets.sh runs the other two from its folder.
    assert {ROOT / name for name in SCRIPTS} >= run | {ROOT / "brokers" / "secure" / "make-test-certs.sh", ROOT / "brokers" / "secure" / "make-passwords.sh"}


def crlf_copy(script: str, folder: Path) -> Path:
    copy = folder / Path(script).name
    copy.write_bytes((ROOT / script).read_bytes().replace(b"\n", b"\r\n"))
    return copy


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_script_with_crlf_stops_with_one_line(script: str, tmp_path: Path) -> None:
    copy = crlf_copy(script, tmp_path)
    out = tmp_path / "out"
    done = subprocess.run(["sh", str(copy), str(out), str(tmp_path / "dest")], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert done.returncode == 1, done
    name = Path(script).stem
    assert done.stderr == f"{name}: {copy} has CRLF line endings (a Windows checkout?); check it out with LF: git add --renormalize . (see .gitattributes)\n"
    assert done.stdout == "" and not out.exists()


def test_make_compose_secrets_stops_at_a_crlf_script_it_calls(tmp_path: Path) -> None:
    folder = tmp_path / "secure"
    folder.mkdir()
    shutil.copy(ROOT / "brokers" / "secure" / "make-compose-secrets.sh", folder)
    shutil.copy(ROOT / "brokers" / "secure" / "make-passwords.sh", folder)
    copy = crlf_copy("brokers/secure/make-test-certs.sh", folder)
    done = subprocess.run(["sh", str(folder / "make-compose-secrets.sh"), str(tmp_path / "out")], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and not (tmp_path / "out").exists()
    assert done.stderr.splitlines() == [f"make-test-certs: {copy} has CRLF line endings (a Windows checkout?); check it out with LF: git add --renormalize . (see .gitattributes)"]


def test_stage_config_refuses_a_crlf_config_file_and_copies_nothing(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    shutil.copytree(ROOT / "brokers" / "conf.d", src / "broker")
    shutil.copytree(ROOT / "dashboards" / "provisioning", src / "grafana")
    bad = src / "grafana" / "datasources" / "influxdb.yaml"
    bad.write_bytes(bad.read_bytes().replace(b"\n", b"\r\n"))
    for name in ("broker", "grafana"):
        (dest / name).mkdir(parents=True)
    (dest / "broker" / "kept.conf").write_text("what the volume had\n")
    done = subprocess.run(["sh", str(ROOT / "compose" / "stage-config.sh"), str(src), str(dest)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr == f"stage-config: {bad} has CRLF line endings (a Windows checkout?); check it out with LF: git add --renormalize . (see .gitattributes)\n"
    # Nothing copied, nothing removed: the volumes keep the last good files.
    assert sorted(path.name for path in dest.rglob("*")) == ["broker", "grafana", "kept.conf"]


def test_make_passwords_refuses_a_password_file_with_a_cr(tmp_path: Path) -> None:
    (tmp_path / "passwords").mkdir()
    (tmp_path / "passwords" / "bridge").write_bytes(b"0123456789abcdef0123456789abcdef\r\n")
    done = subprocess.run(["sh", str(ROOT / "brokers" / "secure" / "make-passwords.sh"), str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and not (tmp_path / "passwd").exists()
    assert done.stderr == (
        f"make-passwords: {tmp_path}/passwords/bridge has a CR (CRLF line ending): the password would hold it; rewrite the file with LF\n"
    )
