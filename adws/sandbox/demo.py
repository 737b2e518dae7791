"""`python adws/coordinator.py --demo`: the whole loop on this machine, with
no GitHub account and no API key.

What is real: git (a bare "origin" repository and a clone, in a new temp
folder), the `gh` binary, and the coordinator itself: `adws/coordinator.py
--config <sandbox>/config.toml`, started as a process exactly as a user starts
it, writing tasks.md, metrics.json and logs/ in the sandbox. What is not:
GitHub is adws/sandbox/fakegithub.py on 127.0.0.1,
reached by `gh` through HTTP_PROXY exactly as the tests reach it; the agent
is adws/sandbox/scripted_worker.py, which prints stream-json like `claude -p` and
commits or writes BLOCKED.md as its script says (its costs are made up).

Two issues are labelled by a trusted user: one ends as a pull request, the
other Blocked. The sandbox folder is kept afterwards, so the tools can be
pointed at it; the last lines of output say how, and how to delete it.
"""
from __future__ import annotations

import collections
import functools
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from types import ModuleType
from typing import Callable, Deque, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a file (`--demo` hands over so): `adws` from this checkout
    sys.path.insert(0, str(ROOT))
COORDINATOR = ROOT / "adws" / "coordinator.py"
WORKER = Path(__file__).resolve().parent / "scripted_worker.py"
TIMEOUT = 60.0        # seconds for both issues to end; they take about 10
REPO = "demo/calculator"
LABEL = "rpi-auto"
OPERATOR = "alice"    # a collaborator with write access: her label is trusted
LOG_LINES = 6         # daemon log lines under the live status view

# Settings of the developer's own environment that would steer `gh` away
# from the fake (the same list as tests/conftest.py).
_GH_LEAKS = ("GH_REPO", "GH_DEBUG", "GH_ENTERPRISE_TOKEN", "GITHUB_TOKEN",
             "GITHUB_ENTERPRISE_TOKEN", "GH_PAGER", "HTTPS_PROXY", "https_proxy")

# The tiny project the agent "works on": one module and its test.
_PROJECT = {
    "README.md": "# calculator\n\nA tiny calculator. Run the tests with `python -m pytest -q`.\n",
    "calc.py": '"""A tiny calculator."""\n\n\ndef add(a, b):\n    return a + b\n',
    "test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
}

# (title, body, what the scripted worker does). The sleeps give the live
# view something to show; see adws/sandbox/scripted_worker.py for the options.
_ISSUES = [
    ("Add a subtract function",
     "calc.py has add() but no subtract(). Please add subtract(a, b) and a test.",
     {"turns": 3, "tool": "python -m pytest -q", "commit": "CHANGES.md", "sleep": 4, "cost": 0.04}),
    ("Support complex numbers",
     "The calculator should accept complex numbers.",
     {"turns": 2, "tool": "grep -rn complex .", "sleep": 3, "cost": 0.02,
      "blocked": "Should 1+2j (Python) or 1+2i (maths) be the notation?"}),
]


