"""Follow-up runs on the coordinator's own pull requests (issue #14): what
asks for one, what it sees, when it runs, and what the loop records.

The loop (adws/coordinator.py) owns the workers and tasks.md; this module
owns the rules and the data, in four parts:

- The data: Item (one review, review comment or conversation comment, its
  text as first read), Batch (what one round answers), Watch (one pull
  request's watermark, kept in its task's tasks.md fields) and Decision
  (what Watcher.poll says to do about one pull request).
- The rules, pure, with `now` a parameter: classify() (whose words count),
  mentions() (the trigger phrase), decide() (run, wait, hold, refuse, stop).
- The read path, Watcher.poll(): the only I/O here, through adws/github.py.
  One conditional list of pull requests per poll, a free 304 when nothing
  changed anywhere; then three conditional reads for each watched pull
  request whose updated_at moved, and none for the others.
- What the loop writes back (start_round, round_ended, answered, held) and
  the notices it posts (max_rounds_text, hold_text, unknown_text), plus the
  answers file a worker leaves (read_answers).

Why the data is shaped this way:

- Trust is the trigger label's: a trusted(login) callable (write, maintain,
  admin, or [github] trusted_users) decides, and only trusted people's words
  ever reach a prompt. Bots never count, whoever lists them. The
  coordinator's own comments are told apart by COMMENT_MARKER, not by
  login: on a personal Pi the token is often the reviewer's own account.
- Text is taken as it was first read. Each item's digest is written to
  tasks.md (Pending, then Handled) when it is read, so after a restart a
  comment edited meanwhile is noticed and left out (its first text is
  gone), never run as edited: the text that runs is the text that asked.
- Ids carry their kind (v = review, r = review comment, c = conversation
  comment): the three are numbered by GitHub independently. The prompt,
  the answers file and tasks.md use the same ids.
- Times are GitHub's own ISO 8601 UTC strings (they sort as text); `now`
  is the Pi's clock, compared with them only for `quiet` (NTP keeps the
  two within a second or so).
"""
from __future__ import annotations

import calendar
import json
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from adws.github import COMMENT_MARKER, GitHub, is_bot, pull_state
from adws.prompt import clean_issue_text
from adws.tasks import COMPLETED, short_sha

# -- The data ------------------------------------------------------------------

REVIEW, REVIEW_COMMENT, COMMENT = "review", "review comment", "comment"
_PREFIX = {REVIEW: "v", REVIEW_COMMENT: "r", COMMENT: "c"}
# Submitted reviews; a PENDING one is its author's draft, a DISMISSED one was withdrawn.
REVIEW_STATES = ("CHANGES_REQUESTED", "COMMENTED", "APPROVED")
ANSWERS_FILE = ".tac/answers.json"  # what the worker leaves for the answer comment (followup_template.md)
_KEY = re.compile(r"[vrc][0-9]+")
_LOGIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\[bot\])?")


def digest(text: str) -> str:
    """The hash of an item's text recorded in tasks.md: 12 hex digits of
    its SHA-256 (line endings as GitHub may send them folded to \\n)."""
    return short_sha((text or "").replace("\r\n", "\n").encode("utf-8"))


@dataclass(frozen=True)
class Item:
    """One review, review comment or conversation comment, as first read."""
    kind: str
    id: int
    author: str
    at: str                       # created_at, or a review's submitted_at
    body: str
    bot: bool = False
    state: str = ""               # reviews: CHANGES_REQUESTED, COMMENTED, APPROVED
    path: str = ""                # review comments: the file,
    line: Optional[int] = None    # its line now (None once outdated by a later push),
    original_line: Optional[int] = None  # the line commented on,
    diff_hunk: str = ""           # the diff down to that line,
    in_reply_to: Optional[int] = None    # the comment it answers in its thread,
    review_id: Optional[int] = None      # and the review it belongs to
    trigger: bool = False         # set by classify(): this item asks for a follow-up

    @property
    def key(self) -> str:
        return f"{_PREFIX[self.kind]}{self.id}"

    @property
    def digest(self) -> str:
        return digest(self.body)


