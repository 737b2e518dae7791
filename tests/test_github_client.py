"""adws/github.py against the fake GitHub, through the real `gh` binary.

Every failure the daemon must tell apart (a wrong-shaped answer, no login,
a 422 that means "look it up", an outage) is produced by the fake and read
back the way the daemon reads it: GitHubError's status, flags and one line.
"""
from __future__ import annotations

import socket
import time
from typing import Dict, List

import pytest

from adws import github as gh_client
from adws.sandbox.fakegithub import FakeGitHub
from adws.github import DRAFT_UNAVAILABLE, NOT_AUTHENTICATED, GitHub, GitHubError

REPO = "acme/widgets"
ISSUES = "/repos/acme/widgets/issues"


class Sleeps:
    """Records the delays the client asked for; sleeps not at all."""

    def __init__(self) -> None:
        self.calls: List[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(gh_env: Dict[str, str], sleeps: Sleeps) -> GitHub:
    return GitHub(REPO, env=gh_env, sleep=sleeps)


def posts(github: FakeGitHub, path: str) -> int:
    return sum(1 for r in github.requests if r.method == "POST" and r.path == path)


def dead_proxy() -> str:
    """A loopback port nobody listens on."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return "http://127.0.0.1:%d" % port


# -- answers of the wrong shape ------------------------------------------------------

@pytest.mark.parametrize("body, why", [
    ("<html><body>Sign in to the hotel Wi-Fi</body></html>", "not JSON: '<html><body>Sign in"),
    ({"message": "hello"}, "expected a list, got an object"),
    ([{"title": "no number", "labels": [], "updated_at": "2024-01-01T00:00:00Z"}], "item 0 has no number"),
    (["rpi-auto"], "item 0 is a string, not an object"),
    ([{"number": "7", "title": "t", "labels": [], "updated_at": ""}], "item 0 has number '7'"),
])
def test_a_wrong_shaped_issue_list_is_an_error_not_an_empty_queue(
        github: FakeGitHub, client: GitHub, body: object, why: str) -> None:
    github.add_issue("real", labels=["rpi-auto"])
    github.answer_raw(ISSUES, body, content_type="text/html" if isinstance(body, str) else
                      "application/json; charset=utf-8")
    with pytest.raises(GitHubError) as info:
        client.labelled_issues("rpi-auto")
    e = info.value
    assert str(e).startswith("unexpected answer from GitHub for GET /repos/acme/widgets/issues: " + why)
    assert "\n" not in str(e)
    assert e.unexpected and e.unreachable and not e.auth and not e.transient


def test_an_empty_list_is_still_an_empty_queue(github: FakeGitHub, client: GitHub) -> None:
    github.answer_raw(ISSUES, [])
    assert client.labelled_issues("rpi-auto") == []
    github.answer_raw(ISSUES, None)  # the switch goes off again
    n = github.add_issue("real", labels=["rpi-auto"])
    assert [i["number"] for i in client.labelled_issues("rpi-auto")] == [n]


def test_wrong_shapes_of_pulls_events_and_permission(github: FakeGitHub, client: GitHub) -> None:
    n = github.add_issue("t", labels=["rpi-auto"])
    github.answer_raw("/repos/acme/widgets/pulls", {"total_count": 0})
    with pytest.raises(GitHubError, match=r"^unexpected answer from GitHub for GET "
                                          r"/repos/acme/widgets/pulls: expected a list, got an object$"):
        client.pull_heads()
    github.answer_raw("/repos/acme/widgets/pulls", [{"number": 1, "html_url": "u"}])
    with pytest.raises(GitHubError, match=r"pulls: item 0 has no head$"):
        client.pulls_for_head("auto/gh-1")
    github.answer_raw("/repos/acme/widgets/issues/%d/events" % n, [{"id": 1}])
    with pytest.raises(GitHubError, match=r"events: item 0 has no event, created_at$"):
        client.labeller(n, "rpi-auto", "now")
    github.answer_raw("/repos/acme/widgets/collaborators/bob/permission", ["admin"])
    with pytest.raises(GitHubError, match=r"permission: expected an object, got a list$"):
        client.permission("bob")
    github.answer_raw("/repos/acme/widgets/issues/%d/comments" % n, {"body": "no id"}, status=201)
    with pytest.raises(GitHubError, match=r"POST /repos/acme/widgets/issues/%d/comments: no id in the answer$" % n):
        client.comment(n, "hello")


# -- authentication ----------------------------------------------------------------

def test_no_token_is_not_authenticated(github: FakeGitHub, gh_env: Dict[str, str]) -> None:
    env = {k: v for k, v in gh_env.items() if k != "GH_TOKEN"}
    with pytest.raises(GitHubError) as info:
        GitHub(REPO, env=env).labelled_issues("rpi-auto")
    e = info.value
    assert str(e) == NOT_AUTHENTICATED + " (GitHub: Requires authentication)"
    assert e.auth and e.status == 401 and not e.transient


def test_a_refused_token_names_the_variable(github: FakeGitHub, gh_env: Dict[str, str]) -> None:
    github.set_tokens("the-good-one")
    with pytest.raises(GitHubError) as info:
        GitHub(REPO, env=gh_env).labelled_issues("rpi-auto")
    assert str(info.value) == NOT_AUTHENTICATED + ", or fix GH_TOKEN (GitHub: Bad credentials)"
    assert info.value.auth
    assert GitHub(REPO, env=dict(gh_env, GH_TOKEN="the-good-one")).labelled_issues("rpi-auto") == []


def test_gh_never_logged_in_is_one_line(github: FakeGitHub, gh_env: Dict[str, str]) -> None:
    """No GH_HOST, no token, no hosts.yml: gh prints two lines ("To get
    started ... gh auth login" / "Alternatively, populate the GH_TOKEN ...")
    and exits 4 without sending anything."""
    env = {k: v for k, v in gh_env.items() if k not in ("GH_TOKEN", "GH_HOST")}
    with pytest.raises(GitHubError) as info:
        GitHub(REPO, env=env).labelled_issues("rpi-auto")
    assert str(info.value) == "not authenticated: run gh auth login"
    assert info.value.auth
    assert github.requests == []


def test_an_outage_and_a_dead_network_are_not_auth(github: FakeGitHub, client: GitHub,
                                                   gh_env: Dict[str, str]) -> None:
    github.set_outage(503)
    with pytest.raises(GitHubError) as info:
        client.labelled_issues("rpi-auto")
    assert info.value.status == 503 and info.value.unreachable and not info.value.auth
    with pytest.raises(GitHubError) as info:
        GitHub(REPO, env=dict(gh_env, HTTP_PROXY=dead_proxy(), http_proxy="")).labelled_issues("rpi-auto")
    e = info.value
    assert e.status == 0 and e.unreachable and not e.auth and e.transient
    assert "connection refused" in str(e) and "\n" not in str(e)


def test_first_line_of_gh_stderr_is_the_one_kept() -> None:
    # gh's network failure: the hint comes second.
    assert gh_client._first_line("error connecting to api.github.com\n"
                                 "check your internet connection or https://githubstatus.com\n"
                                 ) == "error connecting to api.github.com"
    assert gh_client._first_line("\n\ngh: Not Found (HTTP 404)\n") == "Not Found (HTTP 404)"
    assert gh_client._first_line("") == "no output"


# -- 422: exists, drafts, other ------------------------------------------------------

def test_a_pull_that_exists_is_told_apart_from_other_422s(github: FakeGitHub, client: GitHub) -> None:
    pr = client.create_pull("Fix", "auto/gh-1", "main", "Closes #1", draft=False)
    assert pr["number"] and pr["html_url"].endswith("/pull/%d" % pr["number"])
    with pytest.raises(GitHubError) as info:
        client.create_pull("Fix", "auto/gh-1", "main", "Closes #1", draft=False)
    assert info.value.status == 422 and info.value.already_exists and not info.value.drafts_unsupported
    assert str(info.value) == "HTTP 422: Validation Failed: A pull request already exists for acme:auto/gh-1."
    assert [p["html_url"] for p in client.pulls_for_head("auto/gh-1")] == [pr["html_url"]]

    with pytest.raises(GitHubError) as info:  # a head in another owner's repository
        client.create_pull("Fix", "someone:auto/gh-2", "main", "", draft=False)
    assert info.value.status == 422 and not info.value.already_exists
    with pytest.raises(GitHubError) as info:
        client.add_labels(1, [])
    assert info.value.status == 422 and not info.value.already_exists


def test_a_draft_where_drafts_are_unavailable_becomes_a_pull_that_says_so(
        github: FakeGitHub, client: GitHub, sleeps: Sleeps) -> None:
    github.drafts_supported = False
    pr = client.create_pull("Fix", "auto/gh-1", "main", "Closes #1", draft=True)
    assert posts(github, "/repos/acme/widgets/pulls") == 2
    assert [r.status for r in github.requests] == [422, 201]
    (stored,) = github.pulls()
    assert stored["number"] == pr["number"] and stored["draft"] is False and pr["draft"] is False
    first, rest = stored["body"].split("\n\n", 1)
    assert first == DRAFT_UNAVAILABLE and "needs review before merging" in first.lower()
    assert rest == "Closes #1"
    assert sleeps.calls == []


def test_drafts_where_they_work_and_plain_pulls_take_one_post(github: FakeGitHub, client: GitHub) -> None:
    assert client.create_pull("Fix", "auto/gh-1", "main", "b", draft=True)["draft"] is True
    github.drafts_supported = False
    assert client.create_pull("Fix", "auto/gh-2", "main", "b", draft=False)["body"] == "b"
    assert posts(github, "/repos/acme/widgets/pulls") == 2  # one each


def test_the_draft_fallback_happens_once(github: FakeGitHub, client: GitHub) -> None:
    """If the normal PR is refused too (it exists), that answer is final."""
    github.drafts_supported = False
    client.create_pull("Fix", "auto/gh-1", "main", "b", draft=False)
    with pytest.raises(GitHubError) as info:
        client.create_pull("Fix", "auto/gh-1", "main", "b", draft=True)
    assert info.value.already_exists
    assert posts(github, "/repos/acme/widgets/pulls") == 3


# -- fork pull requests ---------------------------------------------------------------

def test_a_forks_branch_of_the_same_name_is_not_the_tasks(github: FakeGitHub, client: GitHub,
                                                          gh_env: Dict[str, str]) -> None:
    fork = github.create_pull("auto/gh-5", title="from a fork", fork="someone")
    assert client.pull_heads() == {}
    assert client.pulls_for_head("auto/gh-5") == []
    ours = github.create_pull("auto/gh-5", title="ours")
    heads = client.pull_heads()
    assert heads == {"auto/gh-5": "https://github.localhost/acme/widgets/pull/%d" % ours}
    assert [p["number"] for p in client.pulls_for_head("auto/gh-5")] == [ours]
    assert fork != ours


def test_pulls_for_head_checks_the_owner_itself(github: FakeGitHub, client: GitHub) -> None:
    """Should GitHub (or a proxy) ignore the head filter, a fork's PR of the
    same branch still does not count."""
    github.create_pull("auto/gh-5", fork="someone")
    github.create_pull("auto/gh-6")
    everything = client.recent_pulls()
    assert len(everything) == 2
    github.answer_raw("/repos/acme/widgets/pulls", everything)  # the filter ignored
    assert client.pulls_for_head("auto/gh-5") == []
    assert [p["head"]["ref"] for p in client.pulls_for_head("auto/gh-6")] == ["auto/gh-6"]


# -- ETags and the rate limit -------------------------------------------------------------

def test_an_unchanged_list_costs_no_counted_request(github: FakeGitHub, client: GitHub) -> None:
    n = github.add_issue("t", labels=["rpi-auto"])
    first = client.labelled_issues("rpi-auto")
    counted, fake_counted = client.counted, github.counted_requests()
    assert counted == 1 and client.not_modified == 0

    again = client.labelled_issues("rpi-auto")
    assert again == first  # from the cache
    assert client.counted == counted and github.counted_requests() == fake_counted
    assert client.not_modified == 1 and github.requests[-1].status == 304

    github.edit_issue(n, title="changed")
    assert client.labelled_issues("rpi-auto")[0]["title"] == "changed"
    assert client.counted == counted + 1


def test_each_page_keeps_its_own_etag(github: FakeGitHub, client: GitHub) -> None:
    for i in range(130):
        github.add_issue("issue %d" % i, labels=["rpi-auto"])
    assert len(client.labelled_issues("rpi-auto")) == 130
    assert client.counted == 2
    github.reset_requests()
    assert len(client.labelled_issues("rpi-auto")) == 130
    assert [r.status for r in github.requests] == [304, 304] and client.counted == 2


def test_rate_limit_headers_are_read(github: FakeGitHub, client: GitHub) -> None:
    github.set_rate_limit(42, reset_epoch=4102444800)
    client.labelled_issues("rpi-auto")
    assert (client.rate_remaining, client.rate_reset) == (41, 4102444800)


def test_an_exhausted_rate_limit_says_until_when(github: FakeGitHub, client: GitHub) -> None:
    reset = int(time.time()) + 1800
    github.set_rate_limit(0, reset_epoch=reset)
    with pytest.raises(GitHubError) as info:
        client.labelled_issues("rpi-auto")
    e = info.value
    assert str(e) == "HTTP 403: rate limit exhausted until " + time.strftime("%H:%M", time.localtime(reset))
    assert e.status == 403 and e.unreachable and not e.transient and not e.auth
    assert client.rate_remaining == 0 and client.rate_reset == reset


def test_a_403_with_budget_left_is_not_called_exhausted(github: FakeGitHub, client: GitHub) -> None:
    github.fail_next(1, 403)
    with pytest.raises(GitHubError) as info:
        client.labelled_issues("rpi-auto")
    assert "rate limit" not in str(info.value) and info.value.status == 403


# -- retried writes ----------------------------------------------------------------------

def test_a_write_is_retried_after_a_5xx_with_backoff(github: FakeGitHub, client: GitHub,
                                                     sleeps: Sleeps) -> None:
    n = github.add_issue("t")
    github.fail_next(2, 502)
    cid = client.comment(n, "hello")
    assert [c["id"] for c in github.comments(n)] == [cid]
    assert posts(github, "/repos/acme/widgets/issues/%d/comments" % n) == 3
    assert sleeps.calls == list(GitHub.WRITE_RETRY_DELAYS) == [1.0, 4.0]


def test_retries_are_bounded(github: FakeGitHub, client: GitHub, sleeps: Sleeps) -> None:
    n = github.add_issue("t")
    github.fail_next(5, 503)
    with pytest.raises(GitHubError) as info:
        client.add_labels(n, ["rpi-auto:done"])
    assert info.value.status == 503
    assert posts(github, "/repos/acme/widgets/issues/%d/labels" % n) == 3
    assert sleeps.calls == [1.0, 4.0]
    assert github.issue_labels(n) == []


@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_a_4xx_is_never_retried(github: FakeGitHub, client: GitHub, sleeps: Sleeps, status: int) -> None:
    n = github.add_issue("t")
    github.fail_next(1, status)
    with pytest.raises(GitHubError) as info:
        client.edit_comment(12345, "x")
    assert info.value.status == status
    assert len(github.requests) == 1 and sleeps.calls == []
    assert n


def test_every_write_retries(github: FakeGitHub, client: GitHub, sleeps: Sleeps) -> None:
    n = github.add_issue("t", labels=["rpi-auto"])
    cid = client.comment(n, "one")
    for call in (lambda: client.edit_comment(cid, "two"),
                 lambda: client.add_labels(n, ["rpi-auto:running"]),
                 lambda: client.remove_label(n, "rpi-auto"),
                 lambda: client.create_pull("Fix", "auto/gh-1", "main", "b", draft=False)):
        github.fail_next(1, 500)
        call()
    assert sleeps.calls == [1.0] * 4
    assert github.comments(n)[0]["body"].startswith("two")
    assert github.issue_labels(n) == ["rpi-auto:running"] and len(github.pulls()) == 1


def test_a_write_is_retried_after_a_failed_connection(gh_env: Dict[str, str], sleeps: Sleeps) -> None:
    client = GitHub(REPO, env=dict(gh_env, HTTP_PROXY=dead_proxy(), http_proxy=""), sleep=sleeps)
    with pytest.raises(GitHubError) as info:
        client.comment(1, "hello")
    assert info.value.status == 0 and sleeps.calls == [1.0, 4.0]


def test_reads_are_not_retried(github: FakeGitHub, client: GitHub, sleeps: Sleeps) -> None:
    """A failed poll is the poll's backoff's business, not a retry here."""
    github.fail_next(1, 502)
    with pytest.raises(GitHubError):
        client.labelled_issues("rpi-auto")
    assert len(github.requests) == 1 and sleeps.calls == []


# -- who applied the label: the repository-wide events feed -------------------------------

def feed_reads(github: FakeGitHub) -> List[str]:
    """The page numbers of the feed requests, and "issue" for each per-issue events call."""
    out = []
    for r in github.requests:
        if r.path.endswith("/issues/events"):  # later pages are under /repositories/ID/
            out.append(r.query.get("page", "1") + ("" if r.status == 200 else "/%d" % r.status))
        elif r.path.endswith("/events"):
            out.append("issue")
    return out


def test_labellers_of_many_issues_from_one_feed_request(github: FakeGitHub, client: GitHub) -> None:
    for who in ("alice", "maint", "bob"):
        github.set_permission(who, "write")
    numbers = [github.add_issue("issue %d" % i, labels=["rpi-auto"], labeller=("alice", "maint", "bob")[i % 3])
               for i in range(30)]
    github.create_pull("auto/gh-1")  # a pull request's events are in the feed too
    listing = client.labelled_issues("rpi-auto")
    github.reset_requests()

    found = client.labellers("rpi-auto", listing)
    assert sorted(found) == numbers
    assert [found[n][0] for n in numbers] == [("alice", "maint", "bob")[i % 3] for i in range(30)]
    assert all(kind == "User" and at.endswith("Z") for _, kind, at in found.values())
    assert feed_reads(github) == ["1"]

    # labeller() is now answered from what the feed said: no per-issue call.
    for issue in listing:
        assert client.labeller(issue["number"], "rpi-auto", issue["updated_at"]) == found[issue["number"]]
    assert feed_reads(github) == ["1"]
    assert client.labellers("rpi-auto", listing) == found
    assert len(github.requests) == 1  # all cached: nothing asked


def test_the_latest_application_counts(github: FakeGitHub, client: GitHub) -> None:
    n = github.add_issue("t", labels=["rpi-auto"], labeller="stranger")
    github.unlabel_issue(n, "rpi-auto", actor="maint")
    github.label_issue(n, "rpi-auto", actor="maint")
    github.label_issue(n, "bug", actor="stranger")
    (issue,) = client.labelled_issues("rpi-auto")
    # Label names are case-insensitive on GitHub: the config may spell it otherwise.
    assert client.labellers("RPI-Auto", [issue])[n][0] == "maint"
    assert client.labeller(n, "RPI-Auto", issue["updated_at"] + "x")[0] == "maint"  # the per-issue way agrees


def test_an_unchanged_feed_costs_a_304_and_a_new_event_one_page(github: FakeGitHub, client: GitHub) -> None:
    github.set_permission("maint", "write")
    for i in range(150):
        github.add_issue("old %d" % i, labels=["rpi-auto"])
    first = github.add_issue("first", labels=["rpi-auto"], labeller="alice")
    assert client.labellers("rpi-auto", [github.issue(first)])[first][0] == "alice"
    github.reset_requests()

    # Asked again for an issue whose state moved: the feed has nothing new.
    counted = client.counted
    assert client.labellers("rpi-auto", [dict(github.issue(first), updated_at="later")])[first][0] == "alice"
    assert feed_reads(github) == ["1/304"] and client.counted == counted

    # A relabel: one page read, up to the events seen before; then merged.
    github.unlabel_issue(first, "rpi-auto", actor="maint")
    github.label_issue(first, "rpi-auto", actor="maint")
    second = github.add_issue("second", labels=["rpi-auto"], labeller="maint")
    github.reset_requests()
    found = client.labellers("rpi-auto", [github.issue(first), github.issue(second)])
    assert (found[first][0], found[second][0]) == ("maint", "maint")
    assert feed_reads(github) == ["1"]
    # What the first read saw is kept: the newest of the old issues needs no request.
    newest_old = first - 1
    assert client.labellers("rpi-auto", [github.issue(newest_old)])[newest_old][0] == "alice"
    assert feed_reads(github) == ["1", "1/304"]


def test_a_new_read_stops_at_the_events_read_before(github: FakeGitHub, client: GitHub) -> None:
    for i in range(250):
        github.add_issue("issue %d" % i, labels=["rpi-auto"])
    client.labellers("rpi-auto", [github.issue(250)])
    quiet = github.add_issue("no label event")  # an issue the feed cannot answer for
    github.label_issue(quiet, "bug", actor="alice")  # a new event: page 1 changes
    github.reset_requests()
    assert client.labellers("rpi-auto", [github.issue(quiet)]) == {}
    assert feed_reads(github) == ["1"]  # not pages 2 and 3: they were read before


def test_reading_stops_once_every_issue_is_found(github: FakeGitHub, client: GitHub) -> None:
    for i in range(250):
        github.add_issue("issue %d" % i, labels=["rpi-auto"])
    listing = client.labelled_issues("rpi-auto")  # newest first
    github.reset_requests()
    assert sorted(client.labellers("rpi-auto", listing[:5])) == sorted(i["number"] for i in listing[:5])
    assert feed_reads(github) == ["1"]
    github.reset_requests()
    # Nothing new (a 304): what page 1 said (100 issues); the rest is left to labeller().
    assert len(client.labellers("rpi-auto", listing)) == 100
    assert feed_reads(github) == ["1/304"]
    fresh = GitHub(REPO, env=client.env)
    assert len(fresh.labellers("rpi-auto", listing)) == 250
    assert feed_reads(github)[1:] == ["1", "2", "3"]


def test_reading_stops_before_the_oldest_issue_was_opened(github: FakeGitHub, client: GitHub) -> None:
    now = [1_700_000_000.0]
    github.clock = lambda: now[0]
    for i in range(150):
        github.add_issue("old %d" % i, labels=["rpi-auto"])
    now[0] += 3600
    quiet = github.add_issue("labelled long ago, events not in the feed")
    github.label_issue(quiet, "rpi-auto", actor="alice")
    github._events[quiet].clear()  # as if the feed no longer reached that far
    now[0] += 60
    fresh = github.add_issue("fresh", labels=["rpi-auto"], labeller="alice")
    github.reset_requests()
    found = client.labellers("rpi-auto", [github.issue(quiet), github.issue(fresh)])
    assert list(found) == [fresh]
    assert feed_reads(github) == ["1"]  # page 2 holds only events older than `quiet` itself
    assert client.labeller(quiet, "rpi-auto", github.issue(quiet)["updated_at"]) is None
    assert feed_reads(github) == ["1", "issue"]  # the fallback


def test_reading_is_bounded(github: FakeGitHub, client: GitHub) -> None:
    wanted = github.add_issue("labelled first", labels=["rpi-auto"])
    for i in range(320):
        github.add_issue("later %d" % i, labels=["other"])
    client.FEED_MAX_PAGES = 2
    github.reset_requests()
    assert client.labellers("rpi-auto", [github.issue(wanted)]) == {}
    assert feed_reads(github) == ["1", "2"]


def test_a_wrong_shaped_feed_is_an_error(github: FakeGitHub, client: GitHub) -> None:
    n = github.add_issue("t", labels=["rpi-auto"])
    github.answer_raw("/repos/acme/widgets/issues/events", [{"event": "labeled", "created_at": "x"}])
    with pytest.raises(GitHubError, match=r"issues/events: item 0 has no issue$") as info:
        client.labellers("rpi-auto", [github.issue(n)])
    assert info.value.unexpected


def test_a_missing_gh_is_said_once_and_not_retried(sleeps: Sleeps) -> None:
    client = GitHub(REPO, gh="no-such-gh", sleep=sleeps)
    with pytest.raises(GitHubError) as info:
        client.comment(1, "hello")
    assert str(info.value) == "no-such-gh: command not found (install gh: apt-get install gh)"
    assert info.value.status == 0 and info.value.unreachable and not info.value.transient
    assert sleeps.calls == []


# -- the status issue's calls ----------------------------------------------------------------

def test_one_issue_read_with_its_etag_costs_a_304_until_it_changes(github: FakeGitHub, client: GitHub) -> None:
    n = github.add_issue("status", body="one", author="operator")
    assert client.issue_conditional(n)["body"] == "one"
    github.reset_requests()
    assert client.issue_conditional(n)["body"] == "one"  # from the cache
    assert [r.status for r in github.requests] == [304] and github.counted_requests() == 0
    github.edit_issue(n, body="two", actor="alice")
    assert client.issue_conditional(n)["body"] == "two"
    client.comment(n, "a comment changes the issue too (its count, updated_at)")
    github.reset_requests()
    client.issue_conditional(n)
    assert [r.status for r in github.requests] == [200]


def test_issues_by_label_and_creator_in_any_state(github: FakeGitHub, client: GitHub) -> None:
    mine = github.add_issue("dash", labels=["tac:status"], author="operator")
    github.add_issue("not mine", labels=["tac:status"], author="mallory")
    github.add_issue("no label", author="operator")
    closed = github.add_issue("old dash", labels=["tac:status"], author="operator")
    github.close_issue(closed)
    assert client.login() == "operator"
    assert sorted(i["number"] for i in client.issues_by("tac:status", client.login())) == [mine, closed]
    github.reset_requests()
    client.issues_by("tac:status", client.login())
    assert [(r.path, r.status) for r in github.requests] == [(ISSUES, 304)]  # login asked once


def test_creating_an_issue_is_tried_once_and_editing_its_body_again(
        github: FakeGitHub, client: GitHub, sleeps: Sleeps) -> None:
    github.fail_next(1, 502)
    with pytest.raises(GitHubError) as info:
        client.create_issue("dash", "body", ["tac:status"])
    assert info.value.status == 502 and posts(github, ISSUES) == 1 and sleeps.calls == []
    issue = client.create_issue("dash", "body", ["tac:status"])
    assert [x["name"] for x in issue["labels"]] == ["tac:status"] and issue["user"]["login"] == "operator"
    github.fail_next(1, 502)
    assert client.edit_issue_body(issue["number"], "new body")["body"] == "new body"
    assert sleeps.calls == [1.0]
    assert github.issue(issue["number"])["body"] == "new body"


def test_body_edits_name_each_editor_from_graphql(github: FakeGitHub, client: GitHub) -> None:
    n = github.add_issue("dash", body="v1", author="operator")
    assert client.body_edits(n) == {"edits": [], "total": 0, "complete": True, "editor": None,
                                    "last_edited_at": ""}
    github.edit_issue(n, body="v2", actor="alice")
    client.edit_issue_body(n, "v3")
    github.edit_issue(n, body="v4", actor="renovate[bot]")
    got = client.body_edits(n)
    assert [(login, kind) for _, login, kind in got["edits"]] == [
        ("operator", "User"), ("alice", "User"), ("operator", "User"), ("renovate[bot]", "Bot")]
    assert [when for when, _, _ in got["edits"]] == [t for _, t in github.body_edits(n)]
    assert got["editor"] == ("renovate[bot]", "Bot") and got["complete"] and got["total"] == 4
    assert [r.path for r in github.requests][-1] == "/graphql"

    for i in range(30):  # a long history: both ends are read, the middle is not
        github.edit_issue(n, body="v%d" % (i + 5), actor="alice")
    got = client.body_edits(n, window=5)
    assert len(got["edits"]) <= 10 and not got["complete"] and got["total"] == 34
    assert got["edits"][-1][0] == github.body_edits(n)[-1][1]

    with pytest.raises(GitHubError) as info:
        client.body_edits(999)
    assert info.value.status == 404 and "Could not resolve to an Issue" in str(info.value)
    github.answer_raw("/graphql", {"data": {"repository": {"issue": {"lastEditedAt": None}}}})
    with pytest.raises(GitHubError, match=r"POST /graphql: no head edits in the answer$") as info:
        client.body_edits(n)
    assert info.value.unexpected
