"""The gfx9 instruction encodings, declared as data: how each is recognised in the first
dword, how long it is, where its opcode and operand fields lie.

Layouts from AMD's "Vega" Instruction Set Architecture reference guide (chapter 12,
"Microcode Formats") and the MI200 (CDNA2) / MI300 (CDNA3) ISA guides, which keep the gfx9
formats; bit positions are given over the whole instruction (dword 1 starts at bit 32).
"""

from __future__ import annotations

from dataclasses import dataclass, field

TARGETS = ("gfx900", "gfx90a", "gfx942")

LITERAL = 255  # a scalar/vector source field value: a 32-bit literal constant follows
SDWA = 0xF9  # VOP1/VOP2/VOPC src0: an SDWA dword follows
DPP = 0xFA  # VOP1/VOP2/VOPC src0: a DPP dword follows
VGPR0 = 256  # 9-bit source operand: v0


@dataclass(frozen=True)
class Encoding:
    name: str
    mask: int  # of dword 0: the bits that identify the encoding
    value: int
    dwords: int  # without a literal / SDWA / DPP dword
    op: tuple[int, int]  # (low bit, width) of the opcode
    fields: dict[str, tuple[int, int]] = field(default_factory=dict)  # name: (low bit, width)
    literal_fields: tuple[str, ...] = ()  # sources that may hold LITERAL
    sdwa_dpp: bool = False  # src0 may be SDWA or DPP (one more dword)
    canonical_fields: dict[str, int] = field(default_factory=dict)  # for gen_opcodes
    # Opcodes at or above this make the word another encoding's prefix (VOP3 0x380+ is
    # VOP3P, SOP2 0x60+ is SOPK, ...); None: every value of the field is this encoding's.
    op_limit: int | None = None

    @property
    def op_count(self) -> int:
        return self.op_limit if self.op_limit is not None else 1 << self.op[1]

    def canonical(self, op: int, **extra: int) -> list[int]:
        """An instruction of opcode `op` with plain operands (v0, s0, no literal)."""
        bits = self.value | (op << self.op[0])
        for name, v in {**self.canonical_fields, **extra}.items():
            lo, _w = self.fields[name]
            bits |= v << lo
        return [(bits >> (32 * i)) & 0xFFFFFFFF for i in range(self.dwords)]


def _enc(name: str, prefix: str, dwords: int, op: tuple[int, int], **kw) -> Encoding:
    """`prefix`: the identifying bits, most significant first (e.g. "101111101")."""
    n = len(prefix)
    mask = ((1 << n) - 1) << (32 - n)
    return Encoding(name, mask, int(prefix, 2) << (32 - n), dwords, op, **kw)


ENCODINGS: dict[str, Encoding] = {
    e.name: e
    for e in (
        _enc(
            "SOP1",
            "101111101",
            1,
            (8, 8),
            fields={"ssrc0": (0, 8), "sdst": (16, 7)},
            literal_fields=("ssrc0",),
        ),
        _enc(
            "SOPC",
            "101111110",
            1,
            (16, 7),
            fields={"ssrc0": (0, 8), "ssrc1": (8, 8)},
            literal_fields=("ssrc0", "ssrc1"),
        ),
        _enc("SOPP", "101111111", 1, (16, 7), fields={"simm16": (0, 16)}),
        _enc(
            "VOP3P",
            "110100111",
            2,
            (16, 7),
            fields={
                "vdst": (0, 8),
                "src0": (32, 9),
                "src1": (41, 9),
                "src2": (50, 9),
            },
            canonical_fields={"src0": VGPR0},
        ),
        _enc(
            "VOP1",
            "0111111",
            1,
            (9, 8),
            fields={"src0": (0, 9), "vdst": (17, 8)},
            literal_fields=("src0",),
            sdwa_dpp=True,
            canonical_fields={"src0": VGPR0},
        ),
        _enc(
            "VOPC",
            "0111110",
            1,
            (17, 8),
            fields={"src0": (0, 9), "vsrc1": (9, 8)},
            literal_fields=("src0",),
            sdwa_dpp=True,
            canonical_fields={"src0": VGPR0},
        ),
        _enc(
            "SMEM",
            "110000",
            2,
            (18, 8),
            fields={"sbase": (0, 6), "sdata": (6, 7), "imm": (17, 1), "offset": (32, 20)},
            canonical_fields={"imm": 1},
        ),
        _enc(
            "VOP3",
            "110100",
            2,
            (16, 10),
            fields={
                "vdst": (0, 8),
                "sdst": (8, 7),
                "src0": (32, 9),
                "src1": (41, 9),
                "src2": (50, 9),
            },
            canonical_fields={"src0": VGPR0},
            op_limit=0x380,
        ),
        _enc(
            "DS",
            "110110",
            2,
            (17, 8),
            fields={
                "offset0": (0, 8),
                "offset1": (8, 8),
                "gds": (16, 1),
                "addr": (32, 8),
                "data0": (40, 8),
                "data1": (48, 8),
                "vdst": (56, 8),
            },
        ),
        _enc(
            "FLAT",
            "110111",
            2,
            (18, 7),
            fields={
                "offset": (0, 13),
                "seg": (14, 2),
                "addr": (32, 8),
                "data": (40, 8),
                "saddr": (48, 7),
                "vdst": (56, 8),
            },
            canonical_fields={"saddr": 0x7F},
        ),
        _enc(
            "MUBUF",
            "111000",
            2,
            (18, 7),
            fields={
                "offset": (0, 12),
                "vaddr": (32, 8),
                "vdata": (40, 8),
                "srsrc": (48, 5),
                "soffset": (56, 8),
            },
        ),
        _enc(
            "SOPK",
            "1011",
            1,
            (23, 5),
            fields={"simm16": (0, 16), "sdst": (16, 7)},
            op_limit=0x1D,
        ),
        _enc(
            "SOP2",
            "10",
            1,
            (23, 7),
            fields={"ssrc0": (0, 8), "ssrc1": (8, 8), "sdst": (16, 7)},
            literal_fields=("ssrc0", "ssrc1"),
            op_limit=0x60,
        ),
        _enc(
            "VOP2",
            "0",
            1,
            (25, 6),
            fields={"src0": (0, 9), "vsrc1": (9, 8), "vdst": (17, 8)},
            literal_fields=("src0",),
            sdwa_dpp=True,
            canonical_fields={"src0": VGPR0},
            op_limit=0x3E,
        ),
    )
}

# FLAT's SEG field selects the flat, scratch or global instruction set (same opcodes).
FLAT_SEGMENTS = {0: "FLAT", 1: "SCRATCH", 2: "GLOBAL"}

# Most specific first: the shorter prefixes (SOPK, SOP2, VOP2) contain the longer ones.
DECODE_ORDER = tuple(sorted(ENCODINGS.values(), key=lambda e: -bin(e.mask).count("1")))
