"""The thunk (ROCT-Thunk-Interface, libhsakmt): hsaKmt* calls turned into KFD ioctls.

Each call builds the `kfd_ioctl_*_args` model, encodes it to the C struct's bytes and hands it
to the transport, as libhsakmt does with ioctl(2) on /dev/kfd. The thunk also owns the
process's GPU virtual address space (libhsakmt's fmm.c: it picks VAs inside the GPUVM
aperture the KFD reports), maps buffer objects for the CPU (mmap), parses the sysfs topology
(topology.c) and allocates the event page for signal events (events.c). Names are hsaKmt's in
snake case; structures keep the C field names of hsakmttypes.h.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TypeVar

from hw_model.lazy_model import LazyModel
from rock_emu import ioctl as io
from rock_emu.ioctl import AllocMemFlags, KfdError
from rock_emu.mapping import HostMapping
from rock_emu.topology import TOPOLOGY_ROOT, parse_properties
from roct.transport import InProcess, Transport

PAGE_SIZE = 4096

_Args = TypeVar("_Args", io.IoctlArgs, io.FastArgs)

_WRITABLE_NO_SUBSTITUTE = int(AllocMemFlags.WRITABLE | AllocMemFlags.NO_SUBSTITUTE)
_VRAM = int(AllocMemFlags.VRAM)
_PUBLIC = int(AllocMemFlags.PUBLIC)
_GTT = int(AllocMemFlags.GTT)
_COHERENT = int(AllocMemFlags.COHERENT)
_EXECUTABLE = int(AllocMemFlags.EXECUTABLE)
_AQL_QUEUE_MEM = int(AllocMemFlags.AQL_QUEUE_MEM)


class HsaKmtStatus(IntEnum):
    """HSAKMT_STATUS (hsakmttypes.h)."""

    SUCCESS = 0
    ERROR = 1
    DRIVER_MISMATCH = 2
    INVALID_PARAMETER = 3
    INVALID_HANDLE = 4
    INVALID_NODE_UNIT = 5
    NO_MEMORY = 6
    BUFFER_TOO_SMALL = 7
    NOT_IMPLEMENTED = 10
    NOT_SUPPORTED = 11
    UNAVAILABLE = 12
    OUT_OF_RESOURCES = 13
    KERNEL_IO_CHANNEL_NOT_OPENED = 20
    KERNEL_COMMUNICATION_ERROR = 21
    KERNEL_ALREADY_OPENED = 22
    HSAMMU_UNAVAILABLE = 23
    WAIT_FAILURE = 30
    WAIT_TIMEOUT = 31
    MEMORY_ALREADY_REGISTERED = 35
    MEMORY_NOT_REGISTERED = 36
    MEMORY_ALIGNMENT = 37


_ERRNO_STATUS = {
    errno.EINVAL: HsaKmtStatus.INVALID_PARAMETER,
    errno.EFAULT: HsaKmtStatus.INVALID_PARAMETER,
    errno.ENOMEM: HsaKmtStatus.NO_MEMORY,
    errno.ENOSPC: HsaKmtStatus.OUT_OF_RESOURCES,
    errno.ENOTTY: HsaKmtStatus.NOT_SUPPORTED,
    errno.EPERM: HsaKmtStatus.NOT_SUPPORTED,
    errno.EDEADLK: HsaKmtStatus.WAIT_FAILURE,
    errno.EBADF: HsaKmtStatus.KERNEL_IO_CHANNEL_NOT_OPENED,
}


class HsaKmtError(Exception):
    def __init__(self, status: HsaKmtStatus, message: str, errno_: int | None = None) -> None:
        super().__init__(f"HSAKMT_STATUS_{status.name}: {message}")
        self.status = status
        self.message = message
        self.errno = errno_


# hsakmttypes.h HSA_QUEUE_PRIORITY -> KFD priority (libhsakmt queues.c priority_map)
QUEUE_PRIORITY_MAP = {-3: 0, -2: 3, -1: 5, 0: 7, 1: 9, 2: 11, 3: 15}
# hsaKmtCreateQueue's HSA_QUEUE_SDMA / HSA_QUEUE_SDMA_XGMI become these KFD queue types
# (libhsakmt queues.c); create_queue takes the KFD type.
QUEUE_TYPE_COMPUTE_AQL = io.KFD_IOC_QUEUE_TYPE_COMPUTE_AQL
QUEUE_TYPE_SDMA = io.KFD_IOC_QUEUE_TYPE_SDMA
QUEUE_TYPE_SDMA_XGMI = io.KFD_IOC_QUEUE_TYPE_SDMA_XGMI


class NodeProperties(LazyModel):
    """HsaNodeProperties (hsakmttypes.h), the fields this emulator fills."""

    NumCPUCores: int
    NumFComputeCores: int  # SIMD count
    NumMemoryBanks: int
    NumCaches: int
    NumIOLinks: int
    CComputeIdLo: int
    FComputeIdLo: int
    MaxWavesPerSIMD: int
    LDSSizeInKB: int
    WaveFrontSize: int
    NumShaderBanks: int
    NumArrays: int
    NumCUPerArray: int
    NumSIMDPerCU: int
    MaxSlotsScratchCU: int
    EngineId: int  # gfx_target_version
    VendorId: int
    DeviceId: int
    LocationId: int
    LocalMemSize: int
    MaxEngineClockMhzFCompute: int
    MaxEngineClockMhzCCompute: int
    DrmRenderMinor: int
    NumSdmaEngines: int
    NumSdmaQueuesPerEngine: int
    NumSdmaXgmiEngines: int = 0
    HiveID: int = 0  # XGMI hive; 0 when the GPU is in none
    NumCpQueues: int
    KFDGpuID: int
    AMDName: str  # the gfx target, e.g. "gfx900"

    @property
    def is_gpu(self) -> bool:
        return self.NumFComputeCores > 0


class MemoryProperties(LazyModel):
    """HsaMemoryProperties."""

    HeapType: int
    SizeInBytes: int
    Flags: int
    Width: int
    MemoryClockMax: int


@dataclass
class Allocation:
    address: int
    size: int
    handle: int
    node: int
    vram: bool
    mapping: HostMapping | None
    mapped_nodes: set[int] = field(default_factory=set)


# hsakmttypes.h HSA_EVENTTYPE: the same numbers as the KFD's KFD_IOC_EVENT_*
HSA_EVENTTYPE_SIGNAL = io.KFD_IOC_EVENT_SIGNAL
HSA_EVENTTYPE_MEMORY = io.KFD_IOC_EVENT_MEMORY

# hsakmttypes.h HSA_EVENTID_MEMORYFLAGS
HSA_EVENTID_MEMORY_RECOVERABLE = 0
HSA_EVENTID_MEMORY_FATAL_PROCESS = 1


@dataclass
class HsaAccessAttributeFailure:
    """hsakmttypes.h HsaAccessAttributeFailure (bit fields of a GPU memory fault)."""

    NotPresent: int = 0  # page not present or supervisor privilege
    ReadOnly: int = 0  # write to a read-only page
    NoExecute: int = 0  # execute on a no-execute page
    GpuAccess: int = 0  # host-only page
    ECC: int = 0
    Imprecise: int = 0  # the address may not be exact
    ErrorType: int = 0  # 0 none, 1 ECC SRAM, 2 poison, 3 hang


@dataclass
class HsaMemoryAccessFault:
    """hsakmttypes.h HsaMemoryAccessFault: EventData of an HSA_EVENTTYPE_MEMORY event."""

    NodeId: int
    VirtualAddress: int
    Failure: HsaAccessAttributeFailure
    Flags: int = HSA_EVENTID_MEMORY_FATAL_PROCESS


@dataclass
class HsaEvent:
    """HsaEvent: EventId plus HWData (HWData2 = the event's mailbox address)."""

    EventId: int
    EventType: int
    HWData2: int  # mailbox pointer: event page + slot * 8
    HWData3: int  # trigger data
    # EventData.EventData.MemoryAccessFault, filled when a wait on a memory event returns
    MemoryAccessFault: HsaMemoryAccessFault | None = None


@dataclass
class QueueResource:
    """HsaQueueResource: what hsaKmtCreateQueue returns."""

    QueueId: int
    Queue_DoorBell: int  # doorbell address in the process
    doorbell: HostMapping
    doorbell_offset: int  # byte offset of this queue's doorbell in the mapping
    Queue_write_ptr: int
    Queue_read_ptr: int


class Thunk:
    """An opened KFD: hsaKmtOpenKFD() ... hsaKmtCloseKFD()."""

    # Where fmm starts placing buffers in the GPUVM aperture (guess: above the low 4 GiB).
    VA_START = 0x1_0000_0000
    SCRATCH_SIZE = 64 * 1024  # part of the user heap used for ioctl arrays

    # The host clock (hsaKmt has none: the process's own time), asked several times per packet:
    # the transport's bound methods themselves, so a call costs one frame, not two.
    host_elapse: Callable[[int], int]  # spend `ps` of host time; returns the new host time
    host_now: Callable[[], int]  # host time in ps
    # spin until memory the host could poll changes, or until a host time (ps); False: never
    host_step: Callable[[int | None], bool]

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.host_elapse = transport.host_elapse
        self.host_now = transport.host_now
        self.host_step = transport.host_step
        # A trace marker made from `make(*values)` -> (track, name, args): the transport's
        # own, which may make it later, or one made and sent now.
        self.marker: Callable[[Callable[..., tuple | list], tuple], None] = getattr(
            transport, "marker", self._marker_now
        )
        self.allocations: dict[int, Allocation] = {}
        self._next_va = self.VA_START
        self.nodes: list[NodeProperties] = []
        self.gpu_ids: dict[int, int] = {}
        self.event_page: Allocation | None = None
        self.events: dict[int, HsaEvent] = {}
        self._doorbells: dict[int, HostMapping] = {}
        self.version = self.get_version()
        if self.version[0] != io.KFD_IOCTL_MAJOR_VERSION:
            raise HsaKmtError(
                HsaKmtStatus.DRIVER_MISMATCH,
                f"KFD ioctl version {self.version}, thunk built for {io.KFD_IOCTL_MAJOR_VERSION}.x",
            )
        self.acquire_system_properties()
        # The user heap is ordinary process memory: ioctl argument arrays live there.
        self._heap = transport.mmap(self._heap_offset(), self.SCRATCH_SIZE)
        for node, props in enumerate(self.nodes):
            if props.is_gpu:
                self._ioctl(
                    io.AMDKFD_IOC_ACQUIRE_VM,
                    io.AcquireVmArgs.fast(drm_fd=100 + node, gpu_id=props.KFDGpuID),
                )
        self.apertures = self._get_apertures()

    def _heap_offset(self) -> int:
        # The emulated process's heap BO is the first BO the KFD made for it (handle order).
        proc = getattr(self.transport, "process", None)
        if proc is None:
            raise HsaKmtError(HsaKmtStatus.NOT_SUPPORTED, "transport has no process heap")
        return proc.heap.handle << 12

    # -- plumbing --------------------------------------------------------------------------
    def _ioctl(self, request: int, args: _Args) -> _Args:
        # The thunk's own args are fast twins (io.FastArgs): the same bytes as the uapi models
        # without validating what it built itself; a model is accepted as well.
        buf = io.encode_args(args, request)
        try:
            self.transport.ioctl(request, buf)
        except KfdError as e:
            status = _ERRNO_STATUS.get(e.errno, HsaKmtStatus.ERROR)
            raise HsaKmtError(status, f"{io.request_name(request)} failed: {e}", e.errno) from e
        return type(args).from_buffer(buf)

    def _scratch_write(self, data: bytes) -> int:
        if len(data) > self.SCRATCH_SIZE:
            raise HsaKmtError(HsaKmtStatus.BUFFER_TOO_SMALL, "ioctl array too large")
        self._heap.array[: len(data)] = memoryview(data)
        return self._heap.address

    def _scratch_read(self, n: int) -> bytes:
        return bytes(self._heap.array[:n])

    def trace(self, track: str, name: str, **args: object) -> None:
        self.transport.trace_marker(track, name, args or None)

    def _marker_now(self, make: Callable[..., tuple | list], values: tuple) -> None:
        made = make(*values)
        for track, name, args in made if type(made) is list else [made]:
            self.transport.trace_marker(track, name, args or None)

    # -- version & topology ----------------------------------------------------------------
    def get_version(self) -> tuple[int, int]:
        a = self._ioctl(io.AMDKFD_IOC_GET_VERSION, io.GetVersionArgs.fast())
        return a.major_version, a.minor_version

    def acquire_system_properties(self) -> int:
        """hsaKmtAcquireSystemProperties: read the topology; returns the node count."""
        listing = self.transport.read_sysfs(f"{TOPOLOGY_ROOT}/nodes").split()
        self.nodes = []
        for n in sorted(int(x) for x in listing):
            props = parse_properties(
                self.transport.read_sysfs(f"{TOPOLOGY_ROOT}/nodes/{n}/properties")
            )
            gpu_id = int(self.transport.read_sysfs(f"{TOPOLOGY_ROOT}/nodes/{n}/gpu_id"))
            name = self.transport.read_sysfs(f"{TOPOLOGY_ROOT}/nodes/{n}/name").strip()
            self.nodes.append(
                NodeProperties(
                    NumCPUCores=props["cpu_cores_count"],
                    NumFComputeCores=props["simd_count"],
                    NumMemoryBanks=props["mem_banks_count"],
                    NumCaches=props["caches_count"],
                    NumIOLinks=props["io_links_count"],
                    CComputeIdLo=props["cpu_core_id_base"],
                    FComputeIdLo=props["simd_id_base"],
                    MaxWavesPerSIMD=props["max_waves_per_simd"],
                    LDSSizeInKB=props["lds_size_in_kb"],
                    WaveFrontSize=props["wave_front_size"],
                    NumShaderBanks=props["array_count"] // max(props["simd_arrays_per_engine"], 1)
                    if props["simd_arrays_per_engine"]
                    else 0,
                    NumArrays=props["simd_arrays_per_engine"],
                    NumCUPerArray=props["cu_per_simd_array"],
                    NumSIMDPerCU=props["simd_per_cu"],
                    MaxSlotsScratchCU=props["max_slots_scratch_cu"],
                    EngineId=props["gfx_target_version"],
                    VendorId=props["vendor_id"],
                    DeviceId=props["device_id"],
                    LocationId=props["location_id"],
                    LocalMemSize=props["local_mem_size"],
                    MaxEngineClockMhzFCompute=props.get("max_engine_clk_fcompute", 0),
                    MaxEngineClockMhzCCompute=props.get("max_engine_clk_ccompute", 0),
                    DrmRenderMinor=props["drm_render_minor"],
                    NumSdmaEngines=props["num_sdma_engines"],
                    NumSdmaQueuesPerEngine=props["num_sdma_queues_per_engine"],
                    NumSdmaXgmiEngines=props.get("num_sdma_xgmi_engines", 0),
                    HiveID=props.get("hive_id", 0),
                    NumCpQueues=props["num_cp_queues"],
                    KFDGpuID=gpu_id,
                    AMDName=name,
                )
            )
            if gpu_id:
                self.gpu_ids[n] = gpu_id
        return len(self.nodes)

    def get_node_properties(self, node: int) -> NodeProperties:
        try:
            return self.nodes[node]
        except IndexError:
            raise HsaKmtError(
                HsaKmtStatus.INVALID_NODE_UNIT,
                f"node {node} does not exist ({len(self.nodes)} nodes)",
            ) from None

    def get_node_memory_properties(self, node: int) -> list[MemoryProperties]:
        props = self.get_node_properties(node)
        out = []
        for b in range(props.NumMemoryBanks):
            p = parse_properties(
                self.transport.read_sysfs(f"{TOPOLOGY_ROOT}/nodes/{node}/mem_banks/{b}/properties")
            )
            out.append(
                MemoryProperties(
                    HeapType=p["heap_type"],
                    SizeInBytes=p["size_in_bytes"],
                    Flags=p["flags"],
                    Width=p["width"],
                    MemoryClockMax=p["mem_clk_max"],
                )
            )
        return out

    def _gpu_id(self, node: int) -> int:
        gid = self.gpu_ids.get(node)
        if gid is None:
            raise HsaKmtError(HsaKmtStatus.INVALID_NODE_UNIT, f"node {node} is not a GPU node")
        return gid

    def _any_gpu_id(self) -> int:
        if not self.gpu_ids:
            raise HsaKmtError(HsaKmtStatus.INVALID_NODE_UNIT, "this system has no GPU")
        return next(iter(self.gpu_ids.values()))

    def _get_apertures(self) -> list[io.ProcessDeviceApertures]:
        a = self._ioctl(
            io.AMDKFD_IOC_GET_PROCESS_APERTURES_NEW, io.GetProcessAperturesNewArgs.fast()
        )
        n = a.num_of_nodes
        size = io.ProcessDeviceApertures.SIZE
        ptr = self._scratch_write(bytes(size * n))
        self._ioctl(
            io.AMDKFD_IOC_GET_PROCESS_APERTURES_NEW,
            io.GetProcessAperturesNewArgs.fast(
                kfd_process_device_apertures_ptr=ptr, num_of_nodes=n
            ),
        )
        raw = self._scratch_read(size * n)
        return [
            io.ProcessDeviceApertures.from_bytes(raw[i * size : (i + 1) * size]) for i in range(n)
        ]

    # -- memory ----------------------------------------------------------------------------
    def _reserve_va(self, size: int) -> int:
        # fmm: big buffers get a 2 MiB-aligned VA so the GPU can use large pages.
        align = 2 * 1024 * 1024 if size >= 2 * 1024 * 1024 else PAGE_SIZE
        va = -(-self._next_va // align) * align
        self._next_va = va + -(-size // PAGE_SIZE) * PAGE_SIZE
        return va

    def alloc_memory(
        self,
        node: int,
        size: int,
        *,
        vram: bool = False,
        host_access: bool = True,
        coherent: bool = False,
        executable: bool = False,
        aql_queue: bool = False,
    ) -> Allocation:
        """hsaKmtAllocMemory: a BO on `node` (its VRAM, or system memory for node 0)."""
        if size <= 0:
            raise HsaKmtError(HsaKmtStatus.INVALID_PARAMETER, f"size {size} must be positive")
        gpu_id = self._gpu_id(node) if vram else self._any_gpu_id()
        # Plain ints: IntFlag arithmetic costs a Python call per operator.
        flags = _WRITABLE_NO_SUBSTITUTE
        if vram:
            flags |= _VRAM
            if host_access:
                flags |= _PUBLIC
        else:
            flags |= _GTT
        if coherent:
            flags |= _COHERENT
        if executable:
            flags |= _EXECUTABLE
        if aql_queue:
            flags |= _AQL_QUEUE_MEM
        va = self._reserve_va(size)
        a = self._ioctl(
            io.AMDKFD_IOC_ALLOC_MEMORY_OF_GPU,
            io.AllocMemoryOfGpuArgs.fast(va_addr=va, size=size, gpu_id=gpu_id, flags=flags),
        )
        mapping = self.transport.mmap(a.mmap_offset, size) if host_access else None
        alloc = Allocation(va, size, a.handle, node, vram, mapping)
        self.allocations[va] = alloc
        return alloc

    def _alloc(self, address: int) -> Allocation:
        a = self.allocations.get(address)
        if a is None:
            raise HsaKmtError(
                HsaKmtStatus.INVALID_PARAMETER,
                f"{address:#x} is not the start of an allocation of this process",
            )
        return a

    def free_memory(self, address: int) -> None:
        a = self._alloc(address)
        if a.mapped_nodes:
            self.unmap_memory_to_gpu(address)
        self._ioctl(io.AMDKFD_IOC_FREE_MEMORY_OF_GPU, io.FreeMemoryOfGpuArgs.fast(handle=a.handle))
        del self.allocations[address]

    def _ids_array(self, nodes: list[int]) -> tuple[int, int]:
        ids = [self._gpu_id(n) for n in nodes]
        ptr = self._scratch_write(b"".join(i.to_bytes(4, "little") for i in ids))
        return ptr, len(ids)

    def map_memory_to_gpu(self, address: int, nodes: list[int] | None = None) -> None:
        """hsaKmtMapMemoryToGPUNodes (all GPU nodes by default)."""
        a = self._alloc(address)
        nodes = nodes if nodes is not None else list(self.gpu_ids)
        todo = [n for n in nodes if n not in a.mapped_nodes]
        if not todo:
            return
        ptr, n = self._ids_array(todo)
        r = self._ioctl(
            io.AMDKFD_IOC_MAP_MEMORY_TO_GPU,
            io.MapMemoryToGpuArgs.fast(
                handle=a.handle, device_ids_array_ptr=ptr, n_devices=n, n_success=0
            ),
        )
        if r.n_success != n:
            raise HsaKmtError(HsaKmtStatus.ERROR, f"mapped on {r.n_success} of {n} GPUs")
        a.mapped_nodes.update(todo)

    def share_memory(self, address: int) -> tuple[int, int]:
        """hsaKmtShareMemory: (dma-buf fd, size) of the allocation at `address`, for another
        process to register (the dma-buf comes from the render node's PRIME export)."""
        a = self._alloc(address)
        export = getattr(self.transport, "prime_export", None)
        if export is None:
            raise HsaKmtError(HsaKmtStatus.NOT_SUPPORTED, "this transport cannot export memory")
        try:
            return int(export(a.handle)), a.size
        except KfdError as e:
            raise HsaKmtError(HsaKmtStatus.ERROR, f"dma-buf export failed: {e}", e.errno) from e

    def register_shared(self, dmabuf_fd: int, size: int) -> Allocation:
        """hsaKmtRegisterSharedHandle: AMDKFD_IOC_IMPORT_DMABUF of another process's dma-buf at
        a VA of this one, mapped for the host (not yet for the GPUs)."""
        va = self._reserve_va(size)
        r = self._ioctl(
            io.AMDKFD_IOC_IMPORT_DMABUF,
            io.ImportDmabufArgs.fast(va_addr=va, gpu_id=self._any_gpu_id(), dmabuf_fd=dmabuf_fd),
        )
        mapping = self.transport.mmap((r.handle & 0xFFFF_FFFF) << 12, size)
        alloc = Allocation(va, size, r.handle, 0, False, mapping)
        self.allocations[va] = alloc
        return alloc

    def unmap_memory_to_gpu(self, address: int, nodes: list[int] | None = None) -> None:
        a = self._alloc(address)
        nodes = [
            n for n in (nodes if nodes is not None else list(a.mapped_nodes)) if n in a.mapped_nodes
        ]
        if not nodes:
            return
        ptr, n = self._ids_array(nodes)
        self._ioctl(
            io.AMDKFD_IOC_UNMAP_MEMORY_FROM_GPU,
            io.UnmapMemoryFromGpuArgs.fast(handle=a.handle, device_ids_array_ptr=ptr, n_devices=n),
        )
        a.mapped_nodes.difference_update(nodes)

    def available_memory(self, node: int) -> int:
        a = self._ioctl(
            io.AMDKFD_IOC_AVAILABLE_MEMORY,
            io.GetAvailableMemoryArgs.fast(gpu_id=self._gpu_id(node)),
        )
        return a.available

    # -- queues ----------------------------------------------------------------------------
    def create_queue(
        self,
        node: int,
        *,
        ring_base: int,
        ring_size: int,
        read_ptr: int,
        write_ptr: int,
        percentage: int = 100,
        priority: int = 0,
        queue_type: int = io.KFD_IOC_QUEUE_TYPE_COMPUTE_AQL,
    ) -> QueueResource:
        """hsaKmtCreateQueue. `priority` is HSA_QUEUE_PRIORITY (-3..3), `ring_size` bytes."""
        if priority not in QUEUE_PRIORITY_MAP:
            raise HsaKmtError(
                HsaKmtStatus.INVALID_PARAMETER,
                f"priority {priority} not in HSA_QUEUE_PRIORITY -3..3",
            )
        gpu_id = self._gpu_id(node)
        a = self._ioctl(
            io.AMDKFD_IOC_CREATE_QUEUE,
            io.CreateQueueArgs.fast(
                ring_base_address=ring_base,
                ring_size=ring_size,
                read_pointer_address=read_ptr,
                write_pointer_address=write_ptr,
                gpu_id=gpu_id,
                queue_type=queue_type,
                queue_percentage=percentage,
                queue_priority=QUEUE_PRIORITY_MAP[priority],
            ),
        )
        # libhsakmt: mmap the process doorbell frame once per GPU; SOC15 puts the queue's byte
        # offset inside the frame in the low bits of doorbell_offset.
        frame_mask = 2 * PAGE_SIZE - 1
        db = self._doorbells.get(node)
        if db is None:
            db = self.transport.mmap(a.doorbell_offset & ~frame_mask, 2 * PAGE_SIZE)
            self._doorbells[node] = db
        off = a.doorbell_offset & frame_mask
        return QueueResource(a.queue_id, db.address + off, db, off, write_ptr, read_ptr)

    def destroy_queue(self, queue_id: int) -> None:
        self._ioctl(io.AMDKFD_IOC_DESTROY_QUEUE, io.DestroyQueueArgs.fast(queue_id=queue_id))

    def update_queue(
        self,
        queue_id: int,
        *,
        percentage: int = 100,
        priority: int = 0,
        ring_base: int = 0,
        ring_size: int = 0,
    ) -> None:
        if priority not in QUEUE_PRIORITY_MAP:
            raise HsaKmtError(
                HsaKmtStatus.INVALID_PARAMETER,
                f"priority {priority} not in HSA_QUEUE_PRIORITY -3..3",
            )
        self._ioctl(
            io.AMDKFD_IOC_UPDATE_QUEUE,
            io.UpdateQueueArgs.fast(
                queue_id=queue_id,
                queue_percentage=percentage,
                queue_priority=QUEUE_PRIORITY_MAP[priority],
                ring_base_address=ring_base,
                ring_size=ring_size,
            ),
        )

    def set_queue_cu_mask(self, queue_id: int, mask: list[int]) -> None:
        """hsaKmtSetQueueCUMask: `mask` is a list of 32-bit words."""
        ptr = self._scratch_write(b"".join(w.to_bytes(4, "little") for w in mask))
        self._ioctl(
            io.AMDKFD_IOC_SET_CU_MASK,
            io.SetCuMaskArgs.fast(queue_id=queue_id, num_cu_mask=32 * len(mask), cu_mask_ptr=ptr),
        )

    # -- events ----------------------------------------------------------------------------
    def create_event(
        self,
        event_type: int = io.KFD_IOC_EVENT_SIGNAL,
        manual_reset: bool = False,
        is_signaled: bool = False,
    ) -> HsaEvent:
        """hsaKmtCreateEvent. The first signal event also hands the KFD the event page."""
        page_handle = 0
        if event_type == io.KFD_IOC_EVENT_SIGNAL and self.event_page is None:
            size = io.KFD_SIGNAL_EVENT_LIMIT * 8
            self.event_page = self.alloc_memory(0, size, coherent=True)
            self.map_memory_to_gpu(self.event_page.address)
            page_handle = self.event_page.handle
        a = self._ioctl(
            io.AMDKFD_IOC_CREATE_EVENT,
            io.CreateEventArgs.fast(
                event_page_offset=page_handle,
                event_type=event_type,
                auto_reset=int(not manual_reset),
                node_id=0,
            ),
        )
        mailbox = 0
        if event_type == io.KFD_IOC_EVENT_SIGNAL and self.event_page is not None:
            mailbox = self.event_page.address + a.event_slot_index * 8
        ev = HsaEvent(a.event_id, event_type, mailbox, a.event_trigger_data)
        self.events[ev.EventId] = ev
        if is_signaled:
            self.set_event(ev)
        return ev

    def destroy_event(self, ev: HsaEvent) -> None:
        self._ioctl(io.AMDKFD_IOC_DESTROY_EVENT, io.DestroyEventArgs.fast(event_id=ev.EventId))
        self.events.pop(ev.EventId, None)

    def set_event(self, ev: HsaEvent) -> None:
        self._ioctl(io.AMDKFD_IOC_SET_EVENT, io.SetEventArgs.fast(event_id=ev.EventId))

    def reset_event(self, ev: HsaEvent) -> None:
        self._ioctl(io.AMDKFD_IOC_RESET_EVENT, io.ResetEventArgs.fast(event_id=ev.EventId))

    def wait_on_multiple_events(
        self, events: list[HsaEvent], wait_all: bool, timeout_ms: int
    ) -> tuple[HsaKmtStatus, list[io.EventData]]:
        """hsaKmtWaitOnMultipleEvents: SUCCESS or WAIT_TIMEOUT, plus the event data."""
        size = io.EventData.SIZE
        data = b"".join(io.EventData(event_id=e.EventId).to_bytes() for e in events)
        ptr = self._scratch_write(data)
        a = self._ioctl(
            io.AMDKFD_IOC_WAIT_EVENTS,
            io.WaitEventsArgs.fast(
                events_ptr=ptr,
                num_events=len(events),
                wait_for_all=int(wait_all),
                timeout=min(timeout_ms, 0xFFFFFFFF),
            ),
        )
        raw = self._scratch_read(size * len(events))
        out = [io.EventData.from_bytes(raw[i * size : (i + 1) * size]) for i in range(len(events))]
        for ev, d in zip(events, out, strict=True):
            if ev.EventType == io.KFD_IOC_EVENT_MEMORY:
                self._store_event_data(ev, d.memory_exception_data)
        if a.wait_result == io.KFD_IOC_WAIT_RESULT_COMPLETE:
            return HsaKmtStatus.SUCCESS, out
        if a.wait_result == io.KFD_IOC_WAIT_RESULT_TIMEOUT:
            return HsaKmtStatus.WAIT_TIMEOUT, out
        return HsaKmtStatus.WAIT_FAILURE, out

    def _store_event_data(self, ev: HsaEvent, data: io.HsaMemoryExceptionData) -> None:
        """As libhsakmt events.c does when WAIT_EVENTS returns: a memory event whose
        kfd_hsa_memory_exception_data names a GPU gets its MemoryAccessFault (gpu_id turned
        into the topology node id, Flags = HSA_EVENTID_MEMORY_FATAL_PROCESS)."""
        if ev.EventType != io.KFD_IOC_EVENT_MEMORY or not data.gpu_id:
            return
        node = next((n for n, g in self.gpu_ids.items() if g == data.gpu_id), 0)
        f = data.failure
        ev.MemoryAccessFault = HsaMemoryAccessFault(
            NodeId=node,
            VirtualAddress=data.va,
            Failure=HsaAccessAttributeFailure(
                NotPresent=f.NotPresent,
                ReadOnly=f.ReadOnly,
                NoExecute=f.NoExecute,
                Imprecise=f.imprecise,
                ErrorType=data.ErrorType,
            ),
            Flags=HSA_EVENTID_MEMORY_FATAL_PROCESS,
        )

    def wait_on_multiple_events_async(
        self, events: list[HsaEvent], on_wake: Callable[[HsaEvent], None]
    ) -> bool:
        """hsaKmtWaitOnMultipleEvents(events, wait any, no timeout) from a second thread, as
        ROCr's async events thread issues it: returns at once; when the KFD ends that wait,
        the event data are stored as hsaKmt stores them and `on_wake(event)` runs. The
        thread's time is its own. False when the transport cannot run such a thread."""
        start = getattr(self.transport, "wait_events_async", None)
        if start is None:
            return False
        by_id = {e.EventId: e for e in events}

        def woke(event_id: int, data: io.HsaMemoryExceptionData) -> None:
            ev = by_id.get(event_id)
            if ev is not None:
                self._store_event_data(ev, data)
                on_wake(ev)

        start(list(by_id), woke)
        return True

    def wait_on_event(self, ev: HsaEvent, timeout_ms: int) -> HsaKmtStatus:
        return self.wait_on_multiple_events([ev], True, timeout_ms)[0]

    # -- clocks & host ---------------------------------------------------------------------
    def get_clock_counters(self, node: int) -> io.FastArgs:
        """AMDKFD_IOC_GET_CLOCK_COUNTERS: the struct's members (gpu_clock_counter, ...)."""
        return self._ioctl(
            io.AMDKFD_IOC_GET_CLOCK_COUNTERS,
            io.GetClockCountersArgs.fast(gpu_id=self._gpu_id(node)),
        )

    def host_cost(self, name: str) -> int:
        return self.transport.host_cost(name)

    def read_debugfs(self, name: str) -> str:
        """The KFD's debugfs file /sys/kernel/debug/kfd/<name> (rls, hqds, mqds): runlist and
        HQD inspection, as a root user would read it. Not an hsaKmt call; for diagnosis."""
        try:
            return self.transport.read_sysfs(f"/sys/kernel/debug/kfd/{name}")
        except FileNotFoundError as e:
            raise HsaKmtError(HsaKmtStatus.INVALID_PARAMETER, str(e)) from None

    def close(self) -> None:
        """hsaKmtCloseKFD: the process lets go of /dev/kfd (queues and memory go with it)."""
        self.transport.close()


def open_kfd(transport: Transport | None = None, **kwargs: object) -> Thunk:
    """hsaKmtOpenKFD. Without a transport, a fresh emulated machine in this process."""
    return Thunk(transport if transport is not None else InProcess(**kwargs))  # type: ignore[arg-type]
