"""Claims on the git server (issue 16, adws/claims.py): a compare-and-swap
made of git refs, tried on real git: a bare origin in a temp dir and one
clone per node, nodes racing from threads (each push is its own git
process, so the races are real). The first tests prove the mechanism on git
itself, without the module; the [cluster] config section is tested at the end.
"""
from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Dict, List

import pytest

from adws import claims as cl
from adws.claims import LOST, OK, UNREACHABLE, Claim, Claims
from adws.cluster import Cluster
from adws.jobs import Jobs
from adws.config import ConfigError, load_config
from adws.gitops import git as real_git

from conftest import git

T0 = 1_780_000_000.0
TTL = 600
PREFIX = cl.DEFAULT_PREFIX


def node_clone(tmp_path: Path, origin: Path, name: str) -> Path:
    where = tmp_path / f"node-{name}"
    git("clone", "-q", str(origin), str(where))
    return where


def node(tmp_path: Path, origin: Path, name: str, ttl: float = TTL) -> Claims:
    return Claims(node_clone(tmp_path, origin, name), "origin", name, ttl)


def remote_refs(origin: Path, prefix: str = PREFIX) -> Dict[str, str]:
    out = git("--git-dir", str(origin), "for-each-ref", "--format=%(refname) %(objectname)", prefix)
    return dict(line.split() for line in out.splitlines())


def remote_claim(origin: Path, issue: int) -> dict:
    """The claim as the origin holds it, read on the server's side."""
    return json.loads(git("--git-dir", str(origin), "log", "-1", "--format=%B", f"{PREFIX}gh-{issue}"))


def at_once(calls: List[Callable[[], object]]) -> List[object]:
    """Run the calls in threads released together; their results in order."""
    start = threading.Barrier(len(calls))
    results: List[object] = [None] * len(calls)

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = calls[i]()
        except BaseException as e:  # deliberate: the test reports it, a thread would swallow it
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


# -- the mechanism, on git itself ----------------------------------------------------------------

def test_a_lease_on_a_stale_sha_is_refused_by_git_and_a_plain_push_of_a_descendant_is_not(git_origin, clone):
    """Why the module leases every push on the sha it read. Node B read the
    claim at X; node A has renewed it to Y since. B's push leased on X is
    refused. A plain push of a commit that descends from Y (a commit built on
    what B saw last) fast-forwards over A's live claim and exits 0: nothing
    tells B it replaced someone's claim."""
    ref, origin = f"{PREFIX}gh-1", str(git_origin)
    tree = git("hash-object", "-w", "-t", "tree", "/dev/null", cwd=clone).strip()
    x = git("commit-tree", "-m", '{"node":"a","expires":1}', tree, cwd=clone).strip()
    git("push", "-q", f"--force-with-lease={ref}:", origin, f"{x}:{ref}", cwd=clone)
    y = git("commit-tree", "-m", '{"node":"a","expires":2}', "-p", x, tree, cwd=clone).strip()
    git("push", "-q", f"--force-with-lease={ref}:{x}", origin, f"{y}:{ref}", cwd=clone)

    b_commit = git("commit-tree", "-m", '{"node":"b"}', "-p", y, tree, cwd=clone).strip()
    stale = subprocess.run(["git", "push", "--porcelain", f"--force-with-lease={ref}:{x}", origin, f"{b_commit}:{ref}"],
                           cwd=clone, capture_output=True, text=True)
    assert stale.returncode != 0 and "[rejected] (stale info)" in stale.stdout
    assert remote_refs(git_origin)[ref] == y
    # "must not exist" is a lease too: a second take of an existing claim is refused.
    again = subprocess.run(["git", "push", f"--force-with-lease={ref}:", origin, f"{b_commit}:{ref}"], cwd=clone,
                           capture_output=True, text=True)
    assert again.returncode != 0 and remote_refs(git_origin)[ref] == y

    plain = subprocess.run(["git", "push", origin, f"{b_commit}:{ref}"], cwd=clone, capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr
    assert remote_refs(git_origin)[ref] == b_commit  # A's live claim silently replaced


def rival_lands_first(origin: Path, ref: str, rival: str) -> None:
    """A pre-receive hook that moves `ref` to `rival` after the pusher saw
    the ref advertised and before the server updates it: a rival node whose
    push landed inside that window. (Refs may not be updated from the
    quarantine a pre-receive hook runs in; leaving it is what a second
    receive-pack would do.)"""
    hook = origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\nunset GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES\n"
                    f"git update-ref {ref} {rival}\n")
    hook.chmod(0o755)


