"""The status issue: one GitHub issue that shows the coordinator and takes orders.

A person away from the Pi sees the coordinator on GitHub, on a phone, and
steers it by ticking boxes in the issue's body (issue #18, in the manner of
Renovate's "Dependency Dashboard"). This module owns that issue: finding it
again (or opening it, once), rendering its body from a snapshot of the
daemon, reading the boxes people ticked, deciding who may give orders, and
the alert comments. It changes nothing else: the orders it reads go back to
the loop, which carries them out through its one writer of tasks.md and
reports each one with `done()`. No threads, no global state; time comes in
as `now` (wall-clock epoch seconds, as time.time()).

The loop's side, once per poll::

    status = StatusIssue.from_config(github, cfg)  # once; state in cfg.state_dir / STATE_FILE
    orders = status.step(now, Snapshot(...))       # never raises GitHubError
    for order in orders:
        ...carry it out (pause, resume, retry, cancel, run next)...
        status.done(order, "", now)                # or done(order, why, now, ok=False)

and it skips every issue carrying STATUS_LABEL when it polls for tasks
(`is_status_issue`), so the dashboard is never queued, even if someone
puts the trigger label on it.

Why it is shaped this way:

- **Found by label and marker, never by title.** The issue carries
  STATUS_LABEL and its body starts with MARKER; its number is kept in the
  state file. A person may retitle it; a second one is never opened while
  the first can be found.
- **The body is a pure function of the snapshot** (`render`), compared with
  the body GitHub has before any edit, so an idle coordinator costs one
  conditional read per poll (a free 304) and no edit. The "last change"
  time is stamped only when something else changed, and progress is shown
  in coarse steps (elapsed time in 5 minutes, cost in 10 cents), so a
  running worker changes the body every few minutes, not every poll.
- **The marker carries what was rendered**: `rev` (counts our edits),
  `updated` (when the content last changed) and `paused` (how the pause box
  was drawn). An order is a difference between the body and what we drew:
  a ticked task box, or a pause box that differs from `paused`. Each order
  is identified by (rev, order) and carried out once: its token is kept
  (in the state file) until the body moves on, and an order that no longer
  applies to the snapshot (retry of a task that is no longer Failed) is
  only reported, so a restart before the rewrite landed repeats nothing.
- **Only people who may edit the issue give orders**, and that is checked,
  not assumed: GitHub's REST API names nobody for a body edit, so the edit
  history is read over GraphQL (`GitHub.body_edits`, only when a box is
  ticked), and every account that edited the body since our last rewrite
  must be the coordinator's own or have write, maintain or admin
  permission. Otherwise every order in that body is refused and unticked
  (docs/SECURITY.md, section 7). Comments on the issue are never read.
- **Writes are owed, not lost.** A failed edit is simply tried again at the
  next step (the body is re-rendered from the snapshot); alert comments
  wait in a queue kept in the state file and are posted once each.
"""
from __future__ import annotations

import html
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from adws.files import write_atomic
from adws.github import GitHub, GitHubError, is_bot
from adws.ledger import usd
from adws.metrics import BUDGET_WARNING_FRACTION
from adws.redact import redact

log = logging.getLogger("tac")

STATUS_LABEL = "tac:status"
MARKER = "<!-- tac-status"      # the body's first line: <!-- tac-status v1 rev=.. updated=.. paused=.. -->
STATE_FILE = "status-issue.json"  # beside tasks.md, written atomically
PAUSE_BOX = "Pause new work"

# Order kinds.
PAUSE, RESUME, RETRY, CANCEL, RUN_NEXT = "pause", "resume", "retry", "cancel", "run_next"

# How much the body shows (a phone screen, and GitHub's 65,536-character limit).
SHOW_PENDING, SHOW_ENDED, SHOW_COMPLETED, SHOW_LINES = 20, 20, 10, 5
TITLE_CHARS, REASON_CHARS = 80, 160
EDIT_WINDOW = 20         # body edits read from each end of the history
HANDLED_KEPT = 100       # order tokens remembered (only the current rev's matter)


# -- What the loop hands in and gets back -----------------------------------------------

@dataclass(frozen=True)
class Work:
    """An active worker. `stage` should change rarely ("round 2", "attempt
    2"): every change is an edit of the issue."""
    issue: int
    title: str
    elapsed: float = 0.0    # seconds since it started
    cost: float = 0.0       # USD so far
    stage: str = ""


