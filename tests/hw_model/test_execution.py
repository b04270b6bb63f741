"""The execution interface: kernel code runs over batches of workgroups, reports what each
costs and where it faulted or hit an illegal instruction; the dispatcher times and stops the
kernel from that as if the workgroups had run one at a time."""

from __future__ import annotations

import math

import numpy as np
import pytest

import rocr
from hw_model import dispatcher as dispatcher_mod
from hw_model.compute_unit import wave_timing
from hw_model.config import system_spec
from hw_model.dispatcher import KernelLaunch
from hw_model.execution import BuiltinCode, Execution
from hw_model.kernels import BUILTINS, CostProfile, GridContext, pack_args
from hw_model.occupancy import occupancy, wg_requirements
from tests.hw_model.conftest import DispatcherGpu


class Gpu(DispatcherGpu):
    def __init__(self, preset: str = "teaching") -> None:
        super().__init__(preset)
        self.done: list[KernelLaunch] = []
        self.illegal: list[tuple[KernelLaunch, str]] = []

    def launch(self, code, wgs: int, wg: int = 64) -> KernelLaunch:
        kernel = BUILTINS["fma_loop"]
        k = KernelLaunch(
            name="k",
            pasid=1,
            queue_id=0,
            dispatch_id=0,
            kernel=kernel,
            grid=(wgs * wg, 1, 1),
            workgroup=(wg, 1, 1),
            req=wg_requirements(self.spec, wg, kernel.vgprs, kernel.sgprs, 0),
            kernarg=pack_args(kernel.args, kernel.kernarg_size, (0, wgs * wg, 10)),
            on_dispatched=lambda k: None,
            on_complete=self.done.append,
            on_fault=lambda k, f: pytest.fail(f"fault {f}"),
            code=code,
            on_illegal=lambda k, msg: self.illegal.append((k, msg)),
        )
        self.dispatcher.launch(k)
        self.engine.run_until(10**15)
        return k

    def spans(self) -> dict[int, object]:
        return {e.args["wg"][0]: e for e in self.tracer.events if e.cat == "wg"}


class Recorder:
    """Code whose cost is only known by running it: records the ranges it is asked to run."""

    always_execute = True

    def __init__(self, costs=None, illegal_wg: int | None = None) -> None:
        self.calls: list[tuple[int, int]] = []
        self.costs = costs
        self.illegal_wg = illegal_wg

    def execute(self, launch, memory, node, first, count) -> Execution:
        self.calls.append((first, count))
        costs = launch.cost if self.costs is None else self.costs[first : first + count]
        w = self.illegal_wg
        if w is not None and first <= w < first + count:
            return Execution(costs, illegal=f"s_trap in workgroup {w}", illegal_wg=w)
        return Execution(costs)


def test_code_runs_once_per_gpu_full_of_workgroups_even_on_a_timing_only_gpu():
    gpu = Gpu()
    code = Recorder()
    k = gpu.launch(code, wgs=200)
    assert gpu.done == [k]
    full = gpu.spec.num_cus * occupancy(gpu.spec, workgroup_size=64, vgprs=12).workgroups_per_cu
    # Consecutive batches in linear order, each as large as the GPU holds, covering the grid.
    assert code.calls == [(f, min(full, 200 - f)) for f in range(0, 200, full)]
    assert len(code.calls) == math.ceil(200 / full) < 200


def test_builtin_code_does_not_run_on_a_timing_only_gpu(monkeypatch):
    calls = []
    monkeypatch.setattr(BuiltinCode, "execute", lambda *a: calls.append(a))
    gpu = Gpu()
    gpu.launch(None, wgs=20)
    assert len(gpu.done) == 1 and calls == []


def test_each_workgroup_is_timed_from_the_cost_its_code_reports():
    light = CostProfile(valu=20, mem_rounds=1)
    heavy = CostProfile(valu=20, mem_rounds=8)
    costs = [heavy if i % 3 == 0 else light for i in range(12)]
    gpu = Gpu()
    gpu.launch(Recorder(costs), wgs=12)
    spans = gpu.spans()
    t_light = wave_timing(gpu.spec, light).alone_ps
    t_heavy = wave_timing(gpu.spec, heavy).alone_ps
    for i, e in spans.items():
        want = t_heavy if i % 3 == 0 else t_light
        # one wave each, few per CU: every workgroup takes about its own critical path
        assert want <= e.dur < want + t_light, (i, e.dur, want)


def test_an_illegal_instruction_stops_the_kernel_at_that_workgroup():
    gpu = Gpu()
    k = gpu.launch(Recorder(illegal_wg=5), wgs=60)
    assert gpu.done == []  # the kernel never completes
    assert [(x, m) for x, m in gpu.illegal] == [(k, "s_trap in workgroup 5")]
    spans = gpu.spans()
    assert sorted(spans) == [0, 1, 2, 3, 4, 5], "no workgroup after the illegal one is placed"
    assert spans[5].args["illegal"] == "s_trap in workgroup 5"
    stops = [e for e in gpu.tracer.events if e.cat == "fault"]
    assert [e.name for e in stops] == ["illegal instruction k"]


