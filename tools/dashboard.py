#!/usr/bin/env python3
"""A read-only web dashboard: the queue, the workers and the spending, with charts.

    python tools/dashboard.py [--config PATH] [--host 127.0.0.1] [--port 8050]

Serves, from the standard library's HTTP server:

    /                      health, queue, active workers, recent PRs, spend
                           and burn rate, six charts; ?range=24h|7d|30d|month|all
    /issue/N               every run of issue N and its rendered transcript
                           (?run=K for one run, ?detailed=1 for view_worker's --detailed)
    /issue/N/live          the transcript, then each new line as the worker writes it
    /api/status            what `status.py --json` prints (the same function builds it)
    /api/usage?range=7d    what `usage_report.py --json --range 7d` prints
                           (also period=daily|weekly|monthly, issue=N, detail=1)

It only reads tasks.md, metrics.json, the ledger and the transcripts: it
never writes a file of the daemon's and never calls GitHub. It listens on
loopback unless told otherwise; from a laptop, open a tunnel and browse to
http://localhost:8050/:

    ssh -L 8050:localhost:8050 pi@raspberrypi

The page has no login: --host with anything but a loopback address prints a
warning, since anyone who can reach the port can read the transcripts.

Charts are SVG drawn here (tools/_charts.py): no JavaScript and nothing
fetched, so the page works offline in any browser. The overview refreshes
itself every 30 s, and the range lives in the URL, so a view can be
bookmarked. The ledger is read once and then only what was appended.
"""
from __future__ import annotations

import os
import sys

