#!/usr/bin/env python3
"""Token use and cost from the ledger, by day, ISO week or month.

    python tools/usage_report.py [--config PATH] [--week|--month] [--detail]
                                 [--issue N] [--range 24h|7d|30d|month|all] [--by stage] [--json]

Reads <logs>/usage.jsonl (one line per finished run, written by the daemon)
and prints ccusage's columns (period, models, input, output, cache create,
cache read, total tokens, cost) with a total row, then a bar chart of cost
per day: the last 14 days, or this month's days with --month. --detail adds
totals per issue; --issue N keeps only that issue's runs and lists each of
them: its first run, retries, and each follow-up round on its pull request
(a ledger line's `round`); --range keeps the
runs recorded in the last 24 hours, 7 or 30 days, or this month (default:
all). --by stage adds totals per workflow stage (plan, build, review, ...),
so planning's cost shows beside building's; runs recorded without a stage
(one-stage runs, older lines) count as "(none)". --json prints the same
numbers as one JSON object; the dashboard's /api/usage serves it too, built
by the same build().

The ledger is streamed: memory grows with the number of periods and issues,
never with the number of runs. Costs are summed exactly (see adws/ledger.py)
and rounded to cents only on screen.
"""
from __future__ import annotations

import os
import sys

# `python tools/usage_report.py` puts tools/ on sys.path, not the project
# root; add the root so `from adws import ...` works from any directory
# (and tools/ too, for an import of this file from elsewhere).
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (ROOT, HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from decimal import Decimal  # noqa: E402
from typing import Any, Callable, Dict, Iterable, List, Optional, Union  # noqa: E402

from pathlib import Path  # noqa: E402

import _shared  # noqa: E402
from adws import config, ledger  # noqa: E402

EX_CONFIG = 78
CHART_DAYS = 14
NO_DATE = "(no date)"
NO_STAGE = "(none)"
KINDS = ("daily", "weekly", "monthly")


# ---------------------------------------------------------------------------
# Config (only [paths] logs is needed)
# ---------------------------------------------------------------------------

def ledger_path(config_file: str) -> str:
    """<logs>/usage.jsonl from config.toml; raises ValueError with one line."""
    try:
        return str(config.load_config(Path(config_file), need_repo=False).ledger_path)
    except config.ConfigError as e:
        raise ValueError(str(e))


# ---------------------------------------------------------------------------
# Aggregation (pure: records in, totals out)
# ---------------------------------------------------------------------------

class Totals:
    """Sums for one period or one issue."""
    __slots__ = ("runs", "models", "input_tokens", "output_tokens",
                 "cache_creation_tokens", "cache_read_tokens", "total_tokens", "cost")

    def __init__(self) -> None:
        self.runs = 0
        self.models: Dict[str, None] = {}  # an ordered set
        self.input_tokens = self.output_tokens = 0
        self.cache_creation_tokens = self.cache_read_tokens = self.total_tokens = 0
        self.cost = Decimal(0)

    def add(self, run: ledger.Run) -> None:
        self.runs += 1
        for model in run.models:
            self.models.setdefault(model, None)
        self.input_tokens += run.input_tokens
        self.output_tokens += run.output_tokens
        self.cache_creation_tokens += run.cache_creation_tokens
        self.cache_read_tokens += run.cache_read_tokens
        self.total_tokens += run.total_tokens
        self.cost += run.cost

    def as_json(self) -> Dict[str, Any]:
        return {"models": sorted(self.models), "runs": self.runs,
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "cache_creation_tokens": self.cache_creation_tokens,
                "cache_read_tokens": self.cache_read_tokens,
                "total_tokens": self.total_tokens, "cost_usd": float(self.cost)}


def period_of(kind: str) -> Callable[[str], str]:
    """Map a local YYYY-MM-DD to its row label for 'daily', 'weekly' or 'monthly'."""
    if kind == "daily":
        return lambda day: day
    if kind == "monthly":
        return lambda day: day[:7]

    def week(day: str) -> str:
        y, w, _ = dt.date.fromisoformat(day).isocalendar()
        return "{}-W{:02d}".format(y, w)
    return week


def chart_range(kind: str, today: str) -> List[str]:
    """The days the bar chart shows: this month so far, or the last 14 days."""
    end = dt.date.fromisoformat(today)
    start = end.replace(day=1) if kind == "monthly" else end - dt.timedelta(days=CHART_DAYS - 1)
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


class Report:
    """One pass over the ledger: rows by period, totals by issue, cost by day.

    ``start`` (epoch seconds, see ledger.range_start) keeps only the runs
    recorded at or after it; ``range_name`` is what the JSON calls it."""

    def __init__(self, kind: str, today: str, issue: Optional[int] = None,
                 start: Optional[float] = None, range_name: str = "all"):
        self.kind = kind
        self.issue = issue
        self.start = start
        self.range_name = range_name
        self.rows: Dict[str, Totals] = {}
        self.issues: Dict[Optional[int], Totals] = {}
        self.stages: Dict[str, Totals] = {}
        self.total = Totals()
        self.chart_days = chart_range(kind, today)
        self.daily_cost: Dict[str, Decimal] = {d: Decimal(0) for d in self.chart_days}
        self._period = period_of(kind)
        # One issue's runs one by one (a handful): only with an issue filter,
        # so memory never grows with the whole ledger.
        self.runs: List[ledger.Run] = []

    def feed(self, records: Iterable[Union[dict, ledger.Run]],
             each: Optional[Callable[[ledger.Run], None]] = None) -> "Report":
        """Add ledger records (dicts as read, or Runs already made from
        them). ``each`` is called with every run that counts: the
        dashboard's charts see exactly the runs these totals count."""
        for rec in records:
            run = rec if isinstance(rec, ledger.Run) else ledger.Run.of(rec)
            if self.issue is not None and run.issue != self.issue:
                continue
            if self.start is not None and (run.time is None or run.time < self.start):
                continue
            if each is not None:
                each(run)
            day = run.day
            key = self._period(day) if day else NO_DATE
            for table, k in ((self.rows, key), (self.issues, run.issue), (self.stages, run.stage or NO_STAGE)):
                totals = table.get(k)
                if totals is None:
                    totals = table[k] = Totals()
                totals.add(run)
            self.total.add(run)
            if self.issue is not None:
                self.runs.append(run)
            if day in self.daily_cost:
                self.daily_cost[day] += run.cost
        return self

    def sorted_rows(self):
        # "(no date)" sorts after every real period.
        return sorted(self.rows.items(), key=lambda kv: (kv[0] == NO_DATE, kv[0]))

    def sorted_issues(self):
        return sorted(self.issues.items(), key=lambda kv: (-kv[1].cost, kv[0] is None, kv[0] or 0))

    def sorted_stages(self):
        return sorted(self.stages.items(), key=lambda kv: (-kv[1].cost, kv[0] == NO_STAGE, kv[0]))

    def as_json(self, path: str, corrupt: int, detail: bool, by: str = "") -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "ledger": path, "period": self.kind, "issue": self.issue, "range": self.range_name,
            "corrupt_lines": corrupt,
            "rows": [dict(t.as_json(), period=k) for k, t in self.sorted_rows()],
            "total": self.total.as_json(),
            "chart": [{"date": d, "cost_usd": float(self.daily_cost[d])} for d in self.chart_days],
        }
        if detail:
            out["issues"] = [dict(t.as_json(), issue=n) for n, t in self.sorted_issues()]
        if by == "stage":
            out["stages"] = [dict(t.as_json(), stage=k if k != NO_STAGE else None) for k, t in self.sorted_stages()]
        if self.issue is not None:
            out["runs"] = [{"time": run_time(r), "run": run_label(r), "attempt": r.attempt, "round": r.round,
                            "outcome": r.outcome, "total_tokens": r.total_tokens, "cost_usd": float(r.cost)}
                           for r in self.runs]
        return out


