"""Tests that run the REAL Claude Code CLI against tests/fake_anthropic.py.

Why: the coordinator's workers are `claude -p --output-format stream-json
--verbose --dangerously-skip-permissions`, prompt on stdin, cwd = a git
worktree. These tests pin down, with the pinned CLI (tests/claude_cli.py),
the behaviour the coordinator relies on: the stream's event shapes, real git
side effects, BLOCKED.md, --max-turns exhaustion, what happens when the API is
down, and how the process must be killed. Every run uses a temp git repo and a
temp HOME; nothing leaves the machine.

Tests marked ``real_cli`` FAIL when the CLI is missing (run
``sh tests/install_claude_cli.sh``) unless ``TAC_SKIP_REAL_CLI=1``, which
skips them. Each run's stream-json log is kept in the test's tmp dir.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Dict, List

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from claude_cli import (  # noqa: E402
    CLAUDE_CLI_VERSION,
    StreamWatcher,
    claude_path,
    cli_base_env,
    descendants,
    kill_process_tree,
    parse_stream,
    pid_alive,
    run_claude,
    start_claude,
)
from fake_anthropic import EXHAUSTED_TEXT, FakeAnthropic  # noqa: E402

real_cli = pytest.mark.real_cli

#: Observed with 2.1.197: the exit status of a run that ends in error_max_turns.
MAX_TURNS_EXIT_CODE = 1
#: How long we allow for the first system/api_retry (observed: ~0.05 s after
#: system/init, ~0.7 s after start; the retry delays then grow ~0.5, 1, 2, 4,
#: 8, 18, 36, 32, 32, 32 seconds: 10 retries by default, then it gives up at
#: ~175 s with exit 1).
API_RETRY_DEADLINE_S = 30.0


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def claude_bin() -> str:
    """The pinned CLI, or fail loudly (skip only with TAC_SKIP_REAL_CLI=1)."""
    if os.environ.get("TAC_SKIP_REAL_CLI") == "1":
        pytest.skip("TAC_SKIP_REAL_CLI=1: real Claude Code CLI tests skipped")
    path = claude_path()
    if path is None:
        pytest.fail(
            "Claude Code CLI %s is not installed: run `sh tests/install_claude_cli.sh` "
            "(or set TAC_SKIP_REAL_CLI=1 to skip these tests)" % CLAUDE_CLI_VERSION,
            pytrace=False,
        )
    return path


def _git(repo: str, *args: str) -> str:
    return subprocess.run(["git", "-C", repo] + list(args), check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Any) -> str:
    """A real git repo with one commit and a buggy calc.py, as a worktree would be."""
    path = tmp_path / "repo"
    path.mkdir()
    p = str(path)
    _git(p, "init", "-q")
    # Identity in the repo itself: the CLI runs with a temp HOME (no ~/.gitconfig).
    _git(p, "config", "user.email", "agent@example.invalid")
    _git(p, "config", "user.name", "Agent")
    (path / "README.md").write_text("demo\n")
    (path / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    _git(p, "add", "-A")
    _git(p, "commit", "-qm", "initial")
    return p


def _events_of(lines: List[str]) -> List[Dict[str, Any]]:
    return parse_stream(lines)


def _result(events: List[Dict[str, Any]]) -> Dict[str, Any]:
    results = [e for e in events if e.get("type") == "result"]
    assert len(results) == 1, "expected exactly one result event, got %d" % len(results)
    return results[-1]


def _tool_results(events: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    out = []
    for e in events:
        if e.get("type") == "user":
            for block in e["message"]["content"]:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    out.append(block)
    return out


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --------------------------------------------------------- the fake on its own
def _post(fake: FakeAnthropic, path: str, body: Dict[str, Any]) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    return conn.getresponse()


def _parse_sse(raw: str) -> List[Dict[str, Any]]:
    events = []
    for chunk in raw.split("\n\n"):
        lines = chunk.strip().splitlines()
        if not lines:
            continue
        assert lines[0].startswith("event: ")
        data = json.loads(lines[1][len("data: "):])
        assert data["type"] == lines[0][len("event: "):]
        events.append(data)
    return events


def test_fake_streams_script_steps_and_answers_side_calls() -> None:
    """SSE shape as sample 06; side calls and count_tokens consume no step."""
    with FakeAnthropic([{"text": "I will look.", "tool": "Bash", "input": {"command": "ls -la"}},
                        {"text": "Done."}]) as fake:
        tools = [{"name": "Bash", "input_schema": {"type": "object"}}]
        probe = _post(fake, "/v1/messages?beta=true", {"model": "claude-haiku", "max_tokens": 1,
                                                       "messages": [{"role": "user", "content": "quota"}]})
        assert probe.status == 200
        assert json.loads(probe.read())["stop_reason"] == "max_tokens"
        title = _post(fake, "/v1/messages", {"model": "m", "max_tokens": 100, "tools": [], "messages": [],
                                             "output_config": {"format": {"type": "json_schema", "schema": {
                                                 "type": "object", "properties": {"title": {"type": "string"}}}}}})
        assert json.loads(json.loads(title.read())["content"][0]["text"]) == {"title": "Fake title"}
        count = _post(fake, "/v1/messages/count_tokens?beta=true", {"model": "m", "messages": []})
        assert count.status == 200 and json.loads(count.read())["input_tokens"] > 0
        assert fake.steps_used == 0

        resp = _post(fake, "/v1/messages?beta=true", {"model": "claude-x", "stream": True, "max_tokens": 64000,
                                                      "tools": tools, "messages": []})
        assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/event-stream")
        events = _parse_sse(resp.read().decode())
        kinds = [e["type"] for e in events]
        assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
        assert events[0]["message"]["content"] == [] and events[0]["message"]["model"] == "claude-x"
        starts = [e["content_block"] for e in events if e["type"] == "content_block_start"]
        assert [b["type"] for b in starts] == ["text", "tool_use"]
        partial = "".join(e["delta"]["partial_json"] for e in events
                          if e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta")
        assert json.loads(partial) == {"command": "ls -la"}
        assert events[-2]["delta"]["stop_reason"] == "tool_use"
        assert events[-2]["usage"]["output_tokens"] == 20

        second = _post(fake, "/v1/messages", {"model": "claude-x", "max_tokens": 10, "tools": tools, "messages": []})
        msg = json.loads(second.read())
        assert msg["content"] == [{"type": "text", "text": "Done."}] and msg["stop_reason"] == "end_turn"
        third = json.loads(_post(fake, "/v1/messages", {"model": "c", "tools": tools, "messages": []}).read())
        assert third["content"][0]["text"] == EXHAUSTED_TEXT
        assert fake.steps_used == 2
        assert len(fake.main_requests) == 3 and len(fake.requests) == 6


def test_fake_down_modes_and_error_steps() -> None:
    with FakeAnthropic([{"error": 529}, {"text": "ok now"}]) as fake:
        body = {"model": "m", "tools": [{"name": "Bash"}], "messages": []}
        first = _post(fake, "/v1/messages", body)
        assert first.status == 529 and json.loads(first.read())["error"]["type"] == "overloaded_error"
        assert json.loads(_post(fake, "/v1/messages", body).read())["content"][0]["text"] == "ok now"
        fake.mode = "500"
        assert _post(fake, "/v1/messages", body).status == 500
        fake.mode = "refuse"
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            _post(fake, "/v1/messages", body).read()
        fake.mode = "ok"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(fake.base_url + "/v1/models", timeout=5)
        assert err.value.code == 404


def test_fake_command_line_entry_point(tmp_path: Any) -> None:
    """`python tests/fake_anthropic.py --port 0 --script f.json` serves the script."""
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"text": "from file"}]))
    log = tmp_path / "requests.jsonl"
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.Popen([sys.executable, os.path.join(here, "fake_anthropic.py"), "--port", "0",
                             "--script", str(script), "--log", str(log)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("fake_anthropic listening on http://127.0.0.1:")
        url = line.split()[-1]
        req = urllib.request.Request(url + "/v1/messages", data=json.dumps(
            {"model": "m", "tools": [{"name": "Bash"}], "messages": []}).encode(), method="POST")
        msg = json.loads(urllib.request.urlopen(req, timeout=10).read())
        assert msg["content"][0]["text"] == "from file"
        assert json.loads(log.read_text().splitlines()[0])["path"] == "/v1/messages"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


# ------------------------------------------------------------ the real CLI
@real_cli
def test_success_edits_tests_and_commits(claude_bin: str, repo: str, tmp_path: Any) -> None:
    """Bash edits a file, runs a test command, commits; the stream has all parts."""
    check = "%s -c 'import calc; assert calc.add(2, 3) == 5; print(\"tests ok\")'" % sys.executable
    script = [
        {"text": "Fixing add().", "tool": "Bash",
         "input": {"command": "sed -i 's/a - b/a + b/' calc.py", "description": "fix add"}},
        {"tool": "Bash", "input": {"command": check, "description": "run the test"}},
        {"tool": "Bash", "input": {"command": "git add -A && git commit -q -m 'Fix add()'", "description": "commit"}},
        {"text": "Done. Fixed add() and committed.", "usage": {"input_tokens": 1234, "output_tokens": 56}},
    ]
    with FakeAnthropic(script) as fake:
        rc, lines = run_claude(repo, fake, ["--max-turns", "10"], timeout=120,
                               prompt="Fix calc.add and commit.", log_path=str(tmp_path / "success.jsonl"))
        main = fake.main_requests
    events = _events_of(lines)
    assert rc == 0, lines[-3:]
    assert _git(repo, "log", "-1", "--format=%s").strip() == "Fix add()"
    assert _git(repo, "status", "--porcelain") == ""
    assert "a + b" in open(os.path.join(repo, "calc.py")).read()

    init = events[0]
    assert (init["type"], init["subtype"]) == ("system", "init")
    assert init["claude_code_version"] == CLAUDE_CLI_VERSION
    assert init["permissionMode"] == "bypassPermissions" and init["apiKeySource"] == "ANTHROPIC_API_KEY"
    assert os.path.realpath(init["cwd"]) == os.path.realpath(repo)
    tool_uses = [b for e in events if e["type"] == "assistant" for b in e["message"]["content"]
                 if b["type"] == "tool_use"]
    assert [t["name"] for t in tool_uses] == ["Bash", "Bash", "Bash"]
    results = _tool_results(events)
    assert [r["tool_use_id"] for r in results] == [t["id"] for t in tool_uses]
    assert all(r.get("is_error") is False for r in results)
    assert "tests ok" in str(results[1]["content"])
    result = _result(events)
    assert (result["subtype"], result["is_error"]) == ("success", False)
    assert result["result"] == "Done. Fixed add() and committed."
    assert isinstance(result["total_cost_usd"], (int, float)) and not isinstance(result["total_cost_usd"], bool)
    assert result["total_cost_usd"] > 0
    assert result["num_turns"] == 4
    # The CLI sent the prompt, then each tool result back: 4 main-loop calls.
    assert len(main) == 4
    assert "Fix calc.add and commit." in json.dumps(main[0]["body"]["messages"])
    assert tool_uses[0]["id"] in json.dumps(main[1]["body"]["messages"][-1])


@real_cli
def test_blocked_md(claude_bin: str, repo: str, tmp_path: Any) -> None:
    """The agent gives up by writing BLOCKED.md; its first line carries the reason."""
    path = os.path.join(repo, "BLOCKED.md")
    script = [
        {"tool": "Write", "input": {"file_path": path,
                                    "content": "BLOCKED: the issue needs a production API key\n\nDetails here.\n"}},
        {"text": "I am blocked; see BLOCKED.md."},
    ]
    rc, lines = run_claude(repo, script, ["--max-turns", "5"], log_path=str(tmp_path / "blocked.jsonl"))
    assert rc == 0
    with open(path) as fh:
        assert fh.readline().rstrip("\n") == "BLOCKED: the issue needs a production API key"
    result = _result(_events_of(lines))
    assert result["subtype"] == "success" and result["result"] == "I am blocked; see BLOCKED.md."


@real_cli
def test_max_turns_exhaustion(claude_bin: str, repo: str, tmp_path: Any) -> None:
    """--max-turns 2 with more tool calls scripted: error_max_turns, exit 1."""
    script = [{"tool": "Bash", "input": {"command": "touch step%d" % i}} for i in range(1, 6)] + [{"text": "Done."}]
    with FakeAnthropic(script) as fake:
        rc, lines = run_claude(repo, fake, ["--max-turns", "2"], log_path=str(tmp_path / "max_turns.jsonl"))
        steps_used = fake.steps_used
    result = _result(_events_of(lines))
    assert result["subtype"] == "error_max_turns"
    assert result["is_error"] is True
    assert rc == MAX_TURNS_EXIT_CODE
    assert "Reached maximum number of turns (2)" in result.get("errors", [])
    assert isinstance(result["total_cost_usd"], (int, float))
    # Two turns ran their tools; the CLI stopped before asking for a third.
    assert os.path.exists(os.path.join(repo, "step1")) and os.path.exists(os.path.join(repo, "step2"))
    assert not os.path.exists(os.path.join(repo, "step3"))
    assert steps_used == 2


#: Observed with 2.1.197: the exit status of a run that ends in error_max_budget_usd.
MAX_BUDGET_EXIT_CODE = 1


@real_cli
@pytest.mark.parametrize("budget, turns", [("0.01", 1), ("0.12", 3)])
def test_max_budget_usd_ends_the_run_after_the_turn_that_reaches_it(claude_bin: str, repo: str, tmp_path: Any,
                                                                      budget: str, turns: int) -> None:
    """--max-budget-usd X: after each model turn the CLI adds up its cost, and
    once it is X or more it ends with result error_max_budget_usd, exit 1,
    without running that turn's tools. adws/sandbox/scripted_worker.py
    copies this; the coordinator's own per_run_usd stop is the other half."""
    # Each turn reports 1,000 input and 2,000 output tokens: $0.055 at the
    # CLI's prices for its default model, so 0.01 is reached by the first
    # turn and 0.12 by the third ($0.11 after two is still under it).
    script = [{"tool": "Bash", "input": {"command": "touch step%d" % i},
               "usage": {"input_tokens": 1000, "output_tokens": 2000}} for i in range(1, 6)] + [{"text": "Done."}]
    with FakeAnthropic(script) as fake:
        rc, lines = run_claude(repo, fake, ["--max-budget-usd", budget, "--max-turns", "10"],
                               log_path=str(tmp_path / "max_budget.jsonl"))
        steps_used = fake.steps_used
    events = _events_of(lines)
    result = _result(events)
    assert rc == MAX_BUDGET_EXIT_CODE, lines[-3:]
    assert (result["subtype"], result["is_error"]) == ("error_max_budget_usd", True)
    assert result["errors"] == ["Reached maximum budget ($%s)" % budget]
    assert result["num_turns"] == turns and steps_used == turns
    cost = result["total_cost_usd"]
    assert isinstance(cost, float) and cost >= float(budget)
    assert cost == pytest.approx(0.055 * turns)
    assert cost == pytest.approx(sum(m["costUSD"] for m in result["modelUsage"].values()))
    # Its usage leaves out the turn that reached the budget (a success's is
    # the run's total); modelUsage counts every turn. The cost is the whole.
    assert [result["usage"][k] for k in ("input_tokens", "output_tokens")] == [1000 * (turns - 1), 2000 * (turns - 1)]
    (per_model,) = result["modelUsage"].values()
    assert [per_model[k] for k in ("inputTokens", "outputTokens")] == [1000 * turns, 2000 * turns]
    # The turn that reached the budget was printed but its tool never ran.
    assert [e["type"] for e in events[-2:]] == ["assistant", "result"]
    assert len(_tool_results(events)) == turns - 1
    ran = sorted(f for f in os.listdir(repo) if f.startswith("step"))
    assert ran == ["step%d" % i for i in range(1, turns)]


