"""Workflows run by the daemon (issue #15): `python adws/coordinator.py` as a
real process, the real gh against the fake GitHub, real git, the scripted
worker playing each stage ($TAC_STAGE)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from adws import tasks
from adws.tasks import StageAt
from harness import ROOT, overlapping_runs

PLAN = "# Plan: add fix.txt\n\nAdd fix.txt with the fix and a test for it.\n\n## Tests\n- test_fix\n"
FLOW = {"plan": {"runs": [{"plan": PLAN}]}, "build": {"runs": [{"commit": "fix.txt"}]},
        "review": {"runs": [{"review": "approve"}]}}


def use_workflows(project, default="plan-build-review", extra=""):
    """The harness's config plus [workflow] (and any stage tables)."""
    project.write_config()
    with open(project.config, "a") as f:
        f.write(f'[workflow]\ndefault = "{default}"\nreview_rounds = 1\n{extra}')
    project.env["TAC_PROMPT_COPY"] = str(project.dir / "prompt-{issue}-{stage}.txt")
    project.env["TAC_ARGV_COPY"] = str(project.dir / "argv-{issue}-{stage}.json")


def runs_of(project, n, stage):
    """How many times the scripted worker ran issue n's stage (its own count)."""
    path = project.dir / f".runs-{n}-{stage}"
    return path.stat().st_size if path.exists() else 0


def ledger(project, n, count):
    """Issue n's ledger lines, once there are `count` (the line follows the
    tasks.md write that ends the run)."""
    path = project.dir / "logs" / "usage.jsonl"

    def lines():
        found = [r for r in map(json.loads, path.read_text().splitlines()) if r.get("issue") == n] \
            if path.exists() else []
        return found if len(found) >= count else None
    return project.wait_for(lines, timeout=10, message=f"{count} ledger lines")


def summary(t):
    return [(r.name, r.outcome) for r in t.stage_runs]


