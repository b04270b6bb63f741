"""Bad packets: the CP refuses them, the queue stops, the error callback gets ROCr's status,
the completion signal is untouched, and other queues keep running."""

from __future__ import annotations

import numpy as np
import pytest

import rocr
from hw_model import aql

N = 256


@pytest.fixture
def setup(rt, buffers):
    k = rt.load_code_object("builtin:square").kernel("square")
    src = buffers(np.arange(N, dtype=np.float32))
    dst = buffers(N)
    return rt, k, src, dst


def _packet(k, kernarg, signal, **over):
    fields = dict(
        header=aql.make_header(aql.PacketType.KERNEL_DISPATCH),
        setup=1,
        workgroup_size_x=64,
        workgroup_size_y=1,
        workgroup_size_z=1,
        grid_size_x=N,
        grid_size_y=1,
        grid_size_z=1,
        kernel_object=k.kernel_object,
        kernarg_address=kernarg,
        completion_signal=signal.handle,
    )
    fields.update(over)
    return aql.KernelDispatchPacket(**fields)


def _raw_with_type(pkt, ptype):
    raw = bytearray(pkt.to_bytes())
    raw[0] = ptype
    return bytes(raw)


def _unmapped(rt):
    # Inside the GPUVM aperture but in no allocation of this process.
    return 0x7000_0000_0000


