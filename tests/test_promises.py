"""README promises that once had no test able to notice them break.

Each test here fails when its promise is broken (tests/mutations.py names
the breakage) and looks where a user would: tasks.md, tasks-archive.md, the
order workers ran in, the log, the issue.
"""
from __future__ import annotations

import dataclasses
import signal
import time

from harness import Project, trace_runs
from adws import coordinator as co
from adws import tasks
from adws.github import GitHubError


def runs(project: Project):
    return trace_runs(project.dir / "trace.txt")


# ---------------------------------------------------------------------------
# The archive follows the calendar, not the start-up
# ---------------------------------------------------------------------------

class OfflineGitHub:
    """GitHub that cannot be reached: the tick still archives and publishes."""
    rate_remaining = None
    rate_reset = None

    def labelled_issues(self, label: str):
        raise GitHubError(0, "offline in this test")

    def pull_heads(self):
        raise GitHubError(0, "offline in this test")


def test_completed_entries_are_archived_when_the_day_changes(tmp_path):
    """A daemon that runs for weeks moves yesterday's Completed entries to
    tasks-archive.md at the first tick of the new day, not only at start-up."""
    cfg_path = tmp_path / "config.toml"
    cfg_path.write_text('[github]\nrepo = "acme/widgets"\n')
    cfg = dataclasses.replace(co.load_config(cfg_path), tasks_path=tmp_path / "tasks.md",
                              logs=tmp_path / "logs", trees=tmp_path / "trees", repo_path=tmp_path)
    evening = time.mktime((2026, 3, 9, 23, 58, 0, 0, 0, -1))
    (tmp_path / "tasks.md").write_text(
        "## Completed Today\n"
        f"[✅ abc1234, w-111111] gh-70: Done this evening {{p2}}\n- Completed: {tasks.format_time(evening - 600)}\n"
        "- PR: https://x/pull/71\n")
    now = [evening]
    c = co.Coordinator(cfg, OfflineGitHub(), clock=lambda: now[0], environ={})
    c.recover(now[0])  # as main() does at start-up
    for _ in range(3):  # the evening's ticks: nothing is old yet
        now[0] += 30
        c.tick(now[0])
    assert [t.issue for t in tasks.load(cfg.tasks_path)[0].in_state(tasks.COMPLETED)] == [70]
    assert not cfg.archive_path.exists()
    now[0] = evening + 180  # 00:01 the next day
    c.tick(now[0])
    assert tasks.load(cfg.tasks_path)[0].in_state(tasks.COMPLETED) == []
    archive = cfg.archive_path.read_text()
    assert "gh-70: Done this evening" in archive and "https://x/pull/71" in archive


# ---------------------------------------------------------------------------
# Scheduling: priorities, the breaker
# ---------------------------------------------------------------------------

def test_priority_labels_order_the_queue(project, github):
    """priority:P0 ... priority:P3 labels set {pN} in tasks.md (P2 without
    one), and with one slot the workers run in that order."""
    project.write_config(workers={"max_concurrent": 1})
    order = {}
    for label, title in (("priority:P3", "Someday"), (None, "Normal"), ("priority:P0", "Now"),
                         ("priority:p1", "Soon")):
        labels = ["rpi-auto"] + ([label] if label else [])
        order[title] = github.add_issue(title, labels=labels, labeller="alice")
    (project.dir / "PAUSE").write_text("")
    assert project.run("--once").returncode == 0
    queued = {t.title: t.priority for t in project.tasks().in_state(tasks.PENDING)}
    assert queued == {"Someday": 3, "Normal": 2, "Now": 0, "Soon": 1}
    assert "[] gh-%d: Now {p0}" % order["Now"] in (project.dir / "tasks.md").read_text()
    (project.dir / "PAUSE").unlink()
    project.start()
    project.wait_for(lambda: all(project.state(n) == tasks.COMPLETED for n in order.values()), timeout=40,
                     message="all four completed")
    started = sorted((start, issue) for issue, by_pid in runs(project).items() for start, _ in by_pid.values())
    assert [issue for _, issue in started] == [order[t] for t in ("Now", "Soon", "Normal", "Someday")]


def test_a_good_run_resets_the_startup_error_breaker(project, github):
    """breaker_threshold counts startup errors *in a row*: two, then a run
    that got going, then two more must not pause spawning."""
    project.write_config(workers={"max_concurrent": 1, "breaker_threshold": 3, "startup_backoff": [300]})
    issues = [project.issue(f"Task {i}") for i in range(5)]
    crash = {"crash": True, "stderr": "claude: not logged in"}
    project.script({str(n): ({"commit": "x.txt"} if i == 2 else crash) for i, n in enumerate(issues)})
    project.start()
    last = issues[-1]
    project.wait_for(lambda: project.task(last) and project.task(last).startup_errors == 1, timeout=40,
                     message="the fifth issue tried too")
    assert project.state(issues[2]) == tasks.COMPLETED
    for n in issues[:2] + issues[3:]:
        t = project.task(n)
        assert (t.state, t.startup_errors, t.reason) == (tasks.PENDING, 1, "startup error: claude: not logged in")
    log = project.log_text()
    assert "startup errors in a row" not in log and "spawning paused" not in (project.dir / "tasks.md").read_text()


# ---------------------------------------------------------------------------
# SIGHUP reloads the config of a running daemon
# ---------------------------------------------------------------------------

def test_sighup_applies_max_concurrent_and_other_keys_to_a_running_daemon(project, github):
    """`kill -HUP` with max_concurrent raised from 1 to 3 lets two more
    workers start beside the running one; a new timeout applies to the
    workers already running."""
    project.write_config(workers={"max_concurrent": 1, "max_attempts": 1, "timeout": 120})
    project.script({"default": {"turns": 1, "sleep": 60}})
    issues = [project.issue(f"Slow {i}") for i in range(3)]
    p = project.start()
    project.wait_for(lambda: len(project.tasks().in_state(tasks.ACTIVE)) == 1, message="one worker")
    time.sleep(1.5)  # a tick or two: still one, as configured
    assert len(project.tasks().in_state(tasks.ACTIVE)) == 1
    project.write_config(workers={"max_concurrent": 3, "max_attempts": 1, "timeout": 6})
    p.send_signal(signal.SIGHUP)
    project.wait_for(lambda: "config reloaded from" in project.log_text(), message="reloaded")
    project.wait_for(lambda: len(runs(project)) == 3, timeout=10, message="three workers after SIGHUP")
    spans = [span for by_pid in runs(project).values() for span in by_pid.values()]
    at_once = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert at_once == 3, spans  # side by side, not one after another
    for n in issues:
        project.wait_for(lambda: project.state(n) == tasks.FAILED, timeout=20, message=f"gh-{n} timed out")
        assert project.task(n).reason == "worker exited without commits (timed out after 6 s)"
    assert p.poll() is None
