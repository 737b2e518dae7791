"""The status issue wired into the daemon (issue #18), end to end.

The real coordinator process (tests/harness.py), the real `gh` against the
fake GitHub, real git and the scripted worker. A person's part is played
through the fake's editing API: `github.edit_issue(n, body=..., actor=)`
is an edit in the web page, and ticking a box is such an edit. The unit
tests of adws/status_issue.py (tests/test_status_issue.py) cover the
issue's own rules; these prove the daemon obeys them, and carries the
orders out as a person at the Pi would.
"""
from __future__ import annotations

import json
import time
from typing import List, Optional

from adws import tasks
from adws import coordinator as co
from adws.github import GitHub
from adws.steering import steady
from adws.status_issue import is_status_issue
from harness import trace_runs

ISSUES = "/repos/acme/widgets/issues"


def turn_on(project, workers=None, **github) -> None:
    # Polls every 0.5 s: the status issue is read and edited once per poll, so the waits are counted in polls.
    project.write_config(workers=workers, github=dict({"status_issue": True, "notify": ["alice", "bob"],
                                                       "poll_interval": 0.5}, **github))


def status_number(github) -> Optional[int]:
    found = [i["number"] for i in all_issues(github) if is_status_issue(i)]
    assert len(found) <= 1, f"more than one status issue: {found}"
    return found[0] if found else None


def all_issues(github) -> List[dict]:
    out, n = [], 1
    while True:
        try:
            out.append(github.issue(n))
        except Exception:  # deliberate: the fake's 404 past the last number
            return out
        n += 1


def body(github, n: int) -> str:
    return github.issue(n)["body"].replace("\r\n", "\n")


def wait_body(project, github, *texts: str, timeout: float = 30) -> str:
    """The status issue's body once it holds every one of `texts`."""
    def look():
        n = status_number(github)
        b = body(github, n) if n else ""
        return b if n and all(t in b for t in texts) else None
    return project.wait_for(look, timeout=timeout, message=f"the status issue to show {texts}")


def tick(github, n: int, box: str, actor: str = "alice", on: bool = True) -> None:
    """`actor` ticks (or unticks) a box in the web page."""
    b = body(github, n)
    old, new = (f"[ ] {box}", f"[x] {box}") if on else (f"[x] {box}", f"[ ] {box}")
    assert old in b, b
    github.edit_issue(n, body=b.replace(old, new, 1).replace("\n", "\r\n"), actor=actor)


def status_writes(github, n: int) -> List[str]:
    return [f"{r.method} {r.path}" for r in github.requests
            if r.method != "GET" and r.path.startswith(f"{ISSUES}/{n}")]


def comments(github, n: int) -> List[str]:
    return [c["body"] for c in github.comments(n)]


def settle(project, github, n: int, polls: int = 3) -> None:
    """Wait until the daemon has read the status issue `polls` more times."""
    def reads() -> int:
        return sum(1 for r in github.requests if r.method == "GET" and r.path == f"{ISSUES}/{n}")
    start = reads()
    project.wait_for(lambda: reads() >= start + polls, timeout=30, message=f"{polls} reads of the status issue")


def quiet_tick(project, github, n: int, box: str, actor: str = "alice", on: bool = True) -> None:
    """Tick once the daemon has read the body twice more: a tick in the
    second between its read and its rewrite would be overwritten (GitHub
    has no conditional edit), as docs/SECURITY.md says."""
    settle(project, github, n, 2)
    tick(github, n, box, actor, on)


def runs(project, n: int) -> List[List[float]]:
    return sorted(trace_runs(project.dir / "trace.txt").get(n, {}).values())


FAIL = {"default": {"turns": 2, "exit": 1, "result": "error_during_execution"}}


# -- on, off, found again ---------------------------------------------------------------------

def test_off_by_default_no_request_no_file(project, github):
    n = project.issue("Add a docstring")
    project.start()
    project.wait_for(lambda: "tac:done" in github.issue_labels(n), message="gh-N done")
    polls = sum(1 for r in github.requests if r.path == ISSUES)
    project.wait_for(lambda: sum(1 for r in github.requests if r.path == ISSUES) >= polls + 3, message="3 polls")
    assert status_number(github) is None
    assert [r.path for r in github.requests if r.path in ("/user", "/graphql") or "creator" in r.query] == []
    assert not (project.dir / "status-issue.json").exists() and not (project.dir / ".tasks.md.running").exists()


