"""The device's per-packet paths with less work: the one-lookup VA cache and what drops it,
the descriptor and entry token read with one check, the mailbox store of a completion signal
without the checked call, the engine's own heap entries and its host-spin loop, and the HW
scheduler's open accounting interval. Each answer is the one the checked path gives."""

from __future__ import annotations

import pickle

import pytest

import rocr
from hw_model.engine import Engine
from hw_model.memory import PAGE_SIZE, MemKind, Memory, MemoryFault
from hw_model.structs import (
    AMD_SIGNAL_EVENT_ID_OFFSET,
    AMD_SIGNAL_EVENT_MAILBOX_PTR_OFFSET,
    AMD_SIGNAL_VALUE_OFFSET,
)
from hw_model.system import System

VA = 0x10000


# -- the VA cache ------------------------------------------------------------------------
def test_a_freed_bo_is_not_reached_through_the_cache(mem):
    bo = mem.allocate(1, VA, PAGE_SIZE, MemKind.SYSTEM, 0)
    mem.store_u64(1, VA + 8, 5)  # cached now
    assert mem.load_u64(1, VA + 8) == 5
    mem.free(bo)
    for access in (
        lambda: mem.store_u64(1, VA + 8, 6),
        lambda: mem.load_u64(1, VA + 8),
        lambda: mem.atomic_add_i64(1, VA + 8, 1),
        lambda: mem.write(1, VA + 8, b"\0" * 8),
    ):
        with pytest.raises(MemoryFault, match="no buffer object is mapped there"):
            access()
    assert mem.plain(1, VA + 8, 8) is None
    again = mem.allocate(1, VA, PAGE_SIZE, MemKind.SYSTEM, 0)
    mem.store_u64(1, VA + 8, 7)  # the new BO at the same VA takes the store
    assert int(again.data[8]) == 7 and int(bo.data[8]) == 5


def test_a_destroyed_address_space_is_not_reached_through_the_cache(mem):
    mem.allocate(1, VA, PAGE_SIZE, MemKind.SYSTEM, 0)
    mem.store_u64(1, VA, 1)
    mem.destroy_vm(1)
    with pytest.raises(MemoryFault):
        mem.load_u64(1, VA)
    mem.create_vm(1)  # the same PASID again, nothing mapped yet
    with pytest.raises(MemoryFault):
        mem.load_u64(1, VA)
    bo = mem.allocate(1, VA, PAGE_SIZE, MemKind.SYSTEM, 0)
    assert mem.load_u64(1, VA) == 0 and mem.plain(1, VA, 8) == (bo, 0)


def test_a_cached_address_is_checked_again_on_every_access(mem):
    bo = mem.allocate(1, VA, PAGE_SIZE, MemKind.SYSTEM, 0)
    bo.gpu_nodes.add(1)
    assert mem.gpu_view(1, 1, VA, 8).size == 8  # cached
    bo.gpu_nodes.discard(1)  # AMDKFD_IOC_UNMAP_MEMORY_FROM_GPU
    with pytest.raises(MemoryFault, match="not mapped for GPU node 1"):
        mem.gpu_view(1, 1, VA, 8)
    with pytest.raises(MemoryFault, match="not mapped for GPU node 1"):
        mem.store_u64(1, VA, 1, 1)
    assert mem.plain(1, VA, 8, 1) is None
    with pytest.raises(MemoryFault, match="past the end"):
        mem.store_u64(1, VA + PAGE_SIZE - 4, 1)  # same BO, too long
    bo.host_access = False
    with pytest.raises(MemoryFault, match="not host accessible"):
        mem.store_u64(1, VA, 1)
    bo.host_access = True
    assert mem.plain(1, VA, 8) == (bo, 0)
    mem.watch(1, VA, lambda: None)  # a monitor added after the address was cached
    assert mem.plain(1, VA, 8) is None
    mem._watchers.clear()
    bo.on_write = lambda off, n: None  # an MMIO hook added after the address was cached
    assert mem.plain(1, VA, 8) is None


