"""Vector ALU semantics (hw_model/isa/valu.py) against numpy, instruction by instruction.

Instructions are encoded here from the encoding table (and, where llvm-mc-15 is installed,
checked against what LLVM's assembler emits), decoded by the decoder and executed by the
OPS function the executor would call, on a batch of two wave64 waves.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from fractions import Fraction

import numpy as np
import pytest

from hw_model.isa import valu
from hw_model.isa.decoder import decode, decode_one, opcode_table
from hw_model.isa.encodings import ENCODINGS
from hw_model.isa.wave import VCC_LO, IllegalInstruction, WaveContext, Waves, mask_to_lanes

N = 2  # waves per batch
ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
RNG = np.random.default_rng(12)


def v(i: int) -> int:
    """Operand number of VGPR i."""
    return 256 + i


def _opcode(target: str, enc: str, mnemonic: str) -> int:
    table = opcode_table(target)[enc]
    return next(op for op, name in table.items() if name == mnemonic)


def enc_vop1(m, vdst, src0, literal=None, target="gfx900"):
    w = ENCODINGS["VOP1"].canonical(_opcode(target, "VOP1", m), vdst=vdst, src0=src0)
    return w + ([literal] if literal is not None else [])


def enc_vop2(m, vdst, src0, vsrc1, literal=None, target="gfx900"):
    w = ENCODINGS["VOP2"].canonical(_opcode(target, "VOP2", m), vdst=vdst, src0=src0, vsrc1=vsrc1)
    return w + ([literal] if literal is not None else [])


def enc_vopc(m, src0, vsrc1, literal=None, target="gfx900"):
    w = ENCODINGS["VOPC"].canonical(_opcode(target, "VOPC", m), src0=src0, vsrc1=vsrc1)
    return w + ([literal] if literal is not None else [])


def enc_vop3(
    m, vdst, src0, src1=0, src2=0, *, sdst=None, abs=0, neg=0, clamp=0, omod=0, opsel=0,
    target="gfx900",
):  # fmt: skip
    lo, hi = ENCODINGS["VOP3"].canonical(
        _opcode(target, "VOP3", m), vdst=vdst, src0=src0, src1=src1, src2=src2
    )
    lo |= (sdst if sdst is not None else abs | (opsel << 3)) << 8
    lo |= clamp << 15
    hi |= (omod << 27) | (neg << 29)
    return [lo, hi]


def ins_of(words, target="gfx900"):
    code = b"".join(w.to_bytes(4, "little") for w in words)
    ins = decode_one(code, 0, target)
    assert ins.size == len(code), ins
    return ins


def make(target="gfx900", vgprs=40, agprs=0):
    waves = Waves(N, vgprs, agprs)
    waves.set_exec(slice(None), np.full(N, ALL, np.uint64))
    waves.mode[:] = valu.DEFAULT_MODE  # clang's gfx9 default: f32/f64 denormals kept
    return WaveContext(waves, target=target)


def run(ctx, words, target=None):
    ins = ins_of(words, target or ctx.target)
    valu.OPS[ins.mnemonic](ctx, ins, slice(None))
    return ins


def put(ctx, reg, values):
    ctx.waves.vgpr[reg][:] = np.asarray(values).astype(np.uint32).reshape(N, 64)


def put64(ctx, reg, values):
    b = np.asarray(values).view(np.uint64).reshape(N, 64)
    ctx.waves.vgpr[reg][:] = (b & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    ctx.waves.vgpr[reg + 1][:] = (b >> np.uint64(32)).astype(np.uint32)


def get(ctx, reg, dtype=np.uint32):
    return ctx.waves.vgpr[reg].copy().view(dtype)


def get64(ctx, reg, dtype=np.uint64):
    lo = ctx.waves.vgpr[reg].astype(np.uint64)
    hi = ctx.waves.vgpr[reg + 1].astype(np.uint64)
    return (lo | (hi << np.uint64(32))).view(dtype)


def rand_u32(size=(N, 64)):
    return RNG.integers(0, 2**32, size=size, dtype=np.uint64).astype(np.uint32)


def f32_bits(x):
    return np.asarray(x, np.float32).view(np.uint32)


# ---------------------------------------------------------------------------------------------
# Integer ALU: exact

A, B, C = 1, 2, 3  # source VGPRs
D = 10  # destination VGPR


def _u(x):
    return x.astype(np.uint64)


def _s(x):
    return x.view(np.int32).astype(np.int64)


def _sext24(x):
    x = _u(x) & np.uint64(0xFFFFFF)
    return (x.astype(np.int64) ^ 0x800000) - 0x800000


M32 = 0xFFFFFFFF
INT2 = {
    "v_add_u32": lambda a, b: _u(a) + _u(b),
    "v_sub_u32": lambda a, b: _s(a) - _s(b),
    "v_subrev_u32": lambda a, b: _u(b) - _u(a),
    "v_mul_lo_u32": lambda a, b: _u(a) * _u(b),
    "v_mul_hi_u32": lambda a, b: (_u(a) * _u(b)) >> np.uint64(32),
    "v_mul_hi_i32": lambda a, b: (_s(a) * _s(b)) >> 32,
    "v_mul_u32_u24": lambda a, b: (_u(a) & np.uint64(0xFFFFFF)) * (_u(b) & np.uint64(0xFFFFFF)),
    "v_mul_i32_i24": lambda a, b: _sext24(a) * _sext24(b),
    "v_mul_hi_i32_i24": lambda a, b: (_sext24(a) * _sext24(b)) >> 32,
    "v_min_i32": lambda a, b: np.minimum(_s(a), _s(b)),
    "v_max_u32": np.maximum,
    "v_lshrrev_b32": lambda a, b: b >> (a & 31),
    "v_ashrrev_i32": lambda a, b: _s(b) >> (a & 31),
    "v_lshlrev_b32": lambda a, b: _u(b) << _u(a & 31),
    "v_and_b32": np.bitwise_and,
    "v_xor_b32": np.bitwise_xor,
    "v_bcnt_u32_b32": lambda a, b: np.bitwise_count(a).astype(np.uint64) + b,
}


_VOP2_NAMES = set(opcode_table("gfx900")["VOP2"].values())


@pytest.mark.parametrize(
    ("base", "form"),
    [
        (b, f)
        for b in sorted(INT2)
        for f in ("e32", "e64")
        if f == "e64" or f"{b}_e32" in _VOP2_NAMES  # VOP3-only ops have no e32 form
    ],
)
def test_integer_two_source_ops_are_exact(base, form):
    ctx = make()
    a, b = rand_u32(), rand_u32()
    a[0, :8] = [0, 1, 31, 32, 0xFFFFFFFF, 0x80000000, 0x7FFFFF, 0x800000]
    put(ctx, A, a)
    put(ctx, B, b)
    names = opcode_table("gfx900")
    if form == "e32":
        run(ctx, enc_vop2(f"{base}_e32", D, v(A), B))
    else:
        m = base if base in names["VOP3"].values() else f"{base}_e64"
        run(ctx, enc_vop3(m, D, v(A), v(B)))
    expect = (np.asarray(INT2[base](a, b)).astype(np.int64) & M32).astype(np.uint32)
    np.testing.assert_array_equal(get(ctx, D), expect)


INT3 = {
    "v_add3_u32": lambda a, b, c: _u(a) + _u(b) + _u(c),
    "v_lshl_add_u32": lambda a, b, c: (_u(a) << _u(b & 31)) + _u(c),
    "v_add_lshl_u32": lambda a, b, c: (_u(a) + _u(b)) << _u(c & 31),
    "v_lshl_or_b32": lambda a, b, c: (_u(a) << _u(b & 31)) | _u(c),
    "v_and_or_b32": lambda a, b, c: (a & b) | c,
    "v_or3_b32": lambda a, b, c: a | b | c,
    "v_xad_u32": lambda a, b, c: _u(a ^ b) + _u(c),
    "v_bfe_u32": lambda a, b, c: (_u(a) >> _u(b & 31)) & ((np.uint64(1) << _u(c & 31)) - 1),
    "v_bfi_b32": lambda a, b, c: (a & b) | (~a & c),
    "v_alignbit_b32": lambda a, b, c: ((_u(a) << np.uint64(32)) | _u(b)) >> _u(c & 31),
    "v_alignbyte_b32": lambda a, b, c: ((_u(a) << np.uint64(32)) | _u(b)) >> _u((c & 3) * 8),
    "v_mad_u32_u24": lambda a, b, c: (
        (_u(a) & np.uint64(0xFFFFFF)) * (_u(b) & np.uint64(0xFFFFFF)) + _u(c)
    ),
    "v_mad_i32_i24": lambda a, b, c: _sext24(a) * _sext24(b) + _s(c),
    "v_min3_u32": lambda a, b, c: np.minimum(np.minimum(a, b), c),
    "v_max3_i32": lambda a, b, c: np.maximum(np.maximum(_s(a), _s(b)), _s(c)),
    "v_med3_i32": lambda a, b, c: np.median(np.stack([_s(a), _s(b), _s(c)]), axis=0),
    "v_med3_u32": lambda a, b, c: np.median(np.stack([_u(a), _u(b), _u(c)]), axis=0),
}


@pytest.mark.parametrize("base", sorted(INT3))
def test_integer_three_source_ops_are_exact(base):
    ctx = make()
    a, b, c = rand_u32(), rand_u32(), rand_u32()
    b[1, :4] = [0, 5, 31, 16]
    c[1, :4] = [0, 1, 8, 31]
    for r, x in ((A, a), (B, b), (C, c)):
        put(ctx, r, x)
    run(ctx, enc_vop3(base, D, v(A), v(B), v(C)))
    expect = (np.asarray(INT3[base](a, b, c)).astype(np.int64) & M32).astype(np.uint32)
    np.testing.assert_array_equal(get(ctx, D), expect)


def test_bfe_i32_sign_extends_and_width_zero_gives_zero():
    ctx = make()
    put(ctx, A, np.full((N, 64), 0x00000F00, np.uint32))
    put(ctx, B, np.full((N, 64), 8, np.uint32))
    width = np.tile(np.arange(64) % 6, (N, 1)).astype(np.uint32)
    put(ctx, C, width)
    run(ctx, enc_vop3("v_bfe_i32", D, v(A), v(B), v(C)))
    raw = (0xF & ((1 << width.astype(np.int64)) - 1)).astype(np.int64)
    expect = np.where(
        width == 0,
        0,
        np.where(raw >> np.maximum(width - 1, 0) & 1, raw - (1 << width.astype(np.int64)), raw),
    )
    np.testing.assert_array_equal(get(ctx, D, np.int32), expect)


def test_v_perm_b32_selects_bytes_and_sign_fills():
    ctx = make()
    put(ctx, A, np.full((N, 64), 0x8899AABB, np.uint32))  # S0: bytes 7..4
    put(ctx, B, np.full((N, 64), 0x00112233, np.uint32))  # S1: bytes 3..0
    put(ctx, C, np.full((N, 64), 0x0C0D0704, np.uint32))
    run(ctx, enc_vop3("v_perm_b32", D, v(A), v(B), v(C)))
    # byte3 <- sel 0x0C: 0x00; byte2 <- sel 0x0D: 0xFF; byte1 <- 7: 0x88; byte0 <- 4: 0xBB
    assert (get(ctx, D) == 0x00FF88BB).all()
    put(ctx, C, np.full((N, 64), 0x0B0A0908, np.uint32))
    run(ctx, enc_vop3("v_perm_b32", D, v(A), v(B), v(C)))
    # sign of byte 7 (0x88: 1), byte 5 (0xAA: 1), byte 3 (0x00: 0), byte 1 (0x22: 0)
    assert (get(ctx, D) == 0xFFFF0000).all()


def test_bit_counting_ops():
    ctx = make()
    x = rand_u32() >> RNG.integers(0, 32, size=(N, 64)).astype(np.uint32)
    x[0, :3] = [0, 1, 0x80000000]
    put(ctx, A, x)
    xi = [int(t) for t in x.ravel()]
    run(ctx, enc_vop1("v_ffbh_u32_e32", D, v(A)))
    clz = [32 - t.bit_length() if t else -1 for t in xi]
    np.testing.assert_array_equal(get(ctx, D, np.int32).ravel(), clz)
    run(ctx, enc_vop1("v_ffbl_b32_e32", D, v(A)))
    ctz = [(t & -t).bit_length() - 1 if t else -1 for t in xi]
    np.testing.assert_array_equal(get(ctx, D, np.int32).ravel(), ctz)
    run(ctx, enc_vop1("v_bfrev_b32_e32", D, v(A)))
    rev = [int(f"{t:032b}"[::-1], 2) for t in xi]
    np.testing.assert_array_equal(get(ctx, D).ravel(), rev)
    put(ctx, A, np.full((N, 64), 0xFFFFF000, np.uint32))  # -4096: 19 leading sign bits + 1
    run(ctx, enc_vop1("v_ffbh_i32_e32", D, v(A)))
    assert (get(ctx, D) == 20).all()


def test_64bit_shifts():
    ctx = make()
    val = RNG.integers(0, 2**63, size=(N, 64), dtype=np.int64) * np.where(
        RNG.random((N, 64)) < 0.5, -1, 1
    )
    sh = RNG.integers(0, 64, size=(N, 64)).astype(np.uint32)
    put64(ctx, B, val)
    put(ctx, A, sh + 64)  # only the low 6 bits count
    run(ctx, enc_vop3("v_lshlrev_b64", D, v(A), v(B)))
    np.testing.assert_array_equal(get64(ctx, D), val.view(np.uint64) << sh.astype(np.uint64))
    run(ctx, enc_vop3("v_lshrrev_b64", D, v(A), v(B)))
    np.testing.assert_array_equal(get64(ctx, D), val.view(np.uint64) >> sh.astype(np.uint64))
    run(ctx, enc_vop3("v_ashrrev_i64", D, v(A), v(B)))
    np.testing.assert_array_equal(get64(ctx, D, np.int64), val >> sh.astype(np.int64))


def test_mad_u64_u32_and_mad_i64_i32_write_the_carry_to_sdst():
    ctx = make()
    a, b = rand_u32(), rand_u32()
    c = RNG.integers(0, 2**64, size=(N, 64), dtype=np.uint64)
    put(ctx, A, a)
    put(ctx, B, b)
    put64(ctx, C, c)
    run(ctx, enc_vop3("v_mad_u64_u32", D, v(A), v(B), v(C), sdst=20))
    exact = [
        int(x) * int(y) + int(z) for x, y, z in zip(a.ravel(), b.ravel(), c.ravel(), strict=True)
    ]
    np.testing.assert_array_equal(get64(ctx, D).ravel(), [e % 2**64 for e in exact])
    carry = np.array([e >= 2**64 for e in exact]).reshape(N, 64)
    got = ctx.waves.read_sgpr64(slice(None), 20)
    np.testing.assert_array_equal(mask_to_lanes(got), carry)
    run(ctx, enc_vop3("v_mad_i64_i32", D, v(A), v(B), v(C), sdst=20))
    exact = [
        int(x) * int(y) + int(z)
        for x, y, z in zip(
            a.view(np.int32).ravel(),
            b.view(np.int32).ravel(),
            c.view(np.int64).ravel(),
            strict=True,
        )
    ]
    np.testing.assert_array_equal(
        get64(ctx, D, np.int64).ravel(), [(e + 2**63) % 2**64 - 2**63 for e in exact]
    )


def test_exec_masks_vector_writes():
    ctx = make()
    put(ctx, D, np.full((N, 64), 7, np.uint32))
    put(ctx, A, np.full((N, 64), 1, np.uint32))
    mask = np.array([0x00000000FFFF0000, 0x8000000000000001], np.uint64)
    ctx.waves.set_exec(slice(None), mask)
    run(ctx, enc_vop2("v_add_u32_e32", D, v(A), A))
    lanes = mask_to_lanes(mask)
    np.testing.assert_array_equal(get(ctx, D), np.where(lanes, 2, 7))


def test_a_selection_of_waves_executes_only_those():
    ctx = make()
    put(ctx, A, np.full((N, 64), 3, np.uint32))
    ins = ins_of(enc_vop1("v_mov_b32_e32", D, v(A)))
    valu.OPS[ins.mnemonic](ctx, ins, np.array([1]))
    assert (get(ctx, D)[0] == 0).all() and (get(ctx, D)[1] == 3).all()


# ---------------------------------------------------------------------------------------------
# Carries, VCC, compares


def test_64bit_add_and_sub_carry_chains_through_vcc_and_an_sgpr_pair():
    ctx = make()
    x = RNG.integers(0, 2**64, size=(N, 64), dtype=np.uint64)
    y = RNG.integers(0, 2**64, size=(N, 64), dtype=np.uint64)
    x[0, :2] = [2**64 - 1, 2**32 - 1]
    y[0, :2] = [1, 1]
    put64(ctx, 0, x)
    put64(ctx, 2, y)
    # VOP2: v_add_co_u32 v4, vcc, v0, v2 ; v_addc_co_u32 v5, vcc, v1, v3, vcc
    run(ctx, enc_vop2("v_add_co_u32_e32", 4, v(0), 2))
    run(ctx, enc_vop2("v_addc_co_u32_e32", 5, v(1), 3))
    np.testing.assert_array_equal(get64(ctx, 4), x + y)
    carry_out = np.array(
        [int(a) + int(b) >= 2**64 for a, b in zip(x.ravel(), y.ravel(), strict=True)]
    )
    np.testing.assert_array_equal(mask_to_lanes(ctx.waves.vcc(slice(None))).ravel(), carry_out)
    # VOP3B, borrow in s[8:9]: v_sub_co_u32 v6, s[8:9], v0, v2
    # v_subb_co_u32 v7, s[8:9], v1, v3, s[8:9]
    run(ctx, enc_vop3("v_sub_co_u32_e64", 6, v(0), v(2), sdst=8))
    run(ctx, enc_vop3("v_subb_co_u32_e64", 7, v(1), v(3), 8, sdst=8))
    np.testing.assert_array_equal(get64(ctx, 6), x - y)
    borrow = mask_to_lanes(ctx.waves.read_sgpr64(slice(None), 8))
    np.testing.assert_array_equal(borrow, y > x)
    # subrev / subbrev: y - x
    run(ctx, enc_vop2("v_subrev_co_u32_e32", 6, v(0), 2))
    run(ctx, enc_vop2("v_subbrev_co_u32_e32", 7, v(1), 3))
    np.testing.assert_array_equal(get64(ctx, 6), y - x)


def test_carry_out_bits_of_inactive_lanes_are_zero():
    ctx = make()
    put(ctx, A, np.full((N, 64), 0xFFFFFFFF, np.uint32))
    ctx.waves.set_exec(slice(None), np.array([0xF, 0], np.uint64))
    ctx.waves.write_sgpr64(slice(None), VCC_LO, np.full(N, ALL, np.uint64))
    run(ctx, enc_vop2("v_add_co_u32_e32", D, v(A), A))
    np.testing.assert_array_equal(ctx.waves.vcc(slice(None)), [0xF, 0])


def test_vopc_writes_vcc_e64_writes_sdst_and_cmpx_writes_exec():
    ctx = make()
    a = RNG.integers(-5, 5, size=(N, 64)).astype(np.int32)
    put(ctx, A, a.view(np.uint32))
    exec_mask = np.array([0xFFFFFFFF00000000, ALL], np.uint64)
    ctx.waves.set_exec(slice(None), exec_mask)
    lanes = mask_to_lanes(exec_mask)
    run(ctx, enc_vopc("v_cmp_gt_i32_e32", 128 + 1, A))  # 1 > a
    np.testing.assert_array_equal(mask_to_lanes(ctx.waves.vcc(slice(None))), (a < 1) & lanes)
    run(ctx, enc_vop3("v_cmp_le_i32_e64", 12, v(A), 128))  # a <= 0 -> s[12:13]
    got = mask_to_lanes(ctx.waves.read_sgpr64(slice(None), 12))
    np.testing.assert_array_equal(got, (a <= 0) & lanes)
    assert ctx.waves.exec_mask(slice(None)).tolist() == exec_mask.tolist()
    run(ctx, enc_vopc("v_cmpx_ne_u32_e32", 128, A))  # 0 != a
    new_exec = mask_to_lanes(ctx.waves.exec_mask(slice(None)))
    np.testing.assert_array_equal(new_exec, (a != 0) & lanes)
    np.testing.assert_array_equal(mask_to_lanes(ctx.waves.vcc(slice(None))), new_exec)
    np.testing.assert_array_equal(ctx.waves.lanes(slice(None)), new_exec)  # EXEC cache refreshed


def test_float_compares_follow_ieee_unordered_rules():
    ctx = make()
    a = np.tile(np.array([1.0, np.nan, -0.0, np.inf, 2.0, -1.0, 0.0, np.nan], np.float32), (N, 8))
    b = np.tile(np.array([1.0, 1.0, 0.0, np.inf, 1.0, np.nan, -0.0, np.nan], np.float32), (N, 8))
    put(ctx, A, f32_bits(a))
    put(ctx, B, f32_bits(b))
    with np.errstate(invalid="ignore"):
        cases = {
            "lt": a < b, "eq": a == b, "le": a <= b, "gt": a > b, "lg": (a < b) | (a > b),
            "ge": a >= b, "o": ~(np.isnan(a) | np.isnan(b)), "u": np.isnan(a) | np.isnan(b),
            "nge": ~(a >= b), "nlg": ~((a < b) | (a > b)), "ngt": ~(a > b), "nle": ~(a <= b),
            "neq": a != b, "nlt": ~(a < b),
        }  # fmt: skip
    for c, expect in cases.items():
        run(ctx, enc_vopc(f"v_cmp_{c}_f32_e32", v(A), B))
        got = mask_to_lanes(ctx.waves.vcc(slice(None)))
        np.testing.assert_array_equal(got, expect, err_msg=c)


def test_cmp_class_classifies_every_kind_of_float():
    ctx = make()
    vals = [
        0x7F800001,
        0x7FC00000,
        0xFF800000,
        0xBF800000,
        0x80000001,
        0x80000000,
        0x00000000,
        0x00000001,
        0x3F800000,
        0x7F800000,
    ]  # fmt: skip  (sNaN, qNaN, -inf, -normal, -denorm, -0, +0, +denorm, +normal, +inf)
    x = np.zeros((N, 64), np.uint32)
    x[0, :10] = vals
    put(ctx, A, x)
    for bit in range(10):
        put(ctx, B, np.full((N, 64), 1 << bit, np.uint32))
        run(ctx, enc_vopc("v_cmp_class_f32_e32", v(A), B))
        got = mask_to_lanes(ctx.waves.vcc(slice(None)))[0, :10]
        assert got.tolist() == [i == bit for i in range(10)], bit
    # |x| through the VOP3 abs modifier, as clang emits it: only +classes match.
    put(ctx, B, np.full((N, 64), 1 << 3, np.uint32))  # -normal
    run(ctx, enc_vop3("v_cmp_class_f32_e64", 14, v(A), v(B), abs=1))
    assert ctx.waves.read_sgpr64(slice(None), 14)[0] == 0


def test_cndmask_selects_by_vcc_or_an_sgpr_pair():
    ctx = make()
    a, b = rand_u32(), rand_u32()
    put(ctx, A, a)
    put(ctx, B, b)
    m = np.array([0x0123456789ABCDEF, 0xF0F0F0F0F0F0F0F0], np.uint64)
    ctx.waves.write_sgpr64(slice(None), VCC_LO, m)
    run(ctx, enc_vop2("v_cndmask_b32_e32", D, v(A), B))
    np.testing.assert_array_equal(get(ctx, D), np.where(mask_to_lanes(m), b, a))
    ctx.waves.write_sgpr64(slice(None), 4, ~m)
    run(ctx, enc_vop3("v_cndmask_b32_e64", D, 128, 193, 4))  # 0 / -1 by s[4:5]
    np.testing.assert_array_equal(get(ctx, D), np.where(mask_to_lanes(~m), 0xFFFFFFFF, 0))


# ---------------------------------------------------------------------------------------------
# Lane access


def test_readlane_writelane_readfirstlane_and_mbcnt():
    ctx = make()
    x = rand_u32()
    put(ctx, A, x)
    ctx.waves.sgpr[:, 5] = [7, 63]
    run(ctx, enc_vop3("v_readlane_b32", 20, v(A), 5))
    assert ctx.waves.sgpr[:, 20].tolist() == [x[0, 7], x[1, 63]]
    ctx.waves.sgpr[:, 6] = [111, 222]
    ctx.waves.set_exec(slice(None), np.array([0, 1], np.uint64))  # writelane ignores EXEC
    run(ctx, enc_vop3("v_writelane_b32", A, 6, 5))
    assert get(ctx, A)[0, 7] == 111 and get(ctx, A)[1, 63] == 222
    ctx.waves.set_exec(slice(None), np.array([1 << 9, 0], np.uint64))
    run(ctx, enc_vop1("v_readfirstlane_b32", 21, v(A)))
    assert ctx.waves.sgpr[:, 21].tolist() == [get(ctx, A)[0, 9], get(ctx, A)[1, 0]]
    # v_mbcnt_lo/hi(-1, 0): each lane's index, the idiom for the lane id
    ctx.waves.set_exec(slice(None), np.full(N, ALL, np.uint64))
    run(ctx, enc_vop3("v_mbcnt_lo_u32_b32", D, 193, 128))
    run(ctx, enc_vop3("v_mbcnt_hi_u32_b32", D, 193, v(D)))
    np.testing.assert_array_equal(get(ctx, D), np.tile(np.arange(64), (N, 1)))


# ---------------------------------------------------------------------------------------------
# Floating point


def _exact_fma(a, b, c, dtype):
    out = []
    for x, y, z in zip(a.ravel(), b.ravel(), c.ravel(), strict=True):
        e = Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z))
        try:
            out.append(dtype(float(e)) if dtype is np.float64 else np.float32(_round_f32(e)))
        except OverflowError:
            out.append(dtype(np.inf if e > 0 else -np.inf))
    return np.array(out, dtype).reshape(a.shape)


def _round_f32(e: Fraction) -> float:
    """Correctly rounded f32 of a rational (via the nearest f64 with round-to-odd guard)."""
    d = float(e)
    if Fraction(d) != e:
        # round to odd in f64, then to f32: exact
        bits = np.float64(d).view(np.int64)
        if bits & 1 == 0:
            d = float(np.nextafter(d, np.inf if e > Fraction(d) else -np.inf))
    return float(np.float32(d))


def test_fma_f32_and_f64_round_once():
    ctx = make()
    a = RNG.standard_normal((N, 64)).astype(np.float32)
    b = RNG.standard_normal((N, 64)).astype(np.float32)
    c = -(a.astype(np.float64) * b).astype(np.float32)  # cancellation: the residual survives
    c[1] = RNG.standard_normal(64)
    # a double-rounding trap: a*b is the f32 midpoint 1 + 2^-11 + 2^-24 and c = 2^-80 is
    # below double precision there; rounding a*b+c to double first would tie down to even
    a[0, 0], b[0, 0], c[0, 0] = 1 + 2**-12, 1 + 2**-12, 2**-80
    for r, x in ((A, a), (B, b), (C, c)):
        put(ctx, r, f32_bits(x))
    run(ctx, enc_vop3("v_fma_f32", D, v(A), v(B), v(C)))
    np.testing.assert_array_equal(get(ctx, D, np.float32), _exact_fma(a, b, c, np.float32))
    assert get(ctx, D, np.float32)[0, 0] == np.float32(1 + 2**-11 + 2**-23)
    # fmac: D = a*b + D
    put(ctx, D, f32_bits(c))
    run(ctx, enc_vop2("v_fmac_f32_e32", D, v(A), B, target="gfx90a"), target="gfx90a")
    np.testing.assert_array_equal(get(ctx, D, np.float32), _exact_fma(a, b, c, np.float32))
    x = RNG.standard_normal((N, 64)) * 10.0 ** RNG.integers(-300, 300, (N, 64))
    y = RNG.standard_normal((N, 64)) * 10.0 ** RNG.integers(-10, 10, (N, 64))
    z = -(x * y) * (1 + RNG.standard_normal((N, 64)) * 1e-12)
    x[0, :4] = [5e-324, 1e308, np.inf, 1e-200]
    y[0, :4] = [0.5, 10.0, 0.0, 1e-200]
    z[0, :4] = [0.0, -np.inf, 1.0, 1e-320]
    put64(ctx, 0, x)
    put64(ctx, 2, y)
    put64(ctx, 4, z)
    run(ctx, enc_vop3("v_fma_f64", 6, v(0), v(2), v(4)))
    got = get64(ctx, 6, np.float64)
    with np.errstate(invalid="ignore"):
        expect = _exact_fma(
            np.where(np.isfinite(x), x, 0), y, np.where(np.isfinite(z), z, 0), np.float64
        )
    fin = np.isfinite(x) & np.isfinite(z)
    np.testing.assert_array_equal(got[fin], expect[fin])
    assert np.isnan(got[0, 2]) and got[0, 1] == -np.inf


def test_f32_arithmetic_is_ieee_and_mac_flushes_denormals():
    ctx = make()
    a = (RNG.standard_normal((N, 64)) * 2.0 ** RNG.integers(-140, 100, (N, 64))).astype(np.float32)
    b = (RNG.standard_normal((N, 64)) * 2.0 ** RNG.integers(-20, 20, (N, 64))).astype(np.float32)
    put(ctx, A, f32_bits(a))
    put(ctx, B, f32_bits(b))
    for m, ref in (
        ("v_add_f32_e32", a + b), ("v_sub_f32_e32", a - b), ("v_subrev_f32_e32", b - a),
        ("v_mul_f32_e32", a * b), ("v_min_f32_e32", np.fmin(a, b)),
        ("v_max_f32_e32", np.fmax(a, b)),
    ):  # fmt: skip
        run(ctx, enc_vop2(m, D, v(A), B))
        np.testing.assert_array_equal(get(ctx, D, np.float32), ref, err_msg=m)
    # v_mac_f32 is llvm.amdgcn.fmad.ftz: a denormal product is flushed
    tiny = np.full((N, 64), 2.0**-70, np.float32)
    put(ctx, A, f32_bits(tiny))
    put(ctx, B, f32_bits(tiny))
    put(ctx, D, f32_bits(np.zeros((N, 64), np.float32)))
    run(ctx, enc_vop2("v_mac_f32_e32", D, v(A), B))
    assert (get(ctx, D, np.float32) == 0).all()
    run(ctx, enc_vop3("v_fma_f32", D, v(A), v(B), 128))  # fma keeps it (denormals on)
    assert (get(ctx, D, np.float32) == np.float32(2.0**-140)).all()


def test_denormal_mode_from_the_descriptor_flushes_f32():
    ctx = make()
    ctx.waves.mode[:] = valu.DEFAULT_MODE & ~0x30  # FLOAT_DENORM_MODE_32 = 0: flush in and out
    put(ctx, A, f32_bits(np.full((N, 64), 2.0**-70)))
    run(ctx, enc_vop2("v_mul_f32_e32", D, v(A), A))
    assert (get(ctx, D, np.float32) == 0).all()
    put(ctx, A, f32_bits(np.full((N, 64), 2.0**-130)))
    run(ctx, enc_vop2("v_add_f32_e32", D, 242, A))  # 1.0 + denormal input flushed
    assert (get(ctx, D, np.float32) == 1).all()
    ctx.waves.mode[1] = valu.DEFAULT_MODE | 1  # round toward +inf: not supported, and says so
    with pytest.raises(IllegalInstruction, match="rounding mode"):
        run(ctx, enc_vop2("v_add_f32_e32", D, 242, A))


def test_vop3_modifiers_abs_neg_clamp_omod():
    ctx = make()
    a = RNG.standard_normal((N, 64)).astype(np.float32)
    b = RNG.standard_normal((N, 64)).astype(np.float32)
    put(ctx, A, f32_bits(a))
    put(ctx, B, f32_bits(b))
    run(ctx, enc_vop3("v_add_f32_e64", D, v(A), v(B), abs=1, neg=2))
    np.testing.assert_array_equal(get(ctx, D, np.float32), np.abs(a) - b)
    run(ctx, enc_vop3("v_mul_f32_e64", D, v(A), v(B), omod=1))
    np.testing.assert_array_equal(get(ctx, D, np.float32), a * b * 2)
    run(ctx, enc_vop3("v_mul_f32_e64", D, v(A), v(B), omod=3, clamp=1))
    np.testing.assert_array_equal(get(ctx, D, np.float32), np.clip(a * b / 2, 0, 1))
    put(ctx, B, f32_bits(np.full((N, 64), np.nan)))
    run(ctx, enc_vop3("v_add_f32_e64", D, v(B), v(B), clamp=1))  # DX10 clamp: NaN -> 0
    assert (get(ctx, D) == 0).all()
    run(ctx, enc_vop3("v_fma_f64", 20, v(0), v(2), v(4), neg=5))  # -a*b + -c
    # integer clamp saturates, an integer neg is refused
    put(ctx, A, np.full((N, 64), 0xFFFFFFF0, np.uint32))
    run(ctx, enc_vop3("v_add_u32_e64", D, v(A), 128 + 64, clamp=1))
    assert (get(ctx, D) == 0xFFFFFFFF).all()
    with pytest.raises(IllegalInstruction, match="v_add_u32_e64.*abs/neg"):
        run(ctx, enc_vop3("v_add_u32_e64", D, v(A), v(A), neg=1))
    with pytest.raises(IllegalInstruction, match="op_sel"):
        run(ctx, enc_vop3("v_add_f32_e64", D, v(A), v(A), opsel=1))
    with pytest.raises(IllegalInstruction, match="output modifier"):
        run(ctx, enc_vop3("v_add_u32_e64", D, v(A), v(A), omod=1))


def test_an_sdwa_form_without_semantics_is_refused_naming_it():
    sdwa = ins_of([0x7E0020F9, 0x00060600])  # v_cvt_f64_f32 with an SDWA dword
    assert sdwa.modifier == "sdwa" and sdwa.mnemonic == "v_cvt_f64_f32_sdwa"
    assert sdwa.mnemonic not in valu.OPS  # the executor names it as unsupported
    with pytest.raises(IllegalInstruction, match="v_cvt_f64_f32_sdwa at 0x0: SDWA on a 64-bit"):
        valu.OPS["v_cvt_f64_f32_e32"](make(), sdwa, slice(None))


def test_f64_ops_and_conversions():
    ctx = make()
    x = RNG.standard_normal((N, 64)) * 1e3
    y = RNG.standard_normal((N, 64))
    put64(ctx, 0, x)
    put64(ctx, 2, y)
    for m, ref in (("v_add_f64", x + y), ("v_mul_f64", x * y), ("v_max_f64", np.fmax(x, y))):
        run(ctx, enc_vop3(m, 4, v(0), v(2)))
        np.testing.assert_array_equal(get64(ctx, 4, np.float64), ref, err_msg=m)
    run(ctx, enc_vop3("v_add_f64", 4, v(0), 242))  # inline 1.0 as a double
    np.testing.assert_array_equal(get64(ctx, 4, np.float64), x + 1.0)
    run(ctx, enc_vop1("v_cvt_f32_f64_e32", D, v(0)))
    np.testing.assert_array_equal(get(ctx, D, np.float32), x.astype(np.float32))
    run(ctx, enc_vop1("v_cvt_i32_f64_e32", D, v(0)))
    np.testing.assert_array_equal(get(ctx, D, np.int32), np.trunc(x).astype(np.int32))
    for m in ("v_floor_f64_e32", "v_ceil_f64_e32", "v_trunc_f64_e32", "v_rndne_f64_e32"):
        run(ctx, enc_vop1(m, 4, v(0)))
        ref = {"floor": np.floor, "ceil": np.ceil, "trunc": np.trunc, "rndne": np.rint}[
            m.split("_")[1]
        ](x)
        np.testing.assert_array_equal(get64(ctx, 4, np.float64), ref, err_msg=m)
    run(ctx, enc_vop1("v_frexp_mant_f64_e32", 4, v(0)))
    run(ctx, enc_vop1("v_frexp_exp_i32_f64_e32", D, v(0)))
    m, e = np.frexp(x)
    np.testing.assert_array_equal(get64(ctx, 4, np.float64), m)
    np.testing.assert_array_equal(get(ctx, D, np.int32), e)
    put(ctx, 20, np.full((N, 64), -3, np.int32).view(np.uint32))
    run(ctx, enc_vop3("v_ldexp_f64", 4, v(0), v(20)))
    np.testing.assert_array_equal(get64(ctx, 4, np.float64), x / 8)


def test_float_to_int_conversions_saturate_and_map_nan_to_zero():
    ctx = make()
    x = np.zeros((N, 64), np.float32)
    x[0, :8] = [np.nan, np.inf, -np.inf, 3e9, -3e9, -1.5, 2.5, 4294967040.0]
    put(ctx, A, f32_bits(x))
    run(ctx, enc_vop1("v_cvt_i32_f32_e32", D, v(A)))
    assert get(ctx, D, np.int32)[0, :8].tolist() == [
        0,
        2**31 - 1,
        -(2**31),
        2**31 - 1,
        -(2**31),
        -1,
        2,
        2**31 - 1,
    ]
    run(ctx, enc_vop1("v_cvt_u32_f32_e32", D, v(A)))
    assert get(ctx, D)[0, :8].tolist() == [0, 2**32 - 1, 0, 3000000000, 0, 0, 2, 4294967040]
    run(ctx, enc_vop1("v_cvt_rpi_i32_f32_e32", D, v(A)))
    assert get(ctx, D, np.int32)[0, 5:7].tolist() == [-1, 3]
    run(ctx, enc_vop1("v_cvt_flr_i32_f32_e32", D, v(A)))
    assert get(ctx, D, np.int32)[0, 5:7].tolist() == [-2, 2]
    u = rand_u32()
    put(ctx, A, u)
    run(ctx, enc_vop1("v_cvt_f32_u32_e32", D, v(A)))
    np.testing.assert_array_equal(get(ctx, D, np.float32), u.astype(np.float32))
    run(ctx, enc_vop1("v_cvt_f32_i32_e32", D, v(A)))
    np.testing.assert_array_equal(get(ctx, D, np.float32), u.view(np.int32).astype(np.float32))
    run(ctx, enc_vop1("v_cvt_f32_ubyte2_e32", D, v(A)))
    np.testing.assert_array_equal(get(ctx, D, np.float32), ((u >> 16) & 0xFF).astype(np.float32))


def test_f16_conversions_zero_the_high_half_and_pkrtz_truncates():
    ctx = make()
    x = (RNG.standard_normal((N, 64)) * 100).astype(np.float32)
    put(ctx, A, f32_bits(x))
    put(ctx, D, np.full((N, 64), 0xDEAD0000, np.uint32))
    run(ctx, enc_vop1("v_cvt_f16_f32_e32", D, v(A)))
    np.testing.assert_array_equal(
        get(ctx, D), x.astype(np.float16).view(np.uint16).astype(np.uint32)
    )
    run(ctx, enc_vop1("v_cvt_f32_f16_e32", B, v(D)))
    np.testing.assert_array_equal(get(ctx, B, np.float32), x.astype(np.float16).astype(np.float32))
    y = np.full((N, 64), 1 + 2**-11 + 2**-20, np.float32)  # rounds up to nearest, down toward 0
    put(ctx, B, f32_bits(-y))
    run(ctx, enc_vop3("v_cvt_pkrtz_f16_f32", D, v(B), v(B)))
    h = np.float16(-1.0).view(np.uint16)
    assert (get(ctx, D) == (int(h) | int(h) << 16)).all()


TRANS = [
    ("v_exp_f32_e32", np.exp2, (-20, 20), 1),
    ("v_log_f32_e32", np.log2, (1e-3, 1e6), 1),
    ("v_rcp_f32_e32", lambda t: 1 / t, (-1e5, 1e5), 1),
    ("v_rsq_f32_e32", lambda t: 1 / np.sqrt(t), (1e-5, 1e5), 1),
    ("v_sqrt_f32_e32", np.sqrt, (0, 1e6), 1),
    ("v_sin_f32_e32", lambda t: np.sin(2 * np.pi * t), (-3, 3), 2),
    ("v_cos_f32_e32", lambda t: np.cos(2 * np.pi * t), (-3, 3), 2),
]


@pytest.mark.parametrize(("m", "ref", "rng", "ulps"), TRANS, ids=[t[0] for t in TRANS])
def test_transcendentals_are_within_their_ulp_bound(m, ref, rng, ulps):
    ctx = make()
    x = RNG.uniform(*rng, size=(N, 64)).astype(np.float32)
    put(ctx, A, f32_bits(x))
    run(ctx, enc_vop1(m, D, v(A)))
    got = get(ctx, D, np.float32).astype(np.float64)
    want = ref(x.astype(np.float64))
    ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    if "sin" in m or "cos" in m:
        ulp = np.maximum(ulp, 2.0**-24)  # absolute bound near the zeros
    assert (np.abs(got - want) <= ulps * ulp).all(), m
    assert m in valu.TRANSCENDENTAL and "v_add_f32_e32" not in valu.TRANSCENDENTAL


def test_min3_max3_med3_f32():
    ctx = make()
    x = RNG.standard_normal((3, N, 64)).astype(np.float32)
    x[:, 0, :4] = [[-51, 100, 300, 7], [0, 0, 0, np.nan], [255, 255, 255, 1]]  # clamp idiom
    for r, a in zip((A, B, C), x, strict=True):
        put(ctx, r, f32_bits(a))
    fin = ~np.isnan(x).any(axis=0)
    run(ctx, enc_vop3("v_med3_f32", D, v(A), v(B), v(C)))
    np.testing.assert_array_equal(get(ctx, D, np.float32)[fin], np.median(x, axis=0)[fin])
    assert get(ctx, D, np.float32)[0, :3].tolist() == [0, 100, 255]
    assert get(ctx, D, np.float32)[0, 3] == 1  # a NaN operand: min3 of the others
    run(ctx, enc_vop3("v_min3_f32", D, v(A), v(B), v(C)))
    np.testing.assert_array_equal(get(ctx, D, np.float32)[fin], x.min(axis=0)[fin])
    run(ctx, enc_vop3("v_max3_f32", D, v(A), v(B), v(C)))
    np.testing.assert_array_equal(get(ctx, D, np.float32)[fin], x.max(axis=0)[fin])


def test_fract_frexp_ldexp_f32():
    ctx = make()
    x = (RNG.standard_normal((N, 64)) * 100).astype(np.float32)
    x[0, :3] = [-1e-9, np.inf, -0.0]
    put(ctx, A, f32_bits(x))
    run(ctx, enc_vop1("v_fract_f32_e32", D, v(A)))
    got = get(ctx, D, np.float32)
    fin = np.isfinite(x)
    ref = np.minimum(x[fin] - np.floor(x[fin]), np.nextafter(np.float32(1), np.float32(0)))
    np.testing.assert_array_equal(got[fin], ref)
    assert got[0, 0] < 1 and np.isnan(got[0, 1])
    run(ctx, enc_vop1("v_frexp_mant_f32_e32", D, v(A)))
    run(ctx, enc_vop1("v_frexp_exp_i32_f32_e32", B, v(A)))
    fin = np.isfinite(x)
    np.testing.assert_array_equal(get(ctx, D, np.float32)[fin], np.frexp(x)[0][fin])
    np.testing.assert_array_equal(get(ctx, B, np.int32)[fin], np.frexp(x)[1][fin])
    put(ctx, B, np.full((N, 64), 3, np.uint32))
    run(ctx, enc_vop3("v_ldexp_f32", D, v(A), v(B)))
    np.testing.assert_array_equal(get(ctx, D, np.float32)[fin], (x * 8)[fin])


def _div64(ctx, n, d):
    """LLVM's f64 fdiv expansion (SITargetLowering::LowerFDIV64) as clang emits it."""
    put64(ctx, 2, n)
    put64(ctx, 6, d)
    seq = [
        enc_vop3("v_div_scale_f64", 8, v(6), v(6), v(2), sdst=0),
        enc_vop1("v_rcp_f64_e32", 10, v(8)),
        enc_vop3("v_fma_f64", 12, v(8), v(10), 242, neg=1),
        enc_vop3("v_fma_f64", 10, v(10), v(12), v(10)),
        enc_vop3("v_div_scale_f64", 12, v(2), v(6), v(2), sdst=VCC_LO),
        enc_vop3("v_fma_f64", 14, v(8), v(10), 242, neg=1),
        enc_vop3("v_fma_f64", 10, v(10), v(14), v(10)),
        enc_vop3("v_mul_f64", 14, v(12), v(10)),
        enc_vop3("v_fma_f64", 8, v(8), v(14), v(12), neg=1),
        enc_vop3("v_div_fmas_f64", 8, v(8), v(10), v(14)),
        enc_vop3("v_div_fixup_f64", 16, v(8), v(6), v(2)),
    ]
    for words in seq:
        run(ctx, words)
    return get64(ctx, 16, np.float64)


