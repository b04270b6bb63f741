"""The host side of a dispatch round trip: what a queue keeps of checked dispatches, and how few
calls a warm `q.dispatch(...).wait()` makes in the runtime and the thunk. Counted in calls,
never in wall-clock time."""

from __future__ import annotations

import cProfile
import pstats

import numpy as np
import pytest

import rocr
from hw_model.aql import FenceScope
from tests.conftest import gated_dispatch
from tests.rocr.test_speed_paths import _bad_packet

SCOPES = (FenceScope.NONE, FenceScope.AGENT, FenceScope.SYSTEM)


def _host_calls_per_round_trip(rt, n: int = 20) -> float:
    """Python functions of rocr/ and roct/ run per warm empty-kernel round trip, and the
    builtins they call."""
    k = rt.load_code_object("builtin:empty").kernel("empty")
    q = rt.gpus[0].create_queue(64)
    for _ in range(5):
        q.dispatch(k, grid=64, workgroup=64).wait()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        q.dispatch(k, grid=64, workgroup=64).wait()
    prof.disable()

    def ours(filename: str) -> bool:
        return "/rocr/" in filename or "/roct/" in filename

    calls = 0
    for (filename, _, _), (_, ncalls, _, _, callers) in pstats.Stats(prof).stats.items():
        if ours(filename):
            calls += ncalls
        elif filename == "~":  # a builtin: counted where rocr or roct called it
            calls += sum(c[1] for where, c in callers.items() if ours(where[0]))
    return calls / n


def test_a_warm_round_trip_makes_few_runtime_and_thunk_calls():
    """A dispatch a queue has seen before reuses its checked plan, the retired completion
    signal and the host costs; the wait polls the async events once per look at the value.
    (About 90 calls per round trip before the plan and the direct clock methods; 29 after;
    18 before Queue.dispatch wrote the packet itself and the handle's wait took the spin's
    first host step itself, 10 after.)"""
    rt = rocr.init(preset="gfx900")
    try:
        assert _host_calls_per_round_trip(rt) <= 12
    finally:
        rt.shutdown()


def _error(call):
    with pytest.raises(rocr.HsaError) as e:
        call()
    return e.value.status, e.value.message


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("grid", {"grid": 64.0}),
        ("grid", {"grid": True}),
        ("workgroup", {"workgroup": 64.0}),
        ("grid", {"grid": (64.0, 1), "workgroup": (64, 1)}),
        ("workgroup", {"grid": (64, 1), "workgroup": (64, True)}),
        ("barrier", {"barrier": 1.0}),
        ("barrier", {"barrier": 2}),
        ("acquire", {"acquire": True}),
        ("release", {"release": 1.0}),
        ("release", {"release": 3}),
        ("group_segment_size", {"group_segment_size": 1.0}),
        ("group_segment_size", {"group_segment_size": True}),
        ("group_segment_size", {"group_segment_size": 1 << 40}),
    ],
)
def test_a_kept_plan_refuses_what_the_checks_refuse(rt, name, bad):
    """A value that equals (and hashes like) an accepted one is refused after the accepted one
    was dispatched, with the status and message a queue that never saw it gives."""
    k = rt.load_code_object("builtin:empty").kernel("empty")
    warm = rt.gpus[0].create_queue(64)
    accepted = {
        "grid": 64,
        "workgroup": 64,
        "barrier": True,
        "acquire": 1,
        "release": FenceScope.AGENT,
        "group_segment_size": 1,
    }
    shape2 = {**accepted, "grid": (64, 1), "workgroup": (64, 1)}
    for kw in (accepted, shape2, {**accepted, "barrier": 1, "group_segment_size": 0}):
        warm.dispatch(k, **kw).wait()
    call = {**(shape2 if isinstance(bad.get("grid", bad.get("workgroup")), tuple) else accepted)}
    call.update(bad)
    got = _error(lambda: warm.dispatch(k, **call))
    fresh = rt.gpus[0].create_queue(64)
    assert got == _error(lambda: fresh.dispatch(k, **call))
    assert got[0] == rocr.Status.ERROR_INVALID_ARGUMENT
    assert got[1].startswith(name)


def test_kept_plans_write_the_packets_the_checks_make(rt):
    """Every header bit, dimension, size and the kernel object of a dispatch from a kept plan
    are those of the packet `dispatch_packet` builds for the same arguments."""
    q, gate, _ = gated_dispatch(rt)  # the CP stops at the gate: the packets stay in the ring
    k = rt.load_code_object("builtin:empty").kernel("empty")
    shapes = [(64, 64), ((128, 2), (64, 1)), ((64, 2, 3), (16, 2, 1))]
    handles = []
    for _ in range(2):  # the first pass makes each plan, the second uses it
        for grid, wg in shapes:
            for barrier in (False, True):
                for acquire in SCOPES:
                    kw = {"barrier": barrier, "acquire": acquire, "release": SCOPES[acquire - 1]}
                    gss = 256 if barrier else None
                    h = q.dispatch(k, grid, wg, group_segment_size=gss, **kw)
                    want = rt.dispatch_packet(
                        k, grid, wg, completion_signal=h.signal, group_segment_size=gss, **kw
                    )
                    handles.append(h)
                    assert q.packet_bytes(h.index) == want.to_bytes(), (grid, wg, kw)
    gate.store(0)
    for h in handles:
        h.wait()


