"""SDMA queues through AMDKFD_IOC_CREATE_QUEUE, and the SDMA engine running their rings."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest

from hw_model import sdma_packets as sp
from rock_emu import ioctl as io
from rock_emu import machine
from rock_emu.ioctl import KfdError
from rock_emu.kfd import KFD_MMAP_GPU_ID_SHIFT, KFD_MMAP_TYPE_DOORBELL
from tests.rock_emu.test_kfd import alloc, call, gpu_id, ready

RING, PTRS, DATA = 0x200000, 0x300000, 0x400000


@pytest.fixture
def kfd(request):
    return machine(preset="teaching", trace=request.node.get_closest_marker("trace") is not None)


def sdma_args(kfd, qtype=io.KFD_IOC_QUEUE_TYPE_SDMA):
    return io.CreateQueueArgs(
        ring_base_address=RING,
        ring_size=4096,
        gpu_id=gpu_id(kfd),
        queue_type=qtype,
        queue_percentage=100,
        queue_priority=15,
        read_pointer_address=PTRS,
        write_pointer_address=PTRS + 8,
    )


def process_with_ring(kfd):
    p = ready(kfd)
    alloc(p, kfd, RING, 4096)
    alloc(p, kfd, PTRS, 4096)
    return p


def test_sdma_queues_fill_the_engines_then_enomem_device_wide(kfd):
    # Teaching (like Vega 10): 2 engines x 2 RLC queues = 4 SDMA queues on the device
    a, b = process_with_ring(kfd), process_with_ring(kfd)
    base = KFD_MMAP_TYPE_DOORBELL | (gpu_id(kfd) << KFD_MMAP_GPU_ID_SHIFT)
    offsets = [call(p, io.AMDKFD_IOC_CREATE_QUEUE, sdma_args(kfd)).doorbell_offset for p in (a, b)]
    offsets += [call(p, io.AMDKFD_IOC_CREATE_QUEUE, sdma_args(kfd)).doorbell_offset for p in (a, b)]
    # allocate_sdma_queue: engine = id % 2, RLC queue = id / 2; SOC15 static doorbells:
    # engine base 0xF0 + 2*engine, queue 1 in the mirror half (+512)
    assert [o - base for o in offsets] == [
        0xF0 * 8,
        0xF2 * 8,
        (0xF0 + 512) * 8,
        (0xF2 + 512) * 8,
    ]
    c = process_with_ring(kfd)
    with pytest.raises(KfdError, match="no more SDMA queue") as info:
        call(c, io.AMDKFD_IOC_CREATE_QUEUE, sdma_args(kfd))
    assert info.value.errno == errno.ENOMEM
    # compute queues are not affected, and a destroyed SDMA queue frees its slot
    call(c, io.AMDKFD_IOC_CREATE_QUEUE, sdma_args(kfd, io.KFD_IOC_QUEUE_TYPE_COMPUTE_AQL))
    call(a, io.AMDKFD_IOC_DESTROY_QUEUE, io.DestroyQueueArgs(queue_id=0))
    q = call(c, io.AMDKFD_IOC_CREATE_QUEUE, sdma_args(kfd))
    assert q.doorbell_offset & 0x1FFF == 0xF0 * 8


def test_xgmi_sdma_queues_need_xgmi_engines():
    kfd = machine(preset="teaching")
    p = process_with_ring(kfd)
    with pytest.raises(KfdError, match="SDMA_XGMI") as info:
        call(p, io.AMDKFD_IOC_CREATE_QUEUE, sdma_args(kfd, io.KFD_IOC_QUEUE_TYPE_SDMA_XGMI))
    assert info.value.errno == errno.ENOMEM
    mi200 = machine(preset="gfx90a")
    p = process_with_ring(mi200)
    call(p, io.AMDKFD_IOC_CREATE_QUEUE, sdma_args(mi200, io.KFD_IOC_QUEUE_TYPE_SDMA_XGMI))
    hqds = json.loads(mi200.read_sysfs("/sys/kernel/debug/kfd/hqds"))[0]
    engines = {e["engine"]: e for e in hqds["sdma"]}
    assert len(engines) == 5  # 2 PCIe + 3 XGMI SDMA engines on aldebaran
    assert engines[2]["type"] == "sdma_xgmi"
    assert engines[2]["queues"][0]["type"] == "sdma_xgmi"
    assert engines[2]["rlc_queues"] == 8


def test_sdma_queues_are_in_the_runlist_with_their_type(kfd):
    p = process_with_ring(kfd)
    call(p, io.AMDKFD_IOC_CREATE_QUEUE, sdma_args(kfd, io.KFD_IOC_QUEUE_TYPE_COMPUTE_AQL))
    call(p, io.AMDKFD_IOC_CREATE_QUEUE, sdma_args(kfd))
    rls = json.loads(kfd.read_sysfs("/sys/kernel/debug/kfd/rls"))[0]
    assert [q["type"] for q in rls["queues"]] == ["compute_aql"]
    assert [(q["type"], q["engine"], q["queue_id"]) for q in rls["sdma_queues"]] == [("sdma", 0, 1)]
    mqds = json.loads(kfd.read_sysfs("/sys/kernel/debug/kfd/mqds"))
    assert [q["type"] for q in mqds[0]["queues"]] == ["compute_aql", "sdma"]


class Ring:
    """Writes packets into an SDMA ring and rings the doorbell, as ROCr's BlitSdma does."""

    def __init__(self, kfd, p):
        self.kfd, self.p = kfd, p
        q = call(p, io.AMDKFD_IOC_CREATE_QUEUE, sdma_args(kfd))
        frame = q.doorbell_offset & ~0x1FFF
        self.db = p.mmap(frame, 8192)
        self.db_off = q.doorbell_offset & 0x1FFF
        self.wptr = 0

    def submit(self, *packets):
        data = b"".join(pk.encode() for pk in packets)
        self.p.memory.write(self.p.pasid, RING + self.wptr, data)
        self.wptr += len(data)
        self.p.memory.write(self.p.pasid, PTRS + 8, self.wptr.to_bytes(8, "little"))
        self.db.store_u64(self.db_off, self.wptr)

    def run(self):
        self.kfd.system.run_until_idle()

    @property
    def rptr(self):
        return int.from_bytes(self.p.memory.read(self.p.pasid, PTRS, 8), "little")

    def u32(self, va):
        return int.from_bytes(self.p.memory.read(self.p.pasid, va, 4), "little")

    def u64(self, va):
        return int.from_bytes(self.p.memory.read(self.p.pasid, va, 8), "little", signed=True)


