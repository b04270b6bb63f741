"""Workgroup dispatcher: places the workgroups of running kernels onto compute units.

Models the SPI/dispatcher of gem5's `src/gpu-compute/dispatcher.cc` and MGPUSim's dispatcher:
kernels handed over by the packet processors are served oldest first; a workgroup goes onto a
CU only when all its waves get wave slots, VGPRs and SGPRs on SIMDs, and the group its LDS, a
barrier slot and scratch slots (`ComputeUnit.try_place`, with the amounts of
`hw_model.occupancy`); otherwise it waits for a workgroup to finish. Later kernels fill what
the older ones leave free, so two kernels from two queues run side by side when both fit.

Where a workgroup goes is a pluggable placement policy: round-robin over CUs (gem5's
`Shader::dispatchWorkgroups`), greedy fill of the lowest CU (MGPUSim's greedy), or an even
partition of the CUs between the kernels running at once (spatial partitioning; MGPUSim's
"partition" splits a grid's workgroups between CUs instead, see docs/timing.md).

Each shader engine's SPI launches one workgroup at a time: a workgroup starts issuing
`wg_dispatch_latency_ps` after its engine's previous launch. CU i belongs to engine
i mod engines, the order in which the KFD's CU masks interleave engines.

Cost: a pass runs only when something changed (a launch, a workgroup done), and after a pass
that left workgroups waiting, the next one looks only at CUs that freed resources since. So the
model's work grows with the number of workgroups, not with simulated time.

Functional execution: a workgroup's body runs when its waves start, so a bad pointer is caught
by the workgroup that touches it, at the simulated time of its first global access (the wave's
`first_access_ps`), not when the workgroup would have finished. The faulting workgroup stops
there; its kernel issues no more workgroups (docs/architecture.md, "Fault handling").
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from hw_model.compute_unit import ComputeUnit, WaveTiming, WgRequirements, WgRun, wave_timing
from hw_model.kernels.base import KernelSpec, WorkgroupContext
from hw_model.memory import MemKind, MemoryFault

if TYPE_CHECKING:
    from hw_model.gpu import Gpu


class KernelLaunch:
    """One kernel dispatch packet in execution."""

    def __init__(
        self,
        *,
        name: str,
        pasid: int,
        queue_id: int,
        dispatch_id: int,
        kernel: KernelSpec,
        grid: tuple[int, int, int],
        workgroup: tuple[int, int, int],
        req: WgRequirements,
        kernarg: bytes,
        on_dispatched: Callable[[KernelLaunch], None],
        on_complete: Callable[[KernelLaunch], None],
        on_fault: Callable[[KernelLaunch, MemoryFault], None],
    ) -> None:
        self.name = name
        self.pasid = pasid
        self.queue_id = queue_id
        self.dispatch_id = dispatch_id
        self.kernel = kernel
        self.grid = grid
        self.workgroup = workgroup
        self.counts = tuple(-(-g // w) for g, w in zip(grid, workgroup, strict=True))
        self.total_wgs = self.counts[0] * self.counts[1] * self.counts[2]
        self.wg_items = workgroup[0] * workgroup[1] * workgroup[2]
        self.ragged = any(g % w for g, w in zip(grid, workgroup, strict=True))
        self.req = req
        self.kernarg = kernarg
        self.cost = kernel.cost_for(kernarg)
        self.timing: WaveTiming | None = None  # set by the dispatcher for its GPU
        self.host_share = 0.0  # share of its global bytes in host memory (set at launch)
        self.next_wg = 0  # workgroups placed so far
        self.done_wgs = 0
        self.aborted = False  # stopped by a fault or an eviction: no more workgroups placed
        self.fault_wg: WgRun | None = None  # the workgroup whose access faulted
        self.start_ps: int | None = None
        self.dispatched_ps: int | None = None  # last workgroup placed
        self.end_ps: int | None = None
        self.on_dispatched = on_dispatched
        self.on_complete = on_complete
        self.on_fault = on_fault
        self.cu_mask: set[int] | None = None  # CUs this launch may use (AMDKFD_IOC_SET_CU_MASK)
        self._edge_reqs: dict[int, WgRequirements] = {}

    def wg_coords(self, index: int) -> tuple[int, int, int]:
        nx, ny, _ = self.counts
        return index % nx, (index // nx) % ny, index // (nx * ny)

    def wg_workitems(self, coords: tuple[int, int, int]) -> int:
        n = 1
        for c, w, g in zip(coords, self.workgroup, self.grid, strict=True):
            n *= min(w, g - c * w)
        return n

    def req_for(self, items: int, wavefront_size: int = 64) -> WgRequirements:
        """Requirements of a workgroup of `items` work-items: a partial workgroup at the
        grid's edge launches only the waves it has (LDS and registers per wave unchanged)."""
        if items == self.wg_items:
            return self.req
        waves = -(-items // wavefront_size)
        r = self._edge_reqs.get(waves)
        if r is None:
            r = self._edge_reqs[waves] = replace(self.req, waves=waves, barrier=waves > 1)
        return r

    @property
    def fully_dispatched(self) -> bool:
        return self.next_wg >= self.total_wgs

    def __repr__(self) -> str:
        return f"KernelLaunch({self.name}, queue {self.queue_id}, packet {self.dispatch_id})"


class PlacementPolicy:
    """Chooses the CU for the next workgroup. Subclass and register in PLACEMENT_POLICIES."""

    name = "base"

    def __init__(self, cus: list[ComputeUnit]) -> None:
        self.cus = cus

    def place(
        self,
        launch: KernelLaunch,
        req: WgRequirements,
        active: list[KernelLaunch],
        candidates: set[int] | None,
    ) -> tuple[ComputeUnit, list[int]] | None:
        """A CU (and the waves on each of its SIMDs) for a workgroup needing `req`, or None.

        `active` lists the kernels being served, oldest first. `candidates`, when given, are
        the only CUs whose resources were freed since every other CU was last found full; a
        policy need not look elsewhere.
        """
        raise NotImplementedError

    def allowed(self, launch: KernelLaunch, active: list[KernelLaunch]) -> range | None:
        """CUs `launch` may use under this policy (None: all); the CU mask applies on top."""
        return None


class RoundRobinPlacement(PlacementPolicy):
    """gem5's dispatcher: try CUs in turn, starting after the last one used."""

    name = "round_robin"

    def __init__(self, cus: list[ComputeUnit]) -> None:
        super().__init__(cus)
        self._next = 0

    def place(self, launch, req, active, candidates):
        return self._scan(launch, req, candidates, None)

    def _scan(self, launch, req, candidates, allowed):
        cus = self.cus
        n = len(cus)
        mask = launch.cu_mask
        nxt = self._next
        if candidates is None:
            order = itertools.chain(range(nxt, n), range(nxt))
        elif len(candidates) == 1:
            order = candidates
        else:
            order = sorted(candidates, key=lambda i: (i - nxt) % n)
        for i in order:
            if (mask is not None and i not in mask) or (allowed is not None and i not in allowed):
                continue
            cu = cus[i]
            p = cu.try_place(req)
            if p is not None:
                self._next = i + 1 if i + 1 < n else 0
                return cu, p
        return None


class GreedyPlacement(PlacementPolicy):
    """Fill the lowest-numbered CU that fits before moving on (MGPUSim's greedy)."""

    name = "greedy"

    def place(self, launch, req, active, candidates):
        mask = launch.cu_mask
        order = self.cus if candidates is None else [self.cus[i] for i in sorted(candidates)]
        for cu in order:
            if mask is not None and cu.index not in mask:
                continue
            p = cu.try_place(req)
            if p is not None:
                return cu, p
        return None


class PartitionPlacement(RoundRobinPlacement):
    """Split the CUs evenly between the kernels being served, oldest kernel first in CU
    order; round-robin inside each share. A kernel alone gets every CU; workgroups already
    running where a new share begins finish there (no preemption). A kernel whose queue has a
    CU mask keeps to its mask instead."""

    name = "partition"

    def place(self, launch, req, active, candidates):
        return self._scan(launch, req, candidates, self.allowed(launch, active))

    def allowed(self, launch, active):
        if launch.cu_mask is not None:
            return None  # a queue's CU mask is already a partition chosen by software
        running = [k for k in active if not k.aborted]
        parts = max(len(running), 1)
        slot = running.index(launch) if launch in running else 0
        n = len(self.cus)
        lo, hi = slot * n // parts, (slot + 1) * n // parts
        return range(lo, max(hi, lo + 1))


PLACEMENT_POLICIES: dict[str, type[PlacementPolicy]] = {
    p.name: p for p in (RoundRobinPlacement, GreedyPlacement, PartitionPlacement)
}


class Dispatcher:
    """Serves the kernels of one GPU, oldest first, onto its CUs."""

    def __init__(self, gpu: Gpu, policy: str = "round_robin") -> None:
        self.gpu = gpu
        self.spec = gpu.spec
        self.cus = gpu.cus
        try:
            self.policy: PlacementPolicy = PLACEMENT_POLICIES[policy](self.cus)
        except KeyError:
            raise ValueError(
                f"unknown placement policy {policy!r}; one of {sorted(PLACEMENT_POLICIES)}"
            ) from None
        for cu in self.cus:
            cu.attach(gpu.engine, self._compute_done)
        self.active: list[KernelLaunch] = []
        self.wgs_dispatched = 0
        self._pending_kick = False
        # Set when the last pass left workgroups unplaced: then only CUs that released
        # resources since (`_dirty`) can take one, and the next pass looks only there.
        self._blocked = False
        self._dirty: set[int] = set()
        self._se_free = [0] * self.spec.shader_engines  # each engine's SPI: next launch tick

    def launch(self, k: KernelLaunch) -> None:
        k.timing = wave_timing(self.spec, k.cost)
        k.host_share = self._host_share(k)
        self.active.append(k)
        self._blocked = False
        self.kick()

    def _host_share(self, k: KernelLaunch) -> float:
        """Share of the kernel's global bytes that live in host (system) memory, from the
        streams it declares: each stream's pointer argument is looked up in the process's VM.
        A kernel without declared streams is charged to the GPU's memory only."""
        streams = k.kernel.streams
        mem = self.gpu.memory
        if not streams or mem is None:  # no memory model (a bare dispatcher under test)
            return 0.0
        offsets = {a.name: a.offset for a in k.kernel.args if a.type == "ptr"}
        host = total = 0
        for name, nbytes in streams:
            total += nbytes
            off = offsets.get(name)
            if off is None or off + 8 > len(k.kernarg):
                continue
            bo = mem.find(k.pasid, int.from_bytes(k.kernarg[off : off + 8], "little"))
            if bo is not None and bo.kind == MemKind.SYSTEM:
                host += nbytes
        return host / total if total else 0.0

    def kick(self) -> None:
        """Try to place workgroups now (coalesced: at most one pass per tick)."""
        if not self._pending_kick:
            self._pending_kick = True
            self.gpu.engine.schedule(0, self._dispatch, priority=5)

    def _dispatch(self) -> None:
        self._pending_kick = False
        if not self.active:
            return
        engine = self.gpu.engine
        now = engine.now
        wave = self.spec.wavefront_size
        launch_ps = self.spec.wg_dispatch_latency_ps
        se_free = self._se_free
        place = self.policy.place
        active = self.active
        candidates = self._dirty if self._blocked else None
        self._dirty = set()
        waiting = False
        for k in list(active):
            while not k.aborted and k.next_wg < k.total_wgs:
                index = k.next_wg
                if k.ragged:
                    coords = k.wg_coords(index)
                    items = k.wg_workitems(coords)
                    req = k.req_for(items, wave)
                else:
                    coords = None
                    items = k.wg_items
                    req = k.req
                placed = place(k, req, active, candidates)
                if placed is None:
                    waiting = True
                    break
                cu, simds = placed
                if coords is None:
                    coords = k.wg_coords(index)
                k.next_wg = index + 1
                if k.start_ps is None:
                    k.start_ps = now
                cu.allocate(req, simds, now)
                self.wgs_dispatched += 1
                se = cu.shader_engine
                start = (now if now > se_free[se] else se_free[se]) + launch_ps
                se_free[se] = start
                run = WgRun(k, cu, index, coords, items, req, simds, start)
                engine.schedule_at(start, self._wg_start, run, priority=1)
                if k.next_wg == k.total_wgs:
                    k.dispatched_ps = now
                    k.on_dispatched(k)
        self._blocked = waiting

    def _wg_start(self, run: WgRun) -> None:
        """The workgroup's waves are launched: run its body (functional model), reserve its
        DRAM traffic, start computing. A body that faults makes the workgroup stop at its
        first global access, where the hardware would raise the fault."""
        k = run.launch
        engine = self.gpu.engine
        now = engine.now
        timing: WaveTiming = k.timing
        if k.aborted:
            # Its kernel was stopped (a fault, an eviction) after this workgroup was placed:
            # its waves never start.
            self._wg_done(run)
            return
        if self.gpu.functional:
            try:
                self._run_body(k, run.coords)
            except MemoryFault as fault:
                run.fault = fault
        if run.fault is not None:
            run.cu.begin(run, timing, now)
            at = now + max(1, math.ceil(timing.first_access_ps))
            engine.schedule_at(at, self._wg_fault, run, priority=1)
            return
        nbytes = timing.bytes_per_item * run.items
        if nbytes:
            host = int(nbytes * k.host_share)
            done = 0
            if host:  # bytes of host-memory buffers cross the host link (shared with copies)
                done = self.gpu.host_link.transfer(now, host)
            if nbytes - host:
                done = max(done, self.gpu.channel.transfer(now, nbytes - host))
            run.mem_done = done + timing.latency_ps
        run.cu.begin(run, timing, now)

    def _compute_done(self, run: WgRun) -> None:
        if run.fault is not None:
            return  # it stops at its faulting access (_wg_fault), whichever comes later
        now = self.gpu.engine.now
        if run.mem_done > now:
            self.gpu.engine.schedule_at(run.mem_done, self._wg_done, run, priority=1)
        else:
            self._wg_done(run)

    def _wg_fault(self, run: WgRun) -> None:
        """The workgroup's first global access reaches a page its GPU may not touch."""
        k = run.launch
        cu = run.cu
        now = self.gpu.engine.now
        fault = run.fault
        cu.stop(run, now)
        tracer = self.gpu.tracer
        if tracer.enabled:
            tracer.instant(
                f"CU{cu.index}",
                f"memory fault {k.name}",
                now,
                {
                    "wg": run.coords,
                    "cu": cu.index,
                    "queue": k.queue_id,
                    "dispatch_id": k.dispatch_id,
                    "va": hex(fault.va),
                    "reason": fault.reason,
                },
                cat="fault",
            )
        if not k.aborted:
            self._abort(k, fault, run)
        self._wg_done(run)

    def _wg_done(self, run: WgRun) -> None:
        k = run.launch
        cu = run.cu
        now = self.gpu.engine.now
        cu.release(run.req, run.simds, now)
        self._dirty.add(cu.index)
        tracer = self.gpu.tracer
        if tracer.enabled:
            args = {"wg": run.coords, "queue": k.queue_id, "dispatch_id": k.dispatch_id}
            if run.fault is not None:
                args["fault"] = hex(run.fault.va)
            tracer.complete(f"CU{cu.index}", k.name, run.start, now - run.start, args, cat="wg")
        k.done_wgs += 1
        if k.done_wgs == k.total_wgs or (k.aborted and k.done_wgs == k.next_wg):
            if k in self.active:
                self.active.remove(k)
                # Shares of the partition policy change with the set of kernels: look at all
                # CUs in the next pass.
                self._blocked = False
                self._dispatch()
            if not k.aborted:
                k.end_ps = now
                k.on_complete(k)
        elif self._blocked:
            # The SPI sees freed resources at once: place waiting workgroups in this event.
            self._dispatch()

    def _run_body(self, k: KernelLaunch, coords: tuple[int, int, int]) -> None:
        mem = self.gpu.memory
        pasid, node = k.pasid, self.gpu.node

        def view(va: int, n: int):
            return mem.shader_view(pasid, node, va, n)  # through the L2 (coherence model)

        ctx = WorkgroupContext(k.kernarg, coords, k.workgroup, k.grid, view)
        k.kernel.body(ctx)

    def _abort(self, k: KernelLaunch, fault: MemoryFault, run: WgRun) -> None:
        """A wave faulted: the kernel stops issuing workgroups; its queue hears of it."""
        k.aborted = True  # `_dispatch` places none of its remaining workgroups
        k.fault_wg = run
        k.on_fault(k, fault)

    def evict(self, pasid: int) -> list[KernelLaunch]:
        """The KFD preempts every queue of process `pasid` (kfd_dqm_evict_pasid): its kernels
        place no more workgroups; those already running drain. Returns the kernels stopped."""
        stopped = [k for k in self.active if k.pasid == pasid and not k.aborted]
        for k in stopped:
            k.aborted = True
            if k.done_wgs == k.next_wg:
                self.active.remove(k)  # nothing of it is on a CU
        if stopped:
            self._blocked = False
            self.kick()
        return stopped

    def occupancy(self) -> list[dict]:
        return [cu.state() for cu in self.cus]
