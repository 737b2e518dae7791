"""A fake GitHub REST API on loopback, for the demo, the benchmark and the tests.

It owns one repository's worth of state (issues, pull requests, labels, label
events, comments, collaborator permissions, a rate-limit budget) behind one
lock, and serves it with GitHub's JSON shapes, checked against exchanges
recorded with api.github.com. Tests drive it through the real
`gh` binary, so what passes here is what `gh api` really sends and prints.

How gh 2.23 reaches it (seen, not guessed): with `GH_HOST=github.localhost`
gh talks plain HTTP to `api.github.localhost` with no `/api/v3` prefix, and
`HTTP_PROXY=http://127.0.0.1:PORT` sends every request here in proxy form::

    GET http://api.github.localhost/repos/acme/widgets/issues?per_page=100 HTTP/1.1
    Host: api.github.localhost
    Authorization: token x
    Accept: (empty)            User-Agent: GitHub CLI 2.23.0

so the server accepts absolute-form targets, origin-form paths and an
`/api/v3` prefix alike. `FakeGitHub.env()` gives the variables. `--paginate`
appends `per_page=100` when the path has none and follows `Link: rel="next"`.
Without GH_TOKEN gh still sends the request for this host, unauthenticated
(so the fake answers 401). gh does not retry a 5xx: one call, one request.

What it fakes faithfully: the issues list (pull requests included, carrying
`pull_request`), all-labels filtering, pagination with a `Link` header whose
next pages live under `/repositories/{id}/...` as on github.com; ETags and
`If-None-Match` -> 304 (not counted against the rate limit); `X-RateLimit-*`
headers on every response and a 403 once the budget is spent; 422 validation
errors for duplicate or empty pull requests; 404 bodies; 401 without a token.
The repository-wide issue events feed (`/issues/events`: every issue's and
pull request's events, newest first, each carrying its `issue`).

Switches for what GitHub (or the way to it) does only sometimes:
`set_outage` and `fail_next` (5xx and other statuses), `set_rate_limit`,
`set_tokens` (401 "Bad credentials" for any other token), `drafts_supported
= False` (422 "Draft pull requests are not supported in this repository.",
as on a private repository of a Free or Pro account), `create_pull(...,
fork="someone")` (a PR from the fork someone/NAME), `answer_raw` (any
status and body for a path: an HTML page with 200, an object for a list),
and `delay` (an endpoint that answers only after a while: a GitHub that hangs).

GraphQL answers one query only: an issue's body edit history
(`lastEditedAt`, `editor`, `userContentEdits`), which the status issue needs
to tell who ticked a box and which REST does not offer. Body edits through
PATCH are the token's account's (`operator`); `edit_issue(..., actor=)` is a
person's edit in the web page.

Pull request reviews (issue #14's follow-ups): `GET /pulls/{n}/reviews`
(oldest first: state CHANGES_REQUESTED / COMMENTED / APPROVED, body, user,
submitted_at, commit_id), `POST /pulls/{n}/reviews` as the token's account,
refused as GitHub refuses it: nobody may approve or request changes on their
own pull request (422, `"errors": ["Review Can not request changes on your
own pull request"]`). Review comments, per pull request
(`/pulls/{n}/comments`) and repository-wide (`/pulls/comments`, with `since`,
`sort` created|updated and `direction`), carry `path`, `line`,
`original_line`, `side`, `position`, `diff_hunk`, `pull_request_review_id`,
`in_reply_to_id` (on replies only, as on GitHub), `user`, `created_at`,
`updated_at`. With origin_path the diff hunk is cut from the real `git diff`
of base...head, and a line outside the diff is refused (422 "Validation
Failed", "pull_request_review_thread.line must be part of the diff"). Every
review, review comment and conversation comment moves the pull request's
`updated_at`. A test acts as a person through `submit_review` (with line
comments), `reply_to_review_comment`, `add_comment`, `edit_comment`,
`edit_review_comment`, `push_commit` (a commit on the PR's branch in
origin_path, made with git plumbing: no work tree), `close_issue` and
`merge_pull`. `track_pushes = True` makes every request first read the
branches of origin_path (one `git for-each-ref`): a PR whose branch moved
(someone pushed) gets the new head sha and a new `updated_at`, as on GitHub.
A merge changes no branch, and a review comment never becomes outdated.

What it does not: the rest of GraphQL (so `gh issue list` / `gh pr list` cannot work),
search, pending reviews, checks, assignees, milestones, reactions, gzip,
unauthenticated access to public data, secondary rate limits. Every endpoint
requires a token, and any token is accepted unless `set_tokens` says
otherwise. It logs nothing unless FAKEGITHUB_DEBUG=1.

A login never given `set_permission` is reported as GitHub reports a
non-collaborator on a public repository: permission "read", role_name "read".
Timestamps are whole seconds like GitHub's, but strictly increasing per
change, so an edit always moves `updated_at` even within one second.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from http.client import responses
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

GH_HOST = "github.localhost"
API = "http://api.github.localhost"
WEB = "https://github.localhost"
DOCS = "https://docs.github.com/rest"
RATE_LIMIT_DOCS = DOCS + "/overview/resources-in-the-rest-api#rate-limiting"
# role_name -> the legacy `permission` GitHub reports for it.
ROLES = {"admin": "admin", "maintain": "write", "write": "write",
         "triage": "read", "read": "read", "none": "none"}


@dataclass
class RequestRecord:
    method: str
    path: str  # without scheme, host, /api/v3 or query; still percent-encoded
    query: Dict[str, str]
    status: int
    counted: bool  # against the rate limit: False for 304s and /rate_limit


class HTTPError(Exception):
    """An error answer, rendered as GitHub's {"message", "errors", "documentation_url"}."""

    def __init__(self, status: int, message: str, errors: Optional[list] = None,
                 docs: str = DOCS) -> None:
        super().__init__(message)
        self.status, self.message, self.errors, self.docs = status, message, errors, docs


def _not_found() -> HTTPError:
    return HTTPError(404, "Not Found")


def _invalid(resource: str, **error: str) -> HTTPError:
    return HTTPError(422, "Validation Failed", [dict(resource=resource, **error)])


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _fake_sha(*parts: Any) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()