@real_cli
@pytest.mark.parametrize("mode, flags, bash_runs", [
    # [workers] disallowed_tools, comma-joined as the coordinator passes it:
    # the tools are gone even in bypass mode, and a call to one is refused.
    ("bypass", ["--disallowedTools", "Bash,Write"], False),
    # allowed_tools in bypass mode narrows nothing (docs/SECURITY.md, config.toml).
    ("bypass", ["--allowedTools", "Read,Edit"], True),
    # The real allow-list of docs/SECURITY.md: dontAsk in place of bypass
    # refuses what the list leaves out, and runs what it names.
    ("dontAsk", ["--allowedTools", "Read"], False),
    ("dontAsk", ["--allowedTools", "Read,Bash"], True),
])
def test_tool_lists_as_the_coordinator_passes_them(claude_bin: str, repo: str, tmp_path: Any,
                                                    mode: str, flags: List[str], bash_runs: bool) -> None:
    script = [{"tool": "Bash", "input": {"command": "touch bash-ran"}},
              {"tool": "Read", "input": {"file_path": os.path.join(repo, "README.md")}},
              {"text": "Done."}]
    base = ["-p", "--output-format", "stream-json", "--verbose"]
    base += ["--dangerously-skip-permissions"] if mode == "bypass" else ["--permission-mode", "dontAsk"]
    with FakeAnthropic(script) as fake:
        proc = subprocess.Popen([claude_bin] + base + flags, cwd=repo, env=cli_base_env(fake.env()),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            out, err = proc.communicate(b"Do the task.", timeout=120)
        finally:
            kill_process_tree(proc, grace=0)
        offered = {t["name"] for t in fake.main_requests[0]["body"]["tools"]}
    events = _events_of(out.decode().splitlines())
    result = _result(events)
    assert proc.returncode == 0 and result["subtype"] == "success", err[-500:]
    assert os.path.exists(os.path.join(repo, "bash-ran")) == bash_runs
    bash, read = _tool_results(events)
    assert bash.get("is_error", False) is not bash_runs
    assert not read.get("is_error") and "demo" in str(read["content"])  # the tool that stays allowed works
    if "--disallowedTools" in flags:
        assert not {"Bash", "Write"} & offered and {"Read", "Edit"} <= offered
        assert "No such tool available: Bash" in str(bash["content"])
    else:
        assert "Bash" in offered  # offered; whether a call runs is the mode's and the list's say
        assert [d["tool_name"] for d in result["permission_denials"]] == ([] if bash_runs else ["Bash"])


@real_cli
@pytest.mark.parametrize("down", ["closed_port", "refuse", "529", "500"])
def test_api_down_retries_until_killed(claude_bin: str, repo: str, tmp_path: Any, down: str) -> None:
    """API unreachable / failing: system/api_retry events, no exit, no result; kill works.

    Left alone, 2.1.197 retries 10 times with growing delays and gives up after
    ~175 s (exit 1, result subtype "success" with is_error true); see
    test_retries_exhausted_is_error_with_subtype_success for that ending.
    """
    fake = FakeAnthropic([{"text": "never"}], mode="ok" if down == "closed_port" else down).start()
    try:
        env = cli_base_env(fake.env())
        if down == "closed_port":
            env["ANTHROPIC_BASE_URL"] = "http://127.0.0.1:%d" % _closed_port()
        started = time.monotonic()
        proc = start_claude(repo, env, "Do the task.", ["--max-turns", "5"], binary=claude_bin)
        watcher = StreamWatcher(proc, started)
        try:
            first = watcher.wait_for(lambda e: e.get("subtype") == "api_retry", API_RETRY_DEADLINE_S)
            assert first is not None, "no api_retry within %ss: %s" % (API_RETRY_DEADLINE_S, watcher.lines[-3:])
            first_at = next(t for t, e in watcher.events if e is first)
            second = watcher.wait_for(lambda e: e.get("subtype") == "api_retry" and e["attempt"] == 2, 15)
            assert second is not None
            assert proc.poll() is None, "the CLI exited by itself although retries remain"
            before_kill = [e for _t, e in watcher.events]
        finally:
            kill_process_tree(proc, grace=5)
            watcher.join()
            watcher.save(str(tmp_path / ("api_down_%s.jsonl" % down)))
    finally:
        fake.stop()
    assert proc.returncode is not None and not pid_alive(proc.pid)
    assert first_at < API_RETRY_DEADLINE_S
    kinds = [(e["type"], e.get("subtype")) for _t, e in watcher.events]
    assert kinds[0] == ("system", "init")
    assert ("system", "api_retry") in kinds
    assert first["max_retries"] == 10 and first["retry_delay_ms"] > 0
    assert first["error_status"] == (None if down in ("closed_port", "refuse") else int(down))
    # Until killed there is no assistant turn and no result line at all.
    assert not any(e["type"] in ("result", "assistant") for e in before_kill)
    print("first api_retry after %.2fs (%s)" % (first_at, down))


@real_cli
def test_transient_overload_is_retried_and_recovers(claude_bin: str, repo: str, tmp_path: Any) -> None:
    """One 529 answer: the CLI reports api_retry (error_status 529), retries, succeeds."""
    with FakeAnthropic([{"error": 529}, {"text": "Recovered."}]) as fake:
        rc, lines = run_claude(repo, fake, ["--max-turns", "3"], log_path=str(tmp_path / "overload_once.jsonl"))
        n_main = len(fake.main_requests)
    events = _events_of(lines)
    retries = [e for e in events if e.get("subtype") == "api_retry"]
    assert len(retries) == 1 and retries[0]["error_status"] == 529 and retries[0]["error"] == "overloaded"
    result = _result(events)
    assert rc == 0 and result["subtype"] == "success" and result["result"] == "Recovered."
    assert n_main == 2


@real_cli
def test_retries_exhausted_is_error_with_subtype_success(claude_bin: str, repo: str, tmp_path: Any) -> None:
    """With CLAUDE_CODE_MAX_RETRIES=1 the CLI gives up: exit 1, result subtype
    "success" BUT is_error true and api_error_status 529 -- check is_error,
    not the subtype."""
    with FakeAnthropic([], mode="529") as fake:
        rc, lines = run_claude(repo, fake, ["--max-turns", "3"], timeout=60,
                               env_extra={"CLAUDE_CODE_MAX_RETRIES": "1"},
                               log_path=str(tmp_path / "retries_exhausted.jsonl"))
    result = _result(_events_of(lines))
    assert rc == 1
    assert result["subtype"] == "success" and result["is_error"] is True
    assert result["api_error_status"] == 529
    assert result["result"].startswith("API Error: 529")


@real_cli
def test_side_calls_do_not_consume_script_steps(claude_bin: str, repo: str, tmp_path: Any) -> None:
    """With nonessential traffic allowed the CLI also asks for a session title
    (no tools, JSON-schema output); the fake answers it off-script."""
    script = [{"tool": "Bash", "input": {"command": "echo hi"}}, {"text": "Done."}]
    with FakeAnthropic(script) as fake:
        rc, lines = run_claude(repo, fake, ["--max-turns", "3"], log_path=str(tmp_path / "side_calls.jsonl"),
                               env_extra={"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": ""})
        side = [r for r in fake.requests if r["side"]]
        steps_used = fake.steps_used
    assert rc == 0 and _result(_events_of(lines))["result"] == "Done."
    assert steps_used == 2
    assert side, "expected at least one side call (title generation)"
    assert any("title" in json.dumps(r["body"].get("output_config", {})) for r in side)


def _sleep_pids(token: str) -> List[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/cmdline" % name, "rb") as fh:
                    cmd = fh.read().replace(b"\0", b" ").decode("utf-8", "replace")
            except OSError:
                continue
            if cmd.startswith("sleep ") and token in cmd and pid_alive(int(name)):
                found.append(int(name))
    return found


def _run_until_tool_sleeps(repo: str, claude_bin: str, token: str, fake: FakeAnthropic,
                           wait_task_started: bool):
    env = cli_base_env(fake.env())
    proc = start_claude(repo, env, "Do the task.", ["--max-turns", "10"], binary=claude_bin)
    watcher = StreamWatcher(proc)
    deadline = time.monotonic() + 60
    while not _sleep_pids(token):
        assert time.monotonic() < deadline and proc.poll() is None, watcher.lines[-3:]
        time.sleep(0.05)
    if wait_task_started:
        assert watcher.wait_for(lambda e: e.get("subtype") == "task_started", 30) is not None
    return proc, watcher


@real_cli
def test_kill_during_tool_stops_cli_and_tool(claude_bin: str, repo: str, tmp_path: Any) -> None:
    """kill_process_tree while a Bash tool runs: the CLI, the tool's own-session
    bash and its `sleep` are all gone, and no later scripted step runs."""
    token = "%d.%d" % (300 + os.getpid() % 100, int(time.time()) % 100000)
    script = [{"tool": "Bash", "input": {"command": "sleep %s" % token}},
              {"tool": "Bash", "input": {"command": "touch after_kill"}}, {"text": "Done."}]
    with FakeAnthropic(script) as fake:
        proc, watcher = _run_until_tool_sleeps(repo, claude_bin, token, fake, wait_task_started=False)
        tool_pids = descendants(proc.pid)
        killed = kill_process_tree(proc, grace=5)
        watcher.join()
        watcher.save(str(tmp_path / "killed_mid_tool.jsonl"))
        time.sleep(1.0)
    assert proc.returncode is not None and not pid_alive(proc.pid)
    assert tool_pids and tool_pids <= killed
    assert not any(pid_alive(p) for p in tool_pids)
    assert _sleep_pids(token) == []
    assert not os.path.exists(os.path.join(repo, "after_kill"))


@real_cli
@pytest.mark.parametrize("phase", ["early", "task"])
def test_sigterm_mid_tool_is_not_a_clean_stop(claude_bin: str, repo: str, tmp_path: Any, phase: str) -> None:
    """Pins two traps of 2.1.197 that make plain SIGTERM unfit to stop a worker
    (kill_process_tree uses SIGINT, then SIGKILL of everything it noted):

    * "early" -- SIGTERM while a Bash tool runs, before it turns into a task
      (~3 s): the CLI exits 143 at once and ORPHANS the tool's bash + sleep
      (they are in their own session, no longer its descendants);
    * "task" -- SIGTERM after ``system/task_started``: the CLI kills the tool
      ("Exit code 137" is sent to the model) and keeps going for a moment,
      possibly running further tool calls, then exits 143 or 0. Whether a
      result line comes first is a race inside the CLI (seen both ways with
      143), so only what is reliable is asserted.
    """
    token = "%d.%d" % (400 + os.getpid() % 100, int(time.time() * 10) % 100000)
    script = [{"tool": "Bash", "input": {"command": "sleep %s" % token}}] + [
        {"tool": "Bash", "input": {"command": "sleep 0.3; echo %d >> after_term" % i}} for i in range(3)
    ] + [{"text": "Done."}]
    with FakeAnthropic(script) as fake:
        proc, watcher = _run_until_tool_sleeps(repo, claude_bin, token, fake, wait_task_started=(phase == "task"))
        noted = descendants(proc.pid)
        try:
            os.kill(proc.pid, signal.SIGTERM)
            rc = proc.wait(30)
            time.sleep(0.5)
            survivors = _sleep_pids(token)
        finally:
            kill_process_tree(proc, grace=0)
            for pid in noted:  # the orphans of the "early" case
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            watcher.join()
            watcher.save(str(tmp_path / ("sigterm_%s.jsonl" % phase)))
    events = [e for _t, e in watcher.events]
    if phase == "early":
        assert rc == 143
        assert survivors, "expected the tool's sleep to outlive the CLI"
        assert not any(e["type"] == "result" for e in events)
    else:
        assert rc in (0, 143)
        assert survivors == []
        results = _tool_results(events)
        assert "137" in str(results[0]["content"]) and results[0]["is_error"] is True
    assert _sleep_pids(token) == []
