"""The HW scheduler's bookkeeping is incremental: with many queues and nothing waiting for an
HQD, a dispatch asks the policy nothing; the VMID check answers as a scan of the slots would."""

from __future__ import annotations

import random

import rocr
from hw_model.config import system_spec
from hw_model.scheduler import HwScheduler, SchedulerPolicy


def _rt(**gpu) -> rocr.Runtime:
    spec = system_spec("teaching")
    spec = spec.model_copy(update={"gpu": spec.gpu.model_copy(update=gpu)})
    return rocr.init(spec=spec)


def test_no_policy_dry_run_while_no_unmapped_queue_has_work(monkeypatch):
    with _rt(hqd_slots=4) as rt:
        k = rt.load_code_object("builtin:empty").kernel("empty")
        queues = [rt.gpus[0].create_queue(64) for _ in range(12)]
        sched = rt.system.gpus[0].scheduler
        assert sched.oversubscribed  # 12 queues, 4 HQDs
        busy = next(
            q
            for q in queues
            if any(p is not None and p.queue_id == q.queue_id for p in sched.slots)
        )
        picks = []
        real = SchedulerPolicy.pick
        monkeypatch.setattr(
            SchedulerPolicy, "pick", lambda self, s: picks.append(1) or real(self, s)
        )
        for _ in range(5):
            busy.dispatch(k, grid=64, workgroup=64).wait()
        assert picks == []
        # a queue without an HQD that gets work still gets one
        idle = next(
            q for q in queues if all(p is None or p.queue_id != q.queue_id for p in sched.slots)
        )
        idle.dispatch(k, grid=64, workgroup=64).wait()
        assert picks


def _scan_can_map(sched: HwScheduler, q, slot: int) -> bool:
    """The VMID check as a scan of every slot (what `can_map` answers incrementally)."""
    pasids = {p.pasid for i, p in enumerate(sched.slots) if p is not None and i != slot}
    pasids |= {p.pasid for i, p in sched._loading.items() if i != slot}
    return q.pasid in pasids or len(pasids) < sched.vmids


def test_vmid_check_matches_a_scan_of_the_slots():
    """Queues of five processes over 3 HQDs and 2 VMIDs, dispatched in a random order: at
    every step the incremental answer equals the scan's, for every queue and slot."""
    spec = system_spec("teaching")
    gpu = spec.gpu.model_copy(update={"hqd_slots": 3, "vmids_for_kfd": 2})
    spec = spec.model_copy(update={"gpu": gpu})
    first = rocr.init(spec=spec)
    rts = [first] + [rocr.init(system=first.system) for _ in range(4)]
    try:
        work = []
        for rt in rts:
            k = rt.load_code_object("builtin:empty").kernel("empty")
            work += [(rt.gpus[0].create_queue(64), k) for _ in range(2)]
        sched = first.system.gpus[0].scheduler
        rng = random.Random(11)
        handles = []
        for _ in range(30):
            q, k = rng.choice(work)
            handles.append(q.dispatch(k, grid=64, workgroup=64))
            first.system.engine.run_until(first.system.engine.now + rng.randrange(1, 200_000_000))
            for pp in sched.queues:
                for s in range(len(sched.slots)):
                    assert sched.can_map(pp, s) == _scan_can_map(sched, pp, s)
        for h in handles:
            h.wait()
    finally:
        for rt in reversed(rts):
            rt.shutdown()
