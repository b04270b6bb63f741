"""HW queue scheduler (HWS): the runlist of every user queue versus the few HQD slots.

Models the CP's hardware scheduler as gem5's `src/dev/hsa/hw_scheduler.cc` does, inside the
frame amdkfd gives it (`kfd_device_queue_manager.c`, `kfd_packet_manager.c`):

- The runlist holds every *active* queue of every process on the device (amdkfd's
  `QUEUE_IS_ACTIVE`: a ring and `queue_percentage` > 0). It is oversubscribed when it has more
  compute queues than HQD slots, or more processes than the VMIDs the KFD owns
  (`pm_calc_rlib_size`).
- While a slot is free, a queue is mapped into it at once (runlist submission; gem5's
  `mapQIfSlotAvlbl`). When oversubscribed, the scheduler wakes on a quantum grid (gem5:
  100 us) and a pluggable policy swaps queues: which unmapped queue gets a slot, and whose.
- Only an *idle* queue may leave its slot (gem5 `isRLQIdle`: no packet dispatched and not yet
  retired, `inFlightPkts == dispIdx - rdIdx == 0`). A queue blocked on a barrier-AND/OR counts
  as idle: gem5's `processPkt` returns `BLOCKED_BPKT` without advancing `dispIdx`, so a
  blocked barrier is not in flight, and `removeQCntxt` drops its pending dependency reads. A
  packet still in its processing delay is not in flight either; unmapping abandons it and it
  is fetched again later. Work handed to the dispatcher is never lost, because a queue
  holding such work is never unmapped.
- A doorbell rung on an unmapped queue is remembered in its packet processor and served once
  the queue is mapped; the ring state (read index, in-flight list) stays with the queue.

Differences from gem5, on purpose: gem5 wakes every quantum while oversubscribed and maps the
next unmapped queue even if it is empty; here the timer is armed only when the policy would
swap something now (a dry run), so an engine with nothing left to do goes quiet. When the
policy keeps swapping queues none of which can run (round-robin rotating queues blocked on
barriers nothing will satisfy), the quantum timer and the HQD reloads are *housekeeping*
events: a host wait without a timeout sees that nothing else is pending and that `stalled()`
holds, and reports a deadlock instead of watching quanta forever. `round_robin` does not
swap in queues with nothing to do; `gem5_round_robin` does, as gem5. Queue priority here
steers mapping (as in Puthoor et al., GPGPU-11 2018); on real gfx9 it programs the HQD's
pipe/queue priority registers, i.e. arbitration among queues that are already mapped.
See docs/scheduling.md.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from hw_model.command_processor import PacketProcessor
    from hw_model.gpu import Gpu

# Accounting states (PacketProcessor.state, with unmapped split by readiness).
RUNNING_STATES = frozenset({"mapped-running"})
MAPPED_STATES = frozenset({"mapped-idle", "mapped-running", "blocked-on-barrier"})
# A queue's position in the runlist (the key its round-robin order sorts by)
_SERIAL = attrgetter("sched_serial")


@dataclass(frozen=True)
class Swap:
    """Put `queue` (unmapped) into HQD `slot`, unmapping whatever queue holds it."""

    slot: int
    queue: PacketProcessor


class SchedulerPolicy:
    """How the HW scheduler swaps queues when the runlist is oversubscribed.

    Subclass it, give it a `name` and register it with `register_policy` (or pass an instance
    to `HwScheduler.set_policy`). Two methods decide everything; both must only *look*: the
    scheduler also calls them as a dry run, to know whether a quantum timer is worth arming.

    - `successors(sched)` -> unmapped queues that deserve a slot, best first. The default is
      `sched.waiting()`: unmapped queues with unretired packets, in round-robin order.
    - `victim(sched, queue, slots)` -> the slot `queue` should take, from `slots` (free slots
      first, then slots whose queue is idle, in round-robin order; already filtered for the
      VMID limit), or None to leave `queue` unmapped for now.

    `pick(sched)` combines them, at most `swaps_per_quantum` swaps per quantum (gem5 switches
    one queue per wakeup). Useful facts about a queue `q` (a PacketProcessor): `q.has_work`,
    `q.runnable` (its next packet could run now), `q.idle`, `q.priority` (KFD 0..15),
    `q.state`, `q.pasid`, `q.queue_id`; about the scheduler: `sched.slots`, `sched.runlist`.
    """

    name: ClassVar[str] = "base"

    def __init__(self, swaps_per_quantum: int = 1) -> None:
        if swaps_per_quantum < 1:
            raise ValueError(f"swaps_per_quantum must be at least 1, got {swaps_per_quantum}")
        self.swaps_per_quantum = swaps_per_quantum

    def successors(self, sched: HwScheduler) -> list[PacketProcessor]:
        return sched.waiting()

    def victim(self, sched: HwScheduler, queue: PacketProcessor, slots: list[int]) -> int | None:
        return slots[0] if slots else None

    def pick(self, sched: HwScheduler) -> list[Swap]:
        successors = self.successors(sched)
        if not successors:
            return []  # (both only look: no need to find the slots)
        every = sched.vmid_spare()  # the VMID check then passes for every queue and slot
        if every and type(self).victim is SchedulerPolicy.victim:
            # Every swappable slot is offered, in order, and this `victim` takes the first one
            # not taken yet: the n-th successor gets the n-th slot (the loop below, shorter).
            n = min(self.swaps_per_quantum, len(successors))
            return [Swap(s, q) for s, q in zip(sched.swappable_slots(n), successors, strict=False)]
        out: list[Swap] = []
        taken: set[int] = set()
        candidates = sched.swappable_slots()
        for q in successors:
            if len(out) >= self.swaps_per_quantum:
                break
            if every and not taken:
                slots = candidates[:]  # (what the line below gives, without testing each slot)
            else:
                slots = [s for s in candidates if s not in taken and (every or sched.can_map(q, s))]
            if not slots:
                continue
            s = self.victim(sched, q, slots)
            if s is not None:
                out.append(Swap(s, q))
                taken.add(s)
        return out


class RoundRobinPolicy(SchedulerPolicy):
    """gem5's baseline: each quantum, map the next unmapped queue (runlist order) into the next
    slot whose queue is idle. No idle slot, no swap."""

    name = "round_robin"


class Gem5RoundRobinPolicy(RoundRobinPolicy):
    """gem5's baseline to the letter: the next unmapped queue is swapped in even when it has
    nothing to do (`findNextActiveALQ` does not look at the ring). While the runlist is
    oversubscribed the timer therefore never goes quiet; a host wait without a timeout still
    reports a deadlock once only these swaps are left (`HwScheduler.stalled`). For
    comparisons with gem5 only."""

    name = "gem5_round_robin"

    def successors(self, sched):
        return sched.unmapped()


class PriorityPolicy(SchedulerPolicy):
    """Higher `queue_priority` first, round-robin within a level. A queue takes a free slot, a
    slot whose queue has no work, or else the idle slot of the lowest priority not above its
    own; it never pushes out a higher-priority queue that still has work (even one blocked on
    a barrier: that is how priority inversion deadlocks arise)."""

    name = "priority"

    def successors(self, sched):
        return sorted(sched.waiting(), key=lambda q: -q.priority)  # stable: RR within a level

    def victim(self, sched, queue, slots):
        for s in slots:
            cur = sched.slots[s]
            if cur is None or not cur.has_work:
                return s
        eligible = [s for s in slots if sched.slots[s].priority <= queue.priority]
        return min(eligible, key=lambda s: sched.slots[s].priority, default=None)


class ReadyFirstPolicy(SchedulerPolicy):
    """Map only queues whose next packet can run now; a queue that is empty, or blocked on a
    barrier whose dependencies are unmet, yields its slot. A runnable queue is never pushed
    out. Knowing that an *unmapped* queue is ready needs a look at its ring and dependency
    signals: an oracle the real HWS does not have (it is what the paper's proposals assume)."""

    name = "ready_first"

    def successors(self, sched):
        return [q for q in sched.waiting() if q.runnable]

    def victim(self, sched, queue, slots):
        for want in ("free", "empty", "blocked"):
            for s in slots:
                cur = sched.slots[s]
                if want == "free" and cur is None:
                    return s
                if cur is None:
                    continue
                if want == "empty" and not cur.has_work:
                    return s
                if want == "blocked" and not cur.runnable:
                    return s
        return None


SCHEDULER_POLICIES: dict[str, type[SchedulerPolicy]] = {}
# `successors` of the built-in policies that only ever pick from `waiting()`: with no
# unmapped queue holding work they swap nothing.
_WAITING_ONLY = (
    SchedulerPolicy.successors,
    PriorityPolicy.successors,
    ReadyFirstPolicy.successors,
)


def register_policy(cls: type[SchedulerPolicy]) -> type[SchedulerPolicy]:
    """Make a policy class choosable by name (`SystemSpec.scheduler_policy`, `set_policy`)."""
    if not (isinstance(cls, type) and issubclass(cls, SchedulerPolicy)):
        raise TypeError(f"{cls!r} is not a SchedulerPolicy subclass")
    if not cls.name or cls.name == "base":
        raise ValueError(f"{cls.__name__} needs a class attribute `name`")
    SCHEDULER_POLICIES[cls.name] = cls
    return cls


for _cls in (RoundRobinPolicy, Gem5RoundRobinPolicy, PriorityPolicy, ReadyFirstPolicy):
    register_policy(_cls)


class HwScheduler:
    """The HWS of one GPU: HQD slots, the runlist, the quantum timer and the statistics."""

    def __init__(self, gpu: Gpu, policy: str | SchedulerPolicy = "round_robin") -> None:
        self.gpu = gpu
        self.engine = gpu.engine
        spec = gpu.spec
        self.quantum_ps = spec.quantum_ps
        self.switch_ps = spec.hqd_switch_latency_ps
        self.vmids = spec.vmids_for_kfd
        self.slots: list[PacketProcessor | None] = [None] * spec.hqd_slots
        self._loading: dict[int, PacketProcessor] = {}  # slot -> queue whose MQD is loading
        # pasid -> HQDs holding (or loading) a queue of that process: the VMID check of
        # `can_map` without a scan of every slot for every candidate.
        self._hqd_pasids: dict[int, int] = {}
        self._n_mapped = 0  # slots holding a queue
        self._over: bool | None = None  # `oversubscribed`, until the runlist changes
        # Unmapped queues that may have work (kept by `_acct`, which every change of a queue
        # goes through; a superset is harmless): with none, a policy that only maps waiting
        # queues has nothing to do, and the dry run of `_arm` is skipped.
        self._wanting: set[PacketProcessor] = set()
        # The queues `unmapped()` answers with, kept in runlist order where a queue's terms
        # change (`_list`): active, no HQD, not loading into one, not in error. A dispatch
        # with many more queues than HQDs asks for them several times; a scan of every queue
        # each time made its cost grow with the number of queues.
        self._unmapped: list[PacketProcessor] = []
        self._listed: set[PacketProcessor] = set()  # the same queues, for membership
        self.queues: list[PacketProcessor] = []  # every registered queue, runlist order
        self._serial = 0
        self._al_next = 0  # gem5 nextALId: runlist position to look at first
        self._rl_next = 0  # gem5 nextRLId: slot to look at first for a victim
        self._timer = None
        self._t0 = self.engine.now
        self.context_switches = 0
        self.maps = 0  # queues put into free slots (runlist submission, no unmap)
        self.quanta = 0  # quantum wakeups
        self.oversubscribed_ps = 0
        self._oversub_since: int | None = None
        # Every queue holds an HQD and the runlist is not oversubscribed: no queue waits for
        # an HQD or a VMID, so a queue's change has nothing to fill, close or arm (`_settle`
        # keeps it after each change of its terms).
        self._settled = True
        self.slot_occupied_ps = [0] * len(self.slots)
        # (a queue's running time reaches its slot's when it leaves the slot or a reader such
        # as `stats` closes the intervals: `_fold_running`)
        self.slot_running_ps = [0] * len(self.slots)
        self.set_policy(policy)

    # -- policy ----------------------------------------------------------------------------
    def set_policy(self, policy: str | SchedulerPolicy) -> None:
        """Choose the swap policy by name or as an instance (takes effect at the next quantum)."""
        if isinstance(policy, SchedulerPolicy):
            self.policy = policy
        elif isinstance(policy, str) and policy in SCHEDULER_POLICIES:
            self.policy = SCHEDULER_POLICIES[policy]()
        else:
            raise ValueError(
                f"unknown scheduler policy {policy!r}; one of {sorted(SCHEDULER_POLICIES)} "
                "or an instance of a SchedulerPolicy subclass"
            )
        self._arm()

    # -- runlist ---------------------------------------------------------------------------
    @property
    def runlist(self) -> list[PacketProcessor]:
        """The queues the KFD hands the HWS: active queues of every process."""
        return [q for q in self.queues if q.active]

    @property
    def processes(self) -> list[int]:
        return sorted({q.pasid for q in self.queues if q.active})

    @property
    def oversubscribed(self) -> bool:
        if self._over is None:
            rl = self.runlist
            self._over = len(rl) > len(self.slots) or len({q.pasid for q in rl}) > self.vmids
        return self._over

    def _hold(self, pp: PacketProcessor, n: int) -> None:
        """`pp` took (n=1) or left (n=-1) an HQD, mapped or loading."""
        c = self._hqd_pasids.get(pp.pasid, 0) + n
        if c:
            self._hqd_pasids[pp.pasid] = c
        else:
            del self._hqd_pasids[pp.pasid]

    def add_queue(self, pp: PacketProcessor) -> None:
        pp.sched_serial = self._serial
        self._serial += 1
        pp.active = pp.mqd.percentage > 0 and pp.mqd.ring_size > 0
        self.queues.append(pp)
        self._settle()
        self._over = None
        self._acct(pp)
        self._changed()

    def remove_queue(self, pp: PacketProcessor) -> None:
        if pp.slot is not None:
            self._unmap(pp.slot)
        for s, q in list(self._loading.items()):
            if q is pp:
                del self._loading[s]
                self._hold(pp, -1)
        self._acct(pp)
        if pp in self.queues:
            self.queues.remove(pp)
            self._settle()
        self._wanting.discard(pp)
        self._list(pp, False)
        self._over = None
        pp.stop()
        self._changed()

    def set_active(self, pp: PacketProcessor, active: bool) -> None:
        """AMDKFD_IOC_UPDATE_QUEUE: a queue with queue_percentage 0 (or no ring) leaves the
        runlist; it keeps its ring state and doorbells, and comes back when made active."""
        if pp.active == active:
            return
        pp.active = active
        self._over = None
        if not active:
            if pp.slot is not None:
                self._unmap(pp.slot)
            for s, q in list(self._loading.items()):
                if q is pp:
                    del self._loading[s]
                    self._hold(pp, -1)
        self._acct(pp)
        self._changed()

    def _list(self, pp: PacketProcessor, on: bool) -> None:
        """Put `pp` in `_unmapped` (on) or take it out, keeping the runlist order."""
        listed = self._listed
        if on:
            if pp not in listed:
                listed.add(pp)
                insort(self._unmapped, pp, key=_SERIAL)
        elif pp in listed:
            listed.discard(pp)
            lst = self._unmapped
            del lst[bisect_left(lst, pp.sched_serial, key=_SERIAL)]

    def _rotated(self, out: list[PacketProcessor]) -> list[PacketProcessor]:
        """`out` (in runlist order) from the queue after the last one mapped, round the end."""
        i = bisect_left(out, self._al_next, key=_SERIAL)
        return out[i:] + out[:i] if i else out[:]

    def unmapped(self) -> list[PacketProcessor]:
        """Unmapped active queues (not in error), round-robin order: gem5's findNextActiveALQ
        scans the runlist from the queue after the last one it mapped."""
        return self._rotated(self._unmapped)

    def waiting(self) -> list[PacketProcessor]:
        """Unmapped active queues with unretired packets, in round-robin order."""
        w = self._wanting  # (a superset of them: few, where `unmapped()` may be many)
        if not w:
            return []
        listed = self._listed
        # has_work, inlined
        out = [q for q in w if q in listed and (q.doorbell_value + 1 > q.retired or q.inflight)]
        if len(out) > 1:
            out.sort(key=_SERIAL)
        return self._rotated(out)

    def swappable_slots(self, limit: int | None = None) -> list[int]:
        """Free slots, then slots whose queue is idle, each in round-robin order from the next
        slot (gem5's findEmptyHWQ, then findNextIdleRLQ); only the first `limit` if given."""
        slots = self.slots
        loading = self._loading
        r = self._rl_next
        order = (*range(r, len(slots)), *range(r))
        out: list[int] = []
        if self._n_mapped + len(loading) < len(slots):  # some HQD holds no queue, loads none
            out = [s for s in order if slots[s] is None and s not in loading]
        if limit is None or len(out) < limit:
            for s in order:
                q = slots[s]
                if q is not None and q.idle:  # (a loading slot holds no queue)
                    out.append(s)
                    if len(out) == limit:
                        break
        return out[:limit]

    def vmid_spare(self) -> bool:
        """Fewer processes hold (or load into) HQDs than the KFD has VMIDs: any queue may take
        any slot, as far as the VMID limit goes (`can_map` is true for every queue and slot)."""
        return len(self._hqd_pasids) < self.vmids

    def can_map(self, q: PacketProcessor, slot: int) -> bool:
        """The VMID limit: queues of at most `vmids` processes can be mapped at once."""
        held = self._hqd_pasids
        gone: dict[int, int] = {}  # what `slot` itself holds does not count
        for p in (self.slots[slot], self._loading.get(slot)):
            if p is not None:
                gone[p.pasid] = gone.get(p.pasid, 0) + 1
        if held.get(q.pasid, 0) > gone.get(q.pasid, 0):
            return True
        freed = sum(1 for pasid, n in gone.items() if held.get(pasid, 0) <= n)
        return len(held) - freed < self.vmids

    def mapped(self) -> list[PacketProcessor]:
        return [s for s in self.slots if s is not None]

    # -- notifications from packet processors ----------------------------------------------
    def queue_changed(self, pp: PacketProcessor) -> None:
        """Something about `pp` changed (doorbell, packet retired, blocked, unblocked, error)."""
        slot = pp.slot
        if slot is not None and slot == pp.acct_slot and pp.error is None:
            # `_acct` inline for a queue mapped in the slot its intervals are recorded for
            # (twice a packet: running <-> idle): only the state can have moved, and the
            # slot's occupancy goes on. `PacketProcessor.state`'s tests, inline.
            if pp.blocked_barrier is not None:
                state = "blocked-on-barrier"
            elif (
                (pp.doorbell_value >= pp.read_index and not pp.stalled_invalid)
                or pp.inflight
                or pp._processing
            ):
                state = "mapped-running"
            else:
                state = "mapped-idle"
            # (not in `_wanting`: `_acct` took it out when it recorded this slot)
            st = pp.acct_state
            if state != st:
                now = self.engine.now
                dt = now - pp.acct_since
                if dt:
                    pp.time_in_state[st] += dt
                pp.acct_state = state
                pp.acct_since = now
        else:
            self._acct(pp)
        if self._settled:  # nothing for the HWS to do (twice per packet)
            return
        self._changed()

    queue_became_runnable = queue_changed
    queue_blocked = queue_changed
    queue_progress = queue_changed

    # -- mapping ---------------------------------------------------------------------------
    def _changed(self) -> None:
        self._fill_free_slots()
        self._update_oversub()
        self._arm()

    def _fill_free_slots(self) -> None:
        """Free HQDs take unmapped queues at once: policy's successors first, then any other
        active queue, as a runlist that fits the HQDs maps everything."""
        if self._n_mapped + len(self._loading) >= len(self.queues):
            return  # every queue holds or is loading into an HQD
        if None not in self.slots:
            return  # every HQD is taken (oversubscribed): twice a packet, a scan in C
        if self._n_mapped + len(self._loading) >= len(self.slots):
            return  # every HQD without a queue is loading one
        free = [s for s in range(len(self.slots)) if self.slots[s] is None]
        free = [s for s in free if s not in self._loading]
        rest = self.unmapped()
        if not rest:
            return
        first = self.policy.successors(self)
        seen = set(map(id, first))
        for q in first + [q for q in rest if id(q) not in seen]:
            if not free:
                break
            if q.slot is not None:
                continue
            # `can_map` for a free slot: nothing there to give a VMID back, so it is the same
            # for every free slot
            held = self._hqd_pasids
            if q.pasid not in held and len(held) >= self.vmids:
                continue
            s = free.pop(0)
            self.maps += 1
            self._map(s, q)

    def _map(self, slot: int, pp: PacketProcessor) -> None:
        self.slots[slot] = pp
        self._n_mapped += 1
        self._settle()
        self._hold(pp, 1)
        pp.slot = slot
        self._al_next = pp.sched_serial + 1  # gem5 updateRRVars
        self._rl_next = (slot + 1) % len(self.slots)
        tr = self.gpu.tracer
        if tr.enabled:
            tr.instant(
                "HWS",
                f"map queue {pp.queue_id} -> HQD {slot}",
                self.engine.now,
                {"pasid": pp.pasid, "queue": pp.queue_id, "hqd": slot},
                cat="hws",
            )
        self._acct(pp)
        pp.on_mapped()

    def _unmap(self, slot: int) -> None:
        pp = self.slots[slot]
        if pp is None:
            return
        was = pp.state
        self.slots[slot] = None
        self._n_mapped -= 1
        self._settle()
        self._hold(pp, -1)
        pp.slot = None
        tr = self.gpu.tracer
        if tr.enabled:
            tr.instant(
                "HWS",
                f"unmap queue {pp.queue_id} from HQD {slot}",
                self.engine.now,
                {"pasid": pp.pasid, "queue": pp.queue_id, "hqd": slot, "state": was},
                cat="hws",
            )
        self._acct(pp)
        pp.on_unmapped()

    def _swap(self, sw: Swap) -> None:
        slot, succ = sw.slot, sw.queue
        victim = self.slots[slot]
        if victim is not None:
            self._unmap(slot)
            victim.swaps_out += 1
        self.context_switches += 1
        succ.swaps_in += 1
        if self.switch_ps:
            # The slot is busy while the HWS saves one MQD and loads the other.
            self._loading[slot] = succ
            self._hold(succ, 1)
            self._list(succ, False)
            self.engine.schedule(
                self.switch_ps, self._finish_map, slot, succ, priority=6, housekeeping=True
            )
        else:
            self._map(slot, succ)

    def _finish_map(self, slot: int, pp: PacketProcessor) -> None:
        if self._loading.get(slot) is not pp:
            return  # destroyed or deactivated while loading
        del self._loading[slot]
        self._hold(pp, -1)
        self._map(slot, pp)
        self._changed()

    def _valid(self, sw: object, used: set[int]) -> bool:
        if not isinstance(sw, Swap) or sw.slot in used:
            return False
        if not 0 <= sw.slot < len(self.slots) or sw.slot in self._loading:
            return False
        if sw.queue not in self._listed:
            return False  # not in the runlist, or mapped, or loading, or in error
        q = sw.queue
        cur = self.slots[sw.slot]
        return (cur is None or cur.idle) and self.can_map(q, sw.slot)

    # -- the quantum -----------------------------------------------------------------------
    def _arm(self) -> None:
        """Arm the quantum timer if the policy would swap something now. Otherwise stay
        quiet: whatever could change that (a doorbell, a retired packet, a satisfied barrier)
        calls back here."""
        if self._timer is not None or self._n_mapped == len(self.queues):
            return
        if not self._wanting and type(self.policy).successors in _WAITING_ONLY:
            return
        if not self.policy.pick(self):
            return
        q = self.quantum_ps
        # Quanta fall on a fixed grid, as gem5's periodic wakeup does.
        self._timer = self.engine.schedule_at(
            (self.engine.now // q + 1) * q, self._quantum, priority=6, housekeeping=True
        )

    def _quantum(self) -> None:
        self._timer = None
        self.quanta += 1
        used: set[int] = set()
        for sw in self.policy.pick(self):
            if self._valid(sw, used):
                used.add(sw.slot)
                self._swap(sw)
        self._changed()

    def stalled(self) -> bool:
        """No queue of the runlist could start its next packet (`runnable`, which looks at the
        rings and dependency signals of unmapped queues too) and none has work in flight:
        mapping any of them would change nothing. Housekeeping events alone cannot change
        that; a doorbell, a signal store or a header write can."""
        return all(q.idle and not q.runnable for q in self.runlist)

    # -- statistics ------------------------------------------------------------------------
    def _acct(self, pp: PacketProcessor) -> None:
        """Close the time interval `pp` spent in its last recorded state; record the new one.
        The same state in the same slot keeps the interval open (the totals are the same:
        `_close_interval` closes it for every reader of them)."""
        state = pp.state
        slot = pp.slot
        if slot is None:
            if state == "unmapped" and pp.active and pp.runnable:
                state = "unmapped-runnable"
            if pp.active and pp.error is None:
                if pp.doorbell_value + 1 > pp.retired or pp.inflight:
                    self._wanting.add(pp)
                else:
                    self._wanting.discard(pp)
                if (
                    pp not in self._listed
                    and not pp.destroyed  # (removed from the runlist)
                    and pp not in self._loading.values()
                ):
                    self._list(pp, True)
            else:
                self._wanting.discard(pp)
                if pp in self._listed:
                    self._list(pp, False)
        else:
            if self._wanting:
                self._wanting.discard(pp)
            if pp in self._listed:
                self._list(pp, False)
        st = pp.acct_state
        old = pp.acct_slot
        if state == st and slot == old:
            return
        now = self.engine.now
        dt = now - pp.acct_since
        if dt:
            t = pp.time_in_state
            t[st] = t.get(st, 0) + dt
        pp.acct_state = state
        pp.acct_since = now
        if slot != old:
            # A slot's occupancy is one interval per stay of the queue in it, not one per
            # state: a queue turning idle and running again in its slot adds nothing here.
            if old is not None:
                self._fold_running(pp)
                self.slot_occupied_ps[old] += now - pp.occ_since
            pp.occ_since = now
            pp.acct_slot = slot

    def _close_interval(self, pp: PacketProcessor) -> None:
        """End the intervals `_acct` left open (its state and slot stay recorded): for readers."""
        now = self.engine.now
        dt = now - pp.acct_since
        old = pp.acct_slot
        if dt:
            st = pp.acct_state
            pp.time_in_state[st] = pp.time_in_state.get(st, 0) + dt
        pp.acct_since = now
        if old is not None:
            self._fold_running(pp)
            self.slot_occupied_ps[old] += now - pp.occ_since
        pp.occ_since = now

    def _fold_running(self, pp: PacketProcessor) -> None:
        """Add the running time `pp` gained in its recorded slot since the last fold to that
        slot's. Running time is counted in the queue's intervals alone (twice a packet) and
        reaches its slot here, when the queue leaves the slot or a reader closes the
        intervals: a queue is running only while mapped, in the slot its intervals name."""
        run = pp.time_in_state.get("mapped-running", 0)
        if run != pp.run_folded:
            self.slot_running_ps[pp.acct_slot] += run - pp.run_folded
            pp.run_folded = run

    def _update_oversub(self) -> None:
        now = self.engine.now
        over = self.oversubscribed
        if over and self._oversub_since is None:
            self._oversub_since = now
        elif not over and self._oversub_since is not None:
            self.oversubscribed_ps += now - self._oversub_since
            self._oversub_since = None
        self._settle()

    def _settle(self) -> None:
        self._settled = self._n_mapped == len(self.queues) and self._oversub_since is None

    def queue_stats(self, pp: PacketProcessor) -> dict:
        """Per-queue figures up to now (ps)."""
        self._acct(pp)
        self._close_interval(pp)
        t = pp.time_in_state
        return {
            "mapped_ps": sum(v for k, v in t.items() if k in MAPPED_STATES),
            "running_ps": t.get("mapped-running", 0),
            "blocked_mapped_ps": t.get("blocked-on-barrier", 0),
            "runnable_unmapped_ps": t.get("unmapped-runnable", 0),
            "swaps_in": pp.swaps_in,
            "swaps_out": pp.swaps_out,
            "packets": pp.packets_processed,
        }

    def stats(self) -> dict:
        """Per-slot utilisation and scheduler-wide counters up to now."""
        now = self.engine.now
        for q in self.queues:
            self._acct(q)
            self._close_interval(q)
        elapsed = max(now - self._t0, 1)
        over = self.oversubscribed_ps
        if self._oversub_since is not None:
            over += now - self._oversub_since
        return {
            "context_switches": self.context_switches,
            "maps": self.maps,
            "quanta": self.quanta,
            "oversubscribed_ps": over,
            "elapsed_ps": now - self._t0,
            "hqd_stats": [
                {
                    "hqd": i,
                    "occupied_ps": self.slot_occupied_ps[i],
                    "running_ps": self.slot_running_ps[i],
                    "utilization": self.slot_running_ps[i] / elapsed,
                }
                for i in range(len(self.slots))
            ],
        }

    # -- inspection ------------------------------------------------------------------------
    def mapped_queues(self) -> list[dict]:
        """Which queue each HQD holds now (None: free)."""
        out: list[dict] = []
        for i, q in enumerate(self.slots):
            if q is None:
                loading = self._loading.get(i)
                out.append(
                    {"hqd": i, "pasid": None, "queue_id": None, "state": "free"}
                    if loading is None
                    else {
                        "hqd": i,
                        "pasid": loading.pasid,
                        "queue_id": loading.queue_id,
                        "state": "loading",
                    }
                )
            else:
                out.append({"hqd": i, "pasid": q.pasid, "queue_id": q.queue_id, "state": q.state})
        return out

    def describe(self) -> dict:
        st = self.stats()
        runlist = []
        for q in self.queues:
            d = q.describe()
            d["active"] = q.active
            d["runnable"] = q.runnable
            d.update(self.queue_stats(q))
            runlist.append(d)
        return {
            "policy": self.policy.name,
            "hqd_slots": len(self.slots),
            "vmids": self.vmids,
            "quantum_ps": self.quantum_ps,
            "oversubscribed": self.oversubscribed,
            "processes": self.processes,
            "slots": self.mapped_queues(),
            "runlist": runlist,
            "timer_armed": self._timer is not None,
            **st,
        }

    def diagnose(self) -> list[str]:
        """Why queues with work are not progressing, one line each (for deadlock reports)."""
        lines: list[str] = []
        if self._timer is not None and self.stalled():
            lines.append(
                f"the HWS keeps swapping queues every quantum ({self.context_switches} swaps "
                f"so far, policy {self.policy.name}), but none of them can run: the swaps "
                "change only which queue holds which HQD"
            )
        for q in self.queues:
            if not q.has_work or q.error is not None:
                continue
            who = f"pasid {q.pasid:#x} queue {q.queue_id}"
            if not q.active:
                lines.append(f"{who}: inactive (queue_percentage 0), not in the runlist")
            elif q.slot is None and q.runnable:
                lines.append(
                    f"{who}: unmapped with work (runnable); policy {self.policy.name} will not "
                    "swap it in: no HQD holds a queue it may replace"
                )
            elif q.slot is None:
                lines.append(
                    f"{who}: unmapped with work ({_wait_reason(q)}); mapping it would not help"
                )
            elif q.blocked_barrier is not None:
                b = q.blocked_barrier.describe()
                sigs = ", ".join(f"{k}={v}" for k, v in b["signals"].items())
                lines.append(
                    f"{who} on HQD {q.slot}: blocked on packet {b['packet']} ({b['kind']}) "
                    f"waiting for {sigs}"
                )
            elif q.stalled_invalid:
                lines.append(
                    f"{who} on HQD {q.slot}: stalled on an INVALID header at packet {q.read_index}"
                )
        return lines


def _wait_reason(q: PacketProcessor) -> str:
    b = q.head_barrier()
    if b is not None:
        d = b.describe()
        sigs = ", ".join(f"{k}={v}" for k, v in d["signals"].items())
        return f"its next packet {d['packet']} is a {d['kind']} waiting for {sigs}"
    if q.stalled_invalid:
        return "its next packet has an INVALID header"
    return "its next packet cannot start yet"


__all__ = [
    "SCHEDULER_POLICIES",
    "HwScheduler",
    "PriorityPolicy",
    "ReadyFirstPolicy",
    "RoundRobinPolicy",
    "SchedulerPolicy",
    "Swap",
    "register_policy",
]
