"""Decode gfx9 machine code into instructions: encoding, opcode, mnemonic, size, fields.

Table-driven: `encodings.ENCODINGS` says how each encoding is recognised and laid out,
`opcodes.ROWS` names every opcode per target. Nothing here knows any one instruction except
the few whose length the opcode itself fixes (a trailing 32-bit constant).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from hw_model.isa.encodings import (
    DECODE_ORDER,
    DPP,
    FLAT_SEGMENTS,
    LITERAL,
    SDWA,
    TARGETS,
    Encoding,
)
from hw_model.isa.opcodes import ROWS

# Instructions that always carry a 32-bit constant after their encoding (the K of
# v_madmk/v_madak/v_fmamk/v_fmaak, the value of s_setreg_imm32_b32).
_TRAILING_CONSTANT = ("madmk", "madak", "fmamk", "fmaak", "s_setreg_imm32_b32")


class DecodeError(Exception):
    """Bytes that are not a gfx9 instruction of the target (or run past the code)."""


@dataclass(frozen=True, slots=True)
class Instruction:
    pc: int  # byte address of the instruction
    size: int  # bytes, literal/SDWA/DPP dword included
    encoding: str  # SOP2, VOP1, ..., GLOBAL, SCRATCH, FLAT
    opcode: int
    mnemonic: str | None  # None: an opcode this target does not have
    words: tuple[int, ...]
    fields: dict[str, int] = field(default_factory=dict)
    literal: int | None = None  # the trailing 32-bit constant, if any
    modifier: str | None = None  # "sdwa" or "dpp" for VOP1/VOP2/VOPC with that dword

    def __str__(self) -> str:
        words = " ".join(f"{w:08X}" for w in self.words)
        name = self.mnemonic or f"<{self.encoding} opcode {self.opcode:#x}>"
        return f"{name}  // {self.pc:#x}: {words}"


# Targets that share another's instruction set (LLVM: gfx902 is gfx900 on an APU).
SAME_ISA = {"gfx902": "gfx900"}


@functools.cache
def opcode_table(target: str) -> dict[str, dict[int, str]]:
    """encoding -> opcode -> mnemonic for `target`."""
    target = SAME_ISA.get(target, target)
    if target not in TARGETS:
        raise ValueError(f"no instruction table for {target!r}; targets: {', '.join(TARGETS)}")
    col = 2 + TARGETS.index(target)
    out: dict[str, dict[int, str]] = {}
    for row in ROWS:
        op = row[col]
        if op is not None:
            out.setdefault(row[0], {})[op] = row[1]
    return out


def _field(bits: int, lo: int, width: int) -> int:
    return (bits >> lo) & ((1 << width) - 1)


def _encoding_of(word: int) -> Encoding:
    for e in DECODE_ORDER:
        if word & e.mask == e.value:
            return e
    raise DecodeError(f"{word:#010x} is no gfx9 encoding")  # pragma: no cover (VOP2 is "0")


def decode_one(code: bytes, offset: int, target: str = "gfx900", pc: int | None = None):
    """The instruction at byte `offset` of `code` (its address `pc`, default `offset`)."""
    table = opcode_table(target)
    pc = offset if pc is None else pc

    def dword(i: int) -> int:
        at = offset + 4 * i
        if at + 4 > len(code):
            raise DecodeError(f"instruction at {pc:#x} runs past the end of the code")
        return int.from_bytes(code[at : at + 4], "little")

    w0 = dword(0)
    e = _encoding_of(w0)
    n = e.dwords
    bits = w0 if n == 1 else w0 | (dword(1) << 32)
    opcode = _field(bits, *e.op)
    name = e.name
    fields = {k: _field(bits, lo, w) for k, (lo, w) in e.fields.items()}
    if name == "FLAT":
        name = FLAT_SEGMENTS.get(fields["seg"], "FLAT")
    mnemonic = table.get(name, {}).get(opcode)
    literal = None
    modifier = None
    if e.sdwa_dpp and fields.get("src0") in (SDWA, DPP):
        modifier = "sdwa" if fields["src0"] == SDWA else "dpp"
        n += 1
        if mnemonic is not None:
            mnemonic = mnemonic.removesuffix("_e32") + f"_{modifier}"
    elif any(fields.get(f) == LITERAL for f in e.literal_fields) or (
        mnemonic is not None and any(t in mnemonic for t in _TRAILING_CONSTANT)
    ):
        literal = dword(n)
        n += 1
    words = tuple(dword(i) for i in range(n))
    return Instruction(pc, 4 * n, name, opcode, mnemonic, words, fields, literal, modifier)


def decode(code: bytes, target: str = "gfx900", base: int = 0) -> list[Instruction]:
    """Every instruction of `code` in order (`base`: the address of its first byte)."""
    out = []
    off = 0
    while off + 4 <= len(code):
        ins = decode_one(code, off, target, base + off)
        out.append(ins)
        off += ins.size
    return out
