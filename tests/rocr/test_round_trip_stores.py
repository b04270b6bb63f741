"""The stores of a dispatch's publish (write index, packet header, doorbell, completion signal
re-arm) bound once per word, the spin of a wait without a deadline, and the KFD's interrupt
that sets a completion signal's event: fewer bytecodes per round trip (counted, never timed),
the same memory, signals, statuses and waits."""

from __future__ import annotations

import pytest

import rocr
import rocr.signal as rocr_signal
from rocr import HsaError
from rocr.queue import Queue


def test_a_round_trip_runs_no_mapping_code_for_its_word_stores(round_trip_work):
    """The write index, header, doorbell and re-arm stores go straight to the memory model,
    the wait's spin skips the deadline arithmetic, the KFD sets an event's flag without a
    call: 795 host bytecodes (rocr 590, rock_emu 197) per round trip before, about 650 after."""
    work = round_trip_work(20)
    host = work.per_trip("rocr/", "roct/", "rock_emu/")
    assert host <= 680, work.ops
    assert work.per_trip("rock_emu/") <= 100, work.ops


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
