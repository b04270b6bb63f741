"""Several processes on one KFD: isolation of doorbells, queues, events and memory; the
runlist the KFD builds from all of them."""

from __future__ import annotations

import json

import numpy as np
import pytest

import roct
from hw_model.config import system_spec
from hw_model.memory import MemKind, MemoryFault
from hw_model.structs import AMD_QUEUE_READ_DISPATCH_ID_OFFSET, AMD_QUEUE_WRITE_DISPATCH_ID_OFFSET
from rock_emu import machine
from rock_emu.kfd import KFD_MMAP_GPU_ID_SHIFT, KFD_MMAP_TYPE_DOORBELL
from roct import InProcess, Thunk

RING = 64 * 64


def open_two(**spec):
    kfd = machine(spec=system_spec("teaching", **spec))
    return kfd, Thunk(InProcess(kfd, name="A")), Thunk(InProcess(kfd, name="B"))


@pytest.fixture
def two():
    kfd, a, b = open_two()
    yield kfd, a, b
    for t in (a, b):
        if not t.transport.process.closed:
            t.close()


def make_queue(t: Thunk, priority: int = 0):
    ring = t.alloc_memory(0, RING, aql_queue=True)
    t.map_memory_to_gpu(ring.address)
    q = t.alloc_memory(0, 4096, coherent=True)
    t.map_memory_to_gpu(q.address)
    return t.create_queue(
        1,
        ring_base=ring.address,
        ring_size=RING,
        read_ptr=q.address + AMD_QUEUE_READ_DISPATCH_ID_OFFSET,
        write_ptr=q.address + AMD_QUEUE_WRITE_DISPATCH_ID_OFFSET,
        priority=priority,
    )


def pp(kfd, t, res):
    return kfd.system.gpus[0].queue_by_id(t.transport.process.pasid, res.QueueId)


def test_each_process_has_its_own_doorbells_queue_ids_events_and_va_space(two):
    kfd, a, b = two
    pa, pb = a.transport.process, b.transport.process
    assert pa.pasid != pb.pasid
    qa, qb = make_queue(a), make_queue(b)
    assert qa.QueueId == qb.QueueId == 0
    assert qa.Queue_DoorBell != qb.Queue_DoorBell
    ea, eb = a.create_event(), b.create_event()
    assert ea.EventId == eb.EventId == 0  # slot 0 of each process's own event page
    assert ea.HWData2 != eb.HWData2 or pa.event_page is not pb.event_page
    # The same virtual address in two processes names two different allocations.
    xa, xb = a.alloc_memory(0, 4096), b.alloc_memory(0, 4096)
    assert xa.address == xb.address
    xa.mapping.array[:4] = 1
    xb.mapping.array[:4] = 2
    assert xa.mapping.array[:4].tolist() == [1] * 4 and xb.mapping.array[:4].tolist() == [2] * 4


def test_a_process_cannot_ring_another_process_doorbell(two):
    kfd, a, b = two
    qa = make_queue(a)
    mem = kfd.system.memory
    pasid_b = b.transport.process.pasid
    with pytest.raises(MemoryFault):
        mem.store_u64(pasid_b, qa.Queue_DoorBell, 0)  # A's doorbell is not in B's VM
    # Mapping A's doorbell offset from B gives B's own doorbell frame.
    offset = KFD_MMAP_TYPE_DOORBELL | (a.gpu_ids[1] << KFD_MMAP_GPU_ID_SHIFT)
    frame = b.transport.mmap(offset, 8192)
    assert frame.address != qa.doorbell.address
    frame.store_u64(qa.doorbell_offset, 0)
    assert pp(kfd, a, qa).doorbell_value == -1


def test_a_process_cannot_wait_on_or_set_another_process_events(two):
    kfd, a, b = two
    ea = a.create_event()
    with pytest.raises(roct.HsaKmtError, match="does not exist in this process"):
        b.wait_on_event(ea, 0)
    eb = b.create_event()
    a.set_event(ea)  # same event id, other process: B's event stays unsignaled
    assert b.wait_on_event(eb, 1) == roct.HsaKmtStatus.WAIT_TIMEOUT  # 1 ms passes
    with pytest.raises(roct.HsaKmtError) as info:
        b.wait_on_event(eb, 0xFFFFFFFF)  # no timeout, nothing left that could set it
    assert info.value.status == roct.HsaKmtStatus.WAIT_FAILURE
    assert a.wait_on_event(ea, 1) == roct.HsaKmtStatus.SUCCESS


