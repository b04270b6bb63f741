"""Command processor: one packet processor per user-mode AQL queue.

Models the CP's compute micro-engines (MEC/ACE) as gem5's `src/dev/hsa/hsa_packet_processor`
and the HSA 1.2 platform spec describe them. A packet processor works only while its queue is
mapped into a hardware queue slot (HQD). It fetches packets from the ring in memory between
its read index and the last doorbell value. A slot whose header is still INVALID stalls it,
and it keeps looking at that slot (a memory watch on the header, as ROCR-Runtime's
`AqlQueue::StoreRelaxed` expects: "The HW will stall on these packets until they enter a valid
state"), so a header published after the doorbell is picked up without another one. The
barrier bit waits until every earlier packet of the queue has retired, release fence done and
completion signal decremented (hsa.h `HSA_PACKET_HEADER_BARRIER`: "only launches when all
preceding packets (within the same queue) are complete"); a kernel
dispatch is validated, then handed to the dispatcher, and the next packet is fetched once all
the kernel's workgroups are dispatched. Packets retire in order: the release fence, the
completion signal decremented in memory (with start/end timestamps), an interrupt when the
signal has an event mailbox, the header written back to INVALID and `read_dispatch_id`
advanced in `amd_queue_t`.

Errors are reported as the CP firmware does (ROCR-Runtime `AqlQueue` queue-inactive handler):
the queue stops and the error bits go into the value of `amd_queue_t.queue_inactive_signal`,
whose event is then raised.
"""

from __future__ import annotations

import struct
from collections import defaultdict, deque
from enum import IntFlag
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict

from hw_model import aql
from hw_model.aql import PacketType
from hw_model.dispatcher import KernelLaunch
from hw_model.kernels import BUILTINS, ENTRY_TOKEN_SIZE, parse_entry_token
from hw_model.memory import VM_FAULT_CLIENT_SHADER, BufferObject, Memory, MemoryFault, Window
from hw_model.occupancy import occupancy_of, wg_requirements
from hw_model.structs import (
    AMD_QUEUE_QUEUE_INACTIVE_SIGNAL_OFFSET,
    AMD_QUEUE_READ_DISPATCH_ID_OFFSET,
    AMD_SIGNAL_END_TS_OFFSET,
    AMD_SIGNAL_EVENT_ID_OFFSET,
    AMD_SIGNAL_EVENT_MAILBOX_PTR_OFFSET,
    AMD_SIGNAL_START_TS_OFFSET,
    AMD_SIGNAL_VALUE_OFFSET,
    COMPUTE_PGM_RSRC3_GFX90A_ACCUM_OFFSET,
    KERNEL_DESCRIPTOR_SIZE,
    KernelDescriptor,
    decode_sgpr_count,
    decode_vgpr_count,
)
from hw_model.trace import FLUSH_RECORDS, TraceEvent

if TYPE_CHECKING:
    from hw_model.compute_unit import WgRequirements
    from hw_model.execution import KernelCode
    from hw_model.gpu import Gpu
    from hw_model.kernels.base import KernelSpec

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_LE_U64 = np.dtype("<u8")
_BARRIER_BIT = 1 << aql.HSA_PACKET_HEADER_BARRIER
# The header fields and packet words every packet reads, as module constants (one global load
# each instead of a module attribute lookup).
_PKT = aql.PACKET_SIZE
_ACQUIRE_SHIFT = aql.HSA_PACKET_HEADER_SCACQUIRE_FENCE_SCOPE
_RELEASE_SHIFT = aql.HSA_PACKET_HEADER_SCRELEASE_FENCE_SCOPE
_COMPLETION_OFFSET = aql.COMPLETION_SIGNAL_OFFSET
_KERNARG_OFFSET = aql.KERNEL_DISPATCH_KERNARG_ADDRESS_OFFSET
_SYSTEM_SCOPE = int(aql.FenceScope.SYSTEM)
_INVALID = int(PacketType.INVALID)
_KERNEL_DISPATCH = int(PacketType.KERNEL_DISPATCH)
# ROCr amd_aql_queue.cpp ExecutePM4: the vendor packet format of a PM4 indirect-buffer jump, and
# the PM4 type-3 opcodes (gfx9 pm4 headers, ROCr amd_blit_shaders / pm4 defs) it may carry.
AMD_AQL_FORMAT_PM4_IB = 0x1
PM4_IT_NOP = 0x10
PM4_IT_INDIRECT_BUFFER = 0x3F
PM4_IT_ACQUIRE_MEM = 0x58
# Decoded kernel descriptors by their 64 bytes, and (spec, requirements, occupancy) by kernel
# shape: every dispatch of a kernel reads the same descriptor and needs the same occupancy.
_KD_CACHE: dict[bytes, KernelDescriptor] = {}
_OCC_CACHE: dict[tuple, tuple] = {}
# (COMPUTE_PGM_RSRC1, VGPR granule) -> (VGPRs per work-item, SGPRs per wave).
_REGS_CACHE: dict[tuple[int, int], tuple[int, int]] = {}
# A built-in kernel's launch after every check passed: (kernel, grid, workgroup, its needs,
# its descriptor), by what the checks read (the packet's geometry, segment sizes and kernel
# object, the descriptor's and entry's bytes). The same packet of a loop is checked once.
_LAUNCH_CACHE: dict[tuple, tuple] = {}
# The most bytes from a kernel's descriptor to its entry token a queue compares per packet
# instead of checking them (a guess: a built-in code object has its entry 256 bytes on).
_LAUNCH_HIT_SPAN = 512


class QueueErrorBits(IntFlag):
    """Error code the CP writes into the queue-inactive signal (ROCR-Runtime amd_aql_queue.cpp)."""

    INVALID_DIMENSION = 0x2  # -> HSA_STATUS_ERROR_INCOMPATIBLE_ARGUMENTS
    INVALID_GROUP_MEMORY = 0x4  # -> HSA_STATUS_ERROR_INVALID_ALLOCATION
    INVALID_CODE = 0x8  # invalid or NULL code -> HSA_STATUS_ERROR_INVALID_CODE_OBJECT
    INVALID_FORMAT = 0x20  # -> HSA_STATUS_ERROR_INVALID_PACKET_FORMAT
    GROUP_TOO_LARGE = 0x40  # workgroup too large -> HSA_STATUS_ERROR_INVALID_ARGUMENT
    OUT_OF_VGPRS = 0x80  # -> HSA_STATUS_ERROR_INVALID_ISA (ROCm 5.2)
    VENDOR_FORMAT = 0x100  # unsupported vendor packet -> HSA_STATUS_ERROR_INVALID_PACKET_FORMAT
    MEMORY_VIOLATION = 0x20000000  # -> HSA_STATUS_ERROR_MEMORY_APERTURE_VIOLATION
    ILLEGAL_INSTRUCTION = 0x40000000  # -> HSA_STATUS_ERROR_ILLEGAL_INSTRUCTION
    DEBUG_TRAP = 0x80000000  # -> HSA_STATUS_ERROR_EXCEPTION


class Mqd(BaseModel):
    """Memory queue descriptor: what the KFD gives the hardware about a user queue.

    Named after the fields of gfx9's `v9_mqd` that matter here (cp_hqd_pq_base, the rptr
    report and wptr poll addresses, the doorbell) plus the KFD's queue properties.
    """

    model_config = ConfigDict(extra="forbid")
    queue_id: int
    pasid: int
    process_name: str = ""
    ring_base: int  # cp_hqd_pq_base
    ring_size: int  # bytes
    rptr_addr: int  # cp_hqd_pq_rptr_report_addr: &amd_queue_t.read_dispatch_id
    wptr_addr: int  # cp_hqd_pq_wptr_poll_addr: &amd_queue_t.write_dispatch_id
    doorbell_index: int  # global doorbell index (process doorbell page + queue offset)
    priority: int = 7  # KFD_MAX_QUEUE_PRIORITY / 2 is ROCr's default "normal"
    percentage: int = 100
    is_aql: bool = True

    @property
    def amd_queue_addr(self) -> int:
        return self.rptr_addr - AMD_QUEUE_READ_DISPATCH_ID_OFFSET

    @property
    def ring_packets(self) -> int:
        return self.ring_size // aql.PACKET_SIZE


