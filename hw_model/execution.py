"""The execution interface between the dispatcher and kernel code of any kind.

On hardware the SPI launches waves and the SQ runs whatever machine code the kernel
descriptor points at; the dispatcher neither knows nor cares what the code is. Here the
functional effect of a kernel (its loads, stores and atomics on the process's memory) is
computed by a `KernelCode` — a built-in numpy body (`BuiltinCode`) or the gfx9 ISA
interpreter — and the dispatcher times the workgroups from the cost the code reports.

The dispatcher runs the code over a batch of workgroups at once, in linear workgroup order,
just before it places the first of them: as many as the GPU holds at once for that kernel,
so memory is written up to one GPU-full of workgroups ahead of their start (docs/timing.md,
"When memory is written"). Running many workgroups per call is what makes the functional
model fast. Per-workgroup fault semantics are kept by the code reporting which workgroup
faulted first: the dispatcher places the workgroups before it, then that one, which stops at
its first global access; none after it is placed. Code that never needs running to be timed
(built-in bodies: their cost is declared) runs only on a functional GPU; code whose cost is
only known by running it (`always_execute`) runs on a timing-only GPU too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Protocol

from hw_model.kernels.base import GridContext
from hw_model.memory import MemoryFault

if TYPE_CHECKING:
    from hw_model.dispatcher import KernelLaunch
    from hw_model.kernels.base import CostProfile, KernelSpec
    from hw_model.memory import Memory


@dataclass
class Execution:
    """What running a kernel's code over workgroups [first, first + count) gave.

    `costs`: the per-wave cost of every workgroup — one `CostProfile` when all cost the
    same, else one per workgroup of the range, in linear workgroup order (a range cut short
    by a fault or an illegal instruction may end at that workgroup).
    `fault`/`fault_wg`: the first workgroup (linear index) whose access faulted; workgroups
    after it in the range may or may not have run (the dispatcher places none of them).
    `illegal`: the message when the code hit an instruction it cannot execute (the queue
    stops with HSA_STATUS_ERROR_ILLEGAL_INSTRUCTION); `illegal_wg` the workgroup.
    `stats`: figures for traces and reports (instructions executed by class, ...).
    """

    costs: CostProfile | Sequence[CostProfile]
    fault: MemoryFault | None = None
    fault_wg: int | None = None
    illegal: str | None = None
    illegal_wg: int | None = None
    stats: dict = field(default_factory=dict)

    def cost_of(self, wg: int, first: int = 0) -> CostProfile:
        c = self.costs
        return c if not isinstance(c, Sequence) else c[wg - first]


class KernelCode(Protocol):
    """Kernel code the dispatcher can run: built-in bodies and compiled machine code."""

    # True when the code must run even on a timing-only GPU: its cost is only known by
    # running it (compiled kernels). False: it runs only when the GPU is functional.
    always_execute: bool

    def execute(
        self, launch: KernelLaunch, memory: Memory, node: int, first: int, count: int
    ) -> Execution:
        """Run workgroups [first, first+count) of `launch` against `memory` as GPU `node`
        sees it (through its L2: `Memory.shader_view`), in linear workgroup order."""
        ...


# The last "ran without fault" result of built-in code, handed out again while the cost is the
# same (a loop of one kernel): the dispatcher only reads an Execution, and knows this one for
# what it is (no fault, no stats, the launch's declared cost, whose timing it already holds).
ran_clean: list[Execution | None] = [None]


class _NoCode:
    """The code of a kernel without a body (`KernelSpec.body` None): its waves only end, so
    there is nothing to run; the dispatcher times its workgroups from the declared cost, as
    on a timing-only GPU."""

    always_execute = False

    def execute(
        self, launch: KernelLaunch, memory: Memory, node: int, first: int, count: int
    ) -> Execution:
        return Execution(launch.cost)  # (not asked by the dispatcher)


NO_CODE = _NoCode()


class BuiltinCode:
    """A built-in kernel's numpy body as kernel code: one body call over the whole batch.

    The body takes every view before it stores (`GridContext`), so a batch that faults has
    written nothing; it is then rerun one workgroup at a time, in linear order, up to the
    first that faults: the workgroups before it have run, as they would have on the GPU.
    """

    always_execute = False

    def __init__(self, kernel: KernelSpec) -> None:
        self.kernel = kernel

    def execute(
        self, launch: KernelLaunch, memory: Memory, node: int, first: int, count: int
    ) -> Execution:
        # view(va, n): through the L2 (coherence model); a C-level call, no Python frame
        view = partial(memory.shader_view, launch.pasid, node)
        body = self.kernel.body
        try:
            body(GridContext(launch.kernarg, launch.workgroup, launch.grid, first, count, view))
        except MemoryFault as f:
            if count == 1:
                return Execution(launch.cost, fault=f, fault_wg=first)
        else:
            cost = launch.cost
            ok = ran_clean[0]
            if ok is None or ok.costs is not cost:
                ok = ran_clean[0] = Execution(cost)
            return ok
        cost = launch.cost
        ka, wg, grid = launch.kernarg, launch.workgroup, launch.grid
        for w in range(first, first + count):
            try:
                body(GridContext(ka, wg, grid, w, 1, view))
            except MemoryFault as f:
                return Execution(cost, fault=f, fault_wg=w)
        # Only the span of the whole batch faulted (a gap no workgroup touches): every
        # workgroup ran alone without fault.
        return Execution(cost)
