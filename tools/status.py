#!/usr/bin/env python3
"""Show what the TAC coordinator is doing, at a glance.

    python tools/status.py [--config PATH] [--json] [--watch] [--color]

Reads config.toml (default: the one in the project root), metrics.json
(written by the daemon beside tasks.md each tick), tasks.md and the cost
ledger <logs>/usage.jsonl, and prints health, the queue, active workers and
spend in 80 columns. Health is re-judged here from metrics.json's age, so a
dead coordinator shows as critical even though its last words were "ok".

Colour: `watch` gives the program no terminal, so colour is off under it
unless forced. Either pass --color or set FORCE_COLOR=1:

    watch -c -n 5 python tools/status.py --color

(--color sticks to the 16 standard colours, which every `watch -c` shows;
NO_COLOR=1 turns colour off.) --watch refreshes in place every 2 s until
Ctrl-C. --json prints the same facts as one JSON object for scripts.

Exit status, as monitoring agents expect: 0 ok, 1 warning or degraded,
2 critical (the coordinator is not running), 3 cannot draw the view (no
rich for this python; --json still works), 78 config error.
"""
from __future__ import annotations

import os
import sys

# `python tools/status.py` puts tools/ on sys.path, not the project root;
# add the root so `from adws import ...` works from any working directory
# (and tools/ too, for an import of this file from elsewhere).
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (ROOT, HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from typing import Any, Dict, List, Optional  # noqa: E402

from pathlib import Path  # noqa: E402

import _shared  # noqa: E402
from adws import config, ledger, metrics, tasks  # noqa: E402

# rich is imported inside the rendering functions: --json never needs it and
# a Pi pays for every module at start-up.

EX_CONFIG = config.EX_CONFIG  # as the daemon: a config problem, not a crash
PENDING_SHOWN = 5
COMPLETED_SHOWN = 5
ENDED_SHOWN = 8      # failed and blocked together: a Pi screen is short
REFRESH_SECONDS = 2.0
# The monitoring convention (Nagios, Icinga, Sensu), so cron or an agent can
# act on the exit status. Degraded is a warning there: the daemon is alive
# and a reached budget (by design) is one of its causes.
EXIT_STATUS = {metrics.OK: 0, metrics.WARNING: 1, metrics.DEGRADED: 1, metrics.CRITICAL: 2}


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------

class ConfigError(Exception):
    """Already phrased for the user as one line."""


def load_config(path: str) -> Dict[str, Any]:
    """Paths and budgets from config.toml, read by the daemon's own loader
    so both agree on what every path means."""
    try:
        cfg = config.load_config(Path(path), need_repo=False)
    except config.ConfigError as e:
        raise ConfigError(str(e))
    return {
        "file": str(cfg.file),
        "tasks_path": str(cfg.tasks_path),
        "metrics_path": str(cfg.metrics_path),
        "ledger_path": str(cfg.ledger_path),
        "logs": str(cfg.logs),
        # 0 means "no limit" in config.toml.
        "daily_usd": cfg.daily_usd or None,
        "monthly_usd": cfg.monthly_usd or None,
    }


# ---------------------------------------------------------------------------
# Gathering the facts (one dict: --json prints it, the renderer draws it)
# ---------------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, it is just not ours
        return True
    return True


def _num(value) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _task_time(value) -> Optional[float]:
    return tasks.parse_time(value) if value else None


def _task_dict(t, *keys: str) -> Dict[str, Any]:
    out: Dict[str, Any] = {"issue": t.issue, "title": t.title or ""}
    for key in keys:
        out[key] = getattr(t, key, None)
    return out


def task_detail(t, key: str) -> Optional[str]:
    """A detail of a task that may be a Task field one day and is a
    "- Key: value" line in Task.extra until then (Stage, Round): shown when
    present, never required."""
    if t is None:
        return None
    value = getattr(t, key.lower(), None)
    if value not in (None, ""):
        return str(value)
    return next((v for k, v in t.extra if k.lower() == key.lower() and v), None)


def _cluster(c: Any) -> Optional[Dict[str, Any]]:
    """metrics.json's "cluster" (adws/cluster.py), checked: this node, when
    it last read the claims, and who holds which issue as it saw them."""
    if not isinstance(c, dict):
        return None
    claims = [{"issue": x.get("issue"), "node": x.get("node") if isinstance(x.get("node"), str) else None,
               "expires": _num(x.get("expires")), "outcome": x.get("outcome") or "", "here": x.get("here") is True}
              for x in c.get("claims") or [] if isinstance(x, dict) and isinstance(x.get("issue"), int)]
    return {"node": c.get("node") if isinstance(c.get("node"), str) else "", "read_at": _num(c.get("read_at")),
            "error": c.get("error") if isinstance(c.get("error"), str) else "", "claims": claims}


def _stage(a: Dict[str, Any], t, key: str) -> Optional[str]:
    """A worker's stage or round: metrics.json's if it says, else tasks.md's."""
    value = a.get(key)
    if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
        return str(value)
    return task_detail(t, key)


def _worker(a: Dict[str, Any], t, now: float) -> Dict[str, Any]:
    """One active worker from its metrics.json entry `a` and its Task `t` (or None)."""
    started = _num(a.get("started_at")) or (_task_time(t.started) if t else None)
    return {
        "issue": t.issue if t else a.get("issue"),
        "title": (t.title if t else "") or a.get("title") or "",
        "pid": a.get("pid") or (t.pid if t else None),
        "started_at": started,
        "elapsed_s": (now - started) if started else None,
        "attempt": a.get("attempt") or (t.attempts if t else None),
        "cost_usd": _num(a.get("cost_usd")),
        "last_tool": a.get("last_tool") if isinstance(a.get("last_tool"), str) else "",
        "log": a.get("log"),
        "stage": _stage(a, t, "stage"),
        "round": _stage(a, t, "round"),
        "stage_costs": stage_costs(t),
    }


def stage_costs(t) -> Dict[str, float]:
    """What each stage of a workflow has cost so far, by stage name, in the
    order they first ran (every run, failed ones too): tasks.md's Stage lines."""
    out: Dict[str, float] = {}
    for run in getattr(t, "stage_runs", None) or []:
        out[run.name] = round(out.get(run.name, 0.0) + run.cost, 4)
    return out


def _title_with_stage(w: Dict[str, Any]) -> str:
    """An active worker's title, its stage or follow-up round and what the
    stages cost so far."""
    bits = [w["title"]]
    if w.get("stage"):
        bits.append(str(w["stage"]))
    if w.get("round"):  # a follow-up round on its pull request (adws/rounds.py)
        bits.append("follow-up round {}".format(w["round"]))
    costs = w.get("stage_costs") or {}
    if costs:
        bits.append(", ".join("{} {}".format(name, ledger.usd(cost)) for name, cost in costs.items()))
    return " · ".join(b for b in bits if b)


def load_tasks(path: str):
    """(TaskFile or None, list of problem strings)."""
    if not os.path.exists(path):
        return None, ["tasks.md not found at {}".format(path)]
    try:
        tf, problems, _snapshot = tasks.load(path)  # parse() itself never raises
    except OSError as e:
        return None, ["tasks.md unreadable: {}".format(e.strerror or e)]
    return tf, [str(p) for p in problems or []]


def collect(cfg: Dict[str, Any], now: float, spend: Optional[ledger.SpendTracker] = None) -> Dict[str, Any]:
    """Everything status shows, as JSON-ready values (machine keys, epoch times).

    ``spend`` is the ledger's totals when the caller keeps them already (the
    dashboard, which must not re-read a 10,000-run ledger on every page);
    by default the ledger is read here."""
    facts: Dict[str, Any] = {
        "now": now,
        "config": cfg["file"],
        "tasks_path": cfg["tasks_path"],
        "metrics_path": cfg["metrics_path"],
        "ledger_path": cfg["ledger_path"],
        "warnings": [],
    }

    # -- metrics.json
    m = metrics.read(cfg["metrics_path"])
    if m is None:
        facts["metrics"] = "unreadable" if os.path.exists(cfg["metrics_path"]) else "missing"
        m = {}
    else:
        facts["metrics"] = "ok"
    for key in ("pid", "started_at", "updated_at", "last_poll_at", "last_poll_ok",
                "poll_interval", "max_concurrent"):
        facts[key] = m.get(key)
    facts["paused"] = m.get("paused") is True
    facts["pause_reason"] = m.get("pause_reason") if isinstance(m.get("pause_reason"), str) else ""
    facts["spawn_block"] = m.get("spawn_block") if isinstance(m.get("spawn_block"), str) else ""
    facts["github"] = m.get("github") if isinstance(m.get("github"), dict) else None
    facts["counters"] = m.get("counters") if isinstance(m.get("counters"), dict) else {}
    facts["cluster"] = _cluster(m.get("cluster"))

    # -- spend: the ledger is the truth; budgets from metrics (what the daemon
    # enforces), else from the config.
    sp = spend if spend is not None else ledger.SpendTracker(cfg["ledger_path"], now)
    totals = sp.totals(now)
    msp = m.get("spend") if isinstance(m.get("spend"), dict) else {}
    daily = _num(msp.get("daily_usd")) if "daily_usd" in msp else cfg["daily_usd"]
    monthly = _num(msp.get("monthly_usd")) if "monthly_usd" in msp else cfg["monthly_usd"]
    facts["spend"] = {
        "today_usd": totals.today_usd, "month_usd": totals.month_usd,
        "day": totals.day, "month": totals.month,
        "daily_usd": daily or None, "monthly_usd": monthly or None,
    }
    facts["runs"] = sp.success()  # from the ledger, like the spend
    disk = m.get("disk") if isinstance(m.get("disk"), dict) else {}
    facts["disk"] = {k: disk.get(k) for k in ("trees_mb", "logs_mb", "free_mb") if isinstance(disk.get(k), int)}
    if sp.corrupt:
        facts["warnings"].append("usage.jsonl: {} corrupt line{} skipped".format(
            sp.corrupt, "" if sp.corrupt == 1 else "s"))

    # -- health, re-judged with this clock
    if facts["metrics"] == "missing":
        level, reason = metrics.CRITICAL, "coordinator has not written metrics.json yet (not started?)"
    elif facts["metrics"] == "unreadable":
        level, reason = metrics.CRITICAL, "metrics.json unreadable ({})".format(cfg["metrics_path"])
    else:
        level, reason = metrics.health(dict(m, spend=facts["spend"]), now, pid_alive=_pid_alive)
    facts["health"] = {"level": level, "reason": reason}

    # -- tasks.md
    tf, problems = load_tasks(cfg["tasks_path"])
    facts["tasks_problems"] = problems
    if problems:
        facts["warnings"].append(
            "tasks.md: {} problem{} (first: {})".format(
                len(problems), "" if len(problems) == 1 else "s", problems[0])
            if tf is not None else problems[0])

    def state(name):
        return list(tf.in_state(name)) if tf is not None else []

    pending, active = state(tasks.PENDING), state(tasks.ACTIVE)
    completed, failed, blocked = state(tasks.COMPLETED), state(tasks.FAILED), state(tasks.BLOCKED)
    today = ledger.local_day(now)

    done = []
    for t in completed:
        d = _task_dict(t, "pr", "attempts")
        d["completed"] = _task_time(t.completed)
        done.append(d)
    done.sort(key=lambda d: d["completed"] or 0, reverse=True)
    completed_today = sum(1 for d in done if d["completed"] and ledger.local_day(d["completed"]) == today)

    facts["queue"] = {"pending": len(pending), "active": len(active),
                      "completed_today": completed_today, "completed": len(completed),
                      "failed": len(failed), "blocked": len(blocked)}

    # Active: tasks.md says who runs; metrics.json adds cost and last tool.
    # With no tasks.md to go by, show what the daemon reported.
    live = {a.get("issue"): a for a in m.get("active") or [] if isinstance(a, dict)}
    if tf is None:
        workers = [_worker(a, None, now) for a in live.values()]
        facts["queue"]["active"] = len(workers)
    else:
        workers = [_worker(live.get(t.issue, {}), t, now) for t in active]
    facts["active"] = workers

    queue = []
    for t in pending:
        d = _task_dict(t, "priority", "attempts", "claimed_by")
        d["next_attempt"] = _task_time(t.next_attempt)
        queue.append(d)
    queue.sort(key=lambda d: (d["priority"] if isinstance(d["priority"], int) else 9, d["issue"]))
    facts["pending"] = queue  # the daemon's dispatch order: {p0} first
    facts["completed"] = done
    facts["failed"] = [_task_dict(t, "reason", "attempts", "pr") for t in failed]
    facts["blocked"] = [_task_dict(t, "reason", "attempts") for t in blocked]
    return facts


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------

LEVEL_STYLE = {  # (badge, reason)
    metrics.OK: ("bold black on green", "green"),
    metrics.WARNING: ("bold black on yellow", "yellow"),
    metrics.DEGRADED: ("bold white on red", "red"),
    metrics.CRITICAL: ("bold white on red", "bold red"),
}


def _ago(seconds: Optional[float]) -> str:
    return "?" if seconds is None else metrics.human_duration(seconds) + " ago"


def short_time(epoch: Optional[float], now: float) -> str:
    """HH:MM today, else the date: the shortest time a person can place."""
    if not epoch:
        return ""
    if ledger.local_day(epoch) == ledger.local_day(now):
        return time.strftime("%H:%M", time.localtime(epoch))
    return time.strftime("%Y-%m-%d", time.localtime(epoch))


def _pr(value) -> str:
    if value in (None, ""):
        return ""
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return "PR #{}".format(value)
    return str(value)


def _budget(spent: float, budget: Optional[float]) -> str:
    if not budget:
        return ledger.usd(spent)
    return "{} of {} ({:.0f}%)".format(ledger.usd(spent), ledger.usd(budget), 100 * spent / budget)


def share_width(free: int, needs: List[int], weights: List[int], least: int = 8) -> List[int]:
    """Split ``free`` columns among flexible columns: a column whose widest
    cell fits its weighted share gets just that, and what it leaves goes to
    the others, so a short last-tool column never cuts a title that would
    fit. Columns still too wide share what is left by weight (at least
    ``least`` each) and are cut there."""
    sizes: List[int] = [0] * len(needs)
    left = list(range(len(needs)))
    room = free
    while left:
        total = sum(weights[i] for i in left) or 1
        fits = [i for i in left if needs[i] <= room * weights[i] // total]
        if not fits:
            for i in left:
                sizes[i] = max(least, room * weights[i] // total)
            break
        for i in fits:
            sizes[i] = needs[i]
            room -= needs[i]
            left.remove(i)
    return sizes


def _mb(mb: Optional[int]) -> str:
    if mb is None:
        return "?"
    return "{:.1f} GB".format(mb / 1024) if mb >= 1024 else "{} MB".format(mb)


def build(facts: Dict[str, Any], width: int = 80):
    """The whole screen as one rich renderable, laid out for `width` columns."""
    from rich.cells import cell_len
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    now = facts["now"]
    parts: List[Any] = []

    level = facts["health"]["level"]
    head = Text()
    badge, tint = LEVEL_STYLE.get(level, ("bold", ""))
    head.append(" {} ".format(level.upper()), style=badge)
    head.append(" " + (facts["health"]["reason"] or "running normally"), style=tint)
    parts.append(head)

    if facts["metrics"] == "ok":
        bits = []
        if facts.get("pid") is not None:
            bits.append("pid {}".format(facts["pid"]))
        if _num(facts.get("started_at")):
            bits.append("up " + metrics.human_duration(now - facts["started_at"]))
        if _num(facts.get("updated_at")):
            bits.append("updated " + _ago(now - facts["updated_at"]))
        if _num(facts.get("last_poll_at")):
            ok = {True: "ok", False: "failed"}.get(facts.get("last_poll_ok"), "?")
            bits.append("last poll {} {}".format(ok, _ago(now - facts["last_poll_at"])))
        parts.append(Text(" · ".join(bits), style="dim"))

    # The pause and the spawn block get a line of their own unless the health
    # reason above already says it word for word.
    said = facts["health"]["reason"]
    if facts["paused"]:
        reason = facts["pause_reason"]
        line = "paused by user" + (": " + reason if reason else "")
        if line not in said:
            parts.append(Text(line[0].upper() + line[1:], style="yellow"))
    if facts["spawn_block"] and facts["spawn_block"] not in said:
        block = facts["spawn_block"]
        if not block.lower().startswith("spawning paused"):
            block = "spawning paused: " + block
        parts.append(Text(block[0].upper() + block[1:], style="red"))

    gh = facts.get("github")
    if gh:
        state = gh.get("state") or "?"
        line = Text("GitHub: ")
        line.append(state.replace("_", " "), style="green" if state == "ok" else "yellow")
        since = _num(gh.get("since"))
        if state != "ok" and since:
            line.append(" for " + metrics.human_duration(now - since))
        if state != "ok" and gh.get("error"):
            line.append(" ({})".format(gh["error"]))
        if isinstance(gh.get("rate_remaining"), int):
            line.append(" · {:,} requests left".format(gh["rate_remaining"]), style="dim")
        reset = _num(gh.get("rate_reset"))
        if state == "rate_limited" and reset:
            line.append(" · resets " + short_time(reset, now))
        parts.append(line)

    q = facts["queue"]
    cap = facts.get("max_concurrent")
    active = "{} of {} active".format(q["active"], cap) if isinstance(cap, int) else "{} active".format(q["active"])
    parts.append(Text("Queue: {} pending · {} · {} completed today · {} failed · {} blocked".format(
        q["pending"], active, q["completed_today"], q["failed"], q["blocked"])))

    sp = facts["spend"]
    parts.append(Text("Spend: today {} · this month {}".format(
        _budget(sp["today_usd"], sp["daily_usd"]), _budget(sp["month_usd"], sp["monthly_usd"]))))

    runs, today = facts.get("runs") or {}, (facts.get("runs") or {}).get("by_day", {}).get(sp["day"])
    if runs.get("last_runs"):
        line = "Runs: {} of the last {} completed ({:.0%})".format(
            runs["last_completed"], runs["last_runs"], runs["last_completed"] / runs["last_runs"])
        if today:
            line += " · today {} completed, {} failed, {} blocked".format(
                today["completed"], today["failed"], today["blocked"])
        parts.append(Text(line))
    disk = facts.get("disk") or {}
    if disk:
        parts.append(Text("Disk: worktrees {} · logs {}{}".format(
            _mb(disk.get("trees_mb")), _mb(disk.get("logs_mb")),
            " · {} free".format(_mb(disk["free_mb"])) if disk.get("free_mb") is not None else "")))

    cl = facts.get("cluster")
    if cl:
        here = sum(1 for c in cl["claims"] if c["here"])
        line = "Cluster: this node {} · {} claim{} here, {} elsewhere".format(
            cl["node"], here, "" if here == 1 else "s", len(cl["claims"]) - here)
        if cl["read_at"]:
            line += " · claims read " + _ago(now - cl["read_at"])
        parts.append(Text(line))
        if cl["error"]:
            parts.append(Text("! claims: " + cl["error"], style="yellow"))

    for w in facts["warnings"]:
        parts.append(Text("! " + w, style="yellow"))

    def table(title: str, columns, rows) -> Table:
        """Columns as (width, weight, options): fixed widths first, then the
        rest of the screen shared among the others (see share_width), so
        nothing is dropped at 80 and nothing that fits is cut."""
        t = Table(title=title, title_justify="left", title_style="bold", box=None,
                  show_header=False, padding=(0, 1), pad_edge=False, expand=False)
        gaps = 2 * (len(columns) - 1)
        free = max(0, width - gaps - sum(w for w, _, _ in columns if w))
        flexible = [i for i, (w, _, _) in enumerate(columns) if not w]
        needs = [max([1] + [cell_len(str(row[i])) for row in rows]) for i in flexible]
        sizes = dict(zip(flexible, share_width(free, needs, [columns[i][1] for i in flexible])))
        for i, (w, _, options) in enumerate(columns):
            t.add_column(**dict({"width": w or sizes[i], "no_wrap": True, "overflow": "ellipsis"}, **options))
        for row in rows:
            t.add_row(*row)
        return t

    issue_w = max([3] + [len("#{}".format(r["issue"])) for key in
                         ("active", "pending", "completed", "failed", "blocked") for r in facts[key]]
                  + [len("#{}".format(c["issue"])) for c in (cl or {}).get("claims", [])])

    if facts["active"]:
        rows = [("#{}".format(w["issue"]), _title_with_stage(w),
                 metrics.human_duration(w["elapsed_s"]) if w["elapsed_s"] is not None else "",
                 ledger.usd(w["cost_usd"]) if w["cost_usd"] is not None else "",
                 w["last_tool"]) for w in facts["active"]]
        t = table("Active", [(issue_w, 0, {"style": "bold"}), (0, 3, {}),
                             (10, 0, {"justify": "right"}), (8, 0, {"justify": "right"}),
                             (0, 2, {"style": "dim"})], rows)
        parts.append(Text())
        parts.append(t)

    if cl and cl["claims"]:
        rows = [("#{}".format(c["issue"]), c["node"] or "?", "this node" if c["here"] else "",
                 "ended: " + c["outcome"] if c["outcome"] else
                 "until " + short_time(c["expires"], now) if c["expires"] else "") for c in cl["claims"][:ENDED_SHOWN]]
        t = table("Claims (who runs which issue)", [(issue_w, 0, {"style": "bold"}), (0, 2, {}), (9, 0, {"style": "dim"}),
                                                    (0, 2, {"style": "dim"})], rows)
        parts.append(Text())
        parts.append(t)
        if len(cl["claims"]) > ENDED_SHOWN:
            parts.append(Text("  … and {} more".format(len(cl["claims"]) - ENDED_SHOWN), style="dim"))

    if facts["pending"]:
        rows = []
        for p in facts["pending"][:PENDING_SHOWN]:
            nxt = p["next_attempt"]
            when = ""
            claimed = (p.get("claimed_by") or "").split(" ", 1)[0].rstrip(",")
            if claimed and cl and claimed != cl["node"]:
                when = "on " + claimed  # another node runs it
            elif nxt and nxt > now:
                when = "retry in " + metrics.human_duration(nxt - now)
            elif p.get("attempts"):
                when = "retry due"
            prio = p.get("priority")
            rows.append(("#{}".format(p["issue"]), p["title"],
                         "p{}".format(prio) if isinstance(prio, int) else "", when))
        t = table("Pending ({})".format(len(facts["pending"])),
                  [(issue_w, 0, {"style": "bold"}), (0, 1, {}), (3, 0, {}), (18, 0, {"style": "dim"})], rows)
        parts.append(Text())
        parts.append(t)
        more = len(facts["pending"]) - PENDING_SHOWN
        if more > 0:
            parts.append(Text("  … and {} more".format(more), style="dim"))

    if facts["completed"]:
        shown = facts["completed"][:COMPLETED_SHOWN]
        # A PR link is only useful whole: it takes what it needs, up to all
        # but a short title, and folds onto a second line beyond that.
        room = width - issue_w - 10 - 3 * 2   # less the time column and three gaps
        pr_w = min(max([4] + [len(_pr(c.get("pr"))) for c in shown]), max(10, room - 12))
        rows = [("#{}".format(c["issue"]), c["title"], _pr(c.get("pr")), short_time(c["completed"], now))
                for c in shown]
        t = table("Recently completed", [(issue_w, 0, {"style": "bold"}), (0, 1, {}),
                                         (pr_w, 0, {"style": "cyan", "overflow": "fold", "no_wrap": False}),
                                         (10, 0, {"style": "dim"})], rows)
        parts.append(Text())
        parts.append(t)

    if facts["failed"] or facts["blocked"]:
        ended = [("failed", r) for r in facts["failed"]] + [("blocked", r) for r in facts["blocked"]]
        rows = [("#{}".format(r["issue"]), Text(label, style="red" if label == "failed" else "yellow"),
                 r["title"], r.get("reason") or "") for label, r in ended[:ENDED_SHOWN]]
        t = table("Failed / blocked", [(issue_w, 0, {"style": "bold"}), (7, 0, {}), (0, 2, {}),
                                       (0, 3, {"overflow": "fold", "no_wrap": False})], rows)
        parts.append(Text())
        parts.append(t)
        if len(ended) > ENDED_SHOWN:
            parts.append(Text("  … and {} more in tasks.md".format(len(ended) - ENDED_SHOWN), style="dim"))

    return Group(*parts)


# Issue titles are data: "[WIP] :fire:" must print as typed, not as markup.
PLAIN = dict(highlight=False, markup=False, emoji=False)


def make_console(force_color: bool):
    if os.environ.get("NO_COLOR"):
        return _shared.pipe_console(no_color=True, **PLAIN)
    if force_color or os.environ.get("FORCE_COLOR"):
        # No tty under `watch -c`: force escape codes, and only the 16
        # standard colours, which every watch understands.
        return _shared.pipe_console(force_terminal=True, color_system="standard", **PLAIN)
    return _shared.pipe_console(**PLAIN)


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="status.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Under `watch -c`, pass --color (or set FORCE_COLOR=1) to keep the colours.")
    parser.add_argument("--config", default=os.path.join(ROOT, "config.toml"),
                        help="config.toml to read (default: the project's)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object for scripts")
    out.add_argument("--watch", action="store_true", help="refresh every 2 s until Ctrl-C")
    parser.add_argument("--color", action="store_true",
                        help="colour even without a terminal (for watch -c)")
    args = parser.parse_args(argv)

    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print("status: {}".format(e), file=sys.stderr)
        return EX_CONFIG

    if not args.json:
        _shared.require_rich("status", __file__, sys.argv[1:] if argv is None else argv)
    if not args.watch:
        facts = collect(cfg, time.time())
        code = EXIT_STATUS.get(facts["health"]["level"], 2)
        try:
            if args.json:
                json.dump(facts, sys.stdout, indent=1)
                sys.stdout.write("\n")
            else:
                console = make_console(args.color)
                console.print(build(facts, console.width))
            sys.stdout.flush()
        except BrokenPipeError:  # `status.py --json | head -1`
            return _shared.closed_pipe(code)
        return code

    console = make_console(args.color)

    from rich.live import Live
    try:
        with Live(build(collect(cfg, time.time()), console.width), console=console, screen=True,
                  auto_refresh=False, vertical_overflow="crop") as live:
            while True:
                time.sleep(REFRESH_SECONDS)
                live.update(build(collect(cfg, time.time()), console.width), refresh=True)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
