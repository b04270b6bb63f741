"""Remote executables and kernel symbols: what the server's loader reported, looked up here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hw_model.kernels import KernelArg
from rocr.errors import HsaError
from rocr.executable import KernelSymbol as LocalKernelSymbol
from rocr.service.schemas import ExecutableInfo, KernelSymbolInfo
from rocr.status import Status
from rocr.validate import show

if TYPE_CHECKING:
    from rocr.client.agent import Agent


class KernelSymbol(LocalKernelSymbol):
    """hsa_executable_symbol_t of a kernel, as the server's loader reported it."""

    def __init__(self, info: KernelSymbolInfo) -> None:
        super().__init__(
            info.name,
            info.kernel_object,
            info.kernarg_segment_size,
            info.group_segment_size,
            info.private_segment_size,
            tuple(KernelArg(**a.model_dump()) for a in info.args),
            info.vgpr_count,
            info.sgpr_count,
        )
        self.kernarg_alignment = info.kernarg_segment_alignment
        self._info = info

    def info(self) -> dict:
        return self._info.model_dump()


class Executable:
    def __init__(self, info: ExecutableInfo, agent: Agent) -> None:
        self.id = info.id
        self.agent = agent
        self.symbols: dict[str, KernelSymbol] = {k.name: KernelSymbol(k) for k in info.kernels}

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

    def __repr__(self) -> str:
        return f"Executable({', '.join(self.symbols)})"