@pytest.mark.parametrize(
    ("grid", "wg"),
    [((10, 1, 1), (4, 1, 1)), ((7, 5, 1), (2, 2, 1)), ((7, 5, 1), (8, 2, 1)),
     ((5, 7, 2), (5, 7, 1)), ((4, 6, 3), (3, 3, 3)), ((4, 6, 3), (8, 8, 2))],
)  # fmt: skip
def test_a_batch_sees_the_ids_of_its_workgroups_one_after_another(grid, wg):
    counts = [-(-g // w) for g, w in zip(grid, wg, strict=True)]
    n = counts[0] * counts[1] * counts[2]

    def one(w):  # the work-items of workgroup w alone, in local linear order
        bx, by, bz = w % counts[0], (w // counts[0]) % counts[1], w // (counts[0] * counts[1])
        return [
            (z * grid[1] + y) * grid[0] + x
            for z in range(bz * wg[2], min((bz + 1) * wg[2], grid[2]))
            for y in range(by * wg[1], min((by + 1) * wg[1], grid[1]))
            for x in range(bx * wg[0], min((bx + 1) * wg[0], grid[0]))
        ]

    for first in range(n):
        for count in range(1, n - first + 1):
            ctx = GridContext(b"", wg, grid, first, count, None)
            want = sum((one(w) for w in range(first, first + count)), [])
            assert ctx.global_linear_id.tolist() == want
            if ctx.linear_range is not None:
                assert list(range(*ctx.linear_range)) == want


def test_hsaemu_timing_model_reference_selects_the_reference_model(monkeypatch):
    monkeypatch.setenv("HSAEMU_TIMING_MODEL", "reference")
    assert Gpu().dispatcher.batching is False
    monkeypatch.delenv("HSAEMU_TIMING_MODEL")
    assert Gpu().dispatcher.batching is True


# -- the whole stack ----------------------------------------------------------------------


@pytest.fixture
def rt():
    runtime = rocr.init(spec=system_spec("teaching", trace=True))
    yield runtime
    runtime.shutdown()


def _buf(rt, nbytes):
    b = rt.cpu.pools(fine_grained=True, kernarg=False)[0].allocate(nbytes)
    rt.allow_access(rt.gpus, b)
    return b


def test_the_first_faulting_workgroup_of_a_batch_faults_and_later_ones_never_run(rt):
    """`chase` over 40 workgroups: the chains of workgroups 13 and 30 leave `next`. One batch
    holds all 40; workgroup 13 faults with the address it alone would fault at; 0-12 stored
    their results, 13-39 did not."""
    wgs, wg = 40, 64
    n = wgs * wg
    nxt = _buf(rt, 4 * n)
    nxt.view(np.uint32)[:] = np.arange(n, dtype=np.uint32)  # p = next[p]: stay put
    nxt.view(np.uint32)[13 * wg + 7] = n + 5000  # past the end of the buffer
    nxt.view(np.uint32)[30 * wg] = n + 9000
    out = _buf(rt, 4 * n)
    out.view(np.uint32)[:] = 0xFFFFFFFF
    k = rt.load_code_object("builtin:chase").kernel("chase")
    q = rt.gpus[0].create_queue(64, callback=lambda e, q: None)
    h = q.dispatch(k, grid=n, workgroup=wg, args=(out, nxt, n, 3))
    with pytest.raises(rocr.HsaError) as info:
        h.wait()
    assert info.value.status == rocr.Status.ERROR_MEMORY_FAULT
    faults = [e for e in rt.system.tracer.events if e.cat == "fault" and e.track[:2] == "CU"]
    assert len(faults) == 1 and tuple(faults[0].args["wg"]) == (13, 0, 0)
    # Its second hop reads next[] from its own first element up to n + 5000: that span runs
    # past the end of the buffer.
    fault = faults[0]
    assert int(fault.args["va"], 16) == nxt.address + 4 * 13 * wg
    assert "past the end" in fault.args["reason"]
    got = out.view(np.uint32)
    np.testing.assert_array_equal(got[: 13 * wg], np.arange(13 * wg, dtype=np.uint32))
    assert (got[13 * wg :] == 0xFFFFFFFF).all(), "workgroups from the faulting one on never stored"
    placed = {tuple(e.args["wg"])[0] for e in rt.system.tracer.events if e.cat == "wg"}
    assert placed == set(range(14))


def test_an_illegal_instruction_reported_by_kernel_code_is_a_queue_error(rt, monkeypatch):
    class Trapping(BuiltinCode):
        def execute(self, launch, memory, node, first, count):
            super().execute(launch, memory, node, first, count)
            return Execution(launch.cost, illegal="s_sethalt in the way", illegal_wg=first + 2)

    monkeypatch.setattr(dispatcher_mod, "BuiltinCode", Trapping)
    src, dst = _buf(rt, 4 * 256), _buf(rt, 4 * 256)
    k = rt.load_code_object("builtin:square").kernel("square")
    got = []
    q = rt.gpus[0].create_queue(64, callback=lambda e, q: got.append(e))
    h = q.dispatch(k, grid=256, workgroup=64, args=(dst, src, 256))
    with pytest.raises(rocr.HsaError) as info:
        h.wait()
    assert info.value.status == rocr.Status.ERROR_ILLEGAL_INSTRUCTION
    assert "illegal instruction at packet 0" in info.value.message
    (err,) = rt.system.gpus[0].queue_errors
    assert err["message"] == "kernel square (packet 0): s_sethalt in the way"
    assert got and got[0].status == rocr.Status.ERROR_ILLEGAL_INSTRUCTION
    assert h.signal.load() == 1


def test_a_fault_late_in_a_batched_kernel_stops_it_at_that_workgroup():
    """gfx900 without tracing: the kernel runs a CU class at a time until the batch that
    holds the bad workgroup; from there one run per workgroup, and none after it is placed."""
    rt = rocr.init(spec=system_spec("gfx900", trace=False))
    try:
        wgs, wg, bad = 3000, 64, 2222
        n = wgs * wg
        nxt = _buf(rt, 4 * n)
        nxt.view(np.uint32)[:] = np.arange(n, dtype=np.uint32)
        nxt.view(np.uint32)[bad * wg + 3] = n + (1 << 20)  # far past the end of the buffer
        out = _buf(rt, 4 * n)
        out.view(np.uint32)[:] = 0xFFFFFFFF
        k = rt.load_code_object("builtin:chase").kernel("chase")
        q = rt.gpus[0].create_queue(64, callback=lambda e, q: None)
        h = q.dispatch(k, grid=n, workgroup=wg, args=(out, nxt, n, 2))
        with pytest.raises(rocr.HsaError) as info:
            h.wait()
        assert info.value.status == rocr.Status.ERROR_MEMORY_FAULT
        page = (nxt.address + 4 * bad * wg) & ~0xFFF  # the faulting span starts in it
        assert f"on address {page:#x}" in info.value.message
        got = out.view(np.uint32)
        np.testing.assert_array_equal(got[: bad * wg], np.arange(bad * wg, dtype=np.uint32))
        assert (got[bad * wg :] == 0xFFFFFFFF).all()
        assert rt.system.gpus[0].dispatcher.wgs_dispatched == bad + 1
    finally:
        rt.shutdown()


def _empty_kernel_runs(kernel: str, monkeypatch) -> tuple[list, list, dict, int]:
    """Dispatch times, kernel records (without the name), stats and executed batches of a
    mix of `kernel` dispatches on a functional gfx900 (one workgroup, several, a ragged
    grid, two queues at once)."""
    ran: list = []
    execute = BuiltinCode.execute
    monkeypatch.setattr(
        BuiltinCode, "execute", lambda self, *a: ran.append(a[3:]) or execute(self, *a)
    )
    rt = rocr.init(spec=system_spec("gfx900", trace=True))
    try:
        k = rt.load_code_object(f"builtin:{kernel}").kernel(kernel)
        q1, q2 = rt.gpus[0].create_queue(64), rt.gpus[0].create_queue(64)
        times = []
        for grid, wg in ((64, 64), (64 * 300, 256), (1000, 64), (64, 64)):
            times.append(q1.dispatch(k, grid=grid, workgroup=wg).wait().dispatch_time())
        a, b = q1.dispatch(k, grid=64 * 90, workgroup=64), q2.dispatch(k, grid=640, workgroup=128)
        times += [a.wait().dispatch_time(), b.wait().dispatch_time()]
        records = [{**r, "name": None} for r in rt.system.gpus[0].kernel_records]
        return times, records, rt.system.stats(), len(ran)
    finally:
        rt.shutdown()


def test_a_kernel_without_a_body_runs_nothing_and_times_as_one_whose_body_does_nothing(
    monkeypatch,
):
    """The empty kernel has no body (its code only ends its waves): on a functional GPU
    nothing runs for it, and every time, record and counter is what a body doing nothing
    gives."""
    empty = BUILTINS["empty"]
    assert empty.body is None
    monkeypatch.setitem(
        BUILTINS,
        "empty_body",
        empty.model_copy(update={"name": "empty_body", "body": lambda c: None}),
    )
    times, records, stats, ran = _empty_kernel_runs("empty", monkeypatch)
    assert ran == 0
    with_body = _empty_kernel_runs("empty_body", monkeypatch)
    assert with_body[3] > 0  # (its body ran, a GPU-full of workgroups at a time)
    assert (times, records, stats) == with_body[:3]
