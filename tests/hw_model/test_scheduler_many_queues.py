"""Many more queues than HQDs: the HW scheduler's work per dispatch does not grow with the
number of queues, and its kept lists answer as scans of the runlist and the slots would."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import rocr
from hw_model.config import system_spec
from hw_model.scheduler import SchedulerPolicy, Swap

_REPO = str(Path(__file__).resolve().parents[2]) + os.sep


def _runtimes(n_proc: int, **kw) -> list[rocr.Runtime]:
    first = rocr.init(spec=system_spec("gfx900", **kw))
    return [first] + [rocr.init(system=first.system) for _ in range(n_proc - 1)]


def _bytecodes_per_dispatch(n_queues: int, n: int = 16) -> float:
    """Round-robin empty-kernel dispatches over `n_queues` queues of two processes on gfx900
    (24 HQDs), each waited for: every one waits for a quantum swap."""
    rts = _runtimes(2)
    try:
        work = []
        for i in range(n_queues):
            rt = rts[i % 2]
            k = rt.load_code_object("builtin:empty").kernel("empty")
            work.append((rt.gpus[0].create_queue(64), k))
        for q, k in work:  # every queue has run once
            q.dispatch(k, grid=64, workgroup=64).wait()
        ops = 0

        def trace(frame, event, arg):
            nonlocal ops
            if not frame.f_code.co_filename.startswith(_REPO):
                return None
            frame.f_trace_opcodes = True
            if event == "opcode":
                ops += 1
            return trace

        sys.settrace(trace)
        try:
            for q, k in work[:n]:
                q.dispatch(k, grid=64, workgroup=64).wait()
        finally:
            sys.settrace(None)
        return ops / n
    finally:
        for rt in reversed(rts):
            rt.shutdown()


def test_a_dispatch_costs_the_same_with_48_or_192_queues():
    """Was ~20,500 bytecodes per dispatch at 48 queues and ~40,800 at 192 (scans of every
    queue, several per dispatch); now ~5,900 for both."""
    small = _bytecodes_per_dispatch(48)
    big = _bytecodes_per_dispatch(192)
    assert big <= small * 1.03, (small, big)
    assert big < 8000, big


def _scan_unmapped(sched) -> list:
    """`unmapped()` as a scan of every queue (what the kept list answers)."""
    loading = list(sched._loading.values())
    out = [
        q
        for q in sched.queues
        if q.slot is None and q.active and q.error is None and q not in loading
    ]
    k = sched._al_next
    return [q for q in out if q.sched_serial >= k] + [q for q in out if q.sched_serial < k]


def _scan_swappable(sched) -> list[int]:
    n = len(sched.slots)
    order = [(sched._rl_next + i) % n for i in range(n)]
    order = [s for s in order if s not in sched._loading]
    free = [s for s in order if sched.slots[s] is None]
    return free + [s for s in order if sched.slots[s] is not None and sched.slots[s].idle]


def _loop_pick(policy, sched) -> list[Swap]:
    """`SchedulerPolicy.pick` as one loop over successors and slots (no shortcut)."""
    out: list[Swap] = []
    taken: set[int] = set()
    candidates = _scan_swappable(sched)
    for q in policy.successors(sched):
        if len(out) >= policy.swaps_per_quantum:
            break
        slots = [s for s in candidates if s not in taken and sched.can_map(q, s)]
        if slots:
            s = policy.victim(sched, q, slots)
            if s is not None:
                out.append(Swap(s, q))
                taken.add(s)
    return out


class _LastSlot(SchedulerPolicy):
    name = "last_slot_test"

    def victim(self, sched, queue, slots):
        return slots[-1]


def test_kept_lists_answer_as_scans_of_the_runlist_would():
    """Queues of three processes over 3 HQDs and 2 VMIDs: random dispatches, barriers left
    blocked, a queue deactivated and one destroyed. At every step `unmapped()`, `waiting()`,
    `swappable_slots()` and each policy's `pick` equal what scans of every queue give."""
    spec = system_spec("teaching")
    gpu = spec.gpu.model_copy(update={"hqd_slots": 3, "vmids_for_kfd": 2})
    first = rocr.init(spec=spec.model_copy(update={"gpu": gpu}))
    rts = [first] + [rocr.init(system=first.system) for _ in range(2)]
    try:
        work = []
        for rt in rts:
            k = rt.load_code_object("builtin:empty").kernel("empty")
            work += [(rt, rt.gpus[0].create_queue(64), k) for _ in range(7)]
        sched = first.system.gpus[0].scheduler
        eng = first.system.engine
        policies = [SchedulerPolicy(), SchedulerPolicy(swaps_per_quantum=3), _LastSlot(2)]
        rng = random.Random(7)
        handles = []
        seen_waiting = seen_loading = 0
        for step in range(60):
            rt, q, k = rng.choice(work)
            if not q.destroyed:
                handles.append(q.dispatch(k, grid=64 * rng.randrange(1, 4), workgroup=64))
            if step == 20:
                rt0, q0, _ = work[3]
                rt0.thunk.update_queue(q0.queue_id, percentage=0)
            if step == 40:
                rt0, q0, _ = work[3]
                rt0.thunk.update_queue(q0.queue_id, percentage=100)
            eng.run_until(eng.now + rng.randrange(1, 150_000_000))
            assert sched.unmapped() == _scan_unmapped(sched)
            scan_waiting = [q for q in _scan_unmapped(sched) if q.has_work]
            assert sched.waiting() == scan_waiting
            seen_waiting += len(scan_waiting) > 1
            seen_loading += bool(sched._loading)
            assert sched.swappable_slots() == _scan_swappable(sched)
            for n in (1, 2, 5):
                assert sched.swappable_slots(n) == _scan_swappable(sched)[:n]
            for policy in policies:
                assert policy.pick(sched) == _loop_pick(policy, sched)
        assert seen_waiting and seen_loading  # (the lists had something to keep in order)
        for h in handles:
            h.wait()
        assert sched.unmapped() == _scan_unmapped(sched) and sched.waiting() == []
    finally:
        for rt in reversed(rts):
            rt.shutdown()
