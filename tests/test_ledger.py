"""The cost ledger: totals across day and month boundaries, rollover, corrupt lines."""
from __future__ import annotations

import json
import os
import time

import pytest

from adws import ledger


@pytest.fixture(autouse=True)
def utc_plus_one(monkeypatch):
    """Run every test in a fixed zone whose local midnight is not UTC midnight,
    so a reader that confused UTC with local dates would fail."""
    monkeypatch.setenv("TZ", "CET-1")  # POSIX form: UTC+1, no DST rules
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def local(y, mo, d, h=12, mi=0, s=0) -> float:
    """Epoch seconds for a local wall-clock time in the test's zone."""
    return time.mktime((y, mo, d, h, mi, s, 0, 0, -1))


def run(cost, when, issue=1, **extra):
    rec = {"issue": issue, "cost_usd": cost}
    rec.update(extra)
    return ledger.stamp(rec, when)


def write_lines(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line if isinstance(line, str) else json.dumps(line))
            f.write("\n")


def test_append_creates_folder_and_writes_one_line_per_record(tmp_path):
    path = tmp_path / "logs" / "usage.jsonl"
    now = local(2026, 11, 21, 18, 38, 45)
    ledger.append(path, {"issue": 7, "cost_usd": 0.4312}, now=now)
    ledger.append(path, {"issue": 8, "cost_usd": 0.1}, now=now)
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["issue"] == 7 and first["cost_usd"] == 0.4312
    assert first["ts"] == "2026-11-21T17:38:45Z"  # UTC
    assert first["date"] == "2026-11-21"          # local


def test_stamp_keeps_given_ts_and_date():
    rec = ledger.stamp({"ts": "2020-01-01T00:00:00Z", "date": "2020-01-01"}, local(2026, 1, 1))
    assert rec == {"ts": "2020-01-01T00:00:00Z", "date": "2020-01-01"}


def test_local_date_comes_from_local_time_not_utc():
    # 00:30 local on Nov 22 is 23:30 UTC on Nov 21.
    rec = ledger.stamp({}, local(2026, 11, 22, 0, 30))
    assert rec["ts"] == "2026-11-21T23:30:00Z"
    assert rec["date"] == "2026-11-22"


def test_spend_today_and_month_across_boundaries(tmp_path):
    path = tmp_path / "usage.jsonl"
    write_lines(path, [
        run(9.99, local(2026, 10, 31, 23, 59)),     # last month: in neither
        run(0.4312, local(2026, 11, 1, 0, 1)),      # this month
        run(1.1, local(2026, 11, 20, 23, 59, 59)),  # yesterday
        run(0.3333, local(2026, 11, 21, 0, 0, 1)),  # today
        run(0.2, local(2026, 11, 21, 17, 0)),       # today
    ])
    s = ledger.spend(path, local(2026, 11, 21, 18, 0))
    assert s.day == "2026-11-21" and s.month == "2026-11"
    assert s.today_usd == pytest.approx(0.5333, abs=1e-12)
    assert s.month_usd == pytest.approx(2.0645, abs=1e-12)
    assert ledger.usd(s.today_usd) == "$0.53"
    assert ledger.usd(s.month_usd) == "$2.06"


def test_record_without_date_falls_back_to_ts_in_local_time(tmp_path):
    path = tmp_path / "usage.jsonl"
    # 23:30 UTC on Nov 20 is 00:30 local on Nov 21: it counts for "today".
    write_lines(path, [{"ts": "2026-11-20T23:30:00Z", "cost_usd": 1.5},
                       {"cost_usd": 7.0}])  # no date, no ts: uncountable
    s = ledger.spend(path, local(2026, 11, 21, 9))
    assert s.today_usd == 1.5
    assert s.month_usd == 1.5


def test_sum_is_exact_to_the_cent_over_many_runs(tmp_path):
    path = tmp_path / "usage.jsonl"
    now = local(2026, 11, 21, 12)
    write_lines(path, [run(0.0105, now) for _ in range(1000)])
    s = ledger.spend(path, now)
    # 1000 * 0.0105 = 10.50 exactly; a float sum would give 10.499999999999...
    assert s.today_usd == 10.5
    assert ledger.usd(s.today_usd) == "$10.50"


def test_corrupt_lines_are_skipped_and_counted(tmp_path):
    path = tmp_path / "usage.jsonl"
    now = local(2026, 11, 21, 12)
    write_lines(path, [
        run(1.0, now),
        '{"issue": 3, "cost_usd": 0.5',   # torn write
        "not json at all",
        "[1, 2, 3]",                      # JSON but not a record
        "",                               # blank: ignored, not counted
        run("lots", now),                 # wrong type: counts as $0
        run(0.25, now),
    ])
    with open(path, "ab") as f:
        f.write(b"\xff\xfe garbage\n")    # not UTF-8
    scan = ledger.read(path)
    records = list(scan)
    assert [r.get("cost_usd") for r in records] == [1.0, "lots", 0.25]
    assert scan.corrupt == 4
    assert scan.records == 3
    tracker = ledger.SpendTracker(path, now)
    assert tracker.corrupt == 4
    assert tracker.totals(now).today_usd == 1.25


