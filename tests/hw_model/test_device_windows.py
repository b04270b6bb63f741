"""What a warm queue keeps between packets, and what makes it look again: the memory's windows
(a checked access kept while nothing it read has changed), the queue's last launch, the
completion signal's words, the engine's count of fired events worked out when read, and the
HW scheduler's running time reaching an HQD when its queue leaves it. Each answer is the one
the checked path gives."""

from __future__ import annotations

import pickle

import pytest

import rocr
from hw_model.engine import Engine
from hw_model.memory import PAGE_SIZE, MemKind
from hw_model.structs import AMD_QUEUE_READ_DISPATCH_ID_OFFSET, AMD_SIGNAL_VALUE_OFFSET

VA = 0x10000


@pytest.fixture
def warm():
    """A gfx900 runtime whose queue ran the empty kernel a few times (its windows and its
    launch are kept), with the device's view of that queue."""
    rt = rocr.init(preset="gfx900")
    k = rt.load_code_object("builtin:empty").kernel("empty")
    errors: list = []
    q = rt.gpus[0].create_queue(64, callback=lambda err, q: errors.append(err))
    for _ in range(3):
        q.dispatch(k, grid=64, workgroup=64).wait()
    gpu = rt.system.gpus[0]
    (pp,) = [p for p in gpu.queues.values() if p.mqd.queue_id == q.queue_id]
    try:
        yield rt, k, q, gpu, pp, errors
    finally:
        rt.shutdown()


# -- the memory's windows -----------------------------------------------------------------
def test_windows_give_the_checked_answer_and_expire_with_their_epoch(mem):
    bo = mem.allocate(1, VA, 2 * PAGE_SIZE, MemKind.SYSTEM, 0)
    bo.gpu_nodes.add(1)
    w = mem.view_window(1, VA + 64, 64, 1)
    assert (w.bo, w.off, w.epoch) == (*mem.locate(1, VA + 64, 64, 1), mem.map_epoch)
    p = mem.plain_window(1, VA + 8, 8, 1)
    assert (p.bo, p.off, p.epoch) == (*mem.plain(1, VA + 8, 8, 1), mem.plain_epoch)
    # A monitor: plain stores must tell it, so plain windows expire; reads do not care.
    maps, plains = mem.map_epoch, mem.plain_epoch
    mem.watch(1, VA + 8, lambda: None)
    assert mem.map_epoch == maps and mem.plain_epoch > plains
    assert mem.plain_window(1, VA + 8, 8, 1) is None
    mem.unwatch(1, VA + 8, mem._watchers[(1, VA + 8)][0])
    assert mem.plain_window(1, VA + 8, 8, 1).epoch == mem.plain_epoch > plains + 1
    # A mapping made or dropped: every window expires.
    mem.allocate(1, VA + 4 * PAGE_SIZE, PAGE_SIZE, MemKind.SYSTEM, 0)
    assert mem.map_epoch > maps and w.epoch != mem.map_epoch and p.epoch != mem.plain_epoch


def test_windows_refuse_what_the_checked_access_refuses(mem):
    bo = mem.allocate(1, VA, PAGE_SIZE, MemKind.SYSTEM, 0)
    assert mem.view_window(1, VA, 8, 1) is None  # not mapped for GPU node 1
    bo.gpu_nodes.add(1)
    assert mem.view_window(1, VA + PAGE_SIZE - 4, 8, 1) is None  # past the end
    assert mem.view_window(1, VA + 8 * PAGE_SIZE, 8, 1) is None  # nothing mapped there
    bo.on_write = lambda off, n: None  # an MMIO hook: no plain stores
    assert mem.view_window(1, VA, 8, 1) is not None and mem.plain_window(1, VA, 8, 1) is None


# -- the queue's ring and read_dispatch_id ------------------------------------------------------
def test_a_ring_unmapped_from_the_gpu_faults_the_next_fetch(warm):
    rt, k, q, gpu, pp, errors = warm
    mqd = pp.mqd
    ring = rt.system.memory.find(mqd.pasid, mqd.ring_base)
    ring.gpu_nodes.discard(gpu.node)  # AMDKFD_IOC_UNMAP_MEMORY_FROM_GPU behind the queue's back
    h = q.dispatch(k, grid=64, workgroup=64)
    with pytest.raises(rocr.HsaError) as err:
        h.wait()
    assert err.value.status == rocr.Status.ERROR_MEMORY_APERTURE_VIOLATION
    assert [e.status for e in errors] == [err.value.status]
    assert "ring fetch faulted" in gpu.queue_errors[-1]["message"]
    assert "not mapped for GPU node" in gpu.queue_errors[-1]["message"]


def test_a_monitor_on_read_dispatch_id_is_told_by_the_next_retire(warm):
    rt, k, q, gpu, pp, errors = warm
    mem, mqd = rt.system.memory, pp.mqd
    seen: list[int] = []
    rptr = mqd.amd_queue_addr + AMD_QUEUE_READ_DISPATCH_ID_OFFSET
    mem.watch(mqd.pasid, rptr, lambda: seen.append(mem.load_u64(mqd.pasid, rptr)))
    q.dispatch(k, grid=64, workgroup=64).wait()
    assert seen == [4] and pp.retired == 4 and not errors


def test_a_queue_counts_its_packets_by_its_read_index(warm):
    rt, k, q, gpu, pp, errors = warm
    assert pp.packets_processed == pp.read_index == 3
    assert pp.describe()["packets"] == 3
    assert gpu.scheduler.queue_stats(pp)["packets"] == 3