def test_the_server_checks_the_leased_old_value_under_the_ref_lock(git_origin, clone, tmp_path):
    """The lease is not only the client's check of what it was shown: the
    old value travels in the push command, and the server's receive-pack
    refuses the update when the ref moved in between (here a rival lands
    after the advertisement). The module reads that refusal, whose wording
    differs from a client-side "stale info", as LOST, never as UNREACHABLE."""
    ref, origin = f"{PREFIX}gh-2", str(git_origin)
    tree = git("hash-object", "-w", "-t", "tree", "/dev/null", cwd=clone).strip()
    rival = git("commit-tree", "-m", "rival", tree, cwd=clone).strip()
    mine = git("commit-tree", "-m", "mine", tree, cwd=clone).strip()
    git("push", "-q", origin, f"{rival}:refs/tac/rival", cwd=clone)  # the rival's commit is on the server
    rival_lands_first(git_origin, ref, rival)

    env = {**os.environ, "GIT_TRACE_PACKET": "1"}
    push = subprocess.run(["git", "push", "--porcelain", f"--force-with-lease={ref}:", origin, f"{mine}:{ref}"],
                          cwd=clone, capture_output=True, text=True, env=env)
    assert f"push> {'0' * 40} {mine} {ref}" in push.stderr  # the expected old value, sent to the server
    assert push.returncode != 0 and "[remote rejected]" in push.stdout
    assert remote_refs(git_origin)[ref] == rival

    # The module, taking a claim into the same window.
    ref3 = f"{PREFIX}gh-3"
    rival_lands_first(git_origin, ref3, rival)
    a = node(tmp_path, git_origin, "pi-a")
    r = a.take(3, 1, "w-a", T0)
    assert r.status == LOST and not r and r.claim is None
    assert remote_refs(git_origin)[ref3] == rival


# -- take ----------------------------------------------------------------------------------------

def test_of_nodes_racing_to_take_an_issue_exactly_one_wins_every_round(git_origin, tmp_path):
    nodes = [node(tmp_path, git_origin, f"pi-{i}") for i in range(4)]
    for issue in range(1, 21):
        results = at_once([lambda n=n: n.take(issue, 1, f"w-{n.node}", T0) for n in nodes])
        winners = [n for n, r in zip(nodes, results) if r]
        assert len(winners) == 1, (issue, results)
        assert sorted(r.status for r in results) == [LOST, LOST, LOST, OK]  # losers know they lost
        won = next(r for r in results if r).claim
        assert remote_refs(git_origin)[f"{PREFIX}gh-{issue}"] == won.sha
        assert remote_claim(git_origin, issue)["node"] == winners[0].node
    assert all(c.node for c in nodes[0].read_all().values()) and len(nodes[0].read_all()) == 20


