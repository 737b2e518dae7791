"""The core's shape (issue 10): one writer of task state, one error
boundary per tick step, a finish that cannot crash the daemon, fail-closed
git checks, and a SIGHUP that reloads everything or nothing.

The lifecycle table is tested exhaustively against a second opinion written
out here; the daemon-level behaviour runs the real coordinator process
against a bare origin whose pre-receive hook refuses a branch.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from adws import coordinator as co
from adws import tasks
from adws.tasks import ACTIVE, BLOCKED, COMPLETED, FAILED, NEW, PENDING, SECTIONS, TERMINAL, Task

T0 = 1_780_000_000.0

# -- the lifecycle table -----------------------------------------------------------

# Written out again, not read from tasks.ARCS: the test is the second opinion.
LEGAL = {
    (NEW, PENDING),                                    # queued
    (NEW, ACTIVE),                                     # restored: a live worker's entry vanished (issue 11)
    (PENDING, ACTIVE), (PENDING, NEW),                 # started, dropped
    (COMPLETED, NEW),                                  # archived (to tasks-archive.md)
    (ACTIVE, PENDING),                                 # back to the queue (retry, never started)
    (ACTIVE, COMPLETED), (ACTIVE, BLOCKED), (ACTIVE, FAILED),
    (COMPLETED, PENDING), (BLOCKED, PENDING), (FAILED, PENDING),  # queued again
    (COMPLETED, ACTIVE),                               # a follow-up round on its PR (issue #14)
} | {(s, s) for s in SECTIONS}                          # amended in place


def doc_with(state):
    doc = tasks.TaskFile()
    if state is not NEW:
        doc.add(Task(7, "Fix it", state, worker="w-abc" if state != PENDING else "", pid=41, pid_start=99,
                     comment_id=5, attempts=1, notes=["a person's note"]))
    return doc


@pytest.mark.parametrize("src,dst", list(itertools.product((NEW,) + SECTIONS, (NEW,) + SECTIONS)))
def test_every_arc_is_either_legal_and_applied_or_refused(src, dst):
    doc = doc_with(src)
    before = tasks.render(doc)
    if (src, dst) not in LEGAL:
        with pytest.raises(tasks.IllegalTransition):
            tasks.transition(doc, 7, dst, expect=src, now=T0)
        assert tasks.render(doc) == before  # refused means untouched
        return
    got = tasks.transition(doc, 7, dst, expect=src, now=T0, title="Fix it")
    assert got is not None
    now_there = doc.governing(7)
    if dst is NEW:
        assert now_there is None
        return
    assert now_there.state == dst and got.state == dst
    # What the file shows is what was returned.
    assert tasks.parse(tasks.render(doc))[0].governing(7) == now_there
    if dst in TERMINAL and src not in TERMINAL:
        assert now_there.finished == tasks.format_time(T0) and now_there.outbox == "pending"
    if src == ACTIVE and dst != ACTIVE:
        assert now_there.pid is None and now_there.pid_start is None
    if dst == PENDING and src in (NEW,) + TERMINAL:
        assert now_there.attempts == 0 and now_there.comment_id is None  # a fresh round


def test_a_round_goes_completed_active_completed_and_leaves_finished_and_the_notice_alone():
    """A follow-up round (adws/rounds.py): its entry is Active with its PR and
    a Round; ending it is no new completion, so the issue is told nothing
    again. A first run that completes is still stamped and owes its notice."""
    doc = tasks.TaskFile()
    doc.add(Task(7, "Fix it", COMPLETED, worker="w-abc", pr="https://x/pull/9", finished="2026-01-02 03:04:05"))
    got = tasks.transition(doc, 7, ACTIVE, expect=COMPLETED, worker="w-def", round="2 of 4", pid=5)
    assert got.state == ACTIVE and tasks.in_round(got)
    back = tasks.transition(doc, 7, COMPLETED, expect=ACTIVE, owner="w-def", now=T0, handled="r1=abcdef")
    assert (back.state, back.finished, back.outbox, back.pid, back.round) == (
        COMPLETED, "2026-01-02 03:04:05", "", None, "2 of 4")
    first = doc_with(ACTIVE)
    done = tasks.transition(first, 7, COMPLETED, expect=ACTIVE, now=T0, pr="https://x/pull/9")
    assert not tasks.in_round(doc_with(ACTIVE).governing(7)) and done.outbox == "pending"


def test_a_changed_entry_is_left_as_the_person_set_it():
    doc = doc_with(FAILED)  # a person moved it out of Active meanwhile
    before = tasks.render(doc)
    assert tasks.transition(doc, 7, COMPLETED, expect=ACTIVE, now=T0) is None
    assert tasks.render(doc) == before
    doc = doc_with(ACTIVE)
    assert tasks.transition(doc, 7, COMPLETED, expect=ACTIVE, owner="w-other", now=T0) is None
    assert doc.governing(7).state == ACTIVE


def test_unknown_fields_and_an_ending_without_time_are_bugs():
    with pytest.raises(tasks.IllegalTransition, match="unknown task fields"):
        tasks.transition(doc_with(ACTIVE), 7, BLOCKED, expect=ACTIVE, now=T0, resaon="typo")
    with pytest.raises(tasks.IllegalTransition, match="needs the time"):
        tasks.transition(doc_with(ACTIVE), 7, BLOCKED, expect=ACTIVE)


def test_the_daemon_changes_task_state_only_through_transition():
    """No module of the daemon but tasks.py moves, adds or removes an entry
    or sets a state: read as code (every call and assignment), not as text."""
    import ast
    for path in sorted(Path(co.__file__).parent.glob("*.py")):
        if path.name == "tasks.py":
            continue
        hits = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("move", "add", "remove", "append") \
                    and ast.unparse(node.func.value).split(".")[-1] in ("doc", "d", "tasks", "tf"):
                hits.append(ast.unparse(node))
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for target in targets:
                for t in ast.walk(target):
                    if isinstance(t, ast.Attribute) and t.attr in ("state", "tasks") \
                            and ast.unparse(t.value) not in ("self", "w"):
                        hits.append(ast.unparse(node))
        assert hits == [], f"{path.name} changes entries outside tasks.transition: {hits}"


def test_finished_outbox_and_earlier_runs_are_fields_and_old_files_still_read():
    old = ("## Failed\n[❌ w-1] gh-3: x {p2}\n- Reason: boom\n- Finished: 2026-01-02 03:04:05\n"
           "- GitHub: pending\n- Earlier runs: 2\n")
    t = tasks.parse(old)[0].governing(3)
    assert (t.finished, t.outbox, t.earlier_runs, t.extra) == ("2026-01-02 03:04:05", "pending", 2, [])
    assert co.run_number(t) == 3  # branch auto/gh-3-3: earlier rounds' branches are never reused
    text = tasks.render(tasks.parse(old)[0])
    assert "- Finished: 2026-01-02 03:04:05\n" in text and "- GitHub: pending\n" in text


# -- fail closed ---------------------------------------------------------------------

def broken_git_cfg(tmp_path):
    cfg = co.load_config(write_min_config(tmp_path))
    return dataclasses.replace(cfg, repo_path=tmp_path / "not-a-repo")


def write_min_config(tmp_path):
    p = tmp_path / "config.toml"
    p.write_text('[github]\nrepo = "acme/widgets"\n')
    (tmp_path / "not-a-repo").mkdir(exist_ok=True)
    return p


def test_git_that_cannot_answer_is_never_taken_for_no_commits_or_no_workflow_changes(tmp_path):
    cfg = broken_git_cfg(tmp_path)
    with pytest.raises(co.GitError):
        co.commits_ahead(cfg, "auto/gh-1")
    with pytest.raises(co.GitError):
        co.held_paths(cfg, "auto/gh-1")


def test_a_failing_workflow_check_holds_the_branch(tmp_path, clone):
    """git diff fails after the worker committed (here: the branch shares no
    history with the base, so the three-dot diff has no merge base, while
    the commit count still works): the branch is not pushed, the task ends
    Blocked saying why."""
    cfg = dataclasses.replace(co.load_config(write_min_config(tmp_path)), repo_path=clone)
    subprocess.run(["git", "checkout", "-q", "--orphan", "auto/gh-1"], cwd=clone, check=True)
    (clone / "fix.txt").write_text("x\n")
    subprocess.run(["git", "add", "fix.txt"], cwd=clone, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "fix"], cwd=clone, check=True)
    c = co.Coordinator(cfg, co.GitHub(cfg.repo), clock=lambda: T0, environ={})
    w = co.Worker(issue=1, worker_id="w-1", attempt=1, branch="auto/gh-1", tree=clone, log_path=tmp_path / "l",
                  stderr_path=tmp_path / "e", stderr_offset=0, pid=0, pid_start=None, started_at=T0 - 100,
                  follower=None, returncode=0)
    summary = type("S", (), {"saw_result": True, "is_error": False, "assistant_turns": 3, "result_subtype": ""})()
    assert co.commits_ahead(cfg, "auto/gh-1") == 1
    outcome, commits = c.judge(w, summary, 100.0)
    assert outcome.kind == "blocked" and commits == 0
    assert "could not check the branch for workflow changes" in outcome.reason


# -- the daemon: a refused push, a reload -------------------------------------------------

REFUSE_HOOK = """#!/bin/sh
while read old new ref; do
  case "$ref" in
    refs/heads/auto/gh-{n}*) echo "branch protected: auto/gh-{n} needs review"; exit 1;;
  esac
