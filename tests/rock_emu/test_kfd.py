"""The emulated KFD, driven with raw ioctl bytes as user space would."""

from __future__ import annotations

import errno
import json

import pytest

from rock_emu import ioctl as io
from rock_emu import machine
from rock_emu.ioctl import KfdError
from rock_emu.kfd import (
    KFD_EVENT_TIMEOUT_INFINITE,
    KFD_MMAP_GPU_ID_SHIFT,
    KFD_MMAP_TYPE_DOORBELL,
    USER_HEAP_VA,
)
from rock_emu.topology import TOPOLOGY_ROOT, parse_properties


@pytest.fixture
def kfd():
    return machine(preset="teaching")


def call(proc, request, args):
    buf = io.encode_args(args, request)
    proc.ioctl(request, buf)
    return type(args).from_bytes(bytes(buf))


def gpu_id(kfd):
    return kfd.system.gpus[0].gpu_id


def ready(kfd):
    p = kfd.open("test")
    call(p, io.AMDKFD_IOC_ACQUIRE_VM, io.AcquireVmArgs(drm_fd=3, gpu_id=gpu_id(kfd)))
    return p


def alloc(p, kfd, va, size, flags=io.KFD_IOC_ALLOC_MEM_FLAGS_GTT, map_gpu=True):
    a = call(
        p,
        io.AMDKFD_IOC_ALLOC_MEMORY_OF_GPU,
        io.AllocMemoryOfGpuArgs(va_addr=va, size=size, gpu_id=gpu_id(kfd), flags=int(flags)),
    )
    if map_gpu:
        p.memory.write(p.pasid, USER_HEAP_VA, gpu_id(kfd).to_bytes(4, "little"))
        m = call(
            p,
            io.AMDKFD_IOC_MAP_MEMORY_TO_GPU,
            io.MapMemoryToGpuArgs(handle=a.handle, device_ids_array_ptr=USER_HEAP_VA, n_devices=1),
        )
        assert m.n_success == 1
    return a


def test_get_version_is_the_installed_header_version(kfd):
    a = call(kfd.open(), io.AMDKFD_IOC_GET_VERSION, io.GetVersionArgs())
    assert (a.major_version, a.minor_version) == (1, 11)


def test_unknown_and_malformed_requests_get_errnos(kfd):
    p = kfd.open()
    with pytest.raises(KfdError) as info:
        p.ioctl(0xDEADBEEF, bytearray(8))
    assert info.value.errno == errno.ENOTTY
    with pytest.raises(KfdError) as info:
        p.ioctl(io.AMDKFD_IOC_CREATE_QUEUE, bytearray(10))
    assert info.value.errno == errno.EINVAL
    assert "bytes" in info.value.message


def test_alloc_requires_acquired_vm_and_one_memory_type(kfd):
    p = kfd.open()
    with pytest.raises(KfdError, match="ACQUIRE_VM"):
        call(
            p,
            io.AMDKFD_IOC_ALLOC_MEMORY_OF_GPU,
            io.AllocMemoryOfGpuArgs(
                va_addr=0x100000,
                size=4096,
                gpu_id=gpu_id(kfd),
                flags=io.KFD_IOC_ALLOC_MEM_FLAGS_GTT,
            ),
        )
    call(p, io.AMDKFD_IOC_ACQUIRE_VM, io.AcquireVmArgs(gpu_id=gpu_id(kfd)))
    with pytest.raises(KfdError) as info:
        call(
            p,
            io.AMDKFD_IOC_ALLOC_MEMORY_OF_GPU,
            io.AllocMemoryOfGpuArgs(
                va_addr=0x100000,
                size=4096,
                gpu_id=gpu_id(kfd),
                flags=int(io.KFD_IOC_ALLOC_MEM_FLAGS_GTT | io.KFD_IOC_ALLOC_MEM_FLAGS_VRAM),
            ),
        )
    assert info.value.errno == errno.EINVAL
    with pytest.raises(KfdError, match="gpu_id"):
        call(
            p,
            io.AMDKFD_IOC_ALLOC_MEMORY_OF_GPU,
            io.AllocMemoryOfGpuArgs(
                va_addr=0x100000, size=4096, gpu_id=1234, flags=io.KFD_IOC_ALLOC_MEM_FLAGS_GTT
            ),
        )


