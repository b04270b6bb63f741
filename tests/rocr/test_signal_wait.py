"""hsa_signal_wait_* with a timeout: the current value once the timeout has passed in
simulated time, whatever the GPU is doing (idle included); the at-once "can never return"
diagnosis only for waits without one; bad arguments are INVALID_ARGUMENT naming them."""

from __future__ import annotations

import numpy as np
import pytest

import rocr
from tests.conftest import gated_dispatch

US = 1_000_000  # ps
MS = 1_000 * US


@pytest.mark.parametrize("interrupt", [False, True], ids=["user", "interrupt"])
@pytest.mark.parametrize("timeout_ns", [0, 5_000, 150_000, 3_500_000, 12_000_000])
def test_a_timed_wait_on_an_idle_gpu_returns_the_value_at_the_deadline(rt, interrupt, timeout_ns):
    """Short timeouts end in ROCr's 200 us spin; longer ones sleep in AMDKFD_IOC_WAIT_EVENTS
    for the whole milliseconds left and poll the rest, as InterruptSignal::WaitRelaxed."""
    sig = rt.create_signal(1, interrupt=interrupt)
    t0 = rt.system.host_now
    assert rt.system.engine.idle
    assert sig.wait(rocr.Condition.EQ, 0, timeout_ns=timeout_ns) == 1
    assert rt.system.host_now == t0 + timeout_ns * 1000


def test_a_timed_wait_returns_early_when_satisfied(rt):
    sig = rt.create_signal(3)
    assert sig.wait(rocr.Condition.GTE, 2, timeout_ns=0) == 3
    assert sig.wait(rocr.Condition.NE, 0, timeout_ns=10**12) == 3


def test_without_a_timeout_the_idle_wait_is_diagnosed_at_once(rt):
    sig = rt.create_signal(1)
    t0 = rt.system.host_now
    with pytest.raises(rocr.HsaError) as info:
        sig.wait(rocr.Condition.EQ, 0)
    assert info.value.status == rocr.Status.ERROR
    assert "can never return" in info.value.message
    # ROCr spins 200 us before it sleeps in the KFD; then it is told at once.
    assert rt.system.host_now - t0 < 1 * MS


def test_uint64_max_means_no_timeout(rt):
    """HIP passes UINT64_MAX for "wait forever": no jump of centuries, the diagnosis."""
    sig = rt.create_signal(1)
    with pytest.raises(rocr.HsaError, match="can never return"):
        sig.wait(rocr.Condition.EQ, 0, timeout_ns=2**64 - 1)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"timeout_ns": -1}, "timeout_ns"),
        ({"timeout_ns": -(10**9)}, "timeout_ns"),
        ({"timeout_ns": 2**64}, "timeout_ns"),
        ({"timeout_ns": 1.5}, "timeout_ns"),
        ({"timeout_ns": "10"}, "timeout_ns"),
        ({"condition": 7}, "condition"),
        ({"condition": "LT"}, "condition"),
        ({"compare_value": 2**63}, "compare_value"),
        ({"compare_value": None}, "compare_value"),
        ({"wait_state": 5}, "wait_state"),
    ],
)
def test_bad_wait_arguments_are_invalid_argument_naming_them(rt, kwargs, name):
    sig = rt.create_signal(1)
    args = {"condition": rocr.Condition.EQ, "compare_value": 0, **kwargs}
    t0 = rt.system.host_now
    with pytest.raises(rocr.HsaError) as info:
        sig.wait(**args)
    assert info.value.status == rocr.Status.ERROR_INVALID_ARGUMENT
    assert name in info.value.message
    assert rt.system.host_now == t0  # refused up front: no time waited


def test_dispatch_handle_wait_times_out_in_simulated_time_naming_the_packet(rt):
    q, gate, h = gated_dispatch(rt)
    t0 = rt.system.host_now
    with pytest.raises(rocr.HsaError) as info:
        h.wait(timeout_ns=2_000_000)
    assert rt.system.host_now == t0 + 2 * MS
    err = info.value
    assert err.status == rocr.Status.ERROR
    first = err.message.splitlines()[0]
    assert f"packet {h.index} of queue {q.id} did not complete within 2000000 ns" in first
    assert "barrier-AND waiting for its dependency signals" in err.message
    gate.store(0)
    assert h.wait() is h and h.done


def test_dispatch_handle_wait_with_a_negative_timeout_is_invalid_argument(rt):
    _, gate, h = gated_dispatch(rt)
    with pytest.raises(rocr.HsaError) as info:
        h.wait(timeout_ns=-5)
    assert info.value.status == rocr.Status.ERROR_INVALID_ARGUMENT
    assert "timeout_ns = -5" in info.value.message
    gate.store(0)
    h.wait()


def test_a_timed_wait_while_the_gpu_works_returns_at_the_deadline(rt, buffers):
    n = 1 << 16
    src, dst = buffers(np.ones(n, np.float32)), buffers(n)
    k = rt.load_code_object("builtin:square").kernel("square")
    h = rt.gpus[0].create_queue(64).dispatch(k, grid=n, workgroup=256, args=(dst, src, n))
    t0 = rt.system.host_now
    assert h.signal.wait(rocr.Condition.LT, 1, timeout_ns=7_000) == 1
    assert rt.system.host_now == t0 + 7_000_000
    h.wait()
