"""The benchmark script runs. Its figures are not judged here: a benchmark is
not a test, and timing on a shared CI machine proves nothing."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_benchmark_runs_and_prints_its_table():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| Measure | Ours | Naive / reference | Naive ÷ ours |" in proc.stdout
    assert "Machine: " in proc.stdout
    for row in ("Counted requests per poll cycle, 0 pending tasks", "Worker exit → tasks.md shows Completed",
                "SIGHUP → poll", "Idle CPU", "tasks.md parse / render, 10,000 entries",
                "status.py start-up", "view_worker"):
        assert row in proc.stdout, row