@dataclass(frozen=True)
class Item:
    """A task in any other state; `note` is its reason (Blocked, Failed, a
    Pending task that waits), or the pull request URL (Completed)."""
    issue: int
    title: str
    note: str = ""


@dataclass(frozen=True)
class Snapshot:
    """What the dashboard shows: plain data the loop builds each poll. No
    field may hold a ticking clock ("12 s ago"): it would change the body
    at every poll."""
    health: str = "ok"                 # ok / warning / degraded / critical (adws/metrics.py)
    health_reason: str = ""
    paused: bool = False               # a person's pause is in effect (PAUSE, SIGUSR1, this issue's box)
    pause_reason: str = ""             # why spawning is stopped, whatever the cause ("" = it is not)
    active: Sequence[Work] = ()
    pending: Sequence[Item] = ()       # in queue order, the next first
    completed: Sequence[Item] = ()     # recent, newest first; note = PR URL
    blocked: Sequence[Item] = ()
    failed: Sequence[Item] = ()
    spent_today: float = 0.0
    spent_month: float = 0.0
    daily_budget: float = 0.0          # 0 = no limit
    monthly_budget: float = 0.0
    node: str = ""
    version: str = ""
    # Causes for an alert that only the loop knows (key -> text), e.g.
    # "breaker" (open longer than startup_backoff[0]), "github" (unreachable
    # for an hour). Blocked tasks and budgets are derived here (causes_of).
    causes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Order:
    """A ticked box, from people who may give orders. `token` names this
    tick of this box; `asked_by` is who edited the body ("alice, bob")."""
    kind: str
    issue: Optional[int] = None
    asked_by: str = ""
    token: str = ""

    @property
    def box(self) -> str:
        return _box_text(self.kind, self.issue)

    @property
    def done_text(self) -> str:
        """What a carried-out order says, e.g. "retried gh-12"."""
        return {PAUSE: "paused new work", RESUME: "resumed new work",
                RETRY: f"retried gh-{self.issue}", CANCEL: f"cancelled gh-{self.issue}",
                RUN_NEXT: f"moved gh-{self.issue} to the front of the queue"}[self.kind]


def is_status_issue(issue: Mapping[str, Any]) -> bool:
    """True for an issue the task poll must skip: it carries STATUS_LABEL."""
    return any(str((x or {}).get("name", "")).lower() == STATUS_LABEL
               for x in issue.get("labels") or [] if isinstance(x, dict))


def causes_of(snap: Snapshot) -> Dict[str, str]:
    """The alert causes the snapshot itself shows: each Blocked task, and a
    budget 80% spent. The loop adds its own in `Snapshot.causes`."""
    out = {f"blocked:gh-{t.issue}": f"gh-{t.issue} {_code(t.title, TITLE_CHARS)} is Blocked: "
                                     f"{_code(t.note, REASON_CHARS)}" for t in snap.blocked}
    for key, spent, budget, when in (("budget:daily", snap.spent_today, snap.daily_budget, "today"),
                                     ("budget:monthly", snap.spent_month, snap.monthly_budget, "this month")):
        if budget > 0 and spent >= BUDGET_WARNING_FRACTION * budget:
            out[key] = f"{int(BUDGET_WARNING_FRACTION * 100)}% of the budget spent {when}: {usd(spent)} of {usd(budget)}"
    return out


# -- The body: pure render and parse ------------------------------------------------------

_HEAD = re.compile(re.escape(MARKER) + r" v1 rev=(\d+) updated=(\d+) paused=([01]) -->")
_BOX = re.compile(r"^\s*[-*+]\s+\[([ xX])\]\s+(.+?)\s*$")
_ORDER_TEXT = [
    (re.compile(r"pause new work", re.I), PAUSE),
    (re.compile(r"retry gh-(\d+)", re.I), RETRY),
    (re.compile(r"cancel gh-(\d+)", re.I), CANCEL),
    (re.compile(r"run gh-(\d+) next", re.I), RUN_NEXT),
]
_ORDERS_HEADING = "### Orders"
_ICON = {"ok": "🟢", "warning": "🟡", "degraded": "🟠", "critical": "🔴"}


@dataclass
class Parsed:
    """What a body says. rev/updated/paused are None without our marker
    (a person wiped it): then no box is an order."""
    rev: Optional[int] = None
    updated: Optional[int] = None
    paused: Optional[bool] = None
    boxes: List[Tuple[bool, str, Optional[int]]] = field(default_factory=list)  # (ticked, kind, issue)
    lines: List[str] = field(default_factory=list)  # the Orders section's lines


