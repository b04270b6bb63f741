"""The packet processor checks a kernel dispatch once per packet shape: what the checks read
(the packet's geometry, segment sizes and kernel object, the descriptor and the code entry)
decides whether they run again. A changed packet, descriptor or kernel is checked anew."""

from __future__ import annotations

import pytest

import rocr
from hw_model import aql
from hw_model import command_processor as cp
from hw_model.kernels import BUILTINS, register
from hw_model.kernels.base import CostProfile


@pytest.fixture
def checked(monkeypatch):
    """Counts the dispatches that went through the CP's full checks."""
    monkeypatch.setattr(cp, "_LAUNCH_CACHE", {})
    calls: list[int] = []
    real = cp.PacketProcessor._dispatch_checked

    def counting(self, idx, raw, entry):
        calls.append(idx)
        return real(self, idx, raw, entry)

    monkeypatch.setattr(cp.PacketProcessor, "_dispatch_checked", counting)
    return calls


def test_a_loop_of_one_dispatch_is_checked_once(rt, checked):
    k = rt.load_code_object("builtin:empty").kernel("empty")
    q = rt.gpus[0].create_queue(64)
    for _ in range(5):
        q.dispatch(k, grid=64, workgroup=64).wait()
    assert len(checked) == 1
    q.dispatch(k, grid=128, workgroup=64).wait()  # another grid: checked again
    assert len(checked) == 2
    records = list(rt.system.gpus[0].kernel_records)[-6:]
    assert [r["grid"] for r in records] == [(64, 1, 1)] * 5 + [(128, 1, 1)]


def test_a_bad_packet_after_good_ones_still_stops_the_queue(rt, checked):
    """The same kernel object with a zero-dimension setup: checked (not the remembered
    launch), and the CP stops the queue as before."""
    k = rt.load_code_object("builtin:empty").kernel("empty")
    q = rt.gpus[0].create_queue(64, callback=lambda e, q: None)
    q.dispatch(k, grid=64, workgroup=64).wait()
    q.dispatch(k, grid=64, workgroup=64).wait()
    sig = rt.create_signal(1)
    bad = aql.KernelDispatchPacket(
        header=aql.make_header(aql.PacketType.KERNEL_DISPATCH),
        setup=0,
        workgroup_size_x=64,
        workgroup_size_y=1,
        workgroup_size_z=1,
        grid_size_x=64,
        grid_size_y=1,
        grid_size_z=1,
        kernel_object=k.kernel_object,
        completion_signal=sig.handle,
    )
    q.submit(bad)
    assert sig.wait(rocr.Condition.LT, 1, timeout_ns=1_000_000) == 1
    assert q.error is not None and q.error.status == rocr.Status.ERROR_INCOMPATIBLE_ARGUMENTS
    assert len(checked) == 2


def test_a_kernel_registered_again_is_the_one_that_runs(rt, checked):
    """`hw_model.kernels.register` replaces a built-in by name: the next dispatch of a packet
    the CP launched before runs the new kernel (its cost shows in the kernel's time)."""
    k = rt.load_code_object("builtin:empty").kernel("empty")
    q = rt.gpus[0].create_queue(64)
    gpu = rt.system.gpus[0]
    old = BUILTINS["empty"]
    q.dispatch(k, grid=64, workgroup=64).wait()
    q.dispatch(k, grid=64, workgroup=64).wait()
    short = gpu.kernel_records[-1]
    try:
        register(old.model_copy(update={"cost": CostProfile(salu=100_000)}))
        q.dispatch(k, grid=64, workgroup=64).wait()
    finally:
        register(old)
    long = gpu.kernel_records[-1]
    assert len(checked) == 2
    assert long["end_ps"] - long["start_ps"] > 100 * (short["end_ps"] - short["start_ps"])
