"""What an operator runs: status, metrics, the manual trigger, the dashboard, requeue, the demo."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis
from bson import ObjectId
from rq import Worker
from rq.job import Job

from embedded.processes import free_port, msgstatus_argv, wait_for_port
from jobs.queueing import JOB_FUNCTION, follow_up_id, job_id
from tests import factories
from tests.waiting import wait_until


def status(service, *args):
    result = service.run("status", *args)
    return result.returncode, result.stdout


def test_status_is_unhealthy_without_a_watcher_and_says_why(service):
    code, out = status(service)
    assert code == 1
    assert "UNHEALTHY" in out and "no active watcher" in out
    code, out = status(service, "--json")
    report = json.loads(out)
    assert code == 1 and report["healthy"] is False and report["watcher"]["mode"] == "none"


def watching(service) -> bool:
    """The watcher is active and both its streams have saved a token."""
    report = json.loads(status(service, "--json")[1])
    return report["watcher"]["mode"] == "active" and all(
        stream["token_age_seconds"] is not None for stream in report["streams"].values())


def test_status_is_healthy_with_an_active_watcher_and_reports_queue_and_streams(service, client, receiver):
    service.spawn("watch")
    service.spawn("work")
    service.spawn("schedule")
    db = client[service.database]
    wait_until(lambda: status(service)[0] == 0, 30, "a healthy status")
    mid = factories.message(db)
    factories.communication(db, mid)
    factories.message(db)  # never gets a log: stays waiting
    wait_until(lambda: db.support_messages.count_documents({"delivered": True}) == 1, 20, "the delivery")
    code, out = status(service, "--json")
    report = json.loads(out)
    assert code == 0 and report["healthy"] is True and report["watcher"]["mode"] == "active"
    assert report["messages"]["tracked_waiting"] == 1
    assert report["messages"]["oldest_waiting_age_seconds"] >= 0
    assert report["streams"]["communications"]["last_event_age_seconds"] is not None
    assert report["metrics"]['msgstatus_messages_decided_total{delivered="true"}'] == 1
    assert "health:    OK" in status(service)[1]


def test_status_in_sweep_only_mode_needs_no_watcher(service):
    service.spawn("work", SWEEP_ONLY="1")
    service.spawn("schedule", SWEEP_ONLY="1")
    wait_until(lambda: json.loads(status(service, "--json")[1])["sweep"]["last_age_seconds"] is not None, 20,
               "a sweep")
    code, _ = status(service, "--json")
    assert code == 1
    result = service.run("status", "--json", SWEEP_ONLY="1")
    assert result.returncode == 0 and json.loads(result.stdout)["sweep_only"] is True


def test_status_is_unhealthy_when_sweeps_stop_and_says_why(service):
    every = {"SWEEP_INTERVAL": "1"}  # sweeps count as stopped after three intervals

    def check(*args: str) -> subprocess.CompletedProcess[str]:
        return service.run("status", *args, **every)

    # Given a watcher but no scheduler: no sweep has run
    service.spawn("watch", **every)
    wait_until(lambda: watching(service), 30, "an active watcher")
    result = check()
    assert result.returncode == 1
    assert "no sweep has run yet (every 1s): `msgstatus schedule` or every worker is down" in result.stdout
    # When a scheduler and a worker run, the sweeps run and the service is healthy
    worker, scheduler = service.spawn("work", **every), service.spawn("schedule", **every)
    wait_until(lambda: check().returncode == 0, 30, "a healthy status")
    assert "sweep:     every 1s, last " in check().stdout
    # Then, once both are gone, the sweeps are seen to have stopped
    for process in (worker, scheduler):
        process.terminate()
        process.wait(15)
    stale = wait_until(lambda: (r := check("--json", "--max-sweep-age", "0")).returncode == 1 and r, 30,
                       "the sweeps to be seen stopped")
    assert any(p.startswith("no sweep has run for ") for p in json.loads(stale.stdout)["problems"])


def test_status_lists_failed_jobs_by_message_id(service, client, receiver):
    db = client[service.database]
    mid = factories.message(db)
    cid = factories.communication(db, mid, account_id=None)
    service.spawn("work")
    assert service.run("trigger").returncode == 0
    wait_until(lambda: json.loads(status(service, "--json")[1])["queue"]["failed"] == 1, 20, "a failed job")
    report = json.loads(status(service, "--json")[1])
    assert report["queue"]["failed_messages"] == [str(mid)] and report["messages"]["parked"] == 1
    # Once the data is fixed, requeue puts it back and it is delivered.
    db.communications.update_one({"_id": cid}, {"$set": {"account_id": ObjectId()}})
    result = service.run("requeue", "--failed")
    assert json.loads(result.stdout)["requeued"] == 1
    wait_until(lambda: db.support_messages.find_one({"_id": mid}).get("delivered") is True, 20, "the requeued job")


def test_status_lists_a_message_once_when_its_job_and_its_follow_up_both_failed(service, db, queue):
    # Given a message whose log has bad data, with its own job and a follow-up job queued
    mid = factories.message(db)
    factories.communication(db, mid, account_id=None)
    for jid in (job_id(str(mid)), follow_up_id(str(mid))):
        queue.enqueue(JOB_FUNCTION, str(mid), job_id=jid)
    # When a worker has run both
    assert service.run("work", "--burst").returncode == 0
    # Then both failures are counted and the message is listed once
    report = json.loads(status(service, "--json")[1])
    assert report["queue"]["failed"] == 2 and report["queue"]["failed_messages"] == [str(mid)]


def api_server(service, host: str = "127.0.0.1", **env):
    port = free_port()
    process = service.spawn("api", "--host", host, "--port", str(port), **env)
    wait_for_port("127.0.0.1", port, 30, process)
    return f"http://127.0.0.1:{port}"


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in metrics")


def test_metrics_counters_move_after_a_delivery(service, client, receiver):
    url = api_server(service)
    before = httpx.get(f"{url}/metrics").text
    assert metric(before, 'msgstatus_messages_decided_total{delivered="true"}') == 0
    service.spawn("watch")
    service.spawn("work")
    db = client[service.database]
    wait_until(lambda: watching(service), 30, "an active watcher")
    mid = factories.message(db)
    factories.communication(db, mid)
    delivered = 'msgstatus_messages_decided_total{delivered="true"}'
    wait_until(lambda: metric(httpx.get(f"{url}/metrics").text, delivered) == 1, 20, "the delivered counter")
    after = httpx.get(f"{url}/metrics").text
    assert metric(after, 'msgstatus_change_events_total{stream="communications"}') >= 1
    assert metric(after, "msgstatus_insert_to_emit_seconds_count") == 1
    assert metric(after, 'msgstatus_insert_to_emit_seconds_bucket{le="+Inf"}') == 1
    assert "# TYPE msgstatus_insert_to_emit_seconds histogram" in after


def test_the_manual_trigger_is_off_without_qm_hooks(service):
    url = api_server(service)
    response = httpx.post(f"{url}/api/trigger/conversations/support-message-status")
    assert response.status_code == 404 and "QM_HOOKS" in response.json()["error"]


def test_the_manual_trigger_with_qm_hooks_runs_a_sweep_and_says_what_it_enqueued(service, client, receiver):
    db = client[service.database]
    mids = [factories.message(db) for _ in range(3)]
    for mid in mids:
        factories.communication(db, mid)
    url = api_server(service, QM_HOOKS="true")
    response = httpx.post(f"{url}/api/trigger/conversations/support-message-status")
    assert response.status_code == 200
    assert response.json()["sweep"]["enqueued"] == 3
    r = redis.Redis.from_url(service.redis_url)
    waiting = r.lrange("rq:queue:support_message_status_queue", 0, -1)
    assert len(waiting) == 1  # arrived together: one batch job for the three
    assert sorted(Job.fetch(waiting[0].decode(), connection=r).args[0]) == sorted(str(m) for m in mids)
    r.close()


def test_the_trigger_beyond_loopback_needs_a_token(service):
    result = service.run("api", "--host", "0.0.0.0", "--port", str(free_port()), QM_HOOKS="true")
    assert result.returncode == 2 and "TRIGGER_TOKEN" in result.stderr
    port = free_port()
    process = service.spawn("api", "--host", "0.0.0.0", "--port", str(port), QM_HOOKS="true", TRIGGER_TOKEN="t0k")
    wait_for_port("127.0.0.1", port, 30, process)
    path = f"http://127.0.0.1:{port}/api/trigger/conversations/support-message-status"
    assert httpx.post(path).status_code == 401
    assert httpx.post(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.post(path, headers={"Authorization": "Bearer t0k"}).status_code == 200


@pytest.mark.parametrize("auth", [False, True])
def test_the_dashboard_answers_on_loopback(service, auth):
    port = free_port()
    env = {"DASHBOARD_USER": "ops", "DASHBOARD_PASSWORD": "pw"} if auth else {}
    process = service.spawn("dashboard", "--port", str(port), **env)
    wait_for_port("127.0.0.1", port, 30, process)
    url = f"http://127.0.0.1:{port}/"
    if auth:
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, auth=("ops", "wrong")).status_code == 401
        response = httpx.get(url, auth=("ops", "pw"), follow_redirects=True)
    else:
        response = httpx.get(url, follow_redirects=True)
    assert response.status_code == 200 and "RQ" in response.text
    with open(f"/proc/{process.pid}/net/tcp") as tcp:
        listening = [line.split()[1] for line in tcp.readlines()[1:] if line.split()[3] == "0A"]
    assert f"0100007F:{port:04X}" in listening  # 127.0.0.1, not 0.0.0.0


def test_status_and_metrics_tell_messages_with_their_log_from_those_still_waiting_for_one(service, db, receiver):
    # Given three messages two hours old whose logs never came, and a new one whose log has not come yet
    old = datetime.now(UTC) - timedelta(hours=2)
    for _ in range(3):
        factories.message(db, created=old)
    factories.message(db)
    # and one whose log came, but whose emits fail (the socket service is down)
    receiver.behaviour.status = 503
    failing = factories.message(db)
    factories.communication(db, failing)
    port = free_port()
    service.spawn("watch")
    service.spawn("work", "--simple")
    service.spawn("schedule")
    wait_for_port("127.0.0.1", port, 30, service.spawn("api", "--port", str(port)))
    wait_until(lambda: receiver.requests >= 1, 30, "a failed emit")
    # When an operator asks, Then status is healthy and tells the two kinds apart, each with its age
    report = wait_until(lambda: (r := json.loads(status(service, "--json")[1]))["healthy"] and r, 30, "health")
    m = report["messages"]
    assert (m["with_log"], m["waiting_for_log"]) == (1, {"within": 1, "past": 3})
    assert m["oldest_with_log_age_seconds"] < 600 and m["oldest_waiting_for_log_age_seconds"] >= 7200
    assert "with their log, undecided: 1" in status(service)[1]
    # and so do the metrics, which the alert on undecided messages reads (tests/alerts_test.yml)
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert metric(text, "msgstatus_undecided_with_log_messages") == 1
    assert metric(text, 'msgstatus_waiting_for_log_messages{horizon="past"}') == 3
    assert metric(text, 'msgstatus_waiting_for_log_messages{horizon="within"}') == 1
    assert 0 < metric(text, "msgstatus_oldest_undecided_with_log_age_seconds") < 600
    assert metric(text, "msgstatus_oldest_waiting_for_log_age_seconds") >= 7200


def test_a_disabled_service_stays_up_idle_and_says_so_in_its_log_and_in_status(service, db):
    # Given the seed's switch off, When every long-running process starts
    off = {"QM_SUPPORT_MESSAGE_STATUS": "false"}
    processes = {name: service.spawn(*args, **off) for name, args in
                 {"watcher": ["watch"], "worker": ["work", "--workers", "2"], "scheduler": ["schedule"],
                  "run": ["run", "--api-port", "0"]}.items()}
    # Then each says in its log that it is idle, and why
    for name, log in zip(processes, service.logs, strict=True):
        wait_until(lambda log=log: "is idle" in log.read_text(), 30, f"the {name}'s idle line")
        assert "QM_SUPPORT_MESSAGE_STATUS" in log.read_text()
    # and stays up (a supervisor that restarts what exits would restart it in a loop), doing nothing:
    assert {name: p.poll() for name, p in processes.items()} == dict.fromkeys(processes)
    r = redis.Redis.from_url(service.redis_url)
    assert Worker.all(connection=r) == [] and list(r.scan_iter("rq:scheduler*")) == []
    r.close()
    # status says it is disabled, without counting the missing watcher and sweeps as problems
    result = service.run("status", "--json", **off)
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["healthy"] and "QM_SUPPORT_MESSAGE_STATUS" in report["disabled"]
    shown = service.run("status", **off).stdout.splitlines()
    assert shown[:2] == ["health:    OK", f"disabled:  {report['disabled']}: every process stays up, idle"]
    # and the metrics say so, which keeps the no-sweeps and no-watcher alerts quiet (tests/alerts_test.yml)
    port = free_port()
    wait_for_port("127.0.0.1", port, 30, service.spawn("api", "--port", str(port), **off))
    assert "\nmsgstatus_enabled 0\n" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
    # and SIGTERM stops each cleanly
    service.stop_all()
    assert {name: p.returncode for name, p in processes.items()} == dict.fromkeys(processes, 0)


def test_the_demo_prints_live_lines_and_a_summary():
    result = subprocess.run(
        msgstatus_argv("demo", "--seconds", "6", "--rate", "4"), capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert "after the log's insert" in result.stdout
    assert "| messages written" in result.stdout and "| latency p50" in result.stdout
    assert "msgstatus_messages_decided_total{delivered=\"true\"}" in result.stdout

