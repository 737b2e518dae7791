"""tools/dashboard.py as a person uses it: the real server as a subprocess on
a temp state folder (config, tasks.md, metrics.json, a ledger, transcripts
from tests/data/claude), asked over HTTP, and once in a real headless
Chromium."""
from __future__ import annotations

import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from adws import ledger, metrics, tasks
from claude_samples import sample

ROOT = Path(__file__).resolve().parent.parent
DASH = str(ROOT / "tools" / "dashboard.py")
STATUS = str(ROOT / "tools" / "status.py")
REPORT = str(ROOT / "tools" / "usage_report.py")
sys.path.insert(0, str(ROOT / "tools"))
import _charts  # noqa: E402
import dashboard  # noqa: E402

HOSTILE = "<script>alert(1)</script>"
PR_URL = "https://github.com/acme/widgets/pull/12"
SECRET = "ghp_" + "A1b2C3d4E5f6G7h8I9j0"     # split so no scanner takes this test for a leak


def utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def run_record(now: float, ago: float, issue, cost: float, outcome: Optional[str], minutes: float = 10,
               models=("claude-sonnet-4-6",), **extra) -> dict:
    t = now - ago
    rec = {"ts": utc(t), "date": ledger.local_day(t), "issue": issue, "attempt": 1, "models": list(models),
           "input_tokens": 10, "output_tokens": 900, "cache_creation_tokens": 5000, "cache_read_tokens": 120000,
           "total_tokens": 125910, "cost_usd": cost, "duration_ms": int(minutes * 60000)}
    if outcome:
        rec["outcome"] = outcome
    rec.update(extra)
    return rec


def ledger_runs(now: float) -> List[dict]:
    return [
        run_record(now, 30 * 60, 7, 0.25, "completed", 12, stage="review", round=2),
        run_record(now, 3 * 3600, 5, 1.0, "completed", 25),
        run_record(now, 3 * 86400, 4, 0.5, "failed", 5),
        run_record(now, 3 * 86400 + 1, 4, 0.75, "failed", 6),
        run_record(now, 10 * 86400, 3, 2.0, "blocked", 40),
        run_record(now, 40 * 86400, 13, 4.0, "startup_error", 1, models=('<img src=x onerror="alert(5)">',)),
        run_record(now, 400 * 86400, 7, 8.0, None, 30, exit_reason="open_pr"),
        {"issue": 9, "cost_usd": 0.125},     # no date: counts in "all" only
    ]


# (runs, cost) in each range, by hand from ledger_runs above.
EXPECTED = {"24h": (2, 1.25), "7d": (4, 2.5), "30d": (5, 4.5), "all": (8, 16.625)}
CORRUPT = ["{torn", "[]", "not json"]


def tac(subtype: str, attempt: int, **more) -> str:
    return json.dumps(dict({"type": "tac", "subtype": subtype, "issue": 7, "attempt": attempt}, **more))


