"""CPU mappings of buffer objects: what `mmap()` on /dev/kfd or the DRM render node returns.

A mapping is the process's window onto a BO at its virtual address. Plain loads and stores
go straight to the backing numpy array (`array`), as ordinary CPU accesses do. Stores that
others must see at once — signal values, the doorbell's MMIO write — go through `store_*`
and the atomics, which tell the memory model (the doorbell BAR routes the write to the CP;
a monitored address wakes whoever watches it).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import partial

import numpy as np

from hw_model.memory import BufferObject, MemKind, Memory

_U64 = struct.Struct("<Q")


class HostMapping:
    def __init__(self, memory: Memory, bo: BufferObject, pasid: int) -> None:
        self._memory = memory
        self._bo = bo
        self.pasid = pasid
        self.address = bo.va
        self.size = bo.size
        self.is_mmio = bo.kind in (MemKind.DOORBELL, MemKind.MMIO)

    @property
    def array(self) -> np.ndarray:
        """The mapped bytes as a writable uint8 array (not for MMIO pages)."""
        if self.is_mmio:
            raise TypeError("an MMIO page has no cacheable view; use store_u64()")
        return self._bo.data

    def _va(self, offset: int, n: int) -> int:
        if offset < 0 or offset + n > self.size:
            raise IndexError(f"offset {offset}+{n} outside the {self.size}-byte mapping")
        return self.address + offset

    def read(self, offset: int, n: int) -> bytes:
        return self._memory.read(self.pasid, self._va(offset, n), n)

    def write(self, offset: int, data: bytes) -> None:
        if offset < 0 or offset + len(data) > self.size:
            self._va(offset, len(data))  # raises
        self._memory.write(self.pasid, self.address + offset, data)

    # The 8-byte accessors below are on every packet's path (queue indices, signal values, the
    # doorbell), so each does `_va`'s bounds check in place rather than calling it. A load
    # inside the mapping, not MMIO, of a BO still allocated and host-accessible reads the word
    # itself, as the checked path would after its lookup; any other load takes the checked
    # path (and faults or raises as it does).
    def load_i64(self, offset: int) -> int:
        v = self.load_u64(offset)  # the same checks and bits, read as two's complement
        return v - (1 << 64) if v >> 63 else v

    def load_u64(self, offset: int) -> int:
        bo = self._bo
        if (
            0 <= offset <= self.size - 8
            and not self.is_mmio
            and bo.host_access
            and self._memory.bos.get(bo.handle) is bo
        ):
            return _U64.unpack_from(bo.data, offset)[0]
        return self._memory.load_u64(self.pasid, self._va(offset, 8))

    def store_u64(self, offset: int, value: int) -> None:
        if offset < 0 or offset + 8 > self.size:
            self._va(offset, 8)  # raises
        self._memory.store_u64(self.pasid, self.address + offset, value)

    def store_i64(self, offset: int, value: int) -> None:
        if offset < 0 or offset + 8 > self.size:
            self._va(offset, 8)  # raises
        self._memory.store_i64(self.pasid, self.address + offset, value)

    def atomic_add_i64(self, offset: int, delta: int) -> int:
        if offset < 0 or offset + 8 > self.size:
            self._va(offset, 8)  # raises
        return self._memory.atomic_add_i64(self.pasid, self.address + offset, delta)

    # A word stored to on every packet at one offset (a queue's write index, a signal's value,
    # a doorbell): the memory model's own store of that word, bound with its address after
    # `_va`'s bounds check, so a store runs no code of this layer. The model still runs the
    # BO's MMIO hook (the doorbell) and tells the word's watchers, as store_u64 does.
    def store_u64_at(self, offset: int) -> Callable[[int], None]:
        """`store_u64(offset, value)` as `f(value)`; also `store_i64` (the same bits)."""
        return partial(self._memory.store_u64, self.pasid, self._va(offset, 8))

    def atomic_add_i64_at(self, offset: int) -> Callable[[int], int]:
        """`atomic_add_i64(offset, delta)` as `f(delta)`."""
        return partial(self._memory.atomic_add_i64, self.pasid, self._va(offset, 8))

    def va_writer(self) -> Callable[[int, bytes], None]:
        """`write(va - address, data)` as `f(va, data)`, for a caller whose stores stay inside
        the mapping by construction (a ring's slots): the memory model's own store, which
        still checks the range against the BO (a stray address faults, never spills over)."""
        return partial(self._memory.write, self.pasid)

    def atomic_exchange_i64(self, offset: int, value: int) -> int:
        va = self._va(offset, 8)
        old = self._memory.load_i64(self.pasid, va)
        self._memory.store_i64(self.pasid, va, value)
        return old

    def atomic_cas_i64(self, offset: int, expected: int, value: int) -> int:
        va = self._va(offset, 8)
        old = self._memory.load_i64(self.pasid, va)
        if old == expected:
            self._memory.store_i64(self.pasid, va, value)
        return old

    def atomic_and_i64(self, offset: int, mask: int) -> int:
        va = self._va(offset, 8)
        old = self._memory.load_i64(self.pasid, va)
        self._memory.store_i64(self.pasid, va, old & mask)
        return old

    def atomic_or_i64(self, offset: int, mask: int) -> int:
        va = self._va(offset, 8)
        old = self._memory.load_i64(self.pasid, va)
        self._memory.store_i64(self.pasid, va, old | mask)
        return old

    def atomic_xor_i64(self, offset: int, mask: int) -> int:
        va = self._va(offset, 8)
        old = self._memory.load_i64(self.pasid, va)
        self._memory.store_i64(self.pasid, va, old ^ mask)
        return old