def test_a_claim_is_a_commit_of_the_empty_tree_and_touches_nothing_in_the_clone(git_origin, tmp_path, monkeypatch):
    a = node(tmp_path, git_origin, "pi-a")
    # The daemon's user may have no git identity at all.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(name, raising=False)
    hook = a.clone / ".git" / "hooks" / "pre-push"  # the target repo's own hook (tests, linters): not for claims
    hook.write_text("#!/bin/sh\nexit 1\n")
    hook.chmod(0o755)
    git("config", "user.useConfigOnly", "true", cwd=a.clone)  # and no identity set up for the daemon's user
    def state():  # refs, checkout and index of the clone
        return git("for-each-ref", cwd=a.clone), git("rev-parse", "HEAD", cwd=a.clone), (a.clone / ".git" / "index").read_bytes()
    before = state()
    r = a.take(7, 2, "w-1", T0)
    assert r
    r = a.end(a.renew(r.claim, T0 + 200).claim, "completed", T0 + 300)
    assert r and r.claim is None
    assert state() == before
    assert git("status", "--porcelain", cwd=a.clone) == ""
    b = node(tmp_path, git_origin, "pi-b")
    taken = b.take(8, 1, "w-2", T0).claim
    assert git("--git-dir", str(git_origin), "log", "-1", "--format=%T %P", taken.sha).split() == \
        [git("hash-object", "-t", "tree", "/dev/null", cwd=b.clone).strip()]
    assert remote_claim(git_origin, 8) == {"v": 1, "node": "pi-b", "issue": 8, "run": 1, "worker": "w-2",
                                           "expires": int(T0) + TTL}


# -- renew ---------------------------------------------------------------------------------------

def test_renew_moves_expires_forward_on_the_remote(git_origin, tmp_path):
    """The trap of leases made of refs: a renewal that never moved the
    timestamp, so the lease ran out mid-work. Read back by another node."""
    a, b = node(tmp_path, git_origin, "pi-a"), node(tmp_path, git_origin, "pi-b")
    claim = a.take(4, 1, "w-a", T0).claim
    for k in range(1, 4):
        now = T0 + k * TTL / 3
        r = a.renew(claim, now)
        assert r and r.claim.expires == int(now) + TTL
        assert git("--git-dir", str(git_origin), "rev-parse", f"{r.claim.sha}^").strip() == claim.sha
        assert b.read_all()[4].expires == int(now) + TTL == remote_claim(git_origin, 4)["expires"]
        claim = r.claim
    assert not b.take_over(b.read_all()[4], 1, "w-b", T0 + TTL + 1)  # the first lease would have ended here


def test_a_renewal_after_another_node_took_over_is_lost(git_origin, tmp_path):
    a, b = node(tmp_path, git_origin, "pi-a"), node(tmp_path, git_origin, "pi-b")
    old = a.take(5, 1, "w-a", T0).claim
    taken = b.take_over(b.read_all()[5], 1, "w-b", T0 + TTL + 1)
    assert taken
    r = a.renew(old, T0 + TTL + 2)
    assert r.status == LOST and r.claim is None
    assert remote_claim(git_origin, 5)["node"] == "pi-b"
    # Handed the other node's claim (a fresh read), it still does not renew it.
    assert a.renew(a.read_all()[5], T0 + TTL + 3).status == LOST
    assert remote_refs(git_origin)[f"{PREFIX}gh-5"] == taken.claim.sha


def test_a_renewal_whose_answer_was_lost_is_still_this_nodes_claim(git_origin, tmp_path):
    """The push of a renewal landed but its answer never came back (a cut
    network): the next renewal, still leased on the older sha, finds this
    node's own later commit there and renews from it instead of reporting
    the claim lost."""
    a = node(tmp_path, git_origin, "pi-a")
    first = a.take(6, 1, "w-a", T0).claim
    assert a.renew(first, T0 + 200)
    r = a.renew(first, T0 + 400)
    assert r and r.claim.expires == int(T0) + 400 + TTL == remote_claim(git_origin, 6)["expires"]
    again = a.take(6, 1, "w-a", T0 + 401)  # a take retried after its answer was lost
    assert again and again.claim.sha == r.claim.sha
    assert not a.take(6, 2, "w-other", T0 + 402)  # another worker of the same node is not the same claim