def _div32(ctx, n, d):
    """LLVM's f32 fdiv expansion (SITargetLowering::LowerFDIV32, f32 denormals on)."""
    put(ctx, 2, f32_bits(n))
    put(ctx, 6, f32_bits(d))
    seq = [
        enc_vop3("v_div_scale_f32", 8, v(6), v(6), v(2), sdst=0),
        enc_vop3("v_div_scale_f32", 9, v(2), v(6), v(2), sdst=VCC_LO),
        enc_vop1("v_rcp_f32_e32", 10, v(8)),
        enc_vop3("v_fma_f32", 11, v(8), v(10), 242, neg=1),
        enc_vop3("v_fma_f32", 10, v(11), v(10), v(10)),
        enc_vop2("v_mul_f32_e32", 11, v(9), 10),
        enc_vop3("v_fma_f32", 12, v(8), v(11), v(9), neg=1),
        enc_vop3("v_fma_f32", 11, v(12), v(10), v(11)),
        enc_vop3("v_fma_f32", 8, v(8), v(11), v(9), neg=1),
        enc_vop3("v_div_fmas_f32", 8, v(8), v(10), v(11)),
        enc_vop3("v_div_fixup_f32", 13, v(8), v(6), v(2)),
    ]
    for words in seq:
        run(ctx, words)
    return get(ctx, 13, np.float32)


