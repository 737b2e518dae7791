"""The tools on a python without rich, as Debian's /usr/bin/python3 is.

A venv made with --without-pip has nothing but the standard library. Each
tool's --help, --json and one-line errors work there; drawing either runs the
checkout's own .venv python (which has rich after the README's install) or
says in one line which interpreter to use. Never a traceback.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from claude_samples import sample

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("status.py", "view_worker.py", "usage_report.py", "dashboard.py")


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> str:
    venv = tmp_path_factory.mktemp("norich") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    probe = subprocess.run([python, "-c", "import rich"], capture_output=True)
    assert probe.returncode != 0, "the bare venv can import rich"
    return python


def checkout(where: Path, venv: bool) -> Path:
    """A copy of the code a user has, with the pytest venv as its .venv or none."""
    for part in ("adws", "tools"):
        shutil.copytree(ROOT / part, where / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "config.toml", where / "config.toml")
    if venv:
        assert Path(sys.prefix, "bin", "python").exists()
        (where / ".venv").symlink_to(sys.prefix)
    return where


def run(python: str, tree: Path, tool: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR", "TAC_TOOL_REEXEC")}
    env["COLUMNS"] = "80"
    return subprocess.run([python, str(tree / "tools" / tool), *args], cwd=str(tree), env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("tool", TOOLS)
def test_help_needs_no_rich(bare_python, tmp_path, tool):
    r = run(bare_python, checkout(tmp_path, venv=False), tool, "--help")
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.startswith("usage: " + tool)


@pytest.mark.parametrize("tool, args", [("status.py", []), ("usage_report.py", []),
                                        ("view_worker.py", ["--log", "SAMPLE"]), ("dashboard.py", ["--port", "0"])])
def test_drawing_without_rich_or_a_venv_names_the_interpreter(bare_python, tmp_path, tool, args):
    tree = checkout(tmp_path / "my checkout", venv=False)
    args = [str(sample("08_")) if a == "SAMPLE" else a for a in args]
    r = run(bare_python, tree, tool, *args)
    assert r.returncode == 3 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert "needs the rich package, which {} does not have".format(bare_python) in r.stderr
    assert "'{}'/.venv/bin/python '{}'".format(tree, tree / "tools" / tool) in r.stderr
    assert "python3 -m venv .venv && .venv/bin/pip install -e ." in r.stderr


@pytest.mark.parametrize("tool, args, code, expect", [
    ("status.py", [], 2, " CRITICAL  coordinator has not written metrics.json yet"),
    ("usage_report.py", [], 0, "no runs recorded yet in "),
    ("view_worker.py", ["--log", "SAMPLE"], 0, "● init  model "),
])
def test_drawing_without_rich_runs_the_checkouts_venv(bare_python, tmp_path, tool, args, code, expect):
    tree = checkout(tmp_path, venv=True)
    args = [str(sample("08_")) if a == "SAMPLE" else a for a in args]
    r = run(bare_python, tree, tool, *args)
    assert (r.returncode, r.stderr) == (code, "")
    assert r.stdout.startswith(expect)


def test_a_venv_without_rich_is_not_run_again_and_again(bare_python, tmp_path):
    """The checkout's .venv is the bare one itself: one line, no exec loop."""
    tree = checkout(tmp_path, venv=False)
    (tree / ".venv").symlink_to(Path(bare_python).parent.parent)
    r = run(str(tree / ".venv" / "bin" / "python"), tree, "status.py")
    assert r.returncode == 3 and len(r.stderr.splitlines()) == 1
    assert "install it into the venv: {}/.venv/bin/pip install -e {}".format(tree, tree) in r.stderr


def test_json_and_errors_need_no_rich(bare_python, tmp_path):
    tree = checkout(tmp_path, venv=False)
    r = run(bare_python, tree, "status.py", "--json")
    assert r.returncode == 2 and json.loads(r.stdout)["health"]["level"] == "critical"
    r = run(bare_python, tree, "usage_report.py", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["total"]["runs"] == 0
    r = run(bare_python, tree, "view_worker.py", "7")
    assert r.returncode == 1 and r.stderr.startswith("view_worker: no log at ")
    assert "Traceback" not in r.stderr
