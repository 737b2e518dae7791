#!/usr/bin/env python3
"""Show a worker's transcript, ``<logs>/gh-N.jsonl``, rendered for people.

    python tools/view_worker.py 7               every attempt of issue 7
    python tools/view_worker.py 7 --attempt 2   only the second attempt
    python tools/view_worker.py 7 --stage plan  only the runs of a workflow's plan stage
    python tools/view_worker.py 7 --follow      keep reading, like tail -F
    python tools/view_worker.py 7 --raw         the lines as they are
    python tools/view_worker.py --log FILE      any stream-json file

The log is read line by line and each event is printed as soon as it is read,
so a 200 MB log renders in constant memory. A line that is not JSON, or an
event type this tool does not know, is shown as such; it never stops the view.
Reading the events (and the usage sums in each attempt's footer) lives in
adws/transcript.py, shared with the daemon; this file only draws. The web
dashboard (tools/dashboard.py) draws the same Viewer as HTML: it overrides
only ``emit``, where each said (and redacted) line goes out.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

# Run as `python tools/view_worker.py` from any folder: the project root is not
# on sys.path then (only tools/ is), and `adws` lives there; tools/ is added
# for a load of this file from elsewhere.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

try:
    from rich.console import Console
    from rich.text import Text
except ImportError:  # --help and the one-line errors work without it; main() says what to run
    Console = Text = None

import _shared  # noqa: E402
from adws import config, ledger, metrics, transcript  # noqa: E402
from adws.redact import redact, redact_bytes  # noqa: E402

PROG = "view_worker"
UNPARSED = object()      # Viewer.feed: "parse the line here"
SHORT_LINES = 3          # tool result lines shown without --detailed
SHORT_TEXT_LINES = 20    # assistant text lines shown without --detailed
LINE_CLIP = 200          # characters kept of one shown line without --detailed
THINKING_CLIP = 140
FOLLOW_INTERVAL = 0.25   # seconds between polls with --follow
STDERR_TAIL_LINES = 10


def warn(message: str) -> None:
    print("{}: {}".format(PROG, message), file=sys.stderr)


# ---------------------------------------------------------------------------
# Config: only `[paths] logs` (a shared loader may replace this later)
# ---------------------------------------------------------------------------

def logs_dir(config_path: Path) -> Path:
    """``[paths] logs`` of the config, read by the daemon's own loader.

    A config that cannot be read falls back to ``logs/`` beside it, said once
    on stderr: a viewer should still show what it can.
    """
    try:
        return config.load_config(config_path, need_repo=False).logs
    except (config.ConfigError, ImportError) as exc:
        folder = config_path.parent
        warn("cannot read {} ({}); using {}".format(config_path, exc, folder / "logs"))
        return folder / "logs"


# ---------------------------------------------------------------------------
# Small formatting helpers
# ---------------------------------------------------------------------------

def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def one_line(text, limit: int) -> str:
    if not isinstance(text, str):
        text = "" if text is None else json.dumps(text, ensure_ascii=False)
    return clip(" ".join(text.split()), limit)


def plural(n: int, word: str) -> str:
    return "{} {}{}".format(n, word, "" if n == 1 else "s")


def duration(ms) -> str:
    return metrics.human_duration(transcript._int(ms) / 1000, fine=True)


def clock_time(epoch) -> str:
    number = transcript._money(epoch)
    if number is None:
        return "?"
    if number > 1e11:  # milliseconds
        number /= 1000
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(number))
    except (OverflowError, OSError, ValueError):
        return "?"


def block_text(content) -> str:
    """Text of a tool_result's content: a string, or a list of blocks."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return "" if content is None else json.dumps(content, ensure_ascii=False)
    parts = []
    for block in content:
        if not isinstance(block, dict):
            parts.append(str(block))
        elif block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif block.get("type") == "image":
            parts.append(image_note(block))
        else:
            parts.append("[{} block]".format(block.get("type", "?")))
    return "\n".join(parts)


def image_note(block: dict) -> str:
    """Never print base64: say what the image is instead."""
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    data = source.get("data")
    size = "{:.1f} KB".format(len(data) * 3 / 4 / 1024) if isinstance(data, str) else "?"
    return "[image {} {}]".format(source.get("media_type", ""), size).replace("  ", " ")


