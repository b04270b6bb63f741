"""The runtime object (hsa_init ... hsa_shut_down): agents, pools, signals, queues, loader.

`rocr.init()` opens the KFD through the thunk — a fresh emulated machine unless `system=` names
one, in which case this runtime is a second process on that machine. Everything the runtime
does goes down as thunk calls; what comes back up arrives through memory (signal values,
read_dispatch_id) or KFD events.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from hw_model import aql
from hw_model.aql import FenceScope, PacketType
from hw_model.kernels import pack_args
from rocr.agent import Agent, make_pools
from rocr.copy import Copier, CopyHandle
from rocr.errors import HsaError
from rocr.executable import Executable, KernelSymbol, load
from rocr.loader import fill_hidden, hidden_values
from rocr.memory import Buffer, MemoryPool
from rocr.queue import DispatchHandle, Queue, _packet_head, status_for_error_code
from rocr.signal import Condition, Signal, SignalPool
from rocr.status import Status
from rocr.validate import (
    as_bool,
    as_signal_value,
    as_u32,
    as_u64,
    check_allow_access,
    check_kernel_agent,
    dispatch_geometry,
    fence_scope,
    show,
)
from roct import HsaEvent, HsaKmtError, HsaKmtStatus, InProcess, Thunk
from roct.thunk import HSA_EVENTTYPE_MEMORY, HsaMemoryAccessFault

KERNARG_CHUNK = 1 << 20  # kernarg arena per chunk (ROCr sub-allocates kernargs likewise)
# Called with every new Runtime at the end of hsa_init, as ROCr calls the OnLoad of each tool
# library named in HSA_TOOLS_LIB: `hsaemu trace` (like rocprofv3) uses it to find every
# machine a script creates. A hook must not keep what it is given past its own run.
INIT_HOOKS: list[Callable[[Runtime], None]] = []
KERNARG_ALIGN = 64


class _TraceAlways:
    """The trace switch of a transport that has none: every marker goes to it."""

    enabled = True


_TRACE_ALWAYS = _TraceAlways()
_DISPATCH_FIELDS = tuple(name for name, _ in aql.KernelDispatchPacket.LAYOUT)


def _hsa_error(e: HsaKmtError, status: Status, what: str) -> HsaError:
    mapping = {
        HsaKmtStatus.NO_MEMORY: Status.ERROR_OUT_OF_RESOURCES,
        HsaKmtStatus.OUT_OF_RESOURCES: Status.ERROR_OUT_OF_RESOURCES,
    }
    return HsaError(mapping.get(e.status, status), f"{what}: {e.message}")


class Runtime:
    def __init__(
        self,
        *,
        preset: str | None = None,
        system: Any = None,
        spec: Any = None,
        name: str = "",
        transport: Any = None,
        trace: bool | None = None,
    ) -> None:
        trace = trace_choice(trace)
        kfd = os.environ.get("HSAEMU_KFD", "")
        if transport is None and system is None and spec is None and kfd:
            transport = _service_transport(kfd, name)
        if transport is None:
            if system is None and preset is None and spec is None:
                preset = os.environ.get("HSAEMU_PRESET", "gfx900")
            transport = InProcess(system=system, preset=preset, spec=spec, name=name, trace=trace)
        self.transport = transport
        self.system = getattr(transport, "system", None)  # opaque: for inspection only
        self._trace_switch = getattr(transport, "trace_switch", _TRACE_ALWAYS)
        self._host_costs: dict[str, int] = {}
        try:
            self.thunk = Thunk(transport)
        except HsaKmtError as e:
            raise HsaError(Status.ERROR, f"hsa_init: cannot open the KFD: {e.message}") from e
        # Trace markers of a dispatch and its wait: `_marker(make, values)`, make(*values)
        # giving (track, name, args) once the trace is read (callers check _trace_switch).
        self._marker = self.thunk.marker
        self.signal_pool = SignalPool(self)
        self._signals: set[Signal] = set()
        self._queues: set[Queue] = set()
        self._buffers: set[Buffer] = set()
        self._executables: list[Executable] = []
        self._queue_ids = 0
        self._kernarg_chunk: _KernargChunk | None = None
        self._kernarg_off = 0
        self._kernarg_chunks: list[_KernargChunk] = []
        # Completion signals of dropped DispatchHandles, oldest first, to reuse once retired.
        self._spare_signals: deque[Signal] = deque()
        self._copier: Copier | None = None  # SDMA queues and blit kernels, made lazily
        # Queues whose inactive-signal event the async events thread saw set since the last
        # poll: only those can have a new error, so a poll costs nothing per idle queue. A
        # transport without that thread makes every poll look at every queue instead.
        self._woken: list[Queue] = []
        self._scan_queues = False
        # Whether a poll has anything to look at: set by whatever can give it something (a
        # woken queue, the fault event's data, a scan), so a poll with nothing to do (five a
        # dispatch) tests one attribute. Cleared by the poll that finds nothing left.
        self._async_pending = False
        self.agent_list: list[Agent] = []
        for node, props in enumerate(self.thunk.nodes):
            agent = Agent(self, node, props)
            mem = self.thunk.get_node_memory_properties(node)
            make_pools(self, agent, sum(m.SizeInBytes for m in mem))
            self.agent_list.append(agent)
        self.cpu = next(a for a in self.agent_list if not a.is_gpu)
        self.gpus = [a for a in self.agent_list if a.is_gpu]
        self._clock0 = {g.node: self.thunk.get_clock_counters(g.node) for g in self.gpus}
        self.closed = False
        # ROCr Runtime::BindVmFaultHandler: a memory event, manual reset ("to avoid racing
        # condition with driver in case of multiple concurrent VM faults"), on which the async
        # events thread waits; VMFaultHandler runs when the KFD reports a fault through it.
        self._vm_fault_event: HsaEvent | None = None
        self._vm_fault: HsaError | None = None  # the fault reported; every later call raises it
        if self.gpus:
            try:
                self._vm_fault_event = self.thunk.create_event(
                    HSA_EVENTTYPE_MEMORY, manual_reset=True
                )
            except HsaKmtError as e:
                raise HsaError(Status.ERROR, f"hsa_init: no VM fault event: {e.message}") from e
            self.thunk.wait_on_multiple_events_async([self._vm_fault_event], self._async_woke)
        self.trace("rocr", "hsa_init", agents=len(self.agent_list))
        for hook in list(INIT_HOOKS):
            hook(self)

    # -- lifetime --------------------------------------------------------------------------
    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """hsa_shut_down: destroy queues, signals and memory; close the KFD."""
        if self.closed:
            return
        self.trace("rocr", "hsa_shut_down")
        if self._copier is not None:
            self._copier.destroy()
        # In creation order: a set of queues iterates by address, which differs from run to
        # run, and the HWS's unmaps and runlists follow the order the queues go.
        for q in sorted(self._queues, key=lambda q: q.id):
            q.destroy()
        self.thunk.close()
        self.closed = True

    def checkpoint(self, path: str | os.PathLike[str], **extra: Any) -> int:
        """Write this runtime's whole machine (memory, queues, signals, code objects, the
        engine's pending events, the trace) to `path`, for a long experiment to go on later
        from `rocr.restore(path)`; `extra` objects come back as the restored runtime's. Returns
        the bytes written. Call it between operations. (rocr.checkpoint)"""
        from rocr.checkpoint import checkpoint

        return checkpoint(self, path, **extra)

    def _check(self) -> None:
        if self.closed:
            raise HsaError(Status.ERROR_NOT_INITIALIZED, "the runtime was shut down")
        ev = self._vm_fault_event
        if self._vm_fault is not None or (ev is not None and ev.MemoryAccessFault is not None):
            self.poll_async()  # a VM fault: every call of this process raises it (ROCr aborts)

    # -- agents ----------------------------------------------------------------------------
    def agents(self) -> list[Agent]:
        """hsa_iterate_agents."""
        return list(self.agent_list)

    # -- host time / trace -----------------------------------------------------------------
    def host_cost(self, name: str) -> int:
        # A machine's host costs are fixed (its spec is frozen): asked twice per dispatch.
        cost = self._host_costs.get(name)
        if cost is None:
            cost = self._host_costs[name] = self.thunk.host_cost(name)
        return cost

    def trace(self, track: str, name: str, **args: object) -> None:
        if self._trace_switch.enabled:
            self.thunk.trace(track, name, **args)

    @property
    def tracing(self) -> bool:
        """Whether trace markers are recorded (rocr.init(trace=...)): callers on hot paths
        check it before building a marker's arguments."""
        return self._trace_switch.enabled

    @property
    def now_ns(self) -> float:
        return self.thunk.host_now() / 1000

    def gpu_ticks_to_ns(self, ticks: int, node: int | None = None) -> float:
        """GPU timestamp -> system-clock ns, from two clock-counter snapshots (as ROCr's
        GpuAgent::TranslateTime does)."""
        g = node if node is not None else self.gpus[0].node
        c0 = self._clock0[g]
        c1 = self.thunk.get_clock_counters(g)
        dg = c1.gpu_clock_counter - c0.gpu_clock_counter
        ds = c1.system_clock_counter - c0.system_clock_counter
        if dg <= 0:
            return float(c0.system_clock_counter)
        ns_per_tick = ds / dg
        return c1.system_clock_counter - (c1.gpu_clock_counter - ticks) * ns_per_tick

    # -- memory ----------------------------------------------------------------------------
    def _allocate(self, pool: MemoryPool, size: int) -> Buffer:
        self._check()
        try:
            if pool.vram:
                alloc = self.thunk.alloc_memory(pool.owner.node, size, vram=True, host_access=False)
                self.thunk.map_memory_to_gpu(alloc.address, [pool.owner.node])
            else:
                alloc = self.thunk.alloc_memory(0, size, coherent=pool.fine_grained)
        except HsaKmtError as e:
            raise _hsa_error(
                e, Status.ERROR_INVALID_ALLOCATION, f"allocating {size} bytes from {pool.name}"
            ) from e
        buf = Buffer(self, pool, alloc)
        self._buffers.add(buf)
        self.trace(
            "rocr",
            "hsa_amd_memory_pool_allocate",
            pool=pool.name,
            size=size,
            address=hex(alloc.address),
        )
        return buf

    def _free(self, buf: Buffer) -> None:
        self.thunk.free_memory(buf.address)
        self._buffers.discard(buf)

    def allow_access(self, agents: Iterable[Agent], buf: Buffer) -> None:
        """hsa_amd_agents_allow_access: map `buf` into the page tables of `agents`.

        As hsa_amd_agents_allow_access: no agents is INVALID_ARGUMENT, a handle that is not
        an agent of this runtime INVALID_AGENT, memory the runtime does not track (freed, or
        another runtime's) INVALID_ALLOCATION."""
        self._check()
        agent_list = check_allow_access(agents, buf, self, Agent, Buffer)
        nodes = [a.node for a in agent_list if a.is_gpu]
        if nodes:
            try:
                self.thunk.map_memory_to_gpu(buf.address, nodes)
            except HsaKmtError as e:
                raise _hsa_error(e, Status.ERROR_INVALID_ARGUMENT, "allow_access") from e
        self.trace("rocr", "hsa_amd_agents_allow_access", address=hex(buf.address), nodes=nodes)

    # -- copies (hsa_ext_amd.h; rocr/copy.py) ---------------------------------------------
    @property
    def copier(self) -> Copier:
        if self._copier is None:
            self._copier = Copier(self)
        return self._copier

    def memory_async_copy(
        self,
        dst: Any,
        dst_agent: Agent,
        src: Any,
        src_agent: Agent,
        size: int,
        deps: Iterable[Signal] = (),
        completion_signal: Signal | None = None,
    ) -> CopyHandle:
        """hsa_amd_memory_async_copy: copy `size` bytes once every signal in `deps` is 0;
        the completion signal is decremented when done (a signal of the runtime's own when
        None). Host<->device copies go to an SDMA queue, device<->device to a blit kernel.
        Returns a handle with `.wait()`."""
        return self.copier.async_copy(dst, dst_agent, src, src_agent, size, deps, completion_signal)

    def memory_copy(self, dst: Any, src: Any, size: int) -> None:
        """hsa_memory_copy: synchronous copy between any two buffers of this runtime (VRAM
        included); the engine is chosen as memory_async_copy does."""
        self.copier.copy(dst, src, size)

    def memory_fill(self, ptr: Any, value: int, count: int) -> None:
        """hsa_amd_memory_fill: `count` 32-bit words of `value` at `ptr` (4-byte aligned);
        VRAM is filled by a blit kernel, system memory by the host."""
        self.copier.fill(ptr, value, count)

    def memory_lock(self, buf: Any, agents: Iterable[Agent] | None = None) -> int:
        """hsa_amd_memory_lock: pin a host buffer and map it for `agents` (all GPUs when
        None); returns the address the agents use (the same, with one VM per process)."""
        self._check()
        if not isinstance(buf, Buffer) or buf.pool.vram:
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT,
                f"buf = {show(buf)} must be a host Buffer (a system pool's allocation) "
                "to lock for the GPUs",
            )
        self.allow_access(self.gpus if agents is None else agents, buf)
        self.trace("rocr", "hsa_amd_memory_lock", address=hex(buf.address))
        return buf.address

    def memory_unlock(self, buf: Any) -> None:
        """hsa_amd_memory_unlock: unmap a locked host buffer from the GPUs."""
        self._check()
        if not isinstance(buf, Buffer) or buf.pool.vram:
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT, f"buf = {show(buf)} is not a locked host Buffer"
            )
        buf._check()
        alloc = self.thunk.allocations.get(buf.address)
        if alloc is not None and alloc.mapped_nodes:
            self.thunk.unmap_memory_to_gpu(buf.address)
        self.trace("rocr", "hsa_amd_memory_unlock", address=hex(buf.address))

    def profiling_async_copy_enable(self, enable: bool = True) -> None:
        """hsa_amd_profiling_async_copy_enable: later SDMA copies write TIMESTAMP packets
        into their completion signal (start_ts/end_ts)."""
        self.copier.profiling = as_bool(enable, "enable")

    def async_copy_time(self, signal: Signal) -> tuple[float, float]:
        """hsa_amd_profiling_get_async_copy_time: (start, end) in ns of the system clock,
        from the TIMESTAMP packets the copy wrote into `signal`."""
        if not isinstance(signal, Signal) or signal.rt is not self:
            raise HsaError(
                Status.ERROR_INVALID_SIGNAL,
                f"signal = {show(signal)} is not a signal of this runtime",
            )
        try:
            return signal.dispatch_time()
        except HsaError:
            raise HsaError(
                Status.ERROR_INVALID_SIGNAL,
                f"signal {signal.handle:#x} holds no copy timestamps: enable copy profiling "
                "with rt.profiling_async_copy_enable(True) before the copy, and wait for it",
            ) from None

    def _kernarg(self, data: bytes) -> int:
        """Kernarg space for one dispatch, carved from 1 MiB chunks of the kernarg pool. A
        full chunk is reused once every packet that pointed into it has retired (the CP has
        read its kernargs), so long runs need a constant number of chunks."""
        n = max(-(-len(data) // KERNARG_ALIGN) * KERNARG_ALIGN, KERNARG_ALIGN)
        if self._kernarg_chunk is None or self._kernarg_off + n > KERNARG_CHUNK:
            chunk = next(
                (c for c in self._kernarg_chunks if c is not self._kernarg_chunk and c.free()),
                None,
            )
            if chunk is None:
                pool = self.cpu.pools(kernarg=True)[0]
                buf = pool.allocate(KERNARG_CHUNK)
                self.allow_access(self.gpus, buf)
                chunk = _KernargChunk(buf)
                self._kernarg_chunks.append(chunk)
            chunk.users.clear()
            self._kernarg_chunk, self._kernarg_off = chunk, 0
        chunk = self._kernarg_chunk
        addr = chunk.buf.address + self._kernarg_off
        if data:
            chunk.buf.write(data, self._kernarg_off)
        self._kernarg_off += n
        return addr

    def _note_packet(self, q: Queue, index: int, kernarg_address: int) -> None:
        """A kernel dispatch packet naming `kernarg_address` went into slot `index` of `q`:
        its kernarg chunk stays busy until that packet retires."""
        for c in self._kernarg_chunks:
            a = c.buf.address
            if a <= kernarg_address < a + KERNARG_CHUNK:
                if index >= c.users.get(q, -1):
                    c.users[q] = index
                return

    # -- signals ---------------------------------------------------------------------------
    def create_signal(
        self,
        initial: int = 0,
        *,
        interrupt: bool = True,
        ipc: bool = False,
        _internal: bool = False,
    ) -> Signal:
        """hsa_signal_create (interrupt=True: backed by a KFD event, as ROCr's default).
        ipc=True: hsa_amd_signal_create with HSA_AMD_SIGNAL_IPC, a busy-wait signal that
        other processes can attach to (ipc_signal_create)."""
        initial = as_signal_value(initial, "initial")
        interrupt = as_bool(interrupt, "interrupt")
        self._check()
        if as_bool(ipc, "ipc"):
            from rocr.ipc import create_ipc_signal

            sig = create_ipc_signal(self, initial)
            self._signals.add(sig)
            self.trace("rocr", "hsa_amd_signal_create", signal=hex(sig.handle), ipc=True)
            return sig
        event = None
        if interrupt:
            try:
                event = self.thunk.create_event()
            except HsaKmtError as e:
                raise _hsa_error(e, Status.ERROR_OUT_OF_RESOURCES, "hsa_signal_create") from e
        sig = Signal(self, initial, event)
        self._signals.add(sig)
        if not _internal:
            self.trace(
                "rocr",
                "hsa_signal_create",
                signal=hex(sig.handle),
                initial=initial,
                interrupt=interrupt,
            )
        return sig

    def ipc_signal_create(self, signal: Signal) -> bytes:
        """hsa_amd_ipc_signal_create: a 32-byte handle of an IPC signal for another process."""
        from rocr.ipc import ipc_signal_create

        self._check()
        return ipc_signal_create(self, signal)

    def ipc_signal_attach(self, handle: bytes) -> Signal:
        """hsa_amd_ipc_signal_attach: a signal of this process over another's IPC signal."""
        from rocr.ipc import ipc_signal_attach

        self._check()
        sig = ipc_signal_attach(self, handle)
        self._signals.add(sig)
        self.trace("rocr", "hsa_amd_ipc_signal_attach", signal=hex(sig.handle))
        return sig

    def signal(self, handle: int) -> Signal:
        """The live signal of this runtime whose handle (amd_signal_t address) is `handle`."""
        handle = as_u64(handle, "handle", why="an hsa_signal_t handle")
        for s in self._signals:
            if s.handle == handle and not s.destroyed:
                return s
        raise HsaError(Status.ERROR_INVALID_SIGNAL, f"no live signal {handle:#x} in this runtime")

    # -- code objects ----------------------------------------------------------------------
    def load_code_object(self, source: Any = "builtin", agent: Agent | None = None) -> Executable:
        """Load a code object for `agent` (default: the first GPU). `source`: 'builtin',
        'builtin:<name>,...', a path, or the code object's bytes (bytes, bytearray,
        memoryview)."""
        self._check()
        agent = check_kernel_agent(agent, self, Agent)
        exe = load(self, agent, source)
        self._executables.append(exe)
        self.trace("rocr", "hsa_executable_load_agent_code_object", kernels=list(exe.symbols))
        return exe

    # -- queues ----------------------------------------------------------------------------
    def _next_queue_id(self) -> int:
        self._queue_ids += 1
        return self._queue_ids - 1

    def _create_queue(
        self, agent: Agent, size: int, callback: Callable | None, priority: int
    ) -> Queue:
        self._check()
        if not agent.is_gpu:
            raise HsaError(
                Status.ERROR_INVALID_AGENT,
                f"{agent} cannot run AQL queues; create the queue on a GPU agent",
            )
        if size <= 0 or size & (size - 1):
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT,
                f"queue size {size} is not a power of two (e.g. 256, 1024)",
            )
        if not agent.queue_min_size <= size <= agent.queue_max_size:
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT,
                f"queue size {size} outside [{agent.queue_min_size}, "
                f"{agent.queue_max_size}] packets (HSA_AGENT_INFO_QUEUE_MIN/MAX_SIZE)",
            )
        if len([q for q in self._queues if q.agent is agent]) >= agent.queues_max:
            raise HsaError(
                Status.ERROR_OUT_OF_RESOURCES,
                f"{agent.queues_max} queues already exist on {agent.name}",
            )
        self.trace("rocr", "hsa_queue_create", size=size)
        try:
            q = Queue(self, agent, size, callback, priority)
        except HsaKmtError as e:
            raise _hsa_error(e, Status.ERROR_INVALID_QUEUE_CREATION, "hsa_queue_create") from e
        self._queues.add(q)
        self._watch_queue(q)
        return q

    def queues(self) -> list[Queue]:
        return sorted(self._queues, key=lambda q: q.id)

    def dispatch_packet(
        self,
        kernel: KernelSymbol,
        grid: int | tuple[int, ...],
        workgroup: int | tuple[int, ...],
        args: tuple = (),
        completion_signal: Signal | int = 0,
        *,
        group_segment_size: int | None = None,
        barrier: bool = False,
        acquire: FenceScope = FenceScope.SYSTEM,
        release: FenceScope = FenceScope.SYSTEM,
    ) -> aql.KernelDispatchPacket:
        """A kernel dispatch packet for `kernel`, its kernargs packed into the kernarg pool.

        Every argument is checked first (HsaError naming it, its value and the limit): the
        geometry against the packet's field widths and the agent's HSA_AGENT_INFO_* limits, the
        kernel arguments against the code object's metadata."""
        f = self._dispatch_fields(
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
        return self._packet(kernel, f)

    def _packet(
        self, kernel: KernelSymbol, f: dict[str, Any], queue: Queue | None = None
    ) -> aql.KernelDispatchPacket:
        """The packet for checked fields `f`, its kernargs packed into the kernarg pool. A
        compiled kernel's hidden arguments are filled from the geometry as CLR's
        submitKernelInternal does (the queue pointer when the queue is known)."""
        values = self._packet_values(kernel, f, queue)
        return aql.KernelDispatchPacket(**dict(zip(_DISPATCH_FIELDS, values, strict=True)))

    def _packet_values(
        self, kernel: KernelSymbol, f: dict[str, Any], queue: Queue | None
    ) -> tuple[int, ...]:
        """The fields of the packet for checked fields `f`, in hsa_kernel_dispatch_packet_t
        order; the kernargs are packed into the kernarg pool."""
        data = self._kernarg_bytes(kernel, f, f["args"], queue)
        kernarg = self._kernarg(data) if kernel.kernarg_size else 0
        return (*_packet_head(kernel, f), kernarg, 0, f["completion_signal"])

    @staticmethod
    def _kernarg_bytes(
        kernel: KernelSymbol, f: dict[str, Any], values: tuple, queue: Queue | None
    ) -> bytes:
        """The kernarg segment for checked fields `f` and argument values `values`: the
        arguments, and a compiled kernel's hidden ones."""
        data = pack_args(kernel.args, kernel.kernarg_size, values)
        if kernel.hidden_args:
            buf = bytearray(data)
            fill_hidden(
                buf,
                kernel.hidden_args,
                hidden_values(
                    f["grid"],
                    f["workgroup"],
                    f["dims"],
                    queue_ptr=queue.address if queue is not None else 0,
                    dynamic_lds=max(0, f["group_segment_size"] - kernel.group_segment_size),
                ),
            )
            data = bytes(buf)
        return data

    def _dispatch_fields(
        self,
        kernel: Any,
        grid: Any,
        workgroup: Any,
        args: Any,
        completion_signal: Any,
        group_segment_size: Any,
        barrier: Any,
        acquire: Any,
        release: Any,
        agent: Agent | None = None,
    ) -> dict[str, Any]:
        """The arguments of a dispatch, checked, as kernel dispatch packet fields."""
        self._check()
        if not isinstance(kernel, KernelSymbol):
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT,
                f"kernel must be a KernelSymbol (exe.kernel('name')), got {show(kernel)} "
                f"({type(kernel).__name__})",
            )
        if kernel.rt is not self:
            # hsa_executable_symbol_get_info on a symbol this runtime never loaded.
            raise HsaError(
                Status.ERROR_INVALID_EXECUTABLE_SYMBOL,
                f"kernel {kernel.name} was loaded by another runtime: its kernel_object "
                f"{kernel.kernel_object:#x} means nothing in this process; load the code "
                "object with this runtime",
            )
        agent = agent or kernel.agent or self.gpus[0]
        g3, w3, dims = dispatch_geometry(grid, workgroup, agent)
        values = kernel.check_args(args, self)
        if group_segment_size is None:
            gss = kernel.group_segment_size
        else:
            gss = as_u32(group_segment_size, "group_segment_size", why="bytes of LDS")
        if gss > agent.lds_size:
            # What the CP would stop the queue for (ROCr: "invalid group memory").
            raise HsaError(
                Status.ERROR_INVALID_ALLOCATION,
                f"group_segment_size = {gss} bytes: at most {agent.lds_size} bytes of LDS per "
                f"workgroup on this agent ({agent.name})",
            )
        if isinstance(completion_signal, Signal):
            self._own_signal(completion_signal, "completion_signal")
            handle = completion_signal.handle
        elif completion_signal is None:
            handle = 0
        else:
            handle = as_u64(
                completion_signal, "completion_signal", why="a Signal, or a handle (0: none)"
            )
        return {
            "grid": g3,
            "workgroup": w3,
            "dims": dims,
            "args": values,
            "group_segment_size": gss,
            "completion_signal": handle,
            "barrier": as_bool(barrier, "barrier"),
            "acquire": fence_scope(acquire, "acquire"),
            "release": fence_scope(release, "release"),
        }

    def _own_signal(self, sig: Signal, what: str) -> None:
        """`sig` must be a live signal of this runtime: HSA_STATUS_ERROR_INVALID_SIGNAL."""
        if sig.rt is not self:
            raise HsaError(
                Status.ERROR_INVALID_SIGNAL,
                f"{what} {sig.handle:#x} belongs to another runtime (process)",
            )
        if sig.destroyed:
            raise HsaError(Status.ERROR_INVALID_SIGNAL, f"{what} {sig.handle:#x} was destroyed")

    # Set while _dispatch runs a dispatch for a tool that replaced it (Queue.dispatch).
    _tool_dispatch = False

    def _dispatch(
        self,
        q: Any,
        kernel: Any,
        grid,
        workgroup,
        args,
        completion: Signal | None,
        group_segment_size: int | None,
        barrier: bool,
        acquire: FenceScope,
        release: FenceScope,
    ) -> DispatchHandle:
        """queue.dispatch() by way of the runtime. A tool that watches dispatches replaces
        this method on the runtime (as HSA tools wrap the API table): Queue.dispatch then
        calls the tool, and the tool this, the runtime's own, which runs the dispatch."""
        if self.closed:
            self._check()  # HSA_STATUS_ERROR_NOT_INITIALIZED, first as for every call
        if (type(q) is not Queue and not isinstance(q, Queue)) or q.rt is not self:
            raise HsaError(Status.ERROR_INVALID_QUEUE, f"{show(q)} is not a queue of this runtime")
        was, self._tool_dispatch = self._tool_dispatch, True
        try:
            return Queue.dispatch(
                q,
                kernel,
                grid,
                workgroup,
                args,
                completion,
                group_segment_size=group_segment_size,
                barrier=barrier,
                acquire=acquire,
                release=release,
            )
        finally:
            self._tool_dispatch = was

    def _completion_signal(self) -> tuple[Signal, bool]:
        """A completion signal at 1 for a dispatch: a retired one from the pool, else new;
        and whether it is new (its KFD event's ioctl let the device run)."""
        spare = self._spare_signals
        if spare:
            sig = spare[0]
            # sig.load() < 1, on a live runtime (the caller checked it)
            if not sig.destroyed and sig._value[0] < 1:
                spare.popleft()
                sig._rearm(1)
                return sig, False
            while spare and spare[0].destroyed:
                spare.popleft()
        return self.create_signal(1), True

    # -- async events (ROCr's async event thread) ------------------------------------------
    def poll_async(self) -> bool:
        """What ROCr's async events thread has done by now: a VM fault reported through the
        memory event (Signal::WaitAny returns for a memory event whose MemoryAccessFault.Flags
        is HSA_EVENTID_MEMORY_FATAL_PROCESS, and VMFaultHandler runs), then the queues' error
        callbacks. After a VM fault every call that polls raises it: ROCr aborts there.

        Returns whether there was anything to look at: if not, no callback ran, and a poll
        made before the device next runs would find nothing either (the device runs only
        while the host spends time, sleeps or calls into the KFD)."""
        if not self._async_pending:
            return False
        acted = False
        if self._vm_fault is None:
            ev = self._vm_fault_event
            if ev is not None and ev.MemoryAccessFault is not None:
                self._vm_fault_handler(ev.MemoryAccessFault)
                acted = True
        if self._scan_queues:
            for q in list(self._queues):
                q._poll_error()
            acted = True
        elif self._woken:
            woken, self._woken = self._woken, []
            for q in woken:
                q._poll_error()
                if not q._error_reported and not q.destroyed:
                    self._watch_queue(q)  # set without an error code: keep listening
            acted = True
        # What the callbacks may have left (they run user code): looked at by the next poll.
        self._async_pending = self._scan_queues or self._vm_fault is not None or bool(self._woken)
        if self._vm_fault is not None:
            raise HsaError(self._vm_fault.status, self._vm_fault.message)
        return acted

    def _async_woke(self, _ev: HsaEvent | None = None) -> None:
        """The async events thread's wait returned (the thunk stored the fault, if any, in the
        event): the process's next call polls (Runtime.poll_async). User callbacks must not
        run inside the device's event loop."""
        self._async_pending = True

    def _queue_woke(self, q: Queue) -> None:
        self._woken.append(q)
        self._async_pending = True

    def _watch_queue(self, q: Queue) -> None:
        """ROCr's async events thread waits on each queue's inactive-signal event (AqlQueue
        registers DynamicQueueEventsHandler through Runtime::SetAsyncSignalHandler): the
        queue is looked at once the event is set."""
        ev = q.inactive_signal.event
        if ev is None or not self.thunk.wait_on_multiple_events_async(
            [ev], lambda _ev, q=q: self._queue_woke(q)
        ):
            self._scan_queues = True
            self._async_pending = True

    def async_events(self) -> list:
        """The KFD events the async events thread waits on: each queue's inactive-signal event
        and the VM fault event. A host wait includes them, so a fault wakes it: the wait may
        store a fault in the VM fault event's data, so the next poll looks."""
        self._async_pending = True
        events = [
            q.inactive_signal.event
            for q in self._queues
            if not q._error_reported and q.inactive_signal.event is not None
        ]
        if self._vm_fault_event is not None:
            events.append(self._vm_fault_event)
        return events

    def _vm_fault_handler(self, fault: HsaMemoryAccessFault) -> None:
        """ROCr Runtime::VMFaultHandler without a system event handler: the message it prints
        ("Memory access fault by GPU node-N ... on address A. Reason: R."), then std::abort().
        Here the error is kept and raised by every later call, and each queue's error callback
        hears it once, as for a queue error."""
        f = fault.Failure
        if f.NotPresent:
            reason = "Page not present or supervisor privilege"
        elif f.ReadOnly:
            reason = "Write access to a read-only page"
        elif f.NoExecute:
            reason = "Execute access to a page marked NX"
        elif f.GpuAccess:
            reason = "Host access only"
        else:
            reason = "Unknown"
        agent = next((g for g in self.gpus if g.node == fault.NodeId), None)
        where = f" ({agent.name})" if agent is not None else ""
        running = self._in_flight_on(fault.NodeId)
        message = (
            f"Memory access fault by GPU node-{fault.NodeId}{where} on address "
            f"{fault.VirtualAddress:#x}{'(may not be exact address)' if f.Imprecise else ''}. "
            f"Reason: {reason}."
            + (f" In flight: {'; '.join(running)}." if running else "")
            + " The KFD evicted every queue of this process on that GPU (kfd_dqm_evict_pasid);"
            " a real runtime aborts the process here."
        )
        err = HsaError(Status.ERROR_MEMORY_FAULT, message)
        self._vm_fault = err
        self.trace("rocr", "VMFaultHandler", address=hex(fault.VirtualAddress), node=fault.NodeId)
        for q in self.queues():
            if q.destroyed or q._error_reported:
                continue
            q.error = err
            q._error_reported = True
            if q.callback is not None:
                self.trace("rocr", "queue error callback", queue=q.id, status=err.status.name)
                q.callback(err, q)

    def _in_flight_on(self, node: int) -> list[str]:
        """The packets at the read index of this process's queues on GPU `node`: the work a
        fault there can belong to, as a debugger reads it from the queues' memory."""
        out = []
        for q in self.queues():
            if q.destroyed or q.agent.node != node:
                continue
            r, w = q.load_read_index(), q.load_write_index()
            if w <= r:
                continue
            raw = q.packet_bytes(r)
            what = f"queue {q.id} packet {r}"
            if raw[0] == PacketType.KERNEL_DISPATCH:
                off = aql.KERNEL_DISPATCH_KERNEL_OBJECT_OFFSET
                ko = int.from_bytes(raw[off : off + 8], "little")
                name = next(
                    (
                        sym.name
                        for exe in self._executables
                        for sym in exe.symbols.values()
                        if sym.kernel_object == ko
                    ),
                    f"kernel_object {ko:#x}",
                )
                what += f" (kernel {name})"
            out.append(what)
        return out

    # -- diagnosis -------------------------------------------------------------------------
    def queue_error_detail(self, q: Queue) -> str:
        idx = q.load_read_index()
        try:
            pkt = q.packet(idx)
        except ValueError:
            return f"packet {idx} has an unknown header type {q.packet_bytes(idx)[0]}"
        if pkt is None:
            return ""
        text = f"packet {idx} is {describe_packet(pkt)}"
        if isinstance(pkt, aql.KernelDispatchPacket):
            k = next(
                (
                    k
                    for exe in self._executables
                    if (k := exe.kernel_at(pkt.kernel_object)) is not None
                ),
                None,
            )
            if k is not None:
                text += f" (kernel {k.name})"
        return text

    def queue_report(self, q: Queue) -> list[str]:
        """Why `q` is not making progress, read from its memory as a debugger would."""
        lines = []
        w, r = q.load_write_index(), q.load_read_index()
        db = q.doorbell_value
        lines.append(
            f"queue {q.id}: write_index {w}, read_dispatch_id {r}, last doorbell "
            f"{'never rung' if db is None else db}"
        )
        if q.error is not None:
            lines.append(f"  stopped by an error: {q.error}")
            return lines
        if w == r:
            lines.append("  empty: every packet written has retired")
            return lines
        if db is None:
            lines.append(
                f"  packets {r}..{w - 1} were written but the doorbell was never "
                f"rung: call queue.ring_doorbell({w - 1})"
            )
            return lines
        if db < r:
            lines.append(
                f"  packets {r}..{w - 1} were written after the last doorbell "
                f"({db}): ring it again with {w - 1}"
            )
            return lines
        raw = q.packet_bytes(r)
        if raw[0] == PacketType.INVALID:
            lines.append(
                f"  the packet at read index {r} still has an INVALID header: the CP "
                "stalled there and watches the slot. Write the packet's header (a valid "
                "type, stored last, after the body); it starts then, without another doorbell"
            )
            return lines
        try:
            pkt = aql.decode_packet(raw)
        except ValueError:
            pkt = None
        if isinstance(pkt, aql.BarrierAndPacket | aql.BarrierOrPacket):
            kind = "barrier-AND" if isinstance(pkt, aql.BarrierAndPacket) else "barrier-OR"
            deps = [d for d in pkt.dep_signal if d]
            vals = ", ".join(f"{d:#x}={self._signal_value(d)}" for d in deps)
            lines.append(
                f"  blocked on packet {r}, a {kind} waiting for its dependency "
                f"signals to reach 0: {vals}"
            )
        elif pkt is not None:
            lines.append(
                f"  packet {r} ({describe_packet(pkt)}) has not retired (running, or its "
                "queue is waiting for an HQD: see the HW scheduler below)"
            )
        if db < w - 1:
            lines.append(f"  packets {db + 1}..{w - 1} were written after the last doorbell")
        return lines

    def _signal_value(self, handle: int) -> str:
        for s in self._signals:
            if s.handle == handle:
                return str(s.load())
        return "?"

    def stop_reason(self, q: Queue) -> str:
        """One line on why the CP stopped `q`: its error code (the queue-inactive signal's
        value) and the packet at its read index, read from memory as a debugger would."""
        code = q.inactive_signal.load() & 0xFFFFFFFF
        if code == 0 and q.error is not None:
            return q.error.message.splitlines()[0]
        _, what = status_for_error_code(code)
        r = q.load_read_index()
        try:
            pkt = aql.decode_packet(q.packet_bytes(r))
        except ValueError:
            return f"{what}: packet {r} has header type {q.packet_bytes(r)[0]}"
        if isinstance(pkt, aql.KernelDispatchPacket):
            wg = (pkt.workgroup_size_x, pkt.workgroup_size_y, pkt.workgroup_size_z)
            items = wg[0] * wg[1] * wg[2]
            lds = q.agent.lds_size
            if code & 0x40 and items > q.agent.workgroup_max_size:
                return f"workgroup of {items} work-items > {q.agent.workgroup_max_size}"
            if code & 0x4 and pkt.group_segment_size > lds:
                return f"group segment of {pkt.group_segment_size} bytes > {lds} bytes of LDS"
        return f"{what} at packet {r}" + ("" if pkt is None else f" ({describe_packet(pkt)})")

    def stuck_wait(self, sig: Signal, cond: Condition, compare: int, value: int) -> HsaError:
        """The error of a wait without a timeout that can never return. When a queue holding
        the signal's packet (else any queue of this process) was stopped by the CP, the first
        line says so: "queue 0 stopped: <why>: <status>"; the memory diagnosis follows."""
        self.poll_async()
        lines = [
            f"hsa_signal_wait on signal {sig.handle:#x} can never return: its value is "
            f"{value} and the wait needs value {_COND_TEXT[cond]} {compare}, but the GPU "
            "has nothing left to do that could change it and no other agent can change "
            "the signal."
        ]
        users: list[tuple[int, Queue]] = []
        for q in self.queues():
            w, r = q.load_write_index(), q.load_read_index()
            for i in range(r, w):
                raw = q.packet_bytes(i)
                if int.from_bytes(raw[56:64], "little") == sig.handle:
                    users.append((i, q))
        if users:
            named = ", ".join(f"packet {i} of queue {q.id}" for i, q in users)
            lines.append(f"It is the completion signal of {named}.")
        else:
            lines.append("No unretired packet names it as its completion signal.")
        for q in self.queues():
            lines.extend(self.queue_report(q))
        lines.extend(self.hws_report())
        lines.extend(self._sdma_report())
        errored = [q for _, q in users if q.error is not None]
        errored += [q for q in self.queues() if q.error is not None and q not in errored]
        if not errored:
            return HsaError(Status.ERROR, "\n".join(lines))
        q = errored[0]
        status = q.error.status
        first = f"queue {q.id} stopped: {self.stop_reason(q)}: {status.c_name}"
        return HsaError(status, "\n".join([first, *lines]))

    def _sdma_report(self) -> list[str]:
        """SDMA queues parked on a POLL_REGMEM (a copy's dependency) or stopped, from the
        KFD's debugfs runlist."""
        try:
            devices = self.runlist()
        except (HsaKmtError, ValueError):
            return []
        lines = []
        for dev in devices:
            for q in dev.get("sdma_queues", []):
                where = f"SDMA queue {q['queue_id']} (pasid {q['pasid']:#x}, engine {q['engine']})"
                if q["blocked_on"] is not None:
                    lines.append(
                        f"{where} waits in POLL_REGMEM for the dependency signal word at "
                        f"{q['blocked_on']} to become 0."
                    )
                if q["error"] is not None:
                    lines.append(f"{where} stopped: {q['error']}")
        return lines

    def runlist(self) -> list[dict]:
        """Per GPU, the KFD's runlist of every process's active queues (priority, HQD, state,
        time mapped / runnable but unmapped, swaps, packets) and the HWS statistics, from
        /sys/kernel/debug/kfd/rls. Inspection only; not an HSA call."""
        return json.loads(self.thunk.read_debugfs("rls"))

    def mapped_queues(self) -> list[dict]:
        """Per GPU, which queue (pasid, KFD queue id, state) each HQD holds now, from
        /sys/kernel/debug/kfd/hqds."""
        return json.loads(self.thunk.read_debugfs("hqds"))

    def hws_report(self) -> list[str]:
        """The HW scheduler's side, machine-wide (every process): which queue holds which HQD
        and which queues with work are stuck, read from the KFD's debugfs runlist."""
        try:
            devices = self.runlist()
        except (HsaKmtError, ValueError):
            return []
        lines = []
        for dev in devices:
            if not dev["stuck"] and not dev["oversubscribed"]:
                continue
            held = [
                f"HQD {q['hqd']}: pasid {q['pasid']:#x} queue {q['queue_id']} ({q['state']})"
                for q in sorted(
                    dev["queues"], key=lambda q: q["hqd"] if q["hqd"] is not None else 0
                )
                if q["hqd"] is not None
            ]
            lines.append(
                f"HW scheduler of gpu_id {dev['gpu_id']:#x}: policy {dev['policy']}, "
                f"{dev['hqds']} HQDs, {len(dev['queues'])} queues of "
                f"{len(dev['processes'])} process(es) in the runlist"
                + (" (oversubscribed)" if dev["oversubscribed"] else "")
                + (": " + "; ".join(held) if held else "")
            )
            lines.extend(f"  {s}" for s in dev["stuck"])
        return lines