def test_vram_exhaustion_is_enomem_and_freeing_a_mapped_bo_is_ebusy(kfd):
    p = ready(kfd)
    with pytest.raises(KfdError) as info:
        alloc(p, kfd, 0x1_0000_0000, 2 << 30, io.KFD_IOC_ALLOC_MEM_FLAGS_VRAM, map_gpu=False)
    assert info.value.errno == errno.ENOMEM
    a = alloc(p, kfd, 0x100000, 4096)
    with pytest.raises(KfdError) as info:
        call(p, io.AMDKFD_IOC_FREE_MEMORY_OF_GPU, io.FreeMemoryOfGpuArgs(handle=a.handle))
    assert info.value.errno == errno.EBUSY


def test_create_queue_encodes_doorbell_offset_like_the_driver(kfd):
    p = ready(kfd)
    ring = alloc(p, kfd, 0x200000, 4096)
    ptrs = alloc(p, kfd, 0x300000, 4096)
    args = io.CreateQueueArgs(
        ring_base_address=0x200000,
        ring_size=4096,
        gpu_id=gpu_id(kfd),
        queue_type=io.KFD_IOC_QUEUE_TYPE_COMPUTE_AQL,
        queue_percentage=100,
        queue_priority=7,
        read_pointer_address=0x300000 + 128,
        write_pointer_address=0x300000 + 56,
    )
    q0 = call(p, io.AMDKFD_IOC_CREATE_QUEUE, args)
    q1 = call(p, io.AMDKFD_IOC_CREATE_QUEUE, args)
    assert (q0.queue_id, q1.queue_id) == (0, 1)
    base = KFD_MMAP_TYPE_DOORBELL | (gpu_id(kfd) << KFD_MMAP_GPU_ID_SHIFT)
    assert q0.doorbell_offset == base
    assert q1.doorbell_offset == base | 8  # SOC15: byte offset of a 64-bit doorbell
    assert ring.handle != ptrs.handle
    call(p, io.AMDKFD_IOC_DESTROY_QUEUE, io.DestroyQueueArgs(queue_id=0))
    with pytest.raises(KfdError) as info:
        call(p, io.AMDKFD_IOC_DESTROY_QUEUE, io.DestroyQueueArgs(queue_id=0))
    assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("ring_size", 3000, "power of 2"),
        ("queue_percentage", 101, "queue_percentage"),
        ("queue_priority", 16, "queue_priority"),
        ("ring_base_address", 0x900000, "not inside one allocation"),
        ("queue_type", io.KFD_IOC_QUEUE_TYPE_COMPUTE, "queue_type"),  # PM4: not emulated
    ],
)
def test_create_queue_rejects_bad_arguments(kfd, field, value, match):
    p = ready(kfd)
    alloc(p, kfd, 0x200000, 4096)
    alloc(p, kfd, 0x300000, 4096)
    args = dict(
        ring_base_address=0x200000,
        ring_size=4096,
        gpu_id=gpu_id(kfd),
        queue_type=io.KFD_IOC_QUEUE_TYPE_COMPUTE_AQL,
        queue_percentage=100,
        read_pointer_address=0x300080,
        write_pointer_address=0x300038,
    )
    args[field] = value
    with pytest.raises(KfdError, match=match):
        call(p, io.AMDKFD_IOC_CREATE_QUEUE, io.CreateQueueArgs(**args))


def _wait(p, ids, wait_all, timeout_ms):
    data = b"".join(io.EventData(event_id=i).to_bytes() for i in ids)
    p.memory.write(p.pasid, USER_HEAP_VA, data)
    return call(
        p,
        io.AMDKFD_IOC_WAIT_EVENTS,
        io.WaitEventsArgs(
            events_ptr=USER_HEAP_VA,
            num_events=len(ids),
            wait_for_all=int(wait_all),
            timeout=timeout_ms,
        ),
    ).wait_result


