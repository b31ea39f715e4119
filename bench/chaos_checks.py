"""``make chaos``'s invariants, its load run, and the results file."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bson import ObjectId

from bench.report import stamp
from bench.rig import Rig, System, comm_doc, message_doc, offer
from jobs.messages import CLAIM
from msgstatus.harness import rss_kib

if TYPE_CHECKING:
    from bench.chaos import Chaos


@dataclass
class Phase:
    """One fault: when it ran, and how long until everything written before its end was decided."""

    name: str
    started: float
    ended: float
    written: int = 0
    recovery: float = 0.0
    worst_delay: float = 0.0
    pending: int = 0


@dataclass
class Invariants:
    """What the checks found over the messages of one database generation."""

    written: int = 0
    with_log: int = 0
    decided: int = 0
    undecided: list[str] = field(default_factory=list)
    decided_twice: list[str] = field(default_factory=list)
    emits_after_decision: list[str] = field(default_factory=list)
    duplicate_emits: int = 0
    metadata_lost: list[str] = field(default_factory=list)
    stale_claims: list[str] = field(default_factory=list)
    unexpected_restarts: list[str] = field(default_factory=list)
    slow_recoveries: list[str] = field(default_factory=list)
    retry_storm: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.undecided or self.decided_twice or self.emits_after_decision or self.metadata_lost
                    or self.stale_claims or self.unexpected_restarts or self.slow_recoveries or self.retry_storm)

    def failures(self) -> list[str]:
        named = {"undecided": self.undecided, "decided twice": self.decided_twice,
                 "emitted for after its decision": self.emits_after_decision,
                 "metadata of another writer lost": self.metadata_lost, "claim left past its lease": self.stale_claims,
                 "processes that died without being killed": self.unexpected_restarts,
                 "faults recovered too slowly": self.slow_recoveries,
                 "requests over the retry budget or sooner than their schedule": self.retry_storm}
        return [f"{what}: {len(items)} ({', '.join(items[:5])})" for what, items in named.items() if items]


def check_invariants(chaos: Chaos, final: bool) -> Invariants:
    """Wait (bounded) for the last messages, then check every invariant over the current generation."""
    from bench.chaos import RECOVERY_LIMIT

    ledger, db = chaos.ledger, chaos.service.db
    now = time.time()
    deadline = now + RECOVERY_LIMIT
    while ledger.pending(now) and time.time() < deadline:
        time.sleep(0.5)
    with ledger.lock:
        mine = {mid: m for mid, m in ledger.messages.items() if m.epoch == ledger.epoch}
        decided = {k: list(v) for k, v in ledger.decided.items()}
        emits = list(ledger.emits)
    found = Invariants(written=len(mine), with_log=sum(1 for m in mine.values() if m.with_log))
    docs = {d["_id"]: d for d in db.support_messages.find({"_id": {"$in": list(mine)}})}
    for mid, message in mine.items():
        doc = docs.get(mid, {})
        if "delivered" in doc:
            found.decided += 1
        elif message.with_log:
            found.undecided.append(str(mid))
        metadata = doc.get("metadata", {})
        if metadata.get("agent") != "chaos" or (message.tagged and metadata.get("tag") != "other-writer"):
            found.metadata_lost.append(str(mid))
        claim = doc.get(CLAIM)
        if claim and claim["until"].replace(tzinfo=UTC) < datetime.now(UTC):
            found.stale_claims.append(str(mid))
    found.decided_twice = [mid for mid, times in decided.items() if len(times) > 1]
    counts = Counter(e.message_id for e in emits if ObjectId(e.message_id) in mine)
    found.duplicate_emits = sum(1 for n in counts.values() if n > 1)
    found.emits_after_decision = sorted({e.message_id for e in emits
                                         if e.message_id in decided and e.received > decided[e.message_id][0]})
    found.slow_recoveries = [f"{p.name} ({p.recovery:.1f}s, {p.pending} pending)" for p in chaos.phases
                             if p.recovery > RECOVERY_LIMIT or p.pending]
    if final:
        found.unexpected_restarts = unexpected_restarts(chaos)
        found.retry_storm = chaos.shedding.failures() if chaos.shedding else []
    return found


def unexpected_restarts(chaos: Chaos) -> list[str]:
    """Children the supervisor had to start again although the run did not kill them."""
    import re

    starts: dict[str, list[int]] = {}
    for name, pid in re.findall(r"started (\S+) \(pid (\d+)\)", chaos.service.log_path.read_text()):
        starts.setdefault(name, []).append(int(pid))
    return [f"{name} (pid {pid})" for name, pids in starts.items() for pid in pids[:-1] if pid not in chaos.killed]


@dataclass
class Load:
    """The load run: a backlog plus steady traffic, with 2 workers."""

    backlog: int
    rate: float
    seconds: float
    offered: int = 0
    emitted: int = 0
    drained_after: float = 0.0
    undecided: int = 0
    rss: list[tuple[int, int, int, int]] = field(default_factory=list)
    """(second, watcher KiB, worker 1 KiB, worker 2 KiB) once a minute."""

    @property
    def ok(self) -> bool:
        return self.undecided == 0 and self.emitted >= self.backlog + self.offered and not self.rss_growth()

    def rss_growth(self) -> list[str]:
        """Processes whose RSS grew more than 10% from the first minute mark to the last mark."""
        marks = [m for m in self.rss if m[0] >= 60]  # second 0 is the bare interpreter, before any work
        if len(marks) < 2:
            return []
        first, last = marks[0], marks[-1]
        names = ("watcher", "worker 1", "worker 2")
        return [n for n, a, b in zip(names, first[1:], last[1:], strict=True) if b > a * 1.10]


def _rss_mark(second: int, system: System) -> tuple[int, int, int, int]:
    """RSS of the watcher and the two workers (the system's processes 0, 2 and 3)."""
    processes = system.processes
    return second, rss_kib(processes[0].pid), rss_kib(processes[2].pid), rss_kib(processes[3].pid)


def load_run(backlog: int = 10_000, rate: float = 50, seconds: float = 60, drain_cap: float = 900) -> Load:
    """``backlog`` pairs present at start, then ``rate``/s for ``seconds``; RSS each minute until drained."""
    print(f"chaos: load: {backlog} backlog + {rate:g}/s for {seconds:g}s, 2 workers ...", flush=True)
    rig, load = Rig(), Load(backlog, rate, seconds)
    try:
        rig.reset()
        for start in range(0, backlog, 5_000):
            mids = [ObjectId() for _ in range(min(5_000, backlog - start))]
            rig.db.support_messages.insert_many([message_doc(m) for m in mids])
            rig.db.communications.insert_many([comm_doc(m) for m in mids])
        system = System("msgstatus", rig, 2, simple=True)
        began = time.monotonic()
        try:
            offered: list[int] = []
            writer = threading.Thread(target=lambda: offered.append(offer(rig, rate, seconds, 0)[1]))
            writer.start()
            next_mark = 0.0
            while time.monotonic() - began < drain_cap:
                elapsed = time.monotonic() - began
                if elapsed >= next_mark:
                    load.rss.append(_rss_mark(int(elapsed), system))
                    next_mark += 60
                if not writer.is_alive() and len(rig.receiver.emits) >= backlog + offered[0]:
                    break
                time.sleep(0.5)
            load.drained_after = time.monotonic() - began
            writer.join()
            load.offered, load.emitted = offered[0], len(rig.receiver.emits)
            load.rss.append(_rss_mark(int(load.drained_after), system))
        finally:
            system.stop()
        load.undecided = rig.db.support_messages.count_documents({"delivered": {"$exists": False}})
    finally:
        rig.close()
    return load


def report(chaos: Chaos, final: Invariants, load: Load | None) -> str:
    """bench/chaos-results.md."""
    from bench.chaos import RECOVERY_LIMIT, RETRIES

    checkpoint: Invariants | None = getattr(chaos, "checkpoint", None)
    lines = [
        "# Chaos results" + (" (quick)" if chaos.quick else ""), "",
        f"{stamp()}. `{' '.join(f'{k}={v}' for k, v in RETRIES.items())} msgstatus run --workers "
        f"{chaos.workers} --simple` on the embedded default, traffic ~5 messages/s: the retry schedule is "
        f"compressed (defaults: 10 fast attempts over 8.5 minutes, slow retries every 300 s) so that an outage "
        f"outlasts the fast attempts within one phase; CLAIM_TTL, HEARTBEAT_TTL and SWEEP_INTERVAL are the "
        f"defaults. Rerun: `make chaos`.", "",
        f"Recovery: seconds from the end of a fault until every message with a log written before that end was "
        f"seen decided (limit {RECOVERY_LIMIT}s = sweep interval + 30 s; a failure if exceeded). Worst delay: "
        f"the longest wait from log insert to decision of a message whose log was written from the fault's start "
        f"to 5 s after its end (while a killed process is replaced).", "",
        "| fault | messages written during it (and 5 s after) | recovery (s) | worst delay of one of them (s) "
        "| still pending |",
        "|---|---:|---:|---:|---:|",
        *(f"| {p.name} | {p.written} | {p.recovery:.1f} | {p.worst_delay:.1f} | {p.pending} |" for p in chaos.phases),
        "",
        "| invariant, over every message written | " + ("before the database restart | " if checkpoint else "")
        + "final |",
        "|---|" + ("---:|" if checkpoint else "") + "---:|",
    ]
    rows = [("messages written", "written"), ("with a communication log", "with_log"), ("decided", "decided")]
    for label, attr in rows:
        lines.append(f"| {label} | " + (f"{getattr(checkpoint, attr)} | " if checkpoint else "")
                     + f"{getattr(final, attr)} |")
    counted = [("with a log but undecided", "undecided"), ("decided twice", "decided_twice"),
               ("emitted for after the decision", "emits_after_decision"),
               ("other writers' metadata lost", "metadata_lost"), ("claims past their lease", "stale_claims"),
               ("processes that died unkilled", "unexpected_restarts")]
    for label, attr in counted:
        lines.append(f"| {label} | " + (f"{len(getattr(checkpoint, attr))} | " if checkpoint else "")
                     + f"{len(getattr(final, attr))} |")
    lines.append("| messages emitted twice (at-least-once: killed between emit and commit) | "
                 + (f"{checkpoint.duplicate_emits} | " if checkpoint else "") + f"{final.duplicate_emits} |")
    lines += ["", f"Writes that failed while the database restarted (not counted as written): "
              f"{chaos.ledger.write_errors}.", ""]
    for invariants in filter(None, (checkpoint, final)):
        lines += [f"- FAILED {f}" for f in invariants.failures()]
    if chaos.shedding is not None:
        lines += chaos.shedding.lines()
    if load is not None:
        lines += ["", "## Load: backlog plus steady traffic, 2 SimpleWorkers", "",
                  f"{load.backlog:,} messages with their logs present at start, then {load.rate:g}/s offered for "
                  f"{load.seconds:g} s ({load.offered:,} written). All {load.emitted:,} emitted after "
                  f"{load.drained_after:.0f} s; undecided at the end: {load.undecided}.", "",
                  "| second | watcher RSS (KiB) | worker 1 RSS (KiB) | worker 2 RSS (KiB) |", "|---:|---:|---:|---:|",
                  *(f"| {s} | {w:,} | {a:,} | {b:,} |" for s, w, a, b in load.rss), "",
                  f"RSS growth over 10% from the 60 s mark to the last: {', '.join(load.rss_growth()) or 'none'}."]
    return "\n".join(lines) + "\n"