class _InFlight:
    """A packet taken off the ring and not retired yet."""

    # Until set on the packet: not done, no start time (class defaults, one store fewer each
    # for every packet).
    done = False
    start = 0

    def __init__(self, dispatch_id: int, kind: str, completion_signal: int, release: int) -> None:
        self.dispatch_id = dispatch_id
        self.kind = kind
        self.completion_signal = completion_signal
        self.release = release
        self.name = kind


def _packets(w: Window) -> np.ndarray:
    """A window over a ring as its packets: one 64-byte row per slot (views, no copies)."""
    n = w.size // _PKT
    return w.data[w.off : w.off + n * _PKT].reshape(n, _PKT)


class _LaunchHit:
    """A queue's last built-in launch that passed every check, with where its checks read:
    the packet's bytes 2..40 (geometry, segment sizes, kernel object) and the bytes of the
    kernel object's BO from its descriptor to its entry token (a view, which `map_epoch` and
    the BO's GPU mapping keep valid), and what the checks gave. A loop's packets are each
    compared with it instead of checked."""

    __slots__ = (
        "packet",
        "epoch",
        "bo",
        "view",
        "image",
        "kd",
        "kernel",
        "name",
        "grid",
        "wg",
        "req",
    )

    def __init__(
        self, packet: bytes, epoch: int, bo: BufferObject, lo: int, hi: int, kd, hit: tuple
    ) -> None:
        self.packet = packet
        self.epoch = epoch
        self.bo = bo
        self.view = bo.data[lo:hi]
        self.image = self.view.tobytes()
        self.kd = kd
        _, self.kernel, self.grid, self.wg, self.req = hit
        self.name = self.kernel.name