_COND_TEXT = {Condition.EQ: "==", Condition.NE: "!=", Condition.LT: "<", Condition.GTE: ">="}


def describe_packet(pkt: object) -> str:
    if isinstance(pkt, aql.KernelDispatchPacket):
        return (
            f"KERNEL_DISPATCH grid ({pkt.grid_size_x}, {pkt.grid_size_y}, "
            f"{pkt.grid_size_z}) workgroup ({pkt.workgroup_size_x}, {pkt.workgroup_size_y}, "
            f"{pkt.workgroup_size_z}) kernel_object {pkt.kernel_object:#x} kernarg "
            f"{pkt.kernarg_address:#x}"
        )
    return type(pkt).__name__


class _KernargChunk:
    """A 1 MiB kernarg buffer and, per queue, the last packet index whose kernargs are in it."""

    __slots__ = ("buf", "users")

    def __init__(self, buf: Buffer) -> None:
        self.buf = buf
        self.users: dict[Queue, int] = {}

    def free(self) -> bool:
        return all(q.destroyed or q.load_read_index() > i for q, i in self.users.items())


def _service_transport(kfd: str, name: str) -> Any:
    """HSAEMU_KFD=unix:PATH: this process opens the KFD of a service (hsaemu kfd) instead of
    a machine of its own; the service's preset decides the GPU."""
    if not kfd.startswith("unix:") or len(kfd) == len("unix:"):
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT,
            f"HSAEMU_KFD={kfd!r}: use unix:PATH, the socket of `hsaemu kfd --socket PATH`",
        )
    from rock_emu.ioctl import KfdError
    from roct.socket_transport import SocketTransport

    try:
        return SocketTransport(kfd, name=name)
    except KfdError as e:
        raise HsaError(Status.ERROR, f"hsa_init: HSAEMU_KFD={kfd}: {e.message}") from None


