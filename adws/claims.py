"""Claims: which coordinator runs which issue, held as refs on the git server.

Several coordinators ("nodes"), each with its own clone, tasks.md and trees,
share one repository's queue. A node may run a worker for issue N only while
it holds the claim: the ref `<prefix>gh-<N>` (default refs/tac/claims/gh-N)
on `[repo] remote`, pointing at a small commit whose message is one line of
JSON:

    {"attempt":1,"expires":1767225600,"issue":42,"node":"pi-kitchen","run":1,"v":1,"worker":"w-ee4608"}

plus `"outcome"` once the task ended. The commit has the empty tree and is
made with `git commit-tree`: no work tree, index or branch is touched, and a
renewal is a child of the commit it renews, so a claim's history reads as
its log.

The compare-and-swap. Every change of a claim is one push with a lease on
the exact sha this node read: `git push --force-with-lease=<ref>:<sha>
<remote> <new>:<ref>` (an empty sha means "must not exist"; a delete pushes
`:<ref>`). The client refuses when the remote's ref is not at that sha
("stale info"), and the old value travels in the push command, where the
server's receive-pack checks it again under the ref's lock: of two nodes
racing from the same read, exactly one lands. Never a plain push: it only
checks that the new commit descends from whatever the ref holds when the
push starts, not that the ref is still what this node decided on. A commit
built on another node's claim would fast-forward over it, and a late renewal
would recreate a claim that had been ended.

What a push did is judged from the state it left, not from git's wording: a
race lost before the push reads "[rejected] (stale info)", one lost inside
the server's lock "[remote rejected] (failed to update ref)", and a push
whose answer was cut off may have landed. So after any push that did not
plainly land, one `ls-remote` of the ref says which: at our new value (it
landed: OK), still at the value we read (nothing changed: the remote was
unreachable or refused it: UNREACHABLE), anywhere else (another node got
there first: LOST). A later commit of this node's own claim (same node, run
and worker) found there is ours: an earlier push whose answer was lost.

A retry of the same task on the same node keeps the claim: `hand_over`
renews it for the next worker, so an issue gets its runs on one node and is
not started afresh by another.

Attempts. `attempt` is the number, counted against max_attempts across the
cluster, of the attempt the named worker runs as. Each node counts its runs
in its own tasks.md, which no other node reads; the claim is what a node
taking it over sees. So a takeover continues the count: the dead node's
worker may have run to its end, and counts (adws/cluster.py's take_job). A
claim without the key (written before it existed) reads as attempt 0.

Results. Every write returns a Result, true only when OK. LOST is an
expected outcome, never an exception: the worker must not start, or must be
stopped at once. UNREACHABLE keeps the claim as it was: keep the worker
until `must_stop`, then stop it. ClaimError (one line, git's own reason) is
raised only when the claims cannot be read at all or the clone cannot make
a claim commit.

Time. Nothing here reads the clock: `now` (epoch seconds) is passed in.
`expires` is written with the owner's clock and compared with the reader's,
so the nodes' clocks are assumed to agree within a few seconds (NTP;
Raspberry Pi OS runs systemd-timesyncd. A Pi has no real-time clock: until
it has synchronised, it may be minutes or hours behind, and would write
claims that others see as long expired, so the service must not run before
time-sync.target). The owner renews every lease_ttl/3 (`renew_due`) and
stops its worker once 2/3 of the lease passed without a renewal
(`must_stop`), so the last third of the lease (200 s by default) lies
between the owner's stop and the earliest moment another node may take the
claim over: it covers the clock difference and the stop itself.

Cost. `read_all` is one `git ls-remote <remote> '<prefix>*'` and one local
`git log --no-walk` for the messages, plus, only for claim commits this
clone does not have yet (another node took or renewed a claim since the last
read), one `git fetch` of exactly those shas, which writes no ref and no
FETCH_HEAD (safe beside a worker's fetch, no ref lock left behind by a
crash). Claim commits this node made are in its clone already. Measured on a
local bare origin: 10 ms unchanged and 35-55 ms with every claim new, for 10
or 100 claims. ls-remote applies its pattern on the client, so it receives
every ref the remote has: on GitHub two refs per pull request ever opened
(refs/pull/N/head and merge), 4,000 refs being about 240 KB per read.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from adws.config import Config
from adws.gitops import GitError, _meaningful_line, git as run_git

DEFAULT_PREFIX = "refs/tac/claims/"
FORMAT = 1  # "v" in a claim's JSON; readers ignore keys they do not know

# What a write did (Result.status).
OK = "ok"                    # it landed: Result.claim is the claim as the remote now holds it
LOST = "lost"                # another node holds the claim now, or it is gone: not ours
UNREACHABLE = "unreachable"  # it did not land and nothing else changed: the remote could not be
                             # reached, or refused it (Result.reason has git's line)

ABSENT = ""  # the sha a lease expects of a ref that must not exist


class ClaimError(Exception):
    """Claims could not be read, or a claim commit could not be made: one line with git's reason."""


