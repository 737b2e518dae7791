"""The outbox: everything the coordinator tells GitHub about a task.

One status comment per task, posted once and edited in place as the run
goes (started, progress, the outcome), and the label swap that ends it:
the trigger label comes off, tac:done / tac:blocked / tac:failed goes on.
A task whose outcome is recorded but not yet told carries "GitHub: pending"
in tasks.md (set in the same write that ends it), so a crash or an outage
delays the notice and never loses it: `deliver` tells every such task.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional

from adws import tasks
from adws.config import Config
from adws.github import GitHub, GitHubError
from adws.redact import redact
from adws.tasks import BLOCKED, COMPLETED, FAILED, Task

log = logging.getLogger("tac")

DONE_LABELS = {COMPLETED: "tac:done", BLOCKED: "tac:blocked", FAILED: "tac:failed"}


class Outbox:
    """Posts and edits through `github`; remembers comment ids and clears
    the owed mark through `amend` (the Coordinator's, so tasks.md has one
    writer); tells `failed` about GitHub errors (the daemon's outage state)."""

    def __init__(self, cfg: Config, github: GitHub, amend: Callable[..., Any],
                 failed: Callable[[GitHubError], None], dry_run: bool = False):
        self.cfg, self.github, self.amend, self.failed, self.dry_run = cfg, github, amend, failed, dry_run
        self._said: set = set()

    def deliver(self, doc: tasks.TaskFile, guarded: Callable[..., Any]) -> None:
        """Tell every ended task whose notice is still owed (each under its own guard)."""
        for t in doc.tasks:
            if t.state in tasks.TERMINAL and t.outbox:
                guarded(f"gh-{t.issue} notice", self.notify, t)

    def notify(self, t: Task) -> None:
        """Tell the issue how the task ended and swap the trigger label for
        tac:done / tac:blocked / tac:failed, then clear the owed mark."""
        try:
            if not self.post_or_edit(t.issue, t.comment_id, self.notice_text(t), strict=True):
                return  # --dry-run posts nothing, so it swaps no label either
            self.github.remove_label(t.issue, self.cfg.label)
            self.github.add_labels(t.issue, [DONE_LABELS[t.state]])
        except GitHubError as e:
            key = (t.issue, str(e))
            if key not in self._said:
                self._said = {k for k in self._said if k[0] != t.issue} | {key}
                log.info("gh-%d notice owed, will retry: %s", t.issue, e)
            self.failed(e)
            return
        log.info("gh-%d issue told: %s, label %s", t.issue, t.state.lower(), DONE_LABELS[t.state])
        self.amend(t.issue, expect=t.state, outbox="")

    def notice_text(self, t: Task) -> str:
        tree = Path(t.worktree) if t.worktree else self.cfg.worktree_path(t.issue)
        # In a cluster the reader must know which machine ran it (and keeps its worktree).
        on = f" on {self.cfg.node}" if self.cfg.cluster_enabled else ""
        machine = self.cfg.node if on else "the coordinator's machine"
        kept = f"The worktree is kept at `{tree}` on {machine}. " if tree.is_dir() else ""
        if t.state == COMPLETED:
            text = f"✅ Done{on}: {t.pr}" if t.pr else f"✅ Done{on}."
            return text + (f" (draft: {t.reason})" if t.reason else "")
        if t.state == BLOCKED:
            pushed = f"Branch `{t.branch}` is pushed if it has commits. " if t.branch else ""
            return f"⏰ The agent{on} needs a human: {t.reason}\n\n{pushed}{kept}".rstrip()
        return f"❌ Failed{on}: {t.reason}\n\n{kept}Re-apply the `{self.cfg.label}` label to try again."

    def post_or_edit(self, issue: int, comment_id: Optional[int], text: str, strict: bool = False) -> Optional[int]:
        """Edit the task's status comment, or post it when there is none (or
        a person deleted it: 404). Returns the comment's id, remembered in
        tasks.md before anything else happens, so a retry after a crash
        edits this comment rather than posting a second one. A failure costs
        only the comment (None), unless `strict`: then it raises."""
        if self.dry_run:
            return None
        text = redact(text)
        try:
            if comment_id:
                try:
                    self.github.edit_comment(comment_id, text)
                    return comment_id
                except GitHubError as e:
                    if e.status != 404:
                        raise
            new_id = self.github.comment(issue, text)
        except GitHubError as e:
            if strict:
                raise
            log.warning("gh-%d status comment not posted: %s", issue, e)
            return None
        self.amend(issue, expect=tasks.SECTIONS, comment_id=new_id)
        return new_id
