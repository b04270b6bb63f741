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
model's work grows with the number of workgroups, not with simulated time. A kernel of one
workgroup (a round trip's empty kernel) is placed without the pass's loop; its run's group
key is worked out only if its CU ever needs one, and round-robin placement remembers the
spread an idle CU gives a workgroup (every idle CU of the GPU gives the same).

Batched model: a kernel alone on an idle GPU, its workgroups all alike (one wave timing, no
partial workgroup, no bytes over the host link, no per-workgroup trace) has its first pass
computed in closed form under round-robin placement (`_first_pass_round_robin`): CUs of the
same rank on engines of the same make-up get their workgroups at the same ticks on the same
SIMDs, so they form a class whose timelines are identical. One run on the class's
representative CU stands for one workgroup on each CU of the class (`WgRun.mult`): one
placement, one DRAM reservation (each workgroup's last byte taken at the mean of the class's
ticks), one compute event and one completion for the whole class; a refill places a whole
class again. The other CUs' counters catch up when the classes dissolve (`_unbatch`): when
another kernel is launched on the GPU, at an eviction or an occupancy report, for the last
workgroups (fewer than a class) and when code stops a workgroup; from then on every workgroup
has its own run. A latency-bound kernel (each wave at its cap even on a full CU, so no
arrival or departure changes another workgroup's rate) has each class run end in one event
at the later of its compute end and its last byte, not one for each (`begin_unwatched`);
when the classes dissolve those runs go back under their CUs' events. Kernel times stay
within 1% of the reference model (one run per workgroup throughout;
`HSAEMU_TIMING_MODEL=reference` or `Dispatcher.batching = False`) on every table of
bench/timing_effects.py (tests/e2e/test_timing_effects.py).

Functional execution (`hw_model.execution`): the kernel's code runs over a batch of
workgroups at once, just before the first of them is placed: as many as the GPU holds at once
for that kernel, so memory is written up to one GPU-full of workgroups ahead of their start
(docs/timing.md, "When memory is written"); a kernel stopped by an eviction leaves the
workgroups of later batches unrun. The code says which workgroup faulted first (linear
order): the workgroups before it are placed and run; it is placed and stops at the simulated
time of its first global access (the wave's `first_access_ps`), not when it would have
finished; none after it is placed (docs/architecture.md, "Fault handling"). An illegal
instruction stops the kernel the same way and the queue reports it. Workgroup times come from
the cost the code reports (one wave timing per distinct cost profile).
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING

from hw_model.compute_unit import (
    LAZY_KEY,
    ComputeUnit,
    WaveTiming,
    WgRequirements,
    WgRun,
    _Group,
    _GroupKey,
    wave_timing,
)
from hw_model.execution import NO_CODE, BuiltinCode, KernelCode, ran_clean
from hw_model.kernels.base import CostProfile, KernelSpec
from hw_model.memory import MemKind, MemoryFault
from hw_model.occupancy import workgroups_per_cu
from hw_model.trace import FLUSH_RECORDS, TraceEvent

if TYPE_CHECKING:
    from hw_model.gpu import Gpu


# Read-only and empty: what a launch's containers read until it first writes one.
_EMPTY: Mapping = MappingProxyType({})

# (grid, workgroup) -> (workgroups per dimension, workgroups, workgroups again (a launch's
# first `limit`), work-items per workgroup, whether the grid ends mid-workgroup): a loop of one
# kernel asks the same again and again. Bounded: cleared when full (a size chosen, not
# measured).
_GEOMETRY: dict[tuple, tuple[tuple[int, int, int], int, int, int, bool]] = {}
_GEOMETRY_MAX = 1024


def _geometry(
    grid: tuple[int, int, int], workgroup: tuple[int, int, int]
) -> tuple[tuple[int, int, int], int, int, int, bool]:
    (gx, gy, gz), (wx, wy, wz) = grid, workgroup  # 3-D, padded with 1s by the CP
    counts = (-(-gx // wx), -(-gy // wy), -(-gz // wz))
    total = counts[0] * counts[1] * counts[2]
    geo = (
        counts,
        total,
        total,
        wx * wy * wz,
        bool(gx % wx or gy % wy or gz % wz),
    )
    if len(_GEOMETRY) >= _GEOMETRY_MAX:
        _GEOMETRY.clear()
    _GEOMETRY[(grid, workgroup)] = geo
    return geo


class KernelLaunch:
    """One kernel dispatch packet in execution."""

    # What a launch starts with and keeps unless something happens to it: class defaults,
    # which a dispatch (a few a round trip) does not pay to store.
    timing: WaveTiming | None = None  # set by the dispatcher for its GPU
    # The declared cost (built-ins); None when only running the code tells (compiled).
    cost: CostProfile | None = None
    host_share = 0.0  # share of its global bytes in host memory (set at launch)
    next_wg = 0  # workgroups placed so far
    # Placement stops before `limit`: the workgroup after the one whose code faulted or hit
    # an illegal instruction (`stop_wg`, `stop_cause`: the MemoryFault or the message).
    stop_wg = -1
    stop_cause: MemoryFault | str | None = None
    exec_end = 0  # workgroups [0, exec_end) have run (or need not) and are timed
    batch = 1  # workgroups the code runs over per call (set by the dispatcher)
    _timings: list[WaveTiming] | None = None  # per workgroup from `_timings_first`
    _timings_first = 0
    # Batched model: each CU class's representative CU -> the other CUs of the class, the
    # runs in flight (`class_runs`: each stands for one workgroup per CU of its class), the
    # largest class, each shader engine's representative engine (`se_rep`), and the
    # representatives' counters when the classes formed (`class_base`: the other CUs, which
    # run nothing meanwhile, catch up by what their representative's gained since).
    clones: dict[int, list[ComputeUnit]] | None = None
    # Made when the classes form (`Dispatcher._set_classes`); until then these read empty
    # and refuse writes, so a launch that never forms classes (most do not) makes none.
    class_runs: set[WgRun] | frozenset = frozenset()
    se_rep: Mapping[int, int] = _EMPTY
    class_base: Mapping[int, tuple[float, int]] = _EMPTY
    # What the code reported executing, summed over batches (a dict from the first report).
    exec_stats: Mapping = _EMPTY
    # id(timing) -> its runs' key on a CU (`WgRun.key`; made by `group_key`)
    group_keys: Mapping[int, tuple] = _EMPTY
    _edge_reqs: Mapping[int, WgRequirements] = _EMPTY  # partial workgroups' (`req_for`)
    max_mult = 1
    # Representative CU -> (workgroups a run there stands for, its shader engine, the
    # round-robin pointer after it or None): what `Dispatcher._refill` places with.
    refills: Mapping[int, tuple[int, int, int | None]] = _EMPTY
    fits = None  # the requirements' spreads on this GPU's CUs (`_Fits`), once batched
    done_wgs = 0
    aborted = False  # stopped by a fault or an eviction: no more workgroups placed
    fault_wg: WgRun | None = None  # the workgroup whose access faulted
    start_ps: int | None = None
    dispatched_ps: int | None = None  # last workgroup placed
    end_ps: int | None = None
    cu_mask: set[int] | None = None  # CUs this launch may use (AMDKFD_IOC_SET_CU_MASK)
    # Its class runs' rates cannot change (`ComputeUnit.begin_unwatched`): one event each.
    unwatched = False

    def __init__(
        self,
        *,
        name: str,
        pasid: int,
        queue_id: int,
        dispatch_id: int,
        kernel: KernelSpec | None,
        grid: tuple[int, int, int],
        workgroup: tuple[int, int, int],
        req: WgRequirements,
        kernarg: bytes,
        on_dispatched: Callable[[KernelLaunch], None],
        on_complete: Callable[[KernelLaunch], None],
        on_fault: Callable[[KernelLaunch, MemoryFault], None],
        code: KernelCode | None = None,
        on_illegal: Callable[[KernelLaunch, str], None] | None = None,
    ) -> None:
        if kernel is not None:
            # (`KernelSpec.cost_for` without its call when the cost takes no arguments)
            self.cost = kernel.cost if kernel.cost_fn is None else kernel.cost_for(kernarg)
            if code is None:
                code = BuiltinCode(kernel) if kernel.body is not None else NO_CODE
        elif code is None:
            raise ValueError(f"kernel launch {name!r} has neither a kernel nor code")
        self.name = name
        self.pasid = pasid
        self.queue_id = queue_id
        self.dispatch_id = dispatch_id
        self.kernel = kernel
        self.grid = grid
        self.workgroup = workgroup
        geo = _GEOMETRY.get((grid, workgroup))
        if geo is None:
            geo = _geometry(grid, workgroup)
        self.counts, self.total_wgs, self.limit, self.wg_items, self.ragged = geo
        self.req = req
        self.kernarg = kernarg
        self.code = code
        self.on_dispatched = on_dispatched
        self.on_complete = on_complete
        self.on_fault = on_fault
        self.on_illegal = on_illegal

    def group_key(self, timing: WaveTiming | None) -> tuple:
        """The key of this launch's runs of `timing` on a CU (`WgRun.key`): one object per
        timing, hashed and compared by identity."""
        keys = self.group_keys
        if keys is _EMPTY:
            keys = self.group_keys = {}
        key = keys.get(id(timing))
        if key is None:
            key = keys[id(timing)] = _GroupKey((self, timing))
        return key

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
            if self._edge_reqs is _EMPTY:
                self._edge_reqs = {}
            r = self._edge_reqs[waves] = replace(self.req, waves=waves, barrier=waves > 1)  # type: ignore[index]
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
    # The spread `try_place` last gave a workgroup needing `_idle_req` (the CP hands one
    # requirements object per shape) on an idle CU. An idle CU has all its resources free:
    # the dispatcher releases what it allocates, and its CUs share one spec. So any idle CU
    # gives that workgroup the same spread, found without looking at its free room (an empty
    # kernel's round trip places its one workgroup on the idle CU at the pointer).
    _idle_req: WgRequirements | None = None
    _idle_fit: tuple[int, ...] = ()

    def __init__(self, cus: list[ComputeUnit]) -> None:
        super().__init__(cus)
        self._next = 0
        self._after = [*range(1, len(cus)), 0]  # the pointer after placing on each CU

    def _scan(self, launch, req, active, candidates, allowed=None):
        cus = self.cus
        mask = launch.cu_mask
        nxt = self._next
        if candidates is None:
            if mask is None and allowed is None:
                # the CU at the pointer first (it usually takes it), before building the order
                cu = cus[nxt]
                if cu.resident_wgs:
                    p = cu.fit(req)
                elif req is self._idle_req:
                    p = self._idle_fit
                else:
                    p = cu.fit(req)
                    if p is not None:
                        self._idle_req, self._idle_fit = req, p
                if p is not None:
                    self._next = self._after[nxt]
                    return cu, p
                order = itertools.chain(range(nxt + 1, len(cus)), range(nxt))
            else:
                order = itertools.chain(range(nxt, len(cus)), range(nxt))
        elif len(candidates) == 1:
            order = candidates
        else:
            # CUs from the pointer on, then from 0: what sorting by (i - nxt) mod n gives
            s = sorted(candidates)
            j = bisect.bisect_left(s, nxt)
            order = s[j:] + s[:j] if j else s
        for i in order:
            if (mask is not None and i not in mask) or (allowed is not None and i not in allowed):
                continue
            cu = cus[i]
            p = cu.fit(req)
            if p is not None:
                self._next = self._after[i]
                return cu, p
        return None

    place = _scan  # `allowed` None: every CU (within the launch's CU mask)


class GreedyPlacement(PlacementPolicy):
    """Fill the lowest-numbered CU that fits before moving on (MGPUSim's greedy)."""

    name = "greedy"

    def place(self, launch, req, active, candidates):
        mask = launch.cu_mask
        order = self.cus if candidates is None else [self.cus[i] for i in sorted(candidates)]
        for cu in order:
            if mask is not None and cu.index not in mask:
                continue
            p = cu.fit(req)
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
        return self._scan(launch, req, active, candidates, self.allowed(launch, active))

    def allowed(self, launch, active):
        if launch.cu_mask is not None:
            return None  # a queue's CU mask is already a partition chosen by software
        running = [k for k in active if not k.aborted]
        parts = max(len(running), 1)
        slot = running.index(launch) if launch in running else 0
        n = len(self.cus)
        lo, hi = slot * n // parts, (slot + 1) * n // parts
        return range(lo, max(hi, lo + 1))


def _run_index(run: WgRun) -> int:
    return run.index


def _resources(cu: ComputeUnit) -> tuple[int, int]:
    return cu._free, cu.resident_wgs


def _set_resources(cu: ComputeUnit, state: tuple[int, int], now: int) -> None:
    """Give an idle CU the resources `state` (of a CU that took workgroups at `now`)."""
    cu._free, wgs = state
    if cu.resident_wgs == 0 and wgs:
        cu._busy_since = now
    cu.resident_wgs = wgs


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
        self._engine = gpu.engine  # (read at every workgroup's start and end)
        self._ncus = len(self.cus)
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
        self._wave_timings: dict[CostProfile, WaveTiming] = {}
        self._last_cost: CostProfile | None = None
        self._last_req: WgRequirements | None = None
        self._last_full = 0
        self._last_timing: WaveTiming | None = None
        # The batched model (module docstring); HSAEMU_TIMING_MODEL=reference, or False here,
        # keeps one run per workgroup everywhere: the reference the batched model is tested
        # against.
        self.batching = os.environ.get("HSAEMU_TIMING_MODEL", "batched") != "reference"

    def _timing(self, cost: CostProfile) -> WaveTiming:
        # The same profile object as last time (a loop of one kernel): no hashing of the model.
        if cost is self._last_cost:
            return self._last_timing  # type: ignore[return-value]
        t = self._wave_timings.get(cost)
        if t is None:
            t = self._wave_timings[cost] = wave_timing(self.spec, cost)
        self._last_cost, self._last_timing = cost, t
        return t

    def launch(self, k: KernelLaunch) -> None:
        for other in self.active:
            if other.clones is not None:
                self._unbatch(other)  # kernels sharing the GPU: one run per workgroup
        cost = k.cost
        if cost is not None:  # (`_timing`'s last-profile hit, inline)
            k.timing = self._last_timing if cost is self._last_cost else self._timing(cost)
        kernel = k.kernel
        if kernel is not None and kernel.streams:  # (without streams: none, the default)
            k.host_share = self._host_share(k)
        gpu = self.gpu
        code = k.code
        if code.always_execute or (
            code is not NO_CODE and gpu.functional and gpu.memory is not None
        ):
            # Run the code a GPU-full of workgroups at a time: few calls, and memory written
            # at most that far ahead of the workgroups' start.
            req = k.req
            if k.total_wgs == 1:
                pass  # a batch of one, the default
            elif req is self._last_req:  # (the CP hands one requirements object per shape)
                k.batch = self._last_full
            else:
                # (at least one; `_execute` runs no more than the workgroups left)
                full = max(1, len(self.cus) * workgroups_per_cu(self.spec, req))
                self._last_req, self._last_full = req, full
                k.batch = full
        else:
            k.exec_end = k.total_wgs  # declared cost, nothing to run (or none to run at all)
        self.active.append(k)
        self._blocked = False
        if not self._pending_kick:  # (`kick`, inline)
            self._pending_kick = True
            self._engine.post(0, 5, self._dispatch)

    def _host_share(self, k: KernelLaunch) -> float:
        """Share of the kernel's global bytes that live in host (system) memory, from the
        streams it declares: each stream's pointer argument is looked up in the process's VM.
        A kernel without declared streams is charged to the GPU's memory only."""
        streams = k.kernel.streams if k.kernel is not None else ()
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
        active = self.active
        if not active:
            return
        engine = self._engine
        now = engine.now
        launch_ps = self.spec.wg_dispatch_latency_ps
        se_free = self._se_free
        place = self.policy.place
        dirty = self._dirty
        candidates = dirty if self._blocked else None
        if dirty:  # (an empty one serves again: nothing notes a CU during a pass)
            self._dirty = set()
        waiting = False
        for k in list(active):
            if k.total_wgs == 1 and not k.ragged and self._ncus > 1:
                # One workgroup (an empty kernel's round trip; with more than one CU, never
                # batched): the loop below once, without its bookkeeping. Its run's group key
                # is worked out only if its CU ever needs one (it does not while the
                # workgroup is alone there).
                if k.next_wg or k.aborted:
                    continue
                req = k.req
                if not k.exec_end:
                    self._execute(k, 0)  # (its limit stays 1, even when it stops)
                placed = place(k, req, active, candidates)
                if placed is None:
                    waiting = True
                    continue
                cu, simds = placed
                k.next_wg = 1
                k.start_ps = now  # (None until its one workgroup is placed)
                cu.allocate(req, simds, now)
                se = cu.shader_engine
                start = se_free[se]
                start = se_free[se] = (now if now > start else start) + launch_ps
                timings = k._timings  # (from the one batch there is, at 0)
                timing = k.timing if timings is None else timings[0]
                run = WgRun(k, cu, 0, None, k.wg_items, req, simds, start, timing, LAZY_KEY)
                if k.stop_wg == 0:
                    run.fault = k.stop_cause
                engine.post(start - now, 1, self._wg_start, run)
                k.dispatched_ps = now
                k.on_dispatched(k)
                self.wgs_dispatched += 1
                continue
            first_pass = None
            if (
                k.total_wgs >= self._ncus  # (`_batchable`'s first test, inline)
                and k.start_ps is None
                and self.batching
                and len(active) == 1
                and self._batchable(k)
            ):
                if self._first_pass_round_robin(k, now):
                    waiting = k.next_wg < k.limit
                    continue
                first_pass = []  # its runs, held back until its CU classes are known
            if k.clones is not None and candidates is None:
                self._unbatch(k)  # a pass over every CU: each must have its own counters
            if first_pass is None and k.clones is None and not k.ragged:
                # The loop below without what cannot apply here (no CU classes, which form
                # only in a first pass; no partial workgroups; runs scheduled as placed).
                # What only running the code changes (`_execute`) is read again after it.
                req = k.req
                items = k.wg_items
                total = k.total_wgs
                first = index = k.next_wg
                limit = k.limit
                exec_end = k.exec_end
                key = None  # the runs' group key (WgRun) while the kernel has one timing
                while index < limit and not k.aborted:
                    if index >= exec_end:
                        self._execute(k, index)
                        limit, exec_end, key = k.limit, k.exec_end, None
                    placed = place(k, req, active, candidates)
                    if placed is None:
                        waiting = True
                        break
                    cu, simds = placed
                    k.next_wg = index + 1
                    if k.start_ps is None:
                        k.start_ps = now
                    cu.allocate(req, simds, now)
                    se = cu.shader_engine
                    start = se_free[se]
                    start = (now if now > start else start) + launch_ps
                    se_free[se] = start
                    timings = k._timings
                    if timings is None:
                        timing = k.timing
                        if key is None:  # (`KernelLaunch.group_key`, its hit inline)
                            key = k.group_keys.get(id(timing))
                            if key is None:
                                key = k.group_key(timing)
                        run = WgRun(k, cu, index, None, items, req, simds, start, timing, key)
                    else:
                        timing = timings[index - k._timings_first]
                        run = WgRun(k, cu, index, None, items, req, simds, start, timing)
                    if index == k.stop_wg:
                        run.fault = k.stop_cause
                    engine.schedule_at(start, self._wg_start, run, priority=1)
                    index += 1
                    if index == total:
                        k.dispatched_ps = now
                        k.on_dispatched(k)
                self.wgs_dispatched += index - first
                continue
            wave = self.spec.wavefront_size
            while not k.aborted and k.next_wg < k.limit:
                index = k.next_wg
                if index >= k.exec_end:
                    self._execute(k, index)
                if k.clones is not None and not self._class_ready(k, index):
                    if index + k.max_mult > k.total_wgs and candidates is not None:
                        # Fewer workgroups left than a class: the CUs of the classes that
                        # freed room take them one at a time; the others finish as classes.
                        reps = {r for r in candidates if r in k.clones}
                        freed = {c.index for r in reps for c in k.clones[r]}
                        self._unbatch(k, reps)
                        candidates = candidates | freed
                    else:
                        self._unbatch(k)
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
                mult = 1
                if k.clones is not None:
                    clones = k.clones.get(cu.index)
                    if clones is not None:
                        mult += len(clones)
                k.next_wg = index + mult
                if k.start_ps is None:
                    k.start_ps = now
                cu.allocate(req, simds, now)
                self.wgs_dispatched += mult
                se = cu.shader_engine
                start = (now if now > se_free[se] else se_free[se]) + launch_ps
                se_free[se] = start
                timing = k.timing if k._timings is None else k._timings[index - k._timings_first]
                run = WgRun(k, cu, index, coords, items, req, simds, start, timing)
                if index == k.stop_wg:
                    run.fault = k.stop_cause
                if mult > 1:
                    run.mult = mult
                    k.class_runs.add(run)
                if first_pass is not None:
                    first_pass.append(run)
                else:
                    engine.schedule_at(start, self._wg_start, run, priority=1)
                if k.next_wg == k.total_wgs:
                    k.dispatched_ps = now
                    k.on_dispatched(k)
            if first_pass is not None:
                self._form_classes(k, first_pass)
        self._blocked = waiting

    # -- the batched model -----------------------------------------------------------------
    def _refill(self, k: KernelLaunch, cu: ComputeUnit, now: int) -> None:
        """`_dispatch` for a batched kernel alone whose class representative `cu` just
        freed room: the pass could only place there, a whole class per workgroup."""
        at = k.refills.get(cu.index)  # (None: `cu`'s class has dissolved)
        self._pending_kick = False
        fits = k.fits
        if fits is None:
            fits = k.fits = cu.fits_for(k.req)
        more = True  # (whether `cu` may take another: the last `take` says)
        while True:
            index = k.next_wg
            # (`exec_end` <= `total_wgs`: this also tells that too few are left for a class)
            if at is None or index + k.max_mult > k.exec_end or k.aborted:
                # workgroups to run first, or too few left for a class: the general pass
                self._dirty = {cu.index}
                self._dispatch()
                return
            hit = cu.take(fits, now) if more else None
            if not hit:  # `cu` is full (and the dispatcher still blocked: no more to do)
                self._dirty = set()
                return
            simds, _, more = hit
            mult, se, after = at
            k.next_wg = index + mult
            self.wgs_dispatched += mult
            se_free = self._se_free
            start = se_free[se]
            start = se_free[se] = (now if now > start else start) + self.spec.wg_dispatch_latency_ps
            timing = k.timing
            key = k.group_keys.get(id(timing))
            if key is None:
                key = k.group_key(timing)
            run = WgRun(k, cu, index, None, k.wg_items, k.req, simds, start, timing, key)
            run.mult = mult
            k.class_runs.add(run)
            self._engine.post(start - now, 1, self._wg_start, run)
            if after is not None:  # (round-robin: its pointer past `cu`, as `_scan` moves it)
                self.policy._next = after  # type: ignore[attr-defined]
            if k.next_wg == k.total_wgs:
                k.dispatched_ps = now
                k.on_dispatched(k)
                self._dirty = set()
                self._blocked = False
                return

    def _batchable(self, k: KernelLaunch) -> bool:
        """Whether `k`'s workgroups may be run a CU class at a time: alone on an idle GPU,
        all workgroups alike, nothing traced per workgroup, no bytes over the host link
        (shared with copies). Compiled code's host bytes are known only once it ran: the
        first pass checks its timing (`_host_free`). A kernel of fewer workgroups than CUs
        is placed one by one: the closed-form pass costs a walk over every CU, more than
        placing a few workgroups (an empty kernel's one workgroup paid a third of its round
        trip for it)."""
        return (
            k.total_wgs >= len(self.cus)
            and not k.ragged
            and not self.gpu.tracer.enabled
            and k.host_share == 0
            and k.stop_wg < 0
            and all(cu.resident_wgs == 0 for cu in self.cus)
        )

    def _form_classes(self, k: KernelLaunch, runs: list[WgRun]) -> None:
        """After `k`'s first pass: CUs that got workgroups at the same ticks on the same
        SIMDs form a class; one run per class (on its representative CU) stands for the
        workgroups of all its CUs. Refills keep the classes when every shader engine's CUs
        mirror those of its representative engine."""
        schedule = self.gpu.engine.schedule_at
        by_cu: dict[int, list[WgRun]] = {}
        timing = runs[0].timing if runs else None
        ok = k.stop_wg < 0 and k._timings is None and _host_free(timing)
        for r in runs:
            by_cu.setdefault(r.cu.index, []).append(r)
            ok = ok and r.timing is timing
        classes: dict[tuple, list[int]] = {}
        if ok:
            for ci, rs in by_cu.items():
                sig = tuple((r.start, tuple(r.simds)) for r in rs)
                classes.setdefault(sig, []).append(ci)
        members = list(classes.values())
        if ok and members and max(map(len, members)) > 1:
            se_rep = self._engine_map(k, members)
            if se_rep is not None:
                reps = self._set_classes(k, members, se_rep)
                for r, clones in reps.items():
                    for run in by_cu[r]:
                        run.mult = 1 + len(clones)
                        k.class_runs.add(run)
                        schedule(run.start, self._wg_start, run, priority=1)
                return
        for r in runs:
            schedule(r.start, self._wg_start, r, priority=1)

    def _first_pass_round_robin(self, k: KernelLaunch, now: int) -> bool:
        """`k`'s first pass on an idle GPU under round-robin placement, in closed form: the
        policy would give one workgroup to each CU in turn (from its pointer, within the CU
        mask) until every CU is full, each CU's workgroups taking the same SIMDs, each
        engine launching its CUs' workgroups one after another. False when that does not
        apply (the pass then runs workgroup by workgroup)."""
        policy = self.policy
        if not isinstance(policy, RoundRobinPlacement) or k.next_wg or k.stop_wg >= 0:
            return False
        cus = self.cus
        n = len(cus)
        allowed = policy.allowed(k, self.active)
        mask = k.cu_mask
        nxt = policy._next
        if mask is None and allowed is None:
            order = [*range(nxt, n), *range(nxt)]
        else:
            order = [
                i
                for i in itertools.chain(range(nxt, n), range(nxt))
                if (mask is None or i in mask) and (allowed is None or i in allowed)
            ]
        if not order:
            return False
        req = k.req
        probe = ComputeUnit(self.spec, 0)
        steps: list[list[int]] = []  # the SIMDs of a CU's 1st, 2nd, ... workgroup
        states = [_resources(probe)]
        while len(steps) * len(order) < k.total_wgs:
            simds = probe.fit(req)
            if simds is None:
                break
            probe.allocate(req, simds, now)
            steps.append(simds)
            states.append(_resources(probe))
        if not steps:
            return False
        a = len(order)
        placed = min(k.total_wgs, a * len(steps))
        timing = k.timing
        while k.exec_end < placed and k.stop_wg < 0:
            self._execute(k, k.exec_end)
        if k.stop_wg >= 0 or k._timings is not None or k.timing is not timing:
            return False  # workgroups that differ: the pass places them one by one
        if not _host_free(timing):
            return False
        full, extra = divmod(placed, a)
        # Each engine launches in placement order: sweep by sweep, its CUs in `order`.
        se_free = self._se_free
        launch_ps = self.spec.wg_dispatch_latency_ps
        ses = [cus[i].shader_engine for i in order]
        per_se: dict[int, int] = {}
        rank = []
        for e in ses:
            r = per_se.get(e, 0)
            rank.append(r)
            per_se[e] = r + 1
        base = {e: (now if now > se_free[e] else se_free[e]) for e in per_se}
        count = [full + 1] * extra + [full] * (a - extra)  # (the first `extra` one more)
        classes: dict[tuple, list[int]] = {}
        launched = dict.fromkeys(per_se, 0)
        for p, e in enumerate(ses):
            c = count[p]
            if c:
                classes.setdefault((c, per_se[e], rank[p], base[e]), []).append(order[p])
                launched[e] += c
        for e, m in launched.items():
            se_free[e] = base[e] + launch_ps * m
        last = order[(placed - 1) % a]
        policy._next = last + 1 if last + 1 < n else 0
        k.next_wg = placed
        k.start_ps = now
        self.wgs_dispatched += placed
        members = list(classes.values())
        se_rep = self._engine_map(k, members) if max(map(len, members)) > 1 else None
        pos = dict(zip(order, range(a), strict=True))  # CU -> its place in `order`
        if se_rep is None:
            reps = {m: [] for ms in members for m in ms}  # one run per workgroup
        else:
            reps = self._set_classes(k, members, se_rep)
        # Only the representatives take their resources now: the other CUs of a class copy
        # them (and every counter) from theirs when the classes dissolve (`_unbatch`).
        for r in reps:
            _set_resources(cus[r], states[count[pos[r]]], now)
        post = self._engine.post
        wg_start = self._wg_start
        items = k.wg_items
        key = k.group_key(timing)
        for r, clones in reps.items():
            p = pos[r]
            cu = cus[r]
            e = cu.shader_engine
            mult = 1 + len(clones)
            for s in range(count[p]):
                index = s * a + p
                start = base[e] + launch_ps * (s * per_se[e] + rank[p] + 1)
                run = WgRun(k, cu, index, None, items, req, steps[s], start, timing, key)
                if clones:
                    run.mult = mult
                    k.class_runs.add(run)
                post(start - now, 1, wg_start, run)
        if placed == k.total_wgs:
            k.dispatched_ps = now
            k.on_dispatched(k)
        return True

    def _set_classes(
        self, k: KernelLaunch, members: list[list[int]], se_rep: dict[int, int]
    ) -> dict[int, list[ComputeUnit]]:
        """Make each class of CUs (`members`) run as its representative: the member on its
        engine's representative engine. Returns representative CU index -> its clones."""
        cus = self.cus
        reps: dict[int, list[ComputeUnit]] = {}
        for m in members:
            r = next(c for c in m if se_rep[cus[c].shader_engine] == cus[c].shader_engine)
            reps[r] = [cus[c] for c in m if c != r]
        k.clones = reps
        after = getattr(self.policy, "_after", None)  # (round-robin placement's pointers)
        k.refills = {
            r: (1 + len(c), cus[r].shader_engine, None if after is None else after[r])
            for r, c in reps.items()
        }
        k.class_runs = set()
        k.se_rep = se_rep
        # Latency-bound: each wave at its cap even with every wave slot of a CU taken, so no
        # workgroup's arrival or departure changes another's rate (ComputeUnit._set_rates).
        t = k.timing
        k.unwatched = t is not None and t.cap * self.spec.max_waves_per_cu <= 1.0
        k.max_mult = max(len(v) for v in reps.values()) + 1
        k.class_base = {r: (cus[r].busy_ps, cus[r].wgs_run) for r in reps}
        return reps

    def _engine_map(self, k: KernelLaunch, members: list[list[int]]) -> dict[int, int] | None:
        """Each shader engine's representative engine, or None when the classes do not
        split the engines alike. Refills launch on the representative's engine only, so every
        engine must hold one member of the same classes as its representative. A kernel
        whose workgroups were all placed needs no refills: any member may represent."""
        cus = self.cus
        if k.next_wg >= k.total_wgs:
            return {e: e for e in {cus[c].shader_engine for m in members for c in m}}
        se: dict[int, int] = {}  # CU -> its engine
        kinds: dict[int, list[int]] = {}  # engine -> the classes of its CUs
        for i, m in enumerate(members):
            for c in m:
                e = se[c] = cus[c].shader_engine
                kinds.setdefault(e, []).append(i)
        first: dict[tuple, int] = {}
        se_rep: dict[int, int] = {}
        for e in sorted(kinds):
            kind = tuple(sorted(kinds[e]))
            if len(set(kind)) != len(kind):
                return None
            se_rep[e] = first.setdefault(kind, e)
        for m in members:
            if len({se_rep[se[c]] for c in m}) != 1:
                return None  # a class spread over engines of different kinds
        return se_rep

    def _class_ready(self, k: KernelLaunch, index: int) -> bool:
        """Whether the next run may stand for a whole class: enough workgroups left, all
        with the kernel's one timing and none that stops."""
        end = index + k.max_mult
        if end > k.total_wgs:
            return False
        timing = k.timing
        while k.exec_end < end and k.stop_wg < 0:
            self._execute(k, k.exec_end)
        return k.stop_wg < 0 and k._timings is None and k.timing is timing

    def _unbatch(self, k: KernelLaunch, only: set[int] | None = None) -> None:
        """Back to one run per workgroup: every CU of a class gets its own copy of the runs
        (and the resource and busy counters) of its representative, and its own events.
        `only`: just the classes of these representatives (the others stay batched)."""
        if k.clones is None:
            return
        if only is None:
            clones_of = k.clones
            k.clones = None
            k.refills = _EMPTY
            runs = k.class_runs
            k.class_runs = set()
        else:
            clones_of = {r: k.clones.pop(r) for r in only if r in k.clones}
            for r in clones_of:
                del k.refills[r]  # type: ignore[attr-defined]
            if not k.clones:
                k.clones = None
            runs = {run for run in k.class_runs if run.cu.index in clones_of}
            k.class_runs -= runs
        engine = self.gpu.engine
        now = engine.now
        schedule = engine.schedule_at
        cus = self.cus
        if k.unwatched:
            # The representatives' runs go back under their CUs' events (their copies are
            # made from those) and those still computing lose their one-event ends.
            for r in clones_of:
                for run in cus[r].watch(now):
                    run.event.cancel()
                    run.event = None
            if k.clones is None:
                k.unwatched = False
        copies: dict[WgRun, list[WgRun]] = {}
        # In workgroup order: a set of runs iterates by address, which differs from run to
        # run, and copies starting at one tick reserve the DRAM channel in the order made.
        for run in sorted(runs, key=_run_index):
            clones = clones_of[run.cu.index]
            mine = []
            for j, c in enumerate(clones, 1):
                i = run.index + j
                new = WgRun(k, c, i, None, run.items, run.req, run.simds, run.start,
                            run.timing, run.key)  # fmt: skip
                new.mem_done = run.mem_done
                new.phase = run.phase
                if run.phase == 0:
                    schedule(run.start, self._wg_start, new, priority=1)
                elif run.phase == 2:  # (an unwatched run's last byte may be in the past)
                    schedule(max(run.mem_done, now), self._wg_done, new, priority=1)
                mine.append(new)
            copies[run] = mine
            run.mult = 1
        se_free = self._se_free
        # No run of these classes in flight (the kernel is over): the CUs are idle, with no
        # group to mirror or event to set; only resources and counters catch up.
        idle = not runs
        class_base = k.class_base
        for r, clones in clones_of.items():
            rep = cus[r]
            rep._advance(now)
            base_busy, base_run = class_base[r]
            # (the counters are ints: what the representative gained, each clone gains)
            busy_gain, run_gain = rep.busy_ps - base_busy, rep.wgs_run - base_run
            free, resident, since = rep._free, rep.resident_wgs, rep._busy_since
            r_free = se_free[rep.shader_engine]  # (no clone is on its engine)
            for j, c in enumerate(clones):
                c._free = free
                c.resident_wgs = resident
                c._busy_since = since
                c.busy_ps += busy_gain
                c.wgs_run += run_gain
                if idle:
                    e = c.shader_engine
                    if se_free[e] < r_free:
                        se_free[e] = r_free
                    continue
                c._advance(now)  # its own groups (none of `k`'s: those it gets now)
                for key, g in rep._groups.items():
                    if key[0] is not k:
                        continue
                    mirror = _Group(g.timing)
                    mirror.waves, mirror.v, mirror.rate = g.waves, g.v, g.rate
                    mirror.fifo.extend((t, copies[run][j]) for t, run in g.fifo)
                    c._groups[key] = mirror
                c._reschedule(now)
                # its engine launched what the representative's did (and maybe more since)
                e = c.shader_engine
                r_free = se_free[rep.shader_engine]
                if se_free[e] < r_free:
                    se_free[e] = r_free

    def _execute(self, k: KernelLaunch, first: int) -> None:
        """Run `k`'s code over its next batch of workgroups from `first`; take their timings
        and where the code stopped (a fault or an illegal instruction)."""
        count = min(k.batch, k.total_wgs - first)
        gpu = self.gpu
        ex = k.code.execute(k, gpu.memory, gpu.node, first, count)
        end = first + count
        if ex is ran_clean[0]:
            # Built-in code that ran clean at the launch's declared cost: `launch` already
            # gave it that cost's timing (the object `_timing` hands out for it), no per-
            # workgroup timings, nothing to add to its stats.
            k.exec_end = end
            return
        if ex.illegal is not None or ex.fault is not None:
            stop = None
            if ex.illegal is not None and ex.illegal_wg is not None:
                stop = (ex.illegal_wg, ex.illegal)
            fault_wg = ex.fault_wg
            if (
                ex.fault is not None
                and fault_wg is not None
                and (stop is None or fault_wg < stop[0])
            ):
                stop = (fault_wg, ex.fault)
            if stop is not None:
                k.stop_wg, k.stop_cause = stop
                k.limit = end = stop[0] + 1
        if ex.stats:
            if k.exec_stats is _EMPTY:
                k.exec_stats = {}
            _add_stats(k.exec_stats, ex.stats)  # type: ignore[arg-type]
        costs = ex.costs
        if costs is self._last_cost:  # one profile, the last one timed (`_timing`, inline)
            k._timings = None
            k.timing = self._last_timing
        # (a list, or one profile: both tested by type before the ABC's slower check)
        elif type(costs) is list or (
            not isinstance(costs, CostProfile) and isinstance(costs, Sequence)
        ):
            k._timings = [self._timing(c) for c in costs]
            k._timings_first = first
        else:
            k._timings = None
            k.timing = self._timing(costs)
        k.exec_end = end

    def _wg_start(self, run: WgRun) -> None:
        """The workgroup's waves are launched: reserve its DRAM traffic, start computing. A
        workgroup whose code faulted (or hit an illegal instruction) stops at its first global
        access, where the hardware would raise the fault."""
        k = run.launch
        now = self._engine.now
        timing: WaveTiming = run.timing
        if k.aborted:
            # Its kernel was stopped (a fault, an eviction) after this workgroup was placed:
            # its waves never start.
            self._wg_done(run)
            return
        if run.fault is not None:
            run.cu.begin(run, timing, now)
            at = now + max(1, math.ceil(timing.first_access_ps))
            self.gpu.engine.schedule_at(at, self._wg_fault, run, priority=1)
            return
        nbytes = timing.bytes_per_item * run.items
        run.phase = 1
        if nbytes:
            mult = run.mult
            if mult > 1:
                # One reservation for the workgroups of the whole class.
                done = self.gpu.channel.transfer_mean(now, nbytes, mult)
                done = run.mem_done = (done if done > now else now) + timing.latency_ps
                if k.unwatched:
                    end = run.cu.begin_unwatched(run, timing, now)
                    if end >= 0:  # (its one event: `_wg_done` ends its computing too)
                        at = end if end > done else done
                        run.event = self._engine.post(at - now, 1, self._wg_done, run)
                else:
                    run.cu.begin(run, timing, now)
                return
            # Built-ins: the share their declared streams give; compiled code: the bytes its
            # lanes moved to and from host memory (the cost profile's `host_bytes`).
            host = int(nbytes * k.host_share) or timing.host_bytes_per_item * run.items
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
        now = self._engine.now
        if run.mem_done > now:
            run.phase = 2
            self.gpu.engine.schedule_at(run.mem_done, self._wg_done, run, priority=1)
        else:
            self._wg_done(run)

    def _wg_fault(self, run: WgRun) -> None:
        """The workgroup's first global access reaches a page its GPU may not touch (or its
        wave reaches an instruction the code cannot execute)."""
        k = run.launch
        cu = run.cu
        now = self.gpu.engine.now
        fault = run.fault
        cu.stop(run, now)
        tracer = self.gpu.tracer
        if isinstance(fault, str):
            if tracer.enabled:
                tracer.instant(
                    f"CU{cu.index}",
                    f"illegal instruction {k.name}",
                    now,
                    {
                        "wg": run.coords,
                        "cu": cu.index,
                        "queue": k.queue_id,
                        "dispatch_id": k.dispatch_id,
                        "message": fault,
                    },
                    cat="fault",
                )
            if not k.aborted:
                k.aborted = True
                k.fault_wg = run
                if k.on_illegal is not None:
                    k.on_illegal(k, fault)
                else:  # a caller that expects no illegal code: report it as a fault
                    k.on_fault(k, MemoryFault(0, 0, fault))
            self._wg_done(run)
            return
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
        now = self._engine.now
        mult = run.mult
        if mult > 1:
            if run.phase == 3:
                # An unwatched class run has finished computing and its last byte has moved:
                # one event where a watched run takes two (`_compute_done`, then this).
                cu.end_unwatched(run, now)  # (its resources back too)
            else:
                cu.release(run.req, run.simds, now)
            k.done_wgs += mult
            k.class_runs.discard(run)
        else:
            cu.release(run.req, run.simds, now)
            k.done_wgs += 1
        if self.gpu.tracer.enabled:
            tracer = self.gpu.tracer
            tracer.log((_wg_event, run.start, run, now))
            if len(tracer.pending) >= FLUSH_RECORDS:  # (one record a workgroup: kept bounded)
                tracer.flush()
        if k.done_wgs == k.total_wgs or (k.aborted and k.done_wgs == k.next_wg):
            if k.clones is not None:
                self._unbatch(k)  # the other CUs of each class catch up
            active = self.active
            try:
                active.remove(k)
            except ValueError:  # (no longer served: stopped by an eviction)
                self._dirty.add(cu.index)
            else:
                # Shares of the partition policy change with the set of kernels: look at all
                # CUs in the next pass.
                self._blocked = False
                if active:
                    self._dispatch()
                else:  # what the pass does with no kernel
                    self._pending_kick = False
            if not k.aborted:
                k.end_ps = now
                k.on_complete(k)
        else:
            # (The branch above need not note the CU: with `_blocked` off, the next pass
            # looks at every CU and drops the notes.)
            dirty = self._dirty
            dirty.add(cu.index)
            if self._blocked:
                # The SPI sees freed resources at once: place waiting workgroups now.
                if k.clones is not None and len(dirty) == 1 and len(self.active) == 1:
                    self._refill(k, cu, now)
                else:
                    self._dispatch()

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
            self._unbatch(k)
            k.aborted = True
            if k.done_wgs == k.next_wg:
                self.active.remove(k)  # nothing of it is on a CU
        if stopped:
            self._blocked = False
            self.kick()
        return stopped

    def occupancy(self) -> list[dict]:
        for k in self.active:
            self._unbatch(k)  # every CU's own state
        return [cu.state() for cu in self.cus]


def _host_free(timing: WaveTiming | None) -> bool:
    """No bytes over the host link (a condition of the batched model)."""
    return timing is None or timing.host_bytes_per_item == 0


def _add_stats(total: dict, more: dict) -> None:
    """Sum `more` into `total`: numbers add, nested dicts (counts by class) add key by key."""
    for key, v in more.items():
        if isinstance(v, dict):
            _add_stats(total.setdefault(key, {}), v)
        elif isinstance(v, int | float) and not isinstance(v, bool):
            total[key] = total.get(key, 0) + v
        else:
            total[key] = v


def _wg_event(start: int, run: WgRun, end: int) -> TraceEvent:
    """A workgroup's slice on its CU, from the run `_wg_done` logged (Tracer.log): a finished
    run is changed no more, and its launch's name and ids are fixed when it is made."""
    k = run.launch
    fault = run.fault
    args: dict = {"wg": run.coords, "queue": k.queue_id, "dispatch_id": k.dispatch_id}
    if isinstance(fault, MemoryFault):
        args["fault"] = hex(fault.va)
    elif fault is not None:
        args["illegal"] = fault
    return TraceEvent("X", f"CU{run.cu.index}", k.name, start, end - start, args, "wg")
