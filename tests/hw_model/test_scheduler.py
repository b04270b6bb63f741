"""HW queue scheduler: HQD slots vs the runlist, quantum swaps, policies, statistics."""

from __future__ import annotations

import numpy as np
import pytest

import rocr
import roct
from hw_model import aql
from hw_model.config import system_spec
from hw_model.scheduler import (
    SCHEDULER_POLICIES,
    SchedulerPolicy,
    register_policy,
)

POLICIES = ("round_robin", "priority", "ready_first")


def make_rt(
    policy: str = "round_robin", preset: str = "teaching", functional=True, trace=False, **gpu
):
    spec = system_spec(preset, scheduler_policy=policy, functional=functional)
    if gpu:
        spec = spec.model_copy(update={"gpu": spec.gpu.model_copy(update=gpu)})
    return rocr.init(spec=spec, trace=trace)


def buf(rt, data):
    pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
    b = pool.allocate(max(4 * data.size, 4))
    rt.allow_access(rt.gpus, b)
    b.view(np.float32, data.size)[:] = data
    return b


def barrier_and(*signals, completion=None) -> rocr.BarrierAndPacket:
    deps = [s.handle for s in signals] + [0] * (5 - len(signals))
    return rocr.BarrierAndPacket(
        header=aql.make_header(aql.PacketType.BARRIER_AND),
        dep_signal=deps,
        completion_signal=0 if completion is None else completion.handle,
    )


def sched(rt):
    return rt.system.gpus[0].scheduler


def start_of(sig) -> float:
    return sig.dispatch_time()[0]


@pytest.mark.parametrize("policy", POLICIES)
def test_more_queues_than_slots_every_queue_completes(policy):
    n = 1024
    with make_rt(policy) as rt:
        gpu = rt.gpus[0]
        k = rt.load_code_object("builtin:square").kernel("square")
        queues = [gpu.create_queue(64) for _ in range(6)]
        assert sched(rt).oversubscribed  # 6 queues, 2 HQDs
        work = []
        for i, q in enumerate(queues):
            a = buf(rt, np.full(n, 1.0 + i / 8, np.float32))
            b, c = buf(rt, np.zeros(n, np.float32)), buf(rt, np.zeros(n, np.float32))
            q.dispatch(k, grid=n, workgroup=256, args=(b, a, n), barrier=True)
            h = q.dispatch(k, grid=n, workgroup=256, args=(c, b, n), barrier=True)
            work.append((i, c, h))
        for _, _, h in work:
            h.wait()
        for i, c, _ in work:
            assert np.allclose(c.view(np.float32, n), (1.0 + i / 8) ** 4)
        d = sched(rt).describe()
        assert d["context_switches"] > 0
        assert all(q["packets"] == 2 for q in d["runlist"])


def test_order_within_a_queue_survives_swaps():
    """Each queue: square, barrier-AND on a host gate, square, square. The gate keeps queues
    blocked (idle) so the scheduler swaps them out and in mid-stream."""
    n = 256
    with make_rt("round_robin") as rt:
        gpu = rt.gpus[0]
        k = rt.load_code_object("builtin:square").kernel("square")
        gate = rt.create_signal(1)
        runs = []
        for i in range(4):
            q = gpu.create_queue(64)
            x = 1.0 + i / 16
            a, b, c, d = (buf(rt, np.full(n, v, np.float32)) for v in (x, 0, 0, 0))
            h1 = q.dispatch(k, grid=n, workgroup=64, args=(b, a, n), barrier=True)
            q.submit(barrier_and(gate))
            h2 = q.dispatch(k, grid=n, workgroup=64, args=(c, b, n), barrier=True)
            h3 = q.dispatch(k, grid=n, workgroup=64, args=(d, c, n), barrier=True)
            runs.append((q, x, d, (h1, h2, h3)))
        for _, _, _, hs in runs:
            hs[0].wait()
        gate.store(0)
        for _, x, d, hs in runs:
            hs[2].wait()
            assert np.allclose(d.view(np.float32, n), np.float32(x) ** 8)
            ends = [h.dispatch_time()[1] for h in hs]
            assert ends == sorted(ends)
        queues = sched(rt).describe()["runlist"]
        # Some queue lost its HQD while blocked at the gate and got it back afterwards.
        assert any(q["swaps_out"] >= 1 and q["swaps_in"] >= 1 for q in queues)


