"""The status issue (adws/status_issue.py) through the real `gh` and the fake GitHub.

A person's part is played by the fake: `github.edit_issue(..., actor=)` is
an edit in the web page (ticking a box is an edit of the body), and
`set_permission` decides who may edit. The clock is one object shared by
the fake and the steps, so hours pass without sleeping.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Dict, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adws.config import ConfigError, load_config
from adws.github import GitHub
from adws.sandbox.fakegithub import FakeGitHub
from adws.status_issue import (CANCEL, MARKER, PAUSE, RESUME, RETRY, RUN_NEXT, STATUS_LABEL, Item, Order,
                               Snapshot, StatusIssue, Work, is_status_issue, orders_in, parse, render)

REPO = "acme/widgets"
ISSUES = "/repos/acme/widgets/issues"


class Clock:
    def __init__(self) -> None:
        self.t = float(int(time.time()))

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t


@pytest.fixture
def clock(github: FakeGitHub) -> Clock:
    c = Clock()
    github.clock = c
    return c


@pytest.fixture
def client(gh_env: Dict[str, str]) -> GitHub:
    return GitHub(REPO, env=gh_env, sleep=lambda s: None)


def make(client: GitHub, tmp_path: Path, every: float = 3600) -> StatusIssue:
    return StatusIssue(client, notify=["alice", "bob"], notify_every=every,
                       state_path=tmp_path / "status-issue.json")


def snap(**kw) -> Snapshot:
    base = dict(health="ok", node="pi", version="0.1.0",
                active=[Work(15, "Parser", 600, 0.5, "round 1")],
                pending=[Item(9, "Docs"), Item(10, "More docs")],
                failed=[Item(12, "Flaky", "tests fail")],
                completed=[Item(5, "Readme", "https://github.localhost/acme/widgets/pull/6")],
                spent_today=1.0, daily_budget=5.0)
    base.update(kw)
    return Snapshot(**base)


def tick(github: FakeGitHub, n: int, box: str, actor: str = "alice", on: bool = True) -> None:
    """`actor` ticks (or unticks) a box in the web page: an edit of the body,
    which comes back with CRLF line ends as the web page sends them."""
    body = github.issue(n)["body"].replace("\r\n", "\n")
    old, new = (f"[ ] {box}", f"[x] {box}") if on else (f"[x] {box}", f"[ ] {box}")
    assert old in body, body
    github.edit_issue(n, body=body.replace(old, new, 1).replace("\n", "\r\n"), actor=actor)


def status_issues(github: FakeGitHub) -> List[dict]:
    return [i for i in (github.issue(n) for n in range(1, 50) if _exists(github, n)) if is_status_issue(i)]


def _exists(github: FakeGitHub, n: int) -> bool:
    try:
        github.issue(n)
        return True
    except Exception:  # deliberate: the fake's 404 for a number never used
        return False


def writes(github: FakeGitHub) -> List[str]:
    return [f"{r.method} {r.path}" for r in github.requests if r.method != "GET" and r.path != "/graphql"]


def comments(github: FakeGitHub, n: int) -> List[str]:
    return [c["body"] for c in github.comments(n)]


# -- finding the issue ----------------------------------------------------------------------

def test_created_once_and_found_again_after_a_restart_also_when_retitled(
        github: FakeGitHub, client: GitHub, tmp_path: Path, clock: Clock) -> None:
    s = make(client, tmp_path)
    assert s.step(clock(), snap()) == []
    [issue] = status_issues(github)
    n = issue["number"]
    assert issue["title"] == "TAC coordinator status" and issue["user"]["login"] == "operator"
    assert issue["body"].startswith(MARKER) and "- [ ] retry gh-12" in issue["body"]
    assert writes(github) == [f"POST {ISSUES}"]
    s.step(clock.advance(30), snap())
    assert writes(github) == [f"POST {ISSUES}"]

    # A restart with the state file goes straight to the issue.
    github.reset_requests()
    make(GitHub(REPO, env=client.env), tmp_path).step(clock.advance(30), snap())
    assert [r.path for r in github.requests] == ["/user", f"{ISSUES}/{n}"]

    # A person retitles it, and the state file is lost: found by label and marker.
    github.edit_issue(n, title="Pi dashboard", actor="alice")
    (tmp_path / "status-issue.json").unlink()
    again = make(GitHub(REPO, env=client.env), tmp_path)
    again.step(clock.advance(30), snap())
    assert again.number == n
    assert len(status_issues(github)) == 1 and writes(github) == []  # requests reset above
    assert github.issue(n)["title"] == "Pi dashboard"  # the person's title stays


def test_an_issue_someone_else_opened_with_the_label_and_marker_is_not_adopted(
        github: FakeGitHub, client: GitHub, tmp_path: Path, clock: Clock) -> None:
    """Its author could edit its body whatever their permission: orders
    come only from the body of an issue the coordinator's account opened."""
    github.set_permission("mallory", "triage")
    fake = github.add_issue("TAC coordinator status", body=render(snap(), 1, clock()),
                            labels=[STATUS_LABEL], author="mallory")
    s = make(client, tmp_path)
    s.step(clock(), snap())
    assert s.number != fake and github.issue(s.number)["user"]["login"] == "operator"

    # Should the list ever hold another author's issue (a GitHub that ignored
    # `creator`), the author is checked here too.
    github.answer_raw(ISSUES, [github.issue(fake)], method="GET")
    other = StatusIssue(GitHub(REPO, env=client.env), state_path=tmp_path / "other.json")
    other.step(clock(), snap())
    assert other.number not in (None, fake)


