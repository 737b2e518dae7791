#!/usr/bin/env python3
"""Benchmark: what the coordinator costs while idle, and how fast it reacts.

    python bench/run.py            the full run (a few minutes)
    python bench/run.py --quick    fewer samples, smaller sizes (about two minutes; the test suite runs this)
    python bench/run.py --json     the same figures as one JSON object

It starts the real daemon (`python adws/coordinator.py`) against a fake
GitHub served from this process and reached through the real `gh`, with a
real bare origin and clone in a temp dir and adws/sandbox/scripted_worker.py as the
agent, and prints a Markdown table to paste into README.md. Where a naive
way of doing the same job exists it is measured in the same run against the
same fake, and the table gives naive ÷ ours:

- requests per poll cycle with 0, 10 and 100 pending tasks (a PAUSE file
  keeps them pending), next to polling without ETags;
- one pull-request look-up for every active branch, next to one
  `pulls?head=OWNER:BRANCH` call per branch;
- worker exit -> tasks.md Completed, comment posted, label swapped (the exit
  time is the scripted worker's own, written to $TAC_TRACE);
- SIGHUP -> the next poll, and an invalid config refused with the old kept;
- idle RSS and CPU of the daemon, from /proc/PID/status and /proc/PID/stat;
- tasks.md parse and render, status.py start-up, view_worker on a big log
  (next to reading the whole log into memory);
- the dashboard (tools/dashboard.py) over a 10,000-run ledger and 100 tasks:
  the overview's time and the server's RSS, next to the same server reading
  the whole ledger again for every page; the issue page of the big log,
  streamed, and the server's peak RSS meanwhile;
- throughput (issue #13), each daemon against a fake of its own: N newly
  labelled issues queued (who applied the label read from the events feed),
  counted requests by kind, next to the client's per-issue events calls; the
  daemon's peak RSS with N tasks; a worker's exit acted on while a poll
  hangs and while a start fetches from a slow remote, next to the same
  daemon doing that work on its loop (job_threads = 0); N quick tasks at
  max_concurrent 2: counted requests per task by endpoint and the
  coordinator's time per task, both ways.

Benchmarks are not tests: nothing here judges a number. The exit status is
non-zero only when the benchmark itself broke (the daemon died, a state it
waited for never came).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from adws import coordinator, github, ledger, metrics, tasks  # noqa: E402
from adws.sandbox.fakegithub import FakeGitHub, RequestRecord  # noqa: E402

COORDINATOR = ROOT / "adws" / "coordinator.py"
WORKER = ROOT / "adws" / "sandbox" / "scripted_worker.py"
STATUS = ROOT / "tools" / "status.py"
VIEWER = ROOT / "tools" / "view_worker.py"
DASHBOARD = ROOT / "tools" / "dashboard.py"
REPO, LABEL = "acme/widgets", "rpi-auto"
LIST_PATH = f"/repos/{REPO}/issues"  # the first page of the poll; later pages live under /repositories/
CLK_TCK = os.sysconf("SC_CLK_TCK")
# A developer's own gh settings must not reach the fake.
GH_LEAKS = ("GH_REPO", "GH_DEBUG", "GH_ENTERPRISE_TOKEN", "GITHUB_TOKEN", "GITHUB_ENTERPRISE_TOKEN")
HEADERS = ("Measure", "Ours", "Naive / reference", "Naive ÷ ours")


class BenchError(Exception):
    """The benchmark itself broke; the figures would mean nothing."""


# ---------------------------------------------------------------------------
# Sizes: --quick trades samples for time
# ---------------------------------------------------------------------------

FULL = dict(idle_window=60.0, pending=(0, 10, 100), cycles=10, fast_poll=1.0, hups=5, branches=(10, 100),
            pr_cycles=3, runs=10, latency_poll=2.0, task_sizes=(100, 1000, 10000), parse_repeats=5,
            status_runs=10, log_mb=200, retry_window=10.0, ledger_runs=10000, pages=20,
            intake_issues=1000, rss_runs=10, hang=20.0, loop_sleep=3.0, loop_runs=3, loop_intake=1000,
            overhead_tasks=200)
QUICK = dict(idle_window=5.0, pending=(0, 10, 30), cycles=3, fast_poll=0.5, hups=2, branches=(10,),
             pr_cycles=2, runs=3, latency_poll=1.0, task_sizes=(100, 1000), parse_repeats=2,
             status_runs=3, log_mb=10, retry_window=3.0, ledger_runs=2000, pages=3,
             intake_issues=50, rss_runs=2, hang=2.0, loop_sleep=2.0, loop_runs=1, loop_intake=150,
             overhead_tasks=8)


# ---------------------------------------------------------------------------
# The fake, timed: who asked what, answered when
# ---------------------------------------------------------------------------

class _TimedLog(list):
    """The fake's request log: each record, as the fake appends it (under
    its lock, once answered), is also noted in `timed` with the time and
    the token of the request being answered in this thread."""

    def __init__(self, fake: "TimedFake"):
        super().__init__()
        self.fake = fake

    def append(self, record: RequestRecord) -> None:
        super().append(record)
        self.fake.timed.append((time.time(), getattr(self.fake.local, "token", ""), record))


class TimedFake(FakeGitHub):
    """FakeGitHub that also notes when it answered each request and which
    token sent it: the daemon's gh uses token "x", the naive variants run by
    this script use tokens of their own, so one fake serves both. It notes
    arrivals too, so a request the fake holds back (delay()) is seen in
    flight; the fake answers each request in a thread of its own, and a
    held-back one holds up no other."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timed: List[Tuple[float, str, RequestRecord]] = []
        self.arrived: List[Tuple[float, str, str, str]] = []  # (time, token, method, path)
        self.local = threading.local()
        self._requests = _TimedLog(self)

    def _handle(self, method: str, target: str, headers: Any, raw: bytes):
        token = ((headers.get("Authorization") or "").split()[-1:] or [""])[0]
        self.local.token = token
        path = re.sub(r"^/api/v3(?=/)", "", urlsplit(target).path).rstrip("/") or "/"
        with self._lock:
            self.arrived.append((time.time(), token, method, path))
        return super()._handle(method, target, headers, raw)

    def since(self, t0: float, token: str = "x") -> List[Tuple[float, RequestRecord]]:
        with self._lock:
            return [(t, r) for t, who, r in self.timed if t >= t0 and who == token]

    def in_flight(self, at: float, method: str, path: str, token: str = "x") -> int:
        """Requests for method+path that had arrived by `at` and were not yet answered."""
        with self._lock:
            came = sum(1 for t, who, m, p in self.arrived if t <= at and who == token and m == method and p == path)
            done = sum(1 for t, who, r in self.timed if t <= at and who == token and r.method == method
                       and r.path == path)
        return came - done


def is_poll(r: RequestRecord) -> bool:
    return r.method == "GET" and r.path == LIST_PATH


# ---------------------------------------------------------------------------
# A project in a temp dir: origin, clone, config, the daemon as a process
# ---------------------------------------------------------------------------

def git(*args: str, cwd: Optional[Path] = None) -> str:
    cmd = ["git", "-c", "user.name=Bench", "-c", "user.email=bench@example.com",
           "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", *args]
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout


class Rig:
    """Everything one run needs, torn down by close() whatever happened."""

    def __init__(self, keep: bool = False):
        self.keep = keep
        self.tmp = Path(tempfile.mkdtemp(prefix="tac-bench-"))
        self.origin, self.clone = self.tmp / "origin.git", self.tmp / "clone"
        seed = self.tmp / "seed"
        git("init", "--bare", "-q", str(self.origin))
        git("init", "-q", str(seed))
        (seed / "README").write_text("widgets\n")
        git("add", "README", cwd=seed)
        git("commit", "-q", "-m", "Initial commit", cwd=seed)
        git("push", "-q", str(self.origin), "HEAD:refs/heads/main", cwd=seed)
        git("--git-dir", str(self.origin), "symbolic-ref", "HEAD", "refs/heads/main")
        git("clone", "-q", str(self.origin), str(self.clone))
        for key, value in (("user.name", "Bench"), ("user.email", "bench@example.com"), ("commit.gpgsign", "false")):
            git("config", key, value, cwd=self.clone)
        self.fake = TimedFake(REPO, origin_path=str(self.origin)).start()
        self.fake.add_label(LABEL)
        self.fake.set_permission("alice", "write")
        (self.tmp / "gh-config").mkdir()
        self.env = {k: v for k, v in os.environ.items() if k not in GH_LEAKS}
        self.env.update(self.fake.env(str(self.tmp / "gh-config")))
        self.daemons: List[Daemon] = []

    def gh_env(self, token: str) -> Dict[str, str]:
        """gh's environment for this script's own calls, told apart by token."""
        return dict(self.env, GH_TOKEN=token)

    def daemon(self, name: str, **config: Any) -> "Daemon":
        d = Daemon(self, self.tmp / name, **config)
        self.daemons.append(d)
        return d

    def close(self) -> None:
        for d in self.daemons:
            d.stop()
        self.fake.stop()
        if not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)


