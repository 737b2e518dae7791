"""The tasks.md format: the coordinator's queue, which people read and edit.

This module owns the file's shape and nothing else: the Task record and its
five states, pure parse() and render(), load()/save()/update() that write
atomically and never overwrite a person's edit, and the archive of old
completed entries. The daemon (adws/coordinator.py) is the only writer;
tools read it through here so they never import the daemon.

Why the format is shaped as it is:

- The section an entry sits in IS its state. A person re-queues or cancels
  work by moving a line, so parse trusts the heading over the entry's marker,
  and render writes the canonical marker back.
- Everything the daemon needs to resume after a restart is a "- Key: value"
  line under its entry; there is no second state file to drift out of sync.
- Titles and values are backslash-escaped onto one line, so any str survives
  a round trip and a title containing a newline or "## Active" cannot forge
  an entry or a section.
- parse() never raises and never drops a line. What it does not understand
  (notes, unknown sections, malformed entries, bad values) is kept in place
  and reported: a lost entry once meant the same issue got a second worker.
"""
from __future__ import annotations

import copy
import gc
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Dict, List, Optional, Tuple, TypeVar

from adws.files import fsync_dir, write_atomic

try:
    # The interpreter's own SHA-256: hashlib would load OpenSSL's libcrypto,
    # 3.7 MB of a Pi's memory for a few short digests.
    from _sha256 import sha256  # Python 3.9-3.11
except ImportError:  # pragma: no cover - the module's name on 3.12+, or a build without it
    try:
        from _sha2 import sha256
    except ImportError:
        from hashlib import sha256


def short_sha(data: bytes) -> str:
    """12 hex digits of data's SHA-256: how tasks.md records a text (Body
    SHA, a follow-up's comments) without holding it."""
    return sha256(data).hexdigest()[:12]

T = TypeVar("T")

# -- States and records -------------------------------------------------------

PENDING, ACTIVE, COMPLETED, FAILED, BLOCKED = (
    "Pending", "Active", "Completed Today", "Failed", "Blocked")
SECTIONS = (PENDING, ACTIVE, COMPLETED, FAILED, BLOCKED)  # also the render order
TERMINAL = (COMPLETED, FAILED, BLOCKED)
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"   # local time, as users read it (format_time adds the offset)
DEFAULT_TITLE = "TAC coordinator — tasks"

_EMOJI = {ACTIVE: "🟡", COMPLETED: "✅", FAILED: "❌", BLOCKED: "⏰"}
# Which copy of a duplicated issue decides scheduling: a task that is running
# or has ended must never be started again because a stray Pending copy exists.
_RANK = {ACTIVE: 0, COMPLETED: 1, FAILED: 1, BLOCKED: 1, PENDING: 2}

# Detail lines in render order: (key as rendered, Task attribute, kind).
# "int" is Optional[int] (None = absent); "count" is an int where 0 = absent;
# "stage" is Optional[StageAt]. A task's stage results ("- Stage plan: ...",
# Task.stage_runs) have no fixed key: they render right after "Stage".
_DETAILS = (
    ("PID", "pid", "int"), ("PID start", "pid_start", "int"),
    ("Started", "started", "str"), ("Branch", "branch", "str"),
    ("Workflow", "workflow", "str"), ("Stage", "stage", "stage"),
    ("Worktree", "worktree", "str"), ("Log", "log", "str"),
    ("Log offset", "log_offset", "int"), ("Attempts", "attempts", "count"),
    ("Startup errors", "startup_errors", "count"),
    ("Next attempt", "next_attempt", "str"), ("Claimed by", "claimed_by", "str"),
    ("Completed", "completed", "str"),
    ("PR", "pr", "str"), ("Reason", "reason", "str"),
    ("Comment", "comment_id", "int"), ("Body SHA", "body_sha", "str"),
    ("Earlier runs", "earlier_runs", "count"), ("Finished", "finished", "str"),
    ("GitHub", "outbox", "str"),
    # Follow-ups on the task's pull request (adws/followup.py owns these values).
    ("Round", "round", "str"), ("Pushed", "pushed", "str"),
    ("Watch since", "watch_since", "str"), ("Watch seen", "watch_seen", "str"),
    ("Pending", "pending", "str"), ("Handled", "handled", "str"),
    ("Answer", "answer_id", "int"), ("Held", "held", "str"), ("Follow-ups", "followups", "str"),
    ("Round from", "round_from", "str"),
)
_BY_KEY = {key.lower(): (attr, kind) for key, attr, kind in _DETAILS}
# The key exactly as render() writes it after "-" (" PID"): the fast path for
# the daemon's own lines; anything else takes the general route in _detail().
# A stage is never a plain string or number: it always takes that route.
_EXACT = {" " + key: (attr, kind) for key, attr, kind in _DETAILS if kind != "stage"}


# -- Stages -------------------------------------------------------------------
# A workflow (adws/workflow.py) runs a task as several worker runs, its
# stages, in one worktree. tasks.md records where it is and what each stage
# run did, so a restart knows what is done and nothing completed runs twice:
#
#   - Stage: build (2 of 3)                          the stage running now (Active only)
#   - Stage: review (3 of 3, review round 1)         a re-review after a changes round
#   - Stage plan: completed in 3m 12s, $0.41, session 0c9e...; a note
#
# one result line per stage run, in the order they ended, retries and failed
# runs included. The note is free text (a review's verdict, why a run failed).