def _git(git_dir: str, *args: str) -> Optional[str]:
    proc = subprocess.run(["git", "--git-dir", git_dir, *args],
                          capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _hunk_at(diff: str, line: int, side: str = "RIGHT") -> Optional[dict]:
    """{"diff_hunk", "position"} for `line` of the new (RIGHT) or old
    (LEFT) file in a one-file unified diff, as GitHub reports them: the
    hunk's header and its lines down to the commented one; the position
    counts lines from the first header's next line (later headers count).
    None when the line is not in the diff."""
    position, hunk = 0, []
    old = new = 0
    started = False
    for text in diff.split("\n"):
        m = re.match(r"@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@", text)
        if m:
            if started:
                position += 1
            started, hunk = True, [text]
            old, new = int(m.group(1)), int(m.group(2))
            continue
        if not started or not text or text[0] not in " +-":
            continue
        position += 1
        hunk.append(text)
        kind = text[0]
        if side == "RIGHT" and kind in " +" and new == line or side == "LEFT" and kind in " -" and old == line:
            return {"diff_hunk": "\n".join(hunk), "position": position}
        if kind in " +":
            new += 1
        if kind in " -":
            old += 1
    return None


# -- The fake ---------------------------------------------------------------

class FakeGitHub:
    """One repository on a fake api.github.localhost; see the module docstring."""

    def __init__(self, repo: str = "acme/widgets", origin_path: Optional[str] = None,
                 operator: str = "operator") -> None:
        self.repo, self.operator = repo, operator
        self.owner, self.name = repo.split("/")
        # A bare git repo; when set, POST /pulls checks branches against it.
        # Public so a test can attach one to an already-started fake.
        self.origin_path = origin_path
        self.clock = time.time  # replaceable by a test
        self._lock = threading.RLock()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self.port = 0
        self._next_id, self._next_number = 1000, 1
        self._repo_id = self._new_id()
        self._users: Dict[str, Tuple[int, str]] = {}
        self._user(self.owner, "Organization")
        self._perms: Dict[str, str] = {operator: "admin"}
        self._labels: Dict[str, dict] = {}  # lower-cased name -> label
        self._issues: Dict[int, dict] = {}  # issues and pull requests by number
        self._events: Dict[int, List[dict]] = {}
        self._comments: Dict[int, dict] = {}  # by comment id
        self._reviews: Dict[int, dict] = {}  # pull request reviews by id
        self._review_comments: Dict[int, dict] = {}  # review comments by id
        # True: each request first notices pushes to PR branches in origin_path
        self.track_pushes = False
        self._requests: List[RequestRecord] = []
        self._outage: Optional[int] = None
        self._failures: List[int] = []
        # path pattern -> (status, body, content type): answers that are not GitHub's
        self._overrides: Dict[str, Tuple[int, bytes, str]] = {}
        self._tokens: Optional[set] = None  # None: any token is accepted
        self._delays: List[Tuple[str, str, float]] = []  # (method or "", path pattern, seconds)
        self._stopping = threading.Event()  # set by stop(): a held-back answer goes at once
        # False: 422 for a draft PR, as on a private repository of a Free or Pro account
        self.drafts_supported = True
        self._rl_limit, self._rl_remaining = 5000, 5000
        self._rl_reset = int(self.clock()) + 3600

    # -- lifecycle --

    def start(self) -> "FakeGitHub":
        self._stopping.clear()  # started again: held-back answers are held back again
        self._server = _Server(("127.0.0.1", self.port), _Handler)
        self._server.fake = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="fakegithub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._stopping.set()  # closing waits for every request's thread: none may sleep on
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def env(self, config_dir: str) -> Dict[str, str]:
        """What gh needs to talk to this fake (merge it over os.environ)."""
        proxy = "http://127.0.0.1:%d" % self.port
        return {"GH_HOST": GH_HOST, "GH_TOKEN": "x", "GH_CONFIG_DIR": config_dir,
                "HTTP_PROXY": proxy, "http_proxy": proxy,
                # Go takes the first non-empty of NO_PROXY/no_proxy.
                "NO_PROXY": "", "no_proxy": "",
                "GH_PROMPT_DISABLED": "1", "GH_NO_UPDATE_NOTIFIER": "1", "NO_COLOR": "1"}

    # -- state set-up --

    def set_permission(self, login: str, permission: str) -> None:
        if permission not in ROLES:
            raise ValueError("unknown permission %r" % permission)
        with self._lock:
            self._perms[login] = permission

    def add_label(self, name: str, color: str = "ededed", description: Optional[str] = None) -> None:
        with self._lock:
            self._label(name, color, description)

    def add_issue(self, title: str, body: str = "", labels: Sequence[str] = (),
                  author: str = "alice", labeller: Optional[str] = None,
                  author_type: str = "User", number: Optional[int] = None,
                  is_pull: bool = False) -> int:
        with self._lock:
            self._user(author, author_type)
            if number is None:
                number = self._next_number
            if number in self._issues:
                raise ValueError("issue #%d exists" % number)
            self._next_number = max(self._next_number, number + 1)
            now = int(self.clock())
            self._issues[number] = {
                "id": self._new_id(), "number": number, "title": title, "body": body,
                "state": "open", "labels": [], "author": author, "created": now,
                "updated": now, "closed": None, "pull": None, "edits": []}
            self._events[number] = []
            if is_pull:
                self._issues[number]["pull"] = self._pull_fields("feature-%d" % number, "main", False)
            self._add_labels(number, labels, labeller or author, bump=False)
            return number

    def create_pull(self, head: str, title: str = "PR", base: str = "main",
                    state: str = "open", author: str = "alice", draft: bool = False,
                    fork: Optional[str] = None) -> int:
        """state is "open", "closed" or "merged" (closed with merged_at).
        fork="someone" makes the head `someone:HEAD`, a branch of the fork
        someone/NAME (head.repo.owner.login is "someone", head.repo.fork true)."""
        with self._lock:
            number = self.add_issue(title, author=author)
            rec = self._issues[number]
            rec["pull"] = self._pull_fields(head, base, draft, fork)
            if state != "open":
                self._close(rec, merged=(state == "merged"))
            return number

    def label_issue(self, number: int, label: str, actor: str) -> None:
        with self._lock:
            self._add_labels(number, [label], actor)

    def unlabel_issue(self, number: int, label: str, actor: str) -> None:
        with self._lock:
            self._remove_label(number, label, actor)

    def edit_issue(self, number: int, title: Optional[str] = None,
                   body: Optional[str] = None, actor: str = "alice") -> None:
        """A person's edit in the web page. GitHub records no event for it;
        a change of the body lands in the edit history (GraphQL's
        userContentEdits) with `actor` as its editor, whoever that is: the
        fake does not refuse an editor GitHub would (a test of the client's
        own check needs such an edit)."""
        with self._lock:
            rec = self._get(number)
            rec["title"] = rec["title"] if title is None else title
            rec["updated"] = self._stamp(rec["updated"])
            if body is not None:
                self._edit_body(rec, body, actor)

    def close_issue(self, number: int) -> None:
        with self._lock:
            self._close(self._get(number))

    def merge_pull(self, number: int) -> None:
        """Merge the pull request (closed with merged_at; no branch changes)."""
        with self._lock:
            rec = self._get(number)
            if not rec["pull"] or rec["state"] != "open":
                raise ValueError("#%d is not an open pull request" % number)
            self._close(rec, merged=True)

    def add_comment(self, number: int, author: str, body: str, author_type: Optional[str] = None) -> int:
        """A person's (or, with author_type "Bot", an app's) conversation
        comment on an issue or pull request; returns its id."""
        with self._lock:
            self._user(author, author_type)
            return self._new_comment(self._get(number), author, body)

    def edit_comment(self, comment_id: int, body: str) -> None:
        """A person edits a conversation comment in the web page."""
        with self._lock:
            c = self._comment(str(comment_id))
            c["body"], c["updated"] = body, self._stamp(c["updated"])

    def submit_review(self, number: int, author: str, state: str = "CHANGES_REQUESTED", body: str = "",
                      comments: Sequence[dict] = (), author_type: Optional[str] = None) -> int:
        """A person submits a review in the web page: `state` is
        CHANGES_REQUESTED, COMMENTED or APPROVED; `comments` are line
        comments, dicts with `path`, `line` and `body` (optional `side`
        "LEFT" for a removed line, `diff_hunk` where there is no
        origin_path). Raises HTTPError as GitHub refuses: 422 for a review
        on one's own pull request that approves or requests changes, or a
        line outside the diff. Returns the review id."""
        with self._lock:
            self._user(author, author_type)
            return self._new_review(self._get(number), author, state, body, comments)

    def reply_to_review_comment(self, number: int, comment_id: int, author: str, body: str) -> int:
        """A person answers in a review comment's thread (GitHub makes a
        COMMENTED review with no body around the reply); returns its id."""
        with self._lock:
            self._user(author)
            rec = self._get(number)
            parent = self._review_comments.get(comment_id)
            if parent is None or parent["pr"] != number:
                raise _not_found()
            review = self._new_review(rec, author, "COMMENTED", "", ())
            return self._new_review_comment(rec, review, author, dict(
                path=parent["path"], line=parent["line"], side=parent["side"], body=body,
                diff_hunk=parent["diff_hunk"], position=parent["position"]), reply_to=parent["id"])

    def edit_review_comment(self, comment_id: int, body: str) -> None:
        with self._lock:
            c = self._review_comments[comment_id]
            c["body"], c["updated"] = body, self._stamp(c["updated"])

    def push_commit(self, number: int, files: Dict[str, Optional[str]], message: str = "A change",
                    author: str = "someone") -> str:
        """A person pushes one commit to the pull request's branch in
        origin_path: `files` maps paths to their new content (None deletes
        one). Made with git plumbing (no work tree); the PR's head sha and
        updated_at move as a push moves them. Returns the new sha."""
        with self._lock:
            rec = self._get(number)
            if not (self.origin_path and rec["pull"]) or rec["pull"].get("fork"):
                raise ValueError("push_commit needs origin_path and a pull request of this repository")
            ref = "refs/heads/" + rec["pull"]["head"]
            head = _git(self.origin_path, "rev-parse", "--verify", "-q", ref)
            if not head:
                raise ValueError("no branch %s in %s" % (ref, self.origin_path))
            with tempfile.TemporaryDirectory(prefix="fakegithub-push-") as tmp:
                env = dict(os.environ, GIT_INDEX_FILE=os.path.join(tmp, "index"),
                           GIT_AUTHOR_NAME=author, GIT_AUTHOR_EMAIL="%s@users.noreply.github.com" % author,
                           GIT_COMMITTER_NAME=author,
                           GIT_COMMITTER_EMAIL="%s@users.noreply.github.com" % author)

                def git(*args: str, data: Optional[str] = None) -> str:
                    return subprocess.run(["git", "--git-dir", self.origin_path, *args], input=data, env=env,
                                          capture_output=True, text=True, check=True).stdout.strip()
                git("read-tree", head)
                for path, content in files.items():
                    if content is None:
                        git("update-index", "--force-remove", "--", path)
                    else:
                        blob = git("hash-object", "-w", "--stdin", data=content)
                        git("update-index", "--add", "--cacheinfo", "100644,%s,%s" % (blob, path))
                sha = git("commit-tree", git("write-tree"), "-p", head, "-m", message)
                git("update-ref", ref, sha, head)
            self._moved(rec, sha)
            return sha

    def set_outage(self, status: Optional[int]) -> None:
        with self._lock:
            self._outage = status

    def fail_next(self, count: int, status: int = 502) -> None:
        with self._lock:
            self._failures.extend([status] * count)

    def delay(self, path_pattern: str, seconds: float, method: str = "") -> None:
        """Answer requests whose path matches `path_pattern` (a regex, searched)
        only after `seconds`: a GitHub that hangs on one endpoint. 0 ends it."""
        with self._lock:
            self._delays = [d for d in self._delays if d[:2] != (method, path_pattern)]
            if seconds > 0:
                self._delays.append((method, path_pattern, seconds))

    def answer_raw(self, path: str, body: Any, status: int = 200,
                   content_type: str = "application/json; charset=utf-8", method: str = "") -> None:
        """Answer every request whose path (no query, e.g. "/repos/acme/widgets/issues";
        a regular expression, matched whole) matches, for `method` or any, with
        `body`: bytes or str as they are, anything else as JSON. For answers of
        the wrong shape (an HTML page with 200, an object where a list belongs)
        or refusals the fake does not make itself. body None removes it."""
        key = "%s %s" % (method.upper() or "*", path)
        with self._lock:
            if body is None:
                self._overrides.pop(key, None)
                return
            raw = body if isinstance(body, bytes) else (
                body.encode() if isinstance(body, str) else json.dumps(body).encode())
            self._overrides[key] = (status, raw, content_type)

    def set_tokens(self, *tokens: str) -> None:
        """Accept only these tokens (401 "Bad credentials" for others);
        no arguments: accept any token again."""
        with self._lock:
            self._tokens = set(tokens) if tokens else None

    def set_rate_limit(self, remaining: int, reset_epoch: Optional[int] = None) -> None:
        with self._lock:
            self._rl_remaining = remaining
            self._rl_reset = int(reset_epoch if reset_epoch is not None else self.clock() + 3600)

    # -- inspection (copies, safe to keep) --

    def issue(self, number: int) -> dict:
        with self._lock:
            return self._render_issue(self._get(number))

    def issue_labels(self, number: int) -> List[str]:
        with self._lock:
            return list(self._get(number)["labels"])

    def body_edits(self, number: int) -> List[Tuple[str, str]]:
        """(editor login, ISO time) of each edit of the issue's body, oldest
        first; the first is the body as opened, as in GitHub's history."""
        with self._lock:
            return [(e["editor"], _iso(e["at"])) for e in self._get(number)["edits"]]

    def comments(self, number: int) -> List[dict]:
        with self._lock:
            return [self._render_comment(c) for c in self._comments.values()
                    if c["issue"] == number]

    def pulls(self) -> List[dict]:
        with self._lock:
            self._sync_heads()
            return [self._render_pull(r) for r in self._issues.values() if r["pull"]]

    def reviews(self, number: int) -> List[dict]:
        with self._lock:
            return [self._render_review(r) for r in self._reviews.values() if r["pr"] == number]

    def review_comments(self, number: int) -> List[dict]:
        with self._lock:
            return [self._render_review_comment(c) for c in self._review_comments.values() if c["pr"] == number]

    @property
    def requests(self) -> List[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def counted_requests(self) -> int:
        with self._lock:
            return sum(1 for r in self._requests if r.counted)

    def reset_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # -- internal state changes (callers hold the lock) --

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _stamp(self, previous: int) -> int:
        """Now, but later than `previous`: a change must move updated_at even
        within one second, or a client comparing updated_at would miss it."""
        return max(int(self.clock()), previous + 1)

    def _user(self, login: str, kind: Optional[str] = None) -> dict:
        if login not in self._users or kind:
            uid = self._users[login][0] if login in self._users else self._new_id()
            kind = kind or ("Bot" if login.endswith("[bot]") else "User")
            self._users[login] = (uid, kind)
        uid, kind = self._users[login]
        return {"login": login, "id": uid, "node_id": "U_%d" % uid,
                "avatar_url": "https://avatars.githubusercontent.com/u/%d?v=4" % uid,
                "gravatar_id": "", "url": "%s/users/%s" % (API, login),
                "html_url": "%s/%s" % (WEB, login), "type": kind, "site_admin": False}

    def _label(self, name: str, color: str = "ededed", description: Optional[str] = None) -> dict:
        key = name.lower()
        if key not in self._labels:
            self._labels[key] = {"id": self._new_id(), "name": name, "color": color,
                                 "description": description}
        return self._labels[key]

    def _get(self, number: int) -> dict:
        if number not in self._issues:
            raise _not_found()
        return self._issues[number]

    def _pull_fields(self, head: str, base: str, draft: bool, fork: Optional[str] = None) -> dict:
        """A pull request's own fields. With origin_path the shas and commit
        count are real (a sha is None if the branch is missing); without it,
        or for a fork's branch, the shas are made up when rendered."""
        out = {"head": head, "base": base, "draft": draft, "merged": None,
               "sha": None, "base_sha": None, "commits": 1, "fork": fork}
        if fork:
            self._user(fork)
        if self.origin_path and not fork:
            ref = "refs/heads/%s^{commit}"
            out["sha"] = _git(self.origin_path, "rev-parse", "--verify", "-q", ref % head)
            out["base_sha"] = _git(self.origin_path, "rev-parse", "--verify", "-q", ref % base)
            if out["sha"] and out["base_sha"]:
                out["commits"] = int(_git(self.origin_path, "rev-list", "--count",
                                          "%s..%s" % (out["base_sha"], out["sha"])) or 0)
        return out

    def _edit_body(self, rec: dict, body: str, editor: str) -> None:
        """Change the body and record the edit at the issue's (already
        moved) updated_at; the first edit also records the body as opened
        (GitHub's history starts with it)."""
        if body == (rec["body"] or ""):
            return  # GitHub records no edit that changes nothing
        self._user(editor)
        if not rec["edits"]:
            rec["edits"].append({"at": rec["created"], "editor": rec["author"]})
        rec["body"] = body
        rec["edits"].append({"at": rec["updated"], "editor": editor})

    def _new_comment(self, rec: dict, author: str, body: str) -> int:
        cid, now = self._new_id(), int(self.clock())
        self._comments[cid] = {"id": cid, "issue": rec["number"], "author": author,
                               "body": body, "created": now, "updated": now}
        rec["updated"] = self._stamp(rec["updated"])
        return cid

    def _new_review(self, rec: dict, author: str, state: str, body: str, comments: Sequence[dict]) -> int:
        if not rec["pull"]:
            raise _not_found()
        if state not in ("CHANGES_REQUESTED", "COMMENTED", "APPROVED"):
            raise ValueError("unknown review state %r" % state)
        if author == rec["author"] and state != "COMMENTED":
            verb = "approve" if state == "APPROVED" else "request changes on"
            raise HTTPError(422, "Unprocessable Entity", ["Review Can not %s your own pull request" % verb],
                            docs=DOCS + "/pulls/reviews#create-a-review-for-a-pull-request")
        # Every line is checked before anything is stored: a refused review leaves no trace.
        lines = [dict(c, **self._diff_position(rec, c)) for c in comments]
        rid, now = self._new_id(), int(self.clock())
        self._reviews[rid] = {"id": rid, "pr": rec["number"], "author": author, "state": state,
                              "body": body or "", "submitted": now, "commit": self._head_sha(rec)}
        for c in lines:
            self._new_review_comment(rec, rid, author, c, bump=False)
        rec["updated"] = self._stamp(rec["updated"])
        return rid

    def _new_review_comment(self, rec: dict, review_id: int, author: str, c: dict,
                            reply_to: Optional[int] = None, bump: bool = True) -> int:
        cid, now = self._new_id(), int(self.clock())
        self._review_comments[cid] = {
            "id": cid, "pr": rec["number"], "review": review_id, "author": author, "body": c["body"],
            "path": c["path"], "line": int(c["line"]), "side": c.get("side", "RIGHT"),
            "diff_hunk": c["diff_hunk"], "position": c["position"], "reply_to": reply_to,
            "commit": self._head_sha(rec), "created": now, "updated": now}
        if bump:
            rec["updated"] = self._stamp(rec["updated"])
        return cid

    def _head_sha(self, rec: dict) -> str:
        pull = rec["pull"]
        return pull["sha"] or _fake_sha(pull["head"], rec["number"])

    def _diff_position(self, rec: dict, c: dict) -> dict:
        """{"diff_hunk", "position"} of line comment `c` (path, line, side):
        from the real diff of base...head when origin_path has both, else
        from `c`'s own diff_hunk (or a one-line stand-in). A line outside
        the real diff is refused as GitHub refuses it."""
        for key in ("path", "line", "body"):
            if c.get(key) in (None, ""):
                raise _invalid("PullRequestReviewComment", field=key, code="missing_field")
        pull, side, line = rec["pull"], c.get("side", "RIGHT"), int(c["line"])
        if not (self.origin_path and pull["sha"] and pull["base_sha"] and not pull.get("fork")):
            hunk = c.get("diff_hunk") or "@@ -%d,1 +%d,1 @@\n+" % (line, line)
            return {"diff_hunk": hunk, "position": c.get("position", 1)}
        diff = _git(self.origin_path, "diff", "--no-color", "--no-ext-diff", "-U3",
                    "%s...%s" % (pull["base_sha"], pull["sha"]), "--", c["path"]) or ""
        found = _hunk_at(diff, line, side)
        if found is None:
            raise _invalid("PullRequestReviewComment", code="custom", field="pull_request_review_thread.line",
                           message="pull_request_review_thread.line must be part of the diff")
        return found

    def _moved(self, rec: dict, sha: str) -> None:
        """The PR's branch now points at `sha`: a push, as GitHub sees it."""
        pull = rec["pull"]
        if sha == pull["sha"]:
            return
        pull["sha"] = sha
        if pull["base_sha"]:
            pull["commits"] = int(_git(self.origin_path, "rev-list", "--count",
                                       "%s..%s" % (pull["base_sha"], sha)) or 0)
        rec["updated"] = self._stamp(rec["updated"])

    def _sync_heads(self) -> None:
        """With track_pushes: notice pushes to the branches of open PRs."""
        if not (self.track_pushes and self.origin_path):
            return
        out = _git(self.origin_path, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/")
        heads = dict(line.split(" ", 1) for line in (out or "").splitlines() if " " in line)
        for rec in self._issues.values():
            pull = rec["pull"]
            if pull and rec["state"] == "open" and not pull.get("fork"):
                sha = heads.get("refs/heads/" + pull["head"])
                if sha:
                    self._moved(rec, sha)

    def _close(self, rec: dict, merged: bool = False) -> None:
        rec["state"], rec["updated"] = "closed", self._stamp(rec["updated"])
        rec["closed"] = rec["updated"]
        if merged and rec["pull"]:
            rec["pull"]["merged"] = rec["updated"]

    def _record_event(self, number: int, event: str, label: dict, actor: str) -> None:
        self._user(actor)
        self._events[number].append({"id": self._new_id(), "event": event, "actor": actor,
                                     "label": label["name"], "color": label["color"],
                                     "created": int(self.clock())})

    def _add_labels(self, number: int, names: Sequence[str], actor: str,
                    bump: bool = True) -> None:
        rec = self._get(number)
        for name in names:
            label = self._label(name)
            if label["name"] not in rec["labels"]:
                rec["labels"].append(label["name"])
                self._record_event(number, "labeled", label, actor)
                if bump:
                    rec["updated"] = self._stamp(rec["updated"])

    def _remove_label(self, number: int, name: str, actor: str, bump: bool = True) -> None:
        rec, label = self._get(number), self._labels.get(name.lower())
        if label is None or label["name"] not in rec["labels"]:
            raise HTTPError(404, "Label does not exist")
        rec["labels"].remove(label["name"])
        self._record_event(number, "unlabeled", label, actor)
        if bump:
            rec["updated"] = self._stamp(rec["updated"])

    # -- rendering GitHub's JSON --

    @property
    def _repo_url(self) -> str:
        return "%s/repos/%s" % (API, self.repo)

    def _association(self, login: str) -> str:
        if login.lower() == self.owner.lower():
            return "OWNER"
        return "COLLABORATOR" if self._perms.get(login, "none") != "none" else "NONE"

    def _render_label(self, name: str) -> dict:
        label = self._labels[name.lower()]
        return {"id": label["id"], "node_id": "LA_%d" % label["id"],
                "url": "%s/labels/%s" % (self._repo_url, quote(label["name"])),
                "name": label["name"], "color": label["color"], "default": False,
                "description": label["description"]}

    def _render_issue(self, rec: dict) -> dict:
        n, pull = rec["number"], rec["pull"]
        url = "%s/issues/%d" % (self._repo_url, n)
        html = "%s/%s/%s/%d" % (WEB, self.repo, "pull" if pull else "issues", n)
        closed = rec["state"] == "closed"
        out = {
            "url": url, "repository_url": self._repo_url,
            "labels_url": url + "/labels{/name}", "comments_url": url + "/comments",
            "events_url": url + "/events", "html_url": html, "id": rec["id"],
            "node_id": ("PR_%d" if pull else "I_%d") % rec["id"], "number": n,
            "title": rec["title"], "user": self._user(rec["author"]),
            "labels": [self._render_label(x) for x in rec["labels"]],
            "state": rec["state"], "locked": False, "assignee": None, "assignees": [],
            "milestone": None,
            "comments": sum(1 for c in self._comments.values() if c["issue"] == n),
            "created_at": _iso(rec["created"]), "updated_at": _iso(rec["updated"]),
            "closed_at": _iso(rec["closed"]) if closed else None,
            "author_association": self._association(rec["author"]),
            "active_lock_reason": None, "body": rec["body"] or None,
            "timeline_url": url + "/timeline", "performed_via_github_app": None,
            "state_reason": "completed" if closed and not pull else None}
        if pull:
            out["draft"] = pull["draft"]
            out["pull_request"] = {
                "url": "%s/pulls/%d" % (self._repo_url, n), "html_url": html,
                "diff_url": html + ".diff", "patch_url": html + ".patch",
                "merged_at": _iso(pull["merged"]) if pull["merged"] else None}
        return out

    def _render_pull(self, rec: dict, full: bool = False) -> dict:
        n, pull = rec["number"], rec["pull"]
        html = "%s/%s/pull/%d" % (WEB, self.repo, n)
        repo = {"id": self._repo_id, "name": self.name, "full_name": self.repo,
                "private": False, "owner": self._user(self.owner),
                "html_url": "%s/%s" % (WEB, self.repo), "url": self._repo_url}

        def ref(name: str, sha: str, owner: Optional[str] = None) -> dict:
            if not owner:
                return {"label": "%s:%s" % (self.owner, name), "ref": name, "sha": sha,
                        "user": self._user(self.owner), "repo": repo}
            full = "%s/%s" % (owner, self.name)
            return {"label": "%s:%s" % (owner, name), "ref": name, "sha": sha,
                    "user": self._user(owner),
                    "repo": {"id": self._repo_id + 100000 + sum(map(ord, owner)), "name": self.name,
                             "full_name": full, "private": False, "owner": self._user(owner),
                             "html_url": "%s/%s" % (WEB, full), "url": "%s/repos/%s" % (API, full),
                             "fork": True}}
        issue = self._render_issue(rec)
        out = {
            "url": "%s/pulls/%d" % (self._repo_url, n), "id": rec["id"],
            "node_id": issue["node_id"], "html_url": html, "diff_url": html + ".diff",
            "patch_url": html + ".patch", "issue_url": issue["url"], "number": n,
            "state": rec["state"], "locked": False, "title": rec["title"],
            "user": issue["user"], "body": issue["body"], "labels": issue["labels"],
            "milestone": None, "created_at": issue["created_at"],
            "updated_at": issue["updated_at"], "closed_at": issue["closed_at"],
            "merged_at": issue["pull_request"]["merged_at"], "merge_commit_sha": None,
            "assignee": None, "assignees": [], "requested_reviewers": [],
            "draft": pull["draft"],
            "head": ref(pull["head"], pull["sha"] or _fake_sha(pull["head"], n), pull.get("fork")),
            "base": ref(pull["base"], pull["base_sha"] or _fake_sha(pull["base"])),
            "author_association": issue["author_association"], "auto_merge": None}
        if full:  # the single-PR endpoints add these
            out.update(merged=bool(pull["merged"]), mergeable=None, comments=issue["comments"],
                       commits=pull["commits"], additions=0, deletions=0, changed_files=0)
        return out

    def _render_comment(self, c: dict) -> dict:
        url = "%s/issues/comments/%d" % (self._repo_url, c["id"])
        return {"url": url, "html_url": "%s/%s/issues/%d#issuecomment-%d" % (
                    WEB, self.repo, c["issue"], c["id"]),
                "issue_url": "%s/issues/%d" % (self._repo_url, c["issue"]),
                "id": c["id"], "node_id": "IC_%d" % c["id"], "user": self._user(c["author"]),
                "created_at": _iso(c["created"]), "updated_at": _iso(c["updated"]),
                "author_association": self._association(c["author"]), "body": c["body"],
                "performed_via_github_app": None}

    def _render_review(self, r: dict) -> dict:
        pr_url = "%s/pulls/%d" % (self._repo_url, r["pr"])
        html = "%s/%s/pull/%d#pullrequestreview-%d" % (WEB, self.repo, r["pr"], r["id"])
        return {"id": r["id"], "node_id": "PRR_%d" % r["id"], "user": self._user(r["author"]),
                "body": r["body"], "state": r["state"], "html_url": html, "pull_request_url": pr_url,
                "author_association": self._association(r["author"]),
                "_links": {"html": {"href": html}, "pull_request": {"href": pr_url}},
                "submitted_at": _iso(r["submitted"]), "commit_id": r["commit"]}

    def _render_review_comment(self, c: dict) -> dict:
        url = "%s/pulls/comments/%d" % (self._repo_url, c["id"])
        pr_url = "%s/pulls/%d" % (self._repo_url, c["pr"])
        html = "%s/%s/pull/%d#discussion_r%d" % (WEB, self.repo, c["pr"], c["id"])
        out = {"url": url, "pull_request_review_id": c["review"], "id": c["id"],
               "node_id": "PRRC_%d" % c["id"], "diff_hunk": c["diff_hunk"], "path": c["path"],
               "position": c["position"], "original_position": c["position"],
               "commit_id": c["commit"], "original_commit_id": c["commit"],
               "user": self._user(c["author"]), "body": c["body"],
               "created_at": _iso(c["created"]), "updated_at": _iso(c["updated"]),
               "html_url": html, "pull_request_url": pr_url,
               "author_association": self._association(c["author"]),
               "_links": {"self": {"href": url}, "html": {"href": html}, "pull_request": {"href": pr_url}},
               "reactions": {"url": url + "/reactions", "total_count": 0, "+1": 0, "-1": 0, "laugh": 0,
                             "hooray": 0, "confused": 0, "heart": 0, "rocket": 0, "eyes": 0},
               "start_line": None, "original_start_line": None, "start_side": None,
               "line": c["line"], "original_line": c["line"], "side": c["side"], "subject_type": "line"}
        if c["reply_to"] is not None:  # GitHub sends the key on replies only
            out["in_reply_to_id"] = c["reply_to"]
        return out

    def _render_event(self, e: dict) -> dict:
        actor = self._user(e["actor"])
        return {"id": e["id"], "node_id": "LE_%d" % e["id"],
                "url": "%s/issues/events/%d" % (self._repo_url, e["id"]),
                "actor": actor, "event": e["event"], "commit_id": None, "commit_url": None,
                "created_at": _iso(e["created"]),
                "label": {"name": e["label"], "color": e["color"]},
                "performed_via_github_app": None}

    def _rate(self) -> dict:
        return {"limit": self._rl_limit, "used": self._rl_limit - self._rl_remaining,
                "remaining": self._rl_remaining, "reset": self._rl_reset, "resource": "core"}

    # -- HTTP: one request in, (status, headers, body) out --

    def _handle(self, method: str, target: str, headers: Any, raw: bytes
                ) -> Tuple[int, List[Tuple[str, str]], bytes]:
        parts = urlsplit(target)  # absolute form (via proxy) or origin form
        path = re.sub(r"^/api/v3(?=/)", "", parts.path).rstrip("/") or "/"
        # A slow endpoint: the wait is outside the lock, so other requests
        # (the server answers each in a thread) go on meanwhile.
        wait = max((s for m, pattern, s in list(self._delays)
                    if (not m or m == method) and re.search(pattern, path)), default=0.0)
        if wait:
            self._stopping.wait(wait)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        with self._lock:
            extra: List[Tuple[str, str]] = []
            counted = path != "/rate_limit"
            if int(self.clock()) >= self._rl_reset:  # a new rate-limit window
                self._rl_remaining, self._rl_reset = self._rl_limit, int(self.clock()) + 3600
            try:
                if self._outage or self._failures:
                    status = self._outage or self._failures.pop(0)
                    raise HTTPError(status, "Bad credentials" if status == 401
                                    else responses.get(status, "Error"))
                auth = headers.get("Authorization", "").strip()
                if not auth:
                    raise HTTPError(401, "Requires authentication")
                if self._tokens is not None and auth.split(None, 1)[-1] not in self._tokens:
                    raise HTTPError(401, "Bad credentials")
                if counted and self._rl_remaining <= 0:
                    raise HTTPError(403, "API rate limit exceeded for user ID 1.",
                                    docs=RATE_LIMIT_DOCS)
                raw_answer = next((a for k, a in self._overrides.items()
                                   if k.split(" ", 1)[0] in ("*", method)
                                   and re.fullmatch(k.split(" ", 1)[1], path)), None)
                if raw_answer is not None:
                    return self._raw(method, path, query, raw_answer)
                try:
                    payload = json.loads(raw) if raw.strip() else {}
                except ValueError:
                    payload = None
                if isinstance(payload, list):  # POST .../labels also takes a bare array
                    payload = {"labels": payload}
                if not isinstance(payload, dict):
                    raise HTTPError(400, "Problems parsing JSON")
                status, data, extra = self._route(method, path, query, payload)
            except HTTPError as e:
                status = e.status
                data = {"message": e.message, "documentation_url": e.docs, "status": str(status)}
                if e.errors:
                    data["errors"] = e.errors
            body = b"" if data is None else json.dumps(data, separators=(",", ":")).encode()
            if method == "GET" and 200 <= status < 300:
                etag = '"%s"' % hashlib.md5(body).hexdigest()
                extra.append(("ETag", etag))
                sent = headers.get("If-None-Match", "")
                if etag in [t.strip().replace("W/", "", 1) for t in sent.split(",")]:
                    status, body, counted = 304, b"", False
            if counted and self._rl_remaining > 0:
                self._rl_remaining -= 1
            self._requests.append(RequestRecord(method, path, query, status, counted))
            out = [("X-RateLimit-Limit", str(self._rl_limit)),
                   ("X-RateLimit-Remaining", str(self._rl_remaining)),
                   ("X-RateLimit-Used", str(self._rl_limit - self._rl_remaining)),
                   ("X-RateLimit-Reset", str(self._rl_reset)),
                   ("X-RateLimit-Resource", "core"),
                   ("X-GitHub-Media-Type", "github.v3; format=json")] + extra
            if status not in (204, 304):
                out += [("Content-Type", "application/json; charset=utf-8"),
                        ("Content-Length", str(len(body)))]
            return status, out, body

    def _raw(self, method: str, path: str, query: Dict[str, str], answer: Tuple[int, bytes, str]
             ) -> Tuple[int, List[Tuple[str, str]], bytes]:
        """An answer_raw answer: counted and rate-limited like any other."""
        status, body, content_type = answer
        if self._rl_remaining > 0:
            self._rl_remaining -= 1
        self._requests.append(RequestRecord(method, path, query, status, True))
        return status, [("X-RateLimit-Limit", str(self._rl_limit)),
                        ("X-RateLimit-Remaining", str(self._rl_remaining)),
                        ("X-RateLimit-Reset", str(self._rl_reset)),
                        ("Content-Type", content_type), ("Content-Length", str(len(body)))], body

    def _route(self, method: str, path: str, query: Dict[str, str], payload: Any
               ) -> Tuple[int, Any, List[Tuple[str, str]]]:
        if path == "/user" and method == "GET":
            return 200, dict(self._user(self.operator), name=None, email=None), []
        if path == "/rate_limit" and method == "GET":
            rate = self._rate()
            return 200, {"resources": {"core": rate}, "rate": rate}, []
        if path == "/graphql" and method == "POST":
            return self._graphql(payload)
        m = (re.fullmatch(r"/repos/([^/]+)/([^/]+)(/.*)?", path)
             or re.fullmatch(r"/repositories/(\d+)()(/.*)?", path))
        if not m:
            raise _not_found()
        if m.group(2):
            if ("%s/%s" % (m.group(1), m.group(2))).lower() != self.repo.lower():
                raise _not_found()
        elif int(m.group(1)) != self._repo_id:
            raise _not_found()
        sub = m.group(3) or ""
        self._sync_heads()
        for verb, pattern, handler in _REPO_ROUTES:
            hit = re.fullmatch(pattern, sub)
            if hit and verb == method:
                args = [unquote(g) for g in hit.groups()]
                return getattr(self, "_api_" + handler)(query, payload, *args)
        raise _not_found()

    def _graphql(self, payload: dict) -> Tuple[int, Any, List[Tuple[str, str]]]:
        """The one GraphQL query the coordinator makes: an issue's body edit
        history (the REST API has no editor of a body). Recognised by its
        parts, not parsed: `repository(owner:, name:)`, `issue(number:)`,
        and under it `lastEditedAt`, `editor` and any number of
        `ALIAS: userContentEdits(first|last: N)`, each answered with
        `totalCount` and `nodes` of {editedAt, editor {login, __typename}},
        newest first. Arguments may be literals or $variables. GraphQL
        answers 200 also for errors, with an `errors` list."""
        query = str(payload.get("query") or "")
        variables = payload.get("variables") or {}

        def arg(name: str) -> Any:
            m = re.search(r"\b%s\s*:\s*(\$\w+|\"[^\"]*\"|\d+)" % name, query)
            if not m:
                return None
            v = m.group(1)
            return variables.get(v[1:]) if v.startswith("$") else v.strip('"') if v.startswith('"') else int(v)
        if "repository" not in query or "issue" not in query:
            return 200, {"errors": [{"message": "fakegithub: only an issue's edit history is served"}]}, []
        owner, name, number = arg("owner"), arg("name"), arg("number")
        rec = self._issues.get(int(number)) if str(number).isdigit() else None
        if ("%s/%s" % (owner, name)).lower() != self.repo.lower():
            return 200, {"data": {"repository": None}, "errors": [{
                "type": "NOT_FOUND", "path": ["repository"],
                "message": "Could not resolve to a Repository with the name '%s/%s'." % (owner, name)}]}, []
        if rec is None or rec["pull"]:
            return 200, {"data": {"repository": {"issue": None}}, "errors": [{
                "type": "NOT_FOUND", "path": ["repository", "issue"],
                "message": "Could not resolve to an Issue with the number of %s." % number}]}, []

        def actor(login: str) -> dict:
            return {"login": login, "__typename": self._user(login)["type"]}
        edits = [{"editedAt": _iso(e["at"]), "editor": actor(e["editor"])} for e in reversed(rec["edits"])]
        issue: Dict[str, Any] = {
            "lastEditedAt": edits[0]["editedAt"] if edits else None,
            "editor": edits[0]["editor"] if edits else None}
        for alias, end, count in re.findall(
                r"(?:(\w+)\s*:\s*)?userContentEdits\s*\(\s*(first|last)\s*:\s*(\d+)\s*\)", query):
            chosen = edits[:int(count)] if end == "first" else edits[-int(count):] if int(count) else []
            issue[alias or "userContentEdits"] = {"totalCount": len(edits), "nodes": chosen}
        return 200, {"data": {"repository": {"issue": issue}}}, []

    def _paginate(self, items: List[Any], query: Dict[str, str], sub: str, render: Any = None
                  ) -> Tuple[int, Any, List[Tuple[str, str]]]:
        """One page of `items` and its Link header; `render`, if given, turns
        the page's items (only those) into JSON."""
        def number(key: str, default: int) -> int:
            try:
                return int(query.get(key, default))
            except ValueError:
                return default
        per_page = min(max(number("per_page", 30), 1), 100)
        page = max(number("page", 1), 1)
        last = max(1, -(-len(items) // per_page))

        def link(p: int, rel: str) -> str:
            q = dict(query, page=str(p))
            return '<%s/repositories/%d%s?%s>; rel="%s"' % (
                API, self._repo_id, sub, urlencode(q, safe=",:"), rel)
        links = ([link(page - 1, "prev")] if page > 1 else []) + (
            [link(page + 1, "next"), link(last, "last")] if page < last else []) + (
            [link(1, "first")] if page > 1 else [])
        chunk = items[(page - 1) * per_page:page * per_page]
        if render is not None:
            chunk = [render(x) for x in chunk]
        return 200, chunk, [("Link", ", ".join(links))] if links else []

    @staticmethod
    def _sorted(recs: List[dict], query: Dict[str, str]) -> List[dict]:
        key = {"updated": "updated"}.get(query.get("sort", ""), "created")
        return sorted(recs, key=lambda r: (r[key], r["number"]),
                      reverse=query.get("direction", "desc") != "asc")

    # -- endpoint handlers: _api_NAME(query, payload, *path args) -> (status, data, headers) --

    def _api_get_repo(self, q: dict, p: Any):
        role = ROLES[self._perms.get(self.operator, "read")]
        return 200, {
            "id": self._repo_id, "node_id": "R_%d" % self._repo_id, "name": self.name,
            "full_name": self.repo, "private": False, "owner": self._user(self.owner),
            "html_url": "%s/%s" % (WEB, self.repo), "description": None, "fork": False,
            "url": self._repo_url, "default_branch": "main", "visibility": "public",
            "open_issues_count": sum(1 for r in self._issues.values() if r["state"] == "open"),
            "permissions": {"admin": role == "admin", "maintain": role == "admin",
                            "push": role in ("admin", "write"), "triage": role != "none",
                            "pull": role != "none"}}, []

    def _api_list_issues(self, q: dict, p: Any):
        state = q.get("state", "open")
        wanted = [x.strip().lower() for x in q.get("labels", "").split(",") if x.strip()]
        recs = [r for r in self._issues.values()
                if state in ("all", r["state"])
                and all(w in [x.lower() for x in r["labels"]] for w in wanted)
                and (not q.get("creator") or r["author"] == q["creator"])
                and (not q.get("since") or _iso(r["updated"]) >= q["since"])]
        return self._paginate([self._render_issue(r) for r in self._sorted(recs, q)], q, "/issues")

    def _api_create_issue(self, q: dict, p: Any):
        if not p.get("title"):
            raise _invalid("Issue", field="title", code="missing_field")
        n = self.add_issue(str(p["title"]), p.get("body") or "", author=self.operator,
                           labels=p.get("labels") or ())
        data = self._render_issue(self._issues[n])
        return 201, data, [("Location", data["url"])]

    def _api_get_issue(self, q: dict, p: Any, n: str):
        return 200, self._render_issue(self._get(int(n))), []

    def _api_patch_issue(self, q: dict, p: Any, n: str):
        rec = self._get(int(n))
        if "title" in p:
            rec["title"] = p["title"] or ""
        if "labels" in p:
            wanted = [x["name"] if isinstance(x, dict) else x for x in p["labels"]]
            for name in [x for x in rec["labels"] if x.lower() not in [w.lower() for w in wanted]]:
                self._remove_label(int(n), name, self.operator, bump=False)
            self._add_labels(int(n), wanted, self.operator, bump=False)
        if p.get("state") == "closed" and rec["state"] == "open":
            self._close(rec)  # bumps updated_at
        else:
            if p.get("state") == "open":
                rec["state"], rec["closed"] = "open", None
            rec["updated"] = self._stamp(rec["updated"])
        if "body" in p:
            self._edit_body(rec, p["body"] or "", self.operator)  # the token's account edits
        return 200, self._render_issue(rec), []

    def _api_list_events(self, q: dict, p: Any, n: str):
        self._get(int(n))
        return self._paginate([self._render_event(e) for e in self._events[int(n)]],
                              q, "/issues/%s/events" % n)

    def _api_list_repo_events(self, q: dict, p: Any):
        """Every issue's and pull request's events, newest first, each with
        its `issue` (as GitHub's repository-wide feed sends them)."""
        events = sorted(((e, number) for number, evs in self._events.items() for e in evs),
                        key=lambda x: x[0]["id"], reverse=True)

        def render(item: Tuple[dict, int]) -> dict:
            return dict(self._render_event(item[0]), issue=self._render_issue(self._issues[item[1]]))
        return self._paginate(events, q, "/issues/events", render)

    def _api_list_issue_labels(self, q: dict, p: Any, n: str):
        return 200, [self._render_label(x) for x in self._get(int(n))["labels"]], []

    def _api_add_issue_labels(self, q: dict, p: Any, n: str):
        names = p.get("labels")
        if not isinstance(names, list) or not names:
            raise _invalid("Label", field="labels", code="missing_field")
        self._add_labels(int(n), [x["name"] if isinstance(x, dict) else x for x in names],
                         self.operator)
        return self._api_list_issue_labels(q, p, n)

    def _api_remove_issue_label(self, q: dict, p: Any, n: str, name: str):
        self._remove_label(int(n), name, self.operator)
        return self._api_list_issue_labels(q, p, n)

    def _api_list_comments(self, q: dict, p: Any, n: str):
        self._get(int(n))
        return self._paginate(self.comments(int(n)), q, "/issues/%s/comments" % n)

    def _api_create_comment(self, q: dict, p: Any, n: str):
        rec = self._get(int(n))
        if not p.get("body"):
            raise _invalid("IssueComment", field="body", code="missing_field")
        cid = self._new_comment(rec, self.operator, p["body"])
        data = self._render_comment(self._comments[cid])
        return 201, data, [("Location", data["url"])]

    def _comment(self, cid: str) -> dict:
        if int(cid) not in self._comments:
            raise _not_found()
        return self._comments[int(cid)]

    def _api_get_comment(self, q: dict, p: Any, cid: str):
        return 200, self._render_comment(self._comment(cid)), []

    def _api_patch_comment(self, q: dict, p: Any, cid: str):
        c = self._comment(cid)
        if not p.get("body"):
            raise _invalid("IssueComment", field="body", code="missing_field")
        c["body"], c["updated"] = p["body"], self._stamp(c["updated"])
        return 200, self._render_comment(c), []

    def _api_delete_comment(self, q: dict, p: Any, cid: str):
        del self._comments[self._comment(cid)["id"]]
        return 204, None, []

    def _api_get_permission(self, q: dict, p: Any, login: str):
        role = self._perms.get(login, "read")  # non-collaborator, public repo
        perm = ROLES[role]
        user = dict(self._user(login), role_name=role, permissions={
            "admin": perm == "admin", "maintain": role in ("admin", "maintain"),
            "push": perm in ("admin", "write"), "triage": role not in ("read", "none"),
            "pull": perm != "none"})
        return 200, {"permission": perm, "role_name": role, "user": user}, []

    def _api_list_labels(self, q: dict, p: Any):
        return self._paginate([self._render_label(x) for x in self._labels], q, "/labels")

    def _api_get_label(self, q: dict, p: Any, name: str):
        if name.lower() not in self._labels:
            raise _not_found()
        return 200, self._render_label(name), []

    def _api_create_label(self, q: dict, p: Any):
        name = p.get("name")
        if not name:
            raise _invalid("Label", field="name", code="missing_field")
        if name.lower() in self._labels:
            raise _invalid("Label", field="name", code="already_exists")
        self._label(name, p.get("color", "ededed").lstrip("#"), p.get("description"))
        data = self._render_label(name)
        return 201, data, [("Location", data["url"])]

    def _api_list_pulls(self, q: dict, p: Any):
        state, head, branch, owner = q.get("state", "open"), q.get("head", ""), "", ""
        if ":" in head:  # GitHub ignores a head filter without the OWNER: prefix
            owner, _, branch = head.partition(":")
        recs = [r for r in self._issues.values() if r["pull"]
                and state in ("all", r["state"])
                and (":" not in head or (r["pull"]["head"] == branch and owner.lower() == (
                    r["pull"].get("fork") or self.owner).lower()))
                and (not q.get("base") or r["pull"]["base"] == q["base"])]
        return self._paginate([self._render_pull(r) for r in self._sorted(recs, q)], q, "/pulls")

    def _api_get_pull(self, q: dict, p: Any, n: str):
        rec = self._get(int(n))
        if not rec["pull"]:
            raise _not_found()
        return 200, self._render_pull(rec, full=True), []

    def _api_create_pull(self, q: dict, p: Any):
        for key in ("head", "base"):
            if not p.get(key):
                raise _invalid("PullRequest", field=key, code="missing_field")
        head, base = p["head"], p["base"]
        if p.get("draft") and not self.drafts_supported:
            raise HTTPError(422, "Draft pull requests are not supported in this repository.",
                            docs=DOCS + "/pulls/pulls#create-a-pull-request")
        if ":" in head:
            owner, _, head = head.partition(":")
            if owner.lower() != self.owner.lower():
                raise _invalid("PullRequest", field="head", code="invalid")
        for r in self._issues.values():
            if r["pull"] and r["state"] == "open" and r["pull"]["head"] == head \
                    and r["pull"]["base"] == base and not r["pull"].get("fork"):
                raise _invalid("PullRequest", code="custom", message=(
                    "A pull request already exists for %s:%s." % (self.owner, head)))
        fields = self._pull_fields(head, base, bool(p.get("draft")))
        if self.origin_path and not fields["base_sha"]:
            raise _invalid("PullRequest", field="base", code="invalid")
        if self.origin_path and not fields["sha"]:
            raise _invalid("PullRequest", field="head", code="invalid")
        if fields["commits"] == 0:
            raise _invalid("PullRequest", code="custom",
                           message="No commits between %s and %s" % (base, head))
        number = self.add_issue(p.get("title") or head, p.get("body") or "", author=self.operator)
        self._issues[number]["pull"] = fields
        data = self._render_pull(self._issues[number], full=True)
        return 201, data, [("Location", data["url"])]

    def _api_list_reviews(self, q: dict, p: Any, n: str):
        rec = self._get(int(n))
        if not rec["pull"]:
            raise _not_found()
        reviews = [self._render_review(r) for r in sorted(self._reviews.values(), key=lambda r: r["id"])
                   if r["pr"] == int(n)]
        return self._paginate(reviews, q, "/pulls/%s/reviews" % n)

    def _api_create_review(self, q: dict, p: Any, n: str):
        """The token's account submits a review (no pending reviews here:
        an event is required)."""
        state = {"REQUEST_CHANGES": "CHANGES_REQUESTED", "APPROVE": "APPROVED",
                 "COMMENT": "COMMENTED"}.get(str(p.get("event", "")))
        if state is None:
            raise _invalid("PullRequestReview", field="event", code="missing_field")
        rid = self._new_review(self._get(int(n)), self.operator, state, str(p.get("body") or ""),
                               [c for c in p.get("comments") or [] if isinstance(c, dict)])
        return 200, self._render_review(self._reviews[rid]), []

    def _review_comments_answer(self, q: dict, recs: List[dict], sub: str):
        """A review comment list: `since` (updated at or after), sorted by
        id, or by `sort` (created, updated) in `direction` (default desc)."""
        recs = [c for c in recs if not q.get("since") or _iso(c["updated"]) >= q["since"]]
        key = {"created": "created", "updated": "updated"}.get(q.get("sort", ""))
        if key:
            recs.sort(key=lambda c: (c[key], c["id"]), reverse=q.get("direction", "desc") != "asc")
        else:
            recs.sort(key=lambda c: c["id"])
        return self._paginate(recs, q, sub, self._render_review_comment)

    def _api_list_review_comments(self, q: dict, p: Any, n: str):
        rec = self._get(int(n))
        if not rec["pull"]:
            raise _not_found()
        return self._review_comments_answer(
            q, [c for c in self._review_comments.values() if c["pr"] == int(n)], "/pulls/%s/comments" % n)

    def _api_list_repo_review_comments(self, q: dict, p: Any):
        return self._review_comments_answer(q, list(self._review_comments.values()), "/pulls/comments")


# (method, path under /repos/{owner}/{repo}, FakeGitHub._api_<handler>); first match wins.
_REPO_ROUTES = [
    ("GET", r"", "get_repo"),
    ("GET", r"/issues", "list_issues"),
    ("GET", r"/issues/events", "list_repo_events"),
    ("POST", r"/issues", "create_issue"),
    ("GET", r"/issues/(\d+)", "get_issue"),
    ("PATCH", r"/issues/(\d+)", "patch_issue"),
    ("GET", r"/issues/(\d+)/(?:events|timeline)", "list_events"),
    ("GET", r"/issues/(\d+)/labels", "list_issue_labels"),
    ("POST", r"/issues/(\d+)/labels", "add_issue_labels"),
    ("DELETE", r"/issues/(\d+)/labels/([^/]+)", "remove_issue_label"),
    ("GET", r"/issues/(\d+)/comments", "list_comments"),
    ("POST", r"/issues/(\d+)/comments", "create_comment"),
    ("GET", r"/issues/comments/(\d+)", "get_comment"),
    ("PATCH", r"/issues/comments/(\d+)", "patch_comment"),
    ("DELETE", r"/issues/comments/(\d+)", "delete_comment"),
    ("GET", r"/collaborators/([^/]+)/permission", "get_permission"),
    ("GET", r"/labels", "list_labels"),
    ("POST", r"/labels", "create_label"),
    ("GET", r"/labels/([^/]+)", "get_label"),
    ("GET", r"/pulls", "list_pulls"),
    ("POST", r"/pulls", "create_pull"),
    ("GET", r"/pulls/(\d+)", "get_pull"),
    ("GET", r"/pulls/comments", "list_repo_review_comments"),
    ("GET", r"/pulls/(\d+)/reviews", "list_reviews"),
    ("POST", r"/pulls/(\d+)/reviews", "create_review"),
    ("GET", r"/pulls/(\d+)/comments", "list_review_comments"),
]


# -- HTTP plumbing ------------------------------------------------------------

class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # many gh processes may connect at once
    fake: FakeGitHub


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response has a length
    server_version, sys_version = "GitHub.com", ""
    timeout = 30  # idle keep-alive connections release their thread
    server: _Server

    def _read_chunked(self) -> bytes:
        body = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return body
            body += self.rfile.read(size)
            self.rfile.readline()  # the CRLF after each chunk

    def _dispatch(self) -> None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raw = self._read_chunked()  # gh sends `--input -` bodies chunked
        else:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
        try:
            status, headers, body = self.server.fake._handle(
                self.command, self.path, self.headers, raw)
        except Exception as e:  # deliberate catch-all: a bug in the fake is a loud 500, not a hang
            traceback.print_exc()
            body = json.dumps({"message": "fakegithub bug: %r" % e}).encode()
            status, headers = 500, [("Content-Type", "application/json; charset=utf-8"),
                                    ("Content-Length", str(len(body)))]
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get("FAKEGITHUB_DEBUG") == "1":
            sys.stderr.write("fakegithub: %s\n" % (format % args))


# -- CLI -----------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None) -> int:
    """Serve a fake GitHub until Ctrl-C and print the environment gh needs."""
    ap = argparse.ArgumentParser(prog="python -m adws.sandbox.fakegithub", description=main.__doc__)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--repo", default="acme/widgets")
    ap.add_argument("--origin", help="bare git repo that POST /pulls checks branches against")
    ap.add_argument("--label", default="tac", help="label given to each --issue")
    ap.add_argument("--issue", action="append", default=[], metavar="TITLE")
    args = ap.parse_args(argv)
    fake = FakeGitHub(args.repo, origin_path=args.origin)
    fake.port = args.port
    for title in args.issue:
        fake.add_issue(title, labels=[args.label])
    fake.start()
    try:
        for key, value in fake.env(tempfile.mkdtemp(prefix="gh-config-")).items():
            print("export %s=%s" % (key, value))
        print("# e.g. gh api repos/%s/issues   (Ctrl-C stops)" % args.repo, flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