def test_signal_events_set_reset_and_wait_any_all(kfd):
    p = ready(kfd)
    page = alloc(p, kfd, 0x400000, io.KFD_SIGNAL_EVENT_LIMIT * 8)
    e0 = call(
        p,
        io.AMDKFD_IOC_CREATE_EVENT,
        io.CreateEventArgs(
            event_type=io.KFD_IOC_EVENT_SIGNAL, auto_reset=0, event_page_offset=page.handle
        ),
    )
    e1 = call(
        p,
        io.AMDKFD_IOC_CREATE_EVENT,
        io.CreateEventArgs(event_type=io.KFD_IOC_EVENT_SIGNAL, auto_reset=1),
    )
    assert (e0.event_slot_index, e1.event_slot_index) == (0, 1)
    call(p, io.AMDKFD_IOC_SET_EVENT, io.SetEventArgs(event_id=e0.event_id))
    assert _wait(p, [e0.event_id, e1.event_id], False, 10) == io.KFD_IOC_WAIT_RESULT_COMPLETE
    # wait-all with e1 unsignaled and nothing pending on the GPU: a 10 ms wait sleeps its
    # 10 ms and times out (kfd_wait_on_events); a wait without a timeout is a deadlock, said
    # at once
    t0 = kfd.system.host_now
    assert _wait(p, [e0.event_id, e1.event_id], True, 10) == io.KFD_IOC_WAIT_RESULT_TIMEOUT
    assert kfd.system.host_now - t0 >= 10 * 10**9
    with pytest.raises(KfdError) as info:
        _wait(p, [e0.event_id, e1.event_id], True, KFD_EVENT_TIMEOUT_INFINITE)
    assert info.value.errno == errno.EDEADLK
    call(p, io.AMDKFD_IOC_SET_EVENT, io.SetEventArgs(event_id=e1.event_id))
    assert _wait(p, [e0.event_id, e1.event_id], True, 10) == io.KFD_IOC_WAIT_RESULT_COMPLETE
    # e1 auto-resets after a successful wait; e0 (manual reset) stays signaled until reset
    call(p, io.AMDKFD_IOC_RESET_EVENT, io.ResetEventArgs(event_id=e0.event_id))
    assert _wait(p, [e0.event_id], True, 0) == io.KFD_IOC_WAIT_RESULT_TIMEOUT  # poll
    assert _wait(p, [e1.event_id], True, 0) == io.KFD_IOC_WAIT_RESULT_TIMEOUT
    with pytest.raises(KfdError) as info:
        call(p, io.AMDKFD_IOC_SET_EVENT, io.SetEventArgs(event_id=999))
    assert info.value.errno == errno.EINVAL


def test_wait_times_out_in_host_time_when_device_is_busy(kfd):
    p = ready(kfd)
    page = alloc(p, kfd, 0x400000, io.KFD_SIGNAL_EVENT_LIMIT * 8)
    e = call(
        p,
        io.AMDKFD_IOC_CREATE_EVENT,
        io.CreateEventArgs(event_type=io.KFD_IOC_EVENT_SIGNAL, event_page_offset=page.handle),
    )
    sysm = kfd.system
    sysm.engine.schedule(10**12, lambda: None)  # keep the device busy for 1 s
    t0 = sysm.host_now
    assert _wait(p, [e.event_id], True, 5) == io.KFD_IOC_WAIT_RESULT_TIMEOUT
    assert sysm.host_now - t0 >= 5 * 10**9


def test_clock_counters_advance_with_host_time(kfd):
    p = kfd.open()
    a = call(p, io.AMDKFD_IOC_GET_CLOCK_COUNTERS, io.GetClockCountersArgs(gpu_id=gpu_id(kfd)))
    kfd.system.host_advance(10**9)  # 1 ms
    b = call(p, io.AMDKFD_IOC_GET_CLOCK_COUNTERS, io.GetClockCountersArgs(gpu_id=gpu_id(kfd)))
    assert b.system_clock_freq == 10**9
    assert b.system_clock_counter - a.system_clock_counter >= 10**6
    assert b.gpu_clock_counter - a.gpu_clock_counter == pytest.approx(100_000, rel=0.01)


def test_apertures_two_step_query(kfd):
    p = kfd.open()
    a = call(p, io.AMDKFD_IOC_GET_PROCESS_APERTURES_NEW, io.GetProcessAperturesNewArgs())
    assert a.num_of_nodes == 1
    call(
        p,
        io.AMDKFD_IOC_GET_PROCESS_APERTURES_NEW,
        io.GetProcessAperturesNewArgs(
            kfd_process_device_apertures_ptr=USER_HEAP_VA, num_of_nodes=1
        ),
    )
    ap = io.ProcessDeviceApertures.from_bytes(
        p.memory.read(p.pasid, USER_HEAP_VA, io.ProcessDeviceApertures.SIZE)
    )
    assert ap.gpu_id == gpu_id(kfd)
    assert ap.lds_base == 1 << 48 and ap.scratch_base == 2 << 48
    assert ap.gpuvm_base < ap.gpuvm_limit < 1 << 48


