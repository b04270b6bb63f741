"""Vector ALU semantics of gfx9 (gfx900, gfx90a, gfx942): VOP1, VOP2, VOPC, VOP3A/VOP3B, the
VOP3P packed math, mix and lane-move instructions, and the SDWA and DPP forms of
VOP1/VOP2/VOPC.

One declarative table, `ROWS`: a row per instruction base name (no `_e32`/`_e64`), with its
result type, its source types and its operation as a numpy function of typed lane arrays.
`OPS` is generated from it for every mnemonic the decoder names on any target (the `_e32`
VOP1/VOP2/VOPC form, the `_e64` VOP3 form, VOP3-only and VOP3P names); the encoding of the
decoded instruction says where the operands are (AMD "Vega" ISA guide, chapter 6 "Vector
ALU Operations" and chapter 12 "Microcode Formats"; MI200/MI300 ISA guides for gfx90a/gfx942).

Operand conventions (Vega ISA guide 6.2-6.4):
- VOP2/VOPC `_e32`: src0 any source, src1 a VGPR; carry-out, compare results and the
  cndmask/addc selector live in VCC. VOP3 `_e64`: up to three sources, the carry-in /
  selector in an SGPR pair (src2), the carry-out / compare result in an SGPR pair (VOP3B
  `sdst`, or the VOP3A `vdst` field of a compare).
- Lanes EXEC disables keep their VGPRs; their bits of a written lane mask are 0.
- v_cmpx_* writes EXEC and, on gfx9, also its SGPR destination (VCC for `_e32`).
- 16-bit results zero the high half of the VGPR, except the gfx9 opcodes with op_sel
  (v_mad_f16/u16/i16, v_fma_f16, v_div_fixup_f16) which keep it (LLVM
  GCNSubtarget::zeroesHigh16BitsOfDest).

VOP3 modifiers (Vega ISA guide 12.6 "VOP3A/VOP3B"): word 0 bits 8-10 `abs` (VOP3A), 11-14
`op_sel`, 15 `clamp`; word 1 bits 27-28 `omod` (x2, x4, /2), 29-31 `neg`. abs/neg act on
the sign bit of floating-point sources; omod and clamp on floating-point results (clamp to
[0, 1], NaN to 0 as DX10_CLAMP=1 does); clamp on the unsigned/signed add/sub rows saturates.
Any modifier a row cannot honour and VOP3 op_sel raise IllegalInstruction naming the
instruction. DPP (clang's sub-group reductions and scans, __builtin_amdgcn_update_dpp):
quad_perm, row shifts/rotates, wave shifts/rotates, mirrors, row broadcasts, bound_ctrl, row
and bank masks, abs/neg. SDWA (clang's char4/uchar4/short2 code): byte/word source selection
with sign extension, SGPR/constant sources, destination byte/word with pad/sign/preserve,
abs/neg/clamp/omod, the VOPC SGPR destination. Their decoded names (`v_add_u32_dpp`,
`v_or_b32_sdwa`) are in OPS for every 32-bit VOP1/VOP2/VOPC row; 64-bit ones are not.

Floating point is IEEE with round-to-nearest-even. The MODE register's denormal controls are
honoured: `waves.mode` ((n,) uint32, MODE layout: FP_ROUND [3:0], FP_DENORM [7:4], DX10_CLAMP
[8], IEEE [9]), which the launch sets from the descriptor's COMPUTE_PGM_RSRC1 (clang's gfx9
default keeps f32 and f16/f64 denormals: `.amdhsa_float_denorm_mode_32 3`). A non-default
rounding mode raises IllegalInstruction. v_mad_f32/v_mac_f32/v_madmk/madak_f32
flush denormals whatever the mode (LLVM selects them only for llvm.amdgcn.fmad.ftz or when
f32 denormals are off). v_fma_f32/f64 are single-rounding fused (emulated exactly).
Transcendentals: v_rcp/v_rsq/v_sqrt are correctly rounded here (the hardware is within 1 ulp;
callers such as ocml refine them), v_exp_f32 is 2^x, v_log_f32 log2(x), v_sin/v_cos take
revolutions (sin(2*pi*x)), all evaluated in double precision and rounded once.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from hw_model.isa.decoder import opcode_table
from hw_model.isa.encodings import TARGETS
from hw_model.isa.wave import (
    EXEC_LO,
    LANES,
    VCC_LO,
    VGPR0,
    IllegalInstruction,
)

# --------------------------------------------------------------------------------------------
# Types


@dataclass(frozen=True)
class Ty:
    name: str
    bits: int
    dtype: type
    is_float: bool


TYPES = {
    t.name: t
    for t in (
        Ty("b32", 32, np.uint32, False),
        Ty("u32", 32, np.uint32, False),
        Ty("i32", 32, np.int32, False),
        Ty("f32", 32, np.float32, True),
        Ty("b16", 16, np.uint16, False),
        Ty("u16", 16, np.uint16, False),
        Ty("i16", 16, np.int16, False),
        Ty("f16", 16, np.float16, True),
        Ty("b64", 64, np.uint64, False),
        Ty("u64", 64, np.uint64, False),
        Ty("i64", 64, np.int64, False),
        Ty("f64", 64, np.float64, True),
    )
}

_UINT = {16: np.uint16, 32: np.uint32, 64: np.uint64}

# MODE register (Vega ISA guide 3.10 "Mode register"): FP_ROUND [3:0] (0 = nearest even for
# both f32 and f16/f64), FP_DENORM [7:4] (2 bits for f32, 2 for f16/f64: bit 0 keeps input
# denormals, bit 1 keeps output denormals), DX10_CLAMP [8], IEEE [9].
DEFAULT_MODE = (3 << 4) | (3 << 6) | (1 << 8) | (1 << 9)


def _denorm_bits(mode: int, dtype) -> int:
    return (mode >> (4 if np.dtype(dtype) == np.float32 else 6)) & 3


def _ftz_in(x: np.ndarray, mode: int) -> np.ndarray:
    """A float source with its denormals flushed unless MODE keeps input denormals."""
    if x.dtype.kind != "f" or _denorm_bits(mode, x.dtype) & 1:
        return x
    return _flush(x)


def _flush(x: np.ndarray) -> np.ndarray:
    """Denormals to a zero of the same sign."""
    tiny = np.finfo(x.dtype).tiny
    return np.where(np.abs(x) < tiny, np.copysign(np.zeros((), x.dtype), x), x)


def _from_bits(raw: np.ndarray, ty: Ty) -> np.ndarray:
    if ty.bits == 16:
        raw = (raw & np.uint32(0xFFFF)).astype(np.uint16)
    if ty.dtype is _UINT[ty.bits]:
        return raw
    return raw.view(ty.dtype)


def _to_bits(val, ty: Ty) -> np.ndarray:
    """Lane values of type `ty` -> uint32 (16/32-bit types, 16-bit zero-extended) or uint64."""
    val = np.asarray(val)
    if ty.is_float:
        bits = val.astype(ty.dtype, copy=False).view(_UINT[ty.bits])
    elif val.dtype == np.bool_:
        bits = val.astype(_UINT[ty.bits])
    else:
        bits = val.astype(ty.dtype, copy=False).view(_UINT[ty.bits])
    if ty.bits == 16:
        return bits.astype(np.uint32)
    return bits


# --------------------------------------------------------------------------------------------
# Numeric helpers (vectorized over (waves, lanes))

_LANE = np.arange(LANES, dtype=np.uint64)
_MASK_BELOW = (np.uint64(1) << _LANE) - np.uint64(1)  # lane l: bits 0..l-1
_MBCNT_LO = (_MASK_BELOW & np.uint64(0xFFFFFFFF)).astype(np.uint32)
_MBCNT_HI = (_MASK_BELOW >> np.uint64(32)).astype(np.uint32)


def _u64(x):
    return np.asarray(x).astype(np.uint64)


def _i64(x):
    return np.asarray(x).astype(np.int64)


def _sext24(x):
    x = _i64(x) & 0xFFFFFF
    return (x ^ 0x800000) - 0x800000


def _clz32(x) -> np.ndarray:
    x = np.asarray(x).astype(np.uint32)
    n = np.zeros(x.shape, np.int64)
    for s in (16, 8, 4, 2, 1):
        m = x < np.uint32(1 << (32 - s))
        n += np.where(m, s, 0)
        x = np.where(m, x << np.uint32(s), x)
    return n + (x == 0)


def _ffbh_u32(x):
    c = _clz32(x)
    return np.where(c == 32, -1, c)


def _ffbl_b32(x):
    x = np.asarray(x).astype(np.uint32)
    low = x & (~x + np.uint32(1))
    return np.where(x == 0, -1, 31 - _clz32(low))


def _ffbh_i32(x):
    x = np.asarray(x).view(np.int32) if np.asarray(x).dtype == np.uint32 else np.asarray(x)
    y = (x ^ (x >> 31)).astype(np.uint32)
    c = _clz32(y)
    return np.where(c == 32, -1, c)


_REV8 = np.array([int(f"{i:08b}"[::-1], 2) for i in range(256)], dtype=np.uint32)


def _bfrev(x):
    x = np.asarray(x).astype(np.uint32)
    r = np.zeros(x.shape, np.uint32)
    for i in range(4):
        byte = (x >> np.uint32(8 * i)) & np.uint32(0xFF)
        r |= _REV8[byte] << np.uint32(24 - 8 * i)
    return r


def _popcount(x):
    return np.bitwise_count(np.asarray(x)).astype(np.uint32)


def _sat_u32(x):
    return np.clip(x, 0, 0xFFFFFFFF)


def _sat_i32(x):
    return np.clip(x, -(2**31), 2**31 - 1)


def _cvt_int(x, lo: int, hi: int, rnd=np.trunc):
    """Float -> integer as the V_CVT_*32_F* instructions: rounded as `rnd`, saturated, NaN 0."""
    x = np.asarray(x).astype(np.float64)
    r = np.clip(rnd(np.nan_to_num(x, nan=0.0, posinf=hi, neginf=lo)), lo, hi)
    return r.astype(np.int64)


def _two_sum(a, b):
    s = a + b
    bp = s - a
    return s, (a - (s - bp)) + (b - bp)


def _round_to_odd(s, e):
    """s + e (e the exact error of s) rounded to odd: nudge an even-mantissa s toward e."""
    bits = s.view(np.int64)
    nudge = (e != 0) & ((bits & 1) == 0) & np.isfinite(s)
    step = np.where(np.signbit(s) == np.signbit(e), 1, -1)
    return np.where(nudge, bits + step, bits).view(np.float64)


def _fma32(a, b, c):
    """Fused a*b+c rounded once to f32: the f64 product is exact, the f64 sum is rounded to odd
    (Boldo & Melquiond, "When double rounding is odd", 2005) and then to f32."""
    a, b, c = (np.asarray(x).astype(np.float64) for x in (a, b, c))
    with np.errstate(all="ignore"):
        p = a * b
        s, e = _two_sum(p, c)
        return _round_to_odd(s, e).astype(np.float32)


_SPLIT = float(2**27 + 1)  # Veltkamp splitter for binary64


def _two_prod(a, b):
    def split(x):
        t = _SPLIT * x
        hi = t - (t - x)
        return hi, x - hi

    p = a * b
    ah, al = split(a)
    bh, bl = split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _fma_exact_scalar(a: float, b: float, c: float) -> float:
    if not (math.isfinite(a) and math.isfinite(b)):
        return a * b + c
    if not math.isfinite(c):
        return c  # the exact product is finite, however large
    exact = Fraction(a) * Fraction(b) + Fraction(c)
    if exact == 0:
        # IEEE 754 6.3: an exact zero sum is +0 in round-to-nearest unless both addends
        # are zeros of negative sign.
        prod_neg = (math.copysign(1, a) * math.copysign(1, b)) < 0
        both_neg_zero = (a == 0 or b == 0) and c == 0 and prod_neg and math.copysign(1, c) < 0
        return -0.0 if both_neg_zero else 0.0
    try:
        return float(exact)  # int / int: correctly rounded (CPython long_true_divide)
    except OverflowError:
        return math.inf if exact > 0 else -math.inf


def _fma64(a, b, c):
    """Fused a*b+c in binary64, rounded once: Boldo & Melquiond's emulated FMA (ExactMult,
    TwoSum, a round-to-odd sum, a final round-to-nearest), exact lane by lane with rationals
    where over/underflow would break the error-free transformations."""
    a, b, c = (np.asarray(x, dtype=np.float64) for x in (a, b, c))
    a, b, c = np.broadcast_arrays(a, b, c)
    with np.errstate(all="ignore"):
        uh, ul = _two_prod(a, b)
        th, tl = _two_sum(c, uh)
        v, ve = _two_sum(tl, ul)
        z = th + _round_to_odd(v, ve)
        big, small = 2.0**990, 2.0**-960
        mags = (np.abs(a), np.abs(b), np.abs(c), np.abs(uh), np.abs(z))
        bad = ~(np.isfinite(a) & np.isfinite(b) & np.isfinite(c) & np.isfinite(z))
        for m in mags:
            bad |= m > big
        for m in (np.abs(uh), np.abs(z), np.abs(c)):
            bad |= (m < small) & (m != 0)
        bad |= (uh == 0) & (a != 0) & (b != 0)
    if bad.any():
        z = np.array(z, copy=True)
        for idx in zip(*np.nonzero(bad), strict=True):
            z[idx] = _fma_exact_scalar(float(a[idx]), float(b[idx]), float(c[idx]))
    return z


def _fma16(a, b, c):
    # f64 holds the exact f16 product and sum (exponents -48..32, 22+ bits): one rounding.
    return (
        np.asarray(a).astype(np.float64) * np.asarray(b).astype(np.float64)
        + np.asarray(c).astype(np.float64)
    ).astype(np.float16)


def _mad_ftz32(a, b, c):
    """v_mad_f32: unfused multiply-add, denormal inputs, product and result flushed."""
    a, b, c = _flush(a), _flush(b), _flush(c)
    return _flush(_flush(a * b) + c)


def _mul_legacy(a, b):
    """DX9 multiply: 0 times anything (inf, NaN) is 0."""
    return np.where((a == 0) | (b == 0), np.zeros((), a.dtype), a * b)


def _fmin(a, b):
    """IEEE-mode V_MIN: a quiet NaN operand yields the other operand."""
    return np.fmin(a, b)


def _fmax(a, b):
    return np.fmax(a, b)


def _med3f(a, b, c):
    """V_MED3_F32 (Vega ISA guide): the larger of the two operands that are not the maximum;
    with a NaN operand, min3."""
    nan = np.isnan(a) | np.isnan(b) | np.isnan(c)
    mx = np.maximum(np.maximum(a, b), c)
    med = np.where(mx == a, np.maximum(b, c), np.where(mx == b, np.maximum(a, c), np.maximum(a, b)))
    return np.where(nan, _fmin(_fmin(a, b), c), med)


def _min3(a, b, c):
    return np.minimum(np.minimum(a, b), c)


def _max3(a, b, c):
    return np.maximum(np.maximum(a, b), c)


def _med3i(a, b, c):
    return np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))


def _fract(x):
    """x - floor(x), below 1.0 (the largest float under 1 when rounding would give 1)."""
    with np.errstate(invalid="ignore"):
        r = x - np.floor(x)
    below_one = np.nextafter(np.ones((), x.dtype), np.zeros((), x.dtype))
    return np.where(np.isinf(x), np.full((), np.nan, x.dtype), np.minimum(r, below_one))


def _f64(x):
    return np.asarray(x).astype(np.float64)


def _trig(fn, dtype):
    def op(x):
        x64 = _f64(x)
        with np.errstate(invalid="ignore"):
            frac = x64 - np.round(x64)  # revolutions: exact in f64
            return fn(2 * np.pi * frac).astype(dtype)

    return op


def _rsq(x):
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 / np.sqrt(_f64(x))


def _frexp_mant(x):
    return np.frexp(x)[0]


def _frexp_exp(x):
    m, e = np.frexp(x)
    return np.where(np.isfinite(x), e, 0)


def _ldexp(x, e):
    e = np.clip(_i64(e), -2000, 2000)
    return np.ldexp(x, e.astype(np.int32))


def _cvt_f16_rtz(x):
    """f32 -> f16 rounded toward zero (v_cvt_pkrtz_f16_f32)."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore"):
        h = x.astype(np.float16)
    hb = h.view(np.uint16)
    away = np.isfinite(x) & (np.abs(h.astype(np.float32)) > np.abs(x))
    return np.where(away, hb - np.uint16(1), hb).view(np.float16)


