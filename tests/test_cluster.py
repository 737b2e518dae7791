"""Several coordinators on one repository (issue #16, phase 2): the daemon
claims each issue on the git server before it runs it (adws/cluster.py over
adws/claims.py), so no issue runs on two nodes.

Three coordinators run as real processes, each with its own clone, tasks.md
and trees (tests/harness.py's Node), against one fake GitHub and one real
bare origin. Every worker run of every node is traced to one file, so a run
counted or an overlap found is across the whole cluster.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import pytest

from harness import ROOT, Node, claim_at, claim_refs, overlaps, poll, trace_runs
from adws import coordinator as co
from adws import tasks
from adws.claims import UNREACHABLE, Claim, Claims, Result
from adws.cluster import own_text, own_worker, own_workers

from test_chaos import Watcher, finals

TTL = 10  # the shortest lease the config allows: takeovers within seconds


# -- fixtures --------------------------------------------------------------------------------------

GIT_SHIM = """#!/bin/sh
# git, as the coordinators call it: every call logged, and a claim's push held back
# when asked (so that racing nodes have all read the claims before any take lands).
[ -n "$TAC_GIT_LOG" ] && echo "$*" >> "$TAC_GIT_LOG"
case "$*" in
  *"--force-with-lease=refs/tac/claims/gh-"*) [ -n "$TAC_TAKE_DELAY" ] && sleep "$TAC_TAKE_DELAY";;
