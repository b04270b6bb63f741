"""The thunk: hsaKmt-shaped calls over the in-process transport."""

from __future__ import annotations

import json

import pytest

import roct
from rock_emu import ioctl as io


@pytest.fixture
def kmt():
    t = roct.open_kfd(preset="teaching")
    yield t
    t.close()


def test_open_reads_topology_and_acquires_vms(kmt):
    assert kmt.version == (1, 11)
    cpu, gpu = kmt.nodes
    assert not cpu.is_gpu and gpu.is_gpu
    assert gpu.AMDName == "gfx900"
    assert gpu.NumFComputeCores == 2 * 4
    assert gpu.WaveFrontSize == 64
    assert kmt.get_node_memory_properties(1)[0].SizeInBytes == 1 << 30
    with pytest.raises(roct.HsaKmtError) as info:
        kmt.get_node_properties(7)
    assert info.value.status == roct.HsaKmtStatus.INVALID_NODE_UNIT


def test_alloc_map_and_host_view_share_bytes(kmt):
    a = kmt.alloc_memory(0, 10000)
    assert a.address % 4096 == 0 and a.size == 10000
    kmt.map_memory_to_gpu(a.address)
    a.mapping.array[:4] = [1, 2, 3, 4]
    assert kmt.transport.system.memory.gpu_view(
        kmt.transport.process.pasid, 1, a.address, 4
    ).tolist() == [1, 2, 3, 4]
    kmt.free_memory(a.address)
    with pytest.raises(roct.HsaKmtError):
        kmt.free_memory(a.address)


def test_private_vram_has_no_cpu_mapping(kmt):
    a = kmt.alloc_memory(1, 4096, vram=True, host_access=False)
    assert a.mapping is None
    with pytest.raises(roct.HsaKmtError) as info:
        kmt.alloc_memory(1, 1 << 40, vram=True, host_access=False)
    assert info.value.status == roct.HsaKmtStatus.NO_MEMORY


def test_events_and_waits(kmt):
    ev = kmt.create_event()
    assert ev.EventType == io.KFD_IOC_EVENT_SIGNAL
    assert ev.HWData2 == kmt.event_page.address + 8 * ev.EventId
    kmt.set_event(ev)
    assert kmt.wait_on_event(ev, 1) == roct.HsaKmtStatus.SUCCESS
    # auto-reset consumed it; nothing else will set it: a 1 ms wait times out after 1 ms,
    # a wait without a timeout is refused at once
    assert kmt.wait_on_event(ev, 1) == roct.HsaKmtStatus.WAIT_TIMEOUT
    with pytest.raises(roct.HsaKmtError) as info:
        kmt.wait_on_event(ev, 0xFFFFFFFF)
    assert info.value.status == roct.HsaKmtStatus.WAIT_FAILURE


def test_queue_priority_is_mapped_to_kfd_range(kmt):
    ring = kmt.alloc_memory(0, 4096)
    kmt.map_memory_to_gpu(ring.address)
    q = kmt.create_queue(
        1,
        ring_base=ring.address,
        ring_size=4096,
        read_ptr=ring.address + 128,
        write_ptr=ring.address + 56,
        priority=3,
    )
    pp = kmt.transport.system.gpus[0].scheduler.runlist[0]
    assert pp.mqd.priority == 15
    assert q.Queue_DoorBell == q.doorbell.address + q.doorbell_offset
    with pytest.raises(roct.HsaKmtError):
        kmt.create_queue(
            1,
            ring_base=ring.address,
            ring_size=4096,
            read_ptr=ring.address,
            write_ptr=ring.address,
            priority=9,
        )


def test_create_queue_with_a_ring_under_the_kfd_minimum(kmt):
    # hsaKmtCreateQueue passes ring_size through; the KFD clamps it up to
    # KFD_MIN_QUEUE_RING_SIZE (kfd_chardev.c), so the ring needs room for 1024 bytes.
    ring = kmt.alloc_memory(0, 4096)
    ptrs = kmt.alloc_memory(0, 4096)
    for a in (ring, ptrs):
        kmt.map_memory_to_gpu(a.address)
    small = dict(read_ptr=ptrs.address + 128, write_ptr=ptrs.address + 56, ring_size=64)
    q = kmt.create_queue(1, ring_base=ring.address, **small)
    (mqd,) = [x for p in json.loads(kmt.read_debugfs("mqds")) for x in p["queues"]]
    assert (mqd["queue_id"], mqd["ring_size"]) == (q.QueueId, io.KFD_MIN_QUEUE_RING_SIZE)
    with pytest.raises(roct.HsaKmtError) as info:
        kmt.create_queue(1, ring_base=ring.address + 4096 - 64, **small)
    assert info.value.status == roct.HsaKmtStatus.INVALID_PARAMETER
    assert "KFD_MIN_QUEUE_RING_SIZE" in info.value.message
