"""Oversubscribed HQDs end to end: several rocr processes on one machine, a wavefront DAG
over many queues, and deadlocks reported with the queues involved."""

from __future__ import annotations

import os

import numpy as np
import pytest

import rocr
from hw_model import aql
from hw_model.config import system_spec

POLICIES = ("round_robin", "priority", "ready_first")


def buf(rt, data):
    pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
    b = pool.allocate(4 * data.size)
    rt.allow_access(rt.gpus, b)
    b.view(np.float32, data.size)[:] = data
    return b


def barrier_and(*signals, completion=None):
    return rocr.BarrierAndPacket(
        header=aql.make_header(aql.PacketType.BARRIER_AND),
        dep_signal=[s.handle for s in signals] + [0] * (5 - len(signals)),
        completion_signal=0 if completion is None else completion.handle,
    )


def test_rocr_init_on_one_system_gives_isolated_processes():
    a = rocr.init(spec=system_spec("teaching"))
    b = rocr.init(system=a.system)
    try:
        qa, qb = a.gpus[0].create_queue(64), b.gpus[0].create_queue(64)
        assert qa.queue_id == qb.queue_id == 0
        assert qa.doorbell_signal.doorbell_address != qb.doorbell_signal.doorbell_address
        xa, xb = buf(a, np.ones(4, np.float32)), buf(b, np.full(4, 2, np.float32))
        assert xa.address == xb.address  # same VA, different address spaces
        assert xa.view(np.float32)[0] == 1 and xb.view(np.float32)[0] == 2
        assert a.system.gpus[0].scheduler.processes == sorted(
            {a.thunk.transport.process.pasid, b.thunk.transport.process.pasid}
        )
    finally:
        b.shutdown()
        a.shutdown()


@pytest.mark.parametrize("policy", POLICIES)
def test_two_processes_oversubscribe_the_hqds_and_all_work_completes(policy):
    n = 512
    a = rocr.init(spec=system_spec("teaching", scheduler_policy=policy))
    b = rocr.init(system=a.system)
    try:
        jobs = []
        for rt in (a, b):
            k = rt.load_code_object("builtin:square").kernel("square")
            for i in range(3):
                q = rt.gpus[0].create_queue(64)
                x = buf(rt, np.full(n, 1 + i / 4, np.float32))
                y, z = buf(rt, np.zeros(n, np.float32)), buf(rt, np.zeros(n, np.float32))
                q.dispatch(k, grid=n, workgroup=128, args=(y, x, n), barrier=True)
                h = q.dispatch(k, grid=n, workgroup=128, args=(z, y, n), barrier=True)
                jobs.append((1 + i / 4, z, h))
        for x, z, h in jobs:
            h.wait()
            assert np.allclose(z.view(np.float32), np.float32(x) ** 4)
        sched = a.system.gpus[0].scheduler
        assert len(sched.processes) == 2 and sched.context_switches > 0
        b.shutdown()
        assert len(sched.processes) == 1 and len(sched.runlist) == 3
        assert sum(s is not None for s in sched.slots) == 2
    finally:
        b.shutdown()
        a.shutdown()


def nw(rt, n: int, queues: int, block: int = 64):
    """cell(i, j) = cell(i-1, j) + cell(i, j-1) after a barrier-AND on both; row i on queue
    i % Q. With borders at 1 every cell holds binomial(i + j, i)."""
    gpu = rt.gpus[0]
    k = rt.load_code_object("builtin:vector_add").kernel("vector_add")
    grid = buf(rt, np.zeros((n + 1) * (n + 1) * block, np.float32))
    cells = grid.view(np.float32).reshape(n + 1, n + 1, block)
    cells[0, :, :] = 1
    cells[:, 0, :] = 1
    qs = [gpu.create_queue(256) for _ in range(queues)]
    at = lambda i, j: grid.address + 4 * block * (i * (n + 1) + j)  # noqa: E731
    sig = {}
    for i in range(1, n + 1):
        for j in range(1, n + 1):
            q = qs[(i - 1) % queues]
            deps = [sig[d] for d in ((i - 1, j), (i, j - 1)) if d in sig]
            if deps:
                q.submit(barrier_and(*deps))
            sig[i, j] = rt.create_signal(1, interrupt=(i, j) == (n, n))
            q.dispatch(
                k,
                grid=block,
                workgroup=block,
                args=(at(i - 1, j), at(i, j - 1), at(i, j), block),
                completion_signal=sig[i, j],
            )
    sig[n, n].wait(rocr.Condition.LT, 1)
    return cells[:, :, 0].copy()


