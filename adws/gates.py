"""The gates: may a worker start now, and if not, why.

Every reason the daemon has for not starting work lives here, asked in one
order by `Gates.block`: a person's pause, the startup breaker, the budgets,
free memory, free disk. The two breakers keep the state that decides them:

    StartupBreaker   workers that die before their first model turn (an
                     expired login, a revoked key, an API outage, a missing
                     command): a system fault, not the task's
    FailureBreaker   runs that got going and failed, one after another (the
                     target's tests are broken, the template is wrong): each
                     one costs money, so after a few in a row a person decides

Time comes in as `now` (the steady clock), so tests drive every arc without
sleeping. Nothing here touches tasks.md or GitHub.
"""
from __future__ import annotations

import logging
import shutil
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Deque, List, Optional, Set, Tuple

from adws import ledger
from adws.config import Config
from adws.files import write_atomic
from adws.ledger import Spend
from adws.workers import mem_available_mb

log = logging.getLogger("tac")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"

# What a startup error most likely means, and what fixes it: (words in the
# error, case-insensitive) -> (the guess shown in the status, the fix --check
# prints). First match wins.
_DIAGNOSES: Tuple[Tuple[Tuple[str, ...], str, str], ...] = (
    (("invalid api key", "/login", "not logged in", "authentication_error", "oauth token", "401"),
     "claude login expired?", "log in again as the service's user: claude /login (or set ANTHROPIC_API_KEY)"),
    (("credit balance",),
     "API credit used up?", "add credit to the Anthropic account the worker uses"),
    (("command not found", "no such file or directory"),
     "worker command missing?", "npm install -g @anthropic-ai/claude-code, or fix [workers] command"),
    (("api unreachable", "enotfound", "getaddrinfo", "network is unreachable", "econnrefused",
      "connection error", "unable to connect", "timed out", "etimedout"),
     "network or API down?", "check this machine's network and https://status.anthropic.com"),
)


def diagnose(error: str) -> Tuple[str, str]:
    """(guess, fix) for a startup error's text; ("", "") when unknown."""
    low = error.lower()
    for words, guess, fix in _DIAGNOSES:
        if any(w in low for w in words):
            return guess, fix
    return "", ""


