"""Shared fixtures: a fake GitHub reached through the real gh, and real git repos.

Keep this small and generic; fixtures for one test file live in that file.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adws.sandbox.fakegithub import FakeGitHub  # noqa: E402

# Settings a developer's own environment must not leak into the tests.
_GH_LEAKS = ("GH_REPO", "GH_DEBUG", "GH_ENTERPRISE_TOKEN", "GITHUB_TOKEN",
             "GITHUB_ENTERPRISE_TOKEN")


def pytest_configure(config):
    """A background job of a non-interactive shell starts with SIGINT
    ignored, and children inherit that: the tests that stop a tool with
    Ctrl-C would then wait for it in vain. Python's own handler is reset to
    the default in every child at exec, so installing it here is enough."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# A test that hangs must fail, naming itself, not hold CI until its own
# time limit (an endless read loop once did). Generous: the slowest test
# here takes well under a minute on a shared 2-core machine.
TEST_TIME_LIMIT = 300


@pytest.fixture(autouse=True)
def _time_limit(request):
    def expired(signum, frame):
        pytest.fail(f"{request.node.nodeid} took longer than {TEST_TIME_LIMIT} s", pytrace=True)
    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, TEST_TIME_LIMIT)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def git(*args: str, cwd: Optional[Path] = None) -> str:
    """Run git with a fixed identity and no signing; return stdout."""
    cmd = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com",
           "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", *args]
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    """A started fake GitHub serving "acme/widgets". Attach a bare repo with
    `github.origin_path = str(git_origin)` to have POST /pulls check branches."""
    fake = FakeGitHub("acme/widgets").start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def gh_env(github: FakeGitHub, tmp_path: Path) -> Dict[str, str]:
    """A complete environment (pass as `env=`) in which `gh api` talks to `github`."""
    config = tmp_path / "gh-config"
    config.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in _GH_LEAKS}
    env.update(github.env(str(config)))
    return env


@pytest.fixture
def git_origin(tmp_path: Path) -> Path:
    """A bare repo `origin.git` whose `main` has one commit adding README."""
    origin = tmp_path / "origin.git"
    seed = tmp_path / "seed"
    git("init", "--bare", "-q", str(origin))
    git("init", "-q", str(seed))
    (seed / "README").write_text("widgets\n")
    git("add", "README", cwd=seed)
    git("commit", "-q", "-m", "Initial commit", cwd=seed)
    git("push", "-q", str(origin), "HEAD:refs/heads/main", cwd=seed)
    git("--git-dir", str(origin), "symbolic-ref", "HEAD", "refs/heads/main")
    return origin


@pytest.fixture
def clone(git_origin: Path, tmp_path: Path) -> Path:
    """A working clone of `git_origin` on main, with user.name/email set."""
    work = tmp_path / "clone"
    git("clone", "-q", str(git_origin), str(work))
    git("config", "user.name", "Test", cwd=work)
    git("config", "user.email", "test@example.com", cwd=work)
    git("config", "commit.gpgsign", "false", cwd=work)
    return work


@pytest.fixture
def project(tmp_path: Path, github: FakeGitHub, gh_env: Dict[str, str], clone: Path, git_origin: Path):
    """A coordinator project (tests/harness.py): config, clone, fake GitHub,
    scripted worker. Every worker run is traced to trace.txt (start and end
    times per PID), and the project's workers are stopped at teardown."""
    from harness import Project
    p = Project(tmp_path, github, gh_env, clone, git_origin)
    p.env["TAC_TRACE"] = str(p.dir / "trace.txt")
    yield p
    p.stop_all()

