"""GitHub, as far as the coordinator needs it: REST calls through `gh api`.

Only REST through `gh api` (the `gh` on PATH, inheriting GH_HOST and
GH_TOKEN): `gh issue list` / `gh pr list` go through GraphQL and their
--json fields differ between gh versions (Raspberry Pi OS ships gh 2.23).
`-i` puts the status line first, so every outcome is read from the HTTP
status (or gh's exit status 4, "no token"), never from gh's error text, and
one error type, GitHubError, carries it; its flags say what kind of failure
it is (auth, unexpected, transient, already_exists, drafts_unsupported), the
last two read from GitHub's JSON answer. An answer of the wrong shape is an
error, never an empty list. Lists are fetched with the ETag of the last
answer: an unchanged list costs a 304, which does not count against the rate
limit. Writes are tried again after a 5xx or a failed connection.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

COMMENT_MARKER = "<!-- tac-coordinator -->"  # every comment we write carries it


class GitHubError(Exception):
    """A failed GitHub call. status 0 means no HTTP answer at all (network,
    gh missing, timeout). status 401 also stands for gh refusing to send a
    request for want of a token (its exit status 4): both mean "log in".
    `errors` holds the `errors` items of GitHub's answer, if any."""

    def __init__(self, status: int, message: str, errors: Optional[List[dict]] = None,
                 unexpected: bool = False, transient: Optional[bool] = None):
        auth = status == 401
        super().__init__(f"HTTP {status}: {message}" if status and not auth and not unexpected else message)
        self.status = status
        self.message = message
        self.errors = errors or []
        self.unexpected = unexpected   # an answer of the wrong shape (not JSON, a dict for a list, ...)
        self._transient = transient    # None: decided by the status

    @property
    def auth(self) -> bool:
        """Not logged in or the token was refused: a person must run
        `gh auth login`; waiting will not help."""
        return self.status == 401

    @property
    def unreachable(self) -> bool:
        """GitHub cannot be used right now (network, outage, auth, rate
        limit, answers of the wrong shape), as opposed to one request it
        refused (404, 422). `auth` says which of these needs a person."""
        return (self.status == 0 or self.status >= 500 or self.status in (401, 403, 429)
                or self.unexpected)

    @property
    def transient(self) -> bool:
        """Worth one more try soon: a 5xx or a failed connection. Never a
        4xx, an answer of the wrong shape, a timeout (the request may still
        be applied, and the loop has waited long enough) or a missing gh."""
        if self._transient is not None:
            return self._transient
        return not self.unexpected and (self.status == 0 or self.status >= 500)

    @property
    def already_exists(self) -> bool:
        """422 because the thing exists (a pull request for this head, a
        label of this name): the caller looks it up instead."""
        return self.status == 422 and any(
            e.get("code") == "already_exists" or "already exists" in str(e.get("message", ""))
            for e in self.errors)

    @property
    def drafts_unsupported(self) -> bool:
        """422 for a draft pull request where the plan has none (a private
        repository of a Free or Pro account)."""
        return self.status == 422 and self.message.startswith("Draft pull requests are not supported")


NOT_AUTHENTICATED = "not authenticated: run gh auth login"
# Where a token in the environment overrides `gh auth login` (gh's own order).
_TOKEN_VARS = ("GH_TOKEN", "GITHUB_TOKEN", "GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN")


@dataclass
class Response:
    status: int
    headers: Dict[str, str]
    data: Any


def parse_gh_include(stdout: str) -> Tuple[int, Dict[str, str], str]:
    """Split `gh api -i` output into (status, headers, body). The status
    comes from the first line, e.g. 'HTTP/1.1 304 Not Modified'."""
    head, sep, body = stdout.partition("\r\n\r\n")
    if not sep:
        head, sep, body = stdout.partition("\n\n")
    lines = head.splitlines()
    m = re.match(r"HTTP/[\d.]+\s+(\d{3})", lines[0]) if lines else None
    if not m:
        return 0, {}, stdout
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(m.group(1)), headers, body


