"""Workgroup dispatcher: places the workgroups of running kernels onto compute units.

Models the SPI/dispatcher of gem5's `src/gpu-compute/dispatcher.cc` and MGPUSim's
dispatcher: kernels handed over by the packet processors are served oldest first; a workgroup
goes onto a CU only when all its waves get wave slots and VGPRs/SGPRs on SIMDs, its LDS and a
barrier slot; otherwise it waits for a workgroup to finish. Later kernels may fill what the
older ones leave free. Where on the GPU a workgroup goes is a pluggable placement policy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from hw_model.compute_unit import ComputeUnit, WgRequirements, wg_duration
from hw_model.kernels.base import KernelSpec, WorkgroupContext
from hw_model.memory import MemoryFault

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
        self.req = req
        self.kernarg = kernarg
        self.next_wg = 0
        self.done_wgs = 0
        self.aborted = False
        self.start_ps: int | None = None
        self.end_ps: int | None = None
        self.on_dispatched = on_dispatched
        self.on_complete = on_complete
        self.on_fault = on_fault
        self.cu_mask: set[int] | None = None  # CUs this launch may use (partition, CU mask)

    def wg_coords(self, index: int) -> tuple[int, int, int]:
        nx, ny, _ = self.counts
        return index % nx, (index // nx) % ny, index // (nx * ny)

    def wg_workitems(self, coords: tuple[int, int, int]) -> int:
        n = 1
        for c, w, g in zip(coords, self.workgroup, self.grid, strict=True):
            n *= min(w, g - c * w)
        return n

    @property
    def fully_dispatched(self) -> bool:
        return self.next_wg >= self.total_wgs


class PlacementPolicy:
    """Chooses the CU for the next workgroup. Subclass and register in PLACEMENT_POLICIES."""

    name = "base"

    def __init__(self, cus: list[ComputeUnit]) -> None:
        self.cus = cus

    def place(
        self, launch: KernelLaunch, active: list[KernelLaunch], candidates: set[int] | None
    ) -> tuple[ComputeUnit, list[int]] | None:
        """A CU (and the SIMD of each wave) for the next workgroup of `launch`, or None.

        `candidates`, when given, are the only CUs whose resources changed since every other
        CU was last found full; a policy need not look elsewhere.
        """
        raise NotImplementedError


class RoundRobinPlacement(PlacementPolicy):
    """gem5's dispatcher: try CUs in turn, starting after the last one used."""

    name = "round_robin"

    def __init__(self, cus: list[ComputeUnit]) -> None:
        super().__init__(cus)
        self._next = 0

    def place(self, launch, active, candidates):
        n = len(self.cus)
        mask = launch.cu_mask
        if candidates is not None:
            order = sorted(candidates, key=lambda i: (i - self._next) % n)
        else:
            order = [(self._next + k) % n for k in range(n)]
        for i in order:
            if mask is not None and i not in mask:
                continue
            cu = self.cus[i]
            p = cu.try_place(launch.req)
            if p is not None:
                self._next = (i + 1) % n
                return cu, p
        return None


class GreedyPlacement(PlacementPolicy):
    """Fill the lowest-numbered CU that fits before moving on (MGPUSim's greedy)."""

    name = "greedy"

    def place(self, launch, active, candidates):
        mask = launch.cu_mask
        for cu in self.cus:
            if mask is not None and cu.index not in mask:
                continue
            if candidates is not None and cu.index not in candidates:
                continue
            p = cu.try_place(launch.req)
            if p is not None:
                return cu, p
        return None


