"""The benchmark's quick version runs end to end, so that the benchmark cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Only its report's shape is asserted, none of its figures: it runs beside the other tests.


def test_the_quick_benchmark_compares_both_systems_and_writes_its_report(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bench.compare", "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "results.md").read_text()
    for heading in ("## Latency", "## Backlog drain", "## Idle", "## One sweep versus collection size",
                    "## Database work per message"):
        assert heading in report
    assert "| msgstatus | 10/s | 30/30 |" in report and "| polling | 10/s | 30/30 |" in report
    assert "| least event-driven | getMore, update |" in report
