"""metrics.json: the daemon's published state, and how healthy it looks.

The daemon rewrites ``metrics.json`` (beside tasks.md) atomically at the end
of every tick; ``tools/status.py`` only reads it. Version 1 of the shape::

    {"version": 1, "pid": 123, "started_at": 1732200000.0,
     "updated_at": 1732200030.0, "last_poll_at": 1732200030.0,
     "last_poll_ok": true, "poll_interval": 30,
     "paused": false, "pause_reason": "",     # the user's pause (SIGUSR1 / PAUSE file)
     "spawn_block": "",                       # why spawning is stopped, if it is
     "counters": {"launched": 0, "completed": 0, "failed": 0, "blocked": 0,
                  "startup_errors": 0, "prs_opened": 0, "github_errors": 0,
                  "worktree_repairs": 0},
     "github": {"state": "ok"|"unreachable"|"not_authenticated"|"rate_limited", "since": epoch|null,
                "error": "", "rate_remaining": 4999|null, "rate_reset": epoch|null},
     "active": [{"issue": 7, "title": "...", "pid": 123, "started_at": epoch,
                 "attempt": 1, "cost_usd": 0.12, "last_tool": "Bash: pytest -q",
                 "log": "logs/gh-7.jsonl"}],
     "spend": {"today_usd": 1.23, "month_usd": 4.56,
               "daily_usd": 5.0|null, "monthly_usd": 50.0|null},
     "max_concurrent": 1,
     "health": {"level": "ok"|"warning"|"degraded"|"critical", "reason": ""}}

``health()`` is a pure function of this dict and the clock, so the daemon
computes it when writing and status re-evaluates it when reading: a daemon
that died cannot keep claiming it is fine, because staleness is judged by the
reader's clock.
"""
from __future__ import annotations

import json
from typing import Callable, List, Optional, Tuple

from adws.files import write_atomic
from adws.ledger import usd

VERSION = 1
FILENAME = "metrics.json"

OK, WARNING, DEGRADED, CRITICAL = "ok", "warning", "degraded", "critical"
LEVELS = (OK, WARNING, DEGRADED, CRITICAL)  # in order of severity

COUNTERS = ("launched", "completed", "failed", "blocked", "startup_errors",
            "prs_opened", "github_errors", "worktree_repairs")

GITHUB_DEGRADED_AFTER = 600   # seconds unreachable before it is "degraded"
BUDGET_WARNING_FRACTION = 0.8


def initial(pid: int, started_at: float, poll_interval: float, max_concurrent: int) -> dict:
    """A complete version-1 dict with every key present, for the daemon to fill."""
    return {
        "version": VERSION, "pid": pid, "started_at": started_at,
        "updated_at": started_at, "last_poll_at": None, "last_poll_ok": None,
        "poll_interval": poll_interval, "paused": False, "pause_reason": "",
        "spawn_block": "",
        "counters": {name: 0 for name in COUNTERS},
        "github": {"state": "ok", "since": None, "error": "",
                   "rate_remaining": None, "rate_reset": None},
        "active": [],
        "spend": {"today_usd": 0.0, "month_usd": 0.0, "daily_usd": None, "monthly_usd": None},
        "max_concurrent": max_concurrent,
        "health": {"level": OK, "reason": ""},
    }


# ---------------------------------------------------------------------------
# File I/O
# ---------------------------------------------------------------------------

def write(path, data: dict) -> None:
    """Replace ``path`` with ``data`` atomically.

    The JSON goes to a temporary file in the same folder (``os.replace`` is
    only atomic within one file system), is fsynced, then renamed over the
    old file: a reader sees the old content or the new, never half of it.
    """
    write_atomic(path, (json.dumps(data, indent=1) + "\n").encode("utf-8"))


def read(path) -> Optional[dict]:
    """The metrics dict, or None if the file is missing, unreadable or not an object.

    Callers that need to tell "missing" from "unreadable" check
    ``os.path.exists`` themselves.
    """
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------------------
# Health
# ---------------------------------------------------------------------------

