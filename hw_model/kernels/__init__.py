"""Built-in kernels (data, as a compiler would emit them) and their registry."""

from hw_model.kernels.base import (
    CODE_OBJECT_MAGIC,
    ENTRY_TOKEN_SIZE,
    CostProfile,
    GridContext,
    KernelArg,
    KernelSpec,
    WorkgroupContext,
    decode_code_object,
    encode_code_object,
    layout_args,
    pack_args,
    parse_entry_token,
)
from hw_model.kernels.builtins import COPY_BUFFER, EMPTY, FILL_BUFFER, SAXPY, SQUARE, VECTOR_ADD
from hw_model.kernels.microbench import MICROBENCH_KERNELS

# What "builtin" alone loads: the DESIGN's four kernels. The microbenchmarks are loaded by
# name ("builtin:fma_loop,chase"), as from a code object of their own.
DEFAULT_BUILTINS = ("square", "vector_add", "saxpy", "empty")

BUILTINS: dict[str, KernelSpec] = {
    k.name: k
    for k in (SQUARE, VECTOR_ADD, SAXPY, EMPTY, COPY_BUFFER, FILL_BUFFER, *MICROBENCH_KERNELS)
}


def register(kernel: KernelSpec) -> None:
    """Add a kernel to the registry the CU resolves entry tokens against."""
    BUILTINS[kernel.name] = kernel


def builtin_code_object(names: list[str] | None = None, target: str = "gfx900") -> bytes:
    """The code object holding the named built-ins (DEFAULT_BUILTINS by default)."""
    chosen = [BUILTINS[n] for n in (names or DEFAULT_BUILTINS)]
    return encode_code_object(chosen, target)


__all__ = [
    "BUILTINS",
    "DEFAULT_BUILTINS",
    "CODE_OBJECT_MAGIC",
    "ENTRY_TOKEN_SIZE",
    "CostProfile",
    "GridContext",
    "KernelArg",
    "KernelSpec",
    "WorkgroupContext",
    "builtin_code_object",
    "decode_code_object",
    "encode_code_object",
    "layout_args",
    "pack_args",
    "parse_entry_token",
    "register",
]