def _division_operands(dtype, big, small_exp):
    n = RNG.standard_normal((N, 64)) * 10.0 ** RNG.integers(-big, big, (N, 64))
    d = RNG.standard_normal((N, 64)) * 10.0 ** RNG.integers(-big, big, (N, 64))
    tiny = np.finfo(dtype).smallest_subnormal
    specials = [
        (1.0, 3.0), (0.0, 0.0), (1.0, 0.0), (-1.0, -0.0), (0.0, 5.0), (np.inf, np.inf),
        (np.inf, 2.0), (2.0, np.inf), (np.nan, 1.0), (1.0, np.nan), (tiny, 3.0), (3.0, tiny),
        (np.finfo(dtype).max, 0.25), (2.0 ** small_exp, 2.0 ** -small_exp),
        (1.0, 2.0 ** (-small_exp - 2)),
        (np.finfo(dtype).max, np.finfo(dtype).tiny), (tiny * 7, np.finfo(dtype).max),
        (1.5, np.finfo(dtype).max), (-5.0, 7.0),
    ]  # fmt: skip
    for i, (a, b) in enumerate(specials):
        n[0, i], d[0, i] = a, b
    return n.astype(dtype), d.astype(dtype)


def test_llvm_f64_division_sequence_gives_ieee_quotients():
    ctx = make()
    n, d = _division_operands(np.float64, 150, 1000)
    with np.errstate(all="ignore"):
        want = n / d
    np.testing.assert_array_equal(_div64(ctx, n, d), want)


