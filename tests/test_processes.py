"""Supervision against real processes and signals.

Two kinds of test: the daemon's own signal wiring installed in this process
(Daemon.install, as main() does) with real children, and the real daemon as
a subprocess (tests/harness.py: fake GitHub through the real gh, real git,
adws/sandbox/scripted_worker.py as the worker) being signalled, stopped, restarted
and starved. Time bounds are generous ("within 5 s") and only for what the
spec promises.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from harness import ROOT, Project, lasting_zombies, trace_runs, zombies_of
from adws import coordinator as co
from adws import tasks
from adws.transcript import RunSummary

STOP_WORKER = ROOT / "tools" / "stop_worker.sh"


def started(project: Project, p: subprocess.Popen) -> None:
    """Wait until the daemon is in its loop: the first status line is
    published after the signal handlers are installed."""
    project.wait_for(lambda: "status: " in project.log_text() or p.poll() is not None, message="first tick")
    assert p.poll() is None, project.log_text()


def status(project: Project) -> str:
    return project.tasks().status


def worker_of(project: Project, n: int) -> Tuple[str, int]:
    """(worker id, pid) of issue n's Active entry once its PID is recorded."""
    def look():
        t = project.task(n)
        return (t.worker, t.pid) if t and t.state == tasks.ACTIVE and t.pid else None
    return project.wait_for(look, message=f"gh-{n} running")


def runs_of(project: Project, n: int) -> Dict[int, List[float]]:
    return trace_runs(project.dir / "trace.txt").get(n, {})


def attempts_logged(project: Project, n: int) -> int:
    path = project.dir / "logs" / f"gh-{n}.jsonl"
    return path.read_text().count('"subtype": "attempt"') if path.exists() else 0


