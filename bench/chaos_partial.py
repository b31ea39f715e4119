"""``make chaos``'s partial outage: a backlog, then a socket service that sheds 30% 503 and 10% 429 for minutes.

What it shows: the requests the service gets, window by window, against what the
retry budget allows for the messages that were new in that window; and that no
message was tried sooner than its retry schedule (Retry-After included).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core import metrics
from jobs import budget
from tests.retry_schedule import early_retries

if TYPE_CHECKING:
    from bench.chaos import Chaos

SHEDDING = {503: 0.3, 429: 0.1}
"""What the socket service answers at random during the phase, instead of 200."""

RETRY_AFTER = "2"
"""The Retry-After it sends with each 429 and 503."""

WINDOW = 10.0
"""Seconds of one window of the request count."""


@dataclass
class Window:
    start: float
    new: int
    requests: int

    @property
    def allowed(self) -> float:
        """First attempts, the retries they earn, the bucket's own refill and its capacity."""
        return (1 + budget.EARNED) * self.new + budget.FLOOR * WINDOW + budget.CAP


@dataclass
class Shedding:
    """What the partial outage measured."""

    backlog_seconds: float
    shedding_seconds: float
    burst: int
    started: float = 0.0
    ended: float = 0.0
    windows: list[Window] = field(default_factory=list)
    early: list[str] = field(default_factory=list)
    shed: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def over_budget(self) -> list[str]:
        return [f"{w.requests} requests in the window at {w.start - self.started:.0f}s, {w.allowed:.0f} allowed"
                for w in self.windows if w.requests > w.allowed]

    def failures(self) -> list[str]:
        return [*self.over_budget, *self.early]

    def lines(self) -> list[str]:
        """Its section of bench/chaos-results.md."""
        total = sum(w.requests for w in self.windows)
        new = sum(w.new for w in self.windows)
        answered = ", ".join(f"{status}: {count}" for status, count in sorted(self.statuses.items()))
        return [
            "", "## Partial outage: a backlog, then 30% 503 and 10% 429", "",
            f"The socket service answered 503 to every emit for {self.backlog_seconds:.0f} s while the traffic "
            f"went on and {self.burst} more messages arrived at once: a backlog of retries. Then for "
            f"{self.shedding_seconds:.0f} s it answered each emit at random: 30% 503, 10% 429 (both with "
            f"`Retry-After: {RETRY_AFTER}`), the rest 200. Requests to it per {WINDOW:.0f} s window of that time, "
            f"against what the retry budget allows: (1 + {budget.EARNED:g}) times the messages new in the window "
            f"+ {budget.FLOOR:g}/s + {budget.CAP:g} (the bucket).", "",
            "| window (s from the start of the shedding) | new messages | requests | allowed |",
            "|---:|---:|---:|---:|",
            *(f"| {w.start - self.started:.0f} | {w.new} | {w.requests} | {w.allowed:.0f} |" for w in self.windows),
            "",
            f"In all {total} requests for {new} new messages ({total / max(new, 1):.2f} per new message); answers: "
            f"{answered}. Retries shed by the budget (each a failed attempt of its message, without a request): "
            f"{self.shed:.0f}. Windows over the budget: {len(self.over_budget)}. Requests sooner after the "
            f"message's previous one than its schedule allows (1, 2, 4 s... then the slow retry; Retry-After "
            f"lengthens a wait): {len(self.early)}.",
            *(f"- FAILED {failure}" for failure in self.failures()[:10]),
        ]


def partial_outage(chaos: Chaos) -> float:
    """The phase itself; when it ended. Its figures are left in ``chaos.shedding``."""
    from bench.chaos import RETRIES
    from bench.chaos_traffic import Traffic

    quick = chaos.quick
    found = Shedding(backlog_seconds=10 if quick else 20, shedding_seconds=30 if quick else 120,
                     burst=50 if quick else 200)
    behaviour = chaos.socket.receiver.behaviour
    shed_before = metrics.value(chaos.service.redis, metrics.RETRIES_SHED)
    behaviour.status = 503
    behaviour.retry_after = RETRY_AFTER
    threading.Thread(target=Traffic(chaos.service.db, chaos.ledger, rate=1).burst, args=(found.burst,)).start()
    time.sleep(found.backlog_seconds)  # the fault runs for this long: not a wait for a condition
    behaviour.shedding = dict(SHEDDING)
    behaviour.status = 200
    found.started = time.time()
    time.sleep(found.shedding_seconds)
    behaviour.shedding = {}
    behaviour.retry_after = None
    found.ended = time.time()
    answers = [a for a in chaos.socket.receiver.answers if found.started <= a[0] < found.ended]
    with chaos.ledger.lock:
        written = [m.written for m in chaos.ledger.messages.values() if m.with_log]
    start = found.started
    while start + WINDOW <= found.ended:
        found.windows.append(Window(start, new=sum(1 for t in written if start <= t < start + WINDOW),
                                    requests=sum(1 for a in answers if start <= a[0] < start + WINDOW)))
        start += WINDOW
    found.early = early_retries(answers, int(RETRIES["FAST_ATTEMPTS"]), float(RETRIES["SLOW_RETRY"]))
    found.shed = metrics.value(chaos.service.redis, metrics.RETRIES_SHED) - shed_before
    for _, _, status, _ in answers:
        found.statuses[status] = found.statuses.get(status, 0) + 1
    chaos.shedding = found
    print(f"chaos: partial outage: {len(answers)} requests, {found.shed:.0f} retries shed, "
          f"{len(found.over_budget)} windows over the budget, {len(found.early)} early", flush=True)
    return found.ended