def test_llvm_f32_division_sequence_gives_ieee_quotients():
    ctx = make()
    n, d = _division_operands(np.float32, 18, 120)
    with np.errstate(all="ignore"):
        want = n / d
    np.testing.assert_array_equal(_div32(ctx, n, d), want)


def test_trig_preop_segments_sum_to_two_over_pi():
    ctx = make()
    put64(ctx, 0, np.full((N, 64), 1.0))
    total = Fraction(0)
    for seg in range(3):
        run(ctx, enc_vop3("v_trig_preop_f64", 4, v(0), 128 + seg if seg else 128))
        total += Fraction(float(get64(ctx, 4, np.float64)[0, 0]))
    assert abs(float(total) - 2 / np.pi) < 1e-300 + 2**-150
    assert float(Fraction(float(get64(ctx, 4, np.float64)[0, 0]))) < 2**-100


# ---------------------------------------------------------------------------------------------
# VOP3P / gfx90a


def test_gfx90a_pk_mov_and_accvgpr_moves():
    ctx = make("gfx90a", agprs=4)
    ctx.waves.sgpr[:, 4:6] = [[0x11111111, 0x22222222], [0x33333333, 0x44444444]]
    # v_pk_mov_b32 v[0:1], s[4:5], s[4:5] op_sel:[0,1] (clang -O0 on gfx90a)
    run(ctx, [0xD3B35000, 0x18000804])
    assert get(ctx, 0)[:, 0].tolist() == [0x11111111, 0x33333333]
    assert get(ctx, 1)[:, 0].tolist() == [0x22222222, 0x44444444]
    run(ctx, [0xD3D94002, 0x18000100])  # v_accvgpr_write_b32 a2, v0
    run(ctx, [0xD3D84003, 0x18000102])  # v_accvgpr_read_b32 v3, a2
    np.testing.assert_array_equal(get(ctx, 3), get(ctx, 0))


