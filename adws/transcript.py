"""Reading Claude Code stream-json logs: events, per-attempt summaries, cost.

This module owns everything the daemon and the tools know about a worker's
transcript, ``<logs>/gh-<N>.jsonl``. That file holds every attempt of issue N,
appended: before each attempt the coordinator writes one separator line of its
own, ``{"type": "tac", "subtype": "attempt", ...}``, and after it may write
``{"type": "tac", "subtype": "end", ...}``. Everything else is the CLI's
stdout, verbatim, from whatever CLI version ran.

Why the data is read the way it is (each point was seen in real output):

- Many CLI versions write here, and each adds event types and fields. Nothing
  below requires a field: unknown ``type``/``subtype`` values pass through,
  ``usage`` may be absent, numbers may be floats or null.
- The last line may be torn (still being written, or the process was killed
  mid-line) and a crash can leave non-JSON text. A line that is not a JSON
  object becomes ``{"type": "_bad", "raw": ...}`` instead of an exception.
- Each assistant line carries one content block; several lines share one
  ``message.id`` and repeat its usage. Tokens are therefore summed per
  distinct message id, the last usage seen for an id winning: CLI 1.0.x
  (sample 02) repeats it with ``output_tokens`` growing, the last line holding
  the final count, while 2.x repeats the usage of the stream's start, whose
  ``output_tokens`` is only the first few tokens (sample 03: 603 summed, 4,371
  in the result). Only the ``result`` event's usage and cost
  (``total_cost_usd``; older CLIs: ``cost_usd``) are exact, and some streams
  end without one (API unreachable, killed). Until then a running estimate
  prices each message from a small table, counting its output as at least
  (characters of its content) / 4, which brings sample 03 within 4%.
- Assistant messages with model ``<synthetic>`` are written by the CLI itself
  (API errors, "session limit" notices); they are not model turns and cost
  nothing, but their text is the best description of what went wrong.
- Logs can be hundreds of megabytes: everything here streams, line by line,
  and ``TranscriptFollower`` reads only the bytes appended since its last call.

Public API: ``RunSummary``, ``TranscriptFollower``, ``iter_events``,
``summarize``, ``key_argument``, ``ledger_record``; helpers ``parse_line``,
``SummaryBuilder``, ``estimate_cost``, ``prices_for``, ``tool_label``.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Tuple, Union

# ---------------------------------------------------------------------------
# Prices
# ---------------------------------------------------------------------------

# USD per million tokens: (input, output, 5-minute cache write, cache read).
# Source: Anthropic's pricing page, platform.claude.com/docs/en/about-claude/
# pricing, and its per-model pages, as read on 2026-11-21. There a 1-hour
# cache write costs 2x the input price on every model, so it is priced that way
# below when a usage block breaks cache writes down by TTL.
# Checked against real results: 01 (Opus 4.5), 03 (Sonnet 4.5) and 08 reproduce
# total_cost_usd exactly from their usage; 02 (Sonnet 4) within 0.2%.
# Not modelled: long-context surcharges, Haiku 5.5's >100k-prompt band, fast
# mode, batch discounts. This is only an estimate for a run that has not
# reported its own cost yet; the result's figure always replaces it.
# First matching pattern wins; patterns are searched in the model id with any
# "[1m]"-style suffix removed. Unknown models (and Fable/Mythos) get Sonnet's.
SONNET_PRICES = (3.00, 15.00, 3.75, 0.30)
PRICES: Tuple[Tuple[str, Tuple[float, float, float, float]], ...] = (
    (r"opus-5-5", (4.00, 20.00, 5.00, 0.20)),
    (r"opus-4(-[01])?(-\d{8})?$|claude-3-opus", (15.00, 75.00, 18.75, 1.50)),
    (r"opus", (5.00, 25.00, 6.25, 0.50)),             # Opus 4.5 to 5
    (r"sonnet-5-5", (2.00, 10.00, 2.50, 0.10)),       # cache reads cut 2026-10-07
    (r"sonnet-5", (2.00, 10.00, 2.50, 0.20)),
    (r"sonnet", SONNET_PRICES),                        # Sonnet 3.5 to 4.6
    (r"haiku-5-5", (0.10, 0.50, 0.125, 0.01)),        # prompts up to 100k tokens
    (r"3-5-haiku|haiku-3-5", (0.80, 4.00, 1.00, 0.08)),
    (r"3-haiku|haiku-3", (0.25, 1.25, 0.30, 0.03)),
    (r"haiku", (1.00, 5.00, 1.25, 0.10)),             # Haiku 4.5
)

_SUFFIX = re.compile(r"\[[^\]]*\]$")


def base_model(model: str) -> str:
    """``claude-opus-4-8[1m]`` -> ``claude-opus-4-8`` (the CLI's context-size tag)."""
    return _SUFFIX.sub("", model or "").strip()


def prices_for(model: str) -> Tuple[float, float, float, float]:
    """(input, output, cache write 5m, cache read) in USD per MTok for ``model``."""
    name = base_model(model).lower()
    for pattern, prices in PRICES:
        if re.search(pattern, name):
            return prices
    return SONNET_PRICES


def estimate_cost(model: str, input_tokens: int = 0, output_tokens: int = 0,
                  cache_creation_tokens: int = 0, cache_read_tokens: int = 0,
                  cache_creation_1h_tokens: int = 0) -> float:
    """USD for one usage block; the 1h writes are a part of ``cache_creation_tokens``."""
    p_in, p_out, p_write, p_read = prices_for(model)
    one_hour = min(max(cache_creation_1h_tokens, 0), cache_creation_tokens)
    return (input_tokens * p_in
            + output_tokens * p_out
            + (cache_creation_tokens - one_hour) * p_write
            + one_hour * 2 * p_in
            + cache_read_tokens * p_read) / 1_000_000


# ---------------------------------------------------------------------------
# Lines and events
# ---------------------------------------------------------------------------

# A "_bad" event keeps this much of the unreadable line: enough to show, and a
# 100 MB line of garbage must not be copied around.
BAD_RAW_KEEP = 2000


def parse_line(line: Union[bytes, str]) -> Optional[dict]:
    """One log line -> event dict; ``None`` for a blank line.

    Anything that is not a JSON object (garbage, a torn line, a bare number)
    becomes ``{"type": "_bad", "raw": <text>}``.
    """
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    text = line.strip()
    if not text:
        return None
    try:
        event = json.loads(text)
    except ValueError:  # JSONDecodeError, and "Out of range float values" too
        event = None
    except RecursionError:  # deliberate: absurdly nested input is just garbage here
        event = None
    if not isinstance(event, dict):
        return {"type": "_bad", "raw": text[:BAD_RAW_KEEP]}
    return event


def iter_events(fileobj_or_path) -> Iterator[dict]:
    """Stream the events of a log (a path, or a binary or text file object).

    Constant memory: one line at a time. Blank lines are skipped; a torn last
    line that is not valid JSON comes out as a ``_bad`` event.
    """
    if isinstance(fileobj_or_path, (str, bytes, os.PathLike)):
        with open(fileobj_or_path, "rb") as f:
            yield from iter_events(f)
        return
    for line in fileobj_or_path:
        event = parse_line(line)
        if event is not None:
            yield event


def is_attempt_separator(event: dict) -> bool:
    return event.get("type") == "tac" and event.get("subtype") == "attempt"


# ---------------------------------------------------------------------------
# Tool calls in one line
# ---------------------------------------------------------------------------

KEY_ARG_MAX = 60

# Tool name -> input keys to try, in order. Anything else falls back to
# _FALLBACK_KEYS and then to the first short string value.
_KEY_FIELDS = {
    "Bash": ("command",),
    "Read": ("file_path", "path"),
    "Write": ("file_path", "path"),
    "Edit": ("file_path", "path"),
    "MultiEdit": ("file_path", "path"),
    "NotebookEdit": ("notebook_path", "file_path"),
    "NotebookRead": ("notebook_path",),
    "Grep": ("pattern",),
    "Glob": ("pattern",),
    "LS": ("path",),
    "WebFetch": ("url",),
    "WebSearch": ("query",),
    "Task": ("description", "subagent_type"),
    "Agent": ("description", "subagent_type"),
    "Skill": ("skill", "command"),
    "SlashCommand": ("command",),
    "BashOutput": ("bash_id", "shell_id"),
    "KillShell": ("shell_id",),
    "KillBash": ("shell_id",),
    "TaskOutput": ("task_id",),
    "TaskStop": ("task_id",),
}
_PATH_KEYS = {"file_path", "path", "notebook_path"}
_FALLBACK_KEYS = ("command", "file_path", "path", "pattern", "url", "query",
                  "description", "prompt", "name", "id")


def _one_line(value) -> str:
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False) if value is not None else ""
    return " ".join(value.split())