@pytest.mark.parametrize("policy", POLICIES)
def test_wavefront_dag_over_oversubscribed_queues_is_correct(policy):
    n = int(os.environ.get("HSAEMU_TEST_NW_N", 5))
    with rocr.init(spec=system_spec("teaching", scheduler_policy=policy)) as rt:
        got = nw(rt, n, queues=n)
        ref = np.ones((n + 1, n + 1), np.float32)
        for i in range(1, n + 1):
            for j in range(1, n + 1):
                ref[i, j] = ref[i - 1, j] + ref[i, j - 1]
        assert np.array_equal(got, ref)
        sched = rt.system.gpus[0].scheduler
        assert sched.context_switches > 0
        # Each packet counted once, even those abandoned mid-processing by a swap.
        assert sum(q.packets_processed for q in sched.queues) == 2 * n * n - 1


def test_deadlock_across_processes_names_every_queue_involved():
    """Priority inversion: both HQDs hold high-priority queues blocked on barriers (one of
    them another process's); the low-priority producer can never be mapped."""
    a = rocr.init(spec=system_spec("teaching", scheduler_policy="priority"))
    b = rocr.init(system=a.system)
    try:
        k = a.load_code_object("builtin:empty").kernel("empty")
        hi_a = a.gpus[0].create_queue(64, priority=3)
        hi_b = b.gpus[0].create_queue(64, priority=3)
        lo_a = a.gpus[0].create_queue(64, priority=-3)
        produced, done = a.create_signal(1), a.create_signal(1)
        gate_b = b.create_signal(1)
        hi_a.submit(barrier_and(produced, completion=done))
        hi_b.submit(barrier_and(gate_b))
        lo_a.dispatch(k, grid=64, workgroup=64, completion_signal=produced)
        with pytest.raises(rocr.HsaError) as info:
            done.wait(rocr.Condition.LT, 1)
        msg = str(info.value)
        pa = a.thunk.transport.process.pasid
        pb = b.thunk.transport.process.pasid
        assert f"HQD 0: pasid {pa:#x} queue 0 (blocked-on-barrier)" in msg
        assert f"HQD 1: pasid {pb:#x} queue 0 (blocked-on-barrier)" in msg
        assert f"pasid {pa:#x} queue 1: unmapped with work (runnable)" in msg
        # Changing the policy of this experiment resolves it.
        a.system.gpus[0].scheduler.set_policy("ready_first")
        assert done.wait(rocr.Condition.LT, 1) == 0
    finally:
        b.shutdown()
        a.shutdown()


def test_same_inputs_give_the_same_schedule():
    def once():
        spec = system_spec("teaching", scheduler_policy="ready_first")
        with rocr.init(spec=spec, trace=True) as rt:
            nw(rt, 4, queues=4)
            g = rt.system.gpus[0]
            hws = [(e.ts, e.name) for e in rt.system.tracer.events if e.track == "HWS"]
            return hws, [(r["start_ps"], r["end_ps"]) for r in g.kernel_records]

    assert once() == once()


def test_hsaemu_hws_shows_the_swaps_and_the_runlist(capsys):
    from rocr.cli import main

    argv = ["hws", "--preset", "teaching", "--processes", "2", "--queues", "2", "-n", "1024"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "unmap queue 0 from HQD 0" in out and "map queue 0 -> HQD 0  (pasid 0x8001)" in out
    assert "context switches 2" in out and "CORRECT" in out
    assert main(["hws", "--queues", "0"]) == 2