# -- the queue's last launch ----------------------------------------------------------------
def test_a_rewritten_kernel_descriptor_is_checked_again(warm):
    rt, k, q, gpu, pp, errors = warm
    mem = rt.system.memory
    bo = mem.find(pp.mqd.pasid, k.kernel_object)
    off = k.kernel_object - bo.va
    # group_segment_fixed_size (the descriptor's first word) over the LDS of a CU: the same
    # packet again, but its launch is refused now.
    lds = gpu.spec.lds_per_cu + 4
    bo.data[off : off + 4] = list(lds.to_bytes(4, "little"))
    h = q.dispatch(k, grid=64, workgroup=64)
    with pytest.raises(rocr.HsaError) as err:
        h.wait()
    assert err.value.status == rocr.Status.ERROR_INVALID_ALLOCATION
    assert [e.status for e in errors] == [err.value.status]
    assert f"kernel needs {lds} bytes of LDS" in gpu.queue_errors[-1]["message"]


def test_a_launch_is_kept_per_queue_and_the_same_packet_launches_the_same(warm):
    rt, k, q, gpu, pp, errors = warm
    for _ in range(2):
        q.dispatch(k, grid=64, workgroup=64).wait()
    records = list(gpu.kernel_records.since(0))[-5:]
    assert [r["name"] for r in records] == ["empty"] * 5
    assert {(r["grid"], r["workgroup"], r["vgprs"], r["lds"]) for r in records} == {
        ((64, 1, 1), (64, 1, 1), records[0]["vgprs"], 0)
    }
    assert [r["dispatch_id"] for r in records] == [0, 1, 2, 3, 4]


# -- the completion signal's words ---------------------------------------------------------
def test_a_monitor_on_a_completion_signal_is_told_after_its_window_was_kept(warm):
    rt, k, q, gpu, pp, errors = warm
    mem = rt.system.memory
    sig = rt.create_signal(1)
    for _ in range(2):  # the signal's words are kept as a window now
        sig.store(1)
        q.dispatch(k, grid=64, workgroup=64, completion_signal=sig).wait()
    sig.store(1)
    woken: list[int] = []
    va = sig.handle + AMD_SIGNAL_VALUE_OFFSET
    mem.watch(pp.mqd.pasid, va, lambda: woken.append(mem.load_i64(pp.mqd.pasid, va)))
    q.dispatch(k, grid=64, workgroup=64, completion_signal=sig).wait()
    assert woken == [0] and sig.load() == 0


# -- the engine's count of fired events ------------------------------------------------------
def test_events_fired_counts_what_fired_in_every_loop_and_survives_a_pickle():
    eng = Engine()
    fired: list[int] = []
    for t in range(1, 11):
        eng.post(t, 0, fired.append, t)
    eng.post(3, 1, fired.append, -1).cancel()
    eng.post(11, 0, fired.append, -2).cancel()  # at the head when peeked: dropped
    assert eng.step() and eng.events_fired == 1
    eng.run_until(4)  # 2, 3, 4 (and the cancelled one at 3, dropped)
    assert fired == [1, 2, 3, 4] and eng.events_fired == 4

    class Mem:
        store_epoch = 0

    assert eng.run_while_epoch(Mem(), 0, 6) is False  # 5, 6; 7 is past the limit
    assert eng.events_fired == 6 and eng.pending() == 4
    assert eng.run_while(lambda: len(fired) < 8) and eng.events_fired == 8
    copy = pickle.loads(pickle.dumps(eng))
    assert copy.events_fired == 8 and copy.pending() == 2
    eng.run_until(100)
    assert fired[-2:] == [9, 10] and eng.events_fired == 10 and eng.peek() is None
    assert eng.pending() == 0 and eng.idle


def test_the_slice_hook_counts_events_fired_by_every_loop():
    eng = Engine()
    at: list[int] = []
    for t in range(1, 8):
        eng.post(t, 0, int)
    eng.post(2, 1, int).cancel()  # never counted
    eng.set_slice_hook(lambda: at.append(eng.events_fired), every=3)
    eng.step()
    eng.run_until(3)
    assert at == [3]
    eng.run_while(lambda: True)
    assert at == [3, 6] and eng.events_fired == 7


# -- the HW scheduler's running time per HQD ------------------------------------------------------
def test_running_time_reaches_each_hqd_its_queues_ran_in():
    from hw_model.config import system_spec

    spec = system_spec("gfx900", scheduler_policy="gem5_round_robin")
    rt = rocr.init(spec=spec)
    try:
        gpu = rt.gpus[0]
        k = rt.load_code_object("builtin:empty").kernel("empty")
        sched = rt.system.gpus[0].scheduler
        qs = [gpu.create_queue(64) for _ in range(len(sched.slots) + 2)]
        handles = [q.dispatch(k, grid=64 * 40, workgroup=64) for _ in range(2) for q in qs]
        for h in handles:
            h.wait()
        st = sched.stats()
        assert st["context_switches"] > 0  # queues moved between HQDs
        per_queue = sum(sched.queue_stats(pp)["running_ps"] for pp in sched.queues)
        hqds = st["hqd_stats"]
        assert sum(h["running_ps"] for h in hqds) == per_queue > 0
        assert all(h["running_ps"] <= h["occupied_ps"] for h in hqds)
    finally:
        rt.shutdown()