def test_locate_is_the_checked_access(mem):
    bo = mem.allocate(1, VA, 2 * PAGE_SIZE, MemKind.SYSTEM, 0)
    bo.gpu_nodes.add(1)
    assert mem.locate(1, VA + 64, 64, 1) == (bo, 64)
    with pytest.raises(MemoryFault, match="not mapped for GPU node 2"):
        mem.locate(1, VA + 64, 64, 2)
    with pytest.raises(MemoryFault, match="past the end"):
        mem.locate(1, VA + 2 * PAGE_SIZE - 8, 64, 1)


# -- the CP's per-packet reads and writes -------------------------------------------------
def test_a_dispatch_reads_descriptor_and_entry_with_one_check(monkeypatch):
    rt = rocr.init(preset="gfx900")
    try:
        k = rt.load_code_object("builtin:empty").kernel("empty")
        q = rt.gpus[0].create_queue(64)
        q.dispatch(k, grid=64, workgroup=64).wait()  # the launch is known now
        calls = {"gpu_view": 0, "locate": 0}
        real_view, real_locate = Memory.gpu_view, Memory.locate

        def gpu_view(self, *a):
            calls["gpu_view"] += 1
            return real_view(self, *a)

        def locate(self, *a):
            calls["locate"] += 1
            return real_locate(self, *a)

        monkeypatch.setattr(Memory, "gpu_view", gpu_view)
        monkeypatch.setattr(Memory, "locate", locate)
        h = q.dispatch(k, grid=64, workgroup=64)
        h.wait()
        # At most one check for the kernel descriptor and its entry token together (the
        # fetch reads the ring through the queue's window of it, not `gpu_view`).
        assert calls["gpu_view"] == 0 and calls["locate"] <= 1
        before = dict(calls)
        h = q.dispatch(k, grid=64, workgroup=64)
        h.wait()
        # The queue's last launch again: compared with it, no checked access at all.
        assert calls == before
        assert h.signal.load() == 0
        records = list(rt.system.gpus[0].kernel_records.since(0))
        assert [r["name"] for r in records[-2:]] == ["empty", "empty"]
    finally:
        rt.shutdown()


def test_retire_sets_the_packet_type_invalid_and_keeps_the_other_header_bits():
    rt = rocr.init(preset="gfx900")
    try:
        k = rt.load_code_object("builtin:empty").kernel("empty")
        q = rt.gpus[0].create_queue(64)
        q.dispatch(k, grid=64, workgroup=64, barrier=True).wait()
        pp = next(iter(rt.system.gpus[0].queues.values()))
        mem, mqd = rt.system.memory, pp.mqd
        header = mem.load_u64(mqd.pasid, mqd.ring_base) & 0xFFFF
        assert header & 0xFF == 1  # HSA_PACKET_TYPE_INVALID
        assert header >> 8 & 1  # the barrier bit, as the producer wrote it
    finally:
        rt.shutdown()


def _signal_with_mailbox(system: System, pasid: int, node: int):
    mem = system.memory
    mem.create_vm(pasid)
    sig = mem.allocate(pasid, VA, PAGE_SIZE, MemKind.SYSTEM, 0)
    box = mem.allocate(pasid, VA + PAGE_SIZE, PAGE_SIZE, MemKind.SYSTEM, 0)
    sig.gpu_nodes.add(node)
    box.gpu_nodes.add(node)
    mem.store_u64(pasid, VA + AMD_SIGNAL_VALUE_OFFSET, 1)
    mem.store_u64(pasid, VA + AMD_SIGNAL_EVENT_MAILBOX_PTR_OFFSET, VA + PAGE_SIZE + 16)
    mem.write(pasid, VA + AMD_SIGNAL_EVENT_ID_OFFSET, (42).to_bytes(4, "little"))
    return mem


@pytest.mark.parametrize("monitored", [False, True])
def test_completion_signal_mailbox_store_and_interrupt(monitored):
    system = System(preset="gfx900")
    gpu = system.gpus[0]
    mem = _signal_with_mailbox(system, 7, gpu.node)
    woken, irqs = [], []
    system.register_interrupt_handler(lambda *a: irqs.append((system.engine.now, *a)))
    if monitored:  # the mailbox store then goes through the checked call, which tells it
        mem.watch(7, VA + PAGE_SIZE + 16, lambda: woken.append(1))
    epoch = mem.store_epoch
    gpu.signal_completion(7, VA, 1000, 2000, "")
    assert mem.load_i64(7, VA + AMD_SIGNAL_VALUE_OFFSET) == 0
    assert mem.load_u64(7, VA + PAGE_SIZE + 16) == 42
    assert mem.store_epoch == epoch + 4  # three signal words and the mailbox
    assert woken == ([1] if monitored else [])
    system.run_until_idle()
    latency = gpu.spec.interrupt_latency_ps
    assert irqs == [(latency, gpu.node, "signal_event", 7, {"event_id": 42})]