STAGE_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,39}")  # what config accepts; parse takes any case
STAGE_OUTCOMES = ("completed", "blocked", "failed", "stopped", "startup_error", "cancelled")  # as the ledger's
_ANY_STAGE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,39}")
_STAGE_AT_RE = re.compile(r"([A-Za-z][A-Za-z0-9_-]{0,39})(?: \(([0-9]{1,4}) of ([0-9]{1,4})"
                          r"(?:, review round ([0-9]{1,4}))?\))?")
_STAGE_RUN_RE = re.compile(
    r"([a-z_]+) in (?:([0-9]+)h )?(?:([0-9]+)m )?([0-9]+)s, \$([0-9]{1,15}(?:\.[0-9]{1,8})?)"
    r"(?:, session ([A-Za-z0-9_-]{1,100}))?(?:; (.*))?", re.S)
_SESSION_RE = re.compile(r"[A-Za-z0-9_-]{1,100}")


@dataclass(frozen=True)
class StageAt:
    """Where a task's workflow is: stage `name`, number `number` of `total`
    (0 of 0: not said, as in a hand-written "- Stage: plan"), and which
    review round, if the last review asked for changes (0: none)."""
    name: str
    number: int = 0
    total: int = 0
    review_round: int = 0

    def __post_init__(self) -> None:
        # A value the line cannot say is the daemon's bug: refused here, not written.
        said = 1 <= self.number <= self.total <= 9999 and 0 <= self.review_round <= 9999
        unsaid = self.number == self.total == self.review_round == 0
        if not _ANY_STAGE_NAME.fullmatch(self.name) or not (said or unsaid):
            raise ValueError(f"not a stage tasks.md can record: {self!r}")

    def __str__(self) -> str:
        if not self.number:
            return self.name
        rnd = f", review round {self.review_round}" if self.review_round else ""
        return f"{self.name} ({self.number} of {self.total}{rnd})"

    @classmethod
    def parse(cls, text: str) -> Optional["StageAt"]:
        m = _STAGE_AT_RE.fullmatch(text)
        if not m:
            return None
        number, total, rnd = (int(x) if x else 0 for x in m.group(2, 3, 4))
        try:
            return cls(m.group(1), number, total, rnd)
        except ValueError:  # "(0 of 3)", "(4 of 3)": not a place in a workflow
            return None


@dataclass(frozen=True)
class StageRun:
    """One stage run's result, as its "- Stage <name>: ..." line says it.
    Values are kept as the line can say them: whole seconds, dollars to four
    places, a session id only if it is a plain token; so what the daemon
    records reads back equal, restart after restart."""
    name: str
    outcome: str            # one of STAGE_OUTCOMES
    seconds: int = 0
    cost: float = 0.0
    session: str = ""       # the CLI's session id: a later stage may resume it
    note: str = ""          # a review's verdict line; why a run failed

    def __post_init__(self) -> None:
        if not _ANY_STAGE_NAME.fullmatch(self.name) or self.outcome not in STAGE_OUTCOMES:
            raise ValueError(f"not a stage result tasks.md can record: {self.name!r} {self.outcome!r}")
        cost = float(self.cost) if isinstance(self.cost, (int, float)) else 0.0
        # Out of range (NaN is in none, inf too) says nothing: 0. "+ 0.0": never -0.0.
        object.__setattr__(self, "cost", (round(cost, 4) if 0 <= cost < 1e12 else 0.0) + 0.0)
        seconds = float(self.seconds) if isinstance(self.seconds, (int, float)) else 0.0
        object.__setattr__(self, "seconds", int(seconds) if 0 <= seconds < 1e12 else 0)
        if not _SESSION_RE.fullmatch(self.session or ""):
            object.__setattr__(self, "session", "")

    @property
    def value(self) -> str:
        h, rest = divmod(self.seconds, 3600)
        m, sec = divmod(rest, 60)
        took = f"{h}h {m}m {sec}s" if h else f"{m}m {sec}s" if m else f"{sec}s"
        cost = f"{self.cost:.2f}" if round(self.cost, 2) == self.cost else f"{self.cost:.4f}"
        return (f"{self.outcome} in {took}, ${cost}" + (f", session {self.session}" if self.session else "")
                + (f"; {self.note}" if self.note else ""))

    @classmethod
    def parse(cls, name: str, text: str) -> Optional["StageRun"]:
        m = _STAGE_RUN_RE.fullmatch(text)
        if not m or m.group(1) not in STAGE_OUTCOMES:
            return None
        h, mins, sec = (int(x) if x else 0 for x in m.group(2, 3, 4))
        return cls(name, m.group(1), h * 3600 + mins * 60 + sec, float(m.group(5)), m.group(6) or "",
                   m.group(7) or "")