def render(snap: Snapshot, rev: int, updated: float, lines: Sequence[str] = ()) -> str:
    """The issue body for `snap`: short lines, no tables. `lines` are the
    latest outcomes of orders ("done: ..."), newest last."""
    out = [f"{MARKER} v1 rev={rev} updated={int(updated)} paused={int(snap.paused)} -->",
           f"{_ICON.get(snap.health, '⚪')} **{_plain(snap.health)}**"
           + (f": {_plain(snap.health_reason)}" if snap.health_reason else ""), ""]
    if snap.pause_reason:
        out += [f"⏸️ Spawning paused: {_plain(snap.pause_reason)}", ""]
    out += [f"- [{'x' if snap.paused else ' '}] {PAUSE_BOX}", ""]
    if snap.active:
        out.append(f"### Active ({len(snap.active)})")
        for w in snap.active:
            detail = " · ".join(x for x in (_coarse_duration(w.elapsed), _coarse_usd(w.cost),
                                             _plain(w.stage)) if x)
            out += [f"- #{w.issue} {_code(w.title, TITLE_CHARS)} — {detail}",
                    f"  - [ ] {_box_text(CANCEL, w.issue)}"]
        out.append("")
    if snap.pending:
        out.append(f"### Pending ({len(snap.pending)})")
        for i, t in enumerate(snap.pending[:SHOW_PENDING]):
            out.append(f"- #{t.issue} {_code(t.title, TITLE_CHARS)}"
                       + (f" — {_code(t.note, REASON_CHARS)}" if t.note else ""))
            if i:
                out.append(f"  - [ ] {_box_text(RUN_NEXT, t.issue)}")
            out.append(f"  - [ ] {_box_text(CANCEL, t.issue)}")
        _more(out, len(snap.pending) - SHOW_PENDING)
        out.append("")
    for title, items in (("Blocked", snap.blocked), ("Failed", snap.failed)):
        if items:
            out.append(f"### {title} ({len(items)})")
            for t in items[:SHOW_ENDED]:
                out += [f"- #{t.issue} {_code(t.title, TITLE_CHARS)}"
                        + (f" — {_code(t.note, REASON_CHARS)}" if t.note else ""),
                        f"  - [ ] {_box_text(RETRY, t.issue)}"]
            _more(out, len(items) - SHOW_ENDED)
            out.append("")
    if snap.completed:
        out.append("### Completed")
        for t in snap.completed[:SHOW_COMPLETED]:
            pr = t.note if re.fullmatch(r"https?://\S+", t.note) else ""
            out.append(f"- #{t.issue} {_code(t.title, TITLE_CHARS)}" + (f" → {pr}" if pr else ""))
        out.append("")
    out += ["### Spend",
            f"- today {usd(snap.spent_today)}" + _of(snap.spent_today, snap.daily_budget),
            f"- this month {usd(snap.spent_month)}" + _of(snap.spent_month, snap.monthly_budget), ""]
    if lines:
        out += [_ORDERS_HEADING] + [f"- {_plain(x, 300)}" for x in list(lines)[-SHOW_LINES:]] + [""]
    footer = [x for x in (f"node {_code(snap.node, 60)}" if snap.node else "",
                          f"version {_plain(snap.version, 40)}" if snap.version else "",
                          f"last change {_when(updated)}") if x]
    out.append("<sub>" + " · ".join(footer) + "</sub>")
    return "\n".join(out) + "\n"


def parse(body: str) -> Parsed:
    """The marker, every box that reads as an order, and the Orders lines.
    Only whole lines count: a title is rendered inside a line (and in a code
    span), so it can never start a box of its own."""
    lines = (body or "").replace("\r\n", "\n").split("\n")
    out = Parsed()
    m = _HEAD.fullmatch(lines[0].strip()) if lines else None
    if m:
        out.rev, out.updated, out.paused = int(m.group(1)), int(m.group(2)), m.group(3) == "1"
    in_orders = False
    for line in lines[1:]:
        if line.startswith("#"):
            in_orders = line.strip() == _ORDERS_HEADING
            continue
        if in_orders and line.startswith("- "):
            out.lines.append(html.unescape(line[2:].strip()).replace("\u200b", ""))  # as before _plain
        box = _BOX.match(line)
        if not box:
            continue
        for pattern, kind in _ORDER_TEXT:
            hit = pattern.fullmatch(box.group(2))
            if hit:
                out.boxes.append((box.group(1) != " ", kind, int(hit.group(1)) if hit.groups() else None))
                break
    return out


