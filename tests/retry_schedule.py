"""What a socket service saw of our retry schedule: requests that came sooner than it allows."""

from __future__ import annotations

from jobs.retries import retry_delay


def early_retries(
    answers: list[tuple[float, str, int, float]], fast_attempts: int, slow_retry: float,
    until: float = float("inf"),
) -> list[str]:
    """Requests for a message that came sooner after the answer to its previous request than the retry
    schedule allows.

    ``answers``: the receiver's (arrival, message id, status, answered). The n-th request of a message is at least its
    n-th attempt (an attempt the retry budget shed sends nothing), so the wait before the next is at least
    the schedule's n-th: 1, 2, 4... seconds, then ``slow_retry``. Requests after ``until`` are left out: once
    the failures stop, a wake-up brings every waiting message at once, by design.
    """
    seen: dict[str, list[float]] = {}
    early = []
    for arrived, message_id, _status, answered in sorted(answers):
        previous = seen.setdefault(message_id, [])
        if previous and arrived <= until:
            n = len(previous)
            promised = retry_delay(n) if n < fast_attempts else slow_retry
            if arrived - previous[-1] < promised:
                early.append(f"{message_id}: request {n + 1} came {arrived - previous[-1]:.2f}s after the answer "
                             f"to request {n}, {promised:.0f}s promised")
        previous.append(answered)
    return early
