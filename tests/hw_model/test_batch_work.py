"""What the batched model executes per workgroup once its CU classes have formed: counted in
bytecodes of the workgroup modules (exact, unlike a timing), for a latency-bound kernel
(`vector_add`, one event per class run) on gfx900, timing-only and functional. Most of a
class run's cost is its CU's bookkeeping (a 4-wave workgroup's waves on four SIMDs) and
placing the next run there (`Dispatcher._refill`)."""

from __future__ import annotations

import os
import sys

import rocr
from hw_model.compute_unit import ComputeUnit
from hw_model.config import system_spec

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) + os.sep
MODULES = ("hw_model/dispatcher.py", "hw_model/compute_unit.py")
WGS = 2000  # 16 classes of 4 CUs on gfx900: ~500 class runs


def _per_workgroup(functional: bool) -> tuple[float, dict[str, int]]:
    """Bytecodes per workgroup in MODULES of one warm `vector_add` dispatch, and calls by
    function."""
    spec = system_spec("gfx900", functional=functional, trace=False)
    with rocr.init(spec=spec) as rt:
        gpu = rt.gpus[0]
        n = WGS * 256
        bufs = [gpu.pools()[0].allocate(4 * n) for _ in range(3)]
        k = rt.load_code_object("builtin:vector_add").kernel("vector_add")
        q = gpu.create_queue(256)
        q.dispatch(k, grid=n, workgroup=256, args=(*bufs, n)).wait()
        ops = [0]
        calls: dict[str, int] = {}

        def trace(frame, event, arg):
            code = frame.f_code
            f = code.co_filename[len(_REPO) :].replace(os.sep, "/")
            if f not in MODULES:
                return None
            if event == "call":
                calls[code.co_qualname] = calls.get(code.co_qualname, 0) + 1
            frame.f_trace_opcodes = True
            if event == "opcode":
                ops[0] += 1
            return trace

        sys.settrace(trace)
        try:
            q.dispatch(k, grid=n, workgroup=256, args=(*bufs, n)).wait()
        finally:
            sys.settrace(None)
    return ops[0] / WGS, calls


def test_a_class_run_takes_its_cus_resources_in_one_step():
    per_wg, calls = _per_workgroup(functional=False)
    # 279 per workgroup before a CU's free resources were one packed integer (a 4-wave
    # workgroup charged SIMD by SIMD), a class run's spread and charge were remembered by
    # the CU's state, the next run placed without a second look at a full CU and ended
    # with its resources in one call; about 163 after.
    assert per_wg <= 168, per_wg
    runs = calls["Dispatcher._wg_start"]
    assert runs * 3 < WGS  # a run per class of CUs, not per workgroup
    # one look at the CU per class run placed by a refill, none at a full CU after it
    assert calls["ComputeUnit.take"] == calls["Dispatcher._refill"]
    assert "ComputeUnit.release" not in calls  # `end_unwatched` gives the resources back


def test_a_functional_class_run_costs_what_a_timing_only_one_does():
    per_wg, _ = _per_workgroup(functional=True)
    # (the code runs a GPU-full of workgroups per call, outside these modules)
    assert per_wg <= 168, per_wg


def test_a_batched_kernel_read_mid_run_holds_and_gives_back_what_it_placed():
    """An occupancy report in the middle of a batched kernel dissolves its CU classes: every
    CU then holds the resources of the workgroups it has resident (each of the class's CUs
    copied its representative's packed state), and when the kernel is over every CU is as
    idle as a new one."""
    spec = system_spec("gfx900", functional=False, trace=False)
    with rocr.init(spec=spec) as rt:
        gpu = rt.gpus[0]
        hw = rt.system.gpus[0]
        n = WGS * 256
        bufs = [gpu.pools()[0].allocate(4 * n) for _ in range(3)]
        k = rt.load_code_object("builtin:vector_add").kernel("vector_add")
        q = gpu.create_queue(256)
        h = q.dispatch(k, grid=n, workgroup=256, args=(*bufs, n))
        engine = rt.system.engine
        while hw.dispatcher.wgs_dispatched < WGS // 2:
            assert engine.step()
        (launch,) = hw.dispatcher.active
        assert launch.clones is not None  # batched until now
        report = hw.dispatcher.occupancy()
        assert launch.clones is None
        resident = sum(cu["resident_wgs"] for cu in report)
        assert resident == launch.next_wg - launch.done_wgs > 0
        slots = hw.spec.wave_slots_per_simd
        for cu in report:  # 4 waves per workgroup, one on each SIMD
            assert cu["waves"] == [cu["resident_wgs"]] * 4
            assert cu["free_wave_slots"] == [slots - cu["resident_wgs"]] * 4
        h.wait()
        fresh = ComputeUnit(hw.spec, 0).state()
        for cu in hw.cus:
            assert {**cu.state(), "index": 0, "shader_engine": 0} == {
                **fresh,
                "index": 0,
                "shader_engine": 0,
            }
        assert sum(cu.wgs_run for cu in hw.cus) == WGS