def orders_in(parsed: Parsed) -> List[Tuple[str, Optional[int]]]:
    """(kind, issue) of each order the body gives: every ticked task box,
    and the pause box where it differs from how it was drawn. Nothing
    without the marker. Each order once, in the body's order."""
    if parsed.rev is None:
        return []
    out: List[Tuple[str, Optional[int]]] = []
    pause_seen = False
    for ticked, kind, issue in parsed.boxes:
        if kind == PAUSE:
            if pause_seen:
                continue  # a person copied the line: the first one counts
            pause_seen = True
            if ticked != parsed.paused:
                out.append((PAUSE if ticked else RESUME, None))
        elif ticked and (kind, issue) not in out:
            out.append((kind, issue))
    return out


def applies(kind: str, issue: Optional[int], snap: Snapshot) -> str:
    """"" when the order fits the snapshot, else why it does not. An order
    carried out before a restart no longer fits, so it is not repeated."""
    pending = [t.issue for t in snap.pending]
    if kind == PAUSE:
        return "already paused" if snap.paused else ""
    if kind == RESUME:
        return "" if snap.paused else "not paused"
    if kind == RETRY:
        return "" if issue in {t.issue for t in list(snap.failed) + list(snap.blocked)} \
            else f"gh-{issue} is not Failed or Blocked"
    if kind == CANCEL:
        return "" if issue in set(pending) | {w.issue for w in snap.active} \
            else f"gh-{issue} is not Pending or Active"
    if kind == RUN_NEXT:
        if issue not in pending:
            return f"gh-{issue} is not Pending"
        return "already next" if pending[0] == issue else ""
    return f"unknown order {kind}"


def _box_text(kind: str, issue: Optional[int]) -> str:
    return {PAUSE: PAUSE_BOX, RESUME: PAUSE_BOX, RETRY: f"retry gh-{issue}",
            CANCEL: f"cancel gh-{issue}", RUN_NEXT: f"run gh-{issue} next"}[kind]


def _one_line(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def _plain(text: str, limit: int = 200) -> str:
    """The daemon's own words on one line, inert: no HTML (an unclosed
    comment would hide the rest of the body), no mention that pings anyone."""
    text = _one_line(text, limit).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("@", "@\u200b")


def _code(text: str, limit: int) -> str:
    """Text written by others (titles, reasons) as a code span: GitHub
    renders no Markdown, HTML, mention or reference inside one."""
    text = _one_line(text, limit).replace("`", "'")
    return f"`{text}`" if text else "`-`"


def _more(out: List[str], hidden: int) -> None:
    if hidden > 0:
        out.append(f"- … and {hidden} more")


def _of(spent: float, budget: float) -> str:
    if budget <= 0:
        return " (no limit)"
    return f" of {usd(budget)} ({int(min(100 * spent / budget, 999))}%)"


def _coarse_duration(seconds: float) -> str:
    """Elapsed time in steps that change the body rarely: 5 minutes for the
    first hour, then 15 minutes, then days."""
    m = max(0, int(seconds)) // 60
    if m < 5:
        return "under 5 min"
    if m < 60:
        return f"{m - m % 5} min"
    if m < 24 * 60:
        h, rest = divmod(m - m % 15, 60)
        return f"{h} h {rest} min" if rest else f"{h} h"
    d = m // (24 * 60)
    return f"{d} day{'' if d == 1 else 's'}"


def _coarse_usd(cost: float) -> str:
    return usd(math.floor(max(0.0, cost) * 10) / 10) + "+" if cost >= 0.1 else "under $0.10"


def _norm(body: str) -> str:
    return "\n".join(line.rstrip() for line in body.replace("\r\n", "\n").split("\n")).strip()


def _clock(epoch: float) -> str:
    return time.strftime("%H:%M", time.localtime(epoch))


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(epoch))


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))


# -- Alerts ---------------------------------------------------------------------------------