def items_from(reviews: Iterable[dict], review_comments: Iterable[dict], comments: Iterable[dict]) -> List[Item]:
    """Items from GitHub's answers (adws/github.py has checked their
    shape): submitted reviews, review comments, conversation comments.
    Anything without an integer id or a time is skipped."""
    out: List[Item] = []
    for r in reviews:
        state = str(r.get("state") or "")
        if state in REVIEW_STATES and isinstance(r.get("id"), int) and r.get("submitted_at"):
            out.append(Item(REVIEW, r["id"], _login(r.get("user")), str(r["submitted_at"]),
                            str(r.get("body") or ""), is_bot(r.get("user")), state=state))
    for c in review_comments:
        if isinstance(c.get("id"), int) and c.get("created_at"):
            out.append(Item(REVIEW_COMMENT, c["id"], _login(c.get("user")), str(c["created_at"]),
                            str(c.get("body") or ""), is_bot(c.get("user")), path=str(c.get("path") or ""),
                            line=_int(c.get("line")), original_line=_int(c.get("original_line")),
                            diff_hunk=str(c.get("diff_hunk") or ""), in_reply_to=_int(c.get("in_reply_to_id")),
                            review_id=_int(c.get("pull_request_review_id"))))
    for c in comments:
        if isinstance(c.get("id"), int) and c.get("created_at"):
            out.append(Item(COMMENT, c["id"], _login(c.get("user")), str(c["created_at"]),
                            str(c.get("body") or ""), is_bot(c.get("user"))))
    return out


def _login(user: Any) -> str:
    login = str((user or {}).get("login") or "") if isinstance(user, dict) else ""
    return login if _LOGIN.fullmatch(login) else ""  # "" (a deleted account, a strange answer) is trusted by no one


