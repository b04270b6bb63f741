"""The AMDGPU ELF code object loader, as ROCr's (loader/executable.cpp, ExecutableImpl::
LoadCodeObject / LoadSegments / ApplyDynamicRelocations, and isa.cpp's target compatibility).

A code object is read without a runtime (`parse_code_object`: what `hsaemu kernels` shows),
then loaded for an agent (`load_elf`): its target checked against the agent's, its PT_LOAD
segments copied into one GPU-visible allocation that covers the object's whole VA range,
its dynamic relocations applied against the load base, and each kernel published at the
address of its `name.kd` symbol, where the 64-byte kernel descriptor now lies.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack
from pydantic import ConfigDict

from hw_model.kernels import KernelArg
from hw_model.lazy_model import LazyModel
from hw_model.structs import KERNEL_DESCRIPTOR_SIZE, KernelDescriptor
from rocr import elf
from rocr.errors import HsaError
from rocr.status import Status

if TYPE_CHECKING:
    from rocr.agent import Agent
    from rocr.executable import Executable
    from rocr.runtime import Runtime

PAGE = 4096  # GPUVM page: the loader's allocation granule (ROCr rounds segments to pages)

# What each agent's target ID says about its features (ROCr isa.cpp): xnack is off unless
# HSA_XNACK=1 (ROCr's default on Linux); MI250X and MI300X run with SRAM ECC on as shipped;
# gfx900/gfx902 have no SRAM ECC at all (None: the feature is unsupported).
AGENT_FEATURES: dict[str, dict[str, bool | None]] = {
    "gfx900": {"sramecc": None, "xnack": False},
    "gfx902": {"sramecc": None, "xnack": False},
    "gfx90a": {"sramecc": True, "xnack": False},
    "gfx942": {"sramecc": True, "xnack": False},
}

# OpenCL C / HIP scalar type names as the metadata's `.type_name` spells them.
_C_TYPES = {
    "float": "f32",
    "double": "f64",
    "half": "f16",
    "int": "i32",
    "uint": "u32",
    "unsigned int": "u32",
    "long": "i64",
    "ulong": "u64",
    "unsigned long": "u64",
    "size_t": "u64",
    "short": "i16",
    "ushort": "u16",
    "unsigned short": "u16",
    "char": "i8",
    "uchar": "u8",
    "unsigned char": "u8",
    "bool": "u8",
}
_BY_SIZE = {1: "u8", 2: "u16", 4: "u32", 8: "u64"}
_POINTER_KINDS = ("global_buffer", "dynamic_shared_pointer")


class CodeObjectArg(LazyModel, KernelArg):
    """A kernel argument as the code object metadata declares it.

    `type` is the C scalar type the value packs as ("ptr" for buffers, "bytes" for a
    by-value aggregate); `value_kind` the metadata's `.value_kind`, hidden_* kinds included.
    """

    model_config = ConfigDict(frozen=True)
    type: str  # type: ignore[assignment]
    kind: str = "by_value"
    type_name: str | None = None
    address_space: str | None = None

    @property
    def value_kind(self) -> str:  # type: ignore[override]
        return self.kind

    @property
    def hidden(self) -> bool:
        return self.kind.startswith("hidden_")


@dataclass
class KernelInfo:
    """One kernel of a code object: metadata, descriptor and where its code lies."""

    name: str
    symbol: str
    kd_vaddr: int  # the descriptor's address in the code object's VA space
    descriptor: bytes
    kernarg_size: int
    kernarg_align: int
    group_segment_size: int
    private_segment_size: int
    sgprs: int
    vgprs: int
    agprs: int
    max_flat_workgroup_size: int
    wavefront_size: int
    args: tuple[CodeObjectArg, ...]  # explicit arguments, in order
    hidden_args: tuple[CodeObjectArg, ...]
    code_vaddr: int  # the entry point (descriptor address + kernel_code_entry_byte_offset)
    code_size: int  # the size of the function symbol (0 if the object has none)
    uses_dynamic_stack: bool = False

    @property
    def kd(self) -> KernelDescriptor:
        return KernelDescriptor.from_bytes(self.descriptor)


@dataclass
class CodeObject:
    """A parsed AMDGPU code object (not yet loaded)."""

    image: elf.Elf64
    version: int  # code object version: 3, 4 or 5
    processor: str  # gfx900, gfx90a, ...
    xnack: bool | None  # None: any (or unsupported)
    sramecc: bool | None
    metadata: dict[str, Any]
    kernels: list[KernelInfo] = field(default_factory=list)
    image_size: int = 0  # bytes of VA range the PT_LOAD segments span

    @property
    def target(self) -> str:
        """The target ID (LLVM AMDGPUUsage "Target ID"), e.g. gfx90a:sramecc+:xnack-."""
        return target_id(self.processor, {"sramecc": self.sramecc, "xnack": self.xnack})

    def kernel(self, name: str) -> KernelInfo | None:
        name = name.removesuffix(".kd")
        return next((k for k in self.kernels if k.name == name), None)

    def read_va(self, vaddr: int, size: int) -> bytes:
        """Bytes of the loaded image at `vaddr` (zeros where a segment's memsz > filesz)."""
        for s in self.image.segments:
            if s.type == elf.PT_LOAD and s.vaddr <= vaddr and vaddr + size <= s.vaddr + s.memsz:
                rel = vaddr - s.vaddr
                data = self.image.data[s.offset : s.offset + s.filesz][rel : rel + size]
                return data.ljust(size, b"\x00")
        raise HsaError(
            Status.ERROR_INVALID_CODE_OBJECT,
            f"address {vaddr:#x} (+{size} bytes) lies in no PT_LOAD segment of the code object",
        )


def target_id(processor: str, features: dict[str, bool | None]) -> str:
    out = processor
    for name in ("sramecc", "xnack"):  # target ID features are in alphabetical order
        v = features.get(name)
        if v is not None:
            out += f":{name}{'+' if v else '-'}"
    return out


def agent_target(agent_name: str) -> str:
    return target_id(agent_name, AGENT_FEATURES.get(agent_name, {}))


def _bad(msg: str) -> HsaError:
    return HsaError(Status.ERROR_INVALID_CODE_OBJECT, msg)


def _feature(flags: int, version: int, which: str) -> bool | None:
    if version == 3:
        bit = (
            elf.EF_AMDGPU_FEATURE_XNACK_V3 if which == "xnack" else elf.EF_AMDGPU_FEATURE_SRAMECC_V3
        )
        return True if flags & bit else None
    mask = elf.EF_AMDGPU_FEATURE_XNACK_V4 if which == "xnack" else elf.EF_AMDGPU_FEATURE_SRAMECC_V4
    v = (flags & mask) >> (8 if which == "xnack" else 10)
    return {0: None, 1: None, 2: False, 3: True}[v]  # unsupported, any, off, on


def _arg_type(a: dict, kind: str, size: int) -> str:
    if kind in _POINTER_KINDS:
        return "ptr"
    tn = str(a.get(".type_name", "")).strip()
    if tn.endswith("*"):
        return "ptr"
    t = _C_TYPES.get(tn.removeprefix("const ").strip())
    if t is not None and int(t[1:]) // 8 == size:  # "i16" is 2 bytes: trust the size
        return t
    return _BY_SIZE.get(size, "bytes")


def parse_code_object(blob: bytes) -> CodeObject:
    """Read an AMDGPU ELF code object: header, target, metadata note and kernels.

    Every problem is an HsaError HSA_STATUS_ERROR_INVALID_CODE_OBJECT saying what is wrong.
    """
    try:
        img = elf.Elf64(blob)
    except elf.ElfError as e:
        raise _bad(f"a malformed AMDGPU ELF code object: {e}") from None
    if img.ei_class != elf.ELFCLASS64 or img.ei_data != elf.ELFDATA2LSB:
        raise _bad(
            f"an AMDGPU ELF code object must be ELFCLASS64 little-endian; this one has "
            f"EI_CLASS {img.ei_class}, EI_DATA {img.ei_data}"
        )
    if img.osabi != elf.ELFOSABI_AMDGPU_HSA:
        raise _bad(
            f"an AMDGPU ELF code object with EI_OSABI {img.osabi}, not ELFOSABI_AMDGPU_HSA "
            f"({elf.ELFOSABI_AMDGPU_HSA}): not built for the HSA runtime (clang -target "
            "amdgcn-amd-amdhsa)"
        )
    version = elf.CODE_OBJECT_VERSIONS.get(img.abi_version)
    if version is None:
        raise _bad(
            f"an AMDGPU ELF code object with EI_ABIVERSION {img.abi_version}: code object "
            "versions 3, 4 and 5 (EI_ABIVERSION 1, 2, 3) load; rebuild with "
            "-mcode-object-version=4 or 5"
        )
    if img.type != elf.ET_DYN:
        raise _bad(
            f"an AMDGPU ELF code object of e_type {img.type}, not ET_DYN: a relocatable object "
            "(clang -c output) must be linked first (ld.lld -shared k.o -o k.hsaco)"
        )
    mach = img.flags & elf.EF_AMDGPU_MACH
    processor = elf.MACH_NAMES.get(mach, f"EF_AMDGPU_MACH {mach:#x}")
    meta: dict[str, Any] | None = None
    for owner, ntype, desc in _notes(img):
        if owner == "AMDGPU" and ntype == elf.NT_AMDGPU_METADATA:
            try:
                meta = msgpack.unpackb(desc, raw=False, strict_map_key=False)
            except (ValueError, msgpack.UnpackException) as e:
                raise _bad(f"the NT_AMDGPU_METADATA note is not valid msgpack: {e}") from None
    if not isinstance(meta, dict):
        raise _bad("the code object has no NT_AMDGPU_METADATA note (amdhsa.kernels)")
    co = CodeObject(
        image=img,
        version=version,
        processor=processor,
        xnack=_feature(img.flags, version, "xnack"),
        sramecc=_feature(img.flags, version, "sramecc"),
        metadata=meta,
    )
    loads = [s for s in img.segments if s.type == elf.PT_LOAD]
    if not loads:
        raise _bad("the code object has no PT_LOAD segment")
    for s in loads:
        if s.offset + s.filesz > len(blob) or s.filesz > s.memsz:
            raise _bad(f"PT_LOAD segment at {s.vaddr:#x} lies past the end of the image")
    co.image_size = max(s.vaddr + s.memsz for s in loads)
    if co.image_size > 1 << 32:
        raise _bad(f"the code object's segments span {co.image_size:#x} bytes")
    try:
        syms = {s.name: s for s in img.symbols(elf.SHT_DYNSYM) + img.symbols(elf.SHT_SYMTAB)}
    except elf.ElfError as e:
        raise _bad(f"a malformed AMDGPU ELF code object: {e}") from None
    kernels = meta.get("amdhsa.kernels", [])
    if not isinstance(kernels, list):
        raise _bad("metadata amdhsa.kernels is not a list")
    for i, k in enumerate(kernels):
        try:
            co.kernels.append(_kernel(co, k, syms))
        except HsaError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise _bad(f"bad metadata for kernel {i}: {type(e).__name__}: {e}") from None
    return co


def _notes(img: elf.Elf64) -> list[tuple[str, int, bytes]]:
    try:
        return img.notes()
    except elf.ElfError as e:
        raise _bad(f"a malformed AMDGPU ELF code object: {e}") from None


def _kernel(co: CodeObject, k: dict, syms: dict[str, elf.Symbol]) -> KernelInfo:
    name = str(k[".name"])
    symbol = str(k.get(".symbol", name + ".kd"))
    kd_sym = syms.get(symbol)
    if kd_sym is None or kd_sym.shndx == elf.SHN_UNDEF:
        raise _bad(f"kernel {name!r}: its descriptor symbol {symbol!r} is not defined")
    if kd_sym.value % 64:
        raise _bad(f"kernel {name!r}: descriptor {symbol} at {kd_sym.value:#x} is not 64-aligned")
    desc = co.read_va(kd_sym.value, KERNEL_DESCRIPTOR_SIZE)
    kd = KernelDescriptor.from_bytes(desc)
    explicit, hidden = [], []
    for j, a in enumerate(k.get(".args", [])):
        kind = str(a[".value_kind"])
        size, offset = int(a[".size"]), int(a[".offset"])
        arg = CodeObjectArg(
            name=str(a.get(".name", f"arg{j}")) if not kind.startswith("hidden_") else kind,
            type=_arg_type(a, kind, size),
            offset=offset,
            size=size,
            kind=kind,
            type_name=a.get(".type_name"),
            address_space=a.get(".address_space"),
        )
        (hidden if arg.hidden else explicit).append(arg)
    code_sym = syms.get(name)
    return KernelInfo(
        name=name,
        symbol=symbol,
        kd_vaddr=kd_sym.value,
        descriptor=desc,
        kernarg_size=int(k[".kernarg_segment_size"]),
        kernarg_align=int(k.get(".kernarg_segment_align", 8)),
        group_segment_size=int(k[".group_segment_fixed_size"]),
        private_segment_size=int(k[".private_segment_fixed_size"]),
        sgprs=int(k[".sgpr_count"]),
        vgprs=int(k[".vgpr_count"]),
        agprs=int(k.get(".agpr_count", 0)),
        max_flat_workgroup_size=int(k.get(".max_flat_workgroup_size", 1024)),
        wavefront_size=int(k.get(".wavefront_size", 64)),
        args=tuple(explicit),
        hidden_args=tuple(hidden),
        code_vaddr=kd_sym.value + kd.kernel_code_entry_byte_offset,
        code_size=code_sym.size if code_sym is not None else 0,
        uses_dynamic_stack=bool(k.get(".uses_dynamic_stack", False)),
    )


def unbundle(blob: bytes, agent_name: str) -> bytes:
    """The code object for `agent_name` from a clang offload bundle (hipcc's fat binary):
    the entry whose target ID is the agent's, or the most general compatible one."""
    try:
        entries = elf.parse_offload_bundle(blob)
    except elf.ElfError as e:
        raise _bad(f"a malformed clang offload bundle: {e}") from None
    want = AGENT_FEATURES.get(agent_name, {})
    found = []
    for ident, data in entries:
        # "hipv4-amdgcn-amd-amdhsa--gfx90a:sramecc+:xnack-" (kind-triple-target ID)
        if "amdgcn-amd-amdhsa" not in ident:
            continue
        tid = ident.split("--", 1)[1] if "--" in ident else ident.rsplit("-", 1)[-1]
        proc, *feats = tid.split(":")
        if proc != agent_name:
            continue
        ok = all(want.get(f[:-1]) is not None and want.get(f[:-1]) == (f[-1] == "+") for f in feats)
        if ok:
            found.append((len(feats), data))
    if not found:
        targets = ", ".join(i for i, _ in entries) or "none"
        raise HsaError(
            Status.ERROR_INCOMPATIBLE_ARGUMENTS,
            f"the offload bundle has no code object for the agent's target "
            f"{agent_target(agent_name)}; it holds: {targets}",
        )
    return max(found, key=lambda t: t[0])[1]


def check_target(co: CodeObject, agent_name: str) -> None:
    """ROCr's IsaSupportedByAgent: same processor; a feature the code object pins (+/-)
    must be the agent's setting; "any" matches either."""
    want = AGENT_FEATURES.get(agent_name, {})
    ok = co.processor == agent_name and all(
        v is None or want.get(f) == v for f, v in (("xnack", co.xnack), ("sramecc", co.sramecc))
    )
    if not ok:
        # ROCr ExecutableImpl::LoadCodeObject: "code object's ISA (...) is not supported by
        # the agent" -> HSA_STATUS_ERROR_INCOMPATIBLE_ARGUMENTS.
        raise HsaError(
            Status.ERROR_INCOMPATIBLE_ARGUMENTS,
            f"code object's ISA (amdgcn-amd-amdhsa--{co.target}) is not supported by the "
            f"agent ({agent_target(agent_name)}): rebuild with -mcpu={agent_name} or load it "
            "on a GPU of its target",
        )


def load_elf(rt: Runtime, agent: Agent, blob: bytes) -> Executable:
    """Load an AMDGPU ELF code object (or an offload bundle holding one) for `agent`."""
    from rocr.executable import Executable, KernelSymbol

    if blob.startswith(elf.OFFLOAD_BUNDLE_MAGIC):
        blob = unbundle(blob, agent.name)
    co = parse_code_object(blob)
    check_target(co, agent.name)
    relocs = _relocations(co)
    size = -(-co.image_size // PAGE) * PAGE
    alloc = rt.thunk.alloc_memory(0, size, executable=True)
    rt.thunk.map_memory_to_gpu(alloc.address, [agent.node])
    base = alloc.address
    image = bytearray(size)
    for s in co.image.segments:
        if s.type == elf.PT_LOAD:
            image[s.vaddr : s.vaddr + s.filesz] = co.image.data[s.offset : s.offset + s.filesz]
    for off, fmt, value in _apply(relocs, base):
        struct.pack_into(fmt, image, off, value)
    alloc.mapping.write(0, bytes(image))
    symbols: dict[str, KernelSymbol] = {}
    for k in co.kernels:
        symbols[k.name] = KernelSymbol(
            k.name,
            base + k.kd_vaddr,
            k.kernarg_size,
            k.group_segment_size,
            k.private_segment_size,
            k.args,
            k.vgprs,
            k.sgprs,
            rt=rt,
            agent=agent,
            info=k,
            code_object_version=co.version,
        )
    exe = Executable(rt, agent, symbols, alloc)
    exe.code_object = co
    exe.load_base = base
    return exe


def _relocations(co: CodeObject) -> list[tuple[int, int, int, int]]:
    """(offset, type, symbol value or -1, addend) of every dynamic relocation, checked."""
    try:
        dynsyms = co.image.symbols(elf.SHT_DYNSYM)
        rels = co.image.relocations()
    except elf.ElfError as e:
        raise _bad(f"a malformed AMDGPU ELF code object: {e}") from None
    out = []
    for _sec, r in rels:
        if r.type == elf.R_AMDGPU_NONE:
            continue
        width = 8 if r.type in (elf.R_AMDGPU_ABS64, elf.R_AMDGPU_RELATIVE64) else 4
        if r.type not in (
            elf.R_AMDGPU_RELATIVE64,
            elf.R_AMDGPU_ABS64,
            elf.R_AMDGPU_ABS32,
            elf.R_AMDGPU_ABS32_LO,
            elf.R_AMDGPU_ABS32_HI,
        ):
            name = elf.RELOC_NAMES.get(r.type, f"type {r.type}")
            raise _bad(f"dynamic relocation {name} at {r.offset:#x} is not one a loader applies")
        if r.offset + width > co.image_size:
            raise _bad(f"relocation at {r.offset:#x} lies outside the loaded image")
        value = -1
        if r.type != elf.R_AMDGPU_RELATIVE64:
            if r.sym >= len(dynsyms) or dynsyms[r.sym].shndx == elf.SHN_UNDEF:
                sname = dynsyms[r.sym].name if r.sym < len(dynsyms) else f"#{r.sym}"
                # ROCr: an executable with an undefined external is not loadable.
                raise HsaError(
                    Status.ERROR_VARIABLE_UNDEFINED,
                    f"relocation at {r.offset:#x} refers to undefined symbol {sname!r}",
                )
            value = dynsyms[r.sym].value
        out.append((r.offset, r.type, value, r.addend))
    return out


def _apply(relocs: list[tuple[int, int, int, int]], base: int) -> list[tuple[int, str, int]]:
    out = []
    for off, rtype, sym, addend in relocs:
        if rtype == elf.R_AMDGPU_RELATIVE64:  # B + A
            out.append((off, "<Q", (base + addend) & (2**64 - 1)))
            continue
        v = (base + sym + addend) & (2**64 - 1)  # S + A, S the symbol's loaded address
        if rtype == elf.R_AMDGPU_ABS64:
            out.append((off, "<Q", v))
        elif rtype == elf.R_AMDGPU_ABS32_HI:
            out.append((off, "<I", v >> 32))
        else:
            out.append((off, "<I", v & 0xFFFFFFFF))
    return out


def hidden_values(
    grid: tuple[int, int, int],
    workgroup: tuple[int, int, int],
    dims: int,
    *,
    queue_ptr: int = 0,
    dynamic_lds: int = 0,
    private_base: int = 0,
    shared_base: int = 0,
) -> dict[str, int]:
    """The values the runtime writes into the hidden kernel arguments of one dispatch, by
    value kind (CLR rocvirtual.cpp, VirtualGPU::submitKernelInternal, as for HIP and
    OpenCL; AMDGPUUsage "Code Object V5 Metadata" hidden arguments). Kinds not listed get 0:
    the printf/hostcall buffers, default queue, completion action, multigrid sync and heap
    pointers are services hsaemu does not provide, and a NULL tells device code so."""
    out = {"hidden_grid_dims": dims, "hidden_queue_ptr": queue_ptr}
    for i, axis in enumerate("xyz"):
        out[f"hidden_global_offset_{axis}"] = 0  # HSA dispatches have no global offset
        # CLR: block count is the number of whole workgroups; the remainder is the size of
        # the partial one at the grid's edge (0 when the grid divides evenly).
        out[f"hidden_block_count_{axis}"] = grid[i] // workgroup[i]
        out[f"hidden_group_size_{axis}"] = workgroup[i]
        out[f"hidden_remainder_{axis}"] = grid[i] % workgroup[i]
    out["hidden_dynamic_lds_size"] = dynamic_lds
    out["hidden_private_base"] = private_base
    out["hidden_shared_base"] = shared_base
    return out


def fill_hidden(buf: bytearray, hidden: tuple[CodeObjectArg, ...], values: dict[str, int]) -> None:
    """Write each hidden argument's value, little-endian in its declared size."""
    for a in hidden:
        v = values.get(a.kind, 0) & ((1 << (8 * a.size)) - 1)
        buf[a.offset : a.offset + a.size] = v.to_bytes(a.size, "little")