class GitHub:
    """The repository on GitHub, as far as the coordinator needs it."""

    PERMISSION_TTL = 600.0
    WRITE_RETRY_DELAYS = (1.0, 4.0)  # seconds before the 2nd and 3rd try of a write
    FEED_MAX_PAGES = 20  # 2,000 events; past that, per-issue look-ups are the cheaper way

    def __init__(self, repo: str, gh: str = "gh", env: Optional[Dict[str, str]] = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep):
        self.repo = repo
        self.owner = repo.split("/", 1)[0]
        self.gh = gh
        self.env = env
        self.clock = clock
        self.sleep = sleep
        self.rate_remaining: Optional[int] = None
        self.rate_reset: Optional[int] = None
        self.counted = 0          # requests that count against the rate limit
        self.not_modified = 0     # 304 answers, which do not
        self._etags: Dict[str, Tuple[str, Any]] = {}
        self._permissions: Dict[str, Tuple[float, str]] = {}
        self._labellers: Dict[Tuple[int, str], Tuple[str, str, str]] = {}
        # The repository-wide events feed, as far as read: the latest
        # application of _feed_label per issue, for every event from the
        # newest read (_feed_top, an event id) back to where reading stopped.
        self._feed_label = ""
        self._feed: Dict[int, Tuple[str, str, str]] = {}
        self._feed_top: Optional[int] = None
        self._feed_etag = ""
        self._login = ""
        self._pull_numbers: set = set()  # PRs whose conversation is cached (forget_pulls_except)

    # -- the one way in --------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None, etag: str = "") -> Response:
        argv = [self.gh, "api", "-i", "--method", method, path,
                "-H", "Accept: application/vnd.github+json"]
        if etag:
            argv += ["-H", f"If-None-Match: {etag}"]
        stdin = None
        if body is not None:
            # Bodies go through stdin: issue text never reaches argv.
            argv += ["--input", "-"]
            stdin = json.dumps(body)
        try:
            proc = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                                  timeout=60, env=self.env)
        except FileNotFoundError:
            raise GitHubError(0, f"{self.gh}: command not found (install gh: apt-get install gh)",
                              transient=False)
        except subprocess.TimeoutExpired:
            raise GitHubError(0, f"gh api {method} {path}: no answer in 60 s", transient=False)
        status, headers, text = parse_gh_include(proc.stdout)
        if "x-ratelimit-remaining" in headers:
            try:
                self.rate_remaining = int(headers["x-ratelimit-remaining"])
                self.rate_reset = int(headers.get("x-ratelimit-reset", "0")) or None
            except ValueError:
                pass
        if status == 304:
            self.not_modified += 1
            return Response(304, headers, None)
        if status == 0:
            if proc.returncode == 4:
                # gh's "authentication required": it found no token and sent nothing.
                raise GitHubError(401, NOT_AUTHENTICATED)
            raise GitHubError(0, f"gh api {method} {path}: {_first_line(proc.stderr)}")
        self.counted += 1
        try:
            data = json.loads(text) if text.strip() else None
        except ValueError:
            if status < 400:
                raise _unexpected(status, method, path, f"not JSON: {_first_line(text)[:60]!r}")
            data = None  # an error page from a proxy: the status says enough
        if status >= 400:
            raise self._error(status, data)
        return Response(status, headers, data)

    def _error(self, status: int, data: Any) -> GitHubError:
        """The GitHubError for an error answer, its message one line."""
        message = str(data.get("message", "")) if isinstance(data, dict) else ""
        errors = [e for e in data.get("errors") or [] if isinstance(e, dict)] if isinstance(data, dict) else []
        details = [str(e.get("message") or e.get("code", "")) for e in errors]
        if any(details):
            message = f"{message}: {'; '.join(d for d in details if d)}"
        message = _first_line(message) if message else _phrase(status)
        if status == 401:
            env = os.environ if self.env is None else self.env
            token = next((v for v in _TOKEN_VARS if env.get(v)), "")
            fix = f", or fix {token}" if token else ""
            return GitHubError(401, f"{NOT_AUTHENTICATED}{fix} (GitHub: {message})")
        if status in (403, 429) and self.rate_remaining == 0:
            message = f"rate limit exhausted until {time.strftime('%H:%M', time.localtime(self.rate_reset or 0))}"
        return GitHubError(status, message, errors)

    def _write(self, method: str, path: str, body: Any = None) -> Response:
        """A write, tried again after a 5xx or a failed connection (with the
        delays in WRITE_RETRY_DELAYS, through self.sleep); a 4xx is an
        answer and is never repeated."""
        for delay in [*self.WRITE_RETRY_DELAYS, None]:
            try:
                return self.api(method, path, body=body)
            except GitHubError as e:
                if delay is None or not e.transient:
                    raise
                self.sleep(delay)
        raise AssertionError("unreachable")  # the last round returns or raises

    def get_conditional(self, path: str, pages: int = 0) -> List[Any]:
        """GET a list with the ETag of the last answer: an unchanged list
        costs a 304, which does not count against the rate limit. Each page
        of a long list (rare: more than 100 labelled issues) is asked with
        its own ETag: the first page stays the same when an older issue gets
        the label, which lands on a later page. pages > 0 reads no further."""
        data: List[Any] = []
        read = 0
        while path and not (pages and read == pages):
            read += 1
            etag, cached = self._etags.get(path, ("", None))
            resp = self.api("GET", path, etag=etag)
            if resp.status == 304 and cached is not None:
                page, link = cached
            else:
                page, link = _shape(resp.status, "GET", path, resp.data, list), resp.headers.get("link", "")
                if resp.headers.get("etag"):
                    self._etags[path] = (resp.headers["etag"], (page, link))
            data += page
            path = _next_link(link)
        return data

    # -- what the coordinator asks --------------------------------------------
    def labelled_issues(self, label: str) -> List[dict]:
        """Open issues with the label; pull requests (which the issues list
        also returns) are left out."""
        path = f"repos/{self.repo}/issues?state=open&labels={_quote(label)}&per_page=100"
        items = _items("GET", path, self.get_conditional(path), ISSUE_KEYS)
        return [i for i in items if "pull_request" not in i]

    def labeller(self, number: int, label: str, updated_at: str) -> Optional[Tuple[str, str, str]]:
        """(login, user type, time) of whoever last applied `label`, from the
        issue's events. Cached per issue state: relabelling changes updated_at."""
        key = (number, updated_at)
        if key in self._labellers:
            return self._labellers[key]
        path = f"repos/{self.repo}/issues/{number}/events?per_page=100"
        found = None
        for ev in _items("GET", path, self.get_conditional(path), EVENT_KEYS):
            if _labelled_with(ev, label):
                found = _who(ev)
        if found:
            self._labellers[key] = found
        return found

    def labellers(self, label: str, issues: Iterable[dict]) -> Dict[int, Tuple[str, str, str]]:
        """labeller() for many issues at once: number -> (login, user type,
        time) of whoever last applied `label`, read from the repository-wide
        issue events feed. One request covers 100 events of any issues, so
        a thousand newly labelled issues cost about ten requests, not a
        thousand; an unchanged feed costs a 304. Each answer is also cached
        for labeller(number, label, updated_at), so calling this first and
        labeller() per issue afterwards asks GitHub per issue only for what
        the feed did not cover (an issue labelled before the events read).
        `issues` are the listing's dicts (number, updated_at, created_at)."""
        out: Dict[int, Tuple[str, str, str]] = {}
        want: Dict[int, str] = {}
        since = ""
        for issue in issues:
            n, updated = issue["number"], issue.get("updated_at", "")
            if (n, updated) in self._labellers:
                out[n] = self._labellers[(n, updated)]
            else:
                want[n] = updated
                # A label cannot be older than its issue: reading stops there.
                created = str(issue.get("created_at") or "")
                since = created if len(want) == 1 else min(since, created)
        if not want:
            return out
        self._read_feed(label, set(want), since)
        for n, updated in want.items():
            if n in self._feed:
                out[n] = self._labellers[(n, updated)] = self._feed[n]
        return out

    def _read_feed(self, label: str, want: set, since: str) -> None:
        """Bring _feed up to date: newest first, stopping at the events an
        earlier read saw, at events older than `since`, once every number in
        `want` is found, at the end of the feed or after FEED_MAX_PAGES."""
        if label.lower() != self._feed_label:
            self._feed_label, self._feed, self._feed_top, self._feed_etag = label.lower(), {}, None, ""
        path = first = f"repos/{self.repo}/issues/events?per_page=100"
        found: Dict[int, Tuple[str, str, str]] = {}
        top: Optional[int] = None
        joined = False
        for _ in range(self.FEED_MAX_PAGES):
            # Only the first page is conditional: later pages shift as events arrive.
            resp = self.api("GET", path, etag=self._feed_etag if path == first and self._feed_top else "")
            if resp.status == 304:
                return  # nothing happened since the last read
            if path == first:
                self._feed_etag = resp.headers.get("etag", "")
            page = _items("GET", path, _shape(resp.status, "GET", path, resp.data, list), FEED_KEYS)
            done = False
            for ev in page:
                eid = ev.get("id") if isinstance(ev.get("id"), int) else None
                if top is None:
                    top = eid
                if eid is not None and self._feed_top is not None and eid <= self._feed_top:
                    joined = done = True
                    break
                if since and str(ev["created_at"]) < since:
                    done = True
                    break
                number = (ev.get("issue") or {}).get("number")
                if _labelled_with(ev, label) and isinstance(number, int) and number not in found:
                    found[number] = _who(ev)  # newest first: the first one seen is the latest
            path = _next_link(resp.headers.get("link", ""))
            if done or not path or want <= found.keys():
                break
        if joined:
            self._feed.update(found)
        else:
            # What lies between this read and the last one was not read: keep only this read.
            self._feed = found
        if top is not None:
            self._feed_top = top

    def permission(self, login: str) -> str:
        """admin / write / read / none (maintain reports as write, triage as read)."""
        now = self.clock()
        hit = self._permissions.get(login)
        if hit and now - hit[0] < self.PERMISSION_TTL:
            return hit[1]
        path = f"repos/{self.repo}/collaborators/{_quote(login)}/permission"
        try:
            resp = self.api("GET", path)
            perm = str(_shape(resp.status, "GET", path, resp.data, dict, ("permission",))["permission"])
        except GitHubError as e:
            if e.status != 404:
                raise
            perm = "none"
        self._permissions[login] = (now, perm)
        return perm

    def recent_pulls(self) -> List[dict]:
        """The 100 most recently updated pull requests in any state: one
        conditional call covers every active branch. Only the first page: a
        busy repository's thousands of PRs would cost a request per hundred
        each time a branch finishes; an older one is found after the 422."""
        path = f"repos/{self.repo}/pulls?state=all&sort=updated&direction=desc&per_page=100"
        return _items("GET", path, self.get_conditional(path, pages=1), PULL_KEYS)

    def own_head(self, pr: dict) -> bool:
        """The pull request's head branch lives in this repository, not in a
        fork: a fork's `auto/gh-N` is someone else's work, never a task's."""
        head = pr.get("head") or {}
        owner = ((head.get("repo") or {}).get("owner") or {}).get("login") \
            or str(head.get("label", "")).split(":")[0]  # repo is null once a fork is deleted
        return owner.lower() == self.owner.lower()

    def pull_heads(self) -> Dict[str, str]:
        """Head branch -> PR URL for the recent pull requests of this
        repository whose branch is in this repository (fork PRs left out)."""
        heads: Dict[str, str] = {}
        for pr in self.recent_pulls():
            if self.own_head(pr) and pr["head"].get("ref"):
                heads.setdefault(pr["head"]["ref"], pr.get("html_url", ""))
        return heads

    def forget_issues_except(self, numbers: Iterable[int]) -> None:
        """Drop cached look-ups of issues no longer listed: the caches stay
        as small as the queue, however long the daemon runs."""
        keep = set(numbers)
        events = re.compile(r"repos/[^/]+/[^/]+/issues/(\d+)/events")
        for path in list(self._etags):
            m = events.match(path)
            if m and int(m.group(1)) not in keep:
                del self._etags[path]
        for key in list(self._labellers):
            if key[0] not in keep:
                del self._labellers[key]
        for n in list(self._feed):
            if n not in keep:
                del self._feed[n]
        now = self.clock()
        for login, (at, _) in list(self._permissions.items()):
            if now - at >= self.PERMISSION_TTL:
                del self._permissions[login]

    def pulls_for_head(self, branch: str) -> List[dict]:
        """Pull requests (any state) from `branch` of this repository."""
        # head needs OWNER:BRANCH; without the owner GitHub ignores it and returns every PR.
        path = f"repos/{self.repo}/pulls?state=all&head={_quote(self.owner + ':' + branch)}"
        resp = self.api("GET", path)
        pulls = _items("GET", path, _shape(resp.status, "GET", path, resp.data, list), PULL_KEYS)
        return [pr for pr in pulls if self.own_head(pr) and pr["head"].get("ref") == branch]

    def issue(self, number: int) -> dict:
        path = f"repos/{self.repo}/issues/{number}"
        resp = self.api("GET", path)
        return _shape(resp.status, "GET", path, resp.data, dict, ISSUE_KEYS)

    def own_comments(self, number: int) -> List[Tuple[int, str]]:
        """(id, created_at) of the comments on the issue that carry our
        marker, oldest first: after a crash, to find the status comment a
        post made just before it (its id never reached tasks.md)."""
        path = f"repos/{self.repo}/issues/{number}/comments?per_page=100"
        out = []
        for c in self.get_conditional(path, pages=1):
            if isinstance(c, dict) and isinstance(c.get("id"), int) and COMMENT_MARKER in str(c.get("body") or ""):
                out.append((c["id"], str(c.get("created_at") or "")))
        return out

    # -- the status issue (adws/status_issue.py) ---------------------------------
    def login(self) -> str:
        """The token's own account (GET /user), asked once per client."""
        if not self._login:
            resp = self.api("GET", "user")
            self._login = str(_shape(resp.status, "GET", "user", resp.data, dict, ("login",))["login"])
        return self._login

    def issues_by(self, label: str, creator: str) -> List[dict]:
        """Issues in any state carrying `label` and opened by `creator`
        (pull requests left out), with the ETag of the last answer."""
        path = (f"repos/{self.repo}/issues?state=all&labels={_quote(label)}"
                f"&creator={_quote(creator)}&per_page=100")
        items = _items("GET", path, self.get_conditional(path), ISSUE_KEYS + ("user",))
        return [i for i in items if "pull_request" not in i]

    def issue_conditional(self, number: int) -> dict:
        """One issue, asked with the ETag of the last answer: unchanged, it
        costs a 304 (not counted against the rate limit) and comes from the
        cache. Any change to the issue (its body, a comment, a label) is a
        new answer."""
        path = f"repos/{self.repo}/issues/{number}"
        etag, cached = self._etags.get(path, ("", None))
        resp = self.api("GET", path, etag=etag)
        if resp.status == 304 and cached is not None:
            return cached
        issue = _shape(resp.status, "GET", path, resp.data, dict, ISSUE_KEYS + ("user",))
        if resp.headers.get("etag"):
            self._etags[path] = (resp.headers["etag"], issue)
        return issue

    def create_issue(self, title: str, body: str, labels: List[str]) -> dict:
        """Open an issue. Tried once, never again after a 5xx or a lost
        connection (GitHub may have opened it all the same): the caller
        looks for it before it opens another."""
        path = f"repos/{self.repo}/issues"
        resp = self.api("POST", path, body={"title": title, "body": body, "labels": labels})
        return _shape(resp.status, "POST", path, resp.data, dict, ISSUE_KEYS + ("user",))

    def edit_issue_body(self, number: int, body: str) -> dict:
        """Replace an issue's body (a retried write: the same body twice is
        one edit); returns the issue as GitHub now has it."""
        path = f"repos/{self.repo}/issues/{number}"
        resp = self._write("PATCH", path, {"body": body})
        return _shape(resp.status, "PATCH", path, resp.data, dict, ISSUE_KEYS)

    def body_edits(self, number: int, window: int = 20) -> dict:
        """Who edited the issue's body, and when: GraphQL, because the REST
        API has no editor of an issue body (its events and timeline record
        a title change, `renamed`, never a body edit). One query (1 point of
        GraphQL's own hourly budget) reads `window` edits from each end of
        the history, so the answer does not depend on which end GitHub puts
        the newest at. Returns {"edits": [(ISO time, login, type)] sorted
        oldest first, "total": edits in the whole history, "complete": the
        window held all of them, "editor": (login, type) or None,
        "last_edited_at": ISO time or ""}. A deleted account is login "".
        (Both ends hold the whole history while it is at most 2 * window long.)"""
        name = self.repo.split("/", 1)[1]
        query = ("query($owner: String!, $name: String!, $number: Int!) {"
                 " repository(owner: $owner, name: $name) { issue(number: $number) {"
                 " lastEditedAt editor { login __typename }"
                 f" head: userContentEdits(first: {window}) {{ totalCount nodes {{ editedAt editor {{ login __typename }} }} }}"
                 f" tail: userContentEdits(last: {window}) {{ totalCount nodes {{ editedAt editor {{ login __typename }} }} }}"
                 " } } }")
        resp = self.api("POST", "graphql", body={"query": query, "variables": {
            "owner": self.owner, "name": name, "number": number}})
        data = _shape(resp.status, "POST", "graphql", resp.data, dict)
        errors = [e for e in data.get("errors") or [] if isinstance(e, dict)]
        if errors:
            kind = str(errors[0].get("type", ""))
            status = {"NOT_FOUND": 404, "FORBIDDEN": 403, "RATE_LIMITED": 403}.get(kind, 0)
            raise GitHubError(status, f"GraphQL: {_first_line(str(errors[0].get('message', kind)))}",
                              unexpected=not status)
        issue = ((data.get("data") or {}).get("repository") or {}).get("issue")
        if not isinstance(issue, dict):
            raise _unexpected(resp.status, "POST", "graphql", "no issue in the answer")
        edits, total = set(), 0
        for end in ("head", "tail"):
            conn = issue.get(end)
            if not isinstance(conn, dict) or not isinstance(conn.get("nodes"), list):
                raise _unexpected(resp.status, "POST", "graphql", f"no {end} edits in the answer")
            total = max(total, int(conn.get("totalCount") or 0))
            for node in conn["nodes"]:
                if isinstance(node, dict) and node.get("editedAt"):
                    edits.add((str(node["editedAt"]),) + _actor(node.get("editor")))
        return {"edits": sorted(edits), "total": total, "complete": total <= 2 * window,
                "editor": _actor(issue["editor"]) if isinstance(issue.get("editor"), dict) else None,
                "last_edited_at": str(issue.get("lastEditedAt") or "")}

    # -- pull requests and their reviews (adws/followup.py) ---------------------
    # The follow-up watch reads, per poll, one conditional list of pull
    # requests sorted by update: nothing changed anywhere, a free 304. A new
    # review, review comment or conversation comment, a push, a close or a
    # merge moves a PR's updated_at and so brings it to the top; only the PRs
    # whose updated_at moved are read further, each with conditional requests
    # of its own. So an idle poll costs nothing, and a busy one costs what
    # changed, never what exists.

    def pulls_by_update(self, state: str = "all", newer_than: str = "") -> List[dict]:
        """Pull requests (`state` open, closed or all) most recently updated
        first, with the ETag of the last answer. The first page (100) is
        always read; later pages only while every PR read so far is newer
        than `newer_than` (an updated_at): more than 100 PRs changed since
        that time, and the changed ones may lie further down. With state
        "all" this is recent_pulls()'s very request, so the two share one
        cached answer."""
        path = f"repos/{self.repo}/pulls?state={_quote(state)}&sort=updated&direction=desc&per_page=100"
        keys = PULL_KEYS + ("state", "updated_at")
        pulls = _items("GET", path, self.get_conditional(path, pages=1), keys)
        link = self._etags.get(path, ("", ([], "")))[1][1]
        page = pulls
        while newer_than and page and link and all(str(p["updated_at"]) > newer_than for p in page):
            nxt = _next_link(link)
            if not nxt:
                break
            resp = self.api("GET", nxt)
            page = _items("GET", nxt, _shape(resp.status, "GET", nxt, resp.data, list), keys)
            link = resp.headers.get("link", "")
            pulls = pulls + page
        return pulls

    def pull(self, number: int) -> dict:
        """One pull request (head sha and ref, state, merged), asked with
        the ETag of the last answer: unchanged, a 304 from the cache."""
        path = f"repos/{self.repo}/pulls/{number}"
        known = self._etags.get(path)
        resp = self.api("GET", path, etag=known[0] if known else "")
        if known and resp.status == 304:
            return known[1]
        pr = _shape(resp.status, "GET", path, resp.data, dict, PULL_KEYS + ("state", "updated_at"))
        if resp.headers.get("etag"):
            self._etags[path] = (resp.headers["etag"], pr)
        return pr

    def reviews(self, number: int) -> List[dict]:
        """The pull request's reviews, oldest first: `state`
        (CHANGES_REQUESTED, COMMENTED, APPROVED, DISMISSED), `body`, `user`,
        `submitted_at`. Conditional, page by page."""
        path = f"repos/{self.repo}/pulls/{number}/reviews?per_page=100"
        return _items("GET", path, self.get_conditional(path), REVIEW_KEYS)

    def review_comments(self, number: int) -> List[dict]:
        """The pull request's review comments (on lines of its diff), oldest
        first: `path`, `line` (None once outdated), `original_line`,
        `diff_hunk`, `pull_request_review_id`, `in_reply_to_id` (replies
        only), `user`, `created_at`, `updated_at`, `body`. Conditional."""
        path = f"repos/{self.repo}/pulls/{number}/comments?per_page=100"
        return _items("GET", path, self.get_conditional(path), REVIEW_COMMENT_KEYS)

    def review_comments_since(self, since: str) -> List[dict]:
        """Review comments on any pull request of the repository updated at
        or after `since` (ISO 8601), oldest update first, every page. Not
        conditional: `since` moves, so each answer is a new one. One call
        covers many changed PRs at once (each comment's `pull_request_url`
        names its PR)."""
        path = (f"repos/{self.repo}/pulls/comments?sort=updated&direction=asc"
                f"&since={_quote(since)}&per_page=100")
        out: List[dict] = []
        while path:
            resp = self.api("GET", path)
            out += _items("GET", path, _shape(resp.status, "GET", path, resp.data, list), REVIEW_COMMENT_KEYS)
            path = _next_link(resp.headers.get("link", ""))
        return out

    def conversation(self, number: int) -> List[dict]:
        """The conversation comments of a pull request (its issue comments),
        oldest first, every page, each with the ETag of the last answer."""
        path = f"repos/{self.repo}/issues/{number}/comments?per_page=100"
        self._pull_numbers.add(number)
        return _items("GET", path, self.get_conditional(path), COMMENT_KEYS)

    def forget_pulls_except(self, numbers: Iterable[int]) -> None:
        """Drop the cached answers about pull requests no longer watched:
        the cache stays as small as the watch, however long the daemon runs."""
        keep = set(numbers)
        pulls = re.compile(r"repos/[^/]+/[^/]+/pulls/(\d+)(?:[/?]|$)")
        for path in list(self._etags):
            m = pulls.match(path)
            if m and int(m.group(1)) not in keep:
                del self._etags[path]
        for n in self._pull_numbers - keep:
            self._etags.pop(f"repos/{self.repo}/issues/{n}/comments?per_page=100", None)
        self._pull_numbers &= keep

    # -- writes: each retried after a 5xx or a failed connection ----------------
    def comment(self, number: int, body: str) -> int:
        path = f"repos/{self.repo}/issues/{number}/comments"
        resp = self._write("POST", path, {"body": f"{body}\n\n{COMMENT_MARKER}"})
        data = _shape(resp.status, "POST", path, resp.data, dict, ("id",))
        return int(data["id"])

    def edit_comment(self, comment_id: int, body: str) -> None:
        self._write("PATCH", f"repos/{self.repo}/issues/comments/{comment_id}",
                    {"body": f"{body}\n\n{COMMENT_MARKER}"})

    def create_pull(self, title: str, head: str, base: str, body: str, draft: bool) -> dict:
        """Open a pull request. Where drafts are not available (private
        repositories on GitHub Free and Pro answer 422), a draft is opened
        once more as a normal PR whose body starts with DRAFT_UNAVAILABLE;
        the answer's `draft` says which it became. A 422 for a PR that
        already exists raises GitHubError with `already_exists` set."""
        path = f"repos/{self.repo}/pulls"
        fields = {"title": title, "head": head, "base": base, "body": body, "draft": draft}
        try:
            resp = self._write("POST", path, fields)
        except GitHubError as e:
            if not (draft and e.drafts_unsupported):
                raise
            resp = self._write("POST", path, dict(fields, draft=False, body=f"{DRAFT_UNAVAILABLE}\n\n{body}"))
        return _shape(resp.status, "POST", path, resp.data, dict, ("number", "html_url"))

    def add_labels(self, number: int, labels: List[str]) -> None:
        self._write("POST", f"repos/{self.repo}/issues/{number}/labels", {"labels": labels})

    def remove_label(self, number: int, label: str) -> None:
        try:
            self._write("DELETE", f"repos/{self.repo}/issues/{number}/labels/{_quote(label)}")
        except GitHubError as e:
            if e.status != 404:  # already gone: what we wanted
                raise