def test_opened_once_found_again_after_a_restart_and_never_a_task(project, github):
    turn_on(project)
    project.start()
    wait_body(project, github, "- [ ] Pause new work")
    s = status_number(github)
    issue = github.issue(s)
    assert issue["user"]["login"] == "operator" and issue["title"] == "TAC coordinator status"
    # Someone puts the trigger label on it: the dashboard is never a task.
    github.label_issue(s, "rpi-auto", "alice")
    settle(project, github, s, 3)
    assert project.task(s) is None and runs(project, s) == []
    assert f"gh-{s} skipped: it is the status issue" in project.log_text()
    # Restarted: found by its number in status-issue.json; then, that file
    # lost and the issue retitled by a person, by its label and marker.
    github.reset_requests()
    project.stop_all()
    project.start()
    settle(project, github, s, 2)
    github.edit_issue(s, title="Pi dashboard", actor="alice")
    project.stop_all()
    (project.dir / "status-issue.json").unlink()
    project.start()
    settle(project, github, s, 2)
    assert [r for r in github.requests if r.method == "POST" and r.path == ISSUES] == []
    assert status_number(github) == s and github.issue(s)["title"] == "Pi dashboard"
    assert project.log_text().count("status-issue #%d opened" % s) == 1


def test_the_body_is_edited_only_when_its_content_changes(project, github):
    turn_on(project)
    n = project.issue("Add a docstring")
    project.start()
    project.wait_for(lambda: project.state(n) == tasks.COMPLETED, message="gh-N completed")
    wait_body(project, github, "### Completed", f"#{n} `Add a docstring`")
    s = status_number(github)
    settle(project, github, s, 3)
    # Idle: each poll reads the issue once, a free 304, and edits nothing.
    github.reset_requests()
    settle(project, github, s, 6)
    idle = github.requests
    assert [f"{r.method} {r.path}" for r in idle if r.method != "GET"] == []
    assert github.counted_requests() == 0
    reads = [r for r in idle if r.path == f"{ISSUES}/{s}"]
    polls = [r for r in idle if r.path == ISSUES and r.query.get("labels") == "rpi-auto"]
    assert {r.status for r in reads} == {304}
    assert len(reads) <= len(polls) + 1, (len(reads), len(polls))
    # A change (a person's PAUSE at the Pi, shown as a ticked box): one
    # edit, one full read of the edited issue, then free reads again.
    (project.dir / "PAUSE").write_text("maintenance\n")
    wait_body(project, github, "- [x] Pause new work", "paused by PAUSE file: maintenance")
    settle(project, github, s, 4)
    assert status_writes(github, s) == [f"PATCH {ISSUES}/{s}"]
    github.reset_requests()
    settle(project, github, s, 4)
    assert status_writes(github, s) == [] and github.counted_requests() == 0


# -- orders ---------------------------------------------------------------------------------