def _clip(text: str, limit: int = KEY_ARG_MAX, keep_tail: bool = False) -> str:
    if len(text) <= limit:
        return text
    if keep_tail:  # a path reads best from its end: ".../adws/transcript.py"
        return "…" + text[-(limit - 1):]
    return text[:limit - 1] + "…"


def key_argument(tool_name: str, tool_input: dict) -> str:
    """The one argument that says what a tool call does, on one line, ~60 chars.

    ``Bash`` -> its command, ``Edit`` -> the file (a long path keeps its end),
    ``Grep`` -> the pattern, ``WebFetch`` -> the url, ``Task`` -> its
    description; ``""`` if none. A non-dict input (seen only in broken
    lines) is shown if it is a string.
    """
    if not isinstance(tool_input, dict):
        return _clip(_one_line(tool_input)) if isinstance(tool_input, str) else ""
    if tool_name == "TodoWrite":
        todos = tool_input.get("todos")
        if isinstance(todos, list):
            for todo in todos:
                if isinstance(todo, dict) and todo.get("status") == "in_progress":
                    return _clip(_one_line(todo.get("content") or todo.get("activeForm")))
            return "{} todos".format(len(todos))
    for key in _KEY_FIELDS.get(tool_name, ()) + _FALLBACK_KEYS:
        value = tool_input.get(key)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value).strip():
            return _clip(_one_line(str(value)), keep_tail=key in _PATH_KEYS)
    for value in tool_input.values():  # e.g. an MCP tool: its first short string
        if isinstance(value, str) and value.strip():
            return _clip(_one_line(value))
    return ""


