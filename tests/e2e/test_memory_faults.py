"""GPU memory faults as amdkfd and ROCr handle them.

A wave whose access the page tables refuse faults at that access, in the workgroup that makes
it; the KFD evicts every queue of the process on that GPU (kfd_dqm_evict_pasid) and sets the
process's memory events with the faulting page (kfd_signal_vm_fault_event); ROCr's
VMFaultHandler reports HSA_STATUS_ERROR_MEMORY_FAULT. Other processes keep running.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import rocr
from hw_model import aql
from hw_model.compute_unit import wave_timing
from hw_model.config import system_spec
from hw_model.kernels import BUILTINS
from roct.thunk import HSA_EVENTTYPE_MEMORY

PAGE = 4096
HOPS = 40  # dependent loads per work-item of `chase`: a workgroup that lasts ~HOPS latencies


def _pool(rt):
    return rt.cpu.pools(fine_grained=True, kernarg=False)[0]


def _gpu_buf(rt, nbytes):
    b = _pool(rt).allocate(nbytes)
    rt.allow_access(rt.gpus, b)
    return b


@pytest.fixture
def proc():
    rt = rocr.init(spec=system_spec("teaching", trace=True))
    yield rt
    rt.shutdown()


def _chase_into_guard(rt):
    """`chase` over 128 work-items whose `next` array is the last 64 entries of a GPU-mapped
    page: workgroup 0 stays inside it, workgroup 1's first load lands on the next page, a
    buffer the GPU may not access (no allow_access). Returns the kernel, its args, the guard
    page's address and the output buffer."""
    nxt = _gpu_buf(rt, PAGE)
    guard = _pool(rt).allocate(PAGE)  # host only: the GPU's page tables do not map it
    assert guard.address == nxt.address + PAGE, "the guard must follow the array in VA"
    tail = nxt.view(np.uint32)[-64:]
    tail[:] = (np.arange(64) + 1) % 64  # a cycle inside the 64 mapped entries
    out = _gpu_buf(rt, 4 * 128)
    k = rt.load_code_object("builtin:chase").kernel("chase")
    return k, (out, nxt.address + PAGE - 256, 128, HOPS), guard.address, out


def _fault_events(rt):
    return [e for e in rt.system.tracer.events if e.cat == "fault" and e.track.startswith("CU")]


def _wg_spans(rt, name):
    return [e for e in rt.system.tracer.events if e.cat == "wg" and e.name == name]


def test_the_workgroup_that_touches_the_page_faults_at_its_first_access(proc):
    rt = proc
    k, args, guard, out = _chase_into_guard(rt)
    q = rt.gpus[0].create_queue(64, callback=lambda e, q: None)
    h = q.dispatch(k, grid=128, workgroup=64, args=args)
    with pytest.raises(rocr.HsaError) as info:
        h.wait()
    assert info.value.status == rocr.Status.ERROR_MEMORY_FAULT
    faults = _fault_events(rt)
    assert len(faults) == 1, faults
    fault = faults[0]
    assert tuple(fault.args["wg"]) == (1, 0, 0)
    assert fault.track == f"CU{fault.args['cu']}"
    assert int(fault.args["va"], 16) == guard
    spans = {tuple(e.args["wg"]): e for e in _wg_spans(rt, "chase")}
    faulted, healthy = spans[(1, 0, 0)], spans[(0, 0, 0)]
    assert "fault" in faulted.args and "fault" not in healthy.args
    # The fault comes at the workgroup's first global access (start + the wave's modeled
    # first-access time), where the faulting workgroup stops ...
    spec = rt.system.gpus[0].spec
    first = wave_timing(spec, BUILTINS["chase"].cost_for(k.pack_args(*args)))
    assert fault.ts == faulted.ts + faulted.dur
    assert faulted.dur == max(1, math.ceil(first.first_access_ps))
    # ... far sooner than a workgroup of the same kernel takes to finish (HOPS loads in a
    # row): detecting it when the workgroup ends would put it HOPS latencies later.
    assert faulted.dur * 10 < healthy.dur
    assert healthy.dur >= HOPS * spec.memory_latency_ns * 1000
    # Workgroup 0 never touched the bad page: its stores landed.
    assert out.view(np.uint32)[:64].any()


def test_the_faulting_page_arrives_in_the_memory_event_data(proc):
    rt = proc
    k, args, guard, _ = _chase_into_guard(rt)
    # hsaKmtCreateEvent(HSA_EVENTTYPE_MEMORY) as a tool would, next to ROCr's own.
    ev = rt.thunk.create_event(HSA_EVENTTYPE_MEMORY, manual_reset=True)
    q = rt.gpus[0].create_queue(64, callback=lambda e, q: None)
    q.dispatch(k, grid=128, workgroup=64, args=args)
    rt.system.run_for(100_000_000)  # 100 us: the kernel has faulted by then
    status, data = rt.thunk.wait_on_multiple_events([ev], True, 0)
    assert status.name == "SUCCESS"
    # kfd_hsa_memory_exception_data as the driver copies it out: page address, gpu_id, reason
    exc = data[0].memory_exception_data
    assert exc.va == guard and exc.va % PAGE == 0
    assert exc.gpu_id == rt.gpus[0].props.KFDGpuID
    assert exc.failure.NotPresent == 1
    # ... and as libhsakmt stores it in the HsaEvent
    fault = ev.MemoryAccessFault
    assert fault is not None
    assert (fault.VirtualAddress, fault.NodeId) == (guard, rt.gpus[0].node)
    assert fault.Failure.NotPresent == 1


