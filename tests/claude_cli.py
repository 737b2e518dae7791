"""Locate, install and drive the pinned real Claude Code CLI for tests.

Why: tests/test_real_claude.py (and the lead's demo/e2e) run the REAL CLI
against tests/fake_anthropic.py. The CLI ships on npm as
``@anthropic-ai/claude-code``; since 2.1.x that package is a thin wrapper whose
postinstall copies a native binary out of a platform-specific optional
dependency (``@anthropic-ai/claude-code-linux-x64`` etc.). Both come from the
npm registry, so ``npm install`` works with only the npm registry reachable
(verified here: 2.1.197, about 5 s, 235 MB on disk, no other download).

We install into a project-local prefix, ``<project>/.cache/claude-cli``
(git-ignored), instead of ``npm install -g``: no root needed, no clash with a
developer's own ``claude``, and CI can cache the folder between runs.
``tests/install_claude_cli.sh`` does the install (idempotent).

This module also holds the process helpers others reuse:

* ``cli_base_env(fake_env)`` -- the environment for a run (inherited env minus
  anything that could point the CLI at a real account, plus the fake's vars);
* ``start_claude`` / ``run_claude`` -- run it on a prompt given on stdin;
* ``kill_process_tree`` -- stop it for sure (see its docstring: SIGTERM alone
  is not enough with 2.1.197).

Python 3.9 compatible, stdlib only.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

#: The CLI version the tests are verified against (offline, as root, x86_64).
CLAUDE_CLI_VERSION = "2.1.197"
NPM_PACKAGE = "@anthropic-ai/claude-code"

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI_PREFIX = os.path.join(PROJECT_ROOT, ".cache", "claude-cli")
INSTALL_SCRIPT = os.path.join(PROJECT_ROOT, "tests", "install_claude_cli.sh")

#: argv every worker run uses (prompt goes on stdin).
BASE_ARGS = ["-p", "--output-format", "stream-json", "--verbose", "--dangerously-skip-permissions"]


# ---------------------------------------------------------------- locating
def _version_of(path: str) -> Optional[str]:
    """``claude --version`` prints e.g. ``2.1.197 (Claude Code)``; return the number."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30,
                             env=dict(os.environ, DISABLE_AUTOUPDATER="1"))
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    return out.stdout.strip().split()[0]


def candidate_paths(prefix: str = CLI_PREFIX) -> List[str]:
    """Where an install under ``prefix`` may have put the binary.

    ``node_modules/.bin/claude`` is the normal one (a symlink to
    ``bin/claude.exe``, which postinstall replaced with the native binary).
    If install scripts were not run (``--ignore-scripts``, or a future npm
    that blocks them) that file is a stub, but the platform package's binary
    is still there and works on its own.
    """
    nm = os.path.join(prefix, "node_modules")
    paths = [os.path.join(nm, ".bin", "claude")]
    plat = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(os.uname().machine, os.uname().machine)
    for suffix in ("", "-musl"):
        paths.append(os.path.join(nm, "@anthropic-ai", "claude-code-%s-%s%s" % (sys.platform, plat, suffix), "claude"))
    return paths


def claude_path(version: str = CLAUDE_CLI_VERSION, prefix: str = CLI_PREFIX) -> Optional[str]:
    """The installed pinned CLI, or None.

    Looks in the project-local prefix first, then ``claude`` on PATH; a
    binary counts only if its ``--version`` is exactly ``version``.
    """
    seen = []
    for path in candidate_paths(prefix) + [shutil.which("claude") or ""]:
        if not path or path in seen or not os.access(path, os.X_OK):
            continue
        seen.append(path)
        if _version_of(path) == version:
            return path
    return None


def install(quiet: bool = False) -> Optional[str]:
    """Run tests/install_claude_cli.sh; return claude_path() afterwards."""
    subprocess.run(["sh", INSTALL_SCRIPT], check=True,
                   stdout=subprocess.DEVNULL if quiet else None)
    return claude_path()


# ---------------------------------------------------------------- running
#: Inherited variables dropped before a run: a developer's or CI's own
#: account, proxy-gateway or nested-session settings must not reach the CLI.
_DROP_PREFIXES = ("ANTHROPIC_", "CLAUDE_CODE_", "CLAUDE_CONFIG_DIR", "CLAUDECODE", "AWS_BEARER_TOKEN_BEDROCK")


