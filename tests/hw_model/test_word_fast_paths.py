"""The CP's word stores (read index, ring header, completion signal) skip the checked calls
only when no MMIO hook or monitor must see them; the bytes and the wake-ups stay the same."""

import pytest

import rocr
from hw_model.memory import PAGE_SIZE, MemKind
from hw_model.structs import AMD_SIGNAL_VALUE_OFFSET


def test_plain_access_needs_checks_passed_and_nothing_to_tell(mem):
    bo = mem.allocate(1, 0x10000, PAGE_SIZE, MemKind.SYSTEM, 0)
    assert mem.plain(1, 0x10000 + 8, 8) == (bo, 8)
    assert mem.plain(1, 0x10000, 8, 3) is None  # not mapped for GPU node 3
    assert mem.plain(1, 0x10000 + PAGE_SIZE - 4, 8) is None  # runs past the end
    assert mem.plain(1, 0x90000, 8) is None  # nothing mapped there
    mem.watch(1, 0x10008, lambda: None)
    assert mem.plain(1, 0x10000 + 8, 8) is None  # a monitor must see the store
    other = mem.allocate(1, 0x20000, PAGE_SIZE, MemKind.SYSTEM, 0)
    mem.unwatch(1, 0x10008, mem._watchers[(1, 0x10008)][0])
    other.on_write = lambda off, n: None
    assert mem.plain(1, 0x20000, 8) is None  # MMIO: the hook must see the store


def test_atomic_add_returns_old_wraps_and_tells_hook_and_monitor_once(mem):
    bo = mem.allocate(1, 0x10000, PAGE_SIZE, MemKind.SYSTEM, 0)
    hooked, woken = [], []
    bo.on_write = lambda off, n: hooked.append((off, n))
    mem.watch(1, 0x10010, lambda: woken.append(1))
    mem.store_i64(1, 0x10010, -(2**63))
    epoch = mem.store_epoch
    assert mem.atomic_add_i64(1, 0x10010, -1) == -(2**63)
    assert mem.load_i64(1, 0x10010) == 2**63 - 1  # two's complement wrap, as the C atomic
    assert hooked[-1] == (0x10, 8) and len(hooked) == 2 and len(woken) == 2
    assert mem.store_epoch == epoch + 1


@pytest.mark.parametrize("monitored", [False, True])
def test_completion_signal_same_with_or_without_a_monitor(monitored):
    rt = rocr.init(preset="gfx900")
    try:
        k = rt.load_code_object("builtin:empty").kernel("empty")
        q = rt.gpus[0].create_queue(64)
        done = rt.create_signal(1)
        mem = rt.system.memory
        woken = []
        if monitored:  # the checked path: the monitor hears the decrement
            pasid = next(p for p in mem.vms if mem.find(p, done.handle) is not None)
            mem.watch(pasid, done.handle + AMD_SIGNAL_VALUE_OFFSET, lambda: woken.append(1))
        q.dispatch(k, grid=64, workgroup=64, completion_signal=done).wait()
        assert done.load() == 0
        start, end = done.dispatch_time()
        assert 0 < start < end
        assert q.load_read_index() == 1
        assert q.packet_bytes(0)[0] == 1  # header back to INVALID
        assert len(woken) == (1 if monitored else 0)
    finally:
        rt.shutdown()