def test_pause_box_pauses_within_a_poll_holds_across_a_restart_and_unticking_resumes(project, github):
    """Paused, the queue takes orders too: `run gh-N next` puts it first
    ({p0}), `cancel gh-N` drops it as a removed label does."""
    turn_on(project, workers={"max_concurrent": 1})
    project.start()
    wait_body(project, github, "- [ ] Pause new work")
    s = status_number(github)
    settle(project, github, s, 2)
    before = len(github.requests)
    tick(github, s, "Pause new work")
    project.wait_for(lambda: project.tasks().status.startswith("paused"), timeout=20, message="paused")
    # Within a poll: the one that read the tick, and at most one more begun while we looked.
    polls = [r for r in github.requests[before:] if r.path == ISSUES and r.query.get("labels") == "rpi-auto"]
    assert len(polls) <= 2, len(polls)
    # As a person's pause at the Pi: the PAUSE file, which says who and where.
    assert 'paused by PAUSE file: alice ticked "Pause new work" on the status issue' in project.tasks().status
    wait_body(project, github, "- [x] Pause new work", "done: paused new work at", "(asked by alice)")
    a, b, c = project.issue("A"), project.issue("B"), project.issue("C")
    wait_body(project, github, "### Pending (3)", f"run gh-{c} next", f"cancel gh-{b}")
    # The pause is the PAUSE file, not the process's memory: it holds across a restart.
    project.stop_all()
    project.start()
    quiet_tick(project, github, s, f"run gh-{c} next")
    wait_body(project, github, f"done: moved gh-{c} to the front of the queue")
    assert project.task(c).priority == 0 and f"gh-{c}: C {{p0}}" in (project.dir / "tasks.md").read_text()
    quiet_tick(project, github, s, f"cancel gh-{b}")
    wait_body(project, github, f"done: cancelled gh-{b}", "### Pending (2)")
    assert project.task(b) is None and "rpi-auto" not in github.issue_labels(b)
    settle(project, github, s, 3)
    assert project.task(b) is None  # not queued again by the polls since
    assert trace_runs(project.dir / "trace.txt") == {} and (project.dir / "PAUSE").exists()
    quiet_tick(project, github, s, "Pause new work", on=False)
    project.wait_for(lambda: not project.tasks().status.startswith("paused"), timeout=20, message="resumed")
    project.wait_for(lambda: project.state(a) == project.state(c) == tasks.COMPLETED, timeout=40,
                     message="A and C completed")
    assert runs(project, c)[0][0] < runs(project, a)[0][0] and runs(project, b) == []
    wait_body(project, github, "- [ ] Pause new work", "done: resumed new work")


def test_retry_queues_exactly_one_new_run_also_across_a_restart_before_the_rewrite(project, github):
    turn_on(project, workers={"max_attempts": 1})
    project.script(FAIL)
    n = project.issue("Flaky")
    project.start()
    project.wait_for(lambda: "tac:failed" in github.issue_labels(n), timeout=30, message="failed and told")
    wait_body(project, github, f"- [ ] retry gh-{n}")
    s = status_number(github)
    settle(project, github, s, 2)
    # The rewrite that unticks the box will not land before the restart.
    github.answer_raw(f"{ISSUES}/{s}", {"message": "Server Error"}, status=500, method="PATCH")
    tick(github, s, f"retry gh-{n}")
    project.wait_for(lambda: len(runs(project, n)) == 2 and project.state(n) == tasks.FAILED, timeout=30,
                     message="a second run, failed again")
    assert project.task(n).earlier_runs == 1  # a new round: a new branch, as a re-applied label gives
    assert "retried on the status issue by alice" in project.log_text()
    settle(project, github, s, 2)
    assert f"- [x] retry gh-{n}" in body(github, s)  # still ticked on GitHub
    project.stop_all()
    github.answer_raw(f"{ISSUES}/{s}", None, method="PATCH")
    project.start()
    wait_body(project, github, f"- [ ] retry gh-{n}", f"done: retried gh-{n}")
    settle(project, github, s, 3)
    assert len(runs(project, n)) == 2 and project.state(n) == tasks.FAILED


def test_cancel_stops_a_running_worker_and_its_children(project, github):
    turn_on(project)
    project.script({"default": {"turns": 1, "commit": "wip.txt", "children": 2, "sleep": 600}})
    n = project.issue("Too slow")
    project.start()
    wid = project.wait_for(lambda: project.task(n) and project.task(n).pid and project.task(n).worker,
                           message="gh-N running")
    project.wait_for(lambda: len(co.processes_tagged(wid)) >= 3, message="the worker and its two children")
    wait_body(project, github, "### Active (1)", f"cancel gh-{n}")
    s = status_number(github)
    quiet_tick(project, github, s, f"cancel gh-{n}")
    project.wait_for(lambda: project.state(n) == tasks.FAILED, timeout=20, message="stopped")
    assert project.task(n).reason == co.STOP_BY_USER
    assert co.processes_tagged(wid) == []
    assert (project.dir / "trees" / f"gh-{n}" / "wip.txt").exists()  # the worktree is kept
    assert github.pulls() == []
    assert f"gh-{n} cancelled on the status issue by alice" in project.log_text()
    wait_body(project, github, f"done: cancelled gh-{n}", f"- [ ] retry gh-{n}")


