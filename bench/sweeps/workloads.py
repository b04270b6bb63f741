"""Workloads of the example sweeps: `function(rt, **params) -> dict of figures`.

`hsaemu sweep` puts this directory on the import path of every worker, so a spec names these
as `workloads:<function>`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hw_model.kernels import BUILTINS
from hw_model.occupancy import occupancy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for nw_wavefront

import nw_wavefront  # noqa: E402

WG = 256  # work-items per workgroup, as bench/timing_effects.py
CHASE_BY_VGPRS = {BUILTINS[k].vgprs: k for k in BUILTINS if k.startswith("chase")}


def nw(rt, n: int, queues: int, block: int = 1024, swaps: int = 1) -> dict:
    """The Needleman-Wunsch wavefront of bench/nw_wavefront.py on the cell's machine, under
    the machine's scheduler policy (the `scheduler_policy` axis) with `swaps` per quantum."""
    policy = rt.system.gpus[0].scheduler.policy.name
    r = nw_wavefront.wavefront(rt, n, queues, policy, block, swaps)
    return {
        "makespan_us": None if r["deadlock"] else r["makespan_us"],
        "deadlock": r["deadlock"] is not None,
        "context_switches": r["context_switches"],
        "quanta": r["quanta"],
        "hqd_utilization": r["hqd_utilization"],
        "oversubscribed_us": r["oversubscribed_us"],
        "kernels": r["kernels"],
        "correct": r["correct"],
    }


def chase_occupancy(rt, vgprs: int, lds: int, wgs_per_cu: int = 4, hops: int = 8) -> dict:
    """A latency-bound pointer chase (`chase` variants of hw_model/kernels/microbench.py, one
    per VGPR count) over `wgs_per_cu` workgroups per CU with `lds` bytes of dynamic LDS per
    workgroup: occupancy from the preset's register and LDS budgets, and the kernel time."""
    if vgprs not in CHASE_BY_VGPRS:
        raise ValueError(f"vgprs = {vgprs}: the chase kernels have {sorted(CHASE_BY_VGPRS)}")
    name = CHASE_BY_VGPRS[vgprs]
    gpu = rt.gpus[0]
    spec = rt.system.gpus[0].spec
    k = BUILTINS[name]
    occ = occupancy(spec, workgroup_size=WG, vgprs=k.vgprs, sgprs=k.sgprs, lds=lds)
    wgs = spec.num_cus * wgs_per_cu
    n = wgs * WG
    kernel = rt.load_code_object(f"builtin:{name}").kernel(name)
    buf = gpu.pools()[0].allocate(4 * n)
    q = gpu.create_queue(256)
    h = q.dispatch(kernel, grid=n, workgroup=WG, args=(buf, buf, n, hops), group_segment_size=lds)
    h.wait()
    start, end = h.dispatch_time()
    us = (end - start) / 1000
    return {
        "kernel": name,
        "waves_per_simd": occ.waves_per_simd,
        "workgroups_per_cu": occ.workgroups_per_cu,
        "occupancy": occ.occupancy_fraction,
        "limited_by": ",".join(occ.limited_by),
        "time_us": us,
        # bytes moved per work-item: `hops` 4-byte loads and one 4-byte store
        "gbps": n * (4 * hops + 4) / (us * 1000),
    }
