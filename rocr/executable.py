"""Code objects and executables: the loader writes kernel descriptors into device memory.

As ROCr's loader (hsa_executable_load_agent_code_object, hsa_executable_symbol_get_info):
each kernel gets a 64-byte kernel descriptor (code-object v3+) in GPU-visible memory with its
segment sizes, kernarg size, granulated register counts in compute_pgm_rsrc1/2, and
`kernel_code_entry_byte_offset` pointing at its code. `kernel_object` is the descriptor's
address — what a dispatch packet carries and what the CP reads.

Built-in code objects (hw_model.kernels) carry the `amdhsa.kernels` metadata and an entry
token as their code. AMDGPU ELF code objects (and clang offload bundles holding them) are
loaded by rocr.loader as ROCr's loader does: segments, relocations, descriptors at their
`name.kd` symbols; the GPU's ISA interpreter runs their machine code (docs/isa.md).
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

from hw_model import kernels
from hw_model.kernels import (
    BUILTINS,
    CODE_OBJECT_MAGIC,
    KernelArg,
    builtin_code_object,
    decode_code_object,
    pack_args,
)
from hw_model.structs import (
    KERNEL_DESCRIPTOR_SIZE,
    VGPR_ENCODING_GRANULE_GFX9,
    VGPR_ENCODING_GRANULE_GFX90A,
    KernelDescriptor,
    make_kernel_code_properties,
    make_rsrc1,
    make_rsrc2,
)
from rocr.elf import OFFLOAD_BUNDLE_MAGIC
from rocr.errors import HsaError
from rocr.loader import CodeObject, KernelInfo, fill_hidden, hidden_values, load_elf
from rocr.memory import BufferBase
from rocr.status import Status
from rocr.validate import as_bytes, as_int, as_real, as_u64, show

if TYPE_CHECKING:
    from rocr.agent import Agent
    from rocr.runtime import Runtime

CODE_ALIGN = 256  # kernel code entry alignment (AMDGPU: 256 bytes)
ELF_MAGIC = b"\x7fELF"
EM_AMDGPU = 224  # ELF e_machine of AMDGPU code objects (LLVM AMDGPUUsage, elf.h)
# e_machine values a user is likely to hand over by mistake (elf.h)
_ELF_MACHINES = {
    3: "EM_386 (x86)",
    8: "EM_MIPS",
    20: "EM_PPC",
    21: "EM_PPC64",
    40: "EM_ARM",
    62: "EM_X86_64 (x86-64)",
    183: "EM_AARCH64 (ARM64)",
    190: "EM_CUDA (NVIDIA)",
    243: "EM_RISCV",
    247: "EM_BPF",
}
# The GPUVM aperture starts at gpuvm_base = one page (AMDKFD_IOC_GET_PROCESS_APERTURES_NEW
# here); nothing is ever mapped below it, so a nonzero pointer there is not an address.
NULL_PAGE_END = 0x1000
_INT_RANGES = {
    "u8": (0, 0xFF),
    "i8": (-(1 << 7), (1 << 7) - 1),
    "u16": (0, 0xFFFF),
    "i16": (-(1 << 15), (1 << 15) - 1),
    "u32": (0, 0xFFFF_FFFF),
    "i32": (-(1 << 31), (1 << 31) - 1),
    "u64": (0, 0xFFFF_FFFF_FFFF_FFFF),
    "i64": (-(1 << 63), (1 << 63) - 1),
}


class KernelSymbol:
    """hsa_executable_symbol_t of a kernel."""

    def __init__(
        self,
        name: str,
        kernel_object: int,
        kernarg_size: int,
        group_segment_size: int,
        private_segment_size: int,
        args: tuple[KernelArg, ...],
        vgprs: int,
        sgprs: int,
        *,
        rt: Runtime | None = None,
        agent: Agent | None = None,
        info: KernelInfo | None = None,
        code_object_version: int | None = None,
    ) -> None:
        self.rt = rt  # the runtime whose loader made it (None for a remote symbol)
        self.agent = agent  # the agent its code object was loaded for
        self.name = name
        self.kernel_object = kernel_object
        self.kernarg_size = kernarg_size
        self.kernarg_alignment = 16
        self.group_segment_size = group_segment_size
        self.private_segment_size = private_segment_size
        self.args = args
        self.vgprs = vgprs
        self.sgprs = sgprs
        # Compiled kernels: the metadata and descriptor the loader read (None for built-ins).
        self.code = info
        self.code_object_version = code_object_version
        self.hidden_args = info.hidden_args if info is not None else ()
        if info is not None:
            self.kernarg_alignment = max(16, info.kernarg_align)

    def __repr__(self) -> str:
        sig = ", ".join(f"{a.name}: {a.type}" for a in self.args)
        return f"KernelSymbol({self.name}({sig}), kernel_object={self.kernel_object:#x})"

    @property
    def signature(self) -> str:
        """`name(arg: type, ...)`, as the code object metadata declares it."""
        return f"{self.name}({', '.join(f'{a.name}: {a.type}' for a in self.args)})"

    def check_args(self, values: object, rt: object = None) -> tuple[int | float, ...]:
        """`values` checked against the declared arguments, buffers turned into addresses.

        A wrong count, a value of the wrong kind or out of its C type's range is an HsaError
        (HSA_STATUS_ERROR_INVALID_ARGUMENT) naming the argument by its metadata name and
        position: a mix-up of argument order is caught where the kinds differ (a buffer where
        a count goes, a small count where a pointer goes). `rt`: buffers must belong to it.
        """
        if type(values) is tuple and not values and not self.args:
            return ()  # no arguments for a kernel that takes none: nothing to look at
        if isinstance(values, str | bytes | bytearray) or not isinstance(values, Sequence):
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT,
                f"args must be a tuple of the kernel's arguments, got {show(values)}: "
                f"{self.signature}",
            )
        if len(values) != len(self.args):
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT,
                f"{self.name} takes {len(self.args)} argument"
                f"{'' if len(self.args) == 1 else 's'}, got {len(values)}: "
                f"{self.signature}",
            )
        out = []
        for i, (a, v) in enumerate(zip(self.args, values, strict=True)):
            try:
                out.append(_arg_value(a, v, f"argument {i} {a.name!r} ({a.type})", rt))
            except HsaError as e:
                raise HsaError(e.status, f"{e.message}. The kernel is {self.signature}") from None
        return tuple(out)

    def pack_args(
        self,
        *values: object,
        grid: object = None,
        workgroup: object = None,
        queue_ptr: int = 0,
        dynamic_lds: int = 0,
    ) -> bytes:
        """Kernarg bytes for `values`, by the declared layout (buffers pack as addresses).

        A compiled kernel's hidden arguments (block counts, group sizes, remainders, grid
        dims, queue pointer, ...) depend on the dispatch: pass `grid` and `workgroup` (ints
        or 3-tuples) to fill them as the runtime does; without them they stay 0."""
        checked = self.check_args(values, self.rt)
        try:
            data = pack_args(self.args, self.kernarg_size, checked)
        except (TypeError, ValueError, OverflowError, struct.error) as e:
            raise HsaError(Status.ERROR_INVALID_ARGUMENT, f"{self.signature}: {e}") from None
        if not self.hidden_args or grid is None:
            return data
        g3, w3, dims = _geometry(grid, workgroup if workgroup is not None else 64)
        buf = bytearray(data)
        fill_hidden(
            buf,
            self.hidden_args,
            hidden_values(g3, w3, dims, queue_ptr=queue_ptr, dynamic_lds=dynamic_lds),
        )
        return bytes(buf)

    def info(self) -> dict:
        return {
            "name": self.name,
            "kernel_object": self.kernel_object,
            "kernarg_segment_size": self.kernarg_size,
            "kernarg_segment_alignment": self.kernarg_alignment,
            "group_segment_size": self.group_segment_size,
            "private_segment_size": self.private_segment_size,
            "vgpr_count": self.vgprs,
            "sgpr_count": self.sgprs,
            "args": [a.model_dump() for a in self.args],
            **(
                {
                    "hidden_args": [a.model_dump() for a in self.hidden_args],
                    "code_object_version": self.code_object_version,
                    "wavefront_size": self.code.wavefront_size,
                    "max_flat_workgroup_size": self.code.max_flat_workgroup_size,
                }
                if self.code is not None
                else {}
            ),
        }


class Executable:
    def __init__(
        self, rt: Runtime, agent: Agent, symbols: dict[str, KernelSymbol], allocation
    ) -> None:
        self.rt = rt
        self.agent = agent
        self.symbols = symbols
        self._alloc = allocation
        self.code_object: CodeObject | None = None  # the parsed ELF (None for built-ins)
        self.load_base = allocation.address  # where the code object's VA 0 was loaded

    def kernel(self, name: str) -> KernelSymbol:
        """hsa_executable_get_symbol_by_name (the ".kd" suffix is optional)."""
        if not isinstance(name, str):
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT,
                f"symbol name must be a str, got {show(name)} ({type(name).__name__})",
            )
        sym = self.symbols.get(name.removesuffix(".kd"))
        if sym is None:
            raise HsaError(
                Status.ERROR_INVALID_SYMBOL_NAME,
                f"no kernel {name!r} in this executable; it has {', '.join(sorted(self.symbols))}",
            )
        return sym

    def kernel_at(self, kernel_object: int) -> KernelSymbol | None:
        """The kernel whose descriptor is at `kernel_object` (what a queue error names)."""
        return next((k for k in self.symbols.values() if k.kernel_object == kernel_object), None)

    def __repr__(self) -> str:
        return f"Executable({', '.join(self.symbols)})"


def _arg_value(a: KernelArg, v: object, what: str, rt: object) -> int | float:
    """One kernel argument as the int or float its C type packs."""
    is_buffer = isinstance(v, BufferBase)
    if is_buffer:
        if getattr(v, "rt", None) is not None and rt is not None and v.rt is not rt:
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT,
                f"{what} is {v!r}, a buffer of another runtime: its address means nothing "
                "in this process",
            )
        v._check()
    if a.type == "ptr":
        if v is None:
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT,
                f"{what} must be a buffer or an address, got None (pass 0 for a NULL pointer)",
            )
        addr_of = getattr(v, "address", None)
        if addr_of is not None and not isinstance(v, int):
            return as_u64(addr_of, f"{what}: address of {show(v)}")
        if isinstance(v, float | str | bytes) or not hasattr(v, "__index__"):
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT,
                f"{what} must be a buffer or an address (int), got {show(v)} ({type(v).__name__})",
            )
        addr = as_u64(v, what, why="a pointer is a 64-bit address")
        if 0 < addr < NULL_PAGE_END:
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT,
                f"{what} = {addr} is not an address: nothing is mapped below "
                f"{NULL_PAGE_END:#x} (the GPUVM aperture's base). Is a count in the place of "
                "a pointer (arguments in the wrong order?)",
            )
        return addr
    if is_buffer or (hasattr(v, "address") and not hasattr(v, "__index__")):
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"{what} takes a value of type {a.type}, got {show(v)}. Is a buffer in the place of "
            f"{a.name!r} (arguments in the wrong order?)",
        )
    if a.type in _INT_RANGES:
        lo, hi = _INT_RANGES[a.type]
        return as_int(v, what, lo, hi, why=f"a {a.type}")
    if a.type == "bytes":
        raw = as_bytes(v, what)
        if len(raw) != a.size:
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT,
                f"{what} is passed by value as {a.size} bytes, got {len(raw)} bytes",
            )
        return raw  # type: ignore[return-value]
    return as_real(v, what, f32=a.type in ("f32", "f16"))


def _geometry(grid: object, workgroup: object) -> tuple[tuple, tuple, int]:
    """(grid, workgroup, dims) as 3-tuples from ints or 1- to 3-tuples."""

    def three(v: object, what: str) -> tuple[int, int, int]:
        t = tuple(v) if isinstance(v, tuple | list) else (v,)
        if not 1 <= len(t) <= 3:
            raise HsaError(Status.ERROR_INVALID_ARGUMENT, f"{what} must have 1 to 3 dimensions")
        vals = [as_int(x, what, 1, 0xFFFF_FFFF) for x in t]
        return (*vals, *[1] * (3 - len(vals)))  # type: ignore[return-value]

    g3 = three(grid, "grid")
    dims = len(grid) if isinstance(grid, tuple | list) else 1
    return g3, three(workgroup, "workgroup"), dims


# Built-in code objects by the names asked for, with the kernel specs they were made from: a
# served system loads `builtin:square` on every hsa_init, and encoding one costs ~30 us. A
# kernel registered again under a known name makes a new spec, so a new blob.
_BUILTIN_BLOBS: dict[tuple[str, ...], tuple[tuple[object, ...], bytes]] = {}


def _builtin_blob(names: tuple[str, ...]) -> bytes:
    specs = tuple(BUILTINS[n] for n in (names or kernels.DEFAULT_BUILTINS))
    hit = _BUILTIN_BLOBS.get(names)
    if hit is not None and len(hit[0]) == len(specs) and all(map(operator.is_, hit[0], specs)):
        return hit[1]
    blob = builtin_code_object(list(names) or None)
    if len(_BUILTIN_BLOBS) >= 256:
        _BUILTIN_BLOBS.clear()
    _BUILTIN_BLOBS[names] = (specs, blob)
    return blob


def read_code_object(source: object) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        return as_bytes(source, "code object")
    if not isinstance(source, str | PathLike):
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            "source must be 'builtin', 'builtin:<name>,...', a path, or the code object's "
            f"bytes (bytes, bytearray, memoryview), got {show(source)} "
            f"({type(source).__name__})",
        )
    s = str(source)
    if s.startswith("builtin:") or s == "builtin":
        names = [n for n in s.partition(":")[2].split(",") if n]
        unknown = [n for n in names if n not in BUILTINS]
        if unknown:
            raise HsaError(
                Status.ERROR_INVALID_CODE_OBJECT,
                f"no built-in kernel {unknown[0]!r}; built-ins: {', '.join(sorted(BUILTINS))}",
            )
        return _builtin_blob(tuple(names))
    try:
        return Path(s).read_bytes()
    except (OSError, ValueError) as e:
        raise HsaError(Status.ERROR_INVALID_FILE, f"cannot read code object {s!r}: {e}") from None


def elf_machine(blob: bytes) -> int | None:
    """e_machine of an ELF image (Elf32/Elf64_Ehdr: offset 18, in the byte order of
    e_ident[EI_DATA]), or None when the header is cut short."""
    if len(blob) < 20:
        return None
    order = "big" if blob[5] == 2 else "little"  # EI_DATA: ELFDATA2MSB = 2
    return int.from_bytes(blob[18:20], order)


def check_elf(blob: bytes) -> None:
    """Refuse an ELF image, saying what it is: the loader accepts EM_AMDGPU only."""
    machine = elf_machine(blob)
    if machine is None:
        raise HsaError(
            Status.ERROR_INVALID_CODE_OBJECT,
            f"a truncated ELF image ({len(blob)} bytes): not even the ELF header is there",
        )
    if machine != EM_AMDGPU:
        name = _ELF_MACHINES.get(machine, "an unknown machine")
        raise HsaError(
            Status.ERROR_INVALID_CODE_OBJECT,
            f"an ELF for machine {name} (e_machine {machine}), not EM_AMDGPU ({EM_AMDGPU}): "
            "not a GPU code object. Load an AMDGPU code object (hipcc --genco, clang "
            "-target amdgcn-amd-amdhsa) or a built-in ('builtin:square', ...)",
        )


def load(rt: Runtime, agent: Agent, source: object) -> Executable:
    blob = read_code_object(source)
    if blob.startswith(ELF_MAGIC):
        check_elf(blob)
        return load_elf(rt, agent, blob)
    if blob.startswith(OFFLOAD_BUNDLE_MAGIC):
        return load_elf(rt, agent, blob)
    if not blob.startswith(CODE_OBJECT_MAGIC):
        raise HsaError(
            Status.ERROR_INVALID_CODE_OBJECT,
            "not a code object (neither an ELF nor an hsaemu built-in code object)",
        )
    try:
        meta = decode_code_object(blob)
        kernels = list(meta["amdhsa.kernels"])
    except RecursionError:  # JSON nested past the interpreter's recursion limit
        raise HsaError(
            Status.ERROR_INVALID_CODE_OBJECT, "bad code object metadata: nested too deeply"
        ) from None
    except (ValueError, KeyError, TypeError) as e:
        raise HsaError(Status.ERROR_INVALID_CODE_OBJECT, f"bad code object metadata: {e}") from None
    granule = (
        VGPR_ENCODING_GRANULE_GFX90A
        if agent.name in ("gfx90a", "gfx942")
        else VGPR_ENCODING_GRANULE_GFX9
    )
    # One GPU-visible allocation: descriptors (64-byte aligned), then code (256-byte aligned).
    stride = KERNEL_DESCRIPTOR_SIZE
    code_base = -(-len(kernels) * stride // CODE_ALIGN) * CODE_ALIGN
    size = code_base + len(kernels) * CODE_ALIGN
    # Every descriptor is built before anything is allocated: bad metadata leaks nothing.
    parsed = []
    for i, k in enumerate(kernels):
        try:
            name = k[".name"]
            spec = BUILTINS.get(name) if isinstance(name, str) else None
            if spec is None:
                raise HsaError(
                    Status.ERROR_INVALID_CODE_OBJECT,
                    f"code object kernel {show(name)} has no built-in implementation",
                )
            vgprs, sgprs = int(k[".vgpr_count"]), int(k[".sgpr_count"])
            kernarg_size = int(k[".kernarg_segment_size"])
            kd = KernelDescriptor(
                group_segment_fixed_size=int(k[".group_segment_fixed_size"]),
                private_segment_fixed_size=int(k[".private_segment_fixed_size"]),
                kernarg_size=kernarg_size,
                kernel_code_entry_byte_offset=(code_base + i * CODE_ALIGN) - i * stride,
                compute_pgm_rsrc1=make_rsrc1(vgprs=vgprs, vgpr_granule=granule, sgprs=sgprs),
                compute_pgm_rsrc2=make_rsrc2(
                    user_sgpr_count=2 + 2 * (kernarg_size > 0),
                    enable_sgpr_workgroup_id_y=1,
                    enable_sgpr_workgroup_id_z=1,
                ),
                kernel_code_properties=make_kernel_code_properties(
                    enable_sgpr_dispatch_ptr=1,
                    enable_sgpr_kernarg_segment_ptr=int(kernarg_size > 0),
                ),
            )
        except HsaError:
            raise
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise HsaError(
                Status.ERROR_INVALID_CODE_OBJECT,
                f"bad metadata for kernel {i} of the code object: {type(e).__name__}: {e}",
            ) from None
        parsed.append((name, spec, vgprs, sgprs, kd))
    alloc = rt.thunk.alloc_memory(0, max(size, 4096), executable=True)
    rt.thunk.map_memory_to_gpu(alloc.address, [agent.node])
    symbols: dict[str, KernelSymbol] = {}
    for i, (name, spec, vgprs, sgprs, kd) in enumerate(parsed):
        kd_off = i * stride
        code_off = code_base + i * CODE_ALIGN
        kd_va = alloc.address + kd_off
        alloc.mapping.write(kd_off, kd.to_bytes())
        alloc.mapping.write(code_off, spec.entry_token())
        symbols[name] = KernelSymbol(
            name,
            kd_va,
            kd.kernarg_size,
            kd.group_segment_fixed_size,
            kd.private_segment_fixed_size,
            spec.args,
            vgprs,
            sgprs,
            rt=rt,
            agent=agent,
        )
    return Executable(rt, agent, symbols, alloc)
