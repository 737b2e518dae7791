"""tools/view_worker.py: every real sample renders; odd lines are named, not fatal;
attempts, --raw, config lookup, bounded memory on a big log, and --follow.

Most tests run the script as a subprocess, from a temp folder, the way a
person runs it; a few render in-process into a recording Console.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console

from adws import ledger, transcript

ROOT = Path(__file__).resolve().parents[1]
VIEW = ROOT / "tools" / "view_worker.py"
from claude_samples import needs_samples, sample, sample_files  # noqa: E402


def env():
    """The caller's environment without anything that forces colour or a width."""
    e = {k: v for k, v in os.environ.items()
         if k not in ("FORCE_COLOR", "NO_COLOR", "COLUMNS", "LINES", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    e["COLUMNS"] = "80"
    return e


def view(*args, cwd=None, timeout=120):
    return subprocess.run([sys.executable, str(VIEW), *map(str, args)], capture_output=True,
                          cwd=cwd, env=env(), timeout=timeout)


def squash(text: str) -> str:
    """Drop all whitespace: rich wraps long lines at 80 columns."""
    return "".join(text.split())


def out_of(proc) -> str:
    return proc.stdout.decode("utf-8")


def line(obj) -> str:
    return json.dumps(obj) + "\n"


def assert_clean(proc, code=0):
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert "\x1b[" not in out_of(proc)   # no colour when not a tty
    for row in out_of(proc).split("\n"):
        assert cell_len(row) <= 80, row
        assert not row.endswith(" "), repr(row)


# ---------------------------------------------------------------------------
# Real samples
# ---------------------------------------------------------------------------

@needs_samples
@pytest.mark.parametrize("path", sample_files(), ids=lambda p: p.name[:12])
def test_every_sample_renders_its_tool_calls_and_cost(path, tmp_path):
    proc = view("--log", path, cwd=tmp_path)
    assert_clean(proc)
    out = squash(out_of(proc))
    events = [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
    for e in events:
        if e["type"] == "assistant":
            for block in e["message"]["content"]:
                if block["type"] == "tool_use":
                    label = block["name"] + ":" + transcript.key_argument(block["name"], block["input"])
                    assert squash(label) in out
                elif block["type"] == "text":
                    assert squash(block["text"].split("\n")[0]) in out
        elif e["type"] == "result":
            assert squash("result " + e["subtype"]) in out
            assert ledger.usd(e["total_cost_usd"], fine=True) in out
            assert "{}turn{}".format(e["num_turns"], "" if e["num_turns"] == 1 else "s") in out
        elif e["type"] == "system" and e["subtype"] == "init":
            assert squash(e["model"]) in out and e["session_id"] in out
    assert "unreadable" not in out and "unknownevent" not in out


def test_sample_08_pieces(tmp_path):
    out = out_of(view("--log", sample("08_"), cwd=tmp_path))
    assert "▶ Bash: echo hello > out.txt && git status --short" in out
    assert "?? out.txt" in out
    assert "◆ Done. Created out.txt." in out
    assert "■ result success · cost $0.0017 · 2 turns · 572ms" in out
    assert "CLI 2.1.197" in out and "permissions bypassPermissions" in out
    assert "/home/pi/widgets/trees/gh-7" in out


def test_sample_09_retries_and_no_result(tmp_path):
    out = squash_keep(out_of(view("--log", sample("09_"), cwd=tmp_path)))
    assert "↻ API retry 1/10 in 571ms: unknown" in out
    assert "↻ API retry 9/10 in 32.2s: unknown" in out
    assert "no result" in out and "9 API retries" in out


def test_sample_03_image_is_described_not_dumped(tmp_path):
    proc = view("--log", sample("03_"), cwd=tmp_path)
    assert_clean(proc)
    out = out_of(proc)
    assert "[image image/png" in out
    assert "iVBORw0KGgo" not in out          # the PNG's base64
    assert len(out) < 20_000


def test_sample_05b_subagents_tasks_and_rate_limit(tmp_path):
    out = out_of(view("--log", sample("05b_"), cwd=tmp_path))
    assert "⚙ task started: Run sleep and echo command" in out
    assert "⏱ rate limit five_hour: allowed" in out
    assert "    ▶ Bash: sleep 20; echo agent-done" in out    # the subagent's call, indented
    assert "▶ Agent: Run sleep and echo command" in out
    assert "(estimate)" in out


def test_detailed_shows_inputs_thinking_and_stderr_tail(tmp_path):
    log = tmp_path / "gh-4.jsonl"
    shutil.copy(sample("04_"), log)
    (tmp_path / "gh-4.stderr.log").write_text("starting\nError: boom at the end\n")
    out = out_of(view("--log", log, "--detailed", cwd=tmp_path))
    assert '"replace_all": false' in out                 # full tool input
    assert "stderr (last 2 lines):" in out and "Error: boom at the end" in out
    short = out_of(view("--log", log, cwd=tmp_path))
    assert "boom" not in short and '"replace_all"' not in short
    assert len(short) < len(out)


# ---------------------------------------------------------------------------
# Odd lines
# ---------------------------------------------------------------------------

ODD = (
    line({"type": "system", "subtype": "init", "model": "claude-sonnet-4-6", "session_id": "s-odd"})
    + "Segmentation fault (core dumped) while writing a very long crash message that goes on and on and on\n"
    + line({"type": "weird", "subtype": "thing"})
    + line({"type": "system", "subtype": "brand_new"})
    + line({"type": "assistant", "message": {"id": "m", "content": [{"type": "hologram"}, None]}})
    + line([1, 2])
    + line({"type": 5})
    + line({"type": "assistant", "message": "not a dict"})
    + line({"type": "user", "message": {"content": [None, {"type": "tool_result", "content": None, "is_error": True}]}})
    + line({"type": "result", "subtype": "success", "num_turns": "x", "duration_ms": None, "total_cost_usd": "free"})
    + line({"type": "stream_event", "event": {"type": "content_block_delta"}})
    + line({"type": "tac", "subtype": "mystery"})
    + "\n"
    + '{"type":"assistant","message":{"id":"msg_torn","content":[{"type":"te'
)


def test_corrupt_truncated_and_unknown_lines_are_named(tmp_path):
    log = tmp_path / "odd.jsonl"
    log.write_text(ODD)
    proc = view("--log", log, cwd=tmp_path)
    assert_clean(proc)
    out = out_of(proc)
    assert "! unreadable line 2: Segmentation fault (core dumped) while writing a very long crash message that" in squash_keep(out)
    assert "? unknown event: weird/thing" in out
    assert "? unknown event: system/brand_new" in out
    assert "? hologram block" in out
    assert "! unreadable line 6: [1, 2]" in out
    assert "? unknown event: (no type)" in out
    assert "✗ tool error" in out
    assert "■ result success · cost - · 0 turns · 0ms" in out
    assert "Σ 1 turn ·" in out    # "m" is the one message id; the torn line adds nothing
    assert "? unknown event: tac/mystery" in out
    assert '! unreadable line 14: {"type":"assistant","message":{"id":"msg_torn","content":[{"type":"te' in squash_keep(out)
    assert "could not show" not in out


def squash_keep(text: str) -> str:
    """Undo rich's wrapping only (join rows), keeping the spaces inside rows."""
    return " ".join(row.strip() for row in text.split("\n"))


def load_viewer_module():
    spec = importlib.util.spec_from_file_location("view_worker_under_test", VIEW)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_samples
def test_no_mangled_sample_line_reaches_the_catch_all():
    """Cut every sample line at several places and re-type some fields:
    each must render through the normal paths, not the deliberate catch-all."""
    vw = load_viewer_module()
    buf = io.StringIO()
    console = Console(file=buf, width=80, record=False, color_system=None)
    viewer = vw.Viewer(console, detailed=True)
    shapes = set()
    for path in sample_files():
        for raw in path.read_bytes().split(b"\n"):
            for cut in (len(raw), len(raw) // 2, 17):
                viewer.feed(raw[:cut])
            event = transcript.parse_line(raw)
            if not event or event.get("type") == "_bad" or len(raw) > 20_000:
                continue
            message = event.get("message") if isinstance(event.get("message"), dict) else {}
            blocks = message.get("content") if isinstance(message.get("content"), list) else []
            shape = (event.get("type"), event.get("subtype"), tuple(b.get("type") for b in blocks))
            if shape not in shapes:  # re-type the fields of one line of each shape
                shapes.add(shape)
                for value in (None, 3.5, "x", []):
                    for key in event:
                        viewer.feed(json.dumps(dict(event, **{key: value})).encode())
                    for key in message:
                        viewer.feed(json.dumps(dict(event, message=dict(message, **{key: value}))).encode())
                    for i, block in enumerate(blocks):
                        for key in block:
                            mangled = blocks[:i] + [dict(block, **{key: value})] + blocks[i + 1:]
                            viewer.feed(json.dumps(dict(event, message=dict(message, content=mangled))).encode())
    text = buf.getvalue()
    assert "could not show" not in text
    assert "! unreadable line" in text


# ---------------------------------------------------------------------------
# Attempts and --raw
# ---------------------------------------------------------------------------

def attempt(n, text):
    return (line({"type": "tac", "subtype": "attempt", "issue": 7, "attempt": n, "worker": "w-{:06d}".format(n),
                  "branch": "auto/gh-7-{}".format(n), "started": "2026-11-21 17:3{}:01".format(n)})
            + line({"type": "system", "subtype": "init", "model": "claude-sonnet-4-6", "session_id": "s{}".format(n)})
            + line({"type": "assistant", "message": {"id": "m{}".format(n), "model": "claude-sonnet-4-6",
                                                     "content": [{"type": "text", "text": text}],
                                                     "usage": {"input_tokens": 10 * n, "output_tokens": n}}})
            + line({"type": "tac", "subtype": "end", "issue": 7, "attempt": n, "exit": "exit status 1",
                    "reason": "stalled"}))


def three_attempts(tmp_path) -> Path:
    log = tmp_path / "gh-7.jsonl"
    log.write_text(attempt(1, "alpha words") + attempt(2, "bravo words") + attempt(3, "charlie words"))
    return log


def test_all_attempts_show_separators_and_ends(tmp_path):
    out = out_of(view("--log", three_attempts(tmp_path), cwd=tmp_path))
    assert ("━━ attempt 2 · worker w-000002 · branch auto/gh-7-2 · started 2026-11-21 17:32:01") in squash_keep(out)
    assert "━━ end of attempt 3: exit status 1 · stalled" in out
    assert out.index("alpha") < out.index("bravo") < out.index("charlie")
    assert out.count("Σ 1 turn ·") == 3 and "tokens in 20" in out


def test_a_follow_up_round_says_so_and_whether_its_session_was_resumed(tmp_path):
    log = tmp_path / "gh-7.jsonl"
    log.write_text(attempt(1, "alpha words") + attempt(1, "bravo words").replace(
        '"attempt": 1, "worker"', '"attempt": 1, "round": 2, "session": "resumed", "worker"', 1))
    out = squash_keep(out_of(view("--log", log, cwd=tmp_path)))
    assert "━━ attempt 1 · worker w-000001" in out
    assert "━━ follow-up round 2 (session resumed) · worker w-000001" in out


def test_attempt_k_shows_only_that_attempt(tmp_path):
    proc = view("--log", three_attempts(tmp_path), "--attempt", "2", cwd=tmp_path)
    assert_clean(proc)
    out = out_of(proc)
    assert "bravo words" in out and "attempt 2" in out and "session s2" in out
    assert "alpha" not in out and "charlie" not in out and "attempt 3" not in out
    assert "tokens in 20 · out 2" in out


def test_attempt_beyond_the_last_is_an_error(tmp_path):
    proc = view("--log", three_attempts(tmp_path), "--attempt", "4", cwd=tmp_path)
    assert_clean(proc, code=1)
    err = proc.stderr.decode()
    assert err.count("\n") == 1 and "no attempt 4" in err and "(3 attempts)" in err


def test_a_log_without_separators_is_attempt_1(tmp_path):
    log = tmp_path / "plain.jsonl"
    shutil.copy(sample("08_"), log)
    assert "echo hello" in out_of(view("--log", log, "--attempt", "1", cwd=tmp_path))
    assert view("--log", log, "--attempt", "2", cwd=tmp_path).returncode == 1


def test_raw_prints_lines_verbatim(tmp_path):
    log = tmp_path / "odd.jsonl"
    data = ODD.encode() + b"\n\xff\xfe not utf-8\r\n" + b'{"type":"torn'
    log.write_bytes(data)
    proc = view("--log", log, "--raw", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout == data


def test_raw_of_one_attempt(tmp_path):
    log = three_attempts(tmp_path)
    proc = view("--log", log, "--raw", "--attempt", "2", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.decode() == attempt(2, "bravo words")


# ---------------------------------------------------------------------------
# Finding the log: issue number and config
# ---------------------------------------------------------------------------

def test_issue_number_with_a_config(tmp_path):
    project = tmp_path / "proj"
    (project / "var" / "logs").mkdir(parents=True)
    config = project / "config.toml"
    config.write_text('[paths]\nlogs = "var/logs"\n')
    shutil.copy(sample("08_"), project / "var" / "logs" / "gh-7.jsonl")
    proc = view("7", "--config", config, cwd=tmp_path)
    assert_clean(proc)
    assert "echo hello > out.txt" in out_of(proc)
    assert proc.stderr == b""


def test_unreadable_config_falls_back_to_logs_beside_it(tmp_path):
    (tmp_path / "logs").mkdir()
    shutil.copy(sample("08_"), tmp_path / "logs" / "gh-7.jsonl")
    for config in (tmp_path / "missing.toml", tmp_path / "broken.toml"):
        if config.name == "broken.toml":
            config.write_text("[paths\nlogs = ")
        proc = view("7", "--config", config, cwd=tmp_path)
        assert proc.returncode == 0
        err = proc.stderr.decode()
        assert err.count("\n") == 1 and "cannot read" in err and str(tmp_path / "logs") in err
        assert "echo hello" in out_of(proc)


def test_missing_log_is_one_line_and_exit_1(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[paths]\nlogs = "logs"\n')
    proc = view("99", "--config", config, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout == b""
    err = proc.stderr.decode()
    assert err.count("\n") == 1 and "gh-99.jsonl" in err and "Traceback" not in err
    proc = view("--log", tmp_path / "nope.jsonl", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.decode().count("\n") == 1


def test_no_issue_and_no_log_is_a_usage_error(tmp_path):
    proc = view(cwd=tmp_path)
    assert proc.returncode == 2 and b"usage" in proc.stderr


# ---------------------------------------------------------------------------
# A big log: constant memory
# ---------------------------------------------------------------------------

def write_big_log(path: Path, target_bytes: int) -> int:
    """A realistic mix: text, tool calls, 40 KB tool results, and one 5 MB line."""
    out = 40_000 * "x"
    result = "\n".join("{:05d} {}".format(i, "y" * 60) for i in range(600))
    written = 0
    i = 0
    with open(path, "w") as f:
        f.write(line({"type": "system", "subtype": "init", "model": "claude-opus-4-8", "session_id": "big"}))
        f.write(line({"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "t",
                                                               "content": "z" * 5_000_000}]}}))
        while written < target_bytes:
            i += 1
            chunk = (line({"type": "assistant", "message": {"id": "m{}".format(i), "model": "claude-opus-4-8",
                                                             "content": [{"type": "text", "text": "step {}".format(i)}],
                                                             "usage": {"input_tokens": 3, "output_tokens": 1}}})
                     + line({"type": "assistant", "message": {"id": "m{}".format(i), "model": "claude-opus-4-8",
                                                               "content": [{"type": "tool_use", "id": "t", "name": "Bash",
                                                                            "input": {"command": "make {}".format(i)}}],
                                                               "usage": {"input_tokens": 3, "output_tokens": 1}}})
                     + line({"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "t",
                                                                      "content": result if i % 2 else out}]}}))
            f.write(chunk)
            written += len(chunk)
    return i


def child_max_rss_kb(args, cwd) -> int:
    """Run the viewer and return its own peak RSS in KB: VmHWM from
    /proc/PID/status, read until it exits. (wait4's ru_maxrss will not do:
    Linux starts a forked child's figure at the parent's RSS, and a pytest
    process deep into the suite is far bigger than the viewer.)"""
    peak = 0
    with open(cwd / "stderr.txt", "wb") as err:
        proc = subprocess.Popen([sys.executable, str(VIEW), *map(str, args)], stdout=subprocess.DEVNULL,
                                stderr=err, cwd=cwd, env=env())
        while proc.poll() is None:
            try:
                for line in open("/proc/{}/status".format(proc.pid)):
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
    assert proc.returncode == 0, (cwd / "stderr.txt").read_text()
    return peak


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc to read a child's own peak RSS")
def test_big_log_renders_in_bounded_memory(tmp_path):
    small = tmp_path / "small.jsonl"
    shutil.copy(sample("08_"), small)
    big = tmp_path / "big.jsonl"
    steps = write_big_log(big, 50 * 1024 * 1024)
    assert big.stat().st_size > 50 * 1024 * 1024
    base = child_max_rss_kb(["--log", small], tmp_path)
    peak = child_max_rss_kb(["--log", big], tmp_path)
    # A reader that held the file, or its parsed events, would add >= 50 MB.
    assert peak < 150 * 1024, "peak RSS {} KB".format(peak)
    assert peak - base < 30 * 1024, "grew {} KB over a tiny log's {} KB".format(peak - base, base)
    assert steps > 1000


# ---------------------------------------------------------------------------
# --follow
# ---------------------------------------------------------------------------

def read_until(proc, needle: str, timeout: float = 15.0) -> str:
    """Read the child's stdout until ``needle`` shows up (or fail after timeout)."""
    buf = b""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while needle.encode() not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("{!r} not seen; got {!r}".format(needle, buf.decode("utf-8", "replace")))
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError("viewer exited; got {!r}".format(buf.decode("utf-8", "replace")))
            buf += chunk
    return buf.decode("utf-8", "replace")


@contextlib.contextmanager
def viewer(args, cwd):
    """view_worker.py as a running process with pipes; killed and closed afterwards."""
    proc = subprocess.Popen([sys.executable, str(VIEW), *args], cwd=cwd, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_follow_shows_appended_lines_and_exits_0_on_ctrl_c(tmp_path):
    log = tmp_path / "gh-7.jsonl"
    log.write_text(attempt(1, "first marker"))
    with viewer(["--follow", "--log", str(log)], tmp_path) as proc:
        read_until(proc, "first marker")
        more = line({"type": "assistant", "message": {"id": "m9", "content": [{"type": "text", "text": "second marker"}]}})
        with open(log, "a") as f:          # a line arriving in two writes
            f.write(more[:30])
            f.flush()
            time.sleep(0.6)
            f.write(more[30:])
        text = read_until(proc, "second marker")
        assert "truncated" not in text
        assert "unreadable" not in text     # the half line was never shown on its own
        with open(log, "a") as f:
            f.write(line({"type": "result", "subtype": "success", "total_cost_usd": 1.5, "num_turns": 3,
                          "duration_ms": 61000}))
        read_until(proc, "■ result success · cost $1.50 · 3 turns · 1m01s")
        log.write_text(attempt(1, "third marker"))   # truncated and rewritten
        read_until(proc, "third marker")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        err = proc.stderr.read().decode()
        assert "Traceback" not in err and "KeyboardInterrupt" not in err


@pytest.mark.parametrize("args", [["--detailed"], ["--raw"]])
def test_closed_pipe_ends_quietly(tmp_path, args):
    """`view_worker.py 7 | head`: a real pipe closed after a few bytes, while
    far more than a pipe holds is still to come."""
    proc = subprocess.Popen([sys.executable, str(VIEW), "--log", str(sample("02_")), *args], cwd=tmp_path,
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(100)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert (proc.wait(timeout=60), err) == (0, "")


def test_follow_waits_for_a_log_that_is_not_there_yet(tmp_path):
    """Like tail -F: `view_worker.py N --follow` before the worker starts."""
    (tmp_path / "config.toml").write_text('[paths]\nlogs = "logs"\n')
    log = tmp_path / "logs" / "gh-7.jsonl"
    with viewer(["7", "--follow", "--config", str(tmp_path / "config.toml")], tmp_path) as proc:
        first = proc.stderr.readline().decode()
        assert first == "view_worker: waiting for {} to appear (Ctrl-C to stop)\n".format(log)
        time.sleep(0.5)
        assert proc.poll() is None
        log.parent.mkdir()
        log.write_text(attempt(1, "late marker"))
        read_until(proc, "late marker")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr.read() == b""
