"""The real Claude CLI transcripts in ../shared/samples/claude, for tests.

shared/ sits beside the project root on developers' machines and in CI.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import pytest

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples" / "claude"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason="shared/samples/claude is not beside the project")


def sample_files() -> List[Path]:
    if not SAMPLES.is_dir():
        return []
    return sorted(list(SAMPLES.glob("*.jsonl")) + list(SAMPLES.glob("*.ndjson")))


def sample(prefix: str) -> Path:
    if not SAMPLES.is_dir():
        pytest.skip("shared/samples/claude is not beside the project")
    (path,) = [p for p in sample_files() if p.name.startswith(prefix)]
    return path
