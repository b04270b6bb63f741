"""AQL user-mode queues: the ring, `amd_queue_t`, the doorbell, and async error reporting.

As ROCR-Runtime's AqlQueue (core/runtime/amd_aql_queue.cpp): the ring and the 256-byte
`amd_queue_t` (with the embedded `hsa_queue_t`) live in GPU-mapped system memory; the ring's
headers start INVALID; AMDKFD_IOC_CREATE_QUEUE gets the ring and the addresses of
`read_dispatch_id`/`write_dispatch_id`, and returns the doorbell. The CP reports queue errors
by writing error bits into `queue_inactive_signal`; the runtime maps them to hsa_status_t with
ROCr's table and calls the queue's error callback.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from enum import IntEnum
from typing import TYPE_CHECKING

import numpy as np

from hw_model import aql
from hw_model.aql import PacketType
from hw_model.structs import (
    AMD_QUEUE_PROPERTIES_ENABLE_PROFILING,
    AMD_QUEUE_PROPERTIES_IS_PTR64,
    AMD_QUEUE_READ_DISPATCH_ID_OFFSET,
    AMD_QUEUE_SIZE,
    AMD_QUEUE_WRITE_DISPATCH_ID_OFFSET,
    AmdQueue,
    HsaQueue,
    HsaQueueFeature,
    HsaQueueType,
)
from rocr.errors import HsaError
from rocr.status import Status, status_c_name
from rocr.validate import I64_MAX, as_bytes, as_int, as_u64, cu_mask, show
from roct import HsaKmtError

if TYPE_CHECKING:
    from rocr.agent import Agent
    from rocr.runtime import Runtime
    from rocr.signal import DoorbellSignal, Signal

Packet = (
    aql.KernelDispatchPacket
    | aql.BarrierAndPacket
    | aql.BarrierOrPacket
    | aql.AgentDispatchPacket
    | aql.AmdBarrierValuePacket
)

# ROCR-Runtime AqlQueue queue-inactive handler: CP error bits -> hsa_status_t (ROCm 5.2).
ERROR_BITS: list[tuple[int, Status, str]] = [
    (0x2, Status.ERROR_INCOMPATIBLE_ARGUMENTS, "invalid dimension"),
    (0x4, Status.ERROR_INVALID_ALLOCATION, "invalid group memory"),
    (0x8, Status.ERROR_INVALID_CODE_OBJECT, "invalid (or NULL) code"),
    (0x20, Status.ERROR_INVALID_PACKET_FORMAT, "invalid packet format"),
    (0x100, Status.ERROR_INVALID_PACKET_FORMAT, "unsupported vendor-specific packet"),
    (0x40, Status.ERROR_INVALID_ARGUMENT, "workgroup too large"),
    (0x80, Status.ERROR_INVALID_ISA, "out of VGPRs"),
    (0x20000000, Status.ERROR_MEMORY_APERTURE_VIOLATION, "memory violation"),
    (0x40000000, Status.ERROR_ILLEGAL_INSTRUCTION, "illegal instruction"),
    (0x80000000, Status.ERROR_EXCEPTION, "debug trap"),
]


class QueuePriority(IntEnum):
    """hsa_amd_queue_priority_t (hsa_ext_amd.h), for hsa_amd_queue_set_priority."""

    LOW = 0
    NORMAL = 1
    HIGH = 2


# ROCr hsa_amd_queue_set_priority: hsa_amd_queue_priority_t -> HSA_QUEUE_PRIORITY (hsakmt);
# recent ROCr maps HIGH to HSA_QUEUE_PRIORITY_HIGH, MAXIMUM being kept for PC sampling.
_KMT_PRIORITY = {QueuePriority.LOW: -3, QueuePriority.NORMAL: 0, QueuePriority.HIGH: 2}


def kmt_priority(priority: int) -> int:
    """A QueuePriority, or a raw HSA_QUEUE_PRIORITY (-3 minimum .. 3 maximum), as hsaKmt's."""
    if isinstance(priority, QueuePriority):
        return _KMT_PRIORITY[priority]
    if isinstance(priority, int) and not isinstance(priority, bool) and -3 <= priority <= 3:
        return priority
    raise HsaError(
        Status.ERROR_INVALID_ARGUMENT,
        f"queue priority {priority!r}: pass rocr.queue.QueuePriority.LOW/NORMAL/HIGH, or an "
        "HSA_QUEUE_PRIORITY from -3 (minimum) to 3 (maximum)",
    )


