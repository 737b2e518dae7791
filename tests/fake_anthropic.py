"""A scripted, local stand-in for the Anthropic Messages API.

Why: the TAC coordinator runs the real Claude Code CLI as its worker. To test
that for real (process handling, stream-json parsing, git side effects) without
internet access or an API key, we point the CLI at this server with
``ANTHROPIC_BASE_URL`` and let it play a SCRIPT: a list of the assistant's
next replies (a text, or one or more tool calls). The CLI executes the tool
calls for real in its cwd and sends the results back in its next request,
which gets the next script step.

What the CLI sends (observed with CLI 2.1.197, see ``is_side_call``):

* the main agent loop: ``POST /v1/messages?beta=true`` with ``"stream": true``,
  ``max_tokens`` 64000 and a non-empty ``tools`` list (24-25 tools) -- these
  consume script steps. With CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 that
  is ALL it sends: no startup probe, no count_tokens, no GET.
* without that flag, one more streaming call per session: title generation
  (``"tools": []``, JSON-schema output ``{"title": ...}`` in
  ``output_config.format``);
* older CLIs (1.0.x, sample 07) also sent a quota probe (``max_tokens`` 1,
  content "quota", non-streaming) and ``POST /v1/messages/count_tokens``.
  All of these are side calls: they get a trivial answer and consume no step.

It can also be switched "down" (``mode``: ``"refuse"`` closes connections with
no answer, ``"529"`` answers overloaded_error, ``"500"`` answers api_error) to
test the CLI's ``system/api_retry`` behaviour.

Stdlib only, Python 3.9+. Library use::

    fake = FakeAnthropic([{"tool": "Bash", "input": {"command": "ls"}},
                          {"text": "Done."}]).start()
    env = dict(os.environ, **fake.env())   # then run `claude -p ...`
    ...
    fake.stop()

Command line (for demos and e2e runs as a subprocess)::

    python tests/fake_anthropic.py --port 8765 --script script.json [--log requests.jsonl]

Script step forms (each is one assistant message):

* ``{"text": "Done."}`` -- text only, stop_reason end_turn;
* ``{"tool": "Bash", "input": {"command": "..."}}`` -- one tool call,
  stop_reason tool_use (an optional ``"text"`` alongside is sent first);
* ``{"tools": [{"name": "Bash", "input": {...}}, ...]}`` -- parallel calls;
* ``{"error": 529}`` (or 500, 429...) -- answer that HTTP error once; the CLI
  retries and gets the next step;
* any step may carry ``"usage": {"input_tokens": N, "output_tokens": M,
  "cache_read_input_tokens": ..., "cache_creation_input_tokens": ...}``
  and ``"delay": seconds`` (sleep before answering).

When the script runs out, main-loop requests get ``{"text": EXHAUSTED_TEXT}``
so a run always ends.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional

EXHAUSTED_TEXT = "(fake_anthropic: script exhausted)"
SIDE_CALL_TEXT = "ok"
DEFAULT_USAGE = {
    "input_tokens": 100,
    "output_tokens": 20,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
}
MODES = ("ok", "refuse", "529", "500")


def _system_text(body: Dict[str, Any]) -> str:
    """The request's system prompt as one string (it may be a str or blocks)."""
    system = body.get("system")
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n".join(
            str(b.get("text", "")) for b in system if isinstance(b, dict)
        )
    return ""