def init(
    *,
    preset: str | None = None,
    system: Any = None,
    spec: Any = None,
    name: str = "",
    transport: Any = None,
    trace: bool | None = None,
) -> Runtime:
    """hsa_init. `preset` picks a GPU (default gfx900, or $HSAEMU_PRESET); `system=` attaches
    to an existing machine as another process. `trace=True` records the machine's timeline
    in `rt.system.tracer` (what `hsaemu demo` narrates and `hsaemu trace` writes); by default
    a machine is untraced, as it costs 10-25 % of a dispatch. None: $HSAEMU_TRACE (1 or 0)
    if set, else the spec's `trace` for a new machine and the machine's own for `system=`."""
    return Runtime(
        preset=preset, system=system, spec=spec, name=name, transport=transport, trace=trace
    )


TRACE_ENV = "HSAEMU_TRACE"
_TRACE_WORDS = {"1": True, "true": True, "yes": True, "on": True}
_TRACE_WORDS |= {"0": False, "false": False, "no": False, "off": False}


def trace_choice(trace: object) -> bool | None:
    """rocr.init's `trace`, checked; None falls back to $HSAEMU_TRACE, then to None (the
    machine decides)."""
    if trace is not None and not isinstance(trace, bool):
        raise HsaError(
            Status.ERROR_INVALID_ARGUMENT, f"trace={trace!r}: must be True, False or None"
        )
    if trace is None:
        env = os.environ.get(TRACE_ENV)
        if env is not None and env.strip():
            word = _TRACE_WORDS.get(env.strip().lower())
            if word is None:
                raise HsaError(
                    Status.ERROR_INVALID_ARGUMENT,
                    f"{TRACE_ENV}={env!r}: must be 1 or 0 (true/false, yes/no, on/off)",
                )
            return word
    return trace
