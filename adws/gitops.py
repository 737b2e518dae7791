"""Git for the coordinator: one worktree and branch per issue, the checks
that decide what may be pushed, and the push.

Every call names the clone (`cfg.repo_path`) and runs git with prompts
off; a failure is a GitError carrying git's own words. The checks fail
closed: when git cannot answer, the caller is told so, never "no commits"
or "nothing to hold".
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

from adws.config import Config


class GitError(Exception):
    def __init__(self, message: str, returncode: int = -1, stderr: str = "", stdout: str = ""):
        super().__init__(message)
        self.returncode, self.stderr = returncode, stderr  # git's own, for callers that read more than the last line
        self.stdout = stdout  # what git printed before failing: `push --porcelain` says per ref what happened


class PushRejected(GitError):
    """The remote refused the branch (a protected pattern, a pre-receive
    hook, a full disk on the server): retrying at once will not help."""


def _meaningful_line(stderr: str) -> str:
    """The line of git's stderr that says why: the remote's own message or
    the '! [remote rejected]' line, else the last line."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    for prefix in ("remote: error", "remote:", "! [remote rejected]", "! [rejected]", "error:", "fatal:"):
        for ln in lines:
            if ln.startswith(prefix) and ln.rstrip(":") != "remote":
                return ln
    return lines[-1] if lines else ""


def git(args: Sequence[str], cwd: Path, timeout: float = 300) -> str:
    """Run git; raise GitError with git's own last line on failure."""
    try:
        proc = subprocess.run(["git", *args], cwd=str(cwd), capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except FileNotFoundError:
        raise GitError("git: command not found")
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]}: no answer in {timeout:.0f} s")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise GitError(f"git {' '.join(args[:2])}: {last}", proc.returncode, proc.stderr, proc.stdout)
    return proc.stdout


def branch_for(cfg: Config, issue: int, attempt: int) -> str:
    """Derived from the number only, never from the title."""
    name = f"{cfg.branch_prefix}gh-{issue}"
    return name if attempt <= 1 else f"{name}-{attempt}"


def remove_worktree(cfg: Config, tree: Path) -> bool:
    """Remove a worktree or a stale directory where one should be. Returns
    True if something was there."""
    if not tree.exists() and not tree.is_symlink():
        try:
            git(["worktree", "prune"], cfg.repo_path)
        except GitError:
            pass
        return False
    try:
        git(["worktree", "remove", "--force", "--force", str(tree)], cfg.repo_path)
    except GitError:
        pass
    if tree.exists() or tree.is_symlink():
        if tree.is_dir() and not tree.is_symlink():
            shutil.rmtree(tree, ignore_errors=True)
        else:
            tree.unlink()
    try:
        git(["worktree", "prune"], cfg.repo_path)
    except GitError:
        pass
    return True


def prepare_worktree(cfg: Config, issue: int, branch: str) -> Tuple[Path, bool]:
    """A fresh worktree on a new branch from a freshly fetched base.
    Idempotent: whatever an earlier run left at that path is cleared first.
    Returns (path, repaired)."""
    tree = cfg.worktree_path(issue)
    git(["fetch", "--quiet", cfg.remote, cfg.base_branch], cfg.repo_path)
    repaired = remove_worktree(cfg, tree)
    cfg.trees.mkdir(parents=True, exist_ok=True)
    # -B: a crash after `worktree add` but before tasks.md recorded it leaves
    # the branch behind; resetting it is what makes this step repeatable.
    git(["worktree", "add", "--quiet", "-B", branch, str(tree), f"{cfg.remote}/{cfg.base_branch}"], cfg.repo_path)
    return tree, repaired