def test_renew_due_and_must_stop_split_the_lease_in_thirds():
    c = Claim(1, "x", "pi-a", 1, "w", int(T0) + TTL)
    assert not cl.renew_due(c, T0 + TTL / 3 - 1, TTL) and cl.renew_due(c, T0 + TTL / 3, TTL)
    assert not cl.must_stop(c, T0 + 2 * TTL / 3 - 1, TTL) and cl.must_stop(c, T0 + 2 * TTL / 3, TTL)
    assert not c.expired(T0 + TTL - 1) and c.expired(T0 + TTL)
    assert not Claim(1, "x", "", 0, "", 0).expired(T0 * 2)  # unreadable: never expired


def test_hand_over_gives_this_nodes_claim_to_the_next_worker_and_only_this_nodes(git_origin, tmp_path):
    """A retry keeps the claim: the next worker is named in a child commit
    leased on the sha held, an earlier round's outcome is cleared, and a
    renewal of the same claim that landed first is handed over from."""
    a, b = node(tmp_path, git_origin, "pi-a"), node(tmp_path, git_origin, "pi-b")
    first = a.record(a.take(16, 1, "w-1", T0).claim, "failed", T0 + 10).claim
    r = a.hand_over(first, 2, "w-2", T0 + 20)
    assert r and (r.claim.run, r.claim.worker, r.claim.outcome) == (2, "w-2", "")
    assert remote_claim(git_origin, 16) == {"v": 1, "node": "pi-a", "issue": 16, "run": 2, "worker": "w-2",
                                            "expires": int(T0) + 20 + TTL}
    renewed = a.renew(r.claim, T0 + 200).claim
    again = a.hand_over(r.claim, 3, "w-3", T0 + 210)  # from the sha before that renewal
    assert again and again.claim.worker == "w-3" and git(
        "--git-dir", str(git_origin), "rev-parse", f"{again.claim.sha}^").strip() == renewed.sha
    taken = b.take_over(b.read_all()[16], 1, "w-b", T0 + 210 + TTL)
    assert taken and a.hand_over(again.claim, 4, "w-4", T0 + 210 + TTL + 1).status == LOST
    assert remote_refs(git_origin)[f"{PREFIX}gh-16"] == taken.claim.sha
    assert a.hand_over(taken.claim, 4, "w-4", T0 + 900).status == LOST  # never another node's claim


# -- take over -----------------------------------------------------------------------------------

def test_of_nodes_racing_to_take_over_an_expired_claim_exactly_one_wins(git_origin, tmp_path):
    dead = node(tmp_path, git_origin, "pi-dead")
    nodes = [node(tmp_path, git_origin, f"pi-{i}") for i in range(3)]
    for issue in range(1, 9):
        assert dead.take(issue, 1, "w-dead", T0)
        seen = nodes[0].read_all()[issue]
        later = T0 + TTL + issue
        results = at_once([lambda n=n: n.take_over(seen, 2, f"w-{n.node}", later) for n in nodes])
        assert sorted(r.status for r in results) == [LOST, LOST, OK], (issue, results)
        winner = next(r for r in results if r).claim
        assert remote_claim(git_origin, issue)["node"] == winner.node
        assert git("--git-dir", str(git_origin), "rev-parse", f"{winner.sha}^").strip() == seen.sha


def test_a_live_claim_is_never_taken_over(git_origin, tmp_path):
    a, b = node(tmp_path, git_origin, "pi-a"), node(tmp_path, git_origin, "pi-b")
    live = a.take(9, 1, "w-a", T0).claim
    for now in (T0, T0 + TTL / 2, T0 + TTL - 1):
        r = b.take_over(b.read_all()[9], 1, "w-b", now)
        assert r.status == LOST and "pi-a" in r.reason
        assert remote_refs(git_origin)[f"{PREFIX}gh-9"] == live.sha
    assert b.take_over(b.read_all()[9], 1, "w-b", T0 + TTL)


