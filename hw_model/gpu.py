"""One GPU device: its CUs, memory channel, dispatcher, command processor and HW scheduler.

The device-facing half of amdgpu: doorbell pages route stores to packet processors (the
doorbell BAR), the interrupt handler ring carries end-of-pipe and fault interrupts up to
whoever registered for them (the KFD), and GPU timestamps count at the preset's timestamp
frequency.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from hw_model.command_processor import Mqd, PacketProcessor
from hw_model.compute_unit import ComputeUnit, MemoryChannel
from hw_model.config import GpuSpec
from hw_model.dispatcher import Dispatcher
from hw_model.engine import PS_PER_S as _PS_PER_S
from hw_model.memory import VM_FAULT_CLIENT_CP, BufferObject, MemoryFault, Window
from hw_model.scheduler import HwScheduler
from hw_model.sdma import HostLink, SdmaEngine, SdmaQueue
from hw_model.structs import (
    AMD_SIGNAL_END_TS_OFFSET,
    AMD_SIGNAL_EVENT_ID_OFFSET,
    AMD_SIGNAL_EVENT_MAILBOX_PTR_OFFSET,
    AMD_SIGNAL_START_TS_OFFSET,
    AMD_SIGNAL_VALUE_OFFSET,
)
from hw_model.trace import DEFAULT_KERNEL_RECORDS, RingLog, TraceEvent

_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
_U32 = struct.Struct("<I")  # amd_signal_t.event_id
# amd_signal_t from its value on (offset 8), read or written together: value,
# event_mailbox_ptr, event_id, reserved1 (offsets 8, 16, 24, 28), then start_ts and end_ts
# (offsets 32, 40) when written.
_SIGNAL_WORDS_IN = struct.Struct("<qQII")
_SIGNAL_WORDS_OUT = struct.Struct("<QQIIQQ")
assert AMD_SIGNAL_VALUE_OFFSET + _SIGNAL_WORDS_OUT.size == AMD_SIGNAL_END_TS_OFFSET + 8
_M64 = 0xFFFFFFFFFFFFFFFF

if TYPE_CHECKING:
    from hw_model.system import System

# Interrupt sources (the IH ring's client/source ids, simplified to names).
IRQ_SIGNAL_EVENT = "signal_event"  # CP end-of-pipe with an event id (SOC15_INTSRC_CP_END_OF_PIPE)
IRQ_VM_FAULT = "vm_fault"  # UTCL2 page fault


class Gpu:
    def __init__(self, system: System, spec: GpuSpec, node: int, gpu_id: int) -> None:
        self.system = system
        self.spec = spec
        self.node = node  # KFD topology node
        self.gpu_id = gpu_id  # KFD gpu_id (a hash of the PCI location in the real driver)
        self.engine = system.engine
        self.memory = system.memory
        self.tracer = system.tracer
        self.functional = system.spec.functional
        self.cus = [ComputeUnit(spec, i) for i in range(spec.num_cus)]
        self.channel = MemoryChannel(spec)
        self.dispatcher = Dispatcher(self, system.spec.placement_policy)
        self.scheduler = HwScheduler(self, system.spec.scheduler_policy)
        self.queues: dict[int, PacketProcessor] = {}  # by doorbell index
        self.host_link = HostLink(spec)
        # PCIe SDMA engines first, then the XGMI ones (sdma_engine_id numbering in amdkfd)
        self.sdma_engines = [
            SdmaEngine(self, i, xgmi=i >= spec.sdma_engines)
            for i in range(spec.sdma_engines + spec.sdma_xgmi_engines)
        ]
        self.sdma_queues: dict[int, SdmaQueue] = {}  # by doorbell index
        self.queue_errors: list[dict] = []
        # rocprofv3-style kernel records, newest kept (a bounded ring, like the trace)
        self.kernel_records: RingLog = RingLog(DEFAULT_KERNEL_RECORDS)
        self.stats_kernels = 0
        # `fence_ps` by scope (none, agent, system; 3 is reserved), for the CP: each packet
        # has an acquire and a release.
        self.acquire_fence_ps = (0, spec.acquire_fence_agent_ps, spec.acquire_fence_system_ps, 0)
        self.release_fence_ps = (0, spec.release_fence_agent_ps, spec.release_fence_system_ps, 0)
        # By the same scope: a packet's fetch-to-process delay (processing plus its acquire
        # fence), and what its retirement adds (its release fence plus the retire latency).
        self.fetch_ps = tuple(spec.cp_packet_latency_ps + f for f in self.acquire_fence_ps)
        self.retire_ps = tuple(f + spec.cp_retire_latency_ps for f in self.release_fence_ps)
        # Plain windows (memory.Window) of completion signals by address, each keeping the
        # window of the event mailbox it named last as its `key`; the plain_epoch at which
        # `plain` last refused one (-1: never).
        self._signal_windows: dict[int, Window] = {}
        self._plain_refused = -1
        # What every end-of-pipe interrupt is posted with (the spec's latency, the system's
        # delivery): one attribute each instead of two.
        self._interrupt_latency_ps = spec.interrupt_latency_ps
        self._deliver_interrupt = system.deliver_interrupt

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_signal_windows"] = {}  # kept accesses, made again after a restore
        return state

    # -- queues ----------------------------------------------------------------------------
    def register_queue(self, mqd: Mqd) -> PacketProcessor:
        if mqd.doorbell_index in self.queues:
            raise ValueError(f"doorbell {mqd.doorbell_index} already has a queue")
        pp = PacketProcessor(self, mqd)
        self.queues[mqd.doorbell_index] = pp
        self.scheduler.add_queue(pp)
        return pp

    def unregister_queue(self, doorbell_index: int) -> None:
        pp = self.queues.pop(doorbell_index, None)
        if pp is not None:
            self.scheduler.remove_queue(pp)

    def register_sdma_queue(self, q: SdmaQueue) -> None:
        if q.doorbell_index in self.queues or q.doorbell_index in self.sdma_queues:
            raise ValueError(f"doorbell {q.doorbell_index} already has a queue")
        self.sdma_queues[q.doorbell_index] = q
        self.sdma_engines[q.engine_id].add_queue(q)

    def unregister_sdma_queue(self, doorbell_index: int) -> None:
        q = self.sdma_queues.pop(doorbell_index, None)
        if q is not None:
            self.sdma_engines[q.engine_id].remove_queue(q)

    def map_doorbell_page(self, bo: BufferObject, first_index: int) -> None:
        """Route 64-bit stores into `bo` to doorbells first_index, first_index+1, ..."""
        size = self.spec.doorbell_size
        data = bo.data

        def on_write(offset: int, nbytes: int) -> None:
            index = first_index + offset // size
            value = _U64.unpack_from(data, offset - offset % size)[0]  # 64-bit doorbells
            pp = self.queues.get(index)
            if pp is not None:
                pp.ring(value)
            elif (sq := self.sdma_queues.get(index)) is not None:
                self.sdma_engines[sq.engine_id].ring(sq, value)
            elif self.tracer.enabled:
                self.tracer.instant(
                    "CP",
                    "doorbell with no queue",
                    self.engine.now,
                    {"doorbell": index, "value": value},
                )

        bo.on_write = on_write

    def queue_by_id(self, pasid: int, queue_id: int) -> PacketProcessor | None:
        for pp in self.queues.values():
            if pp.mqd.pasid == pasid and pp.mqd.queue_id == queue_id:
                return pp
        return None

    # -- fences, signals, interrupts -------------------------------------------------------
    def fence_ps(self, scope: int, acquire: bool) -> int:
        s = self.spec
        if scope == 1:
            return s.acquire_fence_agent_ps if acquire else s.release_fence_agent_ps
        if scope == 2:
            return s.acquire_fence_system_ps if acquire else s.release_fence_system_ps
        return 0

    def timestamp(self, tick_ps: int) -> int:
        """GPU timestamp counter value at `tick_ps`."""
        return tick_ps * self.spec.timestamp_frequency_hz // _PS_PER_S

    def signal_completion(self, pasid: int, handle: int, start: int, end: int, queue: int) -> None:
        """End of a packet: timestamps, decrement the signal, event interrupt if it has one.
        `queue`: the id of the queue whose packet it ends (its track in a trace)."""
        mem = self.memory
        node = self.node
        # amd_signal_t up to end_ts in one checked access when no hook or monitor must see
        # the three stores (always so for a pooled completion signal): the same bytes. The
        # access is kept per signal (a `Window`, tested here as its docstring says).
        w = self._signal_windows.get(handle)
        if not (
            w is not None
            and w.pasid == pasid
            and w.epoch == mem.plain_epoch
            and node in w.bo.gpu_nodes
            and w.bo.on_write is None
        ):
            w = self._plain_window(pasid, handle, AMD_SIGNAL_END_TS_OFFSET + 8)
            if w is not None:
                windows = self._signal_windows
                if len(windows) >= 1024:  # bounded: signals come and go
                    windows.clear()
                windows[handle] = w
        if w is not None:
            data = w.data
            off = w.off + AMD_SIGNAL_VALUE_OFFSET
            hz = self.spec.timestamp_frequency_hz  # `timestamp`, inline: once per packet
            # The value, the timestamps and the words between them written back at once, those
            # between as they were read (the three stores leave them as they are).
            old, mailbox, event_id, reserved1 = _SIGNAL_WORDS_IN.unpack_from(data, off)
            _SIGNAL_WORDS_OUT.pack_into(
                data,
                off,
                (old - 1) & _M64,
                mailbox,
                event_id,
                reserved1,
                start * hz // _PS_PER_S & _M64,
                end * hz // _PS_PER_S & _M64,
            )
            if not mailbox:
                if self.tracer.enabled:
                    self.tracer.log((_completion_event, self.engine.now, queue, handle, old))
                mem.store_epoch += 3  # one per store: both timestamps and the value
                return
            # `_post_signal_event` inline, the mailbox store unchecked when nothing hooks or
            # monitors it (the KFD's event page): once per packet with an event.
            # The plain window of the mailbox the signal named before, if any: made with the
            # signal's (its epoch and process), which the test above covers.
            box = w.key
            if not (
                box is not None
                and box.va == mailbox
                and node in box.bo.gpu_nodes
                and box.bo.on_write is None
            ):
                box = w.key = self._plain_window(pasid, mailbox, 8)
                if box is None:
                    if self.tracer.enabled:
                        self.tracer.log((_completion_event, self.engine.now, queue, handle, old))
                    mem.store_epoch += 3
                    self._post_signal_event(pasid, mailbox, event_id)
                    return
            _U64.pack_into(box.data, box.off, event_id)
            mem.store_epoch += 4  # the signal's three stores and the mailbox's
            if self.tracer.enabled:
                # The completion signal and its interrupt, at one tick: one record.
                self.tracer.log(
                    (_completion_irq_events, self.engine.now, queue, handle, old, pasid, event_id)
                )
            self.engine.post(
                self._interrupt_latency_ps,
                2,
                self._deliver_interrupt,
                node,
                IRQ_SIGNAL_EVENT,
                pasid,
                {"event_id": event_id},
            )
            return
        try:
            mem.store_u64(pasid, handle + AMD_SIGNAL_START_TS_OFFSET, self.timestamp(start), node)
            mem.store_u64(pasid, handle + AMD_SIGNAL_END_TS_OFFSET, self.timestamp(end), node)
            old = mem.atomic_add_i64(pasid, handle + AMD_SIGNAL_VALUE_OFFSET, -1, node)
        except MemoryFault as f:
            if self.tracer.enabled:
                self.tracer.instant(
                    f"queue {queue}",
                    "completion signal faulted",
                    self.engine.now,
                    {"error": str(f)},
                )
            return
        if self.tracer.enabled:
            self.tracer.log((_completion_event, self.engine.now, queue, handle, old))
        self.raise_signal_event(pasid, handle)

    def _plain_window(self, pasid: int, va: int, size: int) -> Window | None:
        """`memory.plain_window` for the words of a completion signal or its mailbox, not
        asked again at a `plain_epoch` where it refused one (a monitor anywhere refuses all)."""
        mem = self.memory
        if mem.plain_epoch == self._plain_refused:
            return None
        w = mem.plain_window(pasid, va, size, self.node)
        if w is None:
            self._plain_refused = mem.plain_epoch
        return w

    def raise_signal_event(self, pasid: int, handle: int) -> None:
        """If the signal has an event mailbox: write the event id there, then interrupt."""
        mem = self.memory
        mailbox = mem.load_u64(pasid, handle + AMD_SIGNAL_EVENT_MAILBOX_PTR_OFFSET, self.node)
        if not mailbox:
            return
        event_id = mem.load_u64(pasid, handle + AMD_SIGNAL_EVENT_ID_OFFSET, self.node) & 0xFFFFFFFF
        self._post_signal_event(pasid, mailbox, event_id)

    def _post_signal_event(self, pasid: int, mailbox: int, event_id: int) -> None:
        # A bad mailbox only loses the write; the interrupt still goes out. (try, not
        # contextlib.suppress: three calls fewer on every completion signal.)
        try:  # noqa: SIM105
            self.memory.store_u64(pasid, mailbox, event_id, self.node)
        except MemoryFault:
            pass
        self.post_interrupt(IRQ_SIGNAL_EVENT, pasid, {"event_id": event_id})

    def post_sdma_trap(self, pasid: int, int_ctx: int, engine_id: int) -> None:
        """SDMA_PKT_TRAP: an IH entry from the SDMA block whose context is the event id
        (kfd_int_process_v9.c: SOC15_INTSRC_SDMA_TRAP -> kfd_signal_event_interrupt with
        the 28 valid bits of context_id0)."""
        self.post_interrupt(IRQ_SIGNAL_EVENT, pasid, {"event_id": int_ctx, "sdma": engine_id})

    def post_vm_fault(
        self,
        pasid: int,
        fault: MemoryFault,
        queue_id: int,
        *,
        client: str = VM_FAULT_CLIENT_CP,
        detail: dict | None = None,
    ) -> None:
        """A UTCL2 no-retry page fault: the IH ring entry carries the PASID and the faulting
        page (kfd_int_process_v9.c reads page_addr from it); `client` is the UTCL2 client
        that missed (the fault status register's CID: TCP for a wave's vector memory access,
        CPC for the CP's own fetches). `detail` is what only the model knows (which kernel
        and workgroup), for the KFD's debugfs log."""
        self.post_interrupt(
            IRQ_VM_FAULT,
            pasid,
            {
                "va": fault.va,
                "reason": fault.reason,
                "queue_id": queue_id,
                "node": self.node,
                "client": client,
                **(detail or {}),
            },
        )

    def post_interrupt(self, source: str, pasid: int, data: dict) -> None:
        eng = self.engine
        if self.tracer.enabled:
            self.tracer.instant(
                "CP", f"interrupt {source}", eng.now, {"pasid": pasid, **data}, cat="irq"
            )
        eng.schedule(
            self.spec.interrupt_latency_ps,
            self.system.deliver_interrupt,
            self.node,
            source,
            pasid,
            data,
            priority=2,
        )

    def state(self) -> dict:
        return {
            "node": self.node,
            "gpu_id": self.gpu_id,
            "name": self.spec.name,
            "scheduler": self.scheduler.describe(),
            "cus": self.dispatcher.occupancy(),
            "active_kernels": [
                {
                    "name": k.name,
                    "queue_id": k.queue_id,
                    "dispatch_id": k.dispatch_id,
                    "workgroups": k.total_wgs,
                    "dispatched": k.next_wg,
                    "done": k.done_wgs,
                }
                for k in self.dispatcher.active
            ],
            "memory_bytes_moved": self.channel.bytes_moved,
            "host_link": self.host_link.state(),
            "sdma": [e.state() for e in self.sdma_engines],
        }


InterruptHandler = Callable[[int, str, int, dict], None]


# -- trace records: a call site logs its values (Tracer.log), these make the events when read


def _completion_event(ts: int, queue: int, handle: int, old: int) -> TraceEvent:
    args = {"signal": hex(handle), "old": old, "new": old - 1}
    return TraceEvent("i", f"queue {queue}", "completion signal", ts, 0, args, "signal")


def _completion_irq_events(
    ts: int, queue: int, handle: int, old: int, pasid: int, event_id: int
) -> tuple[TraceEvent, TraceEvent]:
    args = {"pasid": pasid, "event_id": event_id}
    irq = TraceEvent("i", "CP", f"interrupt {IRQ_SIGNAL_EVENT}", ts, 0, args, "irq")
    return _completion_event(ts, queue, handle, old), irq
