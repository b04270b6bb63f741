"""Memory pools and buffers, as ROCr exposes them through hsa_amd_memory_pool_*.

The CPU agent has the system pools (fine-grained with the kernarg flag, fine-grained, and
coarse-grained); a GPU agent has its VRAM (coarse-grained) and the group segment (LDS). An
allocation is a KFD buffer object placed by the thunk; it is accessible to the pool's owner
only until `allow_access` maps it for other agents (hsa_amd_agents_allow_access). The host
sees a buffer through its CPU mapping: `view()` is a numpy array over the very bytes the GPU
reads.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag
from typing import TYPE_CHECKING, Any

import numpy as np

from rocr.errors import HsaError
from rocr.status import Status
from rocr.validate import as_bytes, as_int, show

if TYPE_CHECKING:
    from rocr.agent import Agent
    from rocr.runtime import Runtime


class Segment(IntEnum):
    """hsa_amd_segment_t."""

    GLOBAL = 0
    READONLY = 1
    PRIVATE = 2
    GROUP = 3


class GlobalFlag(IntFlag):
    """hsa_amd_memory_pool_global_flag_t."""

    KERNARG_INIT = 1
    FINE_GRAINED = 2
    COARSE_GRAINED = 4


class PoolFlags:
    """The global-segment flags of a pool, shared by local and remote pools."""

    global_flags: GlobalFlag

    @property
    def fine_grained(self) -> bool:
        return bool(self.global_flags & GlobalFlag.FINE_GRAINED)

    @property
    def coarse_grained(self) -> bool:
        return bool(self.global_flags & GlobalFlag.COARSE_GRAINED)

    @property
    def kernarg(self) -> bool:
        return bool(self.global_flags & GlobalFlag.KERNARG_INIT)


class MemoryPool(PoolFlags):
    """hsa_amd_memory_pool_t."""

    def __init__(
        self,
        rt: Runtime,
        owner: Agent,
        segment: Segment,
        flags: GlobalFlag,
        size: int,
        *,
        vram: bool,
        name: str,
    ) -> None:
        self.rt = rt
        self.owner = owner
        self.segment = segment
        self.global_flags = flags
        self.size = size
        self.vram = vram
        self.name = name
        self.alloc_granule = 4096  # HSA_AMD_MEMORY_POOL_INFO_RUNTIME_ALLOC_GRANULE (page)
        self.alloc_alignment = 4096

    @property
    def alloc_allowed(self) -> bool:
        return self.segment == Segment.GLOBAL

    def info(self) -> dict:
        return {
            "segment": self.segment.name,
            "global_flags": [f.name for f in GlobalFlag if self.global_flags & f],
            "size": self.size,
            "alloc_allowed": self.alloc_allowed,
            "alloc_granule": self.alloc_granule,
            "alloc_alignment": self.alloc_alignment,
            "accessible_by_all": False,
            "name": self.name,
        }

    def __repr__(self) -> str:
        return f"MemoryPool({self.name}, {self.segment.name}, size={self.size})"

    def allocate(self, size: int) -> Buffer:
        """hsa_amd_memory_pool_allocate."""
        size = check_alloc_size(self, size)
        return self.rt._allocate(self, size)


def check_alloc_size(pool: Any, size: object) -> int:
    """The checks of hsa_amd_memory_pool_allocate, shared by local and remote pools: size 0 is
    INVALID_ARGUMENT; a size the pool cannot give, or a pool that cannot allocate, is
    INVALID_ALLOCATION (ROCr hsa_amd_memory_pool_allocate, MemoryRegion::Allocate)."""
    rt = getattr(pool, "rt", None)
    if rt is not None and getattr(rt, "closed", False):
        raise HsaError(Status.ERROR_NOT_INITIALIZED, "the runtime was shut down")
    n = as_int(size, "size", why="bytes to allocate")
    if not pool.alloc_allowed:
        raise HsaError(
            Status.ERROR_INVALID_ALLOCATION,
            f"pool {pool.name} ({pool.segment.name} segment) cannot be allocated "
            "from; use a GLOBAL pool",
        )
    if n <= 0:
        raise HsaError(Status.ERROR_INVALID_ARGUMENT, f"size = {n}: it must be at least 1 byte")
    if n > pool.size:
        raise HsaError(
            Status.ERROR_INVALID_ALLOCATION,
            f"size = {n} bytes: more than pool {pool.name} holds ({pool.size} bytes)",
        )
    return n


def filter_pools(
    pools,
    *,
    kernarg: bool | None = None,
    fine_grained: bool | None = None,
    coarse_grained: bool | None = None,
    segment: Segment | None = None,
) -> list:
    """The pools with the given properties (hsa_amd_agent_iterate_memory_pools + a filter);
    shared by local and remote agents."""
    out = []
    for p in pools:
        if kernarg is not None and p.kernarg != kernarg:
            continue
        if fine_grained is not None and p.fine_grained != fine_grained:
            continue
        if coarse_grained is not None and p.coarse_grained != coarse_grained:
            continue
        if segment is not None and p.segment != segment:
            continue
        out.append(p)
    return out


class BufferBase:
    """What local and remote buffers share: an address, a size, a pool, a freed flag."""

    rt: Any
    address: int
    size: int
    pool: MemoryPool
    freed: bool

    def __repr__(self) -> str:
        return f"Buffer({self.address:#x}, {self.size} bytes, {self.pool.name})"

    def __int__(self) -> int:
        return self.address

    def _check(self) -> None:
        """A buffer is usable until it is freed or its runtime shuts down (which frees all
        memory): after that, any use is an error, never a touch of released memory. ROCr
        answers an address it no longer tracks with HSA_STATUS_ERROR_INVALID_ALLOCATION
        (Runtime::FreeMemory), and any call after hsa_shut_down with NOT_INITIALIZED."""
        if getattr(self.rt, "closed", False):
            raise HsaError(
                Status.ERROR_NOT_INITIALIZED,
                f"buffer at {self.address:#x}: the runtime was shut down, which freed it",
            )
        if self.freed:
            raise HsaError(
                Status.ERROR_INVALID_ALLOCATION, f"buffer at {self.address:#x} was freed"
            )

    def _view_shape(self, dtype: object, count: object) -> tuple[np.dtype, int]:
        try:
            dt = np.dtype(dtype)  # type: ignore[call-overload]
        except (TypeError, ValueError) as e:
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT, f"dtype = {show(dtype)} is not a numpy dtype: {e}"
            ) from None
        if dt.itemsize == 0 or dt.hasobject:
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT,
                f"dtype = {dt} cannot view raw memory: use a fixed-size numeric dtype",
            )
        if count is None:
            return dt, self.size // dt.itemsize
        n = as_int(
            count,
            "count",
            0,
            self.size // dt.itemsize,
            why=f"{dt} elements that fit in the {self.size}-byte buffer",
        )
        return dt, n

    def _range(self, offset: object, size: object, what: str = "size") -> tuple[int, int]:
        """(offset, size) of a host access, both checked against the buffer."""
        off = as_int(offset, "offset", 0, self.size, why=f"the buffer has {self.size} bytes")
        n = self.size - off if size is None else as_int(size, what, 0)
        if off + n > self.size:
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT,
                f"{n} bytes at offset {off}: range [{off}, {off + n}) outside the "
                f"{self.size}-byte buffer",
            )
        return off, n


class Buffer(BufferBase):
    """Memory from a pool. `address` is what a kernel argument or packet field takes."""

    def __init__(self, rt: Runtime, pool: MemoryPool, alloc) -> None:
        self.rt = rt
        self.pool = pool
        self._alloc = alloc
        self.address: int = alloc.address
        self.size: int = alloc.size
        self.freed = False

    def view(self, dtype: type | str = np.uint8, count: int | None = None) -> np.ndarray:
        """The host's view of the buffer as a numpy array (no copy)."""
        self._check()
        m = self._alloc.mapping
        if m is None:
            raise HsaError(
                Status.ERROR_INVALID_AGENT,
                f"{self} is in device memory the host cannot map (coarse-grained "
                "VRAM): copy it to or from a system buffer with rt.memory_copy(dst, src, "
                "size) or rt.memory_async_copy(...), fill it with rt.memory_fill(ptr, value, "
                "count)",
            )
        dt, n = self._view_shape(dtype, count)
        return m.array[: n * dt.itemsize].view(dt)

    def read(self, offset: int = 0, size: int | None = None) -> bytes:
        self._check()
        off, n = self._range(offset, size)
        return bytes(self.view()[off : off + n])

    def write(self, data: bytes, offset: int = 0) -> None:
        self._check()
        raw = as_bytes(data, "data")
        off, n = self._range(offset, len(raw), "data length")
        self.view()[off : off + n] = np.frombuffer(raw, dtype=np.uint8)

    def free(self) -> None:
        """hsa_amd_memory_pool_free: a second free is HSA_STATUS_ERROR_INVALID_ALLOCATION, as
        ROCr's Runtime::FreeMemory answers a pointer it no longer tracks."""
        self._check()
        self.rt._free(self)
        self.freed = True
