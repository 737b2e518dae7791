"""tools/install_service.sh: the unit it renders is one systemd accepts, for
a checkout whose path has a space in it; it refuses to install when --check
fails; --uninstall reverses an install and is safe to repeat.

systemctl itself cannot run here (no systemd as PID 1 in a container), so
the tests that get that far put a recording `systemctl` first on PATH and
point --unit-dir at a temp folder; systemd-analyze is the real one.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
needs_verify = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                  reason="needs systemd-analyze (apt-get install systemd)")


def service_user() -> str:
    """A real account that is neither root nor nobody (systemd warns about nobody)."""
    me = pwd.getpwuid(os.getuid())
    if me.pw_uid != 0:
        return me.pw_name
    for entry in pwd.getpwall():
        if entry.pw_uid not in (0, 65534) and entry.pw_name != "nobody":
            return entry.pw_name
    pytest.fail("no account to run the service as")


def checkout(where: Path) -> Path:
    """The parts of a checkout the installer reads, with the pytest venv as .venv."""
    where.mkdir(parents=True)
    for part in ("adws", "tools"):
        shutil.copytree(ROOT / part, where / part, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("coordinator.service", "config.toml", "worker_template.md"):
        shutil.copy(ROOT / name, where / name)
    (where / ".venv").symlink_to(sys.prefix)
    return where


def fake_systemctl(bindir: Path) -> Path:
    """A systemctl that only records its arguments, one call per line."""
    bindir.mkdir()
    record = bindir / "calls"
    script = bindir / "systemctl"
    script.write_text('#!/bin/sh\necho "$*" >> "{}"\n'.format(record))
    script.chmod(0o755)
    return record


def install(tree: Path, *args: str, env: Optional[Dict[str, str]] = None, path_first: Optional[Path] = None):
    full = dict(os.environ)
    full.pop("SUDO_USER", None)
    if path_first is not None:
        full["PATH"] = "{}:{}".format(path_first, full["PATH"])
    full.update(env or {})
    return subprocess.run(["sh", str(tree / "tools" / "install_service.sh"), *args], env=full,
                          capture_output=True, text=True, timeout=120)


def unit_lines(text: str, key: str) -> List[str]:
    return [line for line in text.splitlines() if line.startswith(key + "=")]


@needs_verify
def test_rendered_unit_passes_systemd_analyze_verify_with_a_space_in_the_path(tmp_path):
    tree = checkout(tmp_path / "my checkout" / "tac coordinator")
    user = service_user()
    r = install(tree, "--print", env={"SUDO_USER": user})
    assert (r.returncode, r.stderr) == (0, "")
    text = r.stdout
    assert unit_lines(text, "User") == ["User=" + user]
    assert unit_lines(text, "WorkingDirectory") == ["WorkingDirectory={}".format(tree)]
    assert unit_lines(text, "ExecStart") == [
        'ExecStart="{}/.venv/bin/python" adws/coordinator.py --config config.toml'.format(tree)]
    # outside /home the checkout must be made writable explicitly
    assert unit_lines(text, "ReadWritePaths") == ['ReadWritePaths=/home "{}"'.format(tree)]
    unit = tmp_path / "coordinator.service"
    unit.write_text(text)
    v = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    about_us = [line for line in (v.stdout + v.stderr).splitlines() if "coordinator.service" in line]
    assert v.returncode == 0 and about_us == [], v.stdout + v.stderr


def test_the_user_is_who_ran_sudo_and_never_root(tmp_path):
    tree = checkout(tmp_path / "co")
    user = service_user()
    assert unit_lines(install(tree, "--print", env={"SUDO_USER": user}).stdout, "User") == ["User=" + user]
    assert unit_lines(install(tree, "--print", "--user", user).stdout, "User") == ["User=" + user]
    r = install(tree, "--print", "--user", "root")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("install_service: will not run the service as root") and r.stderr.count("\n") == 1
    r = install(tree, "--print", "--user", "no-such-user-here")
    assert (r.returncode, r.stderr) == (1, "install_service: no such user: no-such-user-here\n")


def test_a_failing_check_refuses_before_systemd_is_touched(tmp_path):
    tree = checkout(tmp_path / "my checkout")
    # a [repo] path that is no git clone: --check fails whoever runs it
    (tree / "config.toml").write_text((ROOT / "config.toml").read_text().replace(
        'path = "."', 'path = "/nonexistent/clone"', 1))
    units = tmp_path / "units"
    units.mkdir()
    calls = fake_systemctl(tmp_path / "bin")
    r = install(tree, "--user", service_user(), "--unit-dir", str(units), path_first=tmp_path / "bin")
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1].startswith("install_service: --check failed as {}".format(service_user()))
    assert "Traceback" not in r.stdout + r.stderr
    assert list(units.iterdir()) == [] and not calls.exists()


def test_uninstall_reverses_and_is_idempotent(tmp_path):
    tree = checkout(tmp_path / "my checkout")
    units = tmp_path / "unit dir"
    units.mkdir()
    (units / "coordinator.service").write_text(install(tree, "--print", "--user", service_user()).stdout)
    calls = fake_systemctl(tmp_path / "bin")
    r = install(tree, "--uninstall", "--unit-dir", str(units), path_first=tmp_path / "bin")
    assert r.returncode == 0, r.stderr
    assert list(units.iterdir()) == []
    assert calls.read_text().splitlines() == ["disable --now coordinator", "daemon-reload"]
    r = install(tree, "--uninstall", "--unit-dir", str(units), path_first=tmp_path / "bin")
    assert r.returncode == 0 and "nothing to remove" in r.stdout
    assert calls.read_text().splitlines() == ["disable --now coordinator", "daemon-reload"]
