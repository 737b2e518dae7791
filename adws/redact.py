"""Secret redaction shared by the daemon and the tools.

A worker's transcript, its BLOCKED.md and its stderr are written by an agent
that may have printed a token it found (in a file, in `env`, in a tool's
error). Whatever the coordinator or a tool shows a person, posts to GitHub or
writes to the journal goes through `redact` first. It lives here, not in the
daemon, so that tools/view_worker.py can use the same patterns without
importing the daemon.
"""
from __future__ import annotations

import os
import re
from typing import Mapping, Optional

MARK = "[redacted]"

# Token shapes with a recognisable prefix: GitHub classic and fine-grained
# tokens, Anthropic API and OAuth keys. Prefixed shapes are safe to match
# anywhere; an unprefixed secret is only caught through its variable below.
# Eight characters after the prefix are enough: views clip long lines, and
# the front half of a token cut at 60 columns is still worth hiding.
_SECRET_PATTERNS = [
    re.compile(r"(?<![A-Za-z0-9])gh[pousr]_[A-Za-z0-9]{8,}"),
    re.compile(r"(?<![A-Za-z0-9])github_pat_[A-Za-z0-9_]{8,}"),
    re.compile(r"(?<![A-Za-z0-9])sk-ant-[A-Za-z0-9_\-]{8,}"),
]

# Variables whose values are secrets, by name and by name shape. The values
# come from the environment of the process that redacts: the daemon knows its
# own GH_TOKEN; a viewer run from a shell knows that shell's.
_SECRET_ENV = ("GH_TOKEN", "GITHUB_TOKEN", "GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN",
               "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN",
               "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|PRIVATE_KEY)", re.I)
_MIN_VALUE = 8  # shorter values (the tests' GH_TOKEN=x) would redact ordinary words


def secret_values(env: Optional[Mapping[str, str]] = None) -> list:
    """Values of the secret-looking variables in `env`, longest first (so a
    value that contains another is replaced whole)."""
    env = os.environ if env is None else env
    values = {v for k, v in env.items()
              if (k in _SECRET_ENV or _SECRET_NAME.search(k)) and len(v) >= _MIN_VALUE}
    return sorted(values, key=len, reverse=True)


def redact(text: str, env: Optional[Mapping[str, str]] = None) -> str:
    """Replace tokens and the values of secret variables with [redacted]."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(MARK, text)
    for value in secret_values(env):
        text = text.replace(value, MARK)
    return text


def redact_bytes(data: bytes, env: Optional[Mapping[str, str]] = None) -> bytes:
    """`redact` for raw log lines; bytes that are not UTF-8 pass through unchanged."""
    text = data.decode("utf-8", "surrogateescape")
    clean = redact(text, env)
    return data if clean == text else clean.encode("utf-8", "surrogateescape")