def _cls(x, mask):
    """V_CMP_CLASS: bit of `mask` for the class of x: 0 signaling NaN, 1 quiet NaN, 2 -inf,
    3 -normal, 4 -denormal, 5 -0, 6 +0, 7 +denormal, 8 +normal, 9 +inf."""
    bits = x.view(_UINT[x.dtype.itemsize * 8])
    quiet_bit = {2: 1 << 9, 4: 1 << 22, 8: 1 << 51}[x.dtype.itemsize]
    neg = np.signbit(x)
    ax = np.abs(x)
    tiny = np.finfo(x.dtype).tiny
    cls = np.select(
        [
            np.isnan(x) & ((bits & _UINT[x.dtype.itemsize * 8](quiet_bit)) == 0),
            np.isnan(x),
            np.isinf(x),
            ax == 0,
            ax < tiny,
        ],
        [0, 1, np.where(neg, 2, 9), np.where(neg, 5, 6), np.where(neg, 4, 7)],
        default=np.where(neg, 3, 8),
    )
    return ((_u64(mask) >> cls.astype(np.uint64)) & np.uint64(1)) != 0


def _bias_exponent(x):
    """The biased exponent field of a float array (0 for zero/denormals)."""
    nbits = x.dtype.itemsize * 8
    mant = {32: 23, 64: 52}[nbits]
    return (
        (x.view(_UINT[nbits]) >> _UINT[nbits](mant)) & _UINT[nbits]((1 << (nbits - mant - 1)) - 1)
    ).astype(np.int64)


def _div_scale(f32: bool):
    """V_DIV_SCALE_F32/F64 (S0 the value to scale: numerator or denominator, S1 the
    denominator, S2 the numerator): pre-scales a division whose quotient or reciprocal
    would leave the normal range, and sets VCC where div_fmas must undo it. The cases and
    their order are the ISA guide's pseudocode; where 1/S1 and S2/S1 are both denormal the
    denominator is scaled down (the guide's "up" would overflow it), so that div_fmas'
    rule (scale by 2^+k if the quotient's exponent says it was scaled down, else 2^-k)
    undoes every case; LLVM's fdiv expansion then yields IEEE quotients, as the tests check."""
    lim, k, tiny_exp, dt = (96, 64, 23, np.float32) if f32 else (768, 128, 53, np.float64)
    finfo = np.finfo(dt)

    def op(s0, s1, s2):
        with np.errstate(all="ignore"):
            en, ed = _bias_exponent(s2), _bias_exponent(s1)
            # The guide tests 1/S1 as a double for both widths (never denormal for f32).
            rcp_den = 1.0 / s1.astype(np.float64)
            quot = s2 / s1
            rcp_tiny = (np.abs(rcp_den) < np.finfo(np.float64).tiny) & (rcp_den != 0)
            quot_tiny = (np.abs(quot) < finfo.tiny) & (quot != 0)
            den_denorm = (np.abs(s1) < finfo.tiny) & (s1 != 0)
            up, down = _ldexp(s0, k).astype(dt), _ldexp(s0, -k).astype(dt)
            zero = (s2 == 0) | (s1 == 0)
            c_big = ~zero & (en - ed >= lim)
            c_den = ~zero & ~c_big & den_denorm
            c_both = ~zero & ~c_big & ~c_den & rcp_tiny & quot_tiny
            c_rcp = ~zero & ~c_big & ~c_den & ~c_both & rcp_tiny
            c_quot = ~zero & ~c_big & ~c_den & ~c_both & ~c_rcp & quot_tiny
            c_ntiny = ~zero & ~c_big & ~c_den & ~c_both & ~c_rcp & ~c_quot & (en <= tiny_exp)
            is_den, is_num = s0 == s1, s0 == s2
            d = np.select(
                [
                    zero,
                    c_big & is_den,
                    c_den,
                    c_both & is_den,
                    c_rcp,
                    c_quot & is_num,
                    c_ntiny,
                ],
                [np.full((), np.nan, dt), up, up, down, down, up, up],
                default=s0,
            )
        return d, c_big | c_both | c_quot

    return op


def _div_fmas(f32: bool):
    """V_DIV_FMAS: fused multiply-add; where VCC is set, undoes div_scale's scaling of the
    quotient (up by 2^64/2^128 if its exponent says it was scaled down, else down)."""
    k, bias = (64, 127) if f32 else (128, 1023)
    fma = _fma32 if f32 else _fma64

    def op(a, b, c, vcc):
        r = fma(a, b, c)
        scaled = np.where(_bias_exponent(np.asarray(c)) > bias, _ldexp(r, k), _ldexp(r, -k))
        return np.where(vcc, scaled.astype(r.dtype), r)

    return op


def _div_fixup(lim: int, maxexp: int):
    """V_DIV_FIXUP (S0 the quotient, S1 the denominator, S2 the numerator): IEEE special
    cases of the division, else the quotient with the sign of numerator/denominator."""

    def op(q, d, n):
        dt = q.dtype
        sign_neg = np.signbit(d) ^ np.signbit(n)
        inf = np.where(sign_neg, -np.inf, np.inf).astype(dt)
        zero = np.where(sign_neg, -0.0, 0.0).astype(dt)
        en, ed = (
            (_bias_exponent(n), _bias_exponent(d)) if dt != np.float16 else (_exp16(n), _exp16(d))
        )
        aq = np.abs(q)
        mag = np.where(np.isnan(q), np.inf, aq).astype(dt)
        plain = np.where(sign_neg, -mag, mag)
        return np.select(
            [
                np.isnan(n),
                np.isnan(d),
                (d == 0) & (n == 0),
                np.isinf(d) & np.isinf(n),
                (d == 0) | np.isinf(n),
                np.isinf(d) | (n == 0),
                en - ed < lim,
                ed == maxexp,
            ],
            [n + n, d + d, np.full((), np.nan, dt), np.full((), np.nan, dt), inf, zero, zero, inf],
            default=plain,
        ).astype(dt)

    return op


def _exp16(x):
    return ((x.view(np.uint16) >> np.uint16(10)) & np.uint16(0x1F)).astype(np.int64)