@dataclass
class Task:
    """One entry. `state` mirrors the section it is rendered under."""
    issue: int
    title: str
    state: str = PENDING
    priority: int = 2          # {p0} is most urgent; rendered clamped to 0-9
    worker: str = ""           # "w-ee4608"; not rendered for Pending ("[]")
    commit: str = ""           # short sha; rendered for Completed only
    pid: Optional[int] = None
    pid_start: Optional[int] = None   # /proc/PID/stat field 22: tells PID reuse apart
    started: str = ""
    branch: str = ""
    worktree: str = ""
    log: str = ""
    log_offset: Optional[int] = None
    attempts: int = 0
    startup_errors: int = 0
    next_attempt: str = ""
    # A cluster's claim on the issue, as this node last saw it (adws/cluster.py):
    # "pi-garage until 10:42" for another node's; on a Pending entry of this
    # node's own, "(this node, w-…)" follows, naming the worker the claim is for
    # ("w-new or w-old" after a restart cut a retry's hand-over short: either).
    claimed_by: str = ""
    completed: str = ""
    pr: str = ""
    reason: str = ""
    comment_id: Optional[int] = None
    body_sha: str = ""
    earlier_runs: int = 0      # runs of earlier rounds (a re-labelled issue gets new branch numbers)
    finished: str = ""         # when it reached Completed/Blocked/Failed: a later label means "run again"
    # "pending": the issue comment and label swap are still owed. Set in the
    # same write that ends the task, cleared once GitHub has them, so a crash
    # in between is caught up after the restart, never forgotten.
    outbox: str = ""
    workflow: str = ""         # "": the one-stage "build" workflow, as before workflows existed
    stage: Optional[StageAt] = None   # the stage running now; cleared when the task leaves Active
    stage_runs: List[StageRun] = field(default_factory=list)  # every stage run's result, in order
    # Follow-ups (issue #14): answering reviews on the task's pull request.
    # The values are written and read by adws/followup.py (Watch.of, fields).
    round: str = ""            # "2 of 4": round 1 is the first run; shown while a follow-up runs, kept after
    pushed: str = ""           # the last sha the coordinator pushed to the PR's branch
    watch_since: str = ""      # GitHub time: comments older than this are not for the follow-ups
    watch_seen: str = ""       # the PR's updated_at when last read with nothing pending: unchanged, no read
    pending: str = ""          # "r101=3fa2c1d0e9b8 c202=...": trusted comments read, not yet answered
    handled: str = ""          # the same for comments answered (or refused) in a round
    answer_id: Optional[int] = None  # the PR comment that answers the current round, edited in place
    held: str = ""             # "<sha> <GitHub time>": a head held for others' agent-config changes
    followups: str = ""        # why the PR is no longer watched ("stopped: PR merged"); "" = watched
    round_from: str = ""       # the head the running round's worktree was made at: its commits come after it
    extra: List[Tuple[str, str]] = field(default_factory=list)  # unknown or unparseable "- Key: value"
    # A person's lines found under this entry, kept verbatim and rendered after
    # its details. They travel with the entry when it moves.
    notes: List[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"gh-{self.issue}"


@dataclass
class TaskFile:
    """A parsed tasks.md. Entries render grouped by state in SECTIONS order,
    in list order within a section; the other fields keep a person's text."""
    tasks: List[Task] = field(default_factory=list)
    status: str = ""                   # the daemon's "> Status: ..." line
    title: str = DEFAULT_TITLE         # the "# ..." line
    preamble: List[str] = field(default_factory=list)       # other lines before the first section
    heads: Dict[str, List[str]] = field(default_factory=dict)  # lines before a section's first entry
    # Unknown "## Other" sections: (known section they follow, "" = before all;
    # [heading line, *lines verbatim]).
    others: List[Tuple[str, List[str]]] = field(default_factory=list)

    def in_state(self, state: str) -> List[Task]:
        return [t for t in self.tasks if t.state == state]

    def copy(self) -> "TaskFile":
        """A copy that shares nothing a change can alter (StageAt and
        StageRun are frozen): the same as parsing the file again, for a
        quarter of the time."""
        return TaskFile(tasks=[_copy(t) for t in self.tasks], status=self.status, title=self.title,
                        preamble=list(self.preamble), heads={k: list(v) for k, v in self.heads.items()},
                        others=[(after, list(lines)) for after, lines in self.others])

    def governing(self, issue: int) -> Optional[Task]:
        """The entry that decides what happens to `issue` (see _RANK); on a
        tie, the first in render order."""
        best = None
        for t in self.tasks:
            if t.issue == issue and (best is None or _RANK.get(t.state, 3) < _RANK.get(best.state, 3)):
                best = t
        return best

    def add(self, task: Task) -> None:
        _check_state(task.state)
        self.tasks.append(task)

    def move(self, task: Task, state: str) -> None:
        """Put `task` (this very object) at the end of section `state`. What
        that section's marker cannot carry goes, as it would in the file: a
        commit outside Completed, a worker in Pending ("[]")."""
        _check_state(state)
        del self.tasks[self._index(task)]
        task.state = state
        if state != COMPLETED:
            task.commit = ""
        if state == PENDING:
            task.worker = ""
        self.tasks.append(task)

    def remove(self, task: Task, notes_stay: bool = True) -> None:
        """Drop `task`; a person's notes under it stay where they were
        (unless `notes_stay` is False: they went to the archive with it)."""
        i = self._index(task)
        del self.tasks[i]
        if task.notes and notes_stay:
            before = [t for t in self.tasks[:i] if t.state == task.state]
            home = before[-1].notes if before else self.heads.setdefault(task.state, [])
            home.extend(task.notes)
            task.notes = []

    def _index(self, task: Task) -> int:
        for i, t in enumerate(self.tasks):
            if t is task:   # identity: duplicates of an issue may compare equal
                return i
        raise ValueError(f"{task.name} is not in this TaskFile")


def _check_state(state: str) -> None:
    if state not in SECTIONS:
        raise ValueError(f"unknown state {state!r}")


# -- Lifecycle ----------------------------------------------------------------
# Every change the daemon makes to a task goes through transition(): the one
# place that knows which moves are legal and what each move implies (an
# ended task records when it ended and owes GitHub a notice; a task that
# leaves Active forgets its PID). A person may move entries by hand in any
# way; the daemon only ever takes these arcs.
#
#   (not in tasks.md) --queued--> Pending --started--> Active --> Completed/Blocked/Failed
#   Pending --dropped--> (not in tasks.md)     Active --back to the queue--> Pending
#   Completed --archived--> (not in tasks.md; tasks-archive.md has it, notes and all)
#   (not in tasks.md) --restored--> Active (a live worker's entry that vanished)
#   Completed/Blocked/Failed --queued again--> Pending (a fresh entry)
#   Completed --round--> Active --round ended--> Completed (a follow-up on the
#       task's pull request, adws/rounds.py: an Active entry with a PR and a
#       Round is a round, not a first run; ending it leaves Finished and the
#       issue's notice as they were, since the issue was told when it completed)
#   any state --amended--> itself (fields only)

NEW = None  # "not in tasks.md"
ARCS: Dict[Tuple[Optional[str], Optional[str]], str] = {
    (NEW, PENDING): "queued",
    (PENDING, ACTIVE): "started",
    (NEW, ACTIVE): "restored",  # a live worker's entry vanished from the file: written back
    (PENDING, NEW): "dropped",
    (COMPLETED, NEW): "archived",
    (ACTIVE, PENDING): "back to the queue",
    (ACTIVE, COMPLETED): "completed",  # or "round ended": see in_round()
    (COMPLETED, ACTIVE): "round",
    (ACTIVE, BLOCKED): "blocked",
    (ACTIVE, FAILED): "failed",
    **{(s, PENDING): "queued again" for s in TERMINAL},
    **{(s, s): "amended" for s in SECTIONS},
}
_FIELDS = frozenset(f for f in Task.__dataclass_fields__ if f not in ("issue", "state", "extra", "notes"))


class IllegalTransition(ValueError):
    """A move the daemon must never make: a bug, not bad input."""


def transition(doc: TaskFile, issue: int, to: Optional[str], *, expect, owner: Optional[str] = None,
               now: Optional[float] = None, entry: Optional[Task] = None, **fields) -> Optional[Task]:
    """Move `issue`'s governing entry to state `to` (NEW removes it) and set
    `fields`, if it is still as the caller last saw it: in a state in
    `expect` (one state or a tuple) and, when `owner` is given, run by that
    worker. Otherwise a person (or a later step) changed it meanwhile and
    nothing happens: returns None. Returns a copy of the entry as written.

    Entering Pending from outside tasks.md or from an ended state writes a
    fresh entry; entering an ended state stamps Finished (needs `now`) and
    marks the notice owed; leaving Active clears the PID. `entry` names
    the very entry to move when it is not the governing one (a duplicate)."""
    cur = entry if entry is not None else doc.governing(issue)
    state = cur.state if cur is not None else NEW
    if state not in (expect if isinstance(expect, tuple) else (expect,)):
        return None
    if owner is not None and (cur is None or cur.worker != owner):
        return None
    if (state, to) not in ARCS:
        raise IllegalTransition(f"gh-{issue}: no transition {state} -> {to}")
    unknown = set(fields) - _FIELDS
    if unknown:
        raise IllegalTransition(f"gh-{issue}: unknown task fields {sorted(unknown)}")
    if to is NEW:
        doc.remove(cur, notes_stay=state != COMPLETED)  # archived: its notes went with it
        return cur
    if state is NEW and to == ACTIVE:
        fresh = Task(issue=issue, state=ACTIVE, **fields)
        doc.add(fresh)
        return _copy(fresh)
    if to == PENDING and state in (NEW,) + TERMINAL:
        fields.setdefault("title", cur.title if cur is not None else "")
        fresh = Task(issue=issue, **fields)
        if cur is not None:
            doc.remove(cur)
        doc.add(fresh)
        return _copy(fresh)
    if to != state:
        doc.move(cur, to)
        if state == ACTIVE:
            cur.pid = cur.pid_start = None
            cur.stage = None  # describes a running worker, like the PID; stage_runs say what is done
        if to in TERMINAL and not (state == ACTIVE and to == COMPLETED and in_round(cur)):
            if now is None:
                raise IllegalTransition(f"gh-{issue}: ending a task needs the time")
            cur.finished, cur.outbox, cur.next_attempt = format_time(now), "pending", ""
    for name, value in fields.items():
        setattr(cur, name, value)
    return _copy(cur)


def in_round(t: Task) -> bool:
    """Is this entry a follow-up round (Completed -> Active with its PR and
    a Round) rather than a first run? A first run's entry has neither: a
    task queued again is a fresh entry."""
    return bool(t.pr and t.round)


def amend(doc: TaskFile, issue: int, *, expect, owner: Optional[str] = None, **fields) -> Optional[Task]:
    """Set fields of `issue`'s entry without moving it (see transition)."""
    cur = doc.governing(issue)
    if cur is None:
        return None
    return transition(doc, issue, cur.state, expect=expect, owner=owner, **fields)


def _copy(t: Task) -> Task:
    new = copy.copy(t)  # not replace(): that runs __init__ again, twice as slow on a big file
    new.extra, new.notes, new.stage_runs = list(t.extra), list(t.notes), list(t.stage_runs)
    return new


# -- Escaping -----------------------------------------------------------------
# Only backslash and characters that could end or hide a line are escaped:
# C0/C1 controls (which include \n \r \x0b \x0c \x1c-\x1e \x85), U+2028/9, and
# lone surrogates (unencodable). Leading/trailing whitespace is escaped too,
# so parse may strip the spaces people add by hand. Everything else, emoji and
# braces included, renders as itself.

_NEEDS_ESCAPE = re.compile(r"[\\\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_UNESCAPE = re.compile(r"\\(?:([\\nrt])|x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4}))")
_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNNAMED = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}


