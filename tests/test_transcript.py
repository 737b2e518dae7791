"""adws/transcript.py: events, summaries and cost of real CLI transcripts; the follower.

The samples in tests/data/claude are real Claude Code output from many CLI
versions (see SOURCES.txt there). Each test compares the module's answer with
a value computed here independently, with a plain loop over the JSON lines.
"""
from __future__ import annotations

import io
import json
import os
import re
import time
from pathlib import Path

import pytest

from adws import transcript
from adws.transcript import RunSummary, TranscriptFollower, iter_events, key_argument, summarize

from claude_samples import needs_samples, sample, sample_files  # noqa: E402


def load(path: Path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def independent(path: Path) -> dict:
    """What a reader with no knowledge of adws would compute from the sample."""
    events = load(path)
    first_usage = {}
    last_usage = {}
    last_tool = ""
    session = ""
    result = None
    retries = 0
    for e in events:
        if not session and e.get("session_id"):
            session = e["session_id"]
        if e["type"] == "assistant":
            m = e["message"]
            if m.get("model") != "<synthetic>":
                first_usage.setdefault(m["id"], m.get("usage") or {})
                last_usage[m["id"]] = m.get("usage") or {}
            for block in m["content"]:
                if block["type"] == "tool_use":
                    last_tool = block["name"]
        elif e["type"] == "result":
            result = e
        elif e["type"] == "system" and e.get("subtype") == "api_retry":
            retries += 1
    keys = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    sums = {k: sum(u.get(k, 0) for u in last_usage.values()) for k in keys}
    first_sums = {k: sum(u.get(k, 0) for u in first_usage.values()) for k in keys}
    return {"ids": len(first_usage), "sums": sums, "first_sums": first_sums, "last_tool": last_tool, "session": session,
            "result": result, "retries": retries}


def tokens(s: RunSummary):
    return {"input_tokens": s.input_tokens, "output_tokens": s.output_tokens,
            "cache_creation_input_tokens": s.cache_creation_tokens,
            "cache_read_input_tokens": s.cache_read_tokens}


# ---------------------------------------------------------------------------
# Every sample
# ---------------------------------------------------------------------------

@needs_samples
@pytest.mark.parametrize("path", sample_files(), ids=lambda p: p.name[:12])
def test_every_sample_matches_an_independent_count(path):
    s = summarize(iter_events(path))
    want = independent(path)
    assert s.bad_lines == 0
    assert s.session_id == want["session"]
    assert s.assistant_turns == want["ids"]
    assert s.api_retries == want["retries"]
    assert s.last_tool.split(":")[0] == want["last_tool"]
    result = want["result"]
    assert s.saw_result == (result is not None)
    if result is None:
        assert s.cost_usd is None
        assert tokens(s) == want["sums"]
        assert s.cost == s.estimated_cost_usd
    else:
        assert s.cost_usd == result["total_cost_usd"]
        assert s.cost == s.estimated_cost_usd == result["total_cost_usd"]
        assert tokens(s) == {k: result["usage"][k] for k in want["sums"]}
        assert s.num_turns == result["num_turns"]
        assert s.duration_ms == result["duration_ms"]
        assert s.result_subtype == result["subtype"] == "success"
        assert s.is_error is False
        assert s.model_usage == result.get("modelUsage", {})


def test_sample_08_cli_2_1_197_bash_tool():
    s = summarize(iter_events(sample("08_")))
    assert s.session_id == "ba1a2760-1604-42fa-b337-05776bd94ddd"
    assert s.assistant_turns == 2
    assert s.cost_usd == 0.001675 and s.cost == 0.001675
    assert s.last_tool == "Bash: echo hello > out.txt && git status --short"
    assert s.models == ["claude-opus-4-8[1m]"]  # init's spelling; messages say claude-opus-4-8
    assert (s.input_tokens, s.output_tokens) == (200, 27)  # the result's totals, not 2 x (100, 1)
    assert s.num_turns == 2 and s.duration_ms == 572
    assert s.saw_result and s.result_subtype == "success" and not s.is_error


def test_sample_09_api_unreachable_has_retries_and_no_turn():
    s = summarize(iter_events(sample("09_")))
    assert s.api_retries == 9
    assert s.last_api_error == "unknown"
    assert s.saw_result is False
    assert s.assistant_turns == 0
    assert s.cost_usd is None and s.cost == 0.0
    assert s.session_id == "c45ac567-b322-4430-9684-8577f6b93e89"


def test_sample_02_old_format_sums_and_cost():
    path = sample("02_")
    s = summarize(iter_events(path))
    want = independent(path)
    assert want["ids"] == 54 and s.assistant_turns == 54      # 86 assistant lines share 54 ids
    assert s.cost_usd == pytest.approx(2.4637935)
    assert s.num_turns == 139
    assert s.models == ["claude-sonnet-4-20250514"]
    # Before the result arrives, the running sums are per distinct id, the
    # last line of each id winning: this CLI repeats the usage with
    # output_tokens growing, so the first line's figure undercounts 8-fold.
    events = load(path)
    running = summarize(e for e in events if e["type"] != "result")
    assert tokens(running) == want["sums"]
    assert running.output_tokens == 34242 and want["first_sums"]["output_tokens"] == 4287
    assert running.cost_usd is None and running.saw_result is False
    # and the estimate is within a few percent of what the CLI charged
    assert running.estimated_cost_usd == pytest.approx(2.4637935, rel=0.02)


def test_sample_03_running_estimate_counts_unreported_output():
    """CLI 2.x repeats the stream-start usage (output_tokens 1-5) on every line
    of a message; the estimate floors output at content characters / 4."""
    events = load(sample("03_"))
    running = summarize(e for e in events if e["type"] != "result")
    assert running.output_tokens == 603          # as reported; the result says 4371
    assert running.estimated_cost_usd == pytest.approx(0.3451878, rel=0.05)
    assert running.estimated_cost_usd > transcript.estimate_cost(
        "claude-sonnet-4-5", running.input_tokens, running.output_tokens,
        running.cache_creation_tokens, running.cache_read_tokens)


def test_sample_03_big_image_line():
    path = sample("03_")
    assert path.stat().st_size > 1_000_000
    s = summarize(iter_events(path))
    assert s.assistant_turns == independent(path)["ids"] == 11
    assert s.cost_usd == pytest.approx(0.3451878)
    assert s.cache_read_tokens == 750196
    assert s.last_tool.startswith("TodoWrite")
    assert "claude-haiku-4-5-20251001" in s.model_usage  # a zero-usage entry, kept as written


def test_sample_05b_subagent_lines_count_and_rate_limit_passes():
    path = sample("05b_")
    s = summarize(iter_events(path))
    assert s.assistant_turns == 3   # 4 lines; the Agent and Bash calls share one id
    assert s.last_tool == "Bash: sleep 20; echo agent-done"
    assert s.models == ["claude-haiku-4-5-20251001"]
    assert not s.saw_result
    # estimate: Haiku 4.5 at 1/5/1.25/0.10 per MTok, 1h cache writes at 2x
    # input, output at least a quarter of the characters written
    usage, chars = {}, {}
    for e in load(path):
        if e["type"] == "assistant":
            mid = e["message"]["id"]
            usage[mid] = e["message"]["usage"]
            for b in e["message"]["content"]:
                chars[mid] = chars.get(mid, 0) + len(b.get("text", "")) + (
                    len(json.dumps(b["input"], ensure_ascii=False)) if b["type"] == "tool_use" else 0)
    expected = 0.0
    for mid, u in usage.items():
        h1 = u["cache_creation"]["ephemeral_1h_input_tokens"]
        out = max(u["output_tokens"], chars[mid] // 4)
        expected += (u["input_tokens"] * 1 + out * 5 + u["cache_read_input_tokens"] * 0.10
                     + (u["cache_creation_input_tokens"] - h1) * 1.25 + h1 * 2.0) / 1e6
    assert s.estimated_cost_usd == pytest.approx(expected)


def test_sample_05a_init_only():
    s = summarize(iter_events(sample("05a_")))
    assert s.models == ["claude-haiku-4-5-20251001"]
    assert s.session_id.startswith("f702c8d1")
    assert s.assistant_turns == 0 and not s.saw_result


@pytest.mark.parametrize("prefix", ["01_", "03_", "08_"])
def test_price_table_reproduces_the_cli_cost(prefix):
    """Opus 4.5, Sonnet 4.5 and the 2.1.197 run: the table gives the CLI's own figure."""
    events = load(sample(prefix))
    model = next(e["model"] for e in events if e.get("subtype") == "init")
    result = next(e for e in events if e["type"] == "result")
    u = result["usage"]
    cost = transcript.estimate_cost(model, u["input_tokens"], u["output_tokens"],
                                    u["cache_creation_input_tokens"], u["cache_read_input_tokens"])
    assert cost == pytest.approx(result["total_cost_usd"], rel=1e-9)


# ---------------------------------------------------------------------------
# The fold on made-up events
# ---------------------------------------------------------------------------

def asst(mid, model="claude-sonnet-4-6", usage=None, content=None, **extra):
    message = {"id": mid, "model": model, "content": content or [{"type": "text", "text": "hi"}]}
    if usage is not None:
        message["usage"] = usage
    return dict({"type": "assistant", "message": message}, **extra)


def U(i=0, o=0, w=0, r=0):
    return {"input_tokens": i, "output_tokens": o, "cache_creation_input_tokens": w, "cache_read_input_tokens": r}


def test_lines_sharing_an_id_count_once_and_last_usage_wins():
    s = summarize([asst("m1", usage=U(10, 1)), asst("m1", usage=U(10, 7)), asst("m2", usage=U(5, 2))])
    assert s.assistant_turns == 2
    assert (s.input_tokens, s.output_tokens) == (15, 9)
    assert s.estimated_cost_usd == pytest.approx((15 * 3 + 9 * 15) / 1e6)


def test_output_floor_from_content_length_affects_only_the_estimate():
    s = summarize([asst("m1", usage=U(0, 1), content=[{"type": "text", "text": "x" * 4000}])])
    assert s.output_tokens == 1
    assert s.estimated_cost_usd == pytest.approx(1000 * 15 / 1e6)
    # lines of one id add up; a tool input counts too
    s = summarize([asst("m1", usage=U(0, 1), content=[{"type": "thinking", "thinking": "t" * 400}]),
                   asst("m1", usage=U(0, 1), content=[{"type": "tool_use", "name": "Write",
                                                      "input": {"content": "c" * 3585}}])])  # 3600 as JSON
    assert s.estimated_cost_usd == pytest.approx(1000 * 15 / 1e6)


def test_result_usage_replaces_running_sums_and_later_messages_add_on():
    events = [asst("m1", usage=U(10, 1)), asst("m2", usage=U(10, 1)),
              {"type": "result", "subtype": "success", "total_cost_usd": 0.5, "usage": U(100, 50, 7, 9),
               "num_turns": 2}]
    s = summarize(events)
    assert (s.input_tokens, s.output_tokens, s.cache_creation_tokens, s.cache_read_tokens) == (100, 50, 7, 9)
    assert s.cost_usd == s.estimated_cost_usd == 0.5
    s = summarize(events + [asst("m2", usage=U(999, 999)), asst("m3", usage=U(1, 1))])
    assert (s.input_tokens, s.output_tokens) == (101, 51)  # m2 was settled by the result; m3 is new
    assert s.assistant_turns == 3
    assert s.cost == 0.5
    assert s.estimated_cost_usd == pytest.approx(0.5 + 18 / 1e6)


def test_old_cost_usd_field_and_result_without_usage():
    s = summarize([asst("m1", usage=U(10, 1)), {"type": "result", "subtype": "success", "cost_usd": 0.25}])
    assert s.cost_usd == 0.25 and (s.input_tokens, s.output_tokens) == (10, 1)


def test_error_result():
    s = summarize([{"type": "result", "subtype": "error_max_turns", "is_error": True, "num_turns": 5.0,
                    "total_cost_usd": None, "duration_ms": None}])
    assert s.saw_result and s.is_error and s.result_subtype == "error_max_turns"
    assert s.num_turns == 5 and s.duration_ms == 0
    assert s.cost_usd is None and s.cost == 0.0
    assert summarize([{"type": "result", "subtype": "error_during_execution"}]).is_error


def test_synthetic_messages_are_not_turns_but_name_the_error():
    events = [{"type": "assistant", "isApiErrorMessage": True, "error": "rate_limit",
               "message": {"id": "x", "model": "<synthetic>",
                           "content": [{"type": "text", "text": "You've hit your session limit · resets 2pm"}],
                           "usage": U(5, 5)}}]
    s = summarize(events)
    assert s.assistant_turns == 0 and s.models == [] and s.input_tokens == 0
    assert s.last_api_error.startswith("You've hit your session limit")


def test_api_retry_error_words():
    s = summarize([{"type": "system", "subtype": "api_retry", "attempt": 1, "error_status": 529,
                    "error": "overloaded_error", "retry_delay_ms": 500.5},
                   {"type": "system", "subtype": "api_retry"}])
    assert s.api_retries == 2 and s.last_api_error == "error"
    assert summarize([{"type": "system", "subtype": "api_retry", "error_status": 529,
                       "error": "overloaded_error"}]).last_api_error == "529 overloaded_error"


def test_models_are_deduplicated_on_the_id_without_suffix():
    s = summarize([{"type": "system", "subtype": "init", "model": "claude-opus-4-8[1m]"},
                   asst("a", model="claude-opus-4-8"), asst("b", model="claude-haiku-4-5-20251001")])
    assert s.models == ["claude-opus-4-8[1m]", "claude-haiku-4-5-20251001"]
    s = summarize([asst("a", model="claude-opus-4-8"),
                   {"type": "system", "subtype": "init", "model": "claude-opus-4-8[1m]"}])
    assert s.models == ["claude-opus-4-8[1m]"]


def test_separator_starts_a_new_summary():
    sep = {"type": "tac", "subtype": "attempt", "issue": 7, "attempt": 2}
    s = summarize([asst("m1", usage=U(10, 1)), {"type": "_bad", "raw": "x"}, sep, asst("m9", usage=U(1, 1)),
                   {"type": "tac", "subtype": "end", "exit": "exit status 1"}])
    assert s.assistant_turns == 1 and s.input_tokens == 1 and s.bad_lines == 0


WEIRD = [
    {}, {"type": None}, {"type": 5}, {"type": "assistant"}, {"type": "assistant", "message": None},
    {"type": "assistant", "message": "text"}, {"type": "assistant", "message": {"content": "plain"}},
    {"type": "assistant", "message": {"id": 7, "usage": "none", "content": [None, 3, {"type": None}]}},
    {"type": "assistant", "message": {"id": "f", "model": None,
                                      "usage": {"input_tokens": 1.5, "output_tokens": None,
                                                "cache_read_input_tokens": "7", "cache_creation": None}}},
    {"type": "assistant", "message": {"content": [{"type": "tool_use", "name": None, "input": None}]}},
    {"type": "assistant", "message": {"content": [{"type": "tool_use", "name": "Bash", "input": "ls -la"}]}},
    {"type": "user", "message": {"content": [None, 1, {"type": "tool_result", "content": None}]}},
    {"type": "user"}, {"type": "system"}, {"type": "system", "subtype": "init", "model": 42},
    {"type": "system", "subtype": "api_retry", "error": {"nested": True}, "error_status": None},
    {"type": "rate_limit_event"}, {"type": "stream_event", "event": {}}, {"type": "brand_new", "x": [1]},
    {"type": "result", "usage": "x", "total_cost_usd": "free", "num_turns": "3", "modelUsage": []},
    {"type": "result", "usage": {"input_tokens": float("nan")}, "total_cost_usd": float("inf")},
    {"type": "tac"}, {"type": "tac", "subtype": "end"}, {"type": "_bad"},
]


def test_weird_events_do_not_crash():
    s = summarize(WEIRD)
    assert s.saw_result and s.cost_usd is None
    assert s.num_turns == 0
    assert s.bad_lines == 1
    assert s.last_tool == "Bash: ls -la"
    assert s.last_api_error == '{"nested": true}'
    json.dumps(transcript.ledger_record(1, 1, s, "exit status 0", 0.0))
    # each one alone, too
    for event in WEIRD:
        summarize([event])


def test_summary_of_floats_and_strings_in_usage():
    s = summarize([asst("f", usage={"input_tokens": 1.9, "output_tokens": "4", "cache_read_input_tokens": None})])
    assert (s.input_tokens, s.output_tokens, s.cache_read_tokens) == (1, 4, 0)


# ---------------------------------------------------------------------------
# Lines
# ---------------------------------------------------------------------------

def test_parse_line_conventions():
    assert transcript.parse_line("") is None
    assert transcript.parse_line(b"  \r\n") is None
    assert transcript.parse_line('{"type":"x"}\r') == {"type": "x"}
    assert transcript.parse_line("not json") == {"type": "_bad", "raw": "not json"}
    assert transcript.parse_line("[1, 2]") == {"type": "_bad", "raw": "[1, 2]"}
    assert transcript.parse_line('{"type": "assist') == {"type": "_bad", "raw": '{"type": "assist'}
    assert transcript.parse_line(b"\xff\xfe{")["type"] == "_bad"
    assert transcript.parse_line("[" * 100000)["type"] == "_bad"   # too deep for json: still no crash
    assert len(transcript.parse_line("x" * 10_000_000)["raw"]) == transcript.BAD_RAW_KEEP


def test_iter_events_from_path_and_file_objects(tmp_path):
    text = '{"type":"a"}\n\nnot json\n{"type":"b"}\n{"type":"c", "tor'
    path = tmp_path / "log.jsonl"
    path.write_text(text)
    want = [{"type": "a"}, {"type": "_bad", "raw": "not json"}, {"type": "b"}, {"type": "_bad", "raw": '{"type":"c", "tor'}]
    assert list(iter_events(path)) == want
    assert list(iter_events(str(path))) == want
    assert list(iter_events(io.BytesIO(text.encode()))) == want
    assert list(iter_events(io.StringIO(text))) == want


# ---------------------------------------------------------------------------
# key_argument and labels
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, tool_input, want", [
    ("Bash", {"command": "pytest -q", "description": "run tests"}, "pytest -q"),
    ("Bash", {"command": "cd x &&\n  make\ttest"}, "cd x && make test"),
    ("Edit", {"file_path": "src/x.py", "old_string": "a", "new_string": "b"}, "src/x.py"),
    ("Read", {"file_path": "/very/long/" + "d/" * 40 + "file.py"}, "…" + ("/very/long/" + "d/" * 40 + "file.py")[-59:]),
    ("Grep", {"pattern": "TODO", "path": "src"}, "TODO"),
    ("Glob", {"pattern": "**/*.py"}, "**/*.py"),
    ("WebFetch", {"url": "https://example.com/a", "prompt": "read"}, "https://example.com/a"),
    ("WebSearch", {"query": "python tomllib"}, "python tomllib"),
    ("Task", {"description": "Find callers", "prompt": "long..."}, "Find callers"),
    ("Agent", {"description": "Run sleep", "subagent_type": "general-purpose"}, "Run sleep"),
    ("TodoWrite", {"todos": [{"content": "a", "status": "completed"},
                             {"content": "write tests", "status": "in_progress"}]}, "write tests"),
    ("TodoWrite", {"todos": [{"content": "a", "status": "pending"}]}, "1 todos"),
    ("mcp__playwright__browser_navigate", {"url": "http://localhost:3000"}, "http://localhost:3000"),
    ("mcp__x__y", {"flag": True, "value": "first string"}, "first string"),
    ("Bash", {"command": "x" * 100}, "x" * 59 + "…"),
    ("Unknown", {}, ""),
    ("Bash", None, ""),
    ("Bash", {"command": None}, ""),
])
def test_key_argument(name, tool_input, want):
    got = key_argument(name, tool_input)
    assert got == want
    assert "\n" not in got and len(got) <= 60


