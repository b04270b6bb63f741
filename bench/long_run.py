"""A long run: 100,000 kernel dispatches in a loop, time and memory per window.

Each iteration is what a user's loop does: `q.dispatch(kernel, ...).wait()` with no completion
signal of its own (the runtime lends one), alternating the `empty` kernel and a small
`vector_add` (so kernargs are packed every other dispatch). Prints, per window of dispatches,
the wall time per dispatch, the resident set size, and the counts that must stay flat: live
signals, KFD events and buffer objects of the process, kernarg chunks, retained trace events.
Writes bench/results/long_run.json.

    python bench/long_run.py                 # 100,000 dispatches (~1 minute or more)
    python bench/long_run.py --n 20000 --window 2000
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

import rocr
from rocr.progress import Progress


def rss_mib() -> float:
    """Current resident set size (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="dispatches (default 100000)")
    ap.add_argument("--window", type=int, default=10_000, help="dispatches per printed row")
    ap.add_argument("--preset", default="gfx900")
    args = ap.parse_args()
    if args.n < 1 or args.window < 1:
        ap.error("--n and --window must be at least 1")

    rt = rocr.init(preset=args.preset, trace=True)  # its ring buffer must stay flat too
    gpu = rt.gpus[0]
    q = gpu.create_queue(size=256)
    exe = rt.load_code_object("builtin")
    empty, vadd = exe.kernel("empty"), exe.kernel("vector_add")
    pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
    n = 256
    a, b, c = (pool.allocate(4 * n) for _ in range(3))
    for buf in (a, b, c):
        rt.allow_access([gpu], buf)
    a.view(np.float32)[:] = 1.0
    b.view(np.float32)[:] = 2.0

    rows = []
    print(
        f"{'dispatches':>10} {'us/dispatch':>11} {'RSS MiB':>8} {'signals':>7} "
        f"{'KFD events':>10} {'BOs':>5} {'kernarg chunks':>14} {'trace events':>12}"
    )
    t0 = time.perf_counter()
    # A bar on a terminal (the rows below are the record; off a terminal they are enough).
    bar = Progress(args.n, "dispatches", quiet=not sys.stderr.isatty())
    step = max(1, min(args.window, 500))
    for i in range(1, args.n + 1):
        if i % step == 0:
            bar.advance(step)
        if i % 2:
            q.dispatch(empty, grid=(64,), workgroup=(64,)).wait()
        else:
            q.dispatch(vadd, grid=(n,), workgroup=(64,), args=(a, b, c, n)).wait()
        if i % args.window == 0 or i == args.n:
            t1 = time.perf_counter()
            done = args.window if i % args.window == 0 else i % args.window
            (proc,) = json.loads(rt.thunk.read_debugfs("mqds"))  # the one process
            row = {
                "dispatches": i,
                "us_per_dispatch": (t1 - t0) / done * 1e6,
                "rss_mib": rss_mib(),
                "signals": len(rt._signals),
                "kfd_events": len(proc["events"]),
                "buffer_objects": proc["buffer_objects"],
                "kernarg_chunks": len(rt._kernarg_chunks),
                "trace_events": len(rt.system.tracer.events),
            }
            rows.append(row)
            print(
                f"{i:>10} {row['us_per_dispatch']:>11.0f} {row['rss_mib']:>8.1f} "
                f"{row['signals']:>7} {row['kfd_events']:>10} {row['buffer_objects']:>5} "
                f"{row['kernarg_chunks']:>14} {row['trace_events']:>12}"
            )
            t0 = time.perf_counter()
    bar.close()
    assert np.allclose(c.view(np.float32), 3.0)
    first, last = rows[0], rows[-1]
    summary = {
        "time_ratio_last_first": last["us_per_dispatch"] / first["us_per_dispatch"],
        "rss_growth_mib_after_first_window": last["rss_mib"] - first["rss_mib"],
    }
    print(
        f"time per dispatch, last window / first: {summary['time_ratio_last_first']:.2f}x; "
        f"RSS growth after the first window: {summary['rss_growth_mib_after_first_window']:+.1f}"
        " MiB"
    )
    rt.shutdown()
    out = pathlib.Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "long_run.json").write_text(json.dumps({"rows": rows, **summary}, indent=1))


if __name__ == "__main__":
    main()
