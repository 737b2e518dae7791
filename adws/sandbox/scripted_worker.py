#!/usr/bin/env python3
"""A stand-in for `claude -p` that prints stream-json and does what a script says.

The tests and `--demo` use it instead of the real CLI: it reads the prompt on
stdin like the CLI, prints init / assistant / tool_result / result lines in
the CLI's shapes, and commits, writes BLOCKED.md, crashes, hangs, ignores
SIGTERM or leaves children behind, as told. The script is a JSON file named
by $TAC_SCRIPT:

    {"default": {...}, "7": {...}, "9": {"attempts": [{...first...}, {...second...}]}}

keyed by $TAC_ISSUE_NUMBER. A workflow's stages get their own options, keyed
by $TAC_STAGE (the coordinator sets it for every stage run):

    {"7": {"stages": {"plan": {"plan": "# Plan: ..."},
                      "build": {"commit": "fix.txt"},
                      "review": {"runs": [{"review": "changes: add a test"}, {"review": "approve"}]}}}}

A stage the script does not name runs the issue's other options. Within
the options chosen, "attempts" picks by $TAC_ATTEMPT as before, and "runs"
picks by how many times this issue's stage (or the issue, without a stage)
ran before, counted in a file beside the script; the last entry repeats.
Options (all optional):
    exit: int             exit status (default 0)
    stderr: str           a line written to stderr before anything else
    crash: bool           exit at once with `exit` (default 2) before any output: a startup error
    fail_while: str       crash like that while this file exists (an outage a test can end)
    retries: int          system/api_retry events before the first turn
    turns: int            assistant turns to print (default 1; 0 = never a model turn)
    commit: str           write this file name and `git commit` it
    blocked: str          write BLOCKED.md whose first line is this reason
    sleep: float          seconds to sleep before the result (printing nothing: a stall)
    wait_for: str         then wait (printing nothing) until this file exists: an end a benchmark
                          times to the moment it wants
    result: str|null      result subtype (default "success"; null = no result line)
    cost: float           total_cost_usd of the result (default 0.01); it accrues evenly
                          over the turns, which is what --max-budget-usd is checked against
    after_result_sleep: float  seconds to hang after printing the result
    ignore_sigterm: bool  ignore SIGINT and SIGTERM (SIGKILL is the only way out)
    children: int         start this many `sleep 600` children in sessions of their own
    escape: float         start `env -i setsid sleep <escape>`: a child that sheds the worker's
                          environment, group and session, then outlives the worker
    tool: str             the Bash command shown in the tool call (default "git status")
    output_tokens: int    output tokens reported per turn (default 50): drives the running cost estimate
    turn_delay: float     seconds between turns
    plan: str             write .tac/plan.md with this text (a plan stage's output)
    review: str           write .tac/review.md with this text (its first line is the verdict)
    write: {path: text}   write these files (folders made as needed), before any commit
    add_all: bool         the commit takes `git add -A` (everything not ignored), as agents often do

Of its arguments it also honours `--resume ID` (the session it reports is ID,
as the real CLI's is when it continues one) and `--model M` (the model it
reports, unless the script names one).

If $TAC_TRACE names a file, each run appends `ISSUE PID START -` when it
starts and `ISSUE PID START END` when it ends (epoch seconds), so a test can
check that no two runs of one issue ever overlapped. A run killed by a signal
writes no second line: its end is unknown, and a checker must treat it as
open-ended rather than guess.

If $TAC_PROMPT_COPY names a file ("{issue}" in the name becomes the issue
number), the prompt read on stdin is written there byte for byte, so a test
can compare what the worker got with the prompt file the coordinator wrote.

Of its arguments it honours `--max-budget-usd X` as the real CLI does
(2.1.197 against tests/fake_anthropic.py, pinned down by test_real_claude.py's
test_max_budget_usd_ends_the_run_after_the_turn_that_reaches_it): after each model turn, once
the cost so far is X or more, it prints that turn's assistant line, runs none
of its tools, ends with a `result` of subtype `error_max_budget_usd`
(is_error true, `errors: ["Reached maximum budget ($X)"]`, the cost so far as
total_cost_usd) and exits with status 1. Commits, BLOCKED.md and the sleep
that would have come after the last turn never happen.

If $TAC_ARGV_COPY names a file ("{issue}" as above), the arguments the worker
was started with (after the program name) are written there as a JSON list,
so a test can prove that flags such as --max-budget-usd reach the CLI.
In both names "{round}" becomes $TAC_ROUND (1 when unset), so each round of
a follow-up keeps its own copy, and "{stage}" $TAC_STAGE ("all" when unset),
so each stage of a workflow keeps its own (the last run of the stage's).

Follow-up rounds (adws/followup.py): with $TAC_ROUND set to 2 or more, the
options come from the issue's "rounds" list when it has one (round 2 takes
the first entry; past its end, the last), and after its commit and
BLOCKED.md the worker writes the answers file `.tac/answers.json` (not
committed) with one entry per item in the prompt (`<review-comment id="r101"`): done
when the round commits, with the note `note` (default "Done in this
round." or "Nothing to change."). `answers: false` writes none;
`answers: "TEXT"` writes TEXT as it is (a malformed file). As the real CLI
does (seen with CLI 2.1.197 against a local Messages API), `--resume ID` in its arguments
makes ID the session id of every line it prints. With $CLAUDE_CONFIG_DIR set it also keeps
the session where the CLI does, in <dir>/projects/<working directory, each character but
letters and digits made "-">/<session>.jsonl (one line per run), so the coordinator can
tell that the session may be resumed; unset, it writes nothing outside the worktree.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from typing import List, Optional


def emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def max_budget_usd(argv: List[str]) -> Optional[float]:
    """The value of --max-budget-usd (or --max-budget-usd=X) in argv, or None."""
    for i, arg in enumerate(argv):
        if arg == "--max-budget-usd" and i + 1 < len(argv):
            return float(argv[i + 1])
        if arg.startswith("--max-budget-usd="):
            return float(arg.split("=", 1)[1])
    return None


def js_number(x: float) -> str:
    """A number as the CLI (JavaScript) prints it: 0.1, 0.05, 10 (not 10.0)."""
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


def arg_value(argv: List[str], flag: str) -> Optional[str]:
    """The value of `flag X` (or `flag=X`) in argv, or None."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def follow_up_round() -> int:
    try:
        return int(os.environ.get("TAC_ROUND", "") or 1)
    except ValueError:
        return 1


