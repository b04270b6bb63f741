"""Print a decoded instruction's operands as LLVM's AMDGPU disassembler does.

The oracle is `llvm-objdump-15 -d` (LLVM's AMDGPUInstPrinter): `format_instruction` gives
its text for an `Instruction` — mnemonic, then operands (`v0`, `v[2:3]`, `s[4:5]`, `vcc`,
`exec`, inline constants `-4`/`1.0`, literals `0x3f800000`), then modifiers (`offset:16`,
`glc slc`, `offset0:1 offset1:2`, `vmcnt(0) lgkmcnt(0)`, `|v0|`, `-v1`, `clamp`, `mul:2`,
SDWA selects, DPP controls, `hwreg(...)`, `sendmsg(...)`).

Operand widths are data, not code: a mnemonic's type suffixes give them (`_b64` 64-bit,
`_i32_b64` 32-bit destination and 64-bit source, `_dwordx4` four registers) and `WIDTHS`
lists the instructions whose operands LLVM types irregularly (shift amounts, carries,
`v_mad_u64_u32`). Field layouts beyond those the decoder extracts (VOP3 modifiers, cache
bits) are read here from the instruction words, per the Vega / MI200 ISA guides' chapter
"Microcode Formats".
"""

from __future__ import annotations

import re

from hw_model.isa.decoder import Instruction

# ---------------------------------------------------------------- scalar operand names

# SGPR-file encodings with names (Vega ISA guide, "SSRC0" table; LLVM SIRegisterInfo.td).
_SPECIAL32 = {
    102: "flat_scratch_lo",
    103: "flat_scratch_hi",
    104: "xnack_mask_lo",
    105: "xnack_mask_hi",
    106: "vcc_lo",
    107: "vcc_hi",
    124: "m0",
    126: "exec_lo",
    127: "exec_hi",
    235: "src_shared_base",
    236: "src_shared_limit",
    237: "src_private_base",
    238: "src_private_limit",
    239: "src_pops_exiting_wave_id",
    251: "src_vccz",
    252: "src_execz",
    253: "src_scc",
    254: "src_lds_direct",
}
_SPECIAL64 = {102: "flat_scratch", 104: "xnack_mask", 106: "vcc", 126: "exec"}
# 235..238 name 64-bit apertures as one register each.
_APERTURES = range(235, 239)
_TTMP = range(108, 124)

# Inline float constants (source encodings 240..248) by operand width: the text LLVM prints.
_FLOAT_CONST = {240: "0.5", 241: "-0.5", 242: "1.0", 243: "-1.0", 244: "2.0", 245: "-2.0"}
_FLOAT_CONST |= {246: "4.0", 247: "-4.0"}
_INV2PI = {16: "0.15915494", 32: "0.15915494", 64: "0.15915494309189532"}

LITERAL = 255


def _range(prefix: str, first: int, n: int) -> str:
    return f"{prefix}{first}" if n == 1 else f"{prefix}[{first}:{first + n - 1}]"


