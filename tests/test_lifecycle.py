"""Task lifecycle details users rely on: re-runs, the archive, repairs,
budgets and the issue's status comment. Real daemon, real gh, real git."""
from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

import sys

from harness import ROOT
from adws import tasks
from adws.coordinator import worker_cap


def test_relabelling_a_completed_issue_runs_it_again_on_a_new_branch(project, github):
    n = project.issue("Do it")
    project.start()
    project.wait_for(lambda: "tac:done" in github.issue_labels(n), message="first run done")
    first_pr = project.task(n).pr
    time.sleep(1.1)  # GitHub timestamps are whole seconds: the new label must be later
    github.label_issue(n, "rpi-auto", "alice")
    project.wait_for(lambda: len(github.pulls()) == 2, timeout=40, message="a second PR")
    heads = sorted(p["head"]["ref"] for p in github.pulls())
    assert heads == [f"auto/gh-{n}", f"auto/gh-{n}-2"]
    project.wait_for(lambda: project.task(n).pr and project.task(n).pr != first_pr, message="new PR recorded")
    assert project.state(n) == tasks.COMPLETED


def test_a_run_after_tasks_md_was_lost_never_resets_a_branch_with_commits(project, github, git_origin):
    """tasks.md counts an issue's runs; when the file is lost the count
    starts again at 1, and the first run's branch (with its open PR) must
    not be reset to the base and force-pushed."""
    n = project.issue("Do it")
    project.start()
    project.wait_for(lambda: "tac:done" in github.issue_labels(n), message="first run done")
    first = subprocess.run(["git", "--git-dir", str(git_origin), "rev-parse", f"auto/gh-{n}"],
                           capture_output=True, text=True, check=True).stdout.strip()
    project.stop_all()
    (project.dir / "tasks.md").unlink()
    time.sleep(1.1)  # GitHub timestamps are whole seconds: the new label must be later
    github.label_issue(n, "rpi-auto", "alice")
    project.start()
    project.wait_for(lambda: len(github.pulls()) == 2, timeout=40, message="a second PR")
    assert sorted(p["head"]["ref"] for p in github.pulls()) == [f"auto/gh-{n}", f"auto/gh-{n}-2"]
    kept = subprocess.run(["git", "--git-dir", str(git_origin), "rev-parse", f"auto/gh-{n}"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert kept == first, "the first PR's branch keeps its commit"


def test_label_left_on_an_ended_task_is_removed_not_rerun(project, github):
    """A person moved an entry to Failed by hand: the coordinator swaps the
    label instead of starting the issue again."""
    n = project.issue("Cancelled by hand")
    (project.dir / "tasks.md").write_text(f"## Failed\n[❌ w-abc123] gh-{n}: Cancelled by hand {{p2}}\n- Reason: not wanted\n")
    for _ in range(2):
        assert project.run("--once").returncode == 0
    assert project.state(n) == tasks.FAILED
    assert "rpi-auto" not in github.issue_labels(n) and "tac:failed" in github.issue_labels(n)
    assert not (project.dir / "logs" / f"gh-{n}.jsonl").exists()  # never started
    assert len(github.comments(n)) == 1


def test_completed_entries_from_earlier_days_move_to_the_archive(project, github):
    (project.dir / "tasks.md").write_text(
        "## Completed Today\n"
        "[✅ abc1234, w-111111] gh-70: Yesterday's work {p2}\n- Completed: 2020-01-01 10:00:00\n- PR: https://x/pull/71\n"
        "[✅ def5678, w-222222] gh-72: Today's work {p2}\n"
        f"- Completed: {tasks.format_time(time.time())}\n- PR: https://x/pull/73\n")
    assert project.run("--once").returncode == 0
    doc = project.tasks()
    assert [t.issue for t in doc.in_state(tasks.COMPLETED)] == [72]
    archive = (project.dir / "tasks-archive.md").read_text()
    assert "gh-70: Yesterday's work" in archive and "https://x/pull/71" in archive
    assert "gh-72" not in archive
    assert project.run("--once").returncode == 0  # idempotent
    assert (project.dir / "tasks-archive.md").read_text().count("gh-70") == 1


def test_stale_worktree_is_repaired_not_a_reason_to_fail(project, github):
    n = project.issue("Stale tree")
    stale = project.dir / "trees" / f"gh-{n}"
    stale.mkdir(parents=True)
    (stale / "junk.txt").write_text("left from an earlier run")
    project.start()
    project.wait_for(lambda: project.state(n) == tasks.COMPLETED, message="completed")
    assert f"gh-{n} worktree repaired" in project.log_text()
    metrics = json.loads((project.dir / "metrics.json").read_text())
    assert metrics["counters"]["worktree_repairs"] >= 1


def test_daily_budget_stops_spawning_and_says_why(project, github):
    logs = project.dir / "logs"
    logs.mkdir()
    today = time.strftime("%Y-%m-%d")
    (logs / "usage.jsonl").write_text(json.dumps({"ts": "x", "date": today, "issue": 1, "cost_usd": 5.25}) + "\n")
    project.write_config(budget={"daily_usd": 5.0})
    n = project.issue("Costs money")
    r = project.run("--once")
    assert r.returncode == 0
    assert project.state(n) == tasks.PENDING
    assert not (logs / f"gh-{n}.jsonl").exists()
    assert "daily budget reached: $5.25 of $5.00 today" in r.stderr
    status = json.loads(subprocess.run([sys.executable, str(ROOT / "tools" / "status.py"), "--config",
                                        str(project.config), "--json"], capture_output=True, text=True).stdout)
    assert "daily budget reached" in json.dumps(status)
    # Raising the budget lets it start.
    project.write_config(budget={"daily_usd": 50.0})
    assert project.run("--once").returncode == 0
    assert project.state(n) in (tasks.ACTIVE, tasks.COMPLETED)


def worker_argv(project, n):
    """The arguments issue n's scripted worker was started with ($TAC_ARGV_COPY)."""
    path = project.dir / f"argv-{n}.json"
    return json.loads(path.read_text()) if path.exists() else None


def test_per_run_budget_stops_the_run_and_is_passed_to_the_cli(project, github):
    project.env["TAC_ARGV_COPY"] = str(project.dir / "argv-{issue}.json")
    n = project.issue("Expensive")
    # Each turn reports 1M output tokens (~$15 at Sonnet prices).
    project.script({"default": {"turns": 5, "output_tokens": 1000000, "turn_delay": 1, "sleep": 30}})
    project.write_config(budget={"per_run_usd": 10}, workers={"max_attempts": 1})
    project.start()
    project.wait_for(lambda: project.state(n) == tasks.FAILED, timeout=40, message="stopped over budget")
    t = project.task(n)
    assert t.reason.startswith("worker exited without commits (run cost $") and "over per_run_usd $10.00" in t.reason
    project.wait_for(lambda: project.worker_pids() == [], timeout=10, message="worker gone")
    # The coordinator stopped it (the CLI's own --max-budget-usd is the other half).
    assert re.search(rf"gh-{n} stopping pid=\d+: run cost \$\d+\.\d\d over per_run_usd \$10\.00", project.log_text())
    argv = worker_argv(project, n)
    assert argv is not None, "the worker never recorded its argv"
    assert argv[argv.index("--max-budget-usd") + 1] == "10"
    # Stopped at the first turn over budget, long before its five turns and 30 s sleep.
    log = (project.dir / "logs" / f"gh-{n}.jsonl").read_text()
    assert log.count('"subtype": "attempt"') == 1
    assert log.count('"type": "assistant"') < 5


def test_per_run_budget_reaches_the_worker_argv(project, github):
    n = project.issue("Watch argv")
    project.script({"default": {"sleep": 20}})
    project.write_config(budget={"per_run_usd": 2.5}, workers={"max_turns": 7})
    project.start()
    pid = project.wait_for(lambda: project.task(n) and project.task(n).pid, message="pid")
    argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    assert b"--max-budget-usd" in argv and argv[argv.index(b"--max-budget-usd") + 1] == b"2.5"
    assert argv[argv.index(b"--max-turns") + 1] == b"7"


def transcript_events(project, n, kind):
    path = project.dir / "logs" / f"gh-{n}.jsonl"
    return [e for e in map(json.loads, path.read_text().splitlines()) if e.get("type") == kind]


def test_a_run_the_cli_ends_at_its_budget_fails_with_the_clis_reason(project, github):
    """The other half of per_run_usd: the CLI's own --max-budget-usd. The
    worker (which honours the flag as the real CLI does) ends the run with
    a result `error_max_budget_usd` and exit status 1 before its tools run
    or it commits; the daemon takes that as a failed run, retries it, and
    says why in tasks.md and on the issue."""
    n = project.issue("Expensive")
    # $0.40 over 4 turns: the first turn's $0.10 reaches --max-budget-usd 0.1
    # (the CLI stops at cost >= budget), while the coordinator's own check
    # (cost > per_run_usd) does not fire: the CLI's limit is what ends it.
    project.script({"default": {"turns": 4, "cost": 0.4, "commit": "fix.txt"}})
    project.write_config(budget={"per_run_usd": 0.1}, workers={"max_attempts": 2})
    project.start()
    project.wait_for(lambda: project.state(n) in tasks.TERMINAL, timeout=40, message="the task ended")
    assert project.state(n) == tasks.FAILED
    why = "worker exited without commits (exit status 1, result error_max_budget_usd)"
    assert project.task(n).reason == why + " (attempt 2 of 2)"
    project.wait_for(lambda: "tac:failed" in github.issue_labels(n), message="the issue told")
    (comment,) = github.comments(n)
    assert comment["body"].startswith(f"❌ Failed: {why} (attempt 2 of 2)")
    assert f"gh-{n} failed: {why}; retry at" in project.log_text()  # the first run: retried
    # Both runs were ended by the CLI, not stopped by the coordinator.
    assert "stopping pid=" not in project.log_text()
    results = transcript_events(project, n, "result")
    assert [(r["subtype"], r["is_error"], r["total_cost_usd"], r["num_turns"]) for r in results] \
        == [("error_max_budget_usd", True, 0.1, 1)] * 2
    assert results[0]["errors"] == ["Reached maximum budget ($0.1)"]
    assert transcript_events(project, n, "user") == []  # the turn's tool never ran
    ledger = [json.loads(ln) for ln in (project.dir / "logs" / "usage.jsonl").read_text().splitlines()]
    assert [(r["issue"], r["cost_usd"], r["subtype"], r["exit_reason"], r["outcome"]) for r in ledger] \
        == [(n, 0.1, "error_max_budget_usd", why, "failed")] * 2
    assert github.pulls() == []


def test_tool_lists_reach_the_worker_argv(project, github):
    """[workers] allowed_tools / disallowed_tools become the CLI's flags, as
    the worker itself received them."""
    project.env["TAC_ARGV_COPY"] = str(project.dir / "argv-{issue}.json")
    project.write_config(workers={"allowed_tools": ["Bash", "Read", "Edit"], "disallowed_tools": ["WebFetch"]})
    n = project.issue("Tools")
    assert project.run("--once").returncode == 0
    argv = project.wait_for(lambda: worker_argv(project, n), timeout=20, message="argv recorded")
    assert argv[argv.index("--allowedTools") + 1] == "Bash,Read,Edit"
    assert argv[argv.index("--disallowedTools") + 1] == "WebFetch"
    assert "--max-budget-usd" not in argv  # per_run_usd 0 = no limit, no flag


def test_monthly_budget_stops_spawning_and_says_why(project, github):
    logs = project.dir / "logs"
    logs.mkdir()
    now = time.time()
    # Spent earlier this month (today when it is the 1st): the day's budget is far off.
    day = time.strftime("%Y-%m-01") if time.strftime("%d") != "01" else time.strftime("%Y-%m-%d")
    (logs / "usage.jsonl").write_text(json.dumps({"ts": "x", "date": day, "issue": 1, "cost_usd": 60.0}) + "\n")
    project.write_config(budget={"daily_usd": 100.0, "monthly_usd": 50.0})
    n = project.issue("Costs money")
    r = project.run("--once")
    assert r.returncode == 0, r.stderr
    assert project.state(n) == tasks.PENDING
    assert not (logs / f"gh-{n}.jsonl").exists() and project.worker_pids() == []
    month = time.strftime("%Y-%m", time.localtime(now))
    assert f"monthly budget reached: $60.00 of $50.00 in {month}" in r.stderr
    assert project.tasks().status.startswith(f"monthly budget reached: $60.00 of $50.00 in {month}")


def test_status_comment_is_edited_in_place_as_the_run_progresses(project, github):
    n = project.issue("Slow one")
    project.script({"default": {"turns": 3, "turn_delay": 1.5, "commit": "x.txt"}})
    project.write_config(github={"progress_every": 1})
    project.start()
    project.wait_for(lambda: github.comments(n) and "so far" in github.comments(n)[0]["body"], timeout=30,
                     message="progress edit")
    assert "$" in github.comments(n)[0]["body"]
    project.wait_for(lambda: project.state(n) == tasks.COMPLETED and "tac:done" in github.issue_labels(n))
    comments = github.comments(n)
    assert len(comments) == 1  # one comment, edited: not a stream of new ones
    assert comments[0]["body"].startswith("✅ Done:") and project.task(n).pr in comments[0]["body"]


@pytest.mark.parametrize("setting, model, total, expect", [
    ("auto", "Raspberry Pi 4 Model B Rev 1.4", 8192, 1),
    ("auto", "Raspberry Pi 5 Model B Rev 1.0", 16384, 1),
    ("auto", "", 24 * 1024, 8),
    ("auto", "", 6144, 2),
    ("auto", "", 2048, 1),
    (3, "Raspberry Pi 4 Model B", 8192, 3),
])
def test_worker_cap(setting, model, total, expect):
    assert worker_cap(setting, model=model, total_mb=total) == expect
