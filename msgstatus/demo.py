"""``msgstatus demo``: the service on the embedded default, live, with traffic and a summary."""

from __future__ import annotations

import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import click
import httpx
from bson import ObjectId

from embedded.processes import free_port
from msgstatus.harness import RunningService
from msgstatus.receiver import Emit

SHOWN_METRICS = ("msgstatus_messages_decided_total", "msgstatus_checks_without_decision_total",
                 "msgstatus_job_failures_total", "msgstatus_oldest_undecided_message_age_seconds",
                 "msgstatus_watchers")
"""The /metrics lines the demo ends with."""

SCENARIOS = (("ok", 0.6), ("failed", 0.15), ("no-log", 0.1), ("comm-first", 0.15))
"""What the traffic generator writes, and how often."""


@dataclass
class Tally:
    """What the demo wrote and saw."""

    written: dict[str, str] = field(default_factory=dict)  # message id -> scenario
    comm_inserted: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _write(service: RunningService, tally: Tally, scenario: str) -> None:
    mid = ObjectId()
    message = {"_id": mid, "sender_type": "conversation", "sender_id": ObjectId(),
               "source": random.choice(("sms", "email")), "content": "Your order has shipped",
               "created": datetime.now(UTC), "metadata": {"agent": "demo"}}
    comm = {"conv_message_id": mid, "account_id": ObjectId(), "success": scenario != "failed",
            "provider": "twilio" if message["source"] == "sms" else "sendgrid"}
    with tally.lock:
        tally.written[str(mid)] = scenario
    if scenario == "comm-first":
        service.db.communications.insert_one(comm)
        tally.comm_inserted[str(mid)] = time.time()
        time.sleep(0.05)
        service.db.support_messages.insert_one(message)
        return
    service.db.support_messages.insert_one(message)
    if scenario != "no-log":
        time.sleep(random.uniform(0.02, 0.2))  # the provider's callback comes a little later
        service.db.communications.insert_one(comm)
        tally.comm_inserted[str(mid)] = time.time()


def _on_emit(tally: Tally, emit: Emit) -> None:
    mid = emit.message_id
    started = tally.comm_inserted.get(mid)
    latency = (emit.received - started) * 1000 if started else float("nan")
    outcome = "delivered" if emit.body["data"].get("delivered") else "failed"
    with tally.lock:
        tally.outcomes[mid] = outcome
        if started:
            tally.latencies.append(latency)
    stamp = datetime.fromtimestamp(emit.received).strftime("%H:%M:%S.%f")[:-3]
    colour = "green" if outcome == "delivered" else "red"
    click.echo(f"{stamp}  {mid}  {click.style(f'{outcome:9}', fg=colour)}  "
               f"{tally.written.get(mid, '?'):10}  {latency:7.1f} ms after the log's insert")


def summary(tally: Tally) -> str:
    """The closing table."""
    with tally.lock:
        written, outcomes, latencies = dict(tally.written), dict(tally.outcomes), list(tally.latencies)
    delivered = sum(1 for o in outcomes.values() if o == "delivered")
    failed = sum(1 for o in outcomes.values() if o == "failed")
    waiting = len(written) - len(outcomes)
    rows = [("messages written", str(len(written))), ("delivered", str(delivered)),
            ("failed (provider said no)", str(failed)), ("waiting (no log yet)", str(waiting))]
    if len(latencies) >= 2:
        q = statistics.quantiles(latencies, n=100, method="inclusive")
        rows += [("latency p50", f"{q[49]:.1f} ms"), ("latency p95", f"{q[94]:.1f} ms"),
                 ("latency p99", f"{q[98]:.1f} ms")]
    width = max(len(k) for k, _ in rows)
    line = "+" + "-" * (width + 2) + "+" + "-" * 12 + "+"
    body = [f"| {k:<{width}} | {v:>10} |" for k, v in rows]
    return "\n".join([line, *body, line])


def run_demo(seconds: float, rate: float, workers: int) -> None:
    api_port = free_port()
    service = RunningService(["--workers", str(workers), "--api-port", str(api_port)])
    tally = Tally()
    click.echo(f"msgstatus demo: starting the service on the embedded default ({workers} workers) ...")
    try:
        service.wait_ready()
        click.echo(f"ready: MongoDB :{service.mongo_port}, Redis :{service.redis_port}, socket receiver "
                   f"{service.receiver.url} (verifies each JWT). Writing ~{rate:g} messages/s for {seconds:g}s; "
                   "Ctrl-C ends early.\n")
        click.echo(f"{'time':12}  {'message':24}  {'status':9}  {'scenario':10}  latency")
        service.receiver.listeners.append(lambda emit: _on_emit(tally, emit))
        weights = [w for _, w in SCENARIOS]
        names = [n for n, _ in SCENARIOS]
        ends = time.monotonic() + seconds
        try:
            while time.monotonic() < ends:
                _write(service, tally, random.choices(names, weights)[0])
                time.sleep(max(0.0, 1 / rate - 0.1))
            settle = time.monotonic() + 5
            while time.monotonic() < settle and len(tally.outcomes) < sum(
                1 for s in tally.written.values() if s != "no-log"
            ):
                time.sleep(0.1)
        except KeyboardInterrupt:
            click.echo("\ninterrupted")
        click.echo("\n" + summary(tally))
        _show_operator_view(f"http://127.0.0.1:{api_port}", tally)
    finally:
        service.stop()


def _show_operator_view(api: str, tally: Tally) -> None:
    """What an operator sees: a few /metrics lines, and ``explain`` for a message still without a tick."""
    try:
        lines = httpx.get(f"{api}/metrics", timeout=5).text.splitlines()
        click.echo(f"\n{api}/metrics (excerpt):")
        click.echo("\n".join(line for line in lines if line.startswith(SHOWN_METRICS)))
        waiting = next((mid for mid, scenario in tally.written.items() if scenario == "no-log"), None)
        if waiting is not None:
            report = httpx.get(f"{api}/api/messages/{waiting}", timeout=5).json()
            click.echo(f"\nmsgstatus explain {waiting}: {report['summary']}; sweep: {report['sweep']}")
    except httpx.HTTPError as error:
        click.echo(f"(the metrics API did not answer: {error})")
