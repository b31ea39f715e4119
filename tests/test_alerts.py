"""The shipped alert rules: valid, and each fires and stays quiet in its promtool unit test."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROMTOOL = ROOT / ".tools" / "promtool"


def promtool(*args: str, stdin: str | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    if not PROMTOOL.exists():
        pytest.fail(f"promtool is not at {PROMTOOL}: run `make test` (or `make install-promtool`)")
    return subprocess.run([str(PROMTOOL), *args], input=stdin, capture_output=True, text=True, cwd=cwd, timeout=60)


def test_the_alert_rules_are_valid():
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


def test_every_alert_rule_fires_and_stays_quiet_in_its_unit_test():
    result = promtool("test", "rules", "alerts_test.yml", cwd=ROOT / "tests")
    assert result.returncode == 0, result.stdout + result.stderr
    tested = (ROOT / "tests" / "alerts_test.yml").read_text()
    for line in (ROOT / "alerts.yml").read_text().splitlines():
        if line.strip().startswith("- alert:"):
            name = line.split(":", 1)[1].strip()
            assert tested.count(f"alertname: {name}") >= 2, f"{name} needs a firing and a quiet case"
