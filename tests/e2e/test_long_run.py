"""Long runs keep flat resources: completion signals and KFD events are reused, kernarg space
is recycled, machines are freed, traces are bounded, event slots come back at once.

`HSAEMU_SOAK_DISPATCHES=100000 python -m pytest tests/e2e/test_long_run.py` runs the loop at
full size (bench/long_run.py prints the time and memory per window).
"""

from __future__ import annotations

import gc
import json
import os

import numpy as np
import pytest

import rocr
import rocr.runtime
from hw_model.system import System
from hw_model.trace import RingLog, Tracer
from rock_emu import ioctl as io
from roct import HsaKmtError

SOAK = int(os.environ.get("HSAEMU_SOAK_DISPATCHES", "1200"))


def kfd_process(rt) -> dict:
    (proc,) = json.loads(rt.thunk.read_debugfs("mqds"))
    return proc


def test_dispatch_loop_keeps_signals_events_and_memory_flat(rt):
    q = rt.gpus[0].create_queue(size=64)
    empty = rt.load_code_object("builtin").kernel("empty")
    q.dispatch(empty, grid=(64,), workgroup=(64,)).wait()
    before = kfd_process(rt)
    signals = len(rt._signals)
    used = dict(rt.system.memory.used)
    for _ in range(SOAK):
        q.dispatch(empty, grid=(64,), workgroup=(64,)).wait()
    after = kfd_process(rt)
    # Without reuse every dispatch held a signal and a KFD event: the 4096th failed.
    assert len(after["events"]) == len(before["events"])
    assert after["buffer_objects"] == before["buffer_objects"]
    assert len(rt._signals) == signals
    assert dict(rt.system.memory.used) == used
    assert q.load_read_index() == SOAK + 1


def test_a_kept_handle_keeps_its_signal_and_timestamps(rt):
    q = rt.gpus[0].create_queue(size=64)
    empty = rt.load_code_object("builtin").kernel("empty")
    kept = q.dispatch(empty, grid=(64,), workgroup=(64,)).wait()
    start, end = kept.dispatch_time()
    for _ in range(20):
        q.dispatch(empty, grid=(64,), workgroup=(64,)).wait()
    # Reused signals went to the dropped handles, never to the one still held.
    # (times agree to the 100 MHz GPU timestamp's 10 ns resolution)
    assert kept.signal.load() == 0
    assert kept.dispatch_time() == pytest.approx((start, end), abs=20)
    sig = kept.detach_signal()
    del kept
    gc.collect()
    h = q.dispatch(empty, grid=(64,), workgroup=(64,))
    assert h.signal is not sig and not sig.destroyed and sig.load() == 0
    h.wait()
    sig.destroy()


def test_a_dropped_handle_of_an_unfinished_kernel_is_not_reused_early(rt, buffers):
    q = rt.gpus[0].create_queue(size=64)
    exe = rt.load_code_object("builtin")
    n = 1 << 16
    a, b, c = buffers(np.ones(n)), buffers(np.ones(n)), buffers(n)
    q.dispatch(exe.kernel("vector_add"), grid=(n,), workgroup=(256,), args=(a, b, c, n))
    gc.collect()  # the handle is gone while the kernel still runs
    h = q.dispatch(exe.kernel("empty"), grid=(64,), workgroup=(64,))
    h.wait()
    assert np.all(c.view(np.float32) == 2.0)
    assert q.load_read_index() == 2


def test_kernarg_chunks_are_reused_once_their_packets_retired(rt, buffers, monkeypatch):
    monkeypatch.setattr(rocr.runtime, "KERNARG_CHUNK", 4096)  # 64 dispatches per chunk
    q = rt.gpus[0].create_queue(size=64)
    k = rt.load_code_object("builtin").kernel("vector_add")
    n = 64
    a, b, c = buffers(np.arange(n)), buffers(np.ones(n)), buffers(n)
    for i in range(400):
        a.view(np.float32)[:] = i
        q.dispatch(k, grid=(n,), workgroup=(64,), args=(a, b, c, n)).wait()
        assert c.view(np.float32)[0] == i + 1
    assert len(rt._kernarg_chunks) <= 2


