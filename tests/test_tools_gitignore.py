""".gitignore keeps what the daemon and the install write in the checkout out
of git, and nothing the repository ships.

The state paths come from the daemon's own config loader reading the
shipped config.toml, so a moved path cannot leave the ignore list behind.
The check runs in a fresh repository holding only this .gitignore, so it
works from a tarball too.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from adws import config

ROOT = Path(__file__).resolve().parent.parent


def ignored(repo: Path, paths) -> set:
    r = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=str(repo),
                       input="\n".join(paths) + "\n", capture_output=True, text=True)
    assert r.returncode in (0, 1), r.stderr
    return set(r.stdout.split("\n")) - {""}


def repo_with_our_gitignore(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    return repo


def test_what_the_daemon_writes_in_its_checkout_is_ignored(tmp_path):
    cfg = config.load_config(ROOT / "config.toml", need_repo=False)

    def rel(p: Path) -> str:
        return str(Path(p).resolve().relative_to(ROOT.resolve()))

    state = [rel(cfg.tasks_path), rel(cfg.metrics_path), rel(cfg.pause_path), rel(cfg.archive_path),
             rel(cfg.ledger_path), rel(cfg.logs / "gh-7.jsonl"), rel(cfg.logs / "gh-7.stderr.log"),
             rel(cfg.trees / "gh-7" / "README.md"),
             rel(cfg.state_dir / ".{}.lock".format(cfg.tasks_path.name)),
             rel(cfg.state_dir / ".{}.running".format(cfg.tasks_path.name)), rel(cfg.state_dir / "status-issue.json"),
             rel(cfg.state_dir / ".tasks.md.x1y2.tmp"), rel(cfg.state_dir / ".metrics.a1b2.tmp")]
    made = [".venv/bin/python", "tac_coordinator.egg-info/PKG-INFO", ".cache/claude-cli/x",
            "adws/__pycache__/tasks.cpython-311.pyc"]
    repo = repo_with_our_gitignore(tmp_path)
    assert ignored(repo, state + made) == set(state + made)


def test_nothing_the_repository_ships_is_ignored(tmp_path):
    shipped = ["config.toml", "worker_template.md", "coordinator.service", "README.md",
               "tools/status.py", "tools/install_service.sh", "tools/deploy_to_pi.sh",
               "docs/SECURITY.md", "adws/tasks.py"]
    shipped += [str(p.relative_to(ROOT)) for p in sorted((ROOT / "tests" / "data").rglob("*")) if p.is_file()]
    repo = repo_with_our_gitignore(tmp_path)
    assert ignored(repo, shipped) == set()