def run_label(run: ledger.Run) -> str:
    """"first run" for the task's own run(s), "round N" for a follow-up
    on its pull request (adws/followup.py)."""
    return "round {}".format(run.round) if run.round else "first run"


def run_time(run: ledger.Run) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(run.time)) if run.time is not None else ""


def build(records: Iterable[Union[dict, ledger.Run]], now: float, kind: str = "daily",
           issue: Optional[int] = None, range_name: str = "all",
           each: Optional[Callable[[ledger.Run], None]] = None) -> Report:
    """The report --json prints and the dashboard's /api/usage serves: one
    code path for both. Raises KeyError for a range not in ledger.RANGES."""
    return Report(kind, ledger.local_day(now), issue, ledger.range_start(range_name, now),
                  range_name).feed(records, each)


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------

BLOCKS = " ▏▎▍▌▋▊▉█"
PERIOD_HEADER = {"daily": "Date", "weekly": "Week", "monthly": "Month"}


def _short_model(name: str) -> str:
    return name[len("claude-"):] if name.startswith("claude-") else name


def compact(n: int) -> str:
    """Token counts in at most 6 characters, so eight columns fit 80."""
    if n < 10_000:
        return "{:,}".format(n)
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            value = n / size
            return ("{:.1f}{}" if value < 100 else "{:.0f}{}").format(value, unit)
    return str(n)