def _int(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass
class Batch:
    """What one follow-up round answers: trusted people's items, oldest
    first, and the keys of comments left out because they were edited
    after they were read (only noticed across a restart)."""
    pr: int
    items: List[Item]
    edited: Dict[str, str] = field(default_factory=dict)  # key -> digest of the edited text

    def of_kind(self, kind: str) -> List[Item]:
        return [i for i in self.items if i.kind == kind]

    @property
    def authors(self) -> List[str]:
        return sorted({i.author for i in self.items})


@dataclass
class Watch:
    """One watched pull request: its task's follow-up fields, parsed.
    `round` counts runs so far, the first included ("2 of 4" -> 2)."""
    issue: int
    pr: int
    since: str = ""
    seen: str = ""
    pushed: str = ""
    round: int = 1
    pending: Dict[str, str] = field(default_factory=dict)
    handled: Dict[str, str] = field(default_factory=dict)
    held_sha: str = ""
    held_at: str = ""
    answer_id: Optional[int] = None

    @classmethod
    def of(cls, task: Any) -> Optional["Watch"]:
        """The watch of a task with a pull request, or None: no PR, or
        follow-ups stopped (its `Follow-ups:` line says why)."""
        m = re.search(r"/pull/([0-9]+)/?$", (task.pr or "").strip())
        if not m or task.followups:
            return None
        held = task.held.split()
        return cls(task.issue, int(m.group(1)), since=task.watch_since, seen=task.watch_seen,
                   pushed=task.pushed, round=parse_round(task.round)[0] or 1,
                   pending=parse_digests(task.pending), handled=parse_digests(task.handled),
                   held_sha=held[0] if len(held) == 2 else "", held_at=held[1] if len(held) == 2 else "",
                   answer_id=task.answer_id)


def watches(doc: Any) -> List[Watch]:
    """The pull requests to watch in a TaskFile: those of Completed
    entries (an entry Active again is running its round)."""
    return [w for w in (Watch.of(t) for t in doc.tasks if t.state == COMPLETED) if w is not None]


def round_text(n: int, total: int) -> str:
    return f"{n} of {total}"


def parse_round(text: str) -> Tuple[int, int]:
    """(n, total) from "2 of 4"; (0, 0) when absent or unreadable."""
    m = re.fullmatch(r"\s*([0-9]+)\s+of\s+([0-9]+)\s*", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def format_digests(digests: Dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in digests.items())


def parse_digests(text: str) -> Dict[str, str]:
    """"r101=3fa2c1d0e9b8 c202=..." -> dict; unreadable words are skipped."""
    out: Dict[str, str] = {}
    for word in (text or "").split():
        key, _, value = word.partition("=")
        if _KEY.fullmatch(key) and re.fullmatch(r"[0-9a-f]{6,64}", value):
            out[key] = value
    return out


# -- The rules (pure) -------------------------------------------------------------

def mentions(text: str, phrase: str) -> bool:
    """Does the visible text ask with `phrase`? Only what a reader sees
    counts (no HTML comment, no hidden element), and not inside code or a
    quote: `@tac` in backticks names the phrase without asking, and a
    reply that quotes an earlier request is not a new one."""
    visible = clean_issue_text(text, limit=1_000_000)
    prose, fence = [], ""
    for line in visible.split("\n"):
        stripped = line.lstrip(" ")
        m = re.match(r"(`{3,}|~{3,})", stripped) if len(line) - len(stripped) <= 3 else None
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = ""
            continue
        if m:
            fence = m.group(1)
        elif not stripped.startswith(">"):
            prose.append(re.sub(r"(`+)[^`]*?\1", "", line))
    pattern = r"(?<![\w@./-])" + re.escape(phrase) + r"(?![\w-])"
    return re.search(pattern, "\n".join(prose), re.I) is not None


def classify(item: Item, trusted: Callable[[str], bool], phrase: str) -> Tuple[Optional[Item], str]:
    """(the item with `trigger` set, "") when a trusted person wrote it,
    else (None, why not): "own" (the coordinator's marker), "bot",
    "untrusted", or "empty" (a review with no words that asks nothing: the
    wrapper GitHub makes around line comments)."""
    if COMMENT_MARKER in item.body:
        return None, "own"
    if item.bot or item.author.endswith("[bot]"):
        return None, "bot"
    if not item.author or not trusted(item.author):
        return None, "untrusted"
    asks = item.kind == REVIEW and item.state == "CHANGES_REQUESTED" or mentions(item.body, phrase)
    if item.kind == REVIEW and not asks and not item.body.strip():
        return None, "empty"
    return replace(item, trigger=asks), ""


RUN, WAIT, HELD, MAX_ROUNDS, STOP, IDLE = "run", "wait", "held", "max rounds", "stop", "idle"


@dataclass
class Decision:
    """What to do about one watched pull request now.

    RUN: start a round on `batch` (check the branch first: gitops.
    foreign_commits with `reviewed`). WAIT: a batch is forming; look again
    at `until`. HELD: a hold waits for a trusted person's new request.
    MAX_ROUNDS: post max_rounds_text and record answered(). STOP: the PR
    was merged or closed. IDLE: nothing asked. `fields` are the task's
    fields to write now whatever the action (the watermark moved);
    `pr` is the pull request as last listed."""
    action: str
    watch: Watch
    batch: Optional[Batch] = None
    until: Optional[float] = None
    reviewed: str = ""
    reason: str = ""
    fields: Dict[str, Any] = field(default_factory=dict)
    pr: Optional[dict] = None


def epoch(when: str) -> float:
    """Seconds since the epoch of a GitHub time ("2026-12-04T10:00:00Z")."""
    try:
        return float(calendar.timegm(time.strptime(when.strip(), "%Y-%m-%dT%H:%M:%SZ")))
    except (ValueError, AttributeError):
        return 0.0


def iso(epoch_seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_seconds))


def decide(watch: Watch, items: Sequence[Item], now: float, quiet: float, max_rounds: int,
           edited: Optional[Dict[str, str]] = None) -> Decision:
    """The rule for one open pull request, given the trusted items not yet
    answered (classified, each with `trigger`): nothing asks -> IDLE; held
    and nobody asked again after the hold -> HELD; the last item is less
    than `quiet` seconds old -> WAIT (one run answers the whole burst);
    `max_rounds` follow-ups done -> MAX_ROUNDS; else RUN."""
    triggers = [i for i in items if i.trigger]
    if not triggers:
        return Decision(IDLE, watch)
    if watch.held_sha and not any(t.at > watch.held_at for t in triggers):
        return Decision(HELD, watch, reason=f"held at {watch.held_sha[:7]} for a person's review")
    due = max(epoch(i.at) for i in items) + quiet
    if now < due:
        return Decision(WAIT, watch, until=due, reason=f"waiting {due - now:.0f} s for the reviewer to finish")
    batch = Batch(watch.pr, sorted(items, key=lambda i: (i.at, i.kind != REVIEW, i.id)), dict(edited or {}))
    if watch.round - 1 >= max_rounds:
        return Decision(MAX_ROUNDS, watch, batch=batch, reason=f"{max_rounds} follow-up rounds done")
    return Decision(RUN, watch, batch=batch, reviewed=watch.held_sha)


# -- The read path --------------------------------------------------------------------

class Watcher:
    """Reads the watched pull requests and says what to do about each.

    The loop calls poll() once per poll cycle with the watches of its
    Completed tasks (watches(doc)); the Watcher keeps in memory what it read
    (items as first read, the updated_at it read each PR at), so a batch
    waiting out `quiet` costs nothing, and a restart recovers from the
    tasks.md fields. `trusted(login)` is the trigger label's rule."""

    def __init__(self, github: GitHub, trusted: Callable[[str], bool], trigger: str = "@tac",
                 quiet: float = 60.0, max_rounds: int = 3):
        self.github, self.trusted = github, trusted
        self.trigger, self.quiet, self.max_rounds = trigger, quiet, max_rounds
        self._top = ""                               # newest updated_at of the list processed
        self._listed: Dict[int, dict] = {}           # PR number -> the PR as last listed
        self._read: Dict[int, str] = {}              # PR number -> updated_at its thread was read at
        self._items: Dict[int, Dict[str, Item]] = {}  # PR number -> key -> trusted item as first read
        self._edited: Dict[int, Dict[str, str]] = {}  # PR number -> key -> digest: edited before we read it
        self.dropped: List[Tuple[int, str, str, str]] = []  # (PR, key, author, why) since the last poll: to log

    @classmethod
    def from_config(cls, github: GitHub, cfg: Any, trusted: Callable[[str], bool]) -> "Watcher":
        return cls(github, trusted, cfg.followup_trigger, cfg.followup_quiet, cfg.followup_max_rounds)

    def poll(self, watched: Iterable[Watch], now: float) -> List[Decision]:
        """One decision per watch. Costs nothing with nothing to watch, one
        conditional request when no watched PR changed (a 304 when nothing
        in the repository did), plus
        at most three conditional reads per watched PR that changed, plus a
        trust check per new author (cached by the client). Raises
        GitHubError; nothing is lost then, the next poll reads again."""
        watched = list(watched)
        self.dropped = []
        if not watched:  # nothing to watch: not even the free request
            for table in (self._listed, self._read, self._items, self._edited):
                table.clear()
            self.github.forget_pulls_except(())
            return []
        listed = self.github.pulls_by_update("all", newer_than=self._top)
        for pr in listed:
            self._listed[pr["number"]] = pr
        out = []
        for w in watched:
            pr = self._listed.get(w.pr)
            if pr is None:
                # Not on the first page since this process started: ask once;
                # after that any change brings it to the list's top.
                pr = self._listed[w.pr] = self.github.pull(w.pr)
            out.append(self._decide(w, pr, now))
        if listed:
            self._top = max([self._top] + [str(p["updated_at"]) for p in listed])
        keep = {w.pr for w in watched}
        for table in (self._listed, self._read, self._items, self._edited):
            for n in [n for n in table if n not in keep]:
                del table[n]
        self.github.forget_pulls_except(keep)
        return out

    def _decide(self, w: Watch, pr: dict, now: float) -> Decision:
        fields: Dict[str, Any] = {}
        state = pull_state(pr)
        if state != "open":
            why = f"stopped: PR {state}"
            return Decision(STOP, w, reason=why, fields={"followups": why}, pr=pr)
        if not w.since:
            # Everything on the coordinator's own PR came after it was opened.
            w.since = str(pr.get("created_at") or "") or iso(now)
            fields["watch_since"] = w.since
        updated = str(pr.get("updated_at") or "")
        if self._read.get(w.pr, w.seen) != updated:
            self._read_thread(w)
            self._read[w.pr] = updated
        items = sorted((i for k, i in self._items.get(w.pr, {}).items() if k not in w.handled),
                       key=lambda i: (i.at, i.id))
        edited = {k: v for k, v in self._edited.get(w.pr, {}).items() if k not in w.handled}
        pending = {i.key: i.digest for i in items}
        # An edited comment keeps the hash it was read with until a round
        # handles it: forgotten, it would be read as new, edit and all.
        pending.update({k: w.pending.get(k, v) for k, v in edited.items()})
        if pending != w.pending:
            w.pending = pending
            fields["pending"] = format_digests(pending)
        if not pending and w.seen != updated:
            w.seen = updated
            fields["watch_seen"] = updated
        d = decide(w, items, now, self.quiet, self.max_rounds, edited)
        d.fields, d.pr = fields, pr
        return d

    def _read_thread(self, w: Watch) -> None:
        found = items_from(self.github.reviews(w.pr), self.github.review_comments(w.pr),
                           self.github.conversation(w.pr))
        mine = self._items.setdefault(w.pr, {})
        edited = self._edited.setdefault(w.pr, {})
        present = set()
        trust: Dict[str, bool] = {}

        def trusted(login: str) -> bool:
            if login not in trust:
                trust[login] = self.trusted(login)
            return trust[login]
        for item in found:
            if item.at < w.since or item.key in w.handled:
                continue
            present.add(item.key)
            if item.key in mine or item.key in edited:
                continue  # first read wins: an edit afterwards is not read again
            kept, why = classify(item, trusted, self.trigger)
            if kept is None:
                if why != "empty":
                    self.dropped.append((w.pr, item.key, item.author, why))
                continue
            if item.key in w.pending and w.pending[item.key] != item.digest:
                edited[item.key] = item.digest  # read before a restart, edited since: its first text is gone
                continue
            mine[item.key] = kept
        for key in [k for k in mine if k not in present]:
            del mine[key]  # deleted by its author: withdrawn


# -- What the loop writes back, and the notices it posts ----------------------------

def start_round(watch: Watch, max_rounds: int) -> Dict[str, Any]:
    """Task fields for a round that starts (with the move to Active):
    "Round: 2 of 4" (the first run is round 1)."""
    return {"round": round_text(watch.round + 1, max_rounds + 1), "answer_id": None}


def answered(watch: Watch, batch: Batch) -> Dict[str, Any]:
    """Task fields once a batch is answered without a run (MAX_ROUNDS):
    its items are handled and never ask again."""
    handled = dict(watch.handled)
    handled.update({i.key: i.digest for i in batch.items})
    handled.update(batch.edited)
    pending = {k: v for k, v in watch.pending.items() if k not in handled}
    return {"handled": format_digests(handled), "pending": format_digests(pending)}


def round_ended(watch: Watch, batch: Batch, pushed: str = "") -> Dict[str, Any]:
    """Task fields when a round ends (with the move back to Completed):
    the batch is handled, `pushed` (the sha the fast-forward push left on
    the PR's branch; "" = nothing pushed) is the coordinator's last push,
    and a hold is over (the round ran on the head a person approved)."""
    return dict(answered(watch, batch), pushed=pushed or watch.pushed, held="", answer_id=None)


def held(head_sha: str, at: str) -> Dict[str, Any]:
    """Task fields for a hold: the head held, and when (GitHub's time of
    the hold comment): only a request made after it runs the round."""
    return {"held": f"{head_sha} {at}"}


def _code(text: str, limit: int = 120) -> str:
    """Text shown in a code span of our comment: one line, no backticks."""
    text = " ".join(str(text).replace("`", "'").split())
    return "`" + (text if len(text) <= limit else text[:limit - 1] + "…") + "`"


def max_rounds_text(batch: Batch, max_rounds: int, trigger: str) -> str:
    who = ", ".join(f"@{a}" for a in batch.authors)
    return (f"This pull request has had its {max_rounds} follow-up round{'s' if max_rounds != 1 else ''} "
            f"(`[followup] max_rounds`), so no run answers the latest review{(' by ' + who) if who else ''}. "
            f"It is over to a person now; or raise `max_rounds` in the coordinator's config and "
            f"comment {_code(trigger)} again.")


def hold_text(commits: Sequence[Tuple[str, str, str]], paths: Sequence[str], head: str, trigger: str) -> str:
    """The PR comment for a hold: commits the coordinator did not push
    change agent configuration (gitops.foreign_commits)."""
    files = ", ".join(_code(p) for p in paths[:20]) + (f" and {len(paths) - 20} more" if len(paths) > 20 else "")
    lines = [f"No follow-up ran: commits on this branch that the coordinator did not push change agent "
             f"configuration ({files}), which decides what the agent runs. The commits:", ""]
    lines += [f"- {_code(sha[:7], 12)} by {_code(author, 40)}: {_code(subject, 80)}" for sha, author, subject in commits[:20]]
    if len(commits) > 20:
        lines.append(f"- and {len(commits) - 20} more")
    lines += ["", f"A trusted person must review them, then comment {_code(trigger)} to run the round on "
                  f"this head ({_code(head[:7], 12)}). A later push is checked again."]
    return "\n".join(lines)


def unknown_text(why: str, trigger: str) -> str:
    """The PR comment when git cannot tell whose commits are on the branch:
    fail closed, as for a hold."""
    return (f"No follow-up ran: git could not tell which commits on this branch the coordinator pushed "
            f"({_code(why, 200)}), so it cannot rule out changes to agent configuration. A trusted person "
            f"must check the branch, then comment {_code(trigger)} again.")


@dataclass
class Answers:
    """What the worker left in ANSWERS_FILE: a summary, and per item key
    (done: True, False or None for "did not say", note). `problem` says
    why the file could not be used ("" when it could)."""
    summary: str = ""
    notes: Dict[str, Tuple[Optional[bool], str]] = field(default_factory=dict)
    problem: str = ""


def read_answers(tree: Path, limit: int = 64_000) -> Answers:
    """The answers file in a worktree (format in followup_template.md):
    {"summary": "...", "answers": {"r101": {"done": true, "note": "..."}}}.
    Tolerant: a missing, oversized or malformed file is an Answers with
    its `problem` said; malformed entries are skipped."""
    path = Path(tree) / ANSWERS_FILE
    try:
        if path.is_symlink() or not path.is_file():
            return Answers(problem=f"no {ANSWERS_FILE}")
        raw = path.read_bytes()[:limit + 1]
    except OSError as e:
        return Answers(problem=f"{ANSWERS_FILE}: {e.strerror}")
    if len(raw) > limit:
        return Answers(problem=f"{ANSWERS_FILE} is larger than {limit // 1000} KB")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return Answers(problem=f"{ANSWERS_FILE} is not JSON")
    if not isinstance(data, dict):
        return Answers(problem=f"{ANSWERS_FILE} is not a JSON object")
    notes: Dict[str, Tuple[Optional[bool], str]] = {}
    answers = data.get("answers")
    for key, value in (answers.items() if isinstance(answers, dict) else ()):
        if not _KEY.fullmatch(str(key)):
            continue
        if isinstance(value, dict):
            done = value.get("done")
            notes[str(key)] = (done if isinstance(done, bool) else None, str(value.get("note") or ""))
        elif isinstance(value, str):
            notes[str(key)] = (None, value)
    summary = data.get("summary")
    return Answers(summary=summary if isinstance(summary, str) else "", notes=notes)
