"""`python adws/coordinator.py --demo` as a newcomer runs it: a subprocess
with no terminal, no GitHub account and no API key."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterator

import pytest

from harness import COORDINATOR, tagged_processes
from adws import tasks

# As in conftest: the developer's own gh settings must not reach the demo.
_GH_LEAKS = ("GH_REPO", "GH_DEBUG", "GH_ENTERPRISE_TOKEN", "GITHUB_TOKEN", "GH_TOKEN", "GH_HOST",
             "GITHUB_ENTERPRISE_TOKEN", "GH_PAGER", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
COMMANDS = ("cat ", "git ", "less ", "rm ")


def is_command(line: str) -> bool:
    """A command to copy: it may be longer than 80 columns. The demo names
    its own interpreter (e.g. .venv/bin/python), not a bare `python`."""
    words = line.split()
    return bool(words) and (line.strip().startswith(COMMANDS) or os.path.basename(words[0]).startswith("python"))


@pytest.fixture
def tmp_dir() -> Iterator[Path]:
    """Where the demo makes its sandbox (TMPDIR): short like /tmp, so lines
    holding its paths are as long as a user sees them; removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="td-") as d:
        yield Path(d)


def demo_env(tmp_dir: Path) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _GH_LEAKS}
    env["TMPDIR"] = str(tmp_dir)
    return env


def test_demo_ends_one_issue_as_a_pr_and_one_blocked(tmp_dir):
    demo = subprocess.Popen([sys.executable, str(COORDINATOR), "--demo"], env=demo_env(tmp_dir),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = demo.communicate(timeout=120)
    r = subprocess.CompletedProcess(demo.args, demo.returncode, out, err)
    assert r.returncode == 0, out + r.stderr
    assert "Traceback" not in out + r.stderr
    sandboxes = list(tmp_dir.glob("tac-demo-*"))
    assert len(sandboxes) == 1
    sandbox = sandboxes[0]

    # The pull request, with its URL and title, and the Blocked issue.
    assert re.search(r"pull request: Add a subtract function\n\s+https://github\.localhost/demo/calculator/pull/\d+",
                     out), out
    assert "Blocked" in out and "labels now: tac:blocked" in out
    assert "The agent needs a human: Should 1+2j (Python) or 1+2i" in out  # the issue comment
    doc, problems, _ = tasks.load(sandbox / "tasks.md")
    assert problems == []
    assert [t.issue for t in doc.in_state(tasks.COMPLETED)] == [1]
    assert [t.issue for t in doc.in_state(tasks.BLOCKED)] == [2]
    # tasks.md is printed as it is on disk.
    for line in (sandbox / "tasks.md").read_text(encoding="utf-8").splitlines():
        assert "  " + line in out.splitlines()
    # The usage report and the way on.
    assert "Daily usage" in out and "$0.06" in out
    assert f"view_worker.py 1 --config {sandbox / 'config.toml'}" in out
    assert f"rm -rf {sandbox}" in out

    # Made for 80 columns: only a command (kept whole for copying) is longer.
    long = [line for line in out.splitlines() if len(line) > 80 and not is_command(line)]
    assert long == []

    # The daemon ran as a process of its own, as a user starts it.
    started = re.findall(r"coordinator started pid=(\d+)", (sandbox / "coordinator.log").read_text())
    assert len(started) == 1 and int(started[0]) != demo.pid

    # No worker outlives the demo.
    assert tagged_processes(f"TAC_SCRIPT={sandbox / 'script.json'}") == []


def test_demo_without_gh_says_how_to_get_it(tmp_path, tmp_dir):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git",):
        found = [Path(d) / tool for d in os.environ.get("PATH", "").split(os.pathsep) if (Path(d) / tool).is_file()]
        (bin_dir / tool).symlink_to(found[0])
    env = demo_env(tmp_dir)
    env["PATH"] = str(bin_dir)
    r = subprocess.run([sys.executable, str(COORDINATOR), "--demo"], env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stdout == "the demo needs the GitHub CLI: sudo apt-get install gh\n"
    assert list(tmp_dir.glob("tac-demo-*")) == []  # nothing made before the check


def test_the_daemon_never_imports_the_sandbox():
    """The demo, the fake GitHub and the scripted worker ship for --demo and
    the tests; a daemon on a Pi must not load them."""
    code = ("import runpy, sys\n"
            "sys.argv = [%r, '--help']\n"
            "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('adws')))" % str(COORDINATOR))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    loaded = r.stdout.strip().splitlines()[-1]
    assert "adws.config" in loaded and "sandbox" not in loaded, loaded
