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

    def unused_branch(self, issue: int, run: int) -> str:
        return unused_branch(self.cfg, issue, run)

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
