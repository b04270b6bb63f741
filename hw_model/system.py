"""`System`: one emulated machine — engine, memory, host clock, GPUs, interrupt path, trace.

Time (DESIGN "Time: host and device"): host code runs for real and carries its own clock.
Every host action costs modeled host time; before the host acts at host time T, the engine
fires every device event up to T, so the device works while the host works. A host wait runs
the engine until its condition holds (the host wakes at that event plus its wake-up latency)
or until its deadline. A wait without a deadline whose condition is still false when nothing
is left that does work — the engine is idle, or all that remains is housekeeping (the HW
scheduler rotating queues none of which can run) — can never return (in-process), and says so
at once. A wait with a deadline returns at the deadline whatever the engine does, as
hsa_signal_wait_* and amdkfd's wait ioctl do.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

from hw_model.config import SystemSpec, system_spec
from hw_model.engine import Engine
from hw_model.gpu import Gpu, InterruptHandler
from hw_model.memory import Memory
from hw_model.sdma import Link
from hw_model.trace import Tracer


class WaitOutcome(Enum):
    SATISFIED = "satisfied"
    TIMEOUT = "timeout"
    DEADLOCK = "deadlock"  # nothing that does work is pending, condition false: never true


# First KFD gpu_id; the real driver hashes the PCI location, any stable nonzero value works.
_GPU_ID_BASE = 0xA5E0  # any stable nonzero 16-bit value (KFD_MMAP_GPU_ID has 16 bits)
# The hive id of XGMI-connected GPUs (topology "hive_id"; amdgpu_xgmi.c takes it from the
# SMU): any stable nonzero value shared by the hive.
XGMI_HIVE_ID = 0x4853_4145_0001


class System:
    def __init__(self, spec: SystemSpec | None = None, preset: str | None = None) -> None:
        if spec is None:
            spec = system_spec(preset or "gfx900")
        self.spec = spec
        self.engine = Engine()
        self.tracer = Tracer(enabled=spec.trace)
        self.host_now = 0  # host clock, ps
        capacity = {0: spec.system_memory}
        for i in range(spec.num_gpus):
            capacity[i + 1] = spec.gpu.vram_size
        self.memory = Memory(capacity)
        self.memory.on_l2_writeback = self._trace_l2_writeback
        self.gpus = [
            Gpu(self, spec.gpu, node=i + 1, gpu_id=_GPU_ID_BASE + i) for i in range(spec.num_gpus)
        ]
        # XGMI: with an XGMI-capable part every GPU of the machine is in one hive, each pair
        # joined by a link, one FIFO per direction (XGMI links are full duplex; the preset's
        # figure is per direction). Other multi-GPU machines reach peers over PCIe.
        self.xgmi_links: dict[tuple[int, int], Link] = {}
        g = spec.gpu
        if spec.num_gpus > 1 and g.xgmi_link_bandwidth_gbps > 0:
            for a in self.gpus:
                for b in self.gpus:
                    if a is not b:
                        self.xgmi_links[(a.node, b.node)] = Link(
                            f"XGMI {a.node}->{b.node}",
                            g.xgmi_link_bandwidth_gbps,
                            g.xgmi_link_latency_ns,
                        )
        self._irq_handlers: list[InterruptHandler] = []
        # The kernel driver bound to this machine (rock_emu sets it; opaque to hw_model).
        self.driver: object | None = None

    # -- clocks ----------------------------------------------------------------------------
    @property
    def now_ps(self) -> int:
        return self.host_now

    @property
    def now_ns(self) -> float:
        return self.host_now / 1000

    def host_advance(self, cost_ps: int) -> int:
        """The host spends `cost_ps`; the device runs alongside. Returns the new host time."""
        now = self.host_now = self.host_now + int(cost_ps)
        eng = self.engine
        heap = eng._heap
        # `run_until`'s first test here: most host steps find no event due before them (a
        # cancelled head due: run_until drops it, then moves the clock the same way).
        if heap and heap[0][0] <= now:
            eng.run_until(now)
        elif now > eng.now:
            eng.now = now
        return now

    def host_wait(
        self, pred: Callable[[], bool], timeout_ps: int | None, wakeup_ps: int = 0
    ) -> WaitOutcome:
        """Block the host until `pred()` or the timeout; the engine runs meanwhile.

        With a timeout the host sleeps until the deadline even if the engine is idle (TIMEOUT);
        without one, DEADLOCK as soon as nothing that does work is pending."""
        self.engine.run_until(self.host_now)
        if pred():
            return WaitOutcome.SATISFIED
        limit = None if timeout_ps is None else self.host_now + timeout_ps
        if limit is None:
            ran = self._run_while(lambda: not pred())
        else:
            ran = self.engine.run_while(lambda: not pred(), limit)
        if ran:
            self.host_now = max(self.host_now, self.engine.now + wakeup_ps)
            self.engine.run_until(self.host_now)
            return WaitOutcome.SATISFIED
        if limit is None:
            return WaitOutcome.DEADLOCK
        self.host_now = max(self.host_now, limit)
        self.engine.run_until(self.host_now)
        return WaitOutcome.SATISFIED if pred() else WaitOutcome.TIMEOUT

    def _run_while(self, cont: Callable[[], bool]) -> bool:
        """Fire events while `cont()`; True once it is false. False when the engine is idle,
        or all it has left is housekeeping and no queue could run (`stalled`)."""
        eng = self.engine
        while eng.run_while(cont, None, pause_housekeeping=True):
            if not cont():
                return True
            if self.stalled():
                return False
            eng.step()  # the housekeeping event run_while paused before
        return False

    def stalled(self) -> bool:
        """Nothing pending does work, and no queue of any runlist could start its next packet:
        the HW scheduler's swaps would change only the mapping. Until the host (or another
        process) acts, nothing will change."""
        if not self.engine.only_housekeeping():
            return False
        return all(g.scheduler.stalled() for g in self.gpus)

    def host_step(self, limit_ps: int | None = None) -> bool:
        """The host spins until memory it could be polling changes (a checked store by the
        device), or until `limit_ps` (reached even when the engine is idle). False (only
        without a limit): nothing that does work is pending, nothing will ever change."""
        eng = self.engine
        mem = self.memory
        epoch = mem.store_epoch
        if limit_ps is None:
            if not self._run_while(lambda: mem.store_epoch == epoch):
                self.host_now = max(self.host_now, eng.now)
                return False
        else:
            eng.run_while_epoch(mem, epoch, limit_ps)
        if mem.store_epoch == epoch and limit_ps is not None:
            self.host_now = max(self.host_now, limit_ps)
        else:
            self.host_now = max(self.host_now, eng.now)
        eng.run_until(self.host_now)
        return True

    def run_for(self, duration_ps: int) -> None:
        self.host_advance(duration_ps)

    def run_until_idle(self, limit_ps: int | None = None) -> None:
        """Let the device finish everything pending (host sleeps). Without a limit, stop also
        when only a rotation of queues that cannot run is left (`stalled`)."""
        if limit_ps is None:
            self._run_while(lambda: True)
        else:
            self.engine.run_while(lambda: True, self.host_now + limit_ps)
        self.host_now = max(self.host_now, self.engine.now)

    def xgmi_link(self, from_node: int, to_node: int) -> Link | None:
        """The XGMI link carrying data from GPU `from_node` to GPU `to_node`, if any."""
        return self.xgmi_links.get((from_node, to_node))

    @property
    def hive_id(self) -> int:
        """The XGMI hive id the KFD reports for every GPU of the hive (0: no hive)."""
        return XGMI_HIVE_ID if self.xgmi_links else 0

    def _trace_l2_writeback(self, node: int, nbytes: int) -> None:
        if self.tracer.enabled:
            self.tracer.instant(
                "CP",
                "L2 writeback",
                self.engine.now,
                {"node": node, "bytes": nbytes},
                cat="cache",
            )

    # -- interrupts ------------------------------------------------------------------------
    def register_interrupt_handler(self, fn: InterruptHandler) -> None:
        self._irq_handlers.append(fn)

    def deliver_interrupt(self, node: int, source: str, pasid: int, data: dict) -> None:
        for fn in self._irq_handlers:
            fn(node, source, pasid, data)

    # -- inspection ------------------------------------------------------------------------
    def gpu_by_node(self, node: int) -> Gpu:
        for g in self.gpus:
            if g.node == node:
                return g
        raise KeyError(node)

    def stats(self) -> dict:
        out: dict = {
            "sim_ticks_ps": self.engine.now,
            "host_ticks_ps": self.host_now,
            "events": self.engine.events_fired,
        }
        for g in self.gpus:
            sched = g.scheduler.describe()
            out[f"gpu{g.node}"] = {
                "kernels": g.stats_kernels,
                "workgroups": g.dispatcher.wgs_dispatched,
                "bytes_moved": g.channel.bytes_moved,
                "dram_busy_ps": int(g.channel.busy_ps),
                "context_switches": sched["context_switches"],
                "oversubscribed_ps": sched["oversubscribed_ps"],
                "cu_busy_ps": [cu.busy_ps for cu in g.cus],
                "queue_errors": len(g.queue_errors),
            }
        return out
