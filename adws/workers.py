"""Worker processes: the machine facts that size the pool, the process
state machine of one `claude -p` run, its environment and argv, and how it
is signalled and swept. Reaping is by PID (Popen.poll), never a wait for
any child.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

from adws.config import Config
from adws.redact import redact

log = logging.getLogger("tac")


def proc_start_time(pid: int) -> Optional[int]:
    """Field 22 of /proc/PID/stat (start time in clock ticks), None if gone.
    PID plus start time names a process for good; a PID alone is reused."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses.
    rest = data[data.rfind(")") + 2:].split()
    try:
        if rest[0] == "Z":
            return None  # a zombie has finished; only its parent can reap it
        return int(rest[19])
    except (IndexError, ValueError):
        return None


def since_boot() -> float:
    """Seconds since boot, a clock that never jumps (NTP, a person, DST),
    and the one /proc/PID/stat's start times are counted on."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def process_age(pid: int) -> Optional[float]:
    """How long the process has been running, from its start time in /proc:
    right across a restart of ours and a step of the wall clock."""
    start = proc_start_time(pid)
    if start is None:
        return None
    return max(0.0, since_boot() - start / os.sysconf("SC_CLK_TCK"))


def process_alive(pid: Optional[int], start: Optional[int]) -> bool:
    if not pid:
        return False
    now_start = proc_start_time(pid)
    return now_start is not None and (start is None or now_start == start)


def processes_tagged(tag: str) -> List[int]:
    """PIDs whose environment holds TAC_WORKER_ID=<tag>. The Claude CLI runs
    each Bash command in its own session, so a worker's grandchildren escape
    its process group; they keep the environment variable, though."""
    needle = f"TAC_WORKER_ID={tag}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            found.append(int(entry))
    return found


# -- Orphans --------------------------------------------------------------------
# A worker's tools may start children that leave its process group, its
# session and even its environment (`env -i setsid sleep 301`): a sweep by
# group or by tag cannot find those. As a child subreaper the coordinator gets
# every such orphan back as its own child when its parent dies; it knows them
# as its children in another session (its git and gh calls share its session,
# the workers themselves it knows by PID), kills those a worker left, and
# reaps them by PID: never a wait for any child.

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process the subreaper of everything it starts (Linux 3.4+)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _stat(pid: str) -> Optional[List[str]]:
    """/proc/PID/stat's fields after the command name (state first)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    return data[data.rfind(")") + 2:].split()


def orphans(since: Optional[int] = None, parent: Optional[int] = None) -> List[int]:
    """Our children in another session than ours: orphans of workers' tools
    that came back to us. `since`: only those started at or after that
    /proc start time (a worker's), so a sweep takes only what came after it."""
    me = os.getpid() if parent is None else parent
    session = os.getsid(me)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat(entry)
        try:
            if fields and int(fields[1]) == me and int(fields[3]) != session \
                    and (since is None or int(fields[19]) >= since):
                found.append(int(entry))
        except (IndexError, ValueError):
            continue
    return found


def reap_orphans(workers: Set[int]) -> int:
    """Collect the exit status of orphans that ended (each by its PID), so
    none stays a zombie. `workers`: PIDs reaped through their Popen."""
    reaped = 0
    for pid in orphans():
        fields = _stat(str(pid))
        if pid in workers or not fields or fields[0] != "Z":
            continue
        try:
            os.waitpid(pid, os.WNOHANG)
            reaped += 1
        except ChildProcessError:
            pass
    return reaped