# `python tools/dashboard.py` puts tools/ on sys.path, not the project root;
# add the root so `from adws import ...` works from any working directory.
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (ROOT, HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import argparse  # noqa: E402
import collections  # noqa: E402
import datetime as dt  # noqa: E402
import io  # noqa: E402
import ipaddress  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import stat  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple  # noqa: E402
from urllib.parse import parse_qs, urlencode, urlsplit  # noqa: E402

import _charts  # noqa: E402
import _shared  # noqa: E402
import status  # noqa: E402
import usage_report  # noqa: E402
from _charts import esc  # noqa: E402
from adws import config, ledger, metrics, tasks  # noqa: E402

# view_worker (and with it rich) is imported by the first transcript page:
# the overview, which a browser reloads every 30 s, never needs it.

PROG = "dashboard"
DEFAULT_RANGE = "7d"
REFRESH_SECONDS = 30
MAX_DOTS = 1000            # the cost/duration scatter shows at most the latest this many runs
MAX_DAYS = 400             # and the day charts at most this many days ("all" on an old ledger)
LIVE_LIMIT = 3600          # seconds a live view streams before asking for a reload
LIVE_HEARTBEAT = 15        # seconds between keep-alive comments while a worker is quiet
LIVE_GRACE = 2.0           # seconds to read on after a worker's task leaves Active (its last lines)
CHUNK_LINES = 200          # transcript lines per write to the socket
MAX_RUN_LINKS = 30         # above this, pick a run in the runs table
RANGE_LABELS = {"24h": "24 h", "7d": "7 d", "30d": "30 d", "month": "this month", "all": "all"}
# How the charts group outcomes: a run a person stopped ended its task as
# Failed; startup errors, cancels and unrecorded outcomes are "other".
OUTCOME_CLASS = {ledger.COMPLETED: "completed", ledger.FAILED: "failed", "stopped": "failed",
                 ledger.BLOCKED: "blocked"}
OUTCOME_COLUMNS = ("completed", "failed", "blocked", "other")


def warn(message: str) -> None:
    print("{}: {}".format(PROG, message), file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Reading the state: the ledger kept up to date, transcripts refused outside logs/
# ---------------------------------------------------------------------------

class LedgerCache:
    """The ledger's runs, read once and then only what was appended.

    The ledger is append-only (one whole line per run), so each refresh
    reads from where the last one stopped; a file that shrank or was
    replaced is read again from the start. Runs are ledger.Run (about 370
    bytes each: 10,000 runs in under 4 MB). Re-reading 10,000 lines on
    every page would cost about 170 ms of JSON parsing alone (bench/run.py
    measures both).
    """

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._reset(None)

    def _reset(self, inode) -> None:
        self.runs: List[ledger.Run] = []
        self.corrupt = 0
        self._offset = 0
        self._inode = inode

    def refresh(self) -> Tuple[List[ledger.Run], int, bool]:
        """(runs, corrupt line count, file exists), up to the file's end now."""
        with self._lock:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                self._reset(None)
                return [], 0, False
            inode = (st.st_dev, st.st_ino)
            if inode != self._inode or st.st_size < self._offset:
                self._reset(inode)
            if st.st_size > self._offset:
                scan = ledger.read(self.path, self._offset, whole_lines=True)
                self.runs.extend(ledger.Run.of(rec) for rec in scan)
                self._offset = scan.offset
                self.corrupt += scan.corrupt
            # A copy: a later refresh appends to self.runs while a page reads this.
            return list(self.runs), self.corrupt, True


class Refused(Exception):
    """A transcript path that leads outside the logs folder, or to something not a file."""


def transcript_path(logs: str, issue: int) -> Path:
    """<logs>/gh-N.jsonl, resolved. Raises Refused when it (a link, say)
    leads outside the logs folder or is not a regular file; a missing file
    is returned as it is (the worker may not have started)."""
    folder = os.path.realpath(logs)
    path = os.path.join(folder, config.transcript_name(issue))
    real = os.path.realpath(path)
    if os.path.commonpath([folder, real]) != folder:
        raise Refused("logs/gh-{}.jsonl leads outside the logs folder".format(issue))
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        return Path(real)
    if not stat.S_ISREG(mode):  # a FIFO would block the reader for good
        raise Refused("logs/gh-{}.jsonl is not a regular file".format(issue))
    return Path(real)


# ---------------------------------------------------------------------------
# The numbers: charts from one pass over the range's runs, and the spend outlook
# ---------------------------------------------------------------------------

def _days(first: str, last: str) -> List[str]:
    a, b = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    if (b - a).days >= MAX_DAYS:
        a = b - dt.timedelta(days=MAX_DAYS - 1)
    return [(a + dt.timedelta(days=i)).isoformat() for i in range((b - a).days + 1)]


class Usage:
    """What the charts draw for one range. ``add`` is given every run the
    range's usage_report counts (Report.feed's ``each``), so the charts and
    the totals beside them always agree."""

    def __init__(self, range_name: str, now: float):
        self.now = now
        self.start = ledger.range_start(range_name, now)
        self.hourly = range_name == "24h"
        self.by_day: Dict[str, List[float]] = {}           # day -> [cost, *OUTCOME_COLUMNS counts]
        self.tokens: Dict[Any, List[int]] = {}             # hour or day -> [in, out, cache read, cache write]
        self.models: Dict[str, float] = {}
        self.heat = [[0] * 24 for _ in range(7)]
        self.dots: collections.deque = collections.deque(maxlen=MAX_DOTS)
        self.timed = 0                                     # runs with a duration (dots before the cap)

    def add(self, run: ledger.Run) -> None:
        cost = float(run.cost)
        if len(run.models) == 1 and not run.model_costs:   # most runs: no split to work out
            self.models[run.models[0]] = self.models.get(run.models[0], 0.0) + cost
        else:
            for model, share in run.cost_by_model():
                self.models[model] = self.models.get(model, 0.0) + share
        if run.duration_s is not None:
            self.dots.append(run)
            self.timed += 1
        if run.day is None:
            return  # no day to put it on: counted in the totals only
        row = self.by_day.setdefault(run.day, [0.0, 0, 0, 0, 0])
        row[0] += cost
        row[1 + OUTCOME_COLUMNS.index(OUTCOME_CLASS.get(run.outcome, "other"))] += 1
        if run.time is not None:
            local = time.localtime(run.time)
            self.heat[local.tm_wday][local.tm_hour] += 1
        # Hourly only for 24h, whose runs all have a time (Report drops the others).
        key = int(run.time // 3600) if self.hourly else run.day
        t = self.tokens.setdefault(key, [0, 0, 0, 0])
        t[0] += run.input_tokens
        t[1] += run.output_tokens
        t[2] += run.cache_read_tokens
        t[3] += run.cache_creation_tokens

    def day_axis(self) -> List[str]:
        today = ledger.local_day(self.now)
        first = ledger.local_day(self.start) if self.start is not None else min(self.by_day, default=today)
        return _days(min(first, today), max([today] + list(self.by_day)))

    def hour_axis(self) -> List[int]:
        return list(range(int(self.start // 3600), int(self.now // 3600) + 1))

    def charts(self, budget: Optional[float], href: Callable[[ledger.Run], str]) -> List[str]:
        """The six figures, in page order (a note in place of one with nothing to draw)."""
        days = self.day_axis()
        labels = [d[5:] for d in days]   # MM-DD
        return [self.cost_chart(days, labels, budget), self.token_chart(days, labels), self.model_chart(),
                self.dot_chart(href), _charts.figure("activity", "Activity by hour and weekday",
                                                     "Runs by the local time they ended.", *_charts.heatmap(self.heat)),
                self.outcome_chart(days, labels)]

    NO_DAYS = "No runs with a date in this range."

    def cost_chart(self, days: List[str], labels: List[str], budget: Optional[float]) -> str:
        if not self.by_day:
            return _charts.empty("cost-per-day", "Cost per day", self.NO_DAYS)
        costs = [self.by_day[d][0] if d in self.by_day else 0.0 for d in days]
        return _charts.figure("cost-per-day", "Cost per day", "Bars: cost per day (left axis). Line: the running "
                              "total over the range (right axis); dashed: the monthly budget.",
                              *_charts.cost_per_day(days, labels, costs, budget, ledger.usd))

    def token_chart(self, days: List[str], labels: List[str]) -> str:
        if not self.by_day:
            return _charts.empty("tokens", "Tokens over time", self.NO_DAYS)
        keys: List[Any] = days
        buckets, unit = days, "day"
        if self.hourly:
            keys = self.hour_axis()
            buckets = [time.strftime("%Y-%m-%d %H:00", time.localtime(h * 3600)) for h in keys]
            labels, unit = [b[11:] for b in buckets], "hour"
        series = {name: [self.tokens[k][i] if k in self.tokens else 0 for k in keys]
                  for i, (name, _, _) in enumerate(_charts.TOKEN_SERIES)}
        return _charts.figure("tokens", "Tokens over time", "Each panel has its own scale; a run counts when it "
                              "ended.", *_charts.tokens_over_time(buckets, labels, series, unit, usage_report.compact))

    def model_chart(self) -> str:
        if not self.models:
            return _charts.empty("cost-by-model", "Cost by model", "No runs in this range.")
        models = sorted(self.models.items(), key=lambda kv: (-kv[1], kv[0]))
        return _charts.figure("cost-by-model", "Cost by model", "A run that used several models is split by the "
                              "CLI's own cost per model.", *_charts.cost_by_model(models, ledger.usd))

    def dot_chart(self, href: Callable[[ledger.Run], str]) -> str:
        if not self.dots:
            return _charts.empty("cost-vs-duration", "Cost against duration", "No run with a duration in this range.")
        dots = [_charts.Dot(r.duration_s / 60, float(r.cost), OUTCOME_CLASS.get(r.outcome, "other"), href(r),
                            "#{} attempt {} · {} · {} · {}".format(
                                "?" if r.issue is None else r.issue, r.attempt or "?",
                                r.outcome or "outcome not recorded", ledger.usd(float(r.cost)),
                                metrics.human_duration(r.duration_s)))
                for r in self.dots]
        return _charts.figure("cost-vs-duration", "Cost against duration", "One dot per run, coloured by how it "
                              "ended; each links to its issue.", *_charts.cost_vs_duration(dots, ledger.usd, self.timed))

    def outcome_chart(self, days: List[str], labels: List[str]) -> str:
        if not self.by_day:
            return _charts.empty("outcomes", "Success rate per day", self.NO_DAYS)
        counts = [dict(zip(OUTCOME_COLUMNS, self.by_day[d][1:] if d in self.by_day else (0, 0, 0, 0)))
                  for d in days]
        return _charts.figure("outcomes", "Success rate per day", "Completed, failed and blocked runs; the success "
                              "rate is completed of those. Startup errors, cancels and runs recorded before "
                              "outcomes were count as other.", *_charts.outcomes_per_day(days, labels, counts))


class Outlook(NamedTuple):
    last_hour_usd: float      # the burn rate, dollars per hour
    end_of_day_usd: float     # today so far + the burn rate until midnight
    end_of_month_usd: float   # this month so far, at its daily average so far
    running_usd: float        # what active workers have spent, not yet in the ledger


def outlook(runs: List[ledger.Run], spend: Dict[str, Any], active: List[Dict[str, Any]], now: float) -> Outlook:
    hour = sum(float(r.cost) for r in runs if r.time is not None and now - 3600 < r.time <= now)
    today = dt.date.fromisoformat(ledger.local_day(now))
    tomorrow = ledger.day_start((today + dt.timedelta(days=1)).isoformat())
    month_start = ledger.day_start(today.replace(day=1).isoformat())
    month_end = ledger.day_start((today.replace(day=1) + dt.timedelta(days=32)).replace(day=1).isoformat())
    elapsed = max(now - month_start, 3600.0)   # less than an hour in is too little to go by
    return Outlook(hour, spend["today_usd"] + hour * max(0.0, tomorrow - now) / 3600,
                   spend["month_usd"] * (month_end - month_start) / elapsed,
                   sum(w["cost_usd"] or 0.0 for w in active))


# ---------------------------------------------------------------------------
# HTML: the page frame and the overview's parts
# ---------------------------------------------------------------------------

CSS = """
:root{color-scheme:light dark;--fg:#1f2328;--bg:#fff;--muted:#59636e;--line:#d1d9e0;--card:#f6f8fa;
--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--link:#0969da}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--bg:#0d1117;--muted:#9198a1;--line:#3d444d;
--card:#151b23;--link:#4493f8}}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:var(--fg);background:var(--bg)}
a{color:var(--link)}
header,main,footer{padding:10px 20px}
header{border-bottom:1px solid var(--line);display:flex;flex-wrap:wrap;gap:8px 16px;align-items:center}
header h1{font-size:18px;margin:0}
h2{font-size:16px;margin:22px 0 8px}h3{font-size:14px;margin:0 0 6px}
.badge{padding:1px 8px;border-radius:4px;font-weight:700;color:#fff;text-transform:uppercase;font-size:12px}
.ok{background:var(--ok)}.warning{background:#bf8700}.degraded,.critical{background:var(--bad)}
.state{background:var(--muted)}
nav.ranges a{margin-right:10px}nav.ranges a[aria-current]{font-weight:700;color:var(--fg);text-decoration:none}
.muted{color:var(--muted)}
.notice{border-left:4px solid #bf8700;background:var(--card);padding:6px 10px;margin:6px 0}
.notice.bad{border-color:var(--bad)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(190px,1fr));gap:12px}
.card{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:10px 12px}
.card .big{font-size:22px;font-weight:600;font-variant-numeric:tabular-nums}
.card .small{font-size:12px;color:var(--muted)}
table{border-collapse:collapse;max-width:100%}
th,td{padding:3px 10px 3px 0;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:18px}
figure.fig{margin:0;border:1px solid var(--line);border-radius:6px;padding:10px}
figcaption{font-size:12px;color:var(--muted)}
details{font-size:12px}details table{margin-top:4px}
.empty{color:var(--muted)}
svg.chart{width:100%;height:auto;font:11px system-ui,sans-serif}
svg .tick,svg .note{fill:var(--muted)}svg .axis{fill:var(--fg);font-weight:600}
svg .grid{stroke:var(--line)}svg .base{stroke:var(--muted)}
.s-cost{fill:#4e79a7}.s-cum{fill:none;stroke:#f28e2b;stroke-width:2}.cum{fill:#f28e2b}
.s-budget{stroke:#e15759;stroke-width:1.5;stroke-dasharray:6 4}
.s-in{fill:#4e79a7}.s-out{fill:#f28e2b}.s-cr{fill:#76b7b2}.s-cw{fill:#b07aa1}.s-model{fill:#59a14f}
.o-completed{fill:#2da44e}.o-failed{fill:#cf222e}.o-blocked{fill:#d4a72c}.o-other{fill:#8c959f}
.heat{fill:#2f81f7}.heat0{fill:var(--line)}
.tx{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace;background:var(--card);padding:8px 10px;
border:1px solid var(--line);border-radius:6px;overflow-x:auto}
.l{white-space:pre-wrap;overflow-wrap:anywhere}
.i2{padding-left:2ch}.i4{padding-left:4ch}.i6{padding-left:6ch}.i8{padding-left:8ch}.i10{padding-left:10ch}
.i12{padding-left:12ch}
.b{font-weight:700}.it{font-style:italic}.d{opacity:.65}
.c-red{color:#cf222e}.c-green{color:#1a7f37}.c-yellow{color:#9a6700}.c-blue{color:#0969da}
.c-magenta{color:#8250df}.c-cyan{color:#1b7c83}
"""
# No script may run, nothing may be fetched: a title that escaped escaping
# still could not act. Inline styles are the page's own.
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")


def page_head(title: str, refresh: bool = False) -> str:
    return ('<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">{}'
            '<title>{}</title><link rel="icon" href="data:,"><style>{}</style></head><body>\n').format(
                '<meta http-equiv="refresh" content="{}">'.format(REFRESH_SECONDS) if refresh else "",
                esc(title), CSS)


def page_foot(now: float, extra: str = "") -> str:
    return ('<footer class="muted">Read-only · drawn {} {} · <a href="/api/status">/api/status</a> · '
            '<a href="/api/usage">/api/usage</a></footer></body></html>\n').format(
                esc(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))), extra)


def notice(text: str, bad: bool = False) -> str:
    return '<div class="notice{}" role="status">{}</div>'.format(" bad" if bad else "", esc(text))


def link_issue(n) -> str:
    return '<a href="/issue/{0}">#{0}</a>'.format(esc(n)) if isinstance(n, int) else esc(n)


def link_url(url) -> str:
    """A link only for http(s): a "javascript:" PR field must stay text."""
    text = esc(url)
    if isinstance(url, str) and re.match(r"https?://", url):
        return '<a href="{0}" rel="noreferrer">{0}</a>'.format(text)
    return text


def table(headers: List[Tuple[str, str]], rows: List[List[str]], empty: str = "") -> str:
    """Rows of cells already in HTML; headers as (text, "num" or "")."""
    if not rows:
        return '<p class="muted">{}</p>'.format(esc(empty)) if empty else ""
    head = "".join('<th class="{}">{}</th>'.format(c, esc(h)) for h, c in headers)
    body = "".join("<tr>{}</tr>".format("".join('<td class="{}">{}</td>'.format(c, cell)
                                                   for cell, (_, c) in zip(row, headers))) for row in rows)
    return "<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>".format(head, body)


def stage_text(stage, rnd) -> str:
    return " · ".join(x for x in ("stage " + stage if stage else "", "round " + rnd if rnd else "") if x)


def health_header(facts: Dict[str, Any], now: float, crumbs: str = "") -> str:
    level = facts["health"]["level"]
    reason = facts["health"]["reason"] or "running normally"
    bits = []
    if facts.get("pid") is not None:
        bits.append("pid {}".format(facts["pid"]))
    if isinstance(facts.get("updated_at"), (int, float)):
        bits.append("updated {} ago".format(metrics.human_duration(now - facts["updated_at"])))
    return ('<header><h1><a href="/" style="color:inherit;text-decoration:none">TAC coordinator</a></h1>{}'
            '<span class="badge {}">{}</span> <span>{}</span> <span class="muted">{}</span></header>').format(
                crumbs, esc(level), esc(level), esc(reason), esc(" · ".join(bits)))


def state_notices(facts: Dict[str, Any], ledger_exists: bool) -> List[str]:
    """What is wrong or unusual with the daemon's files, said once each."""
    out = []
    if facts["metrics"] == "missing":
        out.append(notice("The coordinator is not running, or has not started yet: there is no {}.".format(
            facts["metrics_path"]), bad=True))
    elif facts["metrics"] == "unreadable":
        out.append(notice("{} is unreadable: the daemon's state is unknown.".format(facts["metrics_path"]), bad=True))
    if facts["paused"]:
        out.append(notice("Spawning is paused by the user" + (": " + facts["pause_reason"] if facts["pause_reason"]
                                                               else ".")))
    if facts["spawn_block"]:
        block = facts["spawn_block"]
        out.append(notice(block if block.lower().startswith("spawning paused") else "Spawning paused: " + block,
                          bad=True))
    out += [notice(w) for w in facts["warnings"]]
    if not ledger_exists:
        out.append(notice("No ledger yet at {}: no run has finished.".format(facts["ledger_path"])))
    return out


def spend_cards(report: usage_report.Report, facts: Dict[str, Any], look: Outlook, range_name: str) -> str:
    t = report.total
    sp = facts["spend"]
    usd = ledger.usd

    def card(title: str, big: str, small: str, data: str = "") -> str:
        return '<div class="card"{}><div class="small">{}</div><div class="big">{}</div><div class="small">{}</div></div>'.format(
            data, esc(title), esc(big), esc(small))

    def against(spent: float, budget: Optional[float]) -> str:
        return "of {} ({:.0f}%)".format(usd(budget), 100 * spent / budget) if budget else "no budget set"

    def over(projected: float, budget: Optional[float]) -> str:
        return " — over the budget" if budget and projected > budget else ""

    span = ledger.RANGES[range_name]
    issues = len([n for n in report.issues if n is not None])
    parts = "in {} · out {} · cache {} w / {} r".format(*(usage_report.compact(x) for x in (
        t.input_tokens, t.output_tokens, t.cache_creation_tokens, t.cache_read_tokens)))
    today = "{} · burn rate {}/h over the last hour · {} by midnight at that rate{}".format(
        against(sp["today_usd"], sp["daily_usd"]), usd(look.last_hour_usd), usd(look.end_of_day_usd),
        over(look.end_of_day_usd, sp["daily_usd"]))
    month = "{} · {} by the end of the month at its daily average so far{}".format(
        against(sp["month_usd"], sp["monthly_usd"]), usd(look.end_of_month_usd),
        over(look.end_of_month_usd, sp["monthly_usd"]))
    # data-* hold the exact totals (usage_report's), for a script or a test.
    return '<section class="cards" aria-label="Totals">{}</section>'.format("".join((
        card("Runs, " + span, "{:,}".format(t.runs), "{:,} issue{}".format(issues, "" if issues == 1 else "s"),
             ' data-total-runs="{}"'.format(t.runs)),
        card("Tokens, " + span, "{:,}".format(t.total_tokens), parts, ' data-total-tokens="{}"'.format(t.total_tokens)),
        card("Cost, " + span, usd(float(t.cost)), "as recorded in the ledger",
             ' data-total-cost="{}"'.format(esc(str(t.cost)))),
        card("Today", usd(sp["today_usd"]), today),
        card("This month", usd(sp["month_usd"]), month),
        card("Running now", usd(look.running_usd), "spent by active workers so far, not yet in the ledger"),
    )))


def workers_section(facts: Dict[str, Any]) -> str:
    rows = []
    for w in facts["active"]:
        n = w["issue"]
        rows.append([
            link_issue(n), esc(w["title"]), esc(stage_text(w.get("stage"), w.get("round"))),
            esc(metrics.human_duration(w["elapsed_s"]) if w["elapsed_s"] is not None else ""),
            esc(ledger.usd(w["cost_usd"]) if w["cost_usd"] is not None else ""),
            esc(w["last_tool"]),
            '<a href="/issue/{0}#transcript">transcript</a> · <a href="/issue/{0}/live">live</a>'.format(esc(n))
            if isinstance(n, int) else "",
        ])
    cap = facts.get("max_concurrent")
    return "<section><h2>Active workers ({}{})</h2>{}</section>".format(
        len(facts["active"]), " of {}".format(cap) if isinstance(cap, int) else "",
        table([("Issue", ""), ("Title", ""), ("Stage", ""), ("Elapsed", "num"), ("Cost so far", "num"),
               ("Last tool call", ""), ("", "")], rows, "No worker is running."))


def queue_section(facts: Dict[str, Any], now: float) -> str:
    def when(epoch) -> str:
        return esc(status.short_time(epoch, now))

    pending = []
    for p in facts["pending"]:
        nxt = p["next_attempt"]
        retry = "retry in " + metrics.human_duration(nxt - now) if nxt and nxt > now else (
            "retry due" if p.get("attempts") else "")
        pending.append([link_issue(p["issue"]), esc(p["title"]), esc("p{}".format(p["priority"])), esc(retry)])
    done = [[link_issue(c["issue"]), esc(c["title"]), link_url(c.get("pr") or ""), when(c["completed"])]
            for c in facts["completed"]]
    failed = [[link_issue(f["issue"]), esc(f["title"]), esc(f.get("reason") or "")] for f in facts["failed"]]
    blocked = [[link_issue(b["issue"]), esc(b["title"]), esc(b.get("reason") or "")] for b in facts["blocked"]]
    parts = ["<section><h2>Queue</h2>"]
    for title, headers, rows in (
            ("Pending", [("Issue", ""), ("Title", ""), ("Priority", ""), ("", "")], pending),
            ("Completed today", [("Issue", ""), ("Title", ""), ("Pull request", ""), ("At", "")], done),
            ("Failed", [("Issue", ""), ("Title", ""), ("Reason", "")], failed),
            ("Blocked", [("Issue", ""), ("Title", ""), ("Reason", "")], blocked)):
        parts.append("<h3>{} ({})</h3>{}".format(esc(title), len(rows), table(headers, rows, "None.")))
    parts.append("</section>")
    return "".join(parts)


def prs_section(facts: Dict[str, Any], now: float) -> str:
    items = ["<li>{} {} — {} <span class=\"muted\">{}</span></li>".format(
        link_url(c["pr"]), link_issue(c["issue"]), esc(c["title"]), esc(status.short_time(c["completed"], now)))
        for c in facts["completed"] if c.get("pr")][:10]
    return "<section><h2>Recent pull requests</h2>{}</section>".format(
        "<ul>{}</ul>".format("".join(items)) if items else '<p class="muted">None today.</p>')


def range_nav(current: str, path: str = "/") -> str:
    return '<nav class="ranges" aria-label="Range">{}</nav>'.format(" ".join(
        '<a href="{}?{}"{}>{}</a>'.format(esc(path), esc(urlencode({"range": r})),
                                         ' aria-current="page"' if r == current else "", esc(RANGE_LABELS[r]))
        for r in ledger.RANGES))


def guarded(name: str, draw: Callable[[], str]) -> str:
    """One part of a page; if drawing it fails, a notice in its place and
    the traceback in the dashboard's log, never in the browser."""
    try:
        return draw()
    except Exception as exc:  # deliberate: one broken part must not take the page down
        traceback.print_exc(file=sys.stderr)
        return notice("Could not draw {}: {}: {}".format(name, type(exc).__name__, exc), bad=True)


# ---------------------------------------------------------------------------
# Transcripts as HTML: view_worker's Viewer, with its output made HTML
# ---------------------------------------------------------------------------

COLOURS = ("red", "green", "yellow", "blue", "magenta", "cyan")
_viewer_class = None


def html_viewer():
    """view_worker.Viewer with ``emit`` writing escaped HTML to a list:
    every event is rendered (and redacted) by the same code as in the
    terminal. Made on first use: it imports rich."""
    global _viewer_class
    if _viewer_class is None:
        import view_worker
        from rich.console import Console

        class HtmlViewer(view_worker.Viewer):
            def __init__(self, out: List[str], **options: Any) -> None:
                # The console only resolves styles here; nothing is printed to it.
                super().__init__(Console(file=io.StringIO(), width=120, color_system=None), **options)
                self.out = out

            def emit(self, renderable, indent: int) -> None:
                spans = []
                # Text.render applies the text's own style only to its spans.
                base = None if renderable.spans else self.console.get_style(renderable.style, default=None)
                for segment in renderable.render(self.console):
                    classes = style_classes(segment.style or base)
                    text = esc(segment.text)
                    spans.append('<span class="{}">{}</span>'.format(classes, text) if classes else text)
                self.out.append('<div class="l i{}">{}</div>\n'.format(min(12, indent // 2 * 2), "".join(spans)))

        _viewer_class = (HtmlViewer, view_worker)
    return _viewer_class


def style_classes(style) -> str:
    """CSS classes for a rich Style: bold, italic, dim and six colours."""
    if style is None:
        return ""
    out = [c for c, on in (("b", style.bold), ("it", style.italic), ("d", style.dim)) if on]
    colour = style.color.name if style.color is not None else ""
    if colour in COLOURS:
        out.append("c-" + colour)
    return " ".join(out)


# ---------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------

class Response(NamedTuple):
    status: int
    content_type: str
    body: bytes = b""
    # A page written as it is made (a transcript): called with write(str).
    stream: Optional[Callable[[Callable[[str], None]], None]] = None


def html_response(code: int, text: str) -> Response:
    return Response(code, "text/html; charset=utf-8", text.encode("utf-8"))


def json_response(code: int, data: Any) -> Response:
    return Response(code, "application/json", (json.dumps(data, indent=1) + "\n").encode("utf-8"))


def message_page(code: int, title: str, text: str) -> Response:
    now = time.time()
    return html_response(code, page_head(title) + '<header><h1><a href="/">TAC coordinator</a></h1></header>'
                         "<main>{}</main>".format(notice(text, bad=code >= 400)) + page_foot(now))


class Dashboard:
    """The state folder's files and what is kept of them between pages."""

    def __init__(self, cfg: Dict[str, Any]):
        self.cfg = cfg
        self.ledger = LedgerCache(cfg["ledger_path"])
        # Pages are built one at a time (a Pi has few cores, and the spend
        # totals are computed on a shared structure); streams are not held.
        self.lock = threading.Lock()

    def facts(self, now: float):
        """status.py's facts (with the ledger already read) and the runs."""
        runs, corrupt, exists = self.ledger.refresh()
        return status.collect(self.cfg, now, ledger.SpendTracker.of_runs(runs, now, corrupt)), runs, exists

    # -- /api/status and /api/usage ------------------------------------------
    def api_status(self, query: Dict[str, List[str]]) -> Response:
        with self.lock:
            return json_response(200, self.facts(time.time())[0])

    def api_usage(self, query: Dict[str, List[str]]) -> Response:
        """usage_report.py --json, with its options as parameters."""
        def one(key: str, default: str) -> str:
            return (query.get(key) or [default])[-1]
        range_name, kind, issue = one("range", "all"), one("period", "daily"), one("issue", "")
        if range_name not in ledger.RANGES or kind not in usage_report.KINDS or not (issue == "" or issue.isdigit()):
            return json_response(400, {"error": "range must be one of {}; period one of {}; issue a number".format(
                ", ".join(ledger.RANGES), ", ".join(usage_report.KINDS))})
        with self.lock:
            now = time.time()
            runs, corrupt, _ = self.ledger.refresh()
            report = usage_report.build(runs, now, kind, int(issue) if issue else None, range_name)
            return json_response(200, report.as_json(self.cfg["ledger_path"], corrupt,
                                                     one("detail", "") not in ("", "0")))

    # -- / ----------------------------------------------------------------------
    def overview(self, query: Dict[str, List[str]]) -> Response:
        asked = (query.get("range") or [DEFAULT_RANGE])[-1]
        range_name = asked if asked in ledger.RANGES else DEFAULT_RANGE
        with self.lock:
            now = time.time()
            facts, runs, exists = self.facts(now)
            usage = Usage(range_name, now)
            report = usage_report.build(runs, now, "daily", None, range_name, usage.add)
            parts = [page_head("TAC coordinator · {}".format(RANGE_LABELS[range_name]), refresh=True),
                     health_header(facts, now), "<main>"]
            if asked != range_name:
                parts.append(notice("Unknown range {!r}: showing {}.".format(asked, ledger.RANGES[range_name])))
            parts += state_notices(facts, exists)
            parts.append(range_nav(range_name))
            parts.append(guarded("the totals", lambda: spend_cards(
                report, facts, outlook(runs, facts["spend"], facts["active"], now), range_name)))
            parts.append(guarded("the workers", lambda: workers_section(facts)))
            parts.append(guarded("the queue", lambda: queue_section(facts, now)))
            parts.append(guarded("the pull requests", lambda: prs_section(facts, now)))

            def href(run: ledger.Run) -> str:
                return "/issue/{}".format(run.issue) if run.issue is not None else "/"
            charts = guarded("the charts", lambda: "".join(usage.charts(facts["spend"]["monthly_usd"], href)))
            parts.append('<section><h2>Charts, {}</h2><div class="charts">{}</div></section>'.format(
                esc(ledger.RANGES[range_name]), charts))
            parts.append("</main>")
            parts.append(page_foot(now, "· refreshes every {} s".format(REFRESH_SECONDS)))
        return html_response(200, "".join(parts))

    # -- /issue/N ------------------------------------------------------------------
    def issue(self, n: int, query: Dict[str, List[str]], live: bool = False) -> Response:
        try:
            path = transcript_path(self.cfg["logs"], n)
        except Refused as e:
            return message_page(403, "Refused", "Refused: {}.".format(e))
        with self.lock:
            now = time.time()
            facts, all_runs, _ = self.facts(now)
            doc, _problems = status.load_tasks(self.cfg["tasks_path"])
            task = doc.governing(n) if doc is not None else None
            worker = next((w for w in facts["active"] if w["issue"] == n), None)
            runs: List[ledger.Run] = []
            report = usage_report.build(all_runs, now, "daily", n, "all", runs.append)
        if task is None and worker is None and not runs and not path.exists():
            return message_page(404, "#{}".format(n), "Nothing is known about #{}: it is not in tasks.md, "
                                "has no run in the ledger and no transcript.".format(n))
        title = (task.title if task else "") or (worker or {}).get("title") or ""
        run_filter = (query.get("run") or [""])[-1]
        run = int(run_filter) if run_filter.isdigit() and int(run_filter) > 0 else None
        detailed = (query.get("detailed") or [""])[-1] not in ("", "0")
        head = [page_head("#{} {}{}".format(n, title, " · live" if live else "")),
                health_header(facts, now, '<a href="/">overview</a>'), "<main>",
                issue_summary(n, title, task, worker, now)]
        if not live:
            head.append(runs_section(n, runs, report, worker, now))
        head.append(transcript_heading(n, runs, run, live, path.exists()))
        running = worker is not None or (task is not None and task.state == tasks.ACTIVE)

        def stream(write: Callable[[str], None]) -> None:
            write("".join(head))
            if live:
                self.follow(path, n, write)
            else:
                write_transcript(path, run, detailed, running, write)
            write('</div></section></main>' + page_foot(time.time()))
        return Response(200, "text/html; charset=utf-8", stream=stream)

    def still_active(self, n: int) -> bool:
        doc, _ = status.load_tasks(self.cfg["tasks_path"])
        task = doc.governing(n) if doc is not None else None
        return task is not None and task.state == tasks.ACTIVE

    def follow(self, path: Path, n: int, write: Callable[[str], None]) -> None:
        """view_worker --follow as HTML: until the worker's task leaves
        Active (and a moment more, for its last lines), the reader goes, or
        LIVE_LIMIT passes."""
        HtmlViewer, view_worker = html_viewer()
        out: List[str] = []
        viewer = HtmlViewer(out)
        started = last_write = last_check = time.monotonic()
        ended_at: List[float] = []
        said: List[str] = []

        def flush() -> None:
            nonlocal last_write
            if out:
                write("".join(out))
                out.clear()
                last_write = time.monotonic()

        def stop() -> bool:
            nonlocal last_write, last_check
            clock = time.monotonic()
            if clock - started > LIVE_LIMIT:
                said.append("The live view stops after {}: reload the page to go on.".format(
                    metrics.human_duration(LIVE_LIMIT)))
                return True
            if clock - last_check >= 1.0:
                last_check = clock
                if ended_at:
                    if clock - ended_at[0] >= LIVE_GRACE:
                        said.append("The worker has ended.")
                        return True
                elif not self.still_active(n):
                    ended_at.append(clock)
            if clock - last_write >= LIVE_HEARTBEAT:
                write("<!-- still following -->\n")  # a reader who left makes this raise
                last_write = clock
            return False

        view_worker.follow(path, viewer, flush, stop)
        viewer.finish()
        flush()
        for line in said:
            write(notice(line))


def issue_summary(n: int, title: str, task, worker: Optional[Dict[str, Any]], now: float) -> str:
    rows = []
    if task is not None:
        rows.append(("State", '<span class="badge state">{}</span>'.format(esc(task.state))))
        for label, value in (("Priority", "p{}".format(task.priority)), ("Attempts", task.attempts or ""),
                             ("Started", task.started), ("Branch", task.branch),
                             ("Stage", status.task_detail(task, "stage")), ("Round", status.task_detail(task, "round")),
                             ("Next attempt", task.next_attempt), ("Completed", task.completed),
                             ("Reason", task.reason)):
            if value not in (None, ""):
                rows.append((label, esc(value)))
        if task.pr:
            rows.append(("Pull request", link_url(task.pr)))
    else:
        rows.append(("State", esc("not in tasks.md (archived, or never queued)")))
    if worker is not None:
        rows.append(("Running", esc("{} · {} so far · {}".format(
            metrics.human_duration(worker["elapsed_s"]) if worker["elapsed_s"] is not None else "?",
            ledger.usd(worker["cost_usd"]) if worker["cost_usd"] is not None else "$?",
            worker["last_tool"] or "no tool call yet"))
            + ' · <a href="/issue/{}/live">follow it live</a>'.format(n)))
    body = "".join("<tr><th>{}</th><td>{}</td></tr>".format(esc(k), v) for k, v in rows)
    return '<h2>{} {}</h2><table class="summary">{}</table>'.format(link_issue(n), esc(title), body)


def runs_section(n: int, runs: List[ledger.Run], report: usage_report.Report,
                 worker: Optional[Dict[str, Any]], now: float) -> str:
    """Every run of the issue from the ledger, in order; the K-th run's
    transcript is the K-th attempt separator in the log."""
    rows = []
    for k, r in enumerate(runs, 1):
        rows.append([
            '<a href="/issue/{}?run={}#transcript" id="run-{}">{}</a>'.format(n, k, k, k),
            esc(r.attempt if r.attempt is not None else ""), esc(r.stage or ""), esc(r.round or ""),
            esc(time.strftime("%Y-%m-%d %H:%M", time.localtime(r.time)) if r.time is not None else (r.day or "")),
            esc(r.outcome or "not recorded"), esc(ledger.usd(float(r.cost))),
            esc("{:,}".format(r.total_tokens)),
            esc("{} / {} / {} / {}".format(*(usage_report.compact(x) for x in (
                r.input_tokens, r.output_tokens, r.cache_creation_tokens, r.cache_read_tokens)))),
            esc(metrics.human_duration(r.duration_s) if r.duration_s is not None else ""),
        ])
    if worker is not None:
        rows.append(["", esc(worker.get("attempt") or ""), esc(worker.get("stage") or ""), esc(worker.get("round") or ""),
                     "", esc("running"), esc(ledger.usd(worker["cost_usd"]) if worker["cost_usd"] is not None else ""),
                     "", "", esc(metrics.human_duration(worker["elapsed_s"]) if worker["elapsed_s"] is not None else "")])
    t = report.total
    total = '<p class="muted" data-issue-cost="{}">{} run{} · {:,} tokens · {}</p>'.format(
        esc(str(t.cost)), t.runs, "" if t.runs == 1 else "s", t.total_tokens, esc(ledger.usd(float(t.cost))))
    return "<section><h2>Runs</h2>{}{}</section>".format(table(
        [("Run", ""), ("Attempt", ""), ("Stage", ""), ("Round", ""), ("Ended", ""), ("Outcome", ""),
         ("Cost", "num"), ("Tokens", "num"), ("In / out / cache w / r", "num"), ("Duration", "num")],
        rows, "No run of #{} has finished yet.".format(n)), total if runs else "")


def transcript_heading(n: int, runs: List[ledger.Run], run: Optional[int], live: bool, exists: bool) -> str:
    if live:
        links = '<a href="/issue/{}#transcript">the whole transcript</a>'.format(n)
        what = "Live: the transcript, then each line as the worker writes it"
    else:
        choices = ['<a href="/issue/{}#transcript"{}>all runs</a>'.format(n, "" if run else ' aria-current="page"')]
        if len(runs) <= MAX_RUN_LINKS:
            choices += ['<a href="/issue/{0}?run={1}#transcript"{2}>run {1}</a>'.format(
                n, k, ' aria-current="page"' if run == k else "") for k in range(1, len(runs) + 1)]
        else:
            choices.append("one run: its number in the table above")
        links = " · ".join(choices)
        what = "Transcript" + (", run {}".format(run) if run else "")
    missing = "" if exists else notice("No transcript at logs/gh-{}.jsonl yet.".format(n))
    return '<section id="transcript"><h2>{}</h2><p class="muted">{}</p>{}<div class="tx">'.format(
        esc(what), links, missing)


def write_transcript(path: Path, run: Optional[int], detailed: bool, running: bool,
                     write: Callable[[str], None]) -> None:
    """The log rendered by view_worker's Viewer, a few hundred lines per
    write: constant memory whatever the log's size."""
    if not path.exists():
        return
    HtmlViewer, view_worker = html_viewer()
    out: List[str] = []
    viewer = HtmlViewer(out, detailed=detailed, attempt=run)
    try:
        for body, newline in view_worker.read_lines(path):
            if not newline and running:
                break  # the line the worker is writing now: the live view shows it
            if not viewer.feed(body, newline):
                break
            if len(out) >= CHUNK_LINES:
                write("".join(out))
                out.clear()
        viewer.finish()
    except OSError as e:
        out.append(notice("Could not read on: {}.".format(e.strerror or e), bad=True))
    if run is not None and viewer.lines_in_selection == 0:
        out.append(notice("No run {} in this transcript.".format(run)))
    write("".join(out))


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------

ROUTES: List[Tuple["re.Pattern[str]", str]] = [
    (re.compile(r"/"), "overview"),
    (re.compile(r"/issue/([0-9]{1,9})"), "issue"),
    (re.compile(r"/issue/([0-9]{1,9})/live"), "live"),
    (re.compile(r"/api/status"), "api_status"),
    (re.compile(r"/api/usage"), "api_usage"),
]
LOOPBACK_NAMES = ("localhost", "localhost.", "ip6-localhost")


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Handler(BaseHTTPRequestHandler):
    server_version = "tac-dashboard"
    sys_version = ""
    dashboard: Dashboard        # set on the subclass serve() makes
    loopback_only: bool = True

    def do_GET(self) -> None:
        self.answer(send_body=True)

    def do_HEAD(self) -> None:
        self.answer(send_body=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a browser asks every 30 s; only failures are worth a line (log_error)

    def log_error(self, format: str, *args: Any) -> None:
        warn("{} {}".format(self.address_string(), format % args))

    def host_allowed(self) -> bool:
        """Bound to loopback, answer only requests addressed to a loopback
        name: a web page elsewhere cannot read this one through a DNS name
        it points at 127.0.0.1 (DNS rebinding)."""
        if not self.loopback_only:
            return True
        host = self.headers.get("Host")
        if host is None:
            return True
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return is_loopback(name)

    def route(self) -> Response:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        if not self.host_allowed():
            return message_page(403, "Refused", "Refused: this dashboard answers only at localhost "
                                "(the Host header said {}).".format(self.headers.get("Host")))
        for pattern, name in ROUTES:
            m = pattern.fullmatch(parts.path)
            if m is None:
                continue
            if name == "issue":
                return self.dashboard.issue(int(m.group(1)), query)
            if name == "live":
                return self.dashboard.issue(int(m.group(1)), query, live=True)
            return getattr(self.dashboard, name)(query)
        return message_page(404, "Not found", "There is no page at {}.".format(parts.path))

    def answer(self, send_body: bool) -> None:
        try:
            response = self.route()
        except Exception as exc:  # deliberate: a bug here is a short page and a log line, not a traceback
            traceback.print_exc(file=sys.stderr)
            response = message_page(500, "Error", "The dashboard failed on this page ({}: {}); "
                                    "the details are in its log.".format(type(exc).__name__, exc))
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if response.stream is None:
            self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if not send_body:
            return
        try:
            if response.stream is None:
                self.wfile.write(response.body)
            else:
                # HTTP/1.0: the page ends when the connection closes, so it
                # can be sent while it is made.
                response.stream(lambda text: self.wfile.write(text.encode("utf-8")))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the reader left
        except Exception:  # deliberate: the headers are gone; end the page and log it
            traceback.print_exc(file=sys.stderr)


class Server(ThreadingHTTPServer):
    daemon_threads = True     # a live view must not hold up Ctrl-C
    allow_reuse_address = True


def serve(dashboard: Dashboard, host: str, port: int) -> Server:
    """A started-listening server (not yet serving) on host:port (0 = any free port)."""
    handler = type("BoundHandler", (Handler,), {"dashboard": dashboard, "loopback_only": is_loopback(host)})
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("BoundServer", (Server,), {"address_family": family})
    return server_class((host.strip("[]"), port), handler)


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="dashboard.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "config.toml"),
                        help="config.toml to read (default: the project's)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; anything else is reachable without a login)")
    parser.add_argument("--port", type=int, default=8050, help="port (default 8050; 0 = any free port)")
    args = parser.parse_args(argv)

    try:
        cfg = status.load_config(args.config)
    except status.ConfigError as e:
        warn(str(e))
        return status.EX_CONFIG
    _shared.require_rich(PROG, __file__, sys.argv[1:] if argv is None else argv)  # transcripts need it
    try:
        server = serve(Dashboard(cfg), args.host, args.port)
    except (OSError, OverflowError) as e:
        warn("cannot listen on {}:{}: {}".format(args.host, args.port, getattr(e, "strerror", None) or e))
        return 1
    host, port = server.server_address[:2]
    shown = "[{}]".format(host) if ":" in host else host
    if not is_loopback(args.host):
        warn("listening on {}:{}, beyond this machine: the page has no login, and anyone who can reach "
             "this port can read the queue, the spending and the transcripts".format(shown, port))
    print("{}: http://{}:{}/ (read-only; Ctrl-C to stop)".format(PROG, shown, port), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        return 0
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
