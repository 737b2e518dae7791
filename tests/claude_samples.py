"""The real Claude CLI transcripts in tests/data/claude, for tests.

They are data, real CLI output of many versions (tests/data/claude/SOURCES.txt
says where each came from), kept in the repository so every test runs on a
fresh clone.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

SAMPLES = Path(__file__).resolve().parent / "data" / "claude"


def needs_samples(test):
    """Kept for the callers: the samples ship with the tests, so nothing skips."""
    return test


def sample_files() -> List[Path]:
    files = sorted(list(SAMPLES.glob("*.jsonl")) + list(SAMPLES.glob("*.ndjson")))
    # An empty list would turn the parametrized tests into silent skips.
    assert files, "no sample transcripts in {}".format(SAMPLES)
    return files


def sample(prefix: str) -> Path:
    (path,) = [p for p in sample_files() if p.name.startswith(prefix)]
    return path