def _esc_char(c: str) -> str:
    if c in _NAMED:
        return _NAMED[c]
    return "\\x%02x" % ord(c) if ord(c) < 0x100 else "\\u%04x" % ord(c)


def _escape(s: str) -> str:
    body = s.strip()
    if body == s and not _NEEDS_ESCAPE.search(s):
        return s                       # the common case, kept fast for big files
    if not body:
        return "".join(map(_esc_char, s))
    lead = len(s) - len(s.lstrip())
    end = lead + len(body)
    return ("".join(map(_esc_char, s[:lead]))
            + _NEEDS_ESCAPE.sub(lambda m: _esc_char(m.group()), body)
            + "".join(map(_esc_char, s[end:])))


def _unescape(s: str) -> str:
    if "\\" not in s:
        return s
    # An unknown escape such as a hand-written "C:\path" stays literal.
    return _UNESCAPE.sub(lambda m: _UNNAMED[m.group(1)] if m.group(1)
                         else chr(int(m.group(2) or m.group(3), 16)), s)


# -- Parse --------------------------------------------------------------------

# Patterns are written so that no two parts can match the same run of
# characters: a long line of spaces must not make parsing quadratic.
_SECTION_RE = re.compile(r"\s*##(?!#)(.*)")
_TITLE_RE = re.compile(r"#(?:[ \t](.*))?")
_STATUS_RE = re.compile(r">\s*status\s*:(.*)", re.I)
_ENTRY_RE = re.compile(r"\s*\[([^\]]*)\]\s*gh-([0-9]+)\s*:(.*)", re.I)
_ENTRYISH_RE = re.compile(r"\s*(?:[-*]\s*)?(?:\[|gh-[0-9])", re.I)  # looks meant as an entry
_WORKER_RE = re.compile(r"(?<![0-9A-Za-z_-])w-[0-9A-Za-z_-]+")
_SHA_RE = re.compile(r"(?<![0-9A-Za-z_-])[0-9a-fA-F]{4,40}(?![0-9A-Za-z_-])")
_INT_RE = re.compile(r"-?[0-9]+")
_KNOWN = {s.lower(): s for s in SECTIONS}
MAX_PROBLEMS = 20  # reported one by one; beyond that, counted