def test_a_state_file_of_another_repository_is_not_used(
        github: FakeGitHub, client: GitHub, tmp_path: Path, clock: Clock) -> None:
    """[github] repo changed: the number kept for the old repository may
    name any issue here, even a pull request our own account opened. It is
    never edited; the status issue is found or opened afresh."""
    pr = github.create_pull("auto/gh-1", title="ours", author="operator")
    (tmp_path / "status-issue.json").write_text(json.dumps({
        "version": 1, "repo": "acme/old", "number": pr, "rev": 3, "updated": 0, "written_at": "",
        "lines": [], "handled": [], "owed": [], "alerts": {}}))
    before = github.issue(pr)["body"]
    s = make(client, tmp_path)
    s.step(clock(), snap())
    assert s.number not in (None, pr) and github.issue(pr)["body"] == before
    assert json.loads((tmp_path / "status-issue.json").read_text())["repo"] == REPO


def test_the_task_poll_can_tell_the_status_issue_by_its_label(
        github: FakeGitHub, client: GitHub, tmp_path: Path, clock: Clock) -> None:
    s = make(client, tmp_path)
    s.step(clock(), snap())
    issue = github.issue(s.number)
    assert is_status_issue(issue)
    assert not is_status_issue(github.issue(github.add_issue("a task", labels=["rpi-auto"])))
    assert client.labelled_issues("rpi-auto") != [] and all(
        i["number"] != s.number for i in client.labelled_issues("rpi-auto"))


# -- the body: edited only when its content changes -----------------------------------------------

def test_the_body_is_edited_only_when_its_content_changes(
        github: FakeGitHub, client: GitHub, tmp_path: Path, clock: Clock) -> None:
    s = make(client, tmp_path)
    s.step(clock(), snap())
    s.step(clock.advance(30), snap())  # the first read of this client is a full answer
    github.reset_requests()
    # Idle for hours: the "last change" time does not move, a worker's
    # elapsed time moves in 5-minute steps, and each poll is a free 304.
    for i in range(20):
        s.step(clock.advance(600 if i % 5 == 0 else 30), snap(active=[Work(15, "Parser", 600 + 200 * (i % 2), 0.5, "round 1")]))
    assert writes(github) == []
    assert {(r.method, r.status) for r in github.requests} == {("GET", 304)}
    assert github.counted_requests() == 0

    # A change: one edit; then the new body is read once (counted) and 304s again.
    body_before = github.issue(s.number)["body"]
    s.step(clock.advance(30), snap(pending=[Item(10, "More docs")], spent_today=2.0, health="warning",
                                   health_reason="disk nearly full"))
    assert writes(github) == [f"PATCH {ISSUES}/{s.number}"]
    body = github.issue(s.number)["body"]
    assert body != body_before and "🟡 **warning**: disk nearly full" in body
    assert "#9" not in body and "today $2.00 of $5.00 (40%)" in body
    github.reset_requests()
    for _ in range(5):
        s.step(clock.advance(30), snap(pending=[Item(10, "More docs")], spent_today=2.0, health="warning",
                                       health_reason="disk nearly full"))
    assert [r.status for r in github.requests] == [200, 304, 304, 304, 304] and writes(github) == []


