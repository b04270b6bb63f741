"""The built-in kernels: `square`, `vector_add`, `saxpy`, `empty`.

Argument order follows gem5-resources' `square` (out, in, n) and the usual BLAS-style
signatures. Resource counts are what clang-15 reports for the equivalent OpenCL C kernels at
-O3 for gfx900 (small kernels: a handful of VGPRs); cost profiles count the wave instructions
of that code: address arithmetic, the bounds check, one load per input and one store; the loads
of a work-item are independent, so each kernel waits for memory once (`mem_rounds=1`).
"""

from __future__ import annotations

import numpy as np

from hw_model.kernels.base import CostProfile, KernelSpec, WorkgroupContext, layout_args


def _in_bounds(ctx: WorkgroupContext, n: int) -> tuple[np.ndarray, int, int]:
    ids = ctx.global_linear_id
    ids = ids[ids < n]
    if ids.size == 0:
        return ids, 0, 0
    lo = int(ids.min())
    return ids - lo, lo, int(ids.max()) + 1 - lo


_SQUARE_ARGS, _SQUARE_KA = layout_args(("out", "ptr"), ("in", "ptr"), ("n", "u64"))


def _square(ctx: WorkgroupContext) -> None:
    out_p, in_p, n = (ctx.arg(a) for a in _SQUARE_ARGS)
    idx, lo, count = _in_bounds(ctx, int(n))
    if count == 0:
        return
    x = ctx.array(int(in_p), np.float32, lo, count)[idx]
    ctx.array(int(out_p), np.float32, lo, count)[idx] = x * x


SQUARE = KernelSpec(
    name="square",
    args=_SQUARE_ARGS,
    kernarg_size=_SQUARE_KA,
    vgprs=4,
    sgprs=16,
    cost=CostProfile(valu=8, salu=10, vmem=2, mem_rounds=1, load_bytes=4, store_bytes=4),
    body=_square,
)

_VADD_ARGS, _VADD_KA = layout_args(("a", "ptr"), ("b", "ptr"), ("c", "ptr"), ("n", "u64"))


def _vector_add(ctx: WorkgroupContext) -> None:
    a_p, b_p, c_p, n = (ctx.arg(a) for a in _VADD_ARGS)
    idx, lo, count = _in_bounds(ctx, int(n))
    if count == 0:
        return
    a = ctx.array(int(a_p), np.float32, lo, count)[idx]
    b = ctx.array(int(b_p), np.float32, lo, count)[idx]
    ctx.array(int(c_p), np.float32, lo, count)[idx] = a + b


VECTOR_ADD = KernelSpec(
    name="vector_add",
    args=_VADD_ARGS,
    kernarg_size=_VADD_KA,
    vgprs=6,
    sgprs=16,
    cost=CostProfile(valu=10, salu=12, vmem=3, mem_rounds=1, load_bytes=8, store_bytes=4),
    body=_vector_add,
)

_SAXPY_ARGS, _SAXPY_KA = layout_args(("alpha", "f32"), ("x", "ptr"), ("y", "ptr"), ("n", "u64"))


def _saxpy(ctx: WorkgroupContext) -> None:
    alpha, x_p, y_p, n = (ctx.arg(a) for a in _SAXPY_ARGS)
    idx, lo, count = _in_bounds(ctx, int(n))
    if count == 0:
        return
    x = ctx.array(int(x_p), np.float32, lo, count)[idx]
    y = ctx.array(int(y_p), np.float32, lo, count)
    y[idx] = np.float32(alpha) * x + y[idx]


SAXPY = KernelSpec(
    name="saxpy",
    args=_SAXPY_ARGS,
    kernarg_size=_SAXPY_KA,
    vgprs=6,
    sgprs=16,
    cost=CostProfile(valu=10, salu=12, vmem=3, mem_rounds=1, load_bytes=8, store_bytes=4),
    body=_saxpy,
)


def _empty(ctx: WorkgroupContext) -> None:
    return None


EMPTY = KernelSpec(
    name="empty",
    args=(),
    kernarg_size=0,
    vgprs=1,
    sgprs=8,
    cost=CostProfile(salu=1),
    body=_empty,
)
