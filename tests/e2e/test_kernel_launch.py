"""End to end: kernels launched through rocr -> roct -> KFD -> CP -> dispatcher -> CUs."""

from __future__ import annotations

import numpy as np
import pytest

import rocr
from hw_model import aql


@pytest.mark.parametrize("n", [256, 1000, 4096 + 17])
def test_square_1d(rt, buffers, n):
    x = np.linspace(-3, 3, n, dtype=np.float32)
    src, dst = buffers(x), buffers(n)
    k = rt.load_code_object("builtin:square").kernel("square")
    q = rt.gpus[0].create_queue(256)
    q.dispatch(k, grid=n, workgroup=256, args=(dst, src, n)).wait()
    np.testing.assert_array_equal(dst.view(np.float32, n), x * x)


@pytest.mark.parametrize(("grid", "wg"), [((64, 32), (16, 16)), ((50, 7), (16, 4))])
def test_square_2d_grid_covers_every_element(rt, buffers, grid, wg):
    n = grid[0] * grid[1]
    x = np.arange(n, dtype=np.float32)
    src, dst = buffers(x), buffers(n)
    k = rt.load_code_object("builtin:square").kernel("square")
    q = rt.gpus[0].create_queue(256)
    q.dispatch(k, grid=grid, workgroup=wg, args=(dst, src, n)).wait()
    np.testing.assert_array_equal(dst.view(np.float32, n), x * x)


def test_vector_add_partial_workgroup(rt, buffers):
    n = 777
    a = np.random.default_rng(1).random(n, dtype=np.float32)
    b = np.random.default_rng(2).random(n, dtype=np.float32)
    ba, bb, bc = buffers(a), buffers(b), buffers(n + 64)
    k = rt.load_code_object("builtin:vector_add").kernel("vector_add")
    q = rt.gpus[0].create_queue(256)
    q.dispatch(k, grid=n, workgroup=128, args=(ba, bb, bc, n)).wait()
    c = bc.view(np.float32)
    np.testing.assert_array_equal(c[:n], a + b)
    assert not c[n:].any(), "work-items past n must not write"


def test_saxpy_2d(rt, buffers):
    n = 40 * 30
    x = np.arange(n, dtype=np.float32)
    y = np.ones(n, dtype=np.float32)
    bx, by = buffers(x), buffers(y)
    k = rt.load_code_object("builtin:saxpy").kernel("saxpy")
    q = rt.gpus[0].create_queue(256)
    q.dispatch(k, grid=(40, 30), workgroup=(8, 8), args=(2.5, bx, by, n)).wait()
    np.testing.assert_array_equal(by.view(np.float32, n), np.float32(2.5) * x + 1)


def test_hand_built_packet_runs_and_reports_timestamps(rt, buffers):
    """The lab path: build the 64 bytes by hand, publish the header last, ring, wait."""
    n = 512
    src, dst = buffers(np.full(n, 3, np.float32)), buffers(n)
    k = rt.load_code_object("builtin:square").kernel("square")
    q = rt.gpus[0].create_queue(64)
    kernarg = rt.cpu.pools(kernarg=True)[0].allocate(k.kernarg_size)
    rt.allow_access(rt.gpus, kernarg)
    kernarg.write(k.pack_args(dst, src, n))
    done = rt.create_signal(1)
    pkt = aql.KernelDispatchPacket(
        header=aql.make_header(aql.PacketType.KERNEL_DISPATCH),
        setup=1,
        workgroup_size_x=64,
        workgroup_size_y=1,
        workgroup_size_z=1,
        grid_size_x=n,
        grid_size_y=1,
        grid_size_z=1,
        kernel_object=k.kernel_object,
        kernarg_address=kernarg.address,
        completion_signal=done.handle,
    )
    i = q.add_write_index(1)
    q.write_packet(i, pkt.to_bytes())
    assert q.packet_bytes(i) == pkt.to_bytes()
    q.ring_doorbell(i)
    assert done.wait(rocr.Condition.EQ, 0) == 0
    np.testing.assert_array_equal(dst.view(np.float32, n), np.full(n, 9, np.float32))
    start, end = done.dispatch_time()
    assert 0 < start < end <= rt.now_ns


