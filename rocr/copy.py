"""Copies and fills: ROCr's blits (hsa_amd_memory_async_copy, hsa_memory_copy,
hsa_amd_memory_fill).

As ROCr's GpuAgent does, each process creates its SDMA queues lazily, on the first copy that
needs one: one for host-to-device and one for device-to-host per GPU (GpuAgent::InitDma,
blits_[BlitHostToDev] / blits_[BlitDevToHost]), each through hsaKmtCreateQueue with
HSA_QUEUE_SDMA. Into its ring the runtime writes what amd_blit_sdma.cpp SubmitCommand writes:
POLL_REGMEM pairs on each dependency signal still nonzero, a TIMESTAMP when copy profiling is
on, COPY_LINEAR packets of at most 0x3fffe0 bytes, a TIMESTAMP, an ATOMIC ADD64 of -1 on the
completion signal, and for an interrupt signal a FENCE writing the event id to its mailbox and
a TRAP; then it stores the new write offset to the write pointer and the doorbell.

Device-to-device copies, fills, and every copy when HSA_ENABLE_SDMA=0 or when the KFD has no
SDMA queue left (-ENOMEM), run as blit kernels (`copy_buffer`, `fill_buffer`) on an internal
AQL queue, behind a barrier-AND packet on the dependency signals (ROCr's BlitKernel).

Peer copies (one GPU's VRAM to another's) are done by the source GPU (Runtime::CopyMemory's
copy agent) and take the blit GpuAgent::GetBlitObject picks: between GPUs of one XGMI hive
with XGMI SDMA engines, an SDMA queue of type HSA_QUEUE_SDMA_XGMI, one per peer in the order
the peers are first copied to, modulo the XGMI engine count (GetXgmiBlit); otherwise the
device-to-host SDMA queue, which also carries PCIe peer-to-peer copies (GetPcieBlit);
a blit kernel when HSA_ENABLE_PEER_SDMA=0.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from hw_model import aql
from hw_model import sdma_packets as sp
from hw_model.aql import FenceScope, PacketType
from hw_model.kernels.builtins import COPY_BYTES_PER_ITEM, FILL_BYTES_PER_ITEM
from hw_model.structs import AMD_SIGNAL_VALUE_OFFSET
from rocr.errors import HsaError
from rocr.signal import Condition, Signal
from rocr.status import Status
from roct import HsaKmtError
from roct.thunk import QUEUE_TYPE_SDMA, QUEUE_TYPE_SDMA_XGMI

if TYPE_CHECKING:
    from rocr.agent import Agent
    from rocr.queue import Queue
    from rocr.runtime import Runtime

SDMA_QUEUE_SIZE = 1024 * 1024  # amd_blit_sdma.cpp Initialize: kSdmaQueueSize
BLIT_QUEUE_SIZE = 1024  # guess: packets in the internal blit-kernel queue
BLIT_WORKGROUP = 256  # workgroup size of the blit kernels (guess, ROCr uses 256 too)
RING_WAIT_PS = 1_000_000  # the host re-reads the SDMA read pointer every 1 us while full


def sdma_enabled() -> bool:
    """HSA_ENABLE_SDMA: ROCr's flag; "0" makes every copy a blit kernel."""
    return os.environ.get("HSA_ENABLE_SDMA", "1") != "0"


def peer_sdma_enabled() -> bool:
    """HSA_ENABLE_PEER_SDMA: ROCr's flag; "0" makes GPU-to-GPU copies blit kernels."""
    return os.environ.get("HSA_ENABLE_PEER_SDMA", "1") != "0"


class CopyHandle:
    """What memory_async_copy returns: the completion signal and a `.wait()`."""

    def __init__(self, rt: Runtime, signal: Signal, target: int, engine: str, owns: bool) -> None:
        self.rt = rt
        self.signal = signal
        self.engine = engine  # "sdma" or "blit kernel" or "host"
        self._target = target
        self._owns = owns

    def done(self) -> bool:
        return self.signal.load() <= self._target

    def wait(self, timeout_ns: int | None = None) -> CopyHandle:
        """Wait until the copy's completion signal has been decremented."""
        self.signal.wait(Condition.LT, self._target + 1, timeout_ns)
        return self

    def __repr__(self) -> str:
        return f"CopyHandle({self.engine}, signal={self.signal!r})"