def parse(text: str, filename: str = "tasks.md") -> Tuple[TaskFile, List[str]]:
    """Read tasks.md text. Returns the document and one problem per line it
    did not fully understand ("tasks.md:12: what, kept as is: 'line'").
    Never raises, never drops an entry."""
    # A big file allocates tens of thousands of objects and no reference
    # cycles: pausing the cyclic GC keeps it from scanning the whole heap
    # again and again in the middle of the parse.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _parse(text, filename)
    finally:
        if enabled:
            gc.enable()


def _parse(text: str, filename: str) -> Tuple[TaskFile, List[str]]:
    reader = _Reader(filename)
    if text.startswith("\ufeff"):
        text = text[1:]               # the byte-order mark some Windows editors add
    for n, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        # Cheap first-character tests decide which patterns can match at
        # all: a 10,000-entry file is mostly detail lines.
        stripped = line.lstrip()
        lead = stripped[:1]
        m = _SECTION_RE.fullmatch(line) if lead == "#" else None
        if m:
            reader.heading(n, line, m)
        elif reader.section is None:
            reader.preamble(n, line)
        elif reader.section == "":
            reader.unknown_section(n, line)
        elif lead:                    # blank lines are only layout
            reader.body(n, line, stripped, lead)
    return reader.done()


class _Reader:
    """One pass over tasks.md, line by line: where it is (preamble, a known
    section, an unknown one), the entry whose details it is reading, and
    what it did not understand."""

    def __init__(self, filename: str) -> None:
        self.doc = TaskFile(title="")
        self.filename = filename
        self.problems: List[str] = []
        self.unsaid = 0
        self.title_seen = self.status_seen = False
        self.section: Optional[str] = None  # None: preamble; "": an unknown section
        self.other: List[str] = []
        self.last_known = ""
        self.entered: set = set()
        self.anchor: Optional[Task] = None  # last entry of this section: strays go under it
        self.task: Optional[Task] = None    # entry whose "- Key: value" lines we are reading
        self.keys: set = set()
        self.first: Dict[int, int] = {}

    def report(self, n: int, what: str, line: str) -> None:
        if len(self.problems) >= MAX_PROBLEMS:  # a file of garbage must not become a log of garbage
            self.unsaid += 1
            return
        shown = line if len(line) <= 120 else line[:117] + "..."
        self.problems.append(f"{self.filename}:{n}: {what}, kept as is: {shown!r}")

    def heading(self, n: int, line: str, m: "re.Match") -> None:
        self.task = self.anchor = None
        name = _KNOWN.get(" ".join(m.group(1).split()).lower())
        if name is None:
            self.section, self.other = "", [line]
            self.doc.others.append((self.last_known, self.other))
            self.report(n, "unknown section", line)
            return
        if name in self.entered:
            self.problems.append(f"{self.filename}:{n}: second '## {name}' heading, merged into the first")
        self.section = self.last_known = name
        self.entered.add(name)

    def preamble(self, n: int, line: str) -> None:
        doc = self.doc
        t, s = _TITLE_RE.fullmatch(line), _STATUS_RE.fullmatch(line)
        if t and not self.title_seen:
            doc.title, self.title_seen = _unescape((t.group(1) or "").strip()), True
        elif s and not self.status_seen:
            doc.status, self.status_seen = _unescape(s.group(1).strip()), True
        elif s:   # the daemon owns this line and rewrites it: a second copy is stale
            self.problems.append(f"{self.filename}:{n}: second status line dropped: {line!r}")
        else:
            doc.preamble.append(line)
            if line.strip():
                self.report(n, "text before the first section", line)

    def unknown_section(self, n: int, line: str) -> None:
        self.other.append(line)
        if _ENTRY_RE.fullmatch(line):
            self.report(n, "entry outside the known sections", line)

    def body(self, n: int, line: str, stripped: str, lead: str) -> None:
        """A non-blank line in a known section: an entry, one of its
        details, or a stray kept under the entry before it."""
        m = _ENTRY_RE.fullmatch(line) if lead == "[" else None
        if m:
            task = self.task = self.anchor = _entry(m, self.section)
            self.keys = set()
            self.doc.tasks.append(task)
            if task.issue in self.first:
                self.report(n, f"{task.name} listed again (first at line {self.first[task.issue]})", line)
            self.first.setdefault(task.issue, n)
            return
        task = self.task
        # "- Key: value": the key runs to the first colon.
        key, colon, value = stripped[1:].partition(":") if lead == "-" else ("", "", "")
        if task is not None and colon:
            spec = _EXACT.get(key)
            v = value[1:]
            if (spec is not None and spec[0] not in self.keys and value[:1] == " " and v
                    and not v[0].isspace() and not v[-1].isspace() and "\\" not in v
                    and (spec[1] == "str" or (v.isascii() and v.isdigit()))):
                setattr(task, spec[0], v if spec[1] == "str" else int(v))
                self.keys.add(spec[0])
                return
        # No canonical key starts with "[" or "g", so the fast path above
        # never hides a malformed entry line.
        maybe_entry = lead in "[*gG" or (lead == "-" and stripped[1:].lstrip()[:1] in ("[", "g", "G"))
        if maybe_entry and _ENTRYISH_RE.match(line):
            self.task = None          # its "- Key: value" lines are not ours either
            self.report(n, "malformed entry", line)
        elif task is not None and colon and key.strip():
            err = _detail(task, key, value, self.keys)
            if err:
                self.report(n, err, line)
            return
        elif colon and task is None:
            self.report(n, "detail line outside an entry", line)
        else:
            self.report(n, f"unexpected text in '## {self.section}'", line)
        if self.anchor is not None:
            self.anchor.notes.append(line)
        else:
            self.doc.heads.setdefault(self.section, []).append(line)

    def done(self) -> Tuple[TaskFile, List[str]]:
        doc, problems = self.doc, self.problems
        if self.unsaid:
            problems.append(f"{self.filename}: and {self.unsaid:,} more lines it did not understand, kept as they are")
        doc.title = doc.title if self.title_seen else DEFAULT_TITLE
        # Render writes sections in SECTIONS order; list things in that order now,
        # so that a document read back from render() equals this one.
        doc.tasks.sort(key=_section_order)
        doc.others.sort(key=lambda o: SECTIONS.index(o[0]) + 1 if o[0] else 0)
        doc.preamble = _trim(doc.preamble)
        for _, lines in doc.others:
            lines[1:] = _trim(lines[1:], lead=False)
        return doc, problems


