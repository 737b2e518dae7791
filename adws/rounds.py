"""Follow-up rounds from the loop's side (issue #14): the daemon runs them.

adws/followup.py owns the rules and the read path (who may ask, batching,
max_rounds, holds, Watcher.poll); this module is the other half, run by the
coordinator as adws/steering.py is for the status issue. It owns no state
on disk of its own: everything a restart needs is in the task's entry.

How a round shows in tasks.md. The task's Completed entry moves to Active
for the round (tasks.py's arc "round") with `- Round: 2 of 4`, its worker,
log and PID, the PR as before; and back to Completed when the round ends
("round ended": Finished and the issue's notice stay as they were, the issue
was told when the task completed). An Active entry with a PR and a Round is
a round (tasks.in_round), never a first run. While it is Active the PR is
not watched (followup.watches reads Completed entries only): what comes in
meanwhile is read once the round is over and makes the next round.

The steps, on the loop unless said:

 1. step(), once per poll: a job ("followup",) runs Watcher.poll over the
    watches of the Completed entries; idle, that is one conditional request
    answered 304 (free), and no request at all when nothing is watched.
 2. decided(), with its decisions: the watermarks written (one write, only
    when they moved); STOP recorded in the entry's Follow-ups line and said
    once; MAX_ROUNDS recorded as answered first, then posted (at most once:
    a crash in between loses the notice, never repeats it); RUN starts the
    round when a slot is free and the gates let a worker start (budgets,
    the startup breaker, memory: those of dispatch, which runs first, so a
    queued issue goes before a round).
 3. start(): intent first, the one write Completed -> Active. Then a job
    (prepare) fetches the PR's branch, checks the commits others pushed
    for agent configuration (held: back to Completed with Held and a
    comment naming the files; git cannot tell: the same, failing closed),
    recreates the worktree at the branch's head on the branch, and writes
    the prompt: resumed (`--resume SESSION`) when the task's last session
    is in the CLI's store for that working directory, else fresh.
 4. launch() on the loop: the process (TAC_ROUND set), its PID and the head
    it started from recorded; then the answer comment, "running", posted
    by a job and its id recorded.
 5. The worker is supervised like any (timeouts, STOP, budget, a person
    moving the entry). When it exits, finish_work (a job): its commits
    since the start, BLOCKED.md, the answers file; the commits pushed as a
    fast-forward (never forced: a person's push meanwhile refuses it and
    the answer says so); commits of its own that change CI or agent
    configuration are not pushed; the answer comment edited in place.
    finish_done (loop): the one write Active -> Completed (Pending ->
    Handled, Pushed), the ledger line with its round.

A crash at any instant: before the process started (no attempt line in the
transcript), the entry goes back to Completed with the round it had and its
Pending kept, and the next poll runs the round once; while it runs, the
worker is re-adopted; after it ended, the round is finished again from its
evidence (a push already made is a no-op fast-forward, the answer comment is
found again by its title when its id was never recorded); once the entry is
back in Completed its items are Handled and never run again.
"""
from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from adws import followup, gitops, ledger, tasks
from adws.files import write_atomic
from adws.followup import Batch, Decision, Watch, Watcher
from adws.github import COMMENT_MARKER, GitHubError
from adws.gitops import GitError, git
from adws.prompt import build_followup_prompt, followup_answer
from adws.redact import redact
from adws.tasks import ACTIVE, COMPLETED, Task
from adws.workers import (CANCELLED, STOP_BY_USER, StartError, Worker, describe_exit, new_worker_id)

log = logging.getLogger("tac")

FINISH_TRIES = 3


@dataclass
class Round:
    """What a running round answers, kept with its worker (Worker.followup).
    After a restart it is made again from the entry and GitHub."""
    batch: Batch
    pr: dict
    watch: Watch
    reviewed: str = ""
    was: str = ""                  # the entry's Round before this one ("" = the first run only)
    head: str = ""                 # the head the worktree was made at
    session: str = ""              # the CLI session resumed ("" = a fresh one)
    answer_id: Optional[int] = None


@dataclass
class Prepared:
    """What prepare() found: a head to run on, or a hold."""
    head: str = ""
    session: str = ""
    held: str = ""                 # the head held ("": not held)
    held_why: str = ""


