"""The coordinator with the REAL Claude Code CLI as its worker.

The CLI (pinned in tests/claude_cli.py, installed by tests/install_claude_cli.sh)
talks to a scripted local Messages API (tests/fake_anthropic.py) that makes
the agent edit, test and commit through real tool calls; GitHub is the fake
REST server reached through the real gh. Nothing here is a stand-in for the
coordinator or the CLI.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from harness import ROOT, Project
from claude_cli import CLAUDE_CLI_VERSION, claude_path
from fake_anthropic import FakeAnthropic
from adws import followup, tasks
from adws.prompt import SESSION_FRESH, SESSION_RESUMED

pytestmark = pytest.mark.real_cli


@pytest.fixture
def cli():
    path = claude_path()
    if path is None:
        if os.environ.get("TAC_SKIP_REAL_CLI") == "1":
            pytest.skip("TAC_SKIP_REAL_CLI=1")
        pytest.fail(f"Claude Code CLI {CLAUDE_CLI_VERSION} not installed: run sh tests/install_claude_cli.sh")
    return path


@pytest.fixture
def real(tmp_path, github, gh_env, clone, git_origin, cli):
    project = Project(tmp_path, github, gh_env, clone, git_origin)
    home = tmp_path / "home"
    home.mkdir()
    fakes = []

    def setup(script, mode=None, budget=None, followup=None, github_cfg=None, argv_log=None, **workers):
        fake = FakeAnthropic(script).start()
        if mode:
            fake.mode = mode
        fakes.append(fake)
        project.fake = fake
        # The coordinator's own environment: account variables of whoever
        # runs the tests must not reach the CLI.
        for k in list(project.env):
            if k.startswith(("ANTHROPIC_", "CLAUDE_CODE_", "CLAUDECODE")):
                del project.env[k]
        project.env.update(fake.env(str(home)))
        # NO_PROXY=localhost would also match api.github.localhost and send
        # gh around the proxy that leads to the fake GitHub. The CLI does not
        # need it: the worker's environment has no HTTP_PROXY.
        project.env["NO_PROXY"] = project.env["no_proxy"] = "127.0.0.1"
        w = {"max_concurrent": 1, "startup_grace": 2, "max_attempts": 1, "timeout": 120}
        w.update(workers)
        command = [cli]
        if argv_log:  # the CLI behind a wrapper that writes down each run's argv (one JSON list a line), then execs it
            wrapper = tmp_path / "claude-argv"
            wrapper.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                               f"with open({str(argv_log)!r}, 'a') as f:\n    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
                               f"os.execv({cli!r}, [{cli!r}] + sys.argv[1:])\n")
            wrapper.chmod(0o755)
            command = [str(wrapper)]
        project.write_config(command=command + ["-p", "--output-format", "stream-json", "--verbose",
                                                "--dangerously-skip-permissions"], workers=w, budget=budget,
                             followup=followup, github=github_cfg)
        return fake

    project.setup = setup
    yield project
    project.stop_all()
    for f in fakes:
        f.stop()


def result_events(project, n):
    lines = (project.dir / "logs" / f"gh-{n}.jsonl").read_text().splitlines()
    out = []
    for ln in lines:
        try:
            ev = json.loads(ln)
        except ValueError:
            continue
        if ev.get("type") == "result":
            out.append(ev)
    return out


def test_real_cli_edits_tests_commits_and_ends_as_pr(real, github):
    n = real.issue("Add an add() function", "calc.add(2, 3) must be 5, with a test.")
    real.setup([
        {"tool": "Bash", "input": {"command": (
            "printf 'def add(a, b):\\n    return a + b\\n' > calc.py && "
            "printf 'import calc\\nassert calc.add(2, 3) == 5\\nprint(\"ok\")\\n' > test_calc.py && "
            f"{sys.executable} test_calc.py")}},
        {"tool": "Bash", "input": {"command": f"git add calc.py test_calc.py && git commit -q -m 'Add add() (Closes #{n})'"}},
        {"text": "Added calc.add with a test; committed."},
    ])
    real.start()
    real.wait_for(lambda: real.state(n) == tasks.COMPLETED, timeout=90, message="completed")
    pr = github.pulls()[0]
    assert pr["head"]["ref"] == f"auto/gh-{n}" and not pr["draft"]
    assert real.task(n).pr == pr["html_url"]
    real.wait_for(lambda: "tac:done" in github.issue_labels(n), message="label swap")
    assert pr["html_url"] in github.comments(n)[-1]["body"]
    show = subprocess.run(["git", "--git-dir", str(real.origin), "show", f"auto/gh-{n}:calc.py"],
                          capture_output=True, text=True)
    assert "return a + b" in show.stdout

    # The ledger, and the report built on it, agree with the CLI's own cost to the cent.
    results = result_events(real, n)
    assert len(results) == 1 and results[0]["subtype"] == "success"
    cli_cost = Decimal(repr(results[0]["total_cost_usd"]))
    assert cli_cost > 0
    ledger = [json.loads(ln) for ln in (real.dir / "logs" / "usage.jsonl").read_text().splitlines()]
    assert [r["issue"] for r in ledger] == [n]
    assert Decimal(repr(ledger[0]["cost_usd"])) == cli_cost
    assert ledger[0]["cost_source"] == "result"
    report = subprocess.run([sys.executable, str(ROOT / "tools" / "usage_report.py"), "--config", str(real.config),
                             "--json"], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    total = json.loads(report.stdout)["total"]["cost_usd"]
    assert round(Decimal(repr(total)), 2) == round(cli_cost, 2)
    # And the transcript viewer reads the real log.
    view = subprocess.run([sys.executable, str(ROOT / "tools" / "view_worker.py"), str(n), "--config", str(real.config)],
                          capture_output=True, text=True)
    assert view.returncode == 0, view.stderr
    assert "git add calc.py test_calc.py" in view.stdout and "success" in view.stdout


def test_real_cli_blocked_md_ends_blocked(real, github):
    n = real.issue("Choose a database")
    real.setup([
        {"tool": "Bash", "input": {"command": "printf 'Needs a human: Postgres or SQLite?\\n\\nBoth fit.\\n' > BLOCKED.md"}},
        {"text": "Blocked on a decision."},
    ])
    real.start()
    real.wait_for(lambda: real.state(n) == tasks.BLOCKED, timeout=90, message="blocked")
    assert real.task(n).reason == "Needs a human: Postgres or SQLite?"
    real.wait_for(lambda: "tac:blocked" in github.issue_labels(n), message="label swap")
    assert github.pulls() == []


def test_real_cli_max_turns_exhaustion_fails_with_subtype(real, github):
    n = real.issue("Loop forever")
    real.setup([{"tool": "Bash", "input": {"command": "true"}}] * 6 + [{"text": "never reached"}], max_turns=2)
    real.start()
    real.wait_for(lambda: real.state(n) == tasks.FAILED, timeout=90, message="failed")
    t = real.task(n)
    assert "error_max_turns" in t.reason and "without commits" in t.reason
    (result,) = result_events(real, n)  # one run: max_attempts 1
    assert result["subtype"] == "error_max_turns"
    # --max-turns 2 reached the CLI: the scripted API had six tool turns ready
    # and the CLI stopped asking after two.
    assert len(real.fake.main_requests) == 2, result
    transcript = (real.dir / "logs" / f"gh-{n}.jsonl").read_text()
    assert transcript.count('"subtype": "attempt"') == 1


def test_real_cli_ends_at_per_run_usd_itself_and_the_task_fails_saying_so(real, github):
    """per_run_usd reaches the real CLI as --max-budget-usd; the CLI ends the
    run (result error_max_budget_usd, exit status 1) before the tool of the
    turn that reached it runs, and the daemon fails the task with that."""
    n = real.issue("Spend it all")
    # $0.055 a turn at the CLI's prices (see test_real_claude.py's budget
    # test): a per_run_usd of exactly that is reached by the first turn (the
    # CLI stops at cost >= budget) but not passed (the coordinator's own stop
    # is cost > per_run_usd), so the CLI's limit is what ends the run.
    turn = {"usage": {"input_tokens": 1000, "output_tokens": 2000}}
    real.setup([dict(turn, tool="Bash", input={"command": "touch spent.txt && git add spent.txt && git commit -qm spent"})]
               + [{"text": "never reached"}], budget={"per_run_usd": 0.055})
    real.start()
    real.wait_for(lambda: real.state(n) in tasks.TERMINAL, timeout=90, message="the task ended")
    t = real.task(n)
    assert (t.state, t.reason) == (tasks.FAILED,
                                   "worker exited without commits (exit status 1, result error_max_budget_usd)")
    (result,) = result_events(real, n)
    assert (result["subtype"], result["is_error"], result["total_cost_usd"]) == ("error_max_budget_usd", True, 0.055)
    assert result["errors"] == ["Reached maximum budget ($0.055)"]
    assert len(real.fake.main_requests) == 1  # it never asked for a second turn
    assert "stopping pid=" not in real.log_text()  # ended by the CLI, not stopped by the coordinator
    real.wait_for(lambda: "tac:failed" in github.issue_labels(n), message="the issue told")
    assert github.comments(n)[-1]["body"].startswith("❌ Failed: " + t.reason)
    assert github.pulls() == []


def test_real_cli_with_api_down_is_a_startup_error_and_pauses_spawning(real, github):
    n = real.issue("Anything")
    real.setup([{"text": "unused"}], mode="refuse", api_retry_limit=3, startup_backoff=[120], breaker_threshold=5)
    real.start()
    # The CLI never gets a model turn; it retries. The coordinator stops it
    # after api_retry_limit retries and opens the breaker at once (an API
    # that does not answer is the system's fault, issue #11): the task goes
    # back to Pending uncharged and waits for the breaker's probe.
    real.wait_for(lambda: real.state(n) == tasks.PENDING and "not counted" in real.task(n).reason, timeout=60,
                  message="back to pending, not charged")
    t = real.task(n)
    assert t.attempts == 0 and t.startup_errors == 0 and t.next_attempt == ""
    assert t.reason.startswith("startup error while spawning is paused, not counted: API unreachable: 3 retries")
    real.wait_for(lambda: "spawning paused: network or API down? (API unreachable: 3 retries"
                  in (real.dir / "tasks.md").read_text(), message="status shows the pause")
    real.wait_for(lambda: real.worker_pids() == [], timeout=20, message="no CLI process left")
    ledger = (real.dir / "logs" / "usage.jsonl").read_text()
    assert '"api_retries": ' in ledger


def test_real_cli_two_stage_workflow_resumes_the_plan_session_in_build(real, github):
    """Issue #15: plan, then build with resume = true. The build's first
    request carries the plan stage's conversation (the CLI continued its
    session, `--resume`), not a fresh one of two messages."""
    n = real.issue("Add an add() function", "calc.add(2, 3) must be 5, with a test.")
    real.setup([
        # plan
        {"tool": "Bash", "input": {"command": (
            "mkdir -p .tac && printf '# Plan\\n\\nAdd calc.add with a test in test_calc.py.\\n' > .tac/plan.md")}},
        {"text": "Planned: PLAN-STAGE-MARK."},
        # build
        {"tool": "Bash", "input": {"command": (
            "printf 'def add(a, b):\\n    return a + b\\n' > calc.py && "
            f"git add calc.py && git commit -q -m 'Add add() (Closes #{n})'")}},
        {"text": "Built."},
    ])
    with open(real.config, "a") as f:
        f.write('[workflow]\ndefault = "plan-build"\n[workflows.plan-build]\nstages = ["plan", "build"]\n'
                '[stages.build]\nresume = true\n')
    real.start()
    real.wait_for(lambda: real.state(n) == tasks.COMPLETED, timeout=120, message="completed")
    plan, build = real.task(n).stage_runs
    assert (plan.name, plan.outcome, build.name, build.outcome) == ("plan", "completed", "build", "completed")
    assert plan.session and build.session == plan.session
    main = real.fake.main_requests
    assert len(main) == 4
    first_of_build = json.dumps(main[2]["body"]["messages"])
    assert len(main[2]["body"]["messages"]) > 2 and "PLAN-STAGE-MARK" in first_of_build
    assert "Add calc.add with a test" in first_of_build  # the build prompt carries the plan too
    assert "**Plan:** Add calc.add with a test in test_calc.py." in github.pulls()[0]["body"]


def test_real_cli_followup_round_resumes_the_first_runs_session_and_runs_fresh_once_the_store_lost_it(real, github):
    """Issue #14 with the real CLI: a trusted review on the PR makes a round
    that continues the first run's session (`--resume`: its first request
    carries the first run's conversation); once the CLI's session store for
    the worktree is gone, the next round runs in a fresh session (its first
    request carries none of it, and its prompt says so)."""
    github.track_pushes = True
    argv_log = real.dir / "argv.jsonl"
    n = real.issue("Add a docstring", "Please add one.")
    real.setup([
        # the first run
        {"tool": "Bash", "input": {"command": f"printf 'one\\n' > fix.txt && git add fix.txt && "
                                              f"git commit -q -m 'Add fix.txt (Closes #{n})'"}},
        {"text": "First run done: FIRST-RUN-MARK."},
        # round 2, resumed
        {"tool": "Bash", "input": {"command": "printf 'one, because\\n' > fix.txt && git commit -qam 'Say why'"}},
        {"text": "Round two done: ROUND-TWO-MARK."},
        # round 3, fresh
        {"text": "Round three done."},
    ], followup={"quiet": 1}, github_cfg={"poll_interval": 0.5}, argv_log=argv_log)
    real.start()
    real.wait_for(lambda: real.state(n) == tasks.COMPLETED and real.task(n).watch_since, timeout=60,
                  message="completed and watched")
    pr, = [p["number"] for p in github.pulls()]
    (first,) = result_events(real, n)
    session = first["session_id"]
    assert session and len(real.fake.main_requests) == 2

    def round_ended(k):
        t = real.task(n)
        return t.state == tasks.COMPLETED and followup.parse_round(t.round)[0] == k and not t.pending

    def view():
        out = subprocess.run([sys.executable, str(ROOT / "tools" / "view_worker.py"), str(n), "--config",
                              str(real.config)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout

    # Round 2: a trusted changes-requested review.
    github.submit_review(pr, "alice", body="Say why, please: REVIEW-ONE.")
    real.wait_for(lambda: round_ended(2), timeout=40, message="round 2 ended")
    argvs = [json.loads(line) for line in argv_log.read_text().splitlines()]
    assert len(argvs) == 2 and "--resume" not in argvs[0]
    assert argvs[1][-2:] == ["--resume", session]
    main = real.fake.main_requests
    assert len(main) == 4
    resumed = main[2]["body"]["messages"]
    text = json.dumps(resumed)
    # The whole first exchange (its prompt, tool call and answer), then the round's prompt.
    assert len(resumed) > 2 and "Please add one." in json.dumps(resumed[0]) and "FIRST-RUN-MARK" in text
    assert "REVIEW-ONE" in json.dumps(resumed[-1]) and SESSION_RESUMED.splitlines()[0] in json.dumps(resumed[-1])
    assert "REVIEW-ONE" not in json.dumps(resumed[:-1])
    round2 = result_events(real, n)[-1]
    assert round2["subtype"] == "success" and round2["session_id"] == session
    assert f"gh-{n} round 2 of 4 started" in real.log_text() and f"session=resumed {session}" in real.log_text()
    assert "follow-up round 2 (session resumed)" in view()
    assert real.task(n).pushed == github.pulls()[0]["head"]["sha"]

    # The CLI's store for the worktree is where the coordinator looks: remove it.
    store = Path(real.env["CLAUDE_CONFIG_DIR"]) / "projects" / re.sub(r"[^A-Za-z0-9]", "-", real.task(n).worktree)
    assert (store / f"{session}.jsonl").is_file()
    shutil.rmtree(store)
    github.add_comment(pr, "alice", "@tac and a third thing: ASK-TWO")
    real.wait_for(lambda: round_ended(3), timeout=40, message="round 3 ended")
    argvs = [json.loads(line) for line in argv_log.read_text().splitlines()]
    assert len(argvs) == 3 and "--resume" not in argvs[2]
    main = real.fake.main_requests
    assert len(main) == 5
    fresh = json.dumps(main[4]["body"]["messages"])
    assert "ASK-TWO" in fresh and SESSION_FRESH.splitlines()[0] in fresh
    assert "FIRST-RUN-MARK" not in fresh and "ROUND-TWO-MARK" not in fresh and "REVIEW-ONE" not in fresh
    assert result_events(real, n)[-1]["session_id"] != session
    assert f"gh-{n} round 3 of 4 started" in real.log_text() and "session=fresh" in real.log_text()
    assert "follow-up round 3 (session fresh)" in view()