# ---------------------------------------------------------------------------
# Rendering, one event at a time
# ---------------------------------------------------------------------------

class Viewer:
    """Turns log lines into console output; keeps only per-attempt counters.

    ``feed`` takes one line at a time and returns False once the selected
    attempt is over (the caller may stop reading). Attempts are counted by
    ``tac/attempt`` separators: the K-th separator starts attempt K, and lines
    before the first separator (or in a log without any) belong to attempt 1.
    """

    def __init__(self, console: Console, detailed: bool = False, attempt: Optional[int] = None,
                 raw: bool = False, raw_out=None, stage: Optional[str] = None) -> None:
        self.console = console
        self.detailed = detailed
        self.want = attempt
        self.want_stage = stage     # only runs whose attempt line names this stage
        self.stage = ""             # the stage of the run being read ("" before workflows)
        self.raw = raw
        self.raw_out = raw_out
        self.lineno = 0
        self.separators = 0
        self.lines_in_selection = 0
        self.builder = transcript.SummaryBuilder()
        self._attempt_has_events = False
        self._last_usage_id = None

    # -- selection -----------------------------------------------------------
    @property
    def attempt(self) -> int:
        return max(self.separators, 1)

    def feed(self, body: bytes, newline: bool = True, event=UNPARSED) -> bool:
        """Show one line (``body`` without its newline); ``event`` if already parsed."""
        self.lineno += 1
        if event is UNPARSED:
            # --raw needs to parse only the lines that could be separators.
            event = transcript.parse_line(body) if (not self.raw or b'"tac"' in body) else None
        if event is not None and transcript.is_attempt_separator(event):
            if self.want is not None and self.separators >= self.want:
                return False  # the next attempt starts: the selected one is over
            if not self.raw:
                self.footer()
            self.separators += 1
            self.stage = str(event.get("stage") or "")
        if self.want is not None and self.attempt != self.want:
            return True
        if self.want_stage is not None and self.stage != self.want_stage:
            return True
        self.lines_in_selection += 1
        if self.raw:
            self.raw_out.write(redact_bytes(body) + (b"\n" if newline else b""))
            return True
        if event is None:
            return True
        self.builder.feed(event)
        self._attempt_has_events = True
        try:
            self.render(event)
        except BrokenPipeError:
            raise
        except Exception as exc:  # deliberate: one odd event must not end the view
            self.say("! could not show line {}: {}: {}".format(self.lineno, type(exc).__name__, exc), "red")
        return True

    def finish(self) -> None:
        if not self.raw:
            self.footer()

    def footer(self) -> None:
        """Token and cost totals of the attempt that just ended."""
        if not self._attempt_has_events:
            return
        s = self.builder.summary
        source = "result" if s.cost_usd is not None else "estimate"
        text = "Σ {} · tokens in {:,} · out {:,} · cache {:,} w / {:,} r · {} ({})".format(
            plural(s.assistant_turns, "turn"), s.input_tokens, s.output_tokens, s.cache_creation_tokens,
            s.cache_read_tokens, ledger.usd(s.cost, fine=True), source)
        if not s.saw_result:
            text += " · no result"
        if s.api_retries:
            text += " · {} API {}".format(s.api_retries, "retry" if s.api_retries == 1 else "retries")
        self.say(text, "dim")
        self._attempt_has_events = False

    # -- output primitives ---------------------------------------------------
    def say(self, text, style: str = "", indent: int = 0) -> None:
        renderable = text if isinstance(text, Text) else Text(str(text), style=style)
        # Every shown line passes here: a token the agent printed is cut
        # whichever event or field it sits in.
        renderable.plain = redact(renderable.plain)
        self.emit(renderable, indent)

    def emit(self, renderable: Text, indent: int) -> None:
        """Put one said (and redacted) line out: on the terminal here; the
        dashboard's subclass writes HTML instead.

        Wrap to the room left and prefix each row with the indent: rich's
        Padding would pad every row with blanks to a rectangle, and its own
        wrapping leaves a blank at the end of each wrapped row.
        """
        width = max(20, self.console.width - indent)
        for row in renderable.wrap(self.console, width):
            if indent:
                row = Text(" " * indent) + row
            row.rstrip()
            self.console.print(row, highlight=False, soft_wrap=True)

    def lines_of(self, text: str, max_lines: int, style: str = "", indent: int = 2) -> None:
        """Print ``text`` clipped to ``max_lines`` lines (all of it with --detailed)."""
        lines = text.rstrip("\n").split("\n") if text else []
        if not lines:
            return
        if self.detailed:
            self.say("\n".join(lines), style, indent)
            return
        shown = [clip(line, LINE_CLIP) for line in lines[:max_lines]]
        self.say("\n".join(shown), style, indent)
        if len(lines) > max_lines:
            self.say("… +{} more lines".format(len(lines) - max_lines), "dim", indent)

    # -- dispatch ------------------------------------------------------------
    def render(self, event: dict) -> None:
        kind = event.get("type")
        sub = event.get("parent_tool_use_id")
        indent = 4 if isinstance(sub, str) and sub else 0  # a subagent's lines
        if kind == "_bad":
            self.say("! unreadable line {}: {}".format(self.lineno, one_line(event.get("raw", ""), 80)), "red")
        elif kind == "tac":
            self.render_tac(event)
        elif kind == "system":
            self.render_system(event)
        elif kind == "assistant":
            self.render_assistant(event, indent)
        elif kind == "user":
            self.render_user(event, indent)
        elif kind == "result":
            self.render_result(event)
        elif kind == "rate_limit_event":
            self.render_rate_limit(event)
        elif kind == "stream_event":
            pass  # partial-message deltas; the whole message follows as "assistant"
        else:
            self.unknown(event)

    def unknown(self, event: dict) -> None:
        kind = event.get("type")
        name = kind if isinstance(kind, str) and kind else "(no type)"
        sub = event.get("subtype")
        if isinstance(sub, str) and sub:
            name += "/" + sub
        self.say("? unknown event: {}".format(clip(name, 60)), "dim")

    # -- tac: the coordinator's own lines ---------------------------------------
    def render_tac(self, event: dict) -> None:
        sub = event.get("subtype")
        if sub == "attempt":
            parts = ["attempt {}".format(event.get("attempt", self.separators))]
            if event.get("round"):  # a follow-up round on the PR (adws/rounds.py): resumed or fresh
                parts[0] = "follow-up round {} (session {})".format(event["round"], event.get("session") or "?")
            for key, label in (("stage", "stage"), ("worker", "worker"), ("branch", "branch"), ("started", "started")):
                if event.get(key) not in (None, ""):
                    parts.append("{} {}".format(label, event[key]))
            self.say("━━ " + " · ".join(parts), "bold magenta")
        elif sub == "end":
            exit_ = str(event.get("exit", "?"))
            text = "━━ end of attempt {}: {}".format(event.get("attempt", self.separators), exit_)
            if event.get("reason"):
                text += " · " + one_line(event.get("reason"), 200)
            self.say(text, "bold" if exit_ == "exit status 0" else "bold red")
        else:
            self.unknown(event)

    # -- system -------------------------------------------------------------
    def render_system(self, event: dict) -> None:
        sub = event.get("subtype")
        if sub == "init":
            self.render_init(event)
        elif sub == "api_retry":
            text = "↻ API retry {}/{}".format(event.get("attempt", "?"), event.get("max_retries", "?"))
            delay = transcript._money(event.get("retry_delay_ms"))
            if delay is not None:
                text += " in {}".format(duration(delay))
            self.say("{}: {}".format(text, transcript.retry_error(event)), "yellow")
        elif sub == "compact_boundary":
            meta = event.get("compact_metadata") or event.get("compactMetadata") or {}
            meta = meta if isinstance(meta, dict) else {}
            self.say("⋯ context compacted ({}, {} tokens before)".format(
                meta.get("trigger", "?"), meta.get("pre_tokens", meta.get("preTokens", "?"))), "cyan")
        elif sub == "thinking_tokens":
            if self.detailed:
                self.say("· thinking ≈{} tokens".format(event.get("estimated_tokens", "?")), "dim")
        elif sub in ("task_started", "task_progress", "task_updated", "task_notification"):
            self.render_task(event, sub)
        elif isinstance(sub, str) and sub.startswith("hook"):
            name = event.get("hook_name") or event.get("hook_event") or ""
            self.say("⚓ {} {}".format(sub, one_line(name, 60)).rstrip(), "dim")
        elif sub == "status":
            self.say("· status: {}".format(one_line(event.get("status"), 60)), "dim")
        else:
            self.unknown(event)

    def render_init(self, event: dict) -> None:
        parts = ["model {}".format(event.get("model", "?"))]
        if event.get("claude_code_version"):
            parts.append("CLI {}".format(event["claude_code_version"]))
        if event.get("permissionMode"):
            parts.append("permissions {}".format(event["permissionMode"]))
        self.say("● init  " + " · ".join(parts), "bold green")
        self.say("cwd {}".format(event.get("cwd", "?")), "green", 2)
        self.say("session {}".format(event.get("session_id", "?")), "green", 2)
        tools = event.get("tools")
        line = Text(plural(len(tools), "tool") if isinstance(tools, list) else "tools ?", style="dim")
        servers = event.get("mcp_servers")
        if isinstance(servers, list) and servers:
            line.append(" · MCP:", style="dim")
            for server in servers:
                if not isinstance(server, dict):
                    continue
                status = server.get("status", "?")
                line.append(" {} ({})".format(server.get("name", "?"), status),
                            style="dim" if status == "connected" else "red")
        self.say(line, indent=2)
        if self.detailed and isinstance(tools, list):
            self.say(", ".join(str(t) for t in tools), "dim", 2)

    def render_task(self, event: dict, sub: str) -> None:
        words = {"task_started": "started", "task_progress": "progress",
                 "task_updated": "updated", "task_notification": "finished"}
        text = "⚙ task {}".format(words[sub])
        detail = one_line(event.get("description"), 200)
        if sub == "task_updated":
            patch = event.get("patch") if isinstance(event.get("patch"), dict) else {}
            detail = "status {}".format(patch.get("status", "?"))
        elif sub == "task_notification":
            detail = "{}: {}".format(event.get("status", "?"), one_line(event.get("summary"), 120))
        elif sub == "task_progress" and event.get("last_tool_name"):
            detail += " (last tool {})".format(event["last_tool_name"])
        self.say("{}: {}".format(text, one_line(detail, 200)), "cyan")

    def render_rate_limit(self, event: dict) -> None:
        info = event.get("rate_limit_info")
        info = info if isinstance(info, dict) else {}
        status = str(info.get("status", "?"))
        text = "⏱ rate limit {}: {}".format(info.get("rateLimitType", "?"), status)
        if info.get("resetsAt") is not None:
            text += " (resets {})".format(clock_time(info.get("resetsAt")))
        style = "dim" if status == "allowed" else ("yellow" if "warning" in status else "red")
        self.say(text, style)

    # -- assistant ----------------------------------------------------------
    def render_assistant(self, event: dict, indent: int) -> None:
        message = event.get("message")
        if not isinstance(message, dict):
            self.unknown(event)
            return
        content = message.get("content")
        synthetic = message.get("model") == "<synthetic>"
        error = event.get("isApiErrorMessage") or event.get("is_api_error_message") or event.get("error")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not isinstance(content, list):
            content = []
        for block in content:
            if not isinstance(block, dict):
                continue
            btype = block.get("type")
            if btype == "text":
                text = str(block.get("text", ""))
                if synthetic or error:
                    self.say("✗ {}".format(one_line(text, 300)), "bold red", indent)
                else:
                    self.assistant_text(text, indent)
            elif btype == "thinking":
                self.thinking(str(block.get("thinking", "")), indent)
            elif btype == "redacted_thinking":
                self.say("✻ (redacted thinking)", "dim italic", indent)
            elif btype in ("tool_use", "server_tool_use"):
                self.tool_use(block, indent)
            else:
                self.say("? {} block".format(clip(str(btype), 40)), "dim", indent)
        if self.detailed:
            self.usage_line(message, indent)

    def assistant_text(self, text: str, indent: int) -> None:
        lines = text.strip("\n").split("\n")
        if not self.detailed and len(lines) > SHORT_TEXT_LINES:
            more = len(lines) - SHORT_TEXT_LINES
            lines = lines[:SHORT_TEXT_LINES] + ["… +{} more lines".format(more)]
        self.say(Text("◆ ", style="bold") + Text("\n".join(lines)), indent=indent)

    def thinking(self, text: str, indent: int) -> None:
        if not text.strip():
            self.say("✻ (thinking)", "dim italic", indent)
        elif self.detailed:
            self.say("✻ " + text.strip(), "dim italic", indent)
        else:
            self.say("✻ " + one_line(text, THINKING_CLIP), "dim italic", indent)

    def tool_use(self, block: dict, indent: int) -> None:
        name = block.get("name") if isinstance(block.get("name"), str) else "?"
        arg = transcript.key_argument(name, block.get("input") if isinstance(block.get("input"), dict) else {})
        line = Text("▶ ") + Text(name, style="bold cyan")
        if arg:
            line.append(": " + arg)
        self.say(line, indent=indent)
        if self.detailed and block.get("input") is not None:
            self.say(json.dumps(block.get("input"), indent=2, ensure_ascii=False), "dim", indent + 2)

    def usage_line(self, message: dict, indent: int) -> None:
        usage = message.get("usage")
        if not isinstance(usage, dict) or message.get("id") == self._last_usage_id:
            return
        self._last_usage_id = message.get("id")
        self.say("tokens in {} out {} cache write {} read {}".format(
            usage.get("input_tokens", 0), usage.get("output_tokens", 0),
            usage.get("cache_creation_input_tokens", 0), usage.get("cache_read_input_tokens", 0)),
            "dim", indent + 2)

    # -- user: tool results and prompts ----------------------------------------
    def render_user(self, event: dict, indent: int) -> None:
        message = event.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            self.say("» " + one_line(content, 200), "blue", indent)
            return
        if not isinstance(content, list):
            self.unknown(event)
            return
        for block in content:
            if not isinstance(block, dict):
                continue
            btype = block.get("type")
            if btype == "tool_result":
                self.tool_result(block, indent)
            elif btype == "text":
                self.say("» " + one_line(block.get("text", ""), 200), "blue", indent)
            elif btype == "image":
                self.say("» " + image_note(block), "blue", indent)
            else:
                self.say("? {} block".format(clip(str(btype), 40)), "dim", indent)

    def tool_result(self, block: dict, indent: int) -> None:
        text = block_text(block.get("content"))
        if block.get("is_error"):
            self.say("✗ tool error", "bold red", indent + 2)
            self.lines_of(text, SHORT_LINES, "red", indent + 4)
        elif text.strip():
            self.lines_of(text, SHORT_LINES, "", indent + 4)
        else:
            self.say("(no output)", "dim", indent + 4)

    # -- result -------------------------------------------------------------
    def render_result(self, event: dict) -> None:
        cost = transcript._money(event.get("total_cost_usd"))
        if cost is None:
            cost = transcript._money(event.get("cost_usd"))
        is_error = bool(event.get("is_error"))
        subtype = event.get("subtype") or "?"
        parts = ["■ result {}".format(subtype), "cost {}".format(ledger.usd(cost, fine=True)),
                 plural(transcript._int(event.get("num_turns")), "turn"),
                 duration(event.get("duration_ms"))]
        if is_error:
            parts.append("is_error")
        self.say(" · ".join(parts), "bold red" if is_error or str(subtype).startswith("error") else "bold green")
        errors = event.get("errors")
        if isinstance(errors, list) and errors:
            self.lines_of("\n".join(one_line(e, 300) for e in errors), SHORT_LINES, "red", 2)
        denials = event.get("permission_denials")
        if isinstance(denials, list) and denials:
            names = [str(d.get("tool_name", "?")) for d in denials if isinstance(d, dict)]
            self.say("{} permission denials: {}".format(len(denials), one_line(", ".join(names), 120)), "yellow", 2)
        if self.detailed and isinstance(event.get("result"), str):
            self.lines_of(event["result"], SHORT_TEXT_LINES, "", 2)