@dataclass
class Ended:
    """What finish_work() found and did, for finish_done() to record."""
    summary: Any
    batch: Optional[Batch] = None  # None: a person changed the entry meanwhile
    pushed: str = ""
    said: str = ""                 # the log line's end


def session_stored(environ: Dict[str, str], tree: Path, session: str) -> bool:
    """Can the CLI resume `session` in `tree`? It keeps each session under
    $CLAUDE_CONFIG_DIR (default ~/.claude)/projects/<the working directory,
    every character but letters and digits made "-">/<session>.jsonl, and a
    resume from another folder, or of a session the store lost, fails."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,100}", session or ""):
        return False
    root = Path(environ.get("CLAUDE_CONFIG_DIR") or Path(environ.get("HOME") or "/nonexistent") / ".claude")
    names = {re.sub(r"[^A-Za-z0-9]", "-", str(tree)), str(tree).replace("/", "-")}
    return any((root / "projects" / name / f"{session}.jsonl").is_file() for name in names)


def last_session(ledger_path: Path, issue: int) -> str:
    """The session of the task's last run (the ledger has one line per run)."""
    found = ""
    try:
        for record in ledger.read(ledger_path):
            if record.get("issue") == issue and isinstance(record.get("session_id"), str) and record["session_id"]:
                found = record["session_id"]
    except OSError:
        return ""
    return found


def _pr_number(t: Task) -> int:
    m = re.search(r"/pull/([0-9]+)/?$", (t.pr or "").strip())
    return int(m.group(1)) if m else 0


