"""A small reader of the ELF64 images AMDGPU code objects are, and of clang offload bundles.

Only what a code object loader needs: the header, program headers (PT_LOAD, PT_DYNAMIC),
section headers, symbol tables, RELA relocations and notes. Every offset and size is checked
against the image, so a malformed file is an ElfError naming the field, never an IndexError
or a struct.error from deep inside.

Constants are LLVM's (llvm/BinaryFormat/ELF.h, AMDGPUUsage "ELF Code Object").
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ELF_MAGIC = b"\x7fELF"
ELFCLASS64 = 2
ELFDATA2LSB = 1
EM_AMDGPU = 224
ELFOSABI_AMDGPU_HSA = 64
# e_ident[EI_ABIVERSION] for ELFOSABI_AMDGPU_HSA: the code object version (AMDGPUUsage).
ELFABIVERSION_AMDGPU_HSA_V2 = 0
ELFABIVERSION_AMDGPU_HSA_V3 = 1
ELFABIVERSION_AMDGPU_HSA_V4 = 2
ELFABIVERSION_AMDGPU_HSA_V5 = 3
CODE_OBJECT_VERSIONS = {
    ELFABIVERSION_AMDGPU_HSA_V3: 3,
    ELFABIVERSION_AMDGPU_HSA_V4: 4,
    ELFABIVERSION_AMDGPU_HSA_V5: 5,
}

ET_DYN = 3
PT_LOAD = 1
PT_DYNAMIC = 2
SHT_SYMTAB = 2
SHT_RELA = 4
SHT_NOTE = 7
SHT_DYNSYM = 11
STT_OBJECT = 1
STT_FUNC = 2
SHN_UNDEF = 0

# e_flags (AMDGPUUsage "AMDGPU ELF Header e_flags"): the target in the low byte.
EF_AMDGPU_MACH = 0x0FF
EF_AMDGPU_MACH_AMDGCN_GFX900 = 0x02C
EF_AMDGPU_MACH_AMDGCN_GFX902 = 0x02D
EF_AMDGPU_MACH_AMDGCN_GFX906 = 0x02F
EF_AMDGPU_MACH_AMDGCN_GFX908 = 0x030
EF_AMDGPU_MACH_AMDGCN_GFX90A = 0x03F
EF_AMDGPU_MACH_AMDGCN_GFX940 = 0x040
EF_AMDGPU_MACH_AMDGCN_GFX941 = 0x04B
EF_AMDGPU_MACH_AMDGCN_GFX942 = 0x04C
EF_AMDGPU_MACH_AMDGCN_GFX1030 = 0x036
MACH_NAMES = {
    EF_AMDGPU_MACH_AMDGCN_GFX900: "gfx900",
    EF_AMDGPU_MACH_AMDGCN_GFX902: "gfx902",
    EF_AMDGPU_MACH_AMDGCN_GFX906: "gfx906",
    EF_AMDGPU_MACH_AMDGCN_GFX908: "gfx908",
    EF_AMDGPU_MACH_AMDGCN_GFX90A: "gfx90a",
    EF_AMDGPU_MACH_AMDGCN_GFX940: "gfx940",
    EF_AMDGPU_MACH_AMDGCN_GFX941: "gfx941",
    EF_AMDGPU_MACH_AMDGCN_GFX942: "gfx942",
    EF_AMDGPU_MACH_AMDGCN_GFX1030: "gfx1030",
}
# Code object v3: one bit each.
EF_AMDGPU_FEATURE_XNACK_V3 = 0x100
EF_AMDGPU_FEATURE_SRAMECC_V3 = 0x200
# Code object v4+: two-bit fields, unsupported / any / off / on.
EF_AMDGPU_FEATURE_XNACK_V4 = 0x300
EF_AMDGPU_FEATURE_XNACK_UNSUPPORTED_V4 = 0x000
EF_AMDGPU_FEATURE_XNACK_ANY_V4 = 0x100
EF_AMDGPU_FEATURE_XNACK_OFF_V4 = 0x200
EF_AMDGPU_FEATURE_XNACK_ON_V4 = 0x300
EF_AMDGPU_FEATURE_SRAMECC_V4 = 0xC00
EF_AMDGPU_FEATURE_SRAMECC_UNSUPPORTED_V4 = 0x000
EF_AMDGPU_FEATURE_SRAMECC_ANY_V4 = 0x400
EF_AMDGPU_FEATURE_SRAMECC_OFF_V4 = 0x800
EF_AMDGPU_FEATURE_SRAMECC_ON_V4 = 0xC00

NT_AMDGPU_METADATA = 32  # note type of the msgpack metadata, owner "AMDGPU"

# Dynamic relocation types (AMDGPUUsage "Relocation Records").
R_AMDGPU_NONE = 0
R_AMDGPU_ABS32_LO = 1
R_AMDGPU_ABS32_HI = 2
R_AMDGPU_ABS64 = 3
R_AMDGPU_ABS32 = 6
R_AMDGPU_RELATIVE64 = 13
RELOC_NAMES = {
    0: "R_AMDGPU_NONE",
    1: "R_AMDGPU_ABS32_LO",
    2: "R_AMDGPU_ABS32_HI",
    3: "R_AMDGPU_ABS64",
    4: "R_AMDGPU_REL32",
    5: "R_AMDGPU_REL64",
    6: "R_AMDGPU_ABS32",
    7: "R_AMDGPU_GOTPCREL",
    8: "R_AMDGPU_GOTPCREL32_LO",
    9: "R_AMDGPU_GOTPCREL32_HI",
    10: "R_AMDGPU_REL32_LO",
    11: "R_AMDGPU_REL32_HI",
    13: "R_AMDGPU_RELATIVE64",
    14: "R_AMDGPU_REL16",
}

OFFLOAD_BUNDLE_MAGIC = b"__CLANG_OFFLOAD_BUNDLE__"

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_RELA = struct.Struct("<QQq")


class ElfError(Exception):
    """A malformed image; the message names what is wrong and where."""


@dataclass(frozen=True, slots=True)
class Segment:
    type: int
    flags: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int
    align: int


@dataclass(frozen=True, slots=True)
class Section:
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int
    info: int
    entsize: int


@dataclass(frozen=True, slots=True)
class Symbol:
    name: str
    value: int
    size: int
    type: int
    bind: int
    shndx: int


@dataclass(frozen=True, slots=True)
class Rela:
    offset: int
    type: int
    sym: int
    addend: int


class Elf64:
    """A little-endian ELF64 image (the only kind AMDGPU code objects are)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        if len(data) < _EHDR.size:
            raise ElfError(f"a truncated ELF image ({len(data)} bytes): the header needs 64")
        (
            self.ident,
            self.type,
            self.machine,
            _version,
            self.entry,
            phoff,
            shoff,
            self.flags,
            _ehsize,
            phentsize,
            phnum,
            shentsize,
            shnum,
            shstrndx,
        ) = _EHDR.unpack_from(data, 0)
        self.ei_class = self.ident[4]
        self.ei_data = self.ident[5]
        self.osabi = self.ident[7]
        self.abi_version = self.ident[8]
        self.segments: list[Segment] = []
        self.sections: list[Section] = []
        if phnum and phentsize != _PHDR.size:
            raise ElfError(f"e_phentsize {phentsize}, expected {_PHDR.size}")
        if shnum and shentsize != _SHDR.size:
            raise ElfError(f"e_shentsize {shentsize}, expected {_SHDR.size}")
        self._span(phoff, phnum * _PHDR.size, "the program header table")
        self._span(shoff, shnum * _SHDR.size, "the section header table")
        for i in range(phnum):
            t, fl, off, va, _pa, fsz, msz, al = _PHDR.unpack_from(data, phoff + i * _PHDR.size)
            self.segments.append(Segment(t, fl, off, va, fsz, msz, al))
        raw = [_SHDR.unpack_from(data, shoff + i * _SHDR.size) for i in range(shnum)]
        names = b""
        if shnum and shstrndx < shnum:
            s = raw[shstrndx]
            names = self._span(s[4], s[5], "the section name table")
        for nm, t, fl, addr, off, size, link, info, _al, ent in raw:
            self.sections.append(Section(_cstr(names, nm), t, fl, addr, off, size, link, info, ent))

    def _span(self, offset: int, size: int, what: str) -> bytes:
        if offset < 0 or size < 0 or offset + size > len(self.data):
            raise ElfError(
                f"{what} at file offset {offset:#x} (+{size:#x} bytes) lies past the end of "
                f"the {len(self.data)}-byte image"
            )
        return self.data[offset : offset + size]

    def section_bytes(self, s: Section) -> bytes:
        return self._span(s.offset, s.size, f"section {s.name or '?'}")

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)

    def symbols(self, kind: int = SHT_DYNSYM) -> list[Symbol]:
        """The symbols of the first section of type `kind` (.dynsym by default)."""
        tab = next((s for s in self.sections if s.type == kind), None)
        if tab is None:
            return []
        if tab.link >= len(self.sections):
            raise ElfError(f"{tab.name}: sh_link {tab.link} names no section")
        strtab = self.section_bytes(self.sections[tab.link])
        raw = self.section_bytes(tab)
        out = []
        for off in range(0, len(raw) - _SYM.size + 1, _SYM.size):
            nm, info, _other, shndx, value, size = _SYM.unpack_from(raw, off)
            out.append(Symbol(_cstr(strtab, nm), value, size, info & 0xF, info >> 4, shndx))
        return out

    def relocations(self) -> list[tuple[Section, Rela]]:
        """Every RELA entry of the image's SHT_RELA sections, with its section."""
        out = []
        for s in self.sections:
            if s.type != SHT_RELA:
                continue
            raw = self.section_bytes(s)
            for off in range(0, len(raw) - _RELA.size + 1, _RELA.size):
                r_off, info, addend = _RELA.unpack_from(raw, off)
                out.append((s, Rela(r_off, info & 0xFFFFFFFF, info >> 32, addend)))
        return out

    def notes(self) -> list[tuple[str, int, bytes]]:
        """(owner, type, descriptor) of every note in SHT_NOTE sections (4-byte aligned)."""
        out = []
        for s in self.sections:
            if s.type != SHT_NOTE:
                continue
            raw = self.section_bytes(s)
            off = 0
            while off + 12 <= len(raw):
                namesz, descsz, ntype = struct.unpack_from("<III", raw, off)
                off += 12
                name = raw[off : off + namesz].rstrip(b"\x00").decode(errors="replace")
                off += -(-namesz // 4) * 4
                if off + descsz > len(raw):
                    raise ElfError(f"note {name!r} in {s.name} runs past its section")
                out.append((name, ntype, raw[off : off + descsz]))
                off += -(-descsz // 4) * 4
        return out


def _cstr(table: bytes, off: int) -> str:
    if off >= len(table):
        return ""
    end = table.find(b"\x00", off)
    return table[off : end if end >= 0 else len(table)].decode(errors="replace")


def parse_offload_bundle(blob: bytes) -> list[tuple[str, bytes]]:
    """(bundle entry id, code object) of a clang offload bundle (clang-offload-bundler's
    binary format: magic, u64 entry count, then per entry u64 offset, u64 size, u64 id
    length and the id, e.g. "hipv4-amdgcn-amd-amdhsa--gfx90a:xnack-")."""
    if not blob.startswith(OFFLOAD_BUNDLE_MAGIC):
        raise ElfError("not a clang offload bundle")
    pos = len(OFFLOAD_BUNDLE_MAGIC)
    try:
        (count,) = struct.unpack_from("<Q", blob, pos)
        pos += 8
        if count > 4096:
            raise ElfError(f"offload bundle declares {count} entries")
        out = []
        for i in range(count):
            off, size, idlen = struct.unpack_from("<QQQ", blob, pos)
            pos += 24
            ident = blob[pos : pos + idlen].decode(errors="replace")
            pos += idlen
            if off + size > len(blob) or len(ident) != idlen:
                raise ElfError(f"offload bundle entry {i} ({ident!r}) lies past the end")
            out.append((ident, blob[off : off + size]))
    except struct.error:
        raise ElfError("a truncated clang offload bundle header") from None
    return out


def make_offload_bundle(entries: list[tuple[str, bytes]]) -> bytes:
    """A clang offload bundle of `entries` (what hipcc embeds; used to build test inputs)."""
    header = len(OFFLOAD_BUNDLE_MAGIC) + 8 + sum(24 + len(i.encode()) for i, _ in entries)
    out = bytearray(OFFLOAD_BUNDLE_MAGIC + struct.pack("<Q", len(entries)))
    pos = -(-header // 4096) * 4096
    body = bytearray()
    for ident, data in entries:
        out += struct.pack("<QQQ", pos + len(body), len(data), len(ident.encode()))
        out += ident.encode()
        body += data
        body += bytes(-len(body) % 4096)
    return bytes(out.ljust(pos, b"\x00") + body)
