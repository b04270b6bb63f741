"""Memory: BOs in per-process VMs, VA lookup, and the access checks the page tables make."""

import numpy as np
import pytest

from hw_model.memory import PAGE_SIZE, MemKind, Memory, MemoryFault, OutOfMemory


@pytest.fixture
def mem():
    m = Memory({0: 1 << 30, 1: 1 << 20})
    m.create_vm(1)
    m.create_vm(2)
    return m


def test_lookup_and_gpu_access_needs_mapping(mem):
    bo = mem.allocate(1, 0x10000, 8192, MemKind.SYSTEM, 0)
    assert mem.find(1, 0x10000 + 100) is bo
    assert mem.find(1, 0x10000 + 8192) is None
    with pytest.raises(MemoryFault, match="not mapped for GPU node 1"):
        mem.gpu_view(1, 1, 0x10000, 4)
    bo.gpu_nodes.add(1)
    mem.gpu_view(1, 1, 0x10000, 4)[:] = 7
    assert mem.host_view(1, 0x10000, 4).tolist() == [7, 7, 7, 7]


def test_access_past_the_end_and_outside_48_bits_fault(mem):
    bo = mem.allocate(1, 0x10000, PAGE_SIZE, MemKind.SYSTEM, 0)
    bo.gpu_nodes.add(1)
    with pytest.raises(MemoryFault, match="past the end"):
        mem.gpu_view(1, 1, 0x10000 + PAGE_SIZE - 2, 4)
    with pytest.raises(MemoryFault) as info:
        mem.gpu_view(1, 1, 1 << 50, 4)
    assert info.value.aperture


def test_vms_are_separate(mem):
    mem.allocate(1, 0x10000, PAGE_SIZE, MemKind.SYSTEM, 0)
    with pytest.raises(MemoryFault, match="no buffer object"):
        mem.host_view(2, 0x10000, 4)
    mem.allocate(2, 0x10000, PAGE_SIZE, MemKind.SYSTEM, 0)  # same VA, other process: fine


def test_overlap_rejected_and_capacity_enforced(mem):
    mem.allocate(1, 0x10000, 2 * PAGE_SIZE, MemKind.SYSTEM, 0)
    with pytest.raises(ValueError, match="overlaps"):
        mem.allocate(1, 0x11000, PAGE_SIZE, MemKind.SYSTEM, 0)
    with pytest.raises(OutOfMemory):
        mem.allocate(1, 0x100000, 2 << 20, MemKind.VRAM, 1)


def test_private_vram_is_not_host_visible(mem):
    mem.allocate(1, 0x20000, PAGE_SIZE, MemKind.VRAM, 1, host_access=False)
    with pytest.raises(MemoryFault, match="not host accessible"):
        mem.host_view(1, 0x20000, 4)


def test_stores_wake_watchers_and_mmio_hooks(mem):
    bo = mem.allocate(1, 0x10000, PAGE_SIZE, MemKind.SYSTEM, 0)
    seen = []
    mem.watch(1, 0x10008, lambda: seen.append("watch"))
    bo.on_write = lambda off, n: seen.append(("hook", off, n))
    mem.store_i64(1, 0x10008, 5)
    assert seen == [("hook", 8, 8), "watch"]
    assert mem.atomic_add_i64(1, 0x10008, -1) == 5
    assert mem.load_i64(1, 0x10008) == 4


def test_free_returns_capacity(mem):
    bo = mem.allocate(1, 0x100000, 1 << 20, MemKind.VRAM, 1)
    mem.free(bo)
    mem.allocate(1, 0x100000, 1 << 20, MemKind.VRAM, 1)
    assert np.all(mem.host_view(1, 0x100000, 16) == 0)
