"""What the dispatcher and the CU model execute per workgroup: counted, not timed (bytecodes
and calls are the same on any machine). An empty-kernel round trip stays under a bytecode
budget in those modules (tests/hw_model/test_lone_workgroup.py); what only traces and faults
read (workgroup coordinates) is not worked out for every workgroup; caches of launch
geometry and per-launch containers keep results apart; a CU of other than four SIMDs keeps
its books as a four-SIMD one does."""

from __future__ import annotations

import pytest

import rocr
from hw_model import dispatcher as dispatcher_mod
from hw_model.compute_unit import ComputeUnit, wave_timing
from hw_model.config import PRESETS
from hw_model.dispatcher import KernelLaunch
from hw_model.execution import Execution
from hw_model.kernels import BUILTINS, CostProfile, pack_args
from hw_model.occupancy import occupancy, wg_requirements
from tests.hw_model.conftest import DispatcherGpu


def test_traced_workgroups_still_carry_their_coordinates():
    rt = rocr.init(preset="gfx900", trace=True)
    try:
        k = rt.load_code_object("builtin:empty").kernel("empty")
        q = rt.gpus[0].create_queue(64)
        q.dispatch(k, grid=(48, 20), workgroup=(16, 8)).wait()  # 3 x 3 workgroups, ragged
        wgs = sorted(tuple(e.args["wg"]) for e in rt.system.tracer.events if e.cat == "wg")
        assert wgs == sorted((x, y, 0) for x in range(3) for y in range(3))
    finally:
        rt.shutdown()


def _launch(grid, wg=(64, 1, 1), code=None) -> KernelLaunch:
    spec = PRESETS["gfx900"]
    kernel = BUILTINS["fma_loop"]
    return KernelLaunch(
        name="fma_loop",
        pasid=1,
        queue_id=0,
        dispatch_id=0,
        kernel=kernel,
        grid=grid,
        workgroup=wg,
        req=wg_requirements(spec, wg[0] * wg[1] * wg[2], kernel.vgprs, kernel.sgprs, 0),
        kernarg=pack_args(kernel.args, kernel.kernarg_size, (0, 64, 10)),
        on_dispatched=lambda k: None,
        on_complete=lambda k: None,
        on_fault=lambda k, f: None,
        code=code,
    )


def test_launch_geometry_is_right_for_every_shape_and_its_cache_stays_bounded():
    a = _launch((1000, 1, 1))
    assert (a.counts, a.total_wgs, a.wg_items, a.ragged) == ((16, 1, 1), 16, 64, True)
    b = _launch((64 * 6, 30, 2), (64, 4, 1))
    assert (b.counts, b.total_wgs, b.wg_items, b.ragged) == ((6, 8, 2), 96, 256, True)
    c = _launch((128, 8, 1), (64, 4, 1))
    assert (c.counts, c.total_wgs, c.ragged, c.limit) == ((2, 2, 1), 4, False, 4)
    for i in range(dispatcher_mod._GEOMETRY_MAX + 10):
        _launch((64 * (i + 1), 1, 1))
    assert len(dispatcher_mod._GEOMETRY) <= dispatcher_mod._GEOMETRY_MAX
    assert _launch((1000, 1, 1)).counts == (16, 1, 1)


def test_a_launchs_containers_are_its_own():
    class Reporting:
        always_execute = True

        def execute(self, launch, memory, node, first, count):
            return Execution(launch.cost, stats={"waves": count})

    quiet, loud = _launch((640, 1, 1)), _launch((640, 1, 1), code=Reporting())
    # Unwritten containers read empty and refuse writes (no launch can fill another's).
    assert not quiet.exec_stats and not quiet.class_runs and not quiet.class_base
    with pytest.raises(TypeError):
        quiet.exec_stats["x"] = 1  # type: ignore[index]
    gpu = DispatcherGpu("gfx900", trace=False)
    gpu.dispatcher.launch(loud)
    gpu.engine.run_until(10**15)
    assert loud.exec_stats == {"waves": 10}
    assert not quiet.exec_stats and not _launch((640, 1, 1)).exec_stats
    # Partial workgroups' requirements are per launch too.
    edge = _launch((100, 1, 1))
    assert edge.req_for(36).waves == 1 and not edge.req_for(36).barrier
    assert not _launch((100, 1, 1))._edge_reqs


@pytest.mark.parametrize("simds", [2, 4, 8])
def test_a_cu_of_any_simd_count_takes_what_occupancy_says_and_gives_it_all_back(simds):
    spec = PRESETS["gfx900"].model_copy(update={"simds_per_cu": simds})
    for items, vgprs, lds in [(64, 24, 0), (256, 84, 3000), (1024, 32, 0), (128, 128, 16384)]:
        req = wg_requirements(spec, items, vgprs, 16, lds, 8)
        cu = ComputeUnit(spec, 0)
        before = cu.state()
        placed = []
        while (p := cu.try_place(req)) is not None:
            cu.allocate(req, p, 0)
            placed.append(p)
        occ = occupancy(
            spec, workgroup_size=items, vgprs=vgprs, sgprs=16, lds=lds, private_segment_size=8
        )
        assert len(placed) == occ.workgroups_per_cu
        assert cu.resident_wgs == len(placed)
        for i, p in enumerate(placed):
            cu.release(req, p, 5 + i)
        assert cu.state() == before
        assert cu.wgs_run == len(placed) and cu.busy_ps == (4 + len(placed) if placed else 0)


def test_a_wave_timing_compares_by_its_figures_whatever_it_has_cached():
    cost = CostProfile(valu=40, mem_rounds=2, load_bytes=8)
    a, b = wave_timing(PRESETS["gfx900"], cost), wave_timing(PRESETS["gfx900"], cost)
    a.solo_for(1)
    assert a == b and hash(a) == hash(b)
    assert a.cap == b.cap == a.busy_ps / a.alone_ps
    assert a.solo[1][1] > 0 and not b.solo
