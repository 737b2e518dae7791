"""Throughput (issue #13): the loop never waits on one slow thing, the
intake costs requests in proportion to events, not issues, and a plain task
costs the requests it must. Correctness only: the figures (how fast, how
few) are measured in bench/run.py, never timed here."""
from __future__ import annotations

import collections
import json
import re
import subprocess
import signal
import sys
import time
from pathlib import Path

import pytest

from harness import trace_runs
from adws import tasks

LIST = r"^/repos/acme/widgets/issues$"


def exit_time(project, n: int) -> float:
    (run,) = trace_runs(project.dir / "trace.txt")[n].values()
    return run[1]


def test_a_workers_exit_is_recorded_while_a_poll_hangs(project, github):
    """GitHub answers the issue list only after 20 s: the worker that ends
    meanwhile is finished (pushed, its PR opened) and recorded in tasks.md
    long before the poll comes back."""
    n = project.issue("Ends while GitHub hangs on the list")
    project.script({"default": {"commit": "fix.txt", "sleep": 3}})
    project.write_config(github={"poll_interval": 0.5})
    p = project.start()
    project.wait_for(lambda: (project.task(n) or tasks.Task(0, "")).pid, message="running")
    github.delay(LIST, 20)
    hung_at = time.time()
    try:
        project.wait_for(lambda: project.state(n) == tasks.COMPLETED, timeout=15,
                         message="completed while the poll hangs")
        recorded = time.time()
        assert recorded - hung_at < 18, "recorded before the hanging poll could have returned"
        assert project.task(n).pr
        # A stop does not wait for the hanging poll: a short grace, then out.
        stopped_at = time.time()
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0 and time.time() - stopped_at < 10 and time.time() - hung_at < 18
        assert "stopped with 1 job(s) still waiting on git or GitHub: not waited for" in project.log_text()
    finally:
        github.delay(LIST, 0)
    print(f"\nexit -> Completed {recorded - exit_time(project, n):.2f} s while a poll hung")


def slow_fetch(clone: Path, origin: Path, seconds: int) -> None:
    """Fetching from origin takes `seconds` (pushing does not): git's ext::
    transport runs upload-pack after a sleep."""
    subprocess.run(["git", "config", "protocol.ext.allow", "always"], cwd=clone, check=True)
    subprocess.run(["git", "remote", "set-url", "origin",
                    f"ext::sh -c sleep% {seconds};exec% %s% {origin}"], cwd=clone, check=True)
    subprocess.run(["git", "remote", "set-url", "--push", "origin", str(origin)], cwd=clone, check=True)


def test_a_workers_exit_is_recorded_while_a_start_fetches_slowly(project, github, clone, git_origin):
    """Starting the second issue fetches from a remote that takes 20 s; the
    first issue's worker ends meanwhile and is recorded at once."""
    first = project.issue("Already running")
    project.script({"default": {"commit": "fix.txt", "sleep": 4}})
    project.write_config(github={"poll_interval": 0.5})
    project.start()
    project.wait_for(lambda: (project.task(first) or tasks.Task(0, "")).pid, message="first running")
    slow_fetch(clone, git_origin, 20)
    second = project.issue("Starts from a slow remote")
    project.wait_for(lambda: project.state(second) == tasks.ACTIVE, timeout=10, message="second starting")
    t0 = time.time()
    project.wait_for(lambda: project.state(first) == tasks.COMPLETED, timeout=15,
                     message="first completed while the second fetches")
    assert time.time() - t0 < 15
    t = project.task(second)
    assert t.state == tasks.ACTIVE and t.pid is None, "the second is still fetching"
    print(f"\nexit -> Completed {time.time() - exit_time(project, first):.2f} s during a 20 s fetch")


def test_an_intake_of_1000_issues_queues_each_once_from_the_events_feed(project, github):
    """Who applied the label comes from the repository-wide events feed, a
    hundred events a page: no per-issue events call for what the feed
    covered, and only trusted labellers' issues are queued."""
    github.set_permission("mallory", "read")
    trusted = [project.issue(f"Bulk {i}") for i in range(990)]
    untrusted = [project.issue(f"Not trusted {i}", labeller="mallory") for i in range(10)]
    project.write_config(workers={"max_concurrent": 1})
    (project.dir / "PAUSE").write_text("")  # queue only
    github.reset_requests()
    r = project.run("--once", timeout=120)
    assert r.returncode == 0, r.stderr
    doc = project.tasks()
    queued = [t.issue for t in doc.in_state(tasks.PENDING)]
    assert sorted(queued) == sorted(trusted) and len(set(queued)) == len(queued)
    assert not set(untrusted) & set(queued)
    paths = [r.path for r in github.requests]
    per_issue = [p for p in paths if re.fullmatch(r"/repos/acme/widgets/issues/\d+/events", p)]
    feed = [p for p in paths if p.startswith("/repos/acme/widgets/issues/events")
            or p.startswith("/repositories/") and "/issues/events" in p]
    print(f"\n1,000 issues: {len(paths)} requests ({len(feed)} feed pages, {len(per_issue)} per-issue)")
    assert per_issue == []
    # The floor: ten pages of the list and ten of the feed (100 each), one trust check per labeller.
    lists = [p for p in paths if p == "/repos/acme/widgets/issues" or "/issues?" in p
             or re.fullmatch(r"/repositories/\d+/issues", p)]
    perms = [p for p in paths if p.endswith("/permission")]
    assert len(lists) == 10 and len(feed) <= 11 and sorted(perms) == [
        "/repos/acme/widgets/collaborators/alice/permission", "/repos/acme/widgets/collaborators/mallory/permission"]
    assert len(paths) == len(lists) + len(feed) + len(perms), paths


# What one plain task costs: a run with commits, no progress edits.
PLAIN_TASK = collections.Counter({
    # Trust: the labeller's permission, kept for 10 minutes (shared by every issue they label).
    ("GET", "/repos/acme/widgets/collaborators/alice/permission"): 1,
    ("POST", "/repos/acme/widgets/issues/1/comments"): 1,    # "started"
    ("POST", "/repos/acme/widgets/pulls"): 1,                # the pull request
    ("PATCH", "/repos/acme/widgets/issues/comments/C"): 1,   # the same comment: "done"
    ("DELETE", "/repos/acme/widgets/issues/1/labels/rpi-auto"): 1,
    ("POST", "/repos/acme/widgets/issues/1/labels"): 1,      # tac:done
    # The PR is watched for reviews ([followup], on by default): the PR list
    # once (a free 304 after that); the new PR's threads are not read while
    # the PR is as it was opened.
    ("GET", "/repos/acme/widgets/pulls"): 1,
})


def test_a_plain_task_costs_exactly_its_writes(project, github):
    """Beside the polls of the list and the events feed (304s while nothing
    changes), a task costs the five writes that tell the issue and open its
    PR, the trust check of whoever labelled it, and one read of the PR list
    when the watch of its PR begins: nothing looked up that
    the daemon already knows (its PR, its comment, its labels, that
    nobody has reviewed the PR it has just opened)."""
    project.write_config(github={"poll_interval": 0.5, "progress_every": 0})
    n = project.issue("Plain")
    assert n == 1
    project.start()
    project.wait_for(lambda: "tac:done" in github.issue_labels(n), message="told")
    time.sleep(1.5)  # the polls after it settle
    counted = collections.Counter(
        (r.method, re.sub(r"/comments/\d+$", "/comments/C", r.path)) for r in github.requests
        if r.counted and r.path not in ("/repos/acme/widgets/issues", "/repos/acme/widgets/issues/events"))
    assert counted == PLAIN_TASK, counted