class PacketProcessor:
    """The AQL packet processor of one queue. Its state lives with the queue (as in the MQD),
    so a queue that is unmapped and mapped again resumes where it stopped."""

    def __init__(self, gpu: Gpu, mqd: Mqd) -> None:
        self.gpu = gpu
        self.mqd = mqd
        self.read_index = 0  # next packet to fetch
        self.retired = 0  # == read_dispatch_id in memory
        self.doorbell_value = -1  # last value written to the doorbell
        self.slot: int | None = None  # HQD slot, None when unmapped
        self.inflight: deque[_InFlight] = deque()
        self.error: QueueErrorBits | None = None
        self.error_message = ""
        self.stalled_invalid = False  # slot header INVALID at fetch time
        self.waiting_barrier_bit = False
        self.blocked_barrier: _Barrier | None = None
        self.dispatching: KernelLaunch | None = None
        self._fetch_event = None
        self._retire_at = 0
        self.destroyed = False
        self.cu_mask: set[int] | None = None  # AMDKFD_IOC_SET_CU_MASK
        # HW scheduler bookkeeping (hw_model/scheduler.py owns these)
        self.active = True  # in the runlist (queue_percentage > 0)
        self.sched_serial = 0  # position in the runlist, for round-robin
        self.swaps_in = 0  # times a quantum swap mapped this queue
        self.swaps_out = 0  # times a quantum swap unmapped it
        # ps per state (see HwScheduler._acct); a state gets its key with its first time
        self.time_in_state: defaultdict[str, int] = defaultdict(int)
        self.run_folded = 0  # of its mapped-running time, what its slots have counted
        self.acct_state = "unmapped"
        self.acct_slot: int | None = None
        self.acct_since = gpu.engine.now
        self.occ_since = gpu.engine.now  # since when acct_slot has held it
        self._processing = False  # a fetched packet is in its processing delay
        self._head_watch: _Barrier | None = None  # unmapped: watches the head barrier's deps
        self._hdr_watch: int | None = None  # address of an INVALID header being watched
        self._hdr_pending = False
        # What this queue's packets reach every time, kept from their checked accesses (each
        # tested at every use, see memory.Window): the ring read by the fetch; the ring and
        # read_dispatch_id stored by the retire, made together; the last launch's checks.
        self._ring_view: Window | None = None
        self._plain_ring: Window | None = None
        self._plain_rptr: Window | None = None
        self._plain_failed = -1  # plain_epoch when they could not be made (no retry till then)
        self._launch_hit: _LaunchHit | None = None

    def __getstate__(self) -> dict:
        # A checkpoint leaves out the kept windows and launch (views of memory a copy would
        # not follow): the restored queue makes them again from its first packets.
        state = self.__dict__.copy()
        state.update(_ring_view=None, _plain_ring=None, _plain_rptr=None, _launch_hit=None)
        return state

    # -- state -----------------------------------------------------------------------------
    @property
    def queue_id(self) -> int:
        return self.mqd.queue_id

    @property
    def has_work(self) -> bool:
        """Packets rung but not retired."""
        return self.doorbell_value + 1 > self.retired or bool(self.inflight)

    @property
    def packets_processed(self) -> int:
        """Packets fetched and not dropped: every fetch moves the read index on by one, and
        a packet dropped mid-processing (unmapped) moves it back, so it is the read index."""
        return self.read_index

    @property
    def has_unfetched(self) -> bool:
        return self.doorbell_value + 1 > self.read_index

    @property
    def pasid(self) -> int:
        return self.mqd.pasid

    @property
    def priority(self) -> int:
        """KFD queue priority, 0..15 (CREATE_QUEUE / UPDATE_QUEUE)."""
        return self.mqd.priority

    @property
    def busy(self) -> bool:
        """Something dispatched and unfinished (gem5's notion of a non-idle queue)."""
        return any(not e.done for e in self.inflight if e.kind == "kernel")

    @property
    def idle(self) -> bool:
        """May leave its HQD (gem5 `isRLQIdle`: `inFlightPkts == dispIdx - rdIdx == 0`): no
        kernel dispatched and unfinished. gem5 advances `dispIdx` only once a packet has been
        processed and submitted, so a packet still in its processing delay, or a barrier that
        is blocked, is not in flight: unmapping abandons that processing, and the packet is
        fetched again when the queue is mapped."""
        if self.error is not None:
            return True
        if self.dispatching is not None:
            return False
        # not `busy`, inline (a loop, not any(): no generator frame): the HW scheduler asks
        # it of HQDs' queues when it picks
        for e in self.inflight:  # noqa: SIM110
            if not e.done and e.kind == "kernel":
                return False
        return True

    @property
    def state(self) -> str:
        if self.error is not None:
            return "error"
        if self.slot is None:
            return "unmapped"
        if self.blocked_barrier is not None:
            return "blocked-on-barrier"
        # (has_unfetched inline: the HW scheduler asks twice a packet)
        if (
            self.inflight
            or self._processing
            or (self.doorbell_value >= self.read_index and not self.stalled_invalid)
        ):
            return "mapped-running"
        return "mapped-idle"

    @property
    def runnable(self) -> bool:
        """Its next packet could start now: not empty, not stalled on an INVALID header, not
        behind the barrier bit, not a barrier whose dependencies are unmet. For an unmapped
        queue this peeks at the ring in memory (an oracle the ready_first policy uses)."""
        if self.error is not None or self.destroyed:
            return False
        if self._processing and self.slot is not None:
            return True  # the CP is working on its next packet right now
        try:
            if self.blocked_barrier is not None:
                return self.blocked_barrier.satisfied()
            if not self.has_unfetched or self.stalled_invalid:
                return False
            raw = self._peek(self.read_index)
            header = _U16.unpack_from(raw, 0)[0]
            if header & 0xFF == PacketType.INVALID:
                return False
            if aql.header_barrier(header) and self.retired < self.read_index:
                return False
            b = self._barrier_of(raw, self.read_index)
            return b is None or b.satisfied()
        except MemoryFault:
            return True  # mapping it shows the fault as a queue error

    def _peek(self, idx: int) -> bytes:
        mqd = self.mqd
        va = mqd.ring_base + (idx % mqd.ring_packets) * aql.PACKET_SIZE
        return self.gpu.memory.gpu_view(mqd.pasid, self.gpu.node, va, aql.PACKET_SIZE).tobytes()

    def _barrier_of(self, raw: bytes, idx: int) -> _Barrier | None:
        """A (not armed) _Barrier for a barrier-AND/OR/value packet's bytes, else None."""
        ptype = raw[0]
        completion = _U64.unpack_from(raw, aql.COMPLETION_SIGNAL_OFFSET)[0]
        if ptype in (PacketType.BARRIER_AND, PacketType.BARRIER_OR):
            entry = _InFlight(idx, "barrier", completion, 0)
            entry.name = "barrier-AND" if ptype == PacketType.BARRIER_AND else "barrier-OR"
            deps = [d for d in struct.unpack_from("<5Q", raw, aql.BARRIER_DEP_SIGNAL_OFFSET) if d]
            return _Barrier(self, entry, deps, ptype == PacketType.BARRIER_AND)
        if (
            ptype == PacketType.VENDOR_SPECIFIC
            and raw[aql.AMD_VENDOR_FORMAT_OFFSET] == aql.HSA_AMD_PACKET_TYPE_BARRIER_VALUE
        ):
            entry = _InFlight(idx, "barrier", completion, 0)
            entry.name = "barrier-value"
            sig, value, mask, cond = struct.unpack_from(
                "<QqqI", raw, aql.AMD_BARRIER_VALUE_SIGNAL_OFFSET
            )
            return _Barrier(self, entry, [sig], True, (value, mask, cond))
        return None

    def head_barrier(self) -> _Barrier | None:
        """The barrier holding this queue up: the blocked one, or (unmapped) the next packet's."""
        if self.blocked_barrier is not None:
            return self.blocked_barrier
        if not self.has_unfetched:
            return None
        try:
            return self._barrier_of(self._peek(self.read_index), self.read_index)
        except MemoryFault:
            return None

    # -- mapping (called by the HW scheduler) ----------------------------------------------
    def on_mapped(self) -> None:
        """The queue got an HQD: resume where it stopped, re-checking a blocked barrier."""
        self._drop_head_watch()
        b = self.blocked_barrier
        if b is not None and self.error is None:
            try:
                ok = b.satisfied()
            except MemoryFault:
                ok = False
            if ok:
                b.disarm()
                self._barrier_done(b)
            elif not b._armed:
                b.arm()
        self.kick()

    def on_unmapped(self) -> None:
        """The queue lost its HQD. Its state stays here; its dependencies stay watched, so the
        scheduler hears when it could run again."""
        self._watch_head()

    def _watch_head(self) -> None:
        """Unmapped, with a barrier packet at the head not yet started: watch its signals; with
        an INVALID header at the head: watch the header."""
        self._drop_head_watch()
        if self.slot is not None or self.blocked_barrier is not None or self.error is not None:
            return
        if self.destroyed or not self.has_unfetched:
            return
        try:
            raw = self._peek(self.read_index)
        except MemoryFault:
            return
        if raw[0] == PacketType.INVALID:
            self._watch_header(self.read_index)
            return
        b = self._barrier_of(raw, self.read_index)
        if b is None:
            return
        try:
            if b.satisfied():
                return
        except MemoryFault:
            return
        b.peek_only = True
        b.arm()
        self._head_watch = b

    def _drop_head_watch(self) -> None:
        if self._head_watch is not None:
            self._head_watch.disarm()
            self._head_watch = None
        if self._hdr_watch is not None:
            self.gpu.memory.unwatch(self.mqd.pasid, self._hdr_watch, self._header_written)
            self._hdr_watch = None

    def _watch_header(self, idx: int) -> None:
        """Watch the header of packet `idx` (INVALID now) for the producer's store."""
        mqd = self.mqd
        va = mqd.ring_base + (idx % mqd.ring_packets) * aql.PACKET_SIZE
        if self._hdr_watch == va:
            return
        if self._hdr_watch is not None:
            self.gpu.memory.unwatch(mqd.pasid, self._hdr_watch, self._header_written)
        self._hdr_watch = va
        self.gpu.memory.watch(mqd.pasid, va, self._header_written)

    def _header_written(self) -> None:
        if not self._hdr_pending:
            self._hdr_pending = True
            self.gpu.engine.schedule(0, self._header_published, priority=4)

    def _header_published(self) -> None:
        """The watched header was stored to: look at the slot again (mapped: fetch it; a
        still INVALID header stalls and is watched again)."""
        self._hdr_pending = False
        if self.error is not None or self.destroyed or self._hdr_watch is None:
            return
        self.stalled_invalid = False
        if self.slot is None:
            self._watch_head()
        else:
            self._drop_head_watch()
            self.kick()
        self.gpu.scheduler.queue_changed(self)

    # -- doorbell --------------------------------------------------------------------------
    def ring(self, value: int) -> None:
        if value > self.doorbell_value:
            self.doorbell_value = value
        self.stalled_invalid = False
        if self.gpu.tracer.enabled:
            gpu = self.gpu
            gpu.tracer.log((_doorbell_event, gpu.engine.now, self.mqd.queue_id, value, self.slot))
        if self.slot is None:
            self._watch_head()
        elif (
            self.doorbell_value >= self.read_index
            and self._fetch_event is None
            and self.error is None
        ):
            # `kick()` inline, its slot test made already: once per packet.
            self._fetch_event = self.gpu.engine.post(0, 3, self._fetch)
        self.gpu.scheduler.queue_changed(self)

    @property
    def _track(self) -> str:
        return f"queue {self.mqd.queue_id}"

    # -- fetch -----------------------------------------------------------------------------
    def kick(self, delay: int = 0) -> None:
        # Nothing rung past the read index: a fetch would find nothing, and only `ring` moves
        # the doorbell (it kicks again). A queue just mapped (CREATE_QUEUE) or drained so
        # leaves no event pending, and its device counts as quiet.
        if self.doorbell_value < self.read_index:  # not has_unfetched (inline: 3 per packet)
            return
        if self._fetch_event is None and self.slot is not None and self.error is None:
            self._fetch_event = self.gpu.engine.post(delay, 3, self._fetch)

    def _fetch(self) -> None:
        self._fetch_event = None
        if self.slot is None or self.error is not None or self.destroyed:
            return
        if self.dispatching is not None or self.blocked_barrier is not None:
            return
        idx = self.read_index
        if self.doorbell_value < idx:  # nothing unfetched
            return
        gpu = self.gpu
        mqd = self.mqd
        w = self._ring_view
        if (
            w is not None
            and w.key is mqd
            and w.epoch == gpu.memory.map_epoch
            and gpu.node in w.bo.gpu_nodes
        ):
            # The whole ring passed `gpu_view`'s checks and nothing they read has changed.
            raw = w.aux[idx % (mqd.ring_size // _PKT)].tobytes()
        else:
            raw = self._read_slot(idx)
            if raw is None:
                return
        header = _U16.unpack_from(raw, 0)[0]
        if header & 0xFF == _INVALID:
            # The producer has not published this slot yet: stall here, watching the header.
            self.stalled_invalid = True
            self._watch_header(idx)
            if gpu.tracer.enabled:
                gpu.tracer.instant(
                    self._track, "stall: header INVALID", gpu.engine.now, {"index": idx}
                )
            gpu.scheduler.queue_changed(self)
            return
        if header & _BARRIER_BIT and self.retired < idx:
            # Every earlier packet must have retired, not only finished: _retire kicks again.
            self.waiting_barrier_bit = True
            return
        self.waiting_barrier_bit = False
        if gpu.tracer.enabled:
            tr = gpu.tracer
            tr.log((_fetch_event, gpu.engine.now, mqd.queue_id, idx, mqd.ring_size, header))
            if len(tr.pending) >= FLUSH_RECORDS:  # (one record a packet: kept bounded)
                tr.flush()
        self.read_index = idx + 1
        latency = gpu.fetch_ps[(header >> _ACQUIRE_SHIFT) & 3]
        # Not a real event: the packet's processing occupies the packet processor.
        self._processing = True
        self._fetch_event = gpu.engine.post(latency, 3, self._process, idx, raw, header)

    def _read_slot(self, idx: int) -> bytes | None:
        """Packet `idx`'s bytes, the queue's window of its ring made again for the next ones
        (or, the whole ring not passing the check, the slot read alone). None after the queue
        error a fault reading it raises."""
        gpu = self.gpu
        mqd = self.mqd
        w = self._ring_view = gpu.memory.view_window(
            mqd.pasid, mqd.ring_base, mqd.ring_size, gpu.node
        )
        if w is not None:
            w.key = mqd
            w.aux = _packets(w)
            return w.aux[idx % (mqd.ring_size // _PKT)].tobytes()
        slot_va = mqd.ring_base + (idx % (mqd.ring_size // _PKT)) * _PKT
        try:
            return gpu.memory.gpu_view(mqd.pasid, gpu.node, slot_va, _PKT).tobytes()
        except MemoryFault as f:
            self._queue_error(QueueErrorBits.MEMORY_VIOLATION, f"ring fetch faulted: {f}")
            return None

    def _process(self, idx: int, raw: bytes, header: int) -> None:
        """The fetched packet `raw` (its `header` as fetched) after its processing delay."""
        self._fetch_event = None
        self._processing = False
        if self.error is not None or self.destroyed:
            return
        if self.slot is None:
            # Unmapped mid-packet (the HWS swapped the queue out, or the KFD deactivated it):
            # the CP drops the work in progress and fetches the packet again when mapped.
            self.read_index = idx
            self._watch_head()
            self.gpu.scheduler.queue_changed(self)
            return
        ptype = header & 0xFF
        release = (header >> _RELEASE_SHIFT) & 3
        completion = _U64.unpack_from(raw, _COMPLETION_OFFSET)[0]
        gpu = self.gpu
        if (header >> _ACQUIRE_SHIFT) & 3 == _SYSTEM_SCOPE:
            # The acquire fence: the L2 drops clean lines of coarse-grained memory, so what
            # the host stored before this packet is seen (docs/memory.md, "Coherence").
            gpu.memory.l2_acquire_system(gpu.node)
        if ptype == _KERNEL_DISPATCH:
            entry = _InFlight(idx, "kernel", completion, release)
            self._dispatch(idx, raw, entry)
        elif ptype in (PacketType.BARRIER_AND, PacketType.BARRIER_OR):
            entry = _InFlight(idx, "barrier", completion, release)
            entry.name = "barrier-AND" if ptype == PacketType.BARRIER_AND else "barrier-OR"
            deps = [d for d in struct.unpack_from("<5Q", raw, aql.BARRIER_DEP_SIGNAL_OFFSET) if d]
            self._start_barrier(entry, _Barrier(self, entry, deps, ptype == PacketType.BARRIER_AND))
        elif (
            ptype == PacketType.VENDOR_SPECIFIC
            and raw[aql.AMD_VENDOR_FORMAT_OFFSET] == AMD_AQL_FORMAT_PM4_IB
        ):
            entry = _InFlight(idx, "pm4-ib", completion, release)
            if not self._run_pm4_ib(idx, raw):
                return
            self.inflight.append(entry)
            self._complete(entry)
            self.kick()
        elif ptype == PacketType.VENDOR_SPECIFIC:
            fmt = raw[aql.AMD_VENDOR_FORMAT_OFFSET]
            if fmt != aql.HSA_AMD_PACKET_TYPE_BARRIER_VALUE:
                self._queue_error(
                    QueueErrorBits.VENDOR_FORMAT,
                    f"packet {idx}: vendor-specific packet with AmdFormat {fmt} is not supported "
                    f"(only HSA_AMD_PACKET_TYPE_BARRIER_VALUE = 2)",
                )
                return
            entry = _InFlight(idx, "barrier", completion, release)
            entry.name = "barrier-value"
            sig, value, mask, cond = struct.unpack_from(
                "<QqqI", raw, aql.AMD_BARRIER_VALUE_SIGNAL_OFFSET
            )
            self._start_barrier(entry, _Barrier(self, entry, [sig], True, (value, mask, cond)))
        elif ptype == PacketType.AGENT_DISPATCH:
            atype = _U16.unpack_from(raw, aql.AGENT_DISPATCH_TYPE_OFFSET)[0]
            if atype != 0:
                self._queue_error(
                    QueueErrorBits.INVALID_FORMAT,
                    f"packet {idx}: agent dispatch type {atype} has no service on a GPU queue "
                    "(only type 0, NOP, completes)",
                )
                return
            entry = _InFlight(idx, "agent-nop", completion, release)
            self.inflight.append(entry)
            self._complete(entry)
            self.kick()
        else:
            self._queue_error(
                QueueErrorBits.INVALID_FORMAT,
                f"packet {idx}: header type {ptype} is not an AQL packet type "
                "(0 vendor, 2 kernel dispatch, 3 barrier-AND, 4 agent dispatch, 5 barrier-OR)",
            )
            return
        # (the clock has not moved: nothing here fires an event)
        if gpu.tracer.enabled and self.error is None:
            gpu.tracer.log((_packet_event, gpu.engine.now, self.mqd.queue_id, idx, entry.name))

    def _run_pm4_ib(self, idx: int, raw: bytes) -> bool:
        """ROCr's AqlQueue::ExecutePM4 on gfx9+: a vendor packet (AMD_AQL_FORMAT_PM4_IB) whose
        body is a PM4 INDIRECT_BUFFER jump to commands in memory. ROCr sends one ACQUIRE_MEM
        (GpuAgent::InvalidateCodeCaches after loading code): it invalidates the shader
        caches and the L2, which here is the system-scope acquire. NOPs are skipped; any other
        PM4 opcode is a queue error naming it. False when the packet failed the queue."""
        hdr, lo, hi, size_dw = struct.unpack_from("<4I", raw, 4)
        if (hdr >> 30) != 3 or (hdr >> 8) & 0xFF != PM4_IT_INDIRECT_BUFFER:
            self._queue_error(
                QueueErrorBits.VENDOR_FORMAT,
                f"packet {idx}: PM4 IB packet without an INDIRECT_BUFFER jump "
                f"(first dword {hdr:#010x})",
            )
            return False
        base = (lo & ~0x3) | (hi & 0xFFFF) << 32
        n = size_dw & 0xFFFFF
        gpu = self.gpu
        try:
            ib = gpu.memory.gpu_view(self.mqd.pasid, gpu.node, base, 4 * n).tobytes()
        except MemoryFault as f:
            self._queue_error(
                QueueErrorBits.MEMORY_VIOLATION,
                f"packet {idx}: reading the PM4 indirect buffer at {base:#x} faulted: {f.reason}",
                fault=f,
            )
            return False
        pos = 0
        while pos < n:
            word = _U32.unpack_from(ib, 4 * pos)[0]
            if word >> 30 != 3:  # type-2 filler (and type 0/1, which the CP skips here)
                pos += 1
                continue
            opcode = (word >> 8) & 0xFF
            if opcode == PM4_IT_ACQUIRE_MEM:
                gpu.memory.l2_acquire_system(gpu.node)
            elif opcode != PM4_IT_NOP:
                self._queue_error(
                    QueueErrorBits.VENDOR_FORMAT,
                    f"packet {idx}: PM4 opcode {opcode:#x} in the indirect buffer is not "
                    "emulated (ACQUIRE_MEM 0x58 and NOP 0x10 are)",
                )
                return False
            pos += ((word >> 16) & 0x3FFF) + 2  # header + count + 1 body dwords
        return True

    # -- kernels ---------------------------------------------------------------------------
    def _dispatch(self, idx: int, raw: bytes, entry: _InFlight) -> None:
        gpu = self.gpu
        h = self._launch_hit
        if (
            h is not None
            and raw[2:40] == h.packet
            and h.epoch == gpu.memory.map_epoch
            and gpu.node in h.bo.gpu_nodes
            and h.view.tobytes() == h.image
            and BUILTINS.get(h.name) is h.kernel
        ):
            # This queue's last launch, everything its checks read the same (the packet, the
            # descriptor's and entry's bytes, found where they were; the GPU's spec, which is
            # its own for good): the same launch.
            if h.kd.kernarg_size:
                kernarg = self._kernarg(idx, h.kd, _U64.unpack_from(raw, _KERNARG_OFFSET)[0])
                if kernarg is None:
                    return
            else:
                kernarg = b""
            self._launch(idx, entry, h.name, h.kernel, None, h.grid, h.wg, h.req, kernarg)
            return
        ko = _U64.unpack_from(raw, aql.KERNEL_DISPATCH_KERNEL_OBJECT_OFFSET)[0]
        if ko and not ko % 64:
            # The packet's and the descriptor's bytes as a built-in launch that passed every
            # check had them: launch again without the checks (a fault reading them: the
            # checks in order below, which report it).
            # One check for the descriptor and the entry token when both lie in one BO (the
            # loader puts them in the code object's); otherwise the checked path reads them.
            try:
                bo, off = gpu.memory.locate(self.mqd.pasid, ko, KERNEL_DESCRIPTOR_SIZE, gpu.node)
            except MemoryFault:
                bo = None
            token = None
            if bo is not None:
                data = bo.data
                kd_raw = data[off : off + KERNEL_DESCRIPTOR_SIZE].tobytes()
                kd = _KD_CACHE.get(kd_raw)
                if kd is not None:
                    t = off + kd.kernel_code_entry_byte_offset
                    if 0 <= t <= bo.size - ENTRY_TOKEN_SIZE:
                        token = data[t : t + ENTRY_TOKEN_SIZE].tobytes()
            if token is not None:
                hit = _LAUNCH_CACHE.get((raw[2:40], kd_raw, token, id(gpu.spec)))
                # (a kernel registered again under its name since: checked again)
                if hit is not None and hit[0] is gpu.spec and BUILTINS.get(hit[1].name) is hit[1]:
                    _, kernel, grid, wg, req = hit
                    lo, hi = min(off, t), max(off + KERNEL_DESCRIPTOR_SIZE, t + ENTRY_TOKEN_SIZE)
                    self._launch_hit = (
                        _LaunchHit(raw[2:40], gpu.memory.map_epoch, bo, lo, hi, kd, hit)
                        if hi - lo <= _LAUNCH_HIT_SPAN
                        else None
                    )
                    kernarg = self._kernarg(idx, kd, _U64.unpack_from(raw, _KERNARG_OFFSET)[0])
                    if kernarg is not None:
                        self._launch(idx, entry, kernel.name, kernel, None, grid, wg, req, kernarg)
                    return
        self._dispatch_checked(idx, raw, entry)

    def _dispatch_checked(self, idx: int, raw: bytes, entry: _InFlight) -> None:
        gpu = self.gpu
        spec = gpu.spec
        p = aql.KernelDispatchPacket.from_bytes(raw)
        dims = p.setup & 0x3
        wg = (p.workgroup_size_x, p.workgroup_size_y, p.workgroup_size_z)
        grid = (p.grid_size_x, p.grid_size_y, p.grid_size_z)
        if p.setup > 3 or dims == 0 or 0 in wg or 0 in grid:
            self._queue_error(
                QueueErrorBits.INVALID_DIMENSION,
                f"packet {idx}: setup.dimensions={dims} (setup={p.setup:#x}), workgroup {wg}, "
                f"grid {grid}: dimensions must be 1-3 and every size at least 1",
            )
            return
        if any(wg[d] != 1 or grid[d] != 1 for d in range(dims, 3)):
            self._queue_error(
                QueueErrorBits.INVALID_DIMENSION,
                f"packet {idx}: {dims}-D dispatch but workgroup {wg} / grid {grid} use a "
                "higher dimension (unused dimensions must be 1)",
            )
            return
        wg_items = wg[0] * wg[1] * wg[2]
        if wg_items > spec.max_workgroup_size:
            self._queue_error(
                QueueErrorBits.GROUP_TOO_LARGE,
                f"packet {idx}: workgroup {wg} has {wg_items} work-items; the agent's "
                f"maximum is {spec.max_workgroup_size}",
            )
            return
        if p.group_segment_size > spec.lds_per_cu:
            self._queue_error(
                QueueErrorBits.INVALID_GROUP_MEMORY,
                f"packet {idx}: group_segment_size {p.group_segment_size} bytes exceeds the "
                f"{spec.lds_per_cu} bytes of LDS per CU",
            )
            return
        ko = p.kernel_object
        if ko == 0 or ko % 64:
            self._queue_error(
                QueueErrorBits.INVALID_CODE,
                f"packet {idx}: kernel_object {ko:#x} is "
                + ("NULL" if ko == 0 else "not 64-byte aligned")
                + "; pass the kernel descriptor address from the executable's symbol",
            )
            return
        mem = gpu.memory
        try:
            kd_raw = mem.gpu_view(self.mqd.pasid, gpu.node, ko, KERNEL_DESCRIPTOR_SIZE).tobytes()
        except MemoryFault as f:
            self._queue_error(
                QueueErrorBits.MEMORY_VIOLATION,
                f"packet {idx}: reading the kernel descriptor at {ko:#x} faulted: {f.reason}",
                fault=f,
            )
            return
        kd = _KD_CACHE.get(kd_raw)
        if kd is None:
            if len(_KD_CACHE) >= 1024:  # bounded: descriptors only differ per kernel
                _KD_CACHE.clear()
            kd = _KD_CACHE[kd_raw] = KernelDescriptor.from_bytes(kd_raw)
        entry_va = ko + kd.kernel_code_entry_byte_offset
        try:
            token = mem.gpu_view(self.mqd.pasid, gpu.node, entry_va, ENTRY_TOKEN_SIZE).tobytes()
        except MemoryFault as f:
            self._queue_error(
                QueueErrorBits.MEMORY_VIOLATION,
                f"packet {idx}: fetching code at {entry_va:#x} faulted: {f.reason}",
                fault=f,
            )
            return
        name = parse_entry_token(token)
        kernel = BUILTINS.get(name) if name is not None else None
        code = None
        if kernel is None:
            word = int.from_bytes(token[:4], "little")
            # What a loader writes (AMDGPUUsage "Kernel Descriptor"): reserved bytes zero, a
            # nonzero COMPUTE_PGM_RSRC1 and an entry on a 256-byte boundary.
            if (
                kd.kernel_code_entry_byte_offset != 0
                and entry_va % 256 == 0
                and kd.compute_pgm_rsrc1 != 0
                and not any(kd.reserved0 + kd.reserved1 + kd.reserved3)
            ):
                # A compiled kernel: the loader published a real descriptor whose entry is
                # gfx9 machine code; the SPI launches it and the SQ runs it (the interpreter).
                code = self._compiled_code(idx, p, kd, ko, entry_va)
                if code is None:
                    return  # the queue stopped (the code could not be fetched)
            else:
                why = (
                    f"(first word {word:#010x}) is not an instruction stream this GPU can "
                    "execute; is kernel_object a kernel descriptor?"
                )
                self._queue_error(
                    QueueErrorBits.ILLEGAL_INSTRUCTION,
                    f"packet {idx}: kernel_object {ko:#x}: the code at {entry_va:#x} (entry "
                    f"offset {kd.kernel_code_entry_byte_offset}) {why}",
                )
                return
        regs_key = (kd.compute_pgm_rsrc1, spec.vgpr_alloc_granule)
        regs = _REGS_CACHE.get(regs_key)
        if regs is None:  # few distinct values: one per kernel and granule
            if len(_REGS_CACHE) >= 1024:
                _REGS_CACHE.clear()
            regs = _REGS_CACHE[regs_key] = (
                decode_vgpr_count(kd.compute_pgm_rsrc1, spec.vgpr_alloc_granule),
                decode_sgpr_count(kd.compute_pgm_rsrc1),
            )
        vgprs, sgprs = regs
        if vgprs > spec.max_vgprs_per_wave:
            self._queue_error(
                QueueErrorBits.OUT_OF_VGPRS,
                f"packet {idx}: kernel needs {vgprs} VGPRs; a wave may have "
                f"{spec.max_vgprs_per_wave}",
            )
            return
        lds = max(p.group_segment_size, kd.group_segment_fixed_size)
        if lds > spec.lds_per_cu:
            self._queue_error(
                QueueErrorBits.INVALID_GROUP_MEMORY,
                f"packet {idx}: kernel needs {lds} bytes of LDS; a CU has {spec.lds_per_cu}",
            )
            return
        kernarg = self._kernarg(idx, kd, p.kernarg_address)
        if kernarg is None:
            return
        private = max(p.private_segment_size, kd.private_segment_fixed_size)
        # Pure functions of the spec and the kernel's needs: computed once per kernel shape.
        key = (id(spec), wg_items, vgprs, sgprs, lds, private)
        hit = _OCC_CACHE.get(key)
        if hit is None or hit[0] is not spec:
            if len(_OCC_CACHE) >= 1024:
                _OCC_CACHE.clear()
            req = wg_requirements(spec, wg_items, vgprs, sgprs, lds, private)
            hit = _OCC_CACHE[key] = (spec, req, occupancy_of(spec, req, wg_items))
        _, req, occ = hit
        if occ.workgroups_per_cu == 0:
            # Otherwise no CU could ever take a workgroup and the queue would hang.
            self._queue_error(
                QueueErrorBits.OUT_OF_VGPRS,
                f"packet {idx}: a workgroup of {wg_items} work-items ({req.waves} waves x "
                f"{req.vgprs} VGPRs, {req.sgprs} SGPRs) does not fit on a CU of {spec.name} "
                f"(limited by {', '.join(occ.limited_by)}); use a smaller workgroup or a "
                "kernel built for it (launch bounds)",
            )
            return
        if code is not None:
            code.lds_bytes = lds
            code.private_bytes = private
            self._launch(idx, entry, code.name, None, code, grid, wg, req, kernarg)
            return
        if len(_LAUNCH_CACHE) >= 1024:
            _LAUNCH_CACHE.clear()
        _LAUNCH_CACHE[(raw[2:40], kd_raw, token, id(spec))] = (spec, kernel, grid, wg, req)
        self._launch(idx, entry, kernel.name, kernel, None, grid, wg, req, kernarg)

    def _kernarg(self, idx: int, kd: KernelDescriptor, address: int) -> bytes | None:
        """The kernel's `kd.kernarg_size` argument bytes at `address`; None after the queue
        error a fault reading them raises."""
        if not kd.kernarg_size:
            return b""
        gpu = self.gpu
        try:
            return gpu.memory.gpu_view(self.mqd.pasid, gpu.node, address, kd.kernarg_size).tobytes()
        except MemoryFault as f:
            self._queue_error(
                QueueErrorBits.MEMORY_VIOLATION,
                f"packet {idx}: loading {kd.kernarg_size} kernarg bytes at "
                f"{address:#x} faulted: {f.reason}",
                fault=f,
            )
            return None

    def _launch(
        self,
        idx: int,
        entry: _InFlight,
        kname: str,
        kernel: KernelSpec | None,
        code: KernelCode | None,
        grid: tuple[int, int, int],
        wg: tuple[int, int, int],
        req: WgRequirements,
        kernarg: bytes,
    ) -> None:
        """Hand a checked kernel dispatch to the dispatcher (the SPI)."""
        gpu = self.gpu
        mqd = self.mqd
        launch = KernelLaunch(
            name=kname,
            pasid=mqd.pasid,
            queue_id=mqd.queue_id,
            dispatch_id=idx,
            kernel=kernel,
            code=code,
            grid=grid,
            workgroup=wg,
            req=req,
            kernarg=kernarg,
            on_dispatched=self._on_dispatched,
            on_complete=partial(self._kernel_done, entry),  # (no Python frame of its own)
            on_fault=self._on_fault,
            on_illegal=self._on_illegal,
        )
        if self.cu_mask is not None:  # (the class default is None)
            launch.cu_mask = self.cu_mask
        entry.name = kname
        entry.start = gpu.engine.now
        self.inflight.append(entry)
        self.dispatching = launch
        gpu.stats_kernels += 1
        if gpu.tracer.enabled:
            gpu.tracer.log((_launch_event, gpu.engine.now, launch))
        gpu.dispatcher.launch(launch)

    def _compiled_code(self, idx: int, p, kd: KernelDescriptor, ko: int, entry_va: int):
        """The `IsaKernel` of a compiled kernel's dispatch: its code fetched through the
        page tables (the whole allocation holding the entry, as the loader placed the code
        object there), its registers from the descriptor. None after a queue error."""
        # Imported here: the opcode tables cost ~0.1 s, only for compiled kernels.
        from hw_model.isa.program import IsaKernel, elf_kernel_name, program_for

        gpu = self.gpu
        spec = gpu.spec
        mem = gpu.memory
        pasid = self.mqd.pasid
        bo = mem.find(pasid, entry_va)
        try:
            if bo is None:
                raise MemoryFault(entry_va, 4, f"no buffer object is mapped there (pasid {pasid})")
            image = mem.gpu_view(pasid, gpu.node, bo.va, bo.size).tobytes()
        except MemoryFault as f:
            self._queue_error(
                QueueErrorBits.MEMORY_VIOLATION,
                f"packet {idx}: fetching code at {entry_va:#x} faulted: {f.reason}",
                fault=f,
            )
            return None
        name = elf_kernel_name(image, ko - bo.va) or f"kernel@{entry_va:#x}"
        total = decode_vgpr_count(kd.compute_pgm_rsrc1, spec.vgpr_alloc_granule)
        vgprs, agprs = min(total, 256), 0
        if spec.name in ("gfx90a", "gfx942"):
            # Unified VGPR file: AccVGPRs start at ACCUM_OFFSET (COMPUTE_PGM_RSRC3, in 4s).
            accum = (COMPUTE_PGM_RSRC3_GFX90A_ACCUM_OFFSET.get(kd.compute_pgm_rsrc3) + 1) * 4
            vgprs, agprs = min(total, accum, 256), max(0, total - accum)
        mqd = self.mqd
        return IsaKernel(
            name=name,
            target=spec.name,
            descriptor=kd,
            program=program_for(image, bo.va, spec.name, name),
            vgprs=vgprs,
            agprs=agprs,
            kernarg_address=p.kernarg_address,
            packet_address=mqd.ring_base + (idx % mqd.ring_packets) * aql.PACKET_SIZE,
            queue_address=mqd.amd_queue_addr,
            dispatch_id=idx,
            entry=entry_va,
        )

    def _on_dispatched(self, k: KernelLaunch) -> None:
        if self.dispatching is k:
            self.dispatching = None
            if self.doorbell_value >= self.read_index:  # `kick`'s first test, before the call
                self.kick()

    def _kernel_done(self, entry: _InFlight, k: KernelLaunch) -> None:
        gpu = self.gpu
        if gpu.tracer.enabled and k.start_ps is not None:
            gpu.tracer.log((_kernel_event, k.start_ps, k, gpu.engine.now))
        entry.start = k.start_ps or entry.start
        now = gpu.engine.now
        req = k.req
        record = {
            "name": k.name,
            "queue_id": k.queue_id,
            "pasid": k.pasid,
            "dispatch_id": k.dispatch_id,
            "grid": k.grid,
            "workgroup": k.workgroup,
            "start_ps": k.start_ps,
            "end_ps": now,
            "vgprs": req.vgprs,
            "sgprs": req.sgprs,
            "lds": req.lds,
        }
        if k.exec_stats:
            # Compiled kernels: waves, instruction issues and lane-instructions executed, by
            # class (the gfx9 interpreter's counts).
            record["execution"] = k.exec_stats
        gpu.kernel_records.append(record)
        inflight = self.inflight
        if len(inflight) == 1 and inflight[0] is entry:
            # `_complete(entry)` inline for the one packet in flight (a loop's kernel): it
            # retires next, the retire latency after the later of now and the last retire.
            entry.done = True
            inflight.popleft()
            at = self._retire_at
            if at < now:
                at = now
            at += gpu.retire_ps[entry.release]
            self._retire_at = at
            gpu.engine.post(at - now, 2, self._retire, entry)
        else:
            self._complete(entry)

    def _on_fault(self, k: KernelLaunch, fault: MemoryFault) -> None:
        """A wave of `k` faulted. ROCR-Runtime's trap handler (trap_handler.s, `.excp_raised`):
        "If memory violation without XNACK error then signal queue error. XNACK error will be
        handled by VM interrupt". An address outside the 48-bit VA space is such a bare
        MEM_VIOL: queue-inactive bit 0x20000000. An address the page tables refuse fails
        translation: the UTCL2 raises a VM fault interrupt and the KFD takes it from there
        (evicts the process's queues; this queue is not stopped by the CP)."""
        if self.dispatching is k:
            self.dispatching = None
        if fault.aperture:
            self._queue_error(
                QueueErrorBits.MEMORY_VIOLATION,
                f"kernel {k.name} (packet {k.dispatch_id}) faulted: {fault}",
            )
            return
        run = k.fault_wg
        self.gpu.post_vm_fault(
            self.mqd.pasid,
            fault,
            self.mqd.queue_id,
            client=VM_FAULT_CLIENT_SHADER,
            detail={
                "kernel": k.name,
                "dispatch_id": k.dispatch_id,
                "wg": None if run is None else list(run.coords),
                "cu": None if run is None else run.cu.index,
            },
        )

    def _on_illegal(self, k: KernelLaunch, message: str) -> None:
        """A wave of `k` reached an instruction its code cannot execute. The trap handler
        (ROCR-Runtime trap_handler.s) signals a queue error for it; ROCr reports
        HSA_STATUS_ERROR_ILLEGAL_INSTRUCTION."""
        if self.dispatching is k:
            self.dispatching = None
        self._queue_error(
            QueueErrorBits.ILLEGAL_INSTRUCTION,
            f"kernel {k.name} (packet {k.dispatch_id}): {message}",
        )

    # -- barriers --------------------------------------------------------------------------
    def _start_barrier(self, entry: _InFlight, barrier: _Barrier) -> None:
        entry.start = self.gpu.engine.now
        self.inflight.append(entry)
        try:
            ok = barrier.satisfied()
        except MemoryFault as f:
            self._queue_error(
                QueueErrorBits.MEMORY_VIOLATION, f"barrier dependency signal faulted: {f}", f
            )
            return
        if ok:
            self._complete(entry)
            self.kick()
        else:
            self.blocked_barrier = barrier
            barrier.arm()
            self.gpu.scheduler.queue_blocked(self)

    def _barrier_done(self, barrier: _Barrier) -> None:
        if self.blocked_barrier is barrier:
            self.blocked_barrier = None
        self._complete(barrier.entry)
        self.kick()

    # -- retire ----------------------------------------------------------------------------
    def _complete(self, entry: _InFlight) -> None:
        entry.done = True
        gpu = self.gpu
        now = gpu.engine.now
        inflight = self.inflight
        while inflight and inflight[0].done:
            e = inflight.popleft()
            at = self._retire_at
            if at < now:
                at = now
            at += gpu.retire_ps[e.release]
            self._retire_at = at
            gpu.engine.post(at - now, 2, self._retire, e)

    def _retire(self, e: _InFlight) -> None:
        if self.destroyed:
            return
        gpu = self.gpu
        mem = gpu.memory
        mqd = self.mqd
        node = gpu.node
        if e.release == _SYSTEM_SCOPE:
            # The release fence before the completion signal: the L2 writes its dirty bytes
            # of coarse-grained memory back, so a host woken by the signal reads them. An
            # agent-scope release leaves them in the L2 (docs/memory.md, "Coherence").
            mem.l2_release_system(node)
        ring, rptr = self._plain_ring, self._plain_rptr
        if not (
            ring is not None
            and ring.key is mqd
            and ring.epoch == mem.plain_epoch  # (`rptr` was made with `ring`)
            and node in ring.bo.gpu_nodes
            and node in rptr.bo.gpu_nodes
            and ring.bo.on_write is None
            and rptr.bo.on_write is None
        ):
            ring, rptr = self._make_plain_windows(mem, mqd, node)
        if ring is not None:
            # No hook or monitor on either word: the same two stores without the checked calls.
            # The packet type is the header's low byte (little endian): only it changes.
            ring.aux[e.dispatch_id % (mqd.ring_size // _PKT)] = _INVALID
            self.retired = e.dispatch_id + 1
            rptr.aux[0] = self.retired
            mem.store_epoch += 2
        else:
            pasid = mqd.pasid
            slot_va = mqd.ring_base + (e.dispatch_id % (mqd.ring_size // _PKT)) * _PKT
            try:
                # Header back to INVALID (other header bits kept), then read_dispatch_id.
                old = _U16.unpack_from(mem.gpu_view(pasid, node, slot_va, 2))[0]
                mem.write(pasid, slot_va, _U16.pack((old & 0xFF00) | PacketType.INVALID), node)
                self.retired = e.dispatch_id + 1
                mem.store_u64(pasid, mqd.rptr_addr, self.retired, node)
            except MemoryFault as f:
                self._queue_error(QueueErrorBits.MEMORY_VIOLATION, f"retire faulted: {f}", f)
                return
        if gpu.tracer.enabled:
            gpu.tracer.log(
                (
                    _retire_event,
                    gpu.engine.now,
                    mqd.queue_id,
                    e.dispatch_id,
                    self.retired,
                    e.completion_signal,
                )
            )
        if e.completion_signal:
            # (the queue id names its track in a trace only)
            gpu.signal_completion(
                mqd.pasid, e.completion_signal, e.start, gpu.engine.now, mqd.queue_id
            )
        if self.waiting_barrier_bit and self.retired >= self.read_index:
            self.waiting_barrier_bit = False
        if self.doorbell_value >= self.read_index:  # `kick`'s first test, before the call
            self.kick()
        gpu.scheduler.queue_progress(self)

    def _make_plain_windows(
        self, mem: Memory, mqd: Mqd, node: int
    ) -> tuple[Window | None, Window | None]:
        """Plain windows of the whole ring and of read_dispatch_id, made together (both or
        neither, at one `plain_epoch`); neither while `plain` refuses one of them, not asked
        again until the epoch moves."""
        ring = rptr = None
        if self._plain_failed != mem.plain_epoch:
            ring = mem.plain_window(mqd.pasid, mqd.ring_base, mqd.ring_size, node)
            rptr = mem.plain_window(mqd.pasid, mqd.rptr_addr, 8, node) if ring else None
            if rptr is None:
                ring = None
                self._plain_failed = mem.plain_epoch
            else:
                ring.key = mqd
                ring.aux = _packets(ring)[:, 0]  # each slot's header low byte: its type
                rptr.aux = rptr.data[rptr.off : rptr.off + 8].view(_LE_U64)
        self._plain_ring, self._plain_rptr = ring, rptr
        return ring, rptr

    # -- errors ----------------------------------------------------------------------------
    def _queue_error(
        self, bits: QueueErrorBits, message: str, fault: MemoryFault | None = None
    ) -> None:
        if self.error is not None:
            return
        gpu = self.gpu
        self.error = bits
        self.error_message = message
        self.blocked_barrier = None
        if self._fetch_event is not None:
            self._fetch_event.cancel()
            self._fetch_event = None
        now = gpu.engine.now
        if gpu.tracer.enabled:
            gpu.tracer.instant(
                self._track, "queue error", now, {"code": hex(int(bits)), "message": message}
            )
        gpu.queue_errors.append(
            {
                "queue_id": self.mqd.queue_id,
                "pasid": self.mqd.pasid,
                "code": int(bits),
                "message": message,
                "tick": now,
            }
        )
        # The firmware reports through amd_queue_t.queue_inactive_signal.
        mqd = self.mqd
        try:
            sig = gpu.memory.load_u64(
                mqd.pasid, mqd.amd_queue_addr + AMD_QUEUE_QUEUE_INACTIVE_SIGNAL_OFFSET, gpu.node
            )
        except MemoryFault:
            sig = 0
        if sig:
            try:
                gpu.memory.store_i64(mqd.pasid, sig + AMD_SIGNAL_VALUE_OFFSET, int(bits), gpu.node)
                gpu.raise_signal_event(mqd.pasid, sig)
            except MemoryFault:
                pass
        if fault is not None:
            gpu.post_vm_fault(mqd.pasid, fault, mqd.queue_id)
        gpu.scheduler.queue_progress(self)

    def stop(self) -> None:
        """Queue destroyed: forget everything in flight."""
        self.destroyed = True
        self._drop_head_watch()
        if self._fetch_event is not None:
            self._fetch_event.cancel()
            self._fetch_event = None
        if self.blocked_barrier is not None:
            self.blocked_barrier.disarm()
            self.blocked_barrier = None

    def describe(self) -> dict:
        return {
            "queue_id": self.mqd.queue_id,
            "pasid": self.mqd.pasid,
            "state": self.state,
            "slot": self.slot,
            "read_index": self.read_index,
            "read_dispatch_id": self.retired,
            "doorbell_value": self.doorbell_value,
            "inflight": [e.name for e in self.inflight],
            "stalled_on_invalid_header": self.stalled_invalid,
            "blocked_on": self.blocked_barrier.describe() if self.blocked_barrier else None,
            "error": None
            if self.error is None
            else {"code": int(self.error), "message": self.error_message},
            "priority": self.mqd.priority,
            "packets": self.packets_processed,
        }


_COND = {
    0: lambda v, x: v == x,  # HSA_SIGNAL_CONDITION_EQ
    1: lambda v, x: v != x,  # NE
    2: lambda v, x: v < x,  # LT
    3: lambda v, x: v >= x,  # GTE
}


class _Barrier:
    """A barrier-AND/OR (or AMD barrier-value) packet waiting on its dependency signals.

    Evaluated when a dependency's value is stored to (the memory model's watch), not by
    polling: gem5's packet processor instead re-reads the dependency signals every packet
    processing delay (4.4 us) while the queue is mapped. A dependency may live in another
    process's memory that this process maps too (IPC): every mapping of those bytes is
    watched. While the queue is unmapped the barrier does not complete (the CP is not looking
    at the queue); a change only tells the HW scheduler the queue may be ready.
    `peek_only`: the barrier is the next, not yet fetched, packet of an unmapped queue.
    """

    def __init__(
        self,
        pp: PacketProcessor,
        entry: _InFlight,
        deps: list[int],
        is_and: bool,
        value_cond: tuple[int, int, int] | None = None,
    ) -> None:
        self.pp = pp
        self.entry = entry
        self.deps = deps
        self.is_and = is_and
        self.value_cond = value_cond
        self._armed = False
        self._pending = False
        self.peek_only = False
        self._keys: list[tuple[int, int]] = []

    def _value(self, handle: int) -> int:
        g = self.pp.gpu
        return g.memory.load_i64(self.pp.mqd.pasid, handle + AMD_SIGNAL_VALUE_OFFSET, g.node)

    def satisfied(self) -> bool:
        if not self.deps:
            return True
        if self.value_cond is not None:
            value, mask, cond = self.value_cond
            v = self._value(self.deps[0]) & mask
            return _COND.get(cond, _COND[0])(v, value)
        hits = [self._value(d) == 0 for d in self.deps]
        return all(hits) if self.is_and else any(hits)

    def _watch_keys(self) -> list[tuple[int, int]]:
        """(pasid, va) of each dependency's value in every VM that maps the same bytes."""
        mem = self.pp.gpu.memory
        pasid = self.pp.mqd.pasid
        keys = []
        for d in self.deps:
            va = d + AMD_SIGNAL_VALUE_OFFSET
            keys.append((pasid, va))
            bo = mem.find(pasid, va)
            if bo is None:
                continue
            for o in mem.bos.values():
                if o is not bo and _same_backing(o.data, bo.data):
                    keys.append((o.pasid, o.va + va - bo.va))
        return keys

    def arm(self) -> None:
        if self._armed:
            return
        self._armed = True
        mem = self.pp.gpu.memory
        self._keys = self._watch_keys()
        for pasid, va in self._keys:
            mem.watch(pasid, va, self._changed)

    def disarm(self) -> None:
        if self._armed:
            mem = self.pp.gpu.memory
            for pasid, va in self._keys:
                mem.unwatch(pasid, va, self._changed)
            self._keys = []
            self._armed = False

    def _changed(self) -> None:
        if not self._pending:
            self._pending = True
            self.pp.gpu.engine.schedule(0, self._reevaluate, priority=4)

    def _reevaluate(self) -> None:
        self._pending = False
        pp = self.pp
        if not self._armed or pp.error is not None:
            return
        if self.peek_only or pp.slot is None:
            pp.gpu.scheduler.queue_changed(pp)  # it may be ready now (or no longer)
            return
        try:
            ok = self.satisfied()
        except MemoryFault:
            ok = False
        if ok:
            self.disarm()
            pp._barrier_done(self)
            pp.gpu.scheduler.queue_progress(pp)

    def describe(self) -> dict:
        kind = self.entry.name
        vals = {}
        for d in self.deps:
            try:
                vals[hex(d)] = self._value(d)
            except MemoryFault:
                vals[hex(d)] = None
        return {"packet": self.entry.dispatch_id, "kind": kind, "signals": vals}


def _same_backing(a, b) -> bool:
    """Two BOs over the same physical pages (an imported / IPC mapping shares the array)."""
    return a is b or (a.base is not None and a.base is b) or (b.base is not None and b.base is a)


def signal_timestamps(mem, pasid: int, node: int, handle: int, start: int, end: int) -> None:
    mem.store_u64(pasid, handle + AMD_SIGNAL_START_TS_OFFSET, start, node)
    mem.store_u64(pasid, handle + AMD_SIGNAL_END_TS_OFFSET, end, node)


__all__ = [
    "AMD_SIGNAL_EVENT_ID_OFFSET",
    "AMD_SIGNAL_EVENT_MAILBOX_PTR_OFFSET",
    "Mqd",
    "PacketProcessor",
    "QueueErrorBits",
    "signal_timestamps",
]


# -- trace records ---------------------------------------------------------------------------
# A call site logs its values (Tracer.log); these make its TraceEvent when the trace is read.


def _doorbell_event(ts: int, queue: int, value: int, slot: int | None) -> TraceEvent:
    args = {"value": value, "mapped": slot is not None}
    return TraceEvent("i", f"queue {queue}", "doorbell", ts, 0, args, "doorbell")


def _fetch_event(ts: int, queue: int, idx: int, ring_size: int, header: int) -> TraceEvent:
    args = {"slot": idx % (ring_size // aql.PACKET_SIZE), "header": hex(header)}
    return TraceEvent("i", f"queue {queue}", f"fetch packet {idx}", ts, 0, args, "cp")


def _packet_event(ts: int, queue: int, idx: int, name: str) -> TraceEvent:
    return TraceEvent("i", f"queue {queue}", f"packet {idx}: {name}", ts, 0, {"index": idx}, "cp")


# (A KernelLaunch's name, ids, geometry and requirements are fixed when it is made: a record
# may hold the launch and read them later.)
def _launch_event(ts: int, k: KernelLaunch) -> TraceEvent:
    req = k.req
    args = {
        "queue": k.queue_id,
        "dispatch_id": k.dispatch_id,
        "grid": k.grid,
        "workgroup": k.workgroup,
        "workgroups": k.total_wgs,
        "waves_per_wg": req.waves,
        "vgprs": req.vgprs,
        "sgprs": req.sgprs,
        "lds": req.lds,
    }
    return TraceEvent("i", "dispatcher", f"launch {k.name}", ts, 0, args, "dispatch")


def _kernel_event(start: int, k: KernelLaunch, end: int) -> TraceEvent:
    args = {"dispatch_id": k.dispatch_id, "workgroups": k.total_wgs}
    return TraceEvent("X", f"queue {k.queue_id}", k.name, start, end - start, args, "kernel")


def _retire_event(ts: int, queue: int, idx: int, read_id: int, signal: int) -> TraceEvent:
    args = {"read_dispatch_id": read_id, "completion_signal": hex(signal)}
    return TraceEvent("i", f"queue {queue}", f"retire {idx}", ts, 0, args, "cp")