def test_a_takeover_continues_the_attempt_count_the_claim_carries(git_origin, tmp_path):
    """Each node counts runs in its own tasks.md; the claim is what the next
    node sees. pi-a's worker ran attempt 1 and pi-a died: pi-b, whose own
    count is 0, runs attempt 2. A retry on pi-b counts on from its own runs,
    or from the claim when its worker never ran."""
    a, b = node(tmp_path, git_origin, "pi-a"), node(tmp_path, git_origin, "pi-b")
    assert a.take(11, 1, "w-a", T0, attempt=1)
    assert remote_claim(git_origin, 11)["attempt"] == 1
    here = Cluster(SimpleNamespace(node="pi-b", lease_ttl=TTL), Jobs(), lambda *args: None, lambda n: False, b)
    here.seen = b.read_all()
    assert here.take_job(11, 1, "w-b1", 1, T0 + TTL) == 2
    assert remote_claim(git_origin, 11)["attempt"] == 2 and here.held[11].attempt == 2
    assert here.take_job(11, 2, "w-b2", 1, T0 + TTL + 1) == 2  # w-b1 never ran: the claim's count stands
    assert here.take_job(11, 3, "w-b3", 3, T0 + TTL + 2) == 3  # w-b2 ran: this node's count
    assert remote_claim(git_origin, 11)["attempt"] == 3


# -- end and sweep -------------------------------------------------------------------------------

def test_end_records_the_outcome_then_deletes_the_ref(git_origin, tmp_path):
    a, b = node(tmp_path, git_origin, "pi-a"), node(tmp_path, git_origin, "pi-b")
    claim = a.take(10, 1, "w-a", T0).claim
    recorded = a.record(claim, "completed", T0 + 100)
    assert recorded and b.read_all()[10].outcome == "completed"
    assert not b.take(10, 1, "w-b", T0 + 101)  # ended, not yet released: still not b's to run
    assert a.release(recorded.claim) and f"{PREFIX}gh-10" not in remote_refs(git_origin)
    ended = git("--git-dir", str(git_origin), "log", "-1", "--format=%B", recorded.claim.sha)
    assert json.loads(ended)["outcome"] == "completed"
    assert a.release(recorded.claim)  # already gone: released
    # end = record + release; many tasks later, nothing piles up on the remote.
    for issue in range(11, 21):
        assert a.end(a.take(issue, 1, "w-a", T0).claim, "failed", T0 + 5)
    assert remote_refs(git_origin) == {}


def test_sweep_deletes_expired_claims_only(git_origin, tmp_path):
    a, b, c = (node(tmp_path, git_origin, n) for n in ("pi-a", "pi-b", "pi-c"))
    for issue in (1, 2, 3):  # a died holding these
        assert a.take(issue, 1, "w-a", T0)
    assert a.end(a.take(4, 1, "w-a", T0).claim, "completed", T0)  # ended in time
    assert a.record(a.take(5, 1, "w-a", T0).claim, "completed", T0)  # a died before releasing it
    live = b.take(6, 1, "w-b", T0 + TTL)  # b is alive
    renewed = a.renew(a.take(7, 1, "w-a", T0).claim, T0 + TTL - 10)  # a is alive too, renewing
    assert live and renewed
    swept = c.sweep(T0 + TTL + 5)
    assert sorted(s.issue for s in swept) == [1, 2, 3, 5]
    assert sorted(remote_refs(git_origin)) == [f"{PREFIX}gh-6", f"{PREFIX}gh-7"]
    assert c.sweep(T0 + TTL + 6) == []


