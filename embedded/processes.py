"""Starting local servers as child processes and waiting for them, with deadlines."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Return once ``host:port`` accepts connections; raise if ``timeout`` passes or ``process`` dies."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listened on {host}:{port} within {timeout:.0f}s") from None
            time.sleep(0.02)


def msgstatus_argv(*args: str) -> list[str]:
    """The command line that runs ``msgstatus ARGS`` with this interpreter."""
    return [sys.executable, "-m", "msgstatus", *args]


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)


def start_server(
    args: Sequence[str], host: str, port: int, timeout: float = 30.0, **popen: object
) -> subprocess.Popen[bytes]:
    """Start ``msgstatus ARGS`` and wait until it listens on ``host:port``."""
    process = subprocess.Popen(msgstatus_argv(*args), **popen)  # type: ignore[call-overload]
    try:
        wait_for_port(host, port, timeout, process)
    except BaseException:
        stop(process)
        raise
    return process


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children...), read from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # the fields after the parenthesised command: state, ppid, ...
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and everything below it, as a crash or the OOM killer would.

    A process group is not enough: RQ puts each work horse in a group of its
    own, so ``killpg`` on a worker leaves its horse running the job. The tree is
    frozen with SIGSTOP first so that nothing in it can fork while it is read.
    """
    frozen: set[int] = set()
    todo = {pid}
    while todo:
        for target in todo:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGSTOP)
        frozen |= todo
        todo = set(descendants(pid)) - frozen
    for target in frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGKILL)
