#!/usr/bin/env python3
"""TAC coordinator: turns labelled GitHub issues into pull requests.

One polling loop reads the open issues that carry the trigger label (through
`gh api`), keeps the queue in tasks.md, gives each issue a git worktree and a
`claude -p` worker, supervises the worker, and ends every task as a pull
request, a Blocked entry or a clear failure, with the issue told what happened.

This file is the daemon, read top to bottom:

    1. Configuration            -> adws/config.py (strict TOML, shared with the tools)
    2. Small helpers            time, logging
    3. GitHub                   -> adws/github.py (gh api, one error type, ETags);
                                   what the issue is told: adws/outbox.py
    4. Git and worktrees        -> adws/gitops.py (fail-closed checks, the push)
    5. Workers                  -> adws/workers.py (the process state machine, env,
                                   signals, orphans); what may start: adws/gates.py
    6. Policy                   pure decisions: retries, backoff, outcomes (the prompt: adws/prompt.py)
    7. The coordinator          tick(now): housekeeping, reap, supervise, finish, poll,
                                   notify, dispatch, publish (disk retention: adws/retention.py),
                                   the status issue (-> adws/steering.py, adws/status_issue.py)
                                   follow-up rounds on its PRs (-> adws/rounds.py, adws/followup.py)
    8. Doctor (--check)         -> adws/doctor.py
    9. Signals, systemd, main()

Where things happen, by file: a task's state changes only in adws/tasks.py
(tasks.transition, called through Coordinator.change_state); workers are
started, stopped and swept through adws/workers.py; GitHub is called through
adws/github.py. This file is the only writer of tasks.md. What the tools
share with it lives in small sibling modules (config, tasks, transcript,
ledger, metrics, redact, files), so no tool ever imports this file. The
demo, the fake GitHub and the scripted worker live apart in adws/sandbox/.
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import fcntl
import functools
import json
import logging
import os
import random
import re
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

# `python adws/coordinator.py` puts adws/ itself on sys.path, not the project
# root; the shared modules are imported as the package `adws` either way.
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from adws import ledger, metrics, retention, tasks, transcript  # noqa: E402
from adws.files import write_atomic  # noqa: E402
from adws.ledger import usd  # noqa: E402
from adws.metrics import human_duration  # noqa: E402
from adws.config import EX_CONFIG, Config, ConfigError, load_config  # noqa: E402
from adws.claims import ClaimError  # noqa: E402
from adws.cluster import ClaimLost, ClaimUnreachable, Cluster, own_text, own_worker, own_workers, shown  # noqa: E402
from adws.gates import CLOSED, OPEN, Gates  # noqa: E402
from adws.jobs import Jobs  # noqa: E402
from adws.github import GitHub, GitHubError, is_bot  # noqa: E402
from adws.outbox import DONE_LABELS, Outbox  # noqa: E402,F401
# Tokens must never reach a log line, an issue comment or a terminal; the
# patterns are shared with tools/view_worker.py.
from adws.redact import redact  # noqa: E402
from adws.rounds import Rounds  # noqa: E402
from adws.steering import Steering  # noqa: E402
from adws.flow import NEXT_STAGE, Flow  # noqa: E402
from adws.status_issue import is_status_issue  # noqa: E402
from adws.tasks import ACTIVE, BLOCKED, COMPLETED, FAILED, PENDING, Task  # noqa: E402
# The seams, each a module of its own: git and worktrees, worker processes,
# the prompt. Their names are used here (and by the tests) as this module's.
from adws.gitops import (Git, GitError, PushRejected, branch_for, commits_ahead, git,  # noqa: E402,F401
                         held_paths, prepare_worktree, push_branch)
from adws.prompt import ISSUE_TEXT_LIMIT, build_prompt, clean_issue_text, render_template  # noqa: E402,F401
from adws.workers import (API_DOWN, CANCELLED, EXITED, RUNNING, STARTING, STOP_BY_USER, STOPPING,  # noqa: E402,F401
                          StartError, Worker, _ARCS, describe_exit, last_line, new_worker_id,
                          proc_start_time, process_age, process_alive, processes_tagged, signal_worker,
                          become_subreaper, reap_orphans, since_boot, sweep_tagged, worker_argv, worker_cap,
                          worker_env)


log = logging.getLogger("tac")

EX_OK, EX_FAIL = 0, 1


# ===========================================================================
# 1. Configuration: adws/config.py (the tools read the same file the same way)
# ===========================================================================

# ===========================================================================
# 2. Small helpers: time, logging
# ===========================================================================

def local_time(epoch: float) -> str:
    return tasks.format_time(epoch)


def clock_time(epoch: float) -> str:
    return time.strftime("%H:%M", time.localtime(epoch))


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True


def setup_logging(verbose: bool = False) -> None:
    """One line per event on stderr. Under systemd (JOURNAL_STREAM set) the
    journal adds its own timestamps, so ours are left out."""
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(message)s" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s %(message)s"
    handler.setFormatter(logging.Formatter(fmt, "%Y-%m-%d %H:%M:%S"))
    handler.addFilter(_RedactingFilter())
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


# ===========================================================================
# 3. GitHub: adws/github.py (REST through `gh api`, one error type)
# ===========================================================================



# ===========================================================================
# 4. Git and worktrees: adws/gitops.py
# ===========================================================================

def run_number(task: Task) -> int:
    """The number of the task's next run across every round: a re-labelled
    issue starts a new round of attempts but must not reuse the branch (and
    the pull request) of an earlier round."""
    return task.earlier_runs + task.attempts + 1


# ===========================================================================
# 5. Workers: adws/workers.py (the process state machine, env, signals)
# ===========================================================================

# ===========================================================================
# 6. Policy: pure decisions about a task after its worker ended
# ===========================================================================

def priority_of(labels: Iterable[dict]) -> int:
    for lab in labels or []:
        m = re.fullmatch(r"priority:p([0-3])", str((lab or {}).get("name", "")), re.I)
        if m:
            return int(m.group(1))
    return 2


class AttemptsSpent(Exception):
    """In a cluster: the claim this node took over says the issue has had
    its max_attempts runs already (on the node that held it and stopped).
    The task fails here without a run; this node, holding the claim, tells
    the issue."""


class PullRefused(Exception):
    """GitHub refused to open the pull request for a reason that asking
    again will not change (a 422 such as "No commits between main and
    auto/gh-1"): the run ends Blocked with GitHub's words."""

    def __init__(self, error: GitHubError):
        detail = next((str(x["message"]) for x in error.errors if x.get("message")), error.message)
        super().__init__("GitHub refused the pull request: " + " ".join(detail.split())[:300])
        self.error = error


# How each kind of ending is written in the ledger (ledger.OUTCOMES): "completed" for a
# run that ended with a PR, whoever opened it.
_LEDGER_OUTCOME = {"completed": ledger.COMPLETED, "open_pr": ledger.COMPLETED, "blocked": ledger.BLOCKED,
                   "stopped": "stopped", "failed": ledger.FAILED, "startup_error": "startup_error",
                   "lost": "stopped", NEXT_STAGE: ledger.COMPLETED}


@dataclass
class Outcome:
    kind: str        # completed | blocked | open_pr | stopped | failed | startup_error | lost (the claim)
    reason: str = ""
    draft: bool = False
    systemic: bool = False  # a startup error while the breaker is open: the system's, not the task's
    pr_url: str = ""        # the pull request: found (completed) or opened (open_pr)
    note: str = ""          # a workflow's words for the pull request's body (adws/flow.py)
    stage_run: Any = None   # a workflow stage's tasks.StageRun, recorded with the outcome
    pr_seen: Tuple[str, str] = ("", "")  # the PR's created_at, updated_at when opened: its follow-up watch starts there


@dataclass
class Decision:
    """One change a poll makes to tasks.md, its log line, and who asked
    again (a re-applied label, which also lifts the failure breaker)."""
    issue: int
    change: Callable[[tasks.TaskFile], Any]
    said: str = ""
    asked_again: str = ""


@dataclass
class Finished:
    """What a finish job found, for the loop to record."""
    summary: Any
    outcome: Optional[Outcome] = None       # None: a person changed the entry meanwhile
    sha: str = ""
    refused: Optional[GitHubError] = None   # GitHub refused the pull request for good


def _raise(result: Any, error: Optional[BaseException]) -> None:
    """A job's result that only matters when it failed: the loop's guard says why."""
    if error is not None:
        raise error


def decide_outcome(*, pr_url: str, blocked_reason: Optional[str], commits: int, stop_reason: str,
                   returncode: Optional[int], summary: Any, elapsed: float, startup_grace: float) -> Outcome:
    """The completion order: an existing PR, then BLOCKED.md, then a
    person's stop, then commits (we open the PR), then failure. A run that
    showed no model turn, or ended inside the startup grace, with nothing to
    show had a startup error."""
    if pr_url:
        return Outcome("completed", pr_url=pr_url)
    if blocked_reason is not None:
        return Outcome("blocked", blocked_reason or "BLOCKED.md gives no reason")
    # A person who stops a run wants it to end there: no PR from its commits,
    # no retry. The worktree is kept for them to look at.
    if stop_reason in (STOP_BY_USER, CANCELLED):
        return Outcome("stopped", stop_reason)
    ended_well = (stop_reason == "" and returncode in (0, None)
                  and getattr(summary, "saw_result", False) and not getattr(summary, "is_error", False))
    how = stop_reason or describe_exit(returncode)
    subtype = getattr(summary, "result_subtype", "")
    if subtype and not stop_reason:
        how = f"{how}, result {subtype}"
    if commits > 0:
        return Outcome("open_pr", "" if ended_well else f"the run did not end in success ({how})",
                       draft=not ended_well)
    # A fast run that still reached a result is a real (failed) run; a
    # quick exit with no result, or a run with no model turn, is a start-up
    # problem (missing CLI, bad auth, no network) and not the task's fault.
    turns = getattr(summary, "assistant_turns", 0)
    quick = elapsed < startup_grace and not stop_reason and not getattr(summary, "saw_result", False)
    if turns == 0 or quick:
        return Outcome("startup_error", how)
    return Outcome("failed", f"worker exited without commits ({how})")


def after_startup_error(task: Task, cfg: Config, now: float, why: str) -> Tuple[str, Dict[str, Any]]:
    """BACKOFF, or FATAL after the last step, as (state, fields) for
    tasks.transition. Startup errors are not the task's own failures:
    attempts stay as they were."""
    k = task.startup_errors + 1
    if k > len(cfg.startup_backoff):
        return FAILED, {"startup_errors": k, "reason": f"{k} startup errors in a row, last: {why}"}
    return PENDING, {"startup_errors": k, "next_attempt": local_time(now + cfg.startup_backoff[k - 1]),
                     "reason": f"startup error: {why}"}


def after_failed_run(task: Task, cfg: Config, now: float, why: str) -> Tuple[str, Dict[str, Any]]:
    """A run that got going and failed: retry with backoff up to
    max_attempts. Returns (state, fields) for tasks.transition."""
    if task.attempts >= cfg.max_attempts:
        reason = why if task.attempts <= 1 else f"{why} (attempt {task.attempts} of {cfg.max_attempts})"
        return FAILED, {"startup_errors": 0, "reason": reason}
    delay = cfg.retry_backoff[min(task.attempts - 1, len(cfg.retry_backoff) - 1)]
    return PENDING, {"startup_errors": 0, "next_attempt": local_time(now + delay),
                     "reason": f"attempt {task.attempts} failed: {why}"}


def stop_reason_for(w: Worker, cfg: Config, now: float, summary: Any, stop_file: bool) -> str:
    """Why a live worker must be stopped now, or ''. Pure: time comes in as `now`."""
    if stop_file:
        return STOP_BY_USER
    if now - w.started_at > cfg.timeout:
        return f"timed out after {cfg.timeout:.0f} s"
    if now - w.last_output_at > cfg.stall_timeout:
        return f"stalled: no output for {cfg.stall_timeout:.0f} s"
    if w.result_seen_at is not None and now - w.result_seen_at > cfg.result_exit_grace:
        return f"did not exit {cfg.result_exit_grace:.0f} s after its result"
    if cfg.max_log_mb > 0 and w.follower.offset - w.log_start > cfg.max_log_mb * 1024 * 1024:
        return f"transcript over max_log_mb {cfg.max_log_mb:g} MB"
    if cfg.per_run_usd > 0 and summary.cost > cfg.per_run_usd:
        return f"run cost {usd(summary.cost)} over per_run_usd {usd(cfg.per_run_usd)}"
    if summary.assistant_turns == 0 and summary.api_retries >= cfg.api_retry_limit:
        return f"{API_DOWN}: {summary.api_retries} retries ({summary.last_api_error or 'no answer'})"
    return ""


# ===========================================================================
# 7. The coordinator: tick(now) = reap, supervise, finish, poll, notify, dispatch, publish, status issue
# ===========================================================================
EDITED_AFTER_LABEL = "issue edited after it was labelled; a trusted person must re-apply the label"
SPAWNING_PAUSED_START = "startup error while spawning is paused, not counted"
FINISH_TRIES, FINISH_GIVE_UP_AFTER = 3, 3600.0  # a finish that keeps failing ends Blocked
HOUSEKEEPING_EVERY = 3600.0
STOP_JOBS_GRACE = 3.0  # seconds a stop waits for jobs in flight (a push, a poll) to end


class Coordinator:
    """Owns the workers and is the only writer of tasks.md."""

    def __init__(self, cfg: Config, github: Optional[GitHub] = None,
                 clock: Optional[Callable[[], float]] = None, dry_run: bool = False,
                 environ: Optional[Dict[str, str]] = None, wall: Optional[Callable[[], float]] = None,
                 threads: int = 0):
        self.cfg = cfg
        self.github = github or GitHub(cfg.repo)
        # The seams a test may replace (honcho's _process_ctor): the clone and
        # how a worker process is made. The clock is passed in (below).
        self.git = Git(cfg)
        self.popen: Callable[..., subprocess.Popen] = subprocess.Popen
        self.subreaper = False  # main() makes the daemon the subreaper of its workers' orphans
        # Slow git and gh work runs off the loop (adws/jobs.py); threads=0
        # runs it inline, as the tests and --once do.
        self.jobs = Jobs(threads, guard=self.guarded)
        self.starting: Dict[int, Worker] = {}  # workers whose worktree a job is making
        self._polled = False                   # a poll's result was applied since the last tick
        self._poll_asked = False               # a poll asked for (SIGHUP, start-up) and not yet begun
        # Jobs tell the issue; what they learn (a comment id, a notice
        # delivered) is written to tasks.md on the loop.
        self.outbox = Outbox(cfg, self.github,
                             lambda *a, **k: self.jobs.on_loop(functools.partial(self.amend, *a, **k)),
                             lambda e: self.jobs.on_loop(self.github_failed, self.clock(), e), dry_run)
        # Two clocks. `clock` measures durations and schedules (timeouts,
        # backoffs, the poll): it never jumps, so NTP stepping the Pi's clock
        # at boot neither kills a young worker nor stops the polling. `wall`
        # dates what leaves the process (tasks.md, metrics.json, the ledger,
        # comments). A test passes one fake clock for both.
        self.clock = clock or since_boot
        self._wall = wall or (clock if clock is not None else time.time)
        self._offset = self._wall() - self.clock()
        self.dry_run = dry_run
        self.environ = dict(os.environ if environ is None else environ)
        now = self.clock()
        self.started_at = now
        self.workers: Dict[int, Worker] = {}
        self.max_concurrent = worker_cap(cfg.max_concurrent)
        # [cluster]: claims on the remote decide which node runs an issue
        # (adws/cluster.py); None for a single coordinator, which claims nothing.
        self.cluster: Optional[Cluster] = Cluster(
            cfg, self.jobs, self.say_once, live=lambda n: n in self.workers and self.workers[n].state != EXITED
        ) if cfg.cluster_enabled else None
        # GitHub
        self.issues: Dict[int, dict] = {}     # the last good listing, by number
        self.listing_ok = False               # is self.issues current?
        self.next_poll_at = 0.0
        self.last_poll_at: Optional[float] = None
        self.poll_failures = 0
        self.github_down_since: Optional[float] = None
        self.github_auth_failed = False  # the outage is our login (401), which waiting will not fix
        self.github_error = ""
        self.slow_poll = ""                   # why polling is slowed (rate limit nearly spent), for the status line
        # spawning
        self.gates = Gates(cfg)
        self.next_due_at = 0.0                # earliest Pending "Next attempt" still ahead
        self.disk: Dict[str, Any] = {}        # MB used by trees and logs, and free (housekeeping)
        self.spend = ledger.SpendTracker(cfg.ledger_path, self.wall(now))
        self.counters = {k: 0 for k in ("launched", "completed", "failed", "blocked", "startup_errors",
                                        "prs_opened", "github_errors", "worktree_repairs")}
        self._said: set = set()               # one-time log lines (skipped issues, tasks.md problems)
        self._status_line = ""
        self._metrics_at = 0.0
        self._metrics_counters: Dict[str, int] = {}   # as last written: an event shows at once
        self.ready = False                    # first successful cycle done (systemd READY=1)
        self._dry_doc: Optional[tasks.TaskFile] = None
        self._archived_day = ""
        self._housekept_at = 0.0
        self.store = tasks.Store(cfg.tasks_path)  # tasks.md, parsed again only when its bytes change
        self.health: Tuple[str, str] = (metrics.OK, "")  # (level, reason) as write_metrics last judged
        # The status issue (opt-in, [github] status_issue): adws/steering.py
        self.steering = Steering(self, entry_fields)
        self.steering.status = self.steering.issue_for(cfg, self.github)
        # Workflows, stage by stage (adws/flow.py; the rules: adws/workflow.py)
        self.flow = Flow(self, decide_outcome)
        # Follow-up rounds on the PRs of Completed tasks ([followup]): adws/rounds.py
        self.followups = Rounds(self)

    # -- helpers -----------------------------------------------------------------
    def wall(self, t: float) -> float:
        """The wall-clock time of `t` on the steady clock, by the wall clock
        as it reads now (so a stepped clock dates everything the new way)."""
        return t + self._offset

    def say_once(self, key: Any, message: str, *args: Any) -> None:
        if key not in self._said:
            if len(self._said) > 2000:  # bounded: at worst a line is said twice in a month
                self._said.clear()
            self._said.add(key)
            log.info(message, *args)

    def load(self) -> tasks.TaskFile:
        """tasks.md as it is now, for reading: changes go through update()."""
        if self.dry_run and self._dry_doc is not None:
            return self._dry_doc  # --dry-run: changes live in memory only
        doc, problems = self.store.read()
        if self.dry_run:
            self._dry_doc = doc
        for p in problems:  # at most tasks.MAX_PROBLEMS + a count: parse() summarises
            # Said once per line's content: a line moving down the file is no news.
            self.say_once(("tasks.md", _LINE_NUMBER.sub("", p, count=1)), "tasks.md: %s", p)
        return doc

    def update(self, change: Callable[[tasks.TaskFile], Any]) -> Any:
        """Apply `change` to the current tasks.md and write it atomically. If
        a person edited the file meanwhile, the change is re-applied to their
        version: their edit is never overwritten."""
        if self.dry_run:
            return change(self.load())
        _, result = self.store.update(change)
        return result

    def other_workers(self, w: Worker) -> Set[int]:
        """The PIDs of the other workers (ours in sessions of their own, like an orphan)."""
        return {x.pid for x in self.workers.values() if x is not w}

    def live_workers(self) -> List[Worker]:
        return [w for w in self.workers.values() if w.state != EXITED]

    @property
    def paused(self) -> str:
        return self.gates.paused

    # -- the one writer of task state ----------------------------------------------
    def change_state(self, issue: int, to: Optional[str], *, expect: Any, owner: Optional[str] = None,
                     now: Optional[float] = None, **fields: Any) -> Optional[Task]:
        """tasks.transition, written atomically and re-applied on top of a
        person's concurrent edit. None: the entry was no longer as expected."""
        stamp = None if now is None else self.wall(now)
        return self.update(lambda doc: tasks.transition(doc, issue, to, expect=expect, owner=owner,
                                                        now=stamp, **fields))

    def amend(self, issue: int, *, expect: Any, owner: Optional[str] = None, **fields: Any) -> Optional[Task]:
        return self.update(lambda doc: tasks.amend(doc, issue, expect=expect, owner=owner, **fields))

    # -- the tick ----------------------------------------------------------------
    def tick(self, now: float, force_poll: bool = False) -> None:
        """One cycle, in this order (each step may rely on the ones before).
        Each step is guarded: its failure is logged once and waits for the
        next tick; it never ends the daemon or skips the steps after it.
        0. housekeeping: archive yesterday's completed entries when the day
           changes; hourly, prune old worktrees and logs and measure the disk
        1. reap workers whose process ended (by PID); take the results of
           the jobs that finished (adws/jobs.py: slow git and gh work)
        2. supervise live workers: read new log lines, STOP file, timeouts, budget;
           in a cluster, renew the claims held and release those that are over
        3. finish ended workers from their evidence (PR, BLOCKED.md, commits): a job
        4. poll GitHub when due (a job) and reconcile the queue with it
        5. deliver owed comments and label swaps (once per poll)
        6. dispatch pending tasks into free slots
        7. publish: tasks.md status line, metrics.json, systemd
        8. the status issue after each poll (a job): shown, alerts posted,
           the boxes people ticked carried out on the loop (adws/steering.py)
        9. follow-ups after each poll (a job reads the watched PRs): a due
           round starts in a slot the dispatch left free (adws/rounds.py)"""
        self._offset = self._wall() - self.clock()
        if local_time(self.wall(now))[:10] != self._archived_day:
            self.guarded("archive", self.archive, now)
        if now >= self._housekept_at:
            self.guarded("housekeeping", self.housekeep, now)
        self.guarded("reap", self.reap, now)
        self.jobs.apply()
        self.guarded("supervise", lambda: self.supervise(now, self.load()))
        if self.cluster is not None:
            self.guarded("claims", self.tend_claims, now)
        self.guarded("finish", self.finish_exited, now)
        self._poll_asked = self._poll_asked or force_poll  # kept while a poll is under way
        if (self._poll_asked or now >= self.next_poll_at) and not self.jobs.busy(("poll",)):
            self._poll_asked = False
            self.guarded("poll", self.poll, now)
        polled, self._polled = self._polled, False
        if self.listing_ok:
            if polled:
                self.guarded("outbox", self.deliver_outbox, now)
            self.guarded("dispatch", self.dispatch, now)
        self.guarded("publish", self.publish, now, polled)
        self.guarded("status issue", self.steering.step, now)
        self.guarded("follow-ups", self.followups.step, now)

    def guarded(self, step: str, fn: Callable[..., Any], *args: Any) -> Any:
        """The error boundary of one tick step (or one task's part of it):
        an error is said once and the step is tried again later."""
        try:
            return fn(*args)
        except GitHubError as e:
            self.say_once((step, str(e)), "%s deferred: github: %s", step, e)
            self.github_failed(self.clock(), e)
        except (GitError, OSError, tasks.ConflictError) as e:
            self.say_once((step, str(e)), "%s deferred: %s", step, e)
        except Exception as e:  # deliberate: a bug in one step must not stop a daemon nobody watches
            self.say_once((step, repr(e)), "%s failed, will retry: %s: %s", step, type(e).__name__, e)
            log.debug("%s traceback", step, exc_info=True)
        return None

    # 1 ------------------------------------------------------------------------
    def reap(self, now: float) -> None:
        if self.subreaper:
            reap_orphans({w.pid for w in self.workers.values()})
        for w in list(self.workers.values()):
            if w.state != EXITED and w.poll_exit():
                w.follower.catch_up()  # to the end, in bounded chunks: the result line decides a lot
                w.change_state(EXITED, now)
                log.info("%s exited pid=%d %s after %s", w.name, w.pid, describe_exit(w.returncode),
                         human_duration(now - w.started_at))

    # 2 ------------------------------------------------------------------------
    def supervise(self, now: float, doc: tasks.TaskFile) -> None:
        for w in self.live_workers():
            if w.follower.poll():
                w.last_output_at = now
            s = w.follower.summary
            if s.saw_result and w.result_seen_at is None:
                w.result_seen_at = now
            if w.state == STARTING and (s.assistant_turns > 0 or now - w.started_at >= self.cfg.startup_grace):
                w.change_state(RUNNING, now)
            if s.assistant_turns > 0 and not w.got_going:
                w.got_going = True
                self.gates.startup.got_going(w.issue, now)
            if w.state == STOPPING:
                self.advance_stop(w, now)
                continue
            task = doc.governing(w.issue)
            if task is None:
                # Not a person's decision: moving the entry is. The file was
                # deleted, cut or overwritten; the worker runs on.
                self.restore_entry(w, now)
                continue
            if task.state != ACTIVE:
                # A person moved the entry out of Active (e.g. to Failed): that cancels it.
                reason = CANCELLED
            else:
                if task.worker == w.worker_id:
                    w.entry = task
                reason = stop_reason_for(w, self.flow.cfg_for(w.issue), now, s, (w.tree / "STOP").exists())
                if not reason and self.cluster is not None:
                    reason = self.cluster.stop_reason(w.issue, self.wall(now))  # the claim is lost, or about to be
            if reason:
                self.begin_stop(w, reason, now)
            elif w.comment_id and self.cfg.progress_every > 0 and now - w.comment_at >= self.cfg.progress_every:
                w.comment_at = now
                last = f", last step: `{s.last_tool}`" if s.last_tool else ""
                self.comment(w, f"🤖 Working{self.on_node} on branch `{w.branch}` (attempt {w.attempt}): "
                                f"{human_duration(now - w.started_at)} so far, {usd(s.cost)}{last}.")

    def tend_claims(self, now: float) -> None:
        """In a cluster: renew the claims held, release those that are over
        (adws/cluster.py), and show them on the Pending entries."""
        def busy(n: int) -> bool:  # a job that writes the claim itself
            return any(self.jobs.busy((k, n)) for k in ("start", "finish", "notice"))
        self.cluster.tend(self.load(), set(self.issues), busy, self.wall(now), now)
        self.show_claims()

    def show_claims(self) -> None:
        """Each Pending entry's "- Claimed by:" line as the claims were last seen."""
        texts = self.cluster.texts(self.load())
        if texts:
            self.update(lambda doc: [tasks.amend(doc, n, expect=PENDING, claimed_by=text)
                                     for n, text in sorted(texts.items())])

    def comment(self, w: Worker, text: str) -> None:
        """Post or edit the task's status comment as a job; remember its id."""
        def remember(comment_id: Optional[int], error: Optional[BaseException]) -> None:
            w.comment_id = comment_id or w.comment_id
            _raise(None, error)
        self.jobs.submit(("comment", w.issue), functools.partial(self.outbox.post_or_edit, w.issue, w.comment_id,
                                                                 text), remember)

    @property
    def on_node(self) -> str:
        """" on pi-garage" in a cluster, where the issue's reader must know which machine runs it."""
        return f" on {self.cfg.node}" if self.cluster is not None else ""

    def restore_entry(self, w: Worker, now: float) -> None:
        """Write back the entry of a live worker that vanished from tasks.md,
        keeping the file as it was found beside it."""
        if w.entry is None:
            self.say_once(("vanished", w.issue), "%s entry missing from tasks.md; the worker runs on", w.name)
            return
        try:
            found = self.cfg.tasks_path.read_bytes()
        except FileNotFoundError:
            found = b""
        kept = ""
        if tasks.parse(found.decode("utf-8", "surrogateescape"))[1]:  # lines it could not read: keep them
            damaged = self.cfg.tasks_path.with_name(
                f"{self.cfg.tasks_path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}")
            write_atomic(damaged, found)
            kept = f"; the file as found is kept in {damaged.name}"
        fields = {f.name: getattr(w.entry, f.name) for f in dataclasses.fields(w.entry)
                  if f.name not in ("issue", "state", "extra", "notes")}
        if self.change_state(w.issue, ACTIVE, expect=tasks.NEW, **fields) is not None:
            log.warning("%s entry vanished from tasks.md while its worker runs: written back%s", w.name, kept)

    def begin_stop(self, w: Worker, reason: str, now: float) -> None:
        log.info("%s stopping pid=%d: %s", w.name, w.pid, reason)
        if reason.startswith(API_DOWN):
            # The API is down or refusing us: every other start would fail
            # the same way, so the breaker opens at once.
            self.gates.startup.open_now(reason, now)
        w.stop_reason = reason
        w.change_state(STOPPING, now)
        w.stop_stage = 0
        self.advance_stop(w, now)

    def advance_stop(self, w: Worker, now: float) -> None:
        """SIGINT (the CLI stops its tools), then SIGTERM, then SIGKILL to the
        group and every tagged process; stop_grace seconds between stages."""
        if now < w.stop_next_at:
            return
        stages = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
        if w.stop_stage < len(stages):
            sig = stages[w.stop_stage]
            log.debug("%s sending %s to group %d", w.name, sig.name, w.pid)
            signal_worker(w, sig, self.other_workers(w))
            w.stop_stage += 1
            w.stop_next_at = now + self.cfg.stop_grace
        elif not w.poll_exit():
            sweep_tagged(w, self.other_workers(w))

    # 3 ------------------------------------------------------------------------
    # Finishing takes git and gh calls (seconds on a Pi; a minute when a
    # remote hangs): finish_work runs as a job off the loop, and finish_done,
    # on the loop, records what it found.
    def finish_exited(self, now: float) -> None:
        if self.github_down_since is not None and now < self.next_poll_at:
            return  # GitHub is down: try again with the poll's backoff, not every second
        for w in list(self.workers.values()):
            if w.state == EXITED and now >= w.finish_next_at and not self.jobs.busy(("finish", w.issue)):
                # On the loop, where the other workers are known for sure: a
                # worker started meanwhile must never be taken for an orphan.
                sweep_tagged(w, self.other_workers(w))  # nothing a worker started outlives it
                work, done = ((self.followups.finish_work, self.followups.finish_done) if w.round
                              else (self.finish_work, self.finish_done))  # a round ends on its PR
                self.jobs.submit(("finish", w.issue), functools.partial(work, w, now), functools.partial(done, w))

    def finish_failed(self, w: Worker, now: float, e: Exception) -> None:
        """Finishing needs git and GitHub. While GitHub is unreachable the
        task just waits; any other failure (a push the remote refuses, a git
        error) is retried with backoff and, after FINISH_TRIES tries or
        FINISH_GIVE_UP_AFTER seconds, ends the task Blocked with the
        worktree kept: one bad branch must not hold up every other task."""
        if isinstance(e, GitHubError):
            self.github_failed(now, e)
            if e.unreachable:
                self.say_once(("finish", w.issue, str(e)), "%s finishing deferred: github: %s", w.name, e)
                return
        if isinstance(e, ClaimUnreachable):  # is the issue still ours? Nothing leaves until that is known
            w.finish_next_at = now + self.cluster.retry_every
            self.say_once(("finish", w.issue, str(e)), "%s finishing deferred: %s", w.name, e)
            return
        w.finish_failures += 1
        w.finish_failed_at = w.finish_failed_at or now
        reason = f"push rejected by origin: {e}" if isinstance(e, PushRejected) else f"could not finish: {e}"
        if w.finish_failures < FINISH_TRIES and now - w.finish_failed_at < FINISH_GIVE_UP_AFTER:
            w.finish_next_at = now + min(self.cfg.poll_interval * 2 ** w.finish_failures, 600)
            log.warning("%s finishing failed (try %d of %d), again at %s: %s", w.name, w.finish_failures,
                        FINISH_TRIES, clock_time(self.wall(w.finish_next_at)), reason)
            return
        # Recorded first: if even that fails (a full disk), the worker stays
        # here and the next tick tries again.
        ended = self.change_state(w.issue, BLOCKED, expect=ACTIVE, owner=w.worker_id, now=now,
                                  reason=reason, attempts=w.attempt)
        del self.workers[w.issue]
        self.record_run(w, w.follower.summary, reason, now, ledger.BLOCKED)
        if ended is not None:
            self.counters["blocked"] += 1
            log.warning("%s blocked: %s", w.name, reason)
            self.jobs.submit(("notice", w.issue), functools.partial(self.tell, ended), _raise)

    def finish_work(self, w: Worker, now: float) -> "Finished":
        """Off the loop: decide how the run ended from its evidence and
        deliver its work (push, pull request). Records nothing."""
        s = w.follower.catch_up()
        task = self.load().governing(w.issue)
        if task is None or task.state != ACTIVE or task.worker != w.worker_id:
            return Finished(s)  # a person changed the entry
        elapsed = (w.exited_at or now) - w.started_at
        judge = functools.partial(self.flow.judge, task=task) if self.flow.staged(w.issue) else self.judge
        outcome, commits = judge(w, s=s, elapsed=elapsed)
        if self.cluster is not None:
            # Before anything of the run leaves this machine (a push, a pull
            # request, the label swap): is the issue still ours? A renewal says.
            lost = self.cluster.confirm_job(w.issue, w.worker_id, self.wall(now))
            if lost:
                return Finished(s, Outcome("lost", lost))
        done = Finished(s, outcome)
        if outcome.kind == "blocked" and commits > 0:
            try:
                self.git.push_branch(w.branch)  # best effort: Blocked says "pushed if it has commits"
            except GitError as e:
                log.warning("%s could not push %s: %s", w.name, w.branch, e)
        if outcome.kind == "open_pr":
            try:
                outcome.pr_url, outcome.pr_seen = self.open_pull(w, task, outcome, s, elapsed)
            except PullRefused as e:
                # Ends now, through the usual outcome path (Blocked notice,
                # worktree kept): retrying it would ask GitHub the same
                # question every backoff step for nothing.
                done.refused, done.outcome = e.error, Outcome("blocked", str(e))
        if done.outcome.kind in ("completed", "open_pr"):
            done.sha = self.git.head_sha(w.branch)
        if outcome.kind == "startup_error":
            outcome.reason = last_line(w.stderr_path, w.stderr_offset) or outcome.reason
        return done

    def finish_done(self, w: Worker, done: Optional["Finished"], error: Optional[BaseException]) -> None:
        """On the loop: the one write that ends the run, the ledger line,
        the breakers told; then the issue is told (a job of its own)."""
        now = self.clock()
        if error is not None:
            self.finish_failed(w, now, error)
            return
        if done.outcome is None:
            log.info("%s ended after a person changed its entry; leaving the entry as they set it", w.name)
            del self.workers[w.issue]
            self.record_run(w, done.summary, CANCELLED, now, "cancelled")
            return
        outcome = done.outcome
        if done.refused is not None:
            self.github_failed(now, done.refused)
        # A startup error while the breaker is open is the system's, not the task's.
        outcome.systemic = outcome.kind == "startup_error" and self.gates.startup.state != CLOSED
        try:
            ended = self.record_outcome(w, outcome, done.sha, now)
        except Exception:
            w.finish_next_at = now + self.cfg.poll_interval  # tasks.md could not be written: not every tick
            raise
        del self.workers[w.issue]
        if self.cluster is not None:
            self.cluster.lost.pop(w.issue, None)
        if outcome.kind == "startup_error":
            self.count_startup_error(w.issue, outcome.reason, now)
        elif outcome.kind in ("stopped", "lost"):
            self.gates.startup.probe_ended(w.issue, now)
        else:
            self.gates.startup.got_going(w.issue, now)
        self.record_run(w, done.summary, outcome.reason or outcome.kind, now, _LEDGER_OUTCOME[outcome.kind])
        if outcome.kind != NEXT_STAGE:
            self.flow.forget(w.issue)  # the workflow is over, or waits for a retry: a later run starts afresh
        if ended is None:
            log.info("%s entry changed by a person while finishing; left as they set it", w.name)
            return
        self.log_outcome(w, outcome, ended, now)
        if outcome.kind == "lost":
            return  # the issue is another node's now: its run tells the issue
        if outcome.kind == "failed":
            self.gates.failed_run(w.issue, outcome.reason)
        elif ended.state in (COMPLETED, BLOCKED):
            self.gates.failures.good_run()
        if outcome.kind == NEXT_STAGE:
            return  # the next stage starts as any start does (dispatch); the issue hears of it then
        self.jobs.submit(("notice", w.issue), functools.partial(self.announce, w, ended), _raise)

    def announce(self, w: Worker, ended: Task) -> None:
        """After the outcome is recorded: tell the issue, tidy up. A failure
        here never finishes the run again: an owed notice is delivered with
        the next poll (the outbox)."""
        # The issue is told first: removing the worktree takes a git call
        # (~0.1 s, more on a Pi) that nobody is waiting for.
        if ended.state in tasks.TERMINAL:
            self.tell(ended)
        if ended.state == COMPLETED:
            self.git.remove_worktree(w.tree)
        if ended.state not in tasks.TERMINAL and ended.comment_id:
            self.outbox.post_or_edit(ended.issue, ended.comment_id, f"⏳ Attempt did not finish: {ended.reason}. "
                                                             f"Next attempt at {ended.next_attempt}.")

    def tell(self, t: Task) -> None:
        """Off the loop: tell the issue how the task ended (adws/outbox.py).
        In a cluster the claim records the outcome first, so that a node
        reading it after a crash here, before the label swap, does not run
        the issue again; while that cannot be done the notice stays owed."""
        if self.cluster is not None and not self.cluster.record_job(t, self.wall(self.clock())):
            return
        self.outbox.notify(t)

    def judge(self, w: Worker, s: Any, elapsed: float) -> Tuple[Outcome, int]:
        """The outcome of an ended run and how many commits it has to push.
        Raises GitError when git cannot count the commits (unknown is not 0)."""
        blocked_reason = None
        blocked_file = w.tree / "BLOCKED.md"
        if blocked_file.exists():
            try:
                first = blocked_file.read_text(errors="replace").strip().splitlines()
            except OSError:
                first = []
            blocked_reason = redact(first[0].lstrip("# ").strip()[:300]) if first else ""
        commits = self.git.commits_ahead(w.branch)
        # A run with nothing to push may have opened its pull request itself
        # (an agent given a token): one conditional look-up, usually a free
        # 304. With commits, opening the PR finds an existing one (the 422).
        pr_url = self.github.pull_heads().get(w.branch, "") if commits == 0 and blocked_reason is None else ""
        outcome = decide_outcome(pr_url=pr_url, blocked_reason=blocked_reason, commits=commits,
                                 stop_reason=w.stop_reason, returncode=w.returncode, summary=s,
                                 elapsed=elapsed, startup_grace=self.cfg.startup_grace)
        if commits == 0 or outcome.kind not in ("blocked", "open_pr"):
            return outcome, commits
        # Pushing a branch that edits CI workflows lets the agent run code
        # with the repository's secrets: a person reviews it first. When git
        # cannot tell, the branch is held too.
        try:
            held = self.git.held_paths(w.branch)
        except GitError as e:
            log.warning("%s not pushed: could not check for workflow changes: %s", w.name, e)
            return Outcome("blocked", f"could not check the branch for workflow changes ({e}); "
                                      f"review the worktree before pushing"), 0
        if held:
            log.warning("%s not pushed: changes %s", w.name, ", ".join(held))
            return Outcome("blocked", f"the run changed {', '.join(held[:3])}; review the worktree "
                                      f"before pushing (workflows run with the repository's secrets)"), 0
        return outcome, commits

    def open_pull(self, w: Worker, task: Task, outcome: Outcome, s: Any,
                  elapsed: float) -> Tuple[str, Tuple[str, str]]:
        """Push the branch and open its pull request; returns the PR's URL
        and, when this call opened it, its created_at and updated_at.
        Idempotent: an earlier, interrupted finish may have done either.
        Raises PullRefused for a 422 that is not "already exists"."""
        self.git.push_branch(w.branch)
        issue = self.issues.get(w.issue) or {}
        title = (issue.get("title") or task.title)[:200]
        body = f"Closes #{w.issue}\n\nOpened by the TAC coordinator from `{w.branch}`."
        if outcome.note:
            body += f"\n\n{outcome.note}"
        if outcome.reason:
            body += f"\n\n**Draft:** {outcome.reason}."
        body += f"\n\n{_run_facts(s, elapsed)}"
        try:
            pr = self.github.create_pull(title, w.branch, self.cfg.base_branch, redact(body), outcome.draft)
            pr_url = pr.get("html_url", "")
            seen = (str(pr.get("created_at") or ""), str(pr.get("updated_at") or ""))
            self.counters["prs_opened"] += 1
        except GitHubError as e:
            if e.status != 422:
                raise
            if not (e.already_exists or e.drafts_unsupported):
                raise PullRefused(e) from e
            prs = self.github.pulls_for_head(w.branch)  # opened by an earlier, interrupted finish
            if not prs:
                raise
            pr_url, seen = prs[0].get("html_url", ""), ("", "")  # what happened on it since is unknown: read
        log.info("%s pr opened %s%s", w.name, pr_url, " (draft)" if outcome.draft else "")
        return pr_url, seen

    def record_outcome(self, w: Worker, outcome: Outcome, sha: str, now: float) -> Optional[Task]:
        """The one write that ends the run in tasks.md."""
        pr_url = outcome.pr_url

        def apply(doc: tasks.TaskFile) -> Optional[Task]:
            cur = doc.governing(w.issue)
            if cur is None:
                return None
            fields: Dict[str, Any] = {} if outcome.kind in ("startup_error", "lost") else \
                {"attempts": max(cur.attempts, w.attempt)}
            if outcome.kind == NEXT_STAGE:  # a workflow goes on: its next stage is due at once (adws/flow.py)
                to = PENDING
                fields.update(attempts=0, startup_errors=0, next_attempt="", reason="")
            elif outcome.kind in ("completed", "open_pr"):
                to = COMPLETED
                fields.update(pr=pr_url, commit=sha, completed=local_time(self.wall(now)), reason=outcome.reason)
                if self.cfg.followup_enabled and all(outcome.pr_seen):
                    # Nothing has happened on a PR opened just now: its follow-up watch reads its
                    # threads only once the PR changes (three requests a task fewer).
                    fields.update(watch_since=outcome.pr_seen[0], watch_seen=outcome.pr_seen[1])
            elif outcome.kind in ("blocked", "stopped"):  # stopped: FATAL at once, never retried
                to = BLOCKED if outcome.kind == "blocked" else FAILED
                fields.update(reason=outcome.reason)
            elif outcome.kind == "lost":  # another node runs it: not this run's failure, nothing counted
                to = PENDING
                fields.update(reason=f"not finished here: {outcome.reason}", next_attempt="")
            elif outcome.systemic:  # the task waits for the breaker; nothing counts against it
                to = PENDING
                fields.update(reason=f"{SPAWNING_PAUSED_START}: {outcome.reason}", next_attempt="")
            else:
                policy = after_startup_error if outcome.kind == "startup_error" else after_failed_run
                to, more = policy(dataclasses.replace(cur, **fields), self.cfg, self.wall(now), outcome.reason)
                fields.update(more)
            if outcome.stage_run is not None:  # the stage's line, in the same write that ends its run
                fields["stage_runs"] = cur.stage_runs + [outcome.stage_run]
            if to == PENDING and outcome.kind != "lost":
                fields.update(self.own_claim(w.issue, w.worker_id))  # the retry waits holding its claim
            elif to != PENDING:
                fields["claimed_by"] = ""  # ended: the entry's worker names the claim
            return tasks.transition(doc, w.issue, to, expect=ACTIVE, owner=w.worker_id, now=self.wall(now),
                                    **fields)
        return self.update(apply)

    def log_outcome(self, w: Worker, outcome: Outcome, ended: Task, now: float) -> None:
        if outcome.kind == "lost":
            log.warning("%s claim lost: %s; nothing pushed, the worktree is kept", w.name, outcome.reason)
        elif outcome.kind == NEXT_STAGE:
            log.info("%s %s; next: %s", w.name, self.flow.said(w.issue, outcome.stage_run),
                     self.flow.workflow_next(ended))
        elif outcome.kind == "startup_error":
            log.info("%s startup error: %s; %s", w.name, outcome.reason,
                     "waits for the breaker (not counted against it)" if outcome.systemic else
                     f"next attempt {ended.next_attempt}" if ended.state == PENDING else "giving up")
        elif ended.state == PENDING:
            log.info("%s failed: %s; retry at %s", w.name, outcome.reason, ended.next_attempt)
        else:
            key = {COMPLETED: "completed", BLOCKED: "blocked", FAILED: "failed"}[ended.state]
            self.counters[key] += 1
            log.info("%s %s%s", w.name, key, f": {ended.pr or ended.reason}" if (ended.pr or ended.reason) else "")

    def record_run(self, w: Worker, s: Any, exit_reason: str, now: float, outcome: str) -> None:
        """One ledger line per run, and the separator the viewer shows.
        ``outcome`` is one of ledger.OUTCOMES (the dashboard colours by it)."""
        record = transcript.ledger_record(w.issue, w.attempt, s, exit_reason, self.wall(now), outcome,
                                          stage=self.flow.stage_name(w.issue), round=w.round)
        if s.overlong_lines:  # their text is gone (issue #11): say so once, where the run ends
            log.warning("%s skipped %d over-long transcript line(s)", w.name, s.overlong_lines)
        try:
            ledger.append(self.cfg.ledger_path, record)
            self.spend.add(record, self.wall(now))
            with open(w.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"type": "tac", "subtype": "end", "issue": w.issue, "attempt": w.attempt,
                                    "exit": describe_exit(w.returncode), "reason": exit_reason}) + "\n")
        except OSError as e:
            log.error("%s could not write the ledger: %s", w.name, e)

    # 4 ------------------------------------------------------------------------
    def github_failed(self, now: float, e: GitHubError) -> None:
        self.counters["github_errors"] += 1
        if not e.unreachable:
            # One refused request (404, 422) is not an outage: say it, but
            # do not paint GitHub as unreachable in status.
            self.say_once(("refused", str(e)), "github: request refused: %s", e)
            return
        if self.github_down_since is None:
            self.github_down_since = now
            log.warning("github: %s since %s: %s", "refused our login" if e.auth else "unreachable",
                        clock_time(self.wall(now)), e)
        self.github_error, self.github_auth_failed = str(e), e.auth

    def poll(self, now: float) -> None:
        """Read the labelled issues off the loop; poll_done reconciles."""
        self.last_poll_at = now
        self.jobs.submit(("poll",), functools.partial(self.fetch_queue, self.github, now),
                         functools.partial(self.poll_done, self.github, now))

    def fetch_queue(self, github: GitHub, now: float) -> Tuple[List[dict], List["Decision"]]:
        """Off the loop: the listing and what it means for tasks.md."""
        listing = github.labelled_issues(self.cfg.label)
        for i in listing:
            if is_status_issue(i):  # the dashboard is never a task, whoever labels it
                self.say_once(("status issue", i["number"]), "gh-%d skipped: it is the status issue", i["number"])
        listing = [i for i in listing if not is_status_issue(i)]
        return listing, self.intake(github, listing, now)

    def poll_done(self, github: GitHub, now: float, result: Any, error: Optional[BaseException]) -> None:
        """Reconcile tasks.md with the listing. A failed fetch means
        'unknown': nothing is dropped, and the next poll backs off with jitter."""
        if github is not self.github:
            self._poll_asked = True  # a reload changed the repository meanwhile: that answer is another's
            return
        if isinstance(error, GitHubError):
            self.listing_ok = False
            self.poll_failures += 1
            self.github_failed(now, error)
            delay = min(self.cfg.poll_interval * 2 ** self.poll_failures, 900)
            if error.status == 403 and self.github.rate_reset:
                delay = max(delay, self.github.rate_reset - self.wall(now) + 5)
            self.next_poll_at = now + delay * random.uniform(0.8, 1.2)
            return
        if error is not None:
            self.next_poll_at = now + self.cfg.poll_interval
            raise error
        listing, decisions = result
        if self.github_down_since is not None:
            log.info("github: reachable again after %s", human_duration(now - self.github_down_since))
        self.github_down_since, self.github_error, self.poll_failures = None, "", 0
        self.github_auth_failed = False
        self.issues = {i["number"]: i for i in listing}
        self.listing_ok = True
        self.github.forget_issues_except(self.issues)
        interval = self.cfg.poll_interval
        remaining = self.github.rate_remaining
        self.slow_poll = ""
        if remaining is not None and remaining < 200:
            interval *= 4  # slow down before GitHub starts answering 403
            # No count in it: the status line (and tasks.md) would change every poll.
            self.slow_poll = (f"github: rate limit nearly spent, polling every {interval:g}s"
                              + (f" until {clock_time(self.github.rate_reset)}" if self.github.rate_reset else ""))
            self.say_once(("slow", int(now // 3600)), "github: %d requests left, polling every %ds",
                          remaining, interval)
        self.next_poll_at = now + interval
        if decisions:
            self.update(lambda doc: [d.change(doc) for d in decisions])
            for d in decisions:  # said once written: a failed write (a full disk) is retried, not re-said
                if d.said:
                    log.info("%s", d.said)
                if d.asked_again:  # a person asked again: that also lifts the failure breaker's pause
                    self.gates.resume(f"gh-{d.issue} labelled again by {d.asked_again}")
        self._polled = True

    def intake(self, github: GitHub, listing: List[dict], now: float) -> List["Decision"]:
        """Work out how tasks.md must change for this listing. Returns the
        changes as functions, so they can be re-applied if a person edits
        tasks.md in between, each with its log line. Runs off the loop:
        it reads tasks.md and asks GitHub, and writes nothing."""
        doc = self.load()
        changes: List[Decision] = []
        listed = {i["number"] for i in listing}
        # Who applied the label, for every issue that may be new, from the
        # repository-wide events feed: a thousand new issues cost about ten
        # requests, not a thousand; labeller() then asks per issue only for
        # what the feed did not cover.
        fresh = [i for i in listing if not self.known(doc, i["number"])]
        if fresh:
            github.labellers(self.cfg.label, fresh)
        for issue in sorted(listing, key=lambda i: i["number"]):
            n = issue["number"]
            task = doc.governing(n)
            if self.known(doc, n):
                continue  # queued or running (a live worker's lost entry is written back, not queued)
            if is_bot(issue.get("user")):
                self.say_once(("bot", n), "gh-%d skipped: opened by bot %s", n, issue["user"].get("login"))
                continue
            who = github.labeller(n, self.cfg.label, issue.get("updated_at", ""))
            if task is not None:  # ended before: is this label a new request, or one we have yet to remove?
                finished = tasks.parse_time(task.finished or task.completed or "")
                labelled_at = _iso_epoch(who[2]) if who else None
                if finished is None or labelled_at is None or labelled_at <= finished:
                    if not task.outbox:
                        changes.append(Decision(n, _owe_notice(n, self.wall(now))))
                    continue
            if not self.trusted(n, who, github):
                continue
            entry = entry_fields(issue, task)
            entry.update(self.flow.choose(github, issue))  # a trusted workflow:<name> label (adws/flow.py)
            if self.held_text(n):  # labelled again while this node's ended claim waits out its lease
                entry["claimed_by"] = self.held_text(n)
            changes.append(Decision(n, functools.partial(tasks.transition, issue=n, to=PENDING,
                                                         expect=(tasks.NEW,) + tasks.TERMINAL, **entry),
                                    f"gh-{n} queued {{p{entry['priority']}}} labelled by {who[0] if who else '?'}"
                                    + (" (again)" if task is not None else ""),
                                    asked_again=who[0] if task is not None and who else ""))
        for t in doc.in_state(PENDING):
            if t.issue not in listed:
                changes.append(Decision(t.issue, functools.partial(tasks.transition, issue=t.issue, to=tasks.NEW,
                                                                   expect=PENDING),
                                        f"gh-{t.issue} dropped from the queue: the label is gone or the issue is closed"))
        return changes

    def known(self, doc: tasks.TaskFile, n: int) -> bool:
        """Queued, running, or being started: not new, whatever the listing says."""
        task = doc.governing(n)
        return (task is not None and task.state in (PENDING, ACTIVE)) or n in self.workers or n in self.starting

    def trusted(self, n: int, who: Optional[Tuple[str, str, str]], github: Optional[GitHub] = None) -> bool:
        """Only a label applied by a collaborator with write, maintain or
        admin permission, or by a trusted user, queues an issue: issue forms
        apply labels for anyone, and the worker runs with full tool access."""
        if who is None:
            self.say_once(("untrusted", n, None), "gh-%d skipped: no label event found", n)
            return False
        login, kind, _ = who
        if login in self.cfg.trusted_users:
            return True
        if kind == "Bot":
            self.say_once(("untrusted", n, login), "gh-%d skipped: labelled by bot %s", n, login)
            return False
        perm = (github or self.github).permission(login)
        if perm in ("admin", "write", "maintain"):
            return True
        self.say_once(("untrusted", n, login), "gh-%d skipped: labelled by %s (permission %s)", n, login, perm)
        return False

    # 5 ------------------------------------------------------------------------
    # The outbox (adws/outbox.py): what the issue is told.
    def deliver_outbox(self, now: float) -> None:
        """Tell every ended task whose notice is still owed, each as a job."""
        for t in self.load().tasks:
            if t.state in tasks.TERMINAL and t.outbox:
                self.jobs.submit(("notice", t.issue), functools.partial(self.tell, t), _raise)

    # 6 ------------------------------------------------------------------------
    def spawn_block(self, now: float) -> str:
        """Why no worker may start now, or ''."""
        return self.gates.block(now, self.spend.totals(self.wall(now)), lambda t: clock_time(self.wall(t)))

    def count_startup_error(self, issue: int, why: str, now: float) -> bool:
        """Tell the breaker; True when the error is the system's (the
        breaker was open): the task is then not charged for it."""
        self.counters["startup_errors"] += 1
        was = self.gates.startup.state
        systemic = self.gates.startup.startup_error(issue, why, now)
        if self.gates.startup.state != was or systemic:
            log.warning("%s", self.spawn_block(now) or f"spawning paused: {why}")
        return systemic

    def dispatch(self, now: float) -> None:
        block = self.spawn_block(now)
        # A worker whose finish is under way still holds its slot: its outcome
        # (a failed run that pauses everything, say) must be known first.
        slots = self.max_concurrent - len(self.workers) - len(self.starting)
        if slots <= 0:
            return
        # Next attempt is a wall-clock time in tasks.md: on the steady clock here.
        waiting = [(t, self.due_at(t)) for t in self.load().in_state(PENDING)
                   if t.issue not in self.workers and t.issue not in self.starting and t.issue in self.issues]
        due = [t for t, at in waiting if at <= now]
        self.next_due_at = min((at for _, at in waiting if at > now), default=0.0)  # for next_wake
        if not due:
            return
        if block:
            self.say_once(("block", block), "not spawning: %s", block)
            return
        due.sort(key=lambda t: (t.priority, t.issue))
        by_issue = {t.issue: t for t in due}
        # While the breaker is open the first start is its probe; a task
        # already probed in this outage goes last, so one bad task cannot
        # keep the queue waiting.
        due = [by_issue[n] for n in self.gates.startup.pick_probe([t.issue for t in due])]
        # A held task must not take the slot of the next one in line.
        due = [t for t in due if self.text_as_labelled(t, now)]
        if self.cluster is not None:
            due = self.claimable(due, now)
        for t in due[:slots]:
            short = self.gates.memory_block()
            if short:
                self.say_once(("mem", int(now // 600)), "not spawning: %s", short)
                return
            if self.dry_run:
                print(f"would start gh-{t.issue} {{p{t.priority}}} {t.title}")
                continue
            if not self.gates.startup.may_start(t.issue, now):
                return  # the probe is out: nothing else until it has an answer
            self.guarded(f"gh-{t.issue} start", self.spawn, t, self.issues[t.issue], now)
            if t.issue not in self.workers and t.issue not in self.starting:
                self.gates.startup.probe_ended(t.issue, now)  # it never started: probe again

    def due_at(self, t: Task) -> float:
        """When a Pending task is due, on the steady clock: its Next attempt
        (a wall-clock time in tasks.md), and in a cluster not before another
        node's claim on it may have expired."""
        at = tasks.parse_time(t.next_attempt) or 0.0
        if self.cluster is not None:
            at = max(at, self.cluster.wait_until(t.issue))
        return at - self._offset

    def claimable(self, due: List[Task], now: float) -> List[Task]:
        """In a cluster: the due tasks that no other node holds, by a read of
        the claims made for this dispatch (one ls-remote, as a job; with
        threads, the next tick's dispatch uses it). The take in the start
        job decides; this only spares takes that cannot win."""
        c = self.cluster
        if not due:
            return due
        if c.fresh is None:
            if now < c.next_read_at or self.jobs.busy(("claims",)):
                return []
            self.read_claims(now)
            if c.fresh is None:
                return []  # under way
        reading, c.fresh = c.fresh, None
        wall = self.wall(now)
        # One write of a claim at a time: a renewal under way goes first.
        return [t for t in due if c.may_run(t.issue, reading, wall) and not self.jobs.busy(("claim", t.issue))]

    def read_claims(self, now: float) -> None:
        # Swept only by a current listing: the first read after a restart
        # comes before the first poll, when self.issues is still empty.
        self.cluster.read(set(self.issues) if self.listing_ok else None, self.wall(now), not self.dry_run,
                          self.claims_read)

    def claims_read(self, result: Any, error: Optional[BaseException]) -> None:
        """On the loop: what a read of the claims found (adws/cluster.py)."""
        now = self.clock()
        if error is not None:
            if not isinstance(error, (ClaimError, GitError)):
                raise error
            self.cluster.read_failed(now, str(error))
            return
        found, swept = result
        self.cluster.saw(found, swept, self.load(), self.workers, set(self.starting), self.wall(now),
                         set(self.issues) if self.listing_ok else None)
        self.show_claims()

    def text_as_labelled(self, t: Task, now: float) -> bool:
        """Is the issue's text still the text a trusted person labelled?

        Anyone who can edit the issue (its author, for one) could otherwise
        swap the text after a maintainer approved it with the label. The
        Body SHA recorded at intake stands for the approved text; changed
        text runs only once a trusted person applies the label again after
        the change. "After" means the label event is the issue's latest
        change (labelled_at >= updated_at): anything later, a comment
        included, keeps the task held, which errs on the side of not running."""
        issue = self.issues[t.issue]
        sha = _body_sha(issue)
        if t.body_sha == sha:
            return True
        n = t.issue
        if not t.body_sha:  # an entry a person wrote into tasks.md: they vouch for the text as it is
            self._set_body_sha(n, sha)
            return True
        try:
            who = self.github.labeller(n, self.cfg.label, issue.get("updated_at", ""))
            labelled_at = _iso_epoch(who[2]) if who else None
            updated_at = _iso_epoch(issue.get("updated_at", ""))
            relabelled = (labelled_at is not None and updated_at is not None and labelled_at >= updated_at
                          and self.trusted(n, who))
        except GitHubError as e:
            self.github_failed(now, e)
            return False  # unknown is not approved; the next tick asks again
        if relabelled:
            log.info("gh-%d text changed, then %s re-applied the label; running the new text", n, who[0])
            self._set_body_sha(n, sha)
            return True
        self.say_once(("edited", n, sha), "gh-%d held: %s", n, EDITED_AFTER_LABEL)
        if t.reason != EDITED_AFTER_LABEL:
            self.amend(n, expect=PENDING, reason=EDITED_AFTER_LABEL)
        return False

    def _set_body_sha(self, n: int, sha: str) -> None:
        def change(doc: tasks.TaskFile) -> Optional[Task]:
            cur = doc.governing(n)
            held = cur is not None and cur.reason == EDITED_AFTER_LABEL
            return tasks.amend(doc, n, expect=PENDING, body_sha=sha, **({"reason": ""} if held else {}))
        self.update(change)

    def spawn(self, t: Task, issue: dict, now: float) -> None:
        """Start a worker for `t`. Intent first: a crash at any point leaves
        either a Pending entry or an Active one that recover() resolves. The
        worktree is made by a job (a fetch can take a minute); the process
        is started on the loop once it is ready (launch)."""
        n, cfg = t.issue, self.cfg
        w = Worker(issue=n, worker_id=new_worker_id(), attempt=t.attempts + 1, branch="",
                   tree=cfg.worktree_path(n), log_path=cfg.transcript_path(n), stderr_path=cfg.stderr_path(n),
                   stderr_offset=0, pid=0, pid_start=None, started_at=now, follower=None, last_output_at=now,
                   comment_id=t.comment_id)
        cfg.logs.mkdir(parents=True, exist_ok=True)
        log_offset = w.log_path.stat().st_size if w.log_path.exists() else 0
        w.stderr_offset = w.stderr_path.stat().st_size if w.stderr_path.exists() else 0
        # 1. Record the intent before anything runs. A crash after this
        #    leaves an Active entry without PID; recovery looks for a process
        #    tagged with this worker id, else finishes from the evidence.
        #    In a cluster "Claimed by" keeps naming the claim held for the
        #    retry's last worker: until the hand-over to this one lands, the
        #    claim names that one (Cluster.ours accepts either).
        if self.change_state(n, ACTIVE, expect=PENDING, worker=w.worker_id, worktree=str(w.tree),
                             log=str(w.log_path), log_offset=log_offset, started=local_time(self.wall(now)),
                             pid=None, pid_start=None, next_attempt="", claimed_by=self.held_text(n),
                             **self.flow.starting(t)) is None:
            return
        # 2-3. The claim (in a cluster), the branch, the worktree and the prompt, off the loop.
        self.starting[n] = w
        self.jobs.submit(("start", n), functools.partial(self.prepare, w, issue, run_number(t)),
                         functools.partial(self.launch, w))

    def prepare(self, w: Worker, issue: dict, run: int) -> bool:
        """Off the loop: in a cluster the claim first (nothing is made for a
        worker that may not run), then a branch that is free, a fresh worktree
        on it, the prompt file. Returns whether an earlier run's leftovers
        were cleared. Raises StartError saying what failed, ClaimLost or
        ClaimUnreachable when the claim was not taken."""
        cfg = self.cfg
        if self.cluster is not None:
            # Counted across the cluster: a takeover continues the count of
            # the node it takes over from (adws/claims.py, "Attempts").
            w.attempt = self.cluster.take_job(w.issue, run, w.worker_id, w.attempt, self.wall(self.clock()))
            if w.attempt > cfg.max_attempts:
                raise AttemptsSpent(f"attempt {w.attempt - 1} of {cfg.max_attempts} ran on the node that held "
                                    f"the claim before this one, which stopped; no attempts left")
        if self.flow.staged(w.issue):
            return self.flow.prepare(w, issue, run)  # a workflow stage: its worktree, its prompt
        try:
            w.branch = self.git.unused_branch(w.issue, run)
            w.tree, repaired = self.git.prepare_worktree(w.issue, w.branch)
        except (GitError, OSError) as e:
            raise StartError(f"worktree: {e}")
        # The prompt goes on stdin: issue text never goes into argv or a shell.
        try:
            prompt = build_prompt(cfg, w.issue, issue, w.branch, w.tree)
        except OSError as e:
            raise StartError(f"template {cfg.template_path}: {e.strerror}")
        write_atomic(cfg.prompt_path(w.issue), prompt.encode("utf-8"))
        return repaired

    def launch(self, w: Worker, repaired: Optional[bool], error: Optional[BaseException]) -> None:
        """On the loop: start the process in the prepared worktree, record
        its PID for crash recovery, tell the issue."""
        n, now = w.issue, self.clock()
        del self.starting[n]
        if isinstance(error, (ClaimLost, ClaimUnreachable)):
            self.not_claimed(w, error, now)
            return
        if isinstance(error, AttemptsSpent):
            self.attempts_spent(w, str(error), now)
            return
        if error is None:
            try:
                if self.cluster is not None and w.attempt - 1 > (self.load().governing(n) or Task(n, "")).attempts:
                    # The claim's count is ahead of this node's (a takeover):
                    # written before the process starts, so that a restart
                    # from here on counts this run as the claim does.
                    self.amend(n, expect=ACTIVE, owner=w.worker_id, attempts=w.attempt - 1)
                self.start_process(w, now)
            except (StartError, OSError) as e:  # OSError: a full disk, an unwritable logs folder
                error = e
        if error is not None:
            self.start_failed(w, str(error) or type(error).__name__, now)
            return
        if repaired:
            self.counters["worktree_repairs"] += 1
            log.info("gh-%d worktree repaired: cleared what an earlier run left at %s", n, w.tree)
        w.started_at = w.last_output_at = w.comment_at = now
        self.workers[n] = w
        self.counters["launched"] += 1
        # 4. Now the PID is known; record it for crash recovery.
        # (The claim names this worker now: the entry's own line says so.)
        w.entry = self.amend(n, expect=ACTIVE, owner=w.worker_id, pid=w.pid, pid_start=w.pid_start, branch=w.branch,
                             claimed_by="")
        log.info("gh-%d started pid=%d branch=%s attempt=%d worker=%s", n, w.pid, w.branch, w.attempt, w.worker_id)
        started = f"Started on {self.cfg.node}, on" if self.cluster is not None else "Started work on"
        self.comment(w, f"🤖 {started} branch `{w.branch}` (attempt {w.attempt}, {clock_time(self.wall(now))}).")

    def not_claimed(self, w: Worker, e: Exception, now: float) -> None:
        """The take went to another node, or the claims could not be reached:
        back to Pending, not started. Neither a startup error nor a failure
        of the task: the breaker is not told."""
        n = w.issue
        holder = getattr(e, "holder", None)
        if holder is not None:
            self.cluster.seen[n] = holder  # "Claimed by" says who; no read before its expiry
        elif isinstance(e, ClaimUnreachable):
            self.cluster.read_failed(now, str(e))
            self.cluster.unanswered(n, w.worker_id)  # in the same write: a restart knows it too
        # Still held (a hand-over that did not land): the line names its worker.
        text = self.held_text(n) or (shown(holder) if holder is not None else "")
        self.change_state(n, PENDING, expect=ACTIVE, owner=w.worker_id, started="", claimed_by=text)
        self.gates.startup.probe_ended(n, now)
        log.info("gh-%d not started here: %s", n, e)
        self.show_claims()

    def attempts_spent(self, w: Worker, why: str, now: float) -> None:
        """The claim taken over says the issue had all its runs elsewhere:
        Failed here without a run, and the issue is told from here."""
        ended = self.change_state(w.issue, FAILED, expect=ACTIVE, owner=w.worker_id, now=now, reason=why,
                                  attempts=w.attempt - 1, claimed_by="")
        self.gates.startup.probe_ended(w.issue, now)  # nothing started
        if ended is not None:
            self.counters["failed"] += 1
            log.info("gh-%d failed: %s", w.issue, why)
            self.jobs.submit(("notice", w.issue), functools.partial(self.tell, ended), _raise)

    def own_claim(self, n: int, worker: str) -> Dict[str, str]:
        """The "Claimed by" field for a Pending entry whose claim this node
        holds for `worker`, written with the move to Pending itself: a crash
        before the next tick writes it would leave a claim that this node,
        restarted, no longer knows for its own (Cluster.ours)."""
        claim = self.cluster.held.get(n) if self.cluster is not None else None
        if claim is None or claim.worker != worker:
            return {}
        return {"claimed_by": own_text(self.cfg.node, worker, claim.expires)}

    def held_text(self, n: int) -> str:
        """"Claimed by" for the claim this node holds on `n` as it is now ('' for none)."""
        return self.cluster.own_line(n) if self.cluster is not None else ""

    def start_failed(self, w: Worker, why: str, now: float) -> None:
        log.warning("gh-%d could not start: %s", w.issue, why)

        systemic = self.count_startup_error(w.issue, why, now)

        def back(doc: tasks.TaskFile) -> Optional[Task]:
            cur = doc.governing(w.issue)
            if systemic or cur is None:
                to, fields = PENDING, {"reason": f"{SPAWNING_PAUSED_START}: {why}", "next_attempt": ""}
            else:
                to, fields = after_startup_error(cur, self.cfg, self.wall(now), why)
            fields.update(self.own_claim(w.issue, w.worker_id) if to == PENDING else {"claimed_by": ""})
            return tasks.transition(doc, w.issue, to, expect=ACTIVE, owner=w.worker_id, now=self.wall(now),
                                    **fields)
        self.update(back)

    def start_process(self, w: Worker, now: float) -> None:
        """The `claude -p` process for `w` in its prepared worktree, the
        prompt on stdin; fills in its PID. Raises StartError saying what failed."""
        cfg = self.flow.cfg_for(w.issue)  # a workflow stage's command, model, limits; else self.cfg
        env = worker_env(cfg, self.environ, {
            "TAC_ISSUE_NUMBER": str(w.issue), "TAC_BRANCH": w.branch, "TAC_REPO": cfg.repo,
            "TAC_WORKTREE": str(w.tree), "TAC_WORKER_ID": w.worker_id, "TAC_ATTEMPT": str(w.attempt),
            **self.flow.env(w.issue), **w.env_extra})
        with open(w.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"type": "tac", "subtype": "attempt", "issue": w.issue, "attempt": w.attempt,
                                "worker": w.worker_id, "branch": w.branch,
                                "started": local_time(self.wall(now)), **self.flow.attempt_fields(w.issue),
                                **w.launch_info}) + "\n")
        w.log_start = w.log_path.stat().st_size
        w.follower = transcript.TranscriptFollower(w.log_path, w.log_start)
        try:
            # In its own session, so it can be stopped as a whole.
            with open(cfg.prompt_path(w.issue), "rb") as stdin, open(w.log_path, "ab") as out, open(w.stderr_path, "ab") as err:
                w.popen = self.popen(worker_argv(cfg) + self.flow.argv(w.issue) + w.argv_extra, cwd=str(w.tree),
                                     stdin=stdin, stdout=out,
                                     stderr=err, env=env, start_new_session=True, close_fds=True)
        except OSError as e:
            name = cfg.command[0]
            raise StartError(f"{name}: command not found" if e.errno == errno.ENOENT else f"{name}: {e.strerror}")
        w.pid, w.pid_start = w.popen.pid, proc_start_time(w.popen.pid)

    # 7 ------------------------------------------------------------------------
    def publish(self, now: float, polled: bool) -> None:
        doc = self.load()
        counts = {s: len(doc.in_state(s)) for s in tasks.SECTIONS}
        block = self.spawn_block(now) if not self.paused else ""
        parts = []
        if self.paused:
            parts.append(self.paused)
        elif block:
            parts.append(block)
        else:
            parts.append("running")
        if self.github_down_since is not None and self.github_auth_failed:
            parts.append(f"github: not authenticated since {clock_time(self.wall(self.github_down_since))}: "
                         f"run gh auth login")
        elif self.github_down_since is not None:
            parts.append(f"github: unreachable since {clock_time(self.wall(self.github_down_since))}")
        elif self.slow_poll:
            parts.append(self.slow_poll)
        parts.append(f"{counts[ACTIVE]} active · {counts[PENDING]} pending")
        line = " · ".join(parts)
        if line != self._status_line and not self.dry_run:
            self._status_line = line

            def set_status(d: tasks.TaskFile) -> None:
                d.status = line
            self.update(set_status)
            log.info("status: %s", line)
        if polled or now - self._metrics_at >= 5 or not self.ready or self.counters != self._metrics_counters:
            self.write_metrics(now, counts, block)
        if polled and self.listing_ok and not self.ready:
            self.ready = True
            sd_notify("READY=1")
        spend = self.spend.totals(self.wall(now))
        sd_notify(f"WATCHDOG=1\nSTATUS={counts[ACTIVE]} active, {counts[PENDING]} pending, "
                  f"{usd(spend.today_usd)} today{' · ' + parts[0] if parts[0] != 'running' else ''}")

    def publish_stopped(self, now: float) -> None:
        """The last status line: a reader of tasks.md must not take a
        stopped daemon's last "running" for the truth."""
        left = len(self.live_workers())
        line = f"stopped at {clock_time(self.wall(now))}" + (f" · {left} worker(s) left running" if left else "")

        def set_status(d: tasks.TaskFile) -> None:
            d.status = line
        if not self.dry_run:
            self.guarded("status", self.update, set_status)

    def write_metrics(self, now: float, counts: Dict[str, int], block: str) -> None:
        if self.dry_run:
            return
        self._metrics_at, self._metrics_counters = now, dict(self.counters)
        wall = self.wall  # metrics.json holds wall-clock times: status.py compares them with its own
        spend = self.spend.totals(wall(now))
        gh_state = "ok" if self.github_down_since is None else \
            "not_authenticated" if self.github_auth_failed else "unreachable"
        if self.github.rate_remaining == 0:
            gh_state = "rate_limited"
        data = {
            "version": 1, "pid": os.getpid(), "started_at": wall(self.started_at), "updated_at": wall(now),
            "last_poll_at": _maybe(wall, self.last_poll_at), "last_poll_ok": self.listing_ok and self.github_down_since is None,
            "poll_interval": self.cfg.poll_interval, "paused": bool(self.paused), "pause_reason": self.paused,
            "spawn_block": block, "counters": dict(self.counters),
            "github": {"state": gh_state, "since": _maybe(wall, self.github_down_since), "error": redact(self.github_error),
                       "rate_remaining": self.github.rate_remaining, "rate_reset": self.github.rate_reset},
            "active": [{"issue": w.issue, "title": (self.issues.get(w.issue) or {}).get("title", ""), "pid": w.pid,
                        "started_at": wall(w.started_at), "attempt": w.attempt, "cost_usd": w.follower.summary.cost,
                        "last_tool": redact(w.follower.summary.last_tool), "log": str(w.log_path), "state": w.state}
                       for w in self.workers.values()],
            "spend": {"today_usd": spend.today_usd, "month_usd": spend.month_usd,
                      "daily_usd": self.cfg.daily_usd or None, "monthly_usd": self.cfg.monthly_usd or None},
            "max_concurrent": self.max_concurrent, "queue": {k: v for k, v in counts.items()},
            "breaker": {"state": self.gates.startup.state, "errors_in_a_row": self.gates.startup.errors,
                        "last_error": redact(self.gates.startup.last_error),
                        "next_probe_at": wall(self.gates.startup.next_probe_at)
                        if self.gates.startup.state == OPEN else None,
                        "failed_runs_in_a_row": len(self.gates.failures.recent)},
            "runs": self.spend.success(), "disk": self.disk,
            "cluster": self.cluster.snapshot() if self.cluster is not None else None,
        }
        level, reason = metrics.health(data, wall(now))
        data["health"] = {"level": level, "reason": reason}
        self.health = (level, reason)
        try:
            metrics.write(self.cfg.metrics_path, data)
        except OSError as e:
            self.say_once(("metrics", str(e)), "metrics.json not written: %s", e)

    # -- start-up: recovery ---------------------------------------------------------
    def recover(self, now: float) -> None:
        """Re-adopt workers that outlived a restart; finish the others from
        their evidence. Never a second worker for the same issue. Each part
        under its own guard: a start-up that fails (a full disk) must not
        crash-loop the service; what it could not do waits for the next try."""
        self.guarded("git worktree prune", self.git.prune)
        self.guarded("archive", self.archive, now)
        # Temp files of writes that a crash interrupted; only we write
        # tasks.md, and we hold the lock, so none of them is in use.
        for stale in self.cfg.state_dir.glob(f".{self.cfg.tasks_path.name}.*.tmp"):
            try:
                stale.unlink()
            except OSError:
                pass
        for t in self.load().in_state(ACTIVE):
            self.guarded(f"gh-{t.issue} recovery", self.readopt, t, now)
        if self.cluster is not None:
            self.guarded("claims", self.adopt_claims, now)
        for t in self.load().tasks:
            if t.comment_id is None and t.started and (t.state == ACTIVE or (t.state in tasks.TERMINAL and t.outbox)):
                self.guarded(f"gh-{t.issue} status comment", self.find_comment, t)

    def adopt_claims(self, now: float) -> None:
        """In a cluster, after a restart: one read of the claims when this
        node may hold some (a task running, waiting to retry, or owing its
        notice), so that it renews them again; a worker whose claim went to
        another node meanwhile is stopped."""
        node = self.cfg.node
        if any(t.state == ACTIVE or (t.state in tasks.TERMINAL and t.outbox) or own_worker(t.claimed_by, node)
               for t in self.load().tasks):
            self.read_claims(now)

    def find_comment(self, t: Task) -> None:
        """A crash between posting a status comment and recording its id
        would make the next notice a second comment: adopt ours, posted
        since the entry started (one conditional look-up, after a crash only)."""
        started = tasks.parse_time(t.started)
        mine = [cid for cid, at in self.github.own_comments(t.issue)
                if started is None or (_iso_epoch(at) or 0) >= started - 5]
        if mine:
            log.info("gh-%d status comment %d found again after a restart", t.issue, mine[-1])
            self.amend(t.issue, expect=t.state, comment_id=mine[-1])

    def readopt(self, t: Task, now: float) -> None:
        """One Active entry after a restart: its live worker re-adopted, or
        its ended one finished from the evidence, or, never started, back
        to Pending."""
        pid, start = t.pid, t.pid_start
        if pid and start is None and pid not in processes_tagged(t.worker or "-"):
            # A PID without its start time (a hand-written entry) may
            # name any process by now: never adopt or signal it.
            log.warning("gh-%d PID %d has no recorded start time and is not our worker; not adopting it",
                        t.issue, pid)
            pid = None
        if not pid and t.worker:
            tagged = [p for p in processes_tagged(t.worker) if _pgid(p) == p]
            if tagged:
                pid, start = tagged[0], proc_start_time(tagged[0])
        log_path = Path(t.log) if t.log else self.cfg.transcript_path(t.issue)
        if not pid and t.worker and t.log and not _launched(log_path, t.log_offset or 0, t.worker):
            # spawn() writes the attempt line just before the process
            # starts; without it we stopped in between and nothing ran.
            # That is our interruption, not a startup error of the task.
            if tasks.in_round(t):
                self.followups.never_launched(t)  # back to Completed: the next poll runs it
                return
            # In a cluster its claim may have been taken, or (a retry) still
            # name the worker before it: "Claimed by" names both, so the
            # claim is known as this node's own whichever write landed.
            mine = {"claimed_by": own_text(self.cfg.node, t.worker, None, *own_workers(t.claimed_by, self.cfg.node))
                    } if self.cluster is not None else {}
            self.change_state(t.issue, PENDING, expect=ACTIVE, owner=t.worker, worker="", started="", **mine)
            log.info("gh-%d was never started (the coordinator stopped first); back to Pending", t.issue)
            return
        follower = transcript.TranscriptFollower(log_path, t.log_offset or 0)
        follower.catch_up()
        alive = bool(pid) and process_alive(pid, start)
        # Its age: from the process's own start time while it runs (a
        # time in tasks.md may be from before a clock step), else from
        # the Started time recorded there.
        age = process_age(pid) if alive else None
        if age is None:
            started = tasks.parse_time(t.started)
            age = self.wall(now) - started if started is not None else 0.0
        tree = Path(t.worktree) if t.worktree else self.cfg.worktree_path(t.issue)
        branch = t.branch
        if not t.pid and not tasks.in_round(t):
            # Killed between the worker's start and the write of its PID and
            # branch: the Branch line is still an earlier run's (a retry's
            # first run). This run's work is on what its worktree has out.
            branch = self.git.checked_out(tree) or branch
            if branch != t.branch:
                t = self.amend(t.issue, expect=ACTIVE, owner=t.worker, branch=branch) or t
        w = Worker(issue=t.issue, worker_id=t.worker, attempt=t.attempts + 1,
                   branch=branch or branch_for(self.cfg, t.issue, run_number(t)),
                   tree=tree,
                   log_path=log_path, stderr_path=self.cfg.stderr_path(t.issue), stderr_offset=0,
                   pid=pid or 0, pid_start=start, started_at=now - max(0.0, age),
                   follower=follower, last_output_at=now, comment_id=t.comment_id, comment_at=now,
                   entry=t, log_start=t.log_offset or 0)
        if tasks.in_round(t):
            self.followups.adopted(w, t)  # a follow-up round's worker, never a workflow stage's
        else:
            self.flow.adopted(t)  # a workflow stage's worker: which stage it runs
        if alive:
            w.change_state(RUNNING, now)
            log.info("gh-%d re-adopted pid=%d branch=%s", t.issue, pid, w.branch)
        else:
            w.change_state(EXITED, now)
            log.info("gh-%d worker gone while we were down (pid=%s); finishing from its evidence",
                     t.issue, pid or "none")
        self.workers[t.issue] = w

    def archive(self, now: float) -> None:
        """Completed entries older than today move to tasks-archive.md, once
        GitHub has been told (the label swap is what stops a re-run)."""
        today = local_time(self.wall(now))[:10]
        self._archived_day = today
        if self.dry_run:
            return
        doc = self.load()
        # An entry still owed to GitHub stays here until the issue is told, and
        # one whose PR is watched for reviews until the watch stops (merged).
        if not any(not t.outbox and not self.followups.watching(t) and t.completed[:10] < today
                   for t in doc.in_state(COMPLETED) if t.completed):
            return
        moved: List[Task] = []

        def cut(d: tasks.TaskFile) -> None:
            moved[:] = [t for t in tasks.old_completed(d, today) if not t.outbox and not self.followups.watching(t)]
            tasks.append_archive(self.cfg.archive_path, moved)
            for t in moved:
                tasks.transition(d, t.issue, tasks.NEW, expect=COMPLETED, entry=t)
        self.update(cut)
        if moved:
            log.info("archived %d completed task(s) to %s", len(moved), self.cfg.archive_path.name)

    def housekeep(self, now: float) -> None:
        """Hourly: what has outlived [paths] keep_*_days goes; the disk is measured."""
        self._housekept_at = now + HOUSEKEEPING_EVERY
        if self.dry_run:
            return
        cfg, doc, live, wall = self.cfg, self.load(), set(self.workers) | set(self.starting), self.wall(now)

        def work() -> Dict[str, Any]:  # off the loop: git removes worktrees, and measuring walks the trees
            retention.prune(cfg, doc, live, wall, remove_tree=self.git.remove_worktree, pushed=self.git.pushed)
            return retention.usage(cfg, self.gates.disk)

        def measured(disk: Any, error: Optional[BaseException]) -> None:
            self.disk = disk or self.disk
            _raise(None, error)
        self.jobs.submit(("housekeeping",), work, measured)

    # -- SIGHUP ----------------------------------------------------------------------
    def reload(self, new: Config, now: float) -> bool:
        """Apply a re-read config in full, or not at all. Everything that is
        read from cfg each time (budgets, timeouts, templates, the command)
        follows by itself; what was built from it is built first, then all
        of it is swapped in, so a failure leaves the old config whole."""
        old = self.cfg
        for key, before, after in _FIXED_WHILE_RUNNING(old, new):
            if before != after:
                # The locks, the queue and the workers' files live there:
                # moving them under a running daemon would let a second one in.
                log.error("config not reloaded: %s changed from %s to %s; restart the coordinator to move it "
                          "(keeping the old config)", key, before, after)
                return False
        gh = self.github
        github = gh if new.repo == old.repo else GitHub(new.repo, gh=getattr(gh, "gh", "gh"),
                                                        env=getattr(gh, "env", None))
        spend = self.spend if new.ledger_path == old.ledger_path else ledger.SpendTracker(new.ledger_path,
                                                                                          self.wall(now))
        cap = worker_cap(new.max_concurrent)
        status = self.steering.issue_for(new, github)
        # Built: now applied, all of it.
        if github is not gh:
            self.issues, self.listing_ok, self.next_poll_at = {}, False, 0.0  # that listing was another repository's
        self.cfg, self.github, self.spend, self.max_concurrent = new, github, spend, cap
        self.steering.status = status
        self.git.cfg = self.outbox.cfg = new
        self.outbox.github = github
        self.gates.reconfigure(new)
        self._metrics_at = 0.0  # metrics.json shows the new settings at once
        log.info("config reloaded from %s: repo=%s label=%s max_concurrent=%d", new.file, new.repo, new.label,
                 self.max_concurrent)
        return True

    # -- the loop ------------------------------------------------------------------
    def next_wake(self, now: float) -> float:
        """Seconds to sleep: short while workers need watching, else until
        the next poll or the next backoff expiry. SIGCHLD cuts it short."""
        if self.jobs.finished():
            return 0.05  # a job ended during the tick: its wake-up went with the tick's SIGCHLDs
        if self.workers or self.starting:
            return 1.0
        # Each tick sends WATCHDOG=1: under a systemd watchdog an idle
        # daemon must wake at least twice per WatchdogSec, or it is killed.
        watchdog = watchdog_seconds(self.environ)
        longest = min(60.0, watchdog / 2) if watchdog else 60.0
        wake = self.next_poll_at
        # A backoff or a tripped breaker that ends before the next poll must
        # not wait for it: with poll_interval 30 a 1 s backoff took 30 s.
        probe_at = self.gates.startup.next_probe_at if self.gates.startup.state == OPEN else 0.0
        claims_at: List[float] = []
        if self.cluster is not None:  # a renewal, a release, a retry or a read due before the poll
            c = self.cluster
            claims_at = [c.next_event(self.wall(now)) - self._offset, c.next_read_at, *c.retry_at.values()]
        for at in (self.next_due_at, probe_at, *claims_at):
            if at > now:
                wake = min(wake, at)
        return max(0.05, min(wake - now, longest))


def _owe_notice(n: int, now: float) -> Callable[[tasks.TaskFile], Optional[Task]]:
    """An ended task whose issue still carries the trigger label: the notice
    and label swap are owed (again). An entry a person moved to an ended
    state gets its Finished time and a reason here."""
    def change(doc: tasks.TaskFile) -> Optional[Task]:
        t = doc.governing(n)
        if t is None or t.state not in tasks.TERMINAL:
            return None
        fields: Dict[str, Any] = {"outbox": "pending"}
        if not t.finished:
            fields["finished"] = local_time(now)
            if not t.reason and t.state != COMPLETED:
                fields["reason"] = f"moved to {t.state} in tasks.md"  # else the issue is told "Failed: " and nothing
        return tasks.amend(doc, n, expect=tasks.TERMINAL, **fields)
    return change


def entry_fields(issue: dict, task: Optional[Task]) -> Dict[str, Any]:
    """A fresh Pending entry for `issue` as GitHub has it now, queued by a
    trusted label (intake) or a retry order (adws/steering.py): its Body SHA
    stands for the text so approved, and a task that ran before keeps its
    branch numbers going."""
    return dict(title=_one_line(issue.get("title", "")), priority=priority_of(issue.get("labels")),
                body_sha=_body_sha(issue), earlier_runs=run_number(task) - 1 if task is not None else 0)


def _FIXED_WHILE_RUNNING(old: Config, new: Config) -> List[Tuple[str, Any, Any]]:
    """The keys a running daemon cannot take on: where its state, locks and
    workers' files live."""
    return [("[paths] tasks", old.tasks_path, new.tasks_path), ("[repo] path", old.repo_path, new.repo_path),
            ("[paths] trees", old.trees, new.trees), ("[paths] logs", old.logs, new.logs),
            # Claims held under one name and prefix cannot move to another under running workers.
            ("[cluster]", _cluster_key(old), _cluster_key(new))]


def _cluster_key(cfg: Config) -> str:
    if not cfg.cluster_enabled:
        return "absent"
    return f"node {cfg.node}, lease_ttl {cfg.lease_ttl:g}, claim_ref_prefix {cfg.claim_ref_prefix}"


_LINE_NUMBER = re.compile(r"^[^:]*:[0-9]+: ")


def _maybe(f: Callable[[float], float], t: Optional[float]) -> Optional[float]:
    return None if t is None else f(t)


def _launched(log_path: Path, offset: int, worker_id: str) -> bool:
    """Did spawn() get as far as the attempt line for `worker_id`?"""
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            for event in transcript.iter_events(f):
                if transcript.is_attempt_separator(event) and event.get("worker") == worker_id:
                    return True
    except OSError:
        pass
    return False


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return -1


def _iso_epoch(text: str) -> Optional[float]:
    import calendar
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except (ValueError, TypeError):
        return None


def _one_line(text: str) -> str:
    return " ".join((text or "").split())


def _body_sha(issue: dict) -> str:
    data = f"{issue.get('title', '')}\n{issue.get('body') or ''}".encode("utf-8", "replace")
    return tasks.short_sha(data)


def _run_facts(s: Any, elapsed: float) -> str:
    return (f"Run: {getattr(s, 'num_turns', 0) or getattr(s, 'assistant_turns', 0)} turns, "
            f"{usd(getattr(s, 'cost', 0.0))}, {human_duration(elapsed)}.")


# ===========================================================================
# 8. Doctor (--check): adws/doctor.py
# ===========================================================================

# ===========================================================================
# 9. Signals, systemd, the lock, main()
# ===========================================================================

def sd_notify(message: str, environ: Optional[Dict[str, str]] = None) -> bool:
    """Tell systemd (Type=notify) how we are: READY=1, WATCHDOG=1, STATUS=...
    A datagram to $NOTIFY_SOCKET; nothing at all without it."""
    path = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET", "")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(path)
            s.sendall(message.encode("utf-8"))
        return True
    except OSError:
        return False


def watchdog_seconds(environ: Optional[Dict[str, str]] = None) -> Optional[float]:
    """WatchdogSec= in seconds when systemd watches this process, else None.
    systemd passes it as $WATCHDOG_USEC, with $WATCHDOG_PID naming the
    process meant (a child that inherited the variables is not)."""
    env = environ if environ is not None else os.environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 1e6


class LockHeld(Exception):
    pass


def take_lock(cfg: Config) -> List[Any]:
    """One coordinator per queue, per clone and per trees folder: a flock on
    a file in each, holding our PID. Two coordinators with their own
    tasks.md but one clone would otherwise "repair" each other's worktrees
    and run every issue twice."""
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    cfg.trees.mkdir(parents=True, exist_ok=True)
    git_dir = cfg.repo_path / ".git"
    places = [(cfg.state_dir / f".{cfg.tasks_path.name}.lock", f"the queue {cfg.tasks_path}"),
              (cfg.trees / ".tac-coordinator.lock", f"the worktrees folder {cfg.trees}")]
    if git_dir.is_dir():
        places.append((git_dir / "tac-coordinator.lock", f"the clone {cfg.repo_path}"))
    held: List[Any] = []
    for path, what in places:
        f = open(path, "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            for g in held:
                g.close()
            raise LockHeld(f"another coordinator (pid {holder}) is already running on {what}")
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        held.append(f)
    return held


class Daemon:
    """The run loop: signal handlers only record what arrived; the loop acts."""

    def __init__(self, coordinator: Coordinator, config_path: Path):
        self.c = coordinator
        self.config_path = config_path
        self.signals: List[int] = []
        self.stop = False

    def _record(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)

    def install(self) -> Tuple[int, int]:
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        signal.set_wakeup_fd(w)  # SIGCHLD wakes select() at once
        self.c.jobs.wake_fd = w  # and so does a job that finished
        for sig in (signal.SIGCHLD, signal.SIGUSR1, signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._record)
        return r, w

    def handle_signals(self) -> bool:
        """Returns True if a poll should happen now."""
        poll_now = False
        while self.signals:
            sig = self.signals.pop(0)
            if sig in (signal.SIGTERM, signal.SIGINT):
                log.info("%s received: exiting, %d worker(s) left running (re-adopted on restart)",
                         signal.Signals(sig).name, len(self.c.live_workers()))
                self.stop = True
            elif sig == signal.SIGUSR1:
                self.c.gates.sigusr1()
            elif sig == signal.SIGHUP:
                try:
                    new = load_config(self.config_path)
                except ConfigError as e:
                    log.error("config not reloaded, keeping the last good one: %s", e)
                else:
                    self.c.reload(new, self.c.clock())
                poll_now = True
        return poll_now

    def run(self) -> int:
        r, _ = self.install()
        poll_now = True
        while True:
            poll_now = self.handle_signals() or poll_now
            if self.stop:
                sd_notify("STOPPING=1")  # `systemctl status` says deactivating at once
                self.c.publish_stopped(self.c.clock())
                self.c.steering.mark_stopped()  # a clean stop: no crash to tell at the next start
                self.c.jobs.wait(STOP_JOBS_GRACE)
                left = self.c.jobs.in_flight()
                if left:
                    # A hung gh or git call must not hold the stop until its
                    # timeout (the interpreter joins the job threads at exit).
                    # Leaving it is safe: its work is redone from tasks.md at
                    # the next start, as after a crash.
                    log.info("stopped with %d job(s) still waiting on git or GitHub: not waited for", left)
                    logging.shutdown()
                    os._exit(EX_OK)
                return EX_OK
            now = self.c.clock()
            self.c.tick(now, force_poll=poll_now)
            poll_now = False
            # SIGCHLD also comes for every gh and git call the tick made. Only
            # a worker that ended is worth another tick at once: otherwise a
            # call that keeps failing is repeated as fast as gh can run.
            self.drain(r)
            if signal.SIGCHLD in self.signals and not any(w.poll_exit() for w in self.c.live_workers()):
                while signal.SIGCHLD in self.signals:
                    self.signals.remove(signal.SIGCHLD)  # in place: a handler may append meanwhile
            timeout = self.c.next_wake(self.c.clock())
            if not self.signals:
                try:
                    select.select([r], [], [], timeout)
                except InterruptedError:
                    pass
            self.drain(r)

    @staticmethod
    def drain(r: int) -> None:
        """Empty the wake-up pipe: what woke us is in self.signals."""
        try:
            while os.read(r, 512):
                pass
        except BlockingIOError:
            pass


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="coordinator.py",
        description="Turn labelled GitHub issues into pull requests with claude -p workers.")
    parser.add_argument("--config", default=str(_ROOT / "config.toml"), help="config file (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="check config and environment, then exit")
    parser.add_argument("--once", action="store_true", help="run one cycle (poll, update, spawn) and exit")
    parser.add_argument("--dry-run", action="store_true", help="show what would be spawned; change nothing")
    parser.add_argument("--demo", action="store_true", help="run the whole loop in a local sandbox (no account needed)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log state transitions too")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if args.demo:
        # The demo runs this file as a process of its own, as a user does:
        # hand over to it rather than import it.
        demo = _ROOT / "adws" / "sandbox" / "demo.py"
        os.execv(sys.executable, [sys.executable, str(demo)])
    try:
        cfg = load_config(Path(args.config))
    except ConfigError as e:
        print(f"coordinator: config error: {e}", file=sys.stderr)
        return EX_CONFIG
    github = GitHub(cfg.repo)
    if args.check:
        from adws.doctor import doctor
        return EX_OK if doctor(cfg, github) else EX_FAIL
    # The daemon runs slow git and gh work in a few threads; --once and
    # --dry-run do everything inline, in order, and then exit.
    threads = 0 if args.once or args.dry_run else cfg.job_threads
    coordinator = Coordinator(cfg, github, dry_run=args.dry_run, threads=threads)
    if args.dry_run:
        coordinator.tick(coordinator.clock(), force_poll=True)
        if not coordinator.listing_ok:
            print(f"github: {coordinator.github_error or 'unknown'} (the queue state is unknown)", file=sys.stderr)
            return EX_FAIL
        return EX_OK
    try:
        coordinator.locks = take_lock(cfg)  # held (open) until the process exits
    except LockHeld as e:
        print(f"coordinator: {e}", file=sys.stderr)
        return EX_FAIL
    coordinator.subreaper = become_subreaper()
    log.info("coordinator started pid=%d repo=%s label=%s max_concurrent=%d tasks=%s",
             os.getpid(), cfg.repo, cfg.label, coordinator.max_concurrent, cfg.tasks_path)
    if not args.once:
        coordinator.steering.mark_running(coordinator.clock())  # says a crash on the status issue
    coordinator.recover(coordinator.clock())
    if args.once:
        coordinator.tick(coordinator.clock(), force_poll=True)
        return EX_OK if coordinator.listing_ok else EX_FAIL
    return Daemon(coordinator, Path(args.config)).run()


if __name__ == "__main__":
    sys.exit(main())
