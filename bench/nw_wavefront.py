"""Needleman-Wunsch-like wavefront task DAG over Q oversubscribed queues, per HWS policy.

An N x N grid of small kernels: cell (i, j) waits (barrier-AND) on its up and left neighbours,
then runs `vector_add(up, left, out)` over a block of B floats. With the borders at 1, every
element of cell (i, j) ends up as binomial(i + j, i), so the result proves that every
dependency was honoured. Row i goes to queue i % Q (each queue holds whole rows, in order);
queue q gets HSA priority 3 - 7q/Q (earlier rows higher), which only the `priority` policy
reads. For each policy and Q the script prints the makespan (first kernel start to last
kernel end, device time), the HWS context switches, the mean HQD utilisation and the
makespan relative to the best policy, and writes everything to bench/results/.

    python bench/nw_wavefront.py                       # gem5 preset, N=32, Q=1..64
    python bench/nw_wavefront.py --n 24 --block 8192 --queues 4,16,64 --swaps 10
    HSAEMU_BENCH_N=64 python bench/nw_wavefront.py     # bigger grid
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

import numpy as np

import rocr
from hw_model import aql
from hw_model.config import system_spec
from hw_model.scheduler import SCHEDULER_POLICIES

# gem5_round_robin is gem5's rule to the letter (empty queues are swapped in too; its timer
# never sleeps while oversubscribed), for comparison with round_robin.
POLICIES = ("round_robin", "gem5_round_robin", "priority", "ready_first")


def reference(n: int) -> np.ndarray:
    s = np.ones((n + 1, n + 1), dtype=np.float32)
    for i in range(1, n + 1):
        for j in range(1, n + 1):
            s[i, j] = s[i - 1, j] + s[i, j - 1]
    return s


def run(
    n: int,
    queues: int,
    policy: str,
    preset: str = "gem5",
    block: int = 1024,
    swaps: int = 1,
    trace: bool = False,
) -> dict:
    """One NW run on a fresh machine; returns makespan, swaps and checks the result."""
    spec = system_spec(preset, trace=trace)
    with rocr.init(spec=spec) as rt:
        return wavefront(rt, n, queues, policy, block, swaps)


def wavefront(rt, n: int, queues: int, policy: str, block: int = 1024, swaps: int = 1) -> dict:
    """One NW run on the machine of runtime `rt` (the sweep's workload calls this)."""
    # The experiment's knob: how many queues the HWS may swap per quantum (gem5: 1).
    rt.system.gpus[0].scheduler.set_policy(SCHEDULER_POLICIES[policy](swaps))
    gpu = rt.gpus[0]
    k = rt.load_code_object("builtin:vector_add").kernel("vector_add")
    pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
    cell_bytes = 4 * block
    grid = pool.allocate((n + 1) * (n + 1) * cell_bytes)
    rt.allow_access([gpu], grid)
    cells = grid.view(np.float32).reshape(n + 1, n + 1, block)
    cells[:] = 0
    cells[0, :, :] = 1
    cells[:, 0, :] = 1

    def addr(i: int, j: int) -> int:
        return grid.address + ((i * (n + 1)) + j) * cell_bytes

    rows_per_q = -(-n // queues)
    size = max(64, 1 << (2 * rows_per_q * n - 1).bit_length())
    qs = [gpu.create_queue(size, priority=3 - (7 * q) // queues) for q in range(queues)]
    kernarg = rt.cpu.pools(kernarg=True)[0].allocate(64 * n * n)
    rt.allow_access([gpu], kernarg)
    wg = min(block, 1024)
    done = {}
    last = rt.create_signal(1)
    # Write every packet first and ring each queue's doorbell once at the end, so the
    # makespan measures the device and its scheduler, not the host's submission loop.
    for i in range(1, n + 1):
        q = qs[(i - 1) % queues]
        for j in range(1, n + 1):
            sig = last if (i, j) == (n, n) else rt.create_signal(1, interrupt=False)
            deps = [done.get((i - 1, j)), done.get((i, j - 1))]
            handles = [d.handle for d in deps if d is not None]
            if handles:
                handles += [0] * (5 - len(handles))
                q.write_packet(
                    q.add_write_index(1),
                    rocr.BarrierAndPacket(
                        header=aql.make_header(aql.PacketType.BARRIER_AND),
                        dep_signal=handles,
                    ),
                )
            ka = 64 * ((i - 1) * n + (j - 1))
            kernarg.write(k.pack_args(addr(i - 1, j), addr(i, j - 1), addr(i, j), block), ka)
            q.write_packet(
                q.add_write_index(1),
                aql.KernelDispatchPacket(
                    header=aql.make_header(aql.PacketType.KERNEL_DISPATCH),
                    setup=1,
                    workgroup_size_x=wg,
                    workgroup_size_y=1,
                    workgroup_size_z=1,
                    grid_size_x=block,
                    grid_size_y=1,
                    grid_size_z=1,
                    kernel_object=k.kernel_object,
                    kernarg_address=kernarg.address + ka,
                    completion_signal=sig.handle,
                ),
            )
            done[(i, j)] = sig
    for q in qs:
        if q.load_write_index():
            q.ring_doorbell(q.load_write_index() - 1)
    deadlock = None
    try:
        last.wait(rocr.Condition.LT, 1)
    except rocr.HsaError as e:
        deadlock = str(e)  # e.g. priority inversion: reported by the wait, not a hang
    g = rt.system.gpus[0]
    recs = g.kernel_records
    makespan = max(r["end_ps"] for r in recs) - min(r["start_ps"] for r in recs)
    st = g.scheduler.stats()
    util = [h["utilization"] for h in st["hqd_stats"]]
    ok = deadlock is None and bool(np.array_equal(cells[:, :, 0], reference(n)))
    return {
        "deadlock": deadlock,
        "policy": policy,
        "swaps_per_quantum": swaps,
        "queues": queues,
        "n": n,
        "block": block,
        "kernels": len(recs),
        "makespan_us": makespan / 1e6,
        "context_switches": st["context_switches"],
        "quanta": st["quanta"],
        "hqd_utilization": sum(util) / len(util),
        "oversubscribed_us": st["oversubscribed_ps"] / 1e6,
        "correct": ok,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=int(os.environ.get("HSAEMU_BENCH_N", 32)))
    p.add_argument("--queues", default="1,2,4,8,16,32,64")
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument("--preset", default="gem5")
    p.add_argument("--block", type=int, default=1024, help="floats per cell (default 1024)")
    p.add_argument(
        "--swaps", type=int, default=1, help="queues swapped per quantum (default 1, as gem5)"
    )
    p.add_argument("--out", default=None, help="default bench/results/nw_wavefront_s<swaps>.json")
    args = p.parse_args(argv)
    qlist = [int(x) for x in args.queues.split(",")]
    policies = args.policies.split(",")
    rows = []
    wall = time.perf_counter()
    print(
        f"NW wavefront: {args.n}x{args.n} cells of {args.block} floats, preset {args.preset}, "
        f"{args.swaps} swap(s) per quantum; makespan in us of device time"
    )
    head = f"{'Q':>3} " + " ".join(f"{pol:>24}" for pol in policies)
    print(head)
    print(f"{'':>3} " + " ".join(f"{'makespan  swaps  util':>24}" for _ in policies))
    for nq in qlist:
        line = [run(args.n, nq, pol, args.preset, args.block, args.swaps) for pol in policies]
        finished = [r["makespan_us"] for r in line if r["deadlock"] is None]
        best = min(finished) if finished else None
        for r in line:
            r["vs_best"] = r["makespan_us"] / best if best and r["deadlock"] is None else None
        rows += line
        print(f"{nq:>3} " + " ".join(_cell(r) for r in line))
    ranked = [r for r in rows if r["vs_best"] is not None]
    if ranked:
        worst = max(ranked, key=lambda r: r["vs_best"])
        print(
            f"largest gap: {worst['policy']} at Q={worst['queues']} is {worst['vs_best']:.1f}x "
            "the best policy there"
        )
    stuck = [r for r in rows if r["deadlock"] is not None]
    for r in stuck:
        print(f"deadlock: {r['policy']} at Q={r['queues']} (the wait reported it; first lines:)")
        print("  " + "\n  ".join(r["deadlock"].splitlines()[-4:]))
    bad = [r for r in rows if r["deadlock"] is None and not r["correct"]]
    if bad:
        print("WRONG RESULT in runs marked '!'")
    out = pathlib.Path(args.out or f"bench/results/nw_wavefront_s{args.swaps}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "runs": rows}, indent=1))
    print(f"wrote {out} ({time.perf_counter() - wall:.1f} s wall)")
    return 1 if bad else 0


def _cell(r: dict) -> str:
    if r["deadlock"] is not None:
        return f"{'DEADLOCK':>10}  {r['context_switches']:>6} {r['hqd_utilization']:>5.2f}"
    mark = "" if r["correct"] else "!"
    return (
        f"{r['makespan_us']:>10.1f}{mark:1} {r['context_switches']:>6} {r['hqd_utilization']:>5.2f}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