esac
exec {git} "$@"
"""


@pytest.fixture
def shim(tmp_path: Path) -> Path:
    """A folder holding a `git` that logs and may delay claim pushes (see GIT_SHIM)."""
    folder = tmp_path / "shim"
    folder.mkdir()
    (folder / "git").write_text(GIT_SHIM.format(git=shutil.which("git")))
    (folder / "git").chmod(0o755)
    return folder


@pytest.fixture
def cluster(tmp_path, github, gh_env, git_origin):
    """make(names, ...) -> [Node]: coordinators of one cluster, all tracing to tmp_path/trace.txt."""
    made: List[Node] = []

    def make(names, cluster=None, workers=None, github_cfg=None, env=None) -> List[Node]:
        nodes = []
        for name in names:
            node = Node(tmp_path / name, github, gh_env, git_origin, name, cluster={"lease_ttl": TTL, **(cluster or {})})
            node.env["TAC_TRACE"] = str(tmp_path / "trace.txt")
            node.env.update(env or {})
            node.write_config(workers={"max_concurrent": 2, **(workers or {})},
                              github={"poll_interval": 0.5, **(github_cfg or {})})
            nodes.append(node)
        made.extend(nodes)
        return nodes

    make.trace = tmp_path / "trace.txt"
    yield make
    for node in made:
        node.stop_all()


def wait_for(nodes: List[Node], what: Callable[[], object], timeout: float = 30, message: str = "") -> object:
    value = poll(what, timeout)
    if value:
        return value
    logs = "\n".join(f"--- {n.name} log ---\n{n.log_text()[-2500:]}\n--- {n.name} tasks.md ---\n"
                     f"{(n.dir / 'tasks.md').read_text() if (n.dir / 'tasks.md').exists() else ''}" for n in nodes)
    raise AssertionError(f"timed out after {timeout}s waiting for {message or what}\n{logs}")


def told(github, n: int) -> bool:
    labels = github.issue_labels(n)
    return "rpi-auto" not in labels and any(lab.startswith("tac:") for lab in labels)


def runner_of(nodes: List[Node], n: int) -> List[str]:
    """The nodes whose tasks.md holds gh-N as ended."""
    return [node.name for node in nodes if node.state(n) in tasks.TERMINAL]


def node_a(tmp_path: Path, workers: str = "", lease_ttl: int = 60) -> co.Config:
    """The config of a coordinator called pi-a whose state lives in tmp_path,
    for the tests that drive one in-process."""
    config = tmp_path / "config.toml"
    config.write_text('[github]\nrepo = "acme/widgets"\n' + (f"[workers]\n{workers}" if workers else "")
                      + f'[cluster]\nnode = "pi-a"\nlease_ttl = {lease_ttl}\n')
    return co.dataclasses.replace(co.load_config(config), tasks_path=tmp_path / "tasks.md", logs=tmp_path / "logs",
                                  trees=tmp_path / "trees")


# -- tasks.md: the Claimed by line -------------------------------------------------------------------

@pytest.mark.parametrize("text", ["pi-garage until 10:42", own_text("pi-kitchen", "w-ee4608", 1_780_000_000),
                                  own_text("pi-kitchen", "w-1"), "pi-x, ended: completed",
                                  "an unreadable claim", "  spaced\\n and \\x01 odd  "])
def test_claimed_by_is_a_task_field_that_round_trips(text):
    doc = tasks.TaskFile([tasks.Task(7, "t", tasks.PENDING, claimed_by=text)])
    rendered = tasks.render(doc)
    assert "\n- Claimed by: " in rendered
    back, problems = tasks.parse(rendered)
    assert problems == [] and back.tasks[0].claimed_by == text and tasks.render(back) == rendered
    assert own_worker(text, "pi-kitchen") == ("w-ee4608" if "w-ee4608" in text else "w-1" if "w-1)" in text else "")
    assert own_worker(text, "pi-garage") == ""


def test_a_retry_is_written_naming_its_claim_so_a_restart_right_after_still_holds_it(tmp_path):
    """kill -9 at the instant after a failed run went back to Pending for its
    retry: tasks.md, as that one write left it, must name the claim's worker,
    or the restarted node takes its own claim for another's, neither renews
    nor hands it over, and after the lease another node runs the issue."""
    cfg = node_a(tmp_path, workers='max_attempts = 2\nretry_backoff = [600]\n', lease_ttl=10)
    now = 1_780_000_000.0
    c = co.Coordinator(cfg, object(), clock=lambda: now, wall=lambda: now, environ={})
    c.update(lambda doc: tasks.transition(doc, 7, tasks.ACTIVE, expect=tasks.NEW, worker="w-abc123", title="t"))
    claim = Claim(7, "a" * 40, "pi-a", 1, "w-abc123", int(now) + 10, attempt=1)
    c.cluster.held[7] = claim
    w = co.Worker(issue=7, worker_id="w-abc123", attempt=1, branch="auto/gh-7", tree=tmp_path / "trees" / "gh-7",
                  log_path=tmp_path / "gh-7.jsonl", stderr_path=tmp_path / "gh-7.err", stderr_offset=0, pid=0,
                  pid_start=None, started_at=now, follower=None, last_output_at=now)
    ended = c.record_outcome(w, co.Outcome("failed", "exit status 1"), "", now)
    assert ended.state == tasks.PENDING and ended.attempts == 1
    restarted = co.Coordinator(cfg, object(), clock=lambda: now, wall=lambda: now, environ={})
    entry = restarted.load().governing(7)
    assert own_worker(entry.claimed_by, "pi-a") == "w-abc123", entry
    restarted.cluster.saw({7: claim}, [], restarted.load(), {}, set(), now + 1)
    assert restarted.cluster.held == {7: claim}  # adopted: renewed and handed over to the retry here


class Killed(BaseException):
    """kill -9 at that instant: nothing after it runs (not an Exception: no guard catches it)."""


@pytest.mark.parametrize("landed", [False, True], ids=["before-the-hand-over-landed", "after-it-landed"])
def test_a_retry_killed_while_its_claim_is_handed_over_is_still_known_as_its_own_after_the_restart(
        tmp_path, git_origin, clone, landed, caplog):
    """kill -9 after spawn() wrote the retry's Active entry (a new worker id)
    and before, or just after, the hand-over of the claim to that worker
    landed on the origin. Restarted, the node finds the entry never started
    and puts it back to Pending; its claim names the retry's last worker or
    the new one. Either must be known as this node's own: adopted, not
    reported as a twin coordinator called pi-a."""
    cfg = node_a(tmp_path, workers='max_attempts = 2\nretry_backoff = [1]\n')
    now = time.time()
    claims = Claims(clone, str(git_origin), "pi-a", 60)
    first = claims.take(7, 1, "w-abc379", now, attempt=1)  # the failed run's claim, kept for its retry
    assert first

    def coordinator() -> co.Coordinator:
        c = co.Coordinator(cfg, object(), clock=lambda: now, wall=lambda: now, environ={})
        c.cluster.claims = claims
        return c

    c = coordinator()
    c.cluster.held[7] = first.claim
    c.update(lambda doc: tasks.transition(doc, 7, tasks.PENDING, expect=tasks.NEW, title="t", attempts=1,
                                          claimed_by=own_text("pi-a", "w-abc379", first.claim.expires)))

    def prepare(w, issue, run):  # the start job, killed before or after its hand-over
        if landed:
            c.cluster.take_job(w.issue, run, w.worker_id, w.attempt, now)
        raise Killed()
    c.prepare = prepare
    with pytest.raises(Killed):
        c.spawn(c.load().governing(7), {"number": 7, "title": "t", "body": ""}, now)
    retry = c.load().governing(7)
    assert retry.state == tasks.ACTIVE and retry.worker != "w-abc379"
    on_origin = claims.read_all()[7]
    assert on_origin.worker == (retry.worker if landed else "w-abc379")

    restarted = coordinator()
    restarted.readopt(restarted.load().governing(7), now)  # never started: back to Pending
    assert restarted.load().governing(7).state == tasks.PENDING
    with caplog.at_level("INFO", logger="tac"):
        restarted.adopt_claims(now)
    assert restarted.cluster.held == {7: on_origin}, restarted.load().governing(7)
    assert "is not this coordinator" not in caplog.text
    restarted.show_claims()  # the line names the claim's worker alone once it is held
    assert restarted.load().governing(7).claimed_by == own_text("pi-a", on_origin.worker, on_origin.expires)


@pytest.mark.parametrize("retry", [False, True], ids=["a-take", "a-retrys-hand-over"])
def test_a_claim_whose_answer_was_lost_is_known_as_this_nodes_own_not_a_twins(
        tmp_path, git_origin, clone, retry, caplog):
    """The push of a take (or of a retry's hand-over) landed, but its answer
    never came back and the read after it failed too: the start goes back to
    Pending, not knowing. The claim on the origin names this node and the
    new worker; the next read must adopt it, not report a twin coordinator
    called pi-a, and the next start must not count another attempt."""
    cfg = node_a(tmp_path, workers='max_attempts = 3\nretry_backoff = [1]\n')
    now = time.time()
    claims = Claims(clone, str(git_origin), "pi-a", 60)
    c = co.Coordinator(cfg, object(), clock=lambda: now, wall=lambda: now, environ={})
    c.cluster.claims = claims
    attempts, claimed_by = 0, ""
    if retry:
        first = claims.take(7, 1, "w-abc379", now, attempt=1)
        c.cluster.held[7] = first.claim
        attempts, claimed_by = 1, own_text("pi-a", "w-abc379", first.claim.expires)
    c.update(lambda doc: tasks.transition(doc, 7, tasks.PENDING, expect=tasks.NEW, title="t", attempts=attempts,
                                          claimed_by=claimed_by))

    class AnswerLost:  # the push lands; what comes back is a cut connection, and the read after it fails
        def __getattr__(self, name):
            return getattr(claims, name)

        def _lost(self, landed):
            assert landed
            return Result(UNREACHABLE, None, "the remote hung up")

        def take(self, *args, **kwargs):
            return self._lost(claims.take(*args, **kwargs))

        def hand_over(self, *args, **kwargs):
            return self._lost(claims.hand_over(*args, **kwargs))

    def prepare(w, issue, run):
        c.cluster.claims = AnswerLost()
        try:
            c.cluster.take_job(w.issue, run, w.worker_id, w.attempt, now)
        finally:
            c.cluster.claims = claims
    c.prepare = prepare
    c.spawn(c.load().governing(7), {"number": 7, "title": "t", "body": ""}, now)
    entry = c.load().governing(7)
    on_origin = claims.read_all()[7]
    assert entry.state == tasks.PENDING and on_origin.worker not in ("", "w-abc379")
    assert on_origin.worker in own_workers(entry.claimed_by, "pi-a"), entry.claimed_by
    with caplog.at_level("INFO", logger="tac"):
        c.cluster.saw(claims.read_all(), [], c.load(), {}, set(), now + 1)
    assert c.cluster.held == {7: on_origin} and "is not this coordinator" not in caplog.text
    # The next start hands the claim over and runs as the same attempt, not the one after it.
    assert c.cluster.take_job(7, 1, "w-next01", attempts + 1, now + 2) == attempts + 1
    assert claims.read_all()[7].worker == "w-next01"


def test_a_read_older_than_the_claim_held_never_replaces_it(tmp_path):
    """A read begun before this node's outcome (or a renewal) landed answers
    after it: the claim it shows is this node's too, but older. The newer
    one stays held, or the ended claim is released at once and another node,
    still seeing the label, runs the issue a second time (found by the
    twelve-issue test)."""
    cfg = node_a(tmp_path)
    now = 1_780_000_000.0
    c = co.Coordinator(cfg, object(), clock=lambda: now, wall=lambda: now, environ={})
    c.update(lambda doc: tasks.transition(doc, 7, tasks.ACTIVE, expect=tasks.NEW, worker="w-abc379", title="t"))
    older = Claim(7, "a" * 40, "pi-a", 1, "w-abc379", int(now) + 60, attempt=1)
    ended = Claim(7, "b" * 40, "pi-a", 1, "w-abc379", int(now) + 60, outcome="completed", attempt=1)
    c.cluster.held[7] = ended
    c.cluster.saw({7: older}, [], c.load(), {}, set(), now)
    assert c.cluster.held == {7: ended}


def test_an_ended_claim_whose_entry_is_gone_is_no_twin(tmp_path, caplog):
    """This node's claim, ended, waits out its lease after the label swap; the
    Completed entry is archived (or dropped with the label) meanwhile. After a
    restart the claim is left to the sweep, not reported as another
    coordinator's."""
    cfg = node_a(tmp_path)
    now = 1_780_000_000.0
    c = co.Coordinator(cfg, object(), clock=lambda: now, wall=lambda: now, environ={})
    ended = Claim(7, "a" * 40, "pi-a", 1, "w-abc379", int(now) + 60, outcome="completed", attempt=1)
    left = Claim(8, "b" * 40, "pi-a", 1, "w-def379", int(now) + 60, attempt=1)  # label gone, killed before release
    twin = Claim(9, "c" * 40, "pi-a", 1, "w-0ther1", int(now) + 60, attempt=1)
    c.update(lambda doc: tasks.transition(doc, 9, tasks.PENDING, expect=tasks.NEW, title="queued here too"))
    with caplog.at_level("INFO", logger="tac"):
        c.cluster.saw({7: ended, 8: left, 9: twin}, [], c.load(), {}, set(), now, listed={9})
    assert c.cluster.held == {}
    assert "gh-7 is claimed" not in caplog.text and "gh-8 is claimed" not in caplog.text
    assert "gh-9 is claimed by a node called pi-a (worker w-0ther1) that is not this coordinator" in caplog.text


def test_no_claim_is_swept_before_the_listing_is_known(tmp_path, git_origin, clone, caplog):
    """pi-a ended gh-7 (the outcome recorded on its claim) and was killed
    before the label swap; it restarts after the lease ran out. Its first
    read of the claims comes before its first poll (or after a failed one):
    which issues are labelled is unknown then, so no claim is swept. The
    ended claim of an issue still labelled stays until the label is swapped,
    and refuses every node's take meanwhile: deleted, it would let the issue
    run a second time, as a fresh take that forgets the attempts made."""
    cfg = node_a(tmp_path)
    now = time.time()
    claims = Claims(clone, str(git_origin), "pi-a", 60)
    taken = claims.take(7, 1, "w-abc379", now - 200, attempt=2)
    ended = claims.record(taken.claim, "completed", now - 190)  # a lease before the restart: expired
    assert ended and ended.claim.expired(now)
    c = co.Coordinator(cfg, object(), clock=lambda: now, wall=lambda: now, environ={})
    c.cluster.claims = claims
    c.update(lambda doc: tasks.transition(doc, 7, tasks.ACTIVE, expect=tasks.NEW, title="t", worker="w-abc379",
                                          attempts=1))
    c.update(lambda doc: tasks.transition(doc, 7, tasks.COMPLETED, expect=tasks.ACTIVE, attempts=2, now=now - 190))
    assert c.load().governing(7).outbox  # the notice, and the label swap, are still owed
    failed = [None, co.GitHubError(0, "cannot connect"), co.GitHubError(200, "a dict for a list", unexpected=True)]
    for error in failed:  # before the first poll; a poll that failed; an answer of the wrong shape
        if error is not None:
            c.issues, c.listing_ok = {}, True  # (a listing before the label, say)
            c.poll_done(c.github, now, None, error)
        assert not c.listing_ok
        with caplog.at_level("INFO", logger="tac"):
            c.adopt_claims(now)
        assert claims.read_all() == {7: ended.claim}, caplog.text
        assert "swept" not in caplog.text
    # Another node, whose poll lists the issue (still labelled), does not run it.
    b = co.Coordinator(co.dataclasses.replace(cfg, node="pi-b", tasks_path=tmp_path / "b.md"), object(),
                       clock=lambda: now, wall=lambda: now, environ={})
    b.cluster.claims = Claims(clone, str(git_origin), "pi-b", 60)
    b.issues, b.listing_ok = {7: {"number": 7, "title": "t", "body": ""}}, True
    b.update(lambda doc: tasks.transition(doc, 7, tasks.PENDING, expect=tasks.NEW, title="t"))
    assert b.claimable(b.load().in_state(tasks.PENDING), now) == []
    assert not b.cluster.claims.take(7, 1, "w-0ther1", now)
    assert claims.read_all() == {7: ended.claim}
    # Once a poll lists the issues, a claim expired for an issue nobody lists any more is swept.
    c.issues, c.listing_ok = {}, True
    c.adopt_claims(now)
    assert claims.read_all() == {}


# -- without [cluster]: as before ----------------------------------------------------------------------

def test_a_single_coordinator_without_cluster_claims_nothing(project, github, git_origin, shim):
    project.env["PATH"] = f"{shim}{os.pathsep}{project.env['PATH']}"
    project.env["TAC_GIT_LOG"] = str(project.dir / "git.log")
    n = project.issue("One node, no [cluster]")
    project.start()
    project.wait_for(lambda: told(github, n), message="completed and told")
    assert project.state(n) == tasks.COMPLETED
    assert claim_refs(git_origin) == {}
    calls = (project.dir / "git.log").read_text()
    assert "refs/tac" not in calls and "ls-remote" not in calls
    assert "Claimed by" not in (project.dir / "tasks.md").read_text()
    assert json.loads((project.dir / "metrics.json").read_text())["cluster"] is None
    assert github.comments(n)[0]["body"].startswith("✅ Done: ")  # no node named


# -- the cluster at work -------------------------------------------------------------------------------

def test_twelve_issues_on_three_nodes_each_run_exactly_once(cluster, github, git_origin):
    nodes = cluster(["pi-a", "pi-b", "pi-c"])
    for node in nodes:  # each node's worker commits a file named after it: who pushed what shows in the PR
        node.script({"default": {"commit": f"{node.name}.txt", "sleep": 0.5}})
    issues = [nodes[0].issue(f"Task {i}") for i in range(12)]
    t0 = time.time()
    for node in nodes:
        node.start()
    wait_for(nodes, lambda: all(told(github, n) for n in issues), timeout=60, message="every issue done and told")
    took = time.time() - t0
    wait_for(nodes, lambda: claim_refs(git_origin) == {}, timeout=3 * TTL, message="every claim gone")
    runs = trace_runs(cluster.trace)
    ran_on = {n: runner_of(nodes, n) for n in issues}
    print(f"\n12 issues on 3 nodes in {took:.1f} s: " + ", ".join(
        f"{name} {sum(r == [name] for r in ran_on.values())}" for name in ("pi-a", "pi-b", "pi-c")))
    # Each issue ran once, on one node, and that node alone ended it.
    assert sorted(runs) == issues and all(len(by_pid) == 1 for by_pid in runs.values()), runs
    assert all(len(r) == 1 for r in ran_on.values()), ran_on
    assert len({r[0] for r in ran_on.values()}) >= 2  # the queue was shared
    pulls = github.pulls()
    assert sorted(p["head"]["ref"] for p in pulls) == sorted(f"auto/gh-{n}" for n in issues)
    for n in issues:
        node = ran_on[n][0]
        assert len(github.comments(n)) == 1 and len(finals(github, n)) == 1, github.comments(n)
        assert finals(github, n)[0].startswith(f"✅ Done on {node}: ")
        assert "tac:done" in github.issue_labels(n)
        other = [x for x in nodes if x.name != node]
        assert all(x.task(n) is None for x in other), n  # queued there too, and dropped once it was done
    for node in nodes:
        log = node.log_text()
        assert "startup error" not in log and "could not start" not in log
        assert json.loads((node.dir / "metrics.json").read_text())["counters"]["startup_errors"] == 0


def test_three_nodes_starting_at_the_same_instant_start_one_worker(cluster, github, shim):
    """20 rounds, each a new issue that the three running coordinators are
    told to poll for at the same instant (SIGHUP: poll now). A claim's push
    is held back 0.25 s, so that the three have read the claims before any
    take lands: the git server's lease alone decides, and one starts."""
    env = {"TAC_TAKE_DELAY": "0.25", "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}"}
    # The workers run on (nothing to finish between rounds), the lease outlives
    # the test, and nothing polls but the SIGHUP.
    nodes = cluster(["pi-a", "pi-b", "pi-c"], cluster={"lease_ttl": 300}, env=env, workers={"max_concurrent": 25},
                    github_cfg={"poll_interval": 600})
    for node in nodes:
        node.script({"default": {"sleep": 120}})
    procs = [node.start() for node in nodes]
    wait_for(nodes, lambda: all((node.dir / "metrics.json").exists() for node in nodes), message="all three up")
    raced, t0 = 0, time.time()
    for r in range(20):
        n = nodes[0].issue(f"Race {r}")
        for p in procs:
            p.send_signal(signal.SIGHUP)

        def settled():
            states = [node.task(n) for node in nodes]
            return sum(1 for t in states if t and t.state == tasks.ACTIVE and t.pid) == 1 and \
                sum(1 for t in states if t and t.state == tasks.PENDING and t.claimed_by) == 2 and \
                n in trace_runs(cluster.trace)  # its worker is up
        wait_for(nodes, settled, timeout=20, message=f"round {r} decided")
        starts = trace_runs(cluster.trace).get(n, {})
        assert len(starts) == 1, (r, starts)
        winner, = [node for node in nodes if node.state(n) == tasks.ACTIVE]
        losers = [node for node in nodes if node is not winner]
        for node in losers:
            assert re.fullmatch(rf"{winner.name} until \d\d:\d\d", node.task(n).claimed_by), node.task(n)
        raced += all(f"gh-{n} not started here: gh-{n} is claimed by {winner.name}" in node.log_text()
                     for node in losers)
    print(f"\n20 rounds in {time.time() - t0:.1f} s; in {raced} of them all three took and the lease decided")
    assert raced >= 10  # the race was on the git server's lease, not decided by an earlier read
    time.sleep(1)
    assert all(len(r) == 1 for r in trace_runs(cluster.trace).values())  # nobody started later either
    for node in nodes:
        text = node.log_text()
        assert "startup error" not in text and "could not start" not in text
        m = json.loads((node.dir / "metrics.json").read_text())
        assert m["counters"]["startup_errors"] == 0 and m["breaker"]["state"] == "closed"


def branch_files(origin: Path, branch: str) -> List[str]:
    r = subprocess.run(["git", "--git-dir", str(origin), "ls-tree", "--name-only", f"refs/heads/{branch}"],
                       capture_output=True, text=True)
    return r.stdout.split() if r.returncode == 0 else []


def kill_node(node: Node, proc: subprocess.Popen) -> float:
    """kill -9 the coordinator and its workers; returns when they are all gone."""
    proc.send_signal(signal.SIGKILL)
    for pid in node.worker_pids():
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    wait_for([node], lambda: node.worker_pids() == [], timeout=10, message="its workers gone")
    return time.time()


def network_calls(log: Path) -> List[str]:
    lines = log.read_text().splitlines() if log.exists() else []
    return [ln for ln in lines if ln.split(" ", 1)[0] in ("ls-remote", "fetch", "push")]


FAILS = {"turns": 1, "exit": 1, "result": "error_during_execution", "sleep": 0.3}


def test_a_dead_nodes_claims_are_taken_over_once_they_expire_and_its_attempts_count(cluster, github, git_origin,
                                                                                     shim, tmp_path):
    """pi-a dies (kill -9, with its worker) holding two claims: issue n
    running, and issue m, whose worker always fails, waiting to retry after
    its first attempt (max_attempts 2). pi-b saw the claims while pi-a lived;
    pi-c starts after the death, reads the claims once, shows them in
    tasks.md and status.py, and reads nothing more (no git network call, no
    counted GitHub request) until they may have expired. Then each is taken
    over once: n completes once, and m gets the one attempt pi-a left it,
    not two more (the claim carries the count). pi-a, restarted, runs
    neither again and leaves the new owner's claim alone."""
    a, b, c = cluster(["pi-a", "pi-b", "pi-c"], workers={"max_attempts": 2, "retry_backoff": [1]})
    # pi-a's retry waits (it dies first); elsewhere a retry would come at once.
    a.write_config(workers={"max_concurrent": 2, "max_attempts": 2, "retry_backoff": [600]},
                   github={"poll_interval": 0.5})
    n = a.issue("Outlives the node that started it")
    m = a.issue("Fails every time")
    a.script({"default": {"commit": "pi-a.txt", "sleep": 600}, str(m): FAILS})
    for node in (b, c):
        node.script({"default": {"commit": f"{node.name}.txt", "sleep": 6}, str(m): FAILS})
    logs = {x.name: tmp_path / f"git-{x.name}.log" for x in (b, c)}
    for x in (b, c):
        x.env.update(PATH=f"{shim}{os.pathsep}{os.environ['PATH']}", TAC_GIT_LOG=str(logs[x.name]))
    pa = a.start()
    wait_for([a], lambda: (a.task(n) or tasks.Task(0, "")).pid and (claim_at(git_origin, n) or {}).get("node")
             and (a.task(m) or tasks.Task(0, "")).attempts == 1
             and own_worker(a.task(m).claimed_by, "pi-a") == (claim_at(git_origin, m) or {}).get("worker"),
             message="pi-a running n, and m waiting for its retry")
    assert claim_at(git_origin, m)["attempt"] == 1
    b.start()
    wait_for([b], lambda: all((b.task(i) or tasks.Task(0, "")).claimed_by.startswith("pi-a until ") for i in (n, m)),
             message="pi-b sees pi-a's claims")
    killed_at = kill_node(a, pa)
    expires = {i: claim_at(git_origin, i)["expires"] for i in (n, m)}

    c.start()
    wait_for([c], lambda: all((c.task(i) or tasks.Task(0, "")).claimed_by.startswith("pi-a until ") for i in (n, m)),
             message="pi-c shows the claims")
    quiet_from = time.time() + 0.5  # the read's own fetch of the claim commits may still be under way
    time.sleep(0.5)
    requests, calls = github.counted_requests(), len(network_calls(logs["pi-c"]))
    status = subprocess.run([sys.executable, str(ROOT / "tools" / "status.py"), "--json", "--config", str(c.config)],
                            capture_output=True, text=True)
    facts = json.loads(status.stdout)
    assert {"issue": n, "node": "pi-a", "expires": expires[n], "outcome": "", "here": False} in \
        facts["cluster"]["claims"] and facts["cluster"]["node"] == "pi-c"
    shown = subprocess.run([sys.executable, str(ROOT / "tools" / "status.py"), "--config", str(c.config)],
                           capture_output=True, text=True, env={**os.environ, "COLUMNS": "80"}).stdout
    assert "Cluster: this node pi-c · 0 claims here, 2 elsewhere" in shown
    assert re.search(rf"^#{n} +pi-a +until \d\d:\d\d", shown, re.M) and "on pi-a" in shown, shown
    while time.time() < min(expires.values()) - 0.5:
        time.sleep(0.2)
    quiet = time.time() - quiet_from
    assert network_calls(logs["pi-c"])[calls:] == [] and github.counted_requests() == requests, \
        network_calls(logs["pi-c"])
    assert [x.split(" ", 1)[0] for x in network_calls(logs["pi-c"])[:calls]].count("ls-remote") == 1
    print(f"\nidle {quiet:.1f} s with claims of a dead node in view: 0 git network calls, 0 counted requests")

    owner = wait_for([a, b, c], lambda: (claim_at(git_origin, n) or {}).get("node") in ("pi-b", "pi-c")
                     and claim_at(git_origin, n)["node"], timeout=3 * TTL, message="the claim taken over")
    wait_for([b, c], lambda: len(trace_runs(cluster.trace)[n]) == 2, message="its worker started")
    runs = trace_runs(cluster.trace)[n]
    (a_pid, a_run), = [(pid, r) for pid, r in runs.items() if r[0] < killed_at]
    (new_start, _), = [r for pid, r in runs.items() if pid != a_pid]
    assert new_start >= expires[n]  # not a moment before pi-a's lease ran out

    wait_for([a, b, c], lambda: (claim_at(git_origin, m) or {}).get("node") in ("pi-b", "pi-c") or told(github, m),
             timeout=3 * TTL, message="m's claim taken over")

    # pi-a comes back while the new owner still runs: it neither runs the issue
    # again, nor pushes what its killed worker committed, nor touches the claim.
    held = claim_refs(git_origin).get(f"refs/tac/claims/gh-{n}")
    a.start()
    wait_for([a], lambda: "claim lost" in a.log_text() and a.state(n) == tasks.PENDING, message="pi-a gives it up")
    assert claim_refs(git_origin).get(f"refs/tac/claims/gh-{n}") == held and claim_at(git_origin, n)["node"] == owner
    assert a.task(n).claimed_by.startswith(f"{owner} until ") or "claimed by" in a.task(n).reason
    wait_for([a, b, c], lambda: told(github, n) and told(github, m), timeout=30, message="both done and told")
    wait_for([a], lambda: a.task(n) is None and a.task(m) is None, message="both dropped from pi-a's queue")
    runs = trace_runs(cluster.trace)[n]
    runs[a_pid][1] = killed_at
    assert len(runs) == 2 and overlaps({n: runs}) == []
    assert [p["head"]["ref"] for p in github.pulls()] == [f"auto/gh-{n}"]
    assert sorted(branch_files(git_origin, f"auto/gh-{n}")) == ["README", f"{owner}.txt"]  # never pi-a's commit
    assert "pr opened" not in a.log_text() and len(finals(github, n)) == 1
    assert finals(github, n)[0].startswith(f"✅ Done on {owner}: ")
    # m: one run on pi-a, one on the node that took it over, never a third.
    m_runs = sorted(trace_runs(cluster.trace)[m].values())
    ended, = [x for x in (b, c) if x.state(m) == tasks.FAILED]
    assert len(m_runs) == 2 and m_runs[0][1] < killed_at and m_runs[1][0] >= expires[m], m_runs
    assert ended.task(m).attempts == 2 and "(attempt 2 of 2)" in ended.task(m).reason, ended.task(m)
    assert len(finals(github, m)) == 1 and finals(github, m)[0].startswith(f"❌ Failed on {ended.name}: ")


def test_a_node_cut_off_from_the_origin_stops_its_worker_before_the_claim_expires_and_never_pushes(
        cluster, github, git_origin):
    p, q = cluster(["pi-p", "pi-q"])
    p.script({"default": {"commit": "pi-p.txt", "sleep": 600}})
    q.script({"default": {"commit": "pi-q.txt", "sleep": 1}})
    n = p.issue("Started just before the network went")
    p.start()
    wait_for([p], lambda: (p.task(n) or tasks.Task(0, "")).pid, message="pi-p running it")
    q.start()
    wait_for([q], lambda: (q.task(n) or tasks.Task(0, "")).claimed_by.startswith("pi-p until "),
             message="pi-q sees pi-p's claim")
    url = subprocess.run(["git", "-C", str(p.clone), "remote", "get-url", "origin"], capture_output=True,
                         text=True, check=True).stdout.strip()
    subprocess.run(["git", "-C", str(p.clone), "remote", "set-url", "origin", str(p.dir / "nowhere.git")], check=True)
    cut_at = time.time()
    # Its renewals fail; it stops the worker a third of the lease before the claim expires.
    wait_for([p], lambda: all(end < float("inf") for end in trace_runs(cluster.trace)[n].values() for end in end[1:]),
             timeout=2 * TTL, message="pi-p's worker stopped")
    (p_start, p_end), = trace_runs(cluster.trace)[n].values()
    last = claim_at(git_origin, n)
    assert last["node"] == "pi-p" and p_end < last["expires"] and p_end - cut_at < TTL
    assert "stopping pid=" in p.log_text() and "claim not renewed" in p.log_text()
    wait_for([q], lambda: (claim_at(git_origin, n) or {}).get("node") == "pi-q", timeout=2 * TTL,
             message="pi-q takes the claim over")
    subprocess.run(["git", "-C", str(p.clone), "remote", "set-url", "origin", url], check=True)  # the network is back
    wait_for([p, q], lambda: told(github, n), timeout=30, message="done and told")
    wait_for([p], lambda: "claim lost" in p.log_text() and p.state(n) != tasks.ACTIVE, timeout=15,
             message="pi-p learns the claim is gone")
    runs = trace_runs(cluster.trace)[n]
    assert len(runs) == 2 and overlaps({n: runs}) == []
    assert min(start for start, _ in runs.values() if start != p_start) >= last["expires"]
    assert [pr["head"]["ref"] for pr in github.pulls()] == [f"auto/gh-{n}"]
    assert sorted(branch_files(git_origin, f"auto/gh-{n}")) == ["README", "pi-q.txt"]
    assert "pr opened" not in p.log_text()
    assert finals(github, n)[0].startswith("✅ Done on pi-q: ")


# -- chaos -------------------------------------------------------------------------------------------

CHAOS_KINDS = {
    # kind: (script for the issue, the state it must end in, how many runs)
    "pr": (lambda n, r: {"commit": f"f{n}.txt", "sleep": r.uniform(0.3, 2.5)}, tasks.COMPLETED, 1),
    "blocked": (lambda n, r: {"blocked": "Needs a decision", "sleep": r.uniform(0.3, 1.5)}, tasks.BLOCKED, 1),
    "retry": (lambda n, r: {"attempts": [
        {"turns": 1, "exit": 1, "result": "error_during_execution", "sleep": r.uniform(0.3, 1.5)},
        {"commit": f"f{n}.txt", "sleep": r.uniform(0.3, 1.5)}]}, tasks.COMPLETED, 2),
    "fail": (lambda n, r: {"turns": 1, "exit": 1, "result": "error_during_execution",
                           "sleep": r.uniform(0.3, 1.0)}, tasks.FAILED, 2),
}


@pytest.mark.slow
def test_chaos_kill_9_across_three_nodes_never_two_workers_for_one_issue(cluster, github, git_origin):
    seed = int(os.environ.get("TAC_CHAOS_SEED") or random.SystemRandom().randrange(1_000_000))
    print(f"\ncluster chaos seed {seed} (replay its choices with TAC_CHAOS_SEED={seed})")
    rnd = random.Random(seed)
    # Coordinators are killed, their workers run on and are adopted again: the
    # lease must outlive a restart on a loaded machine.
    nodes = cluster(["pi-a", "pi-b", "pi-c"], cluster={"lease_ttl": 20},
                    workers={"max_attempts": 2, "failure_threshold": 0, "retry_backoff": [1]})
    kinds = ["pr"] * 3 + ["blocked"] + ["retry"] * 2 + ["fail"] * 2  # every outcome; the retrying kinds twice
    rnd.shuffle(kinds)
    script: Dict[str, dict] = {}
    expect: Dict[int, tuple] = {}
    for kind in kinds:
        n = nodes[0].issue(f"chaos {kind}")
        make, state, count = CHAOS_KINDS[kind]
        script[str(n)] = make(n, rnd)
        expect[n] = (state, count)
    for node in nodes:
        node.script(script)
    watcher = Watcher(nodes[0])
    watcher.trace_path = cluster.trace  # every node's runs
    procs = {node.name: node.start() for node in nodes}
    kills: Dict[str, int] = {}
    t0 = time.time()
    try:
        while time.time() - t0 < 20 and not all(any(x.state(n) in tasks.TERMINAL for x in nodes) for n in expect):
            node = rnd.choice(nodes)
            time.sleep(rnd.uniform(0.2, 1.5))
            procs[node.name].send_signal(signal.SIGKILL)
            procs[node.name].wait()
            kills[node.name] = kills.get(node.name, 0) + 1
            time.sleep(rnd.uniform(0, 0.3))
            procs[node.name] = node.start()
        chaos_time = time.time() - t0
        # Left alone now, the cluster must finish everything by itself.
        wait_for(nodes, lambda: all(told(github, n) for n in expect), timeout=60, message="every issue told")
        time.sleep(1.5)  # a few idle ticks: nothing may happen twice after the end
    finally:
        watcher.stop()
    runs = watcher.runs()
    print(f"cluster chaos: {sum(kills.values())} kills in {chaos_time:.0f} s {kills}; {len(expect)} issues, "
          f"{sum(len(r) for r in runs.values())} worker runs")
    assert overlaps(runs) == []  # never two live workers for one issue, on any nodes
    assert all(end < float("inf") for r in runs.values() for _, end in r.values())
    pulls = github.pulls()
    for n, (state, count) in expect.items():
        ended = [x for x in nodes if x.state(n) in tasks.TERMINAL]
        assert len(ended) == 1, (n, [(x.name, x.task(n)) for x in nodes])  # ended on one node, nothing lost
        t = ended[0].task(n)
        assert t.state == state and len(runs.get(n, {})) == count, (n, t, runs.get(n))  # nothing run twice
        mine = [p for p in pulls if re.fullmatch(rf"auto/gh-{n}(-\d+)?", p["head"]["ref"])]
        assert len(mine) == (1 if state == tasks.COMPLETED else 0), (n, mine)
        assert len(finals(github, n)) == 1, (n, github.comments(n))  # told once
        assert f" on {ended[0].name}" in finals(github, n)[0].split("\n")[0]
    for node in nodes:
        assert procs[node.name].poll() is None
        log = node.log_text()
        assert "leftover process" not in log and "claim lost" not in log and "is not this coordinator" not in log
    assert watcher.problems == []


def test_check_says_whether_the_remote_accepts_claim_refs(cluster, git_origin):
    a, = cluster(["pi-a"])
    out = a.run("--check").stdout
    assert "✓ claim refs accepted by origin under refs/tac/claims/" in out and "✓ cluster node pi-a" in out
    assert re.search(r"^[✓✗?] clock ", out, re.M)
    assert claim_refs(git_origin) == {}  # the probe is gone again
    hook = git_origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\nwhile read old new ref; do case $ref in refs/tac/*) echo \"refusing $ref\" >&2; "
                    "exit 1;; esac; done\n")
    hook.chmod(0o755)
    r = a.run("--check")
    assert r.returncode == 1
    line = next(ln for ln in r.stdout.splitlines() if "claim refs" in ln)
    assert line.startswith("✗ claim refs: ") and "claim_ref_prefix" in line and "refusing refs/tac/claims/probe-pi-a" in line
