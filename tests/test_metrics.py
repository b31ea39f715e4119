"""/metrics: one meaning per name, every counted series exported, clean for promtool."""

from __future__ import annotations

import ast
from pathlib import Path

import httpx
import redis

from core import metrics
from tests import factories
from tests.test_alerts import promtool
from tests.test_operations import api_server
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "jobs", "watcher", "embedded", "msgstatus")


def samples(text: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def test_undelivered_messages_are_decisions_and_bad_data_is_a_job_failure_told_apart(service, db, queue, receiver):
    # Given 30 messages: 18 delivered, 9 undelivered (success: false), 3 whose log has no account_id
    url = api_server(service)
    service.spawn("watch")
    service.spawn("work")
    mids = [factories.message(db) for _ in range(30)]
    for i, mid in enumerate(mids):
        if i < 18:
            factories.communication(db, mid)
        elif i < 27:
            factories.communication(db, mid, success=False)
        else:
            factories.communication(db, mid, account_id=None)
    # When they are decided or fail
    wait_until(lambda: db.support_messages.count_documents({"_id": {"$in": mids}, "delivered": {"$exists": True}})
               == 27 and queue.failed_job_registry.count == 3, 60, "27 decisions and 3 failed jobs")
    r = queue.connection
    wait_until(lambda: metrics.value(r, metrics.DECIDED, delivered="true") == 18
               and metrics.value(r, metrics.DECIDED, delivered="false") == 9
               and metrics.value(r, metrics.JOB_FAILURES, kind="bad_data") == 3, 10, "the counts")
    text = httpx.get(f"{url}/metrics").text
    exported = samples(text)
    # Then the undelivered ones are decisions, the bad data job failures, and the two are told apart
    assert exported['msgstatus_messages_decided_total{delivered="true"}'] == 18
    assert exported['msgstatus_messages_decided_total{delivered="false"}'] == 9
    assert exported['msgstatus_job_failures_total{kind="bad_data"}'] == 3
    assert exported['msgstatus_job_failures_total{kind="outside"}'] == 0
    assert exported["msgstatus_failed_jobs"] == 3 and exported["msgstatus_parked_messages"] == 3
    assert exported['msgstatus_watchers{role="active"}'] == 1
    assert exported["msgstatus_oldest_undecided_message_age_seconds"] > 0  # the 3 parked ones
    # and every series the processes counted is exported
    assert set(metrics.read(r)) <= set(exported) | {k for k in metrics.read(r) if k.endswith('_bucket{le="+Inf"}')}
    # and promtool finds nothing to say about the output
    result = promtool("check", "metrics", stdin=text)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_every_metric_the_code_counts_is_declared_once_and_exported():
    declared = {name for name, value in vars(metrics).items() if isinstance(value, metrics.Metric)}
    counted: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                        node.func.attr in ("inc", "observe") and isinstance(node.func.value, ast.Attribute) and \
                        isinstance(node.func.value.value, ast.Name) and node.func.value.value.id == "metrics":
                    counted.add(node.func.value.attr)
                if path.name != "metrics.py" and isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and node.func.attr in ("Counter", "Gauge", "Histogram") and \
                        isinstance(node.func.value, ast.Name) and node.func.value.id == "metrics":
                    raise AssertionError(f"{path}: a metric declared outside core/metrics.py")
    assert counted and counted <= declared, counted - declared
    text = metrics.render({}, {})
    for metric in metrics.DECLARED:
        assert f"# TYPE {metric.name} {metric.kind}" in text
    assert len({m.name for m in metrics.DECLARED}) == len(metrics.DECLARED)


def test_watcher_roles_count_the_active_one_and_the_standby(service):
    url = api_server(service)
    service.spawn("watch")
    service.spawn("watch")
    tokens = {'msgstatus_stream_token_age_seconds{stream="communications"}',
              'msgstatus_stream_token_age_seconds{stream="messages"}'}
    exported = wait_until(
        lambda: (found := samples(httpx.get(f"{url}/metrics").text)).get('msgstatus_watchers{role="standby"}') == 1
        and tokens <= set(found) and found, 30, "one active watcher with its streams' tokens, and one standby")
    assert exported['msgstatus_watchers{role="active"}'] == 1
    assert exported['msgstatus_watchers{role="sweep_only"}'] == 0
    assert all(exported[name] < 60 for name in tokens)


def test_a_sweep_only_deployment_reports_its_scheduler_in_the_sweep_only_role(service):
    url = api_server(service)
    service.spawn("schedule", SWEEP_ONLY="1")
    service.spawn("work", SWEEP_ONLY="1")
    wait_until(lambda: samples(httpx.get(f"{url}/metrics").text).get('msgstatus_watchers{role="sweep_only"}') == 1,
               30, "the sweep-only role")
    r = redis.Redis.from_url(service.redis_url)
    try:
        wait_until(lambda: metrics.value(r, metrics.SWEEPS) >= 1, 20, "a sweep")
    finally:
        r.close()
    exported = samples(httpx.get(f"{url}/metrics").text)
    assert exported["msgstatus_sweep_duration_seconds_count"] >= 1
    assert exported["msgstatus_sweep_interval_seconds"] == 5