class PartitionPlacement(PlacementPolicy):
    """Split CUs evenly between the kernels running at once (MGPUSim's partition)."""

    name = "partition"

    def __init__(self, cus: list[ComputeUnit]) -> None:
        super().__init__(cus)
        self._rr = RoundRobinPlacement(cus)

    def place(self, launch, active, candidates):
        running = [k for k in active if not k.aborted]
        parts = max(len(running), 1)
        slot = running.index(launch) if launch in running else 0
        n = len(self.cus)
        lo, hi = slot * n // parts, (slot + 1) * n // parts
        saved = launch.cu_mask
        launch.cu_mask = set(range(lo, max(hi, lo + 1))) & (saved if saved else set(range(n)))
        try:
            return self._rr.place(launch, active, candidates)
        finally:
            launch.cu_mask = saved


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
        self.active: list[KernelLaunch] = []
        self.wgs_dispatched = 0
        self._pending_kick = False
        # Set when the last pass left workgroups unplaced: then only CUs that released
        # resources since (`_dirty`) can take one, and the next pass looks only there.
        self._blocked = False
        self._dirty: set[int] = set()

    def launch(self, k: KernelLaunch) -> None:
        self.active.append(k)
        self._blocked = False
        self.kick()

    def kick(self) -> None:
        """Try to place workgroups now (coalesced: at most one pass per tick)."""
        if not self._pending_kick:
            self._pending_kick = True
            self.gpu.engine.schedule(0, self._dispatch, priority=5)

    def _dispatch(self) -> None:
        self._pending_kick = False
        engine = self.gpu.engine
        now = engine.now
        spec = self.spec
        tracer = self.gpu.tracer
        candidates = self._dirty if self._blocked else None
        self._dirty = set()
        for k in list(self.active):
            while not k.aborted and k.next_wg < k.total_wgs:
                placed = self.policy.place(k, self.active, candidates)
                if placed is None:
                    break
                cu, simds = placed
                index = k.next_wg
                k.next_wg += 1
                if k.start_ps is None:
                    k.start_ps = now
                coords = k.wg_coords(index)
                items = k.wg_workitems(coords)
                cu.allocate(k.req, simds, now)
                self.wgs_dispatched += 1
                start = now + spec.wg_dispatch_latency_ps
                dur = wg_duration(spec, cu, simds, k.kernel.cost, items, self.gpu.channel, start)
                if tracer.enabled:
                    tracer.complete(
                        f"CU{cu.index}",
                        k.name,
                        start,
                        dur,
                        {"wg": coords, "queue": k.queue_id, "dispatch_id": k.dispatch_id},
                        cat="wg",
                    )
                engine.schedule(start - now + dur, self._wg_done, k, cu, simds, coords, priority=1)
                if k.next_wg == k.total_wgs:
                    k.on_dispatched(k)
        self._blocked = any(not k.aborted and k.next_wg < k.total_wgs for k in self.active)

    def _wg_done(
        self,
        k: KernelLaunch,
        cu: ComputeUnit,
        simds: list[int],
        coords: tuple[int, int, int],
    ) -> None:
        now = self.gpu.engine.now
        cu.release(k.req, simds, now)
        self._dirty.add(cu.index)
        if not k.aborted and self.gpu.functional:
            try:
                self._run_body(k, coords)
            except MemoryFault as fault:
                self._abort(k, fault)
        k.done_wgs += 1
        if k.done_wgs == k.total_wgs or (k.aborted and k.done_wgs == k.next_wg):
            if k in self.active:
                self.active.remove(k)
            if not k.aborted:
                k.end_ps = now
                k.on_complete(k)
        self.kick()

    def _run_body(self, k: KernelLaunch, coords: tuple[int, int, int]) -> None:
        mem = self.gpu.memory
        pasid, node = k.pasid, self.gpu.node

        def view(va: int, n: int):
            return mem.gpu_view(pasid, node, va, n)

        ctx = WorkgroupContext(k.kernarg, coords, k.workgroup, k.grid, view)
        k.kernel.body(ctx)

    def _abort(self, k: KernelLaunch, fault: MemoryFault) -> None:
        """A wave faulted: the kernel stops issuing workgroups and its queue is halted."""
        k.aborted = True
        if k.next_wg < k.total_wgs:
            k.next_wg = k.total_wgs  # nothing more is issued
        k.on_fault(k, fault)

    def occupancy(self) -> list[dict]:
        return [cu.state() for cu in self.cus]