def tool_label(tool_name: str, tool_input) -> str:
    """``"Bash: pytest -q"``, or just the name when there is no key argument."""
    name = tool_name if isinstance(tool_name, str) and tool_name else "?"
    arg = key_argument(name, tool_input)
    return "{}: {}".format(name, arg) if arg else name


# ---------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------

@dataclass
class RunSummary:
    """What the coordinator and the status view want to know about ONE attempt.

    Tokens: while running, summed per distinct assistant ``message.id``
    (subagent messages included: they cost money too); once a ``result``
    arrives its ``usage`` totals replace them (later messages, if any, are
    added on top until the next result).

    Models: the init model and each assistant ``message.model``, in order of
    first appearance, deduplicated on the id without its "[1m]"-style suffix;
    the suffixed spelling is kept when seen, because the CLI writes it in
    ``init`` and uses it as the key of ``result.modelUsage``. ``<synthetic>``
    is not a model.
    """
    session_id: str = ""
    models: List[str] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    cost_usd: Optional[float] = None      # from the result; None until one arrives
    estimated_cost_usd: float = 0.0       # price-table estimate; equals cost_usd once known
    num_turns: int = 0
    duration_ms: int = 0
    result_subtype: str = ""
    is_error: bool = False
    saw_result: bool = False
    assistant_turns: int = 0              # distinct non-synthetic assistant message ids
    api_retries: int = 0
    last_api_error: str = ""
    last_tool: str = ""
    model_usage: Dict[str, dict] = field(default_factory=dict)
    bad_lines: int = 0
    overlong_lines: int = 0               # lines over MAX_LINE_BYTES, skipped unread by the follower

    @property
    def cost(self) -> float:
        return self.cost_usd if self.cost_usd is not None else self.estimated_cost_usd

    @property
    def total_tokens(self) -> int:
        return (self.input_tokens + self.output_tokens
                + self.cache_creation_tokens + self.cache_read_tokens)


