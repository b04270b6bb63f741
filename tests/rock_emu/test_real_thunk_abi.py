"""What the real libhsakmt 5.2 and ROCr 5.2 ask of the driver and the hardware beyond what our
own thunk uses (docs/real-rocm.md): checked in-process, byte for byte as the real stack sends it.
"""

from __future__ import annotations

import errno
import struct

import numpy as np
import pytest

import rocr
from hw_model import sdma_packets as sp
from rock_emu import ioctl as io
from rock_emu import machine
from rock_emu.ioctl import KfdError
from rock_emu.kfd import (
    KFD_MMAP_GPU_ID_SHIFT,
    KFD_MMAP_TYPE_MMIO,
    USER_HEAP_VA,
    VEGA10_GB_ADDR_CONFIG_GOLDEN,
)
from tests.rock_emu.test_kfd import alloc, call, gpu_id, ready
from tests.rock_emu.test_sdma_queues import DATA, Ring, process_with_ring


@pytest.fixture
def kfd():
    return machine(preset="teaching")


def test_set_trap_handler_is_accepted_per_gpu(kfd):
    # ROCr's GpuAgent::BindTrapHandler asserts hsaKmtSetTrapHandler succeeds
    p = ready(kfd)
    args = io.SetTrapHandlerArgs(tba_addr=0x7000_0000_0000, tma_addr=0x7000_0000_1000)
    args.gpu_id = gpu_id(kfd)
    call(p, io.AMDKFD_IOC_SET_TRAP_HANDLER, args)
    assert p.trap_handlers[gpu_id(kfd)] == (0x7000_0000_0000, 0x7000_0000_1000)
    args.gpu_id = 0x1234
    with pytest.raises(KfdError) as e:
        call(p, io.AMDKFD_IOC_SET_TRAP_HANDLER, args)
    assert e.value.errno == errno.EINVAL and "0x1234" in str(e.value)


def test_get_tile_config_reports_gfx9_tables(kfd):
    p = ready(kfd)
    p.memory.write(p.pasid, USER_HEAP_VA, b"\xff" * 256)
    a = call(
        p,
        io.AMDKFD_IOC_GET_TILE_CONFIG,
        io.GetTileConfigArgs(
            tile_config_ptr=USER_HEAP_VA,
            macro_tile_config_ptr=USER_HEAP_VA + 128,
            num_tile_configs=4,
            num_macro_tile_configs=64,
            gpu_id=gpu_id(kfd),
        ),
    )
    assert (a.num_tile_configs, a.num_macro_tile_configs) == (32, 16)
    assert a.gb_addr_config == VEGA10_GB_ADDR_CONFIG_GOLDEN
    raw = p.memory.read(p.pasid, USER_HEAP_VA, 256)
    assert raw[:16] == bytes(16) and raw[16:128] == b"\xff" * 112  # only 4 entries asked
    assert raw[128:192] == bytes(64) and raw[192:] == b"\xff" * 64  # at most the 16 it has


def test_mmio_remap_page_allocates_and_maps_through_the_kfd_fd(kfd):
    # libhsakmt map_mmio: ALLOC(MMIO_REMAP, one page), then mmap(kfd_fd, the returned offset)
    p = ready(kfd)
    flags = (
        io.KFD_IOC_ALLOC_MEM_FLAGS_MMIO_REMAP
        | io.KFD_IOC_ALLOC_MEM_FLAGS_WRITABLE
        | io.KFD_IOC_ALLOC_MEM_FLAGS_COHERENT
    )
    a = alloc(p, kfd, 0x7F00_0000_0000, 4096, flags)
    assert a.mmap_offset == KFD_MMAP_TYPE_MMIO | gpu_id(kfd) << KFD_MMAP_GPU_ID_SHIFT
    m = p.mmap(a.mmap_offset, 4096)
    assert m.address == 0x7F00_0000_0000 and m.size == 4096
    with pytest.raises(KfdError) as e:
        call(
            p,
            io.AMDKFD_IOC_ALLOC_MEMORY_OF_GPU,
            io.AllocMemoryOfGpuArgs(
                va_addr=0x7F00_0001_0000, size=8192, gpu_id=gpu_id(kfd), flags=flags
            ),
        )
    assert e.value.errno == errno.EINVAL and "one page" in str(e.value)


def test_clock_counters_of_the_cpu_node_give_gpu_counter_zero(kfd):
    # libhsakmt hsaKmtGetClockCounters asks with gpu_id 0 for the CPU node
    p = ready(kfd)
    kfd.system.host_advance(5_000_000)
    a = call(p, io.AMDKFD_IOC_GET_CLOCK_COUNTERS, io.GetClockCountersArgs(gpu_id=0))
    assert a.gpu_clock_counter == 0
    assert a.system_clock_freq == 1_000_000_000 and a.system_clock_counter > 0