def _section_order(t: Task) -> int:
    return SECTIONS.index(t.state)


def _trim(lines: List[str], lead: bool = True) -> List[str]:
    """Drop blank lines at the end (and start): render supplies that spacing."""
    a, b = 0, len(lines)
    while lead and a < b and not lines[a].strip():
        a += 1
    while b > a and not lines[b - 1].strip():
        b -= 1
    return lines[a:b]


def _entry(m: re.Match, section: str) -> Task:
    marker, issue, rest = m.groups()
    rest = rest.strip()
    # Only a final "{pN}" is the priority (checked by hand: a regex search
    # anchored at the end still tries every position of a long title).
    if len(rest) >= 4 and rest[-1] == "}" and rest[-4:-2] == "{p" and rest[-2] in "0123456789":
        title, priority = rest[:-4], int(rest[-2])
    else:
        title, priority = rest, 2
    task = Task(int(issue), _unescape(title.strip()), section, priority)
    # The marker is read loosely (a hand-moved entry keeps its old one); only
    # what the section's canonical marker can carry is taken from it.
    w = _WORKER_RE.search(marker) if "w-" in marker else None
    sha = _SHA_RE.search(marker) if section == COMPLETED else None
    if w and section != PENDING:
        task.worker = w.group()
    if sha and section == COMPLETED:
        task.commit = sha.group()
    return task


