"""Workflows: which stage runs next, decided from what tasks.md recorded.

A workflow is an ordered list of stages (config.toml's [workflows.<name>]),
each one worker run in the task's worktree and branch. This module owns the
rules between the runs and nothing else: no files, no processes, no clock.
The daemon records each stage run's result as a tasks.StageRun the moment it
ends, then asks `plan_next` what comes after; after a restart it asks again
from the same lines, so a completed stage never runs twice.

The rules:

- Stages run in the workflow's order. Only a *completed* run moves the
  workflow on; a failed run leaves its stage next again (the daemon's retry
  rules decide whether and when), a startup error too.
- A run that ended Blocked (it wrote BLOCKED.md) stops the workflow: a plan
  that says the issue needs a human stops it before anything expensive runs.
  It is the last line that counts: re-applying the label starts afresh, and
  a person who re-queues the entry by hand deletes that line to go on.
- `review` ends with a verdict, the first line of .tac/review.md:
  `approve`, or `changes: <summary>`. On `changes`, `build` runs again with
  the review in its prompt, then `review` again, at most `review_rounds`
  times; then the stages after `review` (if any), then the pull request,
  whatever the last verdict.
- A verdict that is neither (a missing file, "LGTM", an empty line) is
  *unclear*. It is not taken for `changes` (there is nothing for a build
  round to act on) nor for `approve`: the pull request opens as a draft whose
  body says the review gave no readable verdict, so a person looks first.
- The pull request carries the last verdict in its body; it is a draft
  unless that verdict is `approve` (or the workflow has no review) and the
  last build ended in success.

Results whose stage is not the one expected next (a person edited tasks.md,
or a reload changed the workflow under a running task) are skipped, never
guessed at: at worst a stage runs again.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

from adws.tasks import StageAt, StageRun

BUILD, PLAN, REVIEW = "build", "plan", "review"
BLOCKED = "blocked"     # next_stage's answer when the workflow stopped; never a stage's name (config refuses it)
DONE = "done"           # stage_outcome: the stage did its part, the workflow goes on
APPROVE, CHANGES, UNCLEAR = "approve", "changes", "unclear"
VERDICT_LIMIT = 300     # characters of a verdict's summary kept (tasks.md, the PR body)


# -- Verdicts -------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    kind: str           # APPROVE | CHANGES | UNCLEAR
    summary: str = ""   # changes: what must change; unclear: what was found instead

    @property
    def line(self) -> str:
        """How tasks.md records it (the note of the review's StageRun)."""
        if self.kind == APPROVE:
            return APPROVE
        return f"{self.kind}: {self.summary}" if self.summary else f"{self.kind}:"

    @classmethod
    def of_line(cls, line: str) -> "Verdict":
        """The verdict a StageRun's note recorded (Verdict.line read back)."""
        if line.startswith(UNCLEAR):
            return cls(UNCLEAR, line[len(UNCLEAR):].lstrip(":").strip())
        return parse_verdict(line)


# Decoration an agent adds around the one word although told not to:
# "**approve**", "# Approve", "`changes: x`", "Verdict: approve.".
_DECORATION = re.compile(r"^[\s#>*_`\"']*(?:verdict\s*:\s*)?|[\s*_`\"'.!]*$", re.I)
_CHANGES = re.compile(r"changes?(?:\s+requested)?(?:\s*:\s*(.*))?", re.I | re.S)


def parse_verdict(text: Optional[str]) -> Verdict:
    """The verdict of a review file: its first non-blank line, `approve` or
    `changes: <summary>` (any case, with markdown decoration tolerated).
    None (no file) and anything else are UNCLEAR, saying what was there."""
    if text is None:
        return Verdict(UNCLEAR, "the review wrote no .tac/review.md")
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    if not first:
        return Verdict(UNCLEAR, "the review's .tac/review.md is empty")
    word = _DECORATION.sub("", first)
    if word.lower() in ("approve", "approved"):
        return Verdict(APPROVE)
    m = _CHANGES.fullmatch(word)
    if m:
        return Verdict(CHANGES, _one_line(m.group(1) or ""))
    return Verdict(UNCLEAR, f"first line of .tac/review.md is {_one_line(first)!r}, "
                            f"not 'approve' or 'changes: ...'")


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= VERDICT_LIMIT else text[:VERDICT_LIMIT - 3] + "..."


# -- What runs next ---------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """Where a workflow stands: the stage to run next (None: the stages are
    all done, open the pull request) or blocked; and what the pull request
    will need to say."""
    stage: Optional[str]
    number: int = 0         # the stage's place in the workflow, from 1 (0 when none is next)
    total: int = 0
    review_round: int = 0   # rounds of changes so far: 1 for build and review after the first "changes"
    blocked: bool = False
    verdict: Optional[Verdict] = None   # the last review's, if a review completed

    @property
    def at(self) -> Optional[StageAt]:
        """The task's "- Stage:" line for this step, None when no stage is next."""
        if self.stage is None:
            return None
        return StageAt(self.stage, self.number, self.total, self.review_round)


