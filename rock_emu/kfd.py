"""The emulated KFD (amdkfd): the /dev/kfd device, its processes and their ioctls.

Behavior follows Linux's drivers/gpu/drm/amd/amdkfd (kfd_chardev.c for argument checks and
the doorbell-offset encoding, kfd_events.c for signal events and the event page,
kfd_flat_memory.c for the gfx9 apertures, kfd_process_queue_manager.c for queue ids).
Every request arrives as the raw bytes of its `kfd_ioctl_*_args` struct, is decoded with the
uapi models, and the reply is written back into the same buffer, as copy_to_user does.
Failures raise `KfdError` with the errno the real driver returns and a message that says
what was wrong.
"""

from __future__ import annotations

import errno
import functools
import heapq
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from hw_model.command_processor import Mqd
from hw_model.engine import PS_PER_MS
from hw_model.gpu import IRQ_SIGNAL_EVENT, IRQ_VM_FAULT, Gpu
from hw_model.memory import (
    PAGE_SIZE,
    VM_FAULT_CLIENT_CP,
    BufferObject,
    MemKind,
    OutOfMemory,
)
from hw_model.sdma import SdmaQueue
from hw_model.system import System, WaitOutcome
from hw_model.trace import TraceEvent
from rock_emu import ioctl as io
from rock_emu.ioctl import AllocMemFlags, KfdError
from rock_emu.mapping import HostMapping
from rock_emu.topology import render_cached

# kfd_priv.h: mmap offset encoding (type in bits 62-63, gpu_id in bits 46-61)
KFD_MMAP_TYPE_SHIFT = 62
KFD_MMAP_TYPE_DOORBELL = 0x3 << KFD_MMAP_TYPE_SHIFT
KFD_MMAP_TYPE_EVENTS = 0x2 << KFD_MMAP_TYPE_SHIFT
KFD_MMAP_TYPE_RESERVED_MEM = 0x1 << KFD_MMAP_TYPE_SHIFT
KFD_MMAP_TYPE_MMIO = 0x0 << KFD_MMAP_TYPE_SHIFT
KFD_MMAP_GPU_ID_SHIFT = 46
KFD_MMAP_GPU_ID_MASK = 0xFFFF << KFD_MMAP_GPU_ID_SHIFT
KFD_MMAP_OFFSET_VALUE_MASK = (1 << KFD_MMAP_GPU_ID_SHIFT) - 1
# SOC15: each process owns a 2-page doorbell frame of 64-bit doorbells (kfd_doorbell.c)
DOORBELL_FRAME_SIZE = 2 * PAGE_SIZE
KFD_MAX_NUM_OF_QUEUES_PER_PROCESS = 1024  # kfd_priv.h
UNSIGNALED_EVENT_SLOT = 0xFFFFFFFFFFFFFFFF  # kfd_events.c
_U64 = struct.Struct("<Q")
KFD_EVENT_TIMEOUT_IMMEDIATE = 0
KFD_EVENT_TIMEOUT_INFINITE = 0xFFFFFFFF
# SOC15 SDMA doorbells are static (kfd_device_queue_manager.c allocate_doorbell): the engine's
# base index (amdgpu doorbell_index.sdma_engine[]: AMDGPU_DOORBELL64_sDMA_ENGINE0 = 0xF0, the
# engines 2 apart on Vega 10) + (sdma_queue_id & 1) * KFD_QUEUE_DOORBELL_MIRROR_OFFSET +
# (sdma_queue_id >> 1).
SDMA_DOORBELL_ENGINE0 = 0xF0
SDMA_DOORBELL_ENGINE_STRIDE = 2
KFD_QUEUE_DOORBELL_MIRROR_OFFSET = 512  # kfd_priv.h
_SDMA_TYPES = (io.KFD_IOC_QUEUE_TYPE_SDMA, io.KFD_IOC_QUEUE_TYPE_SDMA_XGMI)
_QUEUE_TYPE_NAMES = {
    io.KFD_IOC_QUEUE_TYPE_COMPUTE: "compute",
    io.KFD_IOC_QUEUE_TYPE_SDMA: "sdma",
    io.KFD_IOC_QUEUE_TYPE_COMPUTE_AQL: "compute_aql",
    io.KFD_IOC_QUEUE_TYPE_SDMA_XGMI: "sdma_xgmi",
}
KFD_FIRST_NONSIGNAL_EVENT_ID = 0x80000000  # ids above the signal-event range (guess)
EVENT_PAGE_SIZE = io.KFD_SIGNAL_EVENT_LIMIT * 8
_SIGNAL_EVENT_LIMIT = io.KFD_SIGNAL_EVENT_LIMIT  # signal events' ids (slots) are below it
DEBUGFS_ROOT = "/sys/kernel/debug/kfd"  # kfd_debugfs.c: mqds, hqds, rls
# Where a process's ordinary (malloc) memory lives; the GPU cannot see it. Linux x86-64
# heaps sit around 0x55.. (ASLR); any address below the 47-bit user limit would do.
USER_HEAP_VA = 0x5555_0000_0000
USER_HEAP_SIZE = 4 * 1024 * 1024
# gfx9 apertures (kfd_flat_memory.c MAKE_LDS_APP_BASE_V9 / MAKE_SCRATCH_APP_BASE_V9)
LDS_APP_BASE_V9 = 0x1 << 48
SCRATCH_APP_BASE_V9 = 0x2 << 48
APERTURE_LIMIT_SPAN = 0xFFFFFFFF
GPUVM_BASE = PAGE_SIZE
# amdgpu gfx_v9_0.c: the tile tables' sizes (ARRAY_SIZE of gfx.config.tile_mode_array and
# macrotile_mode_array) and Vega 10's GB_ADDR_CONFIG golden value (VEGA10_GB_ADDR_CONFIG_GOLDEN)
GFX9_NUM_TILE_CONFIGS = 32
GFX9_NUM_MACRO_TILE_CONFIGS = 16
VEGA10_GB_ADDR_CONFIG_GOLDEN = 0x2A114042
GPUVM_LIMIT = (1 << 47) - 1


# The memory types of KFD_IOC_ALLOC_MEM_FLAGS_* (exactly one per allocation), as plain ints.
_ALLOC_DOMAINS = int(
    AllocMemFlags.VRAM
    | AllocMemFlags.GTT
    | AllocMemFlags.USERPTR
    | AllocMemFlags.DOORBELL
    | AllocMemFlags.MMIO_REMAP
)
_ALLOC_PUBLIC = int(AllocMemFlags.PUBLIC)
_ALLOC_COHERENT_OR_UNCACHED = int(AllocMemFlags.COHERENT | AllocMemFlags.UNCACHED)


@functools.lru_cache(maxsize=256)
def _alloc_flags_name(flags: int) -> str:
    """A BO's name: its allocation flags spelled out (a few combinations recur)."""
    return str(AllocMemFlags(flags))


def _err(code: int, message: str) -> KfdError:
    return KfdError(code, message)


@dataclass
class Event:
    event_id: int
    event_type: int
    auto_reset: bool
    slot: int | None
    signaled: bool = False
    memory_exception: dict | None = None
    waiters: int = 0


@dataclass
class Queue:
    queue_id: int
    gpu: Gpu
    mqd: Mqd
    queue_type: int
    doorbell_id: int
    cu_mask: list[int] = field(default_factory=list)
    sdma: SdmaQueue | None = None  # the SDMA RLC queue, for SDMA/SDMA_XGMI queues

    @property
    def type_name(self) -> str:
        return _QUEUE_TYPE_NAMES.get(self.queue_type, str(self.queue_type))


def _hw_queue_state(q: Queue) -> dict | None:
    """The MQD's view of a queue: where the CP is in its ring, and whether it holds an HQD."""
    if q.sdma is not None:
        return q.sdma.describe()
    pp = q.gpu.queues.get(q.mqd.doorbell_index)
    return None if pp is None else pp.describe()


