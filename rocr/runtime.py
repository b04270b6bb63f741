"""The runtime object (hsa_init ... hsa_shut_down): agents, pools, signals, queues, loader.

`rocr.init()` opens the KFD through the thunk — a fresh emulated machine unless `system=` names
one, in which case this runtime is a second process on that machine. Everything the runtime
does goes down as thunk calls; what comes back up arrives through memory (signal values,
read_dispatch_id) or KFD events.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from hw_model import aql
from hw_model.aql import FenceScope, PacketType
from rocr.agent import Agent, make_pools
from rocr.errors import HsaError
from rocr.executable import Executable, KernelSymbol, load
from rocr.memory import Buffer, MemoryPool
from rocr.queue import Queue
from rocr.signal import Condition, Signal, SignalPool
from rocr.status import Status
from roct import HsaKmtError, HsaKmtStatus, InProcess, Thunk

KERNARG_CHUNK = 1 << 20  # kernarg arena per chunk (ROCr sub-allocates kernargs likewise)
KERNARG_ALIGN = 64


def _hsa_error(e: HsaKmtError, status: Status, what: str) -> HsaError:
    mapping = {
        HsaKmtStatus.NO_MEMORY: Status.ERROR_OUT_OF_RESOURCES,
        HsaKmtStatus.OUT_OF_RESOURCES: Status.ERROR_OUT_OF_RESOURCES,
    }
    return HsaError(mapping.get(e.status, status), f"{what}: {e.message}")


class DispatchHandle:
    """What `queue.dispatch()` returns: the packet index and its completion signal."""

    def __init__(self, queue: Queue, index: int, signal: Signal, owns_signal: bool) -> None:
        self.queue = queue
        self.index = index
        self.signal = signal
        self._owns_signal = owns_signal

    def wait(self, timeout_ns: int | None = None) -> DispatchHandle:
        """Wait for the kernel to retire (its completion signal below 1)."""
        v = self.signal.wait(Condition.LT, 1, timeout_ns)
        err = self._queue_error()
        if err is not None:
            raise err
        if v >= 1:
            raise HsaError(
                Status.ERROR,
                f"timeout: packet {self.index} of queue "
                f"{self.queue.id} did not complete in {timeout_ns} ns",
            )
        return self

    def _queue_error(self) -> HsaError | None:
        self.queue.rt.poll_async()
        return self.queue.error

    @property
    def done(self) -> bool:
        return self.signal.load() < 1

    def dispatch_time(self) -> tuple[float, float]:
        return self.signal.dispatch_time()


class Runtime:
    def __init__(
        self,
        *,
        preset: str | None = None,
        system: Any = None,
        spec: Any = None,
        name: str = "",
        transport: Any = None,
    ) -> None:
        if transport is None:
            if system is None and preset is None and spec is None:
                preset = os.environ.get("HSAEMU_PRESET", "gfx900")
            transport = InProcess(system=system, preset=preset, spec=spec, name=name)
        self.transport = transport
        self.system = getattr(transport, "system", None)  # opaque: for inspection only
        try:
            self.thunk = Thunk(transport)
        except HsaKmtError as e:
            raise HsaError(Status.ERROR, f"hsa_init: cannot open the KFD: {e.message}") from e
        self.signal_pool = SignalPool(self)
        self._signals: set[Signal] = set()
        self._queues: set[Queue] = set()
        self._buffers: set[Buffer] = set()
        self._executables: list[Executable] = []
        self._queue_ids = 0
        self._kernarg_chunk: Buffer | None = None
        self._kernarg_off = 0
        self._kernarg_chunks: list[Buffer] = []
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
        self.trace("rocr", "hsa_init", agents=len(self.agent_list))

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
        for q in list(self._queues):
            q.destroy()
        out = os.environ.get("HSAEMU_TRACE_DIR")
        if out and hasattr(self.transport, "write_reports"):
            # Like a profiler injected with rocprofv3: the run's reports land in that folder.
            self.transport.write_reports(out)
        self.thunk.close()
        self.closed = True

    def _check(self) -> None:
        if self.closed:
            raise HsaError(Status.ERROR_NOT_INITIALIZED, "the runtime was shut down")

    # -- agents ----------------------------------------------------------------------------
    def agents(self) -> list[Agent]:
        """hsa_iterate_agents."""
        return list(self.agent_list)

    # -- host time / trace -----------------------------------------------------------------
    def host_cost(self, name: str) -> int:
        return self.thunk.host_cost(name)

    def trace(self, track: str, name: str, **args: object) -> None:
        self.thunk.trace(track, name, **args)

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
        """hsa_amd_agents_allow_access: map `buf` into the page tables of `agents`."""
        self._check()
        nodes = [a.node for a in agents if a.is_gpu]
        bad = [a for a in agents if not isinstance(a, Agent)]
        if bad:
            raise HsaError(Status.ERROR_INVALID_AGENT, f"not an agent: {bad[0]!r}")
        buf._check()
        if nodes:
            try:
                self.thunk.map_memory_to_gpu(buf.address, nodes)
            except HsaKmtError as e:
                raise _hsa_error(e, Status.ERROR_INVALID_ARGUMENT, "allow_access") from e
        self.trace("rocr", "hsa_amd_agents_allow_access", address=hex(buf.address), nodes=nodes)

    def _kernarg(self, data: bytes) -> int:
        n = max(-(-len(data) // KERNARG_ALIGN) * KERNARG_ALIGN, KERNARG_ALIGN)
        if self._kernarg_chunk is None or self._kernarg_off + n > KERNARG_CHUNK:
            pool = self.cpu.pools(kernarg=True)[0]
            chunk = pool.allocate(KERNARG_CHUNK)
            self.allow_access(self.gpus, chunk)
            self._kernarg_chunks.append(chunk)
            self._kernarg_chunk, self._kernarg_off = chunk, 0
        addr = self._kernarg_chunk.address + self._kernarg_off
        if data:
            self._kernarg_chunk.write(data, self._kernarg_off)
        self._kernarg_off += n
        return addr

    # -- signals ---------------------------------------------------------------------------
    def create_signal(
        self, initial: int = 0, *, interrupt: bool = True, _internal: bool = False
    ) -> Signal:
        """hsa_signal_create (interrupt=True: backed by a KFD event, as ROCr's default)."""
        self._check()
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

    def signal(self, handle: int) -> Signal:
        """The live signal of this runtime whose handle (amd_signal_t address) is `handle`."""
        for s in self._signals:
            if s.handle == handle and not s.destroyed:
                return s
        raise HsaError(Status.ERROR_INVALID_SIGNAL, f"no live signal {handle:#x} in this runtime")

    # -- code objects ----------------------------------------------------------------------
    def load_code_object(self, source: Any = "builtin", agent: Agent | None = None) -> Executable:
        """Load a code object for `agent` (default: the first GPU)."""
        self._check()
        agent = agent or self.gpus[0]
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
        """A kernel dispatch packet for `kernel`, its kernargs packed into the kernarg pool."""
        grid_t = (grid,) if isinstance(grid, int) else tuple(grid)
        wg_t = (workgroup,) if isinstance(workgroup, int) else tuple(workgroup)
        if not 1 <= len(grid_t) <= 3 or len(wg_t) != len(grid_t):
            raise HsaError(
                Status.ERROR_INVALID_ARGUMENT,
                f"grid {grid_t} and workgroup {wg_t} need the same 1-3 dimensions",
            )
        dims = len(grid_t)
        g3 = grid_t + (1,) * (3 - dims)
        w3 = wg_t + (1,) * (3 - dims)
        kernarg = self._kernarg(kernel.pack_args(*args)) if kernel.kernarg_size else 0
        return aql.KernelDispatchPacket(
            header=aql.make_header(
                PacketType.KERNEL_DISPATCH, barrier=barrier, acquire=acquire, release=release
            ),
            setup=dims,
            workgroup_size_x=w3[0],
            workgroup_size_y=w3[1],
            workgroup_size_z=w3[2],
            grid_size_x=g3[0],
            grid_size_y=g3[1],
            grid_size_z=g3[2],
            private_segment_size=kernel.private_segment_size,
            group_segment_size=(
                kernel.group_segment_size if group_segment_size is None else group_segment_size
            ),
            kernel_object=kernel.kernel_object,
            kernarg_address=kernarg,
            completion_signal=int(getattr(completion_signal, "handle", completion_signal)),
        )

    def _dispatch(
        self,
        q: Queue,
        kernel: KernelSymbol,
        grid,
        workgroup,
        args,
        completion: Signal | None,
        group_segment_size: int | None,
        barrier: bool,
        acquire: FenceScope,
        release: FenceScope,
    ) -> DispatchHandle:
        owns = completion is None
        sig = completion if completion is not None else self.create_signal(1)
        pkt = self.dispatch_packet(
            kernel,
            grid,
            workgroup,
            args,
            sig,
            group_segment_size=group_segment_size,
            barrier=barrier,
            acquire=acquire,
            release=release,
        )
        i = q.add_write_index(1)
        q.write_packet(i, pkt)
        q.ring_doorbell(i)
        return DispatchHandle(q, i, sig, owns)

    # -- async events (ROCr's async event thread) ------------------------------------------
    def poll_async(self) -> None:
        for q in list(self._queues):
            q._poll_error()

    def async_events(self) -> list:
        return [
            q.inactive_signal.event
            for q in self._queues
            if not q._error_reported and q.inactive_signal.event is not None
        ]

    # -- diagnosis -------------------------------------------------------------------------
    def queue_error_detail(self, q: Queue) -> str:
        idx = q.load_read_index()
        try:
            pkt = q.packet(idx)
        except ValueError:
            return f"packet {idx} has an unknown header type {q.packet_bytes(idx)[0]}"
        if pkt is None:
            return ""
        return f"packet {idx} is {describe_packet(pkt)}"

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
                "stalled there. Write the header last (after the body) and ring the "
                "doorbell again"
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

    def stuck_wait(self, sig: Signal, cond: Condition, compare: int, value: int) -> HsaError:
        lines = [
            f"hsa_signal_wait on signal {sig.handle:#x} can never return: its value is "
            f"{value} and the wait needs value {_COND_TEXT[cond]} {compare}, but the GPU "
            "has nothing left to do and no other agent can change the signal."
        ]
        users = []
        for q in self.queues():
            w, r = q.load_write_index(), q.load_read_index()
            for i in range(r, w):
                raw = q.packet_bytes(i)
                if int.from_bytes(raw[56:64], "little") == sig.handle:
                    users.append(f"packet {i} of queue {q.id}")
        if users:
            lines.append(f"It is the completion signal of {', '.join(users)}.")
        else:
            lines.append("No unretired packet names it as its completion signal.")
        for q in self.queues():
            lines.extend(self.queue_report(q))
        lines.extend(self.hws_report())
        errored = [q for q in self._queues if q.error is not None]
        status = errored[0].error.status if errored else Status.ERROR
        return HsaError(status, "\n".join(lines))

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


def init(
    *,
    preset: str | None = None,
    system: Any = None,
    spec: Any = None,
    name: str = "",
    transport: Any = None,
) -> Runtime:
    """hsa_init. `preset` picks a GPU (default gfx900, or $HSAEMU_PRESET); `system=` attaches
    to an existing machine as another process."""
    return Runtime(preset=preset, system=system, spec=spec, name=name, transport=transport)
