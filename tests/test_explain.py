"""`msgstatus explain` and GET /api/messages/<id>: why a message has its tick, or why not yet."""

from __future__ import annotations

import json

import httpx
from bson import ObjectId

from jobs.messages import CLAIM, HOLD
from jobs.queueing import Enqueuer, job_id
from tests import factories
from tests.test_operations import api_server
from tests.waiting import wait_until


def explain(service, message_id) -> tuple[int, dict]:
    result = service.run("explain", str(message_id), "--json")
    return result.returncode, json.loads(result.stdout)


def explain_text(service, message_id) -> tuple[int, str]:
    result = service.run("explain", str(message_id))
    return result.returncode, result.stdout


def test_a_message_waiting_for_its_log_says_so_and_that_the_next_sweep_looks(service, db):
    mid = factories.message(db)
    code, report = explain(service, mid)
    assert code == 1
    assert report["tracked"] is True and report["communications"] == [] and report["decision"] is None
    assert report["summary"] == "waiting for its communication log (none names it yet)"
    # with no scheduler running, explain says the sweep will not come
    assert report["sweep"].startswith("at the next sweep (every 5s), but no sweep has run yet (every 5s)")
    service.spawn("work")
    service.spawn("schedule")
    wait_until(lambda: explain(service, mid)[1]["sweep"] == "at the next sweep (every 5s)", 30, "a sweep")


def test_a_message_outside_the_seeds_query_names_the_conditions_that_leave_it_out(service, db):
    mid = factories.message(db, sender_type="agent", source="chat")
    code, report = explain(service, mid)
    assert code == 1 and report["tracked"] is False
    assert report["left_out_by"] == [
        "sender_type is 'agent', not 'conversation'", "source is 'chat', not 'sms' or 'email'"]
    assert report["sweep"] == "never: it is not tracked"


def test_a_decided_message_shows_its_decision_and_the_log_that_made_it(service, db, queue, receiver):
    mid = factories.message(db)
    cid = factories.communication(db, mid)
    service.spawn("work")
    Enqueuer(queue).enqueue(str(mid))
    wait_until(lambda: db.support_messages.find_one({"_id": mid, "delivered": True}), 20, "the decision")
    code, report = explain(service, mid)
    assert code == 0
    assert report["decision"]["delivered"] is True and report["decision"]["communication_id"] == str(cid)
    assert report["decision"]["when"] is not None
    assert [(log["id"], log["decides"]) for log in report["communications"]] == [(str(cid), True)]
    code, text = explain_text(service, mid)
    assert code == 0 and text.startswith(f"message {mid}: decided: delivered=True at ")


def test_a_claimed_message_shows_its_lease_and_live_job(service, db, queue, receiver):
    mid = factories.message(db)
    factories.communication(db, mid)
    receiver.behaviour.by_message[str(mid)] = (200, 6.0)  # the emit hangs while we look
    service.spawn("work")
    Enqueuer(queue).enqueue(str(mid))
    wait_until(lambda: db.support_messages.find_one({"_id": mid, CLAIM: {"$exists": True}}), 20, "the claim")
    code, report = explain(service, mid)
    assert code == 1
    assert report["claim"]["job_alive"] is True and report["claim"]["until"]
    assert report["summary"].startswith("being decided by a job now (lease until ")
    assert [(job["id"], job["status"]) for job in report["jobs"]] == [(job_id(str(mid)), "started")]


def test_a_retry_shows_when_it_runs_how_many_attempts_were_made_and_why_the_last_failed(service, db, queue, receiver):
    # Given no scheduler (the retry stays scheduled) and a socket service that answers 503 once
    mid = factories.message(db)
    factories.communication(db, mid)
    receiver.behaviour.by_message[str(mid)] = (503, 0.0)
    service.spawn("work")
    Enqueuer(queue).enqueue(str(mid))
    wait_until(lambda: queue.scheduled_job_registry.count == 1, 20, "the retry to be scheduled")
    code, report = explain(service, mid)
    assert code == 1
    (job,) = report["jobs"]
    assert job["status"] == "scheduled" and job["attempts_made"] == 1 and job["next_retry"]
    assert "503" in job["last_error"]
    assert report["summary"].startswith(f"retry 2 scheduled at {job['next_retry']}: SocketUnavailable")


def test_a_slow_retry_shows_its_time_attempts_and_error(service, db, queue, receiver):
    mid = factories.message(db)
    factories.communication(db, mid)
    receiver.behaviour.by_message[str(mid)] = (503, 0.0)
    service.spawn("work", FAST_ATTEMPTS="1", SLOW_RETRY="300")
    Enqueuer(queue).enqueue(str(mid))
    wait_until(lambda: db.support_messages.find_one({"_id": mid, f"{HOLD}.kind": "retry"}), 20, "the hold")
    code, report = explain(service, mid)
    assert code == 1
    hold = report["hold"]
    assert hold["kind"] == "retry" and hold["attempts"] == 1 and "503" in hold["error"]
    assert report["summary"].startswith(f"waiting for a slow retry at {hold['until']} after 1 failed attempts")
    assert report["sweep"].startswith(f"at {hold['until']} (its slow retry), or as soon as an emit succeeds")
    code, text = explain_text(service, mid)
    assert "hold:      retry since" in text and "next try" in text


def test_bad_data_shows_the_parked_message_and_its_failed_job(service, db, queue, receiver):
    mid = factories.message(db)
    factories.communication(db, mid, account_id=None)
    service.spawn("work")
    Enqueuer(queue).enqueue(str(mid))
    wait_until(lambda: job_id(str(mid)) in queue.failed_job_registry.get_job_ids(), 20, "the failed job")
    code, report = explain(service, mid)
    assert code == 1
    assert report["hold"]["kind"] == "parked" and "no account_id" in report["hold"]["error"]
    (job,) = report["jobs"]
    assert job["status"] == "failed" and job["needs_operator"] is True and "no account_id" in job["last_error"]
    assert report["summary"].startswith("parked for an operator since ")
    assert report["communications"][0]["account_id"] is None
    assert report["sweep"].startswith("never while parked")


def test_no_such_message_or_a_bad_id_exits_2(service, db):
    code, report = explain(service, ObjectId())
    assert code == 2 and report["summary"].startswith("no message ")
    code, report = explain(service, "not-an-id")
    assert code == 2 and "is not a message id" in report["summary"]


def test_the_api_answers_the_same_and_beyond_loopback_only_with_the_token(service, db):
    mid = factories.message(db)
    url = api_server(service)
    response = httpx.get(f"{url}/api/messages/{mid}")
    assert response.status_code == 200 and response.json()["summary"].startswith("waiting for its communication log")
    assert httpx.get(f"{url}/api/messages/{ObjectId()}").status_code == 404
    assert httpx.get(f"{url}/api/messages/nope").status_code == 400
    public = api_server(service, host="0.0.0.0")
    assert httpx.get(f"{public}/api/messages/{mid}").status_code == 403
    guarded = api_server(service, host="0.0.0.0", TRIGGER_TOKEN="t0ken")
    assert httpx.get(f"{guarded}/api/messages/{mid}").status_code == 401
    answer = httpx.get(f"{guarded}/api/messages/{mid}", headers={"Authorization": "Bearer t0ken"})
    assert answer.status_code == 200 and answer.json()["id"] == str(mid)