def _meminfo_mb(key: str) -> Optional[int]:
    """A /proc/meminfo figure in MB, None if it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def mem_available_mb() -> Optional[int]:
    return _meminfo_mb("MemAvailable")


def mem_total_mb() -> Optional[int]:
    return _meminfo_mb("MemTotal")


def pi_model() -> str:
    """'Raspberry Pi 4 Model B Rev 1.4' on a Pi, '' elsewhere."""
    try:
        return Path("/proc/device-tree/model").read_text(errors="replace").strip("\0\n ")
    except OSError:
        return ""


def worker_cap(setting: Any, model: Optional[str] = None, total_mb: Optional[int] = None) -> int:
    """max_concurrent: an integer as given; "auto" is 1 on a Raspberry Pi and
    otherwise one worker per ~3 GB of memory (a claude worker plus the
    tests it runs). The machine facts can be passed in for tests."""
    if setting != "auto":
        return int(setting)
    model = pi_model() if model is None else model
    if "raspberry pi" in model.lower():
        return 1
    total = (mem_total_mb() if total_mb is None else total_mb) or 3072
    return max(1, min(8, total // 3072))


# A worker is one `claude -p` process (and everything it starts) for one
# attempt at one issue. Its life, supervisor-style:
#
#   STARTING --model turn or startup_grace--> RUNNING
#   STARTING/RUNNING --stop requested--> STOPPING --SIGINT, SIGTERM, SIGKILL--> EXITED
#   STARTING/RUNNING --process ended--> EXITED
#
# What happens to the *task* afterwards (retry later = BACKOFF, give up =
# FATAL) is decided by the policy functions in section 6 and recorded in
# tasks.md as Pending-with-Next-attempt or Failed.

STARTING, RUNNING, STOPPING, EXITED = "STARTING", "RUNNING", "STOPPING", "EXITED"
_ARCS = {
    (STARTING, RUNNING), (STARTING, STOPPING), (STARTING, EXITED),
    (RUNNING, STOPPING), (RUNNING, EXITED),
    (STOPPING, EXITED),
}
STOP_BY_USER = "stopped by user"
API_DOWN = "API unreachable"
CANCELLED = "cancelled in tasks.md"


@dataclass
class Worker:
    issue: int
    worker_id: str
    attempt: int
    branch: str
    tree: Path
    log_path: Path
    stderr_path: Path
    stderr_offset: int
    pid: int
    pid_start: Optional[int]
    started_at: float
    follower: Any  # transcript.TranscriptFollower
    popen: Optional[subprocess.Popen] = None  # None when adopted after a restart
    state: str = STARTING
    stop_reason: str = ""
    stop_stage: int = 0
    stop_next_at: float = 0.0
    returncode: Optional[int] = None
    exited_at: Optional[float] = None
    result_seen_at: Optional[float] = None
    last_output_at: float = 0.0
    comment_id: Optional[int] = None      # the issue's status comment, edited as the run goes
    comment_at: float = 0.0
    finish_failures: int = 0              # finishing failed (push refused, git error): retried, then Blocked
    finish_failed_at: Optional[float] = None
    finish_next_at: float = 0.0
    got_going: bool = False               # reached a model turn (the startup breaker was told)
    log_start: int = 0                    # where this run's lines begin in its transcript (max_log_mb)
    # Its tasks.md entry as last read: if the entry vanishes (the file deleted,
    # cut or overwritten) while the worker runs, it is written back from this.
    entry: Any = None
    # A follow-up round on the task's pull request (adws/rounds.py); 0 = a first run.
    round: int = 0
    argv_extra: List[str] = field(default_factory=list)     # after worker_argv(): --resume SESSION
    env_extra: Dict[str, str] = field(default_factory=dict)  # TAC_ROUND
    launch_info: Dict[str, Any] = field(default_factory=dict)  # more for the transcript's attempt line
    followup: Any = None                  # the round's batch and pull request (adws/rounds.py Round)

    @property
    def name(self) -> str:
        return f"gh-{self.issue}"

    def change_state(self, new: str, now: float) -> None:
        assert (self.state, new) in _ARCS, f"{self.name}: no transition {self.state} -> {new}"
        log.debug("%s %s -> %s", self.name, self.state, new)
        self.state = new
        if new == EXITED:
            self.exited_at = now

    def poll_exit(self) -> bool:
        """True once the process has ended. Our own children are reaped by
        PID through Popen.poll(); never a wait for any child (pid -1),
        which would steal the exit status of every git and gh call."""
        if self.popen is not None:
            rc = self.popen.poll()
            if rc is None:
                return False
            self.returncode = rc
            return True
        # Adopted after a restart: not our child, so watch it through /proc.
        return not process_alive(self.pid, self.pid_start)


def describe_exit(returncode: Optional[int]) -> str:
    if returncode is None:
        return "exit status unknown (adopted after a restart)"
    if returncode < 0:
        try:
            return f"terminated by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"terminated by signal {-returncode}"
    return f"exit status {returncode}"


def signal_worker(w: Worker, sig: int, spare: Set[int] = frozenset()) -> None:
    """Signal the worker's process group, and at SIGKILL also every process
    still carrying its tag (the CLI's Bash tool runs commands in sessions of
    their own, outside the group)."""
    # The group is only ours while the leader is the process we started.
    if process_alive(w.pid, w.pid_start) or (w.popen is not None and w.returncode is None):
        try:
            os.killpg(w.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    if sig == signal.SIGKILL:
        sweep_tagged(w, spare)


def sweep_tagged(w: Worker, spare: Set[int] = frozenset()) -> int:
    """Kill what `w` left behind: every process carrying its tag, and every
    orphan started since it that came back to us as their subreaper (a child
    that cleared its environment carries no tag; see become_subreaper).
    `spare`: the other workers, which are our children in sessions of their own too."""
    killed = 0
    left = set(processes_tagged(w.worker_id))
    if w.pid_start is not None:
        left |= set(orphans(since=w.pid_start)) - set(spare) - {w.pid}
    for pid in sorted(left):
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except (ProcessLookupError, PermissionError):
            pass
    if killed:
        log.info("%s killed %d leftover process(es) of %s", w.name, killed, w.worker_id)
    return killed


# Environment a worker gets: an allow-list, not the coordinator's whole
# environment. No GH_TOKEN, no cloud credentials; `gh` inside the worker
# sees an empty config dir, so the agent cannot act as the operator.
_ENV_ALLOW = {"PATH", "HOME", "LANG", "LANGUAGE", "TERM", "TZ", "USER", "LOGNAME", "SHELL", "TMPDIR",
              "IS_SANDBOX", "DISABLE_AUTOUPDATER", "DISABLE_TELEMETRY", "DISABLE_ERROR_REPORTING", "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "NO_PROXY", "no_proxy"}
_ENV_PREFIXES = ("LC_", "ANTHROPIC_", "CLAUDE_", "TAC_")


def worker_env(cfg: Config, base: Dict[str, str], extra: Dict[str, str]) -> Dict[str, str]:
    env = {k: v for k, v in base.items()
           if k in _ENV_ALLOW or k.startswith(_ENV_PREFIXES) or k in cfg.pass_env}
    gh_dir = cfg.state_dir / ".gh-empty"
    gh_dir.mkdir(parents=True, exist_ok=True)
    env["GH_CONFIG_DIR"] = str(gh_dir)
    env.setdefault("PATH", os.defpath)
    env.update(extra)
    return env


def worker_argv(cfg: Config) -> List[str]:
    argv = list(cfg.command)
    if cfg.per_run_usd > 0:
        argv += ["--max-budget-usd", f"{cfg.per_run_usd:g}"]
    if cfg.max_turns > 0:
        argv += ["--max-turns", str(cfg.max_turns)]
    if cfg.allowed_tools:
        argv += ["--allowedTools", ",".join(cfg.allowed_tools)]
    if cfg.disallowed_tools:
        argv += ["--disallowedTools", ",".join(cfg.disallowed_tools)]
    return argv


def last_line(path: Path, offset: int = 0, limit: int = 160) -> str:
    """The last non-empty line written to `path` after `offset` (stderr of a
    failed start usually says what went wrong)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(offset, os.path.getsize(path) - 8192))
            lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return redact(lines[-1])[:limit] if lines else ""


class StartError(Exception):
    """A worker could not be started; the message says what failed."""


def new_worker_id() -> str:
    return "w-" + os.urandom(3).hex()
