"""A workgroup alone on its CU from start to end (an empty kernel's round trip) costs no
group, no group key and no look at the CU's free room: counted, not timed. What it skips is
made exactly when something needs it, so times, traces and occupancy reports are those of a
CU that made it at once."""

from __future__ import annotations

import random

import rocr
from hw_model import dispatcher as dispatcher_mod
from hw_model.compute_unit import ComputeUnit, WgRun, wave_timing
from hw_model.config import PRESETS
from hw_model.engine import Engine
from hw_model.kernels.base import CostProfile
from hw_model.occupancy import WgRequirements, wg_requirements

MODULES = ("dispatcher.py", "compute_unit.py", "execution.py", "kernels/base.py")
TEACHING = PRESETS["teaching"]


def test_an_empty_kernels_workgroup_makes_no_group_key_or_spread(round_trip_work):
    work = round_trip_work(10)
    files = tuple("hw_model/" + m for m in MODULES)
    per_trip, calls = work.per_trip(*files), work.calls_in(*files)
    # 1211 before a lone workgroup went without its group and key, the one-workgroup pass
    # without the loop, the idle CU's spread without its free room; about 955 after. 960
    # before a CU's free resources were one packed integer (taken and given back in one
    # step), the empty kernel ran its body (it has none now) and the one-workgroup pass went
    # through the batched model's tests; about 721 after.
    assert per_trip <= 745, per_trip
    for skipped in ("_Group.__init__", "_LazyKey.__get__", "KernelLaunch.group_key"):
        assert skipped not in calls, (skipped, calls)
    assert "ComputeUnit.fit" not in calls  # the idle CU's spread, remembered
    assert "ComputeUnit.try_place" not in calls
    # The empty kernel has no body: nothing to run, on this functional GPU too.
    assert "Dispatcher._execute" not in calls and "BuiltinCode.execute" not in calls
    # Coordinates are for traces and faults: an untraced run never works them out.
    assert "KernelLaunch.wg_coords" not in calls
    assert calls["ComputeUnit.allocate"] == calls["ComputeUnit.release"] == 10
    assert calls["ComputeUnit._fire"] == calls["Dispatcher._wg_done"] == 10


class _Eager(ComputeUnit):
    """A CU that makes the lone workgroup's group at once: what `ComputeUnit` did before."""

    def begin(self, run, timing, now):
        super().begin(run, timing, now)
        if self._lone is not None:
            self._group_lone()


def _scenario(cu_type: type[ComputeUnit], seed: int) -> tuple[list, list]:
    """Random arrivals of workgroups of three kernels (two costs each) on one CU, some
    stopped early (a fault), `state()` read at random ticks: each run's compute end and the
    reports."""
    rnd = random.Random(seed)
    eng = Engine()
    cu = cu_type(TEACHING, 0)
    ends: dict[int, int] = {}
    cu.attach(eng, lambda run: ends.__setitem__(run.index, eng.now))
    costs = [CostProfile(valu=100), CostProfile(valu=10, mem_rounds=1), CostProfile(salu=50)]
    timings = [wave_timing(TEACHING, c) for c in costs]
    reports: list = []
    t = 0
    for i in range(40):
        t += rnd.choice([0, 0, 50_000, 200_000, 900_000, 3_000_000])
        waves = rnd.choice([1, 1, 2, 4])
        req = WgRequirements(waves=waves, vgprs=4, sgprs=16, lds=0, barrier=waves > 1)
        kernel = rnd.choice("abc")
        timing = timings[rnd.randrange(3)]
        run = WgRun(kernel, cu, i, (i, 0, 0), 64 * waves, req, [waves, 0, 0, 0], t, timing)
        eng.schedule_at(t, cu.begin, run, timing, t)
        if rnd.random() < 0.15:
            stop_at = t + rnd.randrange(1, 300_000)
            eng.schedule_at(stop_at, cu.stop, run, stop_at)
        if rnd.random() < 0.3:
            eng.schedule_at(t + rnd.randrange(0, 500_000), lambda: reports.append(cu.state()))
    eng.run_until(10**13)
    return sorted(ends.items()), reports


def test_a_lone_workgroups_group_made_late_times_everything_as_one_made_at_once():
    for seed in range(12):
        assert _scenario(ComputeUnit, seed) == _scenario(_Eager, seed), seed


