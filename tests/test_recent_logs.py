"""The watcher's memory of the logs it has just seen (unit tests: a clock of our own, no servers)."""

from __future__ import annotations

from watcher.recent import TRUST_AFTER, RecentLogs


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_message_whose_log_was_seen_is_known_and_the_others_are_not():
    memory = RecentLogs(clock=Clock())
    memory.saw(["a", "b"])
    assert memory.split(["b", "c", "a"]) == (["b", "a"], ["c"])


def test_the_memory_is_trusted_only_once_the_log_stream_has_been_open_a_while():
    clock = Clock()
    memory = RecentLogs(clock=clock)
    assert not memory.trusted()  # never opened: a log may have come unseen
    memory.opened()
    clock.now += TRUST_AFTER - 0.1
    assert not memory.trusted()
    clock.now += 0.2
    assert memory.trusted()
    memory.closed()  # a reconnect: logs may come unseen until it has been open a while again
    assert not memory.trusted()


def test_seen_logs_are_forgotten_after_the_window():
    clock = Clock()
    memory = RecentLogs(window=60, clock=clock)
    memory.saw(["old"])
    clock.now += 30
    memory.saw(["newer"])
    clock.now += 31
    memory.saw(["newest"])
    assert memory.split(["old", "newer", "newest"]) == (["newer", "newest"], ["old"])