def test_tool_label():
    assert transcript.tool_label("Grep", {"pattern": "TODO"}) == "Grep: TODO"
    assert transcript.tool_label("ExitPlanMode", {}) == "ExitPlanMode"
    assert transcript.tool_label(None, None) == "?"


@pytest.mark.parametrize("model, input_price, read_price", [
    ("claude-opus-4-20250514", 15.0, 1.50), ("claude-opus-4-1-20250805", 15.0, 1.50),
    ("claude-opus-4-5-20251101", 5.0, 0.50), ("claude-opus-4-8[1m]", 5.0, 0.50), ("claude-opus-5", 5.0, 0.50),
    ("claude-opus-5-5", 4.0, 0.20), ("claude-3-opus-20240229", 15.0, 1.50),
    ("claude-sonnet-4-20250514", 3.0, 0.30), ("claude-sonnet-4-6", 3.0, 0.30), ("claude-3-5-sonnet-20241022", 3.0, 0.30),
    ("claude-sonnet-5", 2.0, 0.20), ("claude-sonnet-5-5[1m]", 2.0, 0.10),
    ("claude-haiku-4-5-20251001", 1.0, 0.10), ("claude-3-5-haiku-20241022", 0.8, 0.08),
    ("claude-3-haiku-20240307", 0.25, 0.03), ("claude-haiku-5-5", 0.10, 0.01),
    ("claude-fable-5-1", 3.0, 0.30), ("", 3.0, 0.30), ("opus", 5.0, 0.50),
])
def test_prices_for(model, input_price, read_price):
    prices = transcript.prices_for(model)
    assert (prices[0], prices[3]) == (input_price, read_price)