def test_a_ticked_box_in_a_comment_does_nothing(project, github):
    turn_on(project, workers={"max_attempts": 1})
    project.script(FAIL)
    n = project.issue("Flaky")
    project.start()
    project.wait_for(lambda: project.state(n) == tasks.FAILED, timeout=30, message="failed")
    wait_body(project, github, f"- [ ] retry gh-{n}")
    s = status_number(github)
    GitHub("acme/widgets", env=project.env).comment(
        s, f"- [x] Pause new work\n- [x] retry gh-{n}\n- [x] cancel gh-{n}\n- [x] run gh-{n} next")
    github.reset_requests()
    settle(project, github, s, 4)
    assert not (project.dir / "PAUSE").exists()
    assert project.state(n) == tasks.FAILED and len(runs(project, n)) == 1
    assert not any(r.path == "/graphql" or r.path.endswith("/comments") and r.method == "GET"
                   for r in github.requests)
    assert "- [ ] Pause new work" in body(github, s) and "done:" not in body(github, s)


# -- alerts and outages -----------------------------------------------------------------------------

def test_an_alert_is_posted_once_per_cause_and_mentions_the_logins(project, github):
    turn_on(project)
    project.script({"default": {"blocked": "Needs a decision on the footprint library"}})
    n = project.issue("Port to kicad 9")
    project.start()
    project.wait_for(lambda: project.state(n) == tasks.BLOCKED, message="blocked")
    wait_body(project, github, "### Blocked (1)")
    s = status_number(github)
    project.wait_for(lambda: comments(github, s), message="an alert")
    settle(project, github, s, 4)
    [alert] = comments(github, s)
    assert alert.startswith("⚠️ **Needs a person**") and f"gh-{n} `Port to kicad 9` is Blocked" in alert
    assert "Needs a decision on the footprint library" in alert and "cc @alice @bob" in alert
    # A clean stop and start says nothing (first: a crash alert would hold back the next).
    project.stop_all()
    project.start()
    settle(project, github, s, 3)
    assert len(comments(github, s)) == 1
    # Killed twice (a crash loop) and restarted: one alert for the cause.
    for _ in range(2):
        project.procs[-1].kill()
        project.procs[-1].wait()
        project.start()
        settle(project, github, s, 3)
    crashes = [c for c in comments(github, s) if "restarted" in c]
    assert len(crashes) == 1 and "without a clean stop" in crashes[0] and "cc @alice @bob" in crashes[0]
    assert len(comments(github, s)) == 2


def test_github_down_for_a_while_then_edits_and_alerts_are_delivered_once_each(project, github):
    turn_on(project)
    project.script({"default": {"turns": 1, "sleep": 6, "blocked": "Needs a decision"}})
    n = project.issue("Port to kicad 9")
    project.start()
    wait_body(project, github, "### Active (1)", f"#{n}")
    s = status_number(github)
    github.set_outage(503)
    project.wait_for(lambda: project.state(n) == tasks.BLOCKED, timeout=40, message="blocked while GitHub is down")

    def causes() -> dict:
        path = project.dir / "status-issue.json"
        return json.loads(path.read_text())["alerts"] if path.exists() else {}
    project.wait_for(lambda: f"blocked:gh-{n}" in causes(), timeout=40,
                     message="a status step with gh-N Blocked while GitHub is down")
    # Restarted while GitHub is still down: what is owed is kept.
    project.stop_all()
    project.start()
    time.sleep(2)
    assert comments(github, s) == [] and "### Blocked" not in body(github, s)
    github.reset_requests()
    github.set_outage(None)
    wait_body(project, github, "### Blocked (1)", "`Needs a decision`", timeout=60)
    project.wait_for(lambda: comments(github, s), message="the alert delivered")
    settle(project, github, s, 4)
    [alert] = comments(github, s)
    assert f"gh-{n} `Port to kicad 9` is Blocked" in alert and "cc @alice @bob" in alert
    edits = status_writes(github, s).count(f"PATCH {ISSUES}/{s}")
    assert 1 <= edits <= 2, status_writes(github, s)
    github.reset_requests()
    settle(project, github, s, 4)
    assert status_writes(github, s) == [] and len(comments(github, s)) == 1


