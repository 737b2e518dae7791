"""metrics.json: atomic write, tolerant read, and the health rules."""
from __future__ import annotations

import json
import os

import pytest

from adws import metrics

NOW = 1_800_000_000.0


def fresh(**changes) -> dict:
    data = metrics.initial(pid=123, started_at=NOW - 3600, poll_interval=30, max_concurrent=1)
    data["updated_at"] = NOW - 5
    data["last_poll_at"] = NOW - 5
    data["last_poll_ok"] = True
    for key, value in changes.items():
        data[key] = value
    return data


# --- file I/O -------------------------------------------------------------

def test_write_then_read_round_trips_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "metrics.json"
    data = fresh()
    metrics.write(path, data)
    metrics.write(path, dict(data, pid=456))  # replaces, not appends
    assert os.listdir(tmp_path) == ["metrics.json"]
    assert json.loads(path.read_text()) == dict(data, pid=456)
    assert metrics.read(path) == dict(data, pid=456)


def test_failed_write_keeps_old_file_and_no_temp(tmp_path):
    path = tmp_path / "metrics.json"
    metrics.write(path, {"version": 1})
    with pytest.raises(TypeError):
        metrics.write(path, {"version": 1, "bad": object()})
    assert os.listdir(tmp_path) == ["metrics.json"]
    assert metrics.read(path) == {"version": 1}


def test_read_missing_or_corrupt_gives_none(tmp_path):
    assert metrics.read(tmp_path / "missing.json") is None
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "pid"')
    assert metrics.read(bad) is None
    bad.write_text("[1, 2]")
    assert metrics.read(bad) is None
    bad.write_bytes(b"\xff\xfe")
    assert metrics.read(bad) is None


def test_initial_has_every_counter():
    data = metrics.initial(pid=1, started_at=NOW, poll_interval=30, max_concurrent=2)
    assert sorted(data["counters"]) == sorted(metrics.COUNTERS)
    assert data["version"] == 1 and data["max_concurrent"] == 2
    assert metrics.health(data, NOW) == ("ok", "")


# --- health ---------------------------------------------------------------

def test_fresh_and_quiet_is_ok():
    assert metrics.health(fresh(), NOW) == ("ok", "")


def test_stale_metrics_are_critical_whatever_else_they_say():
    data = fresh(updated_at=NOW - 14 * 60 - 10)
    assert metrics.health(data, NOW) == \
        ("critical", "coordinator not running? last update 14 min ago")


def test_stale_threshold_is_three_polls_but_at_least_two_minutes():
    assert metrics.health(fresh(updated_at=NOW - 119), NOW)[0] == "ok"
    assert metrics.health(fresh(updated_at=NOW - 121), NOW)[0] == "critical"
    slow = fresh(poll_interval=100, updated_at=NOW - 299)
    assert metrics.health(slow, NOW)[0] == "ok"
    slow["updated_at"] = NOW - 301
    assert metrics.health(slow, NOW) == ("critical", "coordinator not running? last update 5 min ago")


def test_missing_update_time_is_critical():
    data = fresh()
    del data["updated_at"]
    assert metrics.health(data, NOW)[0] == "critical"
    assert metrics.health({}, NOW)[0] == "critical"
    assert metrics.health({"updated_at": "yesterday"}, NOW)[0] == "critical"


def test_dead_pid_is_critical_when_the_caller_can_check():
    data = fresh()
    assert metrics.health(data, NOW, pid_alive=lambda pid: False) == \
        ("critical", "coordinator not running: pid 123 is gone")
    assert metrics.health(data, NOW, pid_alive=lambda pid: True) == ("ok", "")


def test_github_unreachable_short_is_warning_long_is_degraded():
    gh = {"state": "unreachable", "since": NOW - 120, "error": "connection refused",
          "rate_remaining": None, "rate_reset": None}
    assert metrics.health(fresh(github=gh), NOW) == \
        ("warning", "GitHub unreachable for 2 min: connection refused")
    gh["since"] = NOW - 11 * 60
    assert metrics.health(fresh(github=gh), NOW) == \
        ("degraded", "GitHub unreachable for 11 min: connection refused")