def test_a_burst_of_changes_is_one_edit_per_poll(
        github: FakeGitHub, client: GitHub, tmp_path: Path, clock: Clock) -> None:
    s = make(client, tmp_path)
    s.step(clock(), snap())
    github.reset_requests()
    for i in range(6):
        s.step(clock.advance(30), snap(spent_today=float(i + 2), pending=[Item(9 + i, "t%d" % i)],
                                       health="warning", health_reason="reason %d" % i))
        s.notice(clock(), f"event{i}", f"something {i}")  # comments do not count as edits
        assert writes(github).count(f"PATCH {ISSUES}/{s.number}") == i + 1
    assert "t5" in github.issue(s.number)["body"]


# -- orders ---------------------------------------------------------------------------------

def test_ticking_pause_yields_a_pause_order_and_unticking_a_resume(
        github: FakeGitHub, client: GitHub, tmp_path: Path, clock: Clock) -> None:
    github.set_permission("alice", "write")
    s = make(client, tmp_path)
    s.step(clock(), snap())
    tick(github, s.number, "Pause new work")
    [order] = s.step(clock.advance(30), snap())
    assert (order.kind, order.issue, order.asked_by) == (PAUSE, None, "alice")
    at = clock()
    s.done(order, "", at)
    assert s.step(clock.advance(30), snap(paused=True, pause_reason="paused from the status issue by alice")) == []
    body = github.issue(s.number)["body"]
    assert "- [x] Pause new work" in body and "paused=1" in body.splitlines()[0]
    assert f"done: paused new work at {time.strftime('%H:%M', time.localtime(at))} (asked by alice)" in body
    assert s.step(clock.advance(30), snap(paused=True)) == []  # the box stays ticked: no new order

    github.set_permission("bob", "maintain")  # reported as write
    tick(github, s.number, "Pause new work", actor="bob", on=False)
    [order] = s.step(clock.advance(30), snap(paused=True))
    assert (order.kind, order.asked_by) == (RESUME, "bob")
    s.done(order, "", clock())
    s.step(clock.advance(30), snap(paused=False))
    body = github.issue(s.number)["body"]
    assert "- [ ] Pause new work" in body and "done: resumed new work" in body


def test_each_task_order_and_who_asked(github: FakeGitHub, client: GitHub, tmp_path: Path,
                                       clock: Clock) -> None:
    github.set_permission("alice", "write")
    github.set_permission("bob", "admin")
    s = make(client, tmp_path)
    s.step(clock(), snap())
    tick(github, s.number, "cancel gh-15")
    tick(github, s.number, "run gh-10 next", actor="bob")
    tick(github, s.number, "retry gh-12", actor="bob")
    orders = s.step(clock.advance(30), snap())
    assert [(o.kind, o.issue) for o in orders] == [(CANCEL, 15), (RUN_NEXT, 10), (RETRY, 12)]
    assert {o.asked_by for o in orders} == {"alice, bob"}
    for o in orders:
        if o.kind == RUN_NEXT:
            s.done(o, "gh-10 was started meanwhile", clock(), ok=False)
        else:
            s.done(o, "", clock())
    s.step(clock.advance(30), snap(active=[], pending=[Item(9, "Docs")], failed=[]))
    body = github.issue(s.number)["body"]
    assert "[x]" not in body
    assert "done: cancelled gh-15 at" in body and "done: retried gh-12 at" in body
    assert "not done: gh-10 was started meanwhile at" in body


