"""Remote executables and kernel symbols: what the server's loader reported, looked up here."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from hw_model.kernels import KernelArg, pack_args
from rocr.errors import HsaError
from rocr.service.schemas import ExecutableInfo, KernelSymbolInfo
from rocr.status import Status

if TYPE_CHECKING:
    from rocr.client.agent import Agent


class KernelSymbol:
    """hsa_executable_symbol_t of a kernel."""

    def __init__(self, info: KernelSymbolInfo) -> None:
        self.name = info.name
        self.kernel_object = info.kernel_object
        self.kernarg_size = info.kernarg_segment_size
        self.kernarg_alignment = info.kernarg_segment_alignment
        self.group_segment_size = info.group_segment_size
        self.private_segment_size = info.private_segment_size
        self.args = tuple(KernelArg(**a.model_dump()) for a in info.args)
        self.vgprs = info.vgpr_count
        self.sgprs = info.sgpr_count
        self._info = info

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
        return self._info.model_dump()


class Executable:
    def __init__(self, info: ExecutableInfo, agent: Agent) -> None:
        self.id = info.id
        self.agent = agent
        self.symbols: dict[str, KernelSymbol] = {k.name: KernelSymbol(k) for k in info.kernels}

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
