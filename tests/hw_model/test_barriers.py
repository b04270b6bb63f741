"""Barrier-AND/OR, barrier-value and agent-dispatch packets, and visible queue states."""

from __future__ import annotations

import numpy as np
import pytest

import rocr
from hw_model import aql
from hw_model.aql import PacketType
from hw_model.config import system_spec
from hw_model.memory import MemKind

US = 1_000_000  # ps


def barrier(kind: PacketType, deps: list, completion=None):
    cls = rocr.BarrierAndPacket if kind == PacketType.BARRIER_AND else rocr.BarrierOrPacket
    handles = [0 if d is None else (d if isinstance(d, int) else d.handle) for d in deps]
    return cls(
        header=aql.make_header(kind),
        dep_signal=handles + [0] * (5 - len(handles)),
        completion_signal=0 if completion is None else completion.handle,
    )


def pp_of(rt, q):
    g = rt.system.gpus[0]
    return next(p for p in g.scheduler.queues if p.queue_id == q.queue_id)


@pytest.fixture
def rt(request):
    r = rocr.init(
        spec=system_spec("teaching"), trace=request.node.get_closest_marker("trace") is not None
    )
    yield r
    r.shutdown()


def test_barrier_and_waits_for_every_dependency_and_ignores_zero_handles(rt):
    q = rt.gpus[0].create_queue(64)
    deps = [rt.create_signal(1) for _ in range(3)]
    done = rt.create_signal(1)
    q.submit(barrier(PacketType.BARRIER_AND, [deps[0], None, deps[1], None, deps[2]], done))
    rt.system.run_for(20 * US)
    deps[0].store(0)
    deps[1].store(0)
    rt.system.run_for(20 * US)
    assert done.load() == 1 and pp_of(rt, q).state == "blocked-on-barrier"
    deps[2].store(0)
    assert done.wait(rocr.Condition.LT, 1) == 0
    assert q.load_read_index() == 1


def test_barrier_or_completes_on_the_first_dependency(rt):
    q = rt.gpus[0].create_queue(64)
    deps = [rt.create_signal(1) for _ in range(3)]
    done = rt.create_signal(1)
    q.submit(barrier(PacketType.BARRIER_OR, deps, done))
    rt.system.run_for(20 * US)
    assert done.load() == 1
    deps[1].store(0)
    assert done.wait(rocr.Condition.LT, 1) == 0
    assert [d.load() for d in deps] == [1, 0, 1]


def test_barrier_with_only_zero_handles_completes_at_once(rt):
    q = rt.gpus[0].create_queue(64)
    done = rt.create_signal(1)
    q.submit(barrier(PacketType.BARRIER_AND, [None] * 5, done))
    assert done.wait(rocr.Condition.LT, 1) == 0


def test_barriers_are_evaluated_on_signal_change_not_polled(rt):
    q = rt.gpus[0].create_queue(64)
    dep, done = rt.create_signal(1), rt.create_signal(1)
    q.submit(barrier(PacketType.BARRIER_AND, [dep], done))
    rt.system.run_for(50 * US)
    # Blocked and nothing scheduled: no timer re-reads the dependency.
    assert rt.system.engine.peek() is None
    fired = rt.system.engine.events_fired
    rt.system.run_for(5000 * US)
    assert rt.system.engine.events_fired == fired
    t_store = rt.now_ns
    dep.store(0)
    done.wait(rocr.Condition.LT, 1)
    _, end = done.dispatch_time()
    assert 0 <= end - t_store < 10_000  # within 10 us of the store


def test_barrier_across_queues_orders_kernels(rt):
    gpu = rt.gpus[0]
    k = rt.load_code_object("builtin:square").kernel("square")
    n = 4096
    pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
    a, b, c = (pool.allocate(4 * n) for _ in range(3))
    for x in (a, b, c):
        rt.allow_access([gpu], x)
    a.view(np.float32)[:] = 3
    qa, qb = gpu.create_queue(64), gpu.create_queue(64)
    first = rt.create_signal(1)
    qb.submit(barrier(PacketType.BARRIER_AND, [first]))
    hb = qb.dispatch(k, grid=n, workgroup=256, args=(c, b, n))
    ha = qa.dispatch(k, grid=n, workgroup=256, args=(b, a, n), completion_signal=first)
    hb.wait()
    assert np.all(c.view(np.float32) == 81)
    assert hb.dispatch_time()[0] >= ha.dispatch_time()[1]