def test_retry_is_one_order_also_when_the_box_stays_ticked_across_a_restart(
        github: FakeGitHub, client: GitHub, tmp_path: Path, clock: Clock) -> None:
    github.set_permission("alice", "write")
    s = make(client, tmp_path)
    s.step(clock(), snap())
    n = s.number
    tick(github, n, "retry gh-12")
    [order] = s.step(clock.advance(30), snap())
    assert (order.kind, order.issue) == (RETRY, 12)
    s.done(order, "", clock())
    # The daemon stops before the rewrite: the box is still ticked on GitHub.
    assert "- [x] retry gh-12" in github.issue(n)["body"]

    # Restarted with its state file: the tick was handled, even though the
    # (new) run of gh-12 has failed again meanwhile.
    again = make(GitHub(REPO, env=client.env), tmp_path)
    assert again.step(clock.advance(30), snap()) == []
    assert again.step(clock.advance(30), snap()) == []
    body = github.issue(n)["body"]
    assert "- [ ] retry gh-12" in body and "done: retried gh-12" in body

    # Restarted having lost the state file, after the retry was carried out
    # but before done(): the snapshot shows the order no longer applies.
    tick(github, n, "retry gh-12")
    third = make(GitHub(REPO, env=client.env), tmp_path)
    [order] = third.step(clock.advance(30), snap())
    (tmp_path / "status-issue.json").unlink()
    fourth = make(GitHub(REPO, env=client.env), tmp_path)
    assert fourth.step(clock.advance(30), snap(failed=[], pending=[Item(12, "Flaky")])) == []
    assert fourth.step(clock.advance(30), snap(failed=[], pending=[Item(12, "Flaky")])) == []
    body = github.issue(n)["body"]
    assert "skipped: retry gh-12" in body and "(gh-12 is not Failed or Blocked)" in body
    assert "done: retried gh-12" in body  # the earlier line, read back from the body


def test_a_ticked_box_in_a_comment_does_nothing(github: FakeGitHub, client: GitHub, tmp_path: Path,
                                                clock: Clock) -> None:
    github.set_permission("alice", "write")
    s = make(client, tmp_path)
    s.step(clock(), snap())
    client.comment(s.number, "- [x] retry gh-12\n- [x] Pause new work\n- [x] cancel gh-15")
    github.reset_requests()
    for _ in range(3):
        assert s.step(clock.advance(30), snap()) == []
    assert not any("/comments" in r.path and r.method == "GET" for r in github.requests)
    assert not any(r.path == "/graphql" for r in github.requests)  # no box: nobody to ask about


def test_orders_from_someone_who_may_not_edit_are_refused(
        github: FakeGitHub, client: GitHub, tmp_path: Path, clock: Clock) -> None:
    """If GitHub ever let a less-privileged account edit the body, its
    ticks, and any other tick since the last rewrite, are refused: every
    editor counts, not only the last one."""
    github.set_permission("alice", "write")
    github.set_permission("mallory", "triage")  # reported as read
    s = make(client, tmp_path)
    s.step(clock(), snap())
    tick(github, s.number, "cancel gh-15", actor="mallory")  # someone who may not edit ...
    tick(github, s.number, "retry gh-12")                    # ... then a writer: the last editor
    assert s.step(clock.advance(30), snap()) == []
    body = github.issue(s.number)["body"]
    assert "[x]" not in body
    assert "refused: cancel gh-15, retry gh-12 at" in body and "edited by mallory, permission read" in body
    assert s.step(clock.advance(30), snap()) == []

    tick(github, s.number, "Pause new work", actor="dependabot[bot]")
    github.set_permission("dependabot[bot]", "write")
    assert s.step(clock.advance(30), snap()) == []
    assert "edited by dependabot[bot], a bot" in github.issue(s.number)["body"]

    tick(github, s.number, "retry gh-12")  # the writer alone, afterwards: obeyed
    [order] = s.step(clock.advance(30), snap())
    assert (order.kind, order.asked_by) == (RETRY, "alice")


def test_who_ticked_is_judged_by_githubs_clock_not_the_pis(
        github: FakeGitHub, client: GitHub, tmp_path: Path, clock: Clock) -> None:
    """The Pi's clock runs 10 minutes fast: the edits since our last rewrite
    are still told apart from older ones (here, a refused one)."""
    github.set_permission("alice", "write")
    s = make(client, tmp_path)
    s.step(clock(), snap())
    tick(github, s.number, "retry gh-12", actor="mallory")
    assert s.step(clock.advance(30) + 600, snap()) == []
    assert "refused: retry gh-12" in github.issue(s.number)["body"]
    tick(github, s.number, "retry gh-12")
    [order] = s.step(clock.advance(30) + 600, snap())
    assert order.asked_by == "alice"


