"""Platform memory: buffer objects (BOs) mapped into per-process GPU virtual address spaces.

Models what amdgpu's TTM/GEM buffer objects and per-process GPUVM page tables give the rest
of the stack: a BO is a physical allocation (system RAM, VRAM or a doorbell page) with numpy
`uint8` backing; a process's VM maps it at a virtual address; an access by the host or by a GPU
is checked as the page tables and the PCIe BAR would check it (is it mapped for that GPU, is
VRAM host-visible). A GPU access to an unmapped address is a VM fault, as on hardware.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable
from enum import IntEnum
from typing import Any

import numpy as np

PAGE_SIZE = 4096
# gfx9 GPUVM is 48-bit; a canonical address beyond it trips the CP/SQ's aperture check.
VA_LIMIT = 1 << 48


class MemKind(IntEnum):
    SYSTEM = 0  # host RAM (GTT / userptr)
    VRAM = 1
    DOORBELL = 2  # MMIO doorbell page of a process
    MMIO = 3


# UTCL2 clients a VM fault names (gfx9 VM_L2_PROTECTION_FAULT_STATUS.CID): who missed.
VM_FAULT_CLIENT_CP = "CPC"  # the CP fetching a packet's kernel descriptor, kernargs, signals
VM_FAULT_CLIENT_SHADER = "TCP"  # a wave's vector memory access


class MemoryFault(Exception):
    """A GPU or host access that the page tables refuse (a VM fault on hardware)."""

    def __init__(self, va: int, size: int, reason: str, aperture: bool = False) -> None:
        self.va = va
        self.size = size
        self.reason = reason
        # True when the address lies outside the 48-bit VA space (CP error bit 0x20000000).
        self.aperture = aperture
        super().__init__(f"memory fault at VA {va:#x} (+{size} bytes): {reason}")


def _elements(back: np.ndarray, size: int) -> np.ndarray:
    """`back` as an array of `size`-byte elements (its tail, if shorter, left out)."""
    dt = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}.get(size)
    n = back.size // size
    return back[: n * size].view(dt if dt is not None else np.dtype((np.void, size)))


def take_bytes(back: np.ndarray, offs: np.ndarray, size: int) -> np.ndarray:
    """(n, size) bytes of `back` at each of `offs` (int64). Naturally aligned accesses (all
    of a compiled kernel's dword and vector loads) move one element per lane, which numpy
    does many times faster than a gather of every byte."""
    if not (offs % size).any():
        got = _elements(back, size)[offs // size]
        return np.ascontiguousarray(got).view(np.uint8).reshape(offs.size, size)
    if size % 4 == 0 and not (offs & 3).any():  # dword aligned: rows of a dword window
        words = np.lib.stride_tricks.sliding_window_view(_elements(back, 4), size // 4)
        return np.ascontiguousarray(words[offs >> 2]).view(np.uint8).reshape(offs.size, size)
    return back[offs[:, None] + np.arange(size)]


def put_bytes(back: np.ndarray, offs: np.ndarray, data: np.ndarray) -> None:
    """Store (n, size) bytes at each of `offs` of `back` (the last of equal offsets wins)."""
    size = data.shape[1]
    if not (offs % size).any():
        el = _elements(back, size)
        el[offs // size] = np.ascontiguousarray(data).view(el.dtype).reshape(offs.size)
        return
    if size % 4 == 0 and not (offs & 3).any():
        words = _elements(back, 4)
        words[(offs >> 2)[:, None] + np.arange(size // 4)] = np.ascontiguousarray(data).view(
            np.uint32
        )
        return
    back[offs[:, None] + np.arange(size)] = data


class OutOfMemory(Exception):
    pass


class BufferObject:
    """One allocation. `data` is its backing store; the VM maps it at `va`."""

    __slots__ = (
        "handle",
        "va",
        "size",
        "kind",
        "coherent",
        "host_access",
        "gpu_nodes",
        "pasid",
        "data",
        "on_write",
        "name",
        "node",
        "shared",
    )

    def __init__(
        self,
        handle: int,
        va: int,
        size: int,
        kind: MemKind,
        pasid: int,
        node: int,
        *,
        coherent: bool = False,
        host_access: bool = True,
        name: str = "",
        data: np.ndarray | None = None,
    ) -> None:
        self.handle = handle
        self.va = va
        self.size = size
        self.kind = kind
        self.coherent = coherent
        self.host_access = host_access
        self.gpu_nodes: set[int] = set()  # GPU nodes whose page tables map this BO
        self.pasid = pasid
        self.node = node  # KFD node the memory belongs to (0 = system memory)
        # A caller-provided backing (a view of shared memory, zeroed by its maker) lets another
        # OS process map the very bytes the device reads and writes.
        self.data = np.zeros(size, dtype=np.uint8) if data is None else data
        self.on_write: Callable[[int, int], None] | None = None  # MMIO hook (offset, nbytes)
        self.name = name
        # Every BO mapping these same pages (a dma-buf exported by one process and imported by
        # others), this one included; None when the pages are this BO's alone.
        self.shared: list[BufferObject] | None = None

    @property
    def end(self) -> int:
        return self.va + self.size

    def describe(self) -> str:
        nodes = ",".join(str(n) for n in sorted(self.gpu_nodes)) or "none"
        return (
            f"BO {self.handle:#x} {self.kind.name} [{self.va:#x}, {self.end:#x}) "
            f"pasid={self.pasid} gpu-mapped={nodes} host={'yes' if self.host_access else 'no'}"
        )


class Window:
    """A checked access kept by a caller that reaches the same bytes on every packet: [va,
    va+size) of process `pasid` is `data[off : off + size]` of `bo` for GPU `node`.

    It holds while the memory's epoch it was made at is unchanged (`map_epoch` for a read
    window, `plain_epoch` for a plain one: `Memory.view_window`, `Memory.plain_window`) and
    `node in bo.gpu_nodes` (the KFD maps and unmaps a BO for a GPU on the BO itself); a
    plain window's stores also need `bo.on_write is None` (an MMIO hook, also set on the BO).
    Its user tests these, and what else it made the window for (`key`), at each use: then the
    checked access would give the same BO and offset, and (plain) `plain` would too. `aux` is
    the user's own, e.g. a view of the bytes shaped as it reads them."""

    __slots__ = ("epoch", "pasid", "va", "size", "node", "bo", "data", "off", "key", "aux")

    def __init__(
        self, epoch: int, pasid: int, va: int, size: int, node: int, bo: BufferObject, off: int
    ) -> None:
        self.epoch = epoch
        self.pasid = pasid
        self.va = va
        self.size = size
        self.node = node
        self.bo = bo
        self.data = bo.data
        self.off = off
        self.key: object = None
        self.aux: Any = None