def _int(value) -> int:
    """Tolerant int: floats, numeric strings, null and junk (-> 0)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else 0
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return 0
        return int(number) if math.isfinite(number) else 0
    return 0


def _money(value) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


_Usage = Tuple[int, int, int, int, float]  # in, out, cache write, cache read, estimated USD
_ZERO: _Usage = (0, 0, 0, 0, 0.0)
CHARS_PER_TOKEN = 4  # a rough floor for output tokens the stream has not counted yet


def _usage(usage: dict, model: str, content_chars: int = 0) -> _Usage:
    tin = _int(usage.get("input_tokens"))
    tout = _int(usage.get("output_tokens"))
    write = _int(usage.get("cache_creation_input_tokens"))
    read = _int(usage.get("cache_read_input_tokens"))
    split = usage.get("cache_creation")
    one_hour = _int(split.get("ephemeral_1h_input_tokens")) if isinstance(split, dict) else 0
    priced_out = max(tout, content_chars // CHARS_PER_TOKEN)
    return tin, tout, write, read, estimate_cost(model, tin, priced_out, write, read, one_hour)


def _content_chars(content) -> int:
    """Characters the model wrote in these blocks (text, thinking, tool input)."""
    total = 0
    if isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            for key in ("text", "thinking"):
                if isinstance(block.get(key), str):
                    total += len(block[key])
            if block.get("type") == "tool_use" and block.get("input") is not None:
                try:
                    total += len(json.dumps(block["input"], ensure_ascii=False))
                except (TypeError, ValueError):
                    pass
    return total


def _add(a: _Usage, b: _Usage, sign: int = 1) -> _Usage:
    return (a[0] + sign * b[0], a[1] + sign * b[1], a[2] + sign * b[2],
            a[3] + sign * b[3], a[4] + sign * b[4])


def _first_text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
                return block["text"]
    return ""


def retry_error(event: dict) -> str:
    """``system/api_retry`` -> "529 overloaded_error" / "unknown"."""
    error = event.get("error")
    error = _one_line(error) if error not in (None, "") else "error"
    status = event.get("error_status")
    return "{} {}".format(status, error) if status not in (None, "") else error


class SummaryBuilder:
    """The incremental fold behind ``summarize`` and ``TranscriptFollower``.

    ``feed`` one event at a time; ``summary`` is always up to date. A
    ``tac/attempt`` separator starts a fresh ``RunSummary`` (a new object, so a
    caller holding the old one keeps the finished attempt's numbers).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.summary = RunSummary()
        self._base: _Usage = _ZERO        # totals as of the last result
        self._running: _Usage = _ZERO     # messages since the last result
        self._messages: Dict[str, _Usage] = {}   # id -> its usage, since the last result
        self._chars: Dict[str, int] = {}          # id -> characters of its content so far
        self._seen: set = set()           # every message id of this attempt
        self._main_model = ""
        self._anonymous = 0

    # -- one event ---------------------------------------------------------
    def feed(self, event: dict) -> None:
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "tac":
            if is_attempt_separator(event):
                self.reset()
            return
        summary = self.summary
        if kind == "_bad":
            summary.bad_lines += 1
            return
        session = event.get("session_id")
        if isinstance(session, str) and session and not summary.session_id:
            summary.session_id = session
        if kind == "assistant":
            self._assistant(event)
        elif kind == "system":
            subtype = event.get("subtype")
            if subtype == "init":
                model = event.get("model")
                if isinstance(model, str) and model:
                    self._main_model = model
                    self._add_model(model)
            elif subtype == "api_retry":
                summary.api_retries += 1
                summary.last_api_error = retry_error(event)
        elif kind == "result":
            self._result(event)

    def _add_model(self, model: str) -> None:
        if not model or model == "<synthetic>":
            return
        models = self.summary.models
        base = base_model(model)
        for i, seen in enumerate(models):
            if base_model(seen) == base:
                if seen == base and model != base:
                    models[i] = model  # prefer the CLI's "[1m]" spelling
                return
        models.append(model)

    def _assistant(self, event: dict) -> None:
        summary = self.summary
        message = event.get("message")
        if not isinstance(message, dict):
            return
        model = message.get("model") if isinstance(message.get("model"), str) else ""
        content = message.get("content")
        if isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") == "tool_use":
                    summary.last_tool = tool_label(block.get("name"), block.get("input"))
        synthetic = model == "<synthetic>"
        if (event.get("isApiErrorMessage") or event.get("is_api_error_message")
                or (synthetic and event.get("error"))):
            summary.last_api_error = _one_line(_first_text(content) or event.get("error"))[:200]
        if synthetic:
            return
        self._add_model(model)
        key = message.get("id")
        if not isinstance(key, str) or not key:
            self._anonymous += 1
            key = "\0line-{}".format(self._anonymous)
        if key not in self._seen:
            self._seen.add(key)
            summary.assistant_turns += 1
            self._messages[key] = _ZERO
            self._chars[key] = 0
        if key not in self._messages:
            return  # settled by an earlier result
        self._chars[key] += _content_chars(content)
        usage = message.get("usage")
        if isinstance(usage, dict):
            # The last usage seen for an id wins (later lines may carry more
            # output tokens); swap its old contribution for the new one.
            new = _usage(usage, model or self._main_model, self._chars[key])
            self._running = _add(_add(self._running, self._messages[key], -1), new)
            self._messages[key] = new
            self._publish()

    def _result(self, event: dict) -> None:
        summary = self.summary
        summary.saw_result = True
        subtype = event.get("subtype")
        summary.result_subtype = subtype if isinstance(subtype, str) else ""
        summary.is_error = bool(event.get("is_error")) or summary.result_subtype.startswith("error")
        summary.num_turns = _int(event.get("num_turns"))
        summary.duration_ms = _int(event.get("duration_ms"))
        model_usage = event.get("modelUsage")
        if isinstance(model_usage, dict):
            summary.model_usage = model_usage
        cost = _money(event.get("total_cost_usd"))
        if cost is None:
            cost = _money(event.get("cost_usd"))  # CLIs before total_cost_usd
        usage = event.get("usage")
        if isinstance(usage, dict):
            base = _usage(usage, self._main_model or (summary.models[0] if summary.models else ""))
        else:
            base = _add(self._base, self._running)
        if cost is not None:
            summary.cost_usd = cost
            base = base[:4] + (cost,)
        elif summary.cost_usd is not None:
            # A later result without a cost: keep the last known figure.
            base = base[:4] + (summary.cost_usd,)
        self._base, self._running, self._messages, self._chars = base, _ZERO, {}, {}
        self._publish()

    def _publish(self) -> None:
        total = _add(self._base, self._running)
        summary = self.summary
        (summary.input_tokens, summary.output_tokens,
         summary.cache_creation_tokens, summary.cache_read_tokens) = total[:4]
        summary.estimated_cost_usd = total[4]


def summarize(events: Iterable[dict]) -> RunSummary:
    """Fold events into the summary of the LAST attempt in them.

    A ``tac/attempt`` separator starts over, exactly as ``TranscriptFollower``
    does; a stream with no separator is one attempt.
    """
    builder = SummaryBuilder()
    for event in events:
        builder.feed(event)
    return builder.summary


# ---------------------------------------------------------------------------
# Following a growing file
# ---------------------------------------------------------------------------

# The longest line the follower will hold while waiting for its newline. A
# worker once printed 1 GB without a newline, and buffering it whole took the
# daemon to 2 GB and blocked its loop for 68 s (issue #11). Real events are far
# smaller (the biggest seen, an image, is a few hundred KB), so a line past
# this is dropped unread, up to its newline, and counted.
MAX_LINE_BYTES = 1 << 20


class TranscriptFollower:
    """Follows one log file from a byte offset, reading only appended bytes.

    Each ``poll`` stats the file and reads only what was appended since the
    last call (never re-reading), keeps a torn last line until its newline
    arrives, and folds the new events into ``summary``. A ``tac/attempt``
    separator starts a fresh ``RunSummary``. A missing file is "nothing yet";
    a file that shrank or was replaced (new inode) is read again from 0 with a
    fresh summary.

    One ``poll`` reads at most ``max_bytes`` (so catching up on a 200 MB log
    never holds it all in memory); ``behind`` is then True and the next poll
    continues. ``catch_up()`` reads to the end, keeping only the summary.
    A line longer than ``MAX_LINE_BYTES`` is never held: once it passes the
    cap its bytes are dropped up to its newline, it yields nothing, and
    ``summary.overlong_lines`` counts it.

    ``offset`` is the byte offset just past the last complete line consumed:
    save it and pass it back to resume. ``last_line_at`` is the time
    (``clock()``) of the last poll that saw a new complete line, for the stall
    watchdog; the caller may also set it (e.g. to the worker's start time).
    """

    DEFAULT_MAX_BYTES = 8 << 20

    def __init__(self, path, offset: int = 0, clock=time.time) -> None:
        self.path = os.fspath(path)
        self.offset = offset
        self.summary_builder = SummaryBuilder()
        self.last_line_at: Optional[float] = None
        self.behind = False
        self.restarts = 0  # times the file shrank or was replaced and was read again from 0
        self._clock = clock
        self._partial = b""
        self._skipped = 0  # bytes dropped of an over-long line whose newline has not come yet
        self._inode: Optional[Tuple[int, int]] = None

    @property
    def summary(self) -> RunSummary:
        return self.summary_builder.summary

    def _restart(self) -> None:
        self.restarts += 1
        self.offset = 0
        self._partial = b""
        self._skipped = 0
        self.summary_builder.reset()

    def poll_lines(self, max_bytes: Optional[int] = None) -> List[Tuple[bytes, Optional[dict]]]:
        """New complete lines as ``(raw_bytes, event)`` pairs, without the newline.

        A blank line comes as ``(raw, None)`` so that a viewer can number
        lines as the file does and print them verbatim (``--raw``). The
        summary is updated exactly as by ``poll``.
        """
        limit = self.DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
        try:
            st = os.stat(self.path)
        except OSError:  # not there yet (or gone for a moment): nothing new
            self.behind = False
            return []
        inode = (st.st_dev, st.st_ino)
        # Bytes of an over-long line already dropped are behind us too.
        position = self.offset + len(self._partial) + self._skipped
        if self._inode is not None and inode != self._inode:
            self._restart()  # replaced by a new file
            position = 0
        elif st.st_size < position:
            self._restart()  # truncated
            position = 0
        self._inode = inode
        if st.st_size == position:
            self.behind = False
            return []
        try:
            with open(self.path, "rb") as f:
                f.seek(position)
                data = f.read(max(1, limit))
        except OSError:  # removed between stat and open: nothing new this time
            self.behind = False
            return []
        self.behind = position + len(data) < st.st_size
        if not data:
            return []
        if self._skipped:  # inside an over-long line: drop bytes up to its newline
            end = data.find(b"\n")
            if end < 0:
                self._skipped += len(data)
                return []
            self.offset += self._skipped + end + 1
            self._skipped = 0
            self.last_line_at = self._clock()  # the line did end: the worker is not stalled
            data = data[end + 1:]
        out: List[Tuple[bytes, Optional[dict]]] = []
        chunk = self._partial + data
        cut = chunk.rfind(b"\n")
        if cut < 0:
            self._partial = chunk
        else:
            complete, self._partial = chunk[:cut + 1], chunk[cut + 1:]
            self.offset += len(complete)
            self.last_line_at = self._clock()
            for raw in complete.split(b"\n")[:-1]:
                event = parse_line(raw)
                if event is not None:
                    self.summary_builder.feed(event)
                out.append((raw, event))
        if len(self._partial) > MAX_LINE_BYTES:
            # Over the cap: stop holding it; the next polls drop the rest.
            self.summary.overlong_lines += 1
            self._skipped, self._partial = len(self._partial), b""
        return out

    def poll(self, max_bytes: Optional[int] = None) -> List[dict]:
        """New complete events since the last call (``_bad`` for non-JSON lines)."""
        return [event for _, event in self.poll_lines(max_bytes) if event is not None]

    def catch_up(self) -> RunSummary:
        """Read to the current end of the file in bounded chunks; return the summary."""
        self.poll_lines()
        while self.behind:
            self.poll_lines()
        return self.summary


# ---------------------------------------------------------------------------
# The usage ledger
# ---------------------------------------------------------------------------

def ledger_record(issue: int, attempt: int, summary: RunSummary, exit_reason: str, now: float,
                  outcome: str = "", stage: str = "", round: int = 0) -> dict:
    """One line of ``<logs>/usage.jsonl`` for a finished attempt (see adws/ledger.py).

    ``date`` is the local day (budgets are per day as the user sees it), ``ts``
    is UTC. ``cost_source`` says whether the CLI reported the cost or it is
    this module's estimate (a run killed before its result). ``stage`` names
    the workflow stage the run was (one line per stage run) and ``round`` the
    follow-up round (2 and up; adws/followup.py); each is left out when not given, so a one-stage run's
    line is what it always was.
    """
    record = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "date": time.strftime("%Y-%m-%d", time.localtime(now)),
        "issue": issue,
        "attempt": attempt,
        "session_id": summary.session_id,
        "models": list(summary.models),
        "input_tokens": summary.input_tokens,
        "output_tokens": summary.output_tokens,
        "cache_creation_tokens": summary.cache_creation_tokens,
        "cache_read_tokens": summary.cache_read_tokens,
        "total_tokens": summary.total_tokens,
        "cost_usd": summary.cost,
        "cost_source": "result" if summary.cost_usd is not None else "estimate",
        "num_turns": summary.num_turns,
        "duration_ms": summary.duration_ms,
        "subtype": summary.result_subtype,
        "is_error": summary.is_error,
        "exit_reason": exit_reason,
        "outcome": outcome,
        "api_retries": summary.api_retries,
        "model_usage": summary.model_usage,
    }
    if stage:
        record["stage"] = stage
    if round > 1:
        record["round"] = round
    return record