def copy_name(template: str) -> str:
    return (template.replace("{issue}", os.environ.get("TAC_ISSUE_NUMBER", "0"))
            .replace("{round}", str(follow_up_round())).replace("{stage}", os.environ.get("TAC_STAGE", "") or "all"))


def write_answers(opts: dict, prompt: bytes) -> None:
    """The answers file of a follow-up round (see the module docstring)."""
    answers = opts.get("answers", True)
    if answers is False:
        return
    os.makedirs(".tac", exist_ok=True)
    with open(os.path.join(".tac", "answers.json"), "w", encoding="utf-8") as f:
        if isinstance(answers, str):
            f.write(answers)
            return
        done = bool(opts.get("commit"))
        note = opts.get("note", "Done in this round." if done else "Nothing to change.")
        ids = re.findall(r'<(?:review|review-comment|pr-comment) id="([vrc][0-9]+)"', prompt.decode("utf-8", "replace"))
        json.dump({"summary": opts.get("summary", "Scripted follow-up."),
                   "answers": {k: {"done": done, "note": note} for k in dict.fromkeys(ids)}}, f)


def plan() -> dict:
    path = os.environ.get("TAC_SCRIPT", "")
    script = {}
    if path:
        with open(path, encoding="utf-8") as f:
            script = json.load(f)
    issue = os.environ.get("TAC_ISSUE_NUMBER", "0")
    opts = script.get(issue, script.get("default", {}))
    stage = os.environ.get("TAC_STAGE", "")
    if stage and stage in opts.get("stages", {}):
        opts = opts["stages"][stage]
    if "attempts" in opts:
        attempts = opts["attempts"]
        k = int(os.environ.get("TAC_ATTEMPT", "1")) - 1
        opts = attempts[min(k, len(attempts) - 1)]
    if "runs" in opts:
        runs = opts["runs"]
        opts = runs[min(count_run(path, issue, stage), len(runs) - 1)]
    if follow_up_round() >= 2 and opts.get("rounds"):
        rounds = opts["rounds"]
        opts = rounds[min(follow_up_round() - 2, len(rounds) - 1)]
    return opts