def test_money_in_a_transcript_keeps_four_decimals_below_a_dollar():
    from adws import ledger
    assert ledger.usd(0.001675, fine=True) == "$0.0017"
    assert ledger.usd(2.4637935, fine=True) == "$2.46"
    assert ledger.usd(None) == "-"


# ---------------------------------------------------------------------------
# The ledger record
# ---------------------------------------------------------------------------

LEDGER_KEYS = {"ts", "date", "issue", "attempt", "session_id", "models", "input_tokens", "output_tokens",
               "cache_creation_tokens", "cache_read_tokens", "total_tokens", "cost_usd", "cost_source",
               "num_turns", "duration_ms", "subtype", "is_error", "exit_reason", "outcome", "api_retries",
               "model_usage"}


def test_ledger_record_from_a_result():
    s = summarize(iter_events(sample("08_")))
    now = 1795800000.0
    rec = transcript.ledger_record(7, 2, s, "exit status 0", now)
    assert set(rec) == LEDGER_KEYS
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rec["ts"])
    assert rec["ts"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    assert rec["date"] == time.strftime("%Y-%m-%d", time.localtime(now))
    assert (rec["issue"], rec["attempt"], rec["exit_reason"]) == (7, 2, "exit status 0")
    assert rec["cost_usd"] == 0.001675 and rec["cost_source"] == "result"
    assert rec["total_tokens"] == 227
    assert rec["models"] == ["claude-opus-4-8[1m]"]
    assert rec["subtype"] == "success" and rec["is_error"] is False
    assert rec["model_usage"]["claude-opus-4-8[1m]"]["costUSD"] == 0.001675
    assert json.loads(json.dumps(rec)) == rec


def test_ledger_record_of_a_killed_run_is_an_estimate():
    s = summarize(iter_events(sample("05b_")))
    rec = transcript.ledger_record(3, 1, s, "terminated by SIGTERM", 0.0)
    assert rec["cost_source"] == "estimate" and rec["cost_usd"] == s.estimated_cost_usd > 0
    assert rec["subtype"] == "" and rec["num_turns"] == 0


# ---------------------------------------------------------------------------
# TranscriptFollower
# ---------------------------------------------------------------------------

class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def line(obj) -> bytes:
    return (json.dumps(obj) + "\n").encode()


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def test_follower_reads_only_appended_bytes_and_waits_for_a_split_line(tmp_path):
    path = tmp_path / "gh-7.jsonl"
    clock = FakeClock()
    f = TranscriptFollower(path, clock=clock)
    assert f.poll() == [] and f.offset == 0 and f.last_line_at is None   # no file yet
    init = line({"type": "system", "subtype": "init", "session_id": "s1", "model": "claude-sonnet-4-6"})
    second = line(asst("m1", usage=U(10, 2), content=[{"type": "tool_use", "name": "Bash",
                                                        "input": {"command": "pytest -q"}}]))
    append(path, init + second[:25])
    assert f.poll() == [json.loads(init)]
    assert f.offset == len(init) and f.last_line_at == 1000.0
    assert f.summary.session_id == "s1"
    clock.now = 1005.0
    assert f.poll() == []                      # nothing new: the partial line stays partial
    assert f.last_line_at == 1000.0
    append(path, second[25:])
    events = f.poll()
    assert [e["type"] for e in events] == ["assistant"]
    assert f.offset == len(init) + len(second) == path.stat().st_size
    assert f.last_line_at == 1005.0
    assert f.summary.last_tool == "Bash: pytest -q" and f.summary.input_tokens == 10
    assert f.poll() == []


def test_follower_garbage_blank_lines_and_crlf(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'Segmentation fault (core dumped)\n\n{"type":"x"}\r\n[1]\n')
    f = TranscriptFollower(path)
    assert f.poll() == [{"type": "_bad", "raw": "Segmentation fault (core dumped)"}, {"type": "x"},
                        {"type": "_bad", "raw": "[1]"}]
    assert f.summary.bad_lines == 2


def test_poll_lines_keeps_blank_lines_and_raw_bytes(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"type":"x"}\n\n\xffbad\n')
    pairs = TranscriptFollower(path).poll_lines()
    assert pairs == [(b'{"type":"x"}', {"type": "x"}), (b"", None), (b"\xffbad", {"type": "_bad", "raw": "\ufffdbad"})]


def test_follower_restarts_when_the_file_is_truncated(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(line(asst("m1", usage=U(10, 1))) + line(asst("m2", usage=U(10, 1))))
    f = TranscriptFollower(path)
    assert len(f.poll()) == 2 and f.summary.assistant_turns == 2
    path.write_bytes(line(asst("m3", usage=U(1, 1))))   # shorter: truncated and rewritten
    events = f.poll()
    assert [e["message"]["id"] for e in events] == ["m3"]
    assert f.restarts == 1
    assert f.summary.assistant_turns == 1 and f.summary.input_tokens == 1
    assert f.offset == path.stat().st_size


def test_follower_restarts_when_the_file_is_replaced(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(line(asst("m1")))
    f = TranscriptFollower(path)
    assert len(f.poll()) == 1
    new = tmp_path / "new.jsonl"
    new.write_bytes(line(asst("n1")) + line(asst("n2")))  # bigger, so only the inode tells
    os.replace(new, path)
    assert [e["message"]["id"] for e in f.poll()] == ["n1", "n2"]
    assert f.summary.assistant_turns == 2 and f.restarts == 1


def test_follower_resets_the_summary_at_each_attempt(tmp_path):
    path = tmp_path / "gh-7.jsonl"
    path.write_bytes(
        line({"type": "tac", "subtype": "attempt", "issue": 7, "attempt": 1})
        + line(asst("a1", usage=U(10, 1))) + line({"type": "result", "subtype": "error_max_turns",
                                                   "is_error": True, "total_cost_usd": 0.3})
        + line({"type": "tac", "subtype": "end", "issue": 7, "attempt": 1, "exit": "exit status 1"}))
    f = TranscriptFollower(path)
    f.poll()
    first = f.summary
    assert first.cost_usd == 0.3 and first.is_error
    append(path, line({"type": "tac", "subtype": "attempt", "issue": 7, "attempt": 2}))
    f.poll()
    assert f.summary is not first and f.summary.cost_usd is None and f.summary.assistant_turns == 0
    append(path, line(asst("b1", usage=U(5, 5))))
    f.poll()
    assert f.summary.assistant_turns == 1 and f.summary.input_tokens == 5
    assert first.cost_usd == 0.3  # the finished attempt's summary is left alone


def test_follower_resumes_from_an_offset(tmp_path):
    path = tmp_path / "log.jsonl"
    head = line(asst("m1")) + line(asst("m2"))
    path.write_bytes(head + line(asst("m3")))
    f = TranscriptFollower(path, offset=len(head))
    assert [e["message"]["id"] for e in f.poll()] == ["m3"]


def test_follower_reads_a_big_backlog_in_bounded_chunks(tmp_path):
    path = tmp_path / "log.jsonl"
    lines = [line(asst("m{}".format(i), usage=U(1, 1), content=[{"type": "text", "text": "x" * 500}]))
             for i in range(200)]
    path.write_bytes(b"".join(lines))
    f = TranscriptFollower(path)
    first = f.poll(max_bytes=10_000)
    assert 0 < len(first) < 200 and f.behind
    seen = len(first)
    while f.behind:
        batch = f.poll(max_bytes=10_000)
        assert len(batch) * len(lines[0]) <= 10_000 + len(lines[0])
        seen += len(batch)
    assert seen == 200 and f.summary.assistant_turns == 200 and f.offset == path.stat().st_size
    g = TranscriptFollower(path)
    g.DEFAULT_MAX_BYTES = 4096
    assert g.catch_up().assistant_turns == 200 and not g.behind


def test_follower_keeps_a_line_longer_than_one_chunk(tmp_path):
    path = tmp_path / "log.jsonl"
    big = line(asst("big", content=[{"type": "text", "text": "y" * 50_000}]))
    path.write_bytes(big)
    f = TranscriptFollower(path)
    got = []
    for _ in range(20):
        got += f.poll(max_bytes=4096)
    assert [e["message"]["id"] for e in got] == ["big"]


def test_follower_on_real_sample_in_pieces(tmp_path):
    src = sample("02_").read_bytes()
    path = tmp_path / "gh-2.jsonl"
    f = TranscriptFollower(path)
    n = 0
    for start in range(0, len(src), 7_777):
        append(path, src[start:start + 7_777])
        n += len(f.poll())
    assert n == len(load(sample("02_")))
    want = summarize(iter_events(sample("02_")))
    assert f.summary == want


def poll_all(f: TranscriptFollower, max_bytes: int) -> list:
    """Poll to the end in chunks, checking after each that the partial line stays under the cap."""
    got = f.poll(max_bytes=max_bytes)
    assert len(f._partial) <= transcript.MAX_LINE_BYTES
    while f.behind:
        got += f.poll(max_bytes=max_bytes)
        assert len(f._partial) <= transcript.MAX_LINE_BYTES
    return got


def test_follower_skips_an_overlong_line_and_never_holds_more_than_the_cap(tmp_path):
    # Issue #11: a worker printed 1 GB without a newline and the follower held it all.
    path = tmp_path / "gh-12.jsonl"
    path.write_bytes(line(asst("before")) + b"x" * (5 << 20))  # 5 MiB, no newline yet
    f = TranscriptFollower(path)
    got = poll_all(f, 256 << 10)
    assert [e["message"]["id"] for e in got] == ["before"]
    assert f.summary.overlong_lines == 1
    append(path, b"x" * 1000 + b"\n" + line(asst("after")))  # the long line ends; a normal one follows
    got += poll_all(f, 256 << 10)
    assert [e["message"]["id"] for e in got] == ["before", "after"]
    assert f.summary.overlong_lines == 1 and f.summary.bad_lines == 0
    assert f.summary.assistant_turns == 2 and f.offset == path.stat().st_size


def test_follower_parses_a_line_cut_exactly_at_a_chunk_boundary(tmp_path):
    path = tmp_path / "log.jsonl"
    first, second = line(asst("m1")), line(asst("m2"))
    path.write_bytes(first + second)
    f = TranscriptFollower(path)
    assert [e["message"]["id"] for e in f.poll(max_bytes=len(first))] == ["m1"]  # ends on the newline
    assert f.poll(max_bytes=len(second) - 1) == [] and f.behind                 # stops one byte short
    assert [e["message"]["id"] for e in f.poll(max_bytes=1)] == ["m2"]
    assert f.summary.overlong_lines == 0 and f.offset == path.stat().st_size
