"""Code objects and executables: the loader writes kernel descriptors into device memory.

As ROCr's loader (hsa_executable_load_agent_code_object, hsa_executable_symbol_get_info):
each kernel gets a 64-byte kernel descriptor (code-object v3+) in GPU-visible memory with its
segment sizes, kernarg size, granulated register counts in compute_pgm_rsrc1/2, and
`kernel_code_entry_byte_offset` pointing at its code. `kernel_object` is the descriptor's
address — what a dispatch packet carries and what the CP reads.

Built-in code objects (hw_model.kernels) carry the `amdhsa.kernels` metadata and an entry
token as their code. Real AMDGPU ELF code objects are recognised and refused with a clear
error until the gfx9 ISA interpreter exists.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import TYPE_CHECKING

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
from rocr.errors import HsaError
from rocr.status import Status

if TYPE_CHECKING:
    from rocr.agent import Agent
    from rocr.runtime import Runtime

CODE_ALIGN = 256  # kernel code entry alignment (AMDGPU: 256 bytes)
ELF_MAGIC = b"\x7fELF"


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
    ) -> None:
        self.name = name
        self.kernel_object = kernel_object
        self.kernarg_size = kernarg_size
        self.kernarg_alignment = 16
        self.group_segment_size = group_segment_size
        self.private_segment_size = private_segment_size
        self.args = args
        self.vgprs = vgprs
        self.sgprs = sgprs

    def __repr__(self) -> str:
        sig = ", ".join(f"{a.name}: {a.type}" for a in self.args)
        return f"KernelSymbol({self.name}({sig}), kernel_object={self.kernel_object:#x})"

    def pack_args(self, *values: object) -> bytes:
        """Kernarg bytes for `values`, by the declared layout (buffers pack as addresses)."""
        try:
            return pack_args(self.args, self.kernarg_size, tuple(values))
        except (TypeError, struct.error) as e:
            raise HsaError(Status.ERROR_INVALID_ARGUMENT, f"{self.name}: {e}") from None

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
        }


class Executable:
    def __init__(
        self, rt: Runtime, agent: Agent, symbols: dict[str, KernelSymbol], allocation
    ) -> None:
        self.rt = rt
        self.agent = agent
        self.symbols = symbols
        self._alloc = allocation

    def kernel(self, name: str) -> KernelSymbol:
        """hsa_executable_get_symbol_by_name (the ".kd" suffix is optional)."""
        sym = self.symbols.get(name.removesuffix(".kd"))
        if sym is None:
            raise HsaError(
                Status.ERROR_INVALID_SYMBOL_NAME,
                f"no kernel {name!r} in this executable; it has {', '.join(sorted(self.symbols))}",
            )
        return sym

    def __repr__(self) -> str:
        return f"Executable({', '.join(self.symbols)})"


def read_code_object(source: str | bytes | Path) -> bytes:
    if isinstance(source, bytes):
        return source
    s = str(source)
    if s.startswith("builtin:") or s == "builtin":
        names = [n for n in s.partition(":")[2].split(",") if n]
        unknown = [n for n in names if n not in BUILTINS]
        if unknown:
            raise HsaError(
                Status.ERROR_INVALID_CODE_OBJECT,
                f"no built-in kernel {unknown[0]!r}; built-ins: {', '.join(sorted(BUILTINS))}",
            )
        return builtin_code_object(names or None)
    try:
        return Path(s).read_bytes()
    except OSError as e:
        raise HsaError(Status.ERROR_INVALID_FILE, f"cannot read code object {s!r}: {e}") from None


def load(rt: Runtime, agent: Agent, source: str | bytes | Path) -> Executable:
    blob = read_code_object(source)
    if blob.startswith(ELF_MAGIC):
        raise HsaError(
            Status.ERROR_INVALID_CODE_OBJECT,
            "this is an AMDGPU ELF code object; running compiled machine code needs "
            "the gfx9 ISA interpreter, which hsaemu does not have yet. Use a "
            "built-in kernel ('builtin:square', ...) for now",
        )
    if not blob.startswith(CODE_OBJECT_MAGIC):
        raise HsaError(
            Status.ERROR_INVALID_CODE_OBJECT,
            "not a code object (neither an ELF nor an hsaemu built-in code object)",
        )
    try:
        meta = decode_code_object(blob)
        kernels = meta["amdhsa.kernels"]
    except (ValueError, KeyError) as e:
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
    alloc = rt.thunk.alloc_memory(0, max(size, 4096), executable=True)
    rt.thunk.map_memory_to_gpu(alloc.address, [agent.node])
    symbols: dict[str, KernelSymbol] = {}
    for i, k in enumerate(kernels):
        name = k[".name"]
        spec = BUILTINS.get(name)
        if spec is None:
            raise HsaError(
                Status.ERROR_INVALID_CODE_OBJECT,
                f"code object kernel {name!r} has no built-in implementation",
            )
        kd_off = i * stride
        code_off = code_base + i * CODE_ALIGN
        kd_va = alloc.address + kd_off
        code_va = alloc.address + code_off
        vgprs, sgprs = int(k[".vgpr_count"]), int(k[".sgpr_count"])
        kd = KernelDescriptor(
            group_segment_fixed_size=int(k[".group_segment_fixed_size"]),
            private_segment_fixed_size=int(k[".private_segment_fixed_size"]),
            kernarg_size=int(k[".kernarg_segment_size"]),
            kernel_code_entry_byte_offset=code_va - kd_va,
            compute_pgm_rsrc1=make_rsrc1(vgprs=vgprs, vgpr_granule=granule, sgprs=sgprs),
            compute_pgm_rsrc2=make_rsrc2(
                user_sgpr_count=2 + 2 * (k[".kernarg_segment_size"] > 0),
                enable_sgpr_workgroup_id_y=1,
                enable_sgpr_workgroup_id_z=1,
            ),
            kernel_code_properties=make_kernel_code_properties(
                enable_sgpr_dispatch_ptr=1,
                enable_sgpr_kernarg_segment_ptr=int(k[".kernarg_segment_size"] > 0),
            ),
        )
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
        )
    return Executable(rt, agent, symbols, alloc)
