"""Dispatcher: resource-limited placement, oldest kernel first, placement policies, the
per-shader-engine launch rate, determinism, and a cost that grows with workgroups only."""

from __future__ import annotations

import pytest

from hw_model.dispatcher import PLACEMENT_POLICIES, KernelLaunch
from hw_model.kernels import BUILTINS, pack_args
from hw_model.occupancy import occupancy, wg_requirements
from tests.hw_model.conftest import DispatcherGpu


class Gpu(DispatcherGpu):
    def __init__(self, preset: str, policy: str = "round_robin") -> None:
        super().__init__(preset, policy)
        self.done: list[KernelLaunch] = []

    def launch(self, name: str, wgs: int, wg: int = 256, lds: int = 0, queue: int = 0, **kw):
        kernel = BUILTINS[name]
        if name == "fma_loop":
            vals = (0, wgs * wg, kw.get("iters", 10))  # out, n, iters
        else:
            vals = (0, 0, wgs * wg, kw.get("hops", 4))  # out, next, n, hops
        k = KernelLaunch(
            name=name,
            pasid=1,
            queue_id=queue,
            dispatch_id=len(self.done),
            kernel=kernel,
            grid=(wgs * wg - kw.get("short", 0), 1, 1),
            workgroup=(wg, 1, 1),
            req=wg_requirements(self.spec, wg, kernel.vgprs, kernel.sgprs, lds),
            kernarg=pack_args(kernel.args, kernel.kernarg_size, vals),
            on_dispatched=lambda k: None,
            on_complete=self.done.append,
            on_fault=lambda k, f: pytest.fail(f"fault {f}"),
        )
        self.dispatcher.launch(k)
        return k

    def run(self) -> None:
        self.engine.run_until(10**15)

    def wg_events(self, name: str | None = None):
        return [e for e in self.tracer.events if e.cat == "wg" and (name is None or e.name == name)]


def capacity(gpu: Gpu, name: str, wg: int = 256, lds: int = 0) -> int:
    k = BUILTINS[name]
    occ = occupancy(gpu.spec, workgroup_size=wg, vgprs=k.vgprs, sgprs=k.sgprs, lds=lds)
    return occ.workgroups_per_cu


@pytest.mark.parametrize(("name", "lds"), [("chase", 0), ("chase_v128", 0), ("chase", 20000)])
def test_idle_gpu_fills_every_cu_to_its_occupancy(name, lds):
    gpu = Gpu("gem5")
    per_cu = capacity(gpu, name, lds=lds)
    k = gpu.launch(name, wgs=3 * per_cu * len(gpu.cus), lds=lds)
    gpu.engine.run_until(0)  # the first dispatch pass
    assert [cu.resident_wgs for cu in gpu.cus] == [per_cu] * len(gpu.cus)
    assert k.next_wg == per_cu * len(gpu.cus)
    gpu.run()
    assert gpu.done == [k] and k.done_wgs == k.total_wgs
    assert all(cu.resident_wgs == 0 for cu in gpu.cus)


def test_partial_last_workgroup_launches_only_its_waves():
    gpu = Gpu("teaching")
    k = gpu.launch("chase", wgs=2, short=256 - 70)  # 70 work-items left: 2 waves
    assert k.req_for(70).waves == 2 and k.req_for(256) is k.req
    gpu.engine.run_until(0)
    assert sum(cu.waves for cu in gpu.cus) == 4 + 2
    gpu.run()
    assert k.done_wgs == 2


def test_a_later_kernel_runs_beside_the_first_when_both_fit():
    gpu = Gpu("teaching")
    a, b = gpu.launch("chase", 4, queue=1), gpu.launch("chase", 4, queue=2)
    gpu.run()
    assert a.start_ps == b.start_ps == 0
    assert b.end_ps - a.end_ps < (a.end_ps - a.start_ps) // 2


def test_a_later_kernel_waits_while_the_first_fills_the_gpu():
    gpu = Gpu("teaching")
    cap = capacity(gpu, "chase") * 2
    a = gpu.launch("chase", 4 * cap, queue=1)
    b = gpu.launch("chase", 4, queue=2)
    gpu.run()
    # Oldest first: b gets a CU only once a has placed all its workgroups.
    assert b.start_ps >= a.dispatched_ps > 0
    first_b = min(e.ts for e in gpu.wg_events() if e.args["queue"] == 2)
    last_a = max(e.ts for e in gpu.wg_events() if e.args["queue"] == 1)
    assert first_b >= last_a
    assert gpu.done == [a, b]


def test_round_robin_spreads_and_greedy_packs():
    rr, greedy = Gpu("gem5", "round_robin"), Gpu("gem5", "greedy")
    for g in (rr, greedy):
        g.launch("chase", 4)
        g.run()
    assert sorted(e.track for e in rr.wg_events()) == ["CU0", "CU1", "CU2", "CU3"]
    assert {e.track for e in greedy.wg_events()} == {"CU0"}


def test_partition_gives_concurrent_kernels_disjoint_cus():
    gpu = Gpu("gfx900", "partition")
    n = len(gpu.cus)
    a = gpu.launch("chase", 30 * n, queue=1)
    b = gpu.launch("chase", 3 * n, queue=2)
    gpu.run()
    b_cus = {int(e.track[2:]) for e in gpu.wg_events() if e.args["queue"] == 2}
    a_cus_meanwhile = {
        int(e.track[2:]) for e in gpu.wg_events() if e.args["queue"] == 1 and e.ts < b.end_ps
    }
    assert b_cus == set(range(n // 2, n))
    assert a_cus_meanwhile == set(range(n // 2))
    # alone again, a spreads over every CU
    assert {int(e.track[2:]) for e in gpu.wg_events() if e.ts > b.end_ps} == set(range(n))
    assert a.done_wgs == a.total_wgs


def test_each_shader_engine_launches_one_workgroup_at_a_time():
    gpu = Gpu("teaching")  # one shader engine, 40 ns per workgroup
    gpu.launch("chase", 12)
    gpu.run()
    starts = sorted(e.ts for e in gpu.wg_events())
    assert starts == [40_000 * (i + 1) for i in range(12)]


def test_same_input_same_trace():
    def trace():
        gpu = Gpu("gfx900", "partition")
        gpu.launch("chase", 300, queue=1)
        gpu.launch("fma_loop", 200, queue=2, iters=50)
        gpu.run()
        return [e.as_dict() for e in gpu.tracer.events]

    assert trace() == trace()


@pytest.mark.parametrize("policy", sorted(PLACEMENT_POLICIES))
def test_events_grow_with_workgroups_not_with_simulated_time(policy):
    counts = {}
    for iters in (10, 10_000):
        gpu = Gpu("gfx900", policy)
        k = gpu.launch("fma_loop", 2000, iters=iters)
        gpu.run()
        counts[iters] = (gpu.engine.events_fired, k.end_ps)
    (ev_short, t_short), (ev_long, t_long) = counts[10], counts[10_000]
    assert t_long > 100 * t_short  # much longer in simulated time...
    assert ev_long <= ev_short * 1.1  # ...for the same work in the model
    assert ev_long < 5 * 2000  # a few events per workgroup


def test_unknown_policy_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="greedy"):
        Gpu("teaching", "fastest")
