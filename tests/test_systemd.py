"""coordinator.service and the sd_notify protocol.

The unit is checked by systemd itself (`systemd-analyze verify`, which also
insists that ExecStart's binary exists), after the two lines a user edits
are pointed at this checkout. The notify protocol is checked the way systemd
sees it: a Unix datagram socket in the test, the real daemon started with
NOTIFY_SOCKET naming it, and the sender's PID read from the kernel's
credentials on each datagram (NotifyAccess=main drops any other sender).
"""
from __future__ import annotations

import inspect
import os
import pwd
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from harness import ROOT, Project
from adws import coordinator, tasks

UNIT = ROOT / "coordinator.service"


def settings(text: str) -> List[Tuple[str, str, str]]:
    """(section, key, value) for every assignment, in order."""
    out, section = [], ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def setting(text: str, key: str, section: str = "Service") -> str:
    values = [v for s, k, v in settings(text) if s == section and k == key]
    assert len(values) == 1, f"[{section}] {key}= set {len(values)} times"
    return values[0]


def seconds(span: str) -> float:
    """A systemd time span ('10min', '180s', '1min 30s', '90') in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span):
        total += float(number) * units[unit]
    return total


# -- the unit ---------------------------------------------------------------------

def test_unit_names_the_install_in_exactly_two_lines():
    text = UNIT.read_text()
    install_specific = [(s, k, v) for s, k, v in settings(text)
                        if "/home/pi" in v or re.fullmatch(r"pi\b.*", v)]
    assert [(k, v) for _, k, v in install_specific] == [
        ("User", "pi"), ("WorkingDirectory", "/home/pi/tac-coordinator")]
    lines = [line for line in text.splitlines() if line.startswith(("User=", "WorkingDirectory="))]
    assert len(lines) == 2
    # Said where a person edits, on the lines just above each.
    body = text.splitlines()
    for line in lines:
        assert "EDIT" in body[body.index(line) - 1]
    # ExecStart runs the checkout's files relative to WorkingDirectory=.
    argv = setting(text, "ExecStart").split()
    assert argv[1] == "adws/coordinator.py" and (ROOT / argv[1]).is_file()
    assert argv[2:] == ["--config", "config.toml"]


def test_unit_has_the_settings_the_daemon_relies_on():
    text = UNIT.read_text()
    assert setting(text, "Type") == "notify"
    assert setting(text, "NotifyAccess") == "main"
    assert setting(text, "KillMode") == "process"  # workers outlive restarts, re-adopted
    assert setting(text, "Restart") == "on-failure"
    assert "78" in setting(text, "RestartPreventExitStatus").split()
    assert setting(text, "RestartPreventExitStatus") == str(coordinator.EX_CONFIG)
    assert seconds(setting(text, "RestartSec")) > 0
    assert setting(text, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert seconds(setting(text, "StartLimitIntervalSec", "Unit")) > 0
    assert int(setting(text, "StartLimitBurst", "Unit")) > 1
    assert setting(text, "NoNewPrivileges") == "yes"
    assert setting(text, "ProtectSystem") == "strict"
    assert setting(text, "PrivateTmp") == "yes"
    assert setting(text, "StandardOutput") == "journal"
    assert setting(text, "StandardError") == "journal"
    assert "PYTHONUNBUFFERED=1" in setting(text, "Environment")
    # $HOME must be writable: the Claude CLI writes ~/.claude.json through
    # a lock directory and temp files beside it.
    assert "/home" in setting(text, "ReadWritePaths").split()
    # A tick can wait out one git fetch or push (git()'s timeout) and then
    # some: the watchdog must not fire on a slow tick.
    git_timeout = inspect.signature(coordinator.git).parameters["timeout"].default
    assert seconds(setting(text, "WatchdogSec")) > git_timeout
    assert seconds(setting(text, "TimeoutStartSec")) > 0


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="needs systemd-analyze (apt-get install systemd)")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    """The unit as a user would have it after the two edits, pointed at this
    checkout and the current user."""
    text = UNIT.read_text()
    user = pwd.getpwuid(os.getuid()).pw_name
    text = re.sub(r"(?m)^User=.*$", f"User={user}", text)
    text = re.sub(r"(?m)^WorkingDirectory=.*$", f"WorkingDirectory={ROOT}", text)
    # CI's python may not be /usr/bin/python3; verify checks the binary exists.
    text = re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={sys.executable}", text)
    unit = tmp_path / "coordinator.service"
    unit.write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    about_us = [line for line in (r.stdout + r.stderr).splitlines() if "coordinator.service" in line]
    assert r.returncode == 0, r.stdout + r.stderr
    assert about_us == [], "\n".join(about_us)  # parse warnings still exit 0


def test_verify_catches_a_broken_unit(tmp_path):
    """The check above can fail: a missing binary is an error."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("needs systemd-analyze (apt-get install systemd)")
    text = re.sub(r"(?m)^ExecStart=\S+", "ExecStart=/nonexistent/python3", UNIT.read_text())
    unit = tmp_path / "coordinator.service"
    unit.write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "/nonexistent/python3" in r.stderr


# -- the notify protocol -------------------------------------------------------------

