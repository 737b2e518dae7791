"""`coordinator.py --check`: is this machine ready to run the daemon?

One line per check, ✓ or ✗ (? when it cannot tell), and under each ✗ the
exact fix: Python, gh and its login, the repository and the label, the clone
(and that it is a clone of [github] repo), the worker command and template,
memory and disk, and, when a daemon is running, whether its workers die at
start and why. With [cluster], also that the remote accepts claim refs and
that the clock is synchronised. It creates nothing, with one exception: to
learn whether the remote accepts claim refs, [cluster]'s check pushes a
probe ref (`<claim_ref_prefix>probe-<node>`, never a claim's name) to the
remote and deletes it at once.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from typing import Callable, Optional, Tuple

from adws import metrics
from adws.claims import Claims
from adws.config import Config
from adws.gates import HALF_OPEN, OPEN, diagnose, free_mb
from adws.github import GitHub, GitHubError, _quote
from adws.gitops import GitError, git
from adws.prompt import render_template
from adws.workers import mem_available_mb, pi_model, worker_cap


def remote_slug(url: str) -> Optional[str]:
    """OWNER/NAME from a remote URL (https://host/o/n.git, git@host:o/n.git,
    ssh://git@host/o/n); None for a local path, which names no repository."""
    m = re.match(r"^(?:[a-z][a-z+]*://(?:[^@/]+@)?[^/:]+(?::\d+)?/|(?:[^@/]+@)?[^/:]{2,}:)"
                 r"([^/]+)/([^/]+?)(?:\.git)?/?$", url)
    return f"{m.group(1)}/{m.group(2)}" if m and not url.startswith("file:") else None


def doctor(cfg: Config, github: GitHub, out: Callable[[str], None] = print) -> bool:
    """One line per check, ✓ or ✗, and for each ✗ the exact fix. Creates
    nothing but [cluster]'s probe ref on the remote, deleted at once."""
    ok = True

    def check(passed: bool, what: str, fix: str = "") -> bool:
        nonlocal ok
        ok = ok and passed
        out(f"{'✓' if passed else '✗'} {what}" + ("" if passed or not fix else f"\n    fix: {fix}"))
        return passed

    check(sys.version_info >= (3, 9), f"python {sys.version.split()[0]}", "install Python 3.9 or newer")
    check(True, f"config {cfg.file}")
    _check_github(cfg, github, check)
    _check_clone(cfg, check)
    _check_workers(cfg, check)
    if cfg.cluster_enabled:
        _check_cluster(cfg, check, out)
    free = mem_available_mb()
    if free is not None:
        check(free >= cfg.min_free_memory_mb, f"memory available: {free} MB (min_free_memory_mb {cfg.min_free_memory_mb})",
              "stop other programs, or lower [workers] min_free_memory_mb")
    disk = free_mb(cfg.trees)  # of the nearest folder that exists: --check creates nothing
    if disk is not None:
        check(disk >= cfg.min_free_disk_mb, f"disk free for worktrees: {disk} MB (min_free_disk_mb {cfg.min_free_disk_mb})",
              "free disk space where [paths] trees points, or lower [workers] min_free_disk_mb")
    out(f"✓ machine: {pi_model() or 'not a Raspberry Pi'}; worker cap {worker_cap(cfg.max_concurrent)} "
        f"(max_concurrent = {cfg.max_concurrent!r})")
    return ok


def _check_github(cfg: Config, github: GitHub, check: Callable[..., bool]) -> None:
    gh_path = shutil.which(github.gh)
    if not check(gh_path is not None, f"gh found: {gh_path or github.gh}", "sudo apt-get install gh"):
        return
    steps = (("user", lambda d: f"gh authenticated as {(d or {}).get('login', '?')}", "gh auth login"),
             (f"repos/{cfg.repo}", lambda d: f"repo {(d or {}).get('full_name', cfg.repo)} reachable",
              "check [github] repo and that your gh account can see it"),
             (f"repos/{cfg.repo}/labels/{_quote(cfg.label)}", lambda d: f"label {cfg.label} exists",
              f"gh label create {cfg.label} --repo {cfg.repo}"))
    for path, said, fix in steps:
        try:
            check(True, said(github.api("GET", path).data))
        except GitHubError as e:
            what = "gh not authenticated" if e.auth else f"{said(None).rsplit(' ', 1)[0]}: {e}"
            check(False, what, "gh auth login" if e.auth else fix)
            return


def _check_clone(cfg: Config, check: Callable[..., bool]) -> None:
    try:
        inside = git(["rev-parse", "--is-inside-work-tree"], cfg.repo_path).strip() == "true"
        remote = git(["remote", "get-url", cfg.remote], cfg.repo_path).strip()
    except GitError as e:
        check(False, f"git clone at {cfg.repo_path}: {e}", f"git clone <your repo> {cfg.repo_path}")
        return
    slug = remote_slug(remote)
    if slug and slug.lower() != cfg.repo.lower():  # e.g. path = "." names this project's own checkout
        check(False, f"git clone at {cfg.repo_path}: {cfg.remote} is {slug}, not [github] repo {cfg.repo}",
              f"point [repo] path at a clone of {cfg.repo}")
    else:
        check(inside, f"git clone at {cfg.repo_path} ({cfg.remote} = {remote})")


def _check_workers(cfg: Config, check: Callable[..., bool]) -> None:
    exe = shutil.which(cfg.command[0])
    check(exe is not None, f"worker command found: {exe}" if exe else f"worker command not found: {cfg.command[0]}",
          "npm install -g @anthropic-ai/claude-code" if cfg.command[0] == "claude" else
          "fix [workers] command in the config")
    try:
        rendered = render_template(cfg.template_path.read_text(encoding="utf-8"), {
            "issue_number": "1", "title": "{title}", "body": "body", "branch": "b", "repo": cfg.repo,
            "base_branch": cfg.base_branch, "worktree": "/tmp"})
        check(bool(rendered.strip()), f"template {cfg.template_path.name} renders")
    except OSError as e:
        check(False, f"template {cfg.template_path}: {e.strerror}", "copy worker_template.md from the project")
    # What a running daemon has seen: workers that die at start, with the fix when the error is a known one.
    breaker = (metrics.read(cfg.metrics_path) or {}).get("breaker")
    if isinstance(breaker, dict) and breaker.get("state") in (OPEN, HALF_OPEN):
        error = str(breaker.get("last_error") or "")
        guess, fix = diagnose(error)
        check(False, f"workers fail at start: {guess + ' ' if guess else ''}({error})",
              fix or "run the worker command by hand in a worktree and read what it says")


def _check_cluster(cfg: Config, check: Callable[..., bool], out: Callable[[str], None]) -> None:
    """[cluster]: the remote must accept claim refs; the node's name must be
    its own; the clock must be right, since claims expire by wall-clock time
    compared across nodes."""
    check(cfg.node != "raspberrypi", f"cluster node {cfg.node}",
          "every fresh Raspberry Pi is called raspberrypi: set [cluster] node to a name of this machine's own")
    refused = Claims.from_config(cfg).check()  # pushes a probe ref and deletes it
    check(refused is None, f"claim refs accepted by {cfg.remote} under {cfg.claim_ref_prefix}" if refused is None
          else f"claim refs: {refused}",
          'a namespace the host accepts, e.g. claim_ref_prefix = "refs/heads/tac-claims/", the same on every node')
    synced, why = clock_synchronised()
    if synced is None:
        out(f"? clock synchronisation not known ({why}): claims expire by the clock, compared across nodes; "
            f"keep NTP on")
    else:
        check(synced, "clock synchronised (NTP)" if synced else "clock not synchronised (NTP)",
              "sudo timedatectl set-ntp true, and wait for timedatectl to say 'System clock synchronized: yes'")


def clock_synchronised() -> Tuple[Optional[bool], str]:
    """(True/False, '') from systemd's view of NTP; (None, why) where it cannot be asked."""
    try:
        r = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"], capture_output=True,
                           text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"timedatectl: {e.strerror if isinstance(e, OSError) else 'no answer'}"
    answer = r.stdout.strip()
    if r.returncode != 0 or answer not in ("yes", "no"):
        lines = (r.stderr or r.stdout).strip().splitlines()
        return None, f"timedatectl: {lines[0] if lines else f'exit status {r.returncode}'}"
    return answer == "yes", ""
