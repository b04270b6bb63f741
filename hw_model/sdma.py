"""SDMA engines and the host link.

An SDMA engine serves the user (RLC) queues the KFD mapped to it. Each queue is a ring in
memory; the runtime writes packets (hw_model.sdma_packets: the gfx9 SDMA_PKT_* layouts that
ROCR-Runtime's amd_blit_sdma.cpp writes), stores the new write offset (bytes, monotonic, 64-bit
on gfx9) to the write pointer and rings the doorbell with it. The engine fetches the packet
at its read offset, executes it, advances the read offset and reports it at the queue's rptr
address, as sdma_v4_0's rptr writeback does. One packet at a time per engine; queues of the
same engine take turns packet by packet.

Timing: a COPY_LINEAR or CONSTANT_FILL takes setup latency + bytes / min(engine, link)
bandwidth; bytes that cross the host link (either side in system memory) reserve it, so
concurrent copies (and kernels touching host memory) share its bandwidth.

Completion travels as ROCr asks for it: an ATOMIC ADD64 of -1 on the signal value, a FENCE
writing the event id into the signal's mailbox, then a TRAP whose interrupt context is the
event id (kfd_int_process_v9.c: SOC15_INTSRC_SDMA_TRAP -> kfd_signal_event_interrupt).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hw_model import sdma_packets as sp
from hw_model.config import GpuSpec
from hw_model.engine import PS_PER_NS
from hw_model.memory import MemKind, MemoryFault

if TYPE_CHECKING:
    from hw_model.gpu import Gpu

# Fetch and decode of one non-copy packet (fence, atomic, poll check, timestamp, trap).
SDMA_PACKET_PS = 100 * PS_PER_NS  # guess: ~100 engine clocks


class Link:
    """A link: one FIFO bandwidth server shared by every transfer that crosses it, plus a
    fixed latency per transfer."""

    def __init__(self, name: str, bandwidth_gbps: float, latency_ns: int) -> None:
        self.name = name
        self.ps_per_byte = 1000.0 / bandwidth_gbps  # GB/s = bytes per ns
        self.latency_ps = latency_ns * PS_PER_NS
        self.free_at = 0.0
        self.bytes_moved = 0
        self.busy_ps = 0.0

    def transfer(self, now: int, nbytes: int) -> int:
        """Reserve the link for `nbytes` starting no earlier than `now`; returns the tick the
        last byte has arrived."""
        if nbytes <= 0:
            return now
        start = now if now > self.free_at else self.free_at
        t = nbytes * self.ps_per_byte
        self.free_at = start + t
        self.busy_ps += t
        self.bytes_moved += nbytes
        return math.ceil(self.free_at) + self.latency_ps

    def state(self) -> dict:
        return {
            "name": self.name,
            "bytes_moved": self.bytes_moved,
            "busy_ps": int(self.busy_ps),
        }


class HostLink(Link):
    """The GPU's link to host memory (PCIe, or XGMI to the CPU). Peer-to-peer traffic between
    GPUs without XGMI crosses both GPUs' host links."""

    def __init__(self, spec: GpuSpec) -> None:
        super().__init__(spec.host_link, spec.link_bandwidth_gbps, spec.link_latency_ns)


@dataclass
class SdmaQueue:
    """What the KFD's SDMA MQD (v9_sdma_mqd) gives the engine: ring, rptr writeback and
    wptr poll addresses, doorbell; plus where the engine stands in the ring."""

    queue_id: int  # the KFD's queue id in its process
    pasid: int
    process_name: str
    ring_base: int
    ring_size: int  # bytes
    rptr_addr: int  # sdmax_rlcx_rb_rptr_addr: the engine writes its read offset here
    wptr_addr: int  # sdmax_rlcx_rb_wptr_poll_addr
    doorbell_index: int
    engine_id: int  # sdma_engine_id (XGMI engines follow the PCIe ones)
    sdma_queue_id: int  # RLC queue of that engine
    xgmi: bool = False
    rptr: int = 0  # bytes, monotonic
    wptr: int = 0  # last doorbell value
    error: str | None = None
    blocked_on: int | None = None  # address a POLL_REGMEM waits on
    active: bool = True  # evicted queues stay registered but do not run
    packets: int = 0
    destroyed: bool = False
    _watch: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def type_name(self) -> str:
        return "sdma_xgmi" if self.xgmi else "sdma"

    def describe(self) -> dict:
        return {
            "queue_id": self.queue_id,
            "pasid": self.pasid,
            "type": self.type_name,
            "engine": self.engine_id,
            "sdma_queue": self.sdma_queue_id,
            "rptr": self.rptr,
            "wptr": self.wptr,
            "blocked_on": None if self.blocked_on is None else hex(self.blocked_on),
            "error": self.error,
            "packets": self.packets,
        }