class Alerts:
    """Which causes are open and which comments they owe. `update` takes
    the causes of now (key -> text) and returns the comments to post, as
    (kind, key, text): "alert" when a cause opens (unless one was posted for
    it within `every` seconds), "still" when it stays open another `every`,
    "over" when it closes after an alert said it. `event` is a cause that
    does not last (the daemon restarted after a crash): an alert, no over."""

    def __init__(self, every: float):
        self.every = every
        # key -> {"open": bool, "text": str, "since": epoch, "posted": epoch|None, "said": bool}
        self.causes: Dict[str, dict] = {}

    def update(self, now: float, causes: Mapping[str, str]) -> List[Tuple[str, str, str]]:
        out: List[Tuple[str, str, str]] = []
        for key, text in causes.items():
            c = self.causes.get(key)
            if c is None or not c["open"]:  # (closed or new) -> open
                c = self.causes[key] = {"open": True, "text": text, "since": now,
                                        "posted": c["posted"] if c else None, "said": False}
                if self._may_post(c, now):
                    c["posted"], c["said"] = now, True
                    out.append(("alert", key, text))
            else:  # open -> open
                c["text"] = text
                if c["said"] and self.every > 0 and now - c["posted"] >= self.every:
                    c["posted"] = now
                    out.append(("still", key, text))
                elif not c["said"] and self._may_post(c, now):
                    c["posted"], c["said"] = now, True  # held back by an earlier alert: say it now
                    out.append(("alert", key, text))
        for key, c in list(self.causes.items()):
            if c["open"] and key not in causes:  # open -> closed
                c["open"] = False
                if c["said"]:
                    out.append(("over", key, c["text"]))
            if not c["open"] and (c["posted"] is None or now - c["posted"] >= self.every):
                del self.causes[key]  # nothing left to hold back
        return out

    def event(self, now: float, key: str, text: str) -> bool:
        """A one-off cause; True when it is to be posted."""
        c = self.causes.get(key)
        if c is not None and not self._may_post(c, now):
            return False
        self.causes[key] = {"open": False, "text": text, "since": now, "posted": now, "said": False}
        return True

    def _may_post(self, c: dict, now: float) -> bool:
        return c["posted"] is None or now - c["posted"] >= self.every


# -- The issue -------------------------------------------------------------------------------