def test_memory_fault_error_names_the_fault_and_reaches_every_queue(proc):
    rt = proc
    k, args, guard, _ = _chase_into_guard(rt)
    got = []
    gpu = rt.gpus[0]
    q = gpu.create_queue(64, callback=lambda e, q: got.append((e.status, q)))
    idle = gpu.create_queue(64, callback=lambda e, q: got.append((e.status, q)))
    h = q.dispatch(k, grid=128, workgroup=64, args=args)
    with pytest.raises(rocr.HsaError) as info:
        h.wait()
    err = info.value
    assert err.status == rocr.Status.ERROR_MEMORY_FAULT
    msg = err.message
    assert f"on address {guard:#x}" in msg
    assert "Page not present or supervisor privilege" in msg
    assert f"GPU node-{gpu.node}" in msg
    assert "queue 0 packet 0 (kernel chase)" in msg
    # Each queue's callback hears it once, with ROCr's status.
    assert sorted((s, x.id) for s, x in got) == [
        (rocr.Status.ERROR_MEMORY_FAULT, q.id),
        (rocr.Status.ERROR_MEMORY_FAULT, idle.id),
    ]
    # The real runtime aborts; here every later call that polls raises the fault.
    with pytest.raises(rocr.HsaError) as again:
        idle.add_write_index(1)
    assert again.value.status == rocr.Status.ERROR_MEMORY_FAULT
    assert f"{guard:#x}" in again.value.message
    assert len(got) == 2


def test_fault_is_raised_at_the_next_call_without_a_wait(proc):
    rt = proc
    k, args, guard, _ = _chase_into_guard(rt)
    q = rt.gpus[0].create_queue(64)
    q.dispatch(k, grid=128, workgroup=64, args=args)
    rt.system.run_for(100_000_000)  # the host does something else meanwhile
    with pytest.raises(rocr.HsaError) as info:
        q.add_write_index(1)
    assert info.value.status == rocr.Status.ERROR_MEMORY_FAULT
    # Every call of the faulted process raises it, not only queue calls.
    pool = rt.cpu.pools(fine_grained=True, kernarg=False)[0]
    for call in (lambda: pool.allocate(4096), lambda: rt.create_signal(1)):
        with pytest.raises(rocr.HsaError) as info:
            call()
        assert info.value.status == rocr.Status.ERROR_MEMORY_FAULT


def test_the_fault_is_raised_by_a_call_that_is_not_a_queue_call(proc):
    rt = proc
    k, args, guard, _ = _chase_into_guard(rt)
    q = rt.gpus[0].create_queue(64)
    q.dispatch(k, grid=128, workgroup=64, args=args)
    rt.system.run_for(100_000_000)
    with pytest.raises(rocr.HsaError) as info:
        rt.cpu.pools(fine_grained=True, kernarg=False)[0].allocate(4096)
    assert info.value.status == rocr.Status.ERROR_MEMORY_FAULT
    assert "Memory access fault" in info.value.message


def _pasid(rt):
    return rt.transport.process.pasid


