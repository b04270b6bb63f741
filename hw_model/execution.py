"""The execution interface between the dispatcher and kernel code of any kind.

On hardware the SPI launches waves and the SQ runs whatever machine code the kernel
descriptor points at; the dispatcher neither knows nor cares what the code is. Here the
functional effect of a kernel (its loads, stores and atomics on the process's memory) is
computed by a `KernelCode` — a built-in numpy body or the gfx9 ISA interpreter — and the
dispatcher times the workgroups from the cost the code reports. Running the code over many
workgroups at once (a whole grid, or a batch of workgroups) is what makes the functional
model fast; per-workgroup fault semantics are kept by the code reporting which workgroup
faulted first (the dispatcher then stops placing workgroups after it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from hw_model.dispatcher import KernelLaunch
    from hw_model.kernels.base import CostProfile
    from hw_model.memory import Memory, MemoryFault


@dataclass
class Execution:
    """What running a kernel's code over workgroups [first, first + count) gave.

    `costs`: the per-wave cost of every workgroup — one `CostProfile` when all cost the
    same, else one per workgroup of the range, in linear workgroup order.
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

    def execute(
        self, launch: KernelLaunch, memory: Memory, node: int, first: int, count: int
    ) -> Execution:
        """Run workgroups [first, first+count) of `launch` against `memory` as GPU `node`
        sees it (through its L2: `Memory.shader_view`), in linear workgroup order."""
        ...