def test_plan_build_review_runs_in_order_in_one_worktree_and_opens_one_pr(project, github, git_origin):
    use_workflows(project)
    flow = json.loads(json.dumps(FLOW))
    flow["build"]["runs"][0]["sleep"] = 3  # long enough to see the Active entry's stage
    project.script({"default": {"stages": flow}})
    n = project.issue("Fix the widget", "It breaks.")
    project.start()
    project.wait_for(lambda: (project.task(n) or tasks.Task(0, "")).stage == StageAt("build", 2, 3),
                     message="- Stage: build (2 of 3)")
    assert "- Stage: build (2 of 3)" in (project.dir / "tasks.md").read_text()
    assert "- Workflow: plan-build-review" in (project.dir / "tasks.md").read_text()

    def shown_by_status():  # status.py shows the stage and what the stages cost so far
        out = subprocess.run([sys.executable, str(ROOT / "tools" / "status.py"), "--json", "--config",
                              str(project.config)], capture_output=True, text=True, env=project.env).stdout
        active = [w for w in json.loads(out or "{}").get("active", []) if w.get("issue") == n]
        return active and active[0]
    worker = project.wait_for(shown_by_status, timeout=10, message="status.py shows the worker")
    assert worker["stage"] == "build (2 of 3)" and worker["stage_costs"] == {"plan": 0.01}
    project.wait_for(lambda: project.state(n) == tasks.COMPLETED, message="completed")
    t = project.task(n)
    assert summary(t) == [("plan", "completed"), ("build", "completed"), ("review", "completed")]
    assert t.stage_runs[2].note == "approve" and t.stage is None
    assert [runs_of(project, n, s) for s in ("plan", "build", "review")] == [1, 1, 1]
    assert overlapping_runs(project.dir / "trace.txt") == []
    # One ledger line per stage run, naming its stage.
    assert [(r["stage"], r["outcome"]) for r in ledger(project, n, 3)] == [
        ("plan", "completed"), ("build", "completed"), ("review", "completed")]
    # One PR, not a draft, its body carrying the plan's summary and the verdict.
    pulls = github.pulls()
    assert len(pulls) == 1 and not pulls[0]["draft"]
    assert "**Plan:** Add fix.txt with the fix and a test for it." in pulls[0]["body"]
    assert "**Review:** approved." in pulls[0]["body"]
    # Each stage got its own prompt: build the plan, review the plan and build's diff.
    build = (project.dir / f"prompt-{n}-build.txt").read_text()
    review = (project.dir / f"prompt-{n}-review.txt").read_text()
    assert "Add fix.txt with the fix" in build and "<stage-plan>" in build
    assert "<stage-diff>" in review and "fix.txt" in review and "Add fix.txt with the fix" in review
    # The viewer shows one stage's runs on their own.
    shown = subprocess.run([sys.executable, str(ROOT / "tools" / "view_worker.py"), str(n), "--stage", "review",
                            "--config", str(project.config)], capture_output=True, text=True, env=project.env)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("stage review") == 1 and "stage plan" not in shown.stdout
    assert "stage build" not in shown.stdout
    # .tac/ never reached the branch that was pushed.
    files = subprocess.run(["git", "--git-dir", str(git_origin), "ls-tree", "-r", "--name-only", f"auto/gh-{n}"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert "fix.txt" in files and not [f for f in files if f.startswith(".tac")]


def test_a_changes_verdict_runs_one_more_build_round_and_no_more(project, github):
    use_workflows(project)
    flow = json.loads(json.dumps(FLOW))
    flow["review"]["runs"] = [{"review": "changes: add a test for the empty widget"}]  # every review
    flow["build"]["runs"] = [{"commit": "fix.txt"}, {"commit": "test_fix.txt"}]
    project.script({"default": {"stages": flow}})
    n = project.issue("Fix the widget")
    project.start()
    project.wait_for(lambda: project.state(n) == tasks.COMPLETED, message="completed")
    t = project.task(n)
    assert summary(t) == [("plan", "completed"), ("build", "completed"), ("review", "completed"),
                          ("build", "completed"), ("review", "completed")]
    assert [runs_of(project, n, s) for s in ("plan", "build", "review")] == [1, 2, 2]
    # The round's build was told what the review asked for.
    assert "add a test for the empty widget" in (project.dir / f"prompt-{n}-build.txt").read_text()
    pr = github.pulls()[0]
    assert pr["draft"] is True
    assert "changes still requested after 1 round of changes: add a test for the empty widget" in pr["body"]


def test_a_blocked_plan_ends_blocked_and_no_build_runs(project, github):
    use_workflows(project)
    flow = json.loads(json.dumps(FLOW))
    flow["plan"]["runs"] = [{"blocked": "Needs a decision on the footprint library"}]
    project.script({"default": {"stages": flow}})
    n = project.issue("Port to kicad 9")
    project.start()
    project.wait_for(lambda: project.state(n) == tasks.BLOCKED, message="blocked")
    t = project.task(n)
    assert t.reason == "Needs a decision on the footprint library"
    assert summary(t) == [("plan", "blocked")]
    assert [runs_of(project, n, s) for s in ("plan", "build", "review")] == [1, 0, 0]
    assert github.pulls() == []
    assert [r["stage"] for r in ledger(project, n, 1)] == ["plan"]


def test_a_failing_build_stage_is_retried_alone(project, github):
    use_workflows(project)
    flow = json.loads(json.dumps(FLOW))
    flow["build"]["runs"] = [{"turns": 2, "exit": 1, "result": "error_during_execution"}, {"commit": "fix.txt"}]
    project.script({"default": {"stages": flow}})
    n = project.issue("Fix the widget")
    project.start()
    project.wait_for(lambda: project.state(n) == tasks.COMPLETED, timeout=40, message="completed")
    t = project.task(n)
    assert summary(t) == [("plan", "completed"), ("build", "failed"), ("build", "completed"),
                          ("review", "completed")]
    assert [runs_of(project, n, s) for s in ("plan", "build", "review")] == [1, 2, 1]
    assert [(r["stage"], r["attempt"]) for r in ledger(project, n, 4)] == [
        ("plan", 1), ("build", 1), ("build", 2), ("review", 1)]
    # The retry went on in the task's worktree: the plan was still there for it.
    assert "Add fix.txt with the fix" in (project.dir / f"prompt-{n}-build.txt").read_text()


def test_kill_9_during_each_stage_runs_every_stage_exactly_once(project, github):
    use_workflows(project)
    flow = json.loads(json.dumps(FLOW))
    for stage in flow.values():
        stage["runs"][0]["sleep"] = 1.5
    project.script({"default": {"stages": flow}})
    n = project.issue("Fix the widget")
    for stage in ("plan", "build", "review"):
        p = project.start()

        def running(stage=stage):
            t = project.task(n)
            return t is not None and t.stage is not None and t.stage.name == stage and t.pid
        project.wait_for(running, message=f"{stage} running")
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    project.start()
    project.wait_for(lambda: project.state(n) == tasks.COMPLETED, message="completed")
    t = project.task(n)
    assert summary(t) == [("plan", "completed"), ("build", "completed"), ("review", "completed")]
    assert [runs_of(project, n, s) for s in ("plan", "build", "review")] == [1, 1, 1]
    assert [r["stage"] for r in ledger(project, n, 3)] == ["plan", "build", "review"]
    assert len(github.pulls()) == 1
    assert project.log_text().count(f"gh-{n} re-adopted pid=") == 3
    assert overlapping_runs(project.dir / "trace.txt") == []


def test_the_workflow_label_counts_only_from_a_trusted_labeller(project, github):
    use_workflows(project, default="build")
    github.add_label("workflow:plan-build-review")
    github.set_permission("mallory", "read")
    project.script({"default": {"stages": FLOW, "commit": "fix.txt"}})
    trusted = project.issue("Plan this one")
    github.label_issue(trusted, "workflow:plan-build-review", "alice")
    untrusted = project.issue("And this one")
    github.label_issue(untrusted, "workflow:plan-build-review", "mallory")
    project.start()
    for n in (trusted, untrusted):
        project.wait_for(lambda n=n: project.state(n) == tasks.COMPLETED, message=f"gh-{n} completed")
    assert project.task(trusted).workflow == "plan-build-review"
    assert [r.name for r in project.task(trusted).stage_runs] == ["plan", "build", "review"]
    # Mallory's label is ignored: the default one-stage build, as before workflows.
    t = project.task(untrusted)
    assert t.workflow == "" and t.stage_runs == []
    assert [r.get("stage") for r in ledger(project, untrusted, 1)] == [None]
    assert f"gh-{untrusted} label workflow:plan-build-review ignored: applied by mallory" in project.log_text()


def test_resume_true_continues_the_previous_stage_session(project, github):
    use_workflows(project, default="plan-build", extra=(
        '[workflows.plan-build]\nstages = ["plan", "build"]\n[stages.build]\nresume = true\n'
        'max_turns = 7\n'))
    flow = {"plan": FLOW["plan"], "build": FLOW["build"]}
    project.script({"default": {"stages": flow}})
    n = project.issue("Fix the widget")
    project.start()
    project.wait_for(lambda: project.state(n) == tasks.COMPLETED, message="completed")
    plan, build = project.task(n).stage_runs
    assert plan.session and build.session == plan.session
    argv = json.loads((project.dir / f"argv-{n}-build.json").read_text())
    assert argv[argv.index("--resume") + 1] == plan.session
    assert argv[argv.index("--max-turns") + 1] == "7"  # the stage's own limit
    assert "--resume" not in json.loads((project.dir / f"argv-{n}-plan.json").read_text())
    # A plan and a build without review: the pull request carries the plan, no verdict.
    body = github.pulls()[0]["body"]
    assert "**Plan:**" in body and "**Review:**" not in body


def test_a_stage_is_stopped_by_its_own_timeout_not_the_workers(project, github):
    """[stages.plan] timeout = 2 while [workers] timeout is 600: the plan
    that hangs is stopped after 2 s, counted a failed attempt and run again."""
    use_workflows(project, default="plan-build", extra=(
        '[workflows.plan-build]\nstages = ["plan", "build"]\n[stages.plan]\ntimeout = 2\n'))
    flow = {"plan": {"runs": [{"sleep": 60}, {"plan": PLAN}]}, "build": FLOW["build"]}
    project.script({"default": {"stages": flow}})
    n = project.issue("Fix the widget")
    project.start()
    project.wait_for(lambda: project.state(n) == tasks.COMPLETED, timeout=40, message="completed")
    assert summary(project.task(n)) == [("plan", "failed"), ("plan", "completed"), ("build", "completed")]
    assert f"gh-{n} stopping pid=" in project.log_text() and "timed out after 2 s" in project.log_text()
