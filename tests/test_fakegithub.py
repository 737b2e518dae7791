"""The fake GitHub, driven through the real `gh api` binary.

What gh prints and returns here is what the coordinator will see, so these
tests assert on gh's stdout, stderr and exit status, not on the fake's insides
(except the request log, which is part of the fake's contract).
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from adws.sandbox.fakegithub import FakeGitHub

REPO = "repos/acme/widgets"


def gh(env: Dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["gh", "api", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def gh_json(env: Dict[str, str], *args: str) -> Any:
    proc = gh(env, *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def included(stdout: str) -> Tuple[int, Dict[str, str], str]:
    """Split `gh api -i` output into (status, lower-cased headers, body)."""
    head, _, body = stdout.replace("\r\n", "\n").partition("\n\n")
    lines = head.split("\n")
    status = int(lines[0].split()[1])  # "HTTP/1.1 304 Not Modified"
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers, body


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


# -- reading --------------------------------------------------------------------

def test_user_and_repo(github: FakeGitHub, gh_env: Dict[str, str]) -> None:
    assert gh_json(gh_env, "user")["login"] == "operator"
    repo = gh_json(gh_env, REPO)
    assert repo["full_name"] == "acme/widgets"
    assert repo["default_branch"] == "main"
    assert repo["permissions"]["admin"] and repo["permissions"]["push"]


def test_issue_list_filters_by_every_label_and_includes_pulls(
        github: FakeGitHub, gh_env: Dict[str, str]) -> None:
    both = github.add_issue("both", "body", labels=["tac", "bug"])
    github.add_issue("tac only", labels=["tac"])
    github.add_issue("none")
    pull = github.create_pull("auto/gh-9", title="a PR")
    closed = github.add_issue("closed", labels=["tac", "bug"])
    github.close_issue(closed)

    items = gh_json(gh_env, REPO + "/issues?labels=tac,bug")
    assert [i["number"] for i in items] == [both]
    issue = items[0]
    assert issue["title"] == "both" and issue["body"] == "body" and issue["state"] == "open"
    assert [x["name"] for x in issue["labels"]] == ["tac", "bug"]
    assert issue["labels"][0]["color"] and issue["labels"][0]["id"]
    assert issue["user"] == dict(issue["user"], login="alice", type="User")
    assert issue["html_url"] == "https://github.localhost/acme/widgets/issues/%d" % both
    assert issue["created_at"].endswith("Z") and "pull_request" not in issue

    everything = gh_json(gh_env, REPO + "/issues?state=all")
    assert [i["number"] for i in everything] == [closed, pull, 3, 2, both]  # newest first
    (pr,) = [i for i in everything if "pull_request" in i]
    assert pr["number"] == pull and pr["pull_request"]["html_url"].endswith("/pull/%d" % pull)
    assert [i["number"] for i in gh_json(gh_env, REPO + "/issues?state=closed")] == [closed]
    assert closed not in [i["number"] for i in gh_json(gh_env, REPO + "/issues")]


def test_paginate_follows_link_header(github: FakeGitHub, gh_env: Dict[str, str]) -> None:
    for n in range(7):
        github.add_issue("issue %d" % n, labels=["tac"])
    status, headers, body = included(gh(gh_env, "-i", REPO + "/issues?labels=tac&per_page=3").stdout)
    assert status == 200 and len(json.loads(body)) == 3
    assert 'page=2>; rel="next"' in headers["link"] and 'page=3>; rel="last"' in headers["link"]
    assert headers["link"].startswith("<http://api.github.localhost/")

    github.reset_requests()
    proc = gh(gh_env, "--paginate", REPO + "/issues?labels=tac&per_page=3", "--jq", ".[].number")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["7", "6", "5", "4", "3", "2", "1"]
    pages = [r.query.get("page", "1") for r in github.requests]
    assert pages == ["1", "2", "3"]
    assert all(r.query["labels"] == "tac" for r in github.requests)


def test_etag_gives_uncounted_304_through_gh(github: FakeGitHub, gh_env: Dict[str, str]) -> None:
    n = github.add_issue("cached", labels=["tac"])
    status, headers, _ = included(gh(gh_env, "-i", REPO + "/issues?labels=tac").stdout)
    etag = headers["etag"]
    assert status == 200 and etag.startswith('"')
    remaining = int(headers["x-ratelimit-remaining"])
    counted = github.counted_requests()

    proc = gh(gh_env, "-i", "-H", "If-None-Match: " + etag, REPO + "/issues?labels=tac")
    assert proc.returncode == 1
    assert proc.stdout.startswith("HTTP/1.1 304")
    assert "HTTP 304" in proc.stderr
    status, headers, body = included(proc.stdout)
    assert status == 304 and body == ""
    assert int(headers["x-ratelimit-remaining"]) == remaining
    assert github.counted_requests() == counted
    assert github.requests[-1].status == 304 and not github.requests[-1].counted

    github.edit_issue(n, body="changed")  # a change means a new ETag
    proc = gh(gh_env, "-i", "-H", "If-None-Match: " + etag, REPO + "/issues?labels=tac")
    assert proc.returncode == 0 and included(proc.stdout)[0] == 200


def test_edit_moves_updated_at_within_one_second(github: FakeGitHub,
                                                  gh_env: Dict[str, str]) -> None:
    n = github.add_issue("t", labels=["tac"])
    before = gh_json(gh_env, REPO + "/issues/%d" % n)
    assert before["updated_at"] == before["created_at"]
    github.edit_issue(n, title="t2", body="new")
    after = gh_json(gh_env, REPO + "/issues/%d" % n)
    assert after["title"] == "t2" and after["body"] == "new"
    assert after["updated_at"] > before["updated_at"]


# -- writing --------------------------------------------------------------------

def test_comment_create_get_and_patch(github: FakeGitHub, gh_env: Dict[str, str]) -> None:
    n = github.add_issue("t")
    proc = gh(gh_env, "-i", "-X", "POST", REPO + "/issues/%d/comments" % n, "-f", "body=working on it")
    status, headers, body = included(proc.stdout)
    comment = json.loads(body)
    assert status == 201 and proc.returncode == 0
    assert headers["location"] == comment["url"]
    assert comment["body"] == "working on it" and comment["user"]["login"] == "operator"

    cid = comment["id"]
    patched = gh_json(gh_env, "-X", "PATCH", REPO + "/issues/comments/%d" % cid, "-f", "body=done")
    assert patched["id"] == cid and patched["body"] == "done"
    assert patched["updated_at"] > patched["created_at"]
    assert gh_json(gh_env, REPO + "/issues/comments/%d" % cid)["body"] == "done"
    listed = gh_json(gh_env, REPO + "/issues/%d/comments" % n)
    assert [c["body"] for c in listed] == ["done"]
    assert gh_json(gh_env, REPO + "/issues/%d" % n)["comments"] == 1
    (mine,) = github.comments(n)
    assert mine["id"] == cid and mine["user"]["login"] == "operator"
    assert gh(gh_env, REPO + "/issues/comments/999999").returncode == 1


def test_labels_add_remove_and_events_name_the_labeller(
        github: FakeGitHub, gh_env: Dict[str, str]) -> None:
    github.set_permission("maint", "maintain")
    n = github.add_issue("t", labels=["tac"], author="stranger", labeller="maint")
    added = gh_json(gh_env, "-X", "POST", REPO + "/issues/%d/labels" % n,
                    "-f", "labels[]=tac:running", "-f", "labels[]=needs work")
    assert [x["name"] for x in added] == ["tac", "tac:running", "needs work"]
    assert github.issue_labels(n) == ["tac", "tac:running", "needs work"]

    remaining = gh_json(gh_env, "-X", "DELETE", REPO + "/issues/%d/labels/needs%%20work" % n)
    assert [x["name"] for x in remaining] == ["tac", "tac:running"]
    again = gh(gh_env, "-X", "DELETE", REPO + "/issues/%d/labels/needs%%20work" % n)
    assert again.returncode == 1 and "HTTP 404" in again.stderr
    assert json.loads(again.stdout)["message"] == "Label does not exist"

    github.unlabel_issue(n, "tac", actor="maint")
    events = gh_json(gh_env, REPO + "/issues/%d/events" % n)
    assert [(e["event"], e["label"]["name"], e["actor"]["login"]) for e in events] == [
        ("labeled", "tac", "maint"), ("labeled", "tac:running", "operator"),
        ("labeled", "needs work", "operator"), ("unlabeled", "needs work", "operator"),
        ("unlabeled", "tac", "maint")]
    assert events[0]["actor"]["type"] == "User" and events[0]["created_at"].endswith("Z")
    assert gh_json(gh_env, REPO + "/issues/%d" % n)["author_association"] == "NONE"


def test_create_issue(github: FakeGitHub, gh_env: Dict[str, str]) -> None:
    out = gh_json(gh_env, "-X", "POST", REPO + "/issues", "-f", "title=New", "-f", "labels[]=tac")
    assert out["number"] == 1 and out["user"]["login"] == "operator" and out["body"] is None
    assert github.issue_labels(1) == ["tac"]


def test_patch_issue_closes_and_replaces_labels(github: FakeGitHub,
                                                gh_env: Dict[str, str]) -> None:
    n = github.add_issue("t", labels=["tac", "old"])
    out = gh_json(gh_env, "-X", "PATCH", REPO + "/issues/%d" % n, "-f", "state=closed",
                  "-f", "labels[]=tac", "-f", "labels[]=tac:done")
    assert out["state"] == "closed" and out["closed_at"] and out["state_reason"] == "completed"
    assert github.issue_labels(n) == ["tac", "tac:done"]
    assert github.issue(n)["state"] == "closed"


def test_repo_labels(github: FakeGitHub, gh_env: Dict[str, str]) -> None:
    missing = gh(gh_env, REPO + "/labels/tac:done")
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr
    assert json.loads(missing.stdout)["message"] == "Not Found"
    status, _, body = included(gh(gh_env, "-i", "-X", "POST", REPO + "/labels", "-f", "name=tac:done",
                                  "-f", "color=0e8a16").stdout)
    assert status == 201 and json.loads(body)["color"] == "0e8a16"
    assert gh_json(gh_env, REPO + "/labels/TAC:DONE")["name"] == "tac:done"  # case-insensitive
    github.add_label("tac")
    assert [x["name"] for x in gh_json(gh_env, REPO + "/labels")] == ["tac:done", "tac"]
    dup = gh(gh_env, "-X", "POST", REPO + "/labels", "-f", "name=tac")
    assert dup.returncode == 1 and json.loads(dup.stdout)["errors"][0]["code"] == "already_exists"


@pytest.mark.parametrize("role, permission", [
    ("admin", "admin"), ("maintain", "write"), ("write", "write"),
    ("triage", "read"), ("read", "read"), ("none", "none")])
def test_permission_endpoint(github: FakeGitHub, gh_env: Dict[str, str],
                             role: str, permission: str) -> None:
    github.set_permission("bob", role)
    out = gh_json(gh_env, REPO + "/collaborators/bob/permission")
    assert (out["permission"], out["role_name"], out["user"]["login"]) == (permission, role, "bob")


def test_permission_of_a_stranger_and_the_operator(github: FakeGitHub,
                                                  gh_env: Dict[str, str]) -> None:
    # A non-collaborator on a public repository reads as "read", like GitHub.
    assert gh_json(gh_env, REPO + "/collaborators/nobody/permission")["permission"] == "read"
    assert gh_json(gh_env, REPO + "/collaborators/operator/permission")["permission"] == "admin"


# -- pull requests ----------------------------------------------------------------

def test_pulls_head_filter_needs_the_owner_prefix(github: FakeGitHub,
                                                  gh_env: Dict[str, str]) -> None:
    one = github.create_pull("auto/gh-1", title="one")
    github.create_pull("auto/gh-2", title="two", draft=True)
    merged = github.create_pull("auto/gh-3", state="merged")

    (pr,) = gh_json(gh_env, REPO + "/pulls?head=acme:auto/gh-1")
    assert pr["number"] == one and pr["state"] == "open" and pr["draft"] is False
    assert pr["head"]["ref"] == "auto/gh-1" and pr["head"]["label"] == "acme:auto/gh-1"
    assert pr["base"]["ref"] == "main" and pr["merged_at"] is None
    assert pr["html_url"] == "https://github.localhost/acme/widgets/pull/%d" % one
    # Without OWNER: GitHub ignores the filter and lists every open PR.
    assert len(gh_json(gh_env, REPO + "/pulls?head=auto/gh-1")) == 2
    assert gh_json(gh_env, REPO + "/pulls?head=someone:auto/gh-1") == []
    (closed,) = gh_json(gh_env, REPO + "/pulls?state=closed&head=acme:auto/gh-3")
    assert closed["number"] == merged and closed["merged_at"]
    assert len(gh_json(gh_env, REPO + "/pulls?state=all")) == 3
    assert gh_json(gh_env, REPO + "/pulls/%d" % merged)["merged"] is True


def test_create_pull_then_duplicate_is_422(github: FakeGitHub, gh_env: Dict[str, str]) -> None:
    issue = github.add_issue("the issue")
    args = ["-X", "POST", REPO + "/pulls", "-f", "title=Fix #1", "-f", "head=auto/gh-1",
            "-f", "base=main", "-f", "body=Closes #1", "-F", "draft=false"]
    status, headers, body = included(gh(gh_env, "-i", *args).stdout)
    pr = json.loads(body)
    assert status == 201 and pr["number"] == issue + 1  # numbers shared with issues
    assert pr["head"]["label"] == "acme:auto/gh-1" and pr["body"] == "Closes #1"
    assert headers["location"] == pr["url"]
    listed = gh_json(gh_env, REPO + "/issues")
    assert [("pull_request" in i) for i in listed] == [True, False]
    assert github.pulls()[0]["user"]["login"] == "operator"

    dup = gh(gh_env, *args)
    assert dup.returncode == 1 and "HTTP 422" in dup.stderr
    err = json.loads(dup.stdout)
    assert err["message"] == "Validation Failed"
    assert err["errors"] == [{"resource": "PullRequest", "code": "custom",
                              "message": "A pull request already exists for acme:auto/gh-1."}]


def test_create_pull_checks_the_branch_in_origin(github: FakeGitHub, gh_env: Dict[str, str],
                                                 git_origin: Path, clone: Path) -> None:
    github.origin_path = str(git_origin)
    args = ["-X", "POST", REPO + "/pulls", "-f", "title=t", "-f", "head=acme:auto/gh-1",
            "-f", "base=main"]
    missing = gh(gh_env, *args)
    assert missing.returncode == 1
    assert json.loads(missing.stdout)["errors"] == [
        {"resource": "PullRequest", "field": "head", "code": "invalid"}]

    git("push", "-q", "origin", "main:auto/gh-1", cwd=clone)  # a branch with nothing new
    empty = gh(gh_env, *args)
    assert empty.returncode == 1
    assert json.loads(empty.stdout)["errors"][0]["message"] == "No commits between main and auto/gh-1"

    git("checkout", "-q", "-b", "auto/gh-1", cwd=clone)
    (clone / "fix.txt").write_text("fixed\n")
    git("add", "fix.txt", cwd=clone)
    git("commit", "-q", "-m", "Fix", cwd=clone)
    git("push", "-q", "origin", "auto/gh-1", cwd=clone)
    pr = gh_json(gh_env, *args)
    assert pr["commits"] == 1
    assert pr["head"]["sha"] == git("rev-parse", "HEAD", cwd=clone)
    assert pr["base"]["sha"] == git("rev-parse", "origin/main", cwd=clone)


def test_fork_pull_requests(github: FakeGitHub, gh_env: Dict[str, str]) -> None:
    fork = github.create_pull("auto/gh-1", title="from a fork", fork="someone")
    ours = github.create_pull("auto/gh-1", title="ours")
    (pr,) = gh_json(gh_env, REPO + "/pulls?head=someone:auto/gh-1")
    assert pr["number"] == fork
    head = pr["head"]
    assert (head["label"], head["ref"], head["user"]["login"]) == ("someone:auto/gh-1", "auto/gh-1", "someone")
    assert head["repo"]["owner"]["login"] == "someone" and head["repo"]["fork"] is True
    assert head["repo"]["full_name"] == "someone/widgets"
    assert pr["base"]["repo"]["full_name"] == "acme/widgets"
    assert [p["number"] for p in gh_json(gh_env, REPO + "/pulls?head=acme:auto/gh-1")] == [ours]
    assert {p["number"] for p in gh_json(gh_env, REPO + "/pulls")} == {fork, ours}


def test_drafts_unsupported_is_a_422_without_errors(github: FakeGitHub, gh_env: Dict[str, str]) -> None:
    github.drafts_supported = False
    args = ["-X", "POST", REPO + "/pulls", "-f", "title=t", "-f", "head=auto/gh-1", "-f", "base=main"]
    proc = gh(gh_env, *args, "-F", "draft=true")
    assert proc.returncode == 1 and "HTTP 422" in proc.stderr
    err = json.loads(proc.stdout)
    assert err["message"] == "Draft pull requests are not supported in this repository."
    assert "errors" not in err and github.pulls() == []
    assert gh_json(gh_env, *args, "-F", "draft=false")["draft"] is False


def test_repository_issue_events_feed(github: FakeGitHub, gh_env: Dict[str, str]) -> None:
    github.set_permission("maint", "maintain")
    one = github.add_issue("one", labels=["tac"], labeller="maint")
    two = github.add_issue("two", author="bob")
    github.label_issue(two, "tac", actor="bob")
    github.unlabel_issue(one, "tac", actor="maint")
    pull = github.create_pull("auto/gh-1")
    github.label_issue(pull, "bug", actor="alice")
    events = gh_json(gh_env, REPO + "/issues/events")
    assert [(e["event"], e["label"]["name"], e["actor"]["login"], e["issue"]["number"]) for e in events] == [
        ("labeled", "bug", "alice", pull), ("unlabeled", "tac", "maint", one),
        ("labeled", "tac", "bob", two), ("labeled", "tac", "maint", one)]  # newest first
    assert "pull_request" in events[0]["issue"] and "pull_request" not in events[1]["issue"]
    assert events[1]["issue"]["labels"] == [] and events[1]["created_at"].endswith("Z")
    assert events[0]["id"] > events[1]["id"] and events[0]["url"].endswith("/issues/events/%d" % events[0]["id"])

    status, headers, body = included(gh(gh_env, "-i", REPO + "/issues/events?per_page=3").stdout)
    assert status == 200 and len(json.loads(body)) == 3 and 'rel="next"' in headers["link"]
    proc = gh(gh_env, "--paginate", REPO + "/issues/events?per_page=3", "--jq", ".[].id")
    assert [int(x) for x in proc.stdout.split()] == [e["id"] for e in events]
    proc = gh(gh_env, "-i", "-H", "If-None-Match: " + headers["etag"], REPO + "/issues/events?per_page=3")
    assert included(proc.stdout)[0] == 304


def test_answer_raw_serves_what_it_is_given(github: FakeGitHub, gh_env: Dict[str, str]) -> None:
    github.answer_raw(r"/repos/acme/widgets/issues(/\d+)?", "<html>portal</html>", content_type="text/html")
    status, headers, body = included(gh(gh_env, "-i", REPO + "/issues?labels=tac").stdout)
    assert (status, headers["content-type"], body) == (200, "text/html", "<html>portal</html>")
    assert github.requests[-1].counted and github.requests[-1].path == "/repos/acme/widgets/issues"
    github.answer_raw(r"/repos/acme/widgets/issues(/\d+)?", {"not": "a list"}, status=201)
    proc = gh(gh_env, "-i", REPO + "/issues/3")
    assert included(proc.stdout)[0] == 201 and json.loads(included(proc.stdout)[2]) == {"not": "a list"}
    github.answer_raw(r"/repos/acme/widgets/issues(/\d+)?", None)
    assert gh_json(gh_env, REPO + "/issues") == []
    github.answer_raw("/repos/acme/widgets/pulls", {"message": "Validation Failed"}, status=422, method="POST")
    assert gh_json(gh_env, REPO + "/pulls") == []  # GET is answered as usual
    proc = gh(gh_env, "-X", "POST", REPO + "/pulls", "-f", "head=auto/gh-1", "-f", "base=main")
    assert proc.returncode == 1 and json.loads(proc.stdout) == {"message": "Validation Failed"}


# -- failures -------------------------------------------------------------------

def test_outage_and_transient_failures(github: FakeGitHub, gh_env: Dict[str, str]) -> None:
    github.set_outage(503)
    proc = gh(gh_env, "-i", REPO + "/issues")
    assert proc.returncode != 0 and proc.stdout.startswith("HTTP/1.1 503")
    assert "HTTP 503" in proc.stderr
    github.set_outage(None)
    assert gh(gh_env, REPO + "/issues").returncode == 0

    github.fail_next(2, 502)
    statuses = [included(gh(gh_env, "-i", "user").stdout)[0] for _ in range(3)]
    assert statuses == [502, 502, 200]


def test_rate_limit_exhausted_is_403(github: FakeGitHub, gh_env: Dict[str, str]) -> None:
    _, headers, _ = included(gh(gh_env, "-i", "user").stdout)
    assert (headers["x-ratelimit-limit"], headers["x-ratelimit-remaining"]) == ("5000", "4999")
    assert headers["x-ratelimit-used"] == "1" and headers["x-ratelimit-resource"] == "core"

    github.set_rate_limit(0, reset_epoch=4102444800)
    proc = gh(gh_env, "-i", "user")
    status, headers, body = included(proc.stdout)
    assert proc.returncode == 1 and status == 403
    assert headers["x-ratelimit-remaining"] == "0" and headers["x-ratelimit-reset"] == "4102444800"
    assert json.loads(body)["message"].startswith("API rate limit exceeded")
    # /rate_limit still answers, and costs nothing.
    before = github.counted_requests()
    assert gh_json(gh_env, "rate_limit")["resources"]["core"]["remaining"] == 0
    assert github.counted_requests() == before


def test_no_token_is_401(github: FakeGitHub, gh_env: Dict[str, str]) -> None:
    env = {k: v for k, v in gh_env.items() if k != "GH_TOKEN"}
    proc = gh(env, "-i", REPO + "/issues")
    assert proc.returncode == 1 and included(proc.stdout)[0] == 401
    assert "Requires authentication" in proc.stderr


def test_a_wrong_token_is_401_bad_credentials(github: FakeGitHub, gh_env: Dict[str, str]) -> None:
    github.set_tokens("good")
    proc = gh(gh_env, "-i", "user")
    assert proc.returncode == 1 and included(proc.stdout)[0] == 401
    assert json.loads(included(proc.stdout)[2])["message"] == "Bad credentials"
    assert gh(dict(gh_env, GH_TOKEN="good"), "user").returncode == 0
    github.set_tokens()
    assert gh(gh_env, "user").returncode == 0


def test_unknown_routes_and_repos_are_404(github: FakeGitHub, gh_env: Dict[str, str]) -> None:
    for path in ("repos/acme/other/issues", REPO + "/nonsense", REPO + "/issues/99"):
        proc = gh(gh_env, path)
        assert proc.returncode == 1 and "HTTP 404" in proc.stderr, path


def test_origin_form_and_api_v3_prefix(github: FakeGitHub) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", github.port, timeout=10)
    conn.request("GET", "/api/v3/repos/acme/widgets", headers={"Authorization": "token x"})
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.read())["name"] == "widgets"
    conn.close()


def test_twenty_concurrent_gh_calls(github: FakeGitHub, gh_env: Dict[str, str]) -> None:
    numbers = [github.add_issue("issue %d" % i, labels=["tac"]) for i in range(10)]
    results: List[subprocess.CompletedProcess] = []
    lock = threading.Lock()

    def call(i: int) -> None:
        if i % 2:
            proc = gh(gh_env, REPO + "/issues/%d" % numbers[i // 2])
        else:
            proc = gh(gh_env, "-X", "POST", REPO + "/issues/%d/comments" % numbers[i // 2],
                      "-f", "body=hello %d" % i)
        with lock:
            results.append(proc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [p.returncode for p in results] == [0] * 20, [p.stderr for p in results]
    assert github.counted_requests() == 20
    assert sum(len(github.comments(n)) for n in numbers) == 10


def test_cli_serves_until_interrupted(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "adws.sandbox.fakegithub", "--port", "0", "--issue", "Hello"],
        cwd=str(Path(__file__).resolve().parent.parent), stdout=subprocess.PIPE, text=True)
    try:
        env = {}
        for line in proc.stdout:
            if not line.startswith("export "):
                break
            key, _, value = line[len("export "):].strip().partition("=")
            env[key] = value
        env = dict(os.environ, **dict(env, GH_CONFIG_DIR=str(tmp_path)))
        (issue,) = gh_json(env, REPO + "/issues?labels=tac")
        assert issue["title"] == "Hello"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()