def test_who_ticked_cannot_be_read_the_boxes_stay_and_wait(
        github: FakeGitHub, client: GitHub, tmp_path: Path, clock: Clock) -> None:
    github.set_permission("alice", "write")
    s = make(client, tmp_path)
    s.step(clock(), snap())
    tick(github, s.number, "retry gh-12")
    github.answer_raw("/graphql", {"message": "Server Error"}, status=502)
    assert s.step(clock.advance(30), snap(spent_today=3.0)) == []
    assert "- [x] retry gh-12" in github.issue(s.number)["body"]  # not overwritten
    github.answer_raw("/graphql", None)
    [order] = s.step(clock.advance(30), snap(spent_today=3.0))
    assert order.kind == RETRY


# -- alerts ---------------------------------------------------------------------------------

def test_an_alert_is_posted_once_per_cause_within_notify_every_and_said_over(
        github: FakeGitHub, client: GitHub, tmp_path: Path, clock: Clock) -> None:
    s = make(client, tmp_path, every=3600)
    breaker = {"breaker": "spawning paused: 3 startup errors in a row (claude: command not found)"}
    s.step(clock(), snap(causes=breaker))
    n = s.number
    [alert] = comments(github, n)
    assert alert.startswith("⚠️ **Needs a person**") and "claude: command not found" in alert
    assert "cc @alice @bob" in alert
    for _ in range(10):
        s.step(clock.advance(60), snap(causes=breaker))
    assert len(comments(github, n)) == 1

    s.step(clock.advance(60), snap())
    assert len(comments(github, n)) == 2
    over = comments(github, n)[-1]
    assert over.startswith("✅ **Over**") and "claude: command not found" in over and "@alice" not in over

    s.step(clock.advance(60), snap(causes=breaker))  # again within the hour: held back
    s.step(clock.advance(60), snap())                # and its end is not announced either
    assert len(comments(github, n)) == 2
    s.step(clock.advance(3600), snap(causes=breaker))  # an hour after the alert: a new one
    assert len(comments(github, n)) == 3 and "@alice" in comments(github, n)[-1]
    s.step(clock.advance(3600), snap(causes=breaker))  # still there an hour later: one reminder
    assert len(comments(github, n)) == 4 and comments(github, n)[-1].startswith("⚠️ **Still needs a person**")

    # Causes of the snapshot itself: a Blocked task, a budget 80% spent.
    s.step(clock.advance(60), snap(causes=breaker, blocked=[Item(7, "Decide", "which API? @carol")],
                                   spent_today=4.5))
    new = comments(github, n)[4:]
    assert len(new) == 2
    assert any("gh-7 `Decide` is Blocked: `which API? @carol`" in c for c in new)
    assert any("80% of the budget spent today: $4.50 of $5.00" in c for c in new)


def test_a_restart_after_a_crash_is_said_once_per_notify_every(
        github: FakeGitHub, client: GitHub, tmp_path: Path, clock: Clock) -> None:
    for i in range(3):  # a crash loop: one alert, not three
        s = make(GitHub(REPO, env=client.env), tmp_path)
        s.notice(clock.advance(60), "crash", "the daemon restarted after a crash")
        s.step(clock(), snap())
    assert [c for c in comments(github, s.number) if "crash" in c] != []
    assert len(comments(github, s.number)) == 1


# -- GitHub down ----------------------------------------------------------------------------