def test_missing_ledger_is_empty(tmp_path):
    scan = ledger.read(tmp_path / "nope" / "usage.jsonl")
    assert list(scan) == [] and scan.corrupt == 0 and not scan.exists
    s = ledger.spend(tmp_path / "nope.jsonl", local(2026, 11, 21))
    assert (s.today_usd, s.month_usd) == (0.0, 0.0)


def test_tracker_add_matches_rereading_the_ledger(tmp_path):
    path = tmp_path / "usage.jsonl"
    now = local(2026, 11, 21, 10)
    ledger.append(path, {"cost_usd": 0.5}, now=now)
    tracker = ledger.SpendTracker(path, now)
    for i, c in enumerate([0.1, 0.2, 0.3]):
        rec = ledger.stamp({"issue": i, "cost_usd": c}, now + i)
        ledger.append(path, rec)
        tracker.add(rec, now + i)
    assert tracker.totals(now + 5) == ledger.spend(path, now + 5)
    assert tracker.totals(now + 5).today_usd == 1.1


def test_tracker_rolls_over_at_local_midnight(tmp_path):
    path = tmp_path / "usage.jsonl"
    evening = local(2026, 11, 21, 23, 50)
    write_lines(path, [run(2.0, local(2026, 11, 21, 9))])
    tracker = ledger.SpendTracker(path, evening)
    tracker.add(run(0.5, evening), evening)
    assert tracker.totals(evening).today_usd == 2.5

    after_midnight = local(2026, 11, 22, 0, 0, 5)
    t = tracker.totals(after_midnight)
    assert (t.day, t.today_usd, t.month_usd) == ("2026-11-22", 0.0, 2.5)
    tracker.add(run(0.75, after_midnight), after_midnight)
    t = tracker.totals(after_midnight)
    assert (t.today_usd, t.month_usd) == (0.75, 3.25)


def test_tracker_rolls_over_at_month_start(tmp_path):
    path = tmp_path / "usage.jsonl"
    last_day = local(2026, 11, 30, 23, 0)
    write_lines(path, [run(4.0, local(2026, 11, 2)), run(1.0, last_day)])
    tracker = ledger.SpendTracker(path, last_day)
    assert tracker.totals(last_day).month_usd == 5.0
    t = tracker.totals(local(2026, 12, 1, 0, 1))
    assert (t.month, t.today_usd, t.month_usd) == ("2026-12", 0.0, 0.0)
    tracker.add(run(0.3, local(2026, 12, 1, 8)), local(2026, 12, 1, 8))
    assert tracker.totals(local(2026, 12, 1, 9)).month_usd == 0.3


def test_tracker_ignores_old_months_on_load(tmp_path):
    path = tmp_path / "usage.jsonl"
    write_lines(path, [run(100.0, local(2026, 9, 15)), run(1.0, local(2026, 11, 3))])
    now = local(2026, 11, 21)
    assert ledger.SpendTracker(path, now).totals(now).month_usd == 1.0


def test_record_without_any_date_is_added_to_today(tmp_path):
    now = local(2026, 11, 21, 12)
    tracker = ledger.SpendTracker(tmp_path / "usage.jsonl", now)
    tracker.add({"cost_usd": 0.42}, now)
    assert tracker.totals(now).today_usd == 0.42


def spent(today, month):
    return ledger.Spend(today_usd=today, month_usd=month, day="2026-11-21", month="2026-11")


def test_budget_block_messages():
    assert ledger.budget_block(spent(4.99, 10), 5.0, 50.0) == ""
    assert ledger.budget_block(spent(5.02, 10), 5.0, 50.0) == \
        "daily budget reached: $5.02 of $5.00 today"
    assert ledger.budget_block(spent(5.0, 10), 5.0, None) == \
        "daily budget reached: $5.00 of $5.00 today"
    assert ledger.budget_block(spent(1.0, 50.5), 5.0, 50.0) == \
        "monthly budget reached: $50.50 of $50.00 in 2026-11"
    # Both reached: the monthly one is the one that will not clear tonight.
    assert ledger.budget_block(spent(6.0, 60.0), 5.0, 50.0).startswith("monthly budget reached")


def test_budget_none_or_zero_means_no_limit():
    assert ledger.budget_block(spent(1000.0, 5000.0), None, None) == ""
    assert ledger.budget_block(spent(1000.0, 5000.0), 0, 0.0) == ""


