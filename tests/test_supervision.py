"""Supervision decisions, driven by an injected clock: no sleeping, no processes.

The policy functions (stop_reason_for, decide_outcome, after_startup_error,
after_failed_run), the worker state machine, the stop escalation, the circuit
breaker and Coordinator.next_wake all take `now` as a parameter, so every
arc is walked here in microseconds. Workers get a hand-written follower (an
object with .summary and .poll()) and, where a process is involved, a
hand-written Popen that only answers poll(). test_processes.py proves the same
things against real processes and signals.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import signal
from pathlib import Path
from typing import Any, List, Optional

import pytest

import harness  # noqa: F401 - puts the project root on sys.path
from adws import coordinator as co
from adws import tasks
from adws.tasks import ACTIVE, FAILED, PENDING, Task
from adws.transcript import RunSummary

T0 = 1_700_000_000.0  # a whole second: tasks.md times have one-second resolution


# -- fakes ----------------------------------------------------------------------

class FakeFollower:
    """Stands in for transcript.TranscriptFollower: `.summary`, `.poll()` and
    `.catch_up()`. Lines are fed by the test; poll() hands them over once."""

    def __init__(self, summary: Optional[RunSummary] = None):
        self.summary = summary or RunSummary()
        self.fed: List[dict] = []
        self.polls = 0
        self.offset = 0  # bytes of the transcript read

    def feed(self, *events: dict) -> None:
        self.fed.extend(events)

    def poll(self) -> List[dict]:
        self.polls += 1
        out, self.fed = self.fed, []
        return out

    def catch_up(self) -> RunSummary:
        self.poll()
        return self.summary


class FakePopen:
    """Answers poll() like subprocess.Popen: None while running, then the code."""

    def __init__(self) -> None:
        self.returncode: Optional[int] = None
        self.polls = 0

    def poll(self) -> Optional[int]:
        self.polls += 1
        return self.returncode


class FakeGitHub:
    """What the Coordinator reads from its GitHub object outside of calls."""
    rate_remaining = None
    rate_reset = None


@pytest.fixture
def cfg(tmp_path: Path) -> co.Config:
    path = tmp_path / "config.toml"
    path.write_text('[github]\nrepo = "acme/widgets"\n'
                    '[workers]\nstartup_backoff = [300, 600, 1200]\nretry_backoff = [600, 1800]\n'
                    'max_attempts = 2\ntimeout = 3600\nstall_timeout = 900\nresult_exit_grace = 30\n'
                    'stop_grace = 5\nstartup_grace = 10\nbreaker_threshold = 3\napi_retry_limit = 6\n'
                    'max_concurrent = 2\nmin_free_memory_mb = 0\n')
    return co.load_config(path)


@pytest.fixture
def said():
    """The daemon's log lines, whatever another test did to the 'tac' logger."""
    lines: List[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect(level=logging.DEBUG)
    old_level = co.log.level
    co.log.addHandler(handler)
    co.log.setLevel(logging.DEBUG)
    yield lines
    co.log.removeHandler(handler)
    co.log.setLevel(old_level)


def make_worker(tmp_path: Path, issue: int = 7, started_at: float = T0, **kw: Any) -> co.Worker:
    fields = dict(issue=issue, worker_id="w-abc123", attempt=1, branch=f"auto/gh-{issue}",
                  tree=tmp_path / "trees" / f"gh-{issue}", log_path=tmp_path / f"gh-{issue}.jsonl",
                  stderr_path=tmp_path / f"gh-{issue}.stderr.log", stderr_offset=0,
                  pid=0, pid_start=None,  # pid 0: no process, so no signal is ever sent
                  started_at=started_at, follower=FakeFollower(), last_output_at=started_at)
    fields.update(kw)
    return co.Worker(**fields)


def summary(**kw: Any) -> RunSummary:
    return dataclasses.replace(RunSummary(), **kw)


def make_coordinator(cfg: co.Config, tmp_path: Path, **cfg_changes: Any) -> co.Coordinator:
    cfg = dataclasses.replace(cfg, tasks_path=tmp_path / "tasks.md", logs=tmp_path / "logs",
                              trees=tmp_path / "trees", **cfg_changes)
    return co.Coordinator(cfg, FakeGitHub(), clock=lambda: T0, environ={})


# -- the worker state machine -----------------------------------------------------

STATES = (co.STARTING, co.RUNNING, co.STOPPING, co.EXITED)
# Written out again here, not read from co._ARCS: the test is the second opinion.
LEGAL = {
    (co.STARTING, co.RUNNING),   # first model turn, or startup_grace passed
    (co.STARTING, co.STOPPING),  # stopped before it got going (timeout, STOP, API down)
    (co.STARTING, co.EXITED),    # ended by itself early: a startup error candidate
    (co.RUNNING, co.STOPPING),
    (co.RUNNING, co.EXITED),
    (co.STOPPING, co.EXITED),
}


@pytest.mark.parametrize("old, new", list(itertools.product(STATES, STATES)))
def test_change_state_allows_exactly_the_documented_arcs(tmp_path, old, new):
    w = make_worker(tmp_path)
    w.state = old
    if (old, new) in LEGAL:
        w.change_state(new, T0 + 5)
        assert w.state == new
        assert w.exited_at == (T0 + 5 if new == co.EXITED else None)
    else:
        with pytest.raises(AssertionError, match=f"no transition {old} -> {new}"):
            w.change_state(new, T0 + 5)
        assert w.state == old and w.exited_at is None


@pytest.mark.parametrize("code, words", [
    (0, "exit status 0"), (3, "exit status 3"), (-signal.SIGTERM, "terminated by SIGTERM"),
    (-signal.SIGKILL, "terminated by SIGKILL"), (None, "exit status unknown (adopted after a restart)"),
    (-99, "terminated by signal 99"),
])
def test_exit_statuses_are_described_in_words(code, words):
    assert co.describe_exit(code) == words


# -- stop_reason_for ------------------------------------------------------------------

def test_a_healthy_worker_has_no_stop_reason(cfg, tmp_path):
    w = make_worker(tmp_path)
    assert co.stop_reason_for(w, cfg, T0 + 899, summary(assistant_turns=3), False) == ""


def test_timeout_counts_from_the_start(cfg, tmp_path):
    w = make_worker(tmp_path)
    w.last_output_at = T0 + 3599  # busy output does not extend the timeout
    assert co.stop_reason_for(w, cfg, T0 + 3600, summary(), False) == ""
    assert co.stop_reason_for(w, cfg, T0 + 3600.5, summary(), False) == "timed out after 3600 s"


def test_stall_counts_from_the_last_log_line(cfg, tmp_path):
    w = make_worker(tmp_path)
    w.last_output_at = T0 + 1000
    assert co.stop_reason_for(w, cfg, T0 + 1900, summary(), False) == ""
    assert co.stop_reason_for(w, cfg, T0 + 1900.5, summary(), False) == "stalled: no output for 900 s"


def test_result_without_exit_is_stopped_after_the_grace(cfg, tmp_path):
    w = make_worker(tmp_path)
    w.result_seen_at = T0 + 100
    w.last_output_at = T0 + 100
    assert co.stop_reason_for(w, cfg, T0 + 130, summary(saw_result=True), False) == ""
    assert co.stop_reason_for(w, cfg, T0 + 130.5, summary(saw_result=True), False) == \
        "did not exit 30 s after its result"


def test_stop_file_wins_over_everything(cfg, tmp_path):
    w = make_worker(tmp_path)
    assert co.stop_reason_for(w, cfg, T0 + 99999, summary(), True) == co.STOP_BY_USER


def test_per_run_budget_and_api_retries(cfg, tmp_path):
    w = make_worker(tmp_path)
    rich = dataclasses.replace(cfg, per_run_usd=1.0)
    assert co.stop_reason_for(w, rich, T0 + 1, summary(cost_usd=0.99), False) == ""
    assert co.stop_reason_for(w, rich, T0 + 1, summary(cost_usd=1.25), False) == \
        "run cost $1.25 over per_run_usd $1.00"
    down = summary(api_retries=6, last_api_error="connection refused")
    assert co.stop_reason_for(w, cfg, T0 + 1, down, False) == "API unreachable: 6 retries (connection refused)"
    # Retries after a model turn are the API having a bad minute, not a dead start.
    assert co.stop_reason_for(w, cfg, T0 + 1, dataclasses.replace(down, assistant_turns=1), False) == ""


# -- decide_outcome ---------------------------------------------------------------------

def outcome(**kw: Any) -> co.Outcome:
    args = dict(pr_url="", blocked_reason=None, commits=0, stop_reason="", returncode=0,
                summary=summary(assistant_turns=2, saw_result=True, result_subtype="success"),
                elapsed=60.0, startup_grace=10.0)
    args.update(kw)
    return co.decide_outcome(**args)


def test_outcome_order_pr_then_blocked_then_commits():
    assert outcome(pr_url="http://pr/1", blocked_reason="x", commits=3).kind == "completed"
    assert outcome(blocked_reason="needs a key", commits=3) == co.Outcome("blocked", "needs a key")
    assert outcome(blocked_reason="") == co.Outcome("blocked", "BLOCKED.md gives no reason")
    assert outcome(commits=2) == co.Outcome("open_pr", "", draft=False)


def test_commits_from_a_run_that_did_not_succeed_make_a_draft():
    o = outcome(commits=1, returncode=1,
                summary=summary(assistant_turns=2, saw_result=True, result_subtype="error_max_turns", is_error=True))
    assert o.kind == "open_pr" and o.draft
    assert o.reason == "the run did not end in success (exit status 1, result error_max_turns)"
    o = outcome(commits=1, stop_reason="timed out after 60 s", summary=summary(assistant_turns=2))
    assert o.draft and o.reason == "the run did not end in success (timed out after 60 s)"


def test_a_users_stop_ends_the_task_even_with_commits():
    assert outcome(stop_reason=co.STOP_BY_USER, commits=4) == co.Outcome("stopped", co.STOP_BY_USER)
    assert outcome(stop_reason=co.CANCELLED, returncode=-2) == co.Outcome("stopped", co.CANCELLED)


def test_no_model_turn_is_a_startup_error_however_long_it_ran():
    o = outcome(returncode=1, summary=summary(), elapsed=500)
    assert o == co.Outcome("startup_error", "exit status 1")
    o = outcome(stop_reason="API unreachable: 6 retries (x)", returncode=-2, summary=summary(api_retries=6))
    assert o == co.Outcome("startup_error", "API unreachable: 6 retries (x)")


def test_quick_exit_without_result_is_a_startup_error_but_a_quick_result_is_a_run():
    o = outcome(returncode=2, elapsed=0.4, summary=summary(assistant_turns=1))
    assert o == co.Outcome("startup_error", "exit status 2")
    failed = summary(assistant_turns=1, saw_result=True, result_subtype="error_during_execution", is_error=True)
    o = outcome(returncode=1, elapsed=0.4, summary=failed)
    assert o == co.Outcome("failed", "worker exited without commits (exit status 1, result error_during_execution)")


def test_a_stopped_run_without_commits_fails_with_the_stop_reason():
    o = outcome(stop_reason="timed out after 3600 s", returncode=-9, summary=summary(assistant_turns=5))
    assert o == co.Outcome("failed", "worker exited without commits (timed out after 3600 s)")
    o = outcome(returncode=-signal.SIGKILL, summary=summary(assistant_turns=5))
    assert o.reason == "worker exited without commits (terminated by SIGKILL)"


# -- after_startup_error / after_failed_run -----------------------------------------------

def _apply(policy, t: Task, cfg, why: str) -> Task:
    """Run a policy decision through the one writer of task state, as finish does."""
    doc = tasks.TaskFile(tasks=[t])
    to, fields = policy(t, cfg, T0, why)
    return tasks.transition(doc, t.issue, to, expect=ACTIVE, now=T0, **fields)


def test_startup_errors_back_off_on_the_schedule_then_fail(cfg):
    t = Task(7, "x", ACTIVE, attempts=1, pid=123, pid_start=456)
    for k, delay in enumerate(cfg.startup_backoff, 1):
        t = _apply(co.after_startup_error, t, cfg, "claude: command not found")
        assert (t.state, t.startup_errors, t.attempts) == (PENDING, k, 1)
        assert t.next_attempt == tasks.format_time(T0 + delay)
        assert tasks.parse_time(t.next_attempt) - T0 == delay
        assert t.reason == "startup error: claude: command not found"
        assert t.pid is None and t.pid_start is None
        t.state = ACTIVE
    t = _apply(co.after_startup_error, t, cfg, "claude: command not found")
    assert t.state == FAILED and t.next_attempt == "" and t.attempts == 1  # never the task's own failure
    assert t.reason == "4 startup errors in a row, last: claude: command not found"
    assert t.finished == tasks.format_time(T0) and t.outbox == "pending"


def test_failed_runs_retry_with_backoff_up_to_max_attempts(cfg):
    t = _apply(co.after_failed_run, Task(7, "x", ACTIVE, attempts=1, startup_errors=2), cfg,
               "worker exited without commits (exit status 1)")
    assert t.state == PENDING and t.startup_errors == 0
    assert t.next_attempt == tasks.format_time(T0 + 600)
    assert t.reason == "attempt 1 failed: worker exited without commits (exit status 1)"
    t.state, t.attempts = ACTIVE, 2
    t = _apply(co.after_failed_run, t, cfg, "boom")
    assert (t.state, t.next_attempt, t.reason) == (FAILED, "", "boom (attempt 2 of 2)")
    # Past the end of retry_backoff the last step repeats.
    many = dataclasses.replace(cfg, max_attempts=9)
    t = _apply(co.after_failed_run, Task(7, "x", ACTIVE, attempts=5), many, "boom")
    assert tasks.parse_time(t.next_attempt) - T0 == 1800
    one = dataclasses.replace(cfg, max_attempts=1)
    t = _apply(co.after_failed_run, Task(7, "x", ACTIVE, attempts=1), one, "boom")
    assert (t.state, t.reason) == (FAILED, "boom")


# -- the stop escalation, on the fake clock ---------------------------------------------------

def test_supervise_walks_starting_running_stopping_with_stop_grace_between_signals(cfg, tmp_path, said):
    c = make_coordinator(cfg, tmp_path, timeout=100)
    w = make_worker(tmp_path)
    c.workers[w.issue] = w
    doc = tasks.TaskFile([Task(w.issue, "x", ACTIVE, worker=w.worker_id)])
    c.supervise(T0 + 1, doc)
    assert w.state == co.STARTING  # no turn yet, grace not over
    w.follower.summary.assistant_turns = 1
    w.follower.feed({"type": "assistant"})
    c.supervise(T0 + 2, doc)
    assert w.state == co.RUNNING and w.last_output_at == T0 + 2
    c.supervise(T0 + 100, doc)
    assert w.state == co.RUNNING
    c.supervise(T0 + 100.5, doc)  # timeout: SIGINT now
    assert (w.state, w.stop_stage, w.stop_reason) == (co.STOPPING, 1, "timed out after 100 s")
    c.supervise(T0 + 105.4, doc)
    assert w.stop_stage == 1  # stop_grace (5 s) not over
    c.supervise(T0 + 105.5, doc)
    assert w.stop_stage == 2  # SIGTERM
    c.supervise(T0 + 110.5, doc)
    assert w.stop_stage == 3  # SIGKILL to the group and every tagged process
    assert any("stopping pid=0: timed out after 100 s" in line for line in said)


def test_startup_grace_alone_makes_a_worker_running(cfg, tmp_path):
    c = make_coordinator(cfg, tmp_path)
    w = make_worker(tmp_path)
    c.workers[w.issue] = w
    doc = tasks.TaskFile([Task(w.issue, "x", ACTIVE, worker=w.worker_id)])
    c.supervise(T0 + 9.9, doc)
    assert w.state == co.STARTING
    c.supervise(T0 + 10, doc)
    assert w.state == co.RUNNING


def test_an_entry_moved_out_of_active_by_hand_stops_its_worker(cfg, tmp_path):
    c = make_coordinator(cfg, tmp_path)
    w = make_worker(tmp_path)
    c.workers[w.issue] = w
    c.supervise(T0 + 1, tasks.TaskFile([Task(w.issue, "x", FAILED, worker=w.worker_id)]))
    assert (w.state, w.stop_reason) == (co.STOPPING, co.CANCELLED)


def test_api_down_stops_the_worker_and_opens_the_breaker_at_once(cfg, tmp_path):
    c = make_coordinator(cfg, tmp_path)
    w = make_worker(tmp_path, follower=FakeFollower(summary(api_retries=6, last_api_error="overloaded")))
    c.workers[w.issue] = w
    c.supervise(T0 + 1, tasks.TaskFile([Task(w.issue, "x", ACTIVE, worker=w.worker_id)]))
    assert w.state == co.STOPPING
    assert c.spawn_block(T0 + 2) == ("spawning paused: network or API down? (API unreachable: 6 retries "
                                     f"(overloaded)); next probe {co.clock_time(T0 + 1 + 300)}")
    assert c.spawn_block(T0 + 1 + 300) == ""  # the probe is due


def test_reap_asks_the_workers_own_popen_and_records_its_code(cfg, tmp_path, said):
    c = make_coordinator(cfg, tmp_path)
    popen = FakePopen()
    w = make_worker(tmp_path, pid=4242, popen=popen)
    c.workers[w.issue] = w
    c.reap(T0 + 1)
    assert w.state == co.STARTING and popen.polls == 1
    popen.returncode = 3
    c.reap(T0 + 2)
    assert (w.state, w.returncode, w.exited_at) == (co.EXITED, 3, T0 + 2)
    assert w.follower.polls == 1  # the last lines are read before deciding
    assert "gh-7 exited pid=4242 exit status 3 after 2 s" in said
    c.reap(T0 + 3)
    assert popen.polls == 2  # an exited worker is not polled again


# -- the breaker and next_wake ---------------------------------------------------------------

def test_breaker_opens_after_threshold_startup_errors_then_lets_one_probe_through(cfg, tmp_path, said):
    c = make_coordinator(cfg, tmp_path)
    b = c.gates.startup
    assert c.count_startup_error(1, "claude: command not found", T0) is False  # the task's own, so far
    c.count_startup_error(2, "claude: command not found", T0 + 1)
    assert c.spawn_block(T0 + 1) == "" and b.state == "closed"
    assert c.count_startup_error(3, "claude: command not found", T0 + 2) is False  # this one trips it
    block = c.spawn_block(T0 + 2)
    assert block == ("spawning paused: worker command missing? (claude: command not found); "
                     f"next probe {co.clock_time(T0 + 302)}")
    assert any(line == block for line in said)
    assert c.spawn_block(T0 + 301.9) == block
    assert c.spawn_block(T0 + 302) == ""  # the probe may go
    assert b.may_start(1, T0 + 302) and not b.may_start(2, T0 + 302)  # one probe, nothing beside it
    assert c.spawn_block(T0 + 303).endswith("; probe running")
    assert c.counters["startup_errors"] == 3


def test_failed_probes_space_out_along_the_schedule_then_stay_at_its_last_step(cfg, tmp_path):
    c = make_coordinator(cfg, tmp_path)
    b = c.gates.startup
    for n in (1, 2, 3):
        c.count_startup_error(n, "Invalid API key · Please run /login", T0)
    now, gaps = T0, []
    for _ in range(5):
        now = b.next_probe_at
        assert b.may_start(1, now)
        assert c.count_startup_error(1, "Invalid API key · Please run /login", now) is True  # the system's
        gaps.append(b.next_probe_at - now)
    assert [300.0] + gaps == [300.0, 600.0, 1200.0, 1200.0, 1200.0, 1200.0]
    assert c.spawn_block(now).startswith("spawning paused: claude login expired? (Invalid API key")


def test_a_probe_that_reaches_a_model_turn_closes_the_breaker(cfg, tmp_path):
    c = make_coordinator(cfg, tmp_path)
    for n in (1, 2, 3):
        c.count_startup_error(n, "exit status 1", T0)
    assert c.gates.startup.may_start(5, T0 + 300)
    w = make_worker(tmp_path, issue=5, follower=FakeFollower(summary(assistant_turns=1)))
    c.workers[5] = w
    c.supervise(T0 + 301, tasks.TaskFile([Task(5, "x", ACTIVE, worker=w.worker_id)]))
    assert c.gates.startup.state == "closed" and c.spawn_block(T0 + 301) == ""
    assert c.count_startup_error(6, "exit status 1", T0 + 302) is False  # counted afresh, as the task's


def test_probes_go_round_the_queue_so_one_bad_task_cannot_hold_it(cfg, tmp_path):
    b = make_coordinator(cfg, tmp_path).gates.startup
    for n in (1, 2, 3):
        b.startup_error(n, "exit status 1", T0)
    order = []
    for _ in range(4):
        first = b.pick_probe([1, 2, 3])[0]
        assert b.may_start(first, b.next_probe_at)
        order.append(first)
        b.startup_error(first, "exit status 1", b.next_probe_at)
    assert order == [1, 2, 3, 1]


def test_breaker_is_shown_in_the_status_line_and_metrics(cfg, tmp_path):
    c = make_coordinator(cfg, tmp_path)
    for n in (1, 2, 3):
        c.count_startup_error(n, "exit status 2", T0)
    c.publish(T0 + 1, polled=False)
    doc, problems, _ = tasks.load(c.cfg.tasks_path)
    assert problems == []
    message = f"spawning paused: 3 startup errors in a row (exit status 2); next probe {co.clock_time(T0 + 300)}"
    assert doc.status.startswith(message)
    data = json.loads(c.cfg.metrics_path.read_text())
    assert data["spawn_block"] == message
    assert data["breaker"]["state"] == "open" and data["breaker"]["next_probe_at"] == T0 + 300


def test_pause_wins_over_the_breaker_in_the_status_line(cfg, tmp_path):
    c = make_coordinator(cfg, tmp_path)
    for n in (1, 2, 3):
        c.count_startup_error(n, "exit status 2", T0)
    c.gates.paused_by_signal = True
    assert c.spawn_block(T0) == "paused by SIGUSR1"
    c.gates.paused_by_signal = False
    c.cfg.pause_path.write_text("")
    assert c.spawn_block(T0) == "paused by PAUSE file"


def test_failed_runs_in_a_row_pause_through_the_pause_file_until_a_person_resumes(cfg, tmp_path, said):
    c = make_coordinator(cfg, tmp_path)
    g = c.gates
    g.failed_run(1, "worker exited without commits (exit status 1)")
    g.failed_run(2, "timed out after 3600 s")
    g.failures.good_run()  # a completed or blocked run in between resets the count
    for n in (3, 4, 5):
        g.failed_run(n, f"worker exited without commits (gh-{n})")
    block = c.spawn_block(T0)
    assert block.startswith("paused by PAUSE file: 3 failed runs in a row (last: gh-3: worker exited")
    assert "gh-5: worker exited without commits (gh-5)" in block
    g.sigusr1()
    assert c.spawn_block(T0) == "" and not c.cfg.pause_path.exists()
    for n in (6, 7, 8):
        g.failed_run(n, "x")
    assert c.spawn_block(T0).startswith("paused by PAUSE file")
    c.cfg.pause_path.unlink()  # a person removes it
    assert c.spawn_block(T0) == "" and g.failures.tripped == ""


def test_next_wake_is_short_while_workers_run(cfg, tmp_path):
    c = make_coordinator(cfg, tmp_path)
    c.workers[7] = make_worker(tmp_path)
    c.next_poll_at = T0 + 30
    assert c.next_wake(T0) == 1.0


def test_next_wake_idle_sleeps_until_the_poll_within_bounds(cfg, tmp_path):
    c = make_coordinator(cfg, tmp_path)
    c.next_poll_at = T0 + 30
    assert c.next_wake(T0) == 30
    c.next_poll_at = T0 + 5000
    assert c.next_wake(T0) == 60
    c.next_poll_at = T0 - 3
    assert c.next_wake(T0) == 0.05


def test_next_wake_ends_with_a_backoff_or_breaker_before_the_poll(cfg, tmp_path):
    c = make_coordinator(cfg, tmp_path)
    c.next_poll_at = T0 + 30
    c.next_due_at = T0 + 7
    assert c.next_wake(T0) == 7
    for n in (1, 2, 3):
        c.count_startup_error(n, "exit status 2", T0 - 296)  # the breaker's probe is due at T0 + 4
    assert c.next_wake(T0) == 4
    # Times already passed do not keep the loop spinning.
    assert c.next_wake(T0 + 8) == 22


def test_dispatch_remembers_the_next_backoff_expiry(cfg, tmp_path):
    c = make_coordinator(cfg, tmp_path)
    doc = tasks.TaskFile([Task(7, "a", PENDING, next_attempt=tasks.format_time(T0 + 7)),
                          Task(8, "b", PENDING, next_attempt=tasks.format_time(T0 + 12)),
                          Task(9, "not listed", PENDING, next_attempt=tasks.format_time(T0 + 2))])
    tasks.save(c.cfg.tasks_path, doc, tasks.load(c.cfg.tasks_path)[2])
    c.issues = {7: {"number": 7}, 8: {"number": 8}}
    c.next_poll_at = T0 + 30
    c.dispatch(T0)
    assert c.workers == {}
    assert c.next_due_at == T0 + 7
    assert c.next_wake(T0) == 7


def test_no_spawn_below_min_free_memory(cfg, tmp_path, said):
    c = make_coordinator(cfg, tmp_path, min_free_memory_mb=10 ** 9)
    doc = tasks.TaskFile([Task(7, "a", PENDING)])
    tasks.save(c.cfg.tasks_path, doc, tasks.load(c.cfg.tasks_path)[2])
    c.issues = {7: {"number": 7}}
    c.dispatch(T0)
    assert c.workers == {} and c.counters["launched"] == 0
    assert tasks.load(c.cfg.tasks_path)[0].governing(7).state == PENDING
    assert any("below min_free_memory_mb 1000000000" in line for line in said)


# -- GitHub trouble: an outage versus one refused request ---------------------------

@pytest.mark.parametrize("status, down", [(0, True), (502, True), (503, True), (401, True), (403, True),
                                          (429, True), (404, False), (422, False)])
def test_only_an_outage_marks_github_unreachable(cfg, tmp_path, status, down):
    c = make_coordinator(cfg, tmp_path)
    c.github_failed(T0, co.GitHubError(status, "boom"))
    assert (c.github_down_since == T0) is down
    assert c.counters["github_errors"] == 1


def test_finishing_waits_for_the_poll_backoff_while_github_is_down(cfg, tmp_path):
    calls = []

    class DownGitHub(FakeGitHub):
        def create_pull(self, *args):
            calls.append(1)
            raise co.GitHubError(503, "down")

    class OneCommitGit:
        """The clone as finishing asks it: one commit to push, nothing held."""
        def commits_ahead(self, branch):
            return 1

        def held_paths(self, branch):
            return []

        def push_branch(self, branch):
            pass

    c = make_coordinator(cfg, tmp_path)
    c.github, c.git = DownGitHub(), OneCommitGit()
    w = make_worker(tmp_path, returncode=0)
    w.state = co.EXITED
    c.workers[w.issue] = w
    tasks.update(c.cfg.tasks_path, lambda d: d.add(Task(w.issue, "x", ACTIVE, worker=w.worker_id)))
    c.next_poll_at = T0 + 60
    c.finish_exited(T0)              # first try: GitHub answers 503
    assert len(calls) == 1 and c.github_down_since == T0
    for dt in (1, 2, 30, 59):        # no hammering while the poll backs off
        c.finish_exited(T0 + dt)
    assert len(calls) == 1
    c.finish_exited(T0 + 60)         # tried again when the poll is due
    assert len(calls) == 2
    assert w.issue in c.workers      # never dropped


def test_the_poll_never_queues_an_issue_whose_worker_runs(cfg, tmp_path, said):
    """Its entry may be gone for a moment (tasks.md deleted or damaged):
    the worker's entry is written back, never queued as a new task."""
    class LabelledByAlice(FakeGitHub):
        def labellers(self, label, issues):
            return {i["number"]: ("alice", "User", "2026-01-01T00:00:00Z") for i in issues}

        def labeller(self, n, label, updated_at=""):
            return ("alice", "User", "2026-01-01T00:00:00Z")

        def permission(self, login):
            return "write"
    c = co.Coordinator(make_coordinator(cfg, tmp_path).cfg, LabelledByAlice(), clock=lambda: T0, environ={})
    c.workers[7] = make_worker(tmp_path, issue=7)
    issue = {"number": 7, "title": "Running", "body": "", "user": {"login": "alice"}, "labels": []}
    changes = c.intake(c.github, [issue, dict(issue, number=8, title="New")], T0)
    assert [d.said for d in changes] == ["gh-8 queued {p2} labelled by alice"]  # gh-7's worker runs


# -- a wall clock that jumps (issue #11) -------------------------------------------------
# NTP steps a Pi's clock at boot (it has no battery clock), a person sets it,
# daylight saving moves local time. Durations and schedules run on the steady
# clock; only what leaves the process is dated by the wall clock.

class Clocks:
    def __init__(self) -> None:
        self.steady, self.wall = 5_000.0, T0

    def tick(self, seconds: float, wall_step: float = 0.0) -> float:
        self.steady += seconds
        self.wall += seconds + wall_step
        return self.steady


class CountingGitHub(FakeGitHub):
    def __init__(self) -> None:
        self.polls = 0

    def labelled_issues(self, label):
        self.polls += 1
        return []

    def forget_issues_except(self, issues) -> None:
        pass


def test_a_wall_clock_stepped_forward_does_not_time_out_a_young_worker(cfg, tmp_path):
    clocks = Clocks()
    c = co.Coordinator(make_coordinator(cfg, tmp_path).cfg, FakeGitHub(), clock=lambda: clocks.steady,
                       wall=lambda: clocks.wall, environ={})
    w = make_worker(tmp_path, started_at=c.clock())
    c.workers[7] = w
    doc = tasks.TaskFile([Task(7, "x", ACTIVE, worker=w.worker_id)])
    clocks.tick(2, wall_step=2 * 3600)
    c.supervise(c.clock(), doc)  # as the run loop does: now = c.clock()
    assert w.state == co.STARTING and w.stop_reason == ""  # 2 s old, not "timed out after 3600 s"
    clocks.tick(3600)
    c.supervise(c.clock(), doc)
    assert w.stop_reason == "timed out after 3600 s"  # its real hour


def test_a_wall_clock_stepped_back_does_not_stop_the_polling(cfg, tmp_path):
    clocks = Clocks()
    gh = CountingGitHub()
    c = co.Coordinator(make_coordinator(cfg, tmp_path).cfg, gh, clock=lambda: clocks.steady,
                       wall=lambda: clocks.wall, environ={})
    c.tick(c.clock())
    assert gh.polls == 1
    clocks.tick(cfg.poll_interval + 1, wall_step=-86400)
    c.tick(c.clock())
    assert gh.polls == 2  # due by the steady clock, however far the wall clock went back
    assert c.next_wake(c.clock()) <= cfg.poll_interval


def test_times_written_to_tasks_md_follow_the_wall_clock_as_it_reads_now(cfg, tmp_path):
    clocks = Clocks()
    c = co.Coordinator(make_coordinator(cfg, tmp_path).cfg, FakeGitHub(), clock=lambda: clocks.steady,
                       wall=lambda: clocks.wall, environ={})
    tasks.update(c.cfg.tasks_path, lambda d: d.add(Task(7, "x", ACTIVE, worker="w-abc123")))
    clocks.tick(10, wall_step=3600)
    c.tick(clocks.steady)
    ended = c.change_state(7, FAILED, expect=ACTIVE, now=clocks.steady, reason="r")
    assert ended.finished == tasks.format_time(clocks.wall)


def test_a_readopted_workers_age_comes_from_its_process_not_from_tasks_md(cfg, tmp_path):
    """A Started time written before a DST change or a clock step reads back
    hours off; the process's own start time in /proc does not."""
    import subprocess
    import time as _time
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        c = co.Coordinator(make_coordinator(cfg, tmp_path).cfg, FakeGitHub(), environ={})
        two_hours_ago = tasks.format_time(_time.time() - 7200)
        tasks.update(c.cfg.tasks_path, lambda d: d.add(Task(
            7, "x", ACTIVE, worker="w-abc123", pid=proc.pid, pid_start=co.proc_start_time(proc.pid),
            started=two_hours_ago, log=str(tmp_path / "gh-7.jsonl"))))
        now = c.clock()
        c.recover(now)
        w = c.workers[7]
        assert w.state == co.RUNNING and now - w.started_at < 60
        assert co.stop_reason_for(w, c.cfg, now, summary(), False) == ""
    finally:
        proc.kill()
        proc.wait()