def test_a_dead_node_restarted_does_not_delete_the_new_owners_claim(git_origin, tmp_path):
    old = node(tmp_path, git_origin, "pi-a")
    held = old.take(12, 1, "w-a", T0).claim  # then pi-a is killed with its worker
    b = node(tmp_path, git_origin, "pi-b")
    new = b.take_over(b.read_all()[12], 1, "w-b", T0 + TTL + 1).claim
    restarted = Claims(old.clone, "origin", "pi-a", TTL)  # same clone, same name, what tasks.md remembered
    later = T0 + TTL + 60
    assert restarted.release(held).status == LOST
    assert restarted.end(held, "failed", later).status == LOST
    assert restarted.renew(held, later).status == LOST
    assert restarted.sweep(later) == []
    assert not restarted.take_over(restarted.read_all()[12], 2, "w-a2", later)
    assert remote_refs(git_origin)[f"{PREFIX}gh-12"] == new.sha


def test_read_all_lists_claim_refs_only(git_origin, tmp_path):
    a = node(tmp_path, git_origin, "pi-a")
    claim = a.take(3, 1, "w-a", T0).claim
    for stranger in (f"{PREFIX}probe-pi-z", f"{PREFIX}gh-x", f"{PREFIX}old/gh-4", f"refs/x/{PREFIX}gh-5"):
        git("push", "-q", "origin", f"{claim.sha}:{stranger}", cwd=a.clone)
    assert a.read_all() == {3: claim}
    assert a.sweep(T0 * 2) == [claim] and f"{PREFIX}probe-pi-z" in remote_refs(git_origin)


def test_a_ref_under_the_prefix_that_is_no_claim_is_never_taken_over_or_swept(git_origin, tmp_path):
    """It may be a live claim of a newer version: it holds its issue until a person deletes it."""
    a = node(tmp_path, git_origin, "pi-a")
    tree = git("hash-object", "-w", "-t", "tree", "/dev/null", cwd=a.clone).strip()
    odd = git("commit-tree", "-m", '{"v": 9, "holder": "elsewhere"}', tree, cwd=a.clone).strip()
    git("push", "-q", "origin", f"{odd}:{PREFIX}gh-13", cwd=a.clone)
    seen = a.read_all()[13]
    assert not seen.readable and not seen.expired(T0 * 2)
    assert a.sweep(T0 * 2) == [] and not a.take_over(seen, 1, "w", T0 * 2) and not a.take(13, 1, "w", T0)
    assert remote_refs(git_origin)[f"{PREFIX}gh-13"] == odd


# -- partition -----------------------------------------------------------------------------------

def test_a_node_cut_off_from_the_remote_hears_unreachable_not_lost(git_origin, tmp_path):
    a, b = node(tmp_path, git_origin, "pi-a"), node(tmp_path, git_origin, "pi-b")
    claim = a.take(14, 1, "w-a", T0).claim
    git("remote", "set-url", "origin", str(tmp_path / "gone.git"), cwd=a.clone)
    now = T0 + TTL / 3
    r = a.renew(claim, now)
    assert r.status == UNREACHABLE and r.claim == claim  # the claim as it stood: still the one to renew
    assert "\n" not in r.reason and "gone.git" in r.reason
    with pytest.raises(cl.ClaimError, match="^cannot read claims from origin: "):
        a.read_all()
    # The daemon keeps trying until must_stop, then stops its worker.
    assert not a.must_stop(r.claim, now) and a.must_stop(r.claim, T0 + 2 * TTL / 3)
    git("remote", "set-url", "origin", str(git_origin), cwd=a.clone)
    assert a.renew(claim, now + 10)

    # Cut off past the lease: another node takes over, and back online the
    # renewal is lost, never unreachable.
    claim = a.read_all()[14]
    git("remote", "set-url", "origin", str(tmp_path / "gone.git"), cwd=a.clone)
    assert b.take_over(b.read_all()[14], 1, "w-b", claim.expires + 1)
    assert a.renew(claim, claim.expires + 2).status == UNREACHABLE
    git("remote", "set-url", "origin", str(git_origin), cwd=a.clone)
    assert a.renew(claim, claim.expires + 3).status == LOST