# ---------------------------------------------------------------------------
# Reading: the whole file once, or following it
# ---------------------------------------------------------------------------

def read_lines(path: Path) -> Iterator[Tuple[bytes, bool]]:
    """(line without newline, had a newline) for each line; one line in memory."""
    with open(path, "rb") as f:
        for line in f:
            if line.endswith(b"\n"):
                yield line[:-1], True
            else:
                yield line, False


def follow(path: Path, viewer: Viewer, flush, stop: Callable[[], bool] = lambda: False) -> None:
    """Show the file and then whatever is appended, until Ctrl-C, or until
    ``stop()`` says so (asked between reads: the dashboard's live view ends
    when the worker does)."""
    follower = transcript.TranscriptFollower(path)
    restarts = 0
    while True:
        pairs = follower.poll_lines()
        if follower.restarts != restarts:
            restarts = follower.restarts
            viewer.say("── the log was truncated or replaced; showing it again from the start", "bold yellow")
            viewer.lineno = viewer.separators = 0
        for body, event in pairs:
            if not viewer.feed(body, True, event):
                flush()
                return
        if pairs:
            flush()
        if not follower.behind:
            if stop():  # asked only once caught up: nothing written before it is left unshown
                return
            time.sleep(FOLLOW_INTERVAL)


def stderr_tail(log: Path, lines: int = STDERR_TAIL_LINES) -> List[str]:
    name = log.name[:-len(".jsonl")] if log.name.endswith(".jsonl") else log.stem
    path = log.with_name(name + ".stderr.log")
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            data = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [line for line in data.splitlines() if line.strip()][-lines:]


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="view_worker.py",
        description="Show a worker's Claude Code transcript (<logs>/gh-N.jsonl).")
    parser.add_argument("issue", nargs="?", type=int, help="issue number N")
    parser.add_argument("--config", type=Path, default=ROOT / "config.toml",
                        help="config file whose [paths] logs holds the logs (default: config.toml in the project root)")
    parser.add_argument("--log", type=Path, help="show this file instead of <logs>/gh-N.jsonl")
    parser.add_argument("--attempt", type=int, metavar="K", help="show only attempt K")
    parser.add_argument("--stage", metavar="NAME", help="show only the runs of this workflow stage (plan, build, review)")
    parser.add_argument("--detailed", action="store_true",
                        help="full tool inputs and results, thinking, usage, stderr tail")
    parser.add_argument("--follow", "-f", action="store_true", help="keep reading until Ctrl-C (waits for a log not there yet)")
    parser.add_argument("--raw", action="store_true", help="print the lines as they are")
    args = parser.parse_args(argv)
    if args.issue is None and args.log is None:
        parser.error("give an issue number N or --log FILE")
    if args.attempt is not None and args.attempt < 1:
        parser.error("--attempt counts from 1")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    path = args.log if args.log is not None else logs_dir(args.config) / config.transcript_name(args.issue)
    if path.is_dir() or (not path.exists() and not args.follow):  # a FIFO such as /dev/stdin is fine
        warn("no log at {}".format(path))
        return 1
    if not path.exists():
        # like tail -F: the worker may not have started yet
        warn("waiting for {} to appear (Ctrl-C to stop)".format(path))
    _shared.require_rich("view_worker", __file__, sys.argv[1:] if argv is None else argv)
    # A closed pipe (`view_worker.py 7 | head`) raises BrokenPipeError, caught below.
    console = _shared.pipe_console(highlight=False)
    raw_out = sys.stdout.buffer
    viewer = Viewer(console, detailed=args.detailed, attempt=args.attempt, raw=args.raw, raw_out=raw_out,
                    stage=args.stage)

    def flush() -> None:
        sys.stdout.flush()
        raw_out.flush()

    try:
        if args.follow:
            follow(path, viewer, flush)
            return 0
        for body, newline in read_lines(path):
            if not viewer.feed(body, newline):
                break
        viewer.finish()
        if args.detailed and not args.raw:
            tail = stderr_tail(path)
            if tail:
                viewer.say("stderr (last {} lines):".format(len(tail)), "bold")
                viewer.say("\n".join(clip(line, LINE_CLIP) for line in tail), "red", 2)
        flush()
    except KeyboardInterrupt:
        return 0 if args.follow else 130
    except BrokenPipeError:
        # `view_worker.py 7 | head`: the reader left; stop quietly.
        return _shared.closed_pipe(0)
    except OSError as exc:
        warn("cannot read {}: {}".format(path, exc))
        return 1
    if args.attempt is not None and viewer.lines_in_selection == 0:
        count = viewer.separators or (1 if viewer.lineno else 0)
        warn("no attempt {} in {} ({} attempt{})".format(args.attempt, path, count, "" if count == 1 else "s"))
        return 1
    if args.stage is not None and viewer.lines_in_selection == 0:
        warn("no run of stage {} in {}".format(args.stage, path))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