def test_vop3p_packed_f32_f16_and_i16_with_op_sel_and_neg():
    ctx = make("gfx90a")
    a = RNG.standard_normal((N, 64, 2)).astype(np.float32)
    c = RNG.standard_normal((N, 64, 2)).astype(np.float32)
    put64(ctx, 8, a.view(np.float64).reshape(N, 64))
    put64(ctx, 2, c.view(np.float64).reshape(N, 64))
    ctx.waves.sgpr[:, 2] = f32_bits(np.float32(1.5))
    ctx.waves.sgpr[:, 3] = f32_bits(np.float32(-7.0))
    # v_pk_fma_f32 v[2:3], v[8:9], s[2:3], v[2:3] op_sel_hi:[1,0,1] (clang for float2 * s + c):
    # both elements take the scalar's low dword
    run(ctx, [0xD3B04002, 0x0C080508])
    got = get64(ctx, 2).view(np.float32).reshape(N, 64, 2)
    np.testing.assert_array_equal(got, _exact_fma(a, np.full_like(a, 1.5), c, np.float32))
    # v_pk_add_f32 v[2:3], v[2:3], v[8:9] neg_lo:[0,1] neg_hi:[0,1]: a packed subtract
    before = got.copy()
    run(ctx, [0xD3B24202, 0x58021102])
    np.testing.assert_array_equal(get64(ctx, 2).view(np.float32).reshape(N, 64, 2), before - a)
    # v_pk_fma_f16 v2, v4, v2, v4 on half2
    h = RNG.standard_normal((3, N, 64, 2)).astype(np.float16)
    put(ctx, 4, h[0].view(np.uint32).reshape(N, 64))
    put(ctx, 2, h[1].view(np.uint32).reshape(N, 64))
    run(ctx, [0xD38E4002, 0x1C120504])
    want = (h[0].astype(np.float64) * h[1] + h[0]).astype(np.float16)
    np.testing.assert_array_equal(get(ctx, 2).view(np.float16).reshape(N, 64, 2), want)
    # v_pk_add_u16 v2, v4, v5 clamp: each half saturates on its own
    put(ctx, 4, np.full((N, 64), 0xFFF00001, np.uint32))
    put(ctx, 5, np.full((N, 64), 0x00200002, np.uint32))
    run(ctx, [0xD38AC002, 0x18020B04])
    assert (get(ctx, 2) == 0xFFFF0003).all()
    # v_pk_add_u16 v2, v4, 1: the constant's 32-bit value, 1 in the low half only
    run(ctx, [0xD38A4002, 0x18010304])
    assert (get(ctx, 2) == 0xFFF00002).all()
    # v_pk_mul_f32 v[2:3], v[2:3], 0.5 op_sel_hi:[1,0]: the f32 constant for both elements
    put64(ctx, 2, np.full((N, 64), np.array([3.0, -5.0], np.float32).view(np.float64)[0]))
    run(ctx, [0xD3B14002, 0x0801E102])
    assert get64(ctx, 2).view(np.float32).reshape(N, 64, 2)[0, 0].tolist() == [1.5, -2.5]
    with pytest.raises(IllegalInstruction, match="high dword of 64-bit constant"):
        run(ctx, [0xD3B24002, 0x1801E502])  # v_pk_add_f32 v[2:3], v[2:3], 1.0