class StatusIssue:
    """The status issue of one repository. `step` once per poll; `done` for
    each order it returned, before the next step; `notice` for a one-off
    alert. State that must survive a restart (the issue's number, what the
    body drew, orders handled, alerts and comments owed) is written to
    `state_path` atomically when it changes; without a path it lives in
    memory only."""

    def __init__(self, github: GitHub, title: str = "TAC coordinator status",
                 notify: Sequence[str] = (), notify_every: float = 21600,
                 state_path: Optional[Path] = None):
        self.github = github
        self.title = title
        self.notify = [x.lstrip("@") for x in notify]
        self.state_path = Path(state_path) if state_path else None
        self.number: Optional[int] = None
        self.rev = 0
        self.updated = 0.0
        self.written_at = ""                # GitHub's time of our last write (its clock, not ours)
        self.lines: List[str] = []          # outcomes of orders, newest last
        self.handled: List[str] = []        # tokens of orders carried out or refused
        self.owed: List[dict] = []          # comments to post: {"kind", "key", "text", "at"}
        self.alerts = Alerts(notify_every)
        self._inflight: Dict[str, Order] = {}
        self._said: Dict[str, str] = {}     # what -> the error last logged for it
        self._echo: Tuple[str, str] = ("", "")  # (body sent, body GitHub answered), normalised
        self._saved = ""
        self._load()

    @classmethod
    def from_config(cls, github: GitHub, cfg: Any) -> "StatusIssue":
        return cls(github, cfg.status_issue_title, cfg.notify, cfg.notify_every,
                   state_path=cfg.state_dir / STATE_FILE)

    # -- the loop's calls --

    def step(self, now: float, snap: Snapshot) -> List[Order]:
        """One poll: find or open the issue, read its body (a conditional
        request), work out the orders in it, queue and post alerts, and edit
        the body if its content changed. Returns the orders to carry out.
        GitHub errors are logged (once each) and leave the work owed."""
        self._forget_unanswered()
        orders: List[Order] = []
        issue = None
        hold = False
        try:
            issue = self._read(now, snap)
            if issue is not None:
                orders, hold = self._orders(issue, now, snap)
            self._ok("read")
        except GitHubError as e:
            self._trouble("read", e)
            issue = None  # nothing is written without a fresh read: a person's ticks would be lost
        causes = {**causes_of(snap), **{k: _plain(v, 400) for k, v in snap.causes.items()}}
        for kind, key, text in self.alerts.update(now, causes):
            self._owe(kind, key, text, now, self.alerts.causes.get(key, {}).get("since", now))
        if issue is not None:
            try:
                self._post_owed()
                self._ok("comment")
            except GitHubError as e:
                self._trouble("comment", e)
            if not (hold or self._inflight):  # the rewrite waits for done(): it unticks the boxes
                try:
                    self._publish(now, snap, issue)
                    self._ok("edit")
                except GitHubError as e:
                    self._trouble("edit", e)
        self._save()
        return orders

    def done(self, order: Order, text: str, now: float, ok: bool = True) -> None:
        """The loop carried out `order` (ok) or could not (text says why).
        The next step's rewrite unticks the box and shows the line."""
        self._inflight.pop(order.token, None)
        what = text or order.done_text
        self._handled(order.token, f"{'done' if ok else 'not done'}: {what} at {_clock(now)} "
                                   f"(asked by {order.asked_by})")
        log.info("status-issue order %s %s, asked by %s: %s", order.box, "done" if ok else "not done",
                 order.asked_by, what)
        self._save()

    def notice(self, now: float, key: str, text: str) -> None:
        """A one-off alert (e.g. key "crash": the daemon restarted after a
        crash), at most one per key per notify_every; posted by the next step."""
        if self.alerts.event(now, key, text):
            self._owe("alert", key, _plain(text, 400), now)
        self._save()

    # -- finding the issue and reading it --

    def _read(self, now: float, snap: Snapshot) -> Optional[dict]:
        """The issue as GitHub has it now (a 304 when unchanged), found or
        opened first if need be; None when it has just gone."""
        me = self.github.login()
        if self.number is None:
            mine = [i for i in self.github.issues_by(STATUS_LABEL, me)
                    if str((i.get("user") or {}).get("login", "")).lower() == me.lower()
                    and MARKER in (i.get("body") or "")]
            if mine:
                # The oldest open one, else the oldest: a second one is never made.
                mine.sort(key=lambda i: (i.get("state") != "open", i["number"]))
                self.number = mine[0]["number"]
                # What we knew of another issue's body says nothing of this one's: read it afresh.
                self.rev, self.updated, self.written_at, self.handled = 0, 0.0, "", []
                log.info("status-issue #%d found (%s)", self.number, mine[0].get("state", "open"))
            else:
                return self._open(now, snap)
        try:
            issue = self.github.issue_conditional(self.number)
        except GitHubError as e:
            if e.status not in (404, 410):
                raise
            log.warning("status-issue #%d is gone (HTTP %d): a new one will be found or opened",
                        self.number, e.status)
            self.number = None
            return None
        if str((issue.get("user") or {}).get("login", "")).lower() != me.lower():
            # Only the body of our own issue is guarded by GitHub's edit rights.
            log.warning("status-issue #%d was not opened by %s: not used", self.number, me)
            self.number = None
            return None
        if issue.get("state") == "closed":
            self._say("closed", f"status-issue #{self.number} is closed; it is still kept up to date")
        return issue

    def _open(self, now: float, snap: Snapshot) -> dict:
        self.rev, self.updated = self.rev + 1, now
        body = redact(render(snap, self.rev, self.updated, self.lines))
        issue = self.github.create_issue(self.title, body, [STATUS_LABEL])
        self.number, self.written_at = issue["number"], str(issue.get("updated_at") or "")
        log.info("status-issue #%d opened: %s", self.number, self.title)
        if not is_status_issue(issue):
            log.warning("status-issue #%d has no %s label (the token may not set labels): "
                        "it is found again only through %s", self.number, STATUS_LABEL, STATE_FILE)
        self._save()  # the number first: a crash now must not open a second one
        return issue

    # -- orders --

    def _orders(self, issue: dict, now: float, snap: Snapshot) -> Tuple[List[Order], bool]:
        """The new orders in the body, from people who may give them.
        Returns (orders, hold): hold means the body must not be rewritten yet
        (who ticked could not be read, and the ticks must stay)."""
        parsed = parse(issue.get("body") or "")
        if parsed.rev is None:
            return [], False  # no marker: no orders; the rewrite puts it back
        if self.rev == 0:  # no state (first start, or the file was lost): adopt what the body drew
            self.rev, self.updated = parsed.rev, float(parsed.updated or 0)
            self.lines = self.lines or parsed.lines[-SHOW_LINES:]
        wanted = []
        for kind, n in orders_in(parsed):
            token = f"{parsed.rev}:{kind}:{n or 0}"
            if token not in self.handled and token not in self._inflight:
                wanted.append((kind, n, token))
        if not wanted:
            return [], False
        try:
            asked_by, refusal = self._askers(parsed)
        except GitHubError as e:
            self._trouble("editors", e)
            return [], True
        self._ok("editors")
        if refusal:
            boxes = ", ".join(_box_text(k, n) for k, n, _ in wanted)
            log.warning("status-issue refused %s: %s", boxes, refusal)
            for _, _, token in wanted:
                self._handled(token, "")
            self.lines.append(f"refused: {boxes} at {_clock(now)} ({refusal})")
            return [], False
        orders = []
        for kind, n, token in wanted:
            why_not = applies(kind, n, snap)
            if why_not:
                self._handled(token, f"skipped: {_box_text(kind, n)} at {_clock(now)} ({why_not})")
                log.info("status-issue order %s asked by %s skipped: %s", _box_text(kind, n), asked_by, why_not)
                continue
            order = Order(kind, n, asked_by, token)
            self._inflight[token] = order
            orders.append(order)
            log.info("status-issue order %s asked by %s", order.box, asked_by)
        return orders, False

    def _askers(self, parsed: Parsed) -> Tuple[str, str]:
        """(who edited the body since our last rewrite, "") when each of
        them may give orders, else ("", why not). Everyone who edited counts,
        since an edit can tick any box: one untrusted editor refuses all."""
        assert self.number is not None
        history = self.github.body_edits(self.number, EDIT_WINDOW)
        # Since our last rewrite, by GitHub's clock (the Pi's may be off);
        # without that record, by the marker's, unless ours says earlier (a
        # marker moved into the future must not hide an edit).
        since = self.written_at or _iso(min(self.updated or math.inf, parsed.updated or math.inf))
        recent = [e for e in history["edits"] if e[0] >= since]
        if not history["complete"] and len(recent) >= EDIT_WINDOW:
            return "", "too many edits since the last update to tell who ticked; tick again"
        if not recent:  # GitHub has not listed the edit yet: everyone it does list must pass
            recent = list(history["edits"])
            if history["editor"] is not None:
                recent.append((history["last_edited_at"],) + tuple(history["editor"]))
        if not recent:
            return "", "GitHub names nobody who edited the body"
        me = self.github.login()
        logins: List[str] = []
        for _, login, kind in recent:
            why = self._may_not_order(login, kind, me)
            if why:
                return "", why
            if login not in logins:
                logins.append(login)
        others = [x for x in logins if x.lower() != me.lower()]
        return ", ".join(others or logins), ""

    def _may_not_order(self, login: str, kind: str, me: str) -> str:
        if not login:
            return "edited by a deleted account"
        if login.lower() == me.lower():
            return ""
        if kind == "Bot" or is_bot({"login": login}):
            return f"edited by {login}, a bot"
        perm = self.github.permission(login)
        return "" if perm in ("admin", "write") else f"edited by {login}, permission {perm}"

    def _handled(self, token: str, line: str) -> None:
        if token and token not in self.handled:
            self.handled = (self.handled + [token])[-HANDLED_KEPT:]
        if line:
            self.lines = (self.lines + [line])[-SHOW_LINES:]

    def _forget_unanswered(self) -> None:
        """Orders returned by the last step that done() never reported."""
        for token, order in list(self._inflight.items()):
            log.warning("status-issue order %s got no answer from the loop", order.box)
            self._handled(token, f"not done: {order.box} (no answer from the coordinator)")
        self._inflight.clear()

    # -- writing --

    def _publish(self, now: float, snap: Snapshot, issue: dict) -> None:
        """Edit the body when what it would show differs from what GitHub
        has: at most one edit per step, however much changed."""
        current = _norm(issue.get("body") or "")
        desired = _norm(redact(render(snap, self.rev, self.updated, self.lines)))
        if desired == current or (desired, current) == self._echo:
            return
        self.rev, self.updated = self.rev + 1, now
        self._save()  # rev before the edit: a crash after it must not reuse the tokens' rev
        body = redact(render(snap, self.rev, self.updated, self.lines))
        new = self.github.edit_issue_body(self.number, body)
        self.written_at = str(new.get("updated_at") or "")
        # Should GitHub keep the body in a form of its own (line ends, spaces), what
        # it answered stands for what we sent: no edit at every poll to "fix" it.
        self._echo = (_norm(body), _norm(new.get("body") or ""))
        log.info("status-issue #%d updated (rev %d)", self.number, self.rev)

    def _owe(self, kind: str, key: str, text: str, now: float, since: Optional[float] = None) -> None:
        """Queue a comment. While GitHub is away they fold: an "over" whose
        alert is still owed makes one comment that says both, and replaces
        an owed reminder; a newer reminder replaces an older one."""
        for c in self.owed if kind in ("over", "still") else ():
            if c["key"] == key and c["kind"] in ("alert", "still"):
                if kind == "still":
                    c["text"] = text
                elif c["kind"] == "alert":
                    c["over"] = now
                else:
                    c.update(kind="over", text=text, at=now)
                return
        self.owed.append({"kind": kind, "key": key, "text": text, "at": now if since is None else since})

    def _post_owed(self) -> None:
        """Post the owed comments in order; each is dropped once posted, so
        a failure leaves it (and those after it) for the next step."""
        while self.owed:
            c = self.owed[0]
            try:
                self.github.comment(self.number, redact(self._comment_text(c)))
            except GitHubError as e:
                if e.status != 422:
                    raise
                log.warning("status-issue #%d %s dropped, GitHub refused it: %s", self.number, c["key"], e)
            self.owed.pop(0)
            self._save()
            log.info("status-issue #%d %s posted: %s", self.number, c["kind"], c["key"])

    def _comment_text(self, c: dict) -> str:
        text = c["text"]  # made inert when it was queued (_plain, _code)
        cc = " ".join(f"@{x}" for x in self.notify)
        if c["kind"] == "over":
            return f"✅ **Over** (at {_clock(c['at'])}): {text}"
        if c.get("over"):
            head = f"⚠️ **Needed a person** from {_clock(c['at'])} to {_clock(c['over'])}"
        elif c["kind"] == "still":
            head = f"⚠️ **Still needs a person** ({_clock(c['at'])})"
        else:
            head = f"⚠️ **Needs a person** (since {_clock(c['at'])})"
        return f"{head}: {text}" + (f"\n\ncc {cc}" if cc else "")

    # -- state and logging --

    def state(self) -> dict:
        return {"version": 1, "repo": self.github.repo, "number": self.number, "rev": self.rev,
                "updated": self.updated, "written_at": self.written_at, "lines": self.lines,
                "handled": self.handled, "owed": self.owed, "alerts": self.alerts.causes}

    def _load(self) -> None:
        if self.state_path is None or not self.state_path.exists():
            return
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
            if str(data.get("repo", self.github.repo)) != self.github.repo:
                # Another repository's issue: its number here may be anyone's
                # issue, or a pull request our account opened. Found afresh.
                log.info("status-issue state %s is for %s: starting afresh for %s",
                         self.state_path, data.get("repo"), self.github.repo)
                return
            number = None if data["number"] is None else int(data["number"])
            rev, updated, written_at = int(data["rev"]), float(data["updated"]), str(data["written_at"])
            lines = [str(x) for x in data["lines"]]
            handled = [str(x) for x in data["handled"]]
            owed = [dict(x) for x in data["owed"]]
            causes = {str(k): dict(v) for k, v in data["alerts"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            # Started afresh, the issue is found again by its label and the
            # body's marker; the next save replaces the file.
            log.warning("status-issue state %s unreadable, starting afresh: %s", self.state_path, e)
            return
        self.number, self.rev, self.updated, self.written_at = number, rev, updated, written_at
        self.lines, self.handled, self.owed = lines, handled, owed
        self.alerts.causes = causes
        self._saved = json.dumps(self.state(), sort_keys=True)

    def _save(self) -> None:
        if self.state_path is None:
            return
        text = json.dumps(self.state(), sort_keys=True)
        if text != self._saved:  # an idle step writes nothing to the SD card
            write_atomic(self.state_path, (text + "\n").encode("utf-8"))
            self._saved = text

    def _trouble(self, what: str, e: GitHubError) -> None:
        if self._said.get(what) != str(e):
            self._said[what] = str(e)
            log.info("status-issue %s failed, will retry: %s", what, e)

    def _ok(self, what: str) -> None:
        if self._said.pop(what, None) is not None:
            log.info("status-issue %s works again", what)

    def _say(self, key: str, message: str) -> None:
        if self._said.get(key) != message:
            self._said[key] = message
            log.info("%s", message)
