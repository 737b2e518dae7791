"""Slow git and gh work, off the loop.

A finish pushes a branch and opens a pull request, a start fetches the base
and makes a worktree, a poll reads GitHub: seconds on a Pi, a minute when a
remote hangs. Run on the loop, any of them would keep it from noticing that
a worker ended or that a person asked it to stop. So the loop hands them to
a few threads as jobs and goes on; each tick it takes the results that are
in and applies them itself. tasks.md therefore keeps one writer and every
decision one thread: a job only gathers facts and talks to git and GitHub.

A job has a key (("poll",), ("finish", 12)): one job per key at a time. What
a job must have done on the loop (an amend of tasks.md) it asks for with
`on_loop`. With `threads=0` (the tests, --once, --dry-run) a job runs at
once, inline, and the loop sees exactly what it saw before jobs existed.
"""
from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Dict, Optional, Tuple

Then = Callable[[Any, Optional[BaseException]], Any]


def _name(key: Any) -> str:
    """("finish", 12) -> "finish gh-12", for the log."""
    return " ".join(f"gh-{k}" if isinstance(k, int) else str(k) for k in key)


def _call(work: Callable[[], Any]) -> Tuple[Any, Optional[BaseException]]:
    try:
        return work(), None
    except Exception as e:  # deliberate: the loop decides what an error means
        return None, e


class Jobs:
    def __init__(self, threads: int = 0, guard: Optional[Callable[..., Any]] = None):
        # `guard(name, fn, *args)` runs each result's `then` (and each
        # on_loop call) under the loop's error boundary: one job's failure
        # is said and never reaches the others.
        self.guard = guard or (lambda name, fn, *args: fn(*args))
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="tac-job") if threads else None
        self._running: Dict[Any, Optional[Tuple[Future, Then]]] = {}
        self._later: "queue.SimpleQueue[Tuple[Callable[..., Any], tuple]]" = queue.SimpleQueue()
        self._loop = threading.get_ident()
        self.wake_fd: Optional[int] = None  # the loop's wake-up pipe: a finished job cuts its sleep short

    def busy(self, key: Any) -> bool:
        return key in self._running

    def finished(self) -> bool:
        """Is anything waiting for the loop (a result, an on_loop call)? Its
        wake-up byte may have been drained with the tick's own."""
        return not self._later.empty() or any(e is not None and e[0].done() for e in self._running.values())

    def count(self, kind: str) -> int:
        """Jobs in flight whose key starts with `kind`."""
        return sum(1 for k in self._running if k[0] == kind)

    def submit(self, key: Any, work: Callable[[], Any], then: Then) -> bool:
        """Run `work` off the loop; `then(result, error)` runs on the loop
        when it is done (at once when inline). False if `key` is busy."""
        if key in self._running:
            return False
        if self._pool is None:
            self._running[key] = None
            try:
                result, error = _call(work)
            finally:
                del self._running[key]
            self.guard(_name(key), then, result, error)
            return True
        future = self._pool.submit(_call, work)
        self._running[key] = (future, then)
        future.add_done_callback(lambda _: self._wake())
        return True

    def on_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        """Have `fn(*args)` run on the loop: now if this is the loop."""
        if threading.get_ident() == self._loop:
            fn(*args)
        else:
            self._later.put((fn, args))
            self._wake()

    def apply(self) -> int:
        """On the loop: what jobs asked of it, then the results that are in,
        each under the guard. Returns how many results were applied."""
        # Which jobs are done is read first: everything a done job asked of
        # the loop was queued before it was done, so it is applied before
        # its result and before anything this tick decides from tasks.md.
        done = [(key, entry) for key, entry in self._running.items() if entry is not None and entry[0].done()]
        while True:
            try:
                fn, args = self._later.get_nowait()
            except queue.Empty:
                break
            self.guard(getattr(fn, "__name__", "job"), fn, *args)
        for key, (future, then) in done:
            del self._running[key]
            result, error = future.result()
            self.guard(_name(key), then, result, error)
        return len(done)

    def wait(self, timeout: float) -> None:
        """Block until every job in flight is done or `timeout` passed (shutdown, tests)."""
        futures = [e[0] for e in self._running.values() if e is not None]
        if futures:
            from concurrent.futures import wait
            wait(futures, timeout=timeout)

    def in_flight(self) -> int:
        """Jobs still running in their threads."""
        return sum(1 for e in self._running.values() if e is not None and not e[0].done())

    def _wake(self) -> None:
        if self.wake_fd is not None:
            try:
                os.write(self.wake_fd, b"j")
            except OSError:  # the pipe is full: the loop is awake anyway
                pass