def count_run(script: str, issue: str, stage: str) -> int:
    """How many runs of this issue's stage came before this one (0 without
    a script to keep the count beside)."""
    if not script:
        return 0
    counter = os.path.join(os.path.dirname(os.path.abspath(script)), f".runs-{issue}-{stage or 'all'}")
    fd = os.open(counter, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, b".")   # one byte per run, on an O_APPEND descriptor: concurrent runs both count
    finally:
        os.close(fd)
    return os.path.getsize(counter) - 1


def main() -> int:
    opts = plan()
    argv_path = os.environ.get("TAC_ARGV_COPY", "")
    if argv_path:
        with open(copy_name(argv_path), "w", encoding="utf-8") as f:
            json.dump(sys.argv[1:], f)
    prompt = sys.stdin.buffer.read()  # the prompt, as the CLI reads it
    copy_path = os.environ.get("TAC_PROMPT_COPY", "")
    if copy_path:
        with open(copy_name(copy_path), "wb") as f:
            f.write(prompt)
    failing = opts.get("fail_while") and os.path.exists(opts["fail_while"])
    if opts.get("stderr") and (failing or not opts.get("fail_while")):
        print(opts["stderr"], file=sys.stderr, flush=True)
    if opts.get("crash") or failing:
        return int(opts.get("exit", 2))
    if opts.get("ignore_sigterm"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if opts.get("escape"):
        subprocess.Popen(["env", "-i", "setsid", "sleep", str(opts["escape"])], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(int(opts.get("children", 0))):
        # Like the CLI's Bash tool: each command in a session of its own.
        subprocess.Popen(["sleep", "600"], start_new_session=True)
    session = arg_value(sys.argv[1:], "--resume") or str(uuid.uuid4())
    store = os.environ.get("CLAUDE_CONFIG_DIR", "")
    if store:
        folder = os.path.join(store, "projects", re.sub(r"[^A-Za-z0-9]", "-", os.getcwd()))
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, session + ".jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps({"type": "run", "round": follow_up_round()}) + "\n")
    model = opts.get("model") or arg_value(sys.argv[1:], "--model") or "claude-sonnet-4-6"
    emit({"type": "system", "subtype": "init", "cwd": os.getcwd(), "session_id": session, "model": model,
          "tools": ["Bash", "Edit", "Read", "Write"], "permissionMode": "bypassPermissions",
          "claude_code_version": "scripted"})
    for i in range(int(opts.get("retries", 0))):
        emit({"type": "system", "subtype": "api_retry", "attempt": i + 1, "max_retries": 10,
              "retry_delay_ms": 500, "error_status": None, "error": "connection refused", "session_id": session})
        time.sleep(0.05)
    turns = int(opts.get("turns", 1))
    if turns == 0 and opts.get("retries"):
        while True:  # like the real CLI with no API: never exits by itself
            time.sleep(1)
    tool = opts.get("tool", "git status")
    usage = {"input_tokens": 100, "output_tokens": int(opts.get("output_tokens", 50)),
             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    budget = max_budget_usd(sys.argv[1:])
    cost = float(opts.get("cost", 0.01))
    for t in range(turns):
        emit({"type": "assistant", "session_id": session, "parent_tool_use_id": None,
              "message": {"id": f"msg_{t}", "type": "message", "role": "assistant", "model": model,
                          "content": [{"type": "tool_use", "id": f"toolu_{t}", "name": "Bash",
                                       "input": {"command": tool}}], "usage": usage}})
        spent = round(cost * (t + 1) / turns, 6)  # rounded: $0.40 over 4 turns is $0.10 a turn, exactly
        if budget is not None and spent >= budget:
            # The real CLI's shape. Like it, `usage` leaves out the turn that
            # reached the budget; modelUsage and the cost count every turn.
            emit({"type": "result", "subtype": "error_max_budget_usd", "duration_ms": 1000, "duration_api_ms": 900,
                  "is_error": True, "num_turns": t + 1, "stop_reason": "tool_use", "session_id": session,
                  "total_cost_usd": spent,
                  "usage": {"input_tokens": usage["input_tokens"] * t, "cache_creation_input_tokens": 0,
                            "cache_read_input_tokens": 0, "output_tokens": usage["output_tokens"] * t},
                  "modelUsage": {model: {"inputTokens": usage["input_tokens"] * (t + 1),
                                         "outputTokens": usage["output_tokens"] * (t + 1),
                                         "cacheReadInputTokens": 0, "cacheCreationInputTokens": 0,
                                         "webSearchRequests": 0, "costUSD": spent}},
                  "permission_denials": [], "errors": [f"Reached maximum budget (${js_number(budget)})"]})
            return 1
        time.sleep(float(opts.get("turn_delay", 0)))
        emit({"type": "user", "session_id": session, "parent_tool_use_id": None,
              "message": {"role": "user", "content": [{"tool_use_id": f"toolu_{t}", "type": "tool_result",
                                                       "content": "ok", "is_error": False}]}})
    files = dict(opts.get("write") or {})
    for key, name in (("plan", ".tac/plan.md"), ("review", ".tac/review.md")):
        if key in opts:
            files[name] = opts[key]
    for name, text in files.items():
        if os.path.dirname(name):
            os.makedirs(os.path.dirname(name), exist_ok=True)
        with open(name, "w", encoding="utf-8") as f:
            f.write(text)
    if opts.get("commit"):
        name = opts["commit"]
        if os.path.dirname(name):
            os.makedirs(os.path.dirname(name), exist_ok=True)
        with open(name, "a", encoding="utf-8") as f:
            f.write(f"change for issue {os.environ.get('TAC_ISSUE_NUMBER')}\n")
        subprocess.run(["git", "add", "-A"] if opts.get("add_all") else ["git", "add", name], check=True)
        subprocess.run(["git", "commit", "-q", "-m", f"Fix #{os.environ.get('TAC_ISSUE_NUMBER')}"], check=True)
    if opts.get("blocked"):
        with open("BLOCKED.md", "w", encoding="utf-8") as f:
            f.write(opts["blocked"] + "\n\nMore detail for the human.\n")
    if follow_up_round() >= 2:
        write_answers(opts, prompt)
    time.sleep(float(opts.get("sleep", 0)))
    while opts.get("wait_for") and not os.path.exists(opts["wait_for"]):
        time.sleep(0.005)
    subtype = opts.get("result", "success")
    if subtype is not None:
        emit({"type": "result", "subtype": subtype, "is_error": subtype != "success", "duration_ms": 1000,
              "num_turns": turns, "session_id": session, "total_cost_usd": cost,
              "usage": {"input_tokens": 100 * turns, "output_tokens": 50 * turns,
                        "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}})
    time.sleep(float(opts.get("after_result_sleep", 0)))
    return int(opts.get("exit", 0))


def trace(start: float, end: str) -> None:
    path = os.environ.get("TAC_TRACE", "")
    if not path:
        return
    line = f"{os.environ.get('TAC_ISSUE_NUMBER', '0')} {os.getpid()} {start:.6f} {end}\n"
    # One write on an O_APPEND descriptor: lines from concurrent runs never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def traced_main() -> int:
    start = time.time()
    trace(start, "-")
    try:
        return main()
    finally:  # also on SIGINT (KeyboardInterrupt); SIGTERM/SIGKILL leave the end unknown
        trace(start, f"{time.time():.6f}")


if __name__ == "__main__":
    sys.exit(traced_main())
