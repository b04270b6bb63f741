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
from typing import TYPE_CHECKING, Any

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
from rocr import signal as _signal
from rocr.errors import HsaError
from rocr.executable import KernelSymbol
from rocr.signal import _TWO_U64, Condition, DoorbellSignal, Signal, WaitState, wait_timeout
from rocr.status import Status, status_c_name
from rocr.validate import I64_MAX, as_bytes, as_int, as_u64, cu_mask, plain_dims, show
from roct import HsaKmtError

if TYPE_CHECKING:
    from rocr.agent import Agent
    from rocr.runtime import Runtime

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
# A kernel dispatch packet after its header: the 36 bytes up to kernel_object (a dispatch
# plan's), then kernarg_address, reserved2 and completion_signal.
_pack_body = struct.Struct("<36sQQQ").pack_into
# hsa_kernel_dispatch_packet_t up to kernel_object (a dispatch plan's: header, then the 36)
_HEAD_STRUCT = struct.Struct(aql.KernelDispatchPacket.STRUCT.format[:-3])
assert _HEAD_STRUCT.size == aql.KERNEL_DISPATCH_KERNARG_ADDRESS_OFFSET == 40
_new_object = object.__new__
_clear_stamps = _TWO_U64.pack_into  # a re-armed signal's start_ts and end_ts (Signal._rearm)
_NO_ARGS = ()  # queue.dispatch's default (the empty tuple is one object)
_SYSTEM = aql.FenceScope.SYSTEM
_LT, _BLOCKED = Condition.LT, WaitState.BLOCKED

# Dispatch plans kept per queue (Queue.dispatch): more shapes than a program cycles through,
# few enough that a sweep over many shapes does not grow the dict without bound (a guess).
_PLANS_PER_QUEUE = 64
# The types of a fence scope a dispatch plan's key may hold: alike when equal (SYSTEM == 2).
_SCOPE_TYPES = frozenset({aql.FenceScope, int})