def hostile_transcript() -> str:
    lines = [
        tac("attempt", 1, worker="w-1", branch='"><script>alert(6)</script>'),
        json.dumps({"type": "assistant", "message": {"id": "m1", "model": "claude-sonnet-4-6", "content": [
            {"type": "text", "text": "Here is </div><script>alert(7)</script> and the token " + SECRET}]}}),
        json.dumps({"type": "assistant", "message": {"id": "m2", "model": "claude-sonnet-4-6", "content": [
            {"type": "tool_use", "id": "t1", "name": '<img src=x onerror="alert(8)">',
             "input": {"command": "echo '<b>bold</b>'"}}]}}),
        json.dumps({"type": "user", "message": {"content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "<iframe src=javascript:alert(9)>"}]}}),
        "{not json <script>alert(10)</script>",
    ]
    return "\n".join(lines) + "\n"


class State:
    """A state folder as the daemon leaves it."""

    def __init__(self, root: Path):
        self.root = root
        self.now = time.time()      # what "30 minutes ago" and "12 min" on the pages count from
        self.runs = ledger_runs(self.now)
        self.config = root / "config.toml"
        self.tasks = root / "state" / "tasks.md"
        self.metrics = root / "state" / "metrics.json"
        self.logs = root / "logs"
        self.ledger = self.logs / "usage.jsonl"
        self.tasks.parent.mkdir(parents=True)
        self.logs.mkdir()
        self.config.write_text('[github]\nrepo = "acme/widgets"\n\n[paths]\ntasks = "state/tasks.md"\n'
                               'logs = "logs"\n\n[budget]\ndaily_usd = 5\nmonthly_usd = 50\n')

    def write_tasks(self, active: bool = True) -> None:
        T = tasks.Task
        doc = tasks.TaskFile()
        if active:
            doc.add(T(7, HOSTILE, tasks.ACTIVE, 1, pid=os.getpid(), started=tasks.format_time(self.now - 750),
                      attempts=2, branch="auto/gh-7", extra=[("Stage", "review"), ("Round", "2")]))
        else:
            doc.add(T(7, HOSTILE, tasks.COMPLETED, 1, completed=tasks.format_time(self.now), pr=PR_URL))
        doc.add(T(9, "[WIP] Add :fire: dark mode", tasks.PENDING, 0))
        doc.add(T(10, "Refactor the parser", tasks.PENDING, 2, attempts=1,
                  next_attempt=tasks.format_time(self.now + 600)))
        doc.add(T(5, "Update README badges", tasks.COMPLETED, 2, completed=tasks.format_time(self.now - 60), pr=PR_URL))
        doc.add(T(6, '"><img src=x onerror="alert(2)">', tasks.COMPLETED, 2,
                  completed=tasks.format_time(self.now - 120), pr="javascript:alert(3)"))
        doc.add(T(13, "Hostile transcript", tasks.COMPLETED, 2, completed=tasks.format_time(self.now - 180)))
        doc.add(T(4, "Migrate to the new API", tasks.FAILED, 2, attempts=2, reason="tests failed twice"))
        doc.add(T(3, "Needs a decision", tasks.BLOCKED, 2, reason="waiting for <b>a human</b>"))
        self.tasks.write_text(tasks.render(doc))

    def write_metrics(self) -> None:
        data = metrics.initial(pid=os.getpid(), started_at=self.now - 7500, poll_interval=3600, max_concurrent=2)
        data.update(updated_at=time.time(), last_poll_at=time.time(), last_poll_ok=True)
        data["active"] = [{"issue": 7, "title": HOSTILE, "pid": 4242, "started_at": self.now - 750, "attempt": 2,
                           "cost_usd": 0.4312, "last_tool": "Bash: pytest -q", "log": "logs/gh-7.jsonl"}]
        data["spend"].update(daily_usd=5.0, monthly_usd=50.0)
        metrics.write(self.metrics, data)

    def write_ledger(self, records: Optional[List[dict]] = None, corrupt=CORRUPT) -> None:
        with open(self.ledger, "w") as f:
            for r in self.runs if records is None else records:
                f.write(json.dumps(r) + "\n")
            for line in corrupt:
                f.write(line + "\n")

    def write_transcripts(self) -> None:
        first = sample("08_").read_text()
        second = sample("01_").read_text()
        (self.logs / "gh-7.jsonl").write_text(
            tac("attempt", 1) + "\n" + first + tac("end", 1, exit="exit status 0") + "\n"
            + tac("attempt", 2) + "\n" + second)
        (self.logs / "gh-13.jsonl").write_text(hostile_transcript())
        outside = self.root / "outside"
        outside.mkdir()
        (outside / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
        os.symlink(outside / "passwd", self.logs / "gh-666.jsonl")
        os.mkfifo(self.logs / "gh-667.jsonl")

    def populate(self) -> "State":
        self.write_tasks()
        self.write_metrics()
        self.write_ledger()
        self.write_transcripts()
        return self

    def files(self) -> Dict[str, Tuple[float, bytes]]:
        out = {}
        for p in sorted(self.root.rglob("*")):
            if p.is_file() and not p.is_symlink():
                out[str(p)] = (p.stat().st_mtime, p.read_bytes())
        return out


class Dashboard:
    """tools/dashboard.py as a process on a free port."""

    def __init__(self, config: Path, *args: str):
        self.proc = subprocess.Popen([sys.executable, DASH, "--config", str(config), "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 20)
        line = self.proc.stdout.readline() if ready else ""
        m = re.match(r"dashboard: http://(\S+):(\d+)/ \(read-only; Ctrl-C to stop\)$", line.strip())
        if not m:
            self.stop()
            raise AssertionError("no start line: {!r} {}".format(line, self.proc.stderr.read()))
        self.host, self.port = m.group(1), int(m.group(2))

    def request(self, path: str, host: Optional[str] = None, method: str = "GET",
                timeout: float = 20) -> Tuple[int, Dict[str, str], str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        headers = {"Host": host} if host else {}
        conn.request(method, path, headers=headers)
        r = conn.getresponse()
        body = r.read().decode("utf-8")
        conn.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body

    def get(self, path: str, expect: int = 200) -> str:
        code, headers, body = self.request(path)
        assert code == expect, (path, code, body[-2000:])
        assert "Traceback" not in body
        return body

    def json(self, path: str) -> dict:
        code, headers, body = self.request(path)
        assert code == 200 and headers["content-type"] == "application/json", (code, body)
        return json.loads(body)

    def rss_kb(self, field: str = "VmRSS") -> int:
        for line in Path("/proc/{}/status".format(self.proc.pid)).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(field)

    def stop(self) -> str:
        """SIGTERM, as systemd stops it (SIGINT may be ignored: a shell's
        background job inherits it so); returns what it said on stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.communicate(timeout=10)[1]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.communicate()[1]


@pytest.fixture(scope="module")
def state(tmp_path_factory) -> State:
    return State(tmp_path_factory.mktemp("dash")).populate()


@pytest.fixture(scope="module")
def dash(state):
    d = Dashboard(state.config)
    yield d
    err = d.stop()
    assert "Traceback" not in err, err


def cli_json(tool: str, config: Path, *args: str) -> dict:
    r = subprocess.run([sys.executable, tool, "--config", str(config), "--json", *args],
                       capture_output=True, text=True, timeout=30)
    assert r.stdout, r.stderr
    return json.loads(r.stdout)


def cards(page: str) -> Dict[str, float]:
    """The totals cards' exact numbers (their data-* attributes)."""
    return {k: float(v) for k, v in re.findall(r'data-total-(runs|tokens|cost)="([^"]*)"', page)}


def charts(page: str) -> Dict[str, str]:
    return dict(re.findall(r'<svg class="chart" data-chart="([^"]+)"(.*?)</svg>', page, re.S))


def values(svg: str) -> List[float]:
    return [float(v) for v in re.findall(r'class="pt [^"]*"[^>]*data-value="([^"]+)"', svg)]


# ---------------------------------------------------------------------------
# Every page and endpoint, and the numbers on them
# ---------------------------------------------------------------------------

def test_every_page_and_endpoint_answers_with_safe_headers(dash):
    for path in ["/", "/issue/7", "/issue/7?run=2", "/issue/7?detailed=1", "/issue/5", "/issue/13",
                 "/api/status", "/api/usage", "/api/usage?range=7d&period=weekly&detail=1&issue=4"] + \
            ["/?range=" + r for r in ledger.RANGES]:
        code, headers, body = dash.request(path)
        assert code == 200, (path, body[-1000:])
        assert headers["cache-control"] == "no-store"
        assert "default-src 'none'" in headers["content-security-policy"]
        assert "script-src" not in headers["content-security-policy"]   # none may run
        if not path.startswith("/api/"):
            assert headers["content-type"] == "text/html; charset=utf-8"
            assert body.startswith("<!doctype html>") and body.rstrip().endswith("</html>"), path
    assert dash.request("/", method="HEAD")[2] == ""


def test_overview_totals_equal_usage_report_json_in_every_range(dash, state):
    for range_name in ledger.RANGES:
        page = dash.get("/?range=" + range_name)
        report = cli_json(REPORT, state.config, "--range", range_name)
        total = report["total"]
        assert cards(page) == {"runs": total["runs"], "tokens": total["total_tokens"],
                               "cost": total["cost_usd"]}, range_name
        if range_name in EXPECTED:
            assert (total["runs"], total["cost_usd"]) == EXPECTED[range_name]
        assert ledger.usd(total["cost_usd"]) in page
        assert report["corrupt_lines"] == 3


def test_api_usage_is_usage_report_json(dash, state):
    for query, args in (("range=7d", ["--range", "7d"]), ("", []),
                        ("range=all&period=weekly&detail=1", ["--week", "--detail"]),
                        ("range=30d&period=monthly&issue=4", ["--month", "--issue", "4", "--range", "30d"])):
        assert dash.json("/api/usage?" + query) == cli_json(REPORT, state.config, *args), query
    code, _, body = dash.request("/api/usage?range=1y")
    assert code == 400 and "range must be one of 24h, 7d, 30d, month, all" in json.loads(body)["error"]


def test_api_status_is_status_json(dash, state):
    def steady(facts: dict) -> dict:
        facts = dict(facts)
        del facts["now"]
        facts["active"] = [{k: v for k, v in w.items() if k != "elapsed_s"} for w in facts["active"]]
        return facts
    mine = dash.json("/api/status")
    assert steady(mine) == steady(cli_json(STATUS, state.config))
    assert mine["active"][0]["stage"] == "review" and mine["active"][0]["round"] == "2"
    assert mine["warnings"] == ["usage.jsonl: 3 corrupt lines skipped"]


def test_overview_shows_health_queue_workers_prs_and_spend(dash):
    page = dash.get("/")
    assert '<span class="badge ok">ok</span> <span>running normally</span>' in page
    assert '<meta http-equiv="refresh" content="30">' in page
    # The active worker: issue, title, stage and round, elapsed (12 min 30 s when the state was written), cost so far, last tool, transcript.
    row = re.search(r'<tr><td class=""><a href="/issue/7">#7</a></td>.*?</tr>', page).group()
    for text in ("&lt;script&gt;alert(1)&lt;/script&gt;", "stage review · round 2", "12 min", "$0.43",
                 "Bash: pytest -q", 'href="/issue/7#transcript"', 'href="/issue/7/live"'):
        assert text in row, text
    assert "<h3>Pending (2)</h3>" in page and "[WIP] Add :fire: dark mode" in page and "retry in 9 min" in page
    assert "<h3>Completed today (3)</h3>" in page and "<h3>Failed (1)</h3>" in page and "<h3>Blocked (1)</h3>" in page
    assert "tests failed twice" in page and "waiting for &lt;b&gt;a human&lt;/b&gt;" in page
    assert '<a href="{0}" rel="noreferrer">{0}</a>'.format(PR_URL) in page
    # Spend against the budgets, the burn rate of the last hour (only the
    # $0.25 run ended within it) and the projections.
    today = re.search(r'Today</div><div class="big">([^<]+)</div><div class="small">([^<]+)<', page).groups()
    assert today[1].startswith("of $5.00 (") and "burn rate $0.25/h over the last hour" in today[1]
    assert "by the end of the month at its daily average so far" in page
    assert "Running now</div><div class=\"big\">$0.43</div>" in page
    assert "usage.jsonl: 3 corrupt lines skipped" in page


def test_range_links_keep_the_state_in_the_url(dash):
    page = dash.get("/?range=30d")
    nav = re.search(r'<nav class="ranges".*?</nav>', page).group()
    assert re.findall(r'href="/\?range=([^"]+)"', nav) == list(ledger.RANGES)
    assert '<a href="/?range=30d" aria-current="page">30 d</a>' in nav
    assert "<title>TAC coordinator · 30 d</title>" in page
    # An unknown range says so and shows the default, rather than failing.
    page = dash.get("/?range=1y")
    assert "Unknown range &#x27;1y&#x27;: showing last 7 days." in page and cards(page)["runs"] == 4


def test_every_chart_has_its_points_and_they_add_up(dash, state):
    page = dash.get("/?range=30d")
    svgs = charts(page)
    assert sorted(svgs) == ["activity", "cost-by-model", "cost-per-day", "cost-vs-duration", "outcomes", "tokens"]
    for name, svg in svgs.items():
        declared = int(re.search(r'data-points="(\d+)"', svg).group(1))
        assert declared > 0 and len(re.findall(r'class="pt[ "]', svg)) == declared, name
        assert "<title" in svg and "<desc" in svg and 'class="axis"' in svg, name
    runs, cost = EXPECTED["30d"]
    assert sum(values(svgs["cost-per-day"])) == pytest.approx(cost)
    assert len(values(svgs["cost-per-day"])) == 31          # a bar for each day of the range, empty ones too
    totals = re.findall(r'<circle class="cum"[^>]*><title>running total [^:<]+: ([^<]+)</title>', svgs["cost-per-day"])
    assert len(totals) == 31 and totals[-1] == ledger.usd(cost)   # the running total ends at the range's cost
    assert '<line class="s-budget"' in svgs["cost-per-day"] and "monthly budget " + ledger.usd(50.0) in svgs["cost-per-day"]
    assert sum(values(svgs["cost-by-model"])) == pytest.approx(cost)
    assert sum(values(svgs["activity"])) == runs
    assert sorted(values(svgs["cost-vs-duration"])) == [0.25, 0.5, 0.75, 1.0, 2.0]
    assert sum(values(svgs["outcomes"])) == runs             # 2 completed, 2 failed, 1 blocked
    assert len(re.findall(r'class="pt o-failed"', svgs["outcomes"])) == 1   # both failures on one day
    assert sum(values(svgs["tokens"])) == runs * (10 + 900 + 5000 + 120000)
    # One dot per run, linked to its issue.
    assert re.findall(r'<a href="(/issue/\d+)"><circle class="pt o-', svgs["cost-vs-duration"]) == \
        ["/issue/7", "/issue/5", "/issue/4", "/issue/4", "/issue/3"]
    # Each chart's numbers, as a table for those who cannot see it.
    assert page.count("<summary>The numbers</summary>") == 6
    day = dash.get("/?range=24h")
    assert len(values(charts(day)["tokens"])) == 4 * 25      # hourly: 25 hours touched by the last 24


def test_issue_page_lists_every_run_and_renders_its_transcript(dash, state):
    page = dash.get("/issue/7")
    assert "<title>#7 &lt;script&gt;alert(1)&lt;/script&gt;</title>" in page
    runs = re.search(r"<h2>Runs</h2>(.*?)</section>", page, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", runs)[1:]
    assert len(rows) == 3        # two ended runs, in the ledger's order, and the running one
    assert "review" in rows[0] and ">2<" in rows[0] and "$0.25" in rows[0] and "125,910" in rows[0]
    assert "completed" in rows[1] and "$8.00" in rows[1] and "30 min" in rows[1]
    assert "running" in rows[2] and "$0.43" in rows[2]
    assert 'data-issue-cost="8.25"' in runs
    # The transcript: view_worker's rendering of both runs, HTML-escaped.
    tx = page[page.index('<div class="tx">'):]
    assert '<span class="b c-green">● init  model claude-opus-4-8' in tx     # sample 08
    assert "claude-opus-4-5-20251101" in tx                                 # sample 01 (run 2)
    assert tx.count("Σ ") == 2                                               # a footer per run
    assert "━━ end of attempt 1: exit status 0" in tx
    one = dash.get("/issue/7?run=2")
    one = one[one.index('<div class="tx">'):]
    assert "claude-opus-4-5-20251101" in one and "claude-opus-4-8" not in one
    assert "No run 9 in this transcript." in dash.get("/issue/7?run=9")
    # An issue nobody knows is a 404 page, not an error.
    code, _, body = dash.request("/issue/424242")
    assert code == 404 and "Nothing is known about #424242" in body


def test_hostile_titles_and_transcript_text_are_escaped(dash):
    pages = [dash.get(p) for p in ("/", "/?range=all", "/issue/7", "/issue/6", "/issue/13")]
    for page in pages:
        # No tag from the data survives anywhere: the page itself has no <script> at all.
        assert "<script" not in page and "<img" not in page and "<iframe" not in page and "<b>" not in page
        assert "onerror=" not in page.replace("onerror=&quot;", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[0]
    assert "&quot;&gt;&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in pages[0]
    assert 'href="javascript:' not in pages[0] and "javascript:alert(3)" in pages[0]    # a PR field shown, not linked
    assert "&lt;img src=x onerror=&quot;alert(5)&quot;&gt;" in pages[1]                 # a model name in a chart
    tx = pages[4][pages[4].index('<div class="tx">'):]
    assert "&lt;/div&gt;&lt;script&gt;alert(7)&lt;/script&gt;" in tx
    assert "&lt;img src=x onerror=&quot;alert(8)&quot;&gt;" in tx
    assert "&lt;iframe src=javascript:alert(9)&gt;" in tx
    assert "! unreadable line 5: {not json &lt;script&gt;alert(10)&lt;/script&gt;" in tx
    assert "branch &quot;&gt;&lt;script&gt;alert(6)&lt;/script&gt;" in tx
    # The same redaction as view_worker: a token the agent printed is cut.
    assert SECRET not in tx and "[redacted]" in tx


def test_paths_outside_the_state_folder_are_refused(dash):
    for path in ("/issue/../../etc/passwd", "/issue/%2e%2e/%2e%2e/etc/passwd", "/issue/7/../../../etc/passwd",
                 "/logs/gh-7.jsonl", "/issue/7.jsonl", "//etc/passwd"):
        code, _, body = dash.request(path)
        assert code == 404 and "root:" not in body, path
    code, _, body = dash.request("/issue/666")       # logs/gh-666.jsonl is a link to a file outside
    assert code == 403 and "Refused: logs/gh-666.jsonl leads outside the logs folder." in body
    assert "root:x" not in body
    code, _, body = dash.request("/issue/666/live")
    assert code == 403 and "root:x" not in body
    code, _, body = dash.request("/issue/667", timeout=5)   # a FIFO would block a reader for good
    assert code == 403 and "logs/gh-667.jsonl is not a regular file" in body


def test_a_request_for_another_host_name_is_refused(dash):
    """Bound to loopback, the dashboard answers only to loopback names, so a
    web page cannot read it through a DNS name pointed at 127.0.0.1."""
    for host in ("localhost:8050", "127.0.0.1:8050", "[::1]:8050"):
        assert dash.request("/api/status", host=host)[0] == 200, host
    code, _, body = dash.request("/api/status", host="attacker.example:8050")
    assert code == 403 and "running" not in body


def test_the_dashboard_writes_nothing(state, dash):
    before = state.files()
    for path in ("/", "/?range=all", "/issue/7", "/issue/13", "/api/status", "/api/usage?range=30d"):
        dash.get(path)
    assert state.files() == before


def test_ledger_is_read_again_only_where_it_grew(tmp_path):
    s = State(tmp_path)
    s.write_tasks()
    s.write_metrics()
    s.write_ledger(s.runs[:2], [])
    d = Dashboard(s.config)
    try:
        assert cards(d.get("/?range=all"))["runs"] == 2
        with open(s.ledger, "a") as f:
            f.write(json.dumps(s.runs[2]) + "\n" + json.dumps(s.runs[3])[:40])   # one whole line, one being written
        assert cards(d.get("/?range=all")) == {"runs": 3, "tokens": 3 * 125910, "cost": 1.75}
        with open(s.ledger, "a") as f:
            f.write(json.dumps(s.runs[3])[40:] + "\n")
        assert cards(d.get("/?range=all"))["cost"] == 2.5
        s.write_ledger(s.runs[4:5], [])     # replaced by a shorter file: read again from the start
        assert cards(d.get("/?range=all")) == {"runs": 1, "tokens": 125910, "cost": 2.0}
        s.ledger.unlink()
        page = d.get("/?range=all")
        assert cards(page)["runs"] == 0 and "No ledger yet at" in page
    finally:
        d.stop()


# ---------------------------------------------------------------------------
# Missing and malformed files
# ---------------------------------------------------------------------------

def test_missing_files_are_notices_not_errors(tmp_path):
    s = State(tmp_path)                     # config only: the daemon never ran
    d = Dashboard(s.config)
    try:
        page = d.get("/")
        assert '<span class="badge critical">critical</span>' in page
        assert "The coordinator is not running, or has not started yet: there is no {}.".format(s.metrics) in page
        assert "tasks.md not found at {}".format(s.tasks) in page
        assert "No ledger yet at {}: no run has finished.".format(s.ledger) in page
        assert "No worker is running." in page and "No runs with a date in this range." in page
        for path in ("/?range=all", "/api/status", "/api/usage"):
            d.get(path)
        assert d.request("/issue/7")[0] == 404
    finally:
        assert "Traceback" not in d.stop()


def test_why_spawning_is_paused_is_said_at_the_top(tmp_path):
    """A person's pause with its reason, and the daemon's own block (the
    startup breaker), each said once above everything else."""
    s = State(tmp_path).populate()
    data = json.loads(s.metrics.read_text())
    data.update(paused=True, pause_reason="PAUSE file: alice is upgrading the Pi",
                spawn_block="spawning paused: claude login expired? (Invalid API key · run claude /login); "
                            "next probe 10:42")
    metrics.write(s.metrics, data)
    d = Dashboard(s.config)
    try:
        page = d.get("/")
        block = "spawning paused: claude login expired? (Invalid API key · run claude /login); next probe 10:42"
        assert page.count('<div class="notice" role="status">Spawning is paused by the user: '
                          'PAUSE file: alice is upgrading the Pi</div>') == 1
        assert page.count('<div class="notice bad" role="status">{}</div>'.format(block)) == 1
        assert '<span class="badge degraded">degraded</span> <span>{}'.format(block) in page  # the health reason
        assert page.index("Spawning is paused by the user") < page.index("<h2>Queue</h2>")
    finally:
        assert "Traceback" not in d.stop()


def test_malformed_files_are_notices_not_errors(tmp_path):
    s = State(tmp_path)
    s.tasks.write_text("# tasks\n## Active\n[🟡 w-1] gh-7: broken {p1}\n- PID: many\n## Nonsense\n\x00\xff\n")
    s.metrics.write_text('{"version": 1, "updated_')
    s.write_ledger([s.runs[0], {"issue": "x", "cost_usd": "lots", "ts": 5, "models": "m", "duration_ms": "long",
                              "model_usage": [1], "outcome": 3}], CORRUPT)
    (s.logs / "gh-7.jsonl").write_bytes(b'\xff\xfe{"type": "assistant", "message": 5}\n{"type":\n\x00\n')
    d = Dashboard(s.config)
    try:
        page = d.get("/?range=all")
        assert "{} is unreadable: the daemon&#x27;s state is unknown.".format(s.metrics) in page
        assert re.search(r"tasks.md: \d+ problems? \(first: ", page)
        assert "usage.jsonl: 3 corrupt lines skipped" in page
        assert cards(page)["runs"] == 2
        tx = d.get("/issue/7")
        assert "! unreadable line" in tx
        for path in ("/api/status", "/api/usage?range=all", "/issue/7?detailed=1"):
            d.get(path)
    finally:
        assert "Traceback" not in d.stop()


# ---------------------------------------------------------------------------
# Streaming: a running worker live, and a big transcript in constant memory
# ---------------------------------------------------------------------------

def read_until(sock: socket.socket, marker: bytes, got: bytes = b"", timeout: float = 15) -> bytes:
    deadline = time.time() + timeout
    while marker not in got:
        assert time.time() < deadline, got[-2000:]
        sock.settimeout(max(0.1, deadline - time.time()))
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_live_view_shows_new_lines_and_ends_with_the_worker(tmp_path):
    s = State(tmp_path)
    s.write_tasks()
    s.write_metrics()
    log = s.logs / "gh-7.jsonl"
    log.write_text(tac("attempt", 1) + "\n")
    d = Dashboard(s.config)
    try:
        sock = socket.create_connection(("127.0.0.1", d.port), timeout=15)
        sock.sendall(b"GET /issue/7/live HTTP/1.0\r\nHost: localhost\r\n\r\n")
        got = read_until(sock, b"attempt 1")
        assert b"Live: the transcript, then each line as the worker writes it" in got
        with open(log, "a") as f:
            f.write(json.dumps({"type": "assistant", "message": {"id": "m", "content": [
                {"type": "text", "text": "a new line <now>"}]}}) + "\n")
        got = read_until(sock, b"a new line &lt;now&gt;", got)
        s.write_tasks(active=False)        # the worker ended: the page ends too, after its last lines
        with open(log, "a") as f:
            f.write(tac("end", 1, exit="exit status 0") + "\n")
        got = read_until(sock, b"</html>", got)
        assert b"end of attempt 1: exit status 0" in got and b"The worker has ended." in got
        sock.close()
    finally:
        assert "Traceback" not in d.stop()


def write_log(path: Path, megabytes: int) -> int:
    """A transcript of about that size whose rendering is about as big
    (assistant texts of 20 lines: nothing clipped); returns its turns."""
    text = "\n".join("line {} of a long answer ".format(i) + "x" * 80 for i in range(20))
    with open(path, "w") as f:
        f.write(tac("attempt", 1) + "\n")
        turn = 0
        while f.tell() < megabytes * 1024 * 1024:
            f.write(json.dumps({"type": "assistant", "message": {"id": "m%d" % (turn % 50), "content": [
                {"type": "text", "text": text}]}}) + "\n")
            turn += 1
    return turn


def test_a_big_transcript_streams_in_constant_memory(tmp_path):
    s = State(tmp_path)
    turns = write_log(s.logs / "gh-8.jsonl", 12)
    write_log(s.logs / "gh-9.jsonl", 0)
    d = Dashboard(s.config)
    try:
        d.get("/issue/9")                      # imports the viewer and rich: the baseline
        before = d.rss_kb()
        sock = socket.create_connection(("127.0.0.1", d.port), timeout=30)
        sock.sendall(b"GET /issue/8 HTTP/1.0\r\nHost: localhost\r\n\r\n")
        got = read_until(sock, b"</html>", timeout=60)
        sock.close()
        assert got.count(b"\xe2\x97\x86 line 0 of a long answer") == turns   # every turn came ("◆ ")
        grew_mb = (d.rss_kb("VmHWM") - before) / 1024
        assert grew_mb < 8, "the dashboard grew by {:.0f} MB for a 12 MB log".format(grew_mb)
    finally:
        d.stop()


# ---------------------------------------------------------------------------
# Start-up: loopback by default, a warning elsewhere, one line for a bad config
# ---------------------------------------------------------------------------

def test_listens_on_loopback_and_warns_when_told_otherwise(tmp_path):
    s = State(tmp_path)
    d = Dashboard(s.config)
    assert d.host == "127.0.0.1"
    assert "no login" not in d.stop()
    d = Dashboard(s.config, "--host", "0.0.0.0")
    try:
        assert d.request("/api/status", host="raspberrypi.local:8050")[0] == 200   # told to serve the LAN
    finally:
        err = d.stop()
    assert err.splitlines()[0] == ("dashboard: listening on 0.0.0.0:{}, beyond this machine: the page has no "
                                   "login, and anyone who can reach this port can read the queue, the spending "
                                   "and the transcripts".format(d.port))


def test_bad_config_and_busy_port_are_one_line(tmp_path):
    bad = tmp_path / "config.toml"
    bad.write_text("[paths\n")
    r = subprocess.run([sys.executable, DASH, "--config", str(bad)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 78 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith("dashboard: ")
    s = State(tmp_path / "s")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, DASH, "--config", str(s.config), "--port", str(port)],
                           capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and r.stderr == "dashboard: cannot listen on 127.0.0.1:{}: Address already in use\n".format(port)


# ---------------------------------------------------------------------------
# The pure parts
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("value, top, step", [(0, 1, 0.25), (1, 1, 0.25), (0.43, 0.6, 0.2), (7.2, 8, 2),
                                              (125910, 150000, 50000), (16.625, 20, 5)])
def test_nice_axis(value, top, step):
    assert _charts.nice_max(value) == (top, step)


def test_projection_of_the_day_and_the_month():
    now = time.mktime((2026, 12, 16, 18, 0, 0, 0, 0, -1))       # half way through December, 6 h to midnight
    runs = [ledger.Run.of({"ts": utc(now - 600), "cost_usd": 0.5}), ledger.Run.of({"ts": utc(now - 4000), "cost_usd": 9.0})]
    look = dashboard.outlook(runs, {"today_usd": 2.0, "month_usd": 20.0}, [{"cost_usd": 0.25}, {"cost_usd": None}], now)
    assert look.last_hour_usd == 0.5
    assert look.end_of_day_usd == pytest.approx(2.0 + 0.5 * 6)
    month = 31 * 86400
    assert look.end_of_month_usd == pytest.approx(20.0 * month / (now - time.mktime((2026, 12, 1, 0, 0, 0, 0, 0, -1))))
    assert look.running_usd == 0.25


# ---------------------------------------------------------------------------
# A real browser
# ---------------------------------------------------------------------------

def test_in_a_real_browser_the_pages_load_cleanly_with_every_chart_drawn(dash, tmp_path):
    """Headless Chromium (Debian's package, installed by .ci/run) loads the
    overview and an issue page: no console error or warning, every chart's
    SVG drawn with all its points inside it, and screenshots to look at."""
    browser_mod = pytest.importorskip("browser")
    if browser_mod.find_chromium() is None:
        pytest.skip("no chromium here: install it with `apt-get install chromium` (.ci/run does)")
    b = browser_mod.Browser(tmp_path / "profile")
    try:
        base = "http://127.0.0.1:{}".format(dash.port)
        b.load(base + "/?range=30d")
        assert b.problems() == []
        drawn = b.evaluate("""JSON.stringify([...document.querySelectorAll('svg.chart')].map(svg => {
            const box = svg.viewBox.baseVal, pts = [...svg.querySelectorAll('.pt')];
            const inside = pts.filter(p => { const r = p.getBBox();
                return isFinite(r.x + r.y + r.width + r.height) && r.x >= 0 && r.y >= 0
                    && r.x + r.width <= box.width + 0.5 && r.y + r.height <= box.height + 0.5; });
            return {name: svg.dataset.chart, declared: +svg.dataset.points, points: pts.length,
                    inside: inside.length, width: svg.getBoundingClientRect().width}; }))""")
        drawn = json.loads(drawn)
        assert sorted(c["name"] for c in drawn) == sorted(charts(dash.get("/?range=30d")))
        for c in drawn:
            assert c["points"] == c["declared"] > 0 and c["inside"] == c["points"], c
            assert c["width"] > 200, c
        assert b.evaluate("document.title") == "TAC coordinator · 30 d"
        shot = b.screenshot(tmp_path / "overview.png")
        b.load(base + "/issue/13")
        assert b.problems() == []
        assert b.evaluate("document.querySelectorAll('script, img, iframe').length") == 0
        assert "<script>alert(7)</script>" in b.evaluate("document.querySelector('.tx').textContent")
        b.load(base + "/issue/7")
        assert b.problems() == []
        assert b.evaluate("document.querySelectorAll('.tx .l').length") >= 15
        b.screenshot(tmp_path / "issue.png")
        assert shot.stat().st_size > 10000
        print("screenshots: {} and {}".format(shot, tmp_path / "issue.png"))
    finally:
        b.close()