def reuse_worktree(cfg: Config, issue: int, branch: str) -> Path:
    """The issue's worktree on `branch` as an earlier workflow stage left
    it (its commits, its .tac/ files), for the next stage: kept when it is
    there and on that branch, added again on the existing branch when it is
    gone (never reset: that would throw the earlier stages' work away).
    Raises GitError when the path holds something else."""
    tree = cfg.worktree_path(issue)
    if tree.exists():
        head = git(["rev-parse", "--abbrev-ref", "HEAD"], tree, timeout=60).strip()
        if head != branch:
            raise GitError(f"{tree} is on {head or 'no branch'}, not the task's {branch}")
        return tree
    git(["worktree", "prune"], cfg.repo_path)
    cfg.trees.mkdir(parents=True, exist_ok=True)
    git(["worktree", "add", "--quiet", str(tree), branch], cfg.repo_path)
    return tree


def commits_ahead(cfg: Config, branch: str) -> int:
    """Commits on `branch` not on the base; 0 when the branch does not exist
    (the run never got as far as its worktree). Raises GitError when git
    cannot say: taking that for 'no commits' would throw the run's work away."""
    try:
        git(["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], cfg.repo_path, timeout=60)
    except GitError as e:
        if e.returncode == 1:  # --verify --quiet: no such branch (other failures are 128)
            return 0
        raise
    out = git(["rev-list", "--count", f"{cfg.remote}/{cfg.base_branch}..{branch}"], cfg.repo_path)
    try:
        return int(out.strip() or 0)
    except ValueError:
        raise GitError(f"git rev-list --count: unexpected answer {out.strip()[:40]!r}")


def checked_out(tree: Path) -> str:
    """The branch `tree` has checked out; '' when git cannot say (no such
    worktree, a detached HEAD)."""
    try:
        head = git(["rev-parse", "--abbrev-ref", "HEAD"], tree, timeout=60).strip()
    except (GitError, OSError):
        return ""
    return "" if head == "HEAD" else head


def unused_branch(cfg: Config, issue: int, run: int) -> str:
    """The branch for run `run` of `issue`, or of a later run when that
    branch already carries commits: starting a run resets its branch to the
    base (`worktree add -B`), and work already done is never thrown away,
    even when tasks.md lost count of the runs (a deleted or damaged file)."""
    while commits_ahead(cfg, branch_for(cfg, issue, run)) > 0:
        run += 1
    return branch_for(cfg, issue, run)


HELD_PREFIXES = (".github/workflows/", ".github/actions/")


def held_paths(cfg: Config, branch: str) -> List[str]:
    """Files the branch changes that must not be pushed without a person's
    review: CI definitions, which run with the repository's secrets. Raises
    GitError when git cannot say: the caller must then hold the branch."""
    out = git(["diff", "--name-only", f"{cfg.remote}/{cfg.base_branch}...{branch}"], cfg.repo_path)
    return [p for p in out.splitlines() if p.startswith(HELD_PREFIXES)]


# -- a pull request's branch, which others can push to (follow-ups, issue #14) --

# What steers the agent itself: Claude Code's MCP servers, settings, hooks
# and memory files (read at any depth of the tree), and CI, which runs with
# the repository's secrets. A malicious `.mcp.json` on a PR branch once gave
# code execution to a hosted agent.
AGENT_CONFIG_FILES = (".mcp.json", "CLAUDE.md", "CLAUDE.local.md")
AGENT_CONFIG_DIRS = (".claude",)


def is_agent_config(path: str) -> bool:
    """Does changing `path` change what the agent or CI runs?"""
    parts = path.split("/")
    return (path.startswith(HELD_PREFIXES) or parts[-1] in AGENT_CONFIG_FILES
            or any(p in AGENT_CONFIG_DIRS for p in parts[:-1]))


@dataclass
class Foreign:
    """The commits on a PR branch that the coordinator did not push
    (sha, author, subject; newest first) and the agent-configuration paths
    they leave different from both the coordinator's last push and the
    base branch. `paths` empty: the follow-up may run on this head."""
    commits: List[Tuple[str, str, str]]
    paths: List[str]


def foreign_commits(cfg: Config, head: str, pushed: str, reviewed: str = "") -> Foreign:
    """What others added to a PR branch: the commits reachable from `head`
    but not from `pushed` (the last sha the coordinator pushed there; "" =
    not known, and then every commit since the base counts as foreign) nor
    from `reviewed` (a head a trusted person approved after a hold). A
    config path counts only when the head's version differs from the
    coordinator's and from the base's: a merge of the base into the branch
    (GitHub's "Update branch") brings nothing new. All shas must be in the
    clone (fetch first). Raises GitError when git cannot tell: the caller
    must then not run, since it cannot know what the agent would read."""
    base = f"{cfg.remote}/{cfg.base_branch}"
    stops = [f"^{s}" for s in (pushed or base, reviewed) if s]
    log = git(["log", "--format=%H%x00%an%x00%s", head, *stops, "--"], cfg.repo_path, timeout=60)
    commits = [tuple(line.split("\0", 2)) for line in log.splitlines() if line.count("\0") == 2]
    if not commits:
        return Foreign([], [])
    old = reviewed or pushed or base
    changed = git(["diff", "--name-only", "--no-renames", "-z", old, head, "--"], cfg.repo_path, timeout=60)
    paths = []
    for path in sorted(p for p in changed.split("\0") if p and is_agent_config(p)):
        if _blob(cfg, head, path) != _blob(cfg, base, path):
            paths.append(path)
    return Foreign([(c[0], c[1], c[2]) for c in commits], paths)


def _blob(cfg: Config, rev: str, path: str) -> str:
    """The blob id of `path` at `rev`, "" when the path does not exist
    there. Raises GitError for anything else (an unknown rev)."""
    git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cfg.repo_path, timeout=60)
    try:
        return git(["rev-parse", "--verify", "--quiet", f"{rev}:{path}"], cfg.repo_path, timeout=60).strip()
    except GitError as e:
        if e.returncode == 1:
            return ""
        raise


@dataclass
class PushResult:
    """A fast-forward push: `ok`, or `refused` saying why not (the remote
    branch has commits this one lacks). `sha` is what the branch holds here."""
    ok: bool
    sha: str
    refused: str = ""


def push_fast_forward(cfg: Config, branch: str, remote_branch: str = "") -> PushResult:
    """Push `branch` to `remote_branch` (default: the same name) only as a
    fast-forward: no --force of any kind, so commits a person pushed to the
    pull request's branch are never lost. A branch that moved on the remote
    is refused (PushResult.refused), not overwritten: git's client refuses
    a non-fast-forward, and the server applies the update only if the
    branch still holds the value the client saw (receive-pack checks the
    old sha under the ref's lock). Other refusals raise PushRejected, a
    remote out of reach GitError, as push_branch does."""
    target = remote_branch or branch
    sha = git(["rev-parse", "--verify", f"refs/heads/{branch}^{{commit}}"], cfg.repo_path, timeout=60).strip()
    try:
        git(["push", "--porcelain", cfg.remote, f"refs/heads/{branch}:refs/heads/{target}"], cfg.repo_path)
    except GitError as e:
        # --porcelain: one line per ref, "!<TAB>src:dst<TAB>[rejected] (non-fast-forward)".
        for line in (e.stdout or "").splitlines():
            if line.startswith("!") and ("non-fast-forward" in line or "fetch first" in line):
                return PushResult(False, sha, f"{cfg.remote}/{target} has commits that {branch} does not "
                                              "(someone pushed meanwhile): not a fast-forward, nothing pushed")
        why = _meaningful_line(e.stderr)
        if "rejected" in why or why.startswith("remote:"):
            raise PushRejected(why)
        raise
    return PushResult(True, sha)


def exclude_locally(cfg: Config, pattern: str) -> bool:
    """Add `pattern` to the clone's .git/info/exclude (shared by all its
    worktrees) unless it is there: files a worker leaves for the
    coordinator (`.tac/`) are then never committed by `git add -A`.
    Returns True if it was added."""
    info = Path(git(["rev-parse", "--git-common-dir"], cfg.repo_path, timeout=60).strip())
    if not info.is_absolute():
        info = (cfg.repo_path / info).resolve()
    path = info / "info" / "exclude"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if pattern in text.splitlines():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(("" if not text or text.endswith("\n") else "\n") + pattern + "\n")
    return True


def head_sha(cfg: Config, branch: str) -> str:
    try:
        return git(["rev-parse", "--short=7", branch], cfg.repo_path).strip()
    except GitError:
        return ""


def pushed(cfg: Config, branch: str) -> bool:
    """Does the remote hold the branch as it is here (by the remote-tracking
    ref a push updates)? False when git cannot tell."""
    try:
        here = git(["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], cfg.repo_path, timeout=60)
        there = git(["rev-parse", "--verify", "--quiet", f"refs/remotes/{cfg.remote}/{branch}"], cfg.repo_path,
                    timeout=60)
    except GitError:
        return False
    return here.strip() == there.strip() != ""


def push_branch(cfg: Config, branch: str) -> None:
    # The branch namespace is ours; a retry of a crashed completion may push
    # the same branch again, so force is the idempotent choice.
    try:
        git(["push", "--quiet", "--force", cfg.remote, f"{branch}:refs/heads/{branch}"], cfg.repo_path)
    except GitError as e:
        why = _meaningful_line(e.stderr)
        if "rejected" in why or why.startswith("remote:"):
            raise PushRejected(why)
        raise  # the remote could not be reached, or git failed here


# -- Workflow stages --------------------------------------------------------------
# Stages pass text to each other in files under .tac/ in the worktree
# (adws/prompt.py names them). Those files must never reach the pull request.

TAC_DIR = ".tac"
_EXCLUDE_LINE = "/" + TAC_DIR + "/"
DIFF_LIMIT = 60_000


def exclude_tac(tree: Path) -> Path:
    """Make git ignore .tac/ in the worktree `tree`, so a worker's `git add
    -A` leaves the stages' files out; returns the exclude file written.

    A worktree's own $GIT_DIR/info/exclude is not read (git 2.39, tested in
    tests/test_workflow.py): git reads the one in the common dir, which every
    worktree of the clone shares. `git rev-parse --git-path info/exclude`
    says which file that is. Idempotent: the line is added once."""
    out = git(["rev-parse", "--git-path", "info/exclude"], tree, timeout=60).strip()
    path = Path(out) if os.path.isabs(out) else Path(tree) / out
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        text = ""
    if _EXCLUDE_LINE not in text.splitlines():
        with open(path, "a", encoding="utf-8") as f:
            f.write(("" if not text or text.endswith("\n") else "\n")
                    + "# TAC coordinator: workflow stages pass files here; never committed\n" + _EXCLUDE_LINE + "\n")
    (Path(tree) / TAC_DIR).mkdir(exist_ok=True)
    return path


def tac_committed(cfg: Config, branch: str) -> List[str]:
    """Paths under .tac/ that any commit of `branch` (since the base) adds
    or changes: a worker can still force them in (`git add -f`), and then
    the branch must not be pushed as it is. Raises GitError when git cannot
    say (the caller must then hold the branch, as with held_paths)."""
    out = git(["log", "--format=", "--name-only", f"{cfg.remote}/{cfg.base_branch}..{branch}", "--", TAC_DIR],
              cfg.repo_path)
    return sorted({p for p in out.splitlines() if p.strip()})


def diff_against_base(cfg: Config, branch: str, limit: int = DIFF_LIMIT) -> str:
    """What a review reads: `git diff --stat` of `branch` against the base
    (from their merge base, as a pull request shows it), then the diff
    itself, at most `limit` bytes of it. Git's output is read only that far,
    so a branch that adds a 1 GB file costs no memory. Bytes that are not
    UTF-8 become U+FFFD. Raises GitError."""
    span = f"{cfg.remote}/{cfg.base_branch}...{branch}"
    flags = ["--no-color", "--no-ext-diff", "--no-textconv"]
    stat, _ = _git_head(["diff", *flags, "--stat=120", span], cfg.repo_path, limit)
    body, cut = _git_head(["diff", *flags, span], cfg.repo_path, limit)
    text = body.decode("utf-8", "replace")
    if cut:
        text = text.rsplit("\n", 1)[0] + f"\n[... diff cut at {limit // 1000} KB: `git diff {span}` shows the rest ...]\n"
    return stat.decode("utf-8", "replace") + "\n" + text


def _git_head(args: Sequence[str], cwd: Path, limit: int, timeout: float = 120) -> Tuple[bytes, bool]:
    """The first `limit` bytes git prints, and whether there was more (then
    git is stopped). stderr goes to a file: a pipe nobody reads could fill
    and hang git."""
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(["git", *args], cwd=str(cwd), stdout=subprocess.PIPE, stderr=err,
                                    stdin=subprocess.DEVNULL, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
        except FileNotFoundError:
            raise GitError("git: command not found")
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            data = proc.stdout.read(limit + 1)
            cut = len(data) > limit
            if cut:
                proc.kill()
            proc.stdout.close()
            returncode = proc.wait()
        finally:
            timer.cancel()
        if cut:
            return data[:limit], True
        if returncode != 0:
            err.seek(0)
            stderr = err.read().decode("utf-8", "replace")
            last = (stderr.strip().splitlines() or [f"exit status {returncode}"])[-1]
            raise GitError(f"git {' '.join(args[:2])}: {last}", returncode, stderr)
        return data, False


class Git:
    """The clone as the daemon uses it: the Coordinator holds one as `git`,
    and a test may hand it another (honcho's way with its process
    constructor), say one whose push the origin refuses."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        # Jobs run in threads (adws/jobs.py): what adds or removes worktrees
        # goes one at a time, so a prune never meets a worktree half made.
        # Reading refs and pushing need no turn (a slow fetch must not hold
        # up a finish).
        self._lock = threading.RLock()

    def prune(self) -> None:
        with self._lock:
            git(["worktree", "prune"], self.cfg.repo_path)

    def prepare_worktree(self, issue: int, branch: str) -> Tuple[Path, bool]:
        with self._lock:
            return prepare_worktree(self.cfg, issue, branch)

    def remove_worktree(self, tree: Path) -> bool:
        with self._lock:
            return remove_worktree(self.cfg, tree)

    def reuse_worktree(self, issue: int, branch: str) -> Path:
        with self._lock:
            return reuse_worktree(self.cfg, issue, branch)

    def unused_branch(self, issue: int, run: int) -> str:
        return unused_branch(self.cfg, issue, run)

    def checked_out(self, tree: Path) -> str:
        return checked_out(tree)

    def commits_ahead(self, branch: str) -> int:
        return commits_ahead(self.cfg, branch)

    def held_paths(self, branch: str) -> List[str]:
        return held_paths(self.cfg, branch)

    def head_sha(self, branch: str) -> str:
        return head_sha(self.cfg, branch)

    def push_branch(self, branch: str) -> None:
        push_branch(self.cfg, branch)

    def pushed(self, branch: str) -> bool:
        return pushed(self.cfg, branch)

    def exclude_tac(self, tree: Path) -> Path:
        with self._lock:  # the exclude file is the clone's, shared by every worktree
            return exclude_tac(tree)

    def tac_committed(self, branch: str) -> List[str]:
        return tac_committed(self.cfg, branch)

    def diff_against_base(self, branch: str, limit: int = DIFF_LIMIT) -> str:
        return diff_against_base(self.cfg, branch, limit)