def _packet_head(kernel: KernelSymbol, f: dict[str, Any]) -> tuple[int, ...]:
    """The fields of a kernel dispatch packet for checked fields `f`, in
    hsa_kernel_dispatch_packet_t order, up to kernel_object (kernarg_address, reserved2 and
    completion_signal follow)."""
    g3, w3 = f["grid"], f["workgroup"]
    return (
        aql.make_header(
            PacketType.KERNEL_DISPATCH,
            barrier=f["barrier"],
            acquire=f["acquire"],
            release=f["release"],
        ),
        f["dims"],
        w3[0],
        w3[1],
        w3[2],
        0,
        g3[0],
        g3[1],
        g3[2],
        kernel.private_segment_size,
        f["group_segment_size"],
        kernel.kernel_object,
    )


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

    def _slot_taken(self, index: int, read: int) -> None:
        """Packet `index` does not fit between the read index and the end of the ring."""
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"slot for packet {index} is not free: the CP has retired up to "
            f"{read} and the ring holds {self.size} packets (valid indices "
            f"{read}..{read + self.size - 1})",
        )

    def _write_raw(self, index: int, raw: bytes, kernarg: int = -1) -> None:
        """write_packet for a checked index and 64 checked bytes, on a checked queue.
        `kernarg`: the kernarg_address of a kernel dispatch packet, when the caller knows it
        (0: none); -1: read from `raw` if it is one."""
        read = int(self._qwords[_READ_WORD])
        size = self.size
        if index < read or index >= read + size:
            self._slot_taken(index, read)
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
    ) -> DispatchHandle:
        """Pack kernargs, write a kernel dispatch packet, ring the doorbell.

        Returns a DispatchHandle whose `.wait()` waits for the completion signal. Everything
        it is given is checked before anything is allocated or written (a refused dispatch
        leaves no signal, kernarg or reserved slot behind).
        """
        rt = self.rt
        if "_dispatch" in rt.__dict__ and not rt._tool_dispatch:
            # A tool watches the runtime's dispatches: it replaced `rt._dispatch` on the
            # runtime (as HSA tools wrap the API table), and that runs this dispatch.
            return rt._dispatch(
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
        # A poll that had something to look at may have run callbacks (anything at all):
        # the queue is checked again before its slot is taken, as if the device had run.
        if rt.closed or rt._async_pending:
            rt._check()
            ran = self._check()
        else:  # nothing to raise or poll: _check only looks at the queue itself
            ran = (self.destroyed or self.error is not None) and self._check()
        if completion_signal is not None and not isinstance(completion_signal, Signal):
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT,
                f"completion_signal must be a Signal (rt.create_signal(1)) or None, got "
                f"{show(completion_signal)} ({type(completion_signal).__name__})",
            )
        # A program sends a few kernels in a few shapes to a queue many times: what the
        # checks of a (kernel, geometry, LDS size, barrier, fences) make of them is kept per
        # queue (the queue's agent fixes every limit). Only arguments of exactly these types
        # make a key, as values of others can hash alike (True == 1 == 1.0) and be refused.
        # (`x is False or x is True` is `type(x) is bool`; the default fence scope is tested
        # by identity first.)
        if (
            type(kernel) is KernelSymbol
            and (type(grid) is int and type(workgroup) is int or plain_dims(grid, workgroup))
            and (group_segment_size is None or type(group_segment_size) is int)
            and (barrier is False or barrier is True)
            and (acquire is _SYSTEM or type(acquire) in _SCOPE_TYPES)
            and (release is _SYSTEM or type(release) in _SCOPE_TYPES)
        ):
            key = (kernel, grid, workgroup, group_segment_size, barrier, acquire, release)
            plan = self._plans.get(key)
        else:
            plan = key = None
        if plan is None:
            mine = isinstance(kernel, KernelSymbol) and kernel.rt is rt
            k_agent = kernel.agent if mine else None
            if k_agent is not None and k_agent is not self.agent:
                raise HsaError(
                    Status.ERROR_INVALID_ARGUMENT,
                    f"kernel {kernel.name} was loaded for {k_agent!r} but queue {self.id} is "
                    f"on {self.agent!r}: load the code object for the queue's agent",
                )
            f = rt._dispatch_fields(
                kernel,
                grid,
                workgroup,
                args,
                completion_signal,
                group_segment_size,
                barrier,
                acquire,
                release,
                self.agent,
            )
            values = f["args"]
            geo = {k: f[k] for k in ("grid", "workgroup", "dims", "group_segment_size")}
            # A kernel without arguments has the same kernarg bytes every time.
            data = None if kernel.args else rt._kernarg_bytes(kernel, geo, (), self)
            # The packet's first 40 bytes are the plan's (its header, the 36 bytes after it);
            # kernarg_address, reserved2 and completion_signal follow per dispatch.
            head = _HEAD_STRUCT.pack(*_packet_head(kernel, f))
            plan = (head[:4], head[4:], data, geo)
            if key is not None:
                if len(self._plans) >= _PLANS_PER_QUEUE:
                    self._plans.clear()
                self._plans[key] = plan
        else:
            # The checks a kept plan does not stand for, in _dispatch_fields' order. A kernel
            # without arguments given none (the default) needs no values: its kernarg bytes
            # are in the plan (and `values` is not read).
            if args is not _NO_ARGS or kernel.args:
                values = kernel.check_args(args, rt)
            if completion_signal is not None:
                rt._own_signal(completion_signal, "completion_signal")
        # Opens the dispatch's trace flow: the ioctls a new completion signal or kernarg chunk
        # costs come next, then the packet and the doorbell (hw_model.trace.dispatch_flows).
        switch = rt._trace_switch
        if switch.enabled:
            rt._marker(_dispatch_marker, (self.id, kernel.name))
        if completion_signal is None:
            # rt._completion_signal's pooled case inline: a retired signal re-armed, no ioctl.
            spare = rt._spare_signals
            if spare and not (sig := spare[0]).destroyed and sig._value[0] < 1:
                spare.popleft()
                sig._store_value(1)  # sig._rearm(1), inline: value 1, timestamps cleared
                _clear_stamps(sig._stamps, 0, 0, 0)
            else:
                sig, new = rt._completion_signal()
                ran = ran or new
        else:
            sig = completion_signal
        header, body, data, geo = plan
        if kernel.kernarg_size:
            if data is None:
                data = rt._kernarg_bytes(kernel, geo, values, self)
            chunk = rt._kernarg_chunk
            kernarg = rt._kernarg(data)
            ran = ran or rt._kernarg_chunk is not chunk  # a new chunk: ioctls
        else:
            kernarg = 0
        # add_write_index(1), write_packet and ring_doorbell (_write_raw and _doorbell for a
        # kernel dispatch packet, inline: the same stores in the same order, once per
        # dispatch). The queue was checked above; again if an ioctl or a callback since let
        # the device run. Every field was checked: the packet's bytes go straight into the
        # ring (the pydantic packet is for callers who build packets themselves).
        if ran:
            self._check()
        i = self._add_write_index(1)
        read = int(self._qwords[_READ_WORD])
        size = self.size
        if i < read or i >= read + size:  # (also a negative index: a write index >= 2**63)
            self._slot_taken(i, read)
        base = (i % size) * _PACKET_SIZE
        _pack_body(self._ring_bytes, base + 4, body, kernarg, 0, sig.handle)
        # The 32-bit header+setup store publishes the packet (ROCr: __atomic_store_n release).
        self._store_header(self.base_address + base, header)
        th = rt.thunk
        th.host_elapse(self._packet_write_ps)
        if kernarg:  # no kernarg chunk holds address 0
            rt._note_packet(self, i, kernarg)
        # The packet's trace marker goes with the doorbell's (one record, one host time)
        # unless a poll comes between them, which may log: then it goes first, alone.
        paired = switch.enabled and not rt._async_pending
        # The packet write took host time: the device ran meanwhile. Only a poll with
        # something to look at can have run callbacks (which may end the queue or the
        # runtime, or set its error): without one the check before still stands.
        if rt._async_pending:
            if switch.enabled:
                rt._marker(_write_marker, (i, self.id))
            self._check()
        db = self.doorbell_signal
        if switch.enabled:
            rt._marker(_doorbell_marker, (self.id, i, db.doorbell_address, paired))
        # db.store(i): ROCr's DoorbellSignal::StoreRelease, the MMIO write of the index
        th.host_elapse(db._store_ps)
        db._store_db(i)
        db.last_value = i
        if rt._async_pending:
            rt.poll_async()
        # DispatchHandle(self, i, sig, completion_signal is None) without the call: this queue's
        # runtime is the one the signal goes back to.
        h = _new_object(DispatchHandle)
        h.queue, h.index, h.signal = self, i, sig
        if completion_signal is None:
            h._recycle = rt
        return h

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


