"""``msgstatus explain <message id>``: why a message has its tick, or why it has none yet."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any

import redis
from bson import ObjectId
from pymongo.database import Database
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job

from core.defaults import QUEUE
from core.settings import Settings
from jobs import communications, leases, messages
from jobs.queueing import FINAL, LAST_ERROR, follow_up_id, job_id, mark
from msgstatus.status import sweep_age, sweeps_stopped

DECIDED, WAITING, UNKNOWN = 0, 1, 2
"""Exit codes: decided; not yet; no such message or a bad id."""


def explain(settings: Settings, connection: redis.Redis, db: Database, message_id: str) -> dict[str, Any]:  # type: ignore[type-arg]
    """Everything msgstatus knows about one message, with ``exit`` and a one-line ``summary``."""
    if not ObjectId.is_valid(message_id):
        return {"id": message_id, "exit": UNKNOWN,
                "summary": f"{message_id!r} is not a message id (24 hexadecimal characters)"}
    oid = ObjectId(message_id)
    message = db[messages.MESSAGES].find_one({"_id": oid})
    if message is None:
        return {"id": message_id, "exit": UNKNOWN,
                "summary": f"no message {message_id} in {settings.database}.{messages.MESSAGES}"}
    logs = list(db[messages.COMMUNICATIONS].find({"conv_message_id": {"$in": [oid, message_id]}}).sort("_id", 1))
    chosen = communications.communications_for(db, [oid]).get(oid)
    report: dict[str, Any] = {
        "id": message_id,
        "tracked": not left_out(message),
        "left_out_by": left_out(message),
        "communications": [_log(log, chosen) for log in logs],
        "decision": _decision(message, chosen),
        "claim": _claim(connection, message.get(messages.CLAIM)),
        "hold": _hold(message.get(messages.HOLD)),
        "jobs": _jobs(connection, message_id),
        # The regular sweeps look only at messages created within LOG_HORIZON (by their ``created`` date)
        "past_log_horizon": not messages.within(message, messages.now() - timedelta(seconds=settings.log_horizon)),
    }
    report["sweep"] = _sweep(settings, report, sweep_age(connection))
    report["summary"] = _summary(report)
    report["exit"] = DECIDED if report["decision"] else WAITING
    return report


def left_out(message: dict[str, Any]) -> list[str]:
    """The conditions of the seed's query that leave ``message`` out (none: msgstatus tracks it)."""
    reasons = []
    if message.get("sender_type") != "conversation":
        reasons.append(f"sender_type is {message.get('sender_type')!r}, not 'conversation'")
    if message.get("source") not in messages.SOURCES:
        reasons.append(f"source is {message.get('source')!r}, not 'sms' or 'email'")
    if "delivered" in message:
        reasons.append(f"delivered is already set ({message['delivered']!r})")
    return reasons


def _when(value: Any) -> str | None:
    return messages.as_utc(value).isoformat(timespec="seconds") if isinstance(value, datetime) else None


def _log(log: dict[str, Any], chosen: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": str(log["_id"]), "success": log.get("success"),
        "delivery": communications.is_delivery(log.get("success")),
        "account_id": str(log["account_id"]) if log.get("account_id") is not None else None,
        "provider": log.get("provider"), "written": _when(messages.inserted_at(log)),
        "decides": chosen is not None and log["_id"] == chosen["_id"],
    }


def _decision(message: dict[str, Any], chosen: dict[str, Any] | None) -> dict[str, Any] | None:
    if "delivered" not in message:
        return None
    metadata = message.get("metadata")
    cid = metadata.get("communication_id") if isinstance(metadata, dict) else None
    late = communications.disagreement(message, chosen)
    return {"delivered": message["delivered"], "when": _when(message.get(messages.DECIDED_AT)),
            "communication_id": str(cid) if cid is not None else None,
            # The log came to say otherwise after the decision, which stands (the seed never rewrites one)
            "log_changed_after": {"delivered": late["delivered"], "communication_id": str(late["communication_id"])}
            if late else None}


def _claim(connection: redis.Redis, claim: Any) -> dict[str, Any] | None:
    if not isinstance(claim, dict):
        return None
    token = str(claim.get("token"))
    return {"until": _when(claim.get("until")), "job_alive": leases.alive(connection, [token]).get(token, False)}


def _hold(hold: Any) -> dict[str, Any] | None:
    if not isinstance(hold, dict):
        return None
    return {"kind": hold.get("kind"), "since": _when(hold.get("since")), "until": _when(hold.get("until")),
            "attempts": hold.get("attempts"), "error": hold.get("error"), "retired": _when(hold.get("retired"))}


def _jobs(connection: redis.Redis, message_id: str) -> list[dict[str, Any]]:
    ids = [job_id(message_id), follow_up_id(message_id)]
    if (batch := connection.get(mark(message_id))) is not None:
        ids.append(batch.decode() if isinstance(batch, bytes) else str(batch))
    found = []
    for jid in ids:
        try:
            job = Job.fetch(jid, connection=connection)
        except NoSuchJobError:
            continue
        status = job.get_status(refresh=False)
        entry: dict[str, Any] = {
            "id": jid, "status": str(status.value if status else None),
            "attempts_made": job.number_of_retries or 0, "next_retry": None,
            "last_error": job.meta.get(LAST_ERROR) or None, "needs_operator": bool(job.meta.get(FINAL)),
        }
        if status is not None and status.value == "scheduled":
            registry = Queue(job.origin or QUEUE, connection=connection).scheduled_job_registry
            with contextlib.suppress(NoSuchJobError):  # scheduled in no registry: the next event or sweep moves it
                entry["next_retry"] = registry.get_scheduled_time(job).isoformat(timespec="seconds")
        if status is not None and status.value == "failed":
            result = job.latest_result()
            if result is not None and result.exc_string:
                entry["last_error"] = result.exc_string.strip().splitlines()[-1]
        found.append(entry)
    return found


