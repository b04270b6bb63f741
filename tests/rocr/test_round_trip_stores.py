"""The stores of a dispatch's publish (write index, packet header, doorbell, completion signal
re-arm) bound once per word, the spin of a wait without a deadline, and the KFD's interrupt
that sets a completion signal's event: fewer bytecodes per round trip (counted, never timed),
the same memory, signals, statuses and waits."""

from __future__ import annotations

import numpy as np
import pytest

import rocr
import rocr.signal as rocr_signal
from hw_model.aql import FenceScope
from rocr import HsaError
from rocr.queue import Queue
from tests.conftest import gpu_buffer


def test_a_round_trip_runs_no_mapping_code_for_its_word_stores(round_trip_work):
    """The write index, header, doorbell and re-arm stores go straight to the memory model,
    the wait's spin skips the deadline arithmetic, the KFD sets an event's flag without a
    call: 795 host bytecodes (rocr 590, rock_emu 197) per round trip, then 649 (rocr 558,
    roct 8, rock_emu 83). Queue.dispatch writes the packet and rings the doorbell itself (no
    runtime, publish, write or doorbell frames), the handle's wait takes the spin's one host
    step itself, the KFD handles the interrupt in its handler with the event page's slots
    as words: 463 (rocr 399, roct 4, rock_emu 60)."""
    work = round_trip_work(20)
    host = work.per_trip("rocr/", "roct/", "rock_emu/")
    assert host <= 477, work.ops
    assert work.per_trip("rock_emu/") <= 62, work.ops
    calls = work.calls_in("rocr/", "roct/", "rock_emu/")
    assert "Runtime._dispatch" not in calls and "Signal._wait" not in calls, calls


@pytest.fixture
def rt():
    r = rocr.init(preset="gfx900")
    yield r
    r.shutdown()


def test_a_bound_word_store_is_the_mappings_store(rt):
    sig = rt.create_signal(5)
    m, off = sig._map, sig._off + rocr_signal.AMD_SIGNAL_VALUE_OFFSET
    store = m.store_u64_at(off)
    store(-3 & 0xFFFFFFFFFFFFFFFF)
    assert sig.load() == -3
    add = m.atomic_add_i64_at(off)
    assert add(10) == -3
    assert sig.load() == 7
    m.va_writer()(m.address + off, (42).to_bytes(8, "little"))
    assert sig.load() == 42
    # Bound stores are checked when bound, as store_u64 checks each store.
    with pytest.raises(IndexError, match=f"offset {m.size - 4}\\+8 outside the {m.size}-byte"):
        m.store_u64_at(m.size - 4)
    with pytest.raises(IndexError, match="offset -8\\+8"):
        m.atomic_add_i64_at(-8)


def test_a_watched_word_is_told_of_a_bound_store(rt):
    """A host wait spinning on memory sees the re-arm and the doorbell: the model's watchers
    run for bound stores as for store_u64."""
    sig = rt.create_signal(1)
    va = sig.handle + rocr_signal.AMD_SIGNAL_VALUE_OFFSET
    seen = []
    mem = rt.system.memory

    def look() -> None:
        seen.append(sig.load())

    mem.watch(sig._map.pasid, va, look)
    try:
        sig._rearm(9)
    finally:
        mem.unwatch(sig._map.pasid, va, look)
    assert seen == [9]


def test_dispatch_takes_the_same_arguments(rt):
    k = rt.load_code_object("builtin:empty").kernel("empty")
    q = rt.gpus[0].create_queue(64)
    s = rt.create_signal(1)
    h = q.dispatch(k, 64, 64, (), s, barrier=True)
    assert h.wait().signal is s and s.load() == 0
    Queue.dispatch(q, k, grid=(64, 2), workgroup=(64, 1)).wait()
    with pytest.raises(TypeError):
        q.dispatch(k, 64, 64, (), None, 0)  # group_segment_size is keyword-only, as before
    with pytest.raises(HsaError) as e:
        q.dispatch(k, grid=64, workgroup=64, completion_signal=3)
    assert e.value.status == rocr.Status.ERROR_INVALID_ARGUMENT
    assert "completion_signal must be a Signal" in str(e.value)
    assert q.doorbell_value == 1
    rt.shutdown()
    with pytest.raises(HsaError) as e:
        q.dispatch(k, grid=64, workgroup=64)
    assert e.value.status == rocr.Status.ERROR_NOT_INITIALIZED


def test_a_sleeping_wait_wakes_on_the_completion_interrupt(rt, monkeypatch):
    """With no spin the host sleeps in AMDKFD_IOC_WAIT_EVENTS on the completion signal's
    event at once: it returns only because the KFD's interrupt handler set the event."""
    monkeypatch.setattr(rocr_signal, "SPIN_BEFORE_SLEEP_PS", 0)
    k = rt.load_code_object("builtin:empty").kernel("empty")
    q = rt.gpus[0].create_queue(64)
    for _ in range(3):  # the second and third on a pooled, re-armed signal
        h = q.dispatch(k, grid=64, workgroup=64)
        assert h.signal.event is not None
        assert h.wait().signal.load() == 0


