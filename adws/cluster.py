"""The daemon's side of the claims (issue #16): what this node holds, what it
last saw of the other nodes' claims, and when it reads, takes, renews,
records and releases them.

adws/claims.py changes one claim on the remote per call and reads no clock;
this module decides when, from what the loop knows, and remembers between
ticks:

    held   the claims this node holds, by issue: from the take in the start
           job until the task is over here. A retry waits holding its claim
           (and `hand_over` gives it to the next worker), so an issue gets
           max_attempts runs in the whole cluster, not on every node.
    seen   every claim as the last read found it. Dispatch starts nothing
           another node holds and reads again only when the earliest such
           claim may have expired: an idle node reads nothing at all.
    lost   issues whose live worker must stop now: the claim is another
           node's, or gone.

The order that keeps an issue from running twice:
  - take (or take over, or hand over) before the worktree is made; only on
    OK does the worker start;
  - renew every lease_ttl/3; stop the worker once it could not be renewed
    for 2/3 of the lease (claims.must_stop), before any node may take it over;
  - before anything leaves this machine (a push, a pull request, the label
    swap), renew once more: a claim that is no longer ours ends the run here
    with nothing pushed (`confirm_job`);
  - the claim records the outcome before the label is swapped, and goes
    only once the task is over here, the issue no longer listed, and the
    recorded claim has lived out its lease. That last wait is deliberate: a
    node whose listing of GitHub is a poll old may still see the issue
    labelled after the swap, and a claim deleted at once would look to it
    like an issue nobody runs. An ended claim refuses its take for one more
    lease (600 s by default, against a poll every 30 s).
  - an expired claim with an outcome is never taken over or swept while the
    issue is labelled: its node ended the task and crashed before the label
    swap; it owes the notice, and running the issue again would be a
    double run.

Methods named *_job run off the loop (adws/jobs.py) and change what is
held only through `on_loop`; everything else runs on the loop. Claim times
are wall-clock epoch seconds (`wall`); `now` is the loop's steady clock.
"""
from __future__ import annotations

import logging
import re
import time
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple

from adws import tasks
from adws.claims import LOST, UNREACHABLE, Claim, ClaimError, Claims, Result
from adws.config import Config
from adws.gitops import GitError
from adws.jobs import Jobs

log = logging.getLogger("tac")

# What a claim records when its task ends (the claim's "outcome").
OUTCOME_WORDS = {tasks.COMPLETED: "completed", tasks.BLOCKED: "blocked", tasks.FAILED: "failed"}

_WORKER = r"w-[0-9A-Za-z_-]+"
_OWN = re.compile(rf"\(this node, ({_WORKER}(?: or {_WORKER})*)\)$")


class ClaimLost(Exception):
    """Another node holds the issue: nothing of it runs or leaves here."""

    def __init__(self, reason: str, holder: Optional[Claim] = None):
        super().__init__(reason)
        self.holder = holder


class ClaimUnreachable(Exception):
    """The claims could not be read or written: nothing is known; try again later."""


def hhmm(epoch: float) -> str:
    return time.strftime("%H:%M", time.localtime(epoch))


def shown(claim: Claim) -> str:
    """A claim as tasks.md's "- Claimed by:" line says it."""
    if not claim.readable:
        return "an unreadable claim (not a claim of this version: a person must delete its ref)"
    if claim.outcome:
        return f"{claim.node}, ended: {claim.outcome}"
    return f"{claim.node} until {hhmm(claim.expires)}"


def own_text(node: str, worker: str, expires: Optional[float] = None, *also: str) -> str:
    """The line on an entry whose claim this node holds: the worker named
    lets a restarted daemon tell its own claim from one of another
    coordinator that calls itself by the same name. `also` names workers the
    claim may name instead, while a write of it may or may not have landed
    (a retry's hand-over cut short by a kill -9): "(this node, w-new or w-old)"."""
    until = f" until {hhmm(expires)}" if expires else ""
    names = [worker] + [a for a in also if a and a != worker]
    return f"{node}{until} (this node, {' or '.join(names)})"


def own_workers(text: str, node: str) -> Tuple[str, ...]:
    """Every worker an own_text line names, () if the line is not this node's."""
    m = _OWN.search(text or "")
    return tuple(m.group(1).split(" or ")) if m and text.split(" ", 1)[0] == node else ()


