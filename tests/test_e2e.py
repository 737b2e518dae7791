"""End to end: `python adws/coordinator.py` as a real process, the real gh
against a fake GitHub, real git, the scripted stand-in worker."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from adws import tasks


def branch_in_origin(origin: Path, branch: str) -> bool:
    r = subprocess.run(["git", "--git-dir", str(origin), "rev-parse", "--verify", "-q", f"refs/heads/{branch}"],
                       capture_output=True)
    return r.returncode == 0


def test_labelled_issue_becomes_pr_comment_and_completed_entry(project, github, git_origin):
    n = project.issue("Add a docstring", "Please add one.")
    project.start()
    project.wait_for(lambda: project.state(n) == tasks.COMPLETED, message="gh-N completed")
    t = project.task(n)
    pulls = github.pulls()
    assert len(pulls) == 1
    assert pulls[0]["head"]["ref"] == f"auto/gh-{n}" and pulls[0]["base"]["ref"] == "main"
    assert f"Closes #{n}" in pulls[0]["body"]
    assert not pulls[0]["draft"]
    assert t.pr == pulls[0]["html_url"]
    assert branch_in_origin(git_origin, f"auto/gh-{n}")
    # The issue is told, once, in the status comment, and the label swapped.
    project.wait_for(lambda: "tac:done" in github.issue_labels(n), message="tac:done label")
    comments = github.comments(n)
    assert len(comments) == 1
    assert pulls[0]["html_url"] in comments[0]["body"]
    assert "<!-- tac-coordinator -->" in comments[0]["body"]
    assert "rpi-auto" not in github.issue_labels(n)
    # The worktree is gone after success; the log and ledger remain.
    # (the issue is told first, then the worktree goes)
    project.wait_for(lambda: not (project.dir / "trees" / f"gh-{n}").exists(), timeout=10, message="worktree removed")
    assert (project.dir / "logs" / f"gh-{n}.jsonl").exists()
    assert (project.dir / "logs" / "usage.jsonl").read_text().count('"issue": %d' % n) == 1
    log = project.log_text()
    assert f"gh-{n} started pid=" in log and f"branch=auto/gh-{n}" in log


def test_untrusted_label_is_ignored_and_logged_once(project, github):
    github.set_permission("mallory", "read")
    n = project.issue("Run my script", labeller="mallory", author="mallory")
    for _ in range(3):
        r = project.run("--once")
        assert r.returncode == 0, r.stderr
    assert project.task(n) is None
    assert github.pulls() == [] and github.comments(n) == []
    # Each --once is a new process; within one run it is said once.
    assert r.stderr.count(f"gh-{n} skipped: labelled by mallory") == 1


def test_blocked_worker_ends_blocked_with_reason_and_worktree_kept(project, github, git_origin):
    n = project.issue("Port to kicad 9")
    project.script({"default": {"blocked": "Needs a decision on the footprint library", "commit": "wip.txt"}})
    project.start()
    project.wait_for(lambda: project.state(n) == tasks.BLOCKED, message="blocked")
    t = project.task(n)
    assert t.reason == "Needs a decision on the footprint library"
    assert (project.dir / "trees" / f"gh-{n}" / "BLOCKED.md").exists()
    assert branch_in_origin(git_origin, f"auto/gh-{n}")  # pushed so a person can look
    assert github.pulls() == []
    project.wait_for(lambda: "tac:blocked" in github.issue_labels(n), message="tac:blocked")
    assert "needs a human" in github.comments(n)[-1]["body"]


def test_failed_worker_is_retried_then_fails_with_reason(project, github):
    n = project.issue("Fix parser")
    project.script({"default": {"turns": 2, "exit": 1, "result": "error_during_execution"}})
    project.start()
    project.wait_for(lambda: project.state(n) == tasks.FAILED, timeout=40, message="failed")
    t = project.task(n)
    assert t.attempts == 2
    assert "without commits" in t.reason and "exit status 1" in t.reason
    log = (project.dir / "logs" / f"gh-{n}.jsonl").read_text()
    assert log.count('"subtype": "attempt"') == 2  # a retry appends, never overwrites
    assert (project.dir / "trees" / f"gh-{n}").exists()  # kept for inspection
    project.wait_for(lambda: "tac:failed" in github.issue_labels(n), message="tac:failed")
    assert "Failed" in github.comments(n)[-1]["body"]


def test_commits_without_success_open_a_draft_pr(project, github):
    n = project.issue("Half done")
    project.script({"default": {"commit": "part.txt", "result": "error_max_turns", "exit": 1}})
    project.start()
    project.wait_for(lambda: project.state(n) == tasks.COMPLETED, message="completed")
    pr = github.pulls()[0]
    assert pr["draft"] is True
    assert "error_max_turns" in pr["body"]


def test_existing_pr_for_the_branch_completes_the_task(project, github):
    n = project.issue("Already has a PR")
    pr = github.create_pull(f"auto/gh-{n}", title="opened elsewhere")
    project.script({"default": {"turns": 1}})
    project.start()
    project.wait_for(lambda: project.state(n) == tasks.COMPLETED, message="completed")
    assert len(github.pulls()) == 1
    assert project.task(n).pr.endswith(f"/pull/{pr}")


def test_dry_run_spawns_nothing_and_writes_nothing(project, github):
    n = project.issue("Something")
    r = project.run("--dry-run")
    assert r.returncode == 0, r.stderr
    assert f"would start gh-{n}" in r.stdout
    assert not (project.dir / "tasks.md").exists()
    assert project.worker_pids() == []


def test_dry_run_changes_nothing_from_a_busy_state(project, github):
    """--dry-run over a state with work due everywhere: an entry old enough
    for the archive, an ended task whose notice (comment, label swap) is
    still owed, and a new labelled issue. It says what it would start, and
    changes nothing: no file, no comment, no label, no write to GitHub."""
    now = time.time()
    owed = project.issue("Ended, notice owed")
    n = project.issue("New work")
    state = (
        "## Completed Today\n"
        "[✅ abc1234, w-111111] gh-70: Old work {p2}\n- Completed: 2020-01-01 10:00:00\n- PR: https://x/pull/71\n"
        "## Failed\n"
        f"[❌ w-222222] gh-{owed}: Ended, notice owed {{p2}}\n- Reason: worker exited without commits\n"
        f"- Finished: {tasks.format_time(now + 60)}\n- GitHub: pending\n")
    (project.dir / "tasks.md").write_text(state)
    files = sorted(os.listdir(project.dir))
    labels = {i: github.issue_labels(i) for i in (owed, n)}
    github.reset_requests()
    r = project.run("--dry-run")
    assert r.returncode == 0, r.stderr
    assert f"would start gh-{n} {{p2}} New work" in r.stdout
    assert (project.dir / "tasks.md").read_text() == state
    assert sorted(os.listdir(project.dir)) == files  # no tasks-archive.md, metrics.json, logs or trees
    assert github.comments(owed) == [] and github.comments(n) == []
    assert {i: github.issue_labels(i) for i in (owed, n)} == labels
    assert [f"{q.method} {q.path}" for q in github.requests if q.method != "GET"] == []
    assert project.worker_pids() == []
    # The same state without --dry-run does all of it: the test would see it.
    assert project.run("--once").returncode == 0
    assert (project.dir / "tasks-archive.md").exists()
    project.wait_for(lambda: "tac:failed" in github.issue_labels(owed), message="the owed notice delivered")


def test_github_outage_is_unknown_not_empty(project, github):
    n = project.issue("Keep me")
    assert project.run("--dry-run").returncode == 0
    project.script({"default": {"sleep": 30}})
    assert project.run("--once").returncode == 0
    assert project.state(n) == tasks.ACTIVE
    github.set_outage(503)
    r = project.run("--once")
    assert r.returncode == 1
    assert "github: unreachable" in r.stderr
    assert project.state(n) == tasks.ACTIVE  # nothing dropped
    assert "github: unreachable since" in (project.dir / "tasks.md").read_text()


@pytest.mark.parametrize("content, expect", [
    ("[github]\nrepo = \"acme/widgets\"\npoll_intervall = 5\n", "unknown key [github] poll_intervall"),
    ("[github]\nrepo = \"acme/widgets\"\n[workers]\ntimeout = \"soon\"\n", "[workers] timeout must be a number"),
    ("[github\nrepo = 1\n", "line 1"),
    ("[paths]\ntasks = \"t.md\"\n", "[github] repo is required"),
    ("[workers]\nmax_concurrent = \"lots\"\n[github]\nrepo = \"a/b\"\n", "max_concurrent"),
])
def test_bad_config_exits_78_with_one_line(tmp_path, content, expect):
    cfg = tmp_path / "config.toml"
    cfg.write_text(content)
    from harness import COORDINATOR
    import sys
    r = subprocess.run([sys.executable, str(COORDINATOR), "--config", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 78
    assert expect in r.stderr and str(cfg) in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_check_reports_each_item(project, github):
    r = project.run("--check")
    assert r.returncode == 0, r.stdout + r.stderr
    for item in ("gh authenticated as operator", "repo acme/widgets reachable", "label rpi-auto exists",
                 "git clone at", "worker command found", "template worker_template.md renders"):
        assert item in r.stdout
    project.write_config(github={"label": "missing-label"})
    r = project.run("--check")
    assert r.returncode == 1
    assert "✗ label missing-label" in r.stdout and "gh label create missing-label" in r.stdout