def test_doorbell_on_an_unmapped_queue_is_served_once_mapped():
    with make_rt("round_robin", trace=True) as rt:
        gpu = rt.gpus[0]
        k = rt.load_code_object("builtin:empty").kernel("empty")
        queues = [gpu.create_queue(64) for _ in range(3)]
        third = queues[2]
        pp = sched(rt).queues[2]
        assert pp.slot is None and pp.state == "unmapped"
        h = third.dispatch(k, grid=64, workgroup=64)
        assert pp.doorbell_value == 0  # remembered
        h.wait()
        rings = [
            e for e in rt.system.tracer.events if e.name == "doorbell" and e.track == "queue 2"
        ]
        assert rings and rings[0].args["mapped"] is False
        assert pp.swaps_in == 1
        # Swaps happen on the quantum grid (the teaching GPU reloads an HQD in 10 us).
        quantum = rt.system.spec.gpu.quantum_ps
        unmaps = [e for e in rt.system.tracer.events if e.name.startswith("unmap queue")]
        assert unmaps and all(e.ts % quantum == 0 for e in unmaps)


def test_round_robin_swaps_out_a_barrier_blocked_queue():
    """gem5 isRLQIdle: a blocked barrier is not in flight, so its queue can be unmapped and
    the producer it waits for can run."""
    with make_rt("round_robin") as rt:
        gpu = rt.gpus[0]
        k = rt.load_code_object("builtin:empty").kernel("empty")
        qa, qb, qc = (gpu.create_queue(64) for _ in range(3))
        produced = rt.create_signal(1)
        done_a, done_b = rt.create_signal(1), rt.create_signal(1)
        qa.submit(barrier_and(produced, completion=done_a))
        qb.submit(barrier_and(produced, completion=done_b))
        rt.system.run_for(20_000_000)  # 20 us: the CP has processed both barriers
        assert sched(rt).queues[0].state == "blocked-on-barrier"
        assert sched(rt).queues[0].idle
        qc.dispatch(k, grid=64, workgroup=64, completion_signal=produced)
        assert done_a.wait(rocr.Condition.LT, 1) == 0
        assert done_b.wait(rocr.Condition.LT, 1) == 0
        assert sched(rt).context_switches >= 1


def test_a_queue_with_a_kernel_in_flight_keeps_its_hqd():
    # One slow workgroup: 8 KiB at 10 MB/s keeps it in flight for ~0.8 ms, several quanta.
    with make_rt("round_robin", functional=False, memory_bandwidth_gbps=0.01) as rt:
        gpu = rt.gpus[0]
        square = rt.load_code_object("builtin:square").kernel("square")
        empty = rt.load_code_object("builtin:empty").kernel("empty")
        long_q = gpu.create_queue(64)
        others = [gpu.create_queue(64) for _ in range(3)]
        n = 1024
        # VRAM, so its bytes go at the (slowed) memory bandwidth, not over the host link
        vram = gpu.pools()[0]
        a, b = vram.allocate(4 * n), vram.allocate(4 * n)
        long_h = long_q.dispatch(square, grid=n, workgroup=n, args=(b, a, n))
        hs = [q.dispatch(empty, grid=64, workgroup=64) for q in others]
        for h in hs:
            h.wait()
        pp = sched(rt).queues[0]
        assert pp.busy and pp.slot == 0 and pp.swaps_out == 0
        long_h.wait()
        s, e = long_h.dispatch_time()
        assert e - s > 2 * rt.system.spec.gpu.quantum_ps / 1000


def _first_two_finish(rt, k):
    gpu = rt.gpus[0]
    f = [gpu.create_queue(64) for _ in range(2)]
    for q in f:
        q.dispatch(k, grid=64, workgroup=64).wait()
    return f


@pytest.mark.parametrize(("policy", "first"), [("priority", "high"), ("round_robin", "low")])
def test_priority_policy_maps_the_higher_priority_queue_first(policy, first):
    with make_rt(policy) as rt:
        gpu = rt.gpus[0]
        k = rt.load_code_object("builtin:empty").kernel("empty")
        _first_two_finish(rt, k)
        low = gpu.create_queue(64, priority=-3)
        high = gpu.create_queue(64, priority=3)
        hl = low.dispatch(k, grid=64, workgroup=64)
        hh = high.dispatch(k, grid=64, workgroup=64)
        hl.wait()
        hh.wait()
        order = "high" if start_of(hh.signal) < start_of(hl.signal) else "low"
        assert order == first


def test_update_queue_priority_reorders_mapping():
    with make_rt("priority") as rt:
        gpu = rt.gpus[0]
        k = rt.load_code_object("builtin:empty").kernel("empty")
        _first_two_finish(rt, k)
        a = gpu.create_queue(64, priority=3)
        b = gpu.create_queue(64, priority=0)
        b.set_priority(rocr.queue.QueuePriority.HIGH)  # HSA_AMD_QUEUE_PRIORITY_HIGH
        a.set_priority(rocr.queue.QueuePriority.LOW)
        assert [q.priority for q in sched(rt).queues[2:]] == [0, 11]
        ha = a.dispatch(k, grid=64, workgroup=64)
        hb = b.dispatch(k, grid=64, workgroup=64)
        ha.wait()
        hb.wait()
        assert start_of(hb.signal) < start_of(ha.signal)