def test_barrier_across_processes_through_shared_memory():
    """A barrier in process B on a signal that process A's kernel completes. The signal's page
    is mapped into both VMs (what an IPC import does): the watch crosses the mappings."""
    a = rocr.init(spec=system_spec("teaching"))
    b = rocr.init(system=a.system)
    try:
        mem = a.system.memory
        sig = a.create_signal(1, interrupt=False)
        pasid_a = a.thunk.transport.process.pasid
        pasid_b = b.thunk.transport.process.pasid
        bo = mem.find(pasid_a, sig.handle)
        shared_va = 0x6000_0000_0000
        alias = mem.allocate(pasid_b, shared_va, bo.size, MemKind.SYSTEM, 0, coherent=True)
        alias.data = bo.data
        alias.gpu_nodes |= bo.gpu_nodes
        handle_in_b = shared_va + (sig.handle - bo.va)
        qb = b.gpus[0].create_queue(64)
        done_b = b.create_signal(1)
        qb.submit(barrier(PacketType.BARRIER_AND, [handle_in_b], done_b))
        b.system.run_for(20 * US)
        assert done_b.load() == 1
        k = a.load_code_object("builtin:empty").kernel("empty")
        a.gpus[0].create_queue(64).dispatch(k, grid=64, workgroup=64, completion_signal=sig)
        assert done_b.wait(rocr.Condition.LT, 1) == 0
        assert sig.load() == 0
    finally:
        b.shutdown()
        a.shutdown()


def test_agent_dispatch_nop_and_barrier_value_complete_their_signals(rt):
    q = rt.gpus[0].create_queue(64)
    nop_done, bv_done, watched = (rt.create_signal(v) for v in (1, 1, 5))
    q.submit(
        rocr.AgentDispatchPacket(
            header=aql.make_header(PacketType.AGENT_DISPATCH),
            type=0,
            completion_signal=nop_done.handle,
        )
    )
    assert nop_done.wait(rocr.Condition.LT, 1) == 0
    q.submit(
        rocr.AmdBarrierValuePacket(
            header=aql.make_header(PacketType.VENDOR_SPECIFIC),
            signal=watched.handle,
            value=2,
            mask=0xFF,
            cond=rocr.Condition.LT,
            completion_signal=bv_done.handle,
        )
    )
    rt.system.run_for(20 * US)
    assert bv_done.load() == 1 and pp_of(rt, q).state == "blocked-on-barrier"
    watched.store(1)
    assert bv_done.wait(rocr.Condition.LT, 1) == 0


def test_queue_states_are_visible(rt):
    gpu = rt.gpus[0]
    k = rt.load_code_object("builtin:empty").kernel("empty")
    q0, q1, q2 = (gpu.create_queue(64) for _ in range(3))
    s = rt.system.gpus[0].scheduler
    states = lambda: [p["state"] for p in s.describe()["runlist"]]  # noqa: E731
    assert states() == ["mapped-idle", "mapped-idle", "unmapped"]
    gate = rt.create_signal(1)
    q0.submit(barrier(PacketType.BARRIER_AND, [gate]))
    q1.dispatch(k, grid=64, workgroup=64)
    assert states()[:2] == ["mapped-running", "mapped-running"]
    rt.system.run_for(20 * US)
    assert states()[0] == "blocked-on-barrier"
    q1.write_packet(q1.add_write_index(1), b"\x07" + bytes(63))  # type 7: not an AQL type
    q1.ring_doorbell(1)
    rt.system.run_for(20 * US)
    assert states()[1] == "error"
    gate.store(0)