class Daemon:
    """One `python adws/coordinator.py` with its own state dir."""

    def __init__(self, rig: Rig, state: Path, paused: bool = False, **config: Any):
        self.rig, self.dir = rig, state
        self.dir.mkdir()
        self.config_path = self.dir / "config.toml"
        self.tasks_path = self.dir / "tasks.md"
        self.trace = self.dir / "trace.txt"
        self.log_path = self.dir / "coordinator.log"
        (self.dir / "worker_template.md").write_text("Issue #{issue_number} on {branch}\n{title}\n{body}\n")
        (self.dir / "script.json").write_text(json.dumps({"default": {"commit": "fix.txt", "sleep": 1}}))
        if paused:
            (self.dir / "PAUSE").write_text("benchmark: keep the queue pending\n")
        self.write_config(**config)
        self.env = dict(rig.env, TAC_SCRIPT=str(self.dir / "script.json"), TAC_TRACE=str(self.trace),
                        PYTHONUNBUFFERED="1")
        self.proc: Optional[subprocess.Popen] = None

    def write_config(self, label: str = LABEL, poll_interval: float = 30, max_concurrent: int = 1,
                     broken: bool = False, job_threads: Optional[int] = None,
                     progress_every: Optional[float] = None) -> None:
        """The config; job_threads and progress_every, when not given, are
        left to the daemon's defaults (4 threads, a progress edit every 300 s)."""
        lines = ["[github]", f"repo = {json.dumps(REPO)}", f"label = {json.dumps(label)}",
                 f"poll_interval = {json.dumps(poll_interval)}",
                 *([f"progress_every = {json.dumps(progress_every)}"] if progress_every is not None else []),
                 "[repo]", f"path = {json.dumps(str(self.rig.clone))}",
                 "[workers]", f"command = {json.dumps([sys.executable, str(WORKER)])}",
                 f"max_concurrent = {max_concurrent}", "startup_grace = 0.5", "min_free_memory_mb = 0",
                 "timeout = 600", *([f"job_threads = {job_threads}"] if job_threads is not None else [])]
        if broken:
            lines.append("polling_interval = 5")  # an unknown key: the daemon must refuse the file
        self.config_path.write_text("\n".join(lines) + "\n")

    def script(self, script: Dict[str, Any]) -> None:
        """What the scripted worker does (adws/sandbox/scripted_worker.py), read at each worker's start."""
        (self.dir / "script.json").write_text(json.dumps(script))

    def launch(self) -> float:
        """Start the process; returns when."""
        t = time.time()
        out = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, str(COORDINATOR), "--config", str(self.config_path)],
                                     env=self.env, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        return t

    def start(self, healthy: bool = True) -> "Daemon":
        """Start it and wait for its first poll (healthy: and metrics.json
        saying the poll went well)."""
        t = self.launch()
        self.wait(self.ready if healthy else lambda: self.polls_after(t), 60, "the first poll")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise BenchError(f"the coordinator in {self.dir.name} died (exit {self.proc and self.proc.returncode})"
                             f"\n--- its log ---\n{self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def ready(self) -> bool:
        try:
            data = json.loads((self.dir / "metrics.json").read_text())
        except (OSError, ValueError):
            return False
        return bool(data.get("last_poll_ok"))

    def wait(self, what: Callable[[], Any], timeout: float, message: str, step: float = 0.05) -> Any:
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = what()
            if value:
                return value
            self.alive()
            time.sleep(step)
        raise BenchError(f"timed out after {timeout:.0f} s waiting for {message}\n--- log ---\n{self.log_tail()}")

    def tasks(self) -> tasks.TaskFile:
        return tasks.load(self.tasks_path)[0]

    def count(self, state: str) -> int:
        return len(self.tasks().in_state(state))

    def polls_after(self, t0: float) -> List[Tuple[float, RequestRecord]]:
        return [(t, r) for t, r in self.rig.fake.since(t0) if is_poll(r)]

    def next_poll(self, t0: float, timeout: float = 30) -> Tuple[float, RequestRecord]:
        return self.wait(lambda: (self.polls_after(t0) or [None])[0], timeout, "a poll", step=0.005)

    def trace_times(self, issue: int) -> Tuple[Optional[float], Optional[float]]:
        """(start, end) of the scripted worker's run for `issue`, from $TAC_TRACE."""
        return self.traces().get(issue, (None, None))

    def traces(self) -> Dict[int, Tuple[float, Optional[float]]]:
        """issue -> (start, end) of the scripted worker's last run of it, from $TAC_TRACE."""
        try:
            lines = self.trace.read_text().splitlines()
        except OSError:
            return {}
        runs: Dict[int, Tuple[float, Optional[float]]] = {}
        for line in lines:
            fields = line.split()
            if len(fields) != 4:
                continue  # being written as we read
            n, _pid, t0, t1 = fields
            runs[int(n)] = (float(t0), None if t1 == "-" else float(t1))
        return runs

    def stop(self) -> Optional[int]:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Workers outlive the coordinator by design; end ours (and only ours).
        mark = f"TAC_SCRIPT={self.dir / 'script.json'}".encode()
        for pid in _pids_with_env(mark):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        return self.proc.returncode if self.proc is not None else None


def _pids_with_env(mark: bytes) -> List[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if mark in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    found.append(int(entry))
            except OSError:
                pass
    return found


# ---------------------------------------------------------------------------
# /proc: memory and CPU of one process
# ---------------------------------------------------------------------------

def peak_rss_mb(pid: int) -> Tuple[float, float]:
    """(VmRSS, VmHWM) in MB: the resident set now and its high-water mark."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def proc_sample(pid: int) -> Dict[str, float]:
    """RSS in MB; CPU seconds of the process itself and of its reaped
    children (gh, git), from /proc/PID/stat fields 14-17."""
    status = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"^VmRSS:\s+(\d+)\s+kB", status, re.M)
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2:].split()  # fields[0] is field 3 (state)
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return {"rss_mb": int(m.group(1)) / 1024 if m else 0.0, "cpu_s": (utime + stime) / CLK_TCK,
            "children_cpu_s": (cutime + cstime) / CLK_TCK, "at": time.time()}


# ---------------------------------------------------------------------------
# The naive variants, run by this script through the real gh
# ---------------------------------------------------------------------------

class UnconditionalGitHub(coordinator.GitHub):
    """The daemon's GitHub client without ETags: every poll is a full answer."""

    def get_conditional(self, path: str) -> Any:
        resp = self.api("GET", path)
        data = resp.data
        nxt = github._next_link(resp.headers.get("link", ""))
        while nxt and isinstance(data, list):
            page = self.api("GET", nxt)
            data = data + (page.data or [])
            nxt = github._next_link(page.headers.get("link", ""))
        return data


def counted_since(fake: TimedFake, t0: float, token: str) -> Tuple[int, int, int]:
    """(requests, counted, 304) sent with `token` since t0."""
    rs = [r for _, r in fake.since(t0, token)]
    return len(rs), sum(1 for r in rs if r.counted), sum(1 for r in rs if r.status == 304)


# ---------------------------------------------------------------------------
# The measurements
# ---------------------------------------------------------------------------

def measure_idle_and_hup(rig: Rig, size: Dict[str, Any], out: Dict[str, Any]) -> "Daemon":
    """An idle daemon (no labelled issue, poll_interval 30 s as shipped) over
    the idle window; then SIGHUP: latency to the next poll, a valid reload,
    an invalid one refused."""
    d = rig.daemon("queue", paused=True, poll_interval=30).start()
    time.sleep(1.0)  # let the start-up settle (imports done, first metrics written)
    t0 = time.time()
    first = proc_sample(d.pid)
    rss = [first["rss_mb"]]
    while time.time() - t0 < size["idle_window"]:
        time.sleep(max(0.01, min(1.0, size["idle_window"] - (time.time() - t0))))
        d.alive()
        rss.append(proc_sample(d.pid)["rss_mb"])
    last = proc_sample(d.pid)
    window = last["at"] - first["at"]
    n, counted, nm = counted_since(rig.fake, t0, "x")
    out["idle"] = {"window_s": window, "poll_interval_s": 30, "rss_start_mb": first["rss_mb"],
                   "rss_end_mb": last["rss_mb"], "rss_max_mb": max(rss),
                   "cpu_s_per_hour": (last["cpu_s"] - first["cpu_s"]) * 3600 / window,
                   "children_cpu_s_per_hour": (last["children_cpu_s"] - first["children_cpu_s"]) * 3600 / window,
                   "requests": n, "counted": counted, "not_modified": nm}

    # SIGHUP -> poll, several times.
    lat = []
    for _ in range(size["hups"]):
        t = time.time()
        os.kill(d.pid, signal.SIGHUP)
        at, _ = d.next_poll(t, 10)
        lat.append(at - t)
        time.sleep(0.3)
    # A valid change is taken (the poll asks for the new label) ...
    d.write_config(label=LABEL + "-b", poll_interval=30)
    t = time.time()
    os.kill(d.pid, signal.SIGHUP)
    at, r = d.next_poll(t, 10)
    lat.append(at - t)
    reloaded = r.query.get("labels") == LABEL + "-b"
    # ... an invalid one is refused and the last good one kept.
    d.write_config(label=LABEL + "-c", poll_interval=30, broken=True)
    t = time.time()
    os.kill(d.pid, signal.SIGHUP)
    at, r = d.next_poll(t, 10)
    lat.append(at - t)
    kept = r.query.get("labels") == LABEL + "-b" and "config not reloaded" in d.log_tail()
    d.alive()
    out["sighup"] = {"latency_s": lat, "median_s": statistics.median(lat), "max_s": max(lat),
                     "valid_reloaded": reloaded, "invalid_refused_old_kept": kept}
    return d


def measure_cycles(rig: Rig, d: "Daemon", size: Dict[str, Any], out: Dict[str, Any]) -> None:
    """Requests per poll cycle with N pending tasks (the PAUSE file keeps
    them pending), next to the same poll without ETags."""
    d.write_config(poll_interval=size["fast_poll"])
    t = time.time()
    os.kill(d.pid, signal.SIGHUP)
    d.next_poll(t)
    naive = UnconditionalGitHub(REPO, env=rig.gh_env("naive"))
    rows = []
    have = 0
    for n in size["pending"]:
        for i in range(have, n):
            rig.fake.add_issue(f"Bench task {i + 1}", "Something to do.", labels=[LABEL], author="alice")
        have = n
        d.wait(lambda: d.count(tasks.PENDING) == n, 120, f"{n} pending tasks", step=0.2)
        t = time.time()
        d.wait(lambda: len(d.polls_after(t)) >= 2, 60, "two settled polls")  # the intake's look-ups are over
        t0 = d.polls_after(t)[-1][0] + 0.001
        before = proc_sample(d.pid)
        d.wait(lambda: len(d.polls_after(t0)) >= size["cycles"], 60 + 5 * size["cycles"] * size["fast_poll"],
               f"{size['cycles']} polls")
        after = proc_sample(d.pid)
        polls = d.polls_after(t0)[:size["cycles"]]
        t1 = polls[-1][0] + size["fast_poll"] / 2  # the last cycle's other look-ups, if any
        while time.time() < t1:
            time.sleep(0.02)
        rs = [r for at, r in rig.fake.since(t0) if at <= t1]
        cycles = len([r for r in rs if is_poll(r)])
        if d.count(tasks.PENDING) != n:
            raise BenchError(f"the {n} pending tasks did not stay pending\n{d.log_tail()}")
        # The naive poll, same fake, same listing.
        tn = time.time()
        for _ in range(size["cycles"]):
            naive.labelled_issues(LABEL)
        nn, ncounted, _ = counted_since(rig.fake, tn, "naive")
        rows.append({"pending": n, "cycles": cycles, "requests": len(rs),
                     "counted": sum(1 for r in rs if r.counted), "not_modified": sum(1 for r in rs if r.status == 304),
                     "counted_per_cycle": sum(1 for r in rs if r.counted) / cycles,
                     "not_modified_per_cycle": sum(1 for r in rs if r.status == 304) / cycles,
                     "requests_per_cycle": len(rs) / cycles,
                     "naive_counted_per_cycle": ncounted / size["cycles"],
                     "cpu_ms_per_cycle": (after["cpu_s"] - before["cpu_s"]) * 1000 / size["cycles"],
                     "rss_mb": after["rss_mb"]})
    out["cycles"] = rows
    out["cycles_poll_interval_s"] = size["fast_poll"]


def measure_rate_limit(rig: Rig, d: "Daemon", out: Dict[str, Any]) -> None:
    """Fewer than 200 requests left: the poll slows down and the status line
    says why; with the budget back, the poll returns to its pace."""
    def gap() -> float:
        t = time.time()
        first = d.next_poll(t)[0]
        return d.next_poll(first + 0.001, 60)[0] - first
    normal = gap()
    rig.fake.set_rate_limit(150)
    t = time.time()
    d.next_poll(t)  # this poll reads the low budget from the headers
    slow = gap()
    status = d.tasks().status
    rig.fake.set_rate_limit(5000)
    d.next_poll(time.time(), 60)
    after = gap()
    out["rate_limit"] = {"normal_gap_s": normal, "slow_gap_s": slow, "after_gap_s": after, "status": status,
                         "status_says_so": "rate limit" in status}


def measure_owed_notice(rig: Rig, size: Dict[str, Any], out: Dict[str, Any]) -> None:
    """A task that ended, still labelled, whose notice cannot be delivered
    as planned (a person deleted the status comment it edits): what it
    costs per poll cycle until it is delivered."""
    n = rig.fake.add_issue("Owed notice", "Its status comment was deleted.", labels=[LABEL], author="alice")
    d = rig.daemon("owed", paused=True, poll_interval=2.0)
    when = time.strftime(tasks.TIME_FORMAT)
    doc = tasks.TaskFile()
    doc.add(tasks.Task(issue=n, title="Owed notice", state=tasks.COMPLETED, completed=when, attempts=1,
                       comment_id=99999999, finished=when, outbox="pending"))
    d.tasks_path.write_text(tasks.render(doc))
    t0 = time.time()
    d.start(healthy=False)
    window = size["retry_window"]
    while time.time() - t0 < window:
        d.alive()
        time.sleep(0.1)
    rs = rig.fake.since(t0)
    polls = max(1, sum(1 for _, r in rs if is_poll(r)))
    counted = sum(1 for _, r in rs if r.counted)
    delivered = "tac:done" in rig.fake.issue_labels(n)
    out["owed_notice"] = {"window_s": window, "polls": polls, "requests": len(rs), "counted": counted,
                          "counted_per_cycle": counted / polls, "delivered": delivered,
                          "by_kind": sorted({f"{r.method} {r.status}" for _, r in rs})}
    if d.stop() != 0:
        raise BenchError(f"the owed-notice coordinator did not exit cleanly on SIGTERM\n{d.log_tail()}")
    rig.fake.close_issue(n)


def measure_pr_lookup(rig: Rig, size: Dict[str, Any], out: Dict[str, Any]) -> None:
    """Finding the pull requests of K active branches: our one conditional
    listing against one `pulls?head=OWNER:BRANCH` call per branch."""
    ours = coordinator.GitHub(REPO, env=rig.gh_env("ours"))
    naive = coordinator.GitHub(REPO, env=rig.gh_env("naive-pr"))
    made = 0
    rows = []
    for k in size["branches"]:
        branches = [f"auto/gh-{9000 + i}" for i in range(k)]
        for b in branches[made:k:2]:  # every other branch has a PR
            rig.fake.create_pull(b, title=f"PR for {b}")
        made = k
        ours.pull_heads()  # the first call of a run pays once; cycles after it are what repeats
        t, c0 = time.time(), time.perf_counter()
        for _ in range(size["pr_cycles"]):
            heads = ours.pull_heads()
            _ = [heads.get(b, "") for b in branches]
        ours_s = (time.perf_counter() - c0) / size["pr_cycles"]
        on, oc, onm = counted_since(rig.fake, t, "ours")
        t, c0 = time.time(), time.perf_counter()
        for _ in range(size["pr_cycles"]):
            _ = [naive.pulls_for_head(b) for b in branches]
        naive_s = (time.perf_counter() - c0) / size["pr_cycles"]
        nn, nc, _ = counted_since(rig.fake, t, "naive-pr")
        rows.append({"branches": k, "cycles": size["pr_cycles"],
                     "ours_requests_per_cycle": on / size["pr_cycles"], "ours_counted_per_cycle": oc / size["pr_cycles"],
                     "naive_requests_per_cycle": nn / size["pr_cycles"], "naive_counted_per_cycle": nc / size["pr_cycles"],
                     "ours_s_per_cycle": ours_s, "naive_s_per_cycle": naive_s})
    out["pr_lookup"] = rows


def measure_latency(rig: Rig, size: Dict[str, Any], out: Dict[str, Any]) -> None:
    """Label -> worker start, and worker exit -> tasks.md Completed, comment
    posted, label swapped; one issue at a time."""
    d = rig.daemon("latency", poll_interval=size["latency_poll"]).start()
    rss0 = proc_sample(d.pid)["rss_mb"]
    runs = []
    for i in range(size["runs"]):
        t_label = time.time()
        n = rig.fake.add_issue(f"Latency run {i + 1}", "Add a line.", labels=[LABEL], author="alice")
        start = d.wait(lambda: d.trace_times(n)[0], 30, f"gh-{n} to start", step=0.005)
        end = d.wait(lambda: d.trace_times(n)[1], 60, f"gh-{n} to exit", step=0.005)
        state_at = _watch_state(d, n, 30)
        labels_at = d.wait(lambda: _request_at(rig.fake, end, "POST", f"/repos/{REPO}/issues/{n}/labels"),
                           30, f"gh-{n} label swap", step=0.01)
        cid = (rig.fake.comments(n) or [{}])[0].get("id")
        comment_at = (_request_at(rig.fake, end, "PATCH", f"/repos/{REPO}/issues/comments/{cid}")
                      or _request_at(rig.fake, end, "POST", f"/repos/{REPO}/issues/{n}/comments"))
        if comment_at is None or "✅" not in rig.fake.comments(n)[0]["body"]:
            raise BenchError(f"gh-{n}: no completion comment\n{d.log_tail()}")
        runs.append({"issue": n, "label_to_start_s": start - t_label, "exit_to_tasks_md_s": state_at - end,
                     "exit_to_comment_s": comment_at - end, "exit_to_labels_s": labels_at - end})
    d.alive()
    rss1 = proc_sample(d.pid)["rss_mb"]

    # GitHub down just as a worker ends: the finish waits for GitHub; how
    # often does it ask meanwhile?
    n = rig.fake.add_issue("Ends during an outage", "Add a line.", labels=[LABEL], author="alice")
    d.wait(lambda: d.trace_times(n)[0], 30, f"gh-{n} to start", step=0.005)
    rig.fake.set_outage(502)
    try:
        d.wait(lambda: d.trace_times(n)[1], 60, f"gh-{n} to exit", step=0.005)
        time.sleep(0.2)
        t0 = time.time()
        time.sleep(size["retry_window"])
        asked = len(rig.fake.since(t0))
    finally:
        rig.fake.set_outage(None)
    _watch_state(d, n, 60)  # and it finishes once GitHub is back
    outage = {"window_s": size["retry_window"], "requests": asked, "per_s": asked / size["retry_window"]}
    if d.stop() != 0:
        raise BenchError(f"the latency coordinator did not exit cleanly on SIGTERM\n{d.log_tail()}")

    def stats(key: str) -> Dict[str, float]:
        values = [r[key] for r in runs]
        return {"median_s": statistics.median(values), "max_s": max(values)}
    out["outage_finish"] = outage
    out["latency"] = {"runs": runs, "poll_interval_s": size["latency_poll"], "rss_first_mb": rss0,
                      "rss_last_mb": rss1, **{k: stats(k) for k in runs[0] if k.endswith("_s")}}


def _watch_state(d: "Daemon", n: int, timeout: float) -> float:
    """When tasks.md first showed gh-N Completed: stat every 2 ms, parse on change."""
    deadline, seen = time.time() + timeout, None
    while time.time() < deadline:
        try:
            st = os.stat(d.tasks_path)
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            key = None
        if key != seen:
            seen = key
            now = time.time()
            t = d.tasks().governing(n)
            if t is not None and t.state == tasks.COMPLETED:
                return now
        time.sleep(0.002)
    d.alive()
    raise BenchError(f"gh-{n} never showed as Completed in tasks.md\n{d.log_tail()}")


def _request_at(fake: TimedFake, t0: float, method: str, path: str) -> Optional[float]:
    for at, r in fake.since(t0):
        if r.method == method and r.path == path and r.status < 300:
            return at
    return None


def sample_taskfile(n: int, ended_only: bool = False) -> tasks.TaskFile:
    """A tasks.md of n entries shaped like a long-running queue: mostly
    ended entries with their details, some pending, a few active (none of
    those with ended_only: a daemon would act on them)."""
    doc = tasks.TaskFile(status="running · 3 active · 100 pending")
    day = time.strftime(tasks.TIME_FORMAT)  # today: the daemon's archive leaves them in place
    for i in range(1, n + 1):
        kind = i % 20 if not ended_only else i % 17
        t = tasks.Task(issue=i, title=f"Fix the widget frobnicator, part {i}", priority=i % 4,
                       body_sha=f"{i:040x}"[:12], attempts=1)
        if kind < 12:
            t.state, t.commit, t.worker = tasks.COMPLETED, f"{i:07x}", f"w-{i:06x}"
            t.completed, t.pr, t.branch = day, f"https://github.com/{REPO}/pull/{i}", f"auto/gh-{i}"
            t.finished = day
        elif kind < 15:
            t.state, t.reason, t.worker = tasks.FAILED, "exit status 1 after 12m (no result)", f"w-{i:06x}"
            t.finished = day
        elif kind < 17:
            t.state, t.reason = tasks.BLOCKED, "needs the staging credentials"
        elif kind < 19:
            t.state, t.attempts = tasks.PENDING, 0
        else:
            t.state, t.worker, t.pid, t.pid_start = tasks.ACTIVE, f"w-{i:06x}", 1000 + i, 123456
            t.started, t.branch, t.worktree = day, f"auto/gh-{i}", f"/srv/tac/trees/gh-{i}"
            t.log, t.log_offset, t.comment_id = f"/srv/tac/logs/gh-{i}.jsonl", 0, 5000 + i
        doc.tasks.append(t)
    return doc


def taskfile_timings(sizes: List[int], repeats: int) -> List[Dict[str, float]]:
    """Median parse and render times of sample tasks.md files, in this process."""
    rows = []
    for n in sizes:
        text = tasks.render(sample_taskfile(n))
        parse_t, render_t, parse_cpu, render_cpu = [], [], [], []
        for _ in range(repeats):
            c, p = time.perf_counter(), time.process_time()
            doc, problems = tasks.parse(text)
            parse_t.append(time.perf_counter() - c)
            parse_cpu.append(time.process_time() - p)
            c, p = time.perf_counter(), time.process_time()
            again = tasks.render(doc)
            render_t.append(time.perf_counter() - c)
            render_cpu.append(time.process_time() - p)
            del doc
        if problems or again != text:
            raise BenchError(f"tasks.md of {n} entries did not round-trip: {problems[:3]}")
        rows.append({"entries": n, "bytes": len(text.encode()), "parse_s": statistics.median(parse_t),
                     "render_s": statistics.median(render_t), "parse_cpu_s": statistics.median(parse_cpu),
                     "render_cpu_s": statistics.median(render_cpu)})
    return rows


def measure_taskfile(size: Dict[str, Any], out: Dict[str, Any]) -> None:
    """In a fresh interpreter, as the daemon and the tools run it: in this
    process, full of the fake's records, each garbage collection during a
    parse would walk all of them too."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import run; "
            "print(json.dumps(run.taskfile_timings(json.loads(sys.argv[2]), int(sys.argv[3]))))")
    proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parent),
                           json.dumps(list(size["task_sizes"])), str(size["parse_repeats"])],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"tasks.md timing failed: {proc.stderr[-2000:]}")
    out["taskfile"] = json.loads(proc.stdout)


def measure_big_taskfile(rig: Rig, size: Dict[str, Any], out: Dict[str, Any]) -> None:
    """An idle daemon whose tasks.md holds many ended entries: what each
    poll cycle costs it when the file is big."""
    n = size["task_sizes"][-1]
    d = rig.daemon("big", paused=True, poll_interval=size["fast_poll"])
    d.tasks_path.write_text(tasks.render(sample_taskfile(n, ended_only=True)))
    d.start()
    t = time.time()
    d.wait(lambda: d.polls_after(t), 60, "a poll")
    t0 = time.time()
    before = proc_sample(d.pid)
    d.wait(lambda: len(d.polls_after(t0)) >= size["cycles"], 60 + 5 * size["cycles"] * size["fast_poll"],
           f"{size['cycles']} polls")
    after = proc_sample(d.pid)
    cycles = len(d.polls_after(t0))
    if len(d.tasks().tasks) != n:
        raise BenchError(f"the big tasks.md lost entries\n{d.log_tail()}")
    out["big_taskfile"] = {"entries": n, "cycles": cycles, "poll_interval_s": size["fast_poll"],
                           "cpu_ms_per_cycle": (after["cpu_s"] - before["cpu_s"]) * 1000 / cycles,
                           "rss_mb": after["rss_mb"]}
    if d.stop() != 0:
        raise BenchError(f"the big-file coordinator did not exit cleanly on SIGTERM\n{d.log_tail()}")


# A child's peak RSS from wait4 includes the memory of the process that
# forked it (Linux carries the high-water mark across exec), so the child is
# forked by this small runner rather than by the benchmark with its fake.
RUNNER = """
import os, sys, time
t = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execv(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write("%r %d %d" % (time.perf_counter() - t, usage.ru_maxrss, os.waitstatus_to_exitcode(status)))
"""


def _timed_run(argv: List[str], env: Optional[Dict[str, str]] = None,
               ok: Tuple[int, ...] = (0,)) -> Tuple[float, float]:
    """(wall seconds, peak RSS MB) of one run of argv, output discarded;
    an exit status outside ``ok`` is a BenchError."""
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as result:
        subprocess.run([sys.executable, "-c", RUNNER, result.name, *argv], env=env,
                       stdout=subprocess.DEVNULL, stderr=err, check=False)
        wall, rss_kb, code = result.read().split()
        if int(code) not in ok:
            err.seek(0)
            raise BenchError(f"{' '.join(argv[:3])} ... exited {code}: {err.read().decode(errors='replace')[-1000:]}")
    return float(wall), int(rss_kb) / 1024


def measure_status(rig: Rig, d: "Daemon", size: Dict[str, Any], out: Dict[str, Any]) -> None:
    """status.py against the queue daemon's state (its tasks.md, metrics.json)."""
    env = dict(rig.env, NO_COLOR="1", COLUMNS="80")
    health = (0, 1, 2)  # status.py's exit status is the health level (the paused daemon: 1)
    runs = {"text": [], "json": [], "floor": []}
    for _ in range(size["status_runs"]):
        runs["text"].append(_timed_run([sys.executable, str(STATUS), "--config", str(d.config_path)], env, health)[0])
        runs["json"].append(_timed_run([sys.executable, str(STATUS), "--config", str(d.config_path), "--json"], env,
                                       health)[0])
        runs["floor"].append(_timed_run([sys.executable, "-c", "pass"], env)[0])
    out["status"] = {k: statistics.median(v) for k, v in runs.items()}
    out["status"]["runs"] = size["status_runs"]
    out["status"]["tasks"] = len(d.tasks().tasks)


def write_big_log(path: Path, size_bytes: int) -> int:
    """A stream-json transcript of about size_bytes: many turns, each with a
    tool result of 1-48 KB, as `cat` of source files makes them."""
    line_of_code = "".join(chr(97 + (k * 7) % 26) for k in range(99)) + "\n"
    written, turn = 0, 0
    usage = {"input_tokens": 100, "output_tokens": 50, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps({"type": "system", "subtype": "init", "session_id": "s", "model": "claude-sonnet-4-6",
                            "tools": ["Bash", "Read"], "cwd": "/srv/tac/trees/gh-1"}) + "\n")
        while written < size_bytes:
            msg = {"id": f"msg_{turn}", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
                   "usage": usage}
            events = (
                {"type": "assistant", "message": dict(msg, content=[
                    {"type": "text", "text": f"Step {turn}: reading the next file."}])},
                {"type": "assistant", "message": dict(msg, content=[
                    {"type": "tool_use", "id": f"toolu_{turn}", "name": "Bash",
                     "input": {"command": f"cat src/module_{turn}.py"}}])},
                {"type": "user", "message": {"role": "user", "content": [
                    {"tool_use_id": f"toolu_{turn}", "type": "tool_result", "is_error": False,
                     "content": line_of_code * (10 + (turn * 37) % 480)}]}},
            )
            for ev in events:
                line = json.dumps(ev) + "\n"
                f.write(line)
                written += len(line)
            turn += 1
        f.write(json.dumps({"type": "result", "subtype": "success", "is_error": False, "total_cost_usd": 1.5,
                            "num_turns": turn, "duration_ms": 60000, "usage": usage}) + "\n")
    return turn


NAIVE_VIEW = "import json,sys; lines=open(sys.argv[1],'rb').readlines(); print(len(lines))"


def measure_viewer(rig: Rig, size: Dict[str, Any], out: Dict[str, Any]) -> Path:
    """view_worker on a big log; the log is left for the dashboard's turn."""
    path = rig.tmp / "big.jsonl"
    turns = write_big_log(path, size["log_mb"] * 1024 * 1024)
    env = dict(rig.env, NO_COLOR="1", COLUMNS="100")
    wall, rss = _timed_run([sys.executable, str(VIEWER), "--log", str(path)], env)
    nwall, nrss = _timed_run([sys.executable, "-c", NAIVE_VIEW, str(path)], env)
    out["viewer"] = {"log_mb": path.stat().st_size / 1024 / 1024, "turns": turns, "wall_s": wall,
                     "max_rss_mb": rss, "naive_wall_s": nwall, "naive_max_rss_mb": nrss,
                     "mb_per_s": path.stat().st_size / 1024 / 1024 / wall}
    return path


# ---------------------------------------------------------------------------
# The dashboard: a big ledger, a big transcript
# ---------------------------------------------------------------------------

# The naive dashboard: the same server and pages, but every page reads the
# whole ledger again, twice (status.collect's own spend totals, then the
# runs), as calling the tools' functions as they are would.
NAIVE_DASHBOARD = """
import sys
sys.path.insert(0, sys.argv[1])
import dashboard

class Fresh(dashboard.LedgerCache):
    def refresh(self):
        self._reset(None)
        return super().refresh()

def facts(self, now):
    runs, corrupt, exists = self.ledger.refresh()
    return dashboard.status.collect(self.cfg, now), runs, exists

dashboard.LedgerCache = Fresh
dashboard.Dashboard.facts = facts
sys.exit(dashboard.main(sys.argv[2:]))
"""


def dashboard_state(folder: Path, runs: int, now: float) -> Path:
    """A state folder as a daemon leaves it after months: sample_taskfile(100)
    as tasks.md, a fresh metrics.json and a ledger of `runs` runs over the
    last 120 days (about 750 bytes a line, as the daemon writes them)."""
    (folder / "logs").mkdir(parents=True)
    config = folder / "config.toml"
    config.write_text(f'[github]\nrepo = "{REPO}"\n\n[budget]\ndaily_usd = 20\nmonthly_usd = 400\n')
    doc = sample_taskfile(100)
    (folder / "tasks.md").write_text(tasks.render(doc))
    data = metrics.initial(pid=os.getpid(), started_at=now - 86400, poll_interval=30, max_concurrent=3)
    data.update(updated_at=now, last_poll_at=now, last_poll_ok=True)
    data["active"] = [{"issue": t.issue, "title": t.title, "pid": t.pid, "started_at": now - 600, "attempt": 1,
                       "cost_usd": 0.42, "last_tool": "Bash: pytest -q", "log": t.log}
                      for t in doc.in_state(tasks.ACTIVE)]
    metrics.write(folder / "metrics.json", data)
    outcomes = ("completed",) * 6 + ("failed", "failed", "blocked", "startup_error")
    with open(folder / "logs" / "usage.jsonl", "w") as f:
        for i in range(runs):
            t = now - 120 * 86400 * (runs - i) / runs
            usage = {"claude-sonnet-4-6": {"inputTokens": 40, "outputTokens": 9000 + i % 977,
                                           "cacheReadInputTokens": 140000, "cacheCreationInputTokens": 15000,
                                           "webSearchRequests": 0, "costUSD": 0.4 + (i % 89) / 100,
                                           "contextWindow": 200000, "maxOutputTokens": 32000}}
            f.write(json.dumps(ledger.stamp({
                "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)), "issue": 1 + i % 100, "attempt": 1,
                "session_id": f"{i:08x}-1604-42fa-b337-05776bd94ddd", "models": ["claude-sonnet-4-6"],
                "input_tokens": 40, "output_tokens": 9000 + i % 977, "cache_creation_tokens": 15000,
                "cache_read_tokens": 140000, "total_tokens": 164040 + i % 977, "cost_usd": 0.4 + (i % 89) / 100,
                "cost_source": "result", "num_turns": 12, "duration_ms": 60000 + (i * 7919) % 1800000,
                "subtype": "success", "is_error": False, "exit_reason": "completed", "api_retries": 0,
                "outcome": outcomes[i % len(outcomes)], "model_usage": usage}, t)) + "\n")
    return config


class DashboardProcess:
    """The dashboard (or its naive twin) as a process on a free port."""

    def __init__(self, argv: List[str], env: Dict[str, str]):
        self.proc = subprocess.Popen(argv + ["--port", "0"], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"http://[^:]+:(\d+)/", line)
        if not m:
            self.proc.kill()
            raise BenchError(f"the dashboard did not start: {line!r} {self.proc.stderr.read()[-2000:]}")
        self.port = int(m.group(1))

    def get(self, path: str) -> Tuple[float, int]:
        """(seconds, bytes) of one page, read to its end."""
        import http.client
        t = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        conn.request("GET", path)
        r = conn.getresponse()
        size = 0
        while True:
            chunk = r.read(1 << 20)
            if not chunk:
                break
            size += len(chunk)
        conn.close()
        if r.status != 200:
            raise BenchError(f"the dashboard answered {r.status} for {path}")
        return time.perf_counter() - t, size

    def memory_mb(self) -> Tuple[float, float]:
        """(RSS, peak RSS) in MB."""
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def measure_dashboard(rig: Rig, size: Dict[str, Any], out: Dict[str, Any], big_log: Path) -> None:
    folder = rig.tmp / "dashboard"
    config = dashboard_state(folder, size["ledger_runs"], time.time())
    os.replace(big_log, folder / "logs" / "gh-1.jsonl")   # issue 1 is a completed task
    ours = DashboardProcess([sys.executable, str(DASHBOARD), "--config", str(config)], rig.env)
    naive = DashboardProcess([sys.executable, "-c", NAIVE_DASHBOARD, str(DASHBOARD.parent), "--config", str(config)],
                             rig.env)
    try:
        first_s, _ = ours.get("/")
        naive.get("/")
        pages: Dict[str, Dict[str, float]] = {}
        for path in ("/", "/?range=all"):
            mine = [ours.get(path)[0] for _ in range(size["pages"])]
            theirs = [naive.get(path)[0] for _ in range(size["pages"])]
            pages[path] = {"ours_s": statistics.median(mine), "naive_s": statistics.median(theirs)}
        rss, peak = ours.memory_mb()
        naive_rss, _ = naive.memory_mb()
        before, _ = ours.memory_mb()
        wall, sent = ours.get("/issue/1")
        after, peak_after = ours.memory_mb()
    finally:
        ours.stop()
        naive.stop()
    log_mb = (folder / "logs" / "gh-1.jsonl").stat().st_size / 1024 / 1024
    out["dashboard"] = {"runs": size["ledger_runs"], "tasks": 100, "pages": size["pages"], "first_s": first_s,
                        "overview": pages["/"], "overview_all": pages["/?range=all"], "rss_mb": rss,
                        "peak_rss_mb": peak, "naive_rss_mb": naive_rss, "log_mb": log_mb,
                        "transcript_s": wall, "transcript_sent_mb": sent / 1024 / 1024,
                        "transcript_rss_before_mb": before, "transcript_peak_rss_mb": peak_after}
    (folder / "logs" / "gh-1.jsonl").unlink()


# ---------------------------------------------------------------------------
# Throughput (issue #13): intake, a loop that never waits, cost per task
# ---------------------------------------------------------------------------

FAST = {"turns": 1, "commit": "x.txt"}  # a worker that finishes at once
LIST_RE = "^" + re.escape(LIST_PATH) + "$"
# Endpoints as endpoint() names them.
LIST_EP, FEED_EP = "GET /repos/{o}/{r}/issues", "GET /repos/{o}/{r}/issues/events"
PULLS_EP = "GET /repos/{o}/{r}/pulls"  # the follow-up watch's conditional list of PRs by update (#14)
ISSUE_EVENTS_EP, PERMISSION_EP = "GET /repos/{o}/{r}/issues/{n}/events", "GET /repos/{o}/{r}/collaborators/{login}/permission"
INTAKE_KINDS = (("list pages", LIST_EP), ("feed pages", FEED_EP), ("per-issue events", ISSUE_EVENTS_EP),
                ("permission checks", PERMISSION_EP))


def endpoint(r: RequestRecord) -> str:
    """"METHOD /repos/{o}/{r}/..." with numbers, logins and label names as
    placeholders. A list's later pages (/repositories/ID/...) count as the list."""
    path = re.sub(r"^/repositories/\d+", "/repos/{o}/{r}", r.path).replace(f"/repos/{REPO}", "/repos/{o}/{r}")
    path = re.sub(r"/(issues|pulls)/\d+", r"/\1/{n}", path)
    path = re.sub(r"/comments/\d+", "/comments/{id}", path)
    path = re.sub(r"/collaborators/[^/]+", "/collaborators/{login}", path)
    path = re.sub(r"/labels/[^/]+$", "/labels/{name}", path)
    return f"{r.method} {path}"


def by_endpoint(records: List[RequestRecord]) -> Dict[str, int]:
    """Counted requests per endpoint, most first."""
    counts: Dict[str, int] = {}
    for r in records:
        if r.counted:
            counts[endpoint(r)] = counts.get(endpoint(r), 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def intake_kinds(records: List[RequestRecord]) -> Dict[str, int]:
    """Counted requests by what an intake asks: list pages, feed pages,
    per-issue events, permission checks, other."""
    counts = by_endpoint(records)
    out = {name: counts.pop(ep, 0) for name, ep in INTAKE_KINDS}
    out["other"] = sum(counts.values())
    return out


def watch_tasks(d: "Daemon", until: Callable[[tasks.TaskFile], bool], timeout: float, what: str,
                each: Optional[Callable[[tasks.TaskFile, float], None]] = None) -> float:
    """Stat tasks.md every 2 ms and parse it when it changed (the daemon
    replaces it whole, by rename); `each(doc, seen_at)` sees every version.
    Returns when `until(doc)` first held."""
    deadline, seen = time.time() + timeout, None
    while time.time() < deadline:
        try:
            st = os.stat(d.tasks_path)
            key: Any = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            key = None
        if key is not None and key != seen:
            seen, now = key, time.time()
            doc = d.tasks()
            if each is not None:
                each(doc, now)
            if until(doc):
                return now
        else:
            d.alive()
            time.sleep(0.002)
    d.alive()
    raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}\n--- log ---\n{d.log_tail()}")


def add_issues(rig: Rig, n: int, title: str) -> List[int]:
    return [rig.fake.add_issue(f"{title} {i + 1}", "Add a line.", labels=[LABEL], author="alice") for i in range(n)]


def intake_look_ups(rig: Rig, token: str, feed: bool) -> Dict[str, Any]:
    """The look-ups of an intake, made by the daemon's GitHub client with
    its own token: the listing, who applied the label to each issue (feed:
    from the events feed first, as the daemon does; else one per-issue
    events call each, the naive way) and whether they may."""
    gh = coordinator.GitHub(REPO, env=rig.gh_env(token))
    t, c = time.time(), time.perf_counter()
    listing = gh.labelled_issues(LABEL)
    if feed:
        gh.labellers(LABEL, listing)
    trusted = 0
    for issue in listing:
        who = gh.labeller(issue["number"], LABEL, issue.get("updated_at", ""))
        if who and gh.permission(who[0]) in ("admin", "write", "maintain"):
            trusted += 1
    wall = time.perf_counter() - c
    records = [r for _, r in rig.fake.since(t, token)]
    return {"wall_s": wall, "trusted": trusted, "requests": len(records),
            "counted": sum(1 for r in records if r.counted), "by_kind": intake_kinds(records)}


def measure_intake(size: Dict[str, Any], out: Dict[str, Any]) -> None:
    """N newly labelled issues and a PAUSE file, so nothing starts: the
    daemon from its start to all N queued in tasks.md, the requests it made
    by kind; beside it the same look-ups made the naive way (one per-issue
    events call each) by the client, against the same fake. Then the
    daemon's peak RSS with the N tasks in tasks.md, after a few ran."""
    n, ran = size["intake_issues"], size["rss_runs"]
    rig = Rig()
    try:
        add_issues(rig, n, "Bulk task")
        d = rig.daemon("intake", paused=True, poll_interval=30, max_concurrent=2)
        d.script({"default": FAST})
        t0 = d.launch()
        queued_at = watch_tasks(d, lambda doc: len(doc.in_state(tasks.PENDING)) == n, 60 + n / 10,
                                f"{n} issues queued")
        mine = [(t, r) for t, r in rig.fake.since(t0) if t <= queued_at]
        if not mine:
            raise BenchError("the intake daemon queued issues without asking GitHub")
        counted = [r for _, r in mine if r.counted]
        rss_queued, peak_queued = peak_rss_mb(d.pid)
        ours = intake_look_ups(rig, "intake-ours", feed=True)
        naive = intake_look_ups(rig, "intake-naive", feed=False)
        if not ours["trusted"] == naive["trusted"] == n:
            raise BenchError(f"the look-ups trusted {ours['trusted']} (feed) and {naive['trusted']} (per issue)"
                             f" of {n} issues")
        # Now let some of them run: the peak RSS with N tasks is the daemon's working size, not its idle one.
        (d.dir / "PAUSE").unlink()
        os.kill(d.pid, signal.SIGHUP)
        watch_tasks(d, lambda doc: len(doc.in_state(tasks.COMPLETED)) >= ran, 60 + 10 * ran,
                    f"{ran} of the {n} tasks to complete")
        rss, peak = peak_rss_mb(d.pid)
        if d.stop() != 0:
            raise BenchError(f"the intake coordinator did not exit cleanly on SIGTERM\n{d.log_tail()}")
    finally:
        rig.close()
    out["intake"] = {"issues": n, "queued_s": queued_at - t0, "first_request_s": mine[0][0] - t0,
                     "requests": len(mine), "counted": len(counted), "by_kind": intake_kinds(counted),
                     "by_endpoint": by_endpoint(counted), "floor_list_pages": -(-n // 100),
                     "floor_feed_pages": -(-n // 100), "ours_look_ups": ours, "naive_look_ups": naive,
                     "rss_queued_mb": rss_queued, "peak_rss_queued_mb": peak_queued, "ran": ran,
                     "rss_mb": rss, "peak_rss_mb": peak}


def slow_fetch(clone: Path, origin: Path, seconds: Optional[float]) -> None:
    """Fetching from origin takes `seconds` (pushing does not): git's ext::
    transport runs git-upload-pack (%S) after a sleep. None: origin as it was."""
    if seconds is None:
        git("remote", "set-url", "origin", str(origin), cwd=clone)
        return
    git("config", "protocol.ext.allow", "always", cwd=clone)
    git("remote", "set-url", "origin", f"ext::sh -c sleep% {seconds:g};exec% %S% {origin}", cwd=clone)
    git("remote", "set-url", "--push", "origin", str(origin), cwd=clone)


def exit_while_poll_hangs(rig: Rig, size: Dict[str, Any], threads: int) -> List[float]:
    """Worker exit -> tasks.md Completed while GitHub holds the poll of the
    issue list for `hang` seconds; one issue at a time."""
    hang = size["hang"]
    d = rig.daemon(f"poll-hangs-{threads}", poll_interval=0.5, job_threads=threads)
    d.script({"default": {"commit": "fix.txt", "sleep": size["loop_sleep"]}})
    d.start()
    lat = []
    for i in range(size["loop_runs"]):
        n = rig.fake.add_issue(f"Ends while a poll hangs {i + 1}", "Add a line.", labels=[LABEL], author="alice")
        d.wait(lambda: d.trace_times(n)[0], 30, f"gh-{n} to start", step=0.005)
        rig.fake.delay(LIST_RE, hang)
        try:
            end = d.wait(lambda: d.trace_times(n)[1], 60, f"gh-{n} to exit", step=0.005)
            if not rig.fake.in_flight(end, "GET", LIST_PATH):
                raise BenchError(f"no poll was held up when gh-{n}'s worker exited: the figure would mean nothing")
            lat.append(_watch_state(d, n, hang + 60) - end)
        finally:
            rig.fake.delay(LIST_RE, 0)
        d.wait(lambda: not rig.fake.in_flight(time.time(), "GET", LIST_PATH), hang + 30, "the held poll to return")
    if d.stop() != 0:
        raise BenchError(f"the poll-hangs coordinator did not exit cleanly on SIGTERM\n{d.log_tail()}")
    return lat


def exit_while_fetch_is_slow(rig: Rig, size: Dict[str, Any], threads: int) -> List[float]:
    """Worker exit -> tasks.md Completed while the start of a second issue
    fetches from a remote that takes `hang` seconds."""
    hang = size["hang"]
    d = rig.daemon(f"fetch-slow-{threads}", poll_interval=0.5, max_concurrent=2, job_threads=threads)
    d.start()
    lat = []
    for i in range(size["loop_runs"]):
        first = rig.fake.add_issue(f"Already running {i + 1}", "Add a line.", author="alice")
        d.script({"default": FAST, str(first): {"commit": "fix.txt", "sleep": size["loop_sleep"]}})
        rig.fake.label_issue(first, LABEL, "alice")
        d.wait(lambda: d.trace_times(first)[0], 30, f"gh-{first} to start", step=0.005)
        slow_fetch(rig.clone, rig.origin, hang)
        try:
            second = rig.fake.add_issue(f"Starts from a slow remote {i + 1}", "Add a line.", labels=[LABEL],
                                        author="alice")
            fetching = d.wait(lambda: (d.tasks().governing(second) or tasks.Task(0, "")).state == tasks.ACTIVE
                              and time.time(), 30, f"gh-{second} to start fetching", step=0.005)
            end = d.wait(lambda: d.trace_times(first)[1], 60, f"gh-{first} to exit", step=0.005)
            began = d.trace_times(second)[0]
            if fetching > end or (began is not None and began < end):
                raise BenchError(f"gh-{second} was not fetching when gh-{first}'s worker exited: "
                                 "the figure would mean nothing")
            lat.append(_watch_state(d, first, hang + 60) - end)
        finally:
            slow_fetch(rig.clone, rig.origin, None)
        _watch_state(d, second, hang + 60)
    if d.stop() != 0:
        raise BenchError(f"the slow-fetch coordinator did not exit cleanly on SIGTERM\n{d.log_tail()}")
    return lat


def exit_while_intake(size: Dict[str, Any], threads: int) -> List[float]:
    """Worker exit -> tasks.md Completed while the daemon takes in N newly
    labelled issues: the worker waits for a file, which this script writes
    once the poll that finds them has reached the fake (a SIGHUP asks for
    it). A fresh project each run, so each intake is N new issues."""
    n, lat = size["loop_intake"], []
    for i in range(size["loop_runs"]):
        rig = Rig()
        try:
            first = rig.fake.add_issue(f"Ends during an intake {i + 1}", "Add a line.", labels=[LABEL], author="alice")
            d = rig.daemon(f"intake-exit-{threads}", poll_interval=30, job_threads=threads)
            release = d.dir / "release"
            d.script({"default": {"commit": "fix.txt", "wait_for": str(release)}})
            d.start()
            d.wait(lambda: d.trace_times(first)[0], 30, f"gh-{first} to start", step=0.005)
            add_issues(rig, n, "Bulk task")
            t = time.time()
            os.kill(d.pid, signal.SIGHUP)  # a poll at once: the intake
            d.wait(lambda: any(at >= t and who == "x" and (m, p) == ("GET", LIST_PATH)
                               for at, who, m, p in list(rig.fake.arrived)), 30, "the intake's poll", step=0.002)
            release.write_text("end now\n")
            seen: Dict[str, float] = {}

            def note(doc: tasks.TaskFile, at: float) -> None:
                if len(doc.tasks) > n:
                    seen.setdefault("queued", at)
                if (doc.governing(first) or tasks.Task(0, "")).state == tasks.COMPLETED:
                    seen.setdefault("completed", at)
            watch_tasks(d, lambda doc: len(seen) == 2, 60 + n / 10, f"gh-{first} completed and {n} queued", each=note)
            end = d.trace_times(first)[1]
            if end is None or seen["queued"] < end:
                raise BenchError(f"the intake of {n} issues was over before gh-{first}'s worker exited: "
                                 "the figure would mean nothing")
            lat.append(seen["completed"] - end)
            if d.stop() != 0:
                raise BenchError(f"the intake-exit coordinator did not exit cleanly on SIGTERM\n{d.log_tail()}")
        finally:
            rig.close()
    return lat


def measure_loop(size: Dict[str, Any], out: Dict[str, Any]) -> None:
    """A worker's exit acted on (tasks.md Completed) while something slow
    is under way (an intake of N issues, a poll GitHub holds, a start that
    fetches from a slow remote): ours runs slow git and gh work in job threads
    (job_threads = 4), the naive daemon on its loop (job_threads = 0)."""
    result: Dict[str, Any] = {"hang_s": size["hang"], "runs": size["loop_runs"], "worker_sleep_s": size["loop_sleep"]}
    result["intake_issues"] = size["loop_intake"]
    for name, scenario in (("intake", None), ("poll_hangs", exit_while_poll_hangs),
                           ("fetch_slow", exit_while_fetch_is_slow)):
        result[name] = {}
        for variant, threads in (("ours", 4), ("naive", 0)):
            if scenario is None:
                lat = exit_while_intake(size, threads)
            else:
                rig = Rig()
                try:
                    lat = scenario(rig, size, threads)
                finally:
                    rig.close()
            result[name][variant] = {"job_threads": threads, "runs_s": lat, "median_s": statistics.median(lat),
                                     "max_s": max(lat)}
    out["loop"] = result


def measure_per_task(size: Dict[str, Any], out: Dict[str, Any]) -> None:
    """N queued tasks (a PAUSE file until all are queued), a worker that
    finishes at once, max_concurrent 2, no progress edits: the wall time
    from un-pausing to the last Completed, the workers' own time from
    $TAC_TRACE, what each task spent outside its worker (Active ->
    Completed in tasks.md), and every counted request of the run by
    endpoint; ours (job_threads 4) next to job_threads 0. The daemon's peak
    RSS at the end."""
    n, slots, poll = size["overhead_tasks"], 2, 2.0
    result: Dict[str, Any] = {"tasks": n, "max_concurrent": slots, "poll_interval_s": poll}
    for variant, threads in (("ours", 4), ("naive", 0)):
        rig = Rig()
        try:
            issues = add_issues(rig, n, "Quick task")
            d = rig.daemon(f"per-task-{threads}", paused=True, poll_interval=poll, max_concurrent=slots,
                           job_threads=threads, progress_every=0)
            d.script({"default": FAST})
            launched = d.launch()
            watch_tasks(d, lambda doc: len(doc.in_state(tasks.PENDING)) == n, 60 + n / 10, f"{n} tasks queued")
            active: Dict[int, float] = {}
            completed: Dict[int, float] = {}

            def note(doc: tasks.TaskFile, at: float) -> None:
                for t in doc.tasks:
                    if t.state == tasks.ACTIVE:
                        active.setdefault(t.issue, at)
                    elif t.state == tasks.COMPLETED:
                        completed.setdefault(t.issue, at)
            t0 = time.time()
            (d.dir / "PAUSE").unlink()
            os.kill(d.pid, signal.SIGHUP)  # a reload polls and dispatches at once
            last = watch_tasks(d, lambda doc: len(doc.in_state(tasks.COMPLETED)) == n, 60 + 5 * n,
                               f"{n} tasks completed", each=note)
            # Every issue told (the notices follow the outcome), then the poll that sees it.
            told = d.wait(lambda: all("tac:done" in rig.fake.issue_labels(i) for i in issues) and time.time(),
                          60 + n, "every issue told", step=0.1)
            d.next_poll(told)
            time.sleep(0.3)  # that poll's other pages
            records = [r for _, r in rig.fake.since(launched)]
            rss, peak = peak_rss_mb(d.pid)
            runs = d.traces()
            if d.stop() != 0:
                raise BenchError(f"the per-task coordinator did not exit cleanly on SIGTERM\n{d.log_tail()}")
        finally:
            rig.close()
        if sorted(runs) != sorted(issues) or any(end is None for _, end in runs.values()):
            raise BenchError(f"{len(runs)} worker runs traced for {n} tasks")
        wall = last - t0
        workers = sum(end - start for start, end in runs.values())
        outside = [completed[i] - active[i] - (runs[i][1] - runs[i][0]) for i in issues if i in active]
        if len(outside) < n / 2:
            raise BenchError(f"only {len(outside)} of {n} tasks were seen Active in tasks.md")
        counted = by_endpoint(records)
        polls = sum(v for k, v in counted.items() if k in (LIST_EP, FEED_EP, PULLS_EP))
        total = sum(counted.values())
        result[variant] = {
            "job_threads": threads, "wall_s": wall, "workers_s": workers, "wall_per_task_s": wall / n,
            "overhead_per_task_s": (wall - workers / slots) / n,
            "outside_worker_median_s": statistics.median(outside), "outside_worker_max_s": max(outside),
            "counted": total, "counted_per_task": total / n, "polls_counted_per_task": polls / n,
            "own_counted_per_task": (total - polls) / n,
            "by_endpoint_per_task": {k: v / n for k, v in counted.items()}, "by_endpoint": counted,
            "rss_mb": rss, "peak_rss_mb": peak}
    out["per_task"] = result


# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------

def machine() -> Dict[str, str]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                cpu = cpu or value.strip()
                if key.strip() == "Model":  # a Pi names itself here; prefer it
                    cpu = value.strip()
    except OSError:
        pass
    try:
        gh = subprocess.run(["gh", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    except OSError:
        gh = "gh missing"
    return {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "arch": platform.machine(), "cpu": cpu or "unknown",
            "cpus": str(os.cpu_count() or "?"), "python": platform.python_version(),
            "gh": gh.replace("gh version ", "gh ").split(" (")[0]}


def _s(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def _ratio(naive: float, ours: float) -> str:
    if ours <= 0:
        return "∞ (ours is 0)" if naive > 0 else "—"
    return f"{naive / ours:.1f}×"


def rows_for(r: Dict[str, Any]) -> List[Tuple[str, str, str, str]]:
    rows: List[Tuple[str, str, str, str]] = []

    def add(measure: str, ours: str, naive: str = "", ratio: str = "") -> None:
        rows.append((measure, ours, naive, ratio))

    def section(title: str) -> None:
        add(f"**{title}**", "", "", "")

    pending = " / ".join(str(c["pending"]) for c in r["cycles"])
    poll = r["cycles_poll_interval_s"]
    section(f"GitHub requests (real daemon, PAUSE file, poll every {poll:g} s)")
    for c in r["cycles"]:
        add(f"Counted requests per poll cycle, {c['pending']} pending tasks", f"{c['counted_per_cycle']:.2f}",
            f"{c['naive_counted_per_cycle']:.2f} (no ETag)", _ratio(c["naive_counted_per_cycle"], c["counted_per_cycle"]))
    add(f"Free 304 answers per poll cycle, {pending} pending",
        " / ".join(f"{c['not_modified_per_cycle']:.2f}" for c in r["cycles"]), "0 (no ETag)")
    add(f"Coordinator CPU per poll cycle, {pending} pending",
        " / ".join(f"{c['cpu_ms_per_cycle']:.0f} ms" for c in r["cycles"]))
    for p in r["pr_lookup"]:
        add(f"PR look-up for {p['branches']} active branches: counted requests per cycle",
            f"{p['ours_counted_per_cycle']:.2f} (one conditional list)",
            f"{p['naive_counted_per_cycle']:.2f} (pulls?head= per branch)",
            _ratio(p["naive_counted_per_cycle"], p["ours_counted_per_cycle"]))
        add(f"PR look-up for {p['branches']} active branches: gh calls / time per cycle",
            f"{p['ours_requests_per_cycle']:.0f} / {_s(p['ours_s_per_cycle'])}",
            f"{p['naive_requests_per_cycle']:.0f} / {_s(p['naive_s_per_cycle'])}",
            _ratio(p["naive_s_per_cycle"], p["ours_s_per_cycle"]))
    i = r["idle"]
    add(f"Idle, {i['window_s']:.0f} s at poll_interval {i['poll_interval_s']} s: counted / 304 requests",
        f"{i['counted']} / {i['not_modified']}")
    o = r["owed_notice"]
    add(f"Ended task still labelled, status comment deleted: requests in {o['window_s']:g} s",
        f"{o['requests']} ({o['counted']} counted), {'delivered' if o['delivered'] else 'NOT delivered'}")
    og = r["outage_finish"]
    add("GitHub down (502) as a worker ends: calls while the finish waits", f"{og['per_s']:.1f} per second")
    rl = r["rate_limit"]
    add("Rate limit below 200: time between polls, normal → low → restored",
        f"{_s(rl['normal_gap_s'])} → {_s(rl['slow_gap_s'])} → {_s(rl['after_gap_s'])}")
    add("Rate limit below 200: the status line says so", "yes" if rl["status_says_so"] else "NO")

    lat = r["latency"]
    n = len(lat["runs"])
    section("Latency")
    for key, what in (("exit_to_tasks_md_s", "Worker exit → tasks.md shows Completed"),
                      ("exit_to_comment_s", "Worker exit → completion comment posted"),
                      ("exit_to_labels_s", "Worker exit → trigger label swapped for tac:done"),
                      ("label_to_start_s", f"Label applied → worker started (poll_interval {lat['poll_interval_s']:g} s)")):
        add(f"{what} (median / max of {n})", f"{_s(lat[key]['median_s'])} / {_s(lat[key]['max_s'])}")
    h = r["sighup"]
    add(f"SIGHUP → poll (median / max of {len(h['latency_s'])})", f"{_s(h['median_s'])} / {_s(h['max_s'])}",
        "15 s (average wait for the next poll at 30 s)", _ratio(30 / 2, h["median_s"]))
    add("SIGHUP: valid config reloaded / invalid one refused, old kept",
        f"{'yes' if h['valid_reloaded'] else 'NO'} / {'yes' if h['invalid_refused_old_kept'] else 'NO'}")

    section("Footprint")
    add(f"Idle RSS, start → end of {i['window_s']:.0f} s (max)",
        f"{i['rss_start_mb']:.1f} → {i['rss_end_mb']:.1f} MB ({i['rss_max_mb']:.1f})")
    add(f"Idle CPU (poll_interval {i['poll_interval_s']} s), coordinator / its gh children",
        f"{i['cpu_s_per_hour']:.1f} / {i['children_cpu_s_per_hour']:.1f} s per hour")
    add(f"RSS after the poll cycles at {pending} pending",
        " / ".join(f"{c['rss_mb']:.1f}" for c in r["cycles"]) + " MB")
    add(f"RSS over {n} worker runs, first → last", f"{lat['rss_first_mb']:.1f} → {lat['rss_last_mb']:.1f} MB")
    b = r["big_taskfile"]
    add(f"Coordinator CPU per poll cycle, idle, {b['entries']:,}-entry tasks.md", f"{b['cpu_ms_per_cycle']:.0f} ms")
    for t in r["taskfile"]:
        add(f"tasks.md parse / render, {t['entries']:,} entries ({t['bytes'] / 1024:,.0f} KB), wall (CPU)",
            f"{_s(t['parse_s'])} ({_s(t['parse_cpu_s'])}) / {_s(t['render_s'])} ({_s(t['render_cpu_s'])})")
    st = r["status"]
    add(f"status.py start-up, {st['tasks']} tasks (median of {st['runs']})", _s(st["text"]),
        f"{_s(st['floor'])} (python -c pass)")
    add("status.py --json start-up", _s(st["json"]), f"{_s(st['floor'])} (python -c pass)")
    v = r["viewer"]
    add(f"view_worker, {v['log_mb']:.0f} MB log: time", f"{_s(v['wall_s'])} ({v['mb_per_s']:.1f} MB/s)",
        f"{_s(v['naive_wall_s'])} (readlines, no rendering)")
    add(f"view_worker, {v['log_mb']:.0f} MB log: peak RSS", f"{v['max_rss_mb']:.0f} MB",
        f"{v['naive_max_rss_mb']:.0f} MB (whole file in memory)", _ratio(v["naive_max_rss_mb"], v["max_rss_mb"]))

    d = r["dashboard"]
    section(f"Dashboard (tools/dashboard.py), {d['runs']:,}-run ledger, {d['tasks']} tasks")
    add("First overview page (reads the whole ledger once)", _s(d["first_s"]))
    for key, what in (("overview", "Overview page, last 7 days"), ("overview_all", "Overview page, all time")):
        add(f"{what} (median of {d['pages']})", _s(d[key]["ours_s"]),
            f"{_s(d[key]['naive_s'])} (reads the ledger again for each page)",
            _ratio(d[key]["naive_s"], d[key]["ours_s"]))
    add("Dashboard RSS after those pages (peak)", f"{d['rss_mb']:.1f} MB ({d['peak_rss_mb']:.1f})",
        f"{d['naive_rss_mb']:.1f} MB (the naive server)")
    add(f"Issue page of the {d['log_mb']:.0f} MB transcript, streamed: time",
        f"{_s(d['transcript_s'])} ({d['transcript_sent_mb']:.1f} MB of HTML)")
    add(f"Issue page of the {d['log_mb']:.0f} MB transcript: dashboard RSS before → peak",
        f"{d['transcript_rss_before_mb']:.0f} → {d['transcript_peak_rss_mb']:.0f} MB",
        f"{v['naive_max_rss_mb']:.0f} MB (whole file in memory)",
        _ratio(v["naive_max_rss_mb"], d["transcript_peak_rss_mb"]))

    it, lp, pt = r["intake"], r["loop"], r["per_task"]
    n = it["issues"]
    section("Throughput (issue #13): intake, a loop that never waits, cost per task")
    k, nk = it["by_kind"], it["naive_look_ups"]["by_kind"]
    other = f", {k['other']} other" if k["other"] else ""
    add(f"Intake of {n:,} newly labelled issues (PAUSE file): counted requests; the floor is "
        f"{it['floor_list_pages']} list pages + {it['floor_feed_pages']} feed pages + 1 trust check per labeller",
        f"{it['counted']} ({k['list pages']} list + {k['feed pages']} feed pages, {k['permission checks']} trust "
        f"check{'s' if k['permission checks'] != 1 else ''}, {k['per-issue events']} per issue{other})",
        f"{it['naive_look_ups']['counted']} ({nk['list pages']} list pages, {nk['per-issue events']} per-issue "
        f"events, {nk['permission checks']} trust check{'s' if nk['permission checks'] != 1 else ''})",
        _ratio(it["naive_look_ups"]["counted"], it["counted"]))
    add(f"Intake of {n:,} issues: daemon start → all queued in tasks.md",
        f"{_s(it['queued_s'])} (the look-ups alone {_s(it['ours_look_ups']['wall_s'])})",
        f"{_s(it['naive_look_ups']['wall_s'])} (the look-ups alone, per-issue events)",
        _ratio(it["naive_look_ups"]["wall_s"], it["ours_look_ups"]["wall_s"]))
    add(f"Daemon peak RSS (VmHWM) with {n:,} tasks in tasks.md: queued → after {it['ran']} ran",
        f"{it['peak_rss_queued_mb']:.1f} → {it['peak_rss_mb']:.1f} MB")
    for key, what in (("intake", f"while {lp['intake_issues']:,} newly labelled issues are taken in"),
                      ("poll_hangs", f"while a poll hangs {lp['hang_s']:g} s"),
                      ("fetch_slow", f"while a start fetches from a remote that takes {lp['hang_s']:g} s")):
        ours, naive = lp[key]["ours"], lp[key]["naive"]
        add(f"Worker exit → tasks.md Completed {what} (median / max of {lp['runs']})",
            f"{_s(ours['median_s'])} / {_s(ours['max_s'])}",
            f"{_s(naive['median_s'])} / {_s(naive['max_s'])} (job_threads = 0: on the loop)",
            _ratio(naive["median_s"], ours["median_s"]))
    o, nv = pt["ours"], pt["naive"]
    add(f"Counted requests per completed task, {pt['tasks']} tasks, no progress edits, poll every "
        f"{pt['poll_interval_s']:g} s",
        f"{o['counted_per_task']:.2f} ({o['own_counted_per_task']:.2f} the task's own + "
        f"{o['polls_counted_per_task']:.2f} list, feed and PR-list polls)",
        f"{nv['counted_per_task']:.2f} (job_threads = 0)")
    add(f"Coordinator overhead per task, {pt['tasks']} tasks at max_concurrent {pt['max_concurrent']}, worker ends at "
        f"once: (wall − workers' time ÷ {pt['max_concurrent']}) ÷ tasks",
        f"{_s(o['overhead_per_task_s'])} (all in {_s(o['wall_s'])})",
        f"{_s(nv['overhead_per_task_s'])} (all in {_s(nv['wall_s'])}; job_threads = 0)",
        _ratio(nv["overhead_per_task_s"], o["overhead_per_task_s"]))
    add("Each task's Active → Completed minus its worker's own time (median / max)",
        f"{_s(o['outside_worker_median_s'])} / {_s(o['outside_worker_max_s'])}",
        f"{_s(nv['outside_worker_median_s'])} / {_s(nv['outside_worker_max_s'])} (job_threads = 0)",
        _ratio(nv["outside_worker_median_s"], o["outside_worker_median_s"]))
    return rows


def markdown(m: Dict[str, str], mode: str, rows: List[Tuple[str, str, str, str]]) -> str:
    out = [f"Benchmark ({mode} run, `python bench/run.py{' --quick' if mode == 'quick' else ''}`), {m['date']}",
           f"Machine: {m['arch']} · {m['cpu']} · {m['cpus']} CPUs · Python {m['python']} · {m['gh']}", "",
           "| " + " | ".join(HEADERS) + " |", "|" + "|".join(["---"] + ["---:"] * 3) + "|"]
    out += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(out)


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

def run(size: Dict[str, Any], keep: bool, progress: Callable[[str], None],
        side_by_side: bool = False) -> Dict[str, Any]:
    """Every section, one after the other. side_by_side (--quick): the
    throughput sections, which make rigs of their own, run in a thread
    beside the rest; that halves the smoke test's time and blurs figures
    nobody reads from a quick run."""
    out: Dict[str, Any] = {}
    rig = Rig(keep)
    beside = ThreadPoolExecutor(1).submit(measure_throughput, size, out, progress) if side_by_side else None
    try:
        progress(f"idle daemon for {size['idle_window']:g} s, then SIGHUP")
        queue = measure_idle_and_hup(rig, size, out)
        progress(f"poll cycles at {', '.join(map(str, size['pending']))} pending tasks")
        measure_cycles(rig, queue, size, out)
        progress("rate limit nearly spent")
        measure_rate_limit(rig, queue, out)
        progress("status.py start-up")
        measure_status(rig, queue, size, out)
        queue.alive()
        if queue.stop() != 0:
            raise BenchError(f"the queue coordinator did not exit cleanly on SIGTERM\n{queue.log_tail()}")
        for t in queue.tasks().tasks:  # the next daemons must not pick the queue up
            rig.fake.close_issue(t.issue)
        progress("an owed notice whose comment was deleted")
        measure_owed_notice(rig, size, out)
        progress(f"worker exit latency, {size['runs']} runs")
        measure_latency(rig, size, out)
        progress(f"PR look-up for {', '.join(map(str, size['branches']))} branches")
        measure_pr_lookup(rig, size, out)
        progress("tasks.md parse and render")
        measure_taskfile(size, out)
        progress(f"an idle daemon with a {size['task_sizes'][-1]:,}-entry tasks.md")
        measure_big_taskfile(rig, size, out)
        progress(f"view_worker on a {size['log_mb']} MB log")
        big_log = measure_viewer(rig, size, out)
        progress(f"the dashboard: a {size['ledger_runs']:,}-run ledger, then the {size['log_mb']} MB log")
        measure_dashboard(rig, size, out, big_log)
        if beside is None:
            measure_throughput(size, out, progress)
        else:
            beside.result()
    finally:
        rig.close()
        if keep:
            progress(f"kept {rig.tmp}")
    return out


def measure_throughput(size: Dict[str, Any], out: Dict[str, Any], progress: Callable[[str], None]) -> None:
    progress(f"intake of {size['intake_issues']:,} labelled issues: the daemon, then the look-ups both ways")
    measure_intake(size, out)
    progress(f"worker exit during a {size['loop_intake']:,}-issue intake, while a poll hangs and while a fetch "
             f"takes {size['hang']:g} s, job_threads 4 and 0")
    measure_loop(size, out)
    progress(f"{size['overhead_tasks']} quick tasks at max_concurrent 2, job_threads 4 and 0")
    measure_per_task(size, out)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, smaller sizes (about a minute and a half)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (daemon logs) for a look")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    size = QUICK if args.quick else FULL
    started = time.time()

    def progress(message: str) -> None:
        print(f"bench: {time.time() - started:5.1f}s {message}", file=sys.stderr, flush=True)

    try:
        results = run(size, args.keep, progress, side_by_side=args.quick)
    except BenchError as e:
        print(f"bench: broken: {e}", file=sys.stderr)
        return 1
    m = machine()
    rows = rows_for(results)
    if args.json:
        print(json.dumps({"mode": mode, "machine": m, "seconds": time.time() - started, "results": results,
                          "table": [dict(zip(HEADERS, r)) for r in rows]}, indent=1))
    else:
        print(markdown(m, mode, rows))
    progress("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