def test_first_event_of_any_type_sets_the_event_page(kfd):
    # hsaKmtCreateEvent passes the events page with the first event, whatever its type
    p = ready(kfd)
    page = alloc(p, kfd, 0x10_0000, io.KFD_SIGNAL_EVENT_LIMIT * 8)
    mem_ev = call(
        p,
        io.AMDKFD_IOC_CREATE_EVENT,
        io.CreateEventArgs(
            event_type=io.KFD_IOC_EVENT_MEMORY, event_page_offset=page.handle, auto_reset=1
        ),
    )
    sig = call(
        p,
        io.AMDKFD_IOC_CREATE_EVENT,
        io.CreateEventArgs(event_type=io.KFD_IOC_EVENT_SIGNAL, auto_reset=1),
    )
    assert mem_ev.event_id != sig.event_id
    slot = p.memory.read(p.pasid, 0x10_0000 + 8 * sig.event_slot_index, 8)
    assert slot == b"\xff" * 8  # the page the memory event brought: slot UNSIGNALED


def test_rocr_tight_sdma_packets_and_hdp_flush_run(kfd):
    # amd_blit_sdma.cpp SubmitCommand on gfx9: HDP flush (a register POLL_REGMEM), COPY_LINEAR,
    # ATOMIC, FENCE, packed with their sizeof(SDMA_PKT_*), no padding
    p = process_with_ring(kfd)
    alloc(p, kfd, DATA, 1 << 16)
    src = np.arange(256, dtype=np.uint32).tobytes()
    p.memory.write(p.pasid, DATA, src)
    sig = DATA + 0x8000
    p.memory.write(p.pasid, sig, (1).to_bytes(8, "little"))
    hdp_flush = struct.pack("<6I", 0x8, 0, 0x80000000, 0, 0, 0)  # sdma_registers.h
    ring = (
        hdp_flush
        + sp.CopyLinear(DATA, DATA + 0x4000, len(src)).encode()[:28]
        + sp.Atomic(sig, -1).encode()
        + sp.Fence(DATA + 0xA000, 77).encode()[:16]
    )
    r = Ring(kfd, p)
    p.memory.write(p.pasid, 0x200000, ring)
    r.wptr = len(ring)
    p.memory.write(p.pasid, 0x300000 + 8, r.wptr.to_bytes(8, "little"))
    r.db.store_u64(r.db_off, r.wptr)
    r.run()
    assert p.memory.read(p.pasid, DATA + 0x4000, len(src)) == src
    assert r.u64(sig) == 0 and r.u32(DATA + 0xA000) == 77
    assert r.rptr == r.wptr == 24 + 28 + 32 + 16


def _pm4(opcode: int, body: list[int]) -> list[int]:
    return [3 << 30 | (len(body) - 1) << 16 | opcode << 8, *body]


def _pm4_ib_packet(ib_va: int, n_dw: int) -> bytes:
    """ROCr AqlQueue::ExecutePM4's amd_aql_pm4_ib packet (gfx9): an INDIRECT_BUFFER jump."""
    jump = _pm4(0x3F, [ib_va & 0xFFFFFFFC, ib_va >> 32, n_dw | 1 << 23])
    header = 0  # HSA_PACKET_TYPE_VENDOR_SPECIFIC
    return struct.pack("<HH4II8IQ", header, 1, *jump, 0xA, *([0] * 8), 0)


@pytest.mark.parametrize(
    ("opcode", "status"),
    [(0x58, None), (0x46, rocr.Status.ERROR_INVALID_PACKET_FORMAT)],
    ids=["acquire_mem", "event_write"],
)
def test_pm4_indirect_buffer_packet_of_execute_pm4(opcode, status):
    # GpuAgent::InvalidateCodeCaches sends a PM4 ACQUIRE_MEM this way after every code load
    rt = rocr.init(preset="teaching")
    errors = []
    q = rt.gpus[0].create_queue(64, callback=lambda e, _q: errors.append(e))
    pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
    ib = pool.allocate(4096)
    rt.allow_access(rt.gpus, ib)
    words = _pm4(0x10, [0]) + _pm4(opcode, [0] * 6)  # NOP, then the command
    ib.view(np.uint32)[: len(words)] = words
    q.write_packet(0, _pm4_ib_packet(ib.address, len(words)))
    q.ring_doorbell(0)
    rt.system.run_until_idle()
    rt.poll_async()
    if status is None:
        assert q.load_read_index() == 1 and not errors
    else:
        assert errors and errors[0].status == status  # an opcode the CP does not emulate
        assert q.load_read_index() == 0