def test_rate_limited_is_warning_with_reset_time():
    gh = {"state": "rate_limited", "since": NOW - 60, "error": "", "rate_remaining": 0,
          "rate_reset": NOW + 25 * 60}
    assert metrics.health(fresh(github=gh), NOW) == \
        ("warning", "GitHub rate limit reached, resets in 25 min")


def test_spawn_block_is_degraded_with_its_reason():
    reason = "spawning paused: 3 startup errors in a row (claude: command not found)"
    assert metrics.health(fresh(spawn_block=reason), NOW) == ("degraded", reason)


def test_user_pause_is_warning():
    assert metrics.health(fresh(paused=True, pause_reason="PAUSE file present"), NOW) == \
        ("warning", "paused by user: PAUSE file present")
    assert metrics.health(fresh(paused=True), NOW) == ("warning", "paused by user")


def test_budget_over_eighty_percent_is_warning():
    spend = {"today_usd": 4.25, "month_usd": 10.0, "daily_usd": 5.0, "monthly_usd": 50.0}
    assert metrics.health(fresh(spend=spend), NOW) == \
        ("warning", "daily budget 85% used ($4.25 of $5.00)")
    spend = {"today_usd": 4.0, "month_usd": 10.0, "daily_usd": 5.0, "monthly_usd": 50.0}
    assert metrics.health(fresh(spend=spend), NOW) == ("ok", "")  # exactly 80% is fine
    spend = {"today_usd": 40.0, "month_usd": 41.0, "daily_usd": 0, "monthly_usd": 50.0}
    assert metrics.health(fresh(spend=spend), NOW) == \
        ("warning", "monthly budget 82% used ($41.00 of $50.00)")


def test_worst_level_wins_and_its_reasons_are_joined():
    gh = {"state": "unreachable", "since": NOW - 3600, "error": ""}
    data = fresh(github=gh, spawn_block="daily budget reached: $5.02 of $5.00 today",
                 paused=True)
    assert metrics.health(data, NOW) == (
        "degraded", "GitHub unreachable for 1 h; daily budget reached: $5.02 of $5.00 today")


def test_garbage_fields_do_not_crash():
    data = fresh(github="down", spend=[1], paused="yes", spawn_block=None, pid="x")
    assert metrics.health(data, NOW, pid_alive=lambda pid: False) == ("ok", "")


@pytest.mark.parametrize("seconds, text", [
    (0, "0 s"), (59, "59 s"), (60, "1 min"), (14 * 60 + 59, "14 min"),
    (3600, "1 h"), (3 * 3600 + 5 * 60, "3 h 5 min"), (86400, "1 day"), (3 * 86400, "3 days"),
])
def test_human_duration(seconds, text):
    assert metrics.human_duration(seconds) == text


def test_a_live_daemon_that_stopped_polling_is_a_warning():
    """metrics.json keeps being written, but GitHub has not been polled for
    a long time: a stuck loop must not look healthy."""
    data = fresh(poll_interval=30, last_poll_at=NOW - 301)
    assert metrics.health(data, NOW) == (metrics.WARNING, "no poll of GitHub for 5 min")
    assert metrics.health(fresh(poll_interval=30, last_poll_at=NOW - 299), NOW)[0] == metrics.OK
    # A slowed poll (rate limit low: 4 x 30 s) is not stale.
    assert metrics.health(fresh(poll_interval=30, last_poll_at=NOW - 120), NOW)[0] == metrics.OK
    # Never polled since a start long ago.
    never = fresh(poll_interval=30, last_poll_at=None, started_at=NOW - 3600)
    assert metrics.health(never, NOW) == (metrics.WARNING, "no poll of GitHub since the start, 1 h ago")
    # A longer poll_interval moves the threshold: 5 polls.
    assert metrics.health(fresh(poll_interval=120, last_poll_at=NOW - 500), NOW)[0] == metrics.OK
    assert metrics.health(fresh(poll_interval=120, last_poll_at=NOW - 601), NOW)[0] == metrics.WARNING
