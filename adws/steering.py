"""The status issue from the loop's side: what it shows, and its orders carried out.

adws/status_issue.py owns the issue on GitHub (finding it, the body, who
may give orders, the alerts) and changes nothing else. This module is the
other half, run by the coordinator (issue #18): after each poll (answered
or not) it builds the snapshot the issue shows, as plain data on the loop,
and hands one status step to a job (GitHub I/O stays off the loop); the
orders the step returns come back to the loop, where each is carried out
as a person at the Pi would do it, through the coordinator's one writer of
tasks.md, and answered with `done()`:

    Pause new work     ticked: PAUSE is written (it holds across a restart
                       and shows as a person's pause); unticked: every pause
                       a person can lift is lifted (gates.unpause)
    retry gh-N         the trigger label goes back on and a fresh Pending
                       entry is written, as when a person re-applies it
    cancel gh-N        Pending: the label comes off and the entry goes, as
                       when a person removes it; Active: the worker is
                       stopped as the STOP file stops it (begin_stop)
    run gh-N next      {p0} and no backoff wait, as a hand edit of tasks.md

It also knows the alert causes only the loop can see (the startup breaker,
GitHub away for an hour) and tells the status issue when the daemon
restarted after a crash. Nothing here runs unless `[github] status_issue`
is true: off, the coordinator makes no request for it and writes no file.
"""
from __future__ import annotations

import functools
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from adws import tasks
from adws.config import Config
from adws.files import write_atomic
from adws.gates import CLOSED
from adws.github import GitHub, GitHubError
from adws.redact import redact
from adws.status_issue import (CANCEL, PAUSE, RESUME, RETRY, RUN_NEXT, Item, Order, Snapshot, StatusIssue,
                               Work)
from adws.tasks import ACTIVE, BLOCKED, COMPLETED, FAILED, PENDING, Task
from adws.workers import RUNNING, STARTING, STOP_BY_USER, STOPPING

log = logging.getLogger("tac")

GITHUB_ALERT_AFTER = 3600.0  # GitHub unreachable this long: an alert (posted once it is back)
Answer = Tuple[bool, str]    # (carried out, what to say instead of the order's own words)