class LogClock:
    """Timestamps each new coordinator log line as it appears (the log's own
    timestamps have one-second resolution)."""

    def __init__(self, path: Path):
        self.path = path
        self.lines: List[Tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        offset, partial = 0, b""
        while not self._stop.is_set():
            try:
                with open(self.path, "rb") as f:
                    f.seek(offset)
                    data = f.read()
            except OSError:
                data = b""
            now = time.time()
            if data:
                offset += len(data)
                chunk = partial + data
                *complete, partial = chunk.split(b"\n")
                self.lines += [(now, line.decode("utf-8", "replace")) for line in complete]
            time.sleep(0.01)

    def first(self, pattern: str) -> float:
        for at, line in self.lines:
            if re.search(pattern, line):
                return at
        raise AssertionError(f"no log line matches {pattern!r}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# ===========================================================================
# The daemon's signal wiring, in this process
# ===========================================================================

@pytest.fixture
def wiring(tmp_path):
    """A Daemon around a real Coordinator with its handlers installed here,
    as Daemon.run installs them; everything is put back afterwards."""
    cfg_path = tmp_path / "config.toml"
    cfg_path.write_text('[github]\nrepo = "acme/widgets"\n[workers]\nmax_concurrent = 50\n')
    cfg = co.load_config(cfg_path)
    cfg = dataclasses.replace(cfg, tasks_path=tmp_path / "tasks.md", logs=tmp_path / "logs", trees=tmp_path / "trees")
    c = co.Coordinator(cfg, co.GitHub(cfg.repo), environ={})
    daemon = co.Daemon(c, cfg_path)
    sigs = (signal.SIGCHLD, signal.SIGUSR1, signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
    saved = {s: signal.getsignal(s) for s in sigs}
    old_fd = signal.set_wakeup_fd(-1)
    r, w = daemon.install()
    try:
        yield daemon, r
    finally:
        signal.set_wakeup_fd(old_fd)
        for s, handler in saved.items():
            signal.signal(s, handler)
        os.close(r)
        os.close(w)


class Follower:
    """A follower with nothing to read: these workers print nothing."""
    summary = RunSummary()

    def poll(self) -> list:
        return []

    def catch_up(self) -> RunSummary:
        return self.summary


def real_worker(tmp_path: Path, n: int, popen: subprocess.Popen) -> co.Worker:
    return co.Worker(issue=n, worker_id=f"w-{n:06d}", attempt=1, branch=f"auto/gh-{n}", tree=tmp_path,
                     log_path=tmp_path / "none.jsonl", stderr_path=tmp_path / "none.err", stderr_offset=0,
                     pid=popen.pid, pid_start=co.proc_start_time(popen.pid), started_at=time.time(),
                     follower=Follower(), popen=popen, last_output_at=time.time())


def test_sigchld_handler_never_steals_an_exit_status(wiring, tmp_path):
    """200 subprocess.run calls exit 3 while 40 workers exit with their own
    codes and are reaped by Coordinator.reap: every code is the real one.
    The check has teeth: with a SIGCHLD handler reaping by waitpid(-1)
    instead, 21 of 200 such calls reported 0 on this machine (NOTES.md saw
    137 of 200)."""
    daemon, _ = wiring
    c = daemon.c
    expected: Dict[int, int] = {}
    codes = []
    for i in range(200):
        if i % 5 == 0 and len(expected) < 40:
            n = len(expected) + 1
            code = 10 + n % 50
            p = subprocess.Popen(["sh", "-c", f"sleep 0.0{n % 10}; exit {code}"], start_new_session=True)
            c.workers[n] = real_worker(tmp_path, n, p)
            expected[n] = code
        codes.append(subprocess.run(["sh", "-c", "exit 3"]).returncode)
        c.reap(time.time())
    deadline = time.time() + 10
    while c.live_workers() and time.time() < deadline:
        c.reap(time.time())
        time.sleep(0.01)
    assert codes == [3] * 200
    assert {n: w.returncode for n, w in c.workers.items()} == expected
    assert all(w.state == co.EXITED for w in c.workers.values())
    assert signal.SIGCHLD in daemon.signals  # the handler did run, and only recorded
    assert not set(zombies_of(os.getpid())) & {w.pid for w in c.workers.values()}  # each one reaped


# The real daemon with its loop tick made long on purpose: Daemon.run and
# main() as they are, only Coordinator.next_wake answers a fixed number
# (unless a job's result waits: see the test of Jobs.finished below).
LONG_TICK_DRIVER = """\
import os, sys
sys.path.insert(0, {root!r})
from adws import coordinator as co
tick = float(os.environ["TAC_TEST_TICK"])
short = co.Coordinator.next_wake  # kept only for a job that ended during the tick (its wake-up was drained)
co.Coordinator.next_wake = lambda self, now: short(self, now) if self.jobs.finished() else tick
sys.exit(co.main(sys.argv[1:]))
"""


def start_with_long_tick(project: Project, tick: float) -> subprocess.Popen:
    driver = project.dir / "long_tick.py"
    driver.write_text(LONG_TICK_DRIVER.format(root=str(ROOT)))
    env = dict(project.env, TAC_TEST_TICK=str(tick))
    log = open(project.dir / "coordinator.log", "ab")
    p = subprocess.Popen([sys.executable, str(driver), "--config", str(project.config)], env=env,
                         stdout=log, stderr=subprocess.STDOUT)
    project.procs.append(p)
    return p


def test_sigchld_wakes_the_real_loop_at_once_with_a_long_tick(project, github):
    """A worker's exit wakes Daemon.run through the wake-up pipe: it is
    reaped and finished at once, not at the next tick. The tick is 30 s
    here, so "at once" (well under a second) and "at the tick" (up to 30 s)
    cannot be confused however loaded the machine is."""
    n = project.issue("Quick one")
    project.script({"default": {"commit": "x.txt", "sleep": 1.5}})
    clock = LogClock(project.dir / "coordinator.log")
    try:
        p = start_with_long_tick(project, 30.0)
        project.wait_for(lambda: runs_of(project, n) and all(e < float("inf") for _, e in runs_of(project, n).values()),
                         timeout=20, message="the worker ran and ended")
        (start, end), = runs_of(project, n).values()
        project.wait_for(lambda: any(f"gh-{n} exited pid=" in line for _, line in clock.lines), timeout=10,
                         message="the exit noticed long before the 30 s tick")
        lag = clock.first(rf"gh-{n} exited pid=") - end
        print(f"worker end to reap: {lag:.3f} s (tick 30 s)")
        assert lag < 5, lag
        project.wait_for(lambda: project.state(n) == tasks.COMPLETED, timeout=10, message="completed at once")
        assert p.poll() is None
    finally:
        clock.stop()


def test_a_job_that_ends_before_the_loop_drains_the_pipe_is_applied_at_once(wiring):
    """Daemon.run drains the wake-up pipe after each tick (the tick's own
    gh and git calls sent SIGCHLDs). A job that ended after the tick took
    the results in but before that drain had its byte drained with theirs:
    next_wake must see the result waiting and answer a short sleep, not the
    poll interval, or a finished start, poll or claim waits up to a minute."""
    daemon, r = wiring
    c = daemon.c
    jobs = co.Jobs(1, guard=c.guarded)
    jobs.wake_fd = c.jobs.wake_fd
    c.jobs = jobs
    c.next_poll_at = time.time() + 600
    assert c.next_wake(time.time()) == 60  # idle: the longest sleep
    applied: List[object] = []
    jobs.submit(("poll",), lambda: 42, lambda result, error: applied.append(result))
    assert select.select([r], [], [], 10)[0], "the job ended and wrote its byte"
    daemon.drain(r)  # as Daemon.run does after a tick: the job's byte went with the SIGCHLDs
    assert not select.select([r], [], [], 0)[0]
    assert c.next_wake(time.time()) <= 0.05
    jobs.apply()
    assert applied == [42] and c.next_wake(time.time()) == 60
    # The same for what a job asked the loop to do.
    done = threading.Event()
    threading.Thread(target=lambda: (jobs.on_loop(applied.append, 43), done.set())).start()
    assert done.wait(10)
    daemon.drain(r)
    assert c.next_wake(time.time()) <= 0.05
    jobs.apply()
    assert applied == [42, 43] and c.next_wake(time.time()) == 60


def test_signal_handlers_only_record_and_the_loop_acts(wiring):
    daemon, _ = wiring
    daemon.signals.clear()
    os.kill(os.getpid(), signal.SIGUSR1)
    recorded = [s for s in daemon.signals if s != signal.SIGCHLD]  # a stray child may end meanwhile
    assert recorded == [signal.SIGUSR1] and not daemon.c.gates.paused_by_signal  # nothing done yet
    daemon.handle_signals()
    assert daemon.c.gates.paused_by_signal and daemon.c.spawn_block(time.time()) == "paused by SIGUSR1"
    os.kill(os.getpid(), signal.SIGUSR1)
    daemon.handle_signals()
    assert not daemon.c.gates.paused_by_signal
    os.kill(os.getpid(), signal.SIGTERM)
    assert not daemon.stop
    daemon.handle_signals()
    assert daemon.stop


# ===========================================================================
# The real daemon
# ===========================================================================

def test_many_workers_and_failing_calls_side_by_side(project, github):
    """max_concurrent 4, eight quick issues (four succeed, four exit 3, 5, 7,
    9), while this test runs failing commands and failing gh calls and the
    fake GitHub drops some of the daemon's requests: every exit code is
    reported right, every exit is acted on at once, and no zombie is left."""
    project.write_config(workers={"max_concurrent": 4, "max_attempts": 1})
    ok = [project.issue(f"works {i}") for i in range(4)]
    bad = [project.issue(f"fails {i}") for i in range(4)]
    script = {str(n): {"commit": f"f{n}.txt", "sleep": 0.3 * (i % 3)} for i, n in enumerate(ok)}
    for code, n in zip((3, 5, 7, 9), bad):
        script[str(n)] = {"turns": 1, "exit": code, "result": "error_during_execution", "sleep": 0.2}
    project.script(script)
    clock = LogClock(project.dir / "coordinator.log")
    daemon = project.start()
    noise: Dict[str, List[int]] = {"sh": [], "gh": [], "git": []}

    def make_noise() -> None:
        for i in range(120):
            noise["sh"].append(subprocess.run(["sh", "-c", "exit 3"]).returncode)
            if i % 6 == 0:
                noise["gh"].append(subprocess.run(["gh", "api", "repos/acme/widgets/issues/99999"],
                                                  env=project.env, capture_output=True).returncode)
            if i % 6 == 3:
                noise["git"].append(subprocess.run(["git", "-C", str(project.clone), "rev-parse", "--verify", "-q",
                                                    "refs/heads/no-such-branch"], capture_output=True).returncode)
            if i == 30:
                github.fail_next(4, 502)  # whoever asks next, the daemon included
            time.sleep(0.02)

    noisy = threading.Thread(target=make_noise)
    noisy.start()
    try:
        for n in ok + bad:
            project.wait_for(lambda: project.state(n) in tasks.TERMINAL, timeout=60, message=f"gh-{n} ended")
        noisy.join()
        for n in ok + bad:
            project.wait_for(lambda: github.issue_labels(n) and "rpi-auto" not in github.issue_labels(n),
                             message=f"gh-{n} told")
    finally:
        noisy.join()
        clock.stop()
    assert noise["sh"] == [3] * 120
    assert noise["gh"] == [1] * 20  # 404 (or an injected 502): gh exits 1 either way
    assert noise["git"] == [1] * 20
    for n in ok:
        assert project.state(n) == tasks.COMPLETED
    for code, n in zip((3, 5, 7, 9), bad):
        t = project.task(n)
        assert t.state == tasks.FAILED and t.attempts == 1
        assert t.reason == f"worker exited without commits (exit status {code}, result error_during_execution)"
    assert len(github.pulls()) == 4
    assert lasting_zombies(daemon.pid) == []
    assert project.worker_pids() == []
    # From the worker's last breath to the daemon's "exited" line.
    lags = []
    for n in ok + bad:
        (start, end), = runs_of(project, n).values()
        lags.append(clock.first(rf"gh-{n} exited pid=") - end)
    print(f"exit-to-reap latency: max {max(lags):.3f} s, mean {sum(lags) / len(lags):.3f} s", [round(x, 3) for x in lags])
    assert max(lags) < 2.0, lags  # the spec says within a second; 2 s leaves room for a loaded CI box
    # At most four at once, all eight ran exactly once.
    spans = sorted(s for n in ok + bad for s in runs_of(project, n).values())
    assert len(spans) == 8
    assert max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans) <= 4


def test_timeout_stops_a_worker_that_ignores_sigterm_and_its_escaped_children(project, github):
    project.write_config(workers={"timeout": 2, "stop_grace": 0.5, "max_attempts": 1})
    n = project.issue("Hang and hide")
    project.script({"default": {"ignore_sigterm": True, "children": 2, "turns": 1, "sleep": 600}})
    project.start()
    wid, pid = worker_of(project, n)
    project.wait_for(lambda: len(co.processes_tagged(wid)) >= 3, message="worker and its two children")
    # The children are in sessions of their own: outside the worker's group.
    assert {os.getsid(p) for p in co.processes_tagged(wid)} - {pid}
    project.wait_for(lambda: project.state(n) == tasks.FAILED, timeout=15, message="failed")
    assert project.task(n).reason == "worker exited without commits (timed out after 2 s)"
    assert co.processes_tagged(wid) == [] and project.worker_pids() == []
    assert not co.process_alive(pid, None)
    log = project.log_text()
    assert f"gh-{n} stopping pid={pid}: timed out after 2 s" in log
    assert f"gh-{n} exited pid={pid} terminated by SIGKILL" in log  # SIGINT and SIGTERM were ignored
    # The two children at least (the worker itself too, if SIGKILL had not landed yet).
    assert re.search(rf"gh-{n} killed [23] leftover process\(es\) of {wid}", log)
    project.wait_for(lambda: "tac:failed" in github.issue_labels(n), message="tac:failed")


def sleeps(seconds: str) -> List[int]:
    """Live `sleep <seconds>` processes anywhere on the machine."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[:2] == \
                    [b"sleep", seconds.encode()] and Path(f"/proc/{entry}/stat").read_text().split(") ")[1][0] != "Z":
                found.append(int(entry))
        except (OSError, IndexError):
            continue
    return found


def test_a_child_that_sheds_the_workers_environment_group_and_session_does_not_outlive_it(project, github):
    """`env -i setsid sleep`, started by a worker that then exits: no tag, no
    group, no session to find it by. As the subreaper the coordinator gets it
    back when the worker ends, kills it, and reaps it by its PID."""
    seconds = f"{random.randint(3000, 3999)}.5"  # this test's own sleep, told apart from any other
    n = project.issue("Start a daemon of my own")
    project.script({"default": {"escape": seconds, "commit": "x.txt", "sleep": 1}})
    p = project.start()
    project.wait_for(lambda: sleeps(seconds), message="the escaped child runs")
    (child,) = sleeps(seconds)
    assert Path(f"/proc/{child}/environ").read_bytes() == b""  # nothing to tag it by
    project.wait_for(lambda: project.state(n) == tasks.COMPLETED, timeout=30, message="completed")
    project.wait_for(lambda: not sleeps(seconds), timeout=10, message="the escaped child gone")
    assert lasting_zombies(p.pid) == []
    assert re.search(rf"gh-{n} killed 1 leftover process\(es\)", project.log_text())


@pytest.mark.parametrize("workers, script, reason", [
    ({"stall_timeout": 1.5}, {"turns": 1, "sleep": 600}, "stalled: no output for 2 s"),
    ({"result_exit_grace": 1}, {"turns": 1, "after_result_sleep": 600}, "did not exit 1 s after its result"),
])
def test_stall_and_hang_after_result_are_stopped(project, workers, script, reason):
    project.write_config(workers=dict(workers, max_attempts=1, stop_grace=0.5))
    n = project.issue("Go quiet")
    project.script({"default": script})
    project.start()
    wid, pid = worker_of(project, n)
    project.wait_for(lambda: project.state(n) == tasks.FAILED, timeout=15, message="failed")
    assert project.task(n).reason == f"worker exited without commits ({reason})"
    # A worker that heeds SIGINT ends at the first signal.
    assert f"gh-{n} exited pid={pid} terminated by SIGINT" in project.log_text()
    assert co.processes_tagged(wid) == []


def test_stop_worker_script_stops_it_keeps_the_worktree_and_fails_the_task(project, github):
    n = project.issue("Too slow")
    project.script({"default": {"turns": 1, "commit": "wip.txt", "sleep": 600}})
    project.start()
    wid, pid = worker_of(project, n)
    tree = project.dir / "trees" / f"gh-{n}"
    project.wait_for(lambda: (tree / "wip.txt").exists(), message="its commit made")  # a loaded machine is slow
    t0 = time.time()
    r = subprocess.run(["sh", str(STOP_WORKER), "--config", str(project.config), str(n)],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith(f"stop requested for gh-{n}: created {tree}/STOP")
    project.wait_for(lambda: project.state(n) == tasks.FAILED, timeout=10, message="failed")
    took = time.time() - t0
    print(f"STOP file to Failed: {took:.2f} s")
    assert took < 5
    t = project.task(n)
    assert t.reason == co.STOP_BY_USER and t.next_attempt == ""  # no retry
    assert (tree / "wip.txt").exists()  # the worktree and its commit are kept
    assert github.pulls() == []  # the commits do not become a PR
    assert co.processes_tagged(wid) == []
    project.wait_for(lambda: "tac:failed" in github.issue_labels(n), message="tac:failed")
    assert "stopped by user" in github.comments(n)[-1]["body"]


def test_stop_worker_script_refuses_what_is_not_there(project):
    r = subprocess.run(["sh", str(STOP_WORKER), "-c", str(project.config), "gh-42"], capture_output=True, text=True)
    assert r.returncode == 1 and "no worktree for gh-42" in r.stderr
    for bad in ([], ["12;touch x"], ["1", "2"], ["--bogus", "1"]):
        r = subprocess.run(["sh", str(STOP_WORKER), "-c", str(project.config), *bad], capture_output=True, text=True)
        assert r.returncode == 2 and "usage:" in r.stderr, bad
    r = subprocess.run(["sh", str(STOP_WORKER), "-c", str(project.dir / "nope.toml"), "1"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "config not found" in r.stderr
    # [paths] trees is read from the config, relative to the config's folder.
    project.config.write_text(project.config.read_text() + '[paths]\ntrees = "elsewhere"  # a comment\n')
    (project.dir / "elsewhere" / "gh-5").mkdir(parents=True)
    r = subprocess.run(["sh", str(STOP_WORKER), "-c", str(project.config), "5"], capture_output=True, text=True)
    assert r.returncode == 0 and (project.dir / "elsewhere" / "gh-5" / "STOP").exists()


def test_sigusr1_toggles_pause_and_running_workers_go_on(project):
    a = project.issue("Long one")
    project.script({"default": {"commit": "x.txt"}, str(a): {"commit": "a.txt", "sleep": 3}})
    p = project.start()
    started(project, p)
    worker_of(project, a)
    p.send_signal(signal.SIGUSR1)
    project.wait_for(lambda: status(project).startswith("paused by SIGUSR1"), message="paused status")
    assert "spawning paused by SIGUSR1" in project.log_text()
    b = project.issue("Waits")
    project.wait_for(lambda: project.state(b) == tasks.PENDING, message="b queued")
    project.wait_for(lambda: project.state(a) == tasks.COMPLETED, message="a finished while paused")
    time.sleep(1.5)  # a few more ticks
    assert project.state(b) == tasks.PENDING and runs_of(project, b) == {}
    p.send_signal(signal.SIGUSR1)
    project.wait_for(lambda: project.state(b) == tasks.COMPLETED, message="b ran after resume")
    assert "spawning resumed by SIGUSR1" in project.log_text()
    assert not status(project).startswith("paused")


def test_pause_file_beside_tasks_md_holds_spawning(project):
    pause = project.dir / "PAUSE"
    pause.write_text("")
    n = project.issue("Not yet")
    p = project.start()
    started(project, p)
    project.wait_for(lambda: project.state(n) == tasks.PENDING, message="queued")
    project.wait_for(lambda: status(project).startswith("paused by PAUSE file"), message="paused status")
    assert "status: paused by PAUSE file" in project.log_text()
    time.sleep(1.5)
    assert runs_of(project, n) == {}
    pause.unlink()
    project.wait_for(lambda: project.state(n) == tasks.COMPLETED, message="ran after PAUSE removed")
    assert "status: running" in project.log_text()


def test_sigterm_leaves_workers_running_and_a_restart_readopts_them(project, github):
    n = project.issue("Outlive the daemon")
    project.script({"default": {"commit": "x.txt", "sleep": 4}})
    p = project.start()
    wid, pid = worker_of(project, n)
    start = co.proc_start_time(pid)
    t0 = time.time()
    p.send_signal(signal.SIGTERM)
    assert p.wait(5) == 0
    print(f"SIGTERM to exit: {time.time() - t0:.2f} s")
    assert co.process_alive(pid, start)  # the worker carries on
    assert "SIGTERM received: exiting, 1 worker(s) left running" in project.log_text()
    stopped = tasks.load(project.dir / "tasks.md")[0].status
    assert re.fullmatch(r"stopped at \d\d:\d\d · 1 worker\(s\) left running", stopped), stopped
    project.start()
    project.wait_for(lambda: f"gh-{n} re-adopted pid={pid}" in project.log_text(), message="re-adopted")
    project.wait_for(lambda: project.state(n) == tasks.COMPLETED, message="completed")
    assert list(runs_of(project, n)) == [pid]  # never a second worker
    assert attempts_logged(project, n) == 1
    assert len(github.pulls()) == 1
    assert project.task(n).pr == github.pulls()[0]["html_url"]


def test_a_worker_that_finished_while_the_daemon_was_down_is_finished_from_evidence(project, github):
    n = project.issue("Finish alone")
    project.script({"default": {"commit": "x.txt", "sleep": 1}})
    p = project.start()
    wid, pid = worker_of(project, n)
    p.kill()  # no goodbye at all
    p.wait()
    project.wait_for(lambda: runs_of(project, n).get(pid, [0, float("inf")])[1] < float("inf"),
                     message="worker done")
    assert project.state(n) == tasks.ACTIVE
    project.start()
    project.wait_for(lambda: project.state(n) == tasks.COMPLETED, message="completed")
    assert f"gh-{n} worker gone while we were down (pid={pid})" in project.log_text()
    assert list(runs_of(project, n)) == [pid] and len(github.pulls()) == 1


def test_second_coordinator_exits_at_once_naming_the_holder(project):
    p = project.start()
    started(project, p)
    t0 = time.time()
    r = project.run(timeout=20)
    took = time.time() - t0
    assert r.returncode == 1
    assert f"another coordinator (pid {p.pid}) is already running" in r.stderr
    assert took < 5, took
    assert p.poll() is None  # the first one is untouched


def test_memory_guard_starts_nothing_and_says_why(project):
    project.write_config(workers={"min_free_memory_mb": 10 ** 8})
    n = project.issue("Needs memory")
    p = project.start()
    started(project, p)
    project.wait_for(lambda: "below min_free_memory_mb 100000000" in project.log_text(), message="memory line")
    assert re.search(r"not spawning: \d+ MB available, below min_free_memory_mb 100000000", project.log_text())
    time.sleep(1)
    assert project.state(n) == tasks.PENDING and runs_of(project, n) == {} and project.worker_pids() == []


def test_github_outage_is_unknown_nothing_is_dropped_and_it_recovers_by_itself(project, github):
    a = project.issue("Finishes during the outage")
    project.script({"default": {"commit": "x.txt"}, str(a): {"commit": "a.txt", "sleep": 2}})
    p = project.start()
    wid, pid = worker_of(project, a)
    github.set_outage(503)
    github.reset_requests()
    t0 = time.time()
    project.wait_for(lambda: re.search(r"github: unreachable since \d\d:\d\d", status(project)), message="status")
    project.wait_for(lambda: runs_of(project, a)[pid][1] < float("inf"), message="worker done")
    time.sleep(max(0.0, t0 + 6 - time.time()))  # ticks pass; without GitHub's evidence nothing is decided
    assert project.state(a) == tasks.ACTIVE
    assert github.pulls() == []
    # Polling backs off: with poll_interval 1, six seconds of outage cost
    # 2 + 4 s of waiting, i.e. three polls, not six (jitter is +-20 %).
    polls = [r for r in github.requests if r.method == "GET" and r.path.endswith("/issues")]
    assert 1 <= len(polls) <= 4, len(polls)
    github.set_outage(None)
    project.wait_for(lambda: project.state(a) == tasks.COMPLETED, timeout=30, message="finished after the outage")
    project.wait_for(lambda: "github: unreachable" not in status(project), timeout=30, message="status clear")
    assert "github: reachable again after" in project.log_text()
    # Other kinds of "unknown": bad credentials for a while, then a spent rate limit.
    b = project.issue("Queued after")
    github.fail_next(1, 401)
    project.wait_for(lambda: project.state(b) == tasks.COMPLETED, timeout=40, message="b completed after a 401")
    github.set_rate_limit(0, int(time.time()) + 2)
    c = project.issue("Queued while rate limited")
    project.wait_for(lambda: "rate limit exhausted until" in project.log_text(), timeout=20, message="rate limit")
    project.wait_for(lambda: project.state(c) == tasks.COMPLETED, timeout=40, message="c after the reset")
    assert p.poll() is None
    assert len(github.pulls()) == 3


def test_a_failed_run_is_retried_on_schedule_across_a_restart(project, github):
    project.write_config(workers={"retry_backoff": [4], "max_attempts": 2})
    n = project.issue("Second time lucky")
    project.script({"default": {"attempts": [{"turns": 1, "exit": 1, "result": "error_during_execution"},
                                             {"commit": "x.txt"}]}})
    p = project.start()
    project.wait_for(lambda: project.state(n) == tasks.PENDING and project.task(n).attempts == 1, message="retry due")
    due = tasks.parse_time(project.task(n).next_attempt)
    p.send_signal(signal.SIGTERM)
    assert p.wait(5) == 0
    project.start()  # at once: the backoff lives in tasks.md, not in the process that died
    project.wait_for(lambda: project.state(n) == tasks.COMPLETED, timeout=30, message="completed")
    first, second = sorted(runs_of(project, n).values())
    assert second[0] >= due  # not a moment early
    t = project.task(n)
    assert t.attempts == 2 and t.branch == f"auto/gh-{n}-2"
    assert attempts_logged(project, n) == 2 and len(github.pulls()) == 1


def test_a_retry_killed_before_its_pid_was_written_is_judged_on_its_own_branch(project, github):
    """kill -9 after a retry's worker started and before the write of its
    PID and branch: tasks.md still names the first run's branch. Finished
    from its evidence after the restart, the run is judged by the commits
    on the branch its worktree has out (auto/gh-N-2), which become the pull
    request, not "exited without commits" (found by the chaos test)."""
    n = project.issue("Killed before the write")
    tree = project.dir / "trees" / f"gh-{n}"

    def git(cwd, *args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=cwd, check=True,
                       capture_output=True)
    git(project.clone, "branch", f"auto/gh-{n}")  # the first run's, which failed without commits
    git(project.clone, "worktree", "add", "-q", "-b", f"auto/gh-{n}-2", str(tree), "origin/main")
    (tree / "fix.txt").write_text("fixed\n")
    git(tree, "add", "fix.txt")
    git(tree, "commit", "-qm", f"Fix #{n}")
    log = project.dir / "logs" / f"gh-{n}.jsonl"
    log.parent.mkdir(exist_ok=True)
    log.write_text(json.dumps({"type": "tac", "subtype": "attempt", "issue": n, "attempt": 2, "worker": "w-abcdef"})
                   + "\n" + json.dumps({"type": "result", "subtype": "success", "is_error": False, "num_turns": 1,
                                        "total_cost_usd": 0.01, "result": "Done."}) + "\n")
    (project.dir / "tasks.md").write_text(
        f"## Active\n[🟡 w-abcdef] gh-{n}: Killed before the write {{p2}}\n- Started: {tasks.format_time(time.time())}\n"
        f"- Branch: auto/gh-{n}\n- Worktree: {tree}\n- Log: {log}\n- Log offset: 0\n- Attempts: 1\n")
    r = project.run("--once")
    assert r.returncode == 0, r.stderr
    t = project.task(n)
    assert (t.state, t.branch) == (tasks.COMPLETED, f"auto/gh-{n}-2"), (t, r.stderr)
    assert [p["head"]["ref"] for p in github.pulls()] == [f"auto/gh-{n}-2"]


def test_restart_never_adopts_an_unrelated_process_named_by_a_hand_written_pid(project):
    """An Active entry whose PID has no start time and is not one of our
    workers (here: a plain `sleep`) is finished from evidence; the process
    is neither adopted nor signalled."""
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        n = project.issue("Hand-written")
        (project.dir / "tasks.md").write_text(
            f"## Active\n[🟡 w-abcdef] gh-{n}: Hand-written {{p2}}\n- PID: {stranger.pid}\n- Branch: auto/gh-{n}\n")
        (project.dir / ".tasks.md.x1y2.tmp").write_text("left by a crash")
        r = project.run("--once")
        assert r.returncode == 0, r.stderr
        assert "not adopting it" in r.stderr
        assert stranger.poll() is None  # untouched
        assert f"gh-{n} worker gone while we were down (pid=none)" in r.stderr
        # Finished from its evidence: nothing ran, no commits, so a startup
        # error (not the task's fault) and back to Pending for a later try.
        t = project.task(n)
        assert (t.state, t.startup_errors, t.pid, t.worker) == (tasks.PENDING, 1, None, "")
        assert t.reason.startswith("startup error: ")
        assert not (project.dir / ".tasks.md.x1y2.tmp").exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_restart_never_adopts_a_reused_pid_whose_start_time_differs(project):
    """The PID in tasks.md is alive, but /proc says it started at another
    time than the one recorded: the PID was reused by an unrelated process.
    It is not re-adopted (nor signalled); the task is finished from evidence."""
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        n = project.issue("Reused PID")
        recorded = co.proc_start_time(stranger.pid) - 1000  # our worker started earlier
        (project.dir / "tasks.md").write_text(
            f"## Active\n[🟡 w-abcdef] gh-{n}: Reused PID {{p2}}\n- PID: {stranger.pid}\n"
            f"- PID start: {recorded}\n- Branch: auto/gh-{n}\n")
        r = project.run("--once")
        assert r.returncode == 0, r.stderr
        assert "re-adopted" not in r.stderr
        assert f"gh-{n} worker gone while we were down (pid={stranger.pid})" in r.stderr
        assert stranger.poll() is None  # untouched
        t = project.task(n)
        assert (t.state, t.startup_errors, t.pid) == (tasks.PENDING, 1, None)
    finally:
        stranger.kill()
        stranger.wait()
