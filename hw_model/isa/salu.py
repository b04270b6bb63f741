"""Scalar instructions of gfx9: SOP2, SOP1, SOPK, SOPC, SOPP and SMEM, as tables.

Semantics from AMD's "Vega" Instruction Set Architecture reference guide, chapter 5
("Scalar ALU Operations") and chapter 6 ("Scalar Memory Operations"), which the MI200 and
MI300 guides keep for these encodings. Every row names the instruction as LLVM's
disassembler does, the operand widths and the operation on numpy arrays over the selected
waves; `OPS` maps each mnemonic to a function `fn(ctx, ins, w)`.

SCC: an instruction whose row gives an SCC rule writes SCC for every selected wave; the
others leave it alone (as the guide's per-instruction "SCC = ..." lines say). Values are
carried as int64 (32-bit operands, so carries and signed overflow are visible) or uint64
(64-bit operands).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hw_model.isa.wave import EXEC_LO, M0, IllegalInstruction, WaveContext
from hw_model.memory import MemoryFault

M32 = 0xFFFFFFFF
_M32 = np.int64(M32)
_U64_1 = np.uint64(1)
_U64_0 = np.uint64(0)
_ALL64 = np.uint64(0xFFFFFFFFFFFFFFFF)

Op = Callable[[WaveContext, object, object], None]


# -- helpers -------------------------------------------------------------------------------
def _s32(x) -> np.ndarray:
    """Unsigned 32-bit values (any int dtype) as signed int64."""
    return (np.asarray(x).astype(np.int64) & _M32).astype(np.uint32).view(np.int32).astype(np.int64)


def _u64(x) -> np.ndarray:
    return np.asarray(x).astype(np.uint64)


def _i64(x) -> np.ndarray:
    return _u64(x).view(np.int64)


def _shl64(x: np.ndarray, n) -> np.ndarray:
    """x << n for uint64 with n in 0..64 (64 gives 0, which numpy's << does not promise)."""
    n = _u64(n)
    return np.where(n >= 64, _U64_0, x << np.minimum(n, np.uint64(63)))


def _shr64(x: np.ndarray, n) -> np.ndarray:
    n = _u64(n)
    return np.where(n >= 64, _U64_0, x >> np.minimum(n, np.uint64(63)))


def _mask64(width) -> np.ndarray:
    """(1 << width) - 1 for width 0..64."""
    return _shl64(np.full(np.shape(width), 1, np.uint64), width) - _U64_1


def _msb(x: np.ndarray) -> np.ndarray:
    """Index of the highest set bit of uint64 values, -1 for 0 (exact, no float log)."""
    x = _u64(x).copy()
    out = np.zeros(x.shape, dtype=np.int64)
    for s in (32, 16, 8, 4, 2, 1):
        hi = x >> np.uint64(s)
        big = hi != 0
        out += np.where(big, s, 0)
        x = np.where(big, hi, x)
    return np.where(x == 0, -1, out)


def _lsb(x: np.ndarray) -> np.ndarray:
    """Index of the lowest set bit, -1 for 0."""
    x = _u64(x)
    return _msb(x & (~x + _U64_1))


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(_u64(x)).astype(np.int64)


def _brev(x: np.ndarray, bits: int) -> np.ndarray:
    x = _u64(x)
    out = np.zeros(x.shape, dtype=np.uint64)
    for i in range(bits):
        out |= ((x >> np.uint64(i)) & _U64_1) << np.uint64(bits - 1 - i)
    return out


def _sext(v: np.ndarray, bits: int) -> np.ndarray:
    """Sign-extend the low `bits` of int64 values."""
    m = np.int64(1 << (bits - 1))
    v = np.asarray(v).astype(np.int64) & np.int64((1 << bits) - 1)
    return (v ^ m) - m


def _simm16(ins) -> int:
    v = ins.fields["simm16"]
    return v - 0x10000 if v & 0x8000 else v


# -- operand access ------------------------------------------------------------------------
def _src(ctx: WaveContext, ins, w, field: str, width: int) -> np.ndarray:
    op = ins.fields[field]
    if width == 64:
        return ctx.waves.scalar64(w, op, ins.literal)
    return ctx.waves.scalar(w, op, ins.literal).astype(np.int64)


def _dst(ctx: WaveContext, ins, w, value, width: int, field: str = "sdst") -> None:
    reg = ins.fields[field]
    if width == 64:
        ctx.waves.write_sgpr64(w, reg, _u64(value))
    else:
        ctx.waves.write_sgpr(w, reg, (np.asarray(value).astype(np.int64) & _M32).astype(np.uint32))


def _set_scc(ctx: WaveContext, w, scc) -> None:
    if scc is not None:
        ctx.waves.scc[w] = np.asarray(scc, dtype=bool)


def _nz(d) -> np.ndarray:
    return np.asarray(d) != 0


# -- SOP2: D = f(S0, S1) ---------------------------------------------------------------------
def _add_i32(a, b, c):
    r = _s32(a) + _s32(b)
    return r, (r > 0x7FFFFFFF) | (r < -0x80000000)


def _sub_i32(a, b, c):
    r = _s32(a) - _s32(b)
    return r, (r > 0x7FFFFFFF) | (r < -0x80000000)


def _bfe32(a, b, signed: bool):
    off = b & 31
    width = np.minimum((b >> 16) & 0x7F, 32)
    field = (a >> off) & ((np.int64(1) << width) - 1)
    if signed:
        sign = np.where(width > 0, np.int64(1) << np.maximum(width - 1, 0), 0)
        field = np.where(width > 0, (field ^ sign) - sign, 0)
    return field & _M32


def _bfe64(a, b, signed: bool):
    b = _u64(b)
    off = b & np.uint64(63)
    width = np.minimum((b >> np.uint64(16)) & np.uint64(0x7F), np.uint64(64))
    field = _shr64(a, off) & _mask64(width)
    if signed:
        sign = _shl64(np.ones_like(field), np.where(width > 0, width - _U64_1, 0))
        field = np.where(width > 0, (field ^ sign) - sign, _U64_0)
    return field


def _pick(a, b, first):
    """min/max: S0 where `first`, else S1; SCC = 1 when S0 was chosen."""
    return np.where(first, a, b), first


def _with_nz(d):
    return d, _nz(d)


def _lshl_add(n):
    # Vega ISA guide: D = (S0 << n) + S1 computed in 64 bits; SCC = the result >= 2^32.
    def f(a, b, c):
        r = (a << n) + b
        return r, r > M32

    return f


# (mnemonic, dst bits, src0 bits, src1 bits, f(S0, S1, SCC) -> (D, SCC or None))
SOP2_ROWS: tuple[tuple[str, int, int, int, Callable], ...] = (
    ("s_add_u32", 32, 32, 32, lambda a, b, c: (a + b, (a + b) > M32)),
    ("s_sub_u32", 32, 32, 32, lambda a, b, c: (a - b, b > a)),
    ("s_add_i32", 32, 32, 32, _add_i32),
    ("s_sub_i32", 32, 32, 32, _sub_i32),
    ("s_addc_u32", 32, 32, 32, lambda a, b, c: (a + b + c, (a + b + c) > M32)),
    ("s_subb_u32", 32, 32, 32, lambda a, b, c: (a - b - c, (a - b - c) < 0)),
    (
        "s_min_i32",
        32,
        32,
        32,
        lambda a, b, c: (np.where(_s32(a) < _s32(b), a, b), _s32(a) < _s32(b)),
    ),
    ("s_min_u32", 32, 32, 32, lambda a, b, c: (np.where(a < b, a, b), a < b)),
    (
        "s_max_i32",
        32,
        32,
        32,
        lambda a, b, c: (np.where(_s32(a) > _s32(b), a, b), _s32(a) > _s32(b)),
    ),
    ("s_max_u32", 32, 32, 32, lambda a, b, c: (np.where(a > b, a, b), a > b)),
    ("s_cselect_b32", 32, 32, 32, lambda a, b, c: (np.where(c != 0, a, b), None)),
    ("s_cselect_b64", 64, 64, 64, lambda a, b, c: (np.where(c != 0, a, b), None)),
    ("s_and_b32", 32, 32, 32, lambda a, b, c: (a & b, _nz(a & b))),
    ("s_and_b64", 64, 64, 64, lambda a, b, c: (a & b, _nz(a & b))),
    ("s_or_b32", 32, 32, 32, lambda a, b, c: (a | b, _nz(a | b))),
    ("s_or_b64", 64, 64, 64, lambda a, b, c: (a | b, _nz(a | b))),
    ("s_xor_b32", 32, 32, 32, lambda a, b, c: (a ^ b, _nz(a ^ b))),
    ("s_xor_b64", 64, 64, 64, lambda a, b, c: (a ^ b, _nz(a ^ b))),
    ("s_andn2_b32", 32, 32, 32, lambda a, b, c: (a & ~b & _M32, _nz(a & ~b & _M32))),
    ("s_andn2_b64", 64, 64, 64, lambda a, b, c: (a & ~b, _nz(a & ~b))),
    ("s_orn2_b32", 32, 32, 32, lambda a, b, c: ((a | ~b) & _M32, _nz((a | ~b) & _M32))),
    ("s_orn2_b64", 64, 64, 64, lambda a, b, c: (a | ~b, _nz(a | ~b))),
    ("s_nand_b32", 32, 32, 32, lambda a, b, c: (~(a & b) & _M32, _nz(~(a & b) & _M32))),
    ("s_nand_b64", 64, 64, 64, lambda a, b, c: (~(a & b), _nz(~(a & b)))),
    ("s_nor_b32", 32, 32, 32, lambda a, b, c: (~(a | b) & _M32, _nz(~(a | b) & _M32))),
    ("s_nor_b64", 64, 64, 64, lambda a, b, c: (~(a | b), _nz(~(a | b)))),
    ("s_xnor_b32", 32, 32, 32, lambda a, b, c: (~(a ^ b) & _M32, _nz(~(a ^ b) & _M32))),
    ("s_xnor_b64", 64, 64, 64, lambda a, b, c: (~(a ^ b), _nz(~(a ^ b)))),
    (
        "s_lshl_b32",
        32,
        32,
        32,
        lambda a, b, c: ((a << (b & 31)) & _M32, _nz((a << (b & 31)) & _M32)),
    ),
    ("s_lshl_b64", 64, 64, 32, lambda a, b, c: (_shl64(a, b & 63), _nz(_shl64(a, b & 63)))),
    ("s_lshr_b32", 32, 32, 32, lambda a, b, c: (a >> (b & 31), _nz(a >> (b & 31)))),
    ("s_lshr_b64", 64, 64, 32, lambda a, b, c: (_shr64(a, b & 63), _nz(_shr64(a, b & 63)))),
    ("s_ashr_i32", 32, 32, 32, lambda a, b, c: (_s32(a) >> (b & 31), _nz(_s32(a) >> (b & 31)))),
    (
        "s_ashr_i64",
        64,
        64,
        32,
        lambda a, b, c: (
            _u64(_i64(a) >> (_i64(b) & 63)),
            _nz(_i64(a) >> (_i64(b) & 63)),
        ),
    ),
    ("s_bfm_b32", 32, 32, 32, lambda a, b, c: ((((1 << (a & 31)) - 1) << (b & 31)) & _M32, None)),
    (
        "s_bfm_b64",
        64,
        32,
        32,
        lambda a, b, c: (_shl64(_mask64(_u64(a) & np.uint64(63)), _u64(b) & np.uint64(63)), None),
    ),
    ("s_mul_i32", 32, 32, 32, lambda a, b, c: ((_s32(a) * _s32(b)) & _M32, None)),
    ("s_bfe_u32", 32, 32, 32, lambda a, b, c: (_bfe32(a, b, False), _nz(_bfe32(a, b, False)))),
    ("s_bfe_i32", 32, 32, 32, lambda a, b, c: (_bfe32(a, b, True), _nz(_bfe32(a, b, True)))),
    ("s_bfe_u64", 64, 64, 32, lambda a, b, c: (_bfe64(a, b, False), _nz(_bfe64(a, b, False)))),
    ("s_bfe_i64", 64, 64, 32, lambda a, b, c: (_bfe64(a, b, True), _nz(_bfe64(a, b, True)))),
    ("s_absdiff_i32", 32, 32, 32, lambda a, b, c: (abs(_s32(a) - _s32(b)), _nz(_s32(a) - _s32(b)))),
    ("s_mul_hi_u32", 32, 32, 32, lambda a, b, c: ((_u64(a) * _u64(b)) >> np.uint64(32), None)),
    ("s_mul_hi_i32", 32, 32, 32, lambda a, b, c: ((_s32(a) * _s32(b)) >> 32, None)),
    ("s_lshl1_add_u32", 32, 32, 32, _lshl_add(1)),
    ("s_lshl2_add_u32", 32, 32, 32, _lshl_add(2)),
    ("s_lshl3_add_u32", 32, 32, 32, _lshl_add(3)),
    ("s_lshl4_add_u32", 32, 32, 32, _lshl_add(4)),
    ("s_pack_ll_b32_b16", 32, 32, 32, lambda a, b, c: ((a & 0xFFFF) | ((b & 0xFFFF) << 16), None)),
    ("s_pack_lh_b32_b16", 32, 32, 32, lambda a, b, c: ((a & 0xFFFF) | (b & 0xFFFF0000), None)),
    ("s_pack_hh_b32_b16", 32, 32, 32, lambda a, b, c: ((a >> 16) | (b & 0xFFFF0000), None)),
)


def _sop2(dw: int, w0: int, w1: int, f: Callable) -> Op:
    def op(ctx: WaveContext, ins, w) -> None:
        a = _src(ctx, ins, w, "ssrc0", w0)
        b = _src(ctx, ins, w, "ssrc1", w1)
        if w1 == 32 and w0 == 64:
            b = b.astype(np.uint64)
        if w0 == 32 and w1 == 32 and dw == 64:
            pass
        scc = ctx.waves.scc[w]
        c = scc.astype(np.uint64 if w0 == 64 else np.int64)
        d, new = f(a, b, c)
        _dst(ctx, ins, w, d, dw)
        _set_scc(ctx, w, new)

    return op


# -- SOP1: D = f(S0) -------------------------------------------------------------------------
def _wqm(a, bits: int):
    out = np.zeros(np.shape(a), dtype=np.uint64)
    a = _u64(a)
    for q in range(bits // 4):
        sh = np.uint64(4 * q)
        out |= np.where((a >> sh) & np.uint64(0xF), np.uint64(0xF) << sh, _U64_0)
    return out


def _quadmask(a, bits: int):
    out = np.zeros(np.shape(a), dtype=np.uint64)
    a = _u64(a)
    for q in range(bits // 4):
        out |= np.where((a >> np.uint64(4 * q)) & np.uint64(0xF), _U64_1 << np.uint64(q), _U64_0)
    return out


def _flbit_signed(a, bits: int):
    """Leading bits equal to the sign bit (counted from the MSB); -1 for 0 and -1."""
    a = _u64(a)
    full = np.uint64((1 << bits) - 1)
    neg = (a >> np.uint64(bits - 1)) & _U64_1 != 0
    x = np.where(neg, ~a & full, a)
    return np.where(x == 0, -1, bits - 1 - _msb(x))


def _bitreplicate(a):
    a = _u64(a)
    out = np.zeros(a.shape, dtype=np.uint64)
    for i in range(32):
        bit = (a >> np.uint64(i)) & _U64_1
        out |= (bit << np.uint64(2 * i)) | (bit << np.uint64(2 * i + 1))
    return out


# (mnemonic, dst bits, src bits, f(S0) -> (D, SCC or None))
SOP1_ROWS: tuple[tuple[str, int, int, Callable], ...] = (
    ("s_mov_b32", 32, 32, lambda a: (a, None)),
    ("s_mov_b64", 64, 64, lambda a: (a, None)),
    ("s_not_b32", 32, 32, lambda a: (~a & _M32, _nz(~a & _M32))),
    ("s_not_b64", 64, 64, lambda a: (~a, _nz(~a))),
    ("s_wqm_b32", 32, 32, lambda a: (_wqm(a, 32), _nz(_wqm(a, 32)))),
    ("s_wqm_b64", 64, 64, lambda a: (_wqm(a, 64), _nz(_wqm(a, 64)))),
    ("s_brev_b32", 32, 32, lambda a: (_brev(a, 32), None)),
    ("s_brev_b64", 64, 64, lambda a: (_brev(a, 64), None)),
    ("s_bcnt0_i32_b32", 32, 32, lambda a: (32 - _popcount(a), _nz(32 - _popcount(a)))),
    ("s_bcnt0_i32_b64", 32, 64, lambda a: (64 - _popcount(a), _nz(64 - _popcount(a)))),
    ("s_bcnt1_i32_b32", 32, 32, lambda a: (_popcount(a), _nz(_popcount(a)))),
    ("s_bcnt1_i32_b64", 32, 64, lambda a: (_popcount(a), _nz(_popcount(a)))),
    ("s_ff0_i32_b32", 32, 32, lambda a: (_lsb(~a & _M32), None)),
    ("s_ff0_i32_b64", 32, 64, lambda a: (_lsb(~a), None)),
    ("s_ff1_i32_b32", 32, 32, lambda a: (_lsb(a), None)),
    ("s_ff1_i32_b64", 32, 64, lambda a: (_lsb(a), None)),
    ("s_flbit_i32_b32", 32, 32, lambda a: (np.where(a == 0, -1, 31 - _msb(a)), None)),
    ("s_flbit_i32_b64", 32, 64, lambda a: (np.where(a == 0, -1, 63 - _msb(a)), None)),
    ("s_flbit_i32", 32, 32, lambda a: (_flbit_signed(a, 32), None)),
    ("s_flbit_i32_i64", 32, 64, lambda a: (_flbit_signed(a, 64), None)),
    ("s_sext_i32_i8", 32, 32, lambda a: (_sext(a, 8), None)),
    ("s_sext_i32_i16", 32, 32, lambda a: (_sext(a, 16), None)),
    ("s_quadmask_b32", 32, 32, lambda a: (_quadmask(a, 32), _nz(_quadmask(a, 32)))),
    ("s_quadmask_b64", 64, 64, lambda a: (_quadmask(a, 64), _nz(_quadmask(a, 64)))),
    ("s_abs_i32", 32, 32, lambda a: (abs(_s32(a)), _nz(a))),
    ("s_bitreplicate_b64_b32", 64, 32, lambda a: (_bitreplicate(a), None)),
)


def _sop1(dw: int, sw: int, f: Callable) -> Op:
    def op(ctx: WaveContext, ins, w) -> None:
        d, scc = f(_src(ctx, ins, w, "ssrc0", sw))
        _dst(ctx, ins, w, d, dw)
        _set_scc(ctx, w, scc)

    return op


def _cmov(width: int) -> Op:
    def op(ctx: WaveContext, ins, w) -> None:
        a = _src(ctx, ins, w, "ssrc0", width)
        reg = ins.fields["sdst"]
        old = ctx.waves.read_sgpr64(w, reg) if width == 64 else ctx.waves.sgpr[w, reg]
        take = ctx.waves.scc[w]
        _dst(ctx, ins, w, np.where(take, a, old.astype(a.dtype)), width)

    return op


def _bitset(width: int, bit: int) -> Op:
    def op(ctx: WaveContext, ins, w) -> None:
        n = _u64(_src(ctx, ins, w, "ssrc0", 32)) & np.uint64(width - 1)
        reg = ins.fields["sdst"]
        old = ctx.waves.read_sgpr64(w, reg) if width == 64 else _u64(ctx.waves.sgpr[w, reg])
        d = old | (_U64_1 << n) if bit else old & ~(_U64_1 << n)
        _dst(ctx, ins, w, d, width)

    return op


# saveexec: D = EXEC; EXEC = f(S0, EXEC); SCC = EXEC != 0.  wrexec: EXEC = D = f(S0, EXEC).
SAVEEXEC_ROWS: tuple[tuple[str, Callable, bool], ...] = (
    ("s_and_saveexec_b64", lambda s, e: s & e, False),
    ("s_or_saveexec_b64", lambda s, e: s | e, False),
    ("s_xor_saveexec_b64", lambda s, e: s ^ e, False),
    ("s_andn2_saveexec_b64", lambda s, e: s & ~e, False),
    ("s_orn2_saveexec_b64", lambda s, e: s | ~e, False),
    ("s_nand_saveexec_b64", lambda s, e: ~(s & e), False),
    ("s_nor_saveexec_b64", lambda s, e: ~(s | e), False),
    ("s_xnor_saveexec_b64", lambda s, e: ~(s ^ e), False),
    ("s_andn1_saveexec_b64", lambda s, e: ~s & e, False),
    ("s_orn1_saveexec_b64", lambda s, e: ~s | e, False),
    ("s_andn1_wrexec_b64", lambda s, e: ~s & e, True),
    ("s_andn2_wrexec_b64", lambda s, e: s & ~e, True),
)


def _saveexec(f: Callable, wrexec: bool) -> Op:
    def op(ctx: WaveContext, ins, w) -> None:
        wv = ctx.waves
        s = _src(ctx, ins, w, "ssrc0", 64)
        e = wv.exec_mask(w)
        new = f(s, e)
        _dst(ctx, ins, w, new if wrexec else e, 64)
        wv.set_exec(w, new)
        wv.scc[w] = new != 0

    return op


def _next_pc(ctx: WaveContext, w) -> np.ndarray:
    return ctx.waves.pc[w].astype(np.uint64)  # the executor already advanced it


def _s_getpc(ctx: WaveContext, ins, w) -> None:
    _dst(ctx, ins, w, _next_pc(ctx, w), 64)


def _s_setpc(ctx: WaveContext, ins, w) -> None:
    ctx.waves.pc[w] = _src(ctx, ins, w, "ssrc0", 64).astype(np.int64)


def _s_swappc(ctx: WaveContext, ins, w) -> None:
    target = _src(ctx, ins, w, "ssrc0", 64).astype(np.int64)
    _dst(ctx, ins, w, _next_pc(ctx, w), 64)
    ctx.waves.pc[w] = target


def _by_m0(ctx: WaveContext, w, fn: Callable[[np.ndarray, int], None]) -> None:
    """Run `fn(waves, m0)` once per distinct M0 among the selected waves."""
    idx = np.arange(ctx.waves.n)[w]
    m0 = ctx.waves.sgpr[idx, M0]
    for v in np.unique(m0):
        fn(idx[m0 == v], int(v))


def _movrel(width: int, dest: bool) -> Op:
    """s_movrels: D = SGPR[S0 + M0]; s_movreld: SGPR[D + M0] = S0 (SGPR file bounds)."""

    def op(ctx: WaveContext, ins, w) -> None:
        def one(sel, m0):
            src, dst = ins.fields["ssrc0"], ins.fields["sdst"]
            if dest:
                dst += m0
            else:
                src += m0
            if max(src, dst) + width // 32 > 104:
                raise IllegalInstruction(f"{ins.mnemonic}: SGPR index {src}/{dst} out of range")
            wv = ctx.waves
            val = wv.read_sgpr64(sel, src) if width == 64 else wv.sgpr[sel, src]
            if width == 64:
                wv.write_sgpr64(sel, dst, val)
            else:
                wv.write_sgpr(sel, dst, val)

        _by_m0(ctx, w, one)

    return op


# -- SOPC: SCC = compare(S0, S1) ---------------------------------------------------------------
_CMP: dict[str, Callable] = {
    "eq": np.equal,
    "lg": np.not_equal,
    "gt": np.greater,
    "ge": np.greater_equal,
    "lt": np.less,
    "le": np.less_equal,
}


def _sopc(cmp: Callable, signed: bool, width: int) -> Op:
    def op(ctx: WaveContext, ins, w) -> None:
        a = _src(ctx, ins, w, "ssrc0", width)
        b = _src(ctx, ins, w, "ssrc1", width)
        if signed:
            a, b = _s32(a), _s32(b)
        ctx.waves.scc[w] = cmp(a, b)

    return op


def _bitcmp(width: int, want: int) -> Op:
    def op(ctx: WaveContext, ins, w) -> None:
        a = _u64(_src(ctx, ins, w, "ssrc0", width))
        n = _u64(_src(ctx, ins, w, "ssrc1", 32)) & np.uint64(width - 1)
        ctx.waves.scc[w] = ((a >> n) & _U64_1) == want

    return op


# -- SOPK: D op SIMM16 -------------------------------------------------------------------------
def _s_movk(ctx: WaveContext, ins, w) -> None:
    _dst(ctx, ins, w, np.full(ctx.waves._k(w), _simm16(ins), np.int64), 32)


def _s_cmovk(ctx: WaveContext, ins, w) -> None:
    old = ctx.waves.sgpr[w, ins.fields["sdst"]].astype(np.int64)
    _dst(ctx, ins, w, np.where(ctx.waves.scc[w], _simm16(ins) & M32, old), 32)


def _sopk_cmp(cmp: Callable, signed: bool) -> Op:
    def op(ctx: WaveContext, ins, w) -> None:
        d = ctx.waves.sgpr[w, ins.fields["sdst"]].astype(np.int64)
        if signed:
            ctx.waves.scc[w] = cmp(_s32(d), _simm16(ins))
        else:
            ctx.waves.scc[w] = cmp(d, ins.fields["simm16"])

    return op


def _s_addk(ctx: WaveContext, ins, w) -> None:
    r = _s32(ctx.waves.sgpr[w, ins.fields["sdst"]]) + _simm16(ins)
    _dst(ctx, ins, w, r, 32)
    ctx.waves.scc[w] = (r > 0x7FFFFFFF) | (r < -0x80000000)


def _s_mulk(ctx: WaveContext, ins, w) -> None:
    _dst(ctx, ins, w, _s32(ctx.waves.sgpr[w, ins.fields["sdst"]]) * _simm16(ins), 32)


def _s_call(ctx: WaveContext, ins, w) -> None:
    nxt = ctx.waves.pc[w].copy()
    _dst(ctx, ins, w, nxt.astype(np.uint64), 64)
    ctx.waves.pc[w] = nxt + 4 * _simm16(ins)


# Hardware registers (Vega ISA guide, "Hardware registers", s_getreg/s_setreg):
# simm16 = {size-1 [15:11], offset [10:6], id [5:0]}.
HW_REG_MODE = 1
HW_REG_HW_ID = 4
# SH_MEM_BASES: PRIVATE_BASE [15:0] and SHARED_BASE [31:16], bits 63:48 of each aperture;
# how gfx9 code finds the apertures to cast a generic pointer (LLVM getSegmentAperture).
HW_REG_SH_MEM_BASES = 15


def _hwreg(ins) -> tuple[int, int, int]:
    v = ins.fields["simm16"]
    return v & 0x3F, (v >> 6) & 0x1F, ((v >> 11) & 0x1F) + 1


def _s_getreg(ctx: WaveContext, ins, w) -> None:
    hid, off, size = _hwreg(ins)
    if hid == HW_REG_MODE:
        val = ctx.waves.mode[w].astype(np.int64)
    elif hid == HW_REG_HW_ID:
        # WAVE_ID [3:0], SIMD_ID [5:4], CU_ID [11:8]...: this model places waves by the
        # dispatcher's timing only, so each wave reads its slot within its workgroup.
        wiw = ctx.waves.wave_in_wg[w]
        val = (wiw // 4) & 0xF | ((wiw % 4) << 4)
    elif hid == HW_REG_SH_MEM_BASES:
        ap = ctx.waves.apertures
        bases = ((ap.shared_base >> 48) & 0xFFFF) << 16 | ((ap.private_base >> 48) & 0xFFFF)
        val = np.full(ctx.waves._k(w), bases, dtype=np.int64)
    else:
        raise IllegalInstruction(f"s_getreg_b32 of hardware register {hid} is not modelled")
    _dst(ctx, ins, w, (val >> off) & ((1 << size) - 1), 32)


def _s_setreg(ctx: WaveContext, ins, w) -> None:
    """s_setreg_b32 (the value in SDST's SGPR) and s_setreg_imm32_b32 (in the literal)."""
    hid, off, size = _hwreg(ins)
    if hid != HW_REG_MODE:
        raise IllegalInstruction(f"{ins.mnemonic} of hardware register {hid} is not modelled")
    if ins.literal is not None:
        v = np.full(ctx.waves._k(w), ins.literal, dtype=np.int64)
    else:
        v = ctx.waves.sgpr[w, ins.fields["sdst"]].astype(np.int64)
    field = ((1 << size) - 1) << off
    cur = ctx.waves.mode[w].astype(np.int64)
    ctx.waves.mode[w] = ((cur & ~field) | ((v << off) & field)).astype(np.uint32)


# -- SOPP: control ---------------------------------------------------------------------------
def _branch(cond: Callable[[WaveContext, object], np.ndarray] | None) -> Op:
    def op(ctx: WaveContext, ins, w) -> None:
        off = 4 * _simm16(ins)
        if cond is None:
            ctx.waves.pc[w] += off
            return
        take = cond(ctx, w)
        ctx.waves.pc[w] += np.where(take, off, 0)

    return op


def _nothing(ctx: WaveContext, ins, w) -> None:
    pass


def _s_endpgm(ctx: WaveContext, ins, w) -> None:
    ctx.waves.done[w] = True


def _s_barrier(ctx: WaveContext, ins, w) -> None:
    # The executor releases the workgroup when all its waves that have not ended arrive.
    ctx.waves.barrier[w] = True


def waitcnt_fields(simm16: int) -> tuple[int, int, int]:
    """(vmcnt, expcnt, lgkmcnt) of s_waitcnt on gfx9 (vmcnt split over [3:0] and [15:14])."""
    return (simm16 & 0xF) | ((simm16 >> 10) & 0x30), (simm16 >> 4) & 7, (simm16 >> 8) & 0xF


# -- SMEM ------------------------------------------------------------------------------------
def _smem_offset(ctx: WaveContext, ins, w, signed: bool) -> np.ndarray:
    """(k,) int64 byte offsets: the immediate (IMM=1; OFFSET [52:32], 21 bits, signed for
    S_LOAD and unsigned for S_BUFFER_LOAD), or an SGPR's value (IMM=0; its number in OFFSET),
    plus SOFFSET's SGPR (bits [63:57]) when SOE (bit 14) is set — Vega ISA guide, "SMEM"
    microcode format; LLVM gives gfx9 scalar loads signed immediate offsets."""
    wv = ctx.waves
    w0, w1 = ins.words[0], ins.words[1]
    k = wv._k(w)
    if ins.fields["imm"]:
        imm = w1 & 0x1FFFFF
        if signed and imm & 0x100000:
            imm -= 0x200000
        off = np.full(k, imm, dtype=np.int64)
        if (w0 >> 14) & 1:
            off = off + wv.sgpr[w, (w1 >> 25) & 0x7F].astype(np.int64)
    else:
        off = wv.sgpr[w, w1 & 0x7F].astype(np.int64)
    return off


def _s_load(dwords: int, buffer: bool) -> Op:
    """S_LOAD_DWORD*: from SBASE's 64-bit address; S_BUFFER_LOAD_DWORD*: from the V# in
    SBASE (base [47:0]), dwords at or past NUM_RECORDS (dword 2) reading 0. The low two
    address bits are ignored (loads are dword aligned)."""

    def op(ctx: WaveContext, ins, w) -> None:
        wv = ctx.waves
        idx = np.arange(wv.n)[w]
        sb = 2 * ins.fields["sbase"]
        base = (wv.read_sgpr64(w, sb) & np.uint64(0xFFFFFFFFFFFF)).astype(np.int64)
        off = _smem_offset(ctx, ins, w, signed=not buffer) & ~np.int64(3)
        addr = base + off
        if buffer:
            records = wv.sgpr[w, sb + 2].astype(np.int64)
            avail = np.clip((records - off) // 4, 0, dwords)
        else:
            avail = np.full(len(idx), dwords, dtype=np.int64)
        out = np.zeros((len(idx), dwords), dtype=np.uint32)
        for a, n in {(int(a), int(n)) for a, n in zip(addr, avail, strict=True)}:
            if n == 0:
                continue
            sel = (addr == a) & (avail == n)
            try:
                raw = ctx.memory.shader_view(ctx.pasid, ctx.node, a, 4 * n)
            except MemoryFault as fault:
                fault.waves = idx[sel]
                raise
            out[sel, :n] = np.frombuffer(raw.tobytes(), dtype=np.uint32)
        dst = ins.fields["sdata"]
        if dst + dwords > 104 and dst < 106:
            raise IllegalInstruction(f"{ins.mnemonic}: destination s{dst} runs past the SGPRs")
        for i in range(dwords):
            wv.write_sgpr(w, dst + i, out[:, i])

    return op


# -- the table -------------------------------------------------------------------------------
def _build() -> dict[str, Op]:
    ops: dict[str, Op] = {}
    for name, dw, w0, w1, f in SOP2_ROWS:
        ops[name] = _sop2(dw, w0, w1, f)
    for name, dw, sw, f in SOP1_ROWS:
        ops[name] = _sop1(dw, sw, f)
    for name, f, wr in SAVEEXEC_ROWS:
        ops[name] = _saveexec(f, wr)
    ops.update(
        {
            "s_cmov_b32": _cmov(32),
            "s_cmov_b64": _cmov(64),
            "s_bitset0_b32": _bitset(32, 0),
            "s_bitset0_b64": _bitset(64, 0),
            "s_bitset1_b32": _bitset(32, 1),
            "s_bitset1_b64": _bitset(64, 1),
            "s_getpc_b64": _s_getpc,
            "s_setpc_b64": _s_setpc,
            "s_swappc_b64": _s_swappc,
            "s_movrels_b32": _movrel(32, False),
            "s_movrels_b64": _movrel(64, False),
            "s_movreld_b32": _movrel(32, True),
            "s_movreld_b64": _movrel(64, True),
        }
    )
    for cname, cmp in _CMP.items():
        ops[f"s_cmp_{cname}_i32"] = _sopc(cmp, True, 32)
        ops[f"s_cmp_{cname}_u32"] = _sopc(cmp, False, 32)
        ops[f"s_cmpk_{cname}_i32"] = _sopk_cmp(cmp, True)
        ops[f"s_cmpk_{cname}_u32"] = _sopk_cmp(cmp, False)
    ops["s_cmp_eq_u64"] = _sopc(np.equal, False, 64)
    ops["s_cmp_lg_u64"] = _sopc(np.not_equal, False, 64)
    for width in (32, 64):
        ops[f"s_bitcmp0_b{width}"] = _bitcmp(width, 0)
        ops[f"s_bitcmp1_b{width}"] = _bitcmp(width, 1)
    ops.update(
        {
            "s_movk_i32": _s_movk,
            "s_cmovk_i32": _s_cmovk,
            "s_addk_i32": _s_addk,
            "s_mulk_i32": _s_mulk,
            "s_call_b64": _s_call,
            "s_getreg_b32": _s_getreg,
            "s_setreg_b32": _s_setreg,
            "s_setreg_imm32_b32": _s_setreg,
        }
    )
    wv_exec = lambda ctx, w: ctx.waves.exec_mask(w)  # noqa: E731
    ops.update(
        {
            "s_branch": _branch(None),
            "s_cbranch_scc0": _branch(lambda ctx, w: ~ctx.waves.scc[w]),
            "s_cbranch_scc1": _branch(lambda ctx, w: ctx.waves.scc[w]),
            "s_cbranch_vccz": _branch(lambda ctx, w: ctx.waves.vcc(w) == 0),
            "s_cbranch_vccnz": _branch(lambda ctx, w: ctx.waves.vcc(w) != 0),
            "s_cbranch_execz": _branch(lambda ctx, w: wv_exec(ctx, w) == 0),
            "s_cbranch_execnz": _branch(lambda ctx, w: wv_exec(ctx, w) != 0),
            # No debugger is attached: the debug branches are never taken.
            "s_cbranch_cdbgsys": _nothing,
            "s_cbranch_cdbguser": _nothing,
            "s_cbranch_cdbgsys_or_user": _nothing,
            "s_cbranch_cdbgsys_and_user": _nothing,
            "s_endpgm": _s_endpgm,
            "s_barrier": _s_barrier,
            # Memory completes at issue here, so waiting is functionally nothing; the
            # executor counts the round trips a wait implies for the timing model.
            "s_waitcnt": _nothing,
            "s_nop": _nothing,
            "s_setprio": _nothing,
            "s_sleep": _nothing,
            "s_wakeup": _nothing,
            "s_icache_inv": _nothing,
            "s_incperflevel": _nothing,
            "s_decperflevel": _nothing,
            "s_ttracedata": _nothing,
            "s_set_gpr_idx_off": _nothing,
        }
    )
    for n, dw in ((0, 1), (1, 2), (2, 4), (3, 8), (4, 16)):
        suffix = "" if n == 0 else f"x{dw}"
        ops[f"s_load_dword{suffix}"] = _s_load(dw, False)
        ops[f"s_buffer_load_dword{suffix}"] = _s_load(dw, True)
    ops["s_dcache_inv"] = _nothing
    ops["s_dcache_wb"] = _nothing
    return ops


OPS: dict[str, Op] = _build()

__all__ = ["OPS", "EXEC_LO", "waitcnt_fields"]