def human_duration(seconds: float, fine: bool = False) -> str:
    """``45 s``, ``14 min``, ``3 h 5 min``, ``2 days``: the way status says how
    long. `fine` (a tool call, a run in its transcript): ``850ms``, ``12.3s``,
    ``3m05s``, ``1h02m``."""
    if fine:
        if seconds < 1:
            return "{}ms".format(int(max(0.0, seconds) * 1000))
        if seconds < 60:
            return "{:.1f}s".format(seconds)
        minutes, rest = divmod(int(seconds), 60)
        if minutes < 60:
            return "{}m{:02d}s".format(minutes, rest)
        return "{}h{:02d}m".format(*divmod(minutes, 60))
    s = max(0, int(seconds))
    if s < 60:
        return "{} s".format(s)
    if s < 3600:
        return "{} min".format(s // 60)
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return "{} h {} min".format(h, m) if m else "{} h".format(h)
    d = s // 86400
    return "{} day{}".format(d, "" if d == 1 else "s")


def _num(value) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def stale_after(data: dict) -> float:
    """Seconds without an update after which the daemon is presumed dead."""
    interval = _num(data.get("poll_interval")) or 0.0
    return max(3 * interval, 120.0)


def poll_stale_after(data: dict) -> float:
    """Seconds without a poll before health warns: max(5 * poll_interval, 300)."""
    interval = _num(data.get("poll_interval"))
    return max(5 * interval if interval and interval > 0 else 0.0, 300.0)


def health(data: dict, now: float,
           pid_alive: Optional[Callable[[int], bool]] = None) -> Tuple[str, str]:
    """Judge the daemon from its metrics: ``(level, reason)``.

    The first rule that matches decides the level; all reasons at that level
    are joined with "; ".

    critical
        ``updated_at`` is missing or older than ``max(3 * poll_interval, 120)``
        seconds ("coordinator not running? last update 14 min ago"), or
        ``pid_alive`` (status passes one; the daemon need not) says the pid
        is gone.
    degraded
        GitHub has been unreachable for more than 10 minutes, or refuses
        our login (401: "not authenticated: run gh auth login"), or
        ``spawn_block`` is set (no new work will start).
    warning
        no poll for ``max(5 * poll_interval, 300)`` seconds while the daemon
        itself is alive (a stuck loop must not look healthy; the margin covers
        the slowed poll under a low rate limit); GitHub unreachable for less
        than 10 minutes, or rate limited; the user
        paused the coordinator; today's or this month's spend is above 80% of
        its budget (a budget of 0 or null means no limit).
    ok
        none of the above; the reason is "".
    """
    updated = _num(data.get("updated_at"))
    if updated is None:
        return CRITICAL, "coordinator not running? metrics.json has no update time"
    age = now - updated
    if age > stale_after(data):
        return CRITICAL, "coordinator not running? last update {} ago".format(human_duration(age))
    pid = data.get("pid")
    if pid_alive is not None and isinstance(pid, int) and not isinstance(pid, bool) \
            and not pid_alive(pid):
        return CRITICAL, "coordinator not running: pid {} is gone".format(pid)

    degraded: List[str] = []
    warning: List[str] = []

    gh = _dict(data.get("github"))
    state = gh.get("state")
    error = gh.get("error") if isinstance(gh.get("error"), str) else ""
    if state == "unreachable":
        since = _num(gh.get("since"))
        down = now - since if since is not None else 0.0
        text = "GitHub unreachable"
        if since is not None:
            text += " for " + human_duration(down)
        if error:
            text += ": " + error
        (degraded if down > GITHUB_DEGRADED_AFTER else warning).append(text)
    elif state == "not_authenticated":  # waiting will not fix it: degraded at once
        degraded.append("GitHub: " + (error or "not authenticated: run gh auth login"))
    elif state == "rate_limited":
        text = "GitHub rate limit reached"
        reset = _num(gh.get("rate_reset"))
        if reset is not None and reset > now:
            text += ", resets in " + human_duration(reset - now)
        warning.append(text)

    block = data.get("spawn_block")
    if isinstance(block, str) and block:
        degraded.append(block)

    polled = _num(data.get("last_poll_at"))
    since_poll = now - (polled if polled is not None else (_num(data.get("started_at")) or now))
    if since_poll > poll_stale_after(data):
        warning.append("no poll of GitHub for {}".format(human_duration(since_poll)) if polled is not None
                       else "no poll of GitHub since the start, {} ago".format(human_duration(since_poll)))

    if data.get("paused") is True:
        reason = data.get("pause_reason")
        warning.append("paused by user" + (": " + reason if isinstance(reason, str) and reason else ""))

    sp = _dict(data.get("spend"))
    for label, spent_key, budget_key in (("daily", "today_usd", "daily_usd"),
                                         ("monthly", "month_usd", "monthly_usd")):
        spent, budget = _num(sp.get(spent_key)), _num(sp.get(budget_key))
        if spent is None or budget is None or budget <= 0:
            continue
        if spent > BUDGET_WARNING_FRACTION * budget:
            warning.append("{} budget {:.0f}% used ({} of {})".format(
                label, 100 * spent / budget, usd(spent), usd(budget)))

    if degraded:
        return DEGRADED, "; ".join(degraded)
    if warning:
        return WARNING, "; ".join(warning)
    return OK, ""
