"""A month unattended (issue #11): the disk never fills, a run's transcript
is capped, and a full disk holds spawning without losing a tasks.md entry.
Real daemon, real git, real files; time is moved with file times."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from adws import coordinator as co
from adws import tasks
from adws.tasks import BLOCKED, FAILED, PENDING, Task

DAY = 86400


def age(path: Path, days: float) -> None:
    t = time.time() - days * DAY
    os.utime(path, (t, t), follow_symlinks=False)


def git_worktrees(clone: Path) -> str:
    return subprocess.run(["git", "worktree", "list"], cwd=clone, capture_output=True, text=True).stdout


def test_kept_worktrees_and_logs_go_after_their_days_and_nothing_live_or_queued(project, clone, caplog):
    cfg = co.load_config(project.config)
    c = co.Coordinator(cfg, co.GitHub(cfg.repo, env=project.env), environ={})
    now = time.time()
    trees = {}
    for n in (1, 2, 3, 4, 5):
        trees[n], _ = co.prepare_worktree(cfg, n, f"auto/gh-{n}")
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "work"], cwd=trees[2], check=True)
    co.push_branch(cfg, "auto/gh-2")
    doc = tasks.TaskFile([
        Task(1, "failed long ago", FAILED, branch="auto/gh-1", finished=tasks.format_time(now - 20 * DAY)),
        Task(2, "blocked long ago", BLOCKED, branch="auto/gh-2", finished=tasks.format_time(now - 15 * DAY)),
        Task(3, "blocked lately", BLOCKED, branch="auto/gh-3", finished=tasks.format_time(now - 3 * DAY)),
        Task(4, "queued again", PENDING)])
    tasks.update(cfg.tasks_path, lambda d: d.tasks.extend(doc.tasks))
    age(trees[4], 30)   # queued: kept however old
    age(trees[5], 30)   # no entry at all (archived): goes by its own age
    cfg.logs.mkdir(parents=True, exist_ok=True)
    logs = {name: cfg.logs / name for name in ("gh-1.jsonl", "gh-1.stderr.log", "gh-1.prompt.md",
                                               "gh-3.jsonl", "gh-4.jsonl", "usage.jsonl")}
    for name, path in logs.items():
        path.write_text("x\n")
        age(path, 100 if name != "gh-3.jsonl" else 10)
    with caplog.at_level(logging.INFO, logger="tac"):
        c.housekeep(c.clock())
    assert sorted(p.name for p in cfg.trees.iterdir()) == ["gh-3", "gh-4"]
    listed = git_worktrees(clone)
    assert "gh-1" not in listed and "gh-2" not in listed and "gh-3" in listed
    said = caplog.text
    assert "gh-1 worktree removed after 14 days; branch auto/gh-1 stays in the clone (never pushed)" in said
    assert "gh-2 worktree removed after 14 days; branch auto/gh-2 is on origin" in said
    # The ledger is never pruned; a queued task's log stays; a recent one too.
    assert sorted(p.name for p in cfg.logs.iterdir()) == ["gh-3.jsonl", "gh-4.jsonl", "usage.jsonl"]
    assert "gh-1 gh-1.jsonl removed after 90 days" in said
    # The branches themselves stay: the work is never thrown away.
    branches = subprocess.run(["git", "branch"], cwd=clone, capture_output=True, text=True).stdout
    assert "auto/gh-1" in branches and "auto/gh-2" in branches
    assert c.disk["trees_mb"] >= 0 and c.disk["free_mb"] > 0


def test_a_worker_whose_transcript_outgrows_max_log_mb_is_stopped(project, github):
    project.write_config(workers={"max_log_mb": 0.05, "max_attempts": 1})
    project.script({"default": {"turns": 400, "tool": "x" * 2000, "turn_delay": 0.01}})
    n = project.issue("Prints far too much")
    project.start()
    project.wait_for(lambda: project.state(n) == FAILED, timeout=40, message="stopped and failed")
    t = project.task(n)
    assert "transcript over max_log_mb 0.05 MB" in t.reason
    assert f"gh-{n} stopping pid=" in project.log_text()
    size = (project.dir / "logs" / f"gh-{n}.jsonl").stat().st_size
    assert size < 2 << 20, size  # stopped near the cap, not after 400 turns (~1 MB more)


def test_too_little_free_disk_holds_spawning_and_says_why(project, github):
    project.write_config(workers={"min_free_disk_mb": 10 ** 9})
    n = project.issue("Waits for disk space")
    p = project.start()
    project.wait_for(lambda: "disk nearly full" in (project.tasks().status or "") and project.state(n) == PENDING,
                     message="queued, and the reason shown")
    time.sleep(1)
    assert project.state(n) == PENDING and not (project.dir / "logs" / f"gh-{n}.jsonl").exists()
    assert "not spawning: disk nearly full: " in project.log_text()
    project.write_config(workers={"min_free_disk_mb": 0})
    p.send_signal(__import__("signal").SIGHUP)
    project.wait_for(lambda: project.state(n) == tasks.COMPLETED, timeout=30, message="runs once there is room")


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs, where this machine lets the test mount one."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root and a kernel that allows it)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(folder: Path) -> Path:
    """Fill the file system holding `folder` to the last byte."""
    ballast = folder / "ballast"
    with open(ballast, "wb", buffering=0) as f:  # unbuffered: the last write fails here, not at close
        for size in (1 << 16, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass
    return ballast


def test_a_full_disk_holds_spawning_and_loses_no_entry(project, github, small_disk):
    """tasks.md, trees and logs on a disk that fills up: the daemon keeps
    running, says why nothing starts, and every entry is still there."""
    config = small_disk / "config.toml"
    text = project.config.read_text() + "[paths]\ntasks = \"tasks.md\"\n"
    config.write_text(text.replace("[workers]\n", "[workers]\nmin_free_disk_mb = 1\n"))
    (small_disk / "worker_template.md").write_text((project.dir / "worker_template.md").read_text())
    first = project.issue("Runs before the disk fills")
    env = dict(project.env)
    log = open(project.dir / "coordinator.log", "ab")
    p = subprocess.Popen(project.argv()[:2] + ["--config", str(config)], env=env, stdout=log, stderr=subprocess.STDOUT)
    project.procs.append(p)
    path = small_disk / "tasks.md"

    def entry(n):
        return tasks.load(path)[0].governing(n) if path.exists() else None
    project.wait_for(lambda: entry(first) and entry(first).state == tasks.COMPLETED, timeout=40,
                     message="the first task completes")
    ballast = fill(small_disk)
    second = project.issue("Queued while the disk is full")
    time.sleep(4)
    assert p.poll() is None, "the daemon keeps running on a full disk"
    doc, problems, _ = tasks.load(path)
    assert problems == [] and doc.governing(first).state == tasks.COMPLETED
    assert not (small_disk / "logs" / f"gh-{second}.jsonl").exists()
    ballast.unlink()
    project.wait_for(lambda: entry(second) and entry(second).state == tasks.COMPLETED, timeout=40,
                     message="the second runs once there is room")
    log = project.log_text()
    assert "Traceback" not in log and "deferred: [Errno 28] No space left on device" in log
    assert log.count(f"gh-{second} queued") == 1  # said once it was written, not at every failed try
    assert log.count(f"gh-{first} completed") == 1 and "ended after a person changed" not in log


def test_a_second_coordinator_on_the_same_clone_is_refused_whatever_its_tasks_md(project, github):
    """Two coordinators with their own tasks.md but one clone and trees
    folder ran every issue twice: the lock covers what they would share."""
    p = project.start()
    project.wait_for(lambda: "status:" in project.log_text(), message="the first one runs")
    other = project.dir / "other"
    other.mkdir()
    config = other / "config.toml"
    config.write_text(project.config.read_text() + f'[paths]\ntasks = "{other / "tasks.md"}"\n'
                      f'trees = "{project.dir / "trees"}"\n')
    r = subprocess.run(project.argv()[:2] + ["--config", str(config), "--once"], env=project.env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr.strip() == f"coordinator: another coordinator (pid {p.pid}) is already running on " \
                               f"the worktrees folder {project.dir / 'trees'}"
    config.write_text(project.config.read_text() + f'[paths]\ntasks = "{other / "tasks.md"}"\n'
                      f'trees = "{other / "trees"}"\n')
    r = subprocess.run(project.argv()[:2] + ["--config", str(config), "--once"], env=project.env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and f"already running on the clone {project.clone}" in r.stderr
    assert not (other / "tasks.md").exists()


def test_a_huge_damaged_tasks_md_is_reported_once_in_a_few_lines_and_work_goes_on(project, github):
    """200,000 lines nobody can read (a runaway script appended to it): the
    log names a few and counts the rest, once, and the queue still runs."""
    garbage = "".join(f"garbage line {i} {{not an entry}}\n" for i in range(200_000))
    (project.dir / "tasks.md").write_text("# TAC coordinator — tasks\n\n## Pending\n" + garbage)
    n = project.issue("Runs beside the garbage")
    project.write_config(github={"poll_interval": 0.5})
    project.start()
    project.wait_for(lambda: project.state(n) == tasks.COMPLETED, timeout=60, message="the issue completes")
    time.sleep(2)  # several more writes and reads of the file
    log = project.log_text()
    assert log.count("tasks.md: and 199,980 more lines it did not understand, kept as they are") == 1
    assert log.count("unexpected text in '## Pending'") == 20
    assert len(log.splitlines()) < 100
    assert (project.dir / "tasks.md").read_text().count("garbage line") == 200_000  # nothing lost
