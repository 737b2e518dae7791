"""GitHub, as far as the coordinator needs it: REST calls through `gh api`.

Only REST through `gh api` (the `gh` on PATH, inheriting GH_HOST and
GH_TOKEN): `gh issue list` / `gh pr list` go through GraphQL and their
--json fields differ between gh versions (Raspberry Pi OS ships gh 2.23).
`-i` puts the status line first, so every outcome is read from the HTTP
status, never from error text, and one error type, GitHubError, carries it.
Lists are fetched with the ETag of the last answer: an unchanged list costs a
304, which does not count against the rate limit.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

COMMENT_MARKER = "<!-- tac-coordinator -->"  # every comment we write carries it


class GitHubError(Exception):
    """A failed GitHub call. status 0 means no HTTP answer at all (network, gh missing)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message

    @property
    def unreachable(self) -> bool:
        """GitHub cannot be used right now (network, outage, auth, rate
        limit), as opposed to one request it refused (404, 422)."""
        return self.status == 0 or self.status >= 500 or self.status in (401, 403, 429)


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

    def __init__(self, repo: str, gh: str = "gh", env: Optional[Dict[str, str]] = None,
                 clock: Callable[[], float] = time.time):
        self.repo = repo
        self.owner = repo.split("/", 1)[0]
        self.gh = gh
        self.env = env
        self.clock = clock
        self.rate_remaining: Optional[int] = None
        self.rate_reset: Optional[int] = None
        self.counted = 0          # requests that count against the rate limit
        self.not_modified = 0     # 304 answers, which do not
        self._etags: Dict[str, Tuple[str, Any]] = {}
        self._permissions: Dict[str, Tuple[float, str]] = {}
        self._labellers: Dict[Tuple[int, str], Tuple[str, str, str]] = {}

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
            raise GitHubError(0, f"{self.gh}: command not found (install gh: apt-get install gh)")
        except subprocess.TimeoutExpired:
            raise GitHubError(0, f"gh api {method} {path}: no answer in 60 s")
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
            err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise GitHubError(0, f"gh api {method} {path}: {err}")
        self.counted += 1
        try:
            data = json.loads(text) if text.strip() else None
        except ValueError:
            data = text
        if status >= 400:
            message = data.get("message", "") if isinstance(data, dict) else str(data)[:200]
            if isinstance(data, dict) and data.get("errors"):
                details = [e.get("message") or e.get("code", "") for e in data["errors"] if isinstance(e, dict)]
                message = f"{message}: {'; '.join(d for d in details if d)}"
            if status == 403 and self.rate_remaining == 0:
                message = f"rate limit exhausted until {time.strftime('%H:%M', time.localtime(self.rate_reset or 0))}"
            raise GitHubError(status, message or f"{method} {path} failed")
        return Response(status, headers, data)

    def get_conditional(self, path: str) -> Any:
        """GET with the ETag of the last answer: an unchanged list costs a
        304, which does not count against the rate limit. Each page of a
        long list (rare: more than 100 labelled issues) is asked with its
        own ETag: the first page stays the same when an older issue gets
        the label, which lands on a later page."""
        data: Any = None
        while path:
            etag, cached = self._etags.get(path, ("", None))
            resp = self.api("GET", path, etag=etag)
            if resp.status == 304:
                page, link = cached
            else:
                page, link = resp.data, resp.headers.get("link", "")
                if resp.headers.get("etag"):
                    self._etags[path] = (resp.headers["etag"], (page, link))
            data = page if data is None else data + (page or [])
            path = _next_link(link) if isinstance(page, list) else ""
        return data

    # -- what the coordinator asks --------------------------------------------
    def labelled_issues(self, label: str) -> List[dict]:
        """Open issues with the label; pull requests (which the issues list
        also returns) are left out."""
        q = _quote(label)
        items = self.get_conditional(f"repos/{self.repo}/issues?state=open&labels={q}&per_page=100")
        return [i for i in items or [] if isinstance(i, dict) and "pull_request" not in i]

    def labeller(self, number: int, label: str, updated_at: str) -> Optional[Tuple[str, str, str]]:
        """(login, user type, time) of whoever last applied `label`, from the
        issue's events. Cached per issue state: relabelling changes updated_at."""
        key = (number, updated_at)
        if key in self._labellers:
            return self._labellers[key]
        events = self.get_conditional(f"repos/{self.repo}/issues/{number}/events?per_page=100") or []
        found = None
        for ev in events:
            if ev.get("event") == "labeled" and (ev.get("label") or {}).get("name") == label:
                actor = ev.get("actor") or {}
                found = (actor.get("login", ""), actor.get("type", "User"), ev.get("created_at", ""))
        if found:
            self._labellers[key] = found
        return found

    def permission(self, login: str) -> str:
        """admin / write / read / none (maintain reports as write, triage as read)."""
        now = self.clock()
        hit = self._permissions.get(login)
        if hit and now - hit[0] < self.PERMISSION_TTL:
            return hit[1]
        try:
            data = self.api("GET", f"repos/{self.repo}/collaborators/{_quote(login)}/permission").data
            perm = (data or {}).get("permission", "none")
        except GitHubError as e:
            if e.status != 404:
                raise
            perm = "none"
        self._permissions[login] = (now, perm)
        return perm

    def recent_pulls(self) -> List[dict]:
        """The 100 most recently updated pull requests in any state: one
        conditional call covers every active branch."""
        return self.get_conditional(
            f"repos/{self.repo}/pulls?state=all&sort=updated&direction=desc&per_page=100") or []

    def pull_heads(self) -> Dict[str, str]:
        """Head branch -> PR URL for the recent pull requests of this repository."""
        heads: Dict[str, str] = {}
        for pr in self.recent_pulls():
            head = pr.get("head") or {}
            owner = ((head.get("repo") or {}).get("owner") or {}).get("login") or head.get("label", "").split(":")[0]
            if owner.lower() == self.owner.lower() and head.get("ref"):
                heads.setdefault(head["ref"], pr.get("html_url", ""))
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
        now = self.clock()
        for login, (at, _) in list(self._permissions.items()):
            if now - at >= self.PERMISSION_TTL:
                del self._permissions[login]

    def pulls_for_head(self, branch: str) -> List[dict]:
        # head needs OWNER:BRANCH; without the owner GitHub ignores it and returns every PR.
        return self.api("GET", f"repos/{self.repo}/pulls?state=all&head={_quote(self.owner + ':' + branch)}").data or []

    def issue(self, number: int) -> dict:
        return self.api("GET", f"repos/{self.repo}/issues/{number}").data

    def comment(self, number: int, body: str) -> int:
        data = self.api("POST", f"repos/{self.repo}/issues/{number}/comments",
                        body={"body": f"{body}\n\n{COMMENT_MARKER}"}).data
        return int(data["id"])

    def edit_comment(self, comment_id: int, body: str) -> None:
        self.api("PATCH", f"repos/{self.repo}/issues/comments/{comment_id}",
                 body={"body": f"{body}\n\n{COMMENT_MARKER}"})

    def create_pull(self, title: str, head: str, base: str, body: str, draft: bool) -> dict:
        return self.api("POST", f"repos/{self.repo}/pulls",
                        body={"title": title, "head": head, "base": base, "body": body, "draft": draft}).data

    def add_labels(self, number: int, labels: List[str]) -> None:
        self.api("POST", f"repos/{self.repo}/issues/{number}/labels", body={"labels": labels})

    def remove_label(self, number: int, label: str) -> None:
        try:
            self.api("DELETE", f"repos/{self.repo}/issues/{number}/labels/{_quote(label)}")
        except GitHubError as e:
            if e.status != 404:  # already gone: what we wanted
                raise


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


def is_bot(user: Optional[dict]) -> bool:
    user = user or {}
    return user.get("type") == "Bot" or str(user.get("login", "")).endswith("[bot]")