@dataclass(frozen=True)
class Claim:
    issue: int
    sha: str           # the claim commit the ref pointed at when read, or was moved to
    node: str          # "" when the commit is not a readable claim (see `readable`)
    run: int
    worker: str
    expires: int       # epoch seconds, by the owner's clock
    outcome: str = ""  # set once the task ended; the ref is deleted next
    attempt: int = 0   # the named worker's attempt, counted across the cluster (0: not recorded)

    @property
    def readable(self) -> bool:
        """False for a commit under the prefix that is not a claim this code
        understands. Such a ref is never taken over or swept (it may be a live
        claim of a newer version): it holds its issue until a person deletes it."""
        return bool(self.node)

    def expired(self, now: float) -> bool:
        return self.readable and now >= self.expires


@dataclass(frozen=True)
class Result:
    status: str                    # OK, LOST or UNREACHABLE
    claim: Optional[Claim] = None  # OK: as the remote now holds it (None once deleted);
                                   # UNREACHABLE: the claim as it was (None for a take); LOST: None
    reason: str = ""               # why not OK, in one line

    def __bool__(self) -> bool:
        return self.status == OK


# -- pure functions ------------------------------------------------------------------------------

def ref_for(prefix: str, issue: int) -> str:
    return f"{prefix}gh-{issue}"


def issue_of(ref: str, prefix: str) -> Optional[int]:
    """The issue a claim ref names; None for any other ref (a --check probe, a stranger)."""
    m = re.fullmatch(re.escape(prefix) + r"gh-([1-9][0-9]{0,9})", ref)
    return int(m.group(1)) if m else None


def message(claim: Claim) -> str:
    """The claim commit's message: one line of JSON, keys sorted."""
    fields = {"v": FORMAT, "node": claim.node, "issue": claim.issue, "run": claim.run,
              "worker": claim.worker, "expires": claim.expires}
    if claim.outcome:
        fields["outcome"] = claim.outcome
    if claim.attempt:
        fields["attempt"] = claim.attempt
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def parse(issue: int, sha: str, text: Optional[str]) -> Claim:
    """The claim a commit message holds. Anything else (not JSON, a field
    missing or of the wrong type, another issue's claim copied here) is an
    unreadable claim, never an expired one."""
    unreadable = Claim(issue, sha, "", 0, "", 0)
    try:
        d = json.loads(text or "")
    except ValueError:
        return unreadable
    if not isinstance(d, dict):
        return unreadable
    node, run, worker, expires, outcome = (d.get(k) for k in ("node", "run", "worker", "expires", "outcome"))
    attempt = d.get("attempt", 0)
    if (not _is_int(d.get("issue")) or d["issue"] != issue or not isinstance(node, str) or not node or not _is_int(run)
            or not isinstance(worker, str) or not _is_int(expires) or not isinstance(outcome, (str, type(None)))
            or not _is_int(attempt) or attempt < 0):
        return unreadable
    return Claim(issue, sha, node, run, worker, expires, outcome or "", attempt)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def expiry(now: float, lease_ttl: float) -> int:
    return int(now + lease_ttl)


