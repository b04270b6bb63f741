"""HW queue scheduler: the runlist of every user queue versus the few HQD slots.

Models the CP's hardware scheduler (HWS) as gem5's `src/dev/hsa/hw_scheduler.cc` does and as
the amdkfd runlist describes it: the KFD registers every queue of every process; the HWS maps
as many as it has hardware queue descriptors (HQDs); when there are more, it is oversubscribed
and swaps queues on a quantum. Which queue leaves a slot and which one takes it is a policy.
A doorbell rung on an unmapped queue is remembered (in its packet processor) and served once
the queue is mapped; unmapping keeps the queue's ring state, and work already handed to the
dispatcher finishes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hw_model.command_processor import PacketProcessor
    from hw_model.gpu import Gpu


class SchedulerPolicy:
    """Decides swaps at each quantum. Subclass, set `name`, add to SCHEDULER_POLICIES.

    `pick(sched)` returns a list of (slot, successor) pairs: put `successor` (an unmapped
    queue) into `slot`, unmapping whatever queue holds it. Return [] to keep the mapping.
    """

    name = "base"

    def pick(self, sched: HwScheduler) -> list[tuple[int, PacketProcessor]]:
        raise NotImplementedError

    @staticmethod
    def victim_ok(pp: PacketProcessor | None) -> bool:
        """gem5's rule: only a queue with nothing dispatched and unfinished may be unmapped."""
        return pp is None or not pp.busy


class RoundRobinPolicy(SchedulerPolicy):
    """gem5 baseline: map the next unmapped queue (runlist order) into an idle slot."""

    name = "round_robin"

    def pick(self, sched):
        out = []
        waiting = sched.unmapped_in_rr_order()
        taken: set[int] = set()
        for succ in waiting:
            if not succ.has_work:
                continue
            for slot, cur in enumerate(sched.slots):
                if slot in taken:
                    continue
                if self.victim_ok(cur) and (cur is None or cur is not succ):
                    out.append((slot, succ))
                    taken.add(slot)
                    break
        return out


SCHEDULER_POLICIES: dict[str, type[SchedulerPolicy]] = {RoundRobinPolicy.name: RoundRobinPolicy}