class NotifyListener:
    """What systemd does: a datagram socket, each message with its sender's PID."""

    def __init__(self, address: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.messages: List[Tuple[int, str]] = []  # (sender pid, text)

    def receive(self, timeout: float) -> Optional[Tuple[int, str]]:
        self.sock.settimeout(timeout)
        try:
            data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("iII")))
        except socket.timeout:
            return None
        pid = -1
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", payload[:struct.calcsize("iII")])[0]
        self.messages.append((pid, data.decode("utf-8")))
        return self.messages[-1]

    def wait_for(self, pattern: str, timeout: float) -> str:
        """The first line matching `pattern` (a regex) among all messages."""
        deadline = time.time() + timeout
        while True:
            for _, text in self.messages:
                for line in text.splitlines():
                    if re.fullmatch(pattern, line):
                        return line
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError(f"no {pattern!r} in {[t for _, t in self.messages]}")
            self.receive(min(left, 1.0))

    def lines(self) -> List[str]:
        return [line for _, text in self.messages for line in text.splitlines()]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A socket path must fit in 108 bytes; pytest's tmp_path may not."""
    with tempfile.TemporaryDirectory(prefix="tac-sd-") as d:
        yield Path(d)


def test_daemon_reports_ready_watchdog_and_status(project, short_dir):
    listener = NotifyListener(str(short_dir / "notify"))
    project.env["NOTIFY_SOCKET"] = str(short_dir / "notify")
    project.write_config(workers={"max_concurrent": 1})
    quick = project.issue("Quick fix")
    slow = project.issue("Slow fix")
    project.script({str(quick): {"commit": "a.txt", "cost": 0.01},
                    str(slow): {"commit": "b.txt", "sleep": 4}})
    try:
        daemon = project.start()
        listener.wait_for(r"READY=1", timeout=30)
        listener.wait_for(r"WATCHDOG=1", timeout=5)
        # The quick run has ended and cost $0.01; the slow one is running.
        status = listener.wait_for(r"STATUS=1 active, 0 pending, \$0\.01 today", timeout=30)
        assert project.state(slow) == tasks.ACTIVE
        assert project.state(quick) == tasks.COMPLETED
        # READY=1 once, after the first cycle had polled GitHub.
        assert listener.lines().count("READY=1") == 1
        assert any(line.startswith("STATUS=0 active") or line.startswith("STATUS=1 active, 1 pending")
                   for line in listener.lines()[:listener.lines().index(status)])
        # Every message came from the daemon itself, never from a child
        # (gh, git, a worker), so NotifyAccess=main accepts them all.
        assert {pid for pid, _ in listener.messages} == {daemon.pid}
        daemon.terminate()
        daemon.wait(10)
        while listener.receive(0.2):
            pass
        assert listener.lines()[-1] == "STOPPING=1"
    finally:
        listener.close()


def test_abstract_namespace_socket(project):
    name = f"tac-test-{os.getpid()}-{time.time_ns()}"
    listener = NotifyListener("\0" + name)
    project.env["NOTIFY_SOCKET"] = "@" + name
    try:
        r = project.run("--once")
        assert r.returncode == 0, r.stderr
        while listener.receive(0.5):
            pass
        assert "READY=1" in listener.lines()
        assert "WATCHDOG=1" in listener.lines()
        assert "STATUS=0 active, 0 pending, $0.00 today" in listener.lines()
    finally:
        listener.close()


def test_sd_notify_is_a_no_op_without_notify_socket(short_dir):
    assert coordinator.sd_notify("READY=1", environ={}) is False
    assert coordinator.sd_notify("READY=1", environ={"NOTIFY_SOCKET": ""}) is False
    # A socket that went away is not an error either: the daemon carries on.
    assert coordinator.sd_notify("READY=1", environ={"NOTIFY_SOCKET": str(short_dir / "gone")}) is False
    listener = NotifyListener(str(short_dir / "here"))
    try:
        assert coordinator.sd_notify("WATCHDOG=1", environ={"NOTIFY_SOCKET": str(short_dir / "here")}) is True
        assert listener.receive(2) == (os.getpid(), "WATCHDOG=1")
    finally:
        listener.close()


def test_daemon_runs_without_notify_socket(project):
    project.env.pop("NOTIFY_SOCKET", None)
    r = project.run("--once")
    assert r.returncode == 0, r.stderr


# -- the watchdog and the idle sleep ---------------------------------------------------

def idle_coordinator(project: Project, environ: Dict[str, str]) -> coordinator.Coordinator:
    cfg = coordinator.load_config(project.config)
    c = coordinator.Coordinator(cfg, coordinator.GitHub(cfg.repo, env=project.env), environ=environ)
    c.next_poll_at = c.clock() + 3600  # nothing due for an hour
    return c


def test_idle_sleep_is_capped_at_half_the_watchdog(project):
    now = coordinator.since_boot()  # the daemon's clock for schedules
    assert idle_coordinator(project, {}).next_wake(now) == 60.0
    watched = idle_coordinator(project, {"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())})
    assert watched.next_wake(now) == 10.0
    # The variables meant for another process (we inherited them) do not count.
    inherited = idle_coordinator(project, {"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"})
    assert inherited.next_wake(now) == 60.0
    assert idle_coordinator(project, {"WATCHDOG_USEC": "junk"}).next_wake(now) == 60.0


def test_unit_watchdog_is_met_by_the_idle_loop(project):
    """With the shipped WatchdogSec, an idle daemon still pings in time."""
    usec = int(seconds(setting(UNIT.read_text(), "WatchdogSec")) * 1_000_000)
    c = idle_coordinator(project, {"WATCHDOG_USEC": str(usec)})
    assert c.next_wake(time.time()) <= usec / 1e6 / 2