_PACKET_SIZE = aql.PACKET_SIZE
_READ_WORD = AMD_QUEUE_READ_DISPATCH_ID_OFFSET // 8  # read_dispatch_id in Queue._qwords
assert AMD_QUEUE_READ_DISPATCH_ID_OFFSET % 8 == 0


def status_for_error_code(code: int) -> tuple[Status, str]:
    for bit, status, what in ERROR_BITS:
        if code & bit:
            return status, what
    return Status.ERROR, f"queue error code {code:#x}"


class Queue:
    """hsa_queue_t of an AQL queue on a GPU agent."""

    def __init__(
        self,
        rt: Runtime,
        agent: Agent,
        size: int,
        callback: Callable[[HsaError, Queue], None] | None,
        priority: int,
    ) -> None:
        self.rt = rt
        self.agent = agent
        self.size = size
        self.callback = callback
        self.priority = priority = kmt_priority(priority)
        self.error: HsaError | None = None
        self._error_reported = False
        self.destroyed = False
        th = rt.thunk
        # Ring: GPU-mapped system memory, every header INVALID (ROCr fills the ring so).
        self._ring = th.alloc_memory(0, size * aql.PACKET_SIZE, aql_queue=True)
        th.map_memory_to_gpu(self._ring.address, [agent.node])
        self._ring_bytes = self._ring.mapping.array  # the packets' bytes, written in place
        # The header store by address (every slot is inside the ring's mapping)
        self._store_header = self._ring.mapping.va_writer()
        ring = self._ring_bytes[: size * aql.PACKET_SIZE].view(np.uint16)
        ring[:: aql.PACKET_SIZE // 2] = PacketType.INVALID
        self.base_address = self._ring.address
        # amd_queue_t (256 bytes, 64-byte aligned: a page of its own here)
        self._qmem = th.alloc_memory(0, 4096, coherent=True)
        th.map_memory_to_gpu(self._qmem.address, [agent.node])
        self.address = self._qmem.address
        self._q = self._qmem.mapping
        self.inactive_signal: Signal = rt.create_signal(0, interrupt=True, _internal=True)
        self.id = rt._next_queue_id()
        self.resource = th.create_queue(
            agent.node,
            ring_base=self.base_address,
            ring_size=size * aql.PACKET_SIZE,
            read_ptr=self.address + AMD_QUEUE_READ_DISPATCH_ID_OFFSET,
            write_ptr=self.address + AMD_QUEUE_WRITE_DISPATCH_ID_OFFSET,
            priority=priority,
        )
        from rocr.signal import DoorbellSignal

        self.doorbell_signal: DoorbellSignal = DoorbellSignal(rt, self.resource)
        amd = AmdQueue(
            hsa_queue=HsaQueue(
                type=HsaQueueType.MULTI,
                features=HsaQueueFeature.KERNEL_DISPATCH | HsaQueueFeature.AGENT_DISPATCH,
                base_address=self.base_address,
                doorbell_signal=self.doorbell_signal.handle,
                size=size,
                id=self.id,
            ),
            write_dispatch_id=0,
            read_dispatch_id=0,
            max_cu_id=agent.compute_unit_count - 1,
            max_wave_id=agent.props.MaxWavesPerSIMD - 1,
            queue_properties=AMD_QUEUE_PROPERTIES_IS_PTR64 | AMD_QUEUE_PROPERTIES_ENABLE_PROFILING,
            queue_inactive_signal=self.inactive_signal.handle,
        )
        self._q.write(0, amd.to_bytes()[:AMD_QUEUE_SIZE])
        # amd_queue_t as 8-byte words, a live view of the CPU mapping: the read index the CP
        # advances is a plain load (as `Signal._value` is), once per packet.
        self._qwords = self._q.array[:AMD_QUEUE_SIZE].view(np.uint64)
        # write_dispatch_id's atomic add, bound once: a packet each.
        self._add_write_index = self._q.atomic_add_i64_at(AMD_QUEUE_WRITE_DISPATCH_ID_OFFSET)
        self.queue_id = self.resource.QueueId  # the KFD's queue id
        # Checked dispatches by their arguments (Runtime._dispatch): a program sends a few
        # kernels in a few shapes to a queue many times.
        self._plans: dict[tuple, tuple] = {}
        self._packet_write_ps = rt.host_cost("packet_write_ps")  # fixed per machine

    def __repr__(self) -> str:
        return f"Queue(id={self.id}, kfd queue {self.queue_id}, size={self.size})"

    # -- error handling --------------------------------------------------------------------
    def _live(self) -> None:
        """hsa_queue_* on a queue that no longer exists: HSA_STATUS_ERROR_INVALID_QUEUE (its
        ring and amd_queue_t are freed memory), NOT_INITIALIZED once the runtime is gone."""
        if self.rt.closed:
            raise HsaError(
                Status.ERROR_NOT_INITIALIZED, f"queue {self.id}: the runtime was shut down"
            )
        if self.destroyed:
            raise HsaError(Status.ERROR_INVALID_QUEUE, f"queue {self.id} was destroyed")

    def _check(self) -> bool:
        """Live, and no error to raise; returns whether the async events poll had anything
        to look at (Runtime.poll_async)."""
        rt = self.rt
        if rt.closed or self.destroyed:
            self._live()
        acted = rt._async_pending and rt.poll_async()
        if self.error is not None and self.callback is None:
            raise self.error
        return acted

    def _poll_error(self) -> None:
        if self._error_reported or self.destroyed:
            return
        code = self.inactive_signal.load()
        if code == 0:
            return
        status, what = status_for_error_code(code & 0xFFFFFFFF)
        detail = self.rt.queue_error_detail(self)
        err = HsaError(
            status,
            f"queue {self.id} stopped by the CP: {what} (error code "
            f"{code:#x}){': ' + detail if detail else ''}",
        )
        self._error_reported = True
        self.error = err
        self.rt.trace("rocr", "queue error callback", queue=self.id, status=status_c_name(status))
        if self.callback is not None:
            self.callback(err, self)

    # -- indices ---------------------------------------------------------------------------
    def load_write_index(self) -> int:
        """hsa_queue_load_write_index_scacquire."""
        self._live()
        return self._q.load_u64(AMD_QUEUE_WRITE_DISPATCH_ID_OFFSET)

    def store_write_index(self, value: int) -> None:
        """hsa_queue_store_write_index_screlease (write_dispatch_id is a uint64_t)."""
        value = as_u64(value, "value", why="write_dispatch_id is a uint64_t")
        self._check()
        self._q.store_u64(AMD_QUEUE_WRITE_DISPATCH_ID_OFFSET, value)

    def add_write_index(self, delta: int = 1) -> int:
        """hsa_queue_add_write_index_scacq_screl: returns the previous write index."""
        # A uint64_t in C; below 2**63 here, where a larger one could only be a mistake.
        delta = as_int(delta, "delta", 0, I64_MAX, why="packets to reserve")
        self._check()
        old = self._q.atomic_add_i64(AMD_QUEUE_WRITE_DISPATCH_ID_OFFSET, delta)
        return old

    def cas_write_index(self, expected: int, value: int) -> int:
        """hsa_queue_cas_write_index_scacq_screl: returns the value observed."""
        expected = as_u64(expected, "expected", why="write_dispatch_id is a uint64_t")
        value = as_u64(value, "value", why="write_dispatch_id is a uint64_t")
        self._check()
        # The i64 CAS compares bit patterns: compare as the signed view of the same 64 bits.
        signed = expected - (1 << 64) if expected > I64_MAX else expected
        old = self._q.atomic_cas_i64(AMD_QUEUE_WRITE_DISPATCH_ID_OFFSET, signed, value)
        return old & 0xFFFF_FFFF_FFFF_FFFF

    def load_read_index(self) -> int:
        """hsa_queue_load_read_index_scacquire: read_dispatch_id, advanced by the CP."""
        self._live()
        return self._q.load_u64(AMD_QUEUE_READ_DISPATCH_ID_OFFSET)

    # -- packets ---------------------------------------------------------------------------
    def _slot(self, index: int) -> int:
        return (index % self.size) * aql.PACKET_SIZE

    def write_packet(self, index: int, packet: Packet | bytes) -> None:
        """Write a packet into slot `index`: body first, then the header (release)."""
        index = as_u64(index, "index", why="a packet index is a uint64_t")
        raw = packet_raw(packet)
        self._check()
        self._write_raw(index, raw)

    def _write_raw(self, index: int, raw: bytes, kernarg: int = -1) -> None:
        """write_packet for a checked index and 64 checked bytes, on a checked queue.
        `kernarg`: the kernarg_address of a kernel dispatch packet, when the caller knows it
        (0: none); -1: read from `raw` if it is one."""
        read = int(self._qwords[_READ_WORD])
        size = self.size
        if index < read or index >= read + size:
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT,
                f"slot for packet {index} is not free: the CP has retired up to "
                f"{read} and the ring holds {self.size} packets (valid indices "
                f"{read}..{read + self.size - 1})",
            )
        base = (index % size) * _PACKET_SIZE
        memoryview(self._ring_bytes)[base + 4 : base + _PACKET_SIZE] = raw[4:]
        # The 32-bit header+setup store publishes the packet (ROCr: __atomic_store_n release).
        self._store_header(self.base_address + base, raw[:4])
        rt = self.rt
        rt.thunk.host_elapse(self._packet_write_ps)
        if kernarg < 0:
            kernarg = 0
            if raw[0] == PacketType.KERNEL_DISPATCH:
                ka = aql.KERNEL_DISPATCH_KERNARG_ADDRESS_OFFSET
                kernarg = int.from_bytes(raw[ka : ka + 8], "little")
        if kernarg:  # no kernarg chunk holds address 0
            rt._note_packet(self, index, kernarg)
        if rt._trace_switch.enabled:
            rt.trace("rocr", f"write packet {index}", type=_type_name(raw[0]), queue=self.id)

    def packet_bytes(self, index: int) -> bytes:
        index = as_u64(index, "index", why="a packet index is a uint64_t")
        self._live()
        base = self._slot(index)
        return bytes(self._ring.mapping.array[base : base + aql.PACKET_SIZE])

    def packet(self, index: int) -> Packet | None:
        return aql.decode_packet(self.packet_bytes(index))

    def ring_doorbell(self, index: int) -> None:
        """hsa_signal_store_screlease(queue->doorbell_signal, index)."""
        index = as_int(
            index, "index", 0, I64_MAX, why="the doorbell takes a packet index, an int64_t"
        )
        self._check()
        self._doorbell(index)

    def _doorbell(self, index: int) -> None:
        """ring_doorbell for a checked index on a checked queue."""
        rt = self.rt
        if rt._trace_switch.enabled:
            rt.trace(
                "rocr",
                "ring doorbell",
                queue=self.id,
                value=index,
                doorbell=hex(self.doorbell_signal.doorbell_address),
            )
        self.doorbell_signal.store(index)
        if rt._async_pending:
            rt.poll_async()

    def _publish(self, raw: bytes, recheck: bool, kernarg: int = -1) -> int:
        """add_write_index(1), write_packet and ring_doorbell of a checked packet, on a queue
        `_check`ed since the device last ran (else `recheck`). The queue is checked and the
        async events polled again only where the device may have run since the last check
        (after the packet write's host time, after the doorbell store's), as only then can
        ROCr's async events thread have acted. Returns the packet index."""
        if recheck:
            self._check()
        i = self._add_write_index(1)
        self._write_raw(i, raw, kernarg)
        if i >> 63:  # not 0 <= i <= I64_MAX (negative: -1)
            as_int(i, "index", 0, I64_MAX, why="the doorbell takes a packet index, an int64_t")
        # The packet write took host time: the device ran meanwhile. Only a poll with
        # something to look at can have run callbacks (which may end the queue or the
        # runtime, or set its error): without one the check before still stands.
        if self.rt._async_pending:
            self._check()
        self._doorbell(i)
        return i

    @property
    def doorbell_value(self) -> int | None:
        return self.doorbell_signal.last_value

    # -- convenience -----------------------------------------------------------------------
    def dispatch(
        self,
        kernel,
        grid: tuple[int, ...] | int,
        workgroup: tuple[int, ...] | int,
        args: tuple = (),
        completion_signal: Signal | None = None,
        *,
        group_segment_size: int | None = None,
        barrier: bool = False,
        acquire: aql.FenceScope = aql.FenceScope.SYSTEM,
        release: aql.FenceScope = aql.FenceScope.SYSTEM,
    ):
        """Pack kernargs, write a kernel dispatch packet, ring the doorbell.

        Returns a DispatchHandle whose `.wait()` waits for the completion signal.
        """
        return self.rt._dispatch(
            self,
            kernel,
            grid,
            workgroup,
            args,
            completion_signal,
            group_segment_size,
            barrier,
            acquire,
            release,
        )

    def submit(self, packet: Packet | bytes) -> int:
        """Reserve a slot, write the packet, ring the doorbell; returns the packet index."""
        packet = packet_raw(packet)  # a bad packet must not leave a reserved, INVALID slot
        i = self.add_write_index(1)
        self.write_packet(i, packet)
        self.ring_doorbell(i)
        return i

    # -- teardown --------------------------------------------------------------------------
    def set_priority(self, priority: int) -> None:
        """hsa_amd_queue_set_priority: a QueuePriority (LOW/NORMAL/HIGH), or a raw
        HSA_QUEUE_PRIORITY -3..3 (AMDKFD_IOC_UPDATE_QUEUE; the HW scheduler sees it at once)."""
        self._check()
        kmt = kmt_priority(priority)
        try:
            self.rt.thunk.update_queue(self.queue_id, priority=kmt)
        except HsaKmtError as e:
            raise HsaError(Status.ERROR_INVALID_ARGUMENT, f"set_priority: {e.message}") from e
        self.priority = kmt

    def set_cu_mask(self, mask: list[int]) -> None:
        """hsa_amd_queue_cu_set_mask: 32-bit words, bit i enables CU i.

        ROCr's AqlQueue::SetCUMasking passes the words to hsaKmtSetQueueCUMask; the documented
        refusals (hsa_ext_amd.h) are INVALID_ARGUMENT, and a KFD failure is HSA_STATUS_ERROR.
        """
        words = cu_mask(mask, self.agent.compute_unit_count)
        self._check()
        try:
            self.rt.thunk.set_queue_cu_mask(self.queue_id, words)
        except HsaKmtError as e:
            raise HsaError(Status.ERROR, f"set_cu_mask: {e.message}") from e

    def destroy(self) -> None:
        """hsa_queue_destroy; a queue destroyed already is HSA_STATUS_ERROR_INVALID_QUEUE."""
        self._live()
        th = self.rt.thunk
        th.destroy_queue(self.queue_id)
        self.doorbell_signal.release()
        self.inactive_signal.destroy()
        for alloc in (self._ring, self._qmem):
            th.free_memory(alloc.address)
        self.destroyed = True
        self.rt._queues.discard(self)


def packet_raw(packet: object) -> bytes:
    """The 64 bytes of an hw_model.aql packet, or of a bytes-like packet."""
    if isinstance(packet, aql.PackedModel):
        try:
            raw = packet.to_bytes()
        except (ValueError, OverflowError, TypeError, struct.error) as e:
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT, f"packet {show(packet)} cannot be encoded: {e}"
            ) from None
    elif isinstance(packet, bytes | bytearray | memoryview):
        raw = as_bytes(packet, "packet")
    else:
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"packet must be an AQL packet (rocr.KernelDispatchPacket, ...) or its 64 bytes, "
            f"got {show(packet)} ({type(packet).__name__})",
        )
    if len(raw) != aql.PACKET_SIZE:
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"packet is {len(raw)} bytes: an AQL packet is {aql.PACKET_SIZE}",
        )
    return raw


def _type_name(ptype: int) -> str:
    try:
        return PacketType(ptype).name
    except ValueError:
        return f"type {ptype}"