class SdmaEngine:
    """One SDMA instance: fetches packets from its queues' rings and executes them."""

    def __init__(self, gpu: Gpu, engine_id: int, xgmi: bool) -> None:
        self.gpu = gpu
        self.engine_id = engine_id
        self.xgmi = xgmi
        self.track = f"SDMA {engine_id}"
        self.queues: list[SdmaQueue] = []
        self.busy = False
        self._turn = 0
        self.ps_per_byte = 1000.0 / gpu.spec.sdma_bandwidth_gbps
        self.bytes_copied = 0
        self.packets = 0

    # -- queues ----------------------------------------------------------------------------
    def add_queue(self, q: SdmaQueue) -> None:
        self.queues.append(q)

    def remove_queue(self, q: SdmaQueue) -> None:
        q.destroyed = True
        self._unwatch(q)
        if q in self.queues:
            self.queues.remove(q)

    def ring(self, q: SdmaQueue, value: int) -> None:
        """A doorbell store: `value` is the new write offset in bytes."""
        q.wptr = value
        if self.gpu.tracer.enabled:
            self.gpu.tracer.instant(
                self.track,
                "doorbell",
                self.gpu.engine.now,
                {"queue_id": q.queue_id, "pasid": q.pasid, "wptr": value},
                cat="sdma",
            )
        self.kick()

    def kick(self) -> None:
        if not self.busy:
            self.busy = True
            self.gpu.engine.schedule(0, self._next, priority=1)

    # -- the fetch loop ----------------------------------------------------------------------
    def _ready(self, q: SdmaQueue) -> bool:
        return (
            q.active
            and not q.destroyed
            and q.error is None
            and q.blocked_on is None
            and q.rptr < q.wptr
        )

    def _next(self) -> None:
        n = len(self.queues)
        for i in range(n):
            q = self.queues[(self._turn + i) % n]
            if self._ready(q):
                self._turn = (self._turn + i + 1) % n
                self._execute(q)
                return
        self.busy = False

    def _fetch(self, q: SdmaQueue) -> bytes:
        mem = self.gpu.memory
        off = q.rptr % q.ring_size
        n = min(sp.PACKET_SIZE, q.ring_size - off)
        data = mem.read(q.pasid, q.ring_base + off, n, self.gpu.node)
        if n < sp.PACKET_SIZE:
            data += mem.read(q.pasid, q.ring_base, sp.PACKET_SIZE - n, self.gpu.node)
        return data

    def _execute(self, q: SdmaQueue) -> None:
        gpu = self.gpu
        now = gpu.engine.now
        try:
            raw = self._fetch(q)
        except MemoryFault as f:
            self._fault(q, f, "ring fetch")
            return
        size = sp.packet_size(raw, 0, q.wptr - q.rptr)
        try:
            pkt = sp.decode(raw)
        except sp.UnknownPacket as e:
            self._stop(q, str(e))
            return
        if isinstance(pkt, sp.PollRegmem):
            if not self._poll(q, pkt):
                self.gpu.engine.schedule(SDMA_PACKET_PS, self._next, priority=1)
                return
            done = now + SDMA_PACKET_PS
        elif isinstance(pkt, sp.CopyLinear | sp.ConstantFill):
            done = self._transfer_time(q, pkt, now)
        elif isinstance(pkt, sp.Nop):
            done = now
        else:
            done = now + SDMA_PACKET_PS
        gpu.engine.schedule(done - now, self._retire, q, pkt, size, now, priority=1)

    def _retire(self, q: SdmaQueue, pkt: sp.Packet, size: int, start: int) -> None:
        gpu = self.gpu
        if q.destroyed:
            self._next()
            return
        try:
            self._apply(q, pkt)
        except MemoryFault as f:
            self._fault(q, f, _packet_name(pkt))
            self._next()
            return
        q.rptr += size
        q.packets += 1
        self.packets += 1
        try:
            gpu.memory.store_u64(q.pasid, q.rptr_addr, q.rptr, gpu.node)
        except MemoryFault as f:
            self._fault(q, f, "rptr writeback")
        if gpu.tracer.enabled and not isinstance(pkt, sp.Nop):
            args = {"queue_id": q.queue_id, "pasid": q.pasid, **_packet_args(pkt)}
            gpu.tracer.complete(
                self.track, _packet_name(pkt), start, gpu.engine.now - start, args, cat="sdma"
            )
        self._next()

    # -- packets -----------------------------------------------------------------------------
    def _path(self, q: SdmaQueue, va: int, reads: bool) -> list:
        """What the bytes of one side of a copy cross: the host link for system memory; the
        GPU's memory channel for its VRAM; for a peer GPU's VRAM, the XGMI link between the
        two (in the direction the data flows) or, without one, PCIe peer-to-peer through both
        GPUs' host links, and the peer's memory channel."""
        gpu = self.gpu
        bo = gpu.memory.find(q.pasid, va)
        if bo is not None and bo.kind == MemKind.SYSTEM:
            return [gpu.host_link]
        if bo is None or bo.kind != MemKind.VRAM or bo.node == gpu.node:
            return [gpu.channel]
        system = gpu.system
        peer = system.gpu_by_node(bo.node)
        xgmi = system.xgmi_link(bo.node, gpu.node) if reads else system.xgmi_link(gpu.node, bo.node)
        if xgmi is not None:
            return [xgmi, peer.channel]
        return [gpu.host_link, peer.host_link, peer.channel]

    def _transfer_time(self, q: SdmaQueue, pkt: sp.CopyLinear | sp.ConstantFill, now: int) -> int:
        gpu = self.gpu
        start = now + gpu.spec.sdma_setup_latency_ps
        nbytes = pkt.size
        done = start + math.ceil(nbytes * self.ps_per_byte)
        sides = [(pkt.dst, False)]
        if isinstance(pkt, sp.CopyLinear):
            sides.insert(0, (pkt.src, True))
        load: dict[int, list] = {}  # by id(): each server reserved once for all its bytes
        for va, reads in sides:
            for server in self._path(q, va, reads):
                load.setdefault(id(server), [server, 0])[1] += nbytes
        for server, n in load.values():
            done = max(done, server.transfer(start, n))
        return done

    def _poll(self, q: SdmaQueue, pkt: sp.PollRegmem) -> bool:
        """True when the poll is satisfied; else the queue waits for a store to the address."""
        if not pkt.mem_poll:
            # A register poll: ROCr's SDMA_PKT_HDP_FLUSH (BlitSdma on gfx9) is one, with func
            # 0 (always). Registers are not modelled and memory is coherent without the HDP,
            # so there is nothing to wait for.
            return True
        mem = self.gpu.memory
        try:
            raw = mem.read(q.pasid, pkt.addr, 4, self.gpu.node)
        except MemoryFault as f:
            self._fault(q, f, "POLL_REGMEM")
            return False
        value = int.from_bytes(raw, "little") & pkt.mask
        if sp.poll_satisfied(pkt.func, value, pkt.value & pkt.mask):
            return True
        q.blocked_on = pkt.addr
        va = pkt.addr - pkt.addr % 8

        def stored() -> None:
            self._unwatch(q)
            q.blocked_on = None
            self.kick()

        q._watch = stored
        mem.watch(q.pasid, va, stored)
        if self.gpu.tracer.enabled:
            self.gpu.tracer.instant(
                self.track,
                "POLL_REGMEM waits",
                self.gpu.engine.now,
                {"queue_id": q.queue_id, "addr": hex(pkt.addr), "value": value},
                cat="sdma",
            )
        return False

    def _unwatch(self, q: SdmaQueue) -> None:
        if q._watch is not None and q.blocked_on is not None:
            self.gpu.memory.unwatch(q.pasid, q.blocked_on - q.blocked_on % 8, q._watch)
        q._watch = None

    def _apply(self, q: SdmaQueue, pkt: sp.Packet) -> None:
        gpu = self.gpu
        mem = gpu.memory
        node = gpu.node
        pasid = q.pasid
        if isinstance(pkt, sp.CopyLinear):
            if gpu.functional:
                src = mem.gpu_view(pasid, node, pkt.src, pkt.size)
                mem.gpu_view(pasid, node, pkt.dst, pkt.size)  # fault before writing
                mem.write(pasid, pkt.dst, src.copy(), node)
            self.bytes_copied += pkt.size
        elif isinstance(pkt, sp.ConstantFill):
            if gpu.functional:
                view = mem.gpu_view(pasid, node, pkt.dst, pkt.size)
                words = pkt.size // 4
                view[: words * 4].view("<u4")[:] = pkt.value
                mem.store_epoch += 1
                mem.notify(pasid, pkt.dst, pkt.size)
            self.bytes_copied += pkt.size
        elif isinstance(pkt, sp.Fence):
            mem.write(pasid, pkt.addr, (pkt.data & 0xFFFFFFFF).to_bytes(4, "little"), node)
        elif isinstance(pkt, sp.Atomic):
            if pkt.operation != sp.SDMA_ATOMIC_ADD64:
                raise MemoryFault(pkt.addr, 8, f"SDMA atomic operation {pkt.operation}")
            old = mem.atomic_add_i64(pasid, pkt.addr, pkt.src_data, node)
            if gpu.tracer.enabled:
                gpu.tracer.instant(
                    self.track,
                    "completion signal",
                    gpu.engine.now,
                    {"signal": hex(pkt.addr), "old": old, "new": old + pkt.src_data},
                    cat="signal",
                )
        elif isinstance(pkt, sp.Timestamp):
            mem.store_u64(pasid, pkt.addr, gpu.timestamp(gpu.engine.now), node)
        elif isinstance(pkt, sp.Trap):
            gpu.post_sdma_trap(pasid, pkt.int_ctx, self.engine_id)

    # -- errors ------------------------------------------------------------------------------
    def _stop(self, q: SdmaQueue, message: str) -> None:
        q.error = message
        if self.gpu.tracer.enabled:
            self.gpu.tracer.instant(
                self.track,
                "queue stopped",
                self.gpu.engine.now,
                {"queue_id": q.queue_id, "pasid": q.pasid, "error": message},
                cat="sdma",
            )
        self._next()

    def _fault(self, q: SdmaQueue, f: MemoryFault, what: str) -> None:
        q.error = f"{what}: {f}"
        self.gpu.post_vm_fault(
            q.pasid,
            f,
            q.queue_id,
            client=f"SDMA{self.engine_id}",
            detail={"sdma_packet": what},
        )
        if self.gpu.tracer.enabled:
            self.gpu.tracer.instant(
                self.track,
                "VM fault",
                self.gpu.engine.now,
                {"queue_id": q.queue_id, "error": q.error},
                cat="sdma",
            )

    def state(self) -> dict:
        return {
            "engine": self.engine_id,
            "xgmi": self.xgmi,
            "busy": self.busy,
            "bytes_copied": self.bytes_copied,
            "packets": self.packets,
            "queues": [q.describe() for q in self.queues],
        }


def _packet_name(pkt: sp.Packet) -> str:
    return {
        sp.CopyLinear: "COPY_LINEAR",
        sp.ConstantFill: "CONSTANT_FILL",
        sp.Fence: "FENCE",
        sp.Trap: "TRAP",
        sp.PollRegmem: "POLL_REGMEM",
        sp.Atomic: "ATOMIC",
        sp.Timestamp: "TIMESTAMP",
        sp.Nop: "NOP",
    }[type(pkt)]


def _packet_args(pkt: sp.Packet) -> dict:
    if isinstance(pkt, sp.CopyLinear):
        return {"src": hex(pkt.src), "dst": hex(pkt.dst), "bytes": pkt.size}
    if isinstance(pkt, sp.ConstantFill):
        return {"dst": hex(pkt.dst), "value": hex(pkt.value), "bytes": pkt.size}
    if isinstance(pkt, sp.Fence):
        return {"addr": hex(pkt.addr), "data": pkt.data}
    if isinstance(pkt, sp.Atomic | sp.Timestamp | sp.PollRegmem):
        return {"addr": hex(pkt.addr)}
    if isinstance(pkt, sp.Trap):
        return {"int_ctx": pkt.int_ctx}
    return {}