class Rounds:
    """The coordinator's follow-up rounds. `c` is the Coordinator: its
    loop, jobs, gates, workers and the one writer of tasks.md."""

    def __init__(self, c: Any):
        self.c = c
        self._watcher: Optional[Watcher] = None
        self._made_for: Tuple[Any, ...] = ()
        self.after_poll: Optional[float] = None  # the poll the last step followed (c.last_poll_at)

    @property
    def watcher(self) -> Watcher:
        """One Watcher while the repository and [followup] stay (a reload
        that changes them starts a new one: what it read was for the old)."""
        cfg, gh = self.c.cfg, self.c.github
        key = (id(gh), cfg.followup_trigger, cfg.followup_quiet, cfg.followup_max_rounds, tuple(cfg.trusted_users))
        if self._watcher is None or key != self._made_for:
            self._watcher, self._made_for = Watcher.from_config(gh, cfg, self.trusted), key
        return self._watcher

    def trusted(self, login: str) -> bool:
        """The trigger label's rule, for a login: [github] trusted_users, or
        write, maintain or admin permission (cached by the client)."""
        return login in self.c.cfg.trusted_users or self.c.github.permission(login) in ("admin", "write", "maintain")

    def watching(self, t: Task) -> bool:
        """Is this Completed entry's PR watched (so it is not archived yet)?
        Only once the watch began (Watch since): an entry older than the
        daemon's follow-ups is archived as before."""
        return bool(self.c.cfg.followup_enabled and t.watch_since and Watch.of(t) is not None)

    # -- 1. the step, once per poll ------------------------------------------------------
    def step(self, now: float) -> None:
        c = self.c
        if (not c.cfg.followup_enabled or c.dry_run or c.last_poll_at is None or c.last_poll_at == self.after_poll
                or c.jobs.busy(("poll",)) or c.jobs.busy(("followup",))):
            return
        self.after_poll = c.last_poll_at
        watched = followup.watches(c.load())
        watcher = self.watcher
        if not watched:
            watcher.poll([], now)  # forgets what it read; no request
            return
        c.jobs.submit(("followup",), functools.partial(watcher.poll, watched, c.wall(now)),
                      functools.partial(self.decided, watcher))

    # -- 2. what the watcher said ----------------------------------------------------------
    def decided(self, watcher: Watcher, decisions: Optional[List[Decision]], error: Optional[BaseException]) -> None:
        c = self.c
        if error is not None:
            raise error  # a GitHubError is said by the loop's guard; the next poll reads again
        for pr, key, author, why in watcher.dropped:
            if why == "own":
                continue  # our own answers and notices: nothing to say
            c.say_once(("followup dropped", pr, key), "PR #%d: %s by %s does not ask for a follow-up (%s)",
                       pr, key, author or "?", why)
        for d in decisions or []:
            c.guarded(f"gh-{d.watch.issue} follow-up", self.act, d)

    def act(self, d: Decision) -> None:
        c, n = self.c, d.watch.issue
        if d.action == followup.RUN:
            if self.start(d, c.clock()):
                return
        if d.action == followup.STOP:
            if c.amend(n, expect=COMPLETED, **d.fields) is not None:
                log.info("gh-%d follow-ups %s (PR #%d)", n, d.reason, d.watch.pr)
            return
        if d.action == followup.MAX_ROUNDS:
            fields = dict(d.fields, **followup.answered(d.watch, d.batch))
            if c.amend(n, expect=COMPLETED, **fields) is not None:
                log.info("gh-%d PR #%d: %s; said on the PR, no run", n, d.watch.pr, d.reason)
                text = followup.max_rounds_text(d.batch, c.cfg.followup_max_rounds, c.cfg.followup_trigger)
                c.jobs.submit(("followup notice", n), functools.partial(c.github.comment, d.watch.pr, text),
                              lambda _, e: _raise(e))
            return
        if d.action == followup.HELD:
            c.say_once(("followup held", n, d.watch.held_sha), "gh-%d PR #%d: %s", n, d.watch.pr, d.reason)
        if d.fields:
            c.amend(n, expect=COMPLETED, **d.fields)

    # -- 3. a round starts -------------------------------------------------------------------
    def start(self, d: Decision, now: float) -> bool:
        """Start a round for a RUN decision if a slot is free and nothing
        blocks starting. False: not now (the fields are written by the
        caller; the next poll decides again, at no cost)."""
        c, cfg, n = self.c, self.c.cfg, d.watch.issue
        if n in c.workers or n in c.starting:
            return False
        if c.max_concurrent - len(c.workers) - len(c.starting) <= 0:
            c.say_once(("followup slot", n, d.watch.pending and tuple(d.watch.pending)),
                       "gh-%d follow-up waits for a free slot", n)
            return False
        block = c.spawn_block(now) or c.gates.memory_block()
        if block:
            c.say_once(("followup block", n, block), "gh-%d follow-up waits: %s", n, block)
            return False
        if not c.gates.startup.may_start(n, now):
            return False
        t = c.load().governing(n)
        if t is None or t.state != COMPLETED:
            return False
        w = Worker(issue=n, worker_id=new_worker_id(), attempt=max(1, t.attempts), branch=str(d.pr["head"]["ref"]),
                   tree=cfg.worktree_path(n), log_path=cfg.transcript_path(n), stderr_path=cfg.stderr_path(n),
                   stderr_offset=0, pid=0, pid_start=None, started_at=now, follower=None, last_output_at=now)
        w.round = d.watch.round + 1
        w.followup = Round(d.batch, d.pr, d.watch, d.reviewed, was=t.round)
        cfg.logs.mkdir(parents=True, exist_ok=True)
        log_offset = w.log_path.stat().st_size if w.log_path.exists() else 0
        w.stderr_offset = w.stderr_path.stat().st_size if w.stderr_path.exists() else 0
        fields = dict(d.fields, **followup.start_round(d.watch, cfg.followup_max_rounds))
        # The intent, before anything runs: a crash from here on is resolved
        # by recover() (coordinator.readopt -> never_launched or adopted).
        if c.change_state(n, ACTIVE, expect=COMPLETED, worker=w.worker_id, worktree=str(w.tree),
                          log=str(w.log_path), log_offset=log_offset, started=tasks.format_time(c.wall(now)),
                          pid=None, pid_start=None, branch=w.branch, round_from="", **fields) is None:
            c.gates.startup.probe_ended(n, now)
            return False
        c.starting[n] = w
        c.jobs.submit(("start", n), functools.partial(self.prepare, w, t), functools.partial(self.launch, w))
        return True

    def prepare(self, w: Worker, t: Task) -> Prepared:
        """Off the loop: the branch as it is now, checked; the worktree at its
        head; the prompt. Raises StartError saying what failed."""
        c, cfg, r = self.c, self.c.cfg, w.followup
        try:
            git(["fetch", "--quiet", cfg.remote, f"+refs/heads/{w.branch}:refs/remotes/{cfg.remote}/{w.branch}",
                 f"+refs/heads/{cfg.base_branch}:refs/remotes/{cfg.remote}/{cfg.base_branch}"], cfg.repo_path)
            head = git(["rev-parse", "--verify", f"refs/remotes/{cfg.remote}/{w.branch}^{{commit}}"],
                       cfg.repo_path, timeout=60).strip()
        except GitError as e:
            raise StartError(f"fetch {w.branch}: {e}")
        # The commits others pushed: the coordinator's last push is Pushed,
        # or, before any round, the commit its first run completed with.
        try:
            foreign = gitops.foreign_commits(cfg, head, r.watch.pushed or t.commit, r.reviewed)
        except GitError as e:
            text = followup.unknown_text(str(e), cfg.followup_trigger)
            c.github.comment(r.watch.pr, text)
            return Prepared(held=head, held_why=f"git could not tell whose commits are on the branch: {e}")
        if foreign.paths:
            c.github.comment(r.watch.pr, followup.hold_text(foreign.commits, foreign.paths, head,
                                                            cfg.followup_trigger))
            return Prepared(held=head, held_why="others' commits change " + ", ".join(foreign.paths[:3]))
        try:
            gitops.remove_worktree(cfg, w.tree)
            cfg.trees.mkdir(parents=True, exist_ok=True)
            git(["worktree", "add", "--quiet", "-B", w.branch, str(w.tree), head], cfg.repo_path)
            gitops.exclude_locally(cfg, "/.tac/")  # the answers file is never committed
        except (GitError, OSError) as e:
            raise StartError(f"worktree: {e}")
        try:
            issue = c.github.issue(w.issue)
        except GitHubError as e:  # the issue is context only: its title from tasks.md will do
            log.info("gh-%d issue not read for the follow-up (%s); its title from tasks.md", w.issue, e)
            issue = {"number": w.issue, "title": t.title, "body": ""}
        session = last_session(cfg.ledger_path, w.issue)
        resumed = bool(session) and session_stored(c.environ, w.tree, session)
        try:
            text = build_followup_prompt(cfg, issue, r.pr, r.batch, w.round, resumed=resumed)
        except OSError as e:
            raise StartError(f"template {cfg.followup_template_path}: {e.strerror}")
        write_atomic(cfg.prompt_path(w.issue), text.encode("utf-8"))
        return Prepared(head=head, session=session if resumed else "")

    def back(self, w: Worker, **fields: Any) -> Optional[Task]:
        """The round did not run: back to Completed with the round it had;
        Pending stays, so the next poll decides again."""
        r = w.followup
        return self.c.change_state(w.issue, COMPLETED, expect=ACTIVE, owner=w.worker_id, now=self.c.clock(),
                                   round=r.was if r is not None else "", round_from="", **fields)

    # -- 4. the process ---------------------------------------------------------------------
    def launch(self, w: Worker, ready: Optional[Prepared], error: Optional[BaseException]) -> None:
        c, n, now = self.c, w.issue, self.c.clock()
        del c.starting[n]
        r = w.followup
        if error is None and ready is not None and ready.held:
            held = followup.held(ready.held, followup.iso(c.wall(now)))
            self.back(w, **held)
            c.gates.startup.probe_ended(n, now)
            log.warning("gh-%d follow-up held at %s: %s", n, ready.held[:7], ready.held_why)
            return
        if error is None:
            r.head, r.session = ready.head, ready.session
            w.argv_extra = ["--resume", ready.session] if ready.session else []
            w.env_extra = {"TAC_ROUND": str(w.round)}
            w.launch_info = {"round": w.round, "session": "resumed" if ready.session else "fresh"}
            try:
                c.start_process(w, now)
            except (StartError, OSError) as e:
                why = str(e) or type(e).__name__
                log.warning("gh-%d follow-up could not start: %s", n, why)
                self.back(w)
                c.count_startup_error(n, why, now)  # the CLI's start, as for any worker
                return
        if error is not None:  # preparing failed (git, the template): the next poll decides again
            log.warning("gh-%d follow-up not started: %s", n, str(error) or type(error).__name__)
            self.back(w)
            c.gates.startup.probe_ended(n, now)
            return
        w.started_at = w.last_output_at = w.comment_at = now
        c.workers[n] = w
        c.counters["launched"] += 1
        w.entry = c.amend(n, expect=ACTIVE, owner=w.worker_id, pid=w.pid, pid_start=w.pid_start, round_from=r.head)
        rounds = c.cfg.followup_max_rounds + 1
        log.info("gh-%d round %d of %d started pid=%d branch=%s session=%s worker=%s", n, w.round, rounds, w.pid,
                 w.branch, f"resumed {r.session}" if r.session else "fresh", w.worker_id)
        text = followup_answer(r.batch, w.round, rounds, str(r.pr.get("html_url") or ""), running=True)

        def posted(answer_id: Optional[int], err: Optional[BaseException]) -> None:
            if answer_id:
                r.answer_id = answer_id
                c.amend(n, expect=ACTIVE, owner=w.worker_id, answer_id=answer_id)
            _raise(err)
        c.jobs.submit(("answer", n), functools.partial(c.github.comment, r.watch.pr, text), posted)

    # -- after a restart (coordinator.readopt) ---------------------------------------------------
    def never_launched(self, t: Task) -> None:
        """An Active round whose process never started: back to Completed."""
        total = followup.parse_round(t.round)[1]
        n = followup.parse_round(t.round)[0] - 1
        was = followup.round_text(n, total) if n >= 2 else ""
        if self.c.change_state(t.issue, COMPLETED, expect=ACTIVE, owner=t.worker, now=self.c.clock(), round=was,
                               round_from="") is not None:
            log.info("gh-%d follow-up round was never started (the coordinator stopped first); "
                     "the next poll decides again", t.issue)

    def adopted(self, w: Worker, t: Task) -> None:
        """A round's worker found again after a restart (alive or ended)."""
        w.round = followup.parse_round(t.round)[0] or 2
        w.comment_id = None  # the issue's status comment is not the round's
        w.attempt = max(1, t.attempts)

    # -- 5. the end of a round ------------------------------------------------------------------
    def finish_work(self, w: Worker, now: float) -> Ended:
        """Off the loop: push the round's commits, answer on the PR. Records
        nothing; raises GitError or GitHubError to be tried again."""
        c, cfg = self.c, self.c.cfg
        s = w.follower.catch_up()
        t = c.load().governing(w.issue)
        if t is None or t.state != ACTIVE or t.worker != w.worker_id:
            return Ended(s)
        watch = Watch.of(replace(t, followups=""))
        r = w.followup
        pr_number = _pr_number(t)
        if r is None:  # after a restart: the batch again from the entry and GitHub
            r = w.followup = self.round_again(t, pr_number, watch)
        pr_url = str(r.pr.get("html_url") or t.pr)
        start = t.round_from or r.head
        commits: List[Tuple[str, str]] = []
        if start:
            out = git(["log", "--reverse", "--format=%H %s", f"{start}..refs/heads/{w.branch}", "--"],
                      cfg.repo_path, timeout=60)
            commits = [tuple(line.split(" ", 1)) if " " in line else (line, "") for line in out.splitlines()]
        blocked = ""
        if (w.tree / "BLOCKED.md").is_file():
            try:
                blocked = (w.tree / "BLOCKED.md").read_text(errors="replace")[:8000]
            except OSError:
                blocked = "BLOCKED.md could not be read"
        refused, pushed = "", ""
        if commits:
            changed = git(["diff", "--name-only", "--no-renames", f"{start}..refs/heads/{w.branch}", "--"],
                          cfg.repo_path, timeout=60).splitlines()
            risky = [p for p in changed if gitops.is_agent_config(p)]
            if risky:
                refused = (f"the round changed {', '.join(risky[:3])} (agent configuration or CI); a person "
                           f"reviews the worktree before anything is pushed")
            else:
                result = gitops.push_fast_forward(cfg, w.branch)
                pushed, refused = (result.sha, "") if result.ok else ("", result.refused)
        reason = w.stop_reason or describe_exit(w.returncode)
        if s.result_subtype and not w.stop_reason:
            reason = f"{reason}, result {s.result_subtype}"
        rounds = cfg.followup_max_rounds + 1
        text = followup_answer(r.batch, w.round, rounds, pr_url, commits=commits,
                               answers=followup.read_answers(w.tree), blocked=blocked, reason=reason,
                               push_refused=refused)
        answer_id = t.answer_id or r.answer_id or self.find_answer(pr_number, w.round, rounds)
        if answer_id:
            c.github.edit_comment(answer_id, text)
        else:
            c.github.comment(pr_number, text)
        said = (f"pushed {len(commits)} commit(s), head {pushed[:7]}" if pushed else
                f"{len(commits)} commit(s) not pushed: {refused}" if commits else f"changed nothing ({reason})")
        if blocked.strip():
            said += "; asked: " + redact(blocked.strip().splitlines()[0][:200])
        return Ended(s, r.batch, pushed, said)

    def round_again(self, t: Task, pr_number: int, watch: Watch) -> Round:
        """A round's batch after a restart: the items Pending names, read
        again (the answer lists them; an item edited since is named as such)."""
        gh = self.c.github
        pr = gh.pull(pr_number)
        items = followup.items_from(gh.reviews(pr_number), gh.review_comments(pr_number),
                                    gh.conversation(pr_number))
        chosen = [i for i in items if i.key in watch.pending and i.digest == watch.pending[i.key]]
        edited = {k: v for k, v in watch.pending.items() if k not in {i.key for i in chosen}}
        batch = Batch(pr_number, sorted(chosen, key=lambda i: (i.at, i.kind != followup.REVIEW, i.id)), edited)
        return Round(batch, pr, watch)

    def find_answer(self, pr_number: int, n: int, rounds: int) -> Optional[int]:
        """The round's "running" comment whose id never reached tasks.md."""
        title = f"**Follow-up round {n} of {rounds}** is running"
        for comment in self.c.github.conversation(pr_number):
            body = str(comment.get("body") or "")
            if COMMENT_MARKER in body and body.startswith(title):
                return int(comment["id"])
        return None

    def finish_done(self, w: Worker, ended: Optional[Ended], error: Optional[BaseException]) -> None:
        """On the loop: the one write that ends the round, the ledger line."""
        c, n, now = self.c, w.issue, self.c.clock()
        if error is not None:
            if isinstance(error, GitHubError):
                c.github_failed(now, error)
            w.finish_failures += 1
            if (isinstance(error, GitHubError) and error.unreachable) or w.finish_failures < FINISH_TRIES:
                w.finish_next_at = now + min(c.cfg.poll_interval * 2 ** min(w.finish_failures, 6), 600)
                log.warning("gh-%d round %d finishing failed (try %d), again later: %s", n, w.round,
                            w.finish_failures, error)
                return
            # Given up: the round ends with its items answered by nobody, said in the log;
            # running it again could push twice what a person has seen.
            ended = Ended(w.follower.summary, w.followup.batch if w.followup else Batch(0, []), "",
                          f"could not finish: {error}")
        if ended.batch is None:
            log.info("gh-%d round ended after a person changed its entry; left as they set it", n)
            del c.workers[n]
            c.record_run(w, ended.summary, CANCELLED, now, "cancelled")
            return
        t = c.load().governing(n)
        watch = Watch.of(replace(t, followups="")) if t is not None else None
        if watch is None:
            raise RuntimeError(f"gh-{n}: the round's entry has no pull request")
        fields = followup.round_ended(watch, ended.batch, ended.pushed)
        if c.change_state(n, COMPLETED, expect=ACTIVE, owner=w.worker_id, now=now, round_from="", **fields) is None:
            log.info("gh-%d entry changed by a person while the round finished; left as they set it", n)
        del c.workers[n]
        s = ended.summary
        outcome = "stopped" if w.stop_reason in (STOP_BY_USER, CANCELLED) else (
            ledger.COMPLETED if s.assistant_turns > 0 else "startup_error")
        if outcome == "startup_error":
            c.count_startup_error(n, ended.said, now)
        else:
            c.gates.startup.got_going(n, now)
        c.record_run(w, s, ended.said, now, outcome)
        log.info("gh-%d round %d of %d ended: %s", n, w.round, c.cfg.followup_max_rounds + 1, ended.said)


def _raise(error: Optional[BaseException]) -> None:
    if error is not None:
        raise error