@functools.cache
def _two_over_pi_bits() -> int:
    """floor(2/pi * 2^1300) from Machin's formula in integer arithmetic."""
    prec = 1400

    def arctan_inv(x: int) -> int:
        one = 1 << prec
        total = term = one // x
        x2, n, sign = x * x, 1, -1
        while term:
            term //= x2
            n += 2
            total += sign * (term // n)
            sign = -sign
        return total

    pi = 16 * arctan_inv(5) - 4 * arctan_inv(239)  # pi * 2^prec
    return (2 << (prec + 1300)) // pi


def _trig_preop(x, sel):
    """V_TRIG_PREOP_F64: the 53-bit segment of 2/pi that starts (sel*53 + large-exponent
    shift) bits after the binary point, as a double, for Payne-Hanek range reduction."""
    bits = _two_over_pi_bits()
    x = np.asarray(x, dtype=np.float64)
    exp = _bias_exponent(x)
    shift = (_i64(sel) & 31) * 53 + np.where(exp > 1077, exp - 1077, 0)
    out = np.empty(np.broadcast(x, shift).shape, dtype=np.float64)
    shift_b, exp_b = np.broadcast_arrays(shift, exp)
    for idx in np.ndindex(out.shape):
        s = int(shift_b[idx])
        seg = (bits >> (1300 - 53 - s)) & ((1 << 53) - 1) if s + 53 <= 1300 else 0
        scale = -53 - s + (128 if exp_b[idx] >= 1968 else 0)
        out[idx] = math.ldexp(float(seg), scale)
    return out


def _perm(s0, s1, sel):
    """V_PERM_B32: each result byte selected from the 8 bytes of {S0, S1} by S2's bytes."""
    data = (_u64(s0) << np.uint64(32)) | _u64(s1)
    out = np.zeros(np.broadcast(data, sel).shape, np.uint64)
    sel = _u64(sel)
    for i in range(4):
        b = (sel >> np.uint64(8 * i)) & np.uint64(0xFF)
        byte = (data >> ((b & np.uint64(7)) * np.uint64(8))) & np.uint64(0xFF)
        sign = lambda k: np.where((data >> np.uint64(8 * k + 7)) & np.uint64(1), 0xFF, 0)  # noqa: E731
        val = np.select(
            [b >= 13, b == 12, b == 11, b == 10, b == 9, b == 8],
            [0xFF, 0, sign(7), sign(5), sign(3), sign(1)],
            default=byte,
        ).astype(np.uint64)
        out |= val << np.uint64(8 * i)
    return out


def _bfe_u(x, off, width):
    off, width = _u64(off) & np.uint64(31), _u64(width) & np.uint64(31)
    return (_u64(x) >> off) & ((np.uint64(1) << width) - np.uint64(1))


def _bfe_i(x, off, width):
    off, width = _i64(off) & 31, _i64(width) & 31
    v = (_i64(np.asarray(x).view(np.int32)) >> off) & ((1 << width) - 1)
    sign = np.int64(1) << np.maximum(width - 1, 0)
    return np.where(width == 0, 0, (v ^ sign) - sign)


def _mad64_u(a, b, c):
    p = _u64(a) * _u64(b)
    r = p + _u64(c)
    return r, r < p


def _mad64_i(a, b, c):
    p = _i64(a) * _i64(b)
    r = (p.view(np.uint64) + _u64(c).view(np.uint64)).view(np.int64)
    # carry = bit 64 of the 65-bit two's complement sum: the sign of the true result.
    ovf = ((p >= 0) == (np.asarray(c) >= 0)) & ((r >= 0) != (p >= 0))
    return r, (r < 0) != ovf


def _add_c(a, b, cin=None):
    """32-bit add with carry-out (and carry-in): wrapped sum, carry per lane."""
    s = a + b
    carry = s < a
    if cin is not None:
        s2 = s + cin.astype(np.uint32)
        carry = carry | (s2 < s)
        s = s2
    return s, carry


def _sub_c(a, b, cin=None):
    """32-bit a - b (- borrow-in): wrapped difference, borrow per lane."""
    d = a - b
    borrow = b > a
    if cin is not None:
        borrow = borrow | (cin & (a == b))
        d = d - cin.astype(np.uint32)
    return d, borrow


def _sat_carry(v, c):
    return np.where(c, np.uint32(0xFFFFFFFF), v)


def _sat_borrow(v, c):
    return np.where(c, np.uint32(0), v)


def _pack_lanes(lanes: np.ndarray) -> np.ndarray:
    """(k, 64) bool -> (k,) uint64 lane masks (lane i -> bit i)."""
    packed = np.packbits(np.ascontiguousarray(lanes), axis=-1, bitorder="little")
    return packed.view("<u8").reshape(lanes.shape[0])


def _unpack_lanes(mask: np.ndarray) -> np.ndarray:
    """(k,) uint64 lane masks -> (k, 64) bool."""
    raw = np.ascontiguousarray(mask, dtype="<u8").view(np.uint8).reshape(-1, 8)
    return np.unpackbits(raw, axis=-1, bitorder="little").view(bool)


# --------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True)
class Row:
    name: str  # base mnemonic: v_add_f32 (decoded as v_add_f32_e32 / v_add_f32_e64)
    dst: str | None  # result type; None: no vector result (compares)
    srcs: tuple[str, ...]
    fn: Callable
    # alu: fn(*srcs) -> value; cout: -> (value, carry); cin: fn(*srcs, carry) -> (value, carry);
    # sel: fn(*srcs, mask) -> value (mask: VCC or src2); vccin: fn(*srcs, vcc) -> value;
    # vccout: -> (value, flag) to VCC (VOP3B sdst); cmp / cmpx: -> bool; acc: fn(*srcs, old
    # vdst) -> value; special: fn(ctx, ins, w, row).
    kind: str = "alu"
    ftz: bool = True  # honour MODE's denormal flushing on float sources/result
    sat: Callable | None = None  # clamp on an integer row: saturate the wide result
    keep_hi: bool = False  # 16-bit result keeps the high half of the VGPR
    lane: bool = False  # fn also takes the lane index array
    floaty: bool = False  # a float source or result: MODE matters (derived)

    def __post_init__(self) -> None:
        types = [TYPES[t] for t in self.srcs] + ([TYPES[self.dst]] if self.dst else [])
        object.__setattr__(self, "floaty", any(t.is_float for t in types))


def _r(name, dst, srcs, fn, kind="alu", **kw) -> Row:
    return Row(name, dst, tuple(srcs.split()) if srcs else (), fn, kind, **kw)


def _rows() -> list[Row]:
    R = _r
    rows = [
        # -- moves, selects, lane access ------------------------------------------------------
        R("v_nop", None, "", None, "special"),
        R("v_clrexcp", None, "", None, "special"),
        R("v_mov_b32", "b32", "b32", lambda a: a),
        R("v_mov_b64", "b64", "b64", lambda a: a),
        R("v_cndmask_b32", "f32", "f32 f32", lambda a, b, m: np.where(m, b, a), "sel", ftz=False),
        R("v_readfirstlane_b32", None, "b32", None, "special"),
        R("v_readlane_b32", None, "b32 u32", None, "special"),
        R("v_writelane_b32", None, "b32 u32", None, "special"),
        R("v_swap_b32", None, "b32", None, "special"),
        R("v_accvgpr_read_b32", None, "b32", None, "special"),
        R("v_accvgpr_write_b32", None, "b32", None, "special"),
        R("v_accvgpr_mov_b32", None, "b32", None, "special"),
        R("v_pk_mov_b32", None, "b64 b64", None, "special"),
        R(
            "v_mbcnt_lo_u32_b32",
            "u32",
            "u32 u32",
            lambda a, b, lane: _popcount(a & _MBCNT_LO) + b,
            lane=True,
        ),
        R(
            "v_mbcnt_hi_u32_b32",
            "u32",
            "u32 u32",
            lambda a, b, lane: _popcount(a & _MBCNT_HI) + b,
            lane=True,
        ),
        # -- f32 arithmetic ---------------------------------------------------------------------
        R("v_add_f32", "f32", "f32 f32", lambda a, b: a + b),
        R("v_sub_f32", "f32", "f32 f32", lambda a, b: a - b),
        R("v_subrev_f32", "f32", "f32 f32", lambda a, b: b - a),
        R("v_mul_f32", "f32", "f32 f32", lambda a, b: a * b),
        R("v_mul_legacy_f32", "f32", "f32 f32", _mul_legacy),
        R("v_min_f32", "f32", "f32 f32", _fmin),
        R("v_max_f32", "f32", "f32 f32", _fmax),
        R("v_mac_f32", "f32", "f32 f32", _mad_ftz32, "acc", ftz=False),
        R("v_mad_f32", "f32", "f32 f32 f32", _mad_ftz32, ftz=False),
        R("v_madmk_f32", "f32", "f32 f32", _mad_ftz32, "madmk", ftz=False),
        R("v_madak_f32", "f32", "f32 f32", _mad_ftz32, "madak", ftz=False),
        R(
            "v_mad_legacy_f32",
            "f32",
            "f32 f32 f32",
            lambda a, b, c: _flush(_flush(_mul_legacy(_flush(a), _flush(b))) + _flush(c)),
            ftz=False,
        ),
        R("v_fmac_f32", "f32", "f32 f32", _fma32, "acc"),
        R("v_fma_f32", "f32", "f32 f32 f32", _fma32),
        R("v_fmamk_f32", "f32", "f32 f32", _fma32, "madmk"),
        R("v_fmaak_f32", "f32", "f32 f32", _fma32, "madak"),
        R("v_min3_f32", "f32", "f32 f32 f32", lambda a, b, c: _fmin(_fmin(a, b), c)),
        R("v_max3_f32", "f32", "f32 f32 f32", lambda a, b, c: _fmax(_fmax(a, b), c)),
        R("v_med3_f32", "f32", "f32 f32 f32", _med3f),
        R("v_ldexp_f32", "f32", "f32 i32", _ldexp),
        R("v_div_scale_f32", "f32", "f32 f32 f32", _div_scale(True), "vccout"),
        R("v_div_fmas_f32", "f32", "f32 f32 f32", _div_fmas(True), "vccin"),
        R("v_div_fixup_f32", "f32", "f32 f32 f32", _div_fixup(-150, 255)),
        R("v_fract_f32", "f32", "f32", _fract),
        R("v_trunc_f32", "f32", "f32", np.trunc),
        R("v_ceil_f32", "f32", "f32", np.ceil),
        R("v_rndne_f32", "f32", "f32", np.rint),
        R("v_floor_f32", "f32", "f32", np.floor),
        R("v_exp_f32", "f32", "f32", lambda x: np.exp2(_f64(x))),
        R("v_log_f32", "f32", "f32", lambda x: np.log2(_f64(x))),
        R("v_exp_legacy_f32", "f32", "f32", lambda x: np.exp2(_f64(x))),
        R("v_log_legacy_f32", "f32", "f32", lambda x: np.log2(_f64(x))),
        R("v_rcp_f32", "f32", "f32", lambda x: 1.0 / _f64(x)),
        R("v_rcp_iflag_f32", "f32", "f32", lambda x: 1.0 / _f64(x)),
        R("v_rsq_f32", "f32", "f32", _rsq),
        R("v_sqrt_f32", "f32", "f32", lambda x: np.sqrt(_f64(x))),
        R("v_sin_f32", "f32", "f32", _trig(np.sin, np.float32)),
        R("v_cos_f32", "f32", "f32", _trig(np.cos, np.float32)),
        R("v_frexp_mant_f32", "f32", "f32", _frexp_mant),
        R("v_frexp_exp_i32_f32", "i32", "f32", _frexp_exp),
        # -- f64 --------------------------------------------------------------------------------
        R("v_add_f64", "f64", "f64 f64", lambda a, b: a + b),
        R("v_mul_f64", "f64", "f64 f64", lambda a, b: a * b),
        R("v_min_f64", "f64", "f64 f64", _fmin),
        R("v_max_f64", "f64", "f64 f64", _fmax),
        R("v_fma_f64", "f64", "f64 f64 f64", _fma64),
        R("v_fmac_f64", "f64", "f64 f64", _fma64, "acc"),
        R("v_ldexp_f64", "f64", "f64 i32", _ldexp),
        R("v_div_scale_f64", "f64", "f64 f64 f64", _div_scale(False), "vccout"),
        R("v_div_fmas_f64", "f64", "f64 f64 f64", _div_fmas(False), "vccin"),
        R("v_div_fixup_f64", "f64", "f64 f64 f64", _div_fixup(-1075, 2047)),
        R("v_trig_preop_f64", "f64", "f64 u32", _trig_preop),
        R("v_fract_f64", "f64", "f64", _fract),
        R("v_trunc_f64", "f64", "f64", np.trunc),
        R("v_ceil_f64", "f64", "f64", np.ceil),
        R("v_rndne_f64", "f64", "f64", np.rint),
        R("v_floor_f64", "f64", "f64", np.floor),
        R("v_rcp_f64", "f64", "f64", lambda x: 1.0 / x),
        R("v_rsq_f64", "f64", "f64", _rsq),
        R("v_sqrt_f64", "f64", "f64", np.sqrt),
        R("v_frexp_mant_f64", "f64", "f64", _frexp_mant),
        R("v_frexp_exp_i32_f64", "i32", "f64", _frexp_exp),
        # -- conversions ------------------------------------------------------------------------
        R("v_cvt_i32_f64", "i32", "f64", lambda x: _cvt_int(x, -(2**31), 2**31 - 1)),
        R("v_cvt_u32_f64", "u32", "f64", lambda x: _cvt_int(x, 0, 2**32 - 1)),
        R("v_cvt_f64_i32", "f64", "i32", lambda x: x.astype(np.float64)),
        R("v_cvt_f64_u32", "f64", "u32", lambda x: x.astype(np.float64)),
        R("v_cvt_f32_i32", "f32", "i32", lambda x: x.astype(np.float32)),
        R("v_cvt_f32_u32", "f32", "u32", lambda x: x.astype(np.float32)),
        R("v_cvt_u32_f32", "u32", "f32", lambda x: _cvt_int(x, 0, 2**32 - 1)),
        R("v_cvt_i32_f32", "i32", "f32", lambda x: _cvt_int(x, -(2**31), 2**31 - 1)),
        R(
            "v_cvt_rpi_i32_f32",
            "i32",
            "f32",
            lambda x: _cvt_int(x, -(2**31), 2**31 - 1, lambda v: np.floor(v + 0.5)),
        ),
        R("v_cvt_flr_i32_f32", "i32", "f32", lambda x: _cvt_int(x, -(2**31), 2**31 - 1, np.floor)),
        R(
            "v_cvt_off_f32_i4",
            "f32",
            "u32",
            lambda x: ((_i64(x) & 15) ^ 8).astype(np.float32) / 16 - 0.5,
        ),
        R("v_cvt_f32_f64", "f32", "f64", lambda x: x.astype(np.float32)),
        R("v_cvt_f64_f32", "f64", "f32", lambda x: x.astype(np.float64)),
        R("v_cvt_f16_f32", "f16", "f32", lambda x: x.astype(np.float16)),
        R("v_cvt_f32_f16", "f32", "f16", lambda x: x.astype(np.float32)),
        *[
            R(
                f"v_cvt_f32_ubyte{i}",
                "f32",
                "u32",
                lambda x, i=i: ((x >> np.uint32(8 * i)) & np.uint32(0xFF)).astype(np.float32),
            )
            for i in range(4)
        ],
        R(
            "v_cvt_pkrtz_f16_f32",
            "u32",
            "f32 f32",
            lambda a, b: (
                _u64(_cvt_f16_rtz(a).view(np.uint16))
                | (_u64(_cvt_f16_rtz(b).view(np.uint16)) << np.uint64(16))
            ),
        ),
        R(
            "v_cvt_pk_u16_u32",
            "u32",
            "u32 u32",
            lambda a, b: (
                np.minimum(_u64(a), 0xFFFF) | (np.minimum(_u64(b), 0xFFFF) << np.uint64(16))
            ),
        ),
        R(
            "v_cvt_pk_i16_i32",
            "u32",
            "i32 i32",
            lambda a, b: (
                (np.clip(_i64(a), -32768, 32767) & 0xFFFF)
                | ((np.clip(_i64(b), -32768, 32767) & 0xFFFF) << 16)
            ),
        ),
        R(
            "v_pack_b32_f16",
            "u32",
            "f16 f16",
            lambda a, b: _u64(a.view(np.uint16)) | (_u64(b.view(np.uint16)) << np.uint64(16)),
        ),
        R("v_cvt_f16_u16", "f16", "u16", lambda x: x.astype(np.float16)),
        R("v_cvt_f16_i16", "f16", "i16", lambda x: x.astype(np.float16)),
        R("v_cvt_u16_f16", "u16", "f16", lambda x: _cvt_int(x, 0, 0xFFFF)),
        R("v_cvt_i16_f16", "i16", "f16", lambda x: _cvt_int(x, -32768, 32767)),
        # -- 32-bit integer -----------------------------------------------------------------------
        R("v_add_u32", "u32", "u32 u32", lambda a, b: _u64(a) + _u64(b), sat=_sat_u32),
        R("v_sub_u32", "u32", "u32 u32", lambda a, b: _i64(a) - _i64(b), sat=_sat_u32),
        R("v_subrev_u32", "u32", "u32 u32", lambda a, b: _i64(b) - _i64(a), sat=_sat_u32),
        R("v_add_i32", "i32", "i32 i32", lambda a, b: _i64(a) + _i64(b), sat=_sat_i32),
        R("v_sub_i32", "i32", "i32 i32", lambda a, b: _i64(a) - _i64(b), sat=_sat_i32),
        # clamp on the carry rows saturates where the carry/borrow is set
        R("v_add_co_u32", "u32", "u32 u32", _add_c, "cout", sat=_sat_carry),
        R("v_sub_co_u32", "u32", "u32 u32", _sub_c, "cout", sat=_sat_borrow),
        R("v_subrev_co_u32", "u32", "u32 u32", lambda a, b: _sub_c(b, a), "cout", sat=_sat_borrow),
        R("v_addc_co_u32", "u32", "u32 u32", _add_c, "cin", sat=_sat_carry),
        R("v_subb_co_u32", "u32", "u32 u32", _sub_c, "cin", sat=_sat_borrow),
        R(
            "v_subbrev_co_u32",
            "u32",
            "u32 u32",
            lambda a, b, c: _sub_c(b, a, c),
            "cin",
            sat=_sat_borrow,
        ),
        R("v_mul_lo_u32", "u32", "u32 u32", lambda a, b: _u64(a) * _u64(b)),
        R("v_mul_hi_u32", "u32", "u32 u32", lambda a, b: (_u64(a) * _u64(b)) >> np.uint64(32)),
        R("v_mul_hi_i32", "i32", "i32 i32", lambda a, b: (_i64(a) * _i64(b)) >> 32),
        R("v_mul_i32_i24", "i32", "u32 u32", lambda a, b: _sext24(a) * _sext24(b)),
        R("v_mul_hi_i32_i24", "i32", "u32 u32", lambda a, b: (_sext24(a) * _sext24(b)) >> 32),
        R(
            "v_mul_u32_u24",
            "u32",
            "u32 u32",
            lambda a, b: (_u64(a) & np.uint64(0xFFFFFF)) * (_u64(b) & np.uint64(0xFFFFFF)),
        ),
        R(
            "v_mul_hi_u32_u24",
            "u32",
            "u32 u32",
            lambda a, b: (
                ((_u64(a) & np.uint64(0xFFFFFF)) * (_u64(b) & np.uint64(0xFFFFFF))) >> np.uint64(32)
            ),
        ),
        R(
            "v_mad_i32_i24",
            "i32",
            "u32 u32 i32",
            lambda a, b, c: _sext24(a) * _sext24(b) + c,
            sat=_sat_i32,
        ),
        R(
            "v_mad_u32_u24",
            "u32",
            "u32 u32 u32",
            lambda a, b, c: (
                (_u64(a) & np.uint64(0xFFFFFF)) * (_u64(b) & np.uint64(0xFFFFFF)) + _u64(c)
            ),
            sat=_sat_u32,
        ),
        R(
            "v_mad_u32_u16",
            "u32",
            "u32 u32 u32",
            lambda a, b, c: (_u64(a) & np.uint64(0xFFFF)) * (_u64(b) & np.uint64(0xFFFF)) + _u64(c),
            sat=_sat_u32,
        ),
        R(
            "v_mad_i32_i16",
            "i32",
            "i16 i16 i32",
            lambda a, b, c: _i64(a) * _i64(b) + c,
            sat=_sat_i32,
        ),
        R("v_mad_u64_u32", "u64", "u32 u32 u64", _mad64_u, "vccout"),
        R("v_mad_i64_i32", "i64", "i32 i32 i64", _mad64_i, "vccout"),
        R("v_min_i32", "i32", "i32 i32", np.minimum),
        R("v_max_i32", "i32", "i32 i32", np.maximum),
        R("v_min_u32", "u32", "u32 u32", np.minimum),
        R("v_max_u32", "u32", "u32 u32", np.maximum),
        R("v_min3_i32", "i32", "i32 i32 i32", _min3),
        R("v_min3_u32", "u32", "u32 u32 u32", _min3),
        R("v_max3_i32", "i32", "i32 i32 i32", _max3),
        R("v_max3_u32", "u32", "u32 u32 u32", _max3),
        R("v_med3_i32", "i32", "i32 i32 i32", _med3i),
        R("v_med3_u32", "u32", "u32 u32 u32", _med3i),
        R("v_lshrrev_b32", "b32", "u32 b32", lambda a, b: b >> (a & np.uint32(31))),
        R(
            "v_ashrrev_i32",
            "i32",
            "u32 i32",
            lambda a, b: b >> (a & np.uint32(31)).astype(np.int32),
        ),
        R("v_lshlrev_b32", "b32", "u32 b32", lambda a, b: b << (a & np.uint32(31))),
        R("v_and_b32", "b32", "b32 b32", np.bitwise_and),
        R("v_or_b32", "b32", "b32 b32", np.bitwise_or),
        R("v_xor_b32", "b32", "b32 b32", np.bitwise_xor),
        R("v_xnor_b32", "b32", "b32 b32", lambda a, b: ~(a ^ b)),
        R("v_not_b32", "b32", "b32", np.invert),
        R("v_bfrev_b32", "b32", "b32", _bfrev),
        R("v_ffbh_u32", "i32", "u32", _ffbh_u32),
        R("v_ffbl_b32", "i32", "b32", _ffbl_b32),
        R("v_ffbh_i32", "i32", "i32", _ffbh_i32),
        R("v_bcnt_u32_b32", "u32", "b32 u32", lambda a, b: _popcount(a) + b),
        R("v_bfe_u32", "u32", "u32 u32 u32", _bfe_u),
        R("v_bfe_i32", "i32", "u32 u32 u32", _bfe_i),
        R("v_bfi_b32", "b32", "b32 b32 b32", lambda a, b, c: (a & b) | (~a & c)),
        R(
            "v_bfm_b32",
            "b32",
            "u32 u32",
            lambda a, b: (
                ((np.uint64(1) << _u64(a & np.uint32(31))) - np.uint64(1))
                << _u64(b & np.uint32(31))
            ),
        ),
        R(
            "v_alignbit_b32",
            "b32",
            "u32 u32 u32",
            lambda a, b, c: ((_u64(a) << np.uint64(32)) | _u64(b)) >> _u64(c & np.uint32(31)),
        ),
        R(
            "v_alignbyte_b32",
            "b32",
            "u32 u32 u32",
            lambda a, b, c: (
                ((_u64(a) << np.uint64(32)) | _u64(b)) >> (_u64(c & np.uint32(3)) * np.uint64(8))
            ),
        ),
        R("v_perm_b32", "b32", "u32 u32 u32", _perm),
        R("v_add3_u32", "u32", "u32 u32 u32", lambda a, b, c: _u64(a) + _u64(b) + _u64(c)),
        R("v_lshl_add_u32", "u32", "u32 u32 u32", lambda a, b, c: (a << (b & np.uint32(31))) + c),
        R("v_add_lshl_u32", "u32", "u32 u32 u32", lambda a, b, c: (a + b) << (c & np.uint32(31))),
        R("v_lshl_or_b32", "b32", "u32 u32 u32", lambda a, b, c: (a << (b & np.uint32(31))) | c),
        R("v_and_or_b32", "b32", "b32 b32 b32", lambda a, b, c: (a & b) | c),
        R("v_or3_b32", "b32", "b32 b32 b32", lambda a, b, c: a | b | c),
        R("v_xad_u32", "u32", "u32 u32 u32", lambda a, b, c: (a ^ b) + c),
        R(
            "v_sad_u32",
            "u32",
            "u32 u32 u32",
            lambda a, b, c: np.abs(_i64(a) - _i64(b)) + c,
            sat=_sat_u32,
        ),
        # -- 64-bit integer -----------------------------------------------------------------------
        R("v_lshlrev_b64", "b64", "u32 b64", lambda a, b: b << _u64(a & np.uint32(63))),
        R("v_lshrrev_b64", "b64", "u32 b64", lambda a, b: b >> _u64(a & np.uint32(63))),
        R("v_ashrrev_i64", "i64", "u32 i64", lambda a, b: b >> _i64(a & np.uint32(63))),
        R(
            "v_lshl_add_u64",
            "u64",
            "u64 u32 u64",
            lambda a, b, c: (a << _u64(b & np.uint32(7))) + c,
        ),
        # -- 16-bit -------------------------------------------------------------------------------
        R("v_add_f16", "f16", "f16 f16", lambda a, b: a + b),
        R("v_sub_f16", "f16", "f16 f16", lambda a, b: a - b),
        R("v_subrev_f16", "f16", "f16 f16", lambda a, b: b - a),
        R("v_mul_f16", "f16", "f16 f16", lambda a, b: a * b),
        R(
            "v_mac_f16",
            "f16",
            "f16 f16",
            lambda a, b, c: (_f64(a) * _f64(b)).astype(np.float16) + c,
            "acc",
        ),
        R("v_max_f16", "f16", "f16 f16", _fmax),
        R("v_min_f16", "f16", "f16 f16", _fmin),
        R("v_ldexp_f16", "f16", "f16 i32", _ldexp),
        R("v_fma_f16", "f16", "f16 f16 f16", _fma16, keep_hi=True),
        R(
            "v_mad_f16",
            "f16",
            "f16 f16 f16",
            lambda a, b, c: (_f64(a) * _f64(b)).astype(np.float16) + c,
            keep_hi=True,
        ),
        R("v_div_fixup_f16", "f16", "f16 f16 f16", _div_fixup(-25, 31), keep_hi=True),
        R("v_min3_f16", "f16", "f16 f16 f16", lambda a, b, c: _fmin(_fmin(a, b), c)),
        R("v_max3_f16", "f16", "f16 f16 f16", lambda a, b, c: _fmax(_fmax(a, b), c)),
        R("v_med3_f16", "f16", "f16 f16 f16", _med3f),
        R(
            "v_add_u16",
            "u16",
            "u16 u16",
            lambda a, b: _u64(a) + _u64(b),
            sat=lambda x: np.clip(x, 0, 0xFFFF),
        ),
        R(
            "v_sub_u16",
            "u16",
            "u16 u16",
            lambda a, b: _i64(a) - _i64(b),
            sat=lambda x: np.clip(x, 0, 0xFFFF),
        ),
        R(
            "v_subrev_u16",
            "u16",
            "u16 u16",
            lambda a, b: _i64(b) - _i64(a),
            sat=lambda x: np.clip(x, 0, 0xFFFF),
        ),
        R(
            "v_add_i16",
            "i16",
            "i16 i16",
            lambda a, b: _i64(a) + _i64(b),
            sat=lambda x: np.clip(x, -32768, 32767),
        ),
        R(
            "v_sub_i16",
            "i16",
            "i16 i16",
            lambda a, b: _i64(a) - _i64(b),
            sat=lambda x: np.clip(x, -32768, 32767),
        ),
        R("v_mul_lo_u16", "u16", "u16 u16", lambda a, b: _u64(a) * _u64(b)),
        R(
            "v_mad_u16",
            "u16",
            "u16 u16 u16",
            lambda a, b, c: _u64(a) * _u64(b) + _u64(c),
            keep_hi=True,
            sat=lambda x: np.clip(x, 0, 0xFFFF),
        ),
        R(
            "v_mad_i16",
            "i16",
            "i16 i16 i16",
            lambda a, b, c: _i64(a) * _i64(b) + _i64(c),
            keep_hi=True,
            sat=lambda x: np.clip(x, -32768, 32767),
        ),
        R("v_lshlrev_b16", "b16", "u16 b16", lambda a, b: b << (a & np.uint16(15))),
        R("v_lshrrev_b16", "b16", "u16 b16", lambda a, b: b >> (a & np.uint16(15))),
        R(
            "v_ashrrev_i16",
            "i16",
            "u16 i16",
            lambda a, b: b >> (a & np.uint16(15)).astype(np.int16),
        ),
        R("v_max_u16", "u16", "u16 u16", np.maximum),
        R("v_max_i16", "i16", "i16 i16", np.maximum),
        R("v_min_u16", "u16", "u16 u16", np.minimum),
        R("v_min_i16", "i16", "i16 i16", np.minimum),
        R("v_min3_i16", "i16", "i16 i16 i16", _min3),
        R("v_min3_u16", "u16", "u16 u16 u16", _min3),
        R("v_max3_i16", "i16", "i16 i16 i16", _max3),
        R("v_max3_u16", "u16", "u16 u16 u16", _max3),
        R("v_med3_i16", "i16", "i16 i16 i16", _med3i),
        R("v_med3_u16", "u16", "u16 u16 u16", _med3i),
        R("v_rcp_f16", "f16", "f16", lambda x: 1.0 / _f64(x)),
        R("v_sqrt_f16", "f16", "f16", lambda x: np.sqrt(_f64(x))),
        R("v_rsq_f16", "f16", "f16", _rsq),
        R("v_log_f16", "f16", "f16", lambda x: np.log2(_f64(x))),
        R("v_exp_f16", "f16", "f16", lambda x: np.exp2(_f64(x))),
        R("v_sin_f16", "f16", "f16", _trig(np.sin, np.float16)),
        R("v_cos_f16", "f16", "f16", _trig(np.cos, np.float16)),
        R("v_frexp_mant_f16", "f16", "f16", _frexp_mant),
        R("v_frexp_exp_i16_f16", "i16", "f16", _frexp_exp),
        R("v_floor_f16", "f16", "f16", np.floor),
        R("v_ceil_f16", "f16", "f16", np.ceil),
        R("v_trunc_f16", "f16", "f16", np.trunc),
        R("v_rndne_f16", "f16", "f16", np.rint),
        R("v_fract_f16", "f16", "f16", _fract),
    ]
    rows += [
        # gfx9 keeps VI's 16-bit multiply-adds under _legacy names: they zero the high half
        # (LLVM selects v_mad_legacy_f16 for llvm.amdgcn.fmad.ftz.f16: denormals flushed).
        R(
            "v_mad_legacy_u16",
            "u16",
            "u16 u16 u16",
            lambda a, b, c: _u64(a) * _u64(b) + _u64(c),
            sat=lambda x: np.clip(x, 0, 0xFFFF),
        ),
        R(
            "v_mad_legacy_i16",
            "i16",
            "i16 i16 i16",
            lambda a, b, c: _i64(a) * _i64(b) + _i64(c),
            sat=lambda x: np.clip(x, -32768, 32767),
        ),
        R(
            "v_mad_legacy_f16",
            "f16",
            "f16 f16 f16",
            lambda a, b, c: _flush(
                _flush((_f64(_flush(a)) * _f64(_flush(b))).astype(np.float16)) + _flush(c)
            ),
            ftz=False,
        ),
        R("v_fma_legacy_f16", "f16", "f16 f16 f16", _fma16),
        R("v_div_fixup_legacy_f16", "f16", "f16 f16 f16", _div_fixup(-25, 31)),
    ]
    rows += _packed_rows()
    rows += _compare_rows()
    return rows


def _packed_rows() -> list[Row]:
    """VOP3P packed math: the operation applied to the low and to the high element (16-bit
    halves of a VGPR, or the two dwords of a VGPR pair for the gfx90a packed FP32 ops)."""

    def P(name, t, n, fn, **kw):
        return Row(name, t, (t,) * n, fn, "pk", **kw)

    sat_u = lambda x: np.clip(x, 0, 0xFFFF)  # noqa: E731
    sat_i = lambda x: np.clip(x, -32768, 32767)  # noqa: E731
    mixes = [
        Row(f"v_{kind}_{part}", "f32" if part == "mix_f32" else "f16", ("f32",) * 3, kind, "mix")
        for kind in ("fma", "mad")
        for part in ("mix_f32", "mixlo_f16", "mixhi_f16")
    ]
    return mixes + [
        P("v_pk_fma_f32", "f32", 3, _fma32),
        P("v_pk_mul_f32", "f32", 2, lambda a, b: a * b),
        P("v_pk_add_f32", "f32", 2, lambda a, b: a + b),
        P("v_pk_fma_f16", "f16", 3, _fma16),
        P("v_pk_add_f16", "f16", 2, lambda a, b: a + b),
        P("v_pk_mul_f16", "f16", 2, lambda a, b: a * b),
        P("v_pk_min_f16", "f16", 2, _fmin),
        P("v_pk_max_f16", "f16", 2, _fmax),
        P("v_pk_mad_i16", "i16", 3, lambda a, b, c: _i64(a) * _i64(b) + _i64(c), sat=sat_i),
        P("v_pk_mad_u16", "u16", 3, lambda a, b, c: _u64(a) * _u64(b) + _u64(c), sat=sat_u),
        P("v_pk_mul_lo_u16", "u16", 2, lambda a, b: _u64(a) * _u64(b)),
        P("v_pk_add_i16", "i16", 2, lambda a, b: _i64(a) + _i64(b), sat=sat_i),
        P("v_pk_sub_i16", "i16", 2, lambda a, b: _i64(a) - _i64(b), sat=sat_i),
        P("v_pk_add_u16", "u16", 2, lambda a, b: _i64(a) + _i64(b), sat=sat_u),
        P("v_pk_sub_u16", "u16", 2, lambda a, b: _i64(a) - _i64(b), sat=sat_u),
        P("v_pk_lshlrev_b16", "u16", 2, lambda a, b: _u64(b) << _u64(a & np.uint16(15))),
        P("v_pk_lshrrev_b16", "u16", 2, lambda a, b: b >> (a & np.uint16(15))),
        P("v_pk_ashrrev_i16", "i16", 2, lambda a, b: b >> (a & np.int16(15))),
        P("v_pk_max_i16", "i16", 2, np.maximum),
        P("v_pk_min_i16", "i16", 2, np.minimum),
        P("v_pk_max_u16", "u16", 2, np.maximum),
        P("v_pk_min_u16", "u16", 2, np.minimum),
    ]


_FCMP = {
    "f": lambda a, b: np.zeros(np.broadcast(a, b).shape, bool),
    "lt": lambda a, b: a < b,
    "eq": lambda a, b: a == b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "lg": lambda a, b: (a < b) | (a > b),
    "ge": lambda a, b: a >= b,
    "o": lambda a, b: ~(np.isnan(a) | np.isnan(b)),
    "u": lambda a, b: np.isnan(a) | np.isnan(b),
    "nge": lambda a, b: ~(a >= b),
    "nlg": lambda a, b: ~((a < b) | (a > b)),
    "ngt": lambda a, b: ~(a > b),
    "nle": lambda a, b: ~(a <= b),
    "neq": lambda a, b: ~(a == b),
    "nlt": lambda a, b: ~(a < b),
    "tru": lambda a, b: np.ones(np.broadcast(a, b).shape, bool),
}
_ICMP = {
    "f": _FCMP["f"],
    "lt": _FCMP["lt"],
    "eq": _FCMP["eq"],
    "le": _FCMP["le"],
    "gt": _FCMP["gt"],
    "ne": lambda a, b: a != b,
    "ge": _FCMP["ge"],
    "t": _FCMP["tru"],
}


def _compare_rows() -> list[Row]:
    rows = []
    for x in ("", "x"):
        kind = "cmpx" if x else "cmp"
        for t in ("f16", "f32", "f64"):
            rows.append(Row(f"v_cmp{x}_class_{t}", None, (t, "u32"), _cls, kind, ftz=False))
            for c, f in _FCMP.items():
                rows.append(Row(f"v_cmp{x}_{c}_{t}", None, (t, t), f, kind))
        for t in ("i16", "u16", "i32", "u32", "i64", "u64"):
            for c, f in _ICMP.items():
                rows.append(Row(f"v_cmp{x}_{c}_{t}", None, (t, t), f, kind))
    return rows


ROWS: tuple[Row, ...] = tuple(_rows())
_BY_NAME = {r.name: r for r in ROWS}
assert len(_BY_NAME) == len(ROWS), "duplicate VALU row"

# Quarter-rate instructions (Vega ISA guide 6.1, "transcendental" ops; CDNA whitepapers: the
# transcendental unit issues one quarter of the lanes per cycle).
_TRANS_BASES = {
    f"v_{op}_{t}"
    for op in ("exp", "log", "rcp", "rsq", "sqrt", "sin", "cos")
    for t in ("f32", "f16")
} | {
    "v_rcp_iflag_f32",
    "v_exp_legacy_f32",
    "v_log_legacy_f32",
    "v_rcp_f64",
    "v_rsq_f64",
    "v_sqrt_f64",
}

# --------------------------------------------------------------------------------------------
# Execution


def _mode(ctx, w) -> int | np.ndarray:
    modes = getattr(ctx.waves, "mode", None)
    if modes is not None:
        sel = np.asarray(modes)[w]
        if sel.size == 0 or (sel == sel.flat[0]).all():
            return int(sel.flat[0]) if sel.size else DEFAULT_MODE
        return sel
    return int(getattr(ctx, "mode", DEFAULT_MODE))


@dataclass(slots=True)
class _Mods:
    abs: int = 0
    neg: int = 0
    clamp: int = 0
    omod: int = 0
    opsel: int = 0
    sdst: int | None = None


def _vop3_mods(ins, vop3b: bool) -> _Mods:
    w0, w1 = ins.words[0], ins.words[1]
    m = _Mods(neg=(w1 >> 29) & 7, clamp=(w0 >> 15) & 1, omod=(w1 >> 27) & 3)
    if vop3b:
        m.sdst = (w0 >> 8) & 0x7F
    else:
        m.abs = (w0 >> 8) & 7
        m.opsel = (w0 >> 11) & 0xF
    return m


def _illegal(ins, why: str):
    return IllegalInstruction(f"{ins.mnemonic} at {ins.pc:#x}: {why}")


def _read(waves, w, op: int, literal, ty: Ty, absm: bool, negm: bool, ins, raw=None):
    if raw is not None:
        pass  # a DPP source, already gathered
    elif ty.bits == 64:
        # Inline float constants of any 64-bit operand are doubles (llvm-mc encodes
        # `v_lshlrev_b64 v[0:1], 1, 0x3ff0000000000000` with constant 242); a literal is the
        # high half of a double but a zero-extended integer.
        fp = ty.name == "f64" or 240 <= op <= 248
        raw = waves.vector64(w, op, literal, "f64" if fp else "b64")
    else:
        raw = waves.vector(w, op, literal, "f16" if ty.name == "f16" else "b32")
    if absm or negm:
        if not ty.is_float:
            raise _illegal(ins, f"abs/neg modifier on the integer source {ty.name}")
        sign = _UINT[64 if ty.bits == 64 else 32](1 << (ty.bits - 1))
        if absm:
            raw = raw & ~sign
        if negm:
            raw = raw ^ sign
    return _from_bits(raw, ty)


def _write_mask(waves, w, reg: int, bools: np.ndarray) -> None:
    waves.write_sgpr64(w, reg, _pack_lanes(bools & waves.lanes(w)))


def _finish_float(val, ty: Ty, mods: _Mods, mode: int, ftz: bool):
    val = np.asarray(val).astype(ty.dtype, copy=False)
    if mods.omod:
        val = val * ty.dtype((2.0, 4.0, 0.5)[mods.omod - 1])
    if mods.clamp:
        dx10 = (mode >> 8) & 1
        c = np.minimum(np.maximum(val, ty.dtype(0)), ty.dtype(1))
        val = np.where(np.isnan(val), ty.dtype(0) if dx10 else val, c)
    if ftz and not _denorm_bits(mode, ty.dtype) & 2:
        val = _flush(val)
    return val


def _execute(row: Row, ctx, ins, w) -> None:
    waves = ctx.waves
    enc = ins.encoding
    dpp = sdwa = None
    if ins.modifier == "dpp":
        dpp = _dpp(waves, w, ins, row)
    elif ins.modifier == "sdwa":
        sdwa = _sdwa(waves, w, ins, row)
    elif ins.modifier is not None:
        raise _illegal(ins, f"the {ins.modifier.upper()} form is not supported")
    floaty = row.floaty
    mode = _mode(ctx, w) if floaty else DEFAULT_MODE
    if isinstance(mode, np.ndarray):  # waves at this PC disagree on MODE: one group at a time
        idx = np.arange(waves.n)[w]
        for m in np.unique(mode):
            _execute(row, ctx, ins, idx[mode == m])
        return
    if floaty and mode & 0xF:
        raise _illegal(ins, f"rounding mode {mode & 0xF:#x} (only round-to-nearest-even)")

    f = ins.fields
    vop3 = enc == "VOP3"
    carry_reg = VCC_LO  # carry / compare result / selector
    if vop3:
        vop3b = row.kind in ("cout", "cin", "vccout")
        mods = _vop3_mods(ins, vop3b)
        if mods.opsel:
            raise _illegal(ins, "op_sel is not supported")
        ops = [f["src0"], f["src1"], f["src2"]]
        if vop3b:
            carry_reg = mods.sdst
        elif row.kind in ("cmp", "cmpx"):
            carry_reg = f["vdst"]
    else:
        mods = dpp.mods if dpp is not None else sdwa.mods if sdwa is not None else _Mods()
        ops = [f["src0"], VGPR0 + f.get("vsrc1", 0)]
        if sdwa is not None and sdwa.sdst is not None:
            carry_reg = sdwa.sdst
    literal = ins.literal
    wlanes = None if dpp is None else dpp.write

    n_src = len(row.srcs)
    if row.kind in ("madmk", "madak"):
        if vop3:
            raise _illegal(ins, "no VOP3 form")
        # madmk: D = S0 * K + S1; madak: D = S0 * S1 + K (K the trailing constant)
        if literal is None:
            raise _illegal(ins, "no trailing constant")
        k = _from_bits(np.full((1, 1), literal, np.uint32), TYPES[row.dst])
        a = _read(waves, w, ops[0], None, TYPES[row.srcs[0]], False, False, ins)
        b = _read(waves, w, ops[1], None, TYPES[row.srcs[1]], False, False, ins)
        srcs = [a, k, b] if row.kind == "madmk" else [a, b, k]
    else:
        srcs = []
        for i in range(n_src):
            ty = TYPES[row.srcs[i]]
            srcs.append(
                _read(
                    waves,
                    w,
                    ops[i],
                    literal,
                    ty,
                    bool(mods.abs >> i & 1),
                    bool(mods.neg >> i & 1),
                    ins,
                    dpp.src0
                    if (dpp is not None and i == 0)
                    else sdwa.srcs[i]
                    if (sdwa is not None and i < 2)
                    else None,
                )
            )
        extra_mods = (mods.abs | mods.neg) >> n_src
        if extra_mods and row.kind not in ("acc",):
            raise _illegal(ins, "abs/neg modifier on an operand the instruction does not have")
    dst_ty = TYPES[row.dst] if row.dst is not None else None

    # Denormal inputs of float sources, as MODE says.
    if floaty and row.ftz:
        srcs = [_ftz_in(s, mode) for s in srcs]

    if (mods.clamp or mods.omod) and row.kind not in ("cmp", "cmpx"):
        if mods.omod and not (dst_ty and dst_ty.is_float):
            raise _illegal(ins, "output modifier on an integer result")
        if mods.clamp and not (dst_ty and dst_ty.is_float) and row.sat is None:
            raise _illegal(ins, "clamp on a result that cannot saturate")
    if mods.omod and row.kind in ("cmp", "cmpx"):
        raise _illegal(ins, "output modifier on a compare")

    lanes_arg = (_LANE,) if row.lane else ()
    with np.errstate(all="ignore"):
        if row.kind in ("cmp", "cmpx"):
            res = np.asarray(row.fn(*srcs)) & waves.lanes(w)
            mask = _pack_lanes(res if wlanes is None else res & wlanes)
            waves.write_sgpr64(w, carry_reg, mask)
            if row.kind == "cmpx":
                waves.write_sgpr64(w, EXEC_LO, mask)
            return
        flag = None
        if row.kind == "alu":
            val = row.fn(*srcs, *lanes_arg)
        elif row.kind == "acc":
            # the accumulator is VOP3's src2 for the modifiers (bit 2 of abs/neg)
            absm, negm = bool(mods.abs >> 2 & 1), bool(mods.neg >> 2 & 1)
            old = _read(waves, w, VGPR0 + f["vdst"], None, dst_ty, absm, negm, ins)
            if floaty and row.ftz:
                old = _ftz_in(old, mode)
            val = row.fn(*srcs, old)
        elif row.kind in ("madmk", "madak"):
            val = row.fn(*srcs)
        elif row.kind == "cout":
            val, flag = row.fn(*srcs)
        elif row.kind == "cin":
            cin = _carry_in(waves, w, ops[2] if vop3 else VCC_LO)
            val, flag = row.fn(*srcs, cin)
        elif row.kind == "sel":
            val = row.fn(*srcs, _carry_in(waves, w, ops[2] if vop3 else VCC_LO))
        elif row.kind == "vccin":
            val = row.fn(*srcs, _carry_in(waves, w, VCC_LO))
        elif row.kind == "vccout":
            val, flag = row.fn(*srcs)
        else:  # pragma: no cover - table error
            raise _illegal(ins, f"row kind {row.kind}")

        if mods.clamp and row.sat is not None and not dst_ty.is_float:
            val = row.sat(val, flag) if row.kind in ("cout", "cin") else row.sat(np.asarray(val))
        if dst_ty.is_float:
            val = _finish_float(val, dst_ty, mods, mode, row.ftz)
        bits = _to_bits(val, dst_ty)
    shape = (waves._k(w), LANES)
    if bits.shape != shape:
        bits = np.broadcast_to(bits, shape)
    if wlanes is not None:
        wlanes = wlanes & waves.lanes(w)
    if sdwa is not None:
        bits = _sdwa_place(bits, waves.vgpr[f["vdst"]][w], sdwa.dst_sel, sdwa.dst_unused)
    elif dst_ty.bits == 64:
        waves.write_vgpr64(w, f["vdst"], bits, wlanes)
    if dst_ty.bits != 64:
        if dst_ty.bits == 16 and row.keep_hi and sdwa is None:
            old = waves.vgpr[f["vdst"]][w]
            bits = (old & np.uint32(0xFFFF0000)) | bits
        waves.write_vgpr(w, f["vdst"], bits, wlanes)
    if flag is not None:
        flag = np.asarray(flag)
        _write_mask(waves, w, carry_reg, flag if wlanes is None else flag & wlanes)


# -- DPP (Vega ISA guide 12.x "DPP"; AMD GPUOpen "AMD GCN Assembly: Cross-Lane Operations") --

_L = np.arange(LANES)


@functools.cache
def _dpp_source(ctrl: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(source lane of each lane, whether that source exists) for a DPP_CTRL value."""
    r = _L & 15
    base = _L - r
    every = np.ones(LANES, bool)
    n = ctrl & 15
    if ctrl <= 0xFF:  # quad_perm: lane i of each quad reads lane ctrl[2i+1:2i]
        return (_L & ~3) + ((ctrl >> (2 * (_L & 3))) & 3), every
    if 0x101 <= ctrl <= 0x10F:  # row_shl: lane reads the lane n above it in its row
        return np.minimum(_L + n, LANES - 1), r + n < 16
    if 0x111 <= ctrl <= 0x11F:  # row_shr: the lane n below
        return np.maximum(_L - n, 0), r >= n
    if 0x121 <= ctrl <= 0x12F:  # row_ror: rotate right within the row
        return base + ((r - n) & 15), every
    table = {
        0x130: (np.minimum(_L + 1, 63), _L < 63),  # wave_shl:1
        0x134: ((_L + 1) & 63, every),  # wave_rol:1
        0x138: (np.maximum(_L - 1, 0), _L > 0),  # wave_shr:1
        0x13C: ((_L - 1) & 63, every),  # wave_ror:1
        0x140: (base + 15 - r, every),  # row_mirror
        0x141: ((_L & ~7) + 7 - (_L & 7), every),  # row_half_mirror
        0x142: (np.maximum(base - 1, 0), base > 0),  # row_bcast:15: last lane of the row below
        0x143: (np.full(LANES, 31), _L >= 32),  # row_bcast:31
    }
    return table.get(ctrl)


@dataclass(slots=True)
class _Dpp:
    src0: np.ndarray  # (k, 64) uint32: src0 as each lane sees it
    mods: _Mods  # abs/neg of src0 (bit 0) and src1 (bit 1)
    write: np.ndarray  # (k, 64) bool: lanes row_mask/bank_mask/bound_ctrl let write


def _dpp(waves, w, ins, row: Row) -> _Dpp:
    """src0 moved across lanes as the DPP dword says. A source lane that does not exist or
    that EXEC disables reads 0 with BOUND_CTRL set, else its destination lane is not
    written; ROW_MASK/BANK_MASK choose the rows (16 lanes) and banks (4 lanes) written."""
    d = ins.words[1]
    ctrl = (d >> 8) & 0x1FF
    src = _dpp_source(ctrl)
    if src is None:
        raise _illegal(ins, f"DPP control {ctrl:#x} is reserved")
    if any(TYPES[t].bits == 64 for t in row.srcs) or row.kind == "special":
        raise _illegal(ins, "DPP on a 64-bit or lane-access instruction is not supported")
    lane_of, exists = src
    vgpr = waves.vgpr[d & 0xFF][w]
    valid = exists[None, :] & waves.lanes(w)[:, lane_of]
    bound_zero = bool((d >> 19) & 1)
    src0 = np.where(valid, vgpr[:, lane_of], np.uint32(0))
    row_mask, bank_mask = (d >> 28) & 0xF, (d >> 24) & 0xF
    enabled = (((row_mask >> (_L >> 4)) & 1) & ((bank_mask >> ((_L >> 2) & 3)) & 1)) != 0
    write = enabled[None, :] & (valid | bound_zero)
    neg = ((d >> 20) & 1) | (((d >> 22) & 1) << 1)
    absm = ((d >> 21) & 1) | (((d >> 23) & 1) << 1)
    return _Dpp(src0, _Mods(abs=absm, neg=neg), write)


# -- SDWA (Vega ISA guide 12.x "SDWA": sub-dword selection of sources and destination) --------

_SEL_FIELD = {0: (0, 8), 1: (8, 8), 2: (16, 8), 3: (24, 8), 4: (0, 16), 5: (16, 16), 6: (0, 32)}


@dataclass(slots=True)
class _Sdwa:
    srcs: list  # (k, 64) uint32: src0 and src1 after selection and extension
    mods: _Mods  # abs/neg per source, clamp, omod
    dst_sel: int
    dst_unused: int  # 0 pad with zeros, 1 sign-extend, 2 preserve the other bits
    sdst: int | None  # VOPC: the SGPR pair written instead of VCC


def _sdwa(waves, w, ins, row: Row) -> _Sdwa:
    """The sources as the SDWA dword selects them: a byte or word of a VGPR (or, with the S
    bit, of an SGPR or constant), zero- or sign-extended (SEXT) to 32 bits."""
    d = ins.words[1]
    if any(TYPES[t].bits == 64 for t in (*row.srcs, row.dst or "b32")) or row.kind in (
        "acc",
        "madmk",
        "madak",
        "special",
    ):
        raise _illegal(ins, "SDWA on a 64-bit or accumulating instruction is not supported")
    vopc = ins.encoding == "VOPC"
    srcs = []
    fields = (
        (d & 0xFF, (d >> 23) & 1, (d >> 16) & 7, (d >> 19) & 1),
        (ins.fields.get("vsrc1", 0), (d >> 31) & 1, (d >> 24) & 7, (d >> 27) & 1),
    )
    for i, (reg, scalar, sel, sext) in enumerate(fields[: len(row.srcs)]):
        if sel not in _SEL_FIELD:
            raise _illegal(ins, f"SDWA src{i}_sel {sel} is reserved")
        op = reg if scalar else VGPR0 + reg
        raw = waves.vector(w, op, None, "f16" if row.srcs[i] == "f16" else "b32")
        lo, width = _SEL_FIELD[sel]
        if width < 32:
            raw = (raw >> np.uint32(lo)) & np.uint32((1 << width) - 1)
            if sext:
                sign = np.uint32(1 << (width - 1))
                raw = (raw ^ sign) - sign
        srcs.append(raw.astype(np.uint32, copy=False))
    mods = _Mods(
        abs=((d >> 21) & 1) | (((d >> 29) & 1) << 1),
        neg=((d >> 20) & 1) | (((d >> 28) & 1) << 1),
    )
    dst_sel, dst_unused, sdst = 6, 0, None
    if vopc:
        if (d >> 15) & 1:
            sdst = (d >> 8) & 0x7F
    else:
        dst_sel, dst_unused = (d >> 8) & 7, (d >> 11) & 3
        mods.clamp, mods.omod = (d >> 13) & 1, (d >> 14) & 3
        if dst_sel not in _SEL_FIELD or dst_unused == 3:
            raise _illegal(ins, f"SDWA dst_sel {dst_sel} / dst_unused {dst_unused} is reserved")
    return _Sdwa(srcs, mods, dst_sel, dst_unused, sdst)


def _sdwa_place(bits, old, sel: int, unused: int) -> np.ndarray:
    """The result's low bits placed in the selected byte/word of the destination."""
    lo, width = _SEL_FIELD[sel]
    if width == 32:
        return bits
    field_mask = ((1 << width) - 1) << lo
    field = (bits.astype(np.uint32) << np.uint32(lo)) & np.uint32(field_mask)
    if unused == 2:  # UNUSED_PRESERVE
        return field | (old & np.uint32(~field_mask & 0xFFFFFFFF))
    if unused == 1:  # UNUSED_SEXT: the bits above the field copy its sign
        above = np.uint32(~((1 << (lo + width)) - 1) & 0xFFFFFFFF)
        sign = (bits >> np.uint32(width - 1)) & np.uint32(1)
        return field | np.where(sign != 0, above, np.uint32(0))
    return field


# -- VOP3P packed math ---------------------------------------------------------------------------


def _execute_pk(row: Row, ctx, ins, w) -> None:
    """Each source gives the low result element its op_sel-chosen half and the high result
    element its op_sel_hi-chosen half (0 low, 1 high), negated by neg_lo/neg_hi (MI200 ISA
    guide, "VOP3P"). A 16-bit constant source is its 32-bit value (an f16 constant in the
    low half, as `v_pk_add_u16 v2, v4, 1` adds 1 to the low element only); the high dword
    of a 64-bit constant for the packed FP32 ops is not something the guides pin down, so
    selecting it raises IllegalInstruction (clang uses op_sel_hi:0 there)."""
    waves = ctx.waves
    if ins.modifier is not None:
        raise _illegal(ins, f"the {ins.modifier.upper()} form is not supported")
    w0, w1 = ins.words[0], ins.words[1]
    neg_hi, op_sel = (w0 >> 8) & 7, (w0 >> 11) & 7
    op_sel_hi = ((w1 >> 27) & 3) | (((w0 >> 14) & 1) << 2)
    clamp, neg_lo = (w0 >> 15) & 1, (w1 >> 29) & 7
    ty = TYPES[row.dst]
    wide = ty.bits == 32
    mode = _mode(ctx, w) if ty.is_float else DEFAULT_MODE
    if isinstance(mode, np.ndarray):
        idx = np.arange(waves.n)[w]
        for m in np.unique(mode):
            _execute_pk(row, ctx, ins, idx[mode == m])
        return
    if ty.is_float and mode & 0xF:
        raise _illegal(ins, f"rounding mode {mode & 0xF:#x} (only round-to-nearest-even)")
    f = ins.fields
    n = len(row.srcs)
    if not ty.is_float and (neg_lo | neg_hi) & ((1 << n) - 1):
        raise _illegal(ins, "neg_lo/neg_hi on integer sources")
    half = 32 if wide else 16
    ubits = _UINT[half]
    lo_srcs, hi_srcs = [], []
    for i, op in enumerate((f["src0"], f["src1"], f["src2"])[:n]):
        is_const = 128 <= op < VGPR0
        if wide and is_const:
            raw = waves.vector(w, op, ins.literal, "f32").astype(np.uint64)
        elif wide:
            raw = waves.vector64(w, op, ins.literal, "b64")
        else:
            raw = waves.vector(w, op, ins.literal, "f16" if ty.name == "f16" else "b32")
        for sel_bits, neg_bits, out in ((op_sel, neg_lo, lo_srcs), (op_sel_hi, neg_hi, hi_srcs)):
            hi_half = (sel_bits >> i) & 1
            if hi_half and is_const and wide:
                raise _illegal(ins, f"the high dword of 64-bit constant source {i}")
            part = (raw >> raw.dtype.type(half)) if hi_half else raw
            bits = (part & raw.dtype.type((1 << half) - 1)).astype(ubits)
            if (neg_bits >> i) & 1:
                bits = bits ^ ubits(1 << (half - 1))
            val = bits.view(ty.dtype) if ty.dtype is not ubits else bits
            out.append(_ftz_in(val, mode) if ty.is_float else val)
    results = []
    with np.errstate(all="ignore"):
        for srcs in (lo_srcs, hi_srcs):
            val = row.fn(*srcs)
            if ty.is_float:
                val = _finish_float(val, ty, _Mods(clamp=clamp), mode, True)
            elif clamp:
                if row.sat is None:
                    raise _illegal(ins, "clamp on a result that cannot saturate")
                val = row.sat(np.asarray(val))
            v = np.asarray(val)
            bits = v.astype(ty.dtype, copy=False).view(ubits) if v.dtype != ubits else v
            results.append(bits.astype(np.uint64))
    packed = results[0] | (results[1] << np.uint64(half))
    shape = (waves._k(w), LANES)
    if packed.shape != shape:
        packed = np.broadcast_to(packed, shape)
    if wide:
        waves.write_vgpr64(w, f["vdst"], packed)
    else:
        waves.write_vgpr(w, f["vdst"], packed.astype(np.uint32))


def _execute_mix(row: Row, ctx, ins, w) -> None:
    """V_FMA_MIX*/V_MAD_MIX* (VOP3P): each source is an f32, or (op_sel_hi) the f16 half
    op_sel picks, widened exactly; neg_lo negates and neg_hi takes the absolute value. The
    f32 result, or its f16 rounding written to the low (mixlo) or high (mixhi) half with the
    other half kept. fma_mix is fused (rounded once); mad_mix, as v_mad_f32, is unfused and
    flushes denormals (LLVM selects it only with f32 denormals off)."""
    waves = ctx.waves
    if ins.modifier is not None:
        raise _illegal(ins, f"the {ins.modifier.upper()} form is not supported")
    mode = _mode(ctx, w)
    if isinstance(mode, np.ndarray):
        idx = np.arange(waves.n)[w]
        for m in np.unique(mode):
            _execute_mix(row, ctx, ins, idx[mode == m])
        return
    if mode & 0xF:
        raise _illegal(ins, f"rounding mode {mode & 0xF:#x} (only round-to-nearest-even)")
    w0, w1 = ins.words[0], ins.words[1]
    absm, op_sel = (w0 >> 8) & 7, (w0 >> 11) & 7
    is16 = ((w1 >> 27) & 3) | (((w0 >> 14) & 1) << 2)
    clamp, neg = (w0 >> 15) & 1, (w1 >> 29) & 7
    f = ins.fields
    fused = row.fn == "fma"
    srcs = []
    for i, op in enumerate((f["src0"], f["src1"], f["src2"])):
        if (is16 >> i) & 1:
            raw = waves.vector(w, op, ins.literal, "f16")
            if (op_sel >> i) & 1:
                raw = raw >> np.uint32(16)
            x = (raw & np.uint32(0xFFFF)).astype(np.uint16).view(np.float16)
            x = _ftz_in(x, mode).astype(np.float32)
        else:
            x = _ftz_in(waves.vector(w, op, ins.literal, "f32").view(np.float32), mode)
        if (absm >> i) & 1:
            x = np.abs(x)
        if (neg >> i) & 1:
            x = -x
        srcs.append(x if fused else _flush(x))
    out_ty = TYPES[row.dst]
    with np.errstate(all="ignore"):
        if fused:
            a, b, c = (s.astype(np.float64) for s in srcs)
            s_, e = _two_sum(a * b, c)
            val = _round_to_odd(s_, e).astype(out_ty.dtype)
        else:
            val = _flush(_flush(srcs[0] * srcs[1]) + srcs[2]).astype(out_ty.dtype)
        val = _finish_float(val, out_ty, _Mods(clamp=clamp), mode, fused)
    bits = _to_bits(val, out_ty)
    shape = (waves._k(w), LANES)
    if bits.shape != shape:
        bits = np.broadcast_to(bits, shape)
    old = waves.vgpr[f["vdst"]][w]
    if row.name.endswith("mixlo_f16"):
        bits = (old & np.uint32(0xFFFF0000)) | bits
    elif row.name.endswith("mixhi_f16"):
        bits = (old & np.uint32(0xFFFF)) | (bits << np.uint32(16))
    waves.write_vgpr(w, f["vdst"], bits)


def _carry_in(waves, w, op: int) -> np.ndarray:
    """(k, 64) bool: a lane mask read from VCC or an SGPR pair / constant source."""
    return _unpack_lanes(waves.scalar64(w, op))


# -- instructions that are not a lane-wise function ------------------------------------------


def _special(row: Row, ctx, ins, w) -> None:
    waves = ctx.waves
    f = ins.fields
    name = row.name
    if ins.modifier is not None:
        raise _illegal(ins, f"the {ins.modifier.upper()} form is not supported")
    if ins.encoding == "VOP3":
        mods = _vop3_mods(ins, False)
        if mods.abs or mods.neg or mods.clamp or mods.omod or mods.opsel:
            raise _illegal(ins, "modifiers are not supported on this instruction")
    if name in ("v_nop", "v_clrexcp"):
        return
    k = waves._k(w)
    if name == "v_readfirstlane_b32":
        val = waves.vector(w, f["src0"], ins.literal)
        lanes = waves.lanes(w)
        first = np.where(lanes.any(axis=1), lanes.argmax(axis=1), 0)
        waves.write_sgpr(w, f["vdst"], val[np.arange(k), first])
    elif name == "v_readlane_b32":
        val = waves.vector(w, f["src0"])
        sel = waves.scalar(w, f["src1"]) & np.uint32(63)
        waves.write_sgpr(w, f["vdst"], val[np.arange(k), sel])
    elif name == "v_writelane_b32":
        val = waves.scalar(w, f["src0"])
        sel = waves.scalar(w, f["src1"]) & np.uint32(63)
        lanes = _LANE[None, :] == sel[:, None].astype(np.uint64)
        waves.write_vgpr(w, f["vdst"], np.broadcast_to(val[:, None], (k, LANES)), lanes)
    elif name == "v_swap_b32":
        src = f["src0"]
        if src < VGPR0:
            raise _illegal(ins, "v_swap_b32 needs a VGPR source")
        a = waves.vgpr[src - VGPR0][w].copy()
        b = waves.vgpr[f["vdst"]][w].copy()
        waves.write_vgpr(w, f["vdst"], a)
        waves.write_vgpr(w, src - VGPR0, b)
    elif name in ("v_accvgpr_read_b32", "v_accvgpr_write_b32", "v_accvgpr_mov_b32"):
        _accvgpr(waves, w, ins, name)
    elif name == "v_pk_mov_b32":
        w0, w1 = ins.words
        opsel = (w0 >> 11) & 3
        if (w0 >> 8) & 7 or (w1 >> 29) & 7 or (w0 >> 15) & 1:
            raise _illegal(ins, "neg/clamp modifiers are not supported")
        a = waves.vector64(w, f["src0"], None)
        b = waves.vector64(w, f["src1"], None)
        lo = (a >> np.uint64(32)) if opsel & 1 else (a & np.uint64(0xFFFFFFFF))
        hi = (b >> np.uint64(32)) if opsel & 2 else (b & np.uint64(0xFFFFFFFF))
        waves.write_vgpr64(w, f["vdst"], lo | (hi << np.uint64(32)))
    else:  # pragma: no cover - table error
        raise _illegal(ins, "no semantics")


def _accvgpr(waves, w, ins, name: str) -> None:
    f = ins.fields
    lanes = waves.lanes(w)
    nacc = waves.agpr.shape[0]

    def agpr(i: int) -> int:
        if i >= nacc:
            raise _illegal(ins, f"AccVGPR a{i} beyond the {nacc} the wave has")
        return i

    if name == "v_accvgpr_read_b32":
        src = f["src0"]
        if src < VGPR0:
            raise _illegal(ins, "source must be an AccVGPR")
        waves.write_vgpr(w, f["vdst"], waves.agpr[agpr(src - VGPR0)][w])
    elif name == "v_accvgpr_write_b32":
        val = waves.vector(w, f["src0"], ins.literal)
        d = agpr(f["vdst"])
        waves.agpr[d][w] = np.where(lanes, val, waves.agpr[d][w])
    else:  # VOP1 v_accvgpr_mov_b32 aD, aS (src0 9-bit: 256 + AccVGPR index)
        d, s = agpr(f["vdst"]), agpr(f["src0"] - VGPR0)
        waves.agpr[d][w] = np.where(lanes, waves.agpr[s][w], waves.agpr[d][w])


# --------------------------------------------------------------------------------------------
# OPS: every VALU mnemonic the decoder names on any target, bound to its row.


def _base(mnemonic: str) -> str:
    for suffix in ("_e32", "_e64"):
        if mnemonic.endswith(suffix):
            return mnemonic[: -len(suffix)]
    return mnemonic


def _build_ops() -> tuple[dict[str, Callable], set[str]]:
    ops: dict[str, Callable] = {}
    trans: set[str] = set()
    for target in TARGETS:
        for enc in ("VOP1", "VOP2", "VOPC", "VOP3", "VOP3P"):
            for mnemonic in opcode_table(target).get(enc, {}).values():
                row = _BY_NAME.get(_base(mnemonic))
                if row is None:
                    continue
                fn = {"special": _special, "pk": _execute_pk, "mix": _execute_mix}.get(
                    row.kind, _execute
                )
                ops[mnemonic] = functools.partial(fn, row)
                # The DPP form of a 32-bit VOP1/VOP2/VOPC instruction (the decoder's name).
                wide = any(TYPES[t].bits == 64 for t in (*row.srcs, row.dst or "b32"))
                if enc in ("VOP1", "VOP2", "VOPC") and fn is _execute and not wide:
                    for form in ("dpp", "sdwa"):
                        if form == "sdwa" and row.kind in ("acc", "madmk", "madak"):
                            continue
                        name = f"{mnemonic.removesuffix('_e32')}_{form}"
                        ops[name] = ops[mnemonic]
                        if row.name in _TRANS_BASES:
                            trans.add(name)
                if row.name in _TRANS_BASES:
                    trans.add(mnemonic)
    # The VOP2 literal forms LLVM names but the opcode table may lack (v_madmk_f32, ...).
    for name in ("v_madmk_f32", "v_madak_f32", "v_fmamk_f32", "v_fmaak_f32"):
        ops.setdefault(name, functools.partial(_execute, _BY_NAME[name]))
    return ops, trans


OPS, TRANSCENDENTAL = _build_ops()
TRANSCENDENTAL = frozenset(TRANSCENDENTAL)