def own_worker(text: str, node: str) -> str:
    """The (first) worker an own_text line names, '' if the line is not this node's."""
    return next(iter(own_workers(text, node)), "")


class Cluster:
    """The claims as one node sees them. The Coordinator holds one when
    config.toml has [cluster] (None otherwise: a single coordinator claims
    nothing) and calls it from its steps; `live(n)` says whether issue n has
    a live worker here."""

    def __init__(self, cfg: Config, jobs: Jobs, say_once: Callable[..., None],
                 live: Callable[[int], bool], claims: Optional[Claims] = None):
        self.claims = claims or Claims.from_config(cfg)
        self.node, self.ttl = cfg.node, cfg.lease_ttl
        self.jobs, self.say_once, self.live = jobs, say_once, live
        self.held: Dict[int, Claim] = {}
        self.seen: Dict[int, Claim] = {}
        self.seen_at: Optional[float] = None            # wall time of the last good read
        self.fresh: Optional[Dict[int, Claim]] = None   # a read no dispatch has used yet
        self.lost: Dict[int, str] = {}
        self.failing: Dict[int, str] = {}               # why the last renewal did not land
        self.retry_at: Dict[int, float] = {}            # steady: next try after an unreachable remote
        # A take or hand-over whose answer was lost: the worker its claim may
        # name, until a read shows what landed (see unanswered()).
        self.unsure: Dict[int, str] = {}
        self.read_error = ""
        self.read_failures = 0
        self.next_read_at = 0.0                         # steady: no read before (after a failed one)

    @property
    def retry_every(self) -> float:
        """A renewal that did not land is tried again this often: several times
        within the third of the lease before the worker must stop."""
        return max(1.0, self.ttl / 15)

    # -- reading: before a dispatch that has something due -------------------------------------
    def read(self, listed: Optional[Set[int]], wall: float, sweep: bool,
             then: Callable[[Optional[Tuple[Dict[int, Claim], List[Claim]]], Optional[BaseException]], None]) -> None:
        """One read_all as a job; expired claims of issues nobody lists any
        more are swept with the same read (a crash's leftovers). `listed` is
        None while the labelled issues are unknown (before the first poll
        that listed them, after one that failed): nothing is swept then, as
        an ended claim of an issue still labelled must stay (see above)."""
        def work() -> Tuple[Dict[int, Claim], List[Claim]]:
            found = self.claims.read_all()
            if listed is None:
                return found, []
            leftovers = {n: c for n, c in found.items() if c.expired(wall) and n not in listed}
            return found, (self.claims.sweep(wall, leftovers) if sweep and leftovers else [])
        self.jobs.submit(("claims",), work, then)

    def read_failed(self, now: float, why: str) -> None:
        self.read_failures += 1
        self.read_error = why
        self.next_read_at = now + min(self.ttl / 3, 5.0 * 2 ** (self.read_failures - 1))
        self.say_once(("claims", why), "claims: %s; nothing starts until they can be read", why)

    def unanswered(self, n: int, worker: str) -> None:
        """A take or hand-over for `worker` got no answer: its push may have
        landed. The entry's line names the worker (own_line) until a read
        says, so the claim is adopted as this node's, not taken for a twin's,
        and the next start hands it over without counting an attempt."""
        self.unsure[n] = worker

    def own_line(self, n: int) -> str:
        """"Claimed by" for this node's claim on `n` ('' for none): the held
        claim's worker, and one whose take or hand-over may have landed."""
        held, unsure = self.held.get(n), self.unsure.get(n, "")
        if held is not None:
            return own_text(self.node, held.worker, held.expires, unsure)
        return own_text(self.node, unsure) if unsure else ""

    def saw(self, found: Dict[int, Claim], swept: Iterable[Claim], doc: tasks.TaskFile,
            workers: Dict[int, object], starting: Set[int], wall: float,
            listed: Optional[Set[int]] = None) -> None:
        """On the loop, a read's result: remember it, adopt this node's own
        claims (after a restart), and mark live workers whose claim is not ours."""
        if self.read_failures:
            log.info("claims: readable again")
        self.read_failures, self.read_error = 0, ""
        for c in swept:
            log.info("gh-%d claim of %s swept: expired at %s and the issue is no longer listed",
                     c.issue, c.node, hhmm(c.expires))
            found.pop(c.issue, None)
            self.held.pop(c.issue, None)
        self.seen, self.seen_at, self.fresh = dict(found), wall, dict(found)
        for n, c in sorted(found.items()):
            mine = self.held.get(n)
            # A held claim gives way only to the hand-over whose answer was
            # lost (unanswered()): any other sha read for it may be older than
            # the one held (a read begun before a renewal or the outcome landed).
            if c.node != self.node or n in starting or (mine is not None and c.worker != self.unsure.get(n)):
                continue
            t = doc.governing(n)
            if t is None and (c.outcome or (listed is not None and n not in listed)):
                # No entry here: this node's ended claim whose entry was
                # archived, or one left when the label went (the entry
                # dropped, killed before the release). Not adopted: it expires
                # and the sweep deletes it. A twin is told by a claim on an
                # issue still queued.
                continue
            if self.ours(c, t):
                self.held[n] = c  # (held already: a hand-over that landed unanswered)
                if not c.outcome:  # (an ended one only waits out its lease to be released)
                    log.info("gh-%d claim adopted: held by this node until %s", n, hhmm(c.expires))
            elif mine is None:
                self.say_once(("twin", n, c.worker), "gh-%d is claimed by a node called %s (worker %s) that "
                              "is not this coordinator: is another coordinator called %s too? Give each its own "
                              "[cluster] node", n, c.node, c.worker, c.node)
        for n, worker in list(self.unsure.items()):
            # Resolved once the read shows a claim other than the one held
            # before the push: a read from before it shows nothing new.
            c, mine = found.get(n), self.held.get(n)
            if c is not None and (c.worker == worker or mine is None or mine.sha != c.sha):
                del self.unsure[n]
        for n in sorted(workers):
            if n not in self.held and self.live(n):
                c = found.get(n)
                self.lost[n] = f"claim lost: gh-{n} is claimed by {shown(c)}" if c else f"claim lost: gh-{n} has no claim"

    def ours(self, c: Claim, t: Optional[tasks.Task]) -> bool:
        """Is `c`, which names this node, the claim of this node's entry `t`?
        The worker it names says so: one the entry records, as its worker
        (Active, ended) or in its Claimed by line (Pending; and an Active
        entry whose take or hand-over may not have landed yet). Every write
        that may leave a claim naming a worker records that worker in tasks.md
        first, so a restart after a kill -9 at any instant knows its claims."""
        if t is None:
            return False
        recorded = set(own_workers(t.claimed_by, self.node))
        if t.state != tasks.PENDING and t.worker:
            recorded.add(t.worker)
        return c.worker in recorded

    def may_run(self, n: int, reading: Dict[int, Claim], wall: float) -> bool:
        """May this node try to start `n` by this reading? The take decides."""
        c = reading.get(n)
        if c is None or n in self.held:
            return True  # free; or ours already (a retry, handed over to its next worker)
        # A live claim, or an ended one, is another's to finish (also one
        # naming this node that it does not hold). An expired one that its
        # node never ended is taken over, by whichever node's lease lands.
        return c.readable and c.expired(wall) and not c.outcome

    def wait_until(self, n: int) -> float:
        """Wall time before which a read could not make `n` runnable here: an
        idle node waits for the earliest expiry instead of reading every tick."""
        c = self.seen.get(n)
        if c is None or n in self.held:
            return 0.0
        if c.outcome or not c.readable:
            # Ended elsewhere (a poll drops it once the label is swapped), or
            # unreadable: looked at again a lease later.
            return (self.seen_at or 0.0) + self.ttl
        return float(c.expires)

    # -- holding: renew, release -----------------------------------------------------------------
    def tend(self, doc: tasks.TaskFile, listed: Set[int], busy: Callable[[int], bool], wall: float,
             now: float) -> None:
        """On the loop, each tick, for every claim held: renew it when due
        while its task is queued, running or owes its notice here; release it
        once the task is over here and GitHub no longer lists the issue (an
        ended claim after its lease, see the module's docstring). No I/O
        unless one is due."""
        for n, claim in sorted(self.held.items()):
            if busy(n) or self.jobs.busy(("claim", n)) or now < self.retry_at.get(n, 0.0):
                continue
            t = doc.governing(n)
            over = t is None or (t.state in tasks.TERMINAL and not t.outbox)
            if over and n not in listed and not self.live(n):
                if not claim.outcome or claim.expired(wall):
                    self.jobs.submit(("claim", n), lambda c=claim: self.claims.release(c),
                                     lambda r, e, n=n: self._released(n, now, r, e))
            elif (t is None or not over) and self.claims.renew_due(claim, wall):
                self.jobs.submit(("claim", n), lambda c=claim: self.claims.renew(c, wall),
                                 lambda r, e, n=n: self._renewed(n, now, r, e))

    def _renewed(self, n: int, now: float, r: Optional[Result], error: Optional[BaseException]) -> None:
        r = self._result(r, error, self.held.get(n))
        if r:
            self._hold(n, r.claim)
        elif r.status == LOST:
            self._drop(n, r.reason)
        else:
            self.retry_at[n] = now + self.retry_every
            if self.failing.get(n) != r.reason:
                claim = self.held.get(n)
                log.warning("gh-%d claim not renewed: %s; %s", n, r.reason,
                            f"the worker stops at {hhmm(claim.expires - self.ttl / 3)} unless it is"
                            if claim is not None and self.live(n) else "trying again")
            self.failing[n] = r.reason

    def _released(self, n: int, now: float, r: Optional[Result], error: Optional[BaseException]) -> None:
        r = self._result(r, error, self.held.get(n))
        if r or r.status == LOST:  # gone: released, or swept by another node meanwhile
            self.held.pop(n, None)
            self.seen.pop(n, None)
            self.failing.pop(n, None)
            log.info("gh-%d claim released", n)
        else:
            self.retry_at[n] = now + self.retry_every

    @staticmethod
    def _result(r: Optional[Result], error: Optional[BaseException], claim: Optional[Claim]) -> Result:
        """A job's answer as a Result: git failing outright is an unreachable remote."""
        if error is not None:
            if not isinstance(error, (ClaimError, GitError)):
                raise error
            return Result(UNREACHABLE, claim, str(error))
        return r

    def _hold(self, n: int, claim: Claim) -> None:
        self.held[n] = claim
        self.unsure.pop(n, None)
        self.seen[n] = claim
        self.retry_at.pop(n, None)
        if self.failing.pop(n, None) is not None:
            log.info("gh-%d claim renewed again, until %s", n, hhmm(claim.expires))

    def _drop(self, n: int, why: str) -> None:
        """The claim is another node's now (or gone): stop a live worker at once."""
        was = self.held.pop(n, None)
        self.failing.pop(n, None)
        self.seen.pop(n, None)  # the next read says who holds it
        if self.live(n):
            self.lost[n] = f"claim lost: {why}"
        if was is not None:
            log.warning("gh-%d claim lost: %s", n, why)

    def _who(self, n: int, reason: str) -> Tuple[str, Optional[Claim]]:
        """Off the loop, after a write found the claim another's: who holds it
        (one more ls-remote, only then), for tasks.md and the log."""
        try:
            holder = self.claims.read_all().get(n)
        except ClaimError:
            return reason, None
        return (f"gh-{n} is claimed by {shown(holder)}" if holder else f"gh-{n} has no claim any more"), holder

    def stop_reason(self, n: int, wall: float) -> str:
        """Why the live worker of `n` must stop now, or ''."""
        why = self.lost.pop(n, "")
        if why:
            return why
        claim = self.held.get(n)
        if claim is not None and self.claims.must_stop(claim, wall):
            return (f"claim not renewed ({self.failing.get(n) or 'no answer'}): it expires at "
                    f"{hhmm(claim.expires)}, and another node may take it over then")
        return ""

    def next_event(self, wall: float) -> float:
        """Wall time of the next renewal or release that may be due (0: none):
        the loop wakes for it."""
        times = [at for c in self.held.values() for at in (c.expires - self.ttl * 2 / 3, c.expires) if at > wall]
        return min(times, default=0.0)

    # -- jobs: take, confirm, record ---------------------------------------------------------------
    def take_job(self, n: int, run: int, worker: str, attempt: int, wall: float) -> int:
        """Off the loop, first in the start job: the claim for this worker,
        whose attempt by this node's count is `attempt`. Returns the attempt
        it runs as across the cluster (the claim records it). On OK the claim
        is held (on the loop, before the worker starts); otherwise raises
        ClaimLost (another node's) or ClaimUnreachable."""
        held, seen = self.held.get(n), self.seen.get(n)
        try:
            if held is not None:
                # This node's own count, unless its claim names a later
                # attempt: taken over for a worker that then never ran here.
                r = self.claims.hand_over(held, run, worker, wall, max(attempt, held.attempt))
            elif seen is not None and seen.readable and seen.expired(wall) and not seen.outcome:
                # The dead node's worker may have run to its end: it counts.
                r = self.claims.take_over(seen, run, worker, wall, max(attempt, seen.attempt + 1))
            else:
                r = self.claims.take(n, run, worker, wall, attempt)
        except ClaimError as e:
            raise ClaimUnreachable(str(e))
        if r:
            self.jobs.on_loop(self._hold, n, r.claim)
            return r.claim.attempt
        if r.status == UNREACHABLE:
            raise ClaimUnreachable(f"claim not taken: {r.reason}")
        why, holder = self._who(n, r.reason)
        if held is not None:
            self.jobs.on_loop(self._drop, n, why)
        raise ClaimLost(why, holder)

    def confirm_job(self, n: int, worker: str, wall: float) -> str:
        """Off the loop, before anything of a run leaves this machine: renew
        its claim. '' when it is still this node's; else why not (nothing may
        be pushed or told). Raises ClaimUnreachable when the remote cannot say."""
        claim = self.held.get(n)
        try:
            if claim is None:  # not adopted yet after a restart, or lost
                found = self.claims.read_all().get(n)
                if found is None:
                    return f"gh-{n} has no claim any more"
                if (found.node, found.worker) != (self.node, worker):
                    return f"gh-{n} is claimed by {shown(found)}"
                claim = found
            r = self.claims.renew(claim, wall)
        except ClaimError as e:
            raise ClaimUnreachable(str(e))
        if r:
            self.jobs.on_loop(self._hold, n, r.claim)
            return ""
        if r.status == UNREACHABLE:
            raise ClaimUnreachable(f"claim not confirmed: {r.reason}")
        why, _ = self._who(n, r.reason)
        self.jobs.on_loop(self._drop, n, why)
        return why

    def record_job(self, t: tasks.Task, wall: float) -> bool:
        """Off the loop, before the issue is told: the claim records how the
        task ended, so that a node reading it after a crash here, before the
        label swap, does not run the issue again. False when the remote
        could not be reached: the notice waits (it stays owed in tasks.md)."""
        claim = self.held.get(t.issue)
        if claim is None or claim.outcome:
            return True  # none held (lost, or never taken here), or recorded already
        try:
            r = self.claims.record(claim, OUTCOME_WORDS.get(t.state, "ended"), wall)
        except ClaimError as e:
            r = Result(UNREACHABLE, claim, str(e))
        if r:
            self.jobs.on_loop(self._hold, t.issue, r.claim)
            return True
        if r.status == LOST:
            self.jobs.on_loop(self._drop, t.issue, r.reason)
            return True  # the run ended here all the same: the issue is told
        log.info("gh-%d notice waits: the claim could not record the outcome: %s", t.issue, r.reason)
        return False

    # -- what others read: tasks.md and metrics.json ---------------------------------------------
    def texts(self, doc: tasks.TaskFile) -> Dict[int, str]:
        """"Claimed by" for each Pending entry whose line is not as it should
        be: this node's claim, another's as last read, or none. Nothing
        before the first read (a line written before a restart stays until
        the claims say)."""
        if self.seen_at is None and not self.held and not self.unsure:
            return {}
        out = {}
        for t in doc.in_state(tasks.PENDING):
            held, seen = self.held.get(t.issue), self.seen.get(t.issue)
            if held is not None or t.issue in self.unsure:
                want = self.own_line(t.issue)
            elif self.seen_at is None:
                continue
            else:
                want = shown(seen) if seen is not None else ""
            if t.claimed_by != want:
                out[t.issue] = want
        return out

    def snapshot(self) -> dict:
        """metrics.json's "cluster": who holds which issue, as last seen."""
        merged = dict(self.seen)
        merged.update(self.held)
        return {"node": self.node, "lease_ttl": self.ttl, "read_at": self.seen_at, "error": self.read_error,
                "claims": [{"issue": n, "node": c.node or None, "expires": c.expires or None,
                            "outcome": c.outcome, "here": n in self.held}
                           for n, c in sorted(merged.items())]}