def test_a_kept_plan_still_checks_the_completion_signal(rt):
    """The completion signal is the caller's every time: a destroyed one, or one of another
    runtime, is refused after a dispatch with a good one made the plan."""
    k = rt.load_code_object("builtin:empty").kernel("empty")
    q = rt.gpus[0].create_queue(64)
    q.dispatch(k, grid=64, workgroup=64, completion_signal=rt.create_signal(1)).wait()
    gone = rt.create_signal(1)
    gone.destroy()
    status, message = _error(lambda: q.dispatch(k, 64, 64, completion_signal=gone))
    assert status == rocr.Status.ERROR_INVALID_SIGNAL and "was destroyed" in message
    other = rocr.init(preset="teaching")
    try:
        theirs = other.create_signal(1)
        status, message = _error(lambda: q.dispatch(k, 64, 64, completion_signal=theirs))
        assert status == rocr.Status.ERROR_INVALID_SIGNAL and "another runtime" in message
    finally:
        other.shutdown()
    assert q.load_write_index() == 1  # neither refusal reserved a slot


def test_a_kept_plan_still_checks_the_arguments(rt, buffers):
    """Buffers are checked on every dispatch: a freed one is refused after the same dispatch
    ran with it, as on a queue that never saw the kernel."""
    k = rt.load_code_object("builtin:square").kernel("square")
    src = buffers(np.arange(64, dtype=np.float32))
    dst = buffers(64)
    q = rt.gpus[0].create_queue(64)
    q.dispatch(k, 64, 64, args=(dst, src, 64)).wait()
    assert np.array_equal(dst.view(np.float32, 64), np.arange(64, dtype=np.float32) ** 2)
    src.free()
    got = _error(lambda: q.dispatch(k, 64, 64, args=(dst, src, 64)))
    fresh = rt.gpus[0].create_queue(64)
    assert got == _error(lambda: fresh.dispatch(k, 64, 64, args=(dst, src, 64)))
    assert got[0] == rocr.Status.ERROR_INVALID_ALLOCATION and "was freed" in got[1]
    for args in ((), None, (dst, dst)):
        got = _error(lambda a=args: q.dispatch(k, 64, 64, args=a))
        assert got == _error(lambda a=args: fresh.dispatch(k, 64, 64, args=a))


def test_a_kernel_without_arguments_takes_none(rt):
    """The no-argument fast path is for an empty tuple only: arguments given to a kernel that
    takes none are refused, on a queue that has run it before as on a new one."""
    k = rt.load_code_object("builtin:empty").kernel("empty")
    q = rt.gpus[0].create_queue(64)
    q.dispatch(k, 64, 64).wait()
    q.dispatch(k, 64, 64, args=[]).wait()  # any empty sequence, as before
    for args in ((1,), None, "", np.zeros(0)):
        status, message = _error(lambda a=args: q.dispatch(k, 64, 64, args=a))
        assert status == rocr.Status.ERROR_INVALID_ARGUMENT and "empty" in message


def test_many_shapes_keep_a_bounded_number_of_plans(rt):
    """A sweep over many shapes does not grow what a queue keeps without bound, and a shape
    dispatched again after its plan was dropped runs as before."""
    k = rt.load_code_object("builtin:empty").kernel("empty")
    q = rt.gpus[0].create_queue(64)
    for n in range(1, 151):
        q.dispatch(k, grid=64 * n, workgroup=64).wait()
    assert len(q._plans) <= 64
    h = q.dispatch(k, grid=64, workgroup=64).wait()
    assert h.signal.load() == 0


def test_host_time_of_a_round_trip_is_unchanged_by_the_plan(rt):
    """The plan changes what the host computes, not what it does: two identical round trips
    take the same simulated host time, the first (checks run) as the second (plan kept)."""
    k = rt.load_code_object("builtin:empty").kernel("empty")
    q = rt.gpus[0].create_queue(64)
    q.dispatch(k, grid=64, workgroup=64).wait()  # completion signal and costs now exist
    spans = []
    for grid in (128, 128):
        t0 = rt.now_ns
        q.dispatch(k, grid=grid, workgroup=64).wait()
        spans.append(rt.now_ns - t0)
    assert spans[0] == spans[1] > 0


def test_a_callback_that_destroys_its_queue_stops_the_dispatch_that_ran_it(rt):
    """The poll at the start of a dispatch may run a queue's error callback, which may do
    anything: one that destroys its queue makes that dispatch raise INVALID_QUEUE before a
    slot is taken in the freed ring, as when every step of the dispatch polled."""
    k = rt.load_code_object("builtin:empty").kernel("empty")
    heard: list[rocr.Status] = []

    def destroy(err, q):
        heard.append(err.status)
        q.destroy()

    bad = rt.gpus[0].create_queue(64, callback=destroy)
    bad.dispatch(k, 64, 64).wait()
    bad.submit(_bad_packet(k))
    rt.thunk.host_elapse(10_000_000_000)  # the CP stops the queue; nothing has polled since
    assert heard == []
    status, message = _error(lambda: bad.dispatch(k, 64, 64))
    assert heard == [rocr.Status.ERROR_INCOMPATIBLE_ARGUMENTS]
    assert status == rocr.Status.ERROR_INVALID_QUEUE and "was destroyed" in message
