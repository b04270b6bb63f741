"""The gfx9 interpreter on hand-assembled scalar code: SALU semantics and SCC as the Vega ISA
guide gives them, branches, divergence and reconvergence of waves, s_barrier, and the
per-wave counts the timing model reads."""

from __future__ import annotations

import numpy as np
import pytest

from hw_model.isa.decoder import opcode_table
from hw_model.isa.encodings import ENCODINGS
from hw_model.isa.executor import CLASSES, Program, run
from hw_model.isa.wave import EXEC_LO, VCC_LO, WaveContext, Waves
from hw_model.memory import MemoryFault

LIT = 255  # source operand: a literal dword follows
_REV = {enc: {m: op for op, m in ops.items()} for enc, ops in opcode_table("gfx900").items()}


def asm(enc: str, mnemonic: str, literal: int | None = None, **fields: int) -> list[int]:
    """One instruction's dwords (its literal appended when given)."""
    e = ENCODINGS[enc]
    bits = e.value | (_REV[enc][mnemonic] << e.op[0])
    for name, v in fields.items():
        lo, width = e.fields[name]
        bits |= (v & ((1 << width) - 1)) << lo
    words = [(bits >> (32 * i)) & 0xFFFFFFFF for i in range(e.dwords)]
    return words + ([literal & 0xFFFFFFFF] if literal is not None else [])


def sop2(m, d, a, b, lit=None):
    return asm("SOP2", m, lit, sdst=d, ssrc0=a, ssrc1=b)


def sop1(m, d, a, lit=None):
    return asm("SOP1", m, lit, sdst=d, ssrc0=a)


def sopk(m, d, imm):
    return asm("SOPK", m, sdst=d, simm16=imm)


def sopc(m, a, b, lit=None):
    return asm("SOPC", m, lit, ssrc0=a, ssrc1=b)


def sopp(m, imm=0):
    return asm("SOPP", m, simm16=imm)


END = sopp("s_endpgm")


def inline(v: int) -> int:
    """The inline-constant operand of a small integer (-16..64)."""
    return 128 + v if v >= 0 else 192 - v