def test_a_remote_that_refuses_the_push_is_not_taken_for_a_lost_claim(git_origin, tmp_path):
    a = node(tmp_path, git_origin, "pi-a")
    claim = a.take(15, 1, "w-a", T0).claim
    hook = git_origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'disk quota exceeded' >&2\nexit 1\n")
    hook.chmod(0o755)
    r = a.renew(claim, T0 + 200)
    assert r.status == UNREACHABLE and "disk quota exceeded" in r.reason and r.claim == claim
    hook.unlink()
    assert a.renew(claim, T0 + 210)


# -- reading: cost -------------------------------------------------------------------------------

NETWORK = ("ls-remote", "fetch", "push", "pull", "clone")


def count_git(claims: Claims) -> List[List[str]]:
    """Record every git command the node runs (the real git still runs)."""
    calls: List[List[str]] = []

    def recording(args, cwd, timeout=300):
        calls.append([a for a in args if not a.startswith("-") and "=" not in a][:1] + list(args))
        return real_git(args, cwd, timeout=timeout)

    claims.git = recording
    return calls


def test_read_all_is_one_ls_remote_and_fetches_only_commits_it_lacks(git_origin, tmp_path):
    a, b = node(tmp_path, git_origin, "pi-a"), node(tmp_path, git_origin, "pi-b")
    for issue in range(1, 11):
        assert b.take(issue, 1, "w-b", T0)
    calls = count_git(a)
    network = lambda: [c[0] for c in calls if c[0] in NETWORK]  # noqa: E731

    first = a.read_all()
    assert network() == ["ls-remote", "fetch"] and len(first) == 10  # b's ten commits, in one fetch
    assert all(c.node == "pi-b" for c in first.values())
    del calls[:]
    assert a.read_all() == first
    assert network() == ["ls-remote"] and len(calls) == 2  # and one local git log
    del calls[:]
    assert b.renew(first[3], T0 + 200)
    assert a.read_all()[3].expires == int(T0) + 200 + TTL
    fetched = [c for c in calls if c[0] == "fetch"]
    assert network() == ["ls-remote", "fetch"] and fetched[0][-1] == b.read_all()[3].sha  # only the renewed one
    del calls[:]
    mine = a.take(11, 1, "w-a", T0).claim
    del calls[:]
    assert a.read_all()[11] == mine and network() == ["ls-remote"]  # its own claims: already in its clone


# -- check ---------------------------------------------------------------------------------------

