"""End to end: `python adws/coordinator.py` as a real process, the real gh
against a fake GitHub, real git, the scripted stand-in worker."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adws import tasks
from harness import COORDINATOR, ROOT


def branch_in_origin(origin: Path, branch: str) -> bool:
    r = subprocess.run(["git", "--git-dir", str(origin), "rev-parse", "--verify", "-q", f"refs/heads/{branch}"],
                       capture_output=True)
    return r.returncode == 0


def ledger_outcomes(project, n: int):
    """How each of issue n's runs ended, as its ledger lines say."""
    lines = (project.dir / "logs" / "usage.jsonl").read_text().splitlines()
    return [r.get("outcome") for r in map(json.loads, lines) if r.get("issue") == n]


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
    assert ledger_outcomes(project, n) == ["completed"]
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
    assert ledger_outcomes(project, n) == ["blocked"]


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
    assert ledger_outcomes(project, n) == ["failed", "failed"]


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


def test_a_run_without_commits_looks_at_one_page_of_recent_pull_requests(project, github):
    """A run with nothing to push may have opened its PR itself: the daemon
    looks among the 100 most recently updated, one page, however many PRs
    the repository has (a run with commits never looks: the 422 tells)."""
    for i in range(150):
        github.create_pull(f"other/{i}", title=f"busy repo {i}")
    n = project.issue("Nothing to push")
    project.script({"default": {"turns": 1}})
    project.write_config(workers={"max_attempts": 1})
    project.start()
    project.wait_for(lambda: project.state(n) == tasks.FAILED, message="failed")
    pulls = [r for r in github.requests if r.method == "GET" and "/pulls" in r.path]
    assert len(pulls) == 1 and pulls[0].path == "/repos/acme/widgets/pulls", [r.path for r in pulls]


def test_a_pr_older_than_the_recent_hundred_is_found_after_the_422(project, github):
    """The branch's PR exists but is not among the 100 most recently updated
    that one poll reads: creating it again gets GitHub's 422 "already
    exists", and the task completes with the existing PR, no second one."""
    n = project.issue("PR fell out of the recent window")
    pr = github.create_pull(f"auto/gh-{n}", title="opened long ago")
    for i in range(100):
        github.create_pull(f"other/{i}", title=f"busy repo {i}")
    before = len(github.pulls())
    project.script({"default": {"commit": "fix.txt"}})
    project.start()
    project.wait_for(lambda: project.state(n) == tasks.COMPLETED, message="completed")
    assert project.task(n).pr.endswith(f"/pull/{pr}")
    assert len(github.pulls()) == before
    assert 422 in [r.status for r in github.requests]


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


def _tree(*roots):
    return sorted(str(p) for root in roots for p in root.rglob("*") if ".git" not in p.parts)


def test_a_refused_login_is_said_as_such_not_as_an_outage(project, github):
    """gh's token is refused (401): tasks.md, the log and status.py say
    "not authenticated: run gh auth login", never "unreachable"."""
    github.set_tokens("a-token-the-daemon-does-not-have")
    project.start()
    project.wait_for(lambda: "not authenticated" in tasks.load(project.dir / "tasks.md")[0].status
                     if (project.dir / "tasks.md").exists() else False, message="the status line")
    status = tasks.load(project.dir / "tasks.md")[0].status
    assert status.startswith("running · github: not authenticated since ") and "run gh auth login" in status
    assert "github: refused our login since" in project.log_text()
    project.wait_for(lambda: (project.dir / "metrics.json").exists(), message="metrics.json")
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "status.py"), "--config", str(project.config)],
                       capture_output=True, text=True, env=dict(os.environ, COLUMNS="200"))
    assert r.returncode != 0, r.stdout
    assert "GitHub: not authenticated: run gh auth login" in r.stdout and "unreachable" not in r.stdout