class KfdProcess:
    """One process that opened /dev/kfd (struct kfd_process)."""

    _HANDLERS: dict[int, Callable[[KfdProcess, object], None]]  # set below the class

    def __init__(
        self, kfd: Kfd, pasid: int, name: str, backing: Callable[[int], object] | None = None
    ) -> None:
        self.kfd = kfd
        self.system = kfd.system
        self.pasid = pasid
        self.name = name
        self.memory = kfd.system.memory
        self.vm = self.memory.create_vm(pasid)
        self.acquired: set[int] = set()  # gpu_ids with an acquired VM
        self.bos: dict[int, BufferObject] = {}  # handle -> BO
        self.queues: dict[int, Queue] = {}
        self.events: dict[int, Event] = {}
        self.event_page: BufferObject | None = None
        # The event page as its 8-byte slots (kfd_events.c page_slots), read on each interrupt
        self.event_slots = None
        self.doorbell_frames: dict[int, BufferObject] = {}  # gpu_id -> doorbell BO
        self.vm_faults: list[dict] = []
        self.evicted: set[int] = set()  # gpu_ids whose queues a VM fault evicted (qpd->evicted)
        # Threads of this process blocked in WAIT_EVENTS outside its main thread (ROCr's async
        # events thread): (event ids, wake-up), see add_async_waiter.
        self._async_waiters: list[tuple[frozenset[int], Callable]] = []
        # Every event id some async waiter sleeps on: setting any other event costs nothing more.
        self._async_ids: set[int] = set()
        self.closed = False
        self._next_nonsignal = KFD_FIRST_NONSIGNAL_EVENT_ID
        self._free_slots: list[int] = []  # signal-event slots freed by DESTROY_EVENT
        self._next_slot = 0  # slots at and above it were never handed out
        # A process of the KFD service: every BO's bytes come from `backing(size)` (a view of a
        # memfd the client maps too). None: private arrays, as in-process.
        self.backing = backing
        # The user pages a native client sent with this ioctl ([addr, bytearray] pairs):
        # copy_from_user/copy_to_user use them first (its heap is in its own address space).
        self.user_overlay: list[tuple[int, bytearray]] | None = None
        # How WAIT_EVENTS sleeps: System.host_wait in-process; the service parks the caller
        # instead so the other processes' requests go on (same signature and outcomes).
        self.host_wait: Callable | None = None
        self.heap = self.memory.allocate(
            pasid,
            USER_HEAP_VA,
            USER_HEAP_SIZE,
            MemKind.SYSTEM,
            0,
            name="user heap",
            backing=self._backing(USER_HEAP_SIZE),
        )
        self.doorbell_slot = kfd.alloc_doorbell_slot()
        # gpu_id -> (tba_addr, tma_addr) of the trap handler ROCr installs (qpd->tba_addr/tma_addr)
        self.trap_handlers: dict[int, tuple[int, int]] = {}
        self.mmio_pages: dict[int, BufferObject] = {}  # gpu_id -> the HDP flush page BO

    # -- entry point -----------------------------------------------------------------------
    def ioctl(self, request: int, buf: bytearray) -> int:
        """ioctl(kfd_fd, request, buf): decode, act, write the reply back into `buf`."""
        if self.closed:
            raise _err(errno.EBADF, "this KFD process was closed; open /dev/kfd again")
        self.system.host_advance(self.system.spec.host.syscall_ps)
        # A flat struct of the right size decodes into its fast twin (the same bytes, no
        # pydantic); anything else, and every malformed request, goes through decode_args.
        twin = io.fast_request(request)
        if twin is not None and len(buf) == twin.SIZE:
            args = twin.from_buffer(buf)
        else:
            args = io.decode_args(request, buf)
        handler = self._HANDLERS.get(request)
        if handler is None:
            raise _err(
                errno.EINVAL,
                f"{io.request_name(request)} is a valid amdkfd request that this emulated "
                "driver does not implement; the supported ones are "
                + ", ".join(sorted(io.request_name(r) for r in self._HANDLERS)),
            )
        tr = self.system.tracer
        if tr.enabled:
            tr.instant(
                "kfd",
                io.request_name(request),
                self.system.host_now,
                {"pasid": self.pasid},
                cat="ioctl",
            )
        handler(self, args)
        buf[:] = args.to_bytes()
        return 0

    # -- helpers ---------------------------------------------------------------------------
    def _gpu(self, gpu_id: int) -> Gpu:
        for g in self.system.gpus:
            if g.gpu_id == gpu_id:
                return g
        ids = ", ".join(f"{g.gpu_id:#x}" for g in self.system.gpus)
        raise _err(errno.EINVAL, f"gpu_id {gpu_id:#x} is not a GPU of this system ({ids})")

    def _backing(self, size: int):
        return None if self.backing is None else self.backing(size)

    def _overlay(self, ptr: int, n: int) -> tuple[bytearray, int] | None:
        for addr, data in self.user_overlay or ():
            if addr <= ptr and ptr + n <= addr + len(data):
                return data, ptr - addr
        return None

    def _user_read(self, ptr: int, n: int) -> bytes:
        """copy_from_user."""
        if self.user_overlay and (hit := self._overlay(ptr, n)) is not None:
            return bytes(hit[0][hit[1] : hit[1] + n])
        try:
            return self.memory.read(self.pasid, ptr, n)
        except Exception as e:
            raise _err(
                errno.EFAULT, f"cannot read {n} bytes of user memory at {ptr:#x}: {e}"
            ) from None

    def _user_write(self, ptr: int, data: bytes) -> None:
        """copy_to_user."""
        if self.user_overlay and (hit := self._overlay(ptr, len(data))) is not None:
            hit[0][hit[1] : hit[1] + len(data)] = data
            return
        try:
            self.memory.write(self.pasid, ptr, data)
        except Exception as e:
            raise _err(
                errno.EFAULT, f"cannot write {len(data)} bytes of user memory at {ptr:#x}: {e}"
            ) from None

    def _bo(self, handle: int) -> BufferObject:
        bo = self.bos.get(handle)
        if bo is None:
            raise _err(errno.EINVAL, f"no buffer object with handle {handle:#x} in this process")
        return bo

    # -- version, apertures, VM ------------------------------------------------------------
    def _get_version(self, a: io.GetVersionArgs) -> None:
        a.major_version = io.KFD_IOCTL_MAJOR_VERSION
        a.minor_version = io.KFD_IOCTL_MINOR_VERSION

    def _apertures(self, g: Gpu) -> io.FastArgs:
        return io.ProcessDeviceApertures.fast(
            lds_base=LDS_APP_BASE_V9,
            lds_limit=LDS_APP_BASE_V9 + APERTURE_LIMIT_SPAN,
            scratch_base=SCRATCH_APP_BASE_V9,
            scratch_limit=SCRATCH_APP_BASE_V9 + APERTURE_LIMIT_SPAN,
            gpuvm_base=GPUVM_BASE,
            gpuvm_limit=GPUVM_LIMIT,
            gpu_id=g.gpu_id,
        )

    def _get_apertures_new(self, a: io.GetProcessAperturesNewArgs) -> None:
        gpus = self.system.gpus
        if a.num_of_nodes == 0:
            a.num_of_nodes = len(gpus)  # first call: how many entries to allocate
            return
        if a.num_of_nodes < len(gpus):
            raise _err(errno.EINVAL, f"num_of_nodes {a.num_of_nodes} < {len(gpus)} GPUs")
        data = b"".join(self._apertures(g).to_bytes() for g in gpus)
        self._user_write(a.kfd_process_device_apertures_ptr, data)
        a.num_of_nodes = len(gpus)

    def _get_apertures(self, a: io.GetProcessAperturesArgs) -> None:
        gpus = self.system.gpus[: io.NUM_OF_SUPPORTED_GPUS]
        aps = [self._apertures(g).to_model() for g in gpus]
        aps += [io.ProcessDeviceApertures() for _ in range(io.NUM_OF_SUPPORTED_GPUS - len(aps))]
        a.process_apertures = aps
        a.num_of_nodes = len(gpus)

    def _acquire_vm(self, a: io.AcquireVmArgs) -> None:
        g = self._gpu(a.gpu_id)
        self.acquired.add(g.gpu_id)

    def _set_memory_policy(self, a: io.SetMemoryPolicyArgs) -> None:
        self._gpu(a.gpu_id)
        if a.default_policy > 1 or a.alternate_policy > 1:
            raise _err(
                errno.EINVAL,
                "cache policy must be KFD_IOC_CACHE_POLICY_COHERENT (0) or NONCOHERENT (1)",
            )

    def _set_scratch_backing_va(self, a: io.SetScratchBackingVaArgs) -> None:
        self._gpu(a.gpu_id)

    def _set_xnack_mode(self, a: io.SetXnackModeArgs) -> None:
        if a.xnack_enabled > 0:  # negative means "query"
            raise _err(
                errno.EPERM,
                "XNACK (GPU page-fault retry) is not supported by this emulated GPU",
            )
        a.xnack_enabled = 0

    def _set_trap_handler(self, a: io.SetTrapHandlerArgs) -> None:
        """kfd_ioctl_set_trap_handler: remember the trap handler's code (TBA) and memory (TMA)
        addresses for the process's queues on gpu_id (kfd_process_set_trap_handler). The
        emulated waves take no traps, so nothing runs there; ROCr installs one at start-up
        (GpuAgent::BindTrapHandler) and asserts this succeeds."""
        g = self._gpu(a.gpu_id)
        self.trap_handlers[g.gpu_id] = (a.tba_addr, a.tma_addr)

    def _get_tile_config(self, a: io.GetTileConfigArgs) -> None:
        """kfd_ioctl_get_tile_config (amdgpu_amdkfd_get_tile_config): gfx9 keeps no tiling
        tables (gfx_v9_0 leaves tile_mode_array/macrotile_mode_array zero), so the entries
        copied out are zeros; the counts say how many the driver has."""
        self._gpu(a.gpu_id)
        n_tile, n_macro = GFX9_NUM_TILE_CONFIGS, GFX9_NUM_MACRO_TILE_CONFIGS
        if a.num_tile_configs:
            n = min(a.num_tile_configs, n_tile)
            self._user_write(a.tile_config_ptr, bytes(4 * n))
        if a.num_macro_tile_configs:
            n = min(a.num_macro_tile_configs, n_macro)
            self._user_write(a.macro_tile_config_ptr, bytes(4 * n))
        a.num_tile_configs = n_tile
        a.num_macro_tile_configs = n_macro
        a.gb_addr_config = VEGA10_GB_ADDR_CONFIG_GOLDEN  # every preset reports Vega 10's
        a.num_banks = 0  # MC_ARB_RAMCFG is not read on gfx9: amdgpu reports 0
        a.num_ranks = 0

    def _available_memory(self, a: io.GetAvailableMemoryArgs) -> None:
        g = self._gpu(a.gpu_id)
        a.available = self.memory.capacity[g.node] - self.memory.used[g.node]

    def _get_clock_counters(self, a: io.GetClockCountersArgs) -> None:
        now = self.system.host_now
        # kfd_ioctl_get_clock_counters: a gpu_id that names no GPU (libhsakmt asks with the
        # CPU node's 0) is a node without GPU resources: gpu_clock_counter 0, no error.
        g = next((g for g in self.system.gpus if g.gpu_id == a.gpu_id), None)
        a.gpu_clock_counter = 0 if g is None else g.timestamp(now)
        a.cpu_clock_counter = now // 1000  # rdtsc-like; the emulated TSC runs at 1 GHz
        a.system_clock_counter = now // 1000  # CLOCK_MONOTONIC_RAW in ns
        a.system_clock_freq = 1_000_000_000

    # -- memory ----------------------------------------------------------------------------
    def _alloc_memory(self, a: io.AllocMemoryOfGpuArgs) -> None:
        g = self._gpu(a.gpu_id)
        if g.gpu_id not in self.acquired:
            raise _err(
                errno.EINVAL,
                f"no VM acquired on gpu_id {g.gpu_id:#x}: call AMDKFD_IOC_ACQUIRE_VM for it first",
            )
        flags = a.flags  # a plain int: IntFlag arithmetic costs a Python call per operator
        domains = flags & _ALLOC_DOMAINS
        if domains.bit_count() != 1:
            raise _err(
                errno.EINVAL,
                f"flags {a.flags:#x} must name exactly one memory type: "
                "VRAM, GTT, USERPTR, DOORBELL or MMIO_REMAP",
            )
        if a.size == 0 or a.va_addr % PAGE_SIZE:
            raise _err(
                errno.EINVAL,
                f"size {a.size} must be > 0 and va_addr {a.va_addr:#x} "
                f"page aligned ({PAGE_SIZE} bytes)",
            )
        if domains == AllocMemFlags.DOORBELL:
            bo = self._doorbell_frame(g)
            if a.size > bo.size:
                raise _err(
                    errno.EINVAL,
                    f"doorbell allocation of {a.size} bytes exceeds the "
                    f"{bo.size}-byte process doorbell frame",
                )
            a.handle = (g.gpu_id << 32) | bo.handle
            a.mmap_offset = KFD_MMAP_TYPE_DOORBELL | (g.gpu_id << KFD_MMAP_GPU_ID_SHIFT)
            self.bos[a.handle] = bo
            return
        if domains == AllocMemFlags.VRAM:
            kind, node = MemKind.VRAM, g.node
            host = bool(flags & _ALLOC_PUBLIC)
        elif domains == AllocMemFlags.MMIO_REMAP:
            self._alloc_mmio_remap(g, a)
            return
        else:
            kind, node, host = MemKind.SYSTEM, 0, True
        try:
            bo = self.memory.allocate(
                self.pasid,
                a.va_addr,
                a.size,
                kind,
                node,
                coherent=bool(flags & _ALLOC_COHERENT_OR_UNCACHED),
                host_access=host,
                name=_alloc_flags_name(flags),
                backing=self._backing(a.size),
            )
        except OutOfMemory as e:
            raise _err(errno.ENOMEM, f"out of memory: {e}") from None
        except ValueError as e:
            raise _err(errno.EINVAL, str(e)) from None
        a.handle = (g.gpu_id << 32) | bo.handle  # MAKE_HANDLE(gpu_id, idr_handle)
        a.mmap_offset = bo.handle << 12  # the DRM fake offset to mmap the BO at
        self.bos[a.handle] = bo

    def _alloc_mmio_remap(self, g: Gpu, a: io.AllocMemoryOfGpuArgs) -> None:
        """kfd_ioctl_alloc_memory_of_gpu, KFD_IOC_ALLOC_MEM_FLAGS_MMIO_REMAP: the page of
        registers amdgpu remaps for user mode (rmmio_remap; its HDP_MEM_FLUSH_CNTL write flushes
        the host data path). Memory here is coherent without HDP, so stores to the page are
        accepted and have no effect."""
        if a.size != PAGE_SIZE:
            raise _err(
                errno.EINVAL, f"MMIO_REMAP size {a.size} must be one page ({PAGE_SIZE} bytes)"
            )
        try:
            bo = self.memory.allocate(
                self.pasid,
                a.va_addr,
                PAGE_SIZE,
                MemKind.MMIO,
                g.node,
                name="mmio remap (HDP flush)",
                backing=self._backing(PAGE_SIZE),
            )
        except ValueError as e:
            raise _err(errno.EINVAL, str(e)) from None
        a.handle = (g.gpu_id << 32) | bo.handle
        # kfd_chardev.c: mmap offset KFD_MMAP_TYPE_MMIO | KFD_MMAP_GPU_ID(gpu_id)
        a.mmap_offset = KFD_MMAP_TYPE_MMIO | (g.gpu_id << KFD_MMAP_GPU_ID_SHIFT)
        self.bos[a.handle] = bo
        self.mmio_pages[g.gpu_id] = bo

    def _free_memory(self, a: io.FreeMemoryOfGpuArgs) -> None:
        bo = self._bo(a.handle)
        if bo.kind == MemKind.DOORBELL:
            del self.bos[a.handle]
            return
        if bo.kind == MemKind.MMIO:
            for gpu_id, page in list(self.mmio_pages.items()):
                if page is bo:
                    del self.mmio_pages[gpu_id]
        if bo.gpu_nodes:
            raise _err(
                errno.EBUSY,
                f"BO {a.handle:#x} is still mapped on GPU node(s) "
                f"{sorted(bo.gpu_nodes)}: unmap it first",
            )
        if bo is self.event_page:
            raise _err(errno.EBUSY, "this BO is the process's event page")
        del self.bos[a.handle]
        self.memory.free(bo)

    def _device_ids(self, ptr: int, n: int) -> list[Gpu]:
        if n == 0 or n > len(self.system.gpus) * 8:
            raise _err(errno.EINVAL, f"n_devices {n} out of range")
        raw = self._user_read(ptr, 4 * n)
        return [self._gpu(int.from_bytes(raw[i * 4 : i * 4 + 4], "little")) for i in range(n)]

    def _map_memory(self, a: io.MapMemoryToGpuArgs) -> None:
        bo = self._bo(a.handle)
        if a.n_success > a.n_devices:
            raise _err(errno.EINVAL, f"n_success {a.n_success} > n_devices {a.n_devices}")
        gpus = self._device_ids(a.device_ids_array_ptr, a.n_devices)
        for g in gpus[a.n_success :]:
            if g.gpu_id not in self.acquired:
                raise _err(errno.EINVAL, f"no VM acquired on gpu_id {g.gpu_id:#x}")
            if bo.kind == MemKind.VRAM and bo.node != g.node:
                pass  # peer VRAM over the fabric: allowed, as with large BAR / xGMI
            bo.gpu_nodes.add(g.node)
            a.n_success += 1

    def _unmap_memory(self, a: io.UnmapMemoryFromGpuArgs) -> None:
        bo = self._bo(a.handle)
        for g in self._device_ids(a.device_ids_array_ptr, a.n_devices):
            bo.gpu_nodes.discard(g.node)

    # -- dma-buf sharing (IPC memory) -------------------------------------------------------
    def prime_export(self, handle: int) -> int:
        """DRM_IOCTL_PRIME_HANDLE_TO_FD on the render node (amdgpu_gem_prime_export): a dma-buf
        of BO `handle` that another process imports with AMDKFD_IOC_IMPORT_DMABUF. The fd
        number is the KFD's: as if the fd had been passed to the importer over a socket."""
        bo = self._bo(handle)
        if bo.kind not in (MemKind.SYSTEM, MemKind.VRAM):
            raise _err(errno.EINVAL, f"BO {handle:#x} ({bo.kind.name}) cannot be exported")
        return self.kfd.export_dmabuf(bo)

    def _dmabuf(self, fd: int) -> BufferObject:
        bo = self.kfd.dmabufs.get(fd)
        if bo is None or bo.handle not in self.memory.bos:
            raise _err(
                errno.EINVAL,
                f"dmabuf_fd {fd} is not a dma-buf of an amdgpu BO: export one first "
                "(hsa_amd_ipc_memory_create / DRM_IOCTL_PRIME_HANDLE_TO_FD)",
            )
        return bo

    def _import_dmabuf(self, a: io.ImportDmabufArgs) -> None:
        """kfd_ioctl_import_dmabuf -> amdgpu_amdkfd_gpuvm_import_dmabuf: the exporter's pages
        become a BO of this process at va_addr (not yet mapped to any GPU)."""
        g = self._gpu(a.gpu_id)
        src = self._dmabuf(a.dmabuf_fd)
        if g.gpu_id not in self.acquired:
            raise _err(errno.EINVAL, f"no VM acquired on gpu_id {g.gpu_id:#x}")
        try:
            bo = self.memory.alias(self.pasid, a.va_addr, src, name=f"import of {src.name}")
        except ValueError as e:
            raise _err(errno.EINVAL, f"va_addr {a.va_addr:#x}: {e}") from None
        a.handle = (g.gpu_id << 32) | bo.handle
        self.bos[a.handle] = bo

    def _get_dmabuf_info(self, a: io.GetDmabufInfoArgs) -> None:
        """kfd_ioctl_get_dmabuf_info: size, GPU and allocation flags of a dma-buf (no metadata)."""
        src = self._dmabuf(a.dmabuf_fd)
        g = self.system.gpus[0] if src.node == 0 else self.system.gpu_by_node(src.node)
        a.size = src.size
        a.gpu_id = g.gpu_id
        kind = AllocMemFlags.VRAM if src.kind == MemKind.VRAM else AllocMemFlags.GTT
        a.flags = int(kind | (AllocMemFlags.COHERENT if src.coherent else 0))
        a.metadata_size = 0

    # -- doorbells -------------------------------------------------------------------------
    def _doorbell_frame(self, g: Gpu) -> BufferObject:
        bo = self.doorbell_frames.get(g.gpu_id)
        if bo is None:
            va = self.kfd.doorbell_va(self.doorbell_slot, g)
            bo = self.memory.allocate(
                self.pasid,
                va,
                DOORBELL_FRAME_SIZE,
                MemKind.DOORBELL,
                g.node,
                name="doorbells",
                backing=self._backing(DOORBELL_FRAME_SIZE),
            )
            first = self.doorbell_slot * (DOORBELL_FRAME_SIZE // g.spec.doorbell_size)
            g.map_doorbell_page(bo, first)
            self.doorbell_frames[g.gpu_id] = bo
        return bo

    def mmap(self, offset: int, length: int) -> HostMapping:
        """mmap(kfd_fd or render fd, offset): the CPU mapping of a doorbell frame, the event
        page or a BO."""
        kind = offset & (0x3 << KFD_MMAP_TYPE_SHIFT)
        if kind == KFD_MMAP_TYPE_DOORBELL:
            gpu_id = (offset & KFD_MMAP_GPU_ID_MASK) >> KFD_MMAP_GPU_ID_SHIFT
            bo = self._doorbell_frame(self._gpu(gpu_id))
        elif kind == KFD_MMAP_TYPE_EVENTS:
            if self.event_page is None:
                raise _err(errno.EINVAL, "no event page: create a signal event first")
            bo = self.event_page
        elif kind == KFD_MMAP_TYPE_MMIO and offset & KFD_MMAP_GPU_ID_MASK:
            # kfd_mmio_mmap: the MMIO_REMAP page of gpu_id (BO offsets never reach bit 46)
            gpu_id = (offset & KFD_MMAP_GPU_ID_MASK) >> KFD_MMAP_GPU_ID_SHIFT
            bo = self.mmio_pages.get(self._gpu(gpu_id).gpu_id)
            if bo is None:
                raise _err(
                    errno.EINVAL,
                    f"no MMIO_REMAP page on gpu_id {gpu_id:#x}: allocate it with "
                    "KFD_IOC_ALLOC_MEM_FLAGS_MMIO_REMAP first",
                )
        else:
            handle = offset >> 12
            bo = self.memory.bos.get(handle)
            if bo is None or bo.pasid != self.pasid:
                raise _err(errno.EINVAL, f"mmap offset {offset:#x} names no BO of this process")
            if not bo.host_access:
                raise _err(
                    errno.EINVAL,
                    f"BO at {bo.va:#x} is VRAM without "
                    "KFD_IOC_ALLOC_MEM_FLAGS_PUBLIC: the host cannot map it",
                )
        if length > bo.size:
            raise _err(errno.EINVAL, f"mmap length {length} exceeds the {bo.size}-byte object")
        return HostMapping(self.memory, bo, self.pasid)

    # -- queues ----------------------------------------------------------------------------
    def _create_queue(self, a: io.CreateQueueArgs) -> None:
        g = self._gpu(a.gpu_id)
        if a.queue_percentage > io.KFD_MAX_QUEUE_PERCENTAGE:
            raise _err(
                errno.EINVAL,
                f"queue_percentage {a.queue_percentage} > "
                f"KFD_MAX_QUEUE_PERCENTAGE ({io.KFD_MAX_QUEUE_PERCENTAGE})",
            )
        if a.queue_priority > io.KFD_MAX_QUEUE_PRIORITY:
            raise _err(
                errno.EINVAL,
                f"queue_priority {a.queue_priority} > "
                f"KFD_MAX_QUEUE_PRIORITY ({io.KFD_MAX_QUEUE_PRIORITY})",
            )
        if a.ring_size and a.ring_size & (a.ring_size - 1):
            raise _err(errno.EINVAL, f"ring_size {a.ring_size} must be a power of 2")
        asked = a.ring_size
        if a.ring_size < io.KFD_MIN_QUEUE_RING_SIZE:
            # kfd_chardev.c set_queue_properties_from_user ("drm/amdkfd: clamp queue size to
            # minimum"): a smaller ring, 0 included, is clamped up to KFD_MIN_QUEUE_RING_SIZE
            # rather than refused (so the MQD's ring size cannot underflow). The caller sees
            # the clamped size in the args copied back; the CP wraps at it, so the ring needs
            # room for it (checked below).
            a.ring_size = io.KFD_MIN_QUEUE_RING_SIZE
            tr = self.system.tracer
            if tr.enabled:
                tr.instant(
                    "kfd",
                    "ring_size clamped to KFD_MIN_QUEUE_RING_SIZE",
                    self.system.host_now,
                    {"pasid": self.pasid, "asked": asked, "ring_size": a.ring_size},
                )
        if a.ring_base_address == 0:
            raise _err(errno.EINVAL, "ring_base_address is NULL")
        if a.queue_type != io.KFD_IOC_QUEUE_TYPE_COMPUTE_AQL and a.queue_type not in _SDMA_TYPES:
            raise _err(
                errno.EINVAL,
                f"queue_type {a.queue_type}: this GPU model runs AQL compute queues "
                "(KFD_IOC_QUEUE_TYPE_COMPUTE_AQL = 2) and SDMA queues (KFD_IOC_QUEUE_TYPE_SDMA"
                " = 1, KFD_IOC_QUEUE_TYPE_SDMA_XGMI = 3); PM4 compute queues are not emulated",
            )
        ring = self.vm.find(a.ring_base_address)
        if ring is None or a.ring_base_address + a.ring_size > ring.end:
            clamped = (
                f" (ring_size {asked} was clamped up to KFD_MIN_QUEUE_RING_SIZE)"
                if asked != a.ring_size
                else ""
            )
            raise _err(
                errno.EFAULT,
                f"ring [{a.ring_base_address:#x}, +{a.ring_size}) is not "
                f"inside one allocation of this process{clamped}",
            )
        if g.node not in ring.gpu_nodes:
            raise _err(
                errno.EFAULT,
                f"ring at {a.ring_base_address:#x} is not mapped to "
                f"gpu_id {g.gpu_id:#x}: AMDKFD_IOC_MAP_MEMORY_TO_GPU it first",
            )
        for name, ptr in (
            ("read_pointer_address", a.read_pointer_address),
            ("write_pointer_address", a.write_pointer_address),
        ):
            if self.vm.find(ptr) is None:
                raise _err(errno.EFAULT, f"{name} {ptr:#x} is not in an allocation of this process")
        used = {q.queue_id for q in self.queues.values()}
        qid = next((i for i in range(KFD_MAX_NUM_OF_QUEUES_PER_PROCESS) if i not in used), None)
        if qid is None:
            raise _err(
                errno.ENOSPC,
                f"process has {len(used)} queues, the maximum (KFD_MAX_NUM_OF_QUEUES_PER_PROCESS)",
            )
        frame = self._doorbell_frame(g)
        doorbell_id = qid
        first = self.doorbell_slot * (DOORBELL_FRAME_SIZE // g.spec.doorbell_size)
        sdma = None
        if a.queue_type in _SDMA_TYPES:
            sdma = self._allocate_sdma_queue(g, a, qid, first)
            doorbell_id = sdma.doorbell_index - first
        mqd = Mqd(
            queue_id=qid,
            pasid=self.pasid,
            process_name=self.name,
            ring_base=a.ring_base_address,
            ring_size=a.ring_size,
            rptr_addr=a.read_pointer_address,
            wptr_addr=a.write_pointer_address,
            doorbell_index=first + doorbell_id,
            priority=a.queue_priority,
            percentage=a.queue_percentage,
            is_aql=sdma is None,
        )
        if sdma is not None:
            g.register_sdma_queue(sdma)
            sdma.active = g.gpu_id not in self.evicted and a.queue_percentage > 0
        else:
            pp = g.register_queue(mqd)
            if g.gpu_id in self.evicted:
                # create_queue_cpsch: q->properties.is_evicted = !!qpd->evicted
                g.scheduler.set_active(pp, False)
        self.queues[qid] = Queue(qid, g, mqd, a.queue_type, doorbell_id, sdma=sdma)
        a.queue_id = qid
        # kfd_chardev.c: mmap type | gpu_id | (SOC15) byte offset inside the doorbell frame
        a.doorbell_offset = (
            KFD_MMAP_TYPE_DOORBELL
            | (g.gpu_id << KFD_MMAP_GPU_ID_SHIFT)
            | doorbell_id * g.spec.doorbell_size
        )
        del frame
        self.kfd.note_runlist_change()

    def _allocate_sdma_queue(
        self, g: Gpu, a: io.CreateQueueArgs, qid: int, first_doorbell: int
    ) -> SdmaQueue:
        """kfd_device_queue_manager.c allocate_sdma_queue: the lowest free bit of the device's
        sdma_bitmap (xgmi_sdma_bitmap for SDMA_XGMI) across every process; engine = id %
        engines, RLC queue = id / engines. None left: -ENOMEM ("No more SDMA queue to
        allocate")."""
        xgmi = a.queue_type == io.KFD_IOC_QUEUE_TYPE_SDMA_XGMI
        spec = g.spec
        engines = spec.sdma_xgmi_engines if xgmi else spec.sdma_engines
        total = engines * spec.sdma_queues_per_engine
        base = spec.sdma_engines if xgmi else 0
        used = {
            (q.engine_id - base) + q.sdma_queue_id * engines
            for q in g.sdma_queues.values()
            if q.xgmi == xgmi
        }
        sdma_id = next((i for i in range(total) if i not in used), None)
        kind = "KFD_IOC_QUEUE_TYPE_SDMA_XGMI" if xgmi else "KFD_IOC_QUEUE_TYPE_SDMA"
        if sdma_id is None:
            raise _err(
                errno.ENOMEM,
                f"no more SDMA queue to allocate ({kind}): gpu_id {g.gpu_id:#x} has "
                f"{engines} {'XGMI ' if xgmi else ''}SDMA engines x "
                f"{spec.sdma_queues_per_engine} queues = {total}, all in use",
            )
        engine = base + sdma_id % engines
        slot = sdma_id // engines
        doorbell = (
            first_doorbell
            + SDMA_DOORBELL_ENGINE0
            + SDMA_DOORBELL_ENGINE_STRIDE * engine
            + (slot & 1) * KFD_QUEUE_DOORBELL_MIRROR_OFFSET
            + (slot >> 1)
        )
        return SdmaQueue(
            queue_id=qid,
            pasid=self.pasid,
            process_name=self.name,
            ring_base=a.ring_base_address,
            ring_size=a.ring_size,
            rptr_addr=a.read_pointer_address,
            wptr_addr=a.write_pointer_address,
            doorbell_index=doorbell,
            engine_id=engine,
            sdma_queue_id=slot,
            xgmi=xgmi,
        )

    def _unregister(self, q: Queue) -> None:
        if q.sdma is not None:
            q.gpu.unregister_sdma_queue(q.sdma.doorbell_index)
        else:
            q.gpu.unregister_queue(q.mqd.doorbell_index)

    def _queue(self, qid: int) -> Queue:
        q = self.queues.get(qid)
        if q is None:
            raise _err(
                errno.EINVAL,
                f"queue id {qid} does not exist in this process "
                f"(its queues: {sorted(self.queues)})",
            )
        return q

    def _destroy_queue(self, a: io.DestroyQueueArgs) -> None:
        q = self._queue(a.queue_id)
        self._unregister(q)
        del self.queues[a.queue_id]
        self.kfd.note_runlist_change()

    def _update_queue(self, a: io.UpdateQueueArgs) -> None:
        q = self._queue(a.queue_id)
        if a.queue_percentage > io.KFD_MAX_QUEUE_PERCENTAGE:
            raise _err(errno.EINVAL, f"queue_percentage {a.queue_percentage} > 100")
        if a.queue_priority > io.KFD_MAX_QUEUE_PRIORITY:
            raise _err(errno.EINVAL, f"queue_priority {a.queue_priority} > 15")
        if a.ring_size and a.ring_size & (a.ring_size - 1):
            raise _err(errno.EINVAL, f"ring_size {a.ring_size} must be a power of 2")
        update = {"priority": a.queue_priority, "percentage": a.queue_percentage}
        if a.ring_base_address:
            update |= {"ring_base": a.ring_base_address, "ring_size": a.ring_size}
        pp = q.gpu.queues.get(q.mqd.doorbell_index)
        q.mqd = q.mqd.model_copy(update=update)
        if q.sdma is not None:
            q.sdma.active = q.mqd.percentage > 0 and q.gpu.gpu_id not in self.evicted
        if pp is not None:
            pp.mqd = q.mqd
            # kfd_device_queue_manager.c update_queue: QUEUE_IS_ACTIVE decides whether the
            # queue stays in the runlist (percentage 0 takes it out, keeping its state).
            q.gpu.scheduler.set_active(
                pp,
                q.mqd.percentage > 0
                and q.mqd.ring_size > 0
                and q.gpu.gpu_id not in self.evicted,  # is_evicted survives an update
            )
            q.gpu.scheduler.queue_changed(pp)
        self.kfd.note_runlist_change()

    def _set_cu_mask(self, a: io.SetCuMaskArgs) -> None:
        q = self._queue(a.queue_id)
        if a.num_cu_mask == 0 or a.num_cu_mask % 32:
            raise _err(
                errno.EINVAL, f"num_cu_mask {a.num_cu_mask} must be a nonzero multiple of 32 (bits)"
            )
        raw = self._user_read(a.cu_mask_ptr, a.num_cu_mask // 8)
        words = [int.from_bytes(raw[i : i + 4], "little") for i in range(0, len(raw), 4)]
        cus = (
            {i for i in range(q.gpu.spec.num_cus) if words[i // 32] >> (i % 32) & 1}
            if len(words) * 32 >= q.gpu.spec.num_cus
            else None
        )
        if cus is not None and not cus:
            raise _err(errno.EINVAL, "the CU mask enables no CU")
        q.cu_mask = words
        pp = q.gpu.queues.get(q.mqd.doorbell_index)
        if pp is not None:
            pp.cu_mask = cus

    # -- events ----------------------------------------------------------------------------
    def _create_event(self, a: io.CreateEventArgs) -> None:
        # kfd_ioctl_create_event sets the event page from event_page_offset whatever the
        # event's type (libhsakmt passes it with its first event, which may be a memory event)
        if a.event_page_offset:
            if self.event_page is not None:
                raise _err(errno.EINVAL, "the event page is already set for this process")
            bo = self._bo(a.event_page_offset)
            if bo.size < EVENT_PAGE_SIZE:
                raise _err(
                    errno.EINVAL,
                    f"event page BO of {bo.size} bytes is smaller "
                    f"than KFD_SIGNAL_EVENT_LIMIT * 8 = {EVENT_PAGE_SIZE}",
                )
            self.event_page = bo
            self.event_slots = bo.data[:EVENT_PAGE_SIZE].view("<u8")
            bo.data[:EVENT_PAGE_SIZE] = 0xFF  # every slot UNSIGNALED
        if a.event_type == io.KFD_IOC_EVENT_SIGNAL:
            if self.event_page is None:
                raise _err(
                    errno.EINVAL,
                    "no event page: pass the handle of a GTT BO of "
                    f"{EVENT_PAGE_SIZE} bytes in event_page_offset with the first "
                    "signal event",
                )
            slot = self._alloc_event_slot()
            if slot is None:
                raise _err(
                    errno.ENOMEM,
                    f"all {io.KFD_SIGNAL_EVENT_LIMIT} signal event slots (KFD_SIGNAL_EVENT_LIMIT) "
                    "of this process are in use: destroy signals you no longer need",
                )
            ev = Event(slot, a.event_type, bool(a.auto_reset), slot)
            self.event_page.data[slot * 8 : slot * 8 + 8] = 0xFF
            a.event_slot_index = slot
            a.event_page_offset = KFD_MMAP_TYPE_EVENTS
        elif a.event_type in (
            io.KFD_IOC_EVENT_MEMORY,
            io.KFD_IOC_EVENT_HW_EXCEPTION,
            io.KFD_IOC_EVENT_NODECHANGE,
            io.KFD_IOC_EVENT_DEVICESTATECHANGE,
            io.KFD_IOC_EVENT_SYSTEM_EVENT,
            io.KFD_IOC_EVENT_DEBUG_EVENT,
            io.KFD_IOC_EVENT_PROFILE_EVENT,
            io.KFD_IOC_EVENT_QUEUE_EVENT,
        ):
            ev = Event(self._next_nonsignal, a.event_type, bool(a.auto_reset), None)
            self._next_nonsignal += 1
            a.event_slot_index = 0
        else:
            raise _err(errno.EINVAL, f"event_type {a.event_type} is not a KFD_IOC_EVENT_*")
        self.events[ev.event_id] = ev
        a.event_id = ev.event_id
        a.event_trigger_data = ev.event_id

    def _event(self, event_id: int) -> Event:
        ev = self.events.get(event_id)
        if ev is None:
            raise _err(errno.EINVAL, f"event id {event_id} does not exist in this process")
        return ev

    def _alloc_event_slot(self) -> int | None:
        """The lowest free signal-event slot, as idr_alloc in kfd_event_create gives: freed
        slots come back from a min-heap, fresh ones from a counter, so no scan of live events."""
        if self._free_slots:
            return heapq.heappop(self._free_slots)
        if self._next_slot < io.KFD_SIGNAL_EVENT_LIMIT:
            self._next_slot += 1
            return self._next_slot - 1
        return None

    def _destroy_event(self, a: io.DestroyEventArgs) -> None:
        ev = self._event(a.event_id)
        del self.events[a.event_id]
        if ev.slot is not None:
            heapq.heappush(self._free_slots, ev.slot)
        if a.event_id in self._async_ids:
            # A thread asleep on this event alone has nothing left to wait for (ROCr's async
            # thread drops a destroyed queue's event from its list): forget its wait.
            self._async_waiters = [
                (ids - {a.event_id}, w) for ids, w in self._async_waiters if ids != {a.event_id}
            ]
            self._async_ids = set().union(*(ids for ids, _ in self._async_waiters))

    def _set_event(self, a: io.SetEventArgs) -> None:
        ev = self._event(a.event_id)
        if ev.event_type != io.KFD_IOC_EVENT_SIGNAL:
            raise _err(errno.EINVAL, "only signal events can be set from user space")
        self.signal(ev)

    def _reset_event(self, a: io.ResetEventArgs) -> None:
        self._event(a.event_id).signaled = False

    def signal(self, ev: Event) -> None:
        ev.signaled = True
        tr = self.system.tracer
        if tr.enabled:
            tr.log((_signaled_event, self.system.engine.now, ev.event_id, self.pasid))
        if ev.event_id in self._async_ids:
            # kfd_events.c set_event -> wake_up_all(&ev->wq): a thread of this process asleep
            # in WAIT_EVENTS on it (ROCr's async events thread) returns too.
            self._wake_async(ev)

    def _wake_async(self, ev: Event) -> None:
        data = None
        for ids, wake in list(self._async_waiters):
            if ev.event_id in ids:
                self._async_waiters.remove((ids, wake))
                if data is None:
                    data = io.HsaMemoryExceptionData(**(ev.memory_exception or {}))
                wake(ev.event_id, data.model_copy())
        self._async_ids = set().union(*(ids for ids, _ in self._async_waiters))

    def _wait_events(self, a: io.WaitEventsArgs) -> None:
        if a.num_events == 0 or a.num_events > io.KFD_SIGNAL_EVENT_LIMIT:
            raise _err(errno.EINVAL, f"num_events {a.num_events} must be 1..4096")
        size = io.EventData.SIZE
        raw = self._user_read(a.events_ptr, size * a.num_events)
        datas = [
            io.EventData.from_bytes(raw[i * size : (i + 1) * size]) for i in range(a.num_events)
        ]
        events = [self._event(d.event_id) for d in datas]
        for ev in events:
            ev.waiters += 1

        def done() -> bool:
            hits = [e.signaled for e in events]
            return all(hits) if a.wait_for_all else any(hits)

        # kfd_wait_on_events: a finite timeout sleeps until it expires and reports
        # KFD_IOC_WAIT_RESULT_TIMEOUT, whatever the GPU does; only an infinite wait can be
        # proven never to return (host_wait's DEADLOCK).
        timeout = None if a.timeout == KFD_EVENT_TIMEOUT_INFINITE else a.timeout * PS_PER_MS
        try:
            if a.timeout == KFD_EVENT_TIMEOUT_IMMEDIATE:
                self.system.host_advance(0)
                outcome = WaitOutcome.SATISFIED if done() else WaitOutcome.TIMEOUT
            else:
                wait = self.host_wait or self.system.host_wait
                outcome = wait(done, timeout, self.system.spec.host.wakeup_ps)
        finally:
            for ev in events:
                ev.waiters -= 1
        if outcome == WaitOutcome.DEADLOCK:
            ids = ", ".join(str(e.event_id) for e in events)
            stuck = [line for g in self.system.gpus for line in g.scheduler.diagnose()]
            raise _err(
                errno.EDEADLK,
                f"waiting without a timeout on event(s) {ids} of pasid {self.pasid}, but "
                "nothing the GPU has left to do can signal them (no work pending, or only the "
                "HW scheduler swapping queues that cannot run) and no other process can run"
                + ("".join(f"\n  {line}" for line in stuck) if stuck else ""),
            )
        a.wait_result = (
            io.KFD_IOC_WAIT_RESULT_COMPLETE
            if outcome == WaitOutcome.SATISFIED
            else io.KFD_IOC_WAIT_RESULT_TIMEOUT
        )
        out = bytearray()
        for d, ev in zip(datas, events, strict=True):
            if ev.memory_exception is not None and ev.signaled:
                d.memory_exception_data = io.HsaMemoryExceptionData(**ev.memory_exception)
            out += d.to_bytes()
            if ev.signaled and ev.auto_reset:
                ev.signaled = False
        self._user_write(a.events_ptr, bytes(out))

    # -- interrupts ------------------------------------------------------------------------
    def on_vm_fault(self, node: int, data: dict) -> None:
        """A UTCL2 page fault of this process on GPU `node`, as kfd_int_process_v9.c
        event_interrupt_wq_v9 handles a VMC/UTCL2 client: kfd_smi_event_update_vmfault, then
        kfd_dqm_evict_pasid(dev->dqm, pasid) (every queue of the process on that device is
        evicted), then kfd_signal_vm_fault_event(dev, pasid, &info, NULL) (every memory event
        of the process gets the faulting page and is set). Faults of the CP's own fetches are
        reported by the CP as queue errors here and only logged (see docs/architecture.md)."""
        g = self.system.gpu_by_node(node)
        page = data["va"] & ~(PAGE_SIZE - 1)
        record = {"gpu_id": g.gpu_id, **data, "page": page, "tick": self.system.engine.now}
        self.vm_faults.append(record)
        if data.get("client", VM_FAULT_CLIENT_CP) == VM_FAULT_CLIENT_CP:
            record["handled_by"] = "CP queue error"
            return
        record["evicted_queues"] = self._evict_queues(g)
        # kfd_signal_vm_fault_event with info: va = page_addr << PAGE_SHIFT; NotPresent from
        # prot_valid; imprecise = 0. The model has no read-only or no-execute pages, so a
        # fault is always "not present".
        exception = io.HsaMemoryExceptionData(
            failure=io.MemoryExceptionFailure(NotPresent=1), va=page, gpu_id=g.gpu_id
        )
        woken: set[int] = set()
        for ev in self.events.values():
            if ev.event_type == io.KFD_IOC_EVENT_MEMORY:
                ev.memory_exception = exception.model_dump()
                self.signal(ev)
                woken.add(ev.event_id)
        tr = self.system.tracer
        if tr.enabled:
            tr.instant(
                "kfd",
                "VM fault: queues evicted",
                self.system.engine.now,
                {
                    "pasid": self.pasid,
                    "gpu_id": g.gpu_id,
                    "page": hex(page),
                    "queues": record["evicted_queues"],
                    "memory_events": sorted(woken),
                },
                cat="fault",
            )
        for ids, wake in list(self._async_waiters):
            hit = sorted(ids & woken)
            if hit:
                self._async_waiters.remove((ids, wake))
                wake(hit[0], exception.model_copy())
        self._async_ids = set().union(*(ids for ids, _ in self._async_waiters))

    def _evict_queues(self, g: Gpu) -> list[int]:
        """kfd_dqm_evict_pasid -> evict_process_queues_cpsch: every queue of this process on
        `g` is marked is_evicted, so it is no longer active (QUEUE_IS_ACTIVE); the runlist is
        resubmitted without them, which preempts their waves (their kernels place no more
        workgroups). qpd->evicted stays set: queues created or updated later stay evicted."""
        self.evicted.add(g.gpu_id)
        g.dispatcher.evict(self.pasid)
        ids = []
        for q in self.queues.values():
            if q.gpu is not g:
                continue
            if q.sdma is not None:
                q.sdma.active = False
            pp = g.queues.get(q.mqd.doorbell_index)
            if pp is not None:
                g.scheduler.set_active(pp, False)
            ids.append(q.queue_id)
        self.kfd.note_runlist_change()
        return ids

    def add_async_waiter(self, event_ids: list[int], wake: Callable[[int, object], None]) -> None:
        """Another thread of this process sleeps in AMDKFD_IOC_WAIT_EVENTS on `event_ids`
        (wait any, no timeout), as ROCr's async events thread does on its memory event
        (Runtime::BindVmFaultHandler). Its wait ends when a VM fault sets one of them:
        `wake(event_id, kfd_hsa_memory_exception_data)`, what copy_to_user hands that thread.
        Its time is its own: the caller's clock does not move."""
        ids = frozenset(event_ids)
        for i in ids:
            self._event(i)
        signaled = [i for i in sorted(ids) if self.events[i].signaled]
        if signaled:
            ev = self.events[signaled[0]]
            wake(ev.event_id, io.HsaMemoryExceptionData(**(ev.memory_exception or {})))
            return
        self._async_waiters.append((ids, wake))
        self._async_ids |= ids

    # -- teardown --------------------------------------------------------------------------
    def close(self) -> None:
        """The process exits: its queues are destroyed and all its memory is freed."""
        if self.closed:
            return
        for q in list(self.queues.values()):
            self._unregister(q)
        self.queues.clear()
        for bo in self.doorbell_frames.values():
            bo.on_write = None
        self._async_waiters.clear()
        self._async_ids.clear()
        self.memory.destroy_vm(self.pasid)
        self.bos.clear()
        self.events.clear()
        self.closed = True
        self.kfd.release(self)

    def describe(self) -> dict:
        return {
            "pasid": self.pasid,
            "name": self.name,
            "queues": [
                {
                    "queue_id": q.queue_id,
                    "gpu_id": q.gpu.gpu_id,
                    "type": q.type_name,
                    "doorbell_index": q.mqd.doorbell_index,
                    "doorbell_id": q.doorbell_id,
                    "ring_base": hex(q.mqd.ring_base),
                    "ring_size": q.mqd.ring_size,
                    "priority": q.mqd.priority,
                    "percentage": q.mqd.percentage,
                    "hw": _hw_queue_state(q),
                }
                for q in self.queues.values()
            ],
            "events": [
                {
                    "event_id": e.event_id,
                    "type": e.event_type,
                    "slot": e.slot,
                    "signaled": e.signaled,
                    "auto_reset": e.auto_reset,
                }
                for e in self.events.values()
            ],
            "buffer_objects": len(self.bos),
            "vm_faults": self.vm_faults,
            "evicted_gpu_ids": sorted(self.evicted),
        }


# Request -> its handler: one table for every process, not 26 bound methods made at each open.
KfdProcess._HANDLERS = {
    io.AMDKFD_IOC_GET_VERSION: KfdProcess._get_version,
    io.AMDKFD_IOC_GET_PROCESS_APERTURES_NEW: KfdProcess._get_apertures_new,
    io.AMDKFD_IOC_GET_PROCESS_APERTURES: KfdProcess._get_apertures,
    io.AMDKFD_IOC_ACQUIRE_VM: KfdProcess._acquire_vm,
    io.AMDKFD_IOC_ALLOC_MEMORY_OF_GPU: KfdProcess._alloc_memory,
    io.AMDKFD_IOC_FREE_MEMORY_OF_GPU: KfdProcess._free_memory,
    io.AMDKFD_IOC_MAP_MEMORY_TO_GPU: KfdProcess._map_memory,
    io.AMDKFD_IOC_UNMAP_MEMORY_FROM_GPU: KfdProcess._unmap_memory,
    io.AMDKFD_IOC_CREATE_QUEUE: KfdProcess._create_queue,
    io.AMDKFD_IOC_DESTROY_QUEUE: KfdProcess._destroy_queue,
    io.AMDKFD_IOC_UPDATE_QUEUE: KfdProcess._update_queue,
    io.AMDKFD_IOC_SET_CU_MASK: KfdProcess._set_cu_mask,
    io.AMDKFD_IOC_CREATE_EVENT: KfdProcess._create_event,
    io.AMDKFD_IOC_DESTROY_EVENT: KfdProcess._destroy_event,
    io.AMDKFD_IOC_SET_EVENT: KfdProcess._set_event,
    io.AMDKFD_IOC_RESET_EVENT: KfdProcess._reset_event,
    io.AMDKFD_IOC_WAIT_EVENTS: KfdProcess._wait_events,
    io.AMDKFD_IOC_GET_CLOCK_COUNTERS: KfdProcess._get_clock_counters,
    io.AMDKFD_IOC_SET_MEMORY_POLICY: KfdProcess._set_memory_policy,
    io.AMDKFD_IOC_SET_SCRATCH_BACKING_VA: KfdProcess._set_scratch_backing_va,
    io.AMDKFD_IOC_AVAILABLE_MEMORY: KfdProcess._available_memory,
    io.AMDKFD_IOC_SET_XNACK_MODE: KfdProcess._set_xnack_mode,
    io.AMDKFD_IOC_IMPORT_DMABUF: KfdProcess._import_dmabuf,
    io.AMDKFD_IOC_GET_DMABUF_INFO: KfdProcess._get_dmabuf_info,
    io.AMDKFD_IOC_SET_TRAP_HANDLER: KfdProcess._set_trap_handler,
    io.AMDKFD_IOC_GET_TILE_CONFIG: KfdProcess._get_tile_config,
}


class Kfd:
    """/dev/kfd of one System: opens processes, owns the topology and the runlist view."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.processes: dict[int, KfdProcess] = {}
        self._next_pasid = 0x8000  # amdgpu PASIDs are small ints; KFD's start high (guess)
        self._doorbell_slots: set[int] = set()
        self._free_doorbell_slots: list[int] = []  # min-heap of released process slots
        self.sysfs = render_cached(system)
        # Exported dma-bufs (prime_export): KFD-wide fd number -> the BO whose pages they carry
        self.dmabufs: dict[int, BufferObject] = {}
        self._next_dmabuf = 0x100  # above the fds a process has open at start (guess)
        system.register_interrupt_handler(self._interrupt)

    def open(self, name: str = "", backing: Callable[[int], object] | None = None) -> KfdProcess:
        pasid = self._next_pasid
        self._next_pasid += 1
        p = KfdProcess(self, pasid, name or f"process {pasid:#x}", backing)
        self.processes[pasid] = p
        self.note_runlist_change()
        return p

    def export_dmabuf(self, bo: BufferObject) -> int:
        for fd, other in self.dmabufs.items():
            if other is bo:
                return fd
        fd = self._next_dmabuf
        self._next_dmabuf += 1
        self.dmabufs[fd] = bo
        return fd

    def release(self, p: KfdProcess) -> None:
        self.processes.pop(p.pasid, None)
        # the exporter's fds close with it (imports keep the pages: they share the array)
        self.dmabufs = {fd: bo for fd, bo in self.dmabufs.items() if bo.pasid != p.pasid}
        if p.doorbell_slot in self._doorbell_slots:
            self._doorbell_slots.discard(p.doorbell_slot)
            heapq.heappush(self._free_doorbell_slots, p.doorbell_slot)
        self.note_runlist_change()

    def alloc_doorbell_slot(self) -> int:
        """The lowest free process doorbell frame (the driver's doorbell ida)."""
        if self._free_doorbell_slots:
            slot = heapq.heappop(self._free_doorbell_slots)
        else:
            slot = len(self._doorbell_slots)
        self._doorbell_slots.add(slot)
        return slot

    def doorbell_va(self, slot: int, g: Gpu) -> int:
        # The thunk maps doorbell frames high in the process's space; any free VA works.
        return 0x7F00_0000_0000 + (g.node << 32) + slot * DOORBELL_FRAME_SIZE

    def write_reports(self, directory: str) -> list[str]:
        """What a profiler attached to this machine writes (trace, kernel trace, stats)."""
        from hw_model.reports import write_reports

        return [str(p) for p in write_reports(self.system, directory)]

    def read_sysfs(self, path: str) -> str:
        p = path.rstrip("/")
        if p.startswith(DEBUGFS_ROOT + "/"):
            return self.read_debugfs(p[len(DEBUGFS_ROOT) + 1 :])
        try:
            return self.sysfs[p]
        except KeyError:
            raise FileNotFoundError(f"no such sysfs file: {path}") from None

    # -- runlist ---------------------------------------------------------------------------
    def note_runlist_change(self) -> None:
        tr = self.system.tracer
        if tr.enabled:
            tr.instant(
                "kfd", "runlist", self.system.host_now, self.runlist_summary(), cat="runlist"
            )

    def runlist_summary(self) -> dict:
        """What pm_calc_rlib_size weighs: processes with queues and active compute queues per
        device against max_proc_per_quantum (the KFD's VMIDs) and the HQDs it owns."""
        out: dict = {"processes": len(self.processes), "queues": 0, "oversubscribed": False}
        gpus = []
        for g in self.system.gpus:
            sched = g.scheduler
            rl = sched.runlist
            over = sched.oversubscribed
            out["queues"] += len(rl)
            out["oversubscribed"] |= over
            gpus.append(
                {
                    "gpu_id": g.gpu_id,
                    "processes": len(sched.processes),
                    "queues": len(rl),
                    "hqds": len(sched.slots),
                    "vmids": sched.vmids,
                    "oversubscribed": over,
                    "policy": sched.policy.name,
                }
            )
        out["gpus"] = gpus
        return out

    def runlist(self) -> list[dict]:
        """Every active queue of every process, per device: what the KFD hands the HWS."""
        out = []
        for g in self.system.gpus:
            sched = g.scheduler
            out.append(
                {
                    "node": g.node,
                    "gpu_id": g.gpu_id,
                    "policy": sched.policy.name,
                    "hqds": len(sched.slots),
                    "vmids": sched.vmids,
                    "oversubscribed": sched.oversubscribed,
                    "processes": sched.processes,
                    "queues": [
                        {
                            "pasid": q.pasid,
                            "process": self._process_name(q.pasid),
                            "queue_id": q.queue_id,
                            "type": "compute_aql",
                            "priority": q.priority,
                            "percentage": q.mqd.percentage,
                            "hqd": q.slot,
                            "state": q.state,
                            "runnable": q.runnable,
                            **sched.queue_stats(q),
                        }
                        for q in sched.runlist
                    ],
                    # map_queues packets with engine_sel SDMA0/SDMA1...: SDMA queues are in the
                    # runlist too, on the engine and RLC queue allocate_sdma_queue chose
                    "sdma_queues": [
                        {
                            "pasid": sq.pasid,
                            "process": self._process_name(sq.pasid),
                            **sq.describe(),
                        }
                        for sq in sorted(
                            g.sdma_queues.values(), key=lambda x: (x.engine_id, x.sdma_queue_id)
                        )
                        if sq.active
                    ],
                    "stats": sched.stats(),
                    "stuck": sched.diagnose(),
                }
            )
        return out

    def hqds(self) -> list[dict]:
        """Which queue each HQD of each device holds now."""
        return [
            {
                "node": g.node,
                "gpu_id": g.gpu_id,
                "hqds": g.scheduler.mapped_queues(),
                # SDMA RLC queues per engine: (engine, queue) -> what holds it
                "sdma": [
                    {
                        "engine": e.engine_id,
                        "type": "sdma_xgmi" if e.xgmi else "sdma",
                        "rlc_queues": g.spec.sdma_queues_per_engine,
                        "queues": [
                            {
                                "sdma_queue": q.sdma_queue_id,
                                "pasid": q.pasid,
                                "queue_id": q.queue_id,
                                "type": q.type_name,
                            }
                            for q in e.queues
                        ],
                    }
                    for e in g.sdma_engines
                ],
            }
            for g in self.system.gpus
        ]

    def _process_name(self, pasid: int) -> str:
        p = self.processes.get(pasid)
        return p.name if p is not None else ""

    def read_debugfs(self, name: str) -> str:
        """/sys/kernel/debug/kfd/{rls,hqds,mqds}. The real files dump the runlist IB and HQD
        registers in hex; these are JSON summaries of the same facts."""
        if name == "rls":
            return json.dumps(self.runlist(), indent=1)
        if name == "hqds":
            return json.dumps(self.hqds(), indent=1)
        if name == "mqds":
            return json.dumps([p.describe() for p in self.processes.values()], indent=1)
        raise FileNotFoundError(
            f"no such debugfs file: {DEBUGFS_ROOT}/{name} (there are rls, hqds, mqds)"
        )

    def _interrupt(self, node: int, source: str, pasid: int, data: dict) -> None:
        p = self.processes.get(pasid)
        if p is None:
            return
        if source == IRQ_SIGNAL_EVENT:
            # kfd_signal_event_interrupt (kfd_events.c), here rather than in a method of the
            # process as it runs once per completion signal with an event. A whole event id:
            # lookup_signaled_event_by_partial_id's fast path, the slot first (a signal
            # event's id is its slot; no other event has an id below the limit), then the
            # event; set_event_from_interrupt: acknowledge_signal, then set_event.
            event_id = data["event_id"]
            slots = p.event_slots
            if slots is None or event_id >= _SIGNAL_EVENT_LIMIT:
                return
            if slots[event_id] == UNSIGNALED_EVENT_SLOT:
                return
            ev = p.events.get(event_id)
            if ev is None:
                return
            slots[event_id] = UNSIGNALED_EVENT_SLOT
            # `signal` when it has more to do than set the flag and log it (an async waiter
            # to wake).
            if event_id in p._async_ids:
                p.signal(ev)
            else:
                ev.signaled = True
                if self.system.tracer.enabled:
                    system = self.system
                    system.tracer.log((_signaled_event, system.engine.now, event_id, p.pasid))
        elif source == IRQ_VM_FAULT:
            p.on_vm_fault(node, data)


def _signaled_event(ts: int, event_id: int, pasid: int) -> TraceEvent:
    """A KFD event set (kfd_events.c set_event), from the values logged (Tracer.log)."""
    return TraceEvent("i", "kfd", f"event {event_id} signaled", ts, 0, {"pasid": pasid}, "event")