def test_a_tool_wrapping_the_runtimes_dispatch_sees_each_queue_dispatch(rt):
    """Queue.dispatch runs the dispatch itself, unless a tool replaced `rt._dispatch` on the
    runtime to watch dispatches: then each q.dispatch goes through the tool, once, and the
    runtime's own method it calls runs the dispatch, refusals included."""
    k = rt.load_code_object("builtin:empty").kernel("empty")
    q = rt.gpus[0].create_queue(64)
    seen = []
    own = rt._dispatch

    def watch(queue, *a, **kw):
        seen.append(queue)
        return own(queue, *a, **kw)

    rt._dispatch = watch
    try:
        h = q.dispatch(k, grid=64, workgroup=64)
        assert h.wait().signal.load() == 0 and h.index == 0 and seen == [q]
        with pytest.raises(HsaError) as e:
            q.dispatch(k, grid=64.0, workgroup=64)
        assert e.value.status == rocr.Status.ERROR_INVALID_ARGUMENT
        assert e.value.message == "grid must be an integer, got 64.0 (float)"
        assert seen == [q, q]
        system = FenceScope.SYSTEM
        with pytest.raises(HsaError) as e:
            own("no queue", k, 64, 64, (), None, None, False, system, system)
        assert e.value.status == rocr.Status.ERROR_INVALID_QUEUE
        assert e.value.message == "'no queue' is not a queue of this runtime"
    finally:
        del rt._dispatch
    assert q.dispatch(k, grid=64, workgroup=64).wait().index == 1
    assert seen == [q, q] and q.doorbell_value == 1


def _vector_add_wait(n: int, via_signal: bool, interrupt: bool) -> tuple[int, float, float]:
    """One vector_add of `n` elements on a fresh gfx900 runtime, waited for by the handle or
    by its signal: the value seen, the host time after, the last sum."""
    r = rocr.init(preset="gfx900")
    try:
        k = r.load_code_object("builtin:vector_add").kernel("vector_add")
        a, b = (gpu_buffer(r, np.ones(n, np.float32)) for _ in range(2))
        c = gpu_buffer(r, n)
        q = r.gpus[0].create_queue(64)
        sig = None if interrupt else r.create_signal(1, interrupt=False)
        h = q.dispatch(k, n, 256, (a, b, c, n), sig)
        v = h.signal.wait(rocr.Condition.LT, 1) if via_signal else h.wait().signal.load()
        return v, r.now_ns, float(c.view(np.float32, n)[-1])
    finally:
        r.shutdown()


@pytest.mark.parametrize(
    ("n", "interrupt", "spin"),
    [
        (256, True, None),  # done within the spin's first host step
        (1 << 18, True, None),  # ~290 us: the spin ends, the wait sleeps on the event
        (1 << 18, False, None),  # no event: the wait spins to the end
        (256, True, 0),  # no spin: the wait sleeps at once
    ],
)
def test_a_handles_wait_ends_where_a_wait_on_its_signal_does(monkeypatch, n, interrupt, spin):
    """DispatchHandle.wait takes the spin's first host step itself and hands the rest to
    Signal.wait's loop: the same value, at the same host time, as waiting on the signal."""
    if spin is not None:
        monkeypatch.setattr(rocr_signal, "SPIN_BEFORE_SLEEP_PS", spin)
    by_handle = _vector_add_wait(n, False, interrupt)
    assert by_handle == _vector_add_wait(n, True, interrupt)
    assert by_handle[0] == 0 and by_handle[2] == 2.0


def test_a_restored_machine_wakes_sleeping_waits(tmp_path, monkeypatch):
    """The KFD reads the event page's slots on every signal interrupt: after a checkpoint
    and restore they are still the page's (a sleeping wait returns only if the interrupt
    sets its event)."""
    r = rocr.init(preset="gfx900")
    try:
        k = r.load_code_object("builtin:empty").kernel("empty")
        q = r.gpus[0].create_queue(64)
        q.dispatch(k, grid=64, workgroup=64).wait()
        r.checkpoint(tmp_path / "m.ckpt", q=q, k=k)
    finally:
        r.shutdown()
    r2, extra = rocr.restore(tmp_path / "m.ckpt")
    try:
        monkeypatch.setattr(rocr_signal, "SPIN_BEFORE_SLEEP_PS", 0)
        for i in (1, 2):
            h = extra["q"].dispatch(extra["k"], grid=64, workgroup=64)
            assert h.wait().signal.load() == 0 and h.index == i
    finally:
        r2.shutdown()