done
exit 0
"""


def test_a_push_the_origin_refuses_ends_blocked_and_every_other_task_completes(project, github, git_origin):
    bad = project.issue("Touch the protected thing")
    good = project.issue("An ordinary fix")
    hook = git_origin / "hooks" / "pre-receive"
    hook.write_text(REFUSE_HOOK.replace("{n}", str(bad)))
    hook.chmod(0o755)
    project.write_config(github={"poll_interval": 0.5})
    p = project.start()
    project.wait_for(lambda: project.state(good) == COMPLETED, timeout=40, message="the other task completes")
    project.wait_for(lambda: project.state(bad) == BLOCKED, timeout=40, message="the refused task ends Blocked")
    t = project.task(bad)
    assert t.reason.startswith("push rejected by origin: remote: branch protected: auto/gh-")
    assert Path(t.worktree).is_dir(), "the worktree is kept for a person to look at"
    project.wait_for(lambda: "tac:blocked" in github.issue_labels(bad), timeout=20, message="issue told")
    told = github.comments(bad)[-1]["body"]
    assert "push rejected by origin" in told and f"kept at `{t.worktree}`" in told
    assert p.poll() is None, "the daemon is still running"
    log = project.log_text()
    assert log.count(f"gh-{bad} finishing failed (try") == co.FINISH_TRIES - 1
    assert "Traceback" not in log
    # A restart neither crash-loops nor runs the task again.
    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0
    runs = runs_of(project, bad)
    p2 = project.start()
    time.sleep(3)
    assert p2.poll() is None and project.state(bad) == BLOCKED
    assert runs_of(project, bad) == runs == 1


def runs_of(project, n: int) -> int:
    lines = (project.dir / "trace.txt").read_text().splitlines()
    return len({ln.split()[1] for ln in lines if ln.split()[0] == str(n)})


def test_sighup_applies_the_new_repository_and_refuses_a_new_tasks_path(project, github):
    project.write_config(github={"poll_interval": 60})
    p = project.start()
    project.wait_for(lambda: (project.dir / "metrics.json").exists() and json.loads(
        (project.dir / "metrics.json").read_text()).get("last_poll_ok"), message="the first poll done")
    github.reset_requests()
    project.write_config(github={"repo": "acme/gadgets", "poll_interval": 60},
                         workers={"max_concurrent": 1})
    p.send_signal(signal.SIGHUP)
    project.wait_for(lambda: any("repos/acme/gadgets/" in r.path for r in github.requests), timeout=15,
                     message="a request for the new repository")
    assert not any("repos/acme/widgets/" in r.path for r in github.requests)
    project.wait_for(lambda: "config reloaded" in project.log_text(), message="reload logged")
    project.wait_for(lambda: json.loads((project.dir / "metrics.json").read_text())["max_concurrent"] == 1,
                     timeout=15, message="metrics.json shows the new worker cap")
    # Moving tasks.md under a running daemon would move its lock: refused, old config kept.
    text = project.config.read_text().replace("[repo]", '[paths]\ntasks = "elsewhere/tasks.md"\n[repo]')
    project.config.write_text(text)
    p.send_signal(signal.SIGHUP)
    project.wait_for(lambda: "config not reloaded: [paths] tasks changed" in project.log_text(), timeout=10,
                     message="refusal logged")
    assert not (project.dir / "elsewhere").exists()
    assert p.poll() is None
    assert project.log_text().count("config not reloaded") == 1  # one line, naming the key
    # The old config is kept whole: the new repository and worker cap stay; nothing of the refused file applies.
    github.reset_requests()
    text = project.config.read_text().replace('max_concurrent = 1', 'max_concurrent = 3')
    project.config.write_text(text)  # still refused (tasks moved): max_concurrent 3 must not apply either
    p.send_signal(signal.SIGHUP)
    project.wait_for(lambda: project.log_text().count("config not reloaded") == 2, timeout=10,
                     message="refused again")
    time.sleep(1.5)
    assert json.loads((project.dir / "metrics.json").read_text())["max_concurrent"] == 1
    assert all("repos/acme/widgets/" not in r.path for r in github.requests)


class RecordingGit:
    """The clone, as the Coordinator asks it (gitops.Git's methods): no commits."""

    def __init__(self) -> None:
        self.calls: list = []

    def __getattr__(self, name):
        def call(*args):
            self.calls.append((name, args))
            return {"commits_ahead": 0, "held_paths": [], "head_sha": "", "pushed": False}.get(name)
        return call


class NoticeRefusingGitHub:
    """Answers the finish's questions; telling the issue fails with a disk error."""
    rate_remaining = rate_reset = None

    def pull_heads(self):
        return {}

    def comment(self, issue, text):
        raise OSError(28, "No space left on device")

    edit_comment = comment


def test_a_notice_that_fails_after_the_outcome_is_recorded_never_finishes_the_run_again(tmp_path):
    cfg = dataclasses.replace(co.load_config(write_min_config(tmp_path)), tasks_path=tmp_path / "tasks.md",
                              logs=tmp_path / "logs", trees=tmp_path / "trees")
    c = co.Coordinator(cfg, NoticeRefusingGitHub(), clock=lambda: T0, environ={})
    c.git = RecordingGit()
    tree = tmp_path / "trees" / "gh-1"
    tree.mkdir(parents=True)
    (tree / "BLOCKED.md").write_text("Which colour?\n")
    tasks.update(cfg.tasks_path, lambda d: d.add(Task(1, "x", ACTIVE, worker="w-1", attempts=0)))
    from adws.transcript import TranscriptFollower
    w = co.Worker(issue=1, worker_id="w-1", attempt=1, branch="auto/gh-1", tree=tree, log_path=tmp_path / "l",
                  stderr_path=tmp_path / "e", stderr_offset=0, pid=0, pid_start=None, started_at=T0 - 100,
                  follower=TranscriptFollower(tmp_path / "l"), returncode=0, state=co.EXITED)
    c.workers[1] = w
    for _ in range(3):
        c.finish_exited(T0)
    assert c.workers == {}
    t = tasks.load(cfg.tasks_path)[0].governing(1)
    assert (t.state, t.reason, t.outbox) == (BLOCKED, "Which colour?", "pending")  # the notice is still owed
    (line,) = (cfg.logs / "usage.jsonl").read_text().splitlines()  # one run, recorded once
    assert json.loads(line)["outcome"] == "blocked"                 # as it ended, not as a second finish saw it