class BlitSdma:
    """One SDMA queue of this process: its ring, read/write pointers and doorbell."""

    def __init__(self, rt: Runtime, agent: Agent, direction: str, xgmi: bool = False) -> None:
        self.rt = rt
        self.agent = agent
        self.direction = direction
        self.xgmi = xgmi
        th = rt.thunk
        self._ring = th.alloc_memory(0, SDMA_QUEUE_SIZE, executable=True)
        self._ptrs = None
        try:
            th.map_memory_to_gpu(self._ring.address, [agent.node])
            self._ptrs = th.alloc_memory(0, 4096, coherent=True)
            th.map_memory_to_gpu(self._ptrs.address, [agent.node])
            self.resource = th.create_queue(
                agent.node,
                ring_base=self._ring.address,
                ring_size=SDMA_QUEUE_SIZE,
                read_ptr=self._ptrs.address,  # the engine writes its read offset here
                write_ptr=self._ptrs.address + 8,
                queue_type=QUEUE_TYPE_SDMA_XGMI if xgmi else QUEUE_TYPE_SDMA,
                priority=3,  # HSA_QUEUE_PRIORITY_MAXIMUM, as BlitSdma::Initialize
            )
        except HsaKmtError:
            self._free()
            raise
        self.wptr = 0
        self.queue_id = self.resource.QueueId
        rt.trace(
            "rocr",
            "SDMA queue created",
            agent=agent.name,
            direction=direction,
            type="sdma_xgmi" if xgmi else "sdma",
            kfd_queue=self.queue_id,
            ring=hex(self._ring.address),
        )

    def _free(self) -> None:
        th = self.rt.thunk
        for a in (self._ring, self._ptrs):
            if a is not None:
                with contextlib.suppress(HsaKmtError):
                    th.free_memory(a.address)

    def destroy(self) -> None:
        with contextlib.suppress(HsaKmtError):
            self.rt.thunk.destroy_queue(self.queue_id)
        self._free()

    @property
    def rptr(self) -> int:
        return self._ptrs.mapping.load_u64(0)

    def submit(self, commands: list[bytes]) -> None:
        """Write the packets into the ring (padding to its end with a NOP when they would
        wrap, as WrapQueue does) and ring the doorbell with the new write offset."""
        data = b"".join(commands)
        n = len(data)
        off = self.wptr % SDMA_QUEUE_SIZE
        pad = SDMA_QUEUE_SIZE - off if off + n > SDMA_QUEUE_SIZE else 0
        self._wait_space(pad + n)
        ring = self._ring.mapping.array
        if pad:
            ring[off : off + pad] = 0
            ring[off : off + 4] = np.frombuffer(sp.Nop(pad // 4 - 1).encode()[:4], np.uint8)
            self.wptr += pad
            off = 0
        ring[off : off + n] = np.frombuffer(data, np.uint8)
        self.wptr += n
        rt = self.rt
        rt.thunk.host_elapse(rt.host_cost("packet_write_ps") * max(1, n // 64))
        self._ptrs.mapping.store_u64(8, self.wptr)
        rt.thunk.host_elapse(rt.host_cost("doorbell_store_ps"))
        self.resource.doorbell.store_u64(self.resource.doorbell_offset, self.wptr)
        rt.trace(
            "rocr",
            "SDMA doorbell",
            kfd_queue=self.queue_id,
            wptr=self.wptr,
            packets=[_packet_name(c) for c in commands],
        )

    def _wait_space(self, n: int) -> None:
        if n > SDMA_QUEUE_SIZE:
            raise HsaError(
                Status.ERROR_OUT_OF_RESOURCES,
                f"{n} bytes of SDMA packets exceed the {SDMA_QUEUE_SIZE}-byte ring",
            )
        th = self.rt.thunk
        last = self.rptr
        while self.wptr + n - self.rptr > SDMA_QUEUE_SIZE:
            th.host_elapse(RING_WAIT_PS)
            if not th.host_step(None) and self.rptr == last:
                raise HsaError(
                    Status.ERROR,
                    f"SDMA queue {self.queue_id} is full and its engine makes no progress "
                    f"(read offset {self.rptr}, write offset {self.wptr})",
                )
            last = self.rptr


def _packet_name(raw: bytes) -> str:
    return type(sp.decode(raw)).__name__


def sdma_copy_commands(
    dst: int,
    src: int,
    size: int,
    deps: list[Signal],
    signal: Signal,
    profiling: bool,
) -> list[bytes]:
    """The packets amd_blit_sdma.cpp SubmitCommand writes for one linear copy."""
    cmds: list[bytes] = []
    for d in deps:
        value = d.load()
        if not value:
            continue  # already 0: no poll needed
        addr = d.handle + AMD_SIGNAL_VALUE_OFFSET
        if value >> 32 & 0xFFFFFFFF:
            cmds.append(sp.PollRegmem(addr + 4, 0).encode())  # upper 32 bits first
        cmds.append(sp.PollRegmem(addr, 0).encode())
    if profiling:
        cmds.append(sp.Timestamp(signal.handle + _START_TS).encode())
    off = 0
    while off < size:
        n = min(size - off, sp.MAX_COPY_SIZE)
        cmds.append(sp.CopyLinear(src + off, dst + off, n).encode())
        off += n
    if profiling:
        cmds.append(sp.Timestamp(signal.handle + _END_TS).encode())
    cmds.append(sp.Atomic(signal.handle + AMD_SIGNAL_VALUE_OFFSET, -1).encode())
    if signal.event is not None:
        cmds.append(sp.Fence(signal.event.HWData2, signal.event.EventId).encode())
        cmds.append(sp.Trap(signal.event.EventId).encode())
    return cmds


class BlitKernels:
    """The blit-kernel path of one GPU: an internal AQL queue and the copy/fill kernels."""

    def __init__(self, rt: Runtime, agent: Agent) -> None:
        self.rt = rt
        self.agent = agent
        self.exe = rt.load_code_object("builtin:copy_buffer,fill_buffer", agent)
        self.copy_kernel = self.exe.kernel("copy_buffer")
        self.fill_kernel = self.exe.kernel("fill_buffer")
        self.queue: Queue = agent.create_queue(BLIT_QUEUE_SIZE)

    def _barrier(self, deps: list[Signal]) -> None:
        """A barrier-AND packet per five dependency signals (BlitKernel does the same)."""
        pending = [d for d in deps if d.load() != 0]
        for i in range(0, len(pending), aql.BARRIER_DEP_SIGNAL_COUNT):
            group = pending[i : i + aql.BARRIER_DEP_SIGNAL_COUNT]
            sigs = [d.handle for d in group]
            sigs += [0] * (aql.BARRIER_DEP_SIGNAL_COUNT - len(sigs))
            pkt = aql.BarrierAndPacket(
                header=aql.make_header(
                    PacketType.BARRIER_AND,
                    barrier=True,
                    acquire=FenceScope.SYSTEM,
                    release=FenceScope.SYSTEM,
                ),
                dep_signal=sigs,
            )
            self.queue.submit(pkt)

    def copy(self, dst: int, src: int, size: int, deps: list[Signal], signal: Signal) -> None:
        self._barrier(deps)
        items = -(-size // COPY_BYTES_PER_ITEM)
        self.queue.dispatch(
            self.copy_kernel,
            grid=(items,),
            workgroup=(min(BLIT_WORKGROUP, items),),
            args=(dst, src, size),
            completion_signal=signal,
        )

    def fill(self, ptr: int, value: int, count: int, signal: Signal) -> None:
        items = -(-(count * 4) // FILL_BYTES_PER_ITEM)
        self.queue.dispatch(
            self.fill_kernel,
            grid=(items,),
            workgroup=(min(BLIT_WORKGROUP, items),),
            args=(ptr, value, count),
            completion_signal=signal,
        )

    def destroy(self) -> None:
        if not self.queue.destroyed:
            self.queue.destroy()


def _ts_offsets() -> tuple[int, int]:
    from hw_model.structs import AMD_SIGNAL_END_TS_OFFSET, AMD_SIGNAL_START_TS_OFFSET

    return AMD_SIGNAL_START_TS_OFFSET, AMD_SIGNAL_END_TS_OFFSET


_START_TS, _END_TS = _ts_offsets()


def find_buffer(rt: Any, ptr: Any, what: str, size: int) -> tuple[Any, int]:
    """(buffer, address) of `ptr` (a Buffer or an address inside one of this runtime's
    buffers), checked so that `size` bytes from it stay inside the buffer."""
    from rocr.memory import Buffer
    from rocr.validate import as_u64, show

    if isinstance(ptr, Buffer):
        if ptr.rt is not rt:
            raise HsaError(
                Status.ERROR_INVALID_ALLOCATION,
                f"{what} = {ptr!r} was allocated by another runtime (process)",
            )
        ptr._check()
        buf, addr = ptr, ptr.address
    else:
        addr = as_u64(ptr, what, why="a Buffer or an address inside one")
        buf = next(
            (b for b in rt._buffers if b.address <= addr < b.address + b.size and not b.freed),
            None,
        )
        if buf is None:
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT,
                f"{what} = {show(ptr)} is not inside any buffer of this runtime "
                "(allocate it from a pool, or lock host memory with rt.memory_lock)",
            )
    end = buf.address + buf.size
    if addr + size > end:
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"{what}: {size} bytes at {addr:#x} run {addr + size - end} bytes past the end of "
            f"{buf!r}",
        )
    return buf, addr


HOST_MEMCPY_GBPS = 10.0  # guess: one CPU thread's memcpy bandwidth, GB/s


class Copier:
    """The copy engines of one runtime (process): SDMA queues and blit kernels per GPU."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.sdma: dict[tuple[int, str], BlitSdma | None] = {}
        self.kernels: dict[int, BlitKernels] = {}
        self.profiling = False
        # GpuAgent::xgmi_peer_list_: per copying GPU, its XGMI peers in first-copy order
        self.xgmi_peers: dict[int, list[int]] = {}

    # -- engines -------------------------------------------------------------------------
    def _sdma(self, agent: Agent, direction: str, xgmi: bool = False) -> BlitSdma | None:
        """The SDMA queue for `direction` on `agent`, created on first use; None when
        HSA_ENABLE_SDMA=0 or the KFD has no SDMA queue left (ROCr then uses a blit kernel)."""
        if not sdma_enabled():
            return None
        key = (agent.node, direction)
        if key not in self.sdma:
            try:
                self.sdma[key] = BlitSdma(self.rt, agent, direction, xgmi)
            except HsaKmtError as e:
                self.rt.trace(
                    "rocr",
                    "no SDMA queue: blit kernels",
                    agent=agent.name,
                    direction=direction,
                    reason=e.message,
                )
                self.sdma[key] = None
        return self.sdma[key]

    def _kernels(self, agent: Agent) -> BlitKernels:
        k = self.kernels.get(agent.node)
        if k is None:
            k = self.kernels[agent.node] = BlitKernels(self.rt, agent)
        return k

    def destroy(self) -> None:
        for s in self.sdma.values():
            if s is not None:
                s.destroy()
        self.sdma.clear()
        for k in self.kernels.values():
            k.destroy()
        self.kernels.clear()

    # -- checks --------------------------------------------------------------------------
    def _agent(self, agent: Any, what: str) -> Agent:
        from rocr.agent import Agent
        from rocr.validate import show

        if not isinstance(agent, Agent) or agent.rt is not self.rt:
            raise HsaError(
                Status.ERROR_INVALID_AGENT,
                f"{what} = {show(agent)} is not an agent of this runtime (rt.cpu, rt.gpus[i])",
            )
        return agent

    def _deps(self, deps: Any) -> list[Signal]:
        from rocr.validate import show

        try:
            items = list(deps)
        except TypeError:
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT,
                f"deps = {show(deps)} must be a sequence of signals (hsa_signal_t dep_signals)",
            ) from None
        for i, d in enumerate(items):
            if not isinstance(d, Signal) or d.rt is not self.rt:
                raise HsaError(
                    Status.ERROR_INVALID_SIGNAL,
                    f"deps[{i}] = {show(d)} is not a signal of this runtime",
                )
            d._live()
        return items

    def _check_access(self, buf: Any, agent: Agent, what: str) -> None:
        if buf.pool.vram and buf.pool.owner is agent:
            return
        alloc = self.rt.thunk.allocations.get(buf.address)
        if alloc is not None and agent.node in alloc.mapped_nodes:
            return
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"{what} = {buf!r} is not accessible to {agent.name} (node {agent.node}), which "
            f"does the copy: rt.allow_access([gpu], buf) or rt.memory_lock(buf, [gpu]) first",
        )

    # -- hsa_amd_memory_async_copy ---------------------------------------------------------
    def async_copy(
        self,
        dst: Any,
        dst_agent: Any,
        src: Any,
        src_agent: Any,
        size: Any,
        deps: Any = (),
        completion_signal: Any = None,
    ) -> CopyHandle:
        from rocr.validate import as_u64, show

        rt = self.rt
        rt._check()
        dst_agent = self._agent(dst_agent, "dst_agent")
        src_agent = self._agent(src_agent, "src_agent")
        size = as_u64(size, "size", why="a byte count (size_t)")
        dbuf, daddr = find_buffer(rt, dst, "dst", size)
        sbuf, saddr = find_buffer(rt, src, "src", size)
        dep_list = self._deps(deps)
        owns = completion_signal is None
        if owns:
            sig = rt.create_signal(1, _internal=True)
        elif isinstance(completion_signal, Signal) and completion_signal.rt is rt:
            completion_signal._live()
            sig = completion_signal
        else:
            raise HsaError(
                Status.ERROR_INVALID_SIGNAL,
                f"completion_signal = {show(completion_signal)} is not a signal of this runtime",
            )
        target = sig.load() - 1
        # ROCr Runtime::CopyMemory: the GPU side does the copy; host-to-device on the
        # destination's H2D blit, device-to-host on the source's D2H blit, same device: its
        # blit kernel.
        if dst_agent.is_gpu and not src_agent.is_gpu:
            gpu, direction = dst_agent, "host_to_device"
        elif src_agent.is_gpu and not dst_agent.is_gpu:
            gpu, direction = src_agent, "device_to_host"
        elif src_agent.is_gpu and dst_agent.is_gpu:
            gpu = src_agent
            direction = "device_to_device" if src_agent is dst_agent else "peer"
        else:
            gpu, direction = rt.gpus[0], "host_to_host"
        blit = direction
        if direction == "peer":
            blit = self._peer_blit(src_agent, dst_agent)
        self._check_access(dbuf, gpu, "dst")
        self._check_access(sbuf, gpu, "src")
        rt.trace(
            "rocr",
            "hsa_amd_memory_async_copy",
            dst=hex(daddr),
            src=hex(saddr),
            size=size,
            direction=direction,
            deps=len(dep_list),
            signal=hex(sig.handle),
        )
        if size == 0:
            sig.subtract(1)
            return CopyHandle(rt, sig, target, "none", owns)
        if blit in ("device_to_device", "peer kernel"):
            sdma = None
        elif blit.startswith("xgmi"):
            sdma = self._sdma(gpu, blit, xgmi=True)
        else:
            sdma = self._sdma(gpu, blit)
        if sdma is not None:
            sdma.submit(sdma_copy_commands(daddr, saddr, size, dep_list, sig, self.profiling))
            return CopyHandle(rt, sig, target, "sdma", owns)
        self._kernels(gpu).copy(daddr, saddr, size, dep_list, sig)
        return CopyHandle(rt, sig, target, "blit kernel", owns)

    def _peer_blit(self, src_agent: Agent, dst_agent: Agent) -> str:
        """GpuAgent::GetBlitObject for a copy by `src_agent` to another GPU: "peer kernel"
        (HSA_ENABLE_PEER_SDMA=0: BlitDevToDev), "xgmiN" (both in one hive and the copying GPU
        has XGMI SDMA engines: GetXgmiBlit, N = the peer's index modulo their count), else
        "device_to_host" (GetPcieBlit: BlitDevToHost carries PCIe peer-to-peer copies)."""
        if not peer_sdma_enabled():
            return "peer kernel"
        props = src_agent.props
        hive = props.HiveID
        if hive == 0 or dst_agent.props.HiveID != hive or props.NumSdmaXgmiEngines == 0:
            return "device_to_host"
        peers = self.xgmi_peers.setdefault(src_agent.node, [])
        if dst_agent.node not in peers:
            peers.append(dst_agent.node)
        return f"xgmi{peers.index(dst_agent.node) % props.NumSdmaXgmiEngines}"

    # -- hsa_memory_copy -------------------------------------------------------------------
    def copy(self, dst: Any, src: Any, size: Any) -> None:
        from rocr.validate import as_u64

        rt = self.rt
        rt._check()
        size = as_u64(size, "size", why="a byte count (size_t)")
        dbuf, daddr = find_buffer(rt, dst, "dst", size)
        sbuf, saddr = find_buffer(rt, src, "src", size)
        if size == 0:
            return
        d_agent, s_agent = dbuf.pool.owner, sbuf.pool.owner
        if not d_agent.is_gpu and not s_agent.is_gpu:
            # two host buffers: ROCr copies with the CPU
            data = bytes(sbuf.view()[saddr - sbuf.address : saddr - sbuf.address + size])
            dbuf.view()[daddr - dbuf.address : daddr - dbuf.address + size] = np.frombuffer(
                data, np.uint8
            )
            rt.thunk.host_elapse(int(size * 1000 / HOST_MEMCPY_GBPS))
            rt.trace("rocr", "hsa_memory_copy", size=size, engine="host memcpy")
            return
        gpu = d_agent if d_agent.is_gpu else s_agent
        # Host memory the GPU cannot reach yet is locked (mapped) for the copy only, as
        # ROCr's CopyMemory pins unregistered host memory around the blit.
        mapped = []
        for buf in (dbuf, sbuf):
            if buf.pool.vram:
                continue
            alloc = rt.thunk.allocations.get(buf.address)
            if alloc is not None and gpu.node not in alloc.mapped_nodes:
                rt.thunk.map_memory_to_gpu(buf.address, [gpu.node])
                mapped.append(buf)
        try:
            h = self.async_copy(daddr, d_agent, saddr, s_agent, size)
            h.wait()
        finally:
            for buf in mapped:
                if not buf.freed:
                    rt.thunk.unmap_memory_to_gpu(buf.address, [gpu.node])
        if h._owns:
            h.signal.destroy()

    # -- hsa_amd_memory_fill ---------------------------------------------------------------
    def fill(self, ptr: Any, value: Any, count: Any) -> None:
        from rocr.validate import as_u32, as_u64

        rt = self.rt
        rt._check()
        value = as_u32(value, "value")
        count = as_u64(count, "count", why="a count of 32-bit words")
        buf, addr = find_buffer(rt, ptr, "ptr", count * 4)
        if addr % 4:
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT,
                f"ptr = {addr:#x} is not 4-byte aligned (hsa_amd_memory_fill fills 32-bit words)",
            )
        rt.trace("rocr", "hsa_amd_memory_fill", ptr=hex(addr), value=value, count=count)
        if count == 0:
            return
        if not buf.pool.vram:
            off = addr - buf.address
            buf.view()[off : off + count * 4].view("<u4")[:] = value
            rt.thunk.host_elapse(int(count * 4 * 1000 / HOST_MEMCPY_GBPS))
            return
        sig = rt.create_signal(1, _internal=True)
        self._kernels(buf.pool.owner).fill(addr, value, count, sig)
        sig.wait(Condition.LT, 1)
        sig.destroy()
