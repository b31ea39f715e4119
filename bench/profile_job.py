"""Where one status job's time goes: N jobs run in-process (as a SimpleWorker runs them) under cProfile.

Run: ``python -m bench.profile_job [--jobs 200]``; prints the functions with the most cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import time

from bson import ObjectId

from bench.rig import SECRET, Rig, comm_doc, message_doc
from core.settings import Settings
from jobs import context


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    rig = Rig()
    try:
        rig.reset()
        mids = [ObjectId() for _ in range(args.jobs)]
        rig.db.support_messages.insert_many([message_doc(m) for m in mids])
        rig.db.communications.insert_many([comm_doc(m) for m in mids])
        env = {**rig.env(), "APP_SECRET": SECRET}
        context.install(Settings.from_env(env))
        from jobs.messages import ensure_indexes
        from jobs.status import check_message_status

        ensure_indexes(rig.db)
        check_message_status(str(mids[0]))  # warm up: connections, imports
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        for mid in mids[1:]:
            check_message_status(str(mid))
        profiler.disable()
        elapsed = time.perf_counter() - started
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
        print(f"{args.jobs - 1} jobs in {elapsed:.2f}s: {elapsed / (args.jobs - 1) * 1000:.1f} ms per job "
              f"(client side; the embedded server runs in its own process, pid {rig.servers[0].pid})")
        print(out.getvalue())
    finally:
        context.close()
        rig.close()


if __name__ == "__main__":
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    main()
