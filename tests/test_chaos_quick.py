"""The chaos run's short version: three kills under steady traffic, and every invariant holds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.serial  # measures time or CPU: run alone (make test)


def test_killing_the_watcher_twice_and_a_worker_mid_job_loses_nothing_and_decides_nothing_twice(tmp_path):
    out = tmp_path / "chaos.md"
    result = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = out.read_text()
    for fault in ("SIGKILL the watcher |", "SIGKILL the watcher mid-batch |", "SIGKILL a worker mid-job |"):
        assert fault in report
    for invariant in ("with a log but undecided | 0 |", "decided twice | 0 |", "emitted for after the decision | 0 |",
                      "other writers' metadata lost | 0 |", "claims past their lease | 0 |",
                      "processes that died unkilled | 0 |"):
        assert invariant in report
