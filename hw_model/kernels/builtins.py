"""The built-in kernels: `square`, `vector_add`, `saxpy`, `empty`.

Argument order follows gem5-resources' `square` (out, in, n) and the usual BLAS-style
signatures. Resource counts are what clang-15 reports for the equivalent OpenCL C kernels at
-O3 for gfx900 (small kernels: a handful of VGPRs); cost profiles count the wave instructions
of that code: address arithmetic, the bounds check, one load per input and one store; the loads
of a work-item are independent, so each kernel waits for memory once (`mem_rounds=1`).
"""

from __future__ import annotations

import numpy as np

from hw_model.kernels.base import CostProfile, GridContext, KernelSpec, layout_args


def _in_bounds(ctx: GridContext, n: int) -> tuple[np.ndarray | slice, int, int]:
    """(index into the span, span start, span length) of the batch's work-items below `n`.
    Contiguous ids give a slice (views, no gathers): the common 1-D case stays cheap."""
    lr = ctx.linear_range
    if lr is not None:
        lo, hi = lr[0], min(lr[1], n)
        return slice(0, max(hi - lo, 0)), lo, max(hi - lo, 0)
    ids = ctx.global_linear_id
    ids = ids[ids < n]
    if ids.size == 0:
        return ids, 0, 0
    lo = int(ids.min())
    return ids - lo, lo, int(ids.max()) + 1 - lo


_SQUARE_ARGS, _SQUARE_KA = layout_args(("out", "ptr"), ("in", "ptr"), ("n", "u64"))


def _square(ctx: GridContext) -> None:
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
    streams=(("in", 4), ("out", 4)),
)

_VADD_ARGS, _VADD_KA = layout_args(("a", "ptr"), ("b", "ptr"), ("c", "ptr"), ("n", "u64"))


def _vector_add(ctx: GridContext) -> None:
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
    streams=(("a", 4), ("b", 4), ("c", 4)),
)

_SAXPY_ARGS, _SAXPY_KA = layout_args(("alpha", "f32"), ("x", "ptr"), ("y", "ptr"), ("n", "u64"))


def _saxpy(ctx: GridContext) -> None:
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
    # y is read and written: 8 of its 12 bytes per work-item are y's
    streams=(("x", 4), ("y", 8)),
)


# Its code is `s_endpgm` alone: no effect on memory, no body to run.
EMPTY = KernelSpec(
    name="empty",
    args=(),
    kernarg_size=0,
    vgprs=1,
    sgprs=8,
    cost=CostProfile(salu=1),
    body=None,
)


# Blit kernels: what ROCr's BlitKernel runs for device-to-device copies, fills, and host copies
# when no SDMA queue is used (HSA_ENABLE_SDMA=0). Each work-item moves COPY_BYTES_PER_ITEM
# bytes as four 16-byte (dwordx4) loads and stores, like the unrolled loop of ROCr's copy
# kernel (amd_blit_shaders / blit kernel source, "CopyAligned"); the tail item moves fewer.
COPY_BYTES_PER_ITEM = 64

_COPY_ARGS, _COPY_KA = layout_args(("dst", "ptr"), ("src", "ptr"), ("size", "u64"))


def _byte_range(ctx: GridContext, total: int, per_item: int) -> tuple[int, int]:
    lr = ctx.linear_range
    if lr is not None:
        lo, hi = lr
        if hi <= lo:
            return 0, 0
    else:
        ids = ctx.global_linear_id
        if ids.size == 0:
            return 0, 0
        lo, hi = int(ids.min()), int(ids.max()) + 1
    lo, hi = min(lo * per_item, total), min(hi * per_item, total)
    return lo, hi - lo


def _copy_buffer(ctx: GridContext) -> None:
    dst, src, size = (int(ctx.arg(a)) for a in _COPY_ARGS)
    lo, count = _byte_range(ctx, size, COPY_BYTES_PER_ITEM)
    if count <= 0:
        return
    data = ctx.array(src, np.uint8, lo, count).copy()
    ctx.array(dst, np.uint8, lo, count)[:] = data


COPY_BUFFER = KernelSpec(
    name="copy_buffer",
    args=_COPY_ARGS,
    kernarg_size=_COPY_KA,
    vgprs=24,  # guess: four dwordx4 loads in flight need 16 VGPRs plus addresses
    sgprs=16,
    # address arithmetic, bounds check, 4 loads + 4 stores of 16 bytes, all loads independent
    cost=CostProfile(
        valu=12,
        salu=10,
        vmem=8,
        mem_rounds=1,
        load_bytes=COPY_BYTES_PER_ITEM,
        store_bytes=COPY_BYTES_PER_ITEM,
    ),
    body=_copy_buffer,
    streams=(("src", COPY_BYTES_PER_ITEM), ("dst", COPY_BYTES_PER_ITEM)),
)

FILL_BYTES_PER_ITEM = 64  # four dwordx4 stores per work-item, as the copy kernel
_FILL_ARGS, _FILL_KA = layout_args(("dst", "ptr"), ("value", "u32"), ("count", "u64"))


def _fill_buffer(ctx: GridContext) -> None:
    dst, value, count = (int(ctx.arg(a)) for a in _FILL_ARGS)
    lo, nbytes = _byte_range(ctx, count * 4, FILL_BYTES_PER_ITEM)
    if nbytes <= 0:
        return
    ctx.array(dst, np.uint32, lo // 4, nbytes // 4)[:] = np.uint32(value)


FILL_BUFFER = KernelSpec(
    name="fill_buffer",
    args=_FILL_ARGS,
    kernarg_size=_FILL_KA,
    vgprs=8,
    sgprs=16,
    cost=CostProfile(valu=8, salu=10, vmem=4, mem_rounds=1, store_bytes=FILL_BYTES_PER_ITEM),
    body=_fill_buffer,
    streams=(("dst", FILL_BYTES_PER_ITEM),),
)