def test_kernarg_chunk_in_use_by_an_unretired_packet_is_not_reused(rt, buffers, monkeypatch):
    monkeypatch.setattr(rocr.runtime, "KERNARG_CHUNK", 4096)
    q = rt.gpus[0].create_queue(size=256)
    k = rt.load_code_object("builtin").kernel("vector_add")
    n = 64
    a, b = buffers(np.ones(n)), buffers(np.ones(n))
    outs = [buffers(n) for _ in range(130)]
    # Packets written but not rung: their kernargs must survive two chunks' worth of
    # later allocations.
    for i, c in enumerate(outs):
        pkt = rt.dispatch_packet(k, (n,), (64,), (a, b, c, n))
        q.write_packet(q.add_write_index(1), pkt)
        assert i < 64 or len(rt._kernarg_chunks) >= 2
    q.ring_doorbell(len(outs) - 1)
    done = rt.create_signal(1)
    q.submit(rt.dispatch_packet(rt.load_code_object("builtin").kernel("empty"), 64, 64, (), done))
    done.wait(rocr.Condition.LT, 1)
    assert all(np.all(c.view(np.float32) == 2.0) for c in outs)
    assert len(rt._kernarg_chunks) == 3


def test_machines_are_freed_after_their_last_process_shuts_down():
    gc.collect()
    base = sum(isinstance(o, System) for o in gc.get_objects())
    for _ in range(30):
        rt = rocr.init(preset="teaching")
        q = rt.gpus[0].create_queue(size=64)
        q.dispatch(rt.load_code_object("builtin").kernel("empty"), 64, 64).wait()
        second = rocr.init(system=rt.system)  # a second process on the machine
        second.shutdown()
        rt.shutdown()
    del rt, q, second
    gc.collect()
    assert sum(isinstance(o, System) for o in gc.get_objects()) == base


def test_a_machine_lives_while_a_process_uses_it():
    rt = rocr.init(preset="teaching")
    system = rt.system
    first = rocr.init(system=system)
    rt.shutdown()
    del rt
    gc.collect()
    q = first.gpus[0].create_queue(size=64)
    q.dispatch(first.load_code_object("builtin").kernel("empty"), 64, 64).wait()
    assert first.system is system
    first.shutdown()


def test_signal_event_slots_are_reused_lowest_first(rt):
    th = rt.thunk
    events = [th.create_event() for _ in range(8)]
    slots = [(e.HWData2 - th.event_page.address) // 8 for e in events]
    th.destroy_event(events[5])
    th.destroy_event(events[2])
    again = th.create_event()
    assert (again.HWData2 - th.event_page.address) // 8 == slots[2]
    # 10,000 create/destroy cycles: the limit is about live events, not events ever made.
    for _ in range(10_000):
        th.destroy_event(th.create_event())


def test_the_event_slot_limit_is_enomem_naming_the_limit(rt):
    th = rt.thunk
    made = []
    with pytest.raises(HsaKmtError) as e:
        for _ in range(io.KFD_SIGNAL_EVENT_LIMIT + 1):
            made.append(th.create_event())
    assert "KFD_SIGNAL_EVENT_LIMIT" in e.value.message
    th.destroy_event(made.pop())
    made.append(th.create_event())  # a freed slot is usable at once
    assert len(made) <= io.KFD_SIGNAL_EVENT_LIMIT


def test_trace_is_a_ring_buffer_that_keeps_the_newest_events():
    tr = Tracer(max_events=100)
    for i in range(1000):
        tr.instant("rocr", f"e{i}", i)
    assert len(tr.events) <= 100 and tr.dropped == 1000 - len(tr.events)
    assert tr.events[-1].name == "e999"
    assert [e.name for e in tr.events.since(995)] == [f"e{i}" for i in range(995, 1000)]
    assert tr.events.since(0)[0].name == f"e{tr.dropped}"


def test_kernel_records_are_bounded(rt):
    g = rt.system.gpus[0]
    g.kernel_records.maxlen = 16
    q = rt.gpus[0].create_queue(size=64)
    empty = rt.load_code_object("builtin").kernel("empty")
    for _ in range(50):
        q.dispatch(empty, 64, 64).wait()
    assert isinstance(g.kernel_records, RingLog) and len(g.kernel_records) <= 16
    assert g.kernel_records.total == 50 and g.kernel_records[-1]["dispatch_id"] == 49