_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")


class AddressSpace:
    """One process's virtual address space: sorted, non-overlapping BO mappings."""

    def __init__(self, pasid: int) -> None:
        self.pasid = pasid
        self._starts: list[int] = []
        self._bos: list[BufferObject] = []
        # VA -> BO of recent lookups: signals, queue indices and ring slots are looked up at
        # the same few addresses on every packet. Dropped whenever a mapping changes.
        self._hits: dict[int, BufferObject] = {}

    def insert(self, bo: BufferObject) -> None:
        i = bisect.bisect_right(self._starts, bo.va)
        if i > 0 and self._bos[i - 1].end > bo.va:
            raise ValueError(f"VA {bo.va:#x} overlaps {self._bos[i - 1].describe()}")
        if i < len(self._bos) and bo.end > self._starts[i]:
            raise ValueError(f"VA range of {bo.size} bytes at {bo.va:#x} overlaps another BO")
        self._starts.insert(i, bo.va)
        self._bos.insert(i, bo)
        self._hits.clear()

    def remove(self, bo: BufferObject) -> None:
        i = bisect.bisect_left(self._starts, bo.va)
        if i < len(self._bos) and self._bos[i] is bo:
            del self._starts[i]
            del self._bos[i]
        self._hits.clear()

    def find(self, va: int) -> BufferObject | None:
        bo = self._hits.get(va)
        if bo is not None:
            return bo
        i = bisect.bisect_right(self._starts, va) - 1
        if i >= 0:
            bo = self._bos[i]
            if va < bo.va + bo.size:
                if len(self._hits) >= 4096:  # bounded: a kernel's scattered VAs come and go
                    self._hits.clear()
                self._hits[va] = bo
                return bo
        return None

    def __iter__(self):
        return iter(list(self._bos))

    def __len__(self) -> int:
        return len(self._bos)