def _sweep(settings: Settings, report: dict[str, Any], last_age: float | None) -> str:
    """Whether and when a sweep picks the message up."""
    hold, claim = report["hold"], report["claim"]
    stopped = sweeps_stopped(last_age, settings.sweep_interval)
    warning = f", but {stopped}" if stopped else ""
    if not report["tracked"]:
        return "never: it is not tracked"
    if hold and hold["kind"] == "parked":
        return "never while parked: `msgstatus requeue --parked` runs its job again"
    if hold and hold["kind"] == "retry":
        return f"at {hold['until']} (its slow retry), or as soon as an emit succeeds{warning}"
    if claim and claim["job_alive"]:
        return f"not while a live job holds it (lease until {claim['until']})"
    if hold and hold["kind"] == messages.RETIRED:
        return (f"not by the regular sweeps: retired at {hold['retired']}, created over LOG_HORIZON "
                f"({settings.log_horizon}s) ago (or with no `created` date) and still without a log; its log's "
                "insert or update decides it at once whenever it comes (so does a catch-up sweep after a watcher "
                "outage)")
    if report["past_log_horizon"]:
        return (f"at the next sweep, which retires it if it still has no log: it was created over LOG_HORIZON "
                f"({settings.log_horizon}s) ago, or has no `created` date{warning}")
    return f"at the next sweep (every {settings.sweep_interval}s){warning}"


def _summary(report: dict[str, Any]) -> str:
    decision, hold, claim, jobs = report["decision"], report["hold"], report["claim"], report["jobs"]
    if decision:
        return (f"decided: delivered={decision['delivered']!r}"
                + (f" at {decision['when']}" if decision["when"] else ""))
    if not report["tracked"]:
        return "not tracked: " + "; ".join(report["left_out_by"])
    if hold and hold["kind"] == "parked":
        return f"parked for an operator since {hold['since']}: {hold['error']}"
    if hold and hold["kind"] == "retry":
        return f"waiting for a slow retry at {hold['until']} after {hold['attempts']} failed attempts: {hold['error']}"
    scheduled = [job for job in jobs if job["next_retry"]]
    if scheduled:
        job = scheduled[0]
        return f"retry {job['attempts_made'] + 1} scheduled at {job['next_retry']}: {job['last_error']}"
    if claim and claim["job_alive"]:
        return f"being decided by a job now (lease until {claim['until']})"
    if not report["communications"]:
        return "waiting for its communication log (none names it yet)"
    if any(job["status"] in ("queued", "started") for job in jobs):
        return "its communication log is there; its job is " + ", ".join(job["status"] for job in jobs)
    return f"its communication log is there and no job waits: {report['sweep']}"


def render(report: dict[str, Any]) -> str:
    """The report for a person."""
    lines = [f"message {report['id']}: {report['summary']}"]
    if "tracked" not in report:
        return lines[0]
    lines.append(f"tracked:   {'yes' if report['tracked'] else 'no: ' + '; '.join(report['left_out_by'])}")
    decision = report["decision"]
    lines.append("decision:  " + (
        f"delivered={decision['delivered']!r} at {decision['when'] or '?'}, "
        f"communication {decision['communication_id']}" if decision else "none yet"))
    if decision and (late := decision["log_changed_after"]):
        lines.append(f"changed:   communication {late['communication_id']} now says delivered={late['delivered']!r};"
                     " the decision stands (a decision is never rewritten)")
    if not report["communications"]:
        lines.append("logs:      none")
    for log in report["communications"]:
        lines.append(
            f"log:       {log['id']} success={log['success']!r} account_id={log['account_id'] or 'MISSING'} "
            f"provider={log['provider']} written {log['written']}" + (" (decides)" if log["decides"] else ""))
    claim, hold = report["claim"], report["hold"]
    if claim:
        lines.append(f"claim:     until {claim['until']}, its job {'alive' if claim['job_alive'] else 'gone'}")
    if hold and hold["kind"] == messages.RETIRED:
        lines.append(f"hold:      retired past LOG_HORIZON without a log, at {hold['retired']}")
    elif hold:
        lines.append(f"hold:      {hold['kind']} since {hold['since']}"
                     + (f", next try {hold['until']}, {hold['attempts']} attempts" if hold["kind"] == "retry" else "")
                     + f": {hold['error']}")
    for job in report["jobs"]:
        lines.append(f"job:       {job['id']} {job['status']}, {job['attempts_made']} retries made"
                     + (f", next at {job['next_retry']}" if job["next_retry"] else "")
                     + (f", last error: {job['last_error']}" if job["last_error"] else ""))
    if not report["jobs"]:
        lines.append("job:       none")
    lines.append(f"sweep:     {report['sweep']}")
    return "\n".join(lines)