def test_check_creates_nothing(project, github):
    before = _tree(project.dir, project.clone)
    r = project.run("--check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _tree(project.dir, project.clone) == before  # no tasks.md, logs/ or trees/


@pytest.mark.parametrize("url, ok", [
    ("git@github.com:someone/tac-coordinator.git", False),      # [repo] path = "." in this project's checkout
    ("https://github.com/someone/tac-coordinator", False),
    ("https://github.com/Acme/Widgets.git", True),
    ("ssh://git@github.com/acme/widgets", True),
])
def test_check_says_when_the_clone_is_of_another_repository(project, github, url, ok):
    subprocess.run(["git", "-C", str(project.clone), "remote", "set-url", "origin", url], check=True)
    r = project.run("--check")
    line = next(l for l in r.stdout.splitlines() if "git clone at" in l)
    if ok:
        assert line.startswith("✓") and r.returncode == 0, r.stdout
    else:
        assert line == f"✗ git clone at {project.clone}: origin is someone/tac-coordinator, not [github] repo acme/widgets"
        assert r.returncode == 1 and "fix: point [repo] path at a clone of acme/widgets" in r.stdout


def test_check_says_a_refused_login_once_with_its_fix(project, github):
    github.set_tokens("a-token-the-daemon-does-not-have")
    r = project.run("--check")
    assert r.returncode == 1
    assert "✗ gh not authenticated\n    fix: gh auth login\n" in r.stdout
    assert "repo acme/widgets" not in r.stdout  # nothing more is asked of a login GitHub refuses


@pytest.mark.parametrize("error, fix", [
    ("Invalid API key · Please run /login", "claude /login"),
    ("connect ENOTFOUND api.anthropic.com", "check this machine's network"),
])
def test_check_gives_the_fix_for_workers_that_die_at_start(project, github, error, fix):
    """The running daemon's breaker is open (metrics.json): --check names
    the likely cause and its fix."""
    project.script({"default": {"crash": True, "stderr": error}})
    project.write_config(workers={"breaker_threshold": 1, "startup_backoff": [600]})
    project.issue("Never starts")
    project.start()
    project.wait_for(lambda: (project.dir / "metrics.json").exists() and json.loads(
        (project.dir / "metrics.json").read_text()).get("breaker", {}).get("state") == "open", message="breaker open")
    r = project.run("--check")
    assert r.returncode == 1
    line = next(l for l in r.stdout.splitlines() if "workers fail at start" in l)
    assert line.startswith("✗ workers fail at start: ") and error in line
    assert fix in r.stdout.split(line + "\n", 1)[1].splitlines()[0]


def test_check_names_a_missing_worker_command(project, github):
    project.write_config(command=["no-such-claude", "-p"])
    r = project.run("--check")
    assert r.returncode == 1
    assert "✗ worker command not found: no-such-claude" in r.stdout


NO_COMMITS = {"message": "Validation Failed", "errors": [
    {"resource": "PullRequest", "code": "custom", "message": "No commits between main and auto/gh-1"}]}


def test_a_pr_github_refuses_ends_blocked_at_once_and_is_not_retried(project, github):
    """A 422 other than "already exists" (here "No commits between") will
    not change on its own: the task ends Blocked with GitHub's reason after
    one POST, not one every backoff step, and the daemon goes on."""
    github.answer_raw(r"/repos/acme/widgets/pulls", NO_COMMITS, 422, method="POST")
    n = project.issue("GitHub will refuse its PR")
    project.start()
    project.wait_for(lambda: project.state(n) == tasks.BLOCKED, message="blocked")
    assert project.task(n).reason == "GitHub refused the pull request: No commits between main and auto/gh-1"
    assert (project.dir / "trees" / f"gh-{n}").exists()  # kept for a person to look at
    project.wait_for(lambda: "tac:blocked" in github.issue_labels(n), message="tac:blocked label")
    assert "No commits between" in github.comments(n)[0]["body"]
    github.answer_raw(r"/repos/acme/widgets/pulls", None, method="POST")
    m = project.issue("Next one")
    project.wait_for(lambda: project.state(m) == tasks.COMPLETED, message="second issue completed")
    refused = [r for r in github.requests if r.method == "POST" and r.path.endswith("/pulls") and r.status == 422]
    assert len(refused) == 1


# -- what the polling costs: ETags and a low rate limit -------------------------------------

ISSUES = "/repos/acme/widgets/issues"


def list_polls(github, since=0):
    """The daemon's polls (GET of the issue list) the fake has answered, after the first `since` requests."""
    return [r for r in github.requests[since:] if r.method == "GET" and r.path == ISSUES]


def test_an_unchanged_poll_sends_the_etag_and_is_a_free_304(project, github):
    """The running daemon polls with If-None-Match: while nothing changed,
    GitHub (the fake answers only a matching ETag so) says 304, which does
    not count against the rate limit; a change is read at the next poll."""
    n = project.issue("Wait in the queue")
    (project.dir / "PAUSE").write_text("held by the test\n")  # queued, never started
    project.write_config(github={"poll_interval": 0.5})
    project.start()
    project.wait_for(lambda: project.task(n), message="the first poll queued it")
    mark, counted = len(github.requests), github.counted_requests()
    project.wait_for(lambda: len(list_polls(github, mark)) >= 3, timeout=15, message="three more polls")
    polls = list_polls(github, mark)
    assert [(r.status, r.counted) for r in polls] == [(304, False)] * len(polls)
    assert github.counted_requests() == counted  # nothing else the polls did was counted either
    # The ETag is the list's: a change is a 200 at the next poll, then 304s again.
    github.edit_issue(n, title="Renamed")
    mark = len(github.requests)
    project.wait_for(lambda: len(list_polls(github, mark)) >= 2, timeout=15, message="two polls after the edit")
    assert [r.status for r in list_polls(github, mark)][:2] == [200, 304]


def poll_gaps(github, count, timeout=10.0):
    """Seconds between the next `count` + 1 polls, as seen from here (each
    noticed within 0.05 s of its answer)."""
    seen, times = len(list_polls(github)), []
    deadline = time.time() + timeout
    while len(times) <= count and time.time() < deadline:
        now = len(list_polls(github))
        if now > seen:
            times.append(time.time())
            seen = now
        time.sleep(0.05)
    assert len(times) == count + 1, f"{len(times)} polls in {timeout} s"
    return [b - a for a, b in zip(times, times[1:])]


def test_a_low_rate_limit_slows_the_polling_4x_and_the_status_line_says_so(project, github):
    """Below 200 requests left the daemon polls 4x less often until the
    limit recovers, and tasks.md's status line says so."""
    github.set_rate_limit(150)
    project.write_config(github={"poll_interval": 0.4})
    project.start()
    project.wait_for(lambda: "rate limit" in project.tasks().status if (project.dir / "tasks.md").exists() else False,
                     timeout=10, message="the status line")
    slowed = poll_gaps(github, 2)
    assert min(slowed) >= 1.3, slowed  # 1.6 s, not the 0.4 s of a normal poll
    status = project.tasks().status
    assert status.startswith("running · github: rate limit nearly spent, polling every 1.6s until "), status
    # The limit recovers (a new hour): the status line says nothing more, and
    # the polls come faster again than they did (relative: load slows both).
    github.set_rate_limit(5000)
    project.wait_for(lambda: "rate limit" not in project.tasks().status, timeout=10, message="the status line cleared")
    normal = poll_gaps(github, 2)
    assert max(normal) < min(slowed) * 0.75, (normal, slowed)
