"""The host side of a warm empty-kernel round trip (`q.dispatch(...).wait()`): how much Python
it runs in rocr, roct and rock_emu, counted in calls (never in wall-clock time; the bytecode
budget is tests/rocr/test_round_trip_stores.py's), and that what it does is unchanged where it
does less."""

from __future__ import annotations

import pytest

import rocr
from rocr.runtime import Runtime


def _round_trips(rt, n: int):
    k = rt.load_code_object("builtin:empty").kernel("empty")
    q = rt.gpus[0].create_queue(64)
    for _ in range(20):  # warm: the plan, the pooled completion signal, the host costs
        q.dispatch(k, grid=64, workgroup=64).wait()

    def run() -> None:
        for _ in range(n):  # each handle dropped at once: its signal goes back to the pool
            q.dispatch(k, grid=64, workgroup=64).wait()

    return run


def test_a_round_trip_with_nothing_woken_calls_no_poll(monkeypatch):
    """Nothing set an event the async events thread waits on: no poll runs at all (five
    calls per round trip before), and none is needed to find nothing."""
    rt = rocr.init(preset="gfx900")
    try:
        run = _round_trips(rt, 5)
        polls: list[bool] = []
        real = Runtime.poll_async
        monkeypatch.setattr(Runtime, "poll_async", lambda self: polls.append(real(self)) or False)
        run()
        assert polls == []
    finally:
        rt.shutdown()


def test_a_queue_error_wakes_the_poll_and_reaches_the_callback_once(rt):
    """The CP stopping a queue sets its inactive-signal event: the next call polls, the
    callback hears the error once, and later polls have nothing to look at again."""
    from tests.rocr.test_speed_paths import _bad_packet

    k = rt.load_code_object("builtin:empty").kernel("empty")
    heard: list[rocr.Status] = []
    bad = rt.gpus[0].create_queue(64, callback=lambda e, q: heard.append(e.status))
    good = rt.gpus[0].create_queue(64)
    bad.submit(_bad_packet(k))
    rt.thunk.host_elapse(10_000_000_000)  # the CP has stopped the queue; nobody polled
    assert heard == [] and rt._async_pending
    good.dispatch(k, grid=64, workgroup=64).wait()
    assert heard == [rocr.Status.ERROR_INCOMPATIBLE_ARGUMENTS]
    assert not rt._async_pending
    assert rt.poll_async() is False
    good.dispatch(k, grid=64, workgroup=64).wait()
    assert heard == [rocr.Status.ERROR_INCOMPATIBLE_ARGUMENTS]


def test_a_vm_fault_keeps_every_later_call_raising(rt):
    """After a VM fault the poll stays armed: each later call raises the fault, as ROCr's
    abort would have ended the process."""
    import numpy as np

    pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
    page = 4096
    nxt = pool.allocate(page)
    rt.allow_access(rt.gpus, nxt)
    pool.allocate(page)  # the guard page after it: not mapped for the GPU
    nxt.view(np.uint32)[-64:] = (np.arange(64) + 1) % 64
    out = pool.allocate(4 * 128)
    rt.allow_access(rt.gpus, out)
    k = rt.load_code_object("builtin:chase").kernel("chase")
    q = rt.gpus[0].create_queue(64, callback=lambda e, q: None)
    h = q.dispatch(k, grid=128, workgroup=64, args=(out, nxt.address + page - 256, 128, 64))
    for call in (h.wait, rt.poll_async, lambda: rt.create_signal(1), lambda: q.dispatch(k, 64, 64)):
        with pytest.raises(rocr.HsaError) as e:
            call()
        assert e.value.status == rocr.Status.ERROR_MEMORY_FAULT
        assert rt._async_pending


def test_the_thunk_host_step_takes_no_limit(rt):
    """hsaKmt has no such call: the thunk's host spin is the transport's own method, and a
    call without a limit still means 'until memory changes' (False: nothing ever will)."""
    assert rt.thunk.host_step.__self__ is rt.system
    assert rt.thunk.host_step() is False