def is_side_call(path: str, body: Dict[str, Any]) -> bool:
    """True for requests that are not a turn of the main agent loop.

    Observed with CLI 2.1.197: every main-loop turn (and subagent turn) sends
    a non-empty ``tools`` list and ``stream: true``; the side calls (quota
    probe with ``max_tokens`` 1, title/topic generation on a small model,
    token counting) send no tools. So "no tools" is the reliable signal; the
    max_tokens == 1 check covers the quota probe even if it ever grows tools.
    """
    if not path.startswith("/v1/messages") or "count_tokens" in path:
        return True
    if body.get("max_tokens") == 1:
        return True
    return not body.get("tools")


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the owning FakeAnthropic (``self.server.fake``)."""

    protocol_version = "HTTP/1.1"
    server_version = "fake-anthropic/1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.fake.verbose:  # type: ignore[attr-defined]
            sys.stderr.write("fake_anthropic: " + (format % args) + "\n")

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_json(self, status: int, obj: Any, headers: Optional[Dict[str, str]] = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", "req_fake_%d" % int(time.time() * 1000))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        fake = self.server.fake  # type: ignore[attr-defined]
        fake._record("GET", self.path, dict(self.headers), None)
        if fake.mode == "refuse":
            self.close_connection = True
            return
        self._send_json(404, {"type": "error", "error": {"type": "not_found_error", "message": "fake: no such path"}})

    def do_HEAD(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:  # noqa: N802
        fake = self.server.fake  # type: ignore[attr-defined]
        raw = self._read_body()
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"_unparsed": raw.decode("utf-8", "replace")}
        fake._record("POST", self.path, dict(self.headers), body)

        mode = fake.mode
        if mode == "refuse":
            # Drop the connection without a byte of answer.
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.close_connection = True
            return
        if mode in ("529", "500"):
            status = int(mode)
            self._send_json(status, _error_body(status))
            return

        path = self.path.split("?", 1)[0]
        if path == "/v1/messages/count_tokens":
            n = max(1, len(raw) // 4)
            self._send_json(200, {"input_tokens": n})
            return
        if path != "/v1/messages":
            self._send_json(404, {"type": "error", "error": {"type": "not_found_error", "message": "fake: no such path"}})
            return

        model = str(body.get("model") or "claude-fake")
        if is_side_call(self.path, body):
            step: Dict[str, Any] = {"text": side_call_text(body), "usage": {"input_tokens": 8, "output_tokens": 1}}
            if body.get("max_tokens") == 1:
                step = {"text": "", "stop_reason": "max_tokens", "usage": {"input_tokens": 8, "output_tokens": 1}}
        else:
            step = fake._next_step()
        if step.get("delay"):
            time.sleep(float(step["delay"]))
        if "error" in step:
            status = int(step["error"])
            self._send_json(status, _error_body(status))
            return
        message = fake._build_message(step, model)
        if body.get("stream"):
            self._send_sse(message)
        else:
            self._send_json(200, message)

    def _send_sse(self, message: Dict[str, Any]) -> None:
        """Write one message as an SSE stream, shaped like sample 06."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.send_header("request-id", "req_fake_%d" % int(time.time() * 1000))
        self.end_headers()
        self.close_connection = True
        for event in sse_events(message):
            chunk = "event: %s\ndata: %s\n\n" % (event["type"], json.dumps(event))
            self.wfile.write(chunk.encode())
        self.wfile.flush()


def _example_of(schema: Any) -> Any:
    """A minimal value that satisfies a (simple) JSON schema."""
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = kind[0] if kind else None
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {k: _example_of(v) for k, v in props.items()}
    if kind == "array":
        return []
    if kind == "string":
        return "Fake title"
    if kind in ("number", "integer"):
        return 0
    if kind == "boolean":
        return False
    return None


def side_call_text(body: Dict[str, Any]) -> str:
    """The trivial answer to a side call.

    The title-generation call (seen with 2.1.197 when nonessential traffic is
    not disabled) asks for structured output via
    ``output_config.format = {"type": "json_schema", "schema": ...}``; answer
    with a minimal JSON object that fits, else plain "ok".
    """
    fmt = (body.get("output_config") or {}).get("format") or body.get("output_format") or {}
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return json.dumps(_example_of(fmt.get("schema") or {}))
    return SIDE_CALL_TEXT


def _error_body(status: int) -> Dict[str, Any]:
    kind = {
        400: "invalid_request_error",
        401: "authentication_error",
        404: "not_found_error",
        429: "rate_limit_error",
        500: "api_error",
        529: "overloaded_error",
    }.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": "fake_anthropic: %s" % kind}}