# -- the loop's own causes, and nothing that ticks -----------------------------------------------

def test_the_loops_own_alert_causes_and_a_snapshot_that_does_not_tick(project, github):
    """In process, on a fake clock: the startup breaker open longer than
    startup_backoff[0], GitHub unreachable for an hour; and while GitHub is
    down the snapshot stays the same from one poll to the next (health
    reasons that count minutes would edit the issue at every poll)."""
    turn_on(project, workers={"startup_backoff": [60, 120]})
    cfg = co.load_config(project.config)
    t = [1000.0]
    c = co.Coordinator(cfg, GitHub(cfg.repo, env=project.env), clock=lambda: t[0], wall=lambda: t[0] + 1.78e9)
    s = c.steering
    assert s.causes(1000.0) == {}
    c.gates.startup.open_now("API unreachable: 6 retries (connection refused)", 1000.0)
    assert s.causes(1030.0) == {}
    assert s.causes(1091.0)["breaker"].startswith(
        f"no worker could start since {time.strftime('%H:%M', time.localtime(1030.0 + 1.78e9))}: spawning paused")
    c.gates.startup.got_going(7, 1100.0)
    assert s.causes(1100.0) == {}
    c.github_failed(2000.0, co.GitHubError(503, "Service Unavailable"))
    snaps = []
    for now in (2700.0, 3500.0, 5599.0):  # polls that fail, GitHub down for 12 min to an hour
        t[0] = c.last_poll_at = now
        c.write_metrics(now, {x: 0 for x in tasks.SECTIONS}, "")
        snaps.append(c.steering.snapshot(now))
    assert snaps[0] == snaps[1] == snaps[2]
    assert (snaps[0].health, snaps[0].health_reason) == ("degraded",
                                                         "GitHub unreachable: HTTP 503: Service Unavailable")
    assert s.causes(5600.0)["github"] == ("GitHub unreachable since "
                                          f"{time.strftime('%H:%M', time.localtime(2000.0 + 1.78e9))}"
                                          ": HTTP 503: Service Unavailable")
    assert steady("disk nearly full: 812 MB free for /srv, below min_free_disk_mb 2048") == \
        "disk nearly full: little space free for /srv, below min_free_disk_mb 2048"
    assert steady("GitHub rate limit reached, resets in 1 h 5 min; no poll of GitHub for 12 min") == \
        "GitHub rate limit reached; no poll of GitHub"


def test_a_workflow_shows_its_stage_and_a_retry_keeps_its_workflow(project, github):
    """In process: an Active task of a workflow shows its stage on the
    status issue ("build (2 of 3)", as tasks.md says it), and a retry
    ordered there queues it with its workflow, from its first stage, not
    with the default one."""
    turn_on(project)
    (project.dir / "tasks.md").write_text(
        "# Tasks\n\n## Active\n\n[ ] gh-7: Plan it first\n- Workflow: plan-build-review\n- Stage: build (2 of 3)\n"
        "- Stage plan: completed in 2 min, $0.10\n\n"
        "## Failed\n\n[ ] gh-8: Failed at its review\n- Workflow: plan-build-review\n"
        "- Stage plan: completed in 2 min, $0.10\n- Stage build: completed in 5 min, $0.50\n"
        "- Stage review: failed in 1 min, $0.05\n- Reason: exit status 1\n", encoding="utf-8")
    cfg = co.load_config(project.config)
    c = co.Coordinator(cfg, GitHub(cfg.repo, env=project.env))
    doc = project.tasks()
    assert str(doc.governing(7).stage) == "build (2 of 3)" and doc.governing(8).workflow == "plan-build-review"
    active, = c.steering.snapshot(c.clock()).active
    assert (active.issue, active.stage) == (7, "build (2 of 3)")
    assert c.steering.requeue(8, "alice", {"number": 8, "title": "Failed at its review", "state": "open"}) == (True, "")
    again = project.tasks().governing(8)
    assert (again.state, again.workflow, again.stage_runs) == (tasks.PENDING, "plan-build-review", [])