def test_check_tries_the_namespace_and_names_the_setting_when_refused(git_origin, tmp_path):
    a = node(tmp_path, git_origin, "pi-a")
    assert a.check() is None
    assert remote_refs(git_origin) == {}  # the probe is deleted
    hook = git_origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\nwhile read old new ref; do case $ref in refs/tac/*) "
                    "echo \"refusing $ref\" >&2; exit 1;; esac; done\n")
    hook.chmod(0o755)
    said = a.check()
    assert said and "\n" not in said and "claim_ref_prefix" in said and "refusing refs/tac/claims/probe-pi-a" in said
    other = Claims(a.clone, "origin", "pi-a", TTL, prefix="refs/heads/tac-claims/")
    assert other.check() is None
    git("remote", "set-url", "origin", str(tmp_path / "gone.git"), cwd=a.clone)
    said = a.check()
    assert said.startswith("cannot try claim refs on origin: ") and "\n" not in said


# -- the message ---------------------------------------------------------------------------------

def test_a_claim_message_reads_back_as_the_same_claim():
    rng = random.Random(16)
    for _ in range(500):
        c = Claim(rng.randint(1, 10 ** 6), "s" * 40, rng.choice(["pi-a", "pi.kitchen", "n_1"]), rng.randint(1, 9),
                  "w-" + "%06x" % rng.getrandbits(24), rng.randint(0, 2 ** 40),
                  rng.choice(["", "completed", "fail\n\"x"]), rng.choice([0, 1, 2, 9]))
        text = cl.message(c)
        assert "\n" not in text and cl.parse(c.issue, c.sha, text) == c
    for junk in ("", "not json", "[]", '{"node": "a"}',
                 '{"issue": 2, "node": "a", "run": 1, "worker": "w", "expires": 5}',
                 '{"issue": 1, "node": "a", "run": true, "worker": "w", "expires": 5}',
                 '{"issue": true, "node": "a", "run": 1, "worker": "w", "expires": 5}',
                 '{"issue": 1, "node": "a", "run": 1, "worker": "w", "expires": 5, "attempt": "2"}',
                 '{"issue": 1, "node": "a", "run": 1, "worker": "w", "expires": 5, "attempt": -1}'):
        assert not cl.parse(1, "s", junk).readable, junk
    older = cl.parse(1, "s", '{"issue": 1, "node": "a", "run": 1, "v": 1, "worker": "w", "expires": 5}')
    assert older.readable and older.attempt == 0  # written before claims counted attempts
    assert cl.issue_of(f"{PREFIX}gh-42", PREFIX) == 42
    assert cl.issue_of(f"{PREFIX}probe-pi-a", PREFIX) is None and cl.issue_of(f"refs/x/{PREFIX}gh-1", PREFIX) is None


# -- config: [cluster] ---------------------------------------------------------------------------

def write_config(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text('[github]\nrepo = "acme/widgets"\n' + text)
    return p


def test_without_a_cluster_section_the_node_claims_nothing(tmp_path):
    cfg = load_config(write_config(tmp_path, ""))
    assert cfg.cluster_enabled is False
    assert (cfg.node, cfg.lease_ttl, cfg.claim_ref_prefix) == (socket.gethostname(), 600, PREFIX)


def test_the_shipped_cluster_section_uncommented_is_valid_and_its_values_are_the_defaults(tmp_path):
    shipped = (Path(__file__).resolve().parent.parent / "config.toml").read_text()
    lines = shipped.splitlines()
    start = lines.index(next(ln for ln in lines if ln.startswith("# [cluster]")))
    section = [ln[2:] for ln in lines[start:] if ln.startswith("# ") and not ln.startswith("#  ")]
    cfg = load_config(write_config(tmp_path, "\n".join(section) + "\n"))
    assert cfg.cluster_enabled and cfg.node == "pi-kitchen"
    assert (cfg.lease_ttl, cfg.claim_ref_prefix) == (600, PREFIX)  # documented = enforced
    assert load_config(write_config(tmp_path, "[cluster]\n")).cluster_enabled
    c = Claims.from_config(cfg)
    assert (c.clone, c.remote, c.node, c.lease_ttl, c.prefix) == (cfg.repo_path, "origin", "pi-kitchen", 600, PREFIX)


@pytest.mark.parametrize("body, says", [
    ('node = ""', "[cluster] node must be"),
    ('node = "pi kitchen"', "[cluster] node must be"),
    ("node = 7", "[cluster] node must be a string"),
    ("lease_ttl = 5", "[cluster] lease_ttl must be at least 10"),
    ('lease_ttl = "600"', "[cluster] lease_ttl must be a number"),
    ('claim_ref_prefix = "tac/claims/"', "[cluster] claim_ref_prefix must"),
    ('claim_ref_prefix = "refs/tac/claims"', "[cluster] claim_ref_prefix must"),
    ('claim_ref_prefix = "refs/tac..x/"', "[cluster] claim_ref_prefix must"),
    ('claim_ref_prefix = "refs/tac.lock/"', "[cluster] claim_ref_prefix must"),
    ('claim_ref_prefix = "refs/t ac/"', "[cluster] claim_ref_prefix must"),
    ("nodes = 2", "unknown key [cluster] nodes"),
])
def test_a_bad_cluster_key_is_one_line_naming_it(tmp_path, body, says):
    with pytest.raises(ConfigError) as e:
        load_config(write_config(tmp_path, f"[cluster]\n{body}\n"))
    assert says in str(e.value) and "\n" not in str(e.value)