def plan_next(stages: Sequence[str], runs: Sequence[StageRun], review_rounds: int) -> Step:
    """The next step of a workflow with `stages` (names, in order), given
    every stage run recorded so far, in order."""
    names = list(stages)
    total = len(names)
    if runs and runs[-1].outcome == "blocked":
        return Step(None, 0, total, blocked=True, verdict=_last_verdict(runs))
    pos, rnd, verdict = 0, 0, None
    for run in runs:
        if run.outcome != "completed" or pos >= total or run.name != names[pos]:
            continue
        if run.name == REVIEW:
            verdict = Verdict.of_line(run.note)
            if verdict.kind == CHANGES and rnd < review_rounds and BUILD in names:
                rnd += 1
                pos = names.index(BUILD)
                continue
        pos += 1
    if pos >= total:
        return Step(None, 0, total, rnd, verdict=verdict)
    return Step(names[pos], pos + 1, total, rnd, verdict=verdict)


def next_stage(stages: Sequence[str], runs: Sequence[StageRun], review_rounds: int) -> Optional[str]:
    """The name of the stage to run next; None: open the pull request;
    BLOCKED: the workflow stopped (the task ends Blocked)."""
    step = plan_next(stages, runs, review_rounds)
    return BLOCKED if step.blocked else step.stage


def _last_verdict(runs: Sequence[StageRun]) -> Optional[Verdict]:
    for run in reversed(runs):
        if run.name == REVIEW and run.outcome == "completed":
            return Verdict.of_line(run.note)
    return None


def last_session(runs: Sequence[StageRun]) -> str:
    """The session of the last completed stage run that recorded one: what
    a stage with resume = true continues (`claude -p --resume <id>`), or ""
    (then it starts afresh, with the files as its context)."""
    for run in reversed(runs):
        if run.outcome == "completed" and run.session:
            return run.session
    return ""


# -- How a stage ended ----------------------------------------------------------------

@dataclass(frozen=True)
class StageEnd:
    """What one stage run amounted to. `kind` is DONE (the workflow goes
    on: ask plan_next), "failed" (retry the stage, the daemon's rules), or
    the daemon's own outcome passed through unchanged: "completed" (a pull
    request for the branch exists already), "blocked", "stopped",
    "startup_error". `note` goes on the stage's tasks.md line."""
    kind: str
    reason: str = ""
    note: str = ""

    @property
    def outcome(self) -> str:
        """The StageRun outcome (tasks.STAGE_OUTCOMES) to record."""
        return "completed" if self.kind == DONE else self.kind