class HwScheduler:
    def __init__(self, gpu: Gpu, policy: str = "round_robin") -> None:
        self.gpu = gpu
        self.slots: list[PacketProcessor | None] = [None] * gpu.spec.hqd_slots
        self.runlist: list[PacketProcessor] = []
        self.set_policy(policy)
        self._timer = None
        self._rr = 0
        self.context_switches = 0
        self.oversubscribed_ps = 0
        self._oversub_since: int | None = None
        self.slot_busy_ps = [0] * len(self.slots)

    def set_policy(self, name: str) -> None:
        try:
            self.policy: SchedulerPolicy = SCHEDULER_POLICIES[name]()
        except KeyError:
            raise ValueError(
                f"unknown scheduler policy {name!r}; one of {sorted(SCHEDULER_POLICIES)}"
            ) from None

    # -- runlist ---------------------------------------------------------------------------
    @property
    def oversubscribed(self) -> bool:
        return len(self.runlist) > len(self.slots)

    def add_queue(self, pp: PacketProcessor) -> None:
        self.runlist.append(pp)
        free = next((i for i, s in enumerate(self.slots) if s is None), None)
        if free is not None:
            self._map(free, pp)
        self._update_oversub()
        self._arm()

    def remove_queue(self, pp: PacketProcessor) -> None:
        if pp.slot is not None:
            self._unmap(pp.slot)
        if pp in self.runlist:
            self.runlist.remove(pp)
        pp.stop()
        # A freed slot goes to the first unmapped queue right away, as a new runlist would.
        for succ in self.unmapped_in_rr_order():
            free = next((i for i, s in enumerate(self.slots) if s is None), None)
            if free is None:
                break
            self._map(free, succ)
        self._update_oversub()

    def unmapped_in_rr_order(self) -> list[PacketProcessor]:
        un = [q for q in self.runlist if q.slot is None]
        if not un:
            return []
        k = self._rr % len(un)
        return un[k:] + un[:k]

    def mapped(self) -> list[PacketProcessor]:
        return [s for s in self.slots if s is not None]

    # -- notifications from packet processors ----------------------------------------------
    def queue_became_runnable(self, pp: PacketProcessor) -> None:
        free = next((i for i, s in enumerate(self.slots) if s is None), None)
        if free is not None and pp.slot is None:
            self._map(free, pp)
            return
        self._arm()

    def queue_blocked(self, pp: PacketProcessor) -> None:
        self._arm()

    def queue_progress(self, pp: PacketProcessor) -> None:
        self._arm()

    # -- mapping ---------------------------------------------------------------------------
    def _map(self, slot: int, pp: PacketProcessor) -> None:
        now = self.gpu.engine.now
        self.slots[slot] = pp
        pp.slot = slot
        pp.mapped_since = now
        if self.gpu.tracer.enabled:
            self.gpu.tracer.instant(
                "HWS", f"map queue {pp.queue_id} -> HQD {slot}", now, {"pasid": pp.mqd.pasid}
            )
        pp.kick()

    def _unmap(self, slot: int) -> None:
        pp = self.slots[slot]
        if pp is None:
            return
        now = self.gpu.engine.now
        if pp.mapped_since is not None:
            pp.mapped_ps += now - pp.mapped_since
            self.slot_busy_ps[slot] += now - pp.mapped_since
            pp.mapped_since = None
        self.slots[slot] = None
        pp.slot = None
        if self.gpu.tracer.enabled:
            self.gpu.tracer.instant("HWS", f"unmap queue {pp.queue_id} from HQD {slot}", now)

    def _update_oversub(self) -> None:
        now = self.gpu.engine.now
        if self.oversubscribed and self._oversub_since is None:
            self._oversub_since = now
        elif not self.oversubscribed and self._oversub_since is not None:
            self.oversubscribed_ps += now - self._oversub_since
            self._oversub_since = None

    def _arm(self) -> None:
        """Start the quantum timer when a swap could help: an unmapped queue has work."""
        if self._timer is not None:
            return
        if not any(q.has_work and q.error is None for q in self.runlist if q.slot is None):
            return
        self._timer = self.gpu.engine.schedule(self.gpu.spec.quantum_ps, self._quantum, priority=6)

    def _quantum(self) -> None:
        self._timer = None
        swaps = self.policy.pick(self)
        switch = self.gpu.spec.hqd_switch_latency_ps
        for slot, succ in swaps:
            if succ.slot is not None:
                continue
            victim = self.slots[slot]
            if victim is not None:
                self._unmap(slot)
                victim.swaps += 1
            self.context_switches += 1
            succ.swaps += 1
            if switch:
                self.slots[slot] = succ  # reserved while the HQD is reloaded
                succ.slot = slot
                self.gpu.engine.schedule(switch, self._finish_map, slot, succ, priority=6)
            else:
                self._map(slot, succ)
            self._rr += 1
        # Re-arm only if mapped work is in flight (something will change) or swaps happened.
        if swaps or any(s is not None and s.busy for s in self.slots):
            self._arm()

    def _finish_map(self, slot: int, pp: PacketProcessor) -> None:
        self.slots[slot] = None
        pp.slot = None
        self._map(slot, pp)

    def describe(self) -> dict:
        now = self.gpu.engine.now
        return {
            "policy": self.policy.name,
            "hqd_slots": len(self.slots),
            "oversubscribed": self.oversubscribed,
            "slots": [None if s is None else s.queue_id for s in self.slots],
            "runlist": [q.describe() for q in self.runlist],
            "context_switches": self.context_switches,
            "oversubscribed_ps": self.oversubscribed_ps
            + (now - self._oversub_since if self._oversub_since is not None else 0),
        }