def test_append_is_one_write_with_o_append(tmp_path):
    """Two writers appending interleave whole lines, never halves."""
    path = tmp_path / "usage.jsonl"
    pids = []
    for n in range(2):
        pid = os.fork()
        if pid == 0:  # child
            try:
                for i in range(200):
                    ledger.append(path, {"issue": n, "i": i, "pad": "x" * 500, "cost_usd": 0.01},
                                  now=1.8e9)
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    scan = ledger.read(path)
    assert len(list(scan)) == 400 and scan.corrupt == 0


@pytest.mark.parametrize("amount, text", [
    (0, "$0.00"), (0.4312, "$0.43"), (3.005, "$3.01"), (0.125, "$0.13"), (1234.5, "$1,234.50"),
    (5.0, "$5.00"), (0.1 + 0.2, "$0.30"),
])
def test_usd_rounds_half_up_on_the_decimal_digits(amount, text):
    assert ledger.usd(amount) == text


# --- one run read once, and the time ranges ---------------------------------

def test_run_of_reads_every_field_once_and_copes_with_odd_values():
    r = ledger.Run.of({"ts": "2026-11-21T23:30:00Z", "issue": "7", "attempt": 2,
                       "models": ["claude-sonnet-4-6", 3], "input_tokens": 10, "output_tokens": 900,
                       "cache_creation_tokens": 5000, "cache_read_tokens": True, "cost_usd": 0.4312,
                       "duration_ms": 312000, "outcome": "blocked", "stage": "review", "round": 2})
    assert r.day == "2026-11-22"                   # 23:30 UTC is after midnight here (UTC+1)
    assert r.time == local(2026, 11, 22, 0, 30)
    assert (r.issue, r.attempt, r.models) == (7, 2, ("claude-sonnet-4-6",))
    assert (r.input_tokens, r.output_tokens, r.cache_creation_tokens, r.cache_read_tokens) == (10, 900, 5000, 0)
    assert r.total_tokens == 5910 and str(r.cost) == "0.4312"
    assert (r.duration_s, r.outcome, r.stage, r.round) == (312.0, "blocked", "review", "2")
    bare = ledger.Run.of({"date": "2026-11-21", "cost_usd": "free", "duration_ms": -5, "outcome": "great",
                          "stage": {"x": 1}})
    assert bare.time == local(2026, 11, 21, 0, 0) and bare.day == "2026-11-21"
    assert (bare.issue, bare.models, bare.cost, bare.duration_s) == (None, (), 0, None)
    assert (bare.outcome, bare.stage, bare.round) == ("", None, None)
    nothing = ledger.Run.of({})
    assert (nothing.time, nothing.day) == (None, None)


def test_run_outcome_of_older_lines_comes_from_the_exit_reason_only_when_it_is_the_kind():
    assert ledger.Run.of({"exit_reason": "open_pr"}).outcome == "completed"
    assert ledger.Run.of({"exit_reason": "completed"}).outcome == "completed"
    assert ledger.Run.of({"exit_reason": "tests failed"}).outcome == ""


def test_run_cost_by_model_sums_to_the_run_cost():
    split = ledger.Run.of({"models": ["a", "b"], "cost_usd": 1.0, "model_usage": {
        "a": {"costUSD": 0.3}, "b": {"costUSD": 0.1}}})
    assert dict(split.cost_by_model()) == pytest.approx({"a": 0.75, "b": 0.25})
    even = ledger.Run.of({"models": ["a", "b"], "cost_usd": 1.0})
    assert dict(even.cost_by_model()) == {"a": 0.5, "b": 0.5}
    assert dict(ledger.Run.of({"cost_usd": 2.0}).cost_by_model()) == {"(unknown model)": 2.0}


def test_range_start():
    now = local(2026, 11, 21, 18, 0)
    assert ledger.range_start("24h", now) == now - 86400
    assert ledger.range_start("7d", now) == now - 7 * 86400
    assert ledger.range_start("30d", now) == now - 30 * 86400
    assert ledger.range_start("month", now) == local(2026, 11, 1, 0, 0)
    assert ledger.range_start("all", now) is None
    with pytest.raises(KeyError):
        ledger.range_start("1y", now)


def test_spend_from_runs_equals_spend_from_the_file(tmp_path):
    path = tmp_path / "usage.jsonl"
    now = local(2026, 11, 21)
    write_lines(path, [run(1.25, now), run(0.5, now - 86400), run(9.0, local(2026, 10, 31)),
                       {"issue": 3, "cost_usd": 4.0}, "{torn"])
    from_file = ledger.SpendTracker(path, now)
    runs = [ledger.Run.of(r) for r in ledger.read(path)]
    from_runs = ledger.SpendTracker.of_runs(runs, now, corrupt=1)
    assert from_runs.totals(now) == from_file.totals(now) == ledger.Spend(1.25, 1.75, "2026-11-21", "2026-11")
    assert from_runs.corrupt == from_file.corrupt == 1