def cli_base_env(fake_env: Dict[str, str], extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """``os.environ`` minus account/session vars, plus ``fake_env`` and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP_PREFIXES)}
    env.update(fake_env)
    env.update(extra or {})
    return env


def start_claude(cwd: str, env: Dict[str, str], prompt: str, extra_args: Sequence[str] = (),
                 binary: Optional[str] = None) -> "subprocess.Popen[bytes]":
    """Start ``claude -p --output-format stream-json ...`` in ``cwd``, prompt on stdin.

    ``start_new_session=True`` gives the CLI its own process group so it can
    be killed as a group (its Bash tool still makes a session of its own per
    command: see kill_process_tree).
    """
    binary = binary or claude_path()
    if binary is None:
        raise FileNotFoundError("Claude Code CLI %s not installed: run tests/install_claude_cli.sh" % CLAUDE_CLI_VERSION)
    proc = subprocess.Popen([binary] + BASE_ARGS + list(extra_args), cwd=cwd, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    assert proc.stdin is not None
    try:
        proc.stdin.write(prompt.encode())
    except BrokenPipeError:
        pass  # it died at once; the caller sees the exit status
    proc.stdin.close()
    proc.stdin = None  # so communicate() does not flush the closed pipe
    return proc


def run_claude(repo: str, script: Union[List[Dict[str, Any]], Any], extra_args: Sequence[str] = (),
               timeout: float = 120.0, *, prompt: str = "Do the task.", log_path: Optional[str] = None,
               env_extra: Optional[Dict[str, str]] = None) -> Tuple[int, List[str]]:
    """Run the real CLI in ``repo`` against a scripted fake; return (returncode, stdout lines).

    ``script`` is a list of fake_anthropic steps (a FakeAnthropic is started
    and stopped here) or an already started ``FakeAnthropic`` (so the caller
    can inspect ``.requests`` afterwards). ``log_path``: the raw stdout is
    also written there. On timeout the CLI and its tools are killed and
    ``subprocess.TimeoutExpired`` is raised.
    """
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from fake_anthropic import FakeAnthropic  # noqa: E402  (sibling module)

    own = not isinstance(script, FakeAnthropic)
    fake = FakeAnthropic(list(script)).start() if own else script
    try:
        env = cli_base_env(fake.env(), env_extra)
        proc = start_claude(repo, env, prompt, extra_args)
        try:
            out, _err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_process_tree(proc)
            raise
        finally:
            # No tool process may outlive the run (they have their own sessions).
            kill_process_tree(proc, grace=0)
        if log_path:
            with open(log_path, "wb") as fh:
                fh.write(out)
        return proc.returncode, out.decode("utf-8", "replace").splitlines()
    finally:
        if own:
            fake.stop()


def parse_stream(lines: Iterable[str]) -> List[Dict[str, Any]]:
    """The JSON events of a stream-json output (non-JSON lines are skipped)."""
    events = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


class StreamWatcher:
    """Reads a running CLI's stdout in a thread and lets a test wait for events.

    ``lines`` keeps every raw line, ``events`` the parsed ones as
    ``(seconds_since_start, event)``. ``wait_for(pred, timeout)`` returns the
    first event (seen so far or later) for which ``pred(event)`` is true, or
    None on timeout / end of stream.
    """

    def __init__(self, proc: "subprocess.Popen[bytes]", started: Optional[float] = None) -> None:
        import threading

        self.proc = proc
        self.started = started if started is not None else time.monotonic()
        self.lines: List[str] = []
        self.events: List[Tuple[float, Dict[str, Any]]] = []
        self._cond = threading.Condition()
        self.eof = False
        self._thread = threading.Thread(target=self._run, name="claude-stdout", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self.lines.append(line)
                try:
                    self.events.append((time.monotonic() - self.started, json.loads(line)))
                except ValueError:
                    pass
                self._cond.notify_all()
        with self._cond:
            self.eof = True
            self._cond.notify_all()

    def wait_for(self, pred: Any, timeout: float) -> Optional[Dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for _t, ev in self.events:
                    if pred(ev):
                        return ev
                left = deadline - time.monotonic()
                if self.eof or left <= 0:
                    return None
                self._cond.wait(min(left, 0.2))

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)

    def save(self, path: str) -> None:
        with self._cond, open(path, "w") as fh:
            fh.write("".join(line + "\n" for line in self.lines))


# ---------------------------------------------------------------- killing
def _children_map() -> Dict[int, List[int]]:
    kids: Dict[int, List[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as fh:
                stat = fh.read()
        except OSError:
            continue
        # Field 4 is the PPID; the command name (field 2) may hold spaces or ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def descendants(pid: int) -> Set[int]:
    """All live descendants of ``pid`` (walking /proc/*/stat by parent PID)."""
    kids = _children_map()
    found: Set[int] = set()
    todo = [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_process_tree(proc: "subprocess.Popen[Any]", grace: float = 5.0) -> Set[int]:
    """Stop the CLI and every process it started; return the PIDs signalled.

    Observed with 2.1.197, which is why this is more than ``killpg``:

    * each Bash tool command runs in its OWN session (``bash -c ...`` with a
      new sid), so killing the CLI's process group misses it;
    * SIGTERM during the first ~3 s of a Bash tool call makes the CLI exit
      143 and leaves the tool's bash and children running, re-parented away
      (so the descendants must be collected BEFORE signalling);
    * SIGTERM once the tool has become a task (``system/task_started``) kills
      only the tool -- the CLI reports "Exit code 137" to the model and goes
      ON with the next turns, exiting 0 later;
    * SIGINT interrupts the turn: result ``error_during_execution``, exit 1.

    So: note all descendants, SIGINT the CLI, wait up to ``grace`` seconds,
    then SIGKILL its group, every noted and newly found descendant, and reap.
    """
    pids: Set[int] = set()
    if proc.poll() is None:
        pids |= descendants(proc.pid)
        try:
            os.kill(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace
        while proc.poll() is None and time.monotonic() < deadline:
            pids |= descendants(proc.pid)
            time.sleep(0.05)
        if proc.poll() is None:
            pids |= descendants(proc.pid)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    else:
        pids |= descendants(proc.pid)  # normally empty: a reaped pid has none
    for pid in list(pids):
        pids |= descendants(pid)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    return pids | {proc.pid}


if __name__ == "__main__":
    # `python tests/claude_cli.py` prints the path of the pinned CLI (exit 1 if absent);
    # `python tests/claude_cli.py --version` prints the pinned version.
    if sys.argv[1:] == ["--version"]:
        print(CLAUDE_CLI_VERSION)
        sys.exit(0)
    found = claude_path()
    print(found or "Claude Code CLI %s not installed: run tests/install_claude_cli.sh" % CLAUDE_CLI_VERSION)
    sys.exit(0 if found else 1)