def test_github_down_then_edits_and_alerts_are_delivered_once_each(
        github: FakeGitHub, client: GitHub, tmp_path: Path, clock: Clock) -> None:
    s = make(client, tmp_path)
    s.step(clock(), snap())
    n = s.number
    github.set_outage(503)
    s.step(clock.advance(30), snap(spent_today=2.0, causes={"github": "GitHub unreachable since 10:00"}))
    s.step(clock.advance(30), snap(spent_today=2.5, causes={"github": "GitHub unreachable since 10:00",
                                                           "breaker": "breaker open"}))
    s.step(clock.advance(30), snap(spent_today=3.0, causes={"breaker": "breaker open"}))  # github: over
    # The daemon restarts while GitHub is still down: what is owed is in the state file.
    s = make(GitHub(REPO, env=client.env), tmp_path)
    s.step(clock.advance(30), snap(spent_today=3.0, causes={"breaker": "breaker open"}))
    assert all(r.status == 503 for r in github.requests[-3:])
    github.set_outage(None)
    github.reset_requests()
    s.step(clock.advance(30), snap(spent_today=3.0, causes={"breaker": "breaker open"}))
    s.step(clock.advance(30), snap(spent_today=3.0, causes={"breaker": "breaker open"}))
    s.step(clock.advance(30), snap(spent_today=3.0, causes={"breaker": "breaker open"}))
    assert sorted(writes(github)) == sorted([f"PATCH {ISSUES}/{n}"] + [f"POST {ISSUES}/{n}/comments"] * 2)
    assert "today $3.00 of $5.00" in github.issue(n)["body"]
    said = comments(github, n)
    assert len(said) == 2
    assert any(c.startswith("⚠️ **Needed a person** from") and "GitHub unreachable" in c for c in said)
    assert any(c.startswith("⚠️ **Needs a person**") and "breaker open" in c for c in said)


def test_a_failed_edit_or_comment_is_tried_again_at_the_next_poll(
        github: FakeGitHub, client: GitHub, tmp_path: Path, clock: Clock) -> None:
    """Reads work, writes fail (a 500 on each try): each is owed and made once."""
    s = make(client, tmp_path)
    s.step(clock(), snap())
    n = s.number
    s.step(clock.advance(30), snap())
    github.answer_raw(f"{ISSUES}/{n}", {"message": "Server Error"}, status=500, method="PATCH")
    github.answer_raw(f"{ISSUES}/{n}/comments", {"message": "Server Error"}, status=500, method="POST")
    for _ in range(3):
        s.step(clock.advance(30), snap(spent_today=3.5, causes={"breaker": "breaker open"}))
    assert "$3.50" not in github.issue(n)["body"] and comments(github, n) == []
    github.answer_raw(f"{ISSUES}/{n}", None, method="PATCH")
    github.answer_raw(f"{ISSUES}/{n}/comments", None, method="POST")
    for _ in range(3):
        s.step(clock.advance(30), snap(spent_today=3.5, causes={"breaker": "breaker open"}))
    assert "today $3.50 of $5.00" in github.issue(n)["body"]
    assert len(comments(github, n)) == 1 and "breaker open" in comments(github, n)[0]


# -- the format -----------------------------------------------------------------------------

_titles = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40) | st.sampled_from([
    "x\n- [x] retry gh-1", "- [x] Pause new work", "<!-- tac-status v1 rev=9 updated=1 paused=1 -->",
    "`\n- [ ] cancel gh-2`", "@alice ping", "\r\n  * [X] run gh-3 next"])
_items = st.lists(st.builds(Item, st.integers(1, 400), _titles, _titles), max_size=4, unique_by=lambda i: i.issue)
_snapshots = st.builds(
    Snapshot, health=st.sampled_from(["ok", "warning", "degraded", "critical"]), health_reason=_titles,
    paused=st.booleans(), pause_reason=_titles,
    active=st.lists(st.builds(Work, st.integers(401, 500), _titles, st.floats(0, 1e6), st.floats(0, 100), _titles),
                    max_size=3, unique_by=lambda w: w.issue),
    pending=_items, completed=_items, blocked=_items, failed=_items,
    spent_today=st.floats(0, 100), daily_budget=st.floats(0, 100), node=_titles, version=_titles)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_snapshots, st.integers(1, 10 ** 6), st.lists(_titles, max_size=3))
def test_a_rendered_body_holds_no_order_and_each_ticked_box_is_exactly_its_order(
        s: Snapshot, rev: int, lines: List[str]) -> None:
    body = render(s, rev, 1733320000, lines)
    parsed = parse(body)
    assert (parsed.rev, parsed.updated, parsed.paused) == (rev, 1733320000, s.paused)
    assert orders_in(parsed) == []
    boxes = [i for i, line in enumerate(body.split("\n")) if re.match(r"\s*- \[[ x]\] ", line)]
    expected = ({(RETRY, t.issue) for t in list(s.failed) + list(s.blocked)}
                | {(CANCEL, t.issue) for t in list(s.pending) + list(s.active)}
                | {(RUN_NEXT, t.issue) for t in s.pending[1:]} | {(RESUME if s.paused else PAUSE, None)})
    seen = set()
    for i in boxes:
        lines_ = body.split("\n")
        line = lines_[i]
        lines_[i] = line.replace("[ ]", "[x]", 1) if "[ ]" in line else line.replace("[x]", "[ ]", 1)
        [order] = orders_in(parse("\n".join(lines_)))
        seen.add(order)
    assert seen == expected


