"""tools/usage_report.py: totals a user can check by hand, to the cent."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adws import ledger

ROOT = Path(__file__).resolve().parent.parent
REPORT = str(ROOT / "tools" / "usage_report.py")
sys.path.insert(0, str(ROOT / "tools"))
import usage_report  # noqa: E402


def run_record(date, issue, cost, tokens=(10, 900, 5000, 120000), models=("claude-sonnet-4-6",)):
    i, o, cc, cr = tokens
    return {"ts": date + "T12:00:00Z", "date": date, "issue": issue, "attempt": 1,
            "models": list(models), "input_tokens": i, "output_tokens": o,
            "cache_creation_tokens": cc, "cache_read_tokens": cr,
            "total_tokens": i + o + cc + cr, "cost_usd": cost, "cost_source": "result"}


# Dates chosen across an ISO-week, a month and a year boundary:
# 2026-11-22 is a Sunday (W47), 2026-11-23 a Monday (W48), 2026-11-30 and
# 2026-12-01 the Monday and Tuesday of W49; 2026 has 53 ISO
# weeks, so 2027-01-03 (Sunday) is still 2026-W53 and 2027-01-04 is 2027-W01.
RUNS = [
    run_record("2026-11-22", 7, 0.1),
    run_record("2026-11-22", 8, 0.2, models=("claude-haiku-4-5",)),
    run_record("2026-11-23", 7, 0.4312),
    run_record("2026-11-30", 9, 1.005),
    run_record("2026-12-01", 9, 2.0),
    run_record("2026-12-31", 7, 0.3333),
    run_record("2027-01-03", 8, 0.3333),
    run_record("2027-01-04", 7, 0.3334),
]


class Project:
    def __init__(self, root: Path):
        self.root = root
        self.config = root / "config.toml"
        self.ledger = root / "var" / "logs" / "usage.jsonl"
        self.config.write_text('[paths]\nlogs = "var/logs"\n')

    def write(self, records, extra_lines=()):
        self.ledger.parent.mkdir(parents=True, exist_ok=True)
        with open(self.ledger, "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
            for line in extra_lines:
                f.write(line + "\n")

    def run(self, *args: str, columns: int = 80) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR")}
        env["COLUMNS"] = str(columns)
        return subprocess.run([sys.executable, REPORT, "--config", str(self.config), *args],
                              cwd=str(self.root), env=env, capture_output=True, text=True,
                              timeout=30)

    def json(self, *args: str) -> dict:
        r = self.run("--json", *args)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)


@pytest.fixture
def project(tmp_path) -> Project:
    p = Project(tmp_path)
    p.write(RUNS)
    return p


def by_period(data):
    return {row["period"]: row for row in data["rows"]}


def test_daily_rows_and_total(project):
    data = project.json()
    rows = by_period(data)
    assert list(rows) == ["2026-11-22", "2026-11-23", "2026-11-30", "2026-12-01",
                          "2026-12-31", "2027-01-03", "2027-01-04"]
    day = rows["2026-11-22"]
    assert day["cost_usd"] == 0.3          # 0.1 + 0.2, not 0.30000000000000004
    assert day["runs"] == 2
    assert day["models"] == ["claude-haiku-4-5", "claude-sonnet-4-6"]
    assert (day["input_tokens"], day["output_tokens"]) == (20, 1800)
    assert (day["cache_creation_tokens"], day["cache_read_tokens"]) == (10000, 240000)
    assert day["total_tokens"] == 251820
    assert data["total"]["cost_usd"] == 4.7362
    assert data["total"]["runs"] == 8 and data["total"]["total_tokens"] == 8 * 125910
    assert data["corrupt_lines"] == 0


def test_weekly_uses_iso_weeks(project):
    rows = by_period(project.json("--week"))
    assert list(rows) == ["2026-W47", "2026-W48", "2026-W49", "2026-W53", "2027-W01"]
    assert rows["2026-W47"]["cost_usd"] == 0.3
    assert rows["2026-W48"]["cost_usd"] == 0.4312
    assert rows["2026-W49"]["cost_usd"] == 3.005     # Mon Nov 30 + Tue Dec 1
    assert rows["2026-W53"]["cost_usd"] == 0.6666    # Dec 31 and Jan 3
    assert rows["2027-W01"]["cost_usd"] == 0.3334


def test_monthly(project):
    rows = by_period(project.json("--month"))
    assert {k: v["cost_usd"] for k, v in rows.items()} == {
        "2026-11": 1.7362, "2026-12": 2.3333, "2027-01": 0.6667}


def test_issue_filter_and_detail(project):
    data = project.json("--issue", "7", "--detail")
    assert data["issue"] == 7
    assert data["total"]["cost_usd"] == 1.1979      # 0.1 + 0.4312 + 0.3333 + 0.3334
    assert data["total"]["runs"] == 4
    assert [i["issue"] for i in data["issues"]] == [7]

    everything = project.json("--detail")
    assert [(i["issue"], i["runs"], i["cost_usd"]) for i in everything["issues"]] == [
        (9, 2, 3.005), (7, 4, 1.1979), (8, 2, 0.5333)]   # most expensive first


def test_text_table_shows_the_cents_and_fits_80_columns(project):
    r = project.run("--detail")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for line in out.splitlines():
        assert len(line) <= 80, line
    lines = out.splitlines()
    total = next(line for line in lines if line.strip().startswith("Total "))
    assert total.rstrip().endswith("$4.74")
    assert "1.0M" in total                 # 1,007,280 tokens in compact form at 80 columns
    day = next(line for line in lines if line.strip().startswith("2026-11-22"))
    assert "haiku-4-5" in day and day.rstrip().endswith("$0.30")
    # $3.005 rounds half-up, as by hand
    assert any(line.strip().startswith("#9") and line.rstrip().endswith("$3.01") for line in lines)
    assert "Cost per day, last 14 days" in out


def test_wide_terminal_shows_exact_token_counts(project):
    out = project.run(columns=140).stdout
    total = next(line for line in out.splitlines() if line.strip().startswith("Total "))
    assert "1,007,280" in total


def test_bar_chart_covers_the_last_14_days_with_todays_cost(tmp_path):
    p = Project(tmp_path)
    now = time.time()
    today = ledger.local_day(now)
    three_days_ago = ledger.local_day(now - 3 * 86400 - 3600)
    p.write([run_record(today, 1, 2.0), run_record(three_days_ago, 2, 0.5),
             run_record("2001-01-01", 3, 99.0)])   # outside the chart
    data = p.json()
    chart = {c["date"]: c["cost_usd"] for c in data["chart"]}
    assert len(chart) == 14 and max(chart) == today
    assert chart[today] == 2.0 and chart[three_days_ago] == 0.5
    assert sum(chart.values()) == 2.5

    out = p.run().stdout
    lines = out.splitlines()
    start = lines.index("Cost per day, last 14 days")
    bars = lines[start + 1:start + 15]
    assert len(bars) == 14
    d = dt.date.fromisoformat(today)
    today_line = bars[-1]
    assert today_line.startswith(d.strftime("%m-%d")) and today_line.endswith("$2.00")
    assert today_line.count("█") == max(line.count("█") for line in bars)
    assert next(b for b in bars if b.startswith(dt.date.fromisoformat(three_days_ago).strftime("%m-%d"))).endswith("$0.50")


def test_month_chart_covers_this_month(tmp_path):
    p = Project(tmp_path)
    p.write([run_record(ledger.local_day(time.time()), 1, 1.0)])
    data = p.json("--month")
    first = data["chart"][0]["date"]
    assert first.endswith("-01") and first[:7] == ledger.local_day(time.time())[:7]
    assert "Cost per day, this month" in p.run("--month").stdout


def test_corrupt_lines_are_counted_in_one_dim_line(project):
    project.write(RUNS, extra_lines=["{torn", "[]", "hello"])
    r = project.run()
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.rstrip().splitlines()[-1] == \
        "3 corrupt lines skipped in {}".format(project.ledger)
    data = project.json()
    assert data["corrupt_lines"] == 3 and data["total"]["cost_usd"] == 4.7362


def test_empty_or_missing_ledger(tmp_path):
    p = Project(tmp_path)
    r = p.run()
    assert r.returncode == 0
    assert r.stdout.strip() == "no runs recorded yet in {}".format(p.ledger)
    p.write([])
    assert p.run().stdout.strip() == "no runs recorded yet in {}".format(p.ledger)
    data = p.json()
    assert data["rows"] == [] and data["total"]["cost_usd"] == 0.0


def test_issue_with_no_runs(project):
    r = project.run("--issue", "404")
    assert r.returncode == 0
    assert r.stdout.strip() == "no runs recorded for issue #404 in {}".format(project.ledger)


def test_old_records_without_fields_still_count(tmp_path):
    p = Project(tmp_path)
    p.write([{"ts": "2026-11-21T12:00:00Z", "cost_usd": 0.25},        # no date, no tokens
             {"date": "2026-11-21", "input_tokens": 5, "output_tokens": 7},  # no cost, no total
             {"issue": 1, "cost_usd": 0.5}])                            # no date at all
    data = p.json()
    rows = by_period(data)
    assert data["total"]["cost_usd"] == 0.75
    assert rows["(no date)"]["cost_usd"] == 0.5
    assert data["total"]["total_tokens"] == 12


def test_unreadable_config_is_one_line(tmp_path):
    bad = tmp_path / "config.toml"
    bad.write_text("[paths\n")
    r = subprocess.run([sys.executable, REPORT, "--config", str(bad)], capture_output=True, text=True)
    assert r.returncode == 78 and r.stdout == ""
    assert r.stderr.startswith("usage_report: ") and len(r.stderr.strip().splitlines()) == 1


# --- the pure parts -------------------------------------------------------

@pytest.mark.parametrize("n, text", [
    (0, "0"), (9999, "9,999"), (10000, "10.0k"), (125910, "126k"), (1007280, "1.0M"),
    (39837991, "39.8M"), (2_500_000_000, "2.5G"),
])
def test_compact(n, text):
    assert usage_report.compact(n) == text


def test_bar_eighths():
    assert usage_report.bar(0, 10, 8) == ""
    assert usage_report.bar(10, 10, 8) == "█" * 8
    assert usage_report.bar(5, 10, 8) == "█" * 4
    assert usage_report.bar(1, 16, 8) == "▌"
    assert usage_report.bar(0.0001, 10, 8) == "▏"   # any spend is visible


def test_report_streams_records_once():
    seen = []

    def records():
        for r in RUNS:
            seen.append(r)
            yield r
    rep = usage_report.Report("daily", "2027-01-04").feed(records())
    assert len(seen) == len(RUNS)
    assert float(rep.total.cost) == 4.7362


@pytest.mark.parametrize("args", [["--json", "--detail"], ["--detail"]])
def test_closed_pipe_ends_quietly(tmp_path, args):
    """`usage_report.py --json | head -3`: a real pipe, closed after a few
    bytes while the tool still has far more than a pipe holds to write."""
    p = Project(tmp_path)
    p.write([run_record("2026-11-22", n, 0.01) for n in range(1, 3001)])
    env = dict(os.environ, COLUMNS="80")
    proc = subprocess.Popen([sys.executable, REPORT, "--config", str(p.config), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(100)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert (proc.wait(timeout=30), err) == (0, "")


def test_range_keeps_the_runs_recorded_since_its_start(tmp_path):
    p = Project(tmp_path)
    now = time.time()

    def at(seconds_ago, issue, cost):
        return dict(run_record(ledger.local_day(now - seconds_ago), issue, cost),
                    ts=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - seconds_ago)))
    p.write([at(3600, 1, 0.25), at(3 * 86400, 2, 0.5), at(20 * 86400, 3, 1.0), at(400 * 86400, 4, 2.0)])
    totals = {r: p.json("--range", r)["total"] for r in ("24h", "7d", "30d", "all")}
    assert {r: (t["runs"], t["cost_usd"]) for r, t in totals.items()} == {
        "24h": (1, 0.25), "7d": (2, 0.75), "30d": (3, 1.75), "all": (4, 3.75)}
    assert p.json("--range", "7d")["range"] == "7d" and p.json()["range"] == "all"
    assert "Daily usage, last 7 days" in p.run("--range", "7d").stdout
    r = p.run("--range", "1y")
    assert r.returncode == 2 and "invalid choice: '1y'" in r.stderr
