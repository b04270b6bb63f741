"""The emulation part of the HTTP service's loop, in-process, phase by phase.

What `bench/http_load.py`'s clients make a served system do, without HTTP: `hsa_init` of the
teaching preset (traced, as a served system is), load `builtin:square`, allocate 16 KiB from
the system's pool 1, allow the GPU access, create a 64-packet queue, write the input, dispatch
`square` over 4,096 items, wait, read back, `hsa_shut_down`. Each phase is timed in CPU time
of this thread (`time.thread_time`, which leaves out the time other processes held the core on
a shared machine), best of N loops; `--profile` runs the loops under cProfile instead
(`--phase NAME`: only that phase). As `hsaemu serve` does, glibc's mmap threshold is pinned.

    python bench/service_loop.py [--loops 40] [--rounds 5] [--untraced] [--json]
    python bench/service_loop.py --profile [--phase queue]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import rocr  # noqa: E402

N = 4096
PHASES = (
    "init",
    "load",
    "alloc",
    "allow",
    "queue",
    "write",
    "dispatch",
    "wait",
    "read",
    "shutdown",
)


def one_loop(
    times: dict[str, float] | None,
    trace: bool,
    data: np.ndarray,
    prof: tuple[cProfile.Profile, str] | None = None,
) -> None:
    clock = time.thread_time
    t = clock()
    if prof is not None and prof[1] == PHASES[0]:
        prof[0].enable()

    def mark(name: str) -> None:
        nonlocal t
        now = clock()
        if times is not None:
            times[name] = min(times.get(name, 1e9), now - t)
        if prof is not None:
            i = PHASES.index(name)
            if prof[1] == name:
                prof[0].disable()
            elif i + 1 < len(PHASES) and prof[1] == PHASES[i + 1]:
                prof[0].enable()
        t = clock()

    rt = rocr.init(preset="teaching", trace=trace)
    mark("init")
    k = rt.load_code_object("builtin:square").kernel("square")
    mark("load")
    pools = [p for a in rt.agents() for p in a.pools()]
    buf = pools[1].allocate(4 * N)
    mark("alloc")
    gpu = rt.gpus[0]
    rt.allow_access([gpu], buf)
    mark("allow")
    q = gpu.create_queue(64)
    mark("queue")
    buf.write(data.tobytes())
    mark("write")
    h = q.dispatch(k, grid=N, workgroup=256, args=(buf, buf, N))
    mark("dispatch")
    h.wait()
    mark("wait")
    got = buf.read()
    mark("read")
    rt.shutdown()
    mark("shutdown")
    assert np.array_equal(np.frombuffer(got, np.float32), data * data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loops", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--phase", choices=PHASES, help="with --profile: profile only this phase")
    ap.add_argument("--untraced", action="store_true")
    ap.add_argument("--json", action="store_true", help="also print the figures as JSON")
    a = ap.parse_args()
    trace = not a.untraced
    from rocr.service.server import fix_mmap_threshold

    fix_mmap_threshold()  # as `hsaemu serve` does: a machine's zeroed memory stays untouched
    data = np.arange(N, dtype=np.float32)
    for _ in range(3):  # warm: lazy imports, pydantic validators, caches
        one_loop(None, trace, data)
    if a.profile:
        prof = cProfile.Profile()
        if a.phase is None:
            prof.enable()
        for _ in range(a.loops):
            one_loop(None, trace, data, (prof, a.phase) if a.phase else None)
        prof.disable()
        st = pstats.Stats(prof)
        st.sort_stats("cumulative").print_stats(60)
        st.sort_stats("tottime").print_stats(40)
        return
    best: dict[str, float] = {}
    totals = []
    for _ in range(a.rounds):
        t0 = time.thread_time()
        for _ in range(a.loops):
            one_loop(best, trace, data)
        totals.append((time.thread_time() - t0) / a.loops)
    ref = min(_ref() for _ in range(20))
    print(f"sum(range(1000)): {ref * 1e6:.1f} us")
    for name in PHASES:
        print(f"{name:10s} {best[name] * 1e3:7.3f} ms")
    print(f"{'sum':10s} {sum(best.values()) * 1e3:7.3f} ms (best of each phase)")
    print(f"{'loop':10s} {min(totals) * 1e3:7.3f} ms (best round's mean)")
    if a.json:
        out = {k: v * 1e3 for k, v in best.items()} | {"loop": min(totals) * 1e3, "ref": ref * 1e6}
        print("JSON " + json.dumps(out))


def _ref() -> float:
    t0 = time.thread_time()
    for _ in range(100):
        sum(range(1000))
    return (time.thread_time() - t0) / 100


if __name__ == "__main__":
    main()