def renew_due(claim: Claim, now: float, lease_ttl: float) -> bool:
    """A third of the lease has passed since the claim was last renewed."""
    return now >= claim.expires - lease_ttl * 2 / 3


def must_stop(claim: Claim, now: float, lease_ttl: float) -> bool:
    """Two thirds of the lease passed without a renewal: the owner stops its
    worker now, so that it is gone before any other node may see the claim
    expired, even with that node's clock a little ahead."""
    return now >= claim.expires - lease_ttl / 3


# -- the claims of one remote, as seen from one node ---------------------------------------------

class Claims:
    """Take, renew, take over, end and sweep claims on one remote, as `node`.
    No state but the settings (and the empty tree's name): every call reads
    or writes the remote, and no call starts a thread or reads the clock."""

    def __init__(self, clone: Path, remote: str, node: str, lease_ttl: float, prefix: str = DEFAULT_PREFIX):
        self.clone, self.remote, self.node = Path(clone), remote, node
        self.lease_ttl, self.prefix = lease_ttl, prefix
        # A network call never blocks for long against the lease: a push and
        # its follow-up ls-remote that both hang must end well inside the
        # third of the lease between must_stop and expiry.
        self.timeout = max(5.0, min(60.0, lease_ttl / 10))
        self.git: Callable[..., str] = run_git  # replaceable: a test wraps it to count calls
        self._empty_tree = ""

    @classmethod
    def from_config(cls, cfg: Config) -> "Claims":
        return cls(cfg.repo_path, cfg.remote, cfg.node, cfg.lease_ttl, cfg.claim_ref_prefix)

    def ref(self, issue: int) -> str:
        return ref_for(self.prefix, issue)

    def renew_due(self, claim: Claim, now: float) -> bool:
        return renew_due(claim, now, self.lease_ttl)

    def must_stop(self, claim: Claim, now: float) -> bool:
        return must_stop(claim, now, self.lease_ttl)

    # -- writes ------------------------------------------------------------------------------

    def take(self, issue: int, run: int, worker: str, now: float, attempt: int = 0) -> Result:
        """Claim an unclaimed issue for a worker about to start. Only on OK may
        it start; on LOST another node holds the issue."""
        claim = Claim(issue, "", self.node, run, worker, expiry(now, self.lease_ttl), attempt=attempt)
        sha = self._commit(claim, parent="")
        status, now_at, why = self._swap(self.ref(issue), sha, expect=ABSENT)
        if status == LOST:
            mine = self._still_mine(claim, now_at)
            if mine is not None:  # an earlier take of this worker landed, its answer lost
                return Result(OK, mine)
        return self._result(status, replace(claim, sha=sha), None, why)

    def renew(self, claim: Claim, now: float, _again: bool = True) -> Result:
        """Move `expires` to now + lease_ttl, as a child commit leased on
        claim.sha. LOST: another node took it over (or it was swept): stop the
        worker at once. UNREACHABLE: try again; stop the worker at `must_stop`."""
        if claim.node != self.node:
            # A lease on another node's sha would succeed: renewing it would steal it.
            return Result(LOST, None, f"{self.ref(claim.issue)} is held by {claim.node or 'an unreadable claim'}")
        new = replace(claim, expires=max(claim.expires, expiry(now, self.lease_ttl)))
        sha = self._commit(new, parent=claim.sha)
        status, now_at, why = self._swap(self.ref(claim.issue), sha, expect=claim.sha)
        if status == LOST and _again:
            mine = self._still_mine(claim, now_at)
            if mine is not None:  # an earlier renewal landed, its answer lost: renew from it
                return self.renew(mine, now, _again=False)
        return self._result(status, replace(new, sha=sha), claim, why)

    def hand_over(self, claim: Claim, run: int, worker: str, now: float, attempt: int = 0,
                  _again: bool = True) -> Result:
        """Renew this node's claim for the next worker of the same task (a
        retry), naming that worker and run, and clearing an outcome recorded
        for an earlier round: the claim stays this node's from the first run
        to the last. Leased on claim.sha like a renewal; LOST: another node
        holds it now, and the worker must not start."""
        if claim.node != self.node:
            return Result(LOST, None, f"{self.ref(claim.issue)} is held by {claim.node or 'an unreadable claim'}")
        new = replace(claim, run=run, worker=worker, outcome="", attempt=attempt,
                      expires=max(claim.expires, expiry(now, self.lease_ttl)))
        sha = self._commit(new, parent=claim.sha)
        status, now_at, why = self._swap(self.ref(claim.issue), sha, expect=claim.sha)
        if status == LOST:
            mine = self._still_mine(new, now_at)  # this hand-over landed, its answer lost
            if mine is not None:
                return Result(OK, mine)
            mine = self._still_mine(claim, now_at)
            if mine is not None and _again:  # a renewal of the same claim landed first: hand over from it
                return self.hand_over(mine, run, worker, now, attempt, _again=False)
        return self._result(status, replace(new, sha=sha), claim, why)

    def take_over(self, expired: Claim, run: int, worker: str, now: float, attempt: int = 0) -> Result:
        """Take a claim whose `expires` has passed (its node died, or lost the
        network for longer than the lease), leased on the exact sha read: of
        nodes racing for it, one wins. A live or unreadable claim is never
        taken over (LOST). `attempt` is the caller's to continue from the
        expired claim's (see the module's docstring)."""
        ref = self.ref(expired.issue)
        # Judged on the commit at that sha, which is also the new commit's
        # parent and so must be in this clone (fetched if another node wrote it).
        expired = self._claims_at({expired.issue: expired.sha})[expired.issue]
        if not expired.expired(now):
            holder = f"{expired.node} until {expired.expires}" if expired.readable else "an unreadable claim"
            return Result(LOST, None, f"{ref} is held by {holder}")
        claim = Claim(expired.issue, "", self.node, run, worker, expiry(now, self.lease_ttl), attempt=attempt)
        sha = self._commit(claim, parent=expired.sha)
        status, now_at, why = self._swap(ref, sha, expect=expired.sha)
        if status == LOST:
            mine = self._still_mine(claim, now_at)
            if mine is not None:
                return Result(OK, mine)
        return self._result(status, replace(claim, sha=sha), None, why)

    def record(self, claim: Claim, outcome: str, now: float, _again: bool = True) -> Result:
        """Record the task's outcome in a last claim commit, keeping the claim
        (a lease more, while the issue's label is swapped): other nodes see the
        task ended, and a crash before `release` leaves it to expire and be swept."""
        if not outcome:
            raise ValueError("an outcome is required")
        if claim.node != self.node:
            return Result(LOST, None, f"{self.ref(claim.issue)} is held by {claim.node or 'an unreadable claim'}")
        new = replace(claim, outcome=outcome, expires=max(claim.expires, expiry(now, self.lease_ttl)))
        sha = self._commit(new, parent=claim.sha)
        status, now_at, why = self._swap(self.ref(claim.issue), sha, expect=claim.sha)
        if status == LOST and _again:
            mine = self._still_mine(claim, now_at)
            if mine is not None:
                return self.record(mine, outcome, now, _again=False)
        return self._result(status, replace(new, sha=sha), claim, why)

    def release(self, claim: Claim, _again: bool = True) -> Result:
        """Delete this node's claim, leased on claim.sha. OK also when it is
        gone already (swept after it expired)."""
        if claim.node != self.node:
            return Result(LOST, None, f"{self.ref(claim.issue)} is held by {claim.node or 'an unreadable claim'}")
        status, now_at, why = self._swap(self.ref(claim.issue), None, expect=claim.sha)
        if status == LOST and _again:
            mine = self._still_mine(claim, now_at)
            if mine is not None:
                return self.release(mine, _again=False)
        return self._result(status, None, claim, why)

    def end(self, claim: Claim, outcome: str, now: float) -> Result:
        """`record` the outcome, then `release` the claim. A daemon that must
        swap the issue's label in between calls the two itself."""
        recorded = self.record(claim, outcome, now)
        return self.release(recorded.claim) if recorded else recorded

    def sweep(self, now: float, claims: Optional[Dict[int, Claim]] = None) -> List[Claim]:
        """Delete every expired claim, each leased on the sha read, so a claim
        renewed or taken over meanwhile stays. Pass the claims of a `read_all`
        just made to spare a second read. Returns the claims deleted."""
        if claims is None:
            claims = self.read_all()
        swept = []
        for c in sorted(claims.values(), key=lambda c: c.issue):
            if not c.expired(now):
                continue
            status, _, _ = self._swap(self.ref(c.issue), None, expect=c.sha)
            if status == OK:
                swept.append(c)
            elif status == UNREACHABLE:
                break  # the rest waits for the next sweep, here or on another node
        return swept

    # -- reads -------------------------------------------------------------------------------

    def read_all(self) -> Dict[int, Claim]:
        """Every claim on the remote, by issue: one ls-remote, and a fetch only
        of claim commits this clone has not seen. Raises ClaimError when the
        remote cannot be read (dispatch nothing then: nothing is known)."""
        try:
            out = self.git(["ls-remote", self.remote, self.prefix + "*"], self.clone, timeout=self.timeout)
        except GitError as e:
            raise ClaimError(f"cannot read claims from {self.remote}: {_why(e)}")
        shas = {}
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            issue = issue_of(ref, self.prefix)  # the pattern matches ref tails: keep only our own refs
            if issue is not None:
                shas[issue] = sha
        return self._claims_at(shas)

    def check(self) -> Optional[str]:
        """For --check: does the remote accept refs under the prefix? Pushes a
        probe ref (never a claim's name) and deletes it, both leased. None when
        it does, else one line naming claim_ref_prefix."""
        ref = f"{self.prefix}probe-{self.node}"
        try:
            sha = self._commit_message(json.dumps({"v": FORMAT, "probe": self.node}), parent="")
            left = self._remote_sha(ref)  # a probe an interrupted check left behind is ours to replace
        except (ClaimError, GitError) as e:
            return f"cannot try claim refs on {self.remote}: {_why(e) if isinstance(e, GitError) else e}"
        for new, expect in ((sha, left), (None, sha)):
            status, _, why = self._swap(ref, new, expect=expect)
            if status != OK:
                return (f"{self.remote} did not accept {ref} ({why or status}): set [cluster] claim_ref_prefix "
                        f"to a namespace the host accepts")
        return None

    # -- git ---------------------------------------------------------------------------------

    def _local(self, args: List[str]) -> str:
        try:
            return self.git(args, self.clone, timeout=self.timeout)
        except GitError as e:
            command = next(a for a in args if not a.startswith("-") and "=" not in a)
            raise ClaimError(f"claims: git {command}: {_why(e)}")

    def _commit(self, claim: Claim, parent: str) -> str:
        return self._commit_message(message(claim), parent)

    def _commit_message(self, text: str, parent: str) -> str:
        if not self._empty_tree:
            self._empty_tree = self._local(["hash-object", "-w", "-t", "tree", "/dev/null"]).strip()
        # The identity is given here: the clone may have none configured.
        # (commit-tree never signs unless told to, whatever commit.gpgSign says.)
        args = ["-c", f"user.name={self.node}", "-c", f"user.email={self.node}@tac.invalid",
                "commit-tree", "-m", text, self._empty_tree]
        if parent:
            args += ["-p", parent]
        return self._local(args).strip()

    def _remote_sha(self, ref: str) -> str:
        """Where `ref` is on the remote now; ABSENT when it does not exist. Raises GitError."""
        out = self.git(["ls-remote", self.remote, ref], self.clone, timeout=self.timeout)
        for line in out.splitlines():
            sha, _, name = line.partition("\t")
            if name == ref:  # ls-remote matches tails: refs/x/<ref> would match too
                return sha
        return ABSENT

    def _swap(self, ref: str, new: Optional[str], expect: str) -> Tuple[str, str, str]:
        """Move `ref` on the remote from `expect` (ABSENT: must not exist) to
        `new` (None: delete it) as one compare-and-swap. Returns (status,
        where the ref is now when known, reason)."""
        spec = f"{new}:{ref}" if new else f":{ref}"
        # --no-verify: the target repository's pre-push hook (tests, linters) is not for claim refs.
        args = ["push", "--porcelain", "--no-verify", f"--force-with-lease={ref}:{expect}", self.remote, spec]
        try:
            out, why = self.git(args, self.clone, timeout=self.timeout), ""
        except GitError as e:
            out, why = e.stdout, _why(e)
        if _landed(out, ref):
            return OK, new or ABSENT, ""
        # Did not plainly land: the ref itself says what happened (see the module's docstring).
        try:
            now_at = self._remote_sha(ref)
        except GitError as e:
            return UNREACHABLE, "", why or _why(e)
        if now_at == (new or ABSENT):
            return OK, now_at, ""
        if now_at == expect:
            return UNREACHABLE, now_at, why or "the push did not land"
        return LOST, now_at, f"{ref} is at {now_at[:12]}" if now_at else f"{ref} is gone"

    def _still_mine(self, claim: Claim, now_at: str) -> Optional[Claim]:
        """The claim the remote holds now if it is this node's claim for the
        same run and worker (a push of ours that landed though its answer was
        lost); None otherwise, and when it cannot be read."""
        if not now_at:
            return None
        try:
            current = self._claims_at({claim.issue: now_at})[claim.issue]
        except ClaimError:
            return None
        if (current.node, current.run, current.worker) == (self.node, claim.run, claim.worker):
            return current
        return None

    def _claims_at(self, shas: Dict[int, str]) -> Dict[int, Claim]:
        """The claims these commits hold, fetching only the commits this clone lacks."""
        texts = self._messages(set(shas.values()))
        missing = sorted(set(shas.values()) - set(texts))
        if missing:
            # By sha, not by ref: no ref or FETCH_HEAD is written (nothing to
            # lock, nothing to race a worker's fetch), and what is read is
            # exactly what ls-remote listed even if a ref moved since.
            try:
                self.git(["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-auto-gc", self.remote,
                          *missing], self.clone, timeout=self.timeout)
            except GitError as e:
                raise ClaimError(f"cannot fetch claims from {self.remote}: {_why(e)}")
            texts.update(self._messages(set(missing)))
            if set(missing) - set(texts):
                raise ClaimError(f"cannot fetch claims from {self.remote}: {len(set(missing) - set(texts))} "
                                 f"claim commits missing after the fetch")
        return {issue: parse(issue, sha, texts[sha]) for issue, sha in sorted(shas.items())}

    def _messages(self, shas: Iterable[str]) -> Dict[str, str]:
        """sha -> message of those commits this clone has (one local git call)."""
        shas = sorted(shas)
        if not shas:
            return {}
        out = self._local(["log", "--no-walk=unsorted", "--ignore-missing", "--no-show-signature",
                           "--format=%H%x00%B%x00", *shas])
        parts = out.split("\0")
        found = {sha.strip(): text.strip() for sha, text in zip(parts[0::2], parts[1::2])}
        return {sha: found[sha] for sha in shas if sha in found}

    @staticmethod
    def _result(status: str, landed: Optional[Claim], kept: Optional[Claim], why: str) -> Result:
        if status == OK:
            return Result(OK, landed)
        return Result(status, kept if status == UNREACHABLE else None, why)


def _landed(porcelain: str, ref: str) -> bool:
    """Does `git push --porcelain` report `ref` as done? Its line is
    "<flag>\\t<from>:<to>\\t<summary>", flag one of ' ' '+' '-' '*' '=' when
    the remote has what was pushed, '!' when not. Read per ref, not from
    the exit status, which speaks for the whole push."""
    for line in porcelain.splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and fields[1].rpartition(":")[2] == ref:
            return fields[0] in (" ", "+", "-", "*", "=")
    return False


def _why(e: GitError) -> str:
    return _meaningful_line(e.stderr) or str(e)