# -- answers: what the coordinator relies on, checked once here ---------------

# Keys read from each item; GitHub always sends them, so a missing one means
# the answer is not GitHub's (a proxy, a captive portal, a broken fake).
ISSUE_KEYS = ("number", "title", "labels", "updated_at")
EVENT_KEYS = ("event", "created_at")
FEED_KEYS = ("event", "created_at", "issue")
PULL_KEYS = ("number", "head", "html_url")
REVIEW_KEYS = ("id", "state", "body", "user")
REVIEW_COMMENT_KEYS = ("id", "body", "user", "path", "diff_hunk", "created_at")
COMMENT_KEYS = ("id", "body", "user", "created_at")
DRAFT_UNAVAILABLE = ("**Needs review before merging:** draft pull requests are not available "
                     "in this repository, so this one was opened ready for review.")


def _phrase(status: int) -> str:
    """"Unprocessable Entity" for 422 (http.client's table would load OpenSSL: 3.7 MB)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


def _unexpected(status: int, method: str, path: str, why: str) -> GitHubError:
    where = "/" + path.split("?", 1)[0]
    return GitHubError(status, f"unexpected answer from GitHub for {method} {where}: {why}", unexpected=True)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "nothing"}.get(
        type(value), type(value).__name__)


def _shape(status: int, method: str, path: str, data: Any, want: type, keys: Iterable[str] = ()) -> Any:
    """`data` if it is a `want` (list or dict) holding `keys`, else the
    GitHubError that says what came instead: never an empty queue."""
    if not isinstance(data, want):
        raise _unexpected(status, method, path, f"expected {_kind(want())}, got {_kind(data)}")
    missing = [k for k in keys if k not in data]
    if missing:
        raise _unexpected(status, method, path, f"no {', '.join(missing)} in the answer")
    return data


def _items(method: str, path: str, items: List[Any], keys: Iterable[str]) -> List[dict]:
    keys = tuple(keys)
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise _unexpected(200, method, path, f"item {i} is {_kind(item)}, not an object")
        missing = [k for k in keys if k not in item]
        if missing:
            raise _unexpected(200, method, path, f"item {i} has no {', '.join(missing)}")
        if "number" in keys and not isinstance(item["number"], int):
            raise _unexpected(200, method, path, f"item {i} has number {item['number']!r}")
    return items


def _labelled_with(ev: dict, label: str) -> bool:
    # Label names are case-insensitive on GitHub; the event carries the label's own spelling.
    return ev.get("event") == "labeled" and str((ev.get("label") or {}).get("name", "")).lower() == label.lower()


def _who(ev: dict) -> Tuple[str, str, str]:
    actor = ev.get("actor") or {}  # null for a deleted account
    return (str(actor.get("login", "")), str(actor.get("type", "User")), str(ev.get("created_at", "")))


def _actor(actor: Any) -> Tuple[str, str]:
    """(login, type) of a GraphQL Actor; ("", "") for a deleted account."""
    actor = actor if isinstance(actor, dict) else {}
    return (str(actor.get("login") or ""), str(actor.get("__typename") or ""))


def _first_line(text: str) -> str:
    """The line of gh's (or GitHub's) message that says what happened: the
    first. gh puts the hint after it ("check your internet connection ...")."""
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line[4:] if line.startswith("gh: ") else line
    return "no output"


def _quote(text: str) -> str:
    from urllib.parse import quote
    return quote(text, safe="")


def _next_link(link: str) -> str:
    for part in link.split(","):
        if 'rel="next"' in part:
            url = part[part.find("<") + 1:part.find(">")]
            # gh api takes a path; strip scheme and host.
            m = re.match(r"https?://[^/]+/(?:api/v3/)?(.*)", url)
            return m.group(1) if m else url
    return ""


def pull_state(pr: dict) -> str:
    """open, closed or merged: a merged pull request is closed with a
    merged_at (the list's shape) or merged true (the single PR's)."""
    if pr.get("merged_at") or pr.get("merged") is True:
        return "merged"
    return "closed" if pr.get("state") == "closed" else "open"


def is_bot(user: Optional[dict]) -> bool:
    user = user or {}
    return user.get("type") == "Bot" or str(user.get("login", "")).endswith("[bot]")
