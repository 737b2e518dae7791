"""tools/deploy_to_pi.sh, into a local folder and through an `ssh` that runs
the remote command here (no sshd can be started on these machines; the
stand-in parses the command line with sh as a remote login shell would, so
the quoting is what is tested). Paths have spaces and a quote in them."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = ["trees/gh-1/README.md", "logs/gh-1.jsonl", "tasks.md", "tasks-archive.md", "metrics.json", "PAUSE",
         ".tasks.md.lock", ".venv/marker", "adws/__pycache__/x.pyc", "tac_coordinator.egg-info/PKG-INFO"]


def source(where: Path) -> Path:
    """A checkout in use: the code plus state, caches and a venv that must stay behind."""
    shutil.copytree(ROOT, where, ignore=shutil.ignore_patterns(".git", ".venv", ".cache", "__pycache__",
                                                               "*.egg-info", ".pytest_cache"))
    for rel in STATE:
        (where / rel).parent.mkdir(parents=True, exist_ok=True)
        (where / rel).write_text("state\n")
    return where


def deploy(src: Path, *args: str, cwd: Path, path_first: Path = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if path_first is not None:
        env["PATH"] = "{}:{}".format(path_first, env["PATH"])
    return subprocess.run(["sh", str(src / "tools" / "deploy_to_pi.sh"), *args], cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=300)


def assert_deployed(dest: Path) -> None:
    assert (dest / "adws" / "coordinator.py").is_file() and (dest / "tools" / "install_service.sh").is_file()
    for rel in STATE:   # the target may make its own egg-info, never get ours
        assert not (dest / rel).exists() or (dest / rel).read_text() != "state\n", rel
    assert not (dest / "tests").exists() and not (dest / ".git").exists()
    r = subprocess.run([str(dest / ".venv" / "bin" / "python"), "-c", "import rich, adws; print(adws.__file__)"],
                       cwd="/", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(dest / "adws" / "__init__.py")  # installed from the copy, editable


def test_deploy_to_a_local_folder_then_again_keeping_its_config(tmp_path):
    src = source(tmp_path / "dev box" / "tac")
    dest = tmp_path / "pi's home" / "tac coordinator"
    r = deploy(src, "--no-service", str(dest), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert_deployed(dest)
    assert r.stdout.splitlines()[-2:] == [
        "deploy_to_pi: deployed to {}".format(dest),
        "watch it: '{0}/.venv/bin/python' '{0}/tools/status.py' --watch".format(str(dest).replace("'", "'\\''"))]
    (dest / "config.toml").write_text("# edited on the Pi\n")
    venv_python = (dest / ".venv" / "bin" / "python").stat().st_ino
    # Again, this time with the installer, which refuses here (root, or no
    # systemd folder to write, or a failing check): the deploy says so.
    r = deploy(src, str(dest), cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == (
        "deploy_to_pi: installing the service failed (see above); the copy in {} is complete".format(dest))
    assert "install_service: " in r.stderr and "Traceback" not in r.stderr
    assert (dest / "config.toml").read_text() == "# edited on the Pi\n"
    assert "deploy_to_pi: kept the config.toml already in {}".format(dest) in r.stdout
    assert (dest / ".venv" / "bin" / "python").stat().st_ino == venv_python   # the venv is reused
    assert_deployed(dest)


def test_deploy_over_ssh_quotes_every_piece(tmp_path):
    src = source(tmp_path / "dev box" / "tac")
    home = tmp_path / "remote home"
    home.mkdir()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "ssh").write_text(
        '#!/bin/sh\n'
        '# ssh [-t] HOST COMMAND: run COMMAND as the remote login shell would, in "home"\n'
        '[ "$1" = -t ] && shift\n'
        'echo "$1" >> "{log}"\n'
        'cd "{home}" && exec sh -c "$2"\n'.format(log=tmp_path / "ssh.log", home=home))
    (bindir / "ssh").chmod(0o755)
    r = deploy(src, "--no-service", "pi@raspberrypi", "pi's tac coordinator", cwd=tmp_path, path_first=bindir)
    assert r.returncode == 0, r.stderr
    assert_deployed(home / "pi's tac coordinator")
    assert (tmp_path / "ssh.log").read_text() == "pi@raspberrypi\n"
    assert r.stdout.splitlines()[-1] == (
        "watch it: ssh -t pi@raspberrypi 'cd '\\''pi'\\''\\'\\'''\\''s tac coordinator'\\'' && "
        ".venv/bin/python tools/status.py --watch'")
    # and the line works: run it through the same stand-in
    watch = subprocess.run(["sh", "-c", r.stdout.splitlines()[-1][len("watch it: "):].replace(
        "--watch", "--json")], cwd=str(tmp_path), env=dict(os.environ, PATH="{}:{}".format(bindir, os.environ["PATH"])),
        capture_output=True, text=True, timeout=60)
    assert watch.returncode == 2 and '"level": "critical"' in watch.stdout   # not started yet: critical