CASES = {
    "unknown packet type": (
        lambda rt, k, ka, d, s: _raw_with_type(_packet(k, ka, s), 7),
        rocr.Status.ERROR_INVALID_PACKET_FORMAT,
    ),
    "zero dimensions": (
        lambda rt, k, ka, d, s: _packet(k, ka, s, setup=0),
        rocr.Status.ERROR_INCOMPATIBLE_ARGUMENTS,
    ),
    "more than 3 dimensions (setup=4)": (
        lambda rt, k, ka, d, s: _packet(k, ka, s, setup=4),
        rocr.Status.ERROR_INCOMPATIBLE_ARGUMENTS,
    ),
    "workgroup over the agent's limit": (
        lambda rt, k, ka, d, s: _packet(k, ka, s, workgroup_size_x=2048, grid_size_x=4096),
        rocr.Status.ERROR_INVALID_ARGUMENT,
    ),
    "group segment larger than LDS": (
        lambda rt, k, ka, d, s: _packet(k, ka, s, group_segment_size=65536 + 4),
        rocr.Status.ERROR_INVALID_ALLOCATION,
    ),
    "null kernel object": (
        lambda rt, k, ka, d, s: _packet(k, ka, s, kernel_object=0),
        rocr.Status.ERROR_INVALID_CODE_OBJECT,
    ),
    "misaligned garbage kernel object": (
        lambda rt, k, ka, d, s: _packet(k, ka, s, kernel_object=0x12345),
        rocr.Status.ERROR_INVALID_CODE_OBJECT,
    ),
    "kernel object pointing at data": (
        lambda rt, k, ka, d, s: _packet(k, ka, s, kernel_object=d.address),
        rocr.Status.ERROR_ILLEGAL_INSTRUCTION,
    ),
    "kernel object in unmapped memory": (
        lambda rt, k, ka, d, s: _packet(k, ka, s, kernel_object=_unmapped(rt)),
        rocr.Status.ERROR_MEMORY_APERTURE_VIOLATION,
    ),
    "kernarg outside any allocation": (
        lambda rt, k, ka, d, s: _packet(k, _unmapped(rt), s),
        rocr.Status.ERROR_MEMORY_APERTURE_VIOLATION,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_packet_is_refused_with_rocr_status(setup, case):
    rt, k, src, dst = setup
    make, status = CASES[case]
    gpu = rt.gpus[0]
    got = []
    bad_q = gpu.create_queue(64, callback=lambda err, q: got.append((err.status, q)))
    good_q = gpu.create_queue(64)
    sig = rt.create_signal(1)
    kernarg = rt._kernarg(k.pack_args(dst, src, N))
    bad_q.submit(make(rt, k, kernarg, dst, sig))
    # Another queue keeps working while (and after) the bad one stops.
    other_dst = rt.cpu.pools(fine_grained=True, kernarg=False)[0].allocate(4 * N)
    rt.allow_access(rt.gpus, other_dst)
    good_q.dispatch(k, grid=N, workgroup=64, args=(other_dst, src, N)).wait()
    np.testing.assert_array_equal(other_dst.view(np.float32), np.arange(N, dtype=np.float32) ** 2)
    rt.system.run_for(50_000_000)
    rt.poll_async()
    assert got and got[0][0] == status, f"{case}: callback got {got}"
    assert got[0][1] is bad_q
    assert sig.load() == 1, "a refused packet must not touch its completion signal"
    assert not dst.view(np.float32).any(), "a refused packet must not run"
    assert bad_q.load_read_index() == 0
    # The stopped queue runs nothing more, even when rung again.
    sig2 = rt.create_signal(1)
    i = bad_q.add_write_index(1)
    bad_q.write_packet(i, _packet(k, kernarg, sig2))
    bad_q.ring_doorbell(i)
    rt.system.run_for(50_000_000)
    assert sig2.load() == 1


def test_buffer_pointer_outside_gpu_memory_faults(setup):
    # A page the GPU's page tables do not map: a VM fault (tests/e2e/test_memory_faults.py),
    # which ROCr's VMFaultHandler reports as HSA_STATUS_ERROR_MEMORY_FAULT.
    rt, k, src, _ = setup
    got = []
    q = rt.gpus[0].create_queue(64, callback=lambda err, q: got.append(err))
    host_only = rt.cpu.pools(fine_grained=True, kernarg=False)[0].allocate(4 * N)  # no allow
    h = q.dispatch(k, grid=N, workgroup=64, args=(host_only, src, N))
    with pytest.raises(rocr.HsaError) as info:
        h.wait()
    assert info.value.status == rocr.Status.ERROR_MEMORY_FAULT
    assert f"{host_only.address:#x}" in info.value.message
    assert got and got[0].status == rocr.Status.ERROR_MEMORY_FAULT
    assert h.signal.load() == 1


def test_default_callback_raises_at_next_call_on_the_queue(setup):
    rt, k, src, dst = setup
    q = rt.gpus[0].create_queue(64)  # no callback: ROCr would abort; we raise instead
    sig = rt.create_signal(1)
    q.submit(_packet(k, rt._kernarg(k.pack_args(dst, src, N)), sig, kernel_object=0))
    rt.system.run_for(50_000_000)
    with pytest.raises(rocr.HsaError) as info:
        q.add_write_index(1)
    assert info.value.status == rocr.Status.ERROR_INVALID_CODE_OBJECT
    assert "packet 0" in info.value.message


def test_wait_on_a_refused_packet_reports_the_queue_error(setup):
    rt, k, src, dst = setup
    q = rt.gpus[0].create_queue(64, callback=lambda err, q: None)
    sig = rt.create_signal(1)
    q.submit(_packet(k, rt._kernarg(k.pack_args(dst, src, N)), sig, setup=0))
    with pytest.raises(rocr.HsaError) as info:
        sig.wait(rocr.Condition.LT, 1)
    assert info.value.status == rocr.Status.ERROR_INCOMPATIBLE_ARGUMENTS
    assert "stopped by an error" in info.value.message


@pytest.mark.parametrize("size", [0, 100, 3, 32, 1 << 18])
def test_queue_size_must_be_a_power_of_two_within_limits(rt, size):
    with pytest.raises(rocr.HsaError) as info:
        rt.gpus[0].create_queue(size)
    assert info.value.status == rocr.Status.ERROR_INVALID_ARGUMENT


def test_queue_on_cpu_agent_is_invalid_agent(rt):
    with pytest.raises(rocr.HsaError) as info:
        rt.cpu.create_queue(256)
    assert info.value.status == rocr.Status.ERROR_INVALID_AGENT


def test_a_wait_on_a_stopped_queue_says_so_on_its_first_line(setup):
    rt, k, src, dst = setup
    q = rt.gpus[0].create_queue(64, callback=lambda err, q: None)
    sig = rt.create_signal(1)
    kernarg = rt._kernarg(k.pack_args(dst, src, N))
    q.submit(_packet(k, kernarg, sig, workgroup_size_x=2048, grid_size_x=4096))
    with pytest.raises(rocr.HsaError) as info:
        sig.wait(rocr.Condition.LT, 1)
    err = info.value
    assert err.status == rocr.Status.ERROR_INVALID_ARGUMENT
    lines = err.message.splitlines()
    assert lines[0] == (
        f"queue {q.id} stopped: workgroup of 2048 work-items > 1024: "
        "HSA_STATUS_ERROR_INVALID_ARGUMENT"
    )
    assert lines[1].startswith(f"hsa_signal_wait on signal {sig.handle:#x} can never return")
    assert f"queue {q.id}: write_index 1, read_dispatch_id 0" in err.message  # memory after


def test_a_wait_stuck_behind_another_stopped_queue_names_that_queue_first(setup):
    """The waited-for packet is healthy but waits (barrier-AND) for a packet of a queue the
    CP stopped: the first line names the stopped queue, the barrier follows."""
    rt, k, src, dst = setup
    bad = rt.gpus[0].create_queue(64, callback=lambda err, q: None)
    good = rt.gpus[0].create_queue(64)
    bad_done, done = rt.create_signal(1), rt.create_signal(1)
    kernarg = rt._kernarg(k.pack_args(dst, src, N))
    bad.submit(_packet(k, kernarg, bad_done, kernel_object=0))
    good.submit(
        rocr.BarrierAndPacket(
            header=aql.make_header(aql.PacketType.BARRIER_AND),
            dep_signal=[bad_done.handle, 0, 0, 0, 0],
            completion_signal=done.handle,
        )
    )
    with pytest.raises(rocr.HsaError) as info:
        done.wait(rocr.Condition.LT, 1)
    err = info.value
    assert err.status == rocr.Status.ERROR_INVALID_CODE_OBJECT
    first = err.message.splitlines()[0]
    assert first.startswith(f"queue {bad.id} stopped: invalid (or NULL) code at packet 0")
    assert first.endswith(": HSA_STATUS_ERROR_INVALID_CODE_OBJECT")
    assert f"packet 0 of queue {good.id}" in err.message
    assert f"{bad_done.handle:#x}=1" in err.message