@pytest.mark.parametrize(("policy", "first"), [("ready_first", "ready"), ("round_robin", "gated")])
def test_ready_first_skips_a_queue_blocked_on_an_unmet_barrier(policy, first):
    with make_rt(policy) as rt:
        gpu = rt.gpus[0]
        k = rt.load_code_object("builtin:empty").kernel("empty")
        _first_two_finish(rt, k)
        gated, ready = gpu.create_queue(64), gpu.create_queue(64)
        gate = rt.create_signal(1)
        gated.submit(barrier_and(gate))
        hg = gated.dispatch(k, grid=64, workgroup=64)
        hr = ready.dispatch(k, grid=64, workgroup=64)
        assert sched(rt).queues[2].runnable is False and sched(rt).queues[3].runnable
        hr.wait()
        mapped_first = {q.queue_id for q in sched(rt).mapped()}
        gate.store(0)
        hg.wait()
        if first == "ready":
            assert gated.queue_id not in mapped_first
        else:
            assert gated.queue_id in mapped_first
            assert start_of(hr.signal) > 2 * rt.system.spec.gpu.quantum_ps / 1000


def test_priority_inversion_deadlock_is_reported_with_the_queues_involved():
    with make_rt("priority") as rt:
        gpu = rt.gpus[0]
        k = rt.load_code_object("builtin:empty").kernel("empty")
        qa, qb = gpu.create_queue(64, priority=3), gpu.create_queue(64, priority=3)
        qc = gpu.create_queue(64, priority=-3)
        produced, done = rt.create_signal(1), rt.create_signal(1)
        qa.submit(barrier_and(produced, completion=done))
        qb.submit(barrier_and(produced))
        qc.dispatch(k, grid=64, workgroup=64, completion_signal=produced)
        with pytest.raises(rocr.HsaError) as ei:
            done.wait(rocr.Condition.LT, 1)
        msg = str(ei.value)
        assert ei.value.status == rocr.Status.ERROR
        assert "policy priority" in msg
        assert f"queue {qc.queue_id}: unmapped with work" in msg
        assert f"queue {qa.queue_id} on HQD 0: blocked on packet 0 (barrier-AND)" in msg
        # The quantum timer went quiet: nothing is left to fire.
        assert rt.system.engine.peek() is None
        assert not sched(rt).describe()["timer_armed"]


def test_inactive_queue_leaves_the_runlist_and_keeps_its_doorbell():
    with make_rt("round_robin") as rt:
        gpu = rt.gpus[0]
        k = rt.load_code_object("builtin:empty").kernel("empty")
        q = gpu.create_queue(64)
        rt.thunk.update_queue(q.queue_id, percentage=0)
        pp = sched(rt).queues[0]
        assert pp.slot is None and pp not in sched(rt).runlist
        h = q.dispatch(k, grid=64, workgroup=64)
        rt.system.run_for(500_000_000)
        assert not h.done and pp.has_work
        rt.thunk.update_queue(q.queue_id, percentage=100)
        h.wait()
        assert pp.slot is not None


def test_vmid_limit_maps_one_process_at_a_time():
    spec = system_spec("teaching")
    spec = spec.model_copy(update={"gpu": spec.gpu.model_copy(update={"vmids_for_kfd": 1})})
    a = rocr.init(spec=spec)
    b = rocr.init(system=a.system)
    try:
        ka = a.load_code_object("builtin:empty").kernel("empty")
        kb = b.load_code_object("builtin:empty").kernel("empty")
        qa, qb = a.gpus[0].create_queue(64), b.gpus[0].create_queue(64)
        s = sched(a)
        assert len(s.runlist) == 2 < len(s.slots) + 1 and s.oversubscribed  # 2 processes
        assert [p.slot for p in s.queues] == [0, None]  # second VMID not available
        ha = qa.dispatch(ka, grid=64, workgroup=64)
        hb = qb.dispatch(kb, grid=64, workgroup=64)
        ha.wait()
        hb.wait()
        assert start_of(hb.signal) > ha.dispatch_time()[1]
        assert s.context_switches == 1
    finally:
        b.shutdown()
        a.shutdown()


