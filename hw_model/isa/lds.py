"""DS instructions of gfx9: LDS loads, stores and atomics, and the cross-lane DS ops.

The LDS of a wave's workgroup is `ctx.lds[waves.wg[wave]]`. A lane's address is its ADDR
VGPR plus the instruction's offset: OFFSET1:OFFSET0 as one unsigned 16-bit offset, or for the
read2/write2 forms two 8-bit offsets in units of the element size (x64 for the ST64 forms).
An access outside the workgroup's allocation reads 0 and writes nothing (Vega ISA guide,
"LDS ... out-of-range"); on gfx9 M0 no longer clamps LDS addresses (LLVM's
`ldsRequiresM0Init` is false from GFX9 on), so it plays no part here. GDS is not modelled:
an instruction with the GDS bit raises IllegalInstruction, as do the FFT/rotate modes of
ds_swizzle_b32; ds_*_addtid, ds_*_src2, ds_append/consume and ds_condxchg32 have no entry
(the executor stops the queue naming them).

Lanes of several waves of one workgroup that execute the same DS atomic together are
applied in wave order, then lane order, each seeing the previous one's result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hw_model.isa.opcodes import ROWS
from hw_model.isa.vmem import (
    ATOMIC_OPS,
    Access,
    _do,
    _Lanes,
    load_result,
    read_regs,
    store_bytes,
    write_regs,
)
from hw_model.isa.wave import LANES, IllegalInstruction, WaveContext


@dataclass(frozen=True)
class DsOp:
    kind: str  # read, write, read2, write2, atomic, wrxchg2, swizzle, permute, bpermute, nop
    size: int = 4  # bytes per element
    form: str = ""  # read: load forms of vmem.Access; write: "hi"
    op: str | None = None  # ATOMIC_OPS key
    rtn: bool = False  # atomic returns the pre-op value in vdst
    two: bool = False  # atomic takes data0 and data1 (cmpst, mskor, wrap)
    st64: bool = False  # read2/write2 offsets in units of 64 elements


_ROWS: list[tuple[str, DsOp]] = [
    ("ds_nop", DsOp("nop")),
    ("ds_read_b32", DsOp("read", 4)),
    ("ds_read_b64", DsOp("read", 8)),
    ("ds_read_b96", DsOp("read", 12)),
    ("ds_read_b128", DsOp("read", 16)),
    ("ds_read_u8", DsOp("read", 1, "u")),
    ("ds_read_i8", DsOp("read", 1, "s")),
    ("ds_read_u16", DsOp("read", 2, "u")),
    ("ds_read_i16", DsOp("read", 2, "s")),
    ("ds_read_u8_d16", DsOp("read", 1, "d16u")),
    ("ds_read_u8_d16_hi", DsOp("read", 1, "d16_hiu")),
    ("ds_read_i8_d16", DsOp("read", 1, "d16s")),
    ("ds_read_i8_d16_hi", DsOp("read", 1, "d16_his")),
    ("ds_read_u16_d16", DsOp("read", 2, "d16")),
    ("ds_read_u16_d16_hi", DsOp("read", 2, "d16_hi")),
    ("ds_read2_b32", DsOp("read2", 4)),
    ("ds_read2_b64", DsOp("read2", 8)),
    ("ds_read2st64_b32", DsOp("read2", 4, st64=True)),
    ("ds_read2st64_b64", DsOp("read2", 8, st64=True)),
    ("ds_write_b8", DsOp("write", 1)),
    ("ds_write_b16", DsOp("write", 2)),
    ("ds_write_b32", DsOp("write", 4)),
    ("ds_write_b64", DsOp("write", 8)),
    ("ds_write_b96", DsOp("write", 12)),
    ("ds_write_b128", DsOp("write", 16)),
    ("ds_write_b8_d16_hi", DsOp("write", 1, "hi")),
    ("ds_write_b16_d16_hi", DsOp("write", 2, "hi")),
    ("ds_write2_b32", DsOp("write2", 4)),
    ("ds_write2_b64", DsOp("write2", 8)),
    ("ds_write2st64_b32", DsOp("write2", 4, st64=True)),
    ("ds_write2st64_b64", DsOp("write2", 8, st64=True)),
    ("ds_wrxchg2_rtn_b32", DsOp("wrxchg2", 4, op="swap", rtn=True)),
    ("ds_wrxchg2_rtn_b64", DsOp("wrxchg2", 8, op="swap", rtn=True)),
    ("ds_wrxchg2st64_rtn_b32", DsOp("wrxchg2", 4, op="swap", rtn=True, st64=True)),
    ("ds_wrxchg2st64_rtn_b64", DsOp("wrxchg2", 8, op="swap", rtn=True, st64=True)),
    ("ds_swizzle_b32", DsOp("swizzle")),
    ("ds_permute_b32", DsOp("permute")),
    ("ds_bpermute_b32", DsOp("bpermute")),
]

# Atomics: (name in the mnemonic, operation, operand bytes, takes data0 and data1). Each has
# a plain form ds_<op>_<type> and a returning form ds_<op>_rtn_<type> (the decoder keeps only
# those the target has).
_ATOMICS = [
    *((f"{a}_u32", a, 4) for a in ("add", "sub", "rsub", "inc", "dec")),
    *((f"{a}_u64", a, 8) for a in ("add", "sub", "rsub", "inc", "dec")),
    ("min_i32", "smin", 4),
    ("max_i32", "smax", 4),
    ("min_u32", "umin", 4),
    ("max_u32", "umax", 4),
    ("min_i64", "smin", 8),
    ("max_i64", "smax", 8),
    ("min_u64", "umin", 8),
    ("max_u64", "umax", 8),
    *((f"{a}_b32", a, 4) for a in ("and", "or", "xor", "mskor")),
    *((f"{a}_b64", a, 8) for a in ("and", "or", "xor", "mskor")),
    ("cmpst_b32", "cmpswap", 4),
    ("cmpst_b64", "cmpswap", 8),
    ("cmpst_f32", "fcmpswap", 4),
    ("cmpst_f64", "fcmpswap", 8),
    ("min_f32", "fmin", 4),
    ("max_f32", "fmax", 4),
    ("min_f64", "fmin", 8),
    ("max_f64", "fmax", 8),
    ("add_f32", "fadd", 4),
    ("add_f64", "fadd", 8),
    ("pk_add_f16", "pk_fadd_f16", 4),
    ("wrxchg_b32", "swap", 4),
    ("wrxchg_b64", "swap", 8),
    ("wrap_b32", "wrap", 4),
]
_TWO_DATA = ("cmpswap", "fcmpswap", "mskor", "wrap")
for _name, _op, _size in _ATOMICS:
    _type = _name.rsplit("_", 1)
    for _rtn in (False, True):
        _m = f"ds_{_type[0]}_rtn_{_type[1]}" if _rtn else f"ds_{_name}"
        _ROWS.append((_m, DsOp("atomic", _size, op=_op, rtn=_rtn, two=_op in _TWO_DATA)))

DS_OPS: dict[str, DsOp] = dict(_ROWS)


def _bit(ins, bit: int) -> int:
    return (ins.words[bit // 32] >> (bit % 32)) & 1


def _regfile(ctx: WaveContext, ins) -> np.ndarray:
    """VGPRs, or AccVGPRs for data/vdst when the ACC bit (25) is set (gfx90a and later)."""
    if ctx.target != "gfx900" and _bit(ins, 25):
        return ctx.waves.agpr
    return ctx.waves.vgpr


def _bytes(regs: np.ndarray, size: int) -> np.ndarray:
    return np.ascontiguousarray(regs.astype("<u4")).view(np.uint8)[..., :size]


def _count(ctx: WaveContext, w, lanes: np.ndarray, nbytes: int) -> None:
    """LDS traffic per wave, for a timing model that asks for it (`ctx.lds_bytes`)."""
    counter = getattr(ctx, "lds_bytes", None)
    if counter is not None:
        counter[w] += lanes.sum(axis=1) * nbytes


def _cross_lane(kind: str):
    """ds_swizzle_b32 / ds_permute_b32 / ds_bpermute_b32: lanes exchange data through the
    LDS crossbar without touching LDS memory (Vega ISA guide, DS opcode descriptions). A
    source lane EXEC disables provides 0."""

    def run(ctx: WaveContext, ins, w) -> None:
        waves = ctx.waves
        f = ins.fields
        lanes = waves.lanes(w)
        file = _regfile(ctx, ins)
        what = ins.mnemonic
        offset = f["offset0"] | f["offset1"] << 8
        i = np.arange(LANES)
        if kind == "swizzle":
            src = read_regs(waves.vgpr, w, f["addr"], 1, what)[..., 0]
            if offset & 0x8000:
                if offset >= 0xC000:
                    raise IllegalInstruction(
                        f"{what} offset {offset:#x}: the rotate/FFT modes are not supported"
                    )
                # QDMode: each lane of a quad picks a lane of the quad by a 2-bit selector.
                j = (i & ~3) | ((offset >> (2 * (i & 3))) & 3)
            else:
                and_mask, or_mask, xor_mask = offset & 31, (offset >> 5) & 31, (offset >> 10) & 31
                j = ((((i & 31) & and_mask) | or_mask) ^ xor_mask) | (i & 32)
            out = np.where(lanes[:, j], src[:, j], 0).astype(np.uint32)
        else:
            addr = read_regs(waves.vgpr, w, f["addr"], 1, what)[..., 0].astype(np.int64)
            data = read_regs(file, w, f["data0"], 1, what)[..., 0]
            sel = ((addr + offset) // 4) % LANES  # (k, 64): a lane number per lane
            rows = np.arange(lanes.shape[0])[:, None]
            if kind == "bpermute":  # lane i reads lane sel[i]
                out = np.where(lanes[rows, sel], data[rows, sel], 0).astype(np.uint32)
            else:  # permute: lane i writes lane sel[i]; the highest lane wins
                out = np.zeros_like(data)
                for lane in range(LANES):
                    act = lanes[:, lane]
                    dst = sel[act, lane]
                    out[np.flatnonzero(act), dst] = data[act, lane]
        write_regs(file, w, f["vdst"], out[..., None], lanes, what)

    return run


def _ds(op: DsOp):
    def run(ctx: WaveContext, ins, w) -> None:
        f = ins.fields
        what = ins.mnemonic
        if f["gds"]:
            raise IllegalInstruction(f"{what} with gds: the global data share is not modelled")
        waves = ctx.waves
        lanes = waves.lanes(w)
        L = _Lanes(ctx, w, lanes)
        if L.m == 0:
            return
        file = _regfile(ctx, ins)
        base = L.take(waves.vgpr[f["addr"]][w]).astype(np.int64)
        if op.kind in ("read2", "write2", "wrxchg2"):
            unit = op.size * (64 if op.st64 else 1)
            addrs = (base + f["offset0"] * unit, base + f["offset1"] * unit)
        else:
            addrs = (base + (f["offset0"] | f["offset1"] << 8),)
        dw = max(1, op.size // 4)
        results = []
        for n, addr in enumerate(addrs):
            route = {"lds": (None, addr)}
            if op.kind in ("read", "read2"):
                acc = Access("load", op.size, op.form)
                results.append(_do(ctx, L, acc, route))
                continue
            if op.kind in ("write", "write2"):
                reg = f["data0"] if n == 0 else f["data1"]
                regs = L.take(read_regs(file, w, reg, dw, what))
                _do(
                    ctx,
                    L,
                    Access("store", op.size, op.form),
                    route,
                    store_bytes(Access("store", op.size, op.form), regs),
                )
                continue
            acc = Access("atomic", op.size, op=op.op)
            if op.kind == "wrxchg2":
                src = _bytes(
                    L.take(read_regs(file, w, f["data0"] if n == 0 else f["data1"], dw, what)),
                    op.size,
                )
                cmp = None
            elif op.two:  # compare value / mask in data0, the new value in data1
                cmp = _bytes(L.take(read_regs(file, w, f["data0"], dw, what)), op.size)
                src = _bytes(L.take(read_regs(file, w, f["data1"], dw, what)), op.size)
            else:
                src = _bytes(L.take(read_regs(file, w, f["data0"], dw, what)), op.size)
                cmp = None
            results.append(_do(ctx, L, acc, route, src, cmp))
        moved = op.size * len(addrs)
        _count(ctx, w, lanes, moved)
        if op.kind in ("read", "read2") or op.rtn:
            raw = L.spread(np.concatenate(results, axis=1))
            acc = Access("load", raw.shape[-1], op.form if op.kind == "read" else "")
            cur = read_regs(file, w, f["vdst"], 1, what) if "d16" in op.form else None
            write_regs(file, w, f["vdst"], load_result(acc, raw, cur), lanes, what)

    return run


def _build() -> dict[str, Callable]:
    names = {row[1] for row in ROWS if row[0] == "DS"}
    ops: dict[str, Callable] = {}
    for name, op in DS_OPS.items():
        if name not in names:
            continue
        if op.kind == "nop":
            ops[name] = lambda ctx, ins, w: None
        elif op.kind in ("swizzle", "permute", "bpermute"):
            ops[name] = _cross_lane(op.kind)
        else:
            assert op.op is None or op.op in ATOMIC_OPS
            ops[name] = _ds(op)
    return ops


OPS: dict[str, Callable] = _build()
