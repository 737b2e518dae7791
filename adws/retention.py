"""What stays on disk, and for how long: a Pi's SD card must not fill.

Every Failed or Blocked task keeps its worktree (a full checkout of the
target repository) for a person to look at, and every run leaves a
transcript, a stderr log and a prompt. `prune` removes a kept worktree after
`[paths] keep_trees_days` and an ended task's logs after `keep_logs_days`,
never anything of a task that is queued or running, and never the usage
ledger. `usage` measures what trees and logs take, for the status view.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Callable, Dict, Optional, Set

from adws import tasks
from adws.config import Config

log = logging.getLogger("tac")
DAY = 86400.0
_TREE = re.compile(r"gh-([0-9]+)")
_LOG = re.compile(r"gh-([0-9]+)\.(?:jsonl|stderr\.log|prompt\.md)")


def _age_days(path: Path, now: float) -> Optional[float]:
    try:
        return (now - path.lstat().st_mtime) / DAY
    except OSError:
        return None


def in_use(doc: tasks.TaskFile, live: Set[int]) -> Set[int]:
    """Issues whose files must stay: queued, running, or with a live worker."""
    return set(live) | {t.issue for t in doc.tasks if t.state in (tasks.PENDING, tasks.ACTIVE)}


def prune(cfg: Config, doc: tasks.TaskFile, live: Set[int], now: float,
          remove_tree: Callable[[Path], object], pushed: Callable[[str], bool]) -> int:
    """Remove what has outlived its keep; returns how many things went.
    `now` is wall-clock time (file times are). Worktrees go through
    `remove_tree` (git's own removal), so the clone forgets them too."""
    keep = in_use(doc, live)
    removed = 0
    if cfg.keep_trees_days > 0 and cfg.trees.is_dir():
        for entry in sorted(cfg.trees.iterdir()):
            m = _TREE.fullmatch(entry.name)
            if not m or int(m.group(1)) in keep:
                continue
            t = doc.governing(int(m.group(1)))
            ended = tasks.parse_time(t.finished) if t is not None and t.finished else None
            age = (now - ended) / DAY if ended is not None else _age_days(entry, now)
            if age is None or age < cfg.keep_trees_days:
                continue
            branch = t.branch if t is not None else ""
            where = "" if not branch else (f"; branch {branch} is on {cfg.remote}" if pushed(branch) else
                                           f"; branch {branch} stays in the clone (never pushed)")
            remove_tree(entry)
            removed += 1
            log.info("gh-%s worktree removed after %d days%s", m.group(1), cfg.keep_trees_days, where)
    if cfg.keep_logs_days > 0 and cfg.logs.is_dir():
        for entry in sorted(cfg.logs.iterdir()):
            m = _LOG.fullmatch(entry.name)  # the usage ledger never matches: it is never pruned
            if not m or int(m.group(1)) in keep:
                continue
            age = _age_days(entry, now)
            if age is not None and age >= cfg.keep_logs_days:
                try:
                    entry.unlink()
                except OSError as e:
                    log.warning("%s not removed: %s", entry, e.strerror)
                    continue
                removed += 1
                log.info("gh-%s %s removed after %d days", m.group(1), entry.name, cfg.keep_logs_days)
    return removed


def _size(path: Path) -> int:
    """Bytes under `path`, not following links; what cannot be read counts 0."""
    total = 0
    stack = [str(path)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
                        else:
                            total += e.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total


def usage(cfg: Config, free_mb: Callable[[Path], Optional[int]]) -> Dict[str, Optional[int]]:
    """MB used by the worktrees and the logs, and MB free where they live."""
    return {"trees_mb": _size(cfg.trees) // (1 << 20), "logs_mb": _size(cfg.logs) // (1 << 20),
            "free_mb": min((f for f in (free_mb(cfg.trees), free_mb(cfg.logs)) if f is not None), default=None)}