@dataclass
class StartupBreaker:
    """closed -> open -> half-open -> closed, supervisor-style.

    Closed: startup errors are counted (any tasks); `threshold` in a row
    open it. Open: nothing starts until `next_probe_at`. Half-open: one
    start, the probe, is in flight and nothing else starts. A probe that
    reaches a model turn closes the breaker; a probe that fails opens it
    again for the next step of `schedule`, which then stays at its last
    step, so a six-hour outage costs a handful of probes. While the breaker
    is not closed, startup errors are the system's: no task is charged."""
    threshold: int
    schedule: List[int]
    state: str = CLOSED
    errors: int = 0                  # startup errors in a row, any tasks
    last_error: str = ""
    step: int = 0                    # failed probes since it opened
    next_probe_at: float = 0.0
    probe: Optional[int] = None      # the issue whose start is the probe
    probed: Set[int] = field(default_factory=set)  # this outage's probes, so a bad task does not hog them

    def change_state(self, new: str, now: float, why: str) -> None:
        assert (self.state, new) in _BREAKER_ARCS, f"breaker: no transition {self.state} -> {new}"
        log.debug("breaker %s -> %s: %s", self.state, new, why)
        self.state = new
        if new == CLOSED:
            self.errors, self.step, self.probe, self.last_error = 0, 0, None, ""
            self.probed.clear()
        elif new == OPEN:
            self.next_probe_at = now + self.schedule[min(self.step, len(self.schedule) - 1)]
            self.probe = None

    def startup_error(self, issue: int, why: str, now: float) -> bool:
        """Count one startup error. True when it is the system's (the
        breaker was already open, or this was the probe): the task keeps its
        retry count."""
        self.last_error = why
        self.errors += 1
        if self.state == CLOSED:
            if self.errors >= self.threshold:
                self.change_state(OPEN, now, f"{self.errors} startup errors in a row")
            return False
        if self.state == HALF_OPEN and issue == self.probe:
            self.step += 1
            self.change_state(OPEN, now, "the probe failed")
        return True

    def open_now(self, why: str, now: float) -> None:
        """A fault that is plainly the system's (the API unreachable): open
        at once, whatever the count."""
        self.last_error = why
        if self.state == CLOSED:
            self.change_state(OPEN, now, why)

    def got_going(self, issue: int, now: float) -> None:
        """A worker reached a model turn: whatever was wrong is fixed."""
        self.errors = 0
        if self.state != CLOSED:
            self.change_state(CLOSED, now, f"gh-{issue} reached a model turn")

    def probe_ended(self, issue: int, now: float) -> None:
        """The probe ended without a verdict (a person stopped it): probe again."""
        if self.state == HALF_OPEN and issue == self.probe:
            self.change_state(OPEN, now, "the probe was stopped")
            self.next_probe_at = now

    def may_start(self, issue: int, now: float) -> bool:
        """Whether `issue` may start now; a start while open is the probe."""
        if self.state == CLOSED:
            return True
        if self.state == HALF_OPEN or now < self.next_probe_at:
            return False
        self.probe = issue
        self.probed.add(issue)
        self.change_state(HALF_OPEN, now, f"gh-{issue} is the probe")
        return True

    def pick_probe(self, due: List[int]) -> List[int]:
        """`due` in the order to try them: issues not yet probed in this outage first."""
        if self.state == CLOSED:
            return due
        fresh = [n for n in due if n not in self.probed]
        if not fresh:
            self.probed.clear()
            return due
        return fresh + [n for n in due if n in self.probed]

    def reason(self, clock_time: Callable[[float], str]) -> str:
        """`spawning paused: claude login expired? (Invalid API key); next probe 10:42`, or ''."""
        if self.state == CLOSED:
            return ""
        guess, _ = diagnose(self.last_error)
        what = f"{guess} ({self.last_error})" if guess else \
            f"{self.errors} startup errors in a row ({self.last_error})"
        when = "probe running" if self.state == HALF_OPEN else f"next probe {clock_time(self.next_probe_at)}"
        return f"spawning paused: {what}; {when}"


