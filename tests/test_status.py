"""tools/status.py, run as a user runs it: a subprocess on a temp project."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adws import ledger, metrics, tasks

ROOT = Path(__file__).resolve().parent.parent
STATUS = str(ROOT / "tools" / "status.py")
LONG_TITLE = "Fix the flux capacitor so that it survives 1.21 gigawatts without melting down"
PR_URL = "https://github.com/acme/widgets/pull/12"


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


class Project:
    """A temp project: config.toml, state/tasks.md, state/metrics.json, logs/usage.jsonl."""

    def __init__(self, root: Path):
        self.root = root
        self.config = root / "config.toml"
        self.tasks = root / "state" / "tasks.md"
        self.metrics = root / "state" / "metrics.json"
        self.ledger = root / "logs" / "usage.jsonl"
        self.tasks.parent.mkdir()
        self.config.write_text('[github]\nrepo = "acme/widgets"\n\n[paths]\n'
                               'tasks = "state/tasks.md"\nlogs = "logs"\n\n'
                               '[budget]\ndaily_usd = 5\nmonthly_usd = 50\n')

    def write_tasks(self, now: float, extra: str = "") -> None:
        T = tasks.Task
        doc = tasks.TaskFile()
        doc.add(T(7, LONG_TITLE, tasks.ACTIVE, 1, pid=os.getpid(),
                  started=tasks.format_time(now - 725), attempts=1, branch="auto/gh-7"))
        doc.add(T(9, "[WIP] Add :fire: dark mode", tasks.PENDING, 0))
        doc.add(T(10, "Refactor the parser", tasks.PENDING, 2, attempts=1,
                  next_attempt=tasks.format_time(now + 600)))
        doc.add(T(5, "Update README badges", tasks.COMPLETED, 2,
                  completed=tasks.format_time(now - 60), pr=PR_URL))
        doc.add(T(4, "Migrate to the new API", tasks.FAILED, 2, attempts=2,
                  reason="tests failed twice"))
        doc.add(T(3, "Needs a decision", tasks.BLOCKED, 2, reason="waiting for a human"))
        self.tasks.write_text(tasks.render(doc) + extra)

    def write_metrics(self, now: float, **changes) -> dict:
        data = metrics.initial(pid=os.getpid(), started_at=now - 7500, poll_interval=30,
                               max_concurrent=2)
        data.update(updated_at=now - 3, last_poll_at=now - 12, last_poll_ok=True)
        data["github"]["rate_remaining"] = 4999
        data["active"] = [{"issue": 7, "title": LONG_TITLE, "pid": 4242, "started_at": now - 725,
                           "attempt": 1, "cost_usd": 0.4312, "last_tool": "Bash: pytest -q",
                           "log": "logs/gh-7.jsonl"}]
        data["spend"].update(daily_usd=5.0, monthly_usd=50.0)
        data.update(changes)
        metrics.write(self.metrics, data)
        return data

    def write_ledger(self, now: float) -> None:
        ledger.append(self.ledger, {"issue": 5, "cost_usd": 0.73}, now=now)
        ledger.append(self.ledger, {"issue": 6, "cost_usd": 0.5}, now=now)

    def run(self, *args: str, env=None, timeout: float = 30) -> subprocess.CompletedProcess:
        full = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR")}
        full.update(COLUMNS="80", LINES="50", TERM="xterm-256color")
        full.update(env or {})
        # cwd is the temp folder: status must not depend on where it is run from.
        return subprocess.run([sys.executable, STATUS, "--config", str(self.config), *args],
                              cwd=str(self.root), env=full, capture_output=True, text=True,
                              timeout=timeout)


@pytest.fixture
def project(tmp_path) -> Project:
    return Project(tmp_path)


@pytest.fixture
def full(project) -> Project:
    now = time.time()
    project.write_tasks(now)
    project.write_metrics(now)
    project.write_ledger(now)
    return project


def assert_fits(text: str, width: int = 80) -> None:
    for line in text.splitlines():
        assert len(line) <= width, "too wide ({}): {!r}".format(len(line), line)


def test_shows_queue_workers_and_spend(full):
    r = full.run()
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    out = r.stdout
    assert_fits(out)
    assert "\x1b[" not in out  # no terminal, no colour unless asked
    assert re.match(r" OK  running normally\npid {} · up 2 h 5 min · updated \d s ago · "
                    r"last poll ok 1\d s ago\n".format(os.getpid()), out)
    assert "Queue: 2 pending · 1 of 2 active · 1 completed today · 1 failed · 1 blocked" in out
    assert "Spend: today $1.23 of $5.00 (25%) · this month $1.23 of $50.00 (2%)" in out
    assert "GitHub: ok · 4,999 requests left" in out
    # the active worker: number, truncated title, elapsed, cost so far, last tool
    row = next(line for line in out.splitlines() if line.startswith("#7 "))
    assert "Fix the flux capacitor" in row and "…" in row
    assert "12 min" in row and "$0.43" in row and "Bash: pytest -q" in row
    # pending by priority, with the retry time; titles printed as typed
    lines = out.splitlines()
    i9 = next(i for i, line in enumerate(lines) if line.startswith("#9 "))
    i10 = next(i for i, line in enumerate(lines) if line.startswith("#10 "))
    assert i9 < i10
    assert "[WIP] Add :fire: dark mode" in lines[i9] and "p0" in lines[i9]
    assert "retry in " in lines[i10]  # how long exactly: test_retry_time_counts_from_the_clock_it_is_given
    # completion with its PR link, failures and blocks with their reasons
    assert any(line.startswith("#5 ") and PR_URL in line for line in lines)
    assert any(line.startswith("#4 ") and "failed" in line and "tests failed twice" in line
               for line in lines)
    assert any(line.startswith("#3 ") and "blocked" in line and "waiting for a human" in line
               for line in lines)


def test_json_has_the_same_facts(full):
    r = full.run("--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert {"health", "metrics", "queue", "active", "pending", "completed", "failed",
            "blocked", "spend", "github", "paused", "pause_reason", "spawn_block",
            "warnings", "tasks_problems"} <= set(data)
    assert data["metrics"] == "ok"
    assert data["health"] == {"level": "ok", "reason": ""}
    assert data["queue"] == {"pending": 2, "active": 1, "completed_today": 1, "completed": 1,
                             "failed": 1, "blocked": 1}
    assert data["spend"]["today_usd"] == 1.23 and data["spend"]["daily_usd"] == 5.0
    assert data["active"][0]["issue"] == 7 and data["active"][0]["cost_usd"] == 0.4312
    assert data["active"][0]["last_tool"] == "Bash: pytest -q"
    assert [p["issue"] for p in data["pending"]] == [9, 10]
    assert data["completed"][0]["pr"] == PR_URL
    assert data["failed"][0]["reason"] == "tests failed twice"
    assert data["warnings"] == [] and data["tasks_problems"] == []
    assert (data["active"][0]["stage"], data["active"][0]["round"]) == (None, None)   # shown when present only


def test_json_gives_a_workers_stage_and_round_from_metrics_else_tasks_md(project):
    """Other features add them: metrics.json's active entry may say, or a
    "- Stage:" / "- Round:" line under the task in tasks.md."""
    now = time.time()
    project.write_tasks(now)
    data = project.write_metrics(now)
    data["active"][0].update(stage="review", round=2)
    metrics.write(project.metrics, data)
    active = json.loads(project.run("--json").stdout)["active"][0]
    assert (active["stage"], active["round"]) == ("review", "2")
    del data["active"][0]["stage"], data["active"][0]["round"]
    metrics.write(project.metrics, data)
    project.tasks.write_text(project.tasks.read_text().replace(
        "- Branch: auto/gh-7\n", "- Branch: auto/gh-7\n- Stage: plan\n- Round: 1\n"))
    active = json.loads(project.run("--json").stdout)["active"][0]
    assert (active["stage"], active["round"]) == ("plan", "1")


def test_the_table_says_a_workers_stage_or_follow_up_round(project):
    now = time.time()
    project.write_tasks(now)
    data = project.write_metrics(now)
    data["active"][0]["title"] = "Short title"
    metrics.write(project.metrics, data)
    project.tasks.write_text(project.tasks.read_text().replace(
        "- Branch: auto/gh-7\n", "- Branch: auto/gh-7\n- Round: 2 of 4\n"))
    out = project.run(env={"COLUMNS": "160"}).stdout
    assert "follow-up round 2 of 4" in out
    project.tasks.write_text(project.tasks.read_text().replace("- Round: 2 of 4\n", "- Stage: build (2 of 3)\n"))
    out = project.run(env={"COLUMNS": "160"}).stdout
    assert "build (2 of 3)" in out and "follow-up round" not in out


def test_missing_metrics_still_shows_the_queue(project):
    project.write_tasks(time.time())
    r = project.run()
    assert r.returncode == 2, r.stderr  # critical
    assert "CRITICAL" in r.stdout
    assert "coordinator has not written metrics.json yet (not started?)" in r.stdout
    assert "Queue: 2 pending · 1 active · 1 completed today · 1 failed · 1 blocked" in r.stdout
    assert "#9 " in r.stdout and "Spend: today $0.00 of $5.00 (0%)" in r.stdout
    data = json.loads(project.run("--json").stdout)
    assert data["metrics"] == "missing" and data["health"]["level"] == "critical"


def test_unreadable_metrics_is_said_not_raised(project):
    project.write_tasks(time.time())
    project.metrics.write_text('{"version": 1, "updated_')
    r = project.run()
    assert r.returncode == 2 and r.stderr == ""
    assert "metrics.json unreadable" in r.stdout


def test_stale_metrics_look_dead_not_healthy(project):
    now = time.time()
    project.write_tasks(now)
    project.write_metrics(now, updated_at=now - 14 * 60 - 5)
    r = project.run()
    assert r.stdout.startswith(" CRITICAL  coordinator not running? last update 14 min ago\n")


def test_dead_pid_is_critical(project):
    now = time.time()
    pid = dead_pid()
    project.write_metrics(now, pid=pid)
    assert "coordinator not running: pid {} is gone".format(pid) in project.run().stdout


def test_pause_and_spawn_block_are_shown(project):
    now = time.time()
    project.write_tasks(now)
    block = "spawning paused: 3 startup errors in a row (claude: command not found)"
    project.write_metrics(now, paused=True, pause_reason="PAUSE file present", spawn_block=block)
    r = project.run()
    assert_fits(r.stdout)
    flat = " ".join(r.stdout.split())  # the health line may wrap at 80
    assert "DEGRADED " + block in flat
    assert "Paused by user: PAUSE file present" in r.stdout


def test_budget_block_reason_gets_its_own_line_when_health_says_more(project):
    now = time.time()
    gh = {"state": "unreachable", "since": now - 3600, "error": "connection refused",
          "rate_remaining": None, "rate_reset": None}
    project.write_metrics(now, github=gh, spawn_block="daily budget reached: $5.02 of $5.00 today")
    r = project.run()
    flat = " ".join(r.stdout.split())
    assert "DEGRADED" in flat
    assert "GitHub unreachable for 1 h: connection refused" in flat
    assert "GitHub: unreachable for 1 h (connection refused)" in flat


def test_budget_warning_uses_the_ledger(project):
    now = time.time()
    project.write_metrics(now)
    ledger.append(project.ledger, {"issue": 1, "cost_usd": 4.5}, now=now)
    r = project.run()
    assert "WARNING" in r.stdout and "daily budget 90% used ($4.50 of $5.00)" in r.stdout


def test_corrupt_tasks_lines_are_a_warning_count(project):
    now = time.time()
    project.write_tasks(now, extra="[] gh-x: broken entry\n- Attempts: many\n")
    project.write_metrics(now)
    r = project.run()
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert "! tasks.md: 2 problems (first: tasks.md:" in r.stdout
    assert "#9 " in r.stdout  # the good entries are still shown
    data = json.loads(project.run("--json").stdout)
    assert len(data["tasks_problems"]) == 2


def test_missing_tasks_md_is_said(project):
    project.write_metrics(time.time())
    r = project.run()
    assert r.returncode == 0
    assert "! tasks.md not found at {}".format(project.tasks) in " ".join(r.stdout.split()) \
        or "tasks.md not found" in r.stdout
    # With no tasks.md the daemon's own list of workers is shown.
    assert any(line.startswith("#7 ") for line in r.stdout.splitlines())


def test_corrupt_ledger_lines_are_a_warning(full):
    with open(full.ledger, "a") as f:
        f.write("{not json\n")
    r = full.run()
    assert "! usage.jsonl: 1 corrupt line skipped" in r.stdout
    assert "today $1.23" in r.stdout


@pytest.mark.parametrize("args, env", [(["--color"], {}), ([], {"FORCE_COLOR": "1"})])
def test_colour_can_be_forced_for_watch_c(full, args, env):
    r = full.run(*args, env=env)
    assert "\x1b[" in r.stdout
    # only the 16 standard colours: no 256-colour or truecolour sequences
    assert "38;5;" not in r.stdout and "38;2;" not in r.stdout


def test_no_color_wins(full):
    r = full.run("--color", env={"NO_COLOR": "1"})
    assert "\x1b[3" not in r.stdout and "\x1b[4" not in r.stdout


def test_wide_terminal_uses_the_width_and_narrow_stays_narrow(full):
    wide = full.run(env={"COLUMNS": "200"})
    assert LONG_TITLE in wide.stdout
    assert_fits(wide.stdout, 200)
    narrow = full.run(env={"COLUMNS": "60"})
    assert_fits(narrow.stdout, 60)


@pytest.mark.parametrize("config, message", [
    ("missing.toml", "not found"),
    ("bad.toml", "Expected"),
])
def test_unreadable_config_is_one_line(project, config, message):
    (project.root / "bad.toml").write_text("[paths\n")
    r = subprocess.run([sys.executable, STATUS, "--config", str(project.root / config)],
                       capture_output=True, text=True)
    assert r.returncode == 78
    assert r.stdout == ""
    assert r.stderr.startswith("status: ") and message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_watch_stops_quietly_on_ctrl_c(full):
    env = dict(os.environ, COLUMNS="80")
    p = subprocess.Popen([sys.executable, STATUS, "--config", str(full.config), "--watch"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    time.sleep(2.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 0
    assert err == b""


def test_retry_time_counts_from_the_clock_it_is_given(project):
    """collect() takes `now`; with it pinned, one text is right. tasks.md
    keeps whole seconds, so the clock starts on one."""
    from rich.console import Console
    sys.path.insert(0, str(ROOT / "tools"))
    import status
    now = float(int(time.time()))
    project.write_tasks(now)  # gh-10's next attempt: now + 600 s
    project.write_metrics(now)
    cfg = status.load_config(str(project.config))

    def row(at: float) -> str:
        console = Console(width=80, record=True, file=open(os.devnull, "w"), **status.PLAIN)
        console.print(status.build(status.collect(cfg, at), console.width))
        return next(line for line in console.export_text().splitlines() if line.startswith("#10 "))

    assert status.collect(cfg, now)["pending"][1]["next_attempt"] == now + 600
    assert re.search(r"\bretry in 10 min\s*$", row(now))
    assert re.search(r"\bretry in 9 min\s*$", row(now + 1))
    assert re.search(r"\bretry in 59 s\s*$", row(now + 541))
    assert re.search(r"\bretry due\s*$", row(now + 600))


def test_render_in_process_fits_80_columns(full):
    """The same check through rich's own recorder, without a subprocess."""
    from rich.console import Console
    sys.path.insert(0, str(ROOT / "tools"))
    import status
    cfg = status.load_config(str(full.config))
    console = Console(width=80, record=True, file=open(os.devnull, "w"), **status.PLAIN)
    console.print(status.build(status.collect(cfg, time.time()), console.width))
    text = console.export_text()
    assert_fits(text)
    assert "$0.43" in text and PR_URL in text