def test_occupancy_reports_a_lone_workgroup_as_its_kernel_computing():
    eng = Engine()
    cu = ComputeUnit(TEACHING, 0)
    cu.attach(eng, lambda run: None)
    req = WgRequirements(waves=2, vgprs=4, sgprs=16, lds=0, barrier=True)
    timing = wave_timing(TEACHING, CostProfile(valu=100))
    cu.begin(WgRun("k", cu, 0, None, 128, req, [1, 1, 0, 0], 0, timing), timing, 0)
    (report,) = cu.state()["kernels"]
    assert report["kernel"] == "k"
    assert report["waves_computing"] == 2 and report["workgroups_computing"] == 1


def test_a_lone_workgroup_stopped_by_a_fault_never_finishes_computing():
    eng = Engine()
    cu = ComputeUnit(TEACHING, 0)
    done: list[int] = []
    cu.attach(eng, lambda run: done.append(run.index))
    req = WgRequirements(waves=1, vgprs=4, sgprs=16, lds=0, barrier=False)
    timing = wave_timing(TEACHING, CostProfile(valu=100))
    run = WgRun("k", cu, 0, None, 64, req, [1, 0, 0, 0], 0, timing)
    eng.schedule_at(0, cu.begin, run, timing, 0)
    eng.schedule_at(1000, cu.stop, run, 1000)
    eng.run_until(10**12)
    assert done == [] and not cu.state()["kernels"]


def _traced_mix(preset: str) -> str:
    """A traced mix on one GPU: one-workgroup kernels (alone, and on CUs busy with another
    queue's kernel), ragged grids, a kernel of several shapes of workgroup in turn."""
    rt = rocr.init(preset=preset, trace=True)
    try:
        ek = rt.load_code_object("builtin:empty").kernel("empty")
        fk = rt.load_code_object("builtin:fma_loop").kernel("fma_loop")
        vram = rt.gpus[0].pools()[0]
        x = vram.allocate(4 * 64 * 600)
        q1, q2 = rt.gpus[0].create_queue(64), rt.gpus[0].create_queue(64)
        for wg in (64, 256, 64, 128, 64):
            q1.dispatch(ek, grid=wg, workgroup=wg).wait()
        busy = q2.dispatch(fk, grid=64 * 600, workgroup=64, args=(x, 64 * 600, 400))
        for grid in (64, 30, (8, 8), 64) * 3:
            q1.dispatch(ek, grid=grid, workgroup=64 if grid != (8, 8) else (8, 8)).wait()
        busy.wait()
        q1.dispatch(ek, grid=(100, 30), workgroup=(16, 4)).wait()
        return rt.system.tracer.dumps()
    finally:
        rt.shutdown()


def test_a_one_workgroup_kernels_key_worked_out_late_changes_no_trace(monkeypatch):
    lazy = _traced_mix("gfx900")
    monkeypatch.setattr(dispatcher_mod, "LAZY_KEY", None)  # keys worked out at placement
    assert _traced_mix("gfx900") == lazy


def test_an_idle_cus_remembered_spread_is_the_one_its_free_room_gives(monkeypatch):
    spec = PRESETS["gfx900"]
    seen: list[tuple] = []
    allocate = ComputeUnit.allocate

    def record(self, req, counts, now):
        if not self.resident_wgs:
            seen.append((req, tuple(counts)))
        allocate(self, req, counts, now)

    monkeypatch.setattr(ComputeUnit, "allocate", record)
    rt = rocr.init(preset="gfx900")
    try:
        k = rt.load_code_object("builtin:empty").kernel("empty")
        q = rt.gpus[0].create_queue(64)
        for wg in [64, 256, 192, 64, 256, 1024, 64] * 12:
            q.dispatch(k, grid=wg, workgroup=wg).wait()
        gpu = rt.system.gpus[0]
        fresh = ComputeUnit(spec, 0).state()
        for cu in gpu.cus:  # every resource given back
            assert {**cu.state(), "index": 0, "shader_engine": 0} == {
                **fresh,
                "index": 0,
                "shader_engine": 0,
            }
    finally:
        rt.shutdown()
    assert len(seen) == 7 * 12
    for req, counts in seen:
        assert tuple(ComputeUnit(spec, 0).try_place(req)) == counts
    assert {r.waves for r, _ in seen} == {1, 3, 4, 16}
    assert wg_requirements(spec, 256, 4, 16, 0).waves == 4
