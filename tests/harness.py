"""A coordinator project in a temp dir: config, clone, fake GitHub, scripted worker.

The end-to-end, chaos and security tests build on it. Everything is real
except GitHub (a fake REST server reached through the real `gh`) and the
agent (adws/sandbox/scripted_worker.py, which prints stream-json like the CLI).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adws import tasks  # noqa: E402

COORDINATOR = ROOT / "adws" / "coordinator.py"
WORKER = ROOT / "adws" / "sandbox" / "scripted_worker.py"


def poll(what: Callable[[], Any], timeout: float) -> Any:
    """what()'s first true value within `timeout` seconds, else its last."""
    deadline = time.time() + timeout
    value = what()
    while not value and time.time() < deadline:
        time.sleep(0.1)
        value = what()
    return value


class Project:
    def __init__(self, tmp_path: Path, github: Any, gh_env: Dict[str, str], clone: Path, origin: Path):
        self.dir = tmp_path / "state"
        self.dir.mkdir()
        self.github = github
        self.clone = clone
        self.origin = origin
        github.origin_path = str(origin)
        github.add_label("rpi-auto")
        github.set_permission("alice", "write")
        self.env = dict(gh_env)
        self.env["TAC_SCRIPT"] = str(self.dir / "script.json")
        self.env["PYTHONUNBUFFERED"] = "1"
        self.config = self.dir / "config.toml"
        self.script({"default": {"commit": "fix.txt"}})
        self.write_config()
        (self.dir / "worker_template.md").write_text(
            "Issue #{issue_number} on {branch}\n<issue-title>\n{title}\n</issue-title>\n<issue-body>\n{body}\n</issue-body>\n")
        self.procs: List[subprocess.Popen] = []

    def write_config(self, workers: Optional[Dict[str, Any]] = None, github: Optional[Dict[str, Any]] = None,
                     budget: Optional[Dict[str, Any]] = None, command: Optional[List[str]] = None,
                     followup: Optional[Dict[str, Any]] = None) -> None:
        w = {"max_concurrent": 2, "startup_grace": 0.5, "startup_backoff": [1, 2, 3], "retry_backoff": [1],
             "stop_grace": 1, "min_free_memory_mb": 0, "timeout": 60}
        w.update(workers or {})
        g = {"repo": "acme/widgets", "label": "rpi-auto", "poll_interval": 1}
        g.update(github or {})
        cmd = command or [sys.executable, str(WORKER)]
        lines = ["[github]"] + [f"{k} = {json.dumps(v)}" for k, v in g.items()]
        lines += ["[repo]", f"path = {json.dumps(str(self.clone))}"]
        lines += ["[workers]", f"command = {json.dumps(cmd)}"] + [f"{k} = {json.dumps(v)}" for k, v in w.items()]
        if budget:
            lines += ["[budget]"] + [f"{k} = {json.dumps(v)}" for k, v in budget.items()]
        if followup is not None:
            f = {"template": str(ROOT / "followup_template.md")}
            f.update(followup)
            lines += ["[followup]"] + [f"{k} = {json.dumps(v)}" for k, v in f.items()]
        self.config.write_text("\n".join(lines) + "\n")

    def script(self, mapping: Dict[str, Any]) -> None:
        (self.dir / "script.json").write_text(json.dumps(mapping))

    def issue(self, title: str, body: str = "", labeller: str = "alice", **kw: Any) -> int:
        return self.github.add_issue(title, body, labels=["rpi-auto"], author=kw.pop("author", "alice"),
                                     labeller=labeller, **kw)

    # -- running it ---------------------------------------------------------------
    def argv(self, *args: str) -> List[str]:
        return [sys.executable, str(COORDINATOR), "--config", str(self.config), *args]

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), env=self.env, capture_output=True, text=True, timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen:
        log = open(self.dir / "coordinator.log", "ab")
        p = subprocess.Popen(self.argv(*args), env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        # Workers outlive the coordinator on purpose; tests must not leak them.
        # Only this project's: another test run or a real coordinator on the
        # same machine has workers too.
        for pid in self.worker_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def worker_pids(self) -> List[int]:
        """Live processes started by this project's workers."""
        return tagged_processes(f"TAC_SCRIPT={self.env['TAC_SCRIPT']}")

    def log_text(self) -> str:
        path = self.dir / "coordinator.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- looking at it ---------------------------------------------------------------
    def tasks(self) -> tasks.TaskFile:
        doc, _, _ = tasks.load(self.dir / "tasks.md")
        return doc

    def task(self, n: int) -> Optional[tasks.Task]:
        return self.tasks().governing(n)

    def wait_for(self, what: Callable[[], Any], timeout: float = 30, message: str = "") -> Any:
        value = poll(what, timeout)
        if value:
            return value
        raise AssertionError(f"timed out after {timeout}s waiting for {message or what}\n--- log ---\n"
                             f"{self.log_text()[-4000:]}\n--- tasks.md ---\n"
                             f"{(self.dir / 'tasks.md').read_text() if (self.dir / 'tasks.md').exists() else ''}")

    def state(self, n: int) -> str:
        t = self.task(n)
        return t.state if t else ""


def tagged_processes(also: str = "") -> List[int]:
    """Live processes started by any coordinator worker (they carry
    TAC_WORKER_ID), or only those whose environment also holds `also`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes()
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if b"TAC_WORKER_ID=" in env and stat[stat.rfind(")") + 2] != "Z" \
                and (not also or also.encode() in env.split(b"\0")):
            found.append(int(entry))
    return found


def zombies_of(pid: int) -> List[int]:
    """Zombie children of `pid`."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2:].split()
        if rest[0] == "Z" and int(rest[1]) == pid:
            out.append(int(entry))
    return out


def trace_runs(path: Path) -> Dict[int, Dict[int, List[float]]]:
    """Runs of the scripted worker from its $TAC_TRACE file: issue -> pid ->
    [start, end]. A run with no end line (killed, or still running) ends at
    +inf: an unknown end must count as overlapping, never as finished."""
    runs: Dict[int, Dict[int, List[float]]] = {}
    if not Path(path).exists():
        return runs
    for line in Path(path).read_text().splitlines():
        issue, pid, start, end = line.split()
        run = runs.setdefault(int(issue), {}).setdefault(int(pid), [float(start), float("inf")])
        if end != "-":
            run[1] = float(end)
    return runs


def overlapping_runs(path: Path) -> List[str]:
    """Pairs of runs of one issue whose intervals overlap: two workers at once."""
    return overlaps(trace_runs(path))


def overlaps(runs: Dict[int, Dict[int, List[float]]]) -> List[str]:
    """overlapping_runs() for runs already read (see trace_runs)."""
    found = []
    for issue, by_pid in runs.items():
        spans = sorted((start, end, pid) for pid, (start, end) in by_pid.items())
        for (s1, e1, p1), (s2, e2, p2) in zip(spans, spans[1:]):
            if s2 < e1:
                found.append(f"gh-{issue}: pid {p1} [{s1:.3f}, {e1:.3f}] overlaps pid {p2} [{s2:.3f}, {e2:.3f}]")
    return found


def lasting_zombies(pid: int, samples: int = 4, every: float = 0.5) -> List[int]:
    """Zombie children of `pid` that stay zombies across `samples` looks.
    A git or gh call caught between its exit and subprocess.run's wait, or a
    worker in the second before its reap, is a zombie for an instant; a
    child nobody reaps stays one."""
    lasting = set(zombies_of(pid))
    for _ in range(samples - 1):
        if not lasting:
            break
        time.sleep(every)
        lasting &= set(zombies_of(pid))
    return sorted(lasting)


# -- several coordinators on one repository (issue #16) ----------------------------------------

class Node(Project):
    """One coordinator of a cluster: its own state folder, clone, tasks.md
    and trees under `base`, a [cluster] section naming it, and the fake
    GitHub and bare origin that every node of the cluster shares."""

    def __init__(self, base: Path, github: Any, gh_env: Dict[str, str], origin: Path, name: str,
                 cluster: Optional[Dict[str, Any]] = None):
        base.mkdir(parents=True)
        self.name = name
        self.cluster = {"node": name, **(cluster or {})}
        clone = base / "clone"
        for args in (["clone", "-q", str(origin), str(clone)], ["-C", str(clone), "config", "user.name", "Test"],
                     ["-C", str(clone), "config", "user.email", "test@example.com"],
                     ["-C", str(clone), "config", "commit.gpgsign", "false"]):
            subprocess.run(["git", *args], check=True, capture_output=True)
        super().__init__(base, github, gh_env, clone, origin)

    def write_config(self, workers: Optional[Dict[str, Any]] = None, github: Optional[Dict[str, Any]] = None,
                     budget: Optional[Dict[str, Any]] = None, command: Optional[List[str]] = None,
                     cluster: Optional[Dict[str, Any]] = None) -> None:
        super().write_config(workers, github, budget, command)
        self.cluster.update(cluster or {})
        with open(self.config, "a") as f:
            f.write("[cluster]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in self.cluster.items()))


def claim_refs(origin: Path, prefix: str = "refs/tac/") -> Dict[str, str]:
    """ref -> sha of every claim ref (and anything else under `prefix`) on the bare origin."""
    out = subprocess.run(["git", "--git-dir", str(origin), "for-each-ref", "--format=%(refname) %(objectname)",
                          prefix], check=True, capture_output=True, text=True).stdout
    return dict(line.split() for line in out.splitlines())


def claim_at(origin: Path, issue: int) -> Optional[dict]:
    """The claim on `issue` as the origin holds it (its commit's JSON), None if there is none."""
    r = subprocess.run(["git", "--git-dir", str(origin), "log", "-1", "--format=%B", f"refs/tac/claims/gh-{issue}"],
                       capture_output=True, text=True)
    return json.loads(r.stdout) if r.returncode == 0 else None