@pytest.mark.trace
def test_engine_runs_copy_fill_fence_atomic_timestamp_from_the_ring(kfd):
    p = process_with_ring(kfd)
    alloc(p, kfd, DATA, 1 << 16)
    vram = 0x1_0000_0000
    alloc(p, kfd, vram, 1 << 16, io.KFD_IOC_ALLOC_MEM_FLAGS_VRAM)
    src = np.arange(1024, dtype=np.uint32).tobytes()
    p.memory.write(p.pasid, DATA, src)
    sig = DATA + 0x8000
    p.memory.write(p.pasid, sig, (3).to_bytes(8, "little"))
    r = Ring(kfd, p)
    r.submit(
        sp.Timestamp(DATA + 0x9000),
        sp.CopyLinear(DATA, vram, 4096),  # host -> VRAM
        sp.ConstantFill(vram + 4096, 0xCAFEF00D, 256),
        sp.CopyLinear(vram, DATA + 0x4000, 4096 + 256),  # back to host, fill included
        sp.Timestamp(DATA + 0x9008),
        sp.Atomic(sig, -1),
        sp.Fence(DATA + 0xA000, 2015),
    )
    assert r.rptr == 0
    r.run()
    out = np.frombuffer(p.memory.read(p.pasid, DATA + 0x4000, 4096 + 256), dtype=np.uint32)
    assert (out[:1024] == np.arange(1024)).all()
    assert (out[1024:] == 0xCAFEF00D).all()
    assert r.u64(sig) == 2  # ATOMIC ADD64 of -1
    assert r.u32(DATA + 0xA000) == 2015  # FENCE
    start, end = r.u64(DATA + 0x9000), r.u64(DATA + 0x9008)
    assert 0 < start < end  # TIMESTAMP: the GPU clock moved across the copies
    assert r.rptr == r.wptr == 7 * 32  # read offset written back after each packet
    tr = kfd.system.tracer.to_chrome()["traceEvents"]
    names = [e["name"] for e in tr if e.get("cat") == "sdma" and e.get("ph") == "X"]
    assert names[:4] == ["TIMESTAMP", "COPY_LINEAR", "CONSTANT_FILL", "COPY_LINEAR"]


def test_poll_regmem_waits_for_the_value_then_continues(kfd):
    p = process_with_ring(kfd)
    alloc(p, kfd, DATA, 1 << 16)
    dep = DATA + 0x100
    p.memory.write(p.pasid, dep, (1).to_bytes(8, "little"))
    r = Ring(kfd, p)
    r.submit(sp.PollRegmem(dep, 0), sp.Fence(DATA + 0x200, 7))
    r.run()
    assert r.u32(DATA + 0x200) == 0  # blocked on the poll
    assert r.rptr == 0
    p.memory.write(p.pasid, dep, (0).to_bytes(8, "little"))  # the dependency completes
    r.run()
    assert r.u32(DATA + 0x200) == 7
    assert r.rptr == 64


def test_unknown_packet_stops_the_queue_and_says_why(kfd):
    p = process_with_ring(kfd)
    alloc(p, kfd, DATA, 4096)
    r = Ring(kfd, p)
    p.memory.write(p.pasid, RING, (2).to_bytes(4, "little") + bytes(28))
    r.wptr = 32
    r.db.store_u64(r.db_off, 32)
    r.run()
    rls = json.loads(kfd.read_sysfs("/sys/kernel/debug/kfd/rls"))[0]
    assert "unknown SDMA packet: op 2" in rls["sdma_queues"][0]["error"]


def test_a_bad_address_is_a_vm_fault_from_the_sdma_client(kfd):
    p = process_with_ring(kfd)
    alloc(p, kfd, DATA, 4096)
    r = Ring(kfd, p)
    r.submit(sp.CopyLinear(0x7000_0000, DATA, 64), sp.Fence(DATA + 0x100, 1))
    r.run()
    mqds = json.loads(kfd.read_sysfs("/sys/kernel/debug/kfd/mqds"))[0]
    fault = mqds["vm_faults"][0]
    assert fault["client"] == "SDMA0"
    assert fault["va"] == 0x7000_0000
    assert r.u32(DATA + 0x100) == 0  # the queue stopped at the faulting copy
    assert "COPY_LINEAR" in mqds["queues"][0]["hw"]["error"]