def test_statistics_per_queue_per_slot_and_system():
    with make_rt("round_robin") as rt:
        gpu = rt.gpus[0]
        k = rt.load_code_object("builtin:empty").kernel("empty")
        qs = [gpu.create_queue(64) for _ in range(4)]
        hs = [q.dispatch(k, grid=64, workgroup=64) for q in qs for _ in range(2)]
        for h in hs:
            h.wait()
        d = sched(rt).describe()
        for q in d["runlist"]:
            assert q["packets"] == 2 and q["mapped_ps"] > 0
        assert sum(q["runnable_unmapped_ps"] for q in d["runlist"]) > 0
        assert sum(q["swaps_in"] for q in d["runlist"]) == d["context_switches"] == 2
        assert all(0 < h["utilization"] <= 1 for h in d["hqd_stats"])
        assert d["oversubscribed_ps"] > 0
        sys_stats = rt.system.stats()["gpu1"]
        assert sys_stats["context_switches"] == 2
        assert sys_stats["oversubscribed_ps"] == d["oversubscribed_ps"]


def test_runlist_and_hqds_through_the_kfd_debugfs():
    import json

    with make_rt("round_robin") as rt:
        gpu = rt.gpus[0]
        [gpu.create_queue(64, priority=p) for p in (0, 1, -1)]
        hqds = json.loads(rt.thunk.read_debugfs("hqds"))[0]["hqds"]
        assert [h["queue_id"] for h in hqds] == [0, 1]
        rls = json.loads(rt.thunk.read_debugfs("rls"))[0]
        assert rls["oversubscribed"] and rls["hqds"] == 2
        assert [(q["queue_id"], q["priority"], q["hqd"]) for q in rls["queues"]] == [
            (0, 7, 0),
            (1, 9, 1),
            (2, 5, None),
        ]
        with pytest.raises(roct.HsaKmtError, match="rls, hqds, mqds"):
            rt.thunk.read_debugfs("nope")
        # The same through the runtime's inspection calls.
        assert rt.mapped_queues()[0]["hqds"] == hqds
        assert rt.runlist()[0]["policy"] == "round_robin"


class MostWorkFirst(SchedulerPolicy):
    """The docs' example: the unmapped queue with the most unretired packets goes first."""

    name = "most_work_first"

    def successors(self, sched):
        return sorted(sched.waiting(), key=lambda q: q.doorbell_value + 1 - q.retired, reverse=True)


def test_a_custom_policy_plugs_in():
    register_policy(MostWorkFirst)
    try:
        with make_rt("round_robin") as rt:
            sched(rt).set_policy("most_work_first")
            gpu = rt.gpus[0]
            k = rt.load_code_object("builtin:empty").kernel("empty")
            _first_two_finish(rt, k)
            small, big = gpu.create_queue(64), gpu.create_queue(64)
            hs = small.dispatch(k, grid=64, workgroup=64)
            hb = [big.dispatch(k, grid=64, workgroup=64) for _ in range(3)]
            hs.wait()
            hb[-1].wait()
            assert start_of(hb[0].signal) < start_of(hs.signal)
    finally:
        SCHEDULER_POLICIES.pop("most_work_first", None)


def test_bad_policies_are_refused_with_a_message():
    with make_rt() as rt, pytest.raises(ValueError, match="unknown scheduler policy 'fifo'"):
        sched(rt).set_policy("fifo")
    with pytest.raises(TypeError):
        register_policy(int)

    class Nameless(SchedulerPolicy):
        pass

    with pytest.raises(ValueError, match="needs a class attribute"):
        register_policy(Nameless)
    with pytest.raises(ValueError, match="at least 1"):
        SchedulerPolicy(swaps_per_quantum=0)


def test_a_queue_swapped_out_mid_packet_fetches_the_packet_again():
    """gem5 counts a packet in its processing delay as not in flight: the queue is idle and
    may be swapped out; the CP abandons the packet and processes it after the queue is back."""
    with make_rt("round_robin", trace=True) as rt:
        gpu = rt.gpus[0]
        k = rt.load_code_object("builtin:empty").kernel("empty")
        q0, q1, q2 = (gpu.create_queue(64) for _ in range(3))
        sig = rt.create_signal(1)
        q2.dispatch(k, grid=64, workgroup=64)  # waits unmapped for the first quantum
        quantum = rt.system.spec.gpu.quantum_ps
        rt.system.run_for(quantum - 500_000 - rt.system.host_now)  # 0.5 us before it
        h = q0.dispatch(k, grid=64, workgroup=64, completion_signal=sig)
        rt.system.run_for(1000)
        pp0 = sched(rt).queues[0]
        assert pp0._processing  # the CP is in the packet's 2 us processing delay
        h.wait()
        unmap = next(e for e in rt.system.tracer.events if e.name == "unmap queue 0 from HQD 0")
        assert unmap.ts == quantum and unmap.args["state"] == "mapped-running"
        assert start_of(sig) * 1000 > 2 * quantum  # ran after the next quantum mapped it back
        assert pp0.packets_processed == 1 and pp0.swaps_out == 1 and pp0.swaps_in == 1