# -- the engine -----------------------------------------------------------------------------
class _Box:
    store_epoch = 0


def test_run_while_epoch_stops_after_the_store_or_before_the_limit():
    e = Engine()
    box = _Box()
    fired = []

    def store(tag):
        fired.append(tag)
        box.store_epoch += 1

    e.schedule(10, fired.append, "a")
    e.schedule(20, store, "b")
    e.schedule(20, fired.append, "c")  # same tick, after the store: left for later
    assert e.run_while_epoch(box, 0, 100)
    assert fired == ["a", "b"] and e.now == 20 and e.events_fired == 2
    e.schedule(50, fired.append, "d")
    cancelled = e.schedule(5, fired.append, "x")
    cancelled.cancel()
    assert not e.run_while_epoch(box, 1, 40)  # "d" is past the limit: it stays pending
    assert fired == ["a", "b", "c"] and e.peek() == 70 and e.pending() == 1
    e.run_until(100)
    assert fired == ["a", "b", "c", "d"]


def test_run_while_epoch_calls_the_slice_hook():
    e = Engine()
    box = _Box()
    hooks = []
    e.set_slice_hook(lambda: hooks.append(e.events_fired), every=2)
    for i in range(5):
        e.schedule(i, lambda: None)
    assert not e.run_while_epoch(box, 0, 1000)
    assert hooks == [2, 4]


def test_events_are_heap_entries_that_cancel_and_report_their_tick():
    e = Engine()
    ev = e.schedule(10, print, "x", priority=3)
    assert ev.tick == 10 and ev.fn is print and ev.args == ("x",) and not ev.cancelled
    hk = e.schedule(10, print, housekeeping=True)
    assert hk.housekeeping and not ev.housekeeping
    ev.cancel()
    assert ev.cancelled and ev.args == ()
    assert e.only_housekeeping() and e.pending() == 1


def _noted(log: list, tag: str) -> None:
    log.append(tag)


def test_a_pickled_engine_keeps_the_order_of_ties():
    e = Engine()
    e.schedule(10, print, "before")
    state = pickle.loads(pickle.dumps(e))
    log: list = []
    # Restored: its heap holds the first event; one scheduled now at the same tick and
    # priority comes after it, as it would have in the original.
    state._heap[0][3] = _noted
    state._heap[0][4] = (log, "first")
    state.schedule(10, _noted, log, "second")
    e.schedule(10, print, "x")  # the original's counter is not the copy's
    state.run_until(20)
    assert log == ["first", "second"]


# -- HW scheduler accounting ------------------------------------------------------------
def test_queue_statistics_include_the_interval_still_open():
    rt = rocr.init(preset="gfx900")
    try:
        k = rt.load_code_object("builtin:empty").kernel("empty")
        q = rt.gpus[0].create_queue(64)
        for _ in range(3):
            q.dispatch(k, grid=64, workgroup=64).wait()
        sched = rt.system.gpus[0].scheduler
        pp = next(iter(rt.system.gpus[0].queues.values()))
        before = sched.queue_stats(pp)
        slot_before = sched.stats()["hqd_stats"][pp.slot]["occupied_ps"]
        rt.system.run_for(1_000_000)  # mapped and idle all along: no state change
        after = sched.queue_stats(pp)
        assert after["mapped_ps"] == before["mapped_ps"] + 1_000_000
        assert after["running_ps"] == before["running_ps"]
        assert sched.stats()["hqd_stats"][pp.slot]["occupied_ps"] == slot_before + 1_000_000
        # Running time is counted packet by packet, and the slot's occupancy covers it.
        st = sched.stats()
        hqd = st["hqd_stats"][pp.slot]
        assert 0 < hqd["running_ps"] == after["running_ps"] < hqd["occupied_ps"]
    finally:
        rt.shutdown()