def execute(*code: list[int], waves: int = 1, per_wg: int = 1, setup=None):
    words = [w for ins in code for w in ins]
    raw = b"".join(w.to_bytes(4, "little") for w in words)
    wv = Waves(waves, 4)
    wv.wg[:] = np.arange(waves) // per_wg
    wv.wave_in_wg[:] = np.arange(waves) % per_wg
    ctx = WaveContext(wv, workgroups=-(-waves // per_wg), lds_bytes=1024)
    wv.set_exec(slice(None), np.full(waves, 0xFFFFFFFFFFFFFFFF, np.uint64))
    wv.pc[:] = 0x1000
    if setup:
        setup(wv)
    res = run(ctx, Program(raw, 0x1000, "gfx900", "t"))
    return wv, res


def s(wv, reg, wave=0) -> int:
    return int(wv.sgpr[wave, reg])


def test_32_bit_add_sets_scc_to_the_carry_and_addc_consumes_it():
    wv, _ = execute(
        sop1("s_mov_b32", 0, LIT, 0xFFFFFFFF),
        sop2("s_add_u32", 2, 0, inline(1)),  # 0xffffffff + 1: 0, carry out
        sop2("s_addc_u32", 3, inline(5), inline(0)),  # 5 + 0 + carry
        END,
    )
    assert (s(wv, 2), s(wv, 3)) == (0, 6)
    assert not wv.scc[0], "s_addc_u32 5 + 0 + 1 does not carry"


def test_sub_borrow_signed_overflow_and_min_max_scc():
    wv, _ = execute(
        sop2("s_sub_u32", 0, inline(3), inline(5)),  # borrow
        sop2("s_cselect_b32", 1, inline(1), inline(2)),
        sop1("s_mov_b32", 2, LIT, 0x7FFFFFFF),
        sop2("s_add_i32", 3, 2, inline(1)),  # signed overflow: SCC = 1
        sop2("s_cselect_b32", 4, inline(1), inline(2)),
        sop2("s_min_i32", 5, inline(-3), inline(2)),  # S0 chosen: SCC = 1
        sop2("s_cselect_b32", 6, inline(1), inline(2)),
        sop2("s_max_u32", 7, inline(-3), inline(2)),  # 0xfffffffd: S0 chosen
        sop2("s_max_i32", 8, inline(2), inline(2)),  # equal: S1 chosen, SCC = 0
        sop2("s_cselect_b32", 9, inline(1), inline(2)),
        END,
    )
    assert s(wv, 0) == 0xFFFFFFFE and s(wv, 1) == 1
    assert s(wv, 3) == 0x80000000 and s(wv, 4) == 1
    assert s(wv, 5) == 0xFFFFFFFD and s(wv, 6) == 1
    assert s(wv, 7) == 0xFFFFFFFD
    assert s(wv, 8) == 2 and s(wv, 9) == 2


def test_bit_operations():
    wv, _ = execute(
        sop1("s_mov_b32", 0, LIT, 0x00F0_0100),
        sop1("s_ff1_i32_b32", 1, 0),  # lowest set bit: 8
        sop1("s_flbit_i32_b32", 2, 0),  # leading zeros: 8
        sop1("s_bcnt1_i32_b32", 3, 0),  # 5 bits
        sop1("s_ff1_i32_b32", 4, inline(0)),  # none: -1
        sop2("s_bfe_u32", 5, 0, LIT, 20 | (4 << 16)),  # bits [23:20] = 0xf
        sop2("s_bfe_i32", 6, 0, LIT, 20 | (4 << 16)),  # sign-extended: -1
        sop2("s_bfm_b32", 7, inline(4), inline(8)),  # 0xf00
        sop1("s_brev_b32", 8, inline(1)),  # 0x80000000
        sop1("s_sext_i32_i8", 9, LIT, 0x80),  # -128
        sop2("s_ashr_i32", 10, LIT, inline(4), 0x80000000),  # 0xf8000000
        sop2("s_mul_i32", 11, inline(-3), inline(7)),  # -21
        sop1("s_abs_i32", 12, LIT, 0x80000000),  # stays 0x80000000
        sop1("s_flbit_i32", 13, inline(-1)),  # no bit differs from the sign: -1
        END,
    )
    got = [s(wv, r) for r in range(1, 14)]
    assert got == [
        8, 8, 5, 0xFFFFFFFF, 0xF, 0xFFFFFFFF, 0xF00, 0x80000000, 0xFFFFFF80,
        0xF8000000, (-21) & 0xFFFFFFFF, 0x80000000, 0xFFFFFFFF,
    ]  # fmt: skip


def test_64_bit_shifts_counts_and_scc_of_logic():
    wv, _ = execute(
        sop1("s_mov_b64", 0, inline(1)),  # s[0:1] = 1
        sop2("s_lshl_b64", 2, 0, inline(40)),  # bit 40: s3 = 0x100
        sop1("s_ff1_i32_b64", 4, 2),  # 40
        sop1("s_bcnt1_i32_b64", 5, inline(-1)),  # 64 ones (sign-extended -1)
        sop2("s_and_b64", 6, 0, 2),  # 0: SCC = 0
        sop2("s_cselect_b32", 8, inline(1), inline(2)),
        sop2("s_lshr_b64", 10, 2, inline(40)),  # back to 1
        sop2("s_ashr_i64", 12, inline(-8), inline(2)),  # -2
        sop2("s_bfe_u64", 14, 2, LIT, 36 | (8 << 16)),  # bits [43:36] of 1<<40: 0x10
        END,
    )
    assert (s(wv, 2), s(wv, 3), s(wv, 4), s(wv, 5)) == (0, 0x100, 40, 64)
    assert (s(wv, 6), s(wv, 7), s(wv, 8)) == (0, 0, 2)
    assert (s(wv, 10), s(wv, 11)) == (1, 0)
    assert (s(wv, 12), s(wv, 13)) == (0xFFFFFFFE, 0xFFFFFFFF)
    assert (s(wv, 14), s(wv, 15)) == (0x10, 0)


def test_sopk_sign_extends_and_addk_sets_overflow():
    wv, _ = execute(
        sopk("s_movk_i32", 0, 0x8000),  # -32768
        sopk("s_movk_i32", 1, 0x7FFF),
        sopk("s_addk_i32", 1, 0x7FFF),  # 65534: no overflow
        sopk("s_cmpk_lt_i32", 0, 0),  # -32768 < 0
        sop2("s_cselect_b32", 2, inline(1), inline(2)),
        sopk("s_cmpk_gt_u32", 0, 0x8000),  # 0xffff8000 > 0x8000 unsigned
        sop2("s_cselect_b32", 3, inline(1), inline(2)),
        sop1("s_mov_b32", 4, LIT, 0x7FFFFFFF),
        sopk("s_addk_i32", 4, 1),  # signed overflow: SCC = 1
        sop2("s_cselect_b32", 5, inline(1), inline(2)),
        END,
    )
    assert s(wv, 0) == 0xFFFF8000 and s(wv, 1) == 65534
    assert (s(wv, 2), s(wv, 3), s(wv, 4), s(wv, 5)) == (1, 1, 0x80000000, 1)


def test_saveexec_returns_the_old_exec_and_sets_scc_from_the_new():
    def setup(wv):
        wv.write_sgpr64(slice(None), VCC_LO, np.array([0xF0F0, 0], np.uint64))

    wv, _ = execute(
        sop1("s_and_saveexec_b64", 0, VCC_LO),
        sop2("s_cselect_b32", 2, inline(1), inline(2)),
        sop1("s_andn2_saveexec_b64", 4, VCC_LO),  # VCC & ~EXEC = 0: SCC = 0
        sop2("s_cselect_b32", 6, inline(1), inline(2)),
        END,
        waves=2,
        setup=setup,
    )
    assert s(wv, 0) == 0xFFFFFFFF and s(wv, 1) == 0xFFFFFFFF
    assert s(wv, 2) == 1 and s(wv, 4) == 0xF0F0
    assert (s(wv, 6), int(wv.exec_mask(slice(None))[1])) == (2, 0)
    assert (s(wv, 2, 1), s(wv, 4, 1)) == (2, 0), "wave 1 had VCC 0: EXEC 0, SCC 0"


def test_waves_with_different_trip_counts_reconverge_after_the_loop():
    # s1 counts up to s0 (per wave); then every wave runs the tail together.
    def setup(wv):
        wv.sgpr[:, 0] = [1, 5, 3, 5]

    loop = [
        sop2("s_add_u32", 1, 1, inline(1)),  # 0x1000
        sopc("s_cmp_lt_u32", 1, 0),  # 0x1004
        sopp("s_cbranch_scc1", (-3) & 0xFFFF),  # 0x1008: back to 0x1000
        sop2("s_add_u32", 2, 1, inline(10)),  # tail
        END,
    ]
    wv, res = execute(*loop, waves=4, setup=setup)
    np.testing.assert_array_equal(wv.sgpr[:, 1], [1, 5, 3, 5])
    np.testing.assert_array_equal(wv.sgpr[:, 2], [11, 15, 13, 15])
    sa, br = CLASSES.index("salu"), CLASSES.index("branch")
    np.testing.assert_array_equal(res.counts[:, br], [1, 5, 3, 5])
    np.testing.assert_array_equal(res.counts[:, sa], [4, 12, 8, 12])  # 2/trip + tail + end
    # Issued in groups: the longest wave's 17 instructions, not the 48 of all waves.
    assert res.steps == 5 * 3 + 2


def test_scalar_branches_on_vcc_and_exec():
    def setup(wv):
        wv.set_exec(slice(None), np.array([0, 1], np.uint64))

    wv, _ = execute(
        sopp("s_cbranch_execz", 1),  # wave 0 skips the next instruction
        sop1("s_mov_b32", 0, inline(7)),
        sopp("s_cbranch_vccz", 1),  # VCC is 0: taken
        sop1("s_mov_b32", 1, inline(9)),
        END,
        waves=2,
        setup=setup,
    )
    assert (s(wv, 0, 0), s(wv, 0, 1)) == (0, 7)
    assert (s(wv, 1, 0), s(wv, 1, 1)) == (0, 0)


def test_getpc_and_setpc_jump_through_a_register():
    wv, _ = execute(
        sop1("s_getpc_b64", 0, 0),  # 0x1000: s[0:1] = 0x1004
        sop2("s_add_u32", 0, 0, inline(12)),  # 0x1004: -> 0x1010
        sop1("s_setpc_b64", 0, 0),  # 0x1008
        sop1("s_mov_b32", 4, inline(1)),  # 0x100c: skipped
        sop1("s_mov_b32", 5, inline(2)),  # 0x1010
        END,
    )
    assert (s(wv, 4), s(wv, 5)) == (0, 2)


def _ds(m, **f):
    return asm("DS", m, **f)


def test_barrier_holds_a_wave_until_its_workgroup_arrives():
    # Wave 0 of each group reaches the barrier first (it jumps straight there) and reads LDS
    # after it; wave 1 loops a while, then writes LDS and arrives. Without the barrier the
    # read would see 0.
    def setup(wv):
        wv.sgpr[:, 0] = wv.wave_in_wg
        wv.sgpr[:, 1] = 100 + wv.wg  # what wave 1 writes
        wv.vgpr[0][:] = 0  # LDS address

    code = [
        sopc("s_cmp_eq_u32", 0, inline(0)),  # 0x1000
        sopp("s_cbranch_scc1", 4),  # 0x1004 -> 0x1018 (wave 0)
        sop2("s_add_u32", 2, 2, inline(1)),  # 0x1008: wave 1 loops 20 times
        sopc("s_cmp_lt_u32", 2, inline(20)),  # 0x100c
        sopp("s_cbranch_scc1", (-3) & 0xFFFF),  # 0x1010
        sopp("s_branch", 4),  # 0x1014 -> 0x1028
        sopp("s_barrier"),  # 0x1018 wave 0 waits
        _ds("ds_read_b32", addr=0, vdst=2),  # 0x101c (8 bytes)
        END,  # 0x1024
    ]
    tail = [
        asm("VOP1", "v_mov_b32_e32", src0=1, vdst=1),  # v1 = s1
        _ds("ds_write_b32", addr=0, data0=1),
        sopp("s_waitcnt", 0),
        sopp("s_barrier"),
        END,
    ]
    wv, res = execute(*code, *tail, waves=4, per_wg=2, setup=setup)
    assert res.illegal is None, res.illegal
    np.testing.assert_array_equal(wv.vgpr[2][[0, 2], 0], [100, 101])


def test_a_wave_that_ended_does_not_hold_the_barrier():
    def setup(wv):
        wv.sgpr[:, 0] = wv.wave_in_wg

    wv, res = execute(
        sopc("s_cmp_eq_u32", 0, inline(1)),
        sopp("s_cbranch_scc1", 2),  # wave 1 ends at once
        sopp("s_barrier"),
        sop1("s_mov_b32", 3, inline(5)),
        END,
        waves=2,
        per_wg=2,
        setup=setup,
    )
    assert res.illegal is None and (s(wv, 3, 0), s(wv, 3, 1)) == (5, 0)
    assert wv.done.all()


def test_unknown_instructions_stop_the_workgroup_naming_mnemonic_and_pc():
    wv, res = execute(sop1("s_mov_b32", 0, inline(1)), sop1("s_rfe_b64", 0, 0), END, waves=2)
    assert res.illegal_wg == 0
    assert "s_rfe_b64" in res.illegal and "PC 0x1004" in res.illegal and "kernel t" in res.illegal
    # An opcode gfx900 does not have: named by its encoding and words.
    bad = asm("SOP1", "s_mov_b32", ssrc0=0, sdst=0)[0] & ~(0xFF << 8) | (0x3F << 8)
    _, res = execute([bad], END)
    assert "SOP1 opcode 0x3f" in res.illegal and f"{bad:08x}" in res.illegal


def test_waitcnt_on_outstanding_scalar_loads_is_one_round_trip():
    # No memory here: a wait with nothing outstanding costs no round trip.
    _, res = execute(sopp("s_waitcnt", 0), sopp("s_nop"), END)
    assert res.rounds[0] == 0
    assert res.counts[0, CLASSES.index("waitcnt")] == 1


def test_exec_writes_through_scalar_ops_change_the_lanes_vector_ops_see():
    wv, _ = execute(sop1("s_mov_b64", EXEC_LO, inline(3)), END)
    assert wv.lanes(slice(None))[0].sum() == 2


@pytest.mark.parametrize("target", ["gfx900", "gfx90a", "gfx942"])
def test_every_salu_mnemonic_in_the_table_exists_on_the_targets(target):
    from hw_model.isa import salu

    table = {m for ops in opcode_table(target).values() for m in ops.values()}
    missing = sorted(set(salu.OPS) - table - {"s_dcache_inv", "s_dcache_wb"})
    assert not missing, missing


class FlatMemory:
    """Memory of one buffer at `BASE`: an access outside it faults as the page tables would."""

    BASE = 0x10000

    def __init__(self, data: np.ndarray) -> None:
        self.data = data.view(np.uint8)

    def shader_view(self, pasid, node, va, size):
        off = va - self.BASE
        if off < 0 or off + size > self.data.size:
            raise MemoryFault(va, size, "no buffer object is mapped there")
        return self.data[off : off + size]


def smem(m, sdata, sbase, offset, imm=1):
    """OFFSET is 21 bits ([52:32]); the decoder's field table names the low 20."""
    words = asm("SMEM", m, sdata=sdata, sbase=sbase // 2, imm=imm, offset=offset & 0xFFFFF)
    words[1] |= offset & 0x100000
    return words


def _run_with_memory(code, data, setup, waves=1, per_wg=1):
    words = [w for ins in code for w in ins]
    raw = b"".join(w.to_bytes(4, "little") for w in words)
    wv = Waves(waves, 4)
    wv.wg[:] = np.arange(waves) // per_wg
    wv.wave_in_wg[:] = np.arange(waves) % per_wg
    ctx = WaveContext(wv, memory=FlatMemory(data), workgroups=-(-waves // per_wg))
    wv.pc[:] = 0x1000
    setup(wv)
    return wv, run(ctx, Program(raw, 0x1000, "gfx900", "t"))


def test_scalar_loads_read_memory_at_signed_offsets_and_buffer_loads_clamp():
    data = np.arange(64, dtype=np.uint32) + 100

    def setup(wv):
        wv.write_sgpr64(slice(None), 2, np.full(wv.n, FlatMemory.BASE + 64, np.uint64))
        # A V# over the first 24 bytes: base, stride 0, NUM_RECORDS 24.
        wv.write_sgpr64(slice(None), 8, np.full(wv.n, FlatMemory.BASE, np.uint64))
        wv.sgpr[:, 10] = 24

    wv, res = _run_with_memory(
        [
            smem("s_load_dwordx2", 20, 2, 8),  # dwords 18, 19
            smem("s_load_dword", 22, 2, (-4) & 0x1FFFFF),  # dword 15 (negative offset)
            smem("s_load_dword", 23, 2, 2),  # low address bits ignored: dword 16
            smem("s_buffer_load_dwordx4", 24, 8, 16),  # dwords 4, 5, then past NUM_RECORDS
            sopp("s_waitcnt", 0xC07F),  # lgkmcnt(0)
            END,
        ],
        data,
        setup,
    )
    assert res.fault is None and res.illegal is None, res.illegal
    assert [s(wv, r) for r in range(20, 28)] == [118, 119, 115, 116, 104, 105, 0, 0]
    assert res.rounds[0] == 1, "the wait for outstanding scalar loads is one round trip"


def test_a_scalar_load_fault_stops_its_workgroup_and_later_ones_only():
    data = np.arange(16, dtype=np.uint32)

    def setup(wv):
        # Workgroup 0 reads inside the buffer; workgroups 1 and 2 past its end.
        addr = FlatMemory.BASE + np.array([0, 0, 64, 64, 128, 128], np.uint64)
        wv.write_sgpr64(slice(None), 2, addr)

    wv, res = _run_with_memory(
        [smem("s_load_dword", 4, 2, 0), sop1("s_mov_b32", 5, inline(1)), END],
        data,
        setup,
        waves=6,
        per_wg=2,
    )
    assert res.fault_wg == 1 and res.fault.va == FlatMemory.BASE + 64
    np.testing.assert_array_equal(wv.sgpr[:, 5], [1, 1, 0, 0, 0, 0])
    assert wv.done.all()


def test_lshl_add_carries_out_of_the_shifted_value():
    wv, _ = execute(
        sop2("s_lshl2_add_u32", 0, LIT, inline(1), 0x40000000),  # (2^30 << 2) + 1: carry
        sop2("s_cselect_b32", 1, inline(1), inline(2)),
        END,
    )
    assert (s(wv, 0), s(wv, 1)) == (1, 1)


def test_setreg_and_getreg_of_the_mode_register():
    def hwreg(reg, offset, size):
        return reg | offset << 6 | (size - 1) << 11

    mode = 1  # HW_REG_MODE

    def setup(wv):
        wv.mode[:] = 0x200  # IEEE
        wv.sgpr[:, 4] = 0xF

    wv, res = execute(
        asm("SOPK", "s_setreg_imm32_b32", 3, sdst=0, simm16=hwreg(mode, 4, 2)),  # f32 denorms
        sopk("s_getreg_b32", 0, hwreg(mode, 0, 10)),
        sopk("s_setreg_b32", 4, hwreg(mode, 0, 2)),  # round mode: the low 2 bits of s4
        sopk("s_getreg_b32", 1, hwreg(mode, 0, 4)),
        END,
        setup=setup,
    )
    assert res.illegal is None, res.illegal
    assert (s(wv, 0), s(wv, 1), int(wv.mode[0])) == (0x230, 0x3, 0x233)