_BREAKER_ARCS = {(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (HALF_OPEN, CLOSED), (OPEN, CLOSED)}


@dataclass
class FailureBreaker:
    """`threshold` runs in a row that got going and failed, on any tasks,
    stop spawning until a person resumes: when every run fails the same way
    (broken tests in the target, a wrong template, a missing tool) each
    further run only spends money. A completed or blocked run resets it."""
    threshold: int
    recent: Deque[Tuple[int, str]] = field(default_factory=deque)
    tripped: str = ""

    def failed(self, issue: int, why: str) -> str:
        """Count a failed run; returns the pause reason when this one trips it."""
        self.recent.append((issue, why))
        while len(self.recent) > max(self.threshold, 3):
            self.recent.popleft()
        if self.threshold > 0 and len(self.recent) >= self.threshold and not self.tripped:
            last = "; ".join(f"gh-{n}: {w}" for n, w in list(self.recent)[-3:])
            self.tripped = f"{len(self.recent)} failed runs in a row (last: {last})"
            return self.tripped
        return ""

    def good_run(self) -> None:
        self.recent.clear()

    def reset(self) -> None:
        self.recent.clear()
        self.tripped = ""


class Gates:
    """Everything that may hold back a start, asked in one order."""

    def __init__(self, cfg: Config, mem: Callable[[], Optional[int]] = mem_available_mb,
                 disk: Callable[[Path], Optional[int]] = None):
        self.cfg = cfg
        self.mem = mem
        self.disk = disk or free_mb
        self.paused_by_signal = False
        self.startup = StartupBreaker(cfg.breaker_threshold, list(cfg.startup_backoff))
        self.failures = FailureBreaker(cfg.failure_threshold)

    def reconfigure(self, cfg: Config) -> None:
        """A reloaded config: new thresholds, the breakers' memory kept."""
        self.cfg = cfg
        self.startup.threshold, self.startup.schedule = cfg.breaker_threshold, list(cfg.startup_backoff)
        self.failures.threshold = cfg.failure_threshold

    @property
    def paused(self) -> str:
        """A person's pause (or the failure breaker's, which writes PAUSE
        so that it holds across a restart), or ''."""
        if self.paused_by_signal:
            return "paused by SIGUSR1"
        try:
            text = self.cfg.pause_path.read_text(errors="replace").strip()
        except FileNotFoundError:
            if self.failures.tripped:  # a person removed PAUSE: that resumes
                log.info("spawning resumed: %s removed", self.cfg.pause_path.name)
                self.failures.reset()
            return ""
        except OSError as e:
            return f"paused: {self.cfg.pause_path.name} unreadable ({e.strerror})"
        first = text.splitlines()[0] if text else ""
        return f"paused by {self.cfg.pause_path.name} file" + (f": {first}" if first else "")

    def block(self, now: float, spend: Spend, clock_time: Callable[[float], str]) -> str:
        """Why no worker may start now, or ''. With the startup breaker open
        and its probe due, '' lets exactly one start through (may_start)."""
        return (self.paused
                or (self.startup.reason(clock_time) if not self._probe_due(now) else "")
                or ledger.budget_block(spend, self.cfg.daily_usd or None, self.cfg.monthly_usd or None)
                or self.disk_block())

    def _probe_due(self, now: float) -> bool:
        return self.startup.state == OPEN and now >= self.startup.next_probe_at

    def disk_block(self) -> str:
        for path in {self.cfg.trees, self.cfg.logs}:
            free = self.disk(path)
            if free is not None and free < self.cfg.min_free_disk_mb:
                return f"disk nearly full: {free} MB free for {path}, below min_free_disk_mb {self.cfg.min_free_disk_mb}"
        return ""

    def memory_block(self) -> str:
        free = self.mem()
        if free is not None and free < self.cfg.min_free_memory_mb:
            return f"{free} MB available, below min_free_memory_mb {self.cfg.min_free_memory_mb}"
        return ""

    def failed_run(self, issue: int, why: str) -> None:
        """Count a run that got going and failed; at the threshold, pause
        through the PAUSE file, with the last failures as its reason."""
        tripped = self.failures.failed(issue, why)
        if tripped:
            write_atomic(self.cfg.pause_path, (tripped + "\nRemove this file, send SIGUSR1 or re-apply a label "
                                               "to resume.\n").encode("utf-8"))
            log.warning("spawning paused: %s", tripped)

    def resume(self, why: str) -> bool:
        """Lift the failure breaker's pause (a person re-applied a label, or SIGUSR1)."""
        if not self.failures.tripped:
            return False
        self.failures.reset()
        try:
            self.cfg.pause_path.unlink()
        except FileNotFoundError:
            pass
        log.info("spawning resumed: %s", why)
        return True

    def pause(self, why: str) -> None:
        """A person's pause given from afar (the status issue's box): the
        PAUSE file, as if they had touched it at the Pi, so it holds across
        a restart and shows wherever the pause is looked for."""
        write_atomic(self.cfg.pause_path, (why + "\nRemove this file, or untick the box on the status issue, "
                                                 "to resume.\n").encode("utf-8"))
        log.info("spawning paused: %s", why)

    def unpause(self, why: str) -> None:
        """Lift every pause a person can lift: PAUSE (the failure breaker's
        too) and SIGUSR1's."""
        if not self.resume(why):
            try:
                self.cfg.pause_path.unlink()
            except FileNotFoundError:
                pass
            log.info("spawning resumed: %s", why)
        self.paused_by_signal = False

    def sigusr1(self) -> None:
        """SIGUSR1 resumes after the failure breaker, else toggles a pause."""
        if self.resume("SIGUSR1"):
            return
        self.paused_by_signal = not self.paused_by_signal
        log.info("spawning %s by SIGUSR1", "paused" if self.paused_by_signal else "resumed")


def free_mb(path: Path) -> Optional[int]:
    """Free space in MB on the file system holding `path` (or its nearest
    existing parent); None when it cannot be read."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(str(probe)).free // (1024 * 1024)
    except OSError:
        return None