@pytest.mark.trace
def test_packets_retire_in_order_and_slots_become_invalid(rt, buffers):
    n = 256
    src = buffers(np.arange(n, dtype=np.float32))
    outs = [buffers(n) for _ in range(5)]
    k = rt.load_code_object("builtin:square").kernel("square")
    q = rt.gpus[0].create_queue(64)
    handles = [q.dispatch(k, grid=n, workgroup=64, args=(o, src, n)) for o in outs]
    handles[-1].wait()
    assert q.load_read_index() == 5, "read_dispatch_id equals the number retired"
    for h in handles:
        assert h.signal.load() == 0
        assert q.packet_bytes(h.index)[0] == aql.PacketType.INVALID
    ends = [h.dispatch_time()[1] for h in handles]
    assert ends == sorted(ends)
    trace = [e.name for e in rt.system.tracer.events if e.name.startswith("retire ")]
    assert trace == [f"retire {i}" for i in range(5)]


def test_packet_without_doorbell_does_not_run_until_rung(rt, buffers):
    n = 128
    src, dst = buffers(np.full(n, 2, np.float32)), buffers(n)
    k = rt.load_code_object("builtin:square").kernel("square")
    q = rt.gpus[0].create_queue(64)
    done = rt.create_signal(1)
    pkt = rt.dispatch_packet(k, n, 64, (dst, src, n), done)
    i = q.add_write_index(1)
    q.write_packet(i, pkt)
    rt.system.run_for(1_000_000_000)  # 1 ms of host time passes
    assert done.load() == 1
    assert q.load_read_index() == 0
    assert not dst.view(np.float32).any()
    q.ring_doorbell(i)
    done.wait(rocr.Condition.LT, 1, timeout_ns=10_000_000)
    assert done.load() == 0
    np.testing.assert_array_equal(dst.view(np.float32, n), np.full(n, 4, np.float32))


@pytest.mark.trace
def test_invalid_header_stalls_until_the_header_is_published(rt, buffers):
    """ROCR-Runtime AqlQueue::StoreRelaxed: "The HW will stall on these packets until they
    enter a valid state": the CP keeps watching the slot; no second doorbell is needed."""
    n = 64
    src, dst = buffers(np.full(n, 5, np.float32)), buffers(n)
    k = rt.load_code_object("builtin:square").kernel("square")
    q = rt.gpus[0].create_queue(64)
    done = rt.create_signal(1)
    pkt = rt.dispatch_packet(k, n, 64, (dst, src, n), done)
    raw = bytearray(pkt.to_bytes())
    raw[0:2] = (aql.PacketType.INVALID).to_bytes(2, "little")  # header not yet published
    i = q.add_write_index(1)
    q.write_packet(i, bytes(raw))
    q.ring_doorbell(i)
    rt.system.run_for(100_000_000)
    assert done.load() == 1
    assert any(e.name == "stall: header INVALID" for e in rt.system.tracer.events)
    doorbells = sum(e.name == "doorbell" for e in rt.system.tracer.events)
    q.write_packet(i, pkt)  # publish the header; no doorbell
    done.wait(rocr.Condition.LT, 1)
    np.testing.assert_array_equal(dst.view(np.float32, n), np.full(n, 25, np.float32))
    assert sum(e.name == "doorbell" for e in rt.system.tracer.events) == doorbells


def test_wait_that_can_never_finish_fails_at_once_with_a_diagnosis(rt, buffers):
    n = 64
    src, dst = buffers(n), buffers(n)
    k = rt.load_code_object("builtin:square").kernel("square")
    q = rt.gpus[0].create_queue(64)
    done = rt.create_signal(1)
    pkt = rt.dispatch_packet(k, n, 64, (dst, src, n), done)
    i = q.add_write_index(1)
    q.write_packet(i, pkt)
    with pytest.raises(rocr.HsaError) as info:
        done.wait(rocr.Condition.LT, 1)  # no timeout: would hang forever on real hardware
    err = info.value
    assert err.status == rocr.Status.ERROR
    assert f"{done.handle:#x}" in err.message
    assert "doorbell was never rung" in err.message
    assert f"ring_doorbell({i})" in err.message


def test_wait_on_a_signal_nothing_decrements_names_it(rt):
    sig = rt.create_signal(1)
    with pytest.raises(rocr.HsaError) as info:
        sig.wait(rocr.Condition.EQ, 0)
    assert "No unretired packet names it" in info.value.message


def test_wait_times_out_when_work_is_pending_but_slow(rt, buffers):
    n = 1 << 16
    src, dst = buffers(n), buffers(n)
    k = rt.load_code_object("builtin:square").kernel("square")
    q = rt.gpus[0].create_queue(64)
    h = q.dispatch(k, grid=n, workgroup=256, args=(dst, src, n))
    t0 = rt.now_ns
    v = h.signal.wait(rocr.Condition.LT, 1, timeout_ns=1_000)
    assert v == 1, "hsa_signal_wait returns the current value on timeout"
    assert rt.now_ns - t0 >= 1_000
    h.wait()
    assert h.done