# ---------------------------------------------------------------------------
# Exit status per health level, and a reader that leaves early
# ---------------------------------------------------------------------------

def _healthy(project, now):
    project.write_metrics(now)


def _warning(project, now):
    project.write_metrics(now, paused=True, pause_reason="PAUSE file present")


def _degraded(project, now):
    project.write_metrics(now, spawn_block="daily budget reached: $5.02 of $5.00 today")


def _critical(project, now):
    project.write_metrics(now, pid=dead_pid())


@pytest.mark.parametrize("make, level, code", [
    (_healthy, "ok", 0), (_warning, "warning", 1), (_degraded, "degraded", 1), (_critical, "critical", 2)])
def test_exit_status_follows_health_for_monitoring(project, make, level, code):
    now = time.time()
    project.write_tasks(now)
    make(project, now)
    r = project.run()
    assert (r.returncode, r.stderr) == (code, "")
    assert r.stdout.startswith(" {} ".format(level.upper()))
    j = project.run("--json")
    assert (j.returncode, j.stderr) == (code, "")
    assert json.loads(j.stdout)["health"]["level"] == level  # --json is the same object as before


def read_then_close(args, cwd, env=None, first=100):
    """Run args with stdout on a real pipe, read a little, close the pipe
    (what `| head -1` does) and return (exit status, stderr)."""
    p = subprocess.Popen(args, cwd=str(cwd), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.read(first)
    p.stdout.close()
    err = p.stderr.read().decode()
    p.stderr.close()
    return p.wait(timeout=30), err


def test_closed_pipe_ends_quietly(project):
    """Far more output than a pipe holds (64 KB), so the tool is certainly
    still writing when the reader leaves."""
    now = time.time()
    doc = tasks.TaskFile()
    for n in range(1, 3001):
        doc.add(tasks.Task(n, "Pending issue number {} with a title of some length".format(n), tasks.PENDING, 2))
    project.tasks.write_text(tasks.render(doc))
    project.write_metrics(now, active=[])
    code, err = read_then_close([sys.executable, STATUS, "--config", str(project.config), "--json"],
                                project.root)
    assert (code, err) == (0, "")  # the health code (ok), not 1 or 120
    project.write_metrics(now, active=[], pid=dead_pid())
    code, err = read_then_close([sys.executable, STATUS, "--config", str(project.config), "--json"],
                                project.root)
    assert (code, err) == (2, "")


def test_titles_that_fit_are_not_cut(project):
    """Room a short column does not need goes to the title beside it."""
    now = time.time()
    title = "Teach the parser about nested block comments"   # 44 columns
    ended = "Migrate the settings file to TOML format"        # 40 columns
    doc = tasks.TaskFile()
    doc.add(tasks.Task(7, title, tasks.ACTIVE, 1, pid=os.getpid(), started=tasks.format_time(now - 60),
                       attempts=1, branch="auto/gh-7"))
    doc.add(tasks.Task(4, ended, tasks.FAILED, 2, attempts=2, reason="flaky"))
    project.tasks.write_text(tasks.render(doc))
    project.write_metrics(now, active=[{"issue": 7, "pid": 4242, "started_at": now - 60, "attempt": 1,
                                        "cost_usd": 0.1, "last_tool": "Read"}])
    r = project.run()
    assert r.returncode == 0, r.stderr
    assert_fits(r.stdout)
    rows = [line for line in r.stdout.splitlines() if line.startswith(("#7 ", "#4 "))]
    assert len(rows) == 2 and title in rows[0] and ended in rows[1], rows
    assert "…" not in r.stdout


def test_share_width():
    sys.path.insert(0, str(ROOT / "tools"))
    import status
    assert status.share_width(51, [44, 4], [3, 2]) == [44, 4]      # both fit: each takes its need
    assert status.share_width(51, [79, 4], [3, 2]) == [47, 4]      # the short one gives its room away
    assert status.share_width(51, [79, 60], [3, 2]) == [30, 20]    # neither fits: by weight
    assert status.share_width(10, [79, 60], [3, 2]) == [8, 8]      # a floor on a tiny screen