def test_topology_reports_the_preset(kfd):
    props = parse_properties(kfd.read_sysfs(f"{TOPOLOGY_ROOT}/nodes/1/properties"))
    spec = kfd.system.spec.gpu
    assert props["simd_count"] == spec.num_cus * 4
    assert props["max_waves_per_simd"] == 10
    assert props["lds_size_in_kb"] == 64
    assert props["wave_front_size"] == 64
    assert props["gfx_target_version"] == 90000
    assert props["num_cp_queues"] == spec.hqd_slots
    assert kfd.read_sysfs(f"{TOPOLOGY_ROOT}/nodes/1/name").strip() == "gfx900"
    with pytest.raises(FileNotFoundError):
        kfd.read_sysfs(f"{TOPOLOGY_ROOT}/nodes/9/properties")


def test_closing_a_process_frees_its_memory(kfd):
    p = ready(kfd)
    used_before = dict(kfd.system.memory.used)
    alloc(p, kfd, 0x1000000, 1 << 20, io.KFD_IOC_ALLOC_MEM_FLAGS_VRAM)
    assert kfd.system.memory.used[1] == used_before[1] + (1 << 20)
    p.close()
    assert kfd.system.memory.used[1] == used_before[1]
    with pytest.raises(KfdError) as info:
        call(p, io.AMDKFD_IOC_GET_VERSION, io.GetVersionArgs())
    assert info.value.errno == errno.EBADF


def _queue_args(kfd, ring_base, ring_size):
    return io.CreateQueueArgs(
        ring_base_address=ring_base,
        ring_size=ring_size,
        gpu_id=gpu_id(kfd),
        queue_type=io.KFD_IOC_QUEUE_TYPE_COMPUTE_AQL,
        queue_percentage=100,
        read_pointer_address=0x300080,
        write_pointer_address=0x300038,
    )


@pytest.mark.parametrize("ring_size", [0, 64, 512])
def test_create_queue_clamps_a_ring_under_kfd_min_queue_ring_size(kfd, ring_size):
    # kfd_chardev.c set_queue_properties_from_user clamps ring_size up to
    # KFD_MIN_QUEUE_RING_SIZE (1024 bytes) and the args come back with the clamped size.
    p = ready(kfd)
    alloc(p, kfd, 0x200000, 4096)
    alloc(p, kfd, 0x300000, 4096)
    out = call(p, io.AMDKFD_IOC_CREATE_QUEUE, _queue_args(kfd, 0x200000, ring_size))
    assert out.ring_size == io.KFD_MIN_QUEUE_RING_SIZE == 1024
    (mqd,) = [q for proc in json.loads(kfd.read_debugfs("mqds")) for q in proc["queues"]]
    assert mqd["ring_size"] == 1024  # the CP wraps the ring at 16 packets
    assert mqd["hw"]["slot"] is not None  # an active queue, mapped to an HQD


def test_a_clamped_ring_must_fit_in_its_allocation(kfd):
    p = ready(kfd)
    alloc(p, kfd, 0x200000, 4096)
    alloc(p, kfd, 0x300000, 4096)
    # 64 bytes at the end of the BO: clamped to 1024, the ring would run 960 bytes past it.
    with pytest.raises(KfdError) as info:
        call(p, io.AMDKFD_IOC_CREATE_QUEUE, _queue_args(kfd, 0x200000 + 4096 - 64, 64))
    assert info.value.errno == errno.EFAULT
    assert "clamped up to KFD_MIN_QUEUE_RING_SIZE" in str(info.value)
    assert "ring_size 64" in str(info.value)
    # A full-size ring there is refused as before, and a power of 2 is still required.
    with pytest.raises(KfdError) as info:
        call(p, io.AMDKFD_IOC_CREATE_QUEUE, _queue_args(kfd, 0x200000, 96))
    assert info.value.errno == errno.EINVAL
    assert "power of 2" in str(info.value)