def test_a_process_cannot_touch_another_process_queue(two):
    kfd, a, b = two
    make_queue(a)
    qa1 = make_queue(a)
    make_queue(b)
    with pytest.raises(roct.HsaKmtError, match="queue id 1 does not exist in this process"):
        b.destroy_queue(qa1.QueueId)
    with pytest.raises(roct.HsaKmtError, match="does not exist"):
        b.update_queue(qa1.QueueId, priority=3)
    assert pp(kfd, a, qa1) is not None and pp(kfd, a, qa1).priority == 7


def test_closing_a_process_destroys_its_queues_and_frees_its_memory(two):
    kfd, a, b = two
    mem = kfd.system.memory
    sched = kfd.system.gpus[0].scheduler
    pasid_a, pasid_b = a.transport.process.pasid, b.transport.process.pasid
    qa = [make_queue(a) for _ in range(2)]
    for _ in range(2):
        make_queue(b)
    b.alloc_memory(0, 1 << 20)
    assert len(sched.runlist) == 4
    assert [p.slot for p in sched.queues] == [0, 1, None, None]
    a.destroy_queue(qa[0].QueueId)
    assert sched.queues[1].pasid == pasid_b and sched.queues[1].slot == 0  # took the free HQD
    b.close()
    assert pasid_b not in mem.vms
    assert mem.used[0] == sum(bo.size for bo in mem.vms[pasid_a] if bo.kind == MemKind.SYSTEM)
    assert [(p.pasid, p.queue_id) for p in sched.runlist] == [(pasid_a, 1)]
    a.close()
    assert mem.used == {0: 0, 1: 0}
    assert sched.runlist == [] and all(s is None for s in sched.slots)


def test_runlist_counts_processes_against_vmids():
    spec = system_spec("teaching")
    gpu = spec.gpu.model_copy(update={"vmids_for_kfd": 1})
    kfd = machine(spec=spec.model_copy(update={"gpu": gpu}))
    a, b = Thunk(InProcess(kfd, name="A")), Thunk(InProcess(kfd, name="B"))
    make_queue(a)
    summary = kfd.runlist_summary()
    assert summary["gpus"][0]["processes"] == 1 and not summary["oversubscribed"]
    make_queue(b, priority=3)
    summary = kfd.runlist_summary()
    assert summary["gpus"][0]["processes"] == 2 and summary["oversubscribed"]
    rls = json.loads(kfd.read_sysfs("/sys/kernel/debug/kfd/rls"))[0]
    assert [(q["process"], q["priority"], q["hqd"]) for q in rls["queues"]] == [
        ("A", 7, 0),
        ("B", 15, None),  # one VMID: B's queue waits although an HQD is free
    ]
    mqds = json.loads(kfd.read_sysfs("/sys/kernel/debug/kfd/mqds"))
    assert [p["name"] for p in mqds] == ["A", "B"]
    assert mqds[1]["queues"][0]["hw"]["state"] == "unmapped"
    with pytest.raises(FileNotFoundError):
        kfd.read_sysfs("/sys/kernel/debug/kfd/nothing")
    a.close()
    b.close()


def test_update_queue_percentage_zero_takes_the_queue_off_the_runlist(two):
    kfd, a, _ = two
    q = make_queue(a)
    sched = kfd.system.gpus[0].scheduler
    a.update_queue(q.QueueId, percentage=0, priority=1)
    p = pp(kfd, a, q)
    assert p not in sched.runlist and p.slot is None and p.priority == 9
    assert not kfd.runlist_summary()["gpus"][0]["queues"]
    a.update_queue(q.QueueId, percentage=100)
    assert p in sched.runlist and p.slot is not None
    assert np.array_equal([p.active], [True])