class DispatchHandle:
    """What `queue.dispatch()` returns: the packet index and its completion signal.

    A completion signal the runtime made for the dispatch belongs to the handle: while the
    handle lives the signal is the caller's to load, wait on and read timestamps from; once
    the handle is gone (and the packet has retired) the signal goes back to the runtime's
    pool, as HIP's and ROCr's own pools of completion signals are reused, so a loop of
    dispatches keeps a flat number of signals and KFD events. `detach_signal()` keeps it.
    """

    # The runtime to hand the signal back to when the handle goes (__del__ is a tenth of the
    # cost of a weakref.finalize, which a dispatch would pay every time). None on the class:
    # a handle whose __init__ did not finish has nothing to hand back.
    _recycle: Runtime | None = None

    def __init__(self, queue: Queue, index: int, signal: Signal, owns_signal: bool) -> None:
        self.queue = queue
        self.index = index
        self.signal = signal
        if owns_signal:
            if type(queue) is Queue:  # this module's queue: its rt is a Runtime
                self._recycle = queue.rt
            else:
                from rocr.runtime import Runtime  # (which imports this module)

                rt = getattr(queue, "rt", None)
                if isinstance(rt, Runtime):
                    self._recycle = rt

    def detach_signal(self) -> Signal:
        """Take the completion signal for good: it is no longer returned to the pool when the
        handle goes; destroy it yourself (hsa_signal_destroy) when done."""
        self._recycle = None
        return self.signal

    def __del__(self) -> None:
        rt = self._recycle
        # (A closed runtime's pool is never drawn from again: no need to test for it.)
        if rt is not None and not self.signal.destroyed:
            rt._spare_signals.append(self.signal)

    def wait(self, timeout_ns: int | None = None) -> DispatchHandle:
        """Wait for the packet to retire (its completion signal below 1).

        `timeout_ns` bounds the wait in simulated time, as hsa_signal_wait's timeout does
        (negative: HSA_STATUS_ERROR_INVALID_ARGUMENT); a packet not retired by then raises
        HsaError(ERROR) naming it (`handle.signal.wait` returns the value instead). A wait
        that can never finish raises at once; if the queue was stopped by an error, the
        message's first line says which queue and why."""
        sig = self.signal
        if type(sig) is Signal:
            # A local signal: Signal.wait without re-checking the constant condition; the
            # poll it ends with stands for _queue_error's unless it ran callbacks.
            rt = sig.rt
            if timeout_ns is None and not (sig.destroyed or rt.closed or rt._async_pending):
                # The usual round trip: the device runs the whole kernel within the first host
                # step of the spin. Signal._wait's first two looks and that step, here (with its
                # trace markers): a poll with nothing pending does nothing. The rest, if any, is
                # Signal._wait's loop from the same start (the plain loads changed nothing).
                acted = False
                th = rt.thunk
                start = th.host_now()
                traced = rt._trace_switch.enabled
                if traced:
                    rt._marker(_signal.wait_marker, (sig.handle, "LT", 1))
                v = int(sig._value[0])
                if v >= 1 and (spin := _signal.SPIN_BEFORE_SLEEP_PS) > 0:
                    if not th.host_step(start + spin if sig.event is not None else None):
                        raise rt.stuck_wait(sig, _LT, 1, v)
                    if sig.destroyed or rt.closed:
                        sig._live()
                    if not rt._async_pending:  # (else the loop polls before it looks)
                        v = int(sig._value[0])
                if v >= 1:
                    v, acted = sig._wait(_LT, 1, None, _BLOCKED, start)
                elif traced:
                    rt._marker(_signal.returns_marker, (v, sig.handle))
            else:
                limit = None
                if timeout_ns is not None:
                    sig._live()
                    limit = wait_timeout(timeout_ns)
                v, acted = sig._wait(_LT, 1, limit, _BLOCKED)
            err = self._queue_error() if acted else self.queue.error
        else:
            v = sig.wait(Condition.LT, 1, timeout_ns)
            err = self._queue_error()
        if err is not None:
            raise err  # "queue N stopped by the CP: <why>": the queue and the reason first
        if v >= 1:
            rt = self.queue.rt
            lines = [
                f"timeout: packet {self.index} of queue {self.queue.id} did not complete "
                f"within {timeout_ns} ns of simulated time (its completion signal "
                f"{self.signal.handle:#x} is {v})",
                *rt.queue_report(self.queue),
            ]
            raise HsaError(Status.ERROR, "\n".join(lines))
        return self

    def _queue_error(self) -> HsaError | None:
        self.queue.rt.poll_async()
        return self.queue.error

    @property
    def done(self) -> bool:
        return self.signal.load() < 1

    def dispatch_time(self) -> tuple[float, float]:
        return self.signal.dispatch_time()


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


# Trace markers of Queue.dispatch (rt._marker): (track, name, args) from the values logged.
def _dispatch_marker(queue: int, kernel: str) -> tuple[str, str, dict]:
    return "rocr", "Queue.dispatch", {"queue": queue, "kernel": kernel}


def _write_marker(index: int, queue: int) -> tuple[str, str, dict]:
    return "rocr", f"write packet {index}", {"type": "KERNEL_DISPATCH", "queue": queue}


def _doorbell_marker(queue: int, index: int, doorbell: int, paired: bool) -> tuple | list:
    ring = "rocr", "ring doorbell", {"queue": queue, "value": index, "doorbell": hex(doorbell)}
    return [_write_marker(index, queue), ring] if paired else ring