def _detail(task: Task, raw_key: str, raw_value: str, seen: set) -> Optional[str]:
    """Apply one "- Key: value" line; return a problem, or None."""
    key = raw_key.strip()
    if "  " in key or "\t" in key:
        key = " ".join(key.split())
    value = _unescape(raw_value.strip())
    known = _BY_KEY.get(key.lower())
    if known is None:
        if key[:6].lower() == "stage " and value:
            run = StageRun.parse(key[6:], value) if _ANY_STAGE_NAME.fullmatch(key[6:]) else None
            if run is None:
                task.extra.append((key, value))
                return f"'{key}' is not a stage result ('completed in 3m 12s, $0.41')"
            task.stage_runs.append(run)
            return None
        task.extra.append((key, value))
        return None
    attr, kind = known
    if kind == "stage":
        if attr in seen and value:
            task.extra.append((key, value))
            return f"repeated '{key}' for {task.name}"
        at = StageAt.parse(value) if value else None
        if value and at is None:
            task.extra.append((key, value))
            return f"'{key}' is not a stage ('build (2 of 3)')"
        if at is not None:
            seen.add(attr)
            task.stage = at
        return None
    # Bad or repeated values go to extra, so they are rendered back, not lost.
    if attr in seen:
        task.extra.append((key, value))
        return f"repeated '{key}' for {task.name}"
    if kind != "str" and value and not _INT_RE.fullmatch(value):
        task.extra.append((key, value))
        return f"'{key}' is not a number"
    if not value:
        return None  # empty says nothing: not "seen", so a later line with a value is no repeat
    seen.add(attr)
    setattr(task, attr, value if kind == "str" else int(value))
    return None


# -- Render -------------------------------------------------------------------

def render(doc: TaskFile) -> str:
    """The text of tasks.md. parse(render(doc)) gives doc back."""
    out = ["# " + _escape(doc.title)]
    if doc.status:
        out.append("> Status: " + _escape(doc.status))
    if doc.preamble:
        out += [""] + doc.preamble
    for t in doc.tasks:
        _check_state(t.state)          # an unknown state would silently vanish
    for section in ("",) + SECTIONS:
        if section:
            out += ["", "## " + section] + doc.heads.get(section, [])
            for t in doc.tasks:
                if t.state == section:
                    out += _render_entry(t)
        for after, lines in doc.others:
            if (after if after in SECTIONS else "") == section:
                out += [""] + lines
    return "\n".join(out) + "\n"


def _render_entry(t: Task) -> List[str]:
    if t.state == PENDING:
        marker = "[]"
    else:
        ids = ", ".join(x for x in (t.commit if t.state == COMPLETED else "", t.worker) if x)
        marker = f"[{_EMOJI[t.state]} {ids}]" if ids else f"[{_EMOJI[t.state]}]"
    lines = [f"{marker} gh-{t.issue}: {_escape(t.title)} {{p{min(9, max(0, t.priority))}}}"]
    for key, attr, kind in _DETAILS:
        v = getattr(t, attr)
        if v is not None and v != "" and not (kind == "count" and v <= 0):
            lines.append(f"- {key}: {_escape(str(v))}")
        if kind == "stage":
            lines += [f"- Stage {r.name}: {_escape(r.value)}" for r in t.stage_runs]
    lines += [f"- {' '.join(k.split())}: {_escape(v)}" for k, v in t.extra]
    return lines + t.notes


# -- Time ---------------------------------------------------------------------

def format_time(epoch: float) -> str:
    """Local time, as people read it, with its UTC offset: without one, a
    time written before a daylight-saving change reads back an hour off."""
    return time.strftime(TIME_FORMAT + " %z", time.localtime(epoch))


def parse_time(s: str) -> Optional[float]:
    """Epoch seconds for a format_time string, or None when unparseable. A
    time without an offset (older files, a person's hand) is local time."""
    try:
        text = s.strip()
        if len(text) > 19:
            return datetime.strptime(text, TIME_FORMAT + " %z").timestamp()
        return time.mktime(time.strptime(text, TIME_FORMAT))
    except (ValueError, OverflowError, AttributeError):
        return None


# -- Files --------------------------------------------------------------------
# The daemon rewrites tasks.md while a person may have it open in an editor.
# save() writes only if the file still holds what load() read, so a person's
# save always wins and the daemon re-applies its change on top (update()).
# There is a window between the last check and os.replace() that only a lock
# could close, and editors take no locks; it is kept as short as possible.

@dataclass(frozen=True)
class Snapshot:
    """What load() saw: the file's bytes, or None if it did not exist."""
    data: Optional[bytes]


class ConflictError(Exception):
    """update() kept losing the race with other writers."""


