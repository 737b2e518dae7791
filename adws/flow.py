"""Workflows from the loop's side: each stage one worker run, recorded as it ends.

adws/workflow.py owns the rules (which stage runs next, how a stage run is
judged, what the pull request says) and touches nothing. This module is the
other half, run by the coordinator (issue #15): it picks an issue's
workflow, says which stage a start is, makes that stage's worktree, prompt,
command line and environment, and judges the run when it ends. It writes
nothing itself: what it decides goes to tasks.md through the coordinator's
one writer (spawn's Active entry, record_outcome's ending write).

Which tasks: one whose entry names a workflow (`- Workflow: plan-build-review`,
written at intake from a trusted `workflow:<name>` label, or at its first
start from `[workflow] default`). A task with no Workflow line under the
default one-stage `build` is the run of before, untouched: no Stage line,
no TAC_STAGE, no stage in the ledger, the same prompt.

Between stages the task goes back to Pending, due at once. The one write
that records a stage's result (its `- Stage <name>:` line) is the write
that ends its run, as a retry's is; the next stage then starts as any start
does, through dispatch and its gates (a pause, the budgets, the startup
breaker, free memory and slots), so the breaker and the startup-error rules
apply to each stage's start, and a crash needs no recovery of its own:

- killed while a stage runs, or after it ended and before its line was
  written: the Active entry names its worker, which the restart re-adopts or
  finishes from its evidence, like any run; one write records it;
- killed after that write: the entry is Pending and its Stage lines say
  which stage is next (workflow.plan_next); a completed stage never runs
  again.

The price: for a moment between stages the task shows as Pending, and a free
slot may go to another task first. A Pending entry whose label is removed
is dropped, as any queued entry (the worktree stays for a person).

The first stage gets a fresh worktree and branch, as a run always did; once a
stage has completed, every later stage (and a retry) continues in the task's
worktree on its branch, where the commits and the .tac/ files are.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from adws.config import Config, Stage
from adws.files import write_atomic
from adws.gitops import GitError
from adws.github import EVENT_KEYS, GitHub, _items, _labelled_with, _who
from adws.prompt import StageContext, build_stage_prompt, read_stage_file, set_aside_stage_file
from adws.redact import redact
from adws.tasks import StageAt, StageRun, Task
from adws.workers import StartError
from adws.workflow import (BUILD, DONE, PLAN, REVIEW, Step, ended_well, last_session, plan_next, pull_note,
                           stage_outcome)

log = logging.getLogger("tac")

NEXT_STAGE = "next_stage"   # an Outcome kind: the stage completed and another follows
LABEL_PREFIX = "workflow:"


@dataclass(frozen=True)
class Start:
    """One stage start as spawn decided it, kept by issue while it runs."""
    workflow: str
    stage: Stage
    at: Optional[StageAt]
    names: Tuple[str, ...]     # the workflow's stages, in order
    continuing: bool           # a stage completed before: the task's worktree and branch go on
    branch: str                # the task's branch (continuing)
    session: str = ""          # resume this CLI session ("": a fresh one)
    review_round: int = 0


class Flow:
    """`c` is the Coordinator (its config, git, tasks.md reader, say_once);
    `decide_outcome` is its rule for how a plain run ended."""

    def __init__(self, c: Any, decide_outcome: Callable[..., Any]):
        self.c = c
        self.decide_outcome = decide_outcome
        self.running: Dict[int, Start] = {}
        self._cfgs: Dict[int, Tuple[Config, str, Config]] = {}  # issue -> (cfg, stage, cfg.for_stage(stage))

    # -- which workflow ----------------------------------------------------------
    def choose(self, github: GitHub, issue: dict) -> Dict[str, Any]:
        """Intake (off the loop): the entry's Workflow from a `workflow:<name>`
        label a trusted person applied, else nothing ([workflow] default
        applies at the first start). A label from anyone else, or naming no
        workflow, is said once and ignored."""
        n, cfg = issue["number"], self.c.cfg
        names = sorted({str((lab or {}).get("name", ""))[len(LABEL_PREFIX):].strip().lower()
                        for lab in issue.get("labels") or []
                        if str((lab or {}).get("name", "")).lower().startswith(LABEL_PREFIX)})
        for name in names:
            if name not in cfg.workflows:
                self.c.say_once(("workflow label", n, name), "gh-%d label %s%s ignored: no such workflow "
                                "(defined: %s)", n, LABEL_PREFIX, name, ", ".join(cfg.workflows))
                continue
            who = applied_by(github, n, LABEL_PREFIX + name)
            if not self.trusted(github, who):
                self.c.say_once(("workflow label", n, name, who), "gh-%d label %s%s ignored: applied by %s, "
                                "who may not choose a workflow", n, LABEL_PREFIX, name, who[0] if who else "?")
                continue
            return {"workflow": name}
        return {}

    def trusted(self, github: GitHub, who: Optional[Tuple[str, str, str]]) -> bool:
        """The trigger label's rule (Coordinator.trusted), for another label."""
        if who is None:
            return False
        login, kind, _ = who
        if login in self.c.cfg.trusted_users:
            return True
        return kind != "Bot" and github.permission(login) in ("admin", "write", "maintain")

    def workflow_of(self, t: Task) -> Optional[Tuple[str, List[Stage]]]:
        """(name, stages) of the workflow `t` runs; None for the one-stage
        build of before (no Workflow line, and that is the default)."""
        cfg = self.c.cfg
        if not t.workflow and cfg.default_workflow == BUILD:
            return None
        name = t.workflow or cfg.default_workflow
        if name not in cfg.workflows:  # a reload took it away: the default goes on from the same lines
            self.c.say_once(("workflow gone", t.issue, name), "gh-%d workflow %s is no longer configured; "
                            "running %s", t.issue, name, cfg.default_workflow)
            name = cfg.default_workflow
        return name, cfg.workflows[name]

    # -- a stage starts (on the loop, then the prepare job) -----------------------
    def starting(self, t: Task) -> Dict[str, Any]:
        """spawn(): fields for the Active entry (the stage, and the workflow
        the first time); {} for a task that runs no workflow. Raises
        StartError when the workflow has nothing left to run (an entry
        edited by hand: its Stage lines say it ended)."""
        self.running.pop(t.issue, None)
        self._cfgs.pop(t.issue, None)
        found = self.workflow_of(t)
        if found is None:
            return {}
        name, stages = found
        names = tuple(s.name for s in stages)
        step = plan_next(names, t.stage_runs, self.c.cfg.review_rounds)
        if step.stage is None:
            raise StartError(f"the workflow {name} has no stage left to run (its Stage lines say it "
                             f"{'stopped Blocked' if step.blocked else 'ended'}); remove them to run it again")
        stage = stages[names.index(step.stage)]
        self.running[t.issue] = Start(name, stage, step.at, names,
                                      continuing=any(r.outcome == "completed" for r in t.stage_runs),
                                      branch=t.branch, session=self.session(stage, t), review_round=step.review_round)
        fields: Dict[str, Any] = {"stage": step.at}
        if t.workflow != name:
            fields["workflow"] = name
        return fields

    @staticmethod
    def session(stage: Stage, t: Task) -> str:
        """The session a stage with resume = true continues: the last
        completed stage's. Not after a run of this stage failed since (the
        session may be gone: the CLI's store cleaned, the worktree moved), so
        a retry starts afresh with the files as its context."""
        if not stage.resume:
            return ""
        for run in reversed(t.stage_runs):
            if run.outcome == "completed":
                break
            if run.name == stage.name:
                return ""
        return last_session(t.stage_runs)

    def adopted(self, t: Task) -> None:
        """recover(): the stage an Active entry's worker runs, after a restart."""
        self.running.pop(t.issue, None)
        self._cfgs.pop(t.issue, None)
        found = self.workflow_of(t)
        if found is None:
            return
        name, stages = found
        names = tuple(s.name for s in stages)
        step = plan_next(names, t.stage_runs, self.c.cfg.review_rounds)
        stage_name = t.stage.name if t.stage is not None and t.stage.name in names else step.stage
        if stage_name is None:
            stage_name = BUILD if BUILD in names else names[-1]  # judged as one; its end is recorded, not run
        self.running[t.issue] = Start(name, stages[names.index(stage_name)], t.stage, names,
                                      continuing=True, branch=t.branch, review_round=step.review_round)

    def forget(self, issue: int) -> None:
        """A stage's run has ended and no next stage follows at once: what
        runs next on this issue (a retry, a follow-up round) is looked up
        afresh, never taken for this stage."""
        self.running.pop(issue, None)
        self._cfgs.pop(issue, None)

    def staged(self, issue: int) -> bool:
        return issue in self.running

    def prepare(self, w: Any, issue: dict, run: int) -> bool:
        """Off the loop (Coordinator.prepare for a stage): the worktree, the
        stage's prompt with what the earlier stages left. Raises StartError."""
        start, cfg, git = self.running[w.issue], self.c.cfg, self.c.git
        repaired = False
        try:
            if start.continuing and start.branch:
                w.branch = start.branch
                w.tree = git.reuse_worktree(w.issue, w.branch)
            else:
                w.branch = git.unused_branch(w.issue, run)
                w.tree, repaired = git.prepare_worktree(w.issue, w.branch)
            git.exclude_tac(w.tree)
            name = start.stage.name
            if name in (PLAN, REVIEW):
                set_aside_stage_file(w.tree, name)  # a run that writes none is not judged by the last one's
            context = StageContext(
                plan=(read_stage_file(w.tree, PLAN) or "") if name != PLAN else "",
                review=(read_stage_file(w.tree, REVIEW) or "") if name == BUILD and start.review_round else "",
                diff=git.diff_against_base(w.branch) if name == REVIEW else "",
                review_round=start.review_round)
        except (GitError, OSError) as e:
            raise StartError(f"worktree: {e}")
        try:
            prompt = build_stage_prompt(cfg, start.stage, w.issue, issue, w.branch, w.tree, context)
        except OSError as e:
            raise StartError(f"template {start.stage.template_path}: {e.strerror}")
        write_atomic(cfg.prompt_path(w.issue), prompt.encode("utf-8"))
        return repaired

    # -- while it runs --------------------------------------------------------------
    def cfg_for(self, issue: int) -> Config:
        """The config a worker runs under: its stage's command, model,
        template, max_turns, per_run_usd and timeout (Config.for_stage)."""
        cfg, start = self.c.cfg, self.running.get(issue)
        if start is None:
            return cfg
        hit = self._cfgs.get(issue)
        if hit is None or hit[0] is not cfg or hit[1] != start.stage.name:
            stage = cfg.stages.get(start.stage.name, start.stage)  # a reload's values, where it still has the stage
            hit = self._cfgs[issue] = (cfg, start.stage.name, cfg.for_stage(stage))
        return hit[2]

    def env(self, issue: int) -> Dict[str, str]:
        start = self.running.get(issue)
        return {"TAC_STAGE": start.stage.name} if start else {}

    def argv(self, issue: int) -> List[str]:
        """What the stage's command gets after worker_argv(): --resume."""
        start = self.running.get(issue)
        return ["--resume", start.session] if start is not None and start.session else []

    def attempt_fields(self, issue: int) -> Dict[str, Any]:
        """Added to the transcript's attempt line: the viewer's --stage reads it."""
        start = self.running.get(issue)
        return {"stage": start.stage.name} if start else {}

    def stage_name(self, issue: int) -> str:
        start = self.running.get(issue)
        return start.stage.name if start else ""

    # -- a stage ends (off the loop, in the finish job) ------------------------------
    def judge(self, w: Any, task: Task, s: Any, elapsed: float) -> Tuple[Any, int]:
        """Coordinator.judge for a stage run: the Outcome to record, its
        stage line attached, and the commits to push. NEXT_STAGE: the stage
        completed and another follows; "open_pr": the workflow is done and
        the pull request says what it found (pull_note)."""
        c, start = self.c, self.running[w.issue]
        name = start.stage.name
        if name == BUILD:
            outcome, commits = c.judge(w, s, elapsed)  # commits decide, as for a plain run
        else:
            # A plan or a review commits nothing: the branch's commits are
            # build's and say nothing of this run.
            outcome, commits = self.decide_outcome(
                pr_url="", blocked_reason=blocked_reason(w.tree), commits=0, stop_reason=w.stop_reason,
                returncode=w.returncode, summary=s, elapsed=elapsed, startup_grace=c.cfg.startup_grace), 0
        text = read_stage_file(w.tree, name) if name in (PLAN, REVIEW) else None
        end = stage_outcome(name, outcome.kind, outcome.reason, text=text,
                            ended_well=ended_well(w.stop_reason, w.returncode, s))
        run = StageRun(name, end.outcome, elapsed, getattr(s, "cost", 0.0), getattr(s, "session_id", "") or "",
                       redact(end.note))
        if end.kind != DONE:
            return dataclasses.replace(outcome, kind=end.kind, reason=end.reason or outcome.reason,
                                       stage_run=run), commits
        runs = list(task.stage_runs) + [run]
        step = plan_next(start.names, runs, c.cfg.review_rounds)
        if step.stage is not None:
            return dataclasses.replace(outcome, kind=NEXT_STAGE, reason="", draft=False, stage_run=run), 0
        return self.pull_request(w, outcome, step, runs, run)

    def pull_request(self, w: Any, outcome: Any, step: Step, runs: List[StageRun], run: StageRun) -> Tuple[Any, int]:
        """The workflow is done: what may be pushed is checked as a plain
        run's is (workflow files held), and .tac/ forced into a commit holds
        the branch too. Raises GitError when git cannot count the commits."""
        git = self.c.git
        commits = git.commits_ahead(w.branch)
        if commits == 0:
            return dataclasses.replace(outcome, kind="failed", reason="the workflow ended with no commits to push",
                                       stage_run=run), 0
        try:
            held = git.held_paths(w.branch) + git.tac_committed(w.branch)
        except GitError as e:
            return dataclasses.replace(outcome, kind="blocked", stage_run=run, reason=(
                f"could not check the branch for workflow changes and .tac/ files ({e}); review the worktree "
                f"before pushing")), 0
        if held:
            log.warning("gh-%d not pushed: changes %s", w.issue, ", ".join(held))
            return dataclasses.replace(outcome, kind="blocked", stage_run=run, reason=(
                f"the run changed {', '.join(held[:3])}; review the worktree before pushing (workflows run "
                f"with the repository's secrets, and .tac/ holds the stages' notes)")), 0
        note = pull_note(step, runs, read_stage_file(w.tree, PLAN))
        return dataclasses.replace(outcome, kind="open_pr", reason=note.reason, draft=note.draft,
                                   note=redact(note.body), stage_run=run), commits

    def workflow_next(self, t: Task) -> str:
        """What the entry `t` (as just written) runs next, for the log."""
        found = self.workflow_of(t)
        if found is None:
            return "?"
        step = plan_next([s.name for s in found[1]], t.stage_runs, self.c.cfg.review_rounds)
        return str(step.at) if step.at is not None else "the pull request"

    def said(self, issue: int, run: StageRun) -> str:
        """The log line's words for a completed stage with another to follow."""
        start = self.running.get(issue)
        return f"stage {run.name} {run.value}" + (f" (workflow {start.workflow})" if start else "")


def blocked_reason(tree: Path) -> Optional[str]:
    """BLOCKED.md's first line (None: no file), as Coordinator.judge reads it."""
    path = Path(tree) / "BLOCKED.md"
    if not path.exists():
        return None
    try:
        first = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        first = []
    return redact(first[0].lstrip("# ").strip()[:300]) if first else ""


def applied_by(github: GitHub, n: int, label: str) -> Optional[Tuple[str, str, str]]:
    """(login, type, time) of whoever last applied `label` to issue `n`, from
    its events (GitHub.labeller's cache is keyed for the trigger label)."""
    path = f"repos/{github.repo}/issues/{n}/events?per_page=100"
    found = None
    for ev in _items("GET", path, github.get_conditional(path), EVENT_KEYS):
        if _labelled_with(ev, label):
            found = _who(ev)
    return found