def test_a_barrier_of_an_unmapped_queue_completes_only_once_remapped(rt):
    """The CP looks only at mapped queues: the dependency is met while the queue is
    swapped out, and the barrier completes after the quantum that maps it back."""
    gpu = rt.gpus[0]
    k = rt.load_code_object("builtin:empty").kernel("empty")
    q0, q1, q2 = (gpu.create_queue(64) for _ in range(3))
    gate = rt.create_signal(1)
    d0, d1 = rt.create_signal(1), rt.create_signal(1)
    q0.submit(barrier(PacketType.BARRIER_AND, [gate], d0))
    q1.submit(barrier(PacketType.BARRIER_AND, [gate], d1))
    q2.dispatch(k, grid=64, workgroup=64).wait()  # q2 got q0's HQD at the first quantum
    s = rt.system.gpus[0].scheduler
    assert s.queues[0].slot is None and s.queues[0].blocked_barrier is not None
    t = rt.now_ns
    gate.store(0)
    d0.wait(rocr.Condition.LT, 1)
    d1.wait(rocr.Condition.LT, 1)
    quantum_ns = rt.system.spec.gpu.quantum_ps / 1000
    assert d1.dispatch_time()[1] - t < 10_000
    assert d0.dispatch_time()[1] > (t // quantum_ns + 1) * quantum_ns


def _completion_write_ps(rt, sig) -> int:
    """When the CP decremented `sig` (the trace's "completion signal" instant)."""
    hits = [
        e.ts
        for e in rt.system.tracer.events
        if e.name == "completion signal" and e.args.get("signal") == hex(sig.handle)
    ]
    assert len(hits) == 1, hits
    return hits[0]


@pytest.mark.trace
@pytest.mark.parametrize("previous", ["barrier-AND", "agent NOP", "kernel"])
def test_barrier_bit_waits_until_the_previous_packet_has_retired(rt, previous):
    """HSA barrier bit: the packet starts only once every earlier packet of its queue has
    completed: release fence done and completion signal decremented, not merely finished."""
    gpu = rt.gpus[0]
    k = rt.load_code_object("builtin:empty").kernel("empty")
    q = gpu.create_queue(64)
    first, second = rt.create_signal(1), rt.create_signal(1)
    if previous == "barrier-AND":
        pkt = barrier(PacketType.BARRIER_AND, [], first)  # completes at once
    elif previous == "agent NOP":
        pkt = rocr.AgentDispatchPacket(
            header=aql.make_header(PacketType.AGENT_DISPATCH), completion_signal=first.handle
        )
    else:
        pkt = rt.dispatch_packet(k, 64, 64, (), first)
    assert aql.header_release(pkt.header) == aql.FenceScope.SYSTEM  # a fence to wait for
    i = q.add_write_index(2)
    q.write_packet(i, pkt)
    q.write_packet(i + 1, rt.dispatch_packet(k, 64, 64, (), second, barrier=True))
    q.ring_doorbell(i)
    q.ring_doorbell(i + 1)  # a second doorbell must not let the barrier-bit packet start
    assert second.wait(rocr.Condition.LT, 1) == 0
    signalled = _completion_write_ps(rt, first)
    record = next(r for r in rt.system.gpus[0].kernel_records if r["dispatch_id"] == i + 1)
    assert record["start_ps"] >= signalled
    fetch = next(
        e.ts
        for e in rt.system.tracer.events
        if e.track == f"queue {q.queue_id}" and e.name == f"fetch packet {i + 1}"
    )
    assert fetch >= signalled
    assert second.dispatch_time()[0] >= first.dispatch_time()[1]


def test_an_invalid_header_of_an_unmapped_queue_is_watched_too():
    """Both HQDs hold queues blocked on a barrier; the third queue's doorbell was rung on an
    INVALID header. Publishing the header (no doorbell) makes it runnable, and ready_first
    swaps it in: the HWS hears of the header store."""
    with rocr.init(spec=system_spec("teaching", scheduler_policy="ready_first")) as rt:
        gpu = rt.gpus[0]
        k = rt.load_code_object("builtin:empty").kernel("empty")
        q0, q1, q2 = (gpu.create_queue(64) for _ in range(3))
        gate = rt.create_signal(1)
        q0.submit(barrier(PacketType.BARRIER_AND, [gate]))
        q1.submit(barrier(PacketType.BARRIER_AND, [gate]))
        done = rt.create_signal(1)
        pkt = rt.dispatch_packet(k, 64, 64, (), done)
        raw = bytearray(pkt.to_bytes())
        raw[0:2] = PacketType.INVALID.to_bytes(2, "little")
        i = q2.add_write_index(1)
        q2.write_packet(i, bytes(raw))
        q2.ring_doorbell(i)
        rt.system.run_for(300 * US)
        assert pp_of(rt, q2).slot is None and not pp_of(rt, q2).runnable
        q2.write_packet(i, pkt)  # publish the header
        assert done.wait(rocr.Condition.LT, 1) == 0
        gate.store(0)