def bar(value: float, biggest: float, width: int) -> str:
    """A horizontal bar in eighths of a cell; any non-zero value shows."""
    if biggest <= 0 or value <= 0:
        return ""
    eighths = max(1, round(8 * width * value / biggest))
    full, part = divmod(eighths, 8)
    return "█" * full + (BLOCKS[part] if part else "")


def render(report: Report, console, detail: bool, by: str = "") -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    title = "{} usage{}{}".format(
        report.kind.capitalize(), " for issue #{}".format(report.issue) if report.issue is not None else "",
        ", " + ledger.RANGES[report.range_name] if report.range_name != "all" else "")
    table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
                  show_footer=True, pad_edge=False, padding=(0, 1), footer_style="bold")
    total = report.total
    rows = report.sorted_rows()
    num = dict(justify="right", no_wrap=True)
    # Exact counts need about 120 columns; narrower terminals get 1.2M / 88.2k
    # (--json always has the exact numbers).
    fmt = "{:,}".format if console.width >= 120 else compact
    table.add_column(PERIOD_HEADER[report.kind], "Total", no_wrap=True)
    table.add_column("Models", "", overflow="fold", ratio=1, min_width=8)
    table.add_column("Input", fmt(total.input_tokens), **num)
    table.add_column("Output", fmt(total.output_tokens), **num)
    table.add_column("Cache\ncreate", fmt(total.cache_creation_tokens), **num)
    table.add_column("Cache\nread", fmt(total.cache_read_tokens), **num)
    table.add_column("Total\ntokens", fmt(total.total_tokens), **num)
    table.add_column("Cost\n(USD)", ledger.usd(float(total.cost)), **num)
    for key, t in rows:
        table.add_row(key, "\n".join(_short_model(m) for m in sorted(t.models)),
                      fmt(t.input_tokens), fmt(t.output_tokens), fmt(t.cache_creation_tokens),
                      fmt(t.cache_read_tokens), fmt(t.total_tokens), ledger.usd(float(t.cost)))
    console.print(table)

    if detail:
        it = Table(title="By issue", title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
                   pad_edge=False, padding=(0, 1))
        it.add_column("Issue", no_wrap=True)
        it.add_column("Runs", **num)
        it.add_column("Total tokens", **num)
        it.add_column("Cost (USD)", **num)
        for n, t in report.sorted_issues():
            it.add_row("#{}".format(n) if n is not None else "?", str(t.runs),
                       fmt(t.total_tokens), ledger.usd(float(t.cost)))
        console.print(it)

    if by == "stage":
        st = Table(title="By stage", title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
                   pad_edge=False, padding=(0, 1))
        st.add_column("Stage", no_wrap=True)
        st.add_column("Runs", **num)
        st.add_column("Input", **num)
        st.add_column("Output", **num)
        st.add_column("Total tokens", **num)
        st.add_column("Cost (USD)", **num)
        for name, t in report.sorted_stages():
            st.add_row(name, str(t.runs), fmt(t.input_tokens), fmt(t.output_tokens), fmt(t.total_tokens),
                       ledger.usd(float(t.cost)))
        console.print(st)
    if report.issue is not None and report.runs:
        rt = Table(title="Runs of issue #{}".format(report.issue), title_justify="left", title_style="bold",
                   box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
        rt.add_column("Ended", no_wrap=True)
        rt.add_column("Run", no_wrap=True)
        rt.add_column("Attempt", **num)
        rt.add_column("Outcome", overflow="fold")
        rt.add_column("Total tokens", **num)
        rt.add_column("Cost (USD)", **num)
        for r in report.runs:
            rt.add_row(run_time(r), run_label(r), str(r.attempt) if r.attempt is not None else "",
                       r.outcome or "", fmt(r.total_tokens), ledger.usd(float(r.cost)))
        console.print(rt)

    days = report.chart_days
    costs = [float(report.daily_cost[d]) for d in days]
    biggest = max(costs) if costs else 0.0
    label = "this month" if report.kind == "monthly" else "last {} days".format(len(days))
    console.print(Text("Cost per day, {}".format(label), style="bold"))
    values = [ledger.usd(c) for c in costs]
    value_w = max(len(v) for v in values)
    bar_w = max(10, min(console.width, 80) - 10 - value_w - 2)
    for d, c, v in zip(days, costs, values):
        when = dt.date.fromisoformat(d)
        line = Text("{} {} ".format(when.strftime("%m-%d"), when.strftime("%a")[:3]), style="dim")
        line.append(bar(c, biggest, bar_w).ljust(bar_w), style="cyan")
        line.append(" " + v.rjust(value_w))
        console.print(line)


def show(args, path: str, scan, report: Report) -> None:
    """The report as --json or as tables, on stdout."""
    if args.json:
        json.dump(report.as_json(path, scan.corrupt, args.detail, args.by), sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    # markup/emoji off: titles and paths are data, "[WIP]" must print as is.
    console = _shared.pipe_console(highlight=False, markup=False, emoji=False)
    if report.total.runs == 0:
        if args.issue is not None and scan.records:
            console.print("no runs recorded for issue #{} in {}".format(args.issue, path), soft_wrap=True)
        elif args.range != "all" and scan.records:
            console.print("no runs recorded in the {} in {}".format(ledger.RANGES[args.range], path)
                          if args.range != "month" else "no runs recorded this month in {}".format(path),
                          soft_wrap=True)
        else:
            console.print("no runs recorded yet in {}".format(path), soft_wrap=True)
    else:
        render(report, console, args.detail, args.by)
    if scan.corrupt:
        console.print("{} corrupt line{} skipped in {}".format(
            scan.corrupt, "" if scan.corrupt == 1 else "s", path), style="dim", soft_wrap=True)


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="usage_report.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "config.toml"),
                        help="config.toml to read (default: the project's)")
    span = parser.add_mutually_exclusive_group()
    span.add_argument("--week", action="store_true", help="one row per ISO week")
    span.add_argument("--month", action="store_true", help="one row per month")
    parser.add_argument("--detail", action="store_true", help="add totals per issue")
    parser.add_argument("--issue", type=int, metavar="N", help="only runs for issue N")
    parser.add_argument("--range", choices=list(ledger.RANGES), default="all",
                        help="only runs recorded in the last 24 hours, 7 or 30 days, or this month")
    parser.add_argument("--by", choices=["stage"], default="",
                        help="also total by workflow stage (plan, build, review, ...)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    try:
        path = ledger_path(args.config)
    except ValueError as e:
        print("usage_report: {}".format(e), file=sys.stderr)
        return EX_CONFIG

    kind = "weekly" if args.week else "monthly" if args.month else "daily"
    scan = ledger.read(path)
    result = build(scan, time.time(), kind, args.issue, args.range)

    if not args.json:
        _shared.require_rich("usage_report", __file__, sys.argv[1:] if argv is None else argv)
    try:
        show(args, path, scan, result)
        sys.stdout.flush()
    except BrokenPipeError:  # `usage_report.py --json | head -3`
        return _shared.closed_pipe(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