def sse_events(message: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The streaming events that deliver ``message`` (a complete Message).

    Order as the real API: message_start (empty content, input usage), a ping,
    per block content_block_start / content_block_delta(s) / content_block_stop,
    then message_delta (stop_reason + output_tokens) and message_stop.
    """
    start_msg = dict(message)
    start_msg["content"] = []
    start_msg["stop_reason"] = None
    start_msg["stop_sequence"] = None
    usage = dict(message["usage"])
    usage["output_tokens"] = 1
    start_msg["usage"] = usage
    events: List[Dict[str, Any]] = [{"type": "message_start", "message": start_msg}, {"type": "ping"}]
    for i, block in enumerate(message["content"]):
        if block["type"] == "text":
            events.append({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}})
            text = block["text"]
            # Two deltas when long enough, to exercise concatenation.
            parts = [text[: len(text) // 2], text[len(text) // 2:]] if len(text) > 8 else [text]
            for part in parts:
                events.append({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": part}})
        elif block["type"] == "tool_use":
            events.append({
                "type": "content_block_start",
                "index": i,
                "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}},
            })
            js = json.dumps(block["input"])
            cut = len(js) // 2
            for part in ("", js[:cut], js[cut:]):
                events.append({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": part}})
        events.append({"type": "content_block_stop", "index": i})
    events.append({
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
        "usage": {"output_tokens": message["usage"]["output_tokens"]},
    })
    events.append({"type": "message_stop"})
    return events


class FakeAnthropic:
    """Scripted Messages API server on 127.0.0.1 (a ThreadingHTTPServer in a thread).

    Attributes tests use: ``port``, ``base_url``, ``requests`` (every request
    as ``{"method", "path", "model", "body", "headers", "side", "time"}``),
    ``main_requests`` (the ones that consumed or would consume a step),
    ``steps_used``, ``mode`` (settable at any time: "ok", "refuse", "529", "500").
    """

    def __init__(self, script: Optional[List[Dict[str, Any]]] = None, port: int = 0,
                 mode: str = "ok", verbose: bool = False, log_path: Optional[str] = None) -> None:
        if mode not in MODES:
            raise ValueError("mode must be one of %s" % (MODES,))
        self.script: List[Dict[str, Any]] = [dict(s) for s in (script or [])]
        self.mode = mode
        self.verbose = verbose
        self.log_path = log_path
        self.requests: List[Dict[str, Any]] = []
        self.steps_used = 0
        self._port = port
        self._lock = threading.Lock()
        self._ids = 0
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._home: Optional[str] = None

    # -- lifecycle -------------------------------------------------------
    def start(self) -> "FakeAnthropic":
        server = ThreadingHTTPServer(("127.0.0.1", self._port), _Handler)
        server.daemon_threads = True
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fake-anthropic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    def __enter__(self) -> "FakeAnthropic":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    # -- environment for the CLI ------------------------------------------
    def env(self, home: Optional[str] = None) -> Dict[str, str]:
        """Env vars that make the real CLI talk only to this server.

        ``HOME`` (and ``CLAUDE_CONFIG_DIR`` under it) is a fresh temp dir
        unless given, so no user config, login or session history leaks in
        or out. Merge over ``os.environ``: the CLI still needs PATH.
        """
        if home is None:
            if self._home is None:
                self._home = tempfile.mkdtemp(prefix="fake-anthropic-home-")
            home = self._home
        return cli_env(self.base_url, home)

    # -- script ------------------------------------------------------------
    def _next_step(self) -> Dict[str, Any]:
        with self._lock:
            if self.steps_used < len(self.script):
                step = self.script[self.steps_used]
                self.steps_used += 1
                return step
            return {"text": EXHAUSTED_TEXT}

    def _new_id(self, prefix: str) -> str:
        with self._lock:
            self._ids += 1
            return "%s_fake%04d" % (prefix, self._ids)

    def _build_message(self, step: Dict[str, Any], model: str) -> Dict[str, Any]:
        """A complete Message (non-streaming shape) for one script step."""
        content: List[Dict[str, Any]] = []
        if step.get("text") is not None and step.get("text") != "":
            content.append({"type": "text", "text": str(step["text"])})
        calls: List[Dict[str, Any]] = []
        if "tool" in step:
            calls.append({"name": step["tool"], "input": step.get("input", {})})
        calls.extend(step.get("tools", []))
        for call in calls:
            content.append({
                "type": "tool_use",
                "id": call.get("id") or self._new_id("toolu"),
                "name": call["name"],
                "input": call.get("input", {}),
            })
        stop_reason = step.get("stop_reason") or ("tool_use" if calls else "end_turn")
        usage = dict(DEFAULT_USAGE)
        usage.update(step.get("usage", {}))
        return {
            "id": self._new_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }

    # -- recording -----------------------------------------------------------
    def _record(self, method: str, path: str, headers: Dict[str, str], body: Optional[Dict[str, Any]]) -> None:
        entry = {
            "method": method,
            "path": path,
            "model": (body or {}).get("model"),
            "body": body,
            "headers": headers,
            "side": method != "POST" or is_side_call(path, body or {}),
            "time": time.time(),
        }
        with self._lock:
            self.requests.append(entry)
        if self.log_path:
            with self._lock, open(self.log_path, "a") as fh:
                fh.write(json.dumps(entry) + "\n")

    @property
    def main_requests(self) -> List[Dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if not r["side"]]

    def snapshot(self) -> List[Dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self.requests)


def cli_env(base_url: str, home: str) -> Dict[str, str]:
    """The env vars the Claude Code CLI needs to run offline against ``base_url``.

    * ANTHROPIC_BASE_URL / ANTHROPIC_API_KEY: use the fake; any key works.
      (ANTHROPIC_AUTH_TOKEN and CLAUDE_CODE_OAUTH_TOKEN are blanked so a
      developer's own login cannot win over the key.)
    * CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC, DISABLE_AUTOUPDATER,
      DISABLE_TELEMETRY, DISABLE_ERROR_REPORTING: no telemetry, update checks
      or error reports to hosts that are unreachable here.
    * NO_PROXY: the CLI honours HTTP(S)_PROXY even for 127.0.0.1.
    * IS_SANDBOX=1: as root it refuses --dangerously-skip-permissions otherwise.
    * HOME / CLAUDE_CONFIG_DIR: a temp dir, so no user config leaks.
    * TMPDIR: ``<home>/tmp``; the CLI keeps Bash-tool task output under
      ``$TMPDIR/claude-<uid>/`` and ``$TMPDIR/claude-XXXX-cwd`` files, which
      would otherwise pile up in /tmp.
    """
    tmp = os.path.join(home, "tmp")
    os.makedirs(tmp, exist_ok=True)
    return {
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": "x",
        "ANTHROPIC_AUTH_TOKEN": "",
        "CLAUDE_CODE_OAUTH_TOKEN": "",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "IS_SANDBOX": "1",
        "HOME": home,
        "CLAUDE_CONFIG_DIR": os.path.join(home, ".claude"),
        "TMPDIR": tmp,
    }


def main(argv: Optional[List[str]] = None) -> int:
    """Run the fake in the foreground until SIGINT/SIGTERM."""
    import signal

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0, help="0 = pick a free port (printed)")
    ap.add_argument("--script", help="JSON file: a list of steps")
    ap.add_argument("--mode", default="ok", choices=MODES)
    ap.add_argument("--log", help="append every request as a JSON line here")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    script: List[Dict[str, Any]] = []
    if args.script:
        with open(args.script) as fh:
            script = json.load(fh)
    fake = FakeAnthropic(script, port=args.port, mode=args.mode, verbose=args.verbose, log_path=args.log).start()
    print("fake_anthropic listening on %s" % fake.base_url, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