def main() -> int:
    """Build the sandbox, run the coordinator until both issues have ended,
    then show what happened. Exit status 0 once both have ended (a pull
    request or Blocked), 1 on a timeout, 130 on Ctrl-C."""
    for tool, package in (("gh", "gh"), ("git", "git")):
        if shutil.which(tool) is None:
            what = "the GitHub CLI" if tool == "gh" else "git"
            print(f"the demo needs {what}: sudo apt-get install {package}")
            return 1
    try:
        from rich.console import Console
    except ImportError:
        print("the demo needs rich: pip install rich")
        return 1
    from adws.sandbox.fakegithub import FakeGitHub

    console = Console(highlight=False, markup=False, emoji=False)
    say = functools.partial(_say, console)
    sandbox = Path(tempfile.mkdtemp(prefix="tac-demo-"))
    origin, clone = make_repos(sandbox)
    fake = FakeGitHub(REPO, origin_path=str(origin)).start()  # gh is logged in as "operator"
    fake.add_label(LABEL)
    fake.set_permission(OPERATOR, "write")
    numbers = [fake.add_issue(title, body, labels=[LABEL], author=OPERATOR) for title, body, _ in _ISSUES]
    (sandbox / "script.json").write_text(json.dumps(
        {str(n): plan for n, (_, _, plan) in zip(numbers, _ISSUES)}, indent=1) + "\n")
    config = write_config(sandbox)

    gh_config = sandbox / "gh-config"
    gh_config.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in _GH_LEAKS}
    env.update(fake.env(str(gh_config)), GH_TOKEN="demo", PYTHONUNBUFFERED="1",
               TAC_SCRIPT=str(sandbox / "script.json"))  # the scripted workers read their script from here

    say("TAC coordinator demo", style="bold")
    say(f"Everything runs on this machine, in {sandbox}:")
    say(f"  - {origin.name}, a bare git repository playing GitHub's copy of {REPO}")
    say(f"  - {clone.name}/, the coordinator's clone of it (a tiny Python project)")
    say(f"  - a fake GitHub on 127.0.0.1:{fake.port}, which the real `gh` talks to")
    say(f"  - {WORKER.name}, a stand-in for `claude -p` (no API key; made-up costs)")
    say(f"{OPERATOR}, a trusted collaborator, labelled two issues {LABEL}:")
    for n, (title, _, plan) in zip(numbers, _ISSUES):
        say(f"  #{n} {title}  (will end {'Blocked' if plan.get('blocked') else 'as a pull request'})")
    say(f"Running the coordinator until both have ended (at most {TIMEOUT:.0f} s)...")
    say()

    status = _load_tool("status")
    status_cfg = status.load_config(str(config))
    log_path = sandbox / "coordinator.log"
    tail: Deque[str] = collections.deque(maxlen=LOG_LINES)
    live_view = console.is_terminal

    def done() -> bool:
        return all("tac:done" in fake.issue_labels(n) or "tac:blocked" in fake.issue_labels(n) for n in numbers)

    started = time.time()
    interrupted = False
    final_view = None
    with open(log_path, "ab") as log_file:
        daemon = subprocess.Popen([sys.executable, str(COORDINATOR), "--config", str(config)], env=env,
                                  stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
    follow = _LogFollower(log_path, tail if live_view else None, say)
    try:
        if live_view:
            _run_live(daemon, done, started, follow, console,
                      lambda: _screen(status, status_cfg, tail, console.width))
        else:
            _run(daemon, done, started, follow)
            # Drawn while the daemon still runs, so it shows it at work.
            final_view = status.build(status.collect(status_cfg, time.time()), console.width)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        _stop_daemon(daemon)
        follow()
        left = _stop_workers(env["TAC_SCRIPT"])
    elapsed = time.time() - started
    ended = done()
    if final_view is not None:
        say()
        console.print(final_view)
    say()
    if interrupted:
        say(f"Interrupted after {elapsed:.0f} s.", style="bold")
    elif not ended:
        say(f"The issues had not both ended after {TIMEOUT:.0f} s: see {sandbox / 'coordinator.log'}",
            style="bold red")
    else:
        say(f"Both issues ended in {elapsed:.0f} s.", style="bold")
    if left:
        say(f"Stopped {left} worker process(es) still running: the demo leaves none behind.")
    if daemon.returncode not in (0, -signal.SIGTERM):
        say(f"The coordinator ended with status {daemon.returncode}: see {log_path}", style="bold red")
    try:
        report(console, sandbox, config, fake, numbers, clone)
    finally:
        fake.stop()
    if interrupted:
        return 130
    return 0 if ended else 1


# -- the sandbox ------------------------------------------------------------------

def _git(*args: str, cwd: Optional[Path] = None) -> None:
    subprocess.run(["git", "-c", "user.name=Demo", "-c", "user.email=demo@example.com",
                    "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", *args],
                   cwd=cwd, check=True, capture_output=True)


def make_repos(sandbox: Path):
    """origin.git (bare, `main` holding the tiny project) and a clone of it."""
    origin, seed, clone = sandbox / "origin.git", sandbox / "seed", sandbox / "calculator"
    _git("init", "--bare", "-q", str(origin))
    _git("--git-dir", str(origin), "symbolic-ref", "HEAD", "refs/heads/main")
    _git("init", "-q", str(seed))
    for name, text in _PROJECT.items():
        (seed / name).write_text(text)
    _git("add", ".", cwd=seed)
    _git("commit", "-q", "-m", "A tiny calculator", cwd=seed)
    _git("push", "-q", str(origin), "HEAD:refs/heads/main", cwd=seed)
    shutil.rmtree(seed)
    _git("clone", "-q", str(origin), str(clone))
    # Workers commit in worktrees of this clone, which share its config.
    for key, value in (("user.name", "TAC demo agent"), ("user.email", "agent@example.com"),
                       ("commit.gpgsign", "false")):
        _git("config", key, value, cwd=clone)
    return origin, clone


def write_config(sandbox: Path) -> Path:
    """config.toml for the sandbox; paths are relative to it, as in a real install."""
    q = json.dumps  # a JSON string is a valid TOML basic string
    text = f"""\
# The demo's config: the same keys as the project's config.toml.
[github]
repo = {q(REPO)}
label = {q(LABEL)}
poll_interval = 1              # the fake GitHub has no rate limit worth saving

[repo]
path = "calculator"

[workers]
max_concurrent = 1             # one at a time, so the queue shows a Pending entry
command = [{q(sys.executable)}, {q(str(WORKER))}]
min_free_memory_mb = 0         # the stand-in worker needs next to nothing
timeout = 60

[paths]
template = {q(str(ROOT / "worker_template.md"))}
"""
    path = sandbox / "config.toml"
    path.write_text(text)
    return path


# -- running it ---------------------------------------------------------------------

class _LogFollower:
    """The daemon's new log lines: into the live view's tail, or printed."""

    def __init__(self, path: Path, tail: Optional[Deque[str]], say: Callable[..., None]):
        self.path, self.tail, self.say, self.offset = path, tail, say, 0

    def __call__(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].decode("utf-8", "replace").splitlines():
            line = line[11:] if line[:4].isdigit() else line  # the date: the demo runs within one day
            if self.tail is not None:
                self.tail.append(line)
            else:
                self.say("  " + line)


def _over(daemon: subprocess.Popen, done: Callable[[], bool], started: float) -> bool:
    return daemon.poll() is not None or done() or time.time() - started > TIMEOUT


def _run(daemon: subprocess.Popen, done: Callable[[], bool], started: float, follow: Callable[[], None]) -> None:
    while not _over(daemon, done, started):
        follow()
        time.sleep(0.25)


def _run_live(daemon: subprocess.Popen, done: Callable[[], bool], started: float, follow: Callable[[], None],
              console, screen: Callable[[], object]) -> None:
    from rich.live import Live
    with Live(screen(), console=console, auto_refresh=False, vertical_overflow="crop") as live:
        while not _over(daemon, done, started):
            follow()
            live.update(screen(), refresh=True)
            time.sleep(0.25)
        follow()
        live.update(screen(), refresh=True)


def _screen(status: ModuleType, status_cfg: Dict, tail: Deque[str], width: int):
    """tools/status.py's view of the sandbox, and the daemon's last log lines."""
    from rich.console import Group
    from rich.text import Text
    parts: List[object] = [status.build(status.collect(status_cfg, time.time()), width), Text()]
    parts.append(Text("Coordinator log (last lines):", style="bold"))
    for line in tail:
        parts.append(Text("  " + line, style="dim", no_wrap=True, overflow="ellipsis"))
    return Group(*parts)


def _stop_daemon(daemon: subprocess.Popen) -> None:
    """SIGTERM, as systemd stops it; it leaves its workers running on purpose
    (a restart re-adopts them), so the demo stops those itself."""
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(15)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def _stop_workers(script: str) -> int:
    """The demo owns its workers: none may outlive it (a timeout, Ctrl-C).
    They are the processes whose environment names this sandbox's script."""
    needle = f"TAC_SCRIPT={script}".encode()
    left = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            os.kill(int(entry), signal.SIGKILL)
            left += 1
        except OSError:
            continue
    return left


def _load_tool(name: str) -> ModuleType:
    """tools/NAME.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"tac_tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


# -- what happened ---------------------------------------------------------------------

def _say(console, text: str = "", style: str = "", verbatim: bool = False) -> None:
    """One line at the console's width; a wrapped line keeps its indent.
    A verbatim line (a command to copy, a line of a file) is never broken:
    the terminal wraps it if it must."""
    from rich.text import Text
    indent = len(text) - len(text.lstrip(" "))
    if verbatim:
        lines = [text]
    else:
        lines = textwrap.wrap(text, width=max(20, console.width), subsequent_indent=" " * indent,
                              break_long_words=False, break_on_hyphens=False) or [""]
    for line in lines:
        console.print(Text(line, style=style), no_wrap=True, overflow="ignore", crop=False)


def report(console, sandbox: Path, config: Path, fake, numbers: List[int], clone: Path) -> None:
    from adws import tasks
    say = functools.partial(_say, console)
    cmd = functools.partial(_say, console, verbatim=True)
    doc, _, _ = tasks.load(sandbox / "tasks.md")
    pulls = {p["head"]["ref"]: p for p in fake.pulls()}

    heading(say, "What happened on the (fake) GitHub")
    for n in numbers:
        issue = fake.issue(n)
        t = doc.governing(n)
        say(f"#{n} {issue['title']}", style="bold")
        say(f"  tasks.md: {t.state if t else 'not queued'}" + (f" - {t.reason}" if t and t.reason else ""))
        pr = pulls.get(t.branch) if t and t.branch else None
        if pr:
            say(f"  pull request: {pr['title']}{' (draft)' if pr.get('draft') else ''}")
            say(f"    {pr['html_url']}")
        say(f"  labels now: {', '.join(fake.issue_labels(n)) or '(none)'}")
        for comment in fake.comments(n):
            body = comment["body"].replace("<!-- tac-coordinator -->", "").strip()
            say(f"  comment by {comment['user']['login']} (the coordinator's gh account):")
            for line in body.splitlines():
                say(f"    {line}" if line.strip() else "")

    heading(say, f"tasks.md, the queue ({sandbox / 'tasks.md'})")
    for line in (sandbox / "tasks.md").read_text(encoding="utf-8").rstrip().splitlines():
        cmd("  " + line)

    heading(say, "Usage report (tools/usage_report.py)")
    sys.stdout.flush()
    _load_tool("usage_report").main(["--config", str(config)])

    heading(say, "Explore further")
    blocked = doc.in_state(tasks.BLOCKED)
    say("The fake GitHub stopped with the demo; the files stay. Try:")
    cmd(f"  {_python()} {_tool_path('view_worker.py')} {numbers[0]} --config {config}")
    say("      the worker's transcript, as people read it")
    cmd(f"  {_python()} {_tool_path('status.py')} --config {config}")
    say("      the status view (critical now: the demo's coordinator has stopped)")
    cmd(f"  {_python()} {_tool_path('usage_report.py')} --config {config} --detail")
    say("      cost and tokens per day and per issue")
    for t in blocked:
        cmd(f"  cat {Path(t.worktree) / 'BLOCKED.md'}")
        say("      what the Blocked worker left for a human, in its kept worktree")
    cmd(f"  git -C {clone} log --oneline --all")
    say("      the branches the workers pushed")
    cmd(f"  less {sandbox / 'coordinator.log'}")
    say("      everything the coordinator logged")
    say("Delete the sandbox when done:")
    cmd(f"  rm -rf {sandbox}")


def heading(say: Callable[..., None], title: str) -> None:
    say()
    say(title, style="bold")
    say("-" * min(len(title), 78))


def _python() -> str:
    """The interpreter running the demo (a venv's has rich; a bare `python`
    may not), relative to the current folder when that is shorter."""
    try:
        rel = os.path.relpath(sys.executable)
    except ValueError:
        return sys.executable
    return rel if not rel.startswith("..") else sys.executable


def _tool_path(name: str) -> str:
    """tools/NAME relative to the current folder when that is shorter."""
    path = ROOT / "tools" / name
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if not rel.startswith("..") else str(path)


if __name__ == "__main__":
    sys.exit(main())