def _read(path) -> Optional[bytes]:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _decode(data: Optional[bytes]) -> str:
    # surrogateescape: stray non-UTF-8 bytes in a person's notes survive a save.
    return "" if data is None else data.decode("utf-8", "surrogateescape")


def load(path) -> Tuple[TaskFile, List[str], Snapshot]:
    """Parse the file at `path`; a missing file is an empty TaskFile."""
    data = _read(path)
    doc, problems = parse(_decode(data), os.path.basename(os.fspath(path)))
    return doc, problems, Snapshot(data)


def save(path, doc: TaskFile, expected: Snapshot) -> bool:
    """Atomically replace the file with render(doc), unless it changed since
    `expected` was taken; then write nothing and return False."""
    return _save(path, render(doc).encode("utf-8", "surrogateescape"), expected.data)


def _save(path, data: bytes, expected: Optional[bytes]) -> bool:
    current = _read(path)
    if current != expected:
        return False
    if current == data:
        return True                   # nothing to write: spare the SD card
    mode = 0o644 if current is None else os.stat(path).st_mode & 0o7777
    # Checked again just before the rename: a person may save while we write.
    return write_atomic(path, data, mode, still_ours=lambda: _read(path) == expected)


def update(path, change: Callable[[TaskFile], T], retries: int = 20) -> Tuple[TaskFile, T]:
    """load -> change(doc) -> save. When someone edited the file meanwhile,
    re-run `change` on the new content, so a person's edit is never lost.
    `change` may run several times; each run sees a fresh document."""
    return Store(path).update(change, retries)


class Store:
    """tasks.md as the daemon sees it: read many times a tick, written a few
    times per task. The file is parsed again only when its bytes are not
    the ones last parsed or written, and a change starts from a copy of
    the document those bytes hold: with a thousand entries a parse costs
    about 15 ms (far more on a Pi), and without this a task's few writes
    cost a dozen parses. read() may be called from other threads: the
    (bytes, document) pair is replaced in one assignment and a document,
    once shared, is never changed."""

    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(os.fspath(path))
        self._seen: Optional[Tuple[Optional[bytes], TaskFile]] = None

    def read(self) -> Tuple[TaskFile, List[str]]:
        """The document in the file now, for reading only (changes go
        through update()), and what parse() did not understand in it when
        it had to parse: [] when the bytes were known."""
        data, seen = _read(self.path), self._seen
        if seen is not None and data == seen[0]:
            return seen[1], []
        doc, problems = parse(_decode(data), self.name)
        self._seen = (data, doc)
        return doc, problems

    def update(self, change: Callable[[TaskFile], T], retries: int = 20) -> Tuple[TaskFile, T]:
        """update(), starting from a copy of the document already read when
        the file still holds it. The bytes written are remembered with the
        changed document, listed as parse() lists them, so the next read
        parses nothing (parse(render(doc)) == doc: tests/test_tasks.py)."""
        for _ in range(retries):
            data, seen = _read(self.path), self._seen
            doc = seen[1].copy() if seen is not None and data == seen[0] else parse(_decode(data), self.name)[0]
            result = change(doc)
            written = render(doc).encode("utf-8", "surrogateescape")
            if _save(self.path, written, data):
                doc.tasks.sort(key=_section_order)
                self._seen = (written, doc)
                return doc, result
        raise ConflictError(f"{self.path}: changed by someone else {retries} times in a row")


# -- Archive ------------------------------------------------------------------

_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def old_completed(doc: TaskFile, today: str) -> List[Task]:
    """Completed entries finished before `today` (YYYY-MM-DD): the ones to
    archive. Entries without a readable date stay."""
    return [t for t in doc.tasks if t.state == COMPLETED and _DATE_RE.match(t.completed)
            and t.completed[:10] < today]


def _archive_key(lines: List[str]) -> Tuple[str, str]:
    return lines[0], next((x for x in lines[1:] if x.startswith("- Completed:")), "")


def append_archive(archive_path, tasks: List[Task], day: str = "") -> None:
    """Append `tasks` under "## Archived <day>" (default: today) and fsync.
    Entries already there (same header and Completed line) are skipped: the
    daemon may crash after this append but before saving tasks.md, and then
    archives the same entries again."""
    data = _read(archive_path)
    text = "" if data is None else data.decode("utf-8", "surrogateescape")
    seen, block = set(), []
    for line in text.split("\n") + ["## end"]:
        if _ENTRY_RE.fullmatch(line) or _SECTION_RE.fullmatch(line):
            if block:
                seen.add(_archive_key(block))
            block = [line] if line.startswith("[") else []
        elif block:
            block.append(line)
    out: List[str] = []
    for t in tasks:
        lines = _render_entry(t)
        if _archive_key(lines) not in seen:
            seen.add(_archive_key(lines))
            out += lines
    if not out:
        return
    gap = "" if not text else "\n" if text.endswith("\n") else "\n\n"
    chunk = gap + f"## Archived {day or time.strftime('%Y-%m-%d')}\n" + "\n".join(out) + "\n"
    with open(archive_path, "ab") as f:
        f.write(chunk.encode("utf-8", "surrogateescape"))
        f.flush()
        os.fsync(f.fileno())
    if data is None:
        fsync_dir(os.path.dirname(os.path.abspath(archive_path)))