def _regs(width: int) -> int:
    """Registers holding an operand of `width` bits (16-bit values use a whole register)."""
    return max(1, (abs(width) + 31) // 32)


# Float bit patterns LLVM prints by name even as literals (printImmediate16/32/64).
_FLOAT_BITS = {
    16: {0x3800: "0.5", 0x3C00: "1.0", 0x4000: "2.0", 0x4400: "4.0", 0x3118: "0.15915494"},
    32: {0x3F000000: "0.5", 0x3F800000: "1.0", 0x40000000: "2.0", 0x40800000: "4.0"},
    64: {0x3FE0000000000000: "0.5", 0x3FF0000000000000: "1.0", 0x4000000000000000: "2.0"},
}
_FLOAT_BITS[32][0x3E22F983] = "0.15915494"
_FLOAT_BITS[64] |= {0x4010000000000000: "4.0", 0x3FC45F306DC9C882: "0.15915494309189532"}
_SIGN = {16: 0x8000, 32: 0x80000000, 64: 1 << 63}


def _literal(value: int, width: int) -> str:
    """A trailing 32-bit constant as LLVM prints it: a value an inline constant could hold
    in its integer or float form is printed as that (`0`, `-1`, `1.0`), the rest in hex.
    A 64-bit operand's literal is the 32-bit value as is (LLVM 15 decodeLiteralConstant)."""
    if width == INT16:
        value &= 0xFFFF
        signed = value - 0x10000 if value & 0x8000 else value
        return str(signed) if -16 <= signed <= 64 else f"{value:#x}"
    w = 16 if width == 16 else (64 if width == 64 else 32)
    if w == 16:
        value &= 0xFFFF  # printImmediate16: the high half is ignored
    signed = value - (1 << w) if value & _SIGN[w] and value < (1 << w) else value
    if -16 <= signed <= 64:
        return str(signed)
    names = _FLOAT_BITS[w]
    if value in names:
        return names[value]
    if value ^ _SIGN[w] in names and names[value ^ _SIGN[w]] != "0.15915494":
        return "-" + names[value ^ _SIGN[w]]
    return f"{value:#x}"


def sreg(code: int, width: int = 32) -> str:
    """An SGPR-file operand (7-bit destination or the low part of a source encoding)."""
    n = _regs(width)
    # LLVM decodes a misaligned tuple as the aligned one holding it (createSRegOperand).
    align = min(n, 4)
    if code < 102:
        return _range("s", code - code % align, n)
    if code in _TTMP:
        return _range("ttmp", (code - 108) - (code - 108) % align, n)
    if n == 1 and code in _SPECIAL32:
        return _SPECIAL32[code]
    if n >= 2 and code in _SPECIAL64:  # a special register has one width (decodeSpecialReg64)
        return _SPECIAL64[code]
    if code == 125:
        return "null"
    return f"<sreg {code} x{n}>"


# An integer 16-bit operand spells a float inline constant as its half-precision bits
# (LLVM printImmediateInt16).
_HALF_BITS = {240: 0x3800, 241: 0xB800, 242: 0x3C00, 243: 0xBC00, 244: 0x4000, 245: 0xC000}
_HALF_BITS |= {246: 0x4400, 247: 0xC400, 248: 0x3118}
INT16 = -16  # a `width` meaning "16-bit integer operand"


def src(code: int, width: int, literal: int | None = None, vgpr: str = "v") -> str:
    """A 9-bit (or 8-bit scalar) source operand as LLVM prints it (`width` in bits, or
    INT16)."""
    int16 = width == INT16
    if int16:
        if code in _HALF_BITS:
            return f"{_HALF_BITS[code]:#x}"
        width = 16
    if code >= 256:
        return _range(vgpr, code - 256, _regs(width))
    if code == 128:
        return "0"
    if 129 <= code <= 192:
        return str(code - 128)
    if 193 <= code <= 208:
        return str(192 - code)
    if code in _FLOAT_CONST:
        return _FLOAT_CONST[code]
    if code == 248:
        return _INV2PI[min(max(width, 16), 64)]
    if code == LITERAL:
        return "<literal>" if literal is None else _literal(literal, INT16 if int16 else width)
    if code in _APERTURES:
        return _SPECIAL32[code]
    if code in _SPECIAL32 and code > 127:
        return _SPECIAL32[code]
    return sreg(code, width)


# ---------------------------------------------------------------- operand widths

_TYPE = re.compile(r"^(?:[biuf](?:8|16|24|32|64)|bf16)$")


def _type_bits(tok: str) -> int:
    """Operand width of a type suffix: 8- and 24-bit values are read from 32 bits."""
    bits = int(re.sub(r"\D", "", tok)) if tok != "bf16" else 16
    return 32 if bits in (8, 24) else bits


def _base(mnemonic: str) -> str:
    return re.sub(r"_(e32|e64|sdwa|dpp)$", "", mnemonic)


# Instructions whose operands' widths the type suffixes do not give: (dst, src0, src1, src2).
# From LLVM's instruction profiles (VOP3Instructions.td, SOPInstructions.td).
WIDTHS: dict[str, tuple[int, ...]] = {
    "v_mad_u64_u32": (64, 32, 32, 64),
    "v_mad_i64_i32": (64, 32, 32, 64),
    "v_lshlrev_b64": (64, 32, 64),
    "v_lshrrev_b64": (64, 32, 64),
    "v_ashrrev_i64": (64, 32, 64),
    "v_lshl_add_u64": (64, 64, 32, 64),
    "v_ldexp_f64": (64, 64, 32),
    "v_trig_preop_f64": (64, 64, 32),
    "v_cmp_class_f64": (64, 64, 32),
    "v_cmpx_class_f64": (64, 64, 32),
    "v_qsad_pk_u16_u8": (64, 64, 32, 64),
    "v_mqsad_pk_u16_u8": (64, 64, 32, 64),
    "v_mqsad_u32_u8": (128, 64, 32, 128),
    "v_div_fixup_legacy_f16": (32, 32, 32, 32),
    "v_cvt_pk_f32_fp8": (64, 32),
    "v_mad_u32_u16": (32, INT16, INT16, 32),
    "v_mad_i32_i16": (32, INT16, INT16, 32),
    "v_cvt_pk_f32_bf8": (64, 32),
    "s_lshl_b64": (64, 64, 32),
    "s_lshr_b64": (64, 64, 32),
    "s_ashr_i64": (64, 64, 32),
    "s_bfe_u64": (64, 64, 32),
    "s_bfe_i64": (64, 64, 32),
    "s_bfm_b64": (64, 32, 32),
    "s_bitset0_b64": (64, 32),
    "s_bitset1_b64": (64, 32),
    "s_bitcmp0_b64": (64, 32),  # SOPC: (src0, src1)
    "s_bitcmp1_b64": (64, 32),
    "s_bitreplicate_b64_b32": (64, 32),
    "s_lshl1_add_u32": (32, 32, 32),
    "s_cbranch_join": (32,),
    "v_sat_pk_u8_i16": (32, 32),
    "s_movrels_b64": (64, 64),
    "s_movreld_b64": (64, 64),
}


def widths(mnemonic: str) -> tuple[int, int, int, int]:
    """(dst, src0, src1, src2) widths in bits: WIDTHS, else the last one or two type suffixes
    (LLVM names conversions `dst type _ src type`), else 32."""
    base = _base(mnemonic)
    if base in WIDTHS:
        w = WIDTHS[base]
        return (*w, *(w[-1:] * (4 - len(w))))  # type: ignore[return-value]
    types = [t for t in base.split("_")[1:] if _TYPE.match(t)]
    if not types:
        return (32, 32, 32, 32)
    dst = _type_bits(types[-2] if len(types) >= 2 else types[-1])
    # Only the vector ALU has 16-bit integer operands; SALU and packed dot products read
    # 32 bits.
    int16 = base.startswith("v_") and "dot" not in base and re.match(r"[biu]16$", types[-1])
    s = INT16 if int16 else _type_bits(types[-1])
    if "dot" in base and not types[-1].startswith("f"):  # packed integers: 32-bit sources
        s = 32
    if not base.startswith("v_"):
        dst, s = max(dst, 32), max(s, 32)
    return (dst, s, s, s)


def _mem_regs(mnemonic: str) -> int:
    """Registers of a memory instruction's data: dwordx4 -> 4, _x2 -> 2, b64 -> 2, b96 -> 3."""
    m = re.search(r"dwordx(\d+)|_x(\d+)\b|_b(64|96|128)\b|_[iuf]64\b", mnemonic)
    if not m:
        return 1
    if m.group(1) or m.group(2):
        return int(m.group(1) or m.group(2))
    if m.group(3):
        return int(m.group(3)) // 32
    return 2


# ---------------------------------------------------------------- encodings


def _bits(ins: Instruction, lo: int, width: int = 1) -> int:
    """Bits [lo, lo+width) of the instruction's first two dwords as one number."""
    v = ins.words[0] | ((ins.words[1] << 32) if len(ins.words) > 1 else 0)
    return (v >> lo) & ((1 << width) - 1)


def _is_float(mnemonic: str) -> bool:
    """Sources take float modifiers (neg/abs): float types (and v_cndmask_b32_e64, below)."""
    return bool(re.search(r"_f(16|32|64)\b|_bf16\b", _base(mnemonic)))


def _mod(text: str, neg: int, abs_: int, imm: bool) -> str:
    """VOP3/SDWA/DPP float input modifiers: `-x`, `|x|`, `neg(1.0)` (LLVM
    printOperandAndFPInputMods: a negated constant is spelled neg(...))."""
    if abs_:
        text = f"|{text}|"
    if neg:
        text = f"neg({text})" if imm and not abs_ else f"-{text}"
    return text


def _is_imm(code: int) -> bool:
    """An inline constant or the literal (a source LLVM spells neg(...) when negated)."""
    return 128 <= code <= 208 or 240 <= code <= 248 or code == LITERAL


def _sopp(ins: Instruction, target: str) -> str:
    m, imm = ins.mnemonic or "", ins.fields["simm16"]
    if m == "s_waitcnt":
        vm = (imm & 0xF) | ((imm >> 14) & 3) << 4
        exp, lgkm = (imm >> 4) & 7, (imm >> 8) & 0xF
        parts = [(f"vmcnt({vm})", vm == 63), (f"expcnt({exp})", exp == 7)]
        parts.append((f"lgkmcnt({lgkm})", lgkm == 15))
        everything = all(d for _, d in parts)
        return " ".join(p for p, d in parts if everything or not d)
    if m in ("s_sendmsg", "s_sendmsghalt"):
        return _sendmsg(imm)
    if m == "s_set_gpr_idx_mode":
        return _gpr_idx(imm)
    if m in _SOPP_NONE:
        return "" if not imm or m not in ("s_endpgm",) else str(imm)
    if "branch" in m:
        return str(imm)  # no symbolizer: the raw field, unsigned
    return _u16(imm)


_SOPP_NONE = {
    "s_endpgm",
    "s_barrier",
    "s_wakeup",
    "s_icache_inv",
    "s_ttracedata",
    "s_endpgm_saved",
    "s_set_gpr_idx_off",
    "s_endpgm_ordered_ps_done",
}

_MSG = {
    1: "MSG_INTERRUPT",
    2: "MSG_GS",
    3: "MSG_GS_DONE",
    4: "MSG_SAVEWAVE",
    5: "MSG_STALL_WAVE_GEN",
    6: "MSG_HALT_WAVES",
    7: "MSG_ORDERED_PS_DONE",
    8: "MSG_EARLY_PRIM_DEALLOC",
    9: "MSG_GS_ALLOC_REQ",
    10: "MSG_GET_DOORBELL",
    15: "MSG_SYSMSG",
}
_GS_OP = {0: "GS_OP_NOP", 1: "GS_OP_CUT", 2: "GS_OP_EMIT", 3: "GS_OP_EMIT_CUT"}
_SYS_OP = {
    1: "SYSMSG_OP_ECC_ERR_INTERRUPT",
    2: "SYSMSG_OP_REG_RD",
    3: "SYSMSG_OP_HOST_TRAP_ACK",
    4: "SYSMSG_OP_TTRACE_PC",
}


def _sendmsg(imm: int) -> str:
    """LLVM printSendMsg (gfx9 SIMM16: id [3:0], op [6:4], stream [9:8])."""
    mid, op, stream = imm & 0xF, (imm >> 4) & 7, (imm >> 8) & 3
    if mid not in _MSG:
        return _sendmsg_numeric(imm)
    name = _MSG[mid]
    if mid in (2, 3):
        if op not in _GS_OP or (op == 0 and mid == 2) or (op == 0 and stream):
            return _sendmsg_numeric(imm)
        return f"sendmsg({name}, {_GS_OP[op]}" + (f", {stream})" if op else ")")
    if mid == 15:
        if op in _SYS_OP and not stream:
            return f"sendmsg({name}, {_SYS_OP[op]})"
        return _sendmsg_numeric(imm)
    return f"sendmsg({name})" if not op and not stream else _sendmsg_numeric(imm)


def _sendmsg_numeric(imm: int) -> str:
    """No symbolic form: sendmsg(id, op, stream) when the fields hold all the bits, else
    the number."""
    mid, op, stream = imm & 0xF, imm >> 4 & 7, imm >> 8 & 3
    if imm != mid | op << 4 | stream << 8:
        return str(imm)
    return f"sendmsg({mid}, {op}, {stream})"


def _u16(imm: int) -> str:
    """A 16-bit immediate as LLVM's printImmediate32 spells an integer: -16..64 in decimal,
    the rest in hex."""
    return str(imm) if imm <= 64 else f"{imm:#x}"


def _gpr_idx(imm: int) -> str:
    if imm > 15:
        return f"{imm:#x}"
    modes = [n for i, n in enumerate(("SRC0", "SRC1", "SRC2", "DST")) if imm >> i & 1]
    return f"gpr_idx({','.join(modes)})"


# Hardware register names LLVM 15 knows on gfx9 (AMDGPUAsmUtils.cpp, IdSymbolic).
_HWREG = {
    1: "HW_REG_MODE",
    2: "HW_REG_STATUS",
    3: "HW_REG_TRAPSTS",
    4: "HW_REG_HW_ID",
    5: "HW_REG_GPR_ALLOC",
    6: "HW_REG_LDS_ALLOC",
    7: "HW_REG_IB_STS",
    15: "HW_REG_SH_MEM_BASES",
    16: "HW_REG_TBA_LO",
    17: "HW_REG_TBA_HI",
    18: "HW_REG_TMA_LO",
    19: "HW_REG_TMA_HI",
}


def hwreg(imm: int) -> str:
    """hwreg(NAME[, offset, width]): id [5:0], offset [10:6], width-1 [15:11]."""
    rid, off, size = imm & 0x3F, (imm >> 6) & 0x1F, ((imm >> 11) & 0x1F) + 1
    name = _HWREG.get(rid, str(rid))
    return f"hwreg({name})" if (off, size) == (0, 32) else f"hwreg({name}, {off}, {size})"


def _sopk(ins: Instruction) -> str:
    m, imm, d = ins.mnemonic or "", ins.fields["simm16"], ins.fields["sdst"]
    if m == "s_getreg_b32":
        return f"{sreg(d)}, {hwreg(imm)}"
    if m == "s_setreg_b32":
        return f"{hwreg(imm)}, {sreg(d)}"
    if m == "s_setreg_imm32_b32":
        return f"{hwreg(imm)}, {_literal(ins.literal or 0, 32)}"
    if m in ("s_call_b64", "s_cbranch_i_fork"):
        return f"{sreg(d, 64)}, {imm}"
    return f"{sreg(d)}, {imm:#x}"


def _sop(ins: Instruction) -> str:
    m, f = ins.mnemonic or "", ins.fields
    wd, w0, w1, _ = widths(m)
    lit = ins.literal
    if ins.encoding == "SOPC":
        if m in ("s_bitcmp0_b64", "s_bitcmp1_b64"):
            w0, w1 = 64, 32
        elif m == "s_set_gpr_idx_on":
            return f"{src(f['ssrc0'], 32, lit)}, {_gpr_idx(f['ssrc1'])}"
        else:
            w1 = w0
        return f"{src(f['ssrc0'], w0, lit)}, {src(f['ssrc1'], w1, lit)}"
    if m in ("s_cbranch_g_fork", "s_rfe_restore_b64"):  # SOP2 without a destination
        return f"{src(f['ssrc0'], 64, lit)}, {src(f['ssrc1'], 32 if 'rfe' in m else 64, lit)}"
    if ins.encoding == "SOP2":
        return f"{sreg(f['sdst'], wd)}, {src(f['ssrc0'], w0, lit)}, {src(f['ssrc1'], w1, lit)}"
    # SOP1
    if m == "s_getpc_b64":
        return sreg(f["sdst"], 64)
    if m in ("s_setpc_b64", "s_rfe_b64", "s_cbranch_join", "s_set_gpr_idx_idx"):
        return src(f["ssrc0"], w0 if m != "s_set_gpr_idx_idx" else 32, lit)
    return f"{sreg(f['sdst'], wd)}, {src(f['ssrc0'], w0, lit)}"


def _hex(v: int) -> str:
    return f"-{-v:#x}" if v < 0 else f"{v:#x}"


def _smem_offset(ins: Instruction) -> str:
    """gfx9 SMEM: IMM (bit 17) makes OFFSET [52:32] a signed byte offset, else its low bits
    name an SGPR; SOE (bit 14) adds the SGPR in SOFFSET [63:57] (LLVM printSMEMOffset)."""
    imm, soe = _bits(ins, 17), _bits(ins, 14)
    off = _bits(ins, 32, 21)
    off -= (off & 0x100000) << 1
    soffset = sreg(_bits(ins, 57, 7))
    if imm and soe:
        return f"{soffset} offset:{_hex(off)}"
    if imm:
        return _hex(off)
    return soffset if soe else sreg(off & 0x7F)


def _smem(ins: Instruction, target: str) -> str:
    m, f = ins.mnemonic or "", ins.fields
    if m in ("s_dcache_inv", "s_dcache_wb", "s_dcache_inv_vol", "s_dcache_wb_vol"):
        return ""
    if m in ("s_memtime", "s_memrealtime"):
        return sreg(f["sdata"], 64)
    base_regs = 4 if "buffer" in m else 2
    base = sreg(2 * f["sbase"], 32 * base_regs)
    off = _smem_offset(ins)
    glc = " glc" if _bits(ins, 16) else ""
    if m.startswith("s_dcache_discard"):
        return f"{base}, {off}"
    if m.startswith("s_atc_probe"):
        return f"{_u16(f['sdata'])}, {base}, {off}"
    n = _mem_regs(m)
    if "cmpswap" in m:
        n *= 2
    return f"{sreg(f['sdata'], 32 * n)}, {base}, {off}{glc}"


# ---------------------------------------------------------------- vector ALU

# VOP2 instructions with a carry out (vcc) and, for the *c/*b ones, a carry in.
_CARRY_OUT = re.compile(r"^v_(add|sub|subrev)_co_u32$")
_CARRY_IN = re.compile(r"^v_(addc|subb|subbrev)_co_u32$")

# VOP3-only instructions (gfx9 opcodes 0x1c0 and up) with two sources; the others have three.
_VOP3_TWO_SOURCES = {
    "v_add_f64",
    "v_mul_f64",
    "v_min_f64",
    "v_max_f64",
    "v_ldexp_f64",
    "v_mul_lo_u32",
    "v_mul_hi_u32",
    "v_mul_hi_i32",
    "v_ldexp_f32",
    "v_bcnt_u32_b32",
    "v_mbcnt_lo_u32_b32",
    "v_mbcnt_hi_u32_b32",
    "v_lshlrev_b64",
    "v_lshrrev_b64",
    "v_ashrrev_i64",
    "v_trig_preop_f64",
    "v_bfm_b32",
    "v_cvt_pknorm_i16_f32",
    "v_cvt_pknorm_u16_f32",
    "v_cvt_pkrtz_f16_f32",
    "v_cvt_pk_u16_u32",
    "v_cvt_pk_i16_i32",
    "v_cvt_pknorm_i16_f16",
    "v_cvt_pknorm_u16_f16",
    "v_add_i32",
    "v_sub_i32",
    "v_add_i16",
    "v_sub_i16",
    "v_pack_b32_f16",
    "v_mul_legacy_f32",
    "v_cvt_pk_fp8_f32",
    "v_cvt_pk_bf8_f32",
    "v_cvt_sr_fp8_f32",
    "v_cvt_sr_bf8_f32",
}
_VOP1_NONE = {"v_nop", "v_clrexcp"}


def _vop_shape(m: str, encoding: str, opcode: int) -> tuple[str, int]:
    """(kind, number of sources): kind "vopc", "vop1", "vop2", "vop3"."""
    base = _base(m)
    if encoding == "VOPC" or base.startswith(("v_cmp_", "v_cmpx_")):
        return "vopc", 2
    if encoding == "VOP1" or (encoding == "VOP3" and 0x140 <= opcode < 0x1C0):
        return "vop1", 0 if base in _VOP1_NONE else 1
    if _CARRY_IN.match(base) or base == "v_cndmask_b32":
        return "vop2", 3
    if encoding == "VOP2" or (encoding == "VOP3" and 0x100 <= opcode < 0x140):
        return "vop2", 2
    return "vop3", 2 if base in _VOP3_TWO_SOURCES else 3


def _vop3_srcs(
    ins: Instruction, n: int, ws: tuple[int, ...], fp: bool, has_abs: bool = True
) -> list[str]:
    """Sources of a VOP3 instruction; VOP3b has no ABS field (SDST lies there)."""
    f = ins.fields
    out = []
    for i in range(n):
        code = f[f"src{i}"]
        text = src(code, ws[i + 1], ins.literal)
        if fp and i > 0 and ins.mnemonic == "v_cvt_pk_u8_f32":
            text = f"sext({text})" if _bits(ins, 61 + i) else text  # integer sources
        elif fp:
            abs_ = _bits(ins, 8 + i) if has_abs else 0
            text = _mod(text, _bits(ins, 61 + i), abs_, _is_imm(code))
        out.append(text)
    return out


def _omod_clamp(ins: Instruction, clamp_bit: int, omod: int) -> str:
    s = " clamp" if _bits(ins, clamp_bit) else ""
    return s + {0: "", 1: " mul:2", 2: " mul:4", 3: " div:2"}[omod]


# VOP3 instructions with an SGPR-pair destination in the SDST field (VOP3b).
_VOP3B = re.compile(r"^v_(add|sub|subrev|addc|subb|subbrev)_co_u32$|^v_div_scale_|^v_mad_[iu]64_")


def _vop3(ins: Instruction, target: str) -> str:
    m, f = ins.mnemonic or "", ins.fields
    base = _base(m)
    kind, n = _vop_shape(m, "VOP3", ins.opcode)
    ws = widths(m)
    # LLVM gives v_cndmask_b32_e64 float input modifiers, so that it selects between floats.
    fp = _is_float(m) and base not in ("v_cvt_pk_u16_u32", "v_cvt_pk_i16_i32")
    fp |= base == "v_cndmask_b32"
    if base in ("v_readlane_b32", "v_readfirstlane_b32"):
        srcs = [src(f["src0"], 32), src(f["src1"], 32)][: 1 if "first" in base else 2]
        return ", ".join([sreg(f["vdst"]), *srcs])
    if base == "v_writelane_b32":
        return f"v{f['vdst']}, {src(f['src0'], 32)}, {src(f['src1'], 32)}"
    if kind == "vopc":
        srcs = _vop3_srcs(ins, 2, (ws[0], ws[1], ws[2] if "class" not in base else 32), fp)
        return ", ".join([sreg(f["vdst"], 64), *srcs]) + _omod_clamp(ins, 15, 0)
    if base == "v_cndmask_b32":
        srcs = _vop3_srcs(ins, 2, ws, fp) + [src(f["src2"], 64)]
        return ", ".join([_range("v", f["vdst"], 1), *srcs])
    if _VOP3B.match(base):
        srcs = _vop3_srcs(ins, n, ws, fp, has_abs=False)
        if _CARRY_IN.match(base):
            srcs[2] = src(f["src2"], 64)
        omod = _bits(ins, 59, 2) if fp else 0
        dst = _range("v", f["vdst"], _regs(ws[0]))
        return ", ".join([dst, sreg(f["sdst"], 64), *srcs]) + _omod_clamp(ins, 15, omod)
    srcs = _vop3_srcs(ins, n, ws, fp)
    dst = [_range("v", f["vdst"], _regs(ws[0]))] if n or base not in _VOP1_NONE else []
    tail = _omod_clamp(ins, 15, _bits(ins, 59, 2) if fp else 0)
    opsel = _bits(ins, 11, 4)
    # gfx9 VOP3 OP_SEL exists only on the VOP3-only 16-bit instructions (VOP3_OPSEL).
    has_opsel = (
        ins.opcode >= 0x1C0 and not re.search("legacy|sad", base) and re.search(r"[biuf]16$", base)
    )
    fp8 = bool(re.match(r"v_cvt_(sr|pk)_(fp8|bf8)_f32$", base))  # gfx940: all four bits
    if opsel and (has_opsel or fp8):
        bits = [opsel >> i & 1 for i in (range(4) if fp8 else (*range(n), 3))]
        tail = f" op_sel:[{','.join(map(str, bits))}]"
        tail += _omod_clamp(ins, 15, _bits(ins, 59, 2) if fp else 0)
    return ", ".join(dst + srcs) + tail


def _vop_e32(ins: Instruction, target: str, src0: str) -> str:
    """VOP1/VOP2/VOPC operands with `src0` already printed."""
    m, f = ins.mnemonic or "", ins.fields
    base = _base(m)
    kind, n = _vop_shape(m, ins.encoding, ins.opcode)
    ws = widths(m)
    if kind == "vopc":
        w1 = 32 if "class" in base else ws[2]
        return f"vcc, {src0}, {_range('v', f['vsrc1'], _regs(w1))}"
    if kind == "vop1":
        if n == 0:
            return ""
        if base == "v_readfirstlane_b32":
            return f"{sreg(f['vdst'])}, {src0}"
        if base == "v_accvgpr_mov_b32":
            return f"a{f['vdst']}, a{f['src0'] & 0xFF}"
        if base == "v_swap_b32":  # both operands VGPRs: SRC0 holds a VGPR number
            return f"v{f['vdst']}, v{f['src0'] & 0xFF}"
        return f"{_range('v', f['vdst'], _regs(ws[0]))}, {src0}"
    dst = _range("v", f["vdst"], _regs(ws[0]))
    v1 = _range("v", f["vsrc1"], _regs(ws[2]))
    k = f"{ins.literal:#x}" if ins.literal is not None else ""  # K: always hex
    if base in ("v_madmk_f32", "v_fmamk_f32", "v_madmk_f16"):
        return f"{dst}, {src0}, {k}, {v1}"
    if base in ("v_madak_f32", "v_fmaak_f32", "v_madak_f16"):
        return f"{dst}, {src0}, {v1}, {k}"
    if _CARRY_OUT.match(base):
        return f"{dst}, vcc, {src0}, {v1}"
    if _CARRY_IN.match(base):
        return f"{dst}, vcc, {src0}, {v1}, vcc"
    if base == "v_cndmask_b32":
        return f"{dst}, {src0}, {v1}, vcc"
    return f"{dst}, {src0}, {v1}"


# Float instructions whose second source is an integer (integer modifiers: sext).
_INT_SRC1 = {"v_ldexp_f16"}

_SEL = ("BYTE_0", "BYTE_1", "BYTE_2", "BYTE_3", "WORD_0", "WORD_1", "DWORD", "7")
_UNUSED = ("UNUSED_PAD", "UNUSED_SEXT", "UNUSED_PRESERVE", "3")  # 7, 3: reserved values


def _sdwa(ins: Instruction, target: str) -> str:
    """VOP1/VOP2/VOPC with an SDWA dword (Vega ISA guide "VOP_SDWA"; LLVM printSDWASel)."""
    m, f = ins.mnemonic or "", ins.fields
    d = ins.words[1]
    ws = widths(m)
    fp = _is_float(m)

    def operand(code: int, is_sgpr: int, w: int, sel: int) -> str:
        text = sreg(code, w) if is_sgpr else _range("v", code, _regs(w))
        if is_sgpr and code >= 128:
            text = src(code, w)
        if fp and not (sel == 1 and _base(m) in _INT_SRC1):
            imm = bool(is_sgpr) and _is_imm(code)
            return _mod(text, d >> (20 + 8 * sel) & 1, d >> (21 + 8 * sel) & 1, imm)
        return f"sext({text})" if d >> (19 + 8 * sel) & 1 else text

    s0 = operand(d & 0xFF, d >> 23 & 1, ws[1], 0)
    kind, n = _vop_shape(m, ins.encoding, ins.opcode)
    sel0, sel1 = _SEL[d >> 16 & 7], _SEL[d >> 24 & 7]
    if kind == "vopc":
        sdst = sreg(d >> 8 & 0x7F, 64) if d >> 15 & 1 else "vcc"
        s1 = operand(f["vsrc1"], d >> 31 & 1, ws[2], 1)
        return f"{sdst}, {s0}, {s1} src0_sel:{sel0} src1_sel:{sel1}"  # no clamp: SDST there
    text = _vop_e32(ins, target, s0)
    if kind == "vop2":
        s1 = operand(f["vsrc1"], d >> 31 & 1, ws[2], 1)
        parts = text.split(", ")
        idx = 3 if _CARRY_OUT.match(_base(m)) or _CARRY_IN.match(_base(m)) else 2
        parts[idx] = s1
        text = ", ".join(parts)
    tail = _omod_clamp_sdwa(d)
    if not re.match(r"v_cvt_(pk_)?f32_(fp8|bf8)$", _base(m)):  # gfx940: no destination select
        tail += f" dst_sel:{_SEL[d >> 8 & 7]} dst_unused:{_UNUSED[d >> 11 & 3]}"
    tail += f" src0_sel:{sel0}"
    if kind == "vop2":
        tail += f" src1_sel:{sel1}"
    return text + tail


def _omod_clamp_sdwa(d: int) -> str:
    s = " clamp" if d >> 13 & 1 else ""
    return s + {0: "", 1: " mul:2", 2: " mul:4", 3: " div:2"}[d >> 14 & 3]


def _dpp_ctrl(c: int, target: str) -> str:
    if c <= 0xFF:
        return f"quad_perm:[{c & 3},{c >> 2 & 3},{c >> 4 & 3},{c >> 6 & 3}]"
    for lo, name in ((0x100, "row_shl"), (0x110, "row_shr"), (0x120, "row_ror")):
        if lo < c <= lo + 0xF:
            return f"{name}:{c - lo}"
    fixed = {
        0x130: "wave_shl:1",
        0x134: "wave_rol:1",
        0x138: "wave_shr:1",
        0x13C: "wave_ror:1",
        0x140: "row_mirror",
        0x141: "row_half_mirror",
        0x142: "row_bcast:15",
        0x143: "row_bcast:31",
    }
    if c in fixed:
        return fixed[c]
    # LLVM printDPPCtrl's words for the gfx90a/gfx10 ranges.
    if 0x150 <= c <= 0x15F:
        if target == "gfx900":
            return (
                " /* row_newbcast/row_share is not supported on ASICs earlier than GFX90A/GFX10 */"
            )
        return f"row_newbcast:{c - 0x150}"
    if 0x160 <= c <= 0x16F:
        return "/* row_xmask is not supported on ASICs earlier than GFX10 */"
    return "/* Invalid dpp_ctrl value */"


def _dpp(ins: Instruction, target: str) -> str:
    """VOP1/VOP2/VOPC with a DPP dword (LLVM printDPPCtrl, printRowMask, printBoundCtrl)."""
    m = ins.mnemonic or ""
    d = ins.words[1]
    ws = widths(m)
    fp = _is_float(m)
    s0 = _range("v", d & 0xFF, _regs(ws[1]))
    if fp:
        s0 = _mod(s0, d >> 20 & 1, d >> 21 & 1, False)
    text = _vop_e32(ins, target, s0)
    kind, _n = _vop_shape(m, ins.encoding, ins.opcode)
    if fp and kind in ("vop2", "vopc"):
        parts = text.split(", ")
        i = 1 if kind == "vopc" else (2 if not _CARRY_OUT.match(_base(m)) else 3)
        if _CARRY_IN.match(_base(m)):
            i = 3
        if _base(m) in _INT_SRC1:
            parts[i] = f"sext({parts[i]})" if d >> 22 & 1 else parts[i]
        else:
            parts[i] = _mod(parts[i], d >> 22 & 1, d >> 23 & 1, False)
        text = ", ".join(parts)
    ctrl = d >> 8 & 0x1FF
    if target != "gfx900" and ws[1] == 64 and not 0x150 <= ctrl <= 0x15F:
        text += " /* 64 bit dpp only supports row_newbcast */"
    else:
        text += f" {_dpp_ctrl(ctrl, target)}"
    tail = f" row_mask:{d >> 28:#x} bank_mask:{d >> 24 & 0xF:#x}"
    if d >> 19 & 1:
        tail += " bound_ctrl:1"  # LLVM 15's spelling of BOUND_CTRL set
    return text + tail


# ---------------------------------------------------------------- memory


def _cache_bits(ins: Instruction, target: str, glc: int, slc: int, scc: int) -> str:
    """GLC, SLC and (gfx90a) SCC; gfx940 renames them SC0, NT, SC1."""
    g, s, c = _bits(ins, glc), _bits(ins, slc), _bits(ins, scc)
    if target == "gfx942":
        return " sc0" * g + " nt" * s + " sc1" * c
    return " glc" * g + " slc" * s + (" scc" * c if target == "gfx90a" else "")


# DS operand lists by the instruction's name (LLVM DSInstructions.td): the data operands a
# family has, whether it returns a value; "2" families take two offsets and double the
# returned registers.
_DS_SHAPES: tuple[tuple[str, str], ...] = (
    (r"^nop$|^gws_sema_(v|p|release_all)$", ""),
    (r"^(append|consume|read_addtid)", "D"),
    (r"^write_addtid|^gws_(init|barrier|sema_br)$", "0"),
    (r"^read2", "D2,A"),
    (r"^(read|swizzle)", "D,A"),
    (r"^(permute|bpermute)", "D,A,0"),
    (r"^wrxchg2", "D2,A,0,1"),
    (r"^(cmpst|mskor|wrap).*rtn", "D,A,0,1"),
    (r"^(cmpst|mskor)", "A,0,1"),
    (r"^write2", "A,0,1"),
    (r"_rtn_|_rtn$", "D,A,0"),
    (r"_src2_", "A"),
    (r"", "A,0"),
)


def _ds(ins: Instruction, target: str) -> str:
    m, f = ins.mnemonic or "", ins.fields
    base = m[3:]
    n = _mem_regs(m)
    # gfx90a+: the ACC bit makes the data and destination AGPRs.
    acc = "a" if target != "gfx900" and _bits(ins, 25) else "v"
    shape = next(s for pat, s in _DS_SHAPES if re.search(pat, base))
    names = {
        "D": _range(acc, f["vdst"], n),
        "D2": _range(acc, f["vdst"], 2 * n),
        "A": f"v{f['addr']}",
        "0": _range(acc, f["data0"], n),
        "1": _range(acc, f["data1"], n),
    }
    text = ", ".join(names[k] for k in shape.split(",") if k)
    if re.match(r"(read|write|wrxchg)2", base):
        o0, o1 = f["offset0"], f["offset1"]
        text += f" offset0:{o0}" * bool(o0) + f" offset1:{o1}" * bool(o1)
    else:
        off = f["offset0"] | f["offset1"] << 8
        if base == "swizzle_b32" and off:
            text += f" offset:{_swizzle(off)}"
        elif off:
            text += f" offset:{off}"
    return text + " gds" * f["gds"]


def _swizzle(off: int) -> str:
    if off & 0x8000:
        return "swizzle(QUAD_PERM," + ",".join(str(off >> (2 * i) & 3) for i in range(4)) + ")"
    return f'swizzle(BITMASK_PERM,"{off:05b}")'  # rare: LLVM spells masks per bit


def _flat(ins: Instruction, target: str) -> str:
    m, f = ins.mnemonic or "", ins.fields
    seg = ins.encoding
    n = _mem_regs(m)
    n_data = 2 * n if "cmpswap" in m else n
    acc = "a" if target != "gfx900" and _bits(ins, 55) else "v"
    saddr = f["saddr"]
    off = f["offset"]
    if seg != "FLAT" and off & 0x1000:
        off -= 0x2000
    if seg == "FLAT":
        vaddr = _range("v", f["addr"], 2)
        sa = None
    elif seg == "GLOBAL":
        vaddr = _range("v", f["addr"], 1 if saddr != 0x7F else 2)
        sa = "off" if saddr == 0x7F else sreg(saddr, 64)
    elif target == "gfx942":  # SCRATCH, gfx940: SVE (bit 13) enables the VGPR address
        vaddr = f"v{f['addr']}" if _bits(ins, 13) else "off"
        sa = "off" if saddr == 0x7F else sreg(saddr)
    else:  # SCRATCH: an SGPR offset or a VGPR address, the other "off"
        vaddr = "off" if saddr != 0x7F else f"v{f['addr']}"
        sa = "off" if saddr == 0x7F else sreg(saddr)
    # A global/scratch load into LDS has no destination: the LDS bit on gfx9/gfx90a, its own
    # opcodes (`_load_lds_`) on gfx940, where bit 13 is scratch's SVE.
    lds = seg != "FLAT" and target != "gfx942" and _bits(ins, 13)
    returns = "_load" in m and not lds and "_load_lds_" not in m
    returns |= "_atomic_" in m and bool(_bits(ins, 16))  # GLC: the atomic returns
    ops = [_range(acc, f["vdst"], n)] if returns else []
    ops.append(vaddr)
    if "_load" not in m:
        ops.append(_range(acc, f["data"], n_data))
    if sa is not None:
        ops.append(sa)
    text = ", ".join(ops)
    if off:
        text += f" offset:{off}"
    return text + _cache_bits(ins, target, 16, 17, 25) + " lds" * lds


def _mubuf(ins: Instruction, target: str) -> str:
    m, f = ins.mnemonic or "", ins.fields
    if m in ("buffer_wbinvl1", "buffer_wbinvl1_vol", "buffer_wbl2", "buffer_invl2", "buffer_inv"):
        # Cache controls: no operands; gfx940 prints its SC bits (scope).
        if target != "gfx942":
            return ""
        return (" sc0" * _bits(ins, 14) + " sc1" * _bits(ins, 15)).strip()
    offen, idxen = _bits(ins, 12), _bits(ins, 13)
    nv = offen + idxen
    vaddr = _range("v", f["vaddr"], nv) if nv else "off"
    n = _mem_regs(m.replace("format_", ""))
    fmt = re.search(r"format_(d16_)?(?:hi_)?(x|xy|xyz|xyzw)$", m)
    if fmt:  # gfx9 packs d16 components two to a register
        n = len(fmt.group(2)) if not fmt.group(1) else (len(fmt.group(2)) + 1) // 2
    if "cmpswap" in m:
        n *= 2
    lds = _bits(ins, 16)
    acc = "a" if target != "gfx900" and _bits(ins, 55) else "v"
    srsrc = sreg(4 * f["srsrc"], 128)
    soff = src(f["soffset"], 32)
    # An LDS load (LDS bit) writes LDS, not VDATA, and prints no data operand.
    ops = [] if lds and "_load" in m else [_range(acc, f["vdata"], n)]
    ops += [vaddr, srsrc, soff]
    text = ", ".join(ops) + " idxen" * idxen + " offen" * offen
    if f["offset"]:
        text += f" offset:{f['offset']}"
    text += _cache_bits(ins, target, 14, 17, 15) + " lds" * lds
    if target == "gfx900" and _bits(ins, 55) and not lds and "_atomic_" not in m:
        text += " tfe"  # gfx90a+ use the bit for ACC; LLVM's atomic/LDS forms have no TFE
    return text


# ---------------------------------------------------------------- entry points


def operands(ins: Instruction, target: str = "gfx900") -> str:
    """The text llvm-objdump-15 prints after the mnemonic ("" when there is none)."""
    if ins.mnemonic is None:
        return ""
    e = ins.encoding
    if e == "SOPP":
        return _sopp(ins, target)
    if e == "SOPK":
        return _sopk(ins)
    if e in ("SOP1", "SOP2", "SOPC"):
        return _sop(ins)
    if e == "SMEM":
        return _smem(ins, target)
    if e in ("VOP1", "VOP2", "VOPC"):
        if ins.modifier == "sdwa":
            return _sdwa(ins, target)
        if ins.modifier == "dpp":
            return _dpp(ins, target)
        ws = widths(ins.mnemonic)
        return _vop_e32(ins, target, src(ins.fields["src0"], ws[1], ins.literal))
    if e == "VOP3":
        return _vop3(ins, target)
    if e == "VOP3P":
        return _vop3p(ins, target)
    if e == "DS":
        return _ds(ins, target)
    if e in ("FLAT", "GLOBAL", "SCRATCH"):
        return _flat(ins, target)
    if e == "MUBUF":
        return _mubuf(ins, target)
    return ""


# MFMA: (registers of C/D, registers of A/B) per instruction (CDNA2/CDNA3 ISA guides, the
# MFMA tables; LLVM VOP3PInstructions.td). gfx940 renames several: same shapes.
MFMA: dict[str, tuple[int, int]] = {
    "v_mfma_f32_32x32x1f32": (32, 1),
    "v_mfma_f32_16x16x1f32": (16, 1),
    "v_mfma_f32_4x4x1f32": (4, 1),
    "v_mfma_f32_32x32x2f32": (16, 1),
    "v_mfma_f32_16x16x4f32": (4, 1),
    "v_mfma_f32_32x32x4f16": (32, 2),
    "v_mfma_f32_16x16x4f16": (16, 2),
    "v_mfma_f32_4x4x4f16": (4, 2),
    "v_mfma_f32_32x32x8f16": (16, 2),
    "v_mfma_f32_16x16x16f16": (4, 2),
    "v_mfma_i32_32x32x4i8": (32, 1),
    "v_mfma_i32_16x16x4i8": (16, 1),
    "v_mfma_i32_4x4x4i8": (4, 1),
    "v_mfma_i32_32x32x8i8": (16, 1),
    "v_mfma_i32_16x16x16i8": (4, 1),
    "v_mfma_f32_32x32x2bf16": (32, 1),
    "v_mfma_f32_16x16x2bf16": (16, 1),
    "v_mfma_f32_4x4x2bf16": (4, 1),
    "v_mfma_f32_32x32x4bf16": (16, 1),
    "v_mfma_f32_16x16x8bf16": (4, 1),
    "v_mfma_f32_32x32x4bf16_1k": (32, 2),
    "v_mfma_f32_16x16x4bf16_1k": (16, 2),
    "v_mfma_f32_4x4x4bf16_1k": (4, 2),
    "v_mfma_f32_32x32x8bf16_1k": (16, 2),
    "v_mfma_f32_16x16x16bf16_1k": (4, 2),
    "v_mfma_f64_16x16x4f64": (8, 2),
    "v_mfma_f64_4x4x4f64": (2, 2),
    "v_mfma_f32_32x32x4_2b_bf16": (32, 2),
    "v_mfma_f32_16x16x4_4b_bf16": (16, 2),
    "v_mfma_f32_4x4x4_16b_bf16": (4, 2),
    "v_mfma_f32_32x32x8_bf16": (16, 2),
    "v_mfma_f32_16x16x16_bf16": (4, 2),
    "v_mfma_f64_16x16x4_f64": (8, 2),
    "v_mfma_f64_4x4x4_4b_f64": (2, 2),
    "v_mfma_i32_32x32x16_i8": (16, 2),
    "v_mfma_i32_16x16x32_i8": (4, 2),
    "v_mfma_f32_16x16x8_xf32": (4, 2),
    "v_mfma_f32_32x32x4_xf32": (16, 2),
}


def _mfma(ins: Instruction, target: str) -> str:
    """MFMA (gfx90a encoding of VOP3P): ACC_CD (bit 15) puts C and D in AGPRs, bits 59/60
    (ACC) A and B; the OP_SEL/NEG fields hold CBSZ, ABID and BLGP (LLVM printers of those)."""
    m, f = ins.mnemonic or "", ins.fields
    cd_regs, ab_regs = MFMA.get(m) or (16 if "32x32" in m else 4, 2)
    cd = "a" if _bits(ins, 15) else "v"
    ops = [_range(cd, f["vdst"], cd_regs)]
    for i in range(2):
        code = f[f"src{i}"]
        ops.append(src(code, 32 * ab_regs, ins.literal, vgpr="a" if _bits(ins, 59 + i) else "v"))
    ops.append(src(f["src2"], 32 * cd_regs, ins.literal, vgpr=cd))
    cbsz, abid, blgp = _bits(ins, 8, 3), _bits(ins, 11, 4), _bits(ins, 61, 3)
    text = ", ".join(ops) + f" cbsz:{cbsz}" * bool(cbsz) + f" abid:{abid}" * bool(abid)
    return text + f" blgp:{blgp}" * bool(blgp)


def _vop3p(ins: Instruction, target: str) -> str:
    """Packed math (LLVM printPackedModifier: op_sel, op_sel_hi unless all set, neg_lo/hi)."""
    m, f = ins.mnemonic or "", ins.fields
    acc_d = "a" if "mfma" in m or m == "v_accvgpr_write_b32" else "v"
    if m == "v_accvgpr_read_b32":
        return f"v{f['vdst']}, {src(f['src0'], 32, ins.literal, vgpr='a')}"
    if m == "v_accvgpr_write_b32":
        return f"a{f['vdst']}, {src(f['src0'], 32, ins.literal)}"
    if "_mix" in m:
        return _vop3p_mix(ins)
    if m.startswith("v_mfma_"):
        return _mfma(ins, target)
    n = 2 if re.search(r"_(add|sub|mul|min|max|lshlrev|lshrrev|ashrrev)_|pk_mov", m) else 3
    wide = 64 if "_f32" in m and m.startswith("v_pk_") or m == "v_pk_mov_b32" else 32
    # Packed 16-bit integers spell float inline constants as half bits (printImmediateV216).
    kind = INT16 if re.search(r"_[iu]16$|_[iu]16_|_b16$", m) else wide
    kinds = [kind, kind, 32 if m.startswith("v_dot") else kind]  # a dot's C is 32-bit
    srcs = [src(f[f"src{i}"], kinds[i], ins.literal) for i in range(n)]
    # Packed f32 reads 32-bit halves: 1/(2*pi) is spelled as a float's.
    srcs = [x.replace(_INV2PI[64], _INV2PI[32]) for x in srcs]
    dst = _range(acc_d, f["vdst"], _regs(wide))
    text = ", ".join([dst, *srcs])
    opsel, opsel_hi = _bits(ins, 11, 3), _bits(ins, 14) << 2 | _bits(ins, 59, 2)
    neg_lo, neg_hi = _bits(ins, 61, 3), _bits(ins, 8, 3)

    def arr(v: int) -> str:
        return "[" + ",".join(str(v >> i & 1) for i in range(n)) + "]"

    full = (1 << n) - 1
    if opsel & full:
        text += f" op_sel:{arr(opsel)}"
    if opsel_hi & full != full:
        text += f" op_sel_hi:{arr(opsel_hi)}"
    if neg_lo & full:
        text += f" neg_lo:{arr(neg_lo)}"
    if neg_hi & full:
        text += f" neg_hi:{arr(neg_hi)}"
    return text + (" clamp" if _bits(ins, 15) else "")


def _vop3p_mix(ins: Instruction) -> str:
    """v_mad_mix*/v_fma_mix*: NEG_LO/NEG_HI are each source's neg/abs, OP_SEL_HI picks f16."""
    f = ins.fields
    srcs = []
    for i in range(3):
        code = f[f"src{i}"]
        text = src(code, 32, ins.literal)
        srcs.append(_mod(text, _bits(ins, 61 + i), _bits(ins, 8 + i), _is_imm(code)))
    text = ", ".join([f"v{f['vdst']}", *srcs])
    opsel, opsel_hi = _bits(ins, 11, 3), _bits(ins, 59, 2) | _bits(ins, 14) << 2

    def arr(v: int) -> str:
        return "[" + ",".join(str(v >> i & 1) for i in range(3)) + "]"

    text += f" op_sel:{arr(opsel)}" * bool(opsel) + f" op_sel_hi:{arr(opsel_hi)}" * bool(opsel_hi)
    return text + " clamp" * _bits(ins, 15)


def format_instruction(ins: Instruction, target: str = "gfx900") -> str:
    """The instruction as llvm-objdump-15 prints it: `mnemonic operands`."""
    if ins.mnemonic is None:
        return f"<{ins.encoding} opcode {ins.opcode:#x}>"
    ops = operands(ins, target)
    return f"{ins.mnemonic} {ops}" if ops else ins.mnemonic
