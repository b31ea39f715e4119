"""Measures the embedded MongoDB: insert speed by collection size (stock mongoeco vs ours),
change-event latency and the idle cost of an open change stream.

Run: ``make bench-embedded`` (or ``python -m bench.embedded``); writes bench/embedded-results.md.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pymongo

from bench.report import stamp
from embedded.processes import free_port, msgstatus_argv, stop, wait_for_port

RESULTS = Path(__file__).with_name("embedded-results.md")

STOCK_SERVER = """
import asyncio, sys
from mongoeco.api import AsyncMongoClient
from mongoeco.engines import MemoryEngine
from mongoeco.wire import AsyncMongoEcoProxyServer
async def main():
    client = AsyncMongoClient(engine=MemoryEngine())
    server = AsyncMongoEcoProxyServer(client=client, port=int(sys.argv[1]))
    await server.start()
    # Filled in-process in one batch: over the wire the stock server inserts one
    # document at a time, each scanning the collection, and 20,000 take hours.
    prefill = int(sys.argv[2])
    if prefill:
        await client.bench.messages.insert_many([{"i": i} for i in range(prefill)])
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def start(stock: bool, prefill: int = 0) -> tuple[subprocess.Popen[bytes], str]:
    """Start a server; ``prefill`` documents are put in bench.messages first."""
    port = free_port()
    if stock:
        argv = [sys.executable, "-c", STOCK_SERVER, str(port), str(prefill)]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert process.stdout is not None and process.stdout.readline().startswith(b"ready")
    else:
        process = subprocess.Popen(msgstatus_argv("mongo", "--port", str(port)), stderr=subprocess.DEVNULL)
    wait_for_port("127.0.0.1", port, 60, process)
    url = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    if not stock and prefill:
        with pymongo.MongoClient[dict[str, Any]](url) as client:
            for first in range(0, prefill, 5_000):
                client.bench.messages.insert_many([{"i": i} for i in range(first, min(first + 5_000, prefill))])
    return process, url


def insert_rate(coll: pymongo.collection.Collection, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        coll.insert_one({"sender_type": "conversation", "source": "sms"})
    return count / (time.perf_counter() - started)


def insert_rates(stock: bool) -> tuple[float, float]:
    """Inserts/s of the 100 single inserts after the 100th and after the 19,900th document."""
    rates = []
    for prefill in (100, 19_900):
        process, url = start(stock, prefill)
        try:
            with pymongo.MongoClient[dict[str, Any]](url) as client:
                rates.append(insert_rate(client.bench.messages, 100))
        finally:
            stop(process)
    return rates[0], rates[1]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def event_latency_and_idle(samples: int = 500, idle_seconds: float = 10.0) -> tuple[list[float], float]:
    """Insert-to-event latencies (ms) on another client's stream, and idle CPU share of the server."""
    process, url = start(stock=False)
    latencies: list[float] = []
    try:
        with (
            pymongo.MongoClient[dict[str, Any]](url) as writer,
            pymongo.MongoClient[dict[str, Any]](url) as reader,
            reader.bench.messages.watch(max_await_time_ms=1000) as stream,
        ):
            stream.try_next()
            for i in range(samples):
                started = time.perf_counter()
                writer.bench.messages.insert_one({"i": i})
                while stream.try_next() is None:
                    pass
                latencies.append((time.perf_counter() - started) * 1000)
            before, t0 = cpu_seconds(process.pid), time.monotonic()
            while time.monotonic() - t0 < idle_seconds:
                stream.try_next()
            idle = (cpu_seconds(process.pid) - before) / (time.monotonic() - t0)
    finally:
        stop(process)
    return latencies, idle


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    stock_early, stock_late = insert_rates(stock=True)
    ours_early, ours_late = insert_rates(stock=False)
    latencies, idle = event_latency_and_idle()
    report = f"""# Embedded MongoDB measurements

{stamp()}. Rerun: `make bench-embedded`.
Everything goes over the wire through pymongo, one client, one insert at a time.

## Inserts per second by collection size

| server | at 100 documents | at 20,000 documents | ratio |
|---|---:|---:|---:|
| mongoeco 4.11.0 as shipped | {stock_early:,.0f} | {stock_late:,.0f} | {stock_late / stock_early:.2f} |
| msgstatus embedded (`embedded/engine.py`) | {ours_early:,.0f} | {ours_late:,.0f} | {ours_late / ours_early:.2f} |

## Change stream

| measure | value |
|---|---:|
| insert on one client to event on another's stream, p50 | {percentile(latencies, 50):.2f} ms |
| p99 | {percentile(latencies, 99):.2f} ms |
| max | {max(latencies):.2f} ms |
| samples | {len(latencies)} |
| server CPU with one stream idle (getMore waiting 1 s) | {idle:.2%} of a core |
"""
    RESULTS.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