class Steering:
    """The coordinator's status issue, or nothing when it is off. `c` is
    the Coordinator (its loop, jobs, gates, workers and tasks.md writer);
    `entry_fields(issue, task)` makes a fresh Pending entry as its intake
    does, so a retry queues a task exactly as a re-applied label would."""

    def __init__(self, c: Any, entry_fields: Callable[[dict, Optional[Task]], Dict[str, Any]]):
        self.c = c
        self.entry_fields = entry_fields
        self.status: Optional[StatusIssue] = None
        self.after_poll: Optional[float] = None      # the poll the last step followed (c.last_poll_at)
        self.open: Set[str] = set()                  # orders a job is carrying out, not yet answered
        self.breaker_since: Optional[float] = None   # the startup breaker not closed since (steady clock)

    def issue_for(self, cfg: Config, github: GitHub) -> Optional[StatusIssue]:
        """The status issue for `cfg`, or None (off, or --dry-run): the one
        there is while the repository stays, its settings renewed (a new
        object would read the state file a step in flight is about to
        write, and post an owed alert twice)."""
        if not cfg.status_issue or self.c.dry_run:
            return None
        s = self.status
        if s is None or s.github is not github:
            return StatusIssue.from_config(github, cfg)
        s.title, s.notify, s.alerts.every = (cfg.status_issue_title, [x.lstrip("@") for x in cfg.notify],
                                             cfg.notify_every)
        return s

    # -- the step, once per poll ------------------------------------------------------
    def step(self, now: float) -> None:
        """The tick's step: one status step after each poll that ended, one
        at a time, and none while an order of the last one is still being
        carried out (each is answered before the issue is read again)."""
        c, status = self.c, self.status
        if (status is None or c.last_poll_at is None or c.last_poll_at == self.after_poll
                or c.jobs.busy(("poll",)) or c.jobs.busy(("status",)) or self.open):
            return
        self.after_poll = c.last_poll_at
        snap = self.snapshot(now)
        c.jobs.submit(("status",), functools.partial(status.step, c.wall(now), snap),
                      functools.partial(self.orders, status))

    def snapshot(self, now: float) -> Snapshot:
        """What the status issue shows. Nothing in it may tick: the issue is
        edited whenever it changes, so elapsed time is coarsened when it is
        drawn and reasons that count time are made steady (`steady`)."""
        c = self.c
        doc, wall = c.load(), c.wall(now)
        active = []
        for t in doc.in_state(ACTIVE):
            w = c.workers.get(t.issue) or c.starting.get(t.issue)
            attempt = w.attempt if w is not None else t.attempts + 1
            stage = ", ".join(x for x in (str(t.stage) if t.stage is not None else "",  # a workflow's stage
                                          f"attempt {attempt}" if attempt > 1 else "",
                                          "stopping" if w is not None and w.state == STOPPING else "") if x)
            elapsed = now - w.started_at if w is not None else wall - (tasks.parse_time(t.started) or wall)
            cost = w.follower.summary.cost if w is not None and w.follower is not None else 0.0
            active.append(Work(t.issue, t.title, elapsed, cost, stage))
        queue = sorted(doc.in_state(PENDING), key=lambda t: (t.priority, t.issue))  # dispatch's order
        done = sorted(doc.in_state(COMPLETED), key=lambda t: t.completed, reverse=True)
        spend = c.spend.totals(wall)
        level, reason = c.health
        return Snapshot(
            health=level, health_reason=steady(reason), paused=bool(c.paused),
            pause_reason=steady(c.spawn_block(now)), active=active,
            pending=[Item(t.issue, t.title, _pending_note(t)) for t in queue],
            completed=[Item(t.issue, t.title, t.pr) for t in done],
            blocked=[Item(t.issue, t.title, t.reason) for t in doc.in_state(BLOCKED)],
            failed=[Item(t.issue, t.title, t.reason) for t in doc.in_state(FAILED)],
            spent_today=spend.today_usd, spent_month=spend.month_usd, daily_budget=c.cfg.daily_usd,
            monthly_budget=c.cfg.monthly_usd, node=c.cfg.node, version=version(), causes=self.causes(now))

    def causes(self, now: float) -> Dict[str, str]:
        """The alert causes only the loop knows (Blocked tasks and budgets
        the status issue sees for itself): the startup breaker open longer
        than startup_backoff[0], GitHub unreachable for GITHUB_ALERT_AFTER."""
        c, out = self.c, {}
        breaker = c.gates.startup
        if breaker.state == CLOSED:
            self.breaker_since = None
        elif self.breaker_since is None:
            self.breaker_since = now
        if self.breaker_since is not None and now - self.breaker_since > c.cfg.startup_backoff[0]:
            out["breaker"] = (f"no worker could start since {_clock(c.wall(self.breaker_since))}: "
                              + breaker.reason(lambda t: _clock(c.wall(t))))
        down = c.github_down_since
        if down is not None and now - down >= GITHUB_ALERT_AFTER:
            what = "refused our login (run gh auth login)" if c.github_auth_failed else "unreachable"
            out["github"] = f"GitHub {what} since {_clock(c.wall(down))}: {redact(c.github_error)}"
        return out

    # -- orders, on the loop ------------------------------------------------------------
    def orders(self, status: StatusIssue, orders: Optional[List[Order]], error: Optional[BaseException]) -> None:
        """The step's `then`: carry out each order it returned."""
        if error is not None:
            raise error  # step() raises no GitHubError: this is a bug, said by the loop's guard
        for order in orders or []:
            self.c.guarded(f"status issue order {order.box}", self.carry_out, status, order)

    def carry_out(self, status: StatusIssue, order: Order) -> None:
        """One ticked box, done as a person at the Pi would do it, and
        answered: now, or by the job that does its part on GitHub."""
        c, n, who = self.c, order.issue, order.asked_by
        answer: Optional[Answer] = (True, "")
        if order.kind == PAUSE:  # touch PAUSE
            c.gates.pause(f"{who} ticked \"Pause new work\" on the status issue at {_clock(c.wall(c.clock()))}")
        elif order.kind == RESUME:  # rm PAUSE (and SIGUSR1's pause)
            c.gates.unpause(f"{who} unticked \"Pause new work\" on the status issue")
        elif order.kind == RUN_NEXT:
            answer = self.run_next(n, who)
        elif order.kind == CANCEL:
            task = c.load().governing(n)
            if task is not None and task.state == PENDING:
                # As a removed label: it comes off first, or the next poll would queue the issue again.
                answer = self.job(status, order, ("label", n), functools.partial(c.github.remove_label, n, c.cfg.label),
                                  lambda _: self.cancel(n, who))
            else:
                answer = self.cancel(n, who)
        elif order.kind == RETRY:
            answer = self.retry(status, order)
        else:
            answer = (False, f"unknown order {order.kind}")
        if answer is not None:
            self.answer(status, order, *answer)

    def answer(self, status: StatusIssue, order: Order, ok: bool, text: str = "") -> None:
        self.open.discard(order.token)
        status.done(order, text, self.c.wall(self.c.clock()), ok=ok)

    def job(self, status: StatusIssue, order: Order, key: Any, work: Callable[[], Any],
            then: Callable[[Any], Answer]) -> Optional[Answer]:
        """Do an order's part on GitHub off the loop; `then(result)` does
        the rest on the loop and says how it went. None: the job answers."""
        def finish(result: Any, error: Optional[BaseException]) -> None:
            outcome = (False, "it failed; see the coordinator's log")
            try:
                if error is not None:
                    if isinstance(error, GitHubError):
                        outcome = (False, f"GitHub: {error}; tick again")
                    raise error  # the loop's guard says it (and counts a GitHub error)
                outcome = then(result)
            finally:
                self.answer(status, order, *outcome)
        self.open.add(order.token)  # before: inline (threads=0), finish runs within submit
        submitted = False
        try:
            submitted = self.c.jobs.submit(key, work, finish)
        finally:
            if not submitted:  # or the status steps would wait for it for ever
                self.open.discard(order.token)
        return None if submitted else (False, f"gh-{order.issue} is busy on GitHub; tick again in a minute")

    def run_next(self, n: int, who: str) -> Answer:
        """Dispatch takes due tasks by ({pN}, issue number): {p0} and no
        wait for a backoff, as a person would set it in tasks.md."""
        c = self.c
        if c.amend(n, expect=PENDING, priority=0, next_attempt="") is None:
            return False, f"gh-{n} is not Pending"
        log.info("gh-%d moved to the front of the queue {p0}: asked on the status issue by %s", n, who)
        ahead = [t.issue for t in c.load().in_state(PENDING) if (t.priority, t.issue) < (0, n)]
        return True, (f"set gh-{n} to {{p0}}; gh-{min(ahead)}, also {{p0}}, still goes first" if ahead else "")

    def cancel(self, n: int, who: str) -> Answer:
        """A Pending task leaves the queue (its label is already off); an
        Active one is stopped as the STOP file stops it: its children too,
        the worktree kept, the task Failed "stopped by user"."""
        c = self.c
        task, w = c.load().governing(n), c.workers.get(n)
        if task is not None and task.state == PENDING and c.change_state(n, tasks.NEW, expect=PENDING):
            log.info("gh-%d dropped from the queue: cancelled on the status issue by %s", n, who)
            return True, ""
        if task is not None and task.state == ACTIVE and w is not None and w.state in (STARTING, RUNNING):
            log.info("gh-%d cancelled on the status issue by %s", n, who)
            c.begin_stop(w, STOP_BY_USER, c.clock())
            return True, ""
        if w is not None:
            return False, f"gh-{n} is already ending"
        if n in c.starting:
            return False, f"gh-{n} is being started; tick again in a minute"
        return False, f"gh-{n} is not Pending or Active"

    def retry(self, status: StatusIssue, order: Order) -> Optional[Answer]:
        """Queue a Failed or Blocked task again as re-applying its label
        does: the label goes back on (without it the next poll would drop
        the entry), and a fresh Pending entry runs the issue as it is now."""
        c, n = self.c, order.issue
        task = c.load().governing(n)
        if task is None or task.state not in (FAILED, BLOCKED):
            return False, f"gh-{n} is not Failed or Blocked"

        def label() -> dict:
            issue = c.github.issue(n)
            if issue.get("state", "open") == "open":
                c.github.add_labels(n, [c.cfg.label])
            return issue
        # Under the key of the task's notice: a notice still being told takes the label off.
        return self.job(status, order, ("notice", n), label, functools.partial(self.requeue, n, order.asked_by))

    def requeue(self, n: int, who: str, issue: dict) -> Answer:
        if issue.get("state", "open") != "open":
            return False, f"gh-{n} is closed"

        def change(doc: tasks.TaskFile) -> Optional[Task]:
            cur = doc.governing(n)
            if cur is None or cur.state not in (FAILED, BLOCKED):
                return None
            # A fresh entry, its workflow kept: it runs again from its first stage.
            return tasks.transition(doc, n, PENDING, expect=(FAILED, BLOCKED), workflow=cur.workflow,
                                    **self.entry_fields(issue, cur))
        queued = self.c.update(change)
        if queued is None:
            return False, f"gh-{n} is no longer Failed or Blocked"
        log.info("gh-%d queued {p%d} again: retried on the status issue by %s", n, queued.priority, who)
        self.c.gates.resume(f"gh-{n} retried on the status issue by {who}")  # as a re-applied label does
        return True, ""

    # -- a restart after a crash ----------------------------------------------------------
    def mark_running(self, now: float) -> None:
        """Tell the status issue when the daemon restarts after a crash.
        While it runs, a mark lies beside tasks.md; a clean stop removes it
        (mark_stopped), so a mark found at the start means the last run
        ended otherwise: a crash, a kill, the OOM killer, a power cut. (The
        status line's "stopped at" would not do: --once leaves "running".)"""
        path = self.running_path()
        if self.status is None:
            self.mark_stopped()  # a stale mark must not speak once the status issue is turned on
            return
        if path.exists():
            log.warning("the last run did not stop cleanly (%s was left): saying so on the status issue", path.name)
            self.status.notice(self.c.wall(now), "crash", "the coordinator restarted after its last run ended "
                                                          "without a clean stop (a crash, a kill or a power cut)")
        write_atomic(path, f"{os.getpid()}\n".encode("utf-8"))

    def mark_stopped(self) -> None:
        try:
            self.running_path().unlink()
        except FileNotFoundError:
            pass

    def running_path(self) -> Path:
        return self.c.cfg.state_dir / f".{self.c.cfg.tasks_path.name}.running"


# -- plain helpers --------------------------------------------------------------------

def _clock(epoch: float) -> str:
    return time.strftime("%H:%M", time.localtime(epoch))


def _pending_note(t: Task) -> str:
    when = f"next attempt {t.next_attempt[11:16]}" if t.next_attempt else ""
    return "; ".join(x for x in (t.reason, when) if x)


_DURATION = r"\d+ (?:s|min|h(?: \d+ min)?|days?)\b"
_TICKING = re.compile(rf",? (?:for|resets in) {_DURATION}|,? {_DURATION} ago")


def steady(text: str) -> str:
    """A reason without what changes from one poll to the next ("GitHub
    unreachable for 3 min", "resets in 12 min", "812 MB free"): shown on
    the status issue, it would edit the issue at every poll."""
    return re.sub(r"\b\d+ MB free\b", "little space free", _TICKING.sub("", text))


@functools.lru_cache(maxsize=1)
def version() -> str:
    """The version in the pyproject.toml of this checkout ("" if none)."""
    try:
        text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    except OSError:
        return ""
    m = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
    return m.group(1) if m else ""