class Memory:
    """All BOs of the platform and the per-process VMs that map them."""

    def __init__(self, capacity: dict[int, int]) -> None:
        # capacity per node: 0 = system RAM, n = VRAM of GPU node n
        self.capacity = dict(capacity)
        self.used: dict[int, int] = {n: 0 for n in capacity}
        self.vms: dict[int, AddressSpace] = {}
        self.bos: dict[int, BufferObject] = {}
        self._next_handle = 1
        # (pasid, va) -> callbacks run after a store to that address: how the CP (barrier
        # packets) and spinning hosts learn that a signal changed, like a monitored cache line.
        self._watchers: dict[tuple[int, int], list[Callable[[], None]]] = {}
        # Counts checked stores (signals, queue indices, MMIO): a spinning host only needs to
        # look again after one of these, not after every device event.
        self.store_epoch = 0
        self._imported: set[int] = set()  # handles of BOs made by alias()
        # (pasid, VA) -> BO of recent checked accesses: signals, queue indices, ring slots and
        # descriptors are reached at the same few addresses on every packet. One lookup, no
        # address space first. Dropped whenever any mapping changes (a VM made or destroyed,
        # a BO allocated, imported or freed); access rights are checked on every hit.
        self._hits: dict[tuple[int, int], BufferObject] = {}
        # Count the changes that can change a checked access's answer other than a BO's own
        # rights: `map_epoch` the mappings made or dropped, `plain_epoch` those and the
        # monitors added or removed (what `plain` also reads). A `Window` holds while its
        # epoch is unchanged.
        self.map_epoch = 0
        self.plain_epoch = 0
        # Each GPU's L2 holding coarse-grained system memory (docs/memory.md, "Coherence"):
        # (GPU node, BO handle) -> [BO, what the L2 holds, what it filled from memory]. Bytes
        # where the two differ are the dirty bytes a system-scope release writes back.
        self._l2: dict[tuple[int, int], list] = {}
        # Told (GPU node, bytes) when a system-scope release writes dirty bytes back, so the
        # writeback shows in the trace (System sets it).
        self.on_l2_writeback: Callable[[int, int], None] | None = None

    def _remapped(self) -> None:
        """A mapping was made or dropped: the VA cache goes, and every `Window` with it."""
        self._hits.clear()
        self.map_epoch += 1
        self.plain_epoch += 1

    # -- VMs -------------------------------------------------------------------------------
    def create_vm(self, pasid: int) -> AddressSpace:
        vm = AddressSpace(pasid)
        self.vms[pasid] = vm
        self._remapped()
        return vm

    def destroy_vm(self, pasid: int) -> None:
        vm = self.vms.pop(pasid, None)
        if vm is None:
            return
        self._remapped()
        for bo in vm:
            self._release(bo)

    # -- BOs -------------------------------------------------------------------------------
    def allocate(
        self,
        pasid: int,
        va: int,
        size: int,
        kind: MemKind,
        node: int,
        *,
        coherent: bool = False,
        host_access: bool = True,
        name: str = "",
        backing: np.ndarray | None = None,
    ) -> BufferObject:
        """A new BO at `va`. `backing` (uint8, at least the page-rounded size) replaces the
        private zeroed array: the KFD service passes views of memfds shared with clients."""
        if size <= 0:
            raise ValueError(f"allocation size must be positive, got {size}")
        if va % PAGE_SIZE:
            raise ValueError(f"VA {va:#x} is not page aligned")
        if va + size > VA_LIMIT:
            raise ValueError(f"VA range [{va:#x}, {va + size:#x}) exceeds the 48-bit GPUVM")
        size = -(-size // PAGE_SIZE) * PAGE_SIZE
        accounted = kind in (MemKind.SYSTEM, MemKind.VRAM)
        if accounted:
            cap = self.capacity.get(node, 0)
            if self.used.get(node, 0) + size > cap:
                raise OutOfMemory(
                    f"node {node} has {cap - self.used.get(node, 0)} bytes free, {size} requested"
                )
        if backing is not None and (backing.dtype != np.uint8 or backing.size < size):
            raise ValueError(f"backing of {backing.size} bytes for a {size}-byte BO")
        vm = self.vms[pasid]
        bo = BufferObject(
            self._next_handle,
            va,
            size,
            kind,
            pasid,
            node,
            coherent=coherent,
            host_access=host_access,
            name=name,
            data=None if backing is None else backing[:size],
        )
        vm.insert(bo)
        self._remapped()
        self._next_handle += 1
        self.bos[bo.handle] = bo
        if accounted:
            self.used[node] = self.used.get(node, 0) + size
        return bo

    def alias(self, pasid: int, va: int, src: BufferObject, name: str = "") -> BufferObject:
        """`src`'s pages mapped into the VM of `pasid` at `va`, as a dma-buf import does
        (amdgpu_gem_prime_import): a new BO, the same bytes, not counted twice. A store
        through either mapping wakes the watchers of both."""
        if va % PAGE_SIZE:
            raise ValueError(f"VA {va:#x} is not page aligned")
        if va + src.size > VA_LIMIT:
            raise ValueError(f"VA range [{va:#x}, {va + src.size:#x}) exceeds the 48-bit GPUVM")
        bo = BufferObject(
            self._next_handle,
            va,
            src.size,
            src.kind,
            pasid,
            src.node,
            coherent=src.coherent,
            host_access=src.host_access,
            name=name or src.name,
            data=src.data,
        )
        self.vms[pasid].insert(bo)
        self._remapped()
        self._next_handle += 1
        self.bos[bo.handle] = bo
        if src.shared is None:
            src.shared = [src]
        src.shared.append(bo)
        bo.shared = src.shared
        self._imported.add(bo.handle)
        return bo

    def free(self, bo: BufferObject) -> None:
        vm = self.vms.get(bo.pasid)
        if vm is not None:
            vm.remove(bo)
        self._remapped()
        self._release(bo)

    def _release(self, bo: BufferObject) -> None:
        if self._l2:
            for key in [k for k in self._l2 if k[1] == bo.handle]:
                del self._l2[key]
        if bo.shared is not None and bo in bo.shared:
            bo.shared.remove(bo)
        if bo.handle in self._imported:  # an import: its pages are counted with the exporter
            self._imported.discard(bo.handle)
            self.bos.pop(bo.handle, None)
            return
        if self.bos.pop(bo.handle, None) is not None and bo.kind in (
            MemKind.SYSTEM,
            MemKind.VRAM,
        ):
            self.used[bo.node] -= bo.size

    def find(self, pasid: int, va: int) -> BufferObject | None:
        vm = self.vms.get(pasid)
        return vm.find(va) if vm is not None else None

    # -- checked access --------------------------------------------------------------------
    def _resolve(self, pasid: int, va: int, size: int) -> tuple[BufferObject, int]:
        if va < 0 or va + size > VA_LIMIT:
            raise MemoryFault(va, size, "address outside the 48-bit GPU VA space", aperture=True)
        vm = self.vms.get(pasid)
        bo = vm.find(va) if vm is not None else None
        if bo is None:
            raise MemoryFault(va, size, f"no buffer object is mapped there (pasid {pasid})")
        hits = self._hits
        if len(hits) >= 4096:  # bounded, as each address space's own cache
            hits.clear()
        hits[(pasid, va)] = bo
        off = va - bo.va
        if off + size > bo.size:
            raise MemoryFault(
                va,
                size,
                f"access runs {off + size - bo.size} bytes past the end of {bo.describe()}",
            )
        return bo, off

    def gpu_view(self, pasid: int, node: int, va: int, size: int) -> np.ndarray:
        """Bytes [va, va+size) as the GPU `node` sees them through process `pasid`'s VM."""
        bo = self._hits.get((pasid, va))
        if bo is not None:  # `_access`'s cache hit, inline (packets, descriptors: per packet)
            off = va - bo.va
            if off + size <= bo.size and node in bo.gpu_nodes:
                return bo.data[off : off + size]
        bo, off = self._access(pasid, va, size, node)
        return bo.data[off : off + size]

    def shader_view(self, pasid: int, node: int, va: int, size: int) -> np.ndarray:
        """Bytes [va, va+size) as a kernel's loads and stores on GPU `node` see them: through
        the GPU's L2. Coarse-grained system memory (a BO that is not coherent) is cached there
        (MTYPE NC on gfx9): the first access fills the L2 from memory, later host stores are
        not seen and the kernel's stores stay in the L2, until the fences of
        `l2_acquire_system` / `l2_release_system`. Fine-grained memory (MTYPE UC) and VRAM go
        straight to memory. The CP and the SDMA engines use `gpu_view`: they bypass the L2."""
        bo, off = self._resolve(pasid, va, size)
        if node not in bo.gpu_nodes:
            raise MemoryFault(va, size, f"not mapped for GPU node {node}: {bo.describe()}")
        if bo.coherent or bo.kind != MemKind.SYSTEM:
            return bo.data[off : off + size]
        line = self._l2.get((node, bo.handle))
        if line is None:
            line = self._l2[(node, bo.handle)] = [bo, bo.data.copy(), bo.data.copy()]
        return line[1][off : off + size]

    # -- many lanes at once (a wave's vector memory instruction) ----------------------------
    def _shader_backing(self, bo: BufferObject, node: int) -> np.ndarray:
        """The bytes of `bo` a shader on `node` reads and writes: memory, or this GPU's L2
        copy of a coarse-grained system BO (filled on first touch, as `shader_view` does)."""
        if bo.coherent or bo.kind != MemKind.SYSTEM:
            return bo.data
        line = self._l2.get((node, bo.handle))
        if line is None:
            line = self._l2[(node, bo.handle)] = [bo, bo.data.copy(), bo.data.copy()]
        return line[1]

    def lane_resolve(
        self, pasid: int, node: int, addrs: np.ndarray, size: int
    ) -> list[tuple[np.ndarray | None, BufferObject, np.ndarray]]:
        """Check `size`-byte accesses at each of `addrs` ((n,) uint64 VAs, one per lane) the
        way `shader_view` checks one: each must lie wholly inside a BO mapped for GPU `node`.
        Returns groups (lanes, BO, byte offsets in it); lanes is None when every lane falls in
        one BO (the common case, found without sorting). A bad lane raises MemoryFault naming
        the VA of the first bad lane in lane order; its `.index` is that lane's position."""
        addrs = np.asarray(addrs, dtype=np.uint64)
        n = addrs.size
        if n == 0:
            return []
        vm = self.vms.get(pasid)
        lo = int(addrs.min())
        hi = int(addrs.max())
        if hi + size <= VA_LIMIT and vm is not None:
            bo = vm.find(lo)
            if bo is not None and hi + size <= bo.end and node in bo.gpu_nodes:
                return [(None, bo, (addrs - np.uint64(bo.va)).astype(np.int64))]
        if vm is None or len(vm) == 0:
            self._lane_fault(pasid, node, addrs, size, 0)
        starts = np.fromiter((b.va for b in vm._bos), dtype=np.uint64, count=len(vm))
        ends = np.fromiter((b.end for b in vm._bos), dtype=np.uint64, count=len(vm))
        mapped = np.fromiter((node in b.gpu_nodes for b in vm._bos), dtype=bool, count=len(vm))
        i = np.searchsorted(starts, addrs, side="right") - 1
        ic = np.maximum(i, 0)
        ok = (i >= 0) & (addrs <= np.uint64(VA_LIMIT - size))
        ok &= (addrs + np.uint64(size) <= ends[ic]) & mapped[ic]
        if not ok.all():
            self._lane_fault(pasid, node, addrs, size, int(np.argmin(ok)))
        groups = []
        for b in np.unique(ic):
            lanes = np.flatnonzero(ic == b)
            bo = vm._bos[int(b)]
            groups.append((lanes, bo, (addrs[lanes] - np.uint64(bo.va)).astype(np.int64)))
        return groups

    def _lane_fault(self, pasid: int, node: int, addrs: np.ndarray, size: int, lane: int):
        """Raise the MemoryFault `shader_view` would raise for lane `lane`'s access."""
        va = int(addrs[lane])
        try:
            self.shader_view(pasid, node, va, size)
        except MemoryFault as fault:
            fault.index = lane
            raise
        raise AssertionError(f"lane {lane} at {va:#x} was refused but is accessible")

    def lane_gather(self, pasid: int, node: int, addrs: np.ndarray, size: int) -> np.ndarray:
        """(n, size) uint8: the bytes each lane's load at `addrs` reads through GPU `node`'s
        L2 (coarse-grained system memory from the L2's copy, as `shader_view`)."""
        addrs = np.asarray(addrs, dtype=np.uint64)
        out = np.empty((addrs.size, size), dtype=np.uint8)
        for lanes, bo, offs in self.lane_resolve(pasid, node, addrs, size):
            data = take_bytes(self._shader_backing(bo, node), offs, size)
            if lanes is None:
                out[:] = data
            else:
                out[lanes] = data
        return out

    def lane_scatter(self, pasid: int, node: int, addrs: np.ndarray, data: np.ndarray) -> None:
        """Each lane's store of `data[lane]` ((n, size) uint8) at `addrs[lane]` through GPU
        `node`'s L2. Every lane is checked before any byte is written: a fault stores nothing.
        Lanes storing to the same bytes: the highest lane wins (unordered on hardware)."""
        addrs = np.asarray(addrs, dtype=np.uint64)
        data = np.asarray(data, dtype=np.uint8).reshape(addrs.size, -1)
        size = data.shape[1]
        groups = self.lane_resolve(pasid, node, addrs, size)
        for lanes, bo, offs in groups:
            put_bytes(self._shader_backing(bo, node), offs, data if lanes is None else data[lanes])
        self._lanes_stored(pasid, node, size, groups)

    def _lanes_stored(self, pasid: int, node: int, size: int, groups) -> None:
        """After lane stores: what `write` does for a checked store that reached memory (an
        L2-cached store reaches it only at the next system-scope release)."""
        self.store_epoch += 1
        for _lanes, bo, offs in groups:
            if self._shader_backing(bo, node) is not bo.data:
                continue
            if bo.on_write is not None:
                for off in np.unique(offs):
                    bo.on_write(int(off), size)
            # Few addresses are watched (signals): test each against the lanes, not each lane.
            for p, a in list(self._watchers):
                if p != pasid or not bo.va <= a < bo.end:
                    continue
                rel = a - bo.va
                if np.any((offs < rel + 8) & (offs + size > rel)):
                    for fn in list(self._watchers.get((p, a), ())):
                        fn()

    def lane_atomic(
        self,
        pasid: int,
        node: int,
        addrs: np.ndarray,
        size: int,
        update: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    ) -> np.ndarray:
        """A read-modify-write by every lane at `addrs` through GPU `node`'s L2 (the TCC
        performs atomics, so coarse-grained memory's atomics stay in the L2 too). Lanes on one
        address are applied one after another in lane order. `update(initial, inverse)` gets
        the (u, size) bytes of the u distinct addresses (sorted) and, per lane, the index of
        its address there; it returns (pre-op bytes per lane (n, size), final bytes (u, size)).
        Returns the pre-op bytes. Atomics must be naturally aligned (else a MemoryFault, as
        the TA refuses a misaligned atomic); every lane is checked before anything changes."""
        addrs = np.asarray(addrs, dtype=np.uint64)
        bad = addrs % np.uint64(size) != 0
        if bad.any():
            lane = int(np.argmax(bad))
            fault = MemoryFault(
                int(addrs[lane]), size, f"atomic address is not {size}-byte aligned"
            )
            fault.index = lane
            raise fault
        self.lane_resolve(pasid, node, addrs, size)  # fault before any change
        uniq, inverse = np.unique(addrs, return_inverse=True)
        initial = self.lane_gather(pasid, node, uniq, size)
        old, final = update(initial, inverse.reshape(-1))
        self.lane_scatter(pasid, node, uniq, final)
        return old

    def l2_release_system(self, node: int) -> int:
        """A system-scope release on GPU `node` (a packet's release fence; on gfx9 the CP's
        RELEASE_MEM with a TC writeback): its L2's dirty bytes of coarse-grained memory are
        written back to memory, where the host sees them. Returns the bytes written back."""
        if not self._l2:
            return 0
        written = 0
        for (n, _), line in self._l2.items():
            if n != node:
                continue
            bo, held, filled = line
            dirty = held != filled
            count = int(np.count_nonzero(dirty))
            if count:
                bo.data[dirty] = held[dirty]
                filled[dirty] = held[dirty]
                written += count
        if written and self.on_l2_writeback is not None:
            self.on_l2_writeback(node, written)
        return written

    def l2_acquire_system(self, node: int) -> None:
        """A system-scope acquire on GPU `node` (a packet's acquire fence; on gfx9 an
        ACQUIRE_MEM invalidating the TC): clean L2 lines of coarse-grained memory are dropped,
        so the next access reads memory and sees the host's stores. Dirty bytes stay: an
        invalidate does not discard data that was never released."""
        if not self._l2:  # nothing cached (VRAM and fine-grained memory only): every packet
            return
        for key in [k for k in self._l2 if k[0] == node]:
            bo, held, filled = self._l2[key]
            dirty = held != filled
            if not dirty.any():
                del self._l2[key]
                continue
            fresh = bo.data.copy()
            fresh[dirty] = held[dirty]
            self._l2[key] = [bo, fresh, bo.data.copy()]

    def l2_dirty_bytes(self, node: int) -> int:
        """Bytes GPU `node`'s L2 holds that memory does not have yet."""
        lines = [line for key, line in self._l2.items() if key[0] == node]
        return sum(int(np.count_nonzero(held != filled)) for _, held, filled in lines)

    def host_view(self, pasid: int, va: int, size: int) -> np.ndarray:
        bo, off = self._resolve(pasid, va, size)
        if not bo.host_access:
            raise MemoryFault(va, size, f"not host accessible: {bo.describe()}")
        return bo.data[off : off + size]

    def _access(self, pasid: int, va: int, n: int, node: int | None) -> tuple[BufferObject, int]:
        """The BO and offset of an `n`-byte access by the host (node None) or GPU `node`,
        with the checks of `host_view` / `gpu_view`."""
        # The words every packet touches (signals, queue indices) were found before: the
        # VA cache gives the BO; range and access are checked here.
        bo = self._hits.get((pasid, va))
        if bo is not None:
            off = va - bo.va
            if off + n <= bo.size and (bo.host_access if node is None else node in bo.gpu_nodes):
                return bo, off
        bo, off = self._resolve(pasid, va, n)
        if node is None:
            if not bo.host_access:
                raise MemoryFault(va, n, f"not host accessible: {bo.describe()}")
        elif node not in bo.gpu_nodes:
            raise MemoryFault(va, n, f"not mapped for GPU node {node}: {bo.describe()}")
        return bo, off

    # Public name: a caller reading several words of one BO (a kernel descriptor and the
    # entry it points at) checks the access once and slices `bo.data` itself; the page tables
    # map a BO for a GPU whole or not at all.
    locate = _access

    def write(self, pasid: int, va: int, data: bytes | np.ndarray, node: int | None = None) -> None:
        """A store by the host (node None) or a GPU; MMIO BOs see it through their hook."""
        n = len(data)
        # `_access`'s cache hit, inline (a packet's body, once per packet)
        bo = self._hits.get((pasid, va))
        if (
            bo is None
            or (off := va - bo.va) + n > bo.size
            or not (bo.host_access if node is None else node in bo.gpu_nodes)
        ):
            bo, off = self._access(pasid, va, n, node)
        if isinstance(data, (bytes, bytearray)):  # a constant tuple: no union built per store
            memoryview(bo.data)[off : off + n] = data  # no intermediate array
        else:
            bo.data[off : off + n] = np.frombuffer(bytes(data), dtype=np.uint8)
        self.store_epoch += 1
        if bo.on_write is not None:
            bo.on_write(off, n)
        if self._watchers:
            self.notify(pasid, va, n)

    # -- watches (monitored addresses) -------------------------------------------------------
    def watch(self, pasid: int, va: int, fn: Callable[[], None]) -> None:
        self._watchers.setdefault((pasid, va), []).append(fn)
        self.plain_epoch += 1  # a store there must now be told: no plain window holds

    def unwatch(self, pasid: int, va: int, fn: Callable[[], None]) -> None:
        self.plain_epoch += 1
        fns = self._watchers.get((pasid, va))
        if fns and fn in fns:
            fns.remove(fn)
            if not fns:
                del self._watchers[(pasid, va)]

    def watched(self) -> list[tuple[int, int]]:
        """Every monitored (pasid, va): what a poller of stores made behind the model's back
        (another OS process's plain stores to shared pages) must look at."""
        return list(self._watchers)

    def notify(self, pasid: int, va: int, size: int = 8) -> None:
        """Tell whoever monitors [va, va+size) that it was stored to."""
        if not self._watchers:
            return
        self._notify_one(pasid, va, size)
        if self._imported:  # the same pages mapped by other processes: their watchers too
            bo = self.find(pasid, va)
            if bo is not None and bo.shared is not None:
                for other in list(bo.shared):
                    if other is not bo:
                        self._notify_one(other.pasid, other.va + (va - bo.va), size)

    def _notify_one(self, pasid: int, va: int, size: int) -> None:
        for a in range(va - va % 8, va + size, 8):
            fns = self._watchers.get((pasid, a))
            if fns:
                for fn in list(fns):
                    fn()

    # -- 64-bit atomics (signals, queue indices) -------------------------------------------
    # Signals, queue indices and doorbells are 8-byte words touched several times per packet:
    # struct on the BO's buffer costs a fifth of a numpy slice-and-view.
    def load_u64(self, pasid: int, va: int, node: int | None = None) -> int:
        bo, off = self._access(pasid, va, 8, node)
        return _U64.unpack_from(bo.data, off)[0]

    def load_i64(self, pasid: int, va: int, node: int | None = None) -> int:
        bo, off = self._access(pasid, va, 8, node)
        return _I64.unpack_from(bo.data, off)[0]

    def store_u64(self, pasid: int, va: int, value: int, node: int | None = None) -> None:
        # `_access`'s cache hit, inline (signals, doorbells: several stores per packet)
        bo = self._hits.get((pasid, va))
        if (
            bo is None
            or (off := va - bo.va) + 8 > bo.size
            or not (bo.host_access if node is None else node in bo.gpu_nodes)
        ):
            bo, off = self._access(pasid, va, 8, node)
        _U64.pack_into(bo.data, off, value & 0xFFFFFFFFFFFFFFFF)
        self.store_epoch += 1
        if bo.on_write is not None:
            bo.on_write(off, 8)
        if self._watchers:
            self.notify(pasid, va, 8)

    # Two's complement: the same bits as an unsigned store (one call fewer per store).
    store_i64 = store_u64

    def atomic_add_i64(self, pasid: int, va: int, delta: int, node: int | None = None) -> int:
        """Add `delta` to the int64 at `va`; returns the old value."""
        # One checked access for the load and the store (the write index, twice a packet);
        # `_access`'s cache hit inline.
        bo = self._hits.get((pasid, va))
        if (
            bo is None
            or (off := va - bo.va) + 8 > bo.size
            or not (bo.host_access if node is None else node in bo.gpu_nodes)
        ):
            bo, off = self._access(pasid, va, 8, node)
        old = _I64.unpack_from(bo.data, off)[0]
        _U64.pack_into(bo.data, off, (old + delta) & 0xFFFFFFFFFFFFFFFF)
        self.store_epoch += 1
        if bo.on_write is not None:
            bo.on_write(off, 8)
        if self._watchers:
            self.notify(pasid, va, 8)
        return old

    def plain(
        self, pasid: int, va: int, n: int, node: int | None = None
    ) -> tuple[BufferObject, int] | None:
        """The BO and offset of [va, va+n) if an access by `node` passes the checks and its
        stores need no hook (MMIO) nor monitor: the caller may then pack and unpack words
        there itself, adding one to `store_epoch` per store. None: use the checked calls."""
        if self._watchers:
            return None
        bo = self._hits.get((pasid, va))
        if bo is not None:  # `_access`'s cache hit, inline (three per packet)
            off = va - bo.va
            if off + n <= bo.size and (bo.host_access if node is None else node in bo.gpu_nodes):
                return None if bo.on_write is not None else (bo, off)
        try:
            bo, off = self._access(pasid, va, n, node)
        except MemoryFault:
            return None
        if bo.on_write is not None:
            return None
        return bo, off

    def view_window(self, pasid: int, va: int, size: int, node: int) -> Window | None:
        """[va, va+size) as `gpu_view` checks it, kept as a `Window` (None if it faults)."""
        try:
            bo, off = self._access(pasid, va, size, node)
        except MemoryFault:
            return None
        return Window(self.map_epoch, pasid, va, size, node, bo, off)

    def plain_window(self, pasid: int, va: int, size: int, node: int) -> Window | None:
        """What `plain` answers for [va, va+size), kept as a `Window` (None: `plain` is None)."""
        hit = self.plain(pasid, va, size, node)
        if hit is None:
            return None
        return Window(self.plain_epoch, pasid, va, size, node, hit[0], hit[1])

    def read(self, pasid: int, va: int, size: int, node: int | None = None) -> bytes:
        if node is None:
            return self.host_view(pasid, va, size).tobytes()
        return self.gpu_view(pasid, node, va, size).tobytes()
