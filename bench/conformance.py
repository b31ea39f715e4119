"""``make conformance``: MongoDB's unified specification tests, as pymongo runs them, against the embedded server.

The spec files and pymongo's runner ship in pymongo's source distribution on the
package index; the version is the one ``requirements.lock`` pins. It is
downloaded once into ``.tools/``, and its test suites for change streams,
transactions, the convenient transactions API and retryable writes run against
``msgstatus mongo --enable-test-commands`` (a one-node replica set with fail
points). Writes bench/conformance-results.md (``--out``): per suite, passed,
failed and skipped (skips are the runner's own, with its reasons), and the
failures grouped by their first error line.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.report import stamp
from embedded.processes import free_port, start_server, stop

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / ".tools"

SUITES = {
    "change streams": "change_streams/unified",
    "transactions": "transactions/unified",
    "convenient transactions API": "transactions-convenient-api/unified",
    "retryable writes": "retryable_writes/unified",
}
"""Suite -> its spec directory under pymongo's test/."""

UNSUPPORTED = {
    "unsupported wire command: collMod": "pre- and post-images (`collMod` with `changeStreamPreAndPostImages`): "
                                         "mongoeco keeps no copy of a document before its change",
    "renameCollection only supports namespaces in the current database": "renaming a collection into another "
                                                                         "database: mongoeco renames within one",
    "'updateDescription' not found": "`updateDescription` in update events: mongoeco's events carry none",
    "no replica set members match selector \"secondary": "reading from a secondary: a one-node replica set has "
                                                           "none (the driver finds no server to send to)",
}
"""Failure causes that are features the embedded server does not offer, with why: their tests count apart."""

UNSUPPORTED_TESTS = {
    "TestUnifiedChangeStreamsShowExpandedEvents": "expanded events (`showExpandedEvents`: `create`, `createIndexes`, "
                                                  "`dropIndexes`, `modify`, `rename`): mongoeco publishes no event for "
                                                  "these commands, so the tests wait for one until they time out",
}
"""Test classes of a feature the embedded server does not offer whose failure names no cause (a time-out)."""

MODULE = """import sys
sys.path[0:0] = [""]
from test import unittest
from test.unified_format import generate_test_classes, get_test_path
globals().update(generate_test_classes(get_test_path("{spec}"), module=__name__))
"""
"""A test module of one suite (pymongo's own modules put two suites in one, whose class names collide)."""


@dataclass
class Suite:
    name: str
    passed: int = 0
    failed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    causes: Counter[str] = field(default_factory=Counter)
    unsupported: Counter[str] = field(default_factory=Counter)

    @property
    def applicable(self) -> int:
        return self.passed + self.failed


def pinned_pymongo() -> str:
    found = re.search(r"^pymongo==(\S+)$", (ROOT / "requirements.lock").read_text(), re.M)
    if not found:
        raise SystemExit("requirements.lock pins no pymongo")
    return found.group(1)


def source(version: str) -> Path:
    """pymongo's source tree of ``version`` under .tools/, downloaded from the package index once."""
    tree = TOOLS / f"pymongo-{version}"
    if not (tree / "test" / "unified_format.py").exists():
        TOOLS.mkdir(exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps",
                        f"pymongo=={version}", "-d", str(TOOLS)], check=True)
        with tarfile.open(TOOLS / f"pymongo-{version}.tar.gz") as archive:
            archive.extractall(TOOLS, filter="data")
    return tree


def run_suite(tree: Path, port: int, name: str, spec: str, junit: Path) -> Suite:
    env = {**os.environ, "DB_IP": "127.0.0.1", "DB_PORT": str(port)}
    module = tree / "test" / f"test_msgstatus_{spec.split('/')[0].replace('-', '_')}.py"
    module.write_text(MODULE.format(spec=spec))
    # pymongo's own pytest configuration wants plugins this project does not install: none is read.
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.devnull, "--rootdir", ".",
            str(module.relative_to(tree)), "--timeout", "60", f"--junitxml={junit}"]
    subprocess.run(args, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    suite = Suite(name)
    for case in ET.parse(junit).getroot().iter("testcase"):
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        skipped = case.find("skipped")
        if skipped is not None:
            suite.skipped[(skipped.get("message") or "skipped").splitlines()[0][:120]] += 1
        elif failure is not None:
            cause = _cause(failure.get("message") or failure.text or "")
            feature = next((why for pattern, why in UNSUPPORTED.items() if pattern.lower() in cause.lower()),
                           UNSUPPORTED_TESTS.get((case.get("classname") or "").rsplit(".", 1)[-1]))
            if feature is not None:
                suite.unsupported[feature] += 1
            else:
                suite.failed += 1
                suite.causes[cause] += 1
        else:
            suite.passed += 1
    return suite


def _cause(message: str) -> str:
    first = message.strip().splitlines()[0] if message.strip() else "no message"
    first = re.sub(r", full error: .*", "", first)
    return re.sub(r"ObjectId\('[0-9a-f]+'\)|\d{6,}", "…", first)[:160]


def report(suites: list[Suite], version: str) -> str:
    lines = [
        "# Conformance: MongoDB's unified spec tests against the embedded server", "",
        f"{stamp()}. pymongo {version}'s runner and spec files (its source distribution), against `msgstatus mongo "
        "--enable-test-commands`. Rerun: `make conformance`. Applicable: the tests that ran, but those of a "
        "feature the embedded server does not offer (counted apart, with why). Skipped: tests the runner itself "
        "leaves out for this server (its version, topology or features), with the runner's reason.", "",
        "| suite | applicable | passed | failed | passed of applicable | unsupported feature | skipped |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for suite in suites:
        share = f"{100 * suite.passed / suite.applicable:.0f}%" if suite.applicable else "-"
        lines.append(f"| {suite.name} | {suite.applicable} | {suite.passed} | {suite.failed} | {share} | "
                     f"{sum(suite.unsupported.values())} | {sum(suite.skipped.values())} |")
    for suite in suites:
        lines += ["", f"## {suite.name}", "", "Failures by cause:", ""]
        lines += [f"- {count}x {cause}" for cause, count in suite.causes.most_common()] or ["- none"]
        lines += ["", "Unsupported features (not counted as applicable):", ""]
        lines += [f"- {count}x {why}" for why, count in suite.unsupported.most_common()] or ["- none"]
        lines += ["", "Skipped by the runner:", ""]
        lines += [f"- {count}x {reason}" for reason, count in suite.skipped.most_common()] or ["- none"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "conformance-results.md")
    args = parser.parse_args()
    version = pinned_pymongo()
    tree = source(version)
    port = free_port()
    server = start_server(["mongo", "--port", str(port), "--enable-test-commands"], "127.0.0.1", port,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        suites = []
        for name, spec in SUITES.items():
            print(f"conformance: {name} ...", flush=True)
            suites.append(run_suite(tree, port, name, spec, TOOLS / f"conformance-{port}.xml"))
            print(f"conformance: {name}: {suites[-1].passed} passed, {suites[-1].failed} failed, "
                  f"{sum(suites[-1].unsupported.values())} of unsupported features", flush=True)
    finally:
        stop(server)
    text = report(suites, version)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