def test_the_body_says_what_a_person_looks_for_on_a_phone() -> None:
    """The active worker's age, cost and stage, the PR of a completed task,
    the month's spend against its budget, which node and version, and when
    it last changed; every line short enough for a phone."""
    body = render(snap(active=[Work(15, "Parser", 600, 0.5, "build (2 of 3)")], spent_month=12.5,
                       monthly_budget=50.0), 3, 1733320000)
    assert "- #15 `Parser` — 10 min · $0.50+ · build (2 of 3)" in body
    assert "- #5 `Readme` → https://github.localhost/acme/widgets/pull/6" in body
    assert "- today $1.00 of $5.00 (20%)" in body and "- this month $12.50 of $50.00 (25%)" in body
    last = body.rstrip("\n").split("\n")[-1]
    assert last.startswith("<sub>node `pi` · version 0.1.0 · last change ") and last.endswith("</sub>")
    assert max(len(line) for line in body.split("\n")[1:]) <= 80


def test_titles_are_inert_on_the_page() -> None:
    body = render(snap(pending=[Item(9, "Fix <!-- the rest is hidden"), Item(10, "ping @carol and #3 `x`")],
                       health_reason="<b>bold</b> @dave"), 3, 1733320000)
    assert "`Fix <!-- the rest is hidden`" in body
    assert "`ping @carol and #3 'x'`" in body
    assert "&lt;b&gt;bold&lt;/b&gt; @\u200bdave" in body


def test_an_order_names_its_box_and_what_it_did() -> None:
    o = Order(RUN_NEXT, 9, "alice", "3:run_next:9")
    assert o.box == "run gh-9 next" and o.done_text == "moved gh-9 to the front of the queue"


# -- config -----------------------------------------------------------------------------------

def test_config_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[github]\nrepo = "acme/widgets"\n')
    cfg = load_config(path)
    assert (cfg.status_issue, cfg.status_issue_title, cfg.notify, cfg.notify_every) == (
        False, "TAC coordinator status", [], 21600.0)
    path.write_text('[github]\nrepo = "acme/widgets"\nstatus_issue = true\nnotify = ["alice", "@bob"]\n'
                    'notify_every = 60\nstatus_issue_title = "Pi"\n')
    cfg = load_config(path)
    assert (cfg.status_issue, cfg.notify, cfg.notify_every, cfg.status_issue_title) == (True, ["alice", "@bob"], 60.0, "Pi")
    for bad, says in (('status_issue = "yes"', "status_issue must be a boolean"),
                      ('notify = "alice"', "notify must be a list of strings"),
                      ('notify = ["alice bob"]', "not a GitHub login"),
                      ('notify_every = -1', "notify_every must be 0"),
                      ('status_issue_title = " "', "status_issue_title must not be empty")):
        path.write_text(f'[github]\nrepo = "acme/widgets"\n{bad}\n')
        with pytest.raises(ConfigError, match=says):
            load_config(path)


def test_the_state_file_is_written_only_when_it_changes(github: FakeGitHub, client: GitHub,
                                                          tmp_path: Path, clock: Clock) -> None:
    s = make(client, tmp_path)
    s.step(clock(), snap())
    path = tmp_path / "status-issue.json"
    stamp = path.stat().st_mtime_ns
    data = json.loads(path.read_text())
    assert data["number"] == s.number and data["rev"] == 1
    for _ in range(5):
        s.step(clock.advance(30), snap())
    assert path.stat().st_mtime_ns == stamp
    path.write_text("{not json")
    again = make(GitHub(REPO, env=client.env), tmp_path)  # a damaged file: found again by label
    again.step(clock.advance(30), snap())
    assert again.number == s.number and len(status_issues(github)) == 1
    assert json.loads(path.read_text())["number"] == s.number