def test_dpp_moves_src0_across_lanes_with_bound_ctrl_and_masks():
    ctx = make()
    x = np.tile(np.arange(64, dtype=np.uint32) * 10 + 1, (N, 1))
    put(ctx, 2, x)
    put(ctx, 3, np.full((N, 64), 5, np.uint32))
    # v_add_u32_dpp v3, v2, v3 row_shr:1 row_mask:0xf bank_mask:0xf bound_ctrl:1
    run(ctx, [0x680606FA, 0xFF091102])
    lane = np.arange(64)
    shifted = np.where(lane % 16 >= 1, (lane - 1) * 10 + 1, 0)
    np.testing.assert_array_equal(get(ctx, 3)[0], shifted + 5)
    # v_mov_b32_dpp v4, v2 wave_shr:1 without bound_ctrl: lane 0 has no source, keeps v4
    put(ctx, 4, np.full((N, 64), 77, np.uint32))
    run(ctx, [0x7E0802FA, 0xFF013802])
    np.testing.assert_array_equal(get(ctx, 4)[0], np.where(lane > 0, (lane - 1) * 10 + 1, 77))
    # row_bcast:15 with row_mask 0xa: rows 1 and 3 get lane 15 / lane 47
    put(ctx, 4, np.zeros((N, 64), np.uint32))
    run(ctx, [0x7E0802FA, 0xAF014202])
    want = np.select([lane // 16 == 1, lane // 16 == 3], [151, 471], 0)
    np.testing.assert_array_equal(get(ctx, 4)[0], want)
    # quad_perm:[1,0,3,2] with neg on a float source; an EXEC-disabled source lane is invalid
    put(ctx, 2, f32_bits(x.astype(np.float32)))
    ctx.waves.set_exec(slice(None), np.full(N, ALL ^ np.uint64(2), np.uint64))  # lane 1 off
    put(ctx, 4, np.zeros((N, 64), np.uint32))
    run(ctx, [0x020808FA, 0xFF10B102])  # v_add_f32_dpp v4, -v2, v4 quad_perm:[1,0,3,2]
    got = get(ctx, 4, np.float32)[0]
    assert got[0] == 0 and got[1] == 0  # lane 0's source (lane 1) is off: not written
    assert got[2] == -31.0 and got[3] == -21.0
    assert "v_add_u32_dpp" in valu.OPS and "v_add_f32_sdwa" in valu.OPS


def test_sdwa_selects_sub_dword_sources_and_places_the_result():
    ctx = make()
    put(ctx, 1, np.full((N, 64), 0x3C00_4000, np.uint32))  # f16 1.0 : 2.0
    put(ctx, 2, np.full((N, 64), 0x4200_3C00, np.uint32))  # f16 3.0 : 1.0
    put(ctx, 0, np.full((N, 64), 0x1234_5678, np.uint32))
    # v_add_f16_sdwa v0, v1, v2 dst_sel:WORD_1 dst_unused:UNUSED_PRESERVE src0_sel:WORD_1
    #   src1_sel:WORD_1: 1.0 + 3.0 into the high half, the low half kept
    run(ctx, [0x3E0004F9, 0x05051501])
    assert (get(ctx, 0) == 0x4400_5678).all()
    # v_or_b32_sdwa v0, sext(v1), v2 dst_sel:BYTE_2 dst_unused:UNUSED_SEXT src0_sel:BYTE_0
    put(ctx, 1, np.full((N, 64), 0x0000_0080, np.uint32))
    put(ctx, 2, np.zeros((N, 64), np.uint32))
    run(ctx, [0x280004F9, 0x06080A01])  # 0xFFFFFF80 -> byte 2, sign above, zeros below
    assert (get(ctx, 0) == 0xFF80_0000).all()
    # v_cmp_eq_u32_sdwa s[4:5], v1, s2 src0_sel:BYTE_1: compares byte 1 of v1 with s2
    x = RNG.integers(0, 2**32, size=(N, 64), dtype=np.uint64).astype(np.uint32)
    x[:, ::3] = (x[:, ::3] & 0xFFFF00FF) | 0x4200
    put(ctx, 1, x)
    ctx.waves.sgpr[:, 2] = 0x42
    run(ctx, [0x7D9404F9, 0x86018401])
    got = mask_to_lanes(ctx.waves.read_sgpr64(slice(None), 4))
    np.testing.assert_array_equal(got, ((x >> 8) & 0xFF) == 0x42)
    # v_add_f32_sdwa v0, -v1, |v2| clamp
    put(ctx, 1, f32_bits(np.full((N, 64), -0.25)))
    put(ctx, 2, f32_bits(np.full((N, 64), -0.5)))
    run(ctx, [0x020004F9, 0x26163601])
    assert (get(ctx, 0, np.float32) == 0.75).all()
    # v_mov_b32_sdwa v0, s3 dst_sel:WORD_0 dst_unused:UNUSED_PAD src0_sel:WORD_1 (an SGPR)
    ctx.waves.sgpr[:, 3] = 0xBEEF_0000
    run(ctx, [0x7E0002F9, 0x00850403])
    assert (get(ctx, 0) == 0xBEEF).all()


def test_fma_mix_and_mad_mix_take_f16_or_f32_sources():
    ctx = make("gfx90a")
    h = RNG.standard_normal((N, 64, 2)).astype(np.float16)
    f = RNG.standard_normal((2, N, 64)).astype(np.float32)
    put(ctx, 4, h.view(np.uint32).reshape(N, 64))
    put(ctx, 5, f32_bits(f[0]))
    put(ctx, 2, f32_bits(f[1]))
    # v_fma_mix_f32 v2, v4, v5, v2 op_sel_hi:[1,0,0]: f16(lo of v4) * v5 + v2, rounded once
    run(ctx, [0xD3A00002, 0x0C0A0B04])
    want = _exact_fma(h[..., 0].astype(np.float32), f[0], f[1], np.float32)
    np.testing.assert_array_equal(get(ctx, 2, np.float32), want)
    # v_fma_mixhi_f16 v4, v6, v4, v0 op_sel:[1,0,0] op_sel_hi:[1,1,0]: f16 result, high half
    put(ctx, 6, h.view(np.uint32).reshape(N, 64))
    put(ctx, 0, f32_bits(f[1]))
    run(ctx, [0xD3A20804, 0x1C020906])
    exact = h[..., 1].astype(np.float64) * h[..., 0] + f[1]
    out = get(ctx, 4).view(np.float16).reshape(N, 64, 2)
    np.testing.assert_array_equal(out[..., 1], exact.astype(np.float16))  # one rounding
    np.testing.assert_array_equal(out[..., 0], h[..., 0])  # low half kept
    # gfx900 v_mad_mix_f32 is unfused and flushes (LLVM uses it with denormals off)
    ctx = make("gfx900")
    put(ctx, 4, np.full((N, 64), 0x4000, np.uint32))  # f16 2.0
    put(ctx, 5, f32_bits(np.full((N, 64), 1e-40)))  # an f32 denormal
    put(ctx, 2, np.zeros((N, 64), np.uint32))
    run(ctx, [0xD3A00002, 0x0C0A0B04])
    assert (get(ctx, 2) == 0).all()


def test_inline_float_constant_of_a_64bit_integer_operand_is_a_double():
    ctx = make()
    run(ctx, enc_vop3("v_lshlrev_b64", 4, 129, 242))  # v_lshlrev_b64 v[4:5], 1, 1.0
    assert (get64(ctx, 4) == np.uint64(0x3FF0000000000000 << 1)).all()


def test_16bit_results_zero_the_high_half_except_the_op_sel_opcodes():
    ctx = make()
    put(ctx, A, np.full((N, 64), 0x3C00, np.uint32))  # f16 1.0
    put(ctx, B, np.full((N, 64), 0x4000, np.uint32))  # f16 2.0
    put(ctx, D, np.full((N, 64), 0xABCD0000, np.uint32))
    run(ctx, enc_vop2("v_add_f16_e32", D, v(A), B))
    assert (get(ctx, D) == 0x4200).all()  # 3.0, high half zeroed
    put(ctx, D, np.full((N, 64), 0xABCD0000, np.uint32))
    run(ctx, enc_vop3("v_fma_f16", D, v(A), v(B), v(A)))
    assert (get(ctx, D) == 0xABCD4200).all()  # gfx9 v_fma_f16 keeps it
    put(ctx, A, np.full((N, 64), 200, np.uint32))
    run(ctx, enc_vop3("v_mad_legacy_u16", D, v(A), v(A), v(A)))
    assert (get(ctx, D) == (200 * 200 + 200) & 0xFFFF).all()


def test_gfx942_64bit_move_and_shift_add():
    ctx = make("gfx942")
    x = RNG.integers(0, 2**64, size=(N, 64), dtype=np.uint64)
    y = RNG.integers(0, 2**64, size=(N, 64), dtype=np.uint64)
    put64(ctx, 0, x)
    put64(ctx, 2, y)
    run(ctx, enc_vop1("v_mov_b64_e32", 4, v(0), target="gfx942"))
    np.testing.assert_array_equal(get64(ctx, 4), x)
    run(ctx, enc_vop3("v_lshl_add_u64", 6, v(0), 128 + 3, v(2), target="gfx942"))
    np.testing.assert_array_equal(get64(ctx, 6), (x << np.uint64(3)) + y)
    assert "v_mac_f32_e32" not in opcode_table("gfx942")["VOP2"].values()  # gfx940 dropped mad


# ---------------------------------------------------------------------------------------------
# Encodings against LLVM's assembler, where it is installed


LLVM_CHECK = [
    ("v_add_co_u32_e64 v6, s[8:9], v0, v2", enc_vop3("v_add_co_u32_e64", 6, v(0), v(2), sdst=8)),
    (
        "v_fma_f64 v[20:21], -v[0:1], v[2:3], -v[4:5]",
        enc_vop3("v_fma_f64", 20, v(0), v(2), v(4), neg=5),
    ),
    ("v_add_f32_e64 v10, |v1|, -v2", enc_vop3("v_add_f32_e64", D, v(A), v(B), abs=1, neg=2)),
    (
        "v_mul_f32_e64 v10, v1, v2 clamp div:2",
        enc_vop3("v_mul_f32_e64", D, v(A), v(B), omod=3, clamp=1),
    ),
    ("v_cmp_le_i32_e64 s[12:13], v1, 0", enc_vop3("v_cmp_le_i32_e64", 12, v(A), 128)),
    ("v_cmpx_ne_u32_e32 vcc, 0, v1", enc_vopc("v_cmpx_ne_u32_e32", 128, A)),
    ("v_addc_co_u32_e32 v5, vcc, v1, v3, vcc", enc_vop2("v_addc_co_u32_e32", 5, v(1), 3)),
    ("v_readlane_b32 s20, v1, s5", enc_vop3("v_readlane_b32", 20, v(A), 5)),
    (
        "v_div_scale_f64 v[8:9], vcc, v[6:7], v[6:7], v[2:3]",
        enc_vop3("v_div_scale_f64", 8, v(6), v(6), v(2), sdst=VCC_LO),
    ),
    ("v_cndmask_b32_e64 v10, 0, -1, s[4:5]", enc_vop3("v_cndmask_b32_e64", D, 128, 193, 4)),
    ("v_lshlrev_b64 v[4:5], 1, 1.0", enc_vop3("v_lshlrev_b64", 4, 129, 242)),
    (
        "v_add_u32_dpp v3, v2, v3 row_shr:1 row_mask:0xf bank_mask:0xf bound_ctrl:0",
        [0x680606FA, 0xFF091102],
    ),
    ("v_mov_b32_dpp v4, v2 row_bcast:15 row_mask:0xa bank_mask:0xf", [0x7E0802FA, 0xAF014202]),
    (
        "v_add_f32_dpp v4, -v2, v4 quad_perm:[1,0,3,2] row_mask:0xf bank_mask:0xf",
        [0x020808FA, 0xFF10B102],
    ),
    ("v_pk_add_u16 v2, v4, v5 clamp", [0xD38AC002, 0x18020B04]),
    ("v_pk_fma_f16 v2, v4, v2, v4", [0xD38E4002, 0x1C120504]),
    (
        "v_add_f16_sdwa v0, v1, v2 dst_sel:WORD_1 dst_unused:UNUSED_PRESERVE src0_sel:WORD_1 "
        "src1_sel:WORD_1",
        [0x3E0004F9, 0x05051501],
    ),
    (
        "v_or_b32_sdwa v0, sext(v1), v2 dst_sel:BYTE_2 dst_unused:UNUSED_SEXT src0_sel:BYTE_0 "
        "src1_sel:DWORD",
        [0x280004F9, 0x06080A01],
    ),
    ("v_cmp_eq_u32_sdwa s[4:5], v1, s2 src0_sel:BYTE_1 src1_sel:DWORD", [0x7D9404F9, 0x86018401]),
    ("v_add_f32_sdwa v0, -v1, |v2| clamp src0_sel:DWORD src1_sel:DWORD", [0x020004F9, 0x26163601]),
    (
        "v_mov_b32_sdwa v0, s3 dst_sel:WORD_0 dst_unused:UNUSED_PAD src0_sel:WORD_1",
        [0x7E0002F9, 0x00850403],
    ),
    ("v_mad_mix_f32 v2, v4, v5, v2 op_sel_hi:[1,0,0]", [0xD3A00002, 0x0C0A0B04]),
]
LLVM_CHECK_90A = [
    ("v_pk_fma_f32 v[2:3], v[8:9], s[2:3], v[2:3] op_sel_hi:[1,0,1]", [0xD3B04002, 0x0C080508]),
    ("v_pk_add_f32 v[2:3], v[2:3], v[8:9] neg_lo:[0,1] neg_hi:[0,1]", [0xD3B24202, 0x58021102]),
    ("v_pk_mul_f32 v[2:3], v[2:3], 0.5 op_sel_hi:[1,0]", [0xD3B14002, 0x0801E102]),
    ("v_pk_add_u16 v2, v4, 1", [0xD38A4002, 0x18010304]),
    ("v_fma_mix_f32 v2, v4, v5, v2 op_sel_hi:[1,0,0]", [0xD3A00002, 0x0C0A0B04]),
    ("v_fma_mixhi_f16 v4, v6, v4, v0 op_sel:[1,0,0] op_sel_hi:[1,1,0]", [0xD3A20804, 0x1C020906]),
    ("v_pk_mov_b32 v[0:1], s[4:5], s[4:5] op_sel:[0,1]", [0xD3B35000, 0x18000804]),
    ("v_accvgpr_write_b32 a2, v0", [0xD3D94002, 0x18000100]),
    ("v_accvgpr_read_b32 v3, a2", [0xD3D84003, 0x18000102]),
]


CHECKS = [(a, w, "gfx900") for a, w in LLVM_CHECK] + [(a, w, "gfx90a") for a, w in LLVM_CHECK_90A]


@pytest.mark.parametrize(("asm", "words", "mcpu"), CHECKS, ids=[c[0] for c in CHECKS])
def test_encodings_used_here_are_llvms(asm, words, mcpu):
    if shutil.which("llvm-mc-15") is None:
        pytest.skip("AMDGPU toolchain not installed: llvm-mc-15 (Debian llvm-15)")
    out = subprocess.run(
        ["llvm-mc-15", "-arch=amdgcn", f"-mcpu={mcpu}", "-show-encoding"],
        input=asm, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    enc = re.search(r"encoding: \[([^\]]*)\]", out).group(1)
    got = bytes(int(b, 16) for b in enc.split(","))
    assert got == b"".join(w.to_bytes(4, "little") for w in words)


# ---------------------------------------------------------------------------------------------
# Corpus coverage: every VALU instruction clang emits for the kernels has semantics


def test_every_valu_mnemonic_of_the_corpus_has_semantics(compile_cl, capsys):
    from rocr.loader import parse_code_object
    from tests.hw_model.test_isa_decoder import CORPUS

    extra = r"""
__kernel void vadd(__global float *c, __global const float *a, __global const float *b) {
  size_t i = get_global_id(0); c[i] = a[i] + b[i];
}
__kernel void saxpy(__global float *y, __global const float *x, float a, uint n) {
  size_t i = get_global_id(0); if (i < n) y[i] = a * x[i] + y[i];
}
#pragma OPENCL EXTENSION cl_khr_fp16 : enable
__kernel void f2(__global float2 *o, __global const float2 *a, __global const float2 *b, float s) {
  size_t i = get_global_id(0); o[i] = a[i] * s + b[i] * b[i] - a[i];
}
__kernel void h2(__global half2 *o, __global const half2 *a, __global const half2 *b) {
  size_t i = get_global_id(0); o[i] = a[i] * b[i] + a[i];
}
__kernel void uc(__global uchar *o, __global const uchar *a, __global const uchar *b) {
  size_t i = get_global_id(0); o[i] = a[i] * b[i] + a[i];
}
__kernel void dtrig(__global double *o, __global const double *a) {
  size_t i = get_global_id(0); o[i] = sin(a[i]) + cos(a[i]);
}
__kernel void mix(__global float *o, __global const half *a, __global const float *f) {
  size_t i = get_global_id(0); o[i] = (float)a[i] * f[i] + o[i];
}
__kernel void sad(__global uint *o, __global const uchar4 *a, __global const uchar4 *b) {
  size_t i = get_global_id(0); uchar4 d = abs_diff(a[i], b[i]); o[i] = d.x + d.y + d.z + d.w;
}
__kernel void cvt8(__global uchar4 *o, __global const float4 *a) {
  size_t i = get_global_id(0); o[i] = convert_uchar4_sat_rte(a[i] * 255.0f);
}
__kernel void dot(__global int *o, __global const char4 *a, __global const char4 *b) {
  size_t i = get_global_id(0); char4 x = a[i], y = b[i];
  o[i] = x.x * y.x + x.y * y.y + x.z * y.z + x.w * y.w;
}
__kernel void dppscan(__global int *o, __global const int *a) {
  size_t i = get_global_id(0); int x = a[i];
  x += __builtin_amdgcn_update_dpp(0, x, 0x111, 0xf, 0xf, false);
  o[i] = x + __builtin_amdgcn_update_dpp(0, x, 0x112, 0xf, 0xf, false);
}
"""
    report = {}
    for mcpu, opt in (("gfx900", "-O2"), ("gfx90a", "-O2"), ("gfx90a", "-O0")):
        co = parse_code_object(compile_cl(CORPUS + extra, mcpu=mcpu, opt=opt).read_bytes())
        text = co.image.section(".text")
        code = decode(co.image.section_bytes(text), mcpu, text.addr)
        used = {i.mnemonic for i in code if i.encoding.startswith("VOP")}
        report[(mcpu, opt)] = (sorted(used), sorted(used - set(valu.OPS)))
    with capsys.disabled():
        for (mcpu, opt), (used, missing) in report.items():
            print(f"\n{mcpu} {opt}: {len(used)} VALU mnemonics; unsupported: {missing or 'none'}")
    assert all(not missing for _, missing in report.values()), report
