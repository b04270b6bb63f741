"""Microbenchmark kernels for timing experiments: `fma_loop` and the `chase` family.

These are the kernels a performance engineer writes to find a machine's roofs:

- `fma_loop(out: float*, n: u64, iters: u32)`: each work-item runs `iters` iterations of
  8 independent `v_fmac_f32` chains (8 accumulators hide the VALU pipeline), then stores the
  sum: compute-bound, it finds the VALU peak. Its loop count is a kernel argument, so its cost
  profile depends on the kernarg bytes (`KernelSpec.cost_fn`), as a real kernel's run time does.
- `chase(out: u32*, next: u32*, n: u64, hops: u32)`: each work-item follows `hops` dependent
  loads `p = next[p]` starting at its global id and stores where it ended: latency-bound, it
  shows how resident waves hide memory latency. A real kernel's register count is fixed by its
  code object, so the family comes in fixed variants, as a compiler emits them for different
  launch bounds: `chase` (8 VGPRs), `chase_v32`, `chase_v64`, `chase_v128`, `chase_v256`.
  LDS per workgroup varies per dispatch the real way: the packet's `group_segment_size`
  (dynamic shared memory).

Instruction counts follow the gfx9 code of the equivalent OpenCL C loops (address arithmetic,
loop counter, compare and branch per iteration); they are estimates, not compiler output.
"""

from __future__ import annotations

import struct

import numpy as np

from hw_model.kernels.base import CostProfile, GridContext, KernelSpec, layout_args

FMA_CHAINS = 8  # independent accumulators per work-item

_FMA_ARGS, _FMA_KA = layout_args(("out", "ptr"), ("n", "u64"), ("iters", "u32"))


def _fma_iters(kernarg: bytes) -> int:
    return struct.unpack_from("<I", kernarg, _FMA_ARGS[2].offset)[0]


def _fma_cost(iters: int) -> CostProfile:
    # Per iteration: 8 v_fmac_f32; s_add_u32 + s_cmp_lg_u32 + s_cbranch_scc1.
    # Around the loop: work-item id and bounds check, 7 adds for the sum, address, store.
    return CostProfile(
        valu=FMA_CHAINS * iters + 14,
        salu=3 * iters + 10,
        vmem=1,
        mem_rounds=1,
        store_bytes=4,
    )


def _fma_loop(ctx: GridContext) -> None:
    out_p, n, iters = (ctx.arg(a) for a in _FMA_ARGS)
    ids = ctx.global_linear_id
    ids = ids[ids < int(n)]
    if ids.size == 0:
        return
    lo = int(ids.min())
    # acc_j = fma(acc_j, 1.0f, 1.0f) `iters` times from acc_j = i: i + iters, exact in float32
    # while below 2**24; the sum of the 8 equal accumulators is 8 * (i + iters).
    acc = ids.astype(np.float32) + np.float32(iters)
    out = ctx.array(int(out_p), np.float32, lo, int(ids.max()) + 1 - lo)
    out[ids - lo] = np.float32(FMA_CHAINS) * acc


FMA_LOOP = KernelSpec(
    name="fma_loop",
    args=_FMA_ARGS,
    kernarg_size=_FMA_KA,
    vgprs=12,
    sgprs=16,
    cost=_fma_cost(1),
    body=_fma_loop,
    streams=(("out", 4),),
    cost_fn=lambda kernarg: _fma_cost(_fma_iters(kernarg)),
)

_CHASE_ARGS, _CHASE_KA = layout_args(("out", "ptr"), ("next", "ptr"), ("n", "u64"), ("hops", "u32"))


def _chase_hops(kernarg: bytes) -> int:
    return struct.unpack_from("<I", kernarg, _CHASE_ARGS[3].offset)[0]


def _chase_cost(hops: int) -> CostProfile:
    # Per hop: v_lshlrev + v_add_co + v_addc for &next[p], one global_load_dword and a wait;
    # s_add + s_cmp + s_cbranch for the loop. Then the store of where the chain ended.
    return CostProfile(
        valu=3 * hops + 8,
        salu=3 * hops + 10,
        vmem=hops + 1,
        mem_rounds=hops,
        load_bytes=4 * hops,
        store_bytes=4,
    )


def _chase(ctx: GridContext) -> None:
    out_p, next_p, n, hops = (ctx.arg(a) for a in _CHASE_ARGS)
    ids = ctx.global_linear_id
    ids = ids[ids < int(n)]
    if ids.size == 0:
        return
    p = ids.copy()
    for _ in range(int(hops)):
        # Read exactly the span of `next` the lanes touch, through the checked view: a chain
        # that leaves the buffer faults as it would on the GPU.
        lo, hi = int(p.min()), int(p.max())
        p = ctx.array(int(next_p), np.uint32, lo, hi + 1 - lo)[p - lo].astype(np.int64)
    lo = int(ids.min())
    out = ctx.array(int(out_p), np.uint32, lo, int(ids.max()) + 1 - lo)
    out[ids - lo] = p.astype(np.uint32)


def _chase_variant(name: str, vgprs: int) -> KernelSpec:
    return KernelSpec(
        name=name,
        args=_CHASE_ARGS,
        kernarg_size=_CHASE_KA,
        vgprs=vgprs,
        sgprs=16,
        cost=_chase_cost(1),
        body=_chase,
        # Streams are per work-item weights: the chain's loads (4 bytes a hop) dwarf the one
        # 4-byte store of where it ended, so the chase is charged where `next` lives.
        streams=(("next", 4),),
        cost_fn=lambda kernarg: _chase_cost(_chase_hops(kernarg)),
    )


CHASE = _chase_variant("chase", 8)
CHASE_VARIANTS = [CHASE] + [_chase_variant(f"chase_v{v}", v) for v in (32, 64, 128, 256)]

MICROBENCH_KERNELS = [FMA_LOOP, *CHASE_VARIANTS]