def stage_outcome(stage: str, kind: str, reason: str, *, ended_well: bool,
                  text: Optional[str] = None) -> StageEnd:
    """Judge a stage run the daemon has judged as a plain run (`kind` and
    `reason` from decide_outcome). A plan or a review commits nothing, so
    "no commits" says nothing about them; their file does:

    - plan: done when .tac/plan.md (`text`) has anything in it, else failed.
    - build: done when the branch has commits ("open_pr"), as a run today;
      a run that did not end in success keeps its reason as the note, and
      the pull request will be a draft.
    - review: always done (its verdict, possibly UNCLEAR, is the note): a
      review that could not judge must not throw the build's work away.
    - any other stage: done when the run ended in success.
    """
    if kind in ("completed", "blocked", "stopped", "startup_error"):
        return StageEnd(kind, reason, _one_line(reason))
    if stage == BUILD:
        if kind == "open_pr":
            return StageEnd(DONE, reason, _one_line(reason))
        return StageEnd("failed", reason, _one_line(reason))
    if stage == PLAN:
        if text is not None and text.strip():
            return StageEnd(DONE)
        why = "the plan stage wrote no .tac/plan.md" if text is None else "the plan stage's .tac/plan.md is empty"
        return StageEnd("failed", why, why)
    if stage == REVIEW:
        return StageEnd(DONE, "", parse_verdict(text).line)
    if ended_well:
        return StageEnd(DONE)
    why = reason or "the run did not end in success"
    return StageEnd("failed", why, _one_line(why))


# -- The pull request ------------------------------------------------------------------

@dataclass(frozen=True)
class PullNote:
    draft: bool
    reason: str     # why it is a draft ("" when it is not): the daemon's Outcome.reason
    body: str       # markdown for the pull request's body: the plan's summary and the verdict


def pull_note(step: Step, runs: Sequence[StageRun], plan_text: Optional[str] = None) -> PullNote:
    """What the pull request of a finished workflow says, and whether it is
    a draft (see the module's rules)."""
    parts, why = [], []
    summary = plan_summary(plan_text)
    if summary:
        parts.append(f"**Plan:** {summary}")
    v = step.verdict
    rounds = f" after {step.review_round} round{'s' if step.review_round != 1 else ''} of changes" \
        if step.review_round else ""
    if v is not None:
        if v.kind == APPROVE:
            parts.append(f"**Review:** approved{rounds}.")
        elif v.kind == CHANGES:
            parts.append(f"**Review:** changes still requested{rounds}: {v.summary}")
            why.append(f"the review still asks for changes{rounds}: {v.summary}")
        else:
            parts.append(f"**Review:** no readable verdict ({v.summary}).")
            why.append(f"the review gave no readable verdict ({v.summary})")
    build = next((r for r in reversed(runs) if r.name == BUILD and r.outcome == "completed"), None)
    if build is not None and build.note:
        why.append(build.note)
    return PullNote(bool(why), "; ".join(why), "\n\n".join(parts))


def plan_summary(text: Optional[str], limit: int = 600) -> str:
    """The plan's first paragraph that is not a heading (the plan prompt
    asks for two or three sentences there), on one line; else its title."""
    if not text:
        return ""
    title, paragraph = "", []
    for line in text.splitlines() + [""]:
        stripped = line.strip()
        if stripped.startswith("#"):
            if paragraph:
                break
            title = title or stripped.lstrip("#").strip()
            continue
        if stripped:
            paragraph.append(stripped)
        elif paragraph:
            break
    found = " ".join(" ".join(paragraph).split()) or title
    if found.lower().startswith("plan:"):
        found = found[5:].strip()
    return found if len(found) <= limit else found[:limit - 3] + "..."


def ended_well(stop_reason: str, returncode: Optional[int], summary: object) -> bool:
    """A run that ended by itself, with status 0 and a successful result
    (decide_outcome's rule, for stage_outcome's `ended_well`)."""
    return (stop_reason == "" and returncode in (0, None) and bool(getattr(summary, "saw_result", False))
            and not getattr(summary, "is_error", False))