def test_every_queue_of_the_process_is_evicted_and_another_process_keeps_running(proc):
    a = proc
    b = rocr.init(system=a.system, name="bystander")
    try:
        gpu = a.gpus[0]
        k, args, guard, _ = _chase_into_guard(a)
        # A's other queue runs a big kernel next to the bad one: once A is evicted, its
        # workgroups not yet placed stay unplaced.
        n = 64 * 2048
        src = _gpu_buf(a, 4 * n)
        src.view(np.float32)[:] = 1.0
        dst = _gpu_buf(a, 4 * n)
        sq = a.load_code_object("builtin:square").kernel("square")
        busy = gpu.create_queue(64, callback=lambda e, q: None)
        bad = gpu.create_queue(64, callback=lambda e, q: None)
        bad.dispatch(k, grid=128, workgroup=64, args=args)
        big = busy.dispatch(sq, grid=n, workgroup=64, args=(dst, src, n))
        # B, on the same GPU: its queue stays mapped and its kernel's results are right.
        kb = b.load_code_object("builtin:square").kernel("square")
        xb = b.cpu.pools(fine_grained=True, kernarg=False)[0].allocate(4 * 256)
        yb = b.cpu.pools(fine_grained=True, kernarg=False)[0].allocate(4 * 256)
        b.allow_access(b.gpus, xb)
        b.allow_access(b.gpus, yb)
        xb.view(np.float32)[:] = np.arange(256, dtype=np.float32)
        qb = b.gpus[0].create_queue(64)
        with pytest.raises(rocr.HsaError) as info:
            big.wait()
        assert info.value.status == rocr.Status.ERROR_MEMORY_FAULT
        pa, pb = _pasid(a), _pasid(b)
        runlist = b.runlist()[0]["queues"]
        assert {q["pasid"] for q in runlist} == {pb}, runlist
        held = [h for h in b.mapped_queues()[0]["hqds"] if h["pasid"] is not None]
        assert [h["pasid"] for h in held] == [pb]
        # The KFD's debugfs log: the fault, its page and the queues it evicted.
        mqds = json.loads(a.thunk.read_debugfs("mqds"))
        mine = next(p for p in mqds if p["pasid"] == pa)
        assert mine["evicted_gpu_ids"] == [gpu.props.KFDGpuID]
        (vm_fault,) = mine["vm_faults"]
        assert vm_fault["page"] == guard
        assert sorted(vm_fault["evicted_queues"]) == sorted([busy.queue_id, bad.queue_id])
        assert tuple(vm_fault["wg"]) == (1, 0, 0)
        # The big kernel stopped: workgroups it had not placed never ran.
        done = dst.view(np.float32)
        assert not done[-64:].any() and done[:64].all()
        # B works on, before and after.
        for _ in range(2):
            qb.dispatch(kb, grid=256, workgroup=64, args=(yb, xb, 256)).wait()
            np.testing.assert_array_equal(
                yb.view(np.float32), np.arange(256, dtype=np.float32) ** 2
            )
            yb.view(np.float32)[:] = 0
    finally:
        b.shutdown()


def test_a_wait_asleep_in_the_kfd_wakes_with_the_fault(proc):
    rt = proc
    k, args, guard, _ = _chase_into_guard(rt)
    gpu = rt.gpus[0]
    # The bad kernel waits behind a barrier on a long kernel of another queue, so the host's
    # wait has long stopped spinning (ROCr: 200 us) and sleeps in AMDKFD_IOC_WAIT_EVENTS when
    # the fault comes.
    fma = rt.load_code_object("builtin:fma_loop").kernel("fma_loop")
    out = _gpu_buf(rt, 4 * 64)
    long_q = gpu.create_queue(64, callback=lambda e, q: None)
    bad_q = gpu.create_queue(64, callback=lambda e, q: None)
    first = long_q.dispatch(fma, grid=64, workgroup=64, args=(out, 64, 20_000))
    bad_q.submit(
        rocr.BarrierAndPacket(
            header=aql.make_header(aql.PacketType.BARRIER_AND),
            dep_signal=[first.signal.handle, 0, 0, 0, 0],
        )
    )
    h = bad_q.dispatch(k, grid=128, workgroup=64, args=args)
    t0 = rt.now_ns
    with pytest.raises(rocr.HsaError) as info:
        h.wait()
    assert info.value.status == rocr.Status.ERROR_MEMORY_FAULT, info.value
    (fault,) = _fault_events(rt)
    spin_ps = 200_000_000  # ROCr InterruptSignal::WaitRelaxed spins 200 us, then sleeps
    assert fault.ts > t0 * 1000 + spin_ps, "the fault must come while the wait sleeps"
    assert rt.now_ns * 1000 >= fault.ts  # the fault woke it (not a deadlock diagnosis)


def test_an_address_beyond_the_48_bit_va_space_is_an_aperture_violation(proc):
    # ROCr's trap handler: a memory violation without an XNACK error is a queue error, bit
    # 0x20000000 of the queue-inactive signal -> HSA_STATUS_ERROR_MEMORY_APERTURE_VIOLATION;
    # no VM fault, so the process's other queues keep working.
    rt = proc
    k = rt.load_code_object("builtin:square").kernel("square")
    src = _gpu_buf(rt, 4 * 64)
    dst = _gpu_buf(rt, 4 * 64)
    src.view(np.float32)[:] = 3.0
    got = []
    bad_q = rt.gpus[0].create_queue(64, callback=lambda e, q: got.append(e.status))
    good_q = rt.gpus[0].create_queue(64)
    # `in` points past 2**48, as a buggy kernel could compute it: kernargs written by hand.
    kernarg = bytearray(k.pack_args(dst, src, 64))
    kernarg[8:16] = (1 << 48).to_bytes(8, "little")
    kbuf = _gpu_buf(rt, 64)
    kbuf.write(bytes(kernarg))
    pkt = rt.dispatch_packet(k, 64, 64, (dst, src, 64))
    raw = pkt.model_copy(update={"kernarg_address": kbuf.address}).to_bytes()
    bad_q.submit(raw)
    rt.system.run_for(50_000_000)
    good_q.dispatch(k, grid=64, workgroup=64, args=(dst, src, 64)).wait()
    np.testing.assert_array_equal(dst.view(np.float32), np.full(64, 9.0, dtype=np.float32))
    assert got == [rocr.Status.ERROR_MEMORY_APERTURE_VIOLATION]
